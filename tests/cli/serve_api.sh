#!/usr/bin/env bash
# serve_api.sh - `kiln serve` driven with curl on synthetic models (no
# shared data needed): /health, /v1/models, good chat/completions/embeddings
# requests (JSON and SSE, timings, usage, embedding headers), every bad
# input answered with OpenAI's error JSON and the right status (malformed
# JSON, wrong types, unknown and unsupported parameters, unknown model,
# prompt longer than the context, body over the limit, invalid UTF-8,
# missing/wrong API key, wrong method, unknown route, oversized headers),
# CORS preflight, then a good request to show the server still serves;
# decoder embeddings refused without --embeddings and served with it;
# `promtool check metrics` on /metrics; SIGTERM exits 0.
# Usage: bash serve_api.sh /path/to/kiln
set -u
KILN=${1:?usage: serve_api.sh /path/to/kiln}
TEST_NAME=serve-api
. "$(dirname "$0")/../server/lib.sh"

# usage errors
"$KILN" serve >/dev/null 2>&1
[ $? -eq 2 ] || fail "no models is not a usage error"
"$KILN" serve -m x.gguf --port nope >/dev/null 2>&1
[ $? -eq 2 ] || fail "bad --port is not a usage error"
"$KILN" serve -m "$T/missing.gguf" --port 0 >/dev/null 2>"$T/err"
[ $? -eq 1 ] || fail "missing model file: want exit 1"
grep -q "missing.gguf" "$T/err" || fail "missing model: error does not name the file"

synth_models

# a corrupt model file is refused at start, naming it
head -c 150000 "$T/llama.gguf" >"$T/broken.gguf"
timeout 60 "$KILN" serve -m "$T/broken.gguf" --port 0 >/dev/null 2>"$T/err"
[ $? -eq 1 ] || fail "corrupt model: want exit 1"
grep -q "broken.gguf" "$T/err" || fail "corrupt model: error does not name the file: $(cat "$T/err")"

KEY=sekret-key-123
AUTH="Authorization: Bearer $KEY"
start_server api -m "$T/llama.gguf" -m emb="$T/bert.gguf" --ctx 200 --parallel 2 -t 1 \
    --api-key "$KEY" --max-body 65536 --cors http://example.com --chat-template chatml
grep -q "kernels " "$SRV_LOG" || fail "start-up log does not name the kernels (ISA)"
grep -q "llama=" "$SRV_LOG" || fail "start-up log does not list the models"

# /health and /v1/models
req GET /health ""
[ "$CODE" = 200 ] && grep -q '"status":"ok"' "$T/resp" || fail "/health: $CODE $(cat "$T/resp")"
req GET /v1/models "" -H "$AUTH"
[ "$CODE" = 200 ] || fail "/v1/models: $CODE"
python3 - "$T/resp" <<'PY' || fail "/v1/models body: $(cat "$T/resp")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["object"] == "list"
ids = {m["id"]: m for m in d["data"]}
assert set(ids) == {"llama", "emb"}, ids
assert all(m["object"] == "model" and m["loaded"] for m in d["data"])
assert ids["emb"]["kind"] == "embeddings" and ids["llama"]["kind"] == "generation"
PY

# good requests
req POST /v1/completions '{"model":"llama","prompt":"hello world","max_tokens":5,"temperature":0}' -H "$AUTH"
[ "$CODE" = 200 ] || fail "completion: $CODE $(cat "$T/resp")"
python3 - "$T/resp" <<'PY' || fail "completion body: $(cat "$T/resp")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["object"] == "text_completion" and d["model"] == "llama"
c = d["choices"][0]
assert isinstance(c["text"], str) and c["finish_reason"] in ("stop", "length")
u = d["usage"]
assert u["completion_tokens"] <= 5 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
t = d["timings"]
for k in ("queue_ms", "prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_token_ms"):
    assert k in t, k
PY
# vLLM's min_tokens is accepted with ignore_eos (kiln bench sends both)
req POST /v1/completions '{"model":"llama","prompt":"hi","max_tokens":4,"ignore_eos":true,"min_tokens":4}' -H "$AUTH"
[ "$CODE" = 200 ] && grep -q '"completion_tokens":4' "$T/resp" || fail "ignore_eos + min_tokens: $CODE $(cat "$T/resp")"
# the default model is the first one (no "model" field)
req POST /v1/chat/completions '{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_completion_tokens":4,"temperature":0}' -H "$AUTH"
[ "$CODE" = 200 ] || fail "chat: $CODE $(cat "$T/resp")"
python3 - "$T/resp" <<'PY' || fail "chat body: $(cat "$T/resp")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["object"] == "chat.completion" and d["id"].startswith("chatcmpl-")
m = d["choices"][0]["message"]
assert m["role"] == "assistant" and isinstance(m["content"], str)
assert d["usage"]["completion_tokens"] <= 4 and "timings" in d
PY
# streaming with usage
curl -s -N -m 60 -H "$AUTH" "$URL/v1/chat/completions" -H "Content-Type: application/json" -d '{"model":"llama","messages":[{"role":"user","content":"hi"}],"max_tokens":6,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' >"$T/sse" ||
    fail "stream: curl failed"
python3 - "$T/sse" <<'PY' || fail "stream: $(head -c 600 "$T/sse")"
import json, sys
events = [l[6:] for l in open(sys.argv[1]).read().split("\n\n") if l.startswith("data: ")]
assert events[-1] == "[DONE]", events[-1]
chunks = [json.loads(e) for e in events[:-1]]
assert all(c["object"] == "chat.completion.chunk" for c in chunks)
assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
fins = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
assert fins[-1] in ("stop", "length") and all(f is None for f in fins[:-1])
assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 6
assert len({c["id"] for c in chunks}) == 1
PY
curl -s -N -m 60 -H "$AUTH" "$URL/v1/completions" -H "Content-Type: application/json" -d '{"prompt":"abc","max_tokens":3,"stream":true,"stop":["zz"]}' >"$T/sse2"
grep -q '"object":"text_completion"' "$T/sse2" && tail -c 20 "$T/sse2" | grep -q 'data: \[DONE\]' ||
    fail "completion stream: $(head -c 400 "$T/sse2")"
# embeddings: float and base64, headers with timings
req POST /v1/embeddings '{"model":"emb","input":["hello world","a b c"]}' -H "$AUTH"
[ "$CODE" = 200 ] || fail "embeddings: $CODE $(cat "$T/resp")"
for h in x-queue-time x-tokenization-time x-inference-time; do
    grep -qi "^$h: [0-9.]*" "$T/hdr" || fail "embeddings: no $h header"
done
cp "$T/resp" "$T/emb_float"
req POST /v1/embeddings '{"model":"emb","input":"hello world","encoding_format":"base64"}' -H "$AUTH"
[ "$CODE" = 200 ] || fail "embeddings base64: $CODE $(cat "$T/resp")"
python3 - "$T/emb_float" "$T/resp" <<'PY' || fail "embeddings bodies"
import base64, json, math, struct, sys
f = json.load(open(sys.argv[1]))
b = json.load(open(sys.argv[2]))
assert f["object"] == "list" and len(f["data"]) == 2 and f["data"][1]["index"] == 1
v = f["data"][0]["embedding"]
assert len(v) == 64 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4
raw = base64.b64decode(b["data"][0]["embedding"])
w = struct.unpack("<%df" % (len(raw) // 4), raw)
assert len(w) == 64 and max(abs(x - y) for x, y in zip(v, w)) < 1e-6
assert f["usage"]["prompt_tokens"] > 0 and "timings" in f
PY
req POST /v1/embeddings '{"model":"emb","input":[[5,6,7],[8,9]],"dimensions":16}' -H "$AUTH"
[ "$CODE" = 200 ] || fail "embeddings of ids: $CODE $(cat "$T/resp")"
python3 -c "
import json; d=json.load(open('$T/resp')); assert len(d['data'])==2 and len(d['data'][0]['embedding'])==16" ||
    fail "embeddings dimensions: $(head -c 300 "$T/resp")"

# ---- bad input: each an OpenAI error with the right status
req POST /v1/chat/completions '{"model":"llama","messages":[' -H "$AUTH"
expect_error "malformed JSON" 400 invalid_request_error null invalid_json
req POST /v1/chat/completions '[1,2]' -H "$AUTH"
expect_error "not an object" 400 invalid_request_error null -
req POST /v1/chat/completions '{"model":"llama","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}' -H "$AUTH"
expect_error "wrong type" 400 invalid_request_error temperature invalid_type
req POST /v1/chat/completions '{"model":"llama","messages":"hi"}' -H "$AUTH"
expect_error "messages not an array" 400 invalid_request_error messages invalid_type
req POST /v1/chat/completions '{"model":"llama","messages":[]}' -H "$AUTH"
expect_error "empty messages" 400 invalid_request_error messages invalid_value
req POST /v1/chat/completions '{"model":"llama","messages":[{"role":"wizard","content":"hi"}]}' -H "$AUTH"
expect_error "unknown role" 400 invalid_request_error messages.role unsupported_value
req POST /v1/chat/completions '{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":"yes"}' -H "$AUTH"
expect_error "stream not a boolean" 400 invalid_request_error stream invalid_type
req POST /v1/completions '{"model":"llama","prompt":"hi","stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}' -H "$AUTH"
expect_error "too many stop strings" 400 invalid_request_error stop invalid_value
req POST /v1/completions '{"model":"llama","prompt":"hi","max_tokens":0}' -H "$AUTH"
expect_error "max_tokens 0" 400 invalid_request_error max_tokens invalid_value
req POST /v1/completions '{"model":"llama"}' -H "$AUTH"
expect_error "no prompt" 400 invalid_request_error prompt missing_required_parameter
req POST /v1/completions '{"model":"llama","prompt":"hi","max_tokens":2.5}' -H "$AUTH"
expect_error "fractional max_tokens" 400 invalid_request_error max_tokens invalid_type
req POST /v1/chat/completions '{"model":"llama","messages":[{"role":"user","content":"hi"}],"frobnicate":1}' -H "$AUTH"
expect_error "unknown parameter" 400 invalid_request_error frobnicate unknown_parameter
req POST /v1/chat/completions '{"model":"llama","messages":[{"role":"user","content":"hi"}],"n":2}' -H "$AUTH"
expect_error "n=2" 400 invalid_request_error n unsupported_value
req POST /v1/chat/completions '{"model":"llama","messages":[{"role":"user","content":"hi"}],"logprobs":true}' -H "$AUTH"
expect_error "logprobs" 400 invalid_request_error logprobs unsupported_parameter
req POST /v1/completions '{"model":"llama","prompt":"hi","min_tokens":4}' -H "$AUTH"
expect_error "min_tokens without ignore_eos" 400 invalid_request_error min_tokens unsupported_parameter
req POST /v1/chat/completions '{"model":"llama","messages":[{"role":"user","content":"hi"}],"top_p":3}' -H "$AUTH"
expect_error "top_p out of range" 400 invalid_request_error top_p invalid_value
req POST /v1/completions '{"model":"llama","prompt":"hi","logit_bias":{"99999":1}}' -H "$AUTH"
expect_error "logit_bias outside the vocabulary" 400 invalid_request_error logit_bias invalid_value
req POST /v1/embeddings '{"model":"emb","input":"x","encoding_format":"hex"}' -H "$AUTH"
expect_error "encoding_format" 400 invalid_request_error encoding_format invalid_value
req POST /v1/embeddings '{"model":"emb","input":""}' -H "$AUTH"
expect_error "empty input" 400 invalid_request_error input invalid_value
req POST /v1/embeddings '{"model":"emb","input":"x","dimensions":65}' -H "$AUTH"
expect_error "dimensions over the model's" 400 invalid_request_error dimensions invalid_value
req POST /v1/embeddings '{"model":"emb","input":"x","dimensions":"8"}' -H "$AUTH"
expect_error "dimensions not an integer" 400 invalid_request_error dimensions invalid_type
req POST /v1/embeddings '{"model":"emb","input":[1,2,99999]}' -H "$AUTH"
expect_error "token id outside the vocabulary" 400 invalid_request_error input invalid_value
req POST /v1/embeddings '{"model":"emb","input":{"text":"x"}}' -H "$AUTH"
expect_error "input of a wrong type" 400 invalid_request_error input invalid_type
req POST /v1/embeddings '{"model":"llama","input":"x"}' -H "$AUTH"
expect_error "embeddings on a decoder" 400 invalid_request_error model model_not_supported
req POST /v1/chat/completions '{"model":"emb","messages":[{"role":"user","content":"hi"}]}' -H "$AUTH"
expect_error "chat on an encoder" 400 invalid_request_error model model_not_supported
req POST /v1/chat/completions '{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}' -H "$AUTH"
expect_error "unknown model" 404 - model model_not_found
grep -q "llama" "$T/resp" && grep -q "emb" "$T/resp" || fail "unknown model: available models not listed: $(cat "$T/resp")"
long=$(python3 -c 'print("hello world " * 100)')
req POST /v1/completions "{\"model\":\"llama\",\"prompt\":\"$long\",\"max_tokens\":4}" -H "$AUTH"
expect_error "prompt longer than the context" 400 invalid_request_error - context_length_exceeded
grep -q "200" "$T/resp" || fail "context error lacks the context size: $(cat "$T/resp")"
python3 -c "print('{\"model\":\"llama\",\"prompt\":\"' + 'a' * 70000 + '\"}')" >"$T/big.json"
req POST /v1/completions "@$T/big.json" -H "$AUTH"
expect_error "body over the limit" 413 invalid_request_error - request_too_large
# the same, chunked (no Content-Length): read, discarded, then 413
CODE=$(curl -s -m 60 -o "$T/resp" -w '%{http_code}' -H "$AUTH" -H 'Transfer-Encoding: chunked' \
    --data-binary "@$T/big.json" "$URL/v1/completions")
expect_error "chunked body over the limit" 413 invalid_request_error - request_too_large
printf '{"model":"llama","prompt":"bad \xff\xfe byte"}' >"$T/bad_utf8.json"
req POST /v1/completions "@$T/bad_utf8.json" -H "$AUTH"
expect_error "invalid UTF-8" 400 invalid_request_error - invalid_utf8
req POST /v1/completions '{"model":"llama","prompt":"hi"}'
expect_error "missing API key" 401 authentication_error - invalid_api_key
req POST /v1/completions '{"model":"llama","prompt":"hi"}' -H "Authorization: Bearer sekret-key-12"
expect_error "wrong API key" 401 authentication_error - invalid_api_key
req GET /v1/chat/completions "" -H "$AUTH"
expect_error "wrong method" 405 invalid_request_error - method_not_allowed
grep -qi '^Allow: POST' "$T/hdr" || fail "405 without Allow: POST"
req DELETE /health ""
expect_error "wrong method on GET route" 405 invalid_request_error - method_not_allowed
grep -qi '^Allow: GET' "$T/hdr" || fail "405 without Allow: GET"
req GET /v2/nothing "" -H "$AUTH"
expect_error "unknown route" 404 not_found_error - not_found
# oversized headers: MHD refuses them (4xx), the server carries on
big=$(python3 -c 'print("x" * 100000)')
CODE=$(curl -s -m 30 -o /dev/null -w '%{http_code}' -H "X-Big: $big" "$URL/health")
case "$CODE" in 4*) ;; *) fail "oversized header: status $CODE, want 4xx" ;; esac
# a client that sends nothing after connecting does not disturb anyone
(exec 3<>/dev/tcp/127.0.0.1/${URL##*:} && sleep 3) &
slow=$!

# CORS: the allowed origin gets the headers and a preflight answer
CODE=$(curl -s -m 30 -o /dev/null -D "$T/hdr" -w '%{http_code}' -X OPTIONS \
    -H 'Origin: http://example.com' -H 'Access-Control-Request-Method: POST' \
    "$URL/v1/chat/completions")
[ "$CODE" = 204 ] || fail "preflight: $CODE"
grep -qi '^Access-Control-Allow-Origin: http://example.com' "$T/hdr" || fail "preflight lacks ACAO"
req GET /health "" -H 'Origin: http://evil.example'
! grep -qi '^Access-Control-Allow-Origin' "$T/hdr" || fail "ACAO sent to a foreign origin"

check_errors

# after all that, it still serves
req POST /v1/completions '{"model":"llama","prompt":"still there?","max_tokens":3}' -H "$AUTH"
[ "$CODE" = 200 ] || fail "good request after the bad ones: $CODE $(cat "$T/resp")"
wait $slow

# metrics: valid exposition, with the families the issue asks for
# with --api-key, /metrics needs the key too (unless --public-metrics)
[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/metrics")" = 401 ] || fail "/metrics without the key"
curl -s -m 30 -H "$AUTH" "$URL/metrics" >"$T/metrics" || fail "/metrics"
if command -v promtool >/dev/null; then
    promtool check metrics <"$T/metrics" >"$T/promtool" 2>&1 || fail "promtool: $(cat "$T/promtool")"
else
    echo "SKIP promtool check: promtool is not installed (Debian package prometheus)"
fi
for m in 'kiln_http_requests_total{route="/v1/completions",status="200"}' \
    'kiln_http_requests_total{route="/v1/chat/completions",status="400"}' \
    kiln_http_request_duration_seconds_bucket kiln_queue_time_seconds_bucket \
    kiln_time_to_first_token_seconds_bucket kiln_inter_token_latency_seconds_bucket \
    kiln_prefill_time_seconds_bucket kiln_decode_time_seconds_bucket \
    kiln_embedding_batch_size_bucket kiln_embedding_batch_latency_seconds_bucket \
    kiln_tokenization_time_seconds_bucket kiln_prompt_tokens_total kiln_generated_tokens_total \
    kiln_http_requests_in_flight 'kiln_queue_depth{model="llama"}' 'kiln_busy_slots{model="llama"}' \
    'kiln_kv_cache_usage_ratio{model="llama"}' kiln_models_loaded 'kiln_model_bytes{model="emb"}' \
    process_resident_memory_bytes 'kiln_requests_finished_total{model="llama",reason="length"}' \
    kiln_prompt_length_tokens_bucket kiln_output_length_tokens_bucket \
    'kiln_build_info{version="' 'kiln_engine_busy_seconds_total{model="llama"}' \
    'kiln_engine_forward_seconds_total{model="llama"}' 'kiln_engine_steps_total{model="llama"}' \
    'kiln_engine_tokens_total{model="llama",phase="decode"}' \
    'kiln_engine_step_p99_seconds{model="llama"}' \
    'kiln_inter_token_latency_seconds_bucket{model="llama",le="0.0001"}' \
    'kiln_prompt_tokens_total{model="llama"}' 'kiln_embedding_tokens_total{model="emb"}' \
    'kiln_time_to_first_token_seconds_count{model="llama"}' \
    'kiln_embedding_batch_size_bucket{model="emb",le="1"}' \
    'kiln_engine_estimated_flops_total{model="llama"}' \
    'kiln_engine_estimated_read_bytes_total{model="llama"}' \
    'kiln_http_request_duration_seconds_bucket{route="/v1/completions",le="960"}'; do
    grep -qF "$m" "$T/metrics" || fail "/metrics lacks $m"
done
# the estimates grew with the work done; the host's steal and PSI counters where readable
for m in 'kiln_engine_estimated_flops_total{model="llama"}' \
    'kiln_engine_estimated_read_bytes_total{model="llama"}'; do
    awk -v n="$m" '$1 == n {found = 1; ok = $2 > 0} END {exit !(found && ok)}' "$T/metrics" ||
        fail "$m is not positive: $(grep -F "$m" "$T/metrics")"
done
if [ -r /proc/stat ]; then
    grep -q '^kiln_host_cpu_steal_seconds_total ' "$T/metrics" || fail "/metrics lacks the steal counter"
fi
if [ -r /proc/pressure/cpu ]; then
    grep -qF 'kiln_host_pressure_stall_seconds_total{resource="cpu",kind="some"}' "$T/metrics" ||
        fail "/metrics lacks the PSI counter"
else
    echo "SKIP PSI counter check: /proc/pressure/cpu is not readable"
fi
# encoders have no slot or KV series
! grep -qF 'kiln_busy_slots{model="emb"}' "$T/metrics" || fail "slot gauge for an encoder"
[ "$(awk '$1 == "kiln_models_loaded" {print $2}' "$T/metrics")" = 2 ] || fail "kiln_models_loaded != 2"

# a decoder without --embeddings: embeddings are a clear 400
req POST /v1/embeddings '{"model":"llama","input":"hello"}' -H "$AUTH"
[ "$CODE" = 400 ] && grep -q "generation model" "$T/resp" || fail "decoder embeddings without --embeddings: $CODE $(cat "$T/resp")"

stop_server

# --embeddings: the decoder serves embeddings (last-token pooling) and still generates
start_server dec -m "$T/llama.gguf" --ctx 200 --parallel 1 -t 1 --embeddings
req POST /v1/embeddings '{"model":"llama","input":["hello world","a b c"]}'
[ "$CODE" = 200 ] || fail "decoder embeddings: $CODE $(cat "$T/resp")"
python3 - "$T/resp" <<'PY' || fail "decoder embeddings body: $(cat "$T/resp")"
import json, math, sys
d = json.load(open(sys.argv[1]))
v = [e["embedding"] for e in d["data"]]
assert len(v) == 2 and len(v[0]) == len(v[1]) > 0
assert all(abs(math.sqrt(sum(x * x for x in e)) - 1) < 1e-4 for e in v)
assert v[0] != v[1]
PY
req POST /v1/completions '{"prompt":"hello","max_tokens":3}'
[ "$CODE" = 200 ] || fail "completion with --embeddings: $CODE $(cat "$T/resp")"
stop_server
echo "PASS"

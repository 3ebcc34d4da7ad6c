#!/usr/bin/env bash
# serve_load.sh - `kiln serve` under load and misbehaving clients, on
# synthetic models: a client that disconnects mid-stream frees its slot (a
# new request is then served on the single slot, and /metrics shows no busy
# slot), and so do non-streaming and queued clients that disconnect; a full
# queue answers 429 with Retry-After; 32 concurrent clients (completions,
# streams, chats and embeddings) all complete; SIGTERM with a request in
# flight lets it finish and exits 0; a non-streaming request longer than
# --idle-timeout is answered; under a memory budget that holds one of two
# models, requests switch the loaded model (LRU), and a model whose file
# went bad while unloaded answers an error naming it without disturbing the
# rest.
# Usage: bash serve_load.sh /path/to/kiln
set -u
KILN=${1:?usage: serve_load.sh /path/to/kiln}
TEST_NAME=serve-load
. "$(dirname "$0")/../server/lib.sh"

synth_models
# a model slow enough that a long generation lasts seconds
"$KILN" synth --arch llama --n-embd 256 --n-layer 4 --n-head 4 --n-ff 1024 --ctx 8192 \
    --vocab 300 -q -o "$T/slow.gguf" >/dev/null || fail "synth slow"

LONG='{"model":"slow","prompt":"once","max_tokens":8000,"ignore_eos":true,"stream":true}'

# ---- one slot, one queue place
start_server one -m "$T/slow.gguf" --ctx 8192 --parallel 1 --queue 1 -t 1 --idle-timeout 1

# a non-streaming answer that takes longer than the idle timeout still arrives
req POST /v1/completions '{"model":"slow","prompt":"x","max_tokens":3000,"ignore_eos":true}' -m 240
[ "$CODE" = 200 ] || fail "a request longer than --idle-timeout: $CODE"

# a streaming client that goes away after its first 2000 bytes
timeout 120 curl -s -N "$URL/v1/completions" -H "Content-Type: application/json" -d "$LONG" 2>/dev/null | head -c 2000 >"$T/cut"
grep -q '^data: {' "$T/cut" || fail "disconnect: nothing was streamed before the cut"
# the single slot must be free again: a short request is served promptly
req POST /v1/completions '{"model":"slow","prompt":"next","max_tokens":4}' -m 20
[ "$CODE" = 200 ] || fail "after a disconnect: $CODE $(head -c 300 "$T/resp")"
wait_metric 'kiln_busy_slots{model="slow"}' 0 ||
    fail "after a disconnect: kiln_busy_slots is '$(metric 'kiln_busy_slots{model="slow"}')', want 0"
wait_metric kiln_http_requests_in_flight 1 ||
    fail "in-flight gauge is not back to 1 (the scrape itself): $(metric kiln_http_requests_in_flight)"

# the same for a non-streaming client and for one waiting in the queue: both
# are noticed while their connection waits (suspended) and cancelled
curl -s -m 20 "$URL/v1/completions" -H "Content-Type: application/json" -d "${LONG/true,\"stream\":true/true}" >/dev/null 2>&1 &
p1=$!
sleep 0.3
curl -s -m 1 "$URL/v1/completions" -H "Content-Type: application/json" -d "${LONG/true,\"stream\":true/true}" >/dev/null 2>&1
kill $p1 2>/dev/null
wait $p1 2>/dev/null
# both are cancelled within a few steps (10 s allows for ASan on a busy
# machine; without the cancel the first would run for its 8000 tokens)
wait_metric 'kiln_queue_depth{model="slow"}' 0 && wait_metric 'kiln_busy_slots{model="slow"}' 0 ||
    fail "after non-streaming disconnects: busy $(metric 'kiln_busy_slots{model="slow"}'), queued $(metric 'kiln_queue_depth{model="slow"}')"
req POST /v1/completions '{"model":"slow","prompt":"next","max_tokens":4}' -m 20
[ "$CODE" = 200 ] || fail "after non-streaming disconnects: $CODE $(head -c 300 "$T/resp")"

# queue overflow: one running, one queued, the rest 429 with Retry-After
qpids=()
for i in 1 2 3 4; do
    curl -s -N -m 3 -o "$T/q$i" -D "$T/qh$i" -w '%{http_code}' "$URL/v1/completions" \
        -H "Content-Type: application/json" -d "$LONG" >"$T/qc$i" 2>/dev/null &
    qpids+=($!)
    sleep 0.2
done
for p in "${qpids[@]}"; do wait "$p"; done
n429=0
for i in 1 2 3 4; do
    if [ "$(cat "$T/qc$i")" = 429 ]; then
        n429=$((n429 + 1))
        grep -qi '^Retry-After: [0-9]' "$T/qh$i" || fail "429 without Retry-After"
        grep -q '"rate_limit_exceeded"' "$T/q$i" || fail "429 body: $(cat "$T/q$i")"
    fi
done
[ $n429 -ge 1 ] || fail "queue overflow: no 429 among 4 requests (codes: $(cat "$T"/qc*))"
req POST /v1/completions '{"model":"slow","prompt":"after","max_tokens":4}' -m 30
[ "$CODE" = 200 ] || { curl -s $URL/metrics | grep -E "^kiln_(busy|queue|http_requests_in)"; fail "after the overflow: $CODE $(head -c 300 "$T/resp")"; }

# graceful stop: a request in flight finishes before the server exits
curl -s -m 60 "$URL/v1/completions" -H "Content-Type: application/json" -d '{"model":"slow","prompt":"x","max_tokens":300,"ignore_eos":true}' \
    -o "$T/inflight" -w '%{http_code}' >"$T/inflight_code" &
cpid=$!
sleep 0.3
stop_server
wait $cpid
[ "$(cat "$T/inflight_code")" = 200 ] || fail "request in flight at SIGTERM: $(cat "$T/inflight_code") $(head -c 200 "$T/inflight")"
grep -q '"finish_reason":"length"' "$T/inflight" || fail "request in flight did not complete"

# ---- 32 concurrent clients of four kinds
# (configured by a --config file; the command line overrides its port)
cat >"$T/config.json" <<JSON
{"models": [{"path": "$T/llama.gguf"}, {"name": "emb", "path": "$T/bert.gguf", "pin": true}],
 "ctx": 256, "parallel": 4, "queue": 64, "threads": 1, "chat_template": "chatml",
 "cors": ["http://a.example", "http://b.example"], "port": 1, "http_threads": 4}
JSON
start_server many --config "$T/config.json"
grep -q 'emb=.*(pinned)' "$SRV_LOG" || fail "--config: the pinned model is not in the log"
grep -q 'CORS on' "$SRV_LOG" || fail "--config: cors not applied"
pids=()
for i in $(seq 32); do
    case $((i % 4)) in
    0) curl -s -m 120 -o "$T/c$i" -w '%{http_code}' "$URL/v1/completions" \
        -H "Content-Type: application/json" -d "{\"prompt\":\"client $i\",\"max_tokens\":8}" >"$T/cc$i" & ;;
    1) curl -s -N -m 120 -o "$T/c$i" -w '%{http_code}' "$URL/v1/chat/completions" \
        -H "Content-Type: application/json" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"client $i\"}],\"max_tokens\":8,\"stream\":true}" >"$T/cc$i" & ;;
    2) curl -s -m 120 -o "$T/c$i" -w '%{http_code}' "$URL/v1/chat/completions" \
        -H "Content-Type: application/json" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"client $i\"}],\"max_tokens\":8}" >"$T/cc$i" & ;;
    3) curl -s -m 120 -o "$T/c$i" -w '%{http_code}' "$URL/v1/embeddings" \
        -H "Content-Type: application/json" -d "{\"model\":\"emb\",\"input\":\"client $i\"}" >"$T/cc$i" & ;;
    esac
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for i in $(seq 32); do
    [ "$(cat "$T/cc$i")" = 200 ] || fail "concurrent client $i: $(cat "$T/cc$i") $(head -c 200 "$T/c$i")"
done
for i in 1 5 9; do
    tail -c 20 "$T/c$i" | grep -q 'data: \[DONE\]' || fail "stream $i did not end with [DONE]"
done
wait_metric 'kiln_http_requests_total{route="/v1/embeddings",status="200"}' 8 ||
    fail "metrics do not count 8 embedding requests"
stop_server

# ---- a memory budget for one model of two: each request loads its model,
# unloading the other (least recently used); /v1/models shows which
cp "$T/llama.gguf" "$T/llama2.gguf"
start_server budget -m a="$T/llama.gguf" -m b="$T/llama2.gguf" --ctx 256 -t 1 \
    --mem-budget 3000000
loaded() { # the loaded model names, sorted
    curl -s -m 30 "$URL/v1/models" |
        python3 -c 'import json,sys; print(",".join(sorted(m["id"] for m in json.load(sys.stdin)["data"] if m["loaded"])))'
}
[ "$(loaded)" = a ] || fail "budget: at start want only a loaded, got '$(loaded)'"
for m in b a b; do
    req POST /v1/completions "{\"model\":\"$m\",\"prompt\":\"x\",\"max_tokens\":2}"
    [ "$CODE" = 200 ] || fail "budget: model $m: $CODE $(head -c 200 "$T/resp")"
    [ "$(loaded)" = $m ] || fail "budget: after a request to $m, loaded: '$(loaded)'"
done
wait_metric kiln_models_loaded 1 || fail "budget: kiln_models_loaded != 1"

# a model whose file went bad while it was unloaded: its requests get an
# error naming the file, the other model and /health keep working, and once
# the file is good again the model loads
cp "$T/llama.gguf" "$T/good.gguf"
head -c 150000 "$T/good.gguf" >"$T/cut.gguf"
mv "$T/cut.gguf" "$T/llama.gguf"
req POST /v1/completions '{"model":"a","prompt":"x","max_tokens":2}'
case "$CODE" in 5??) ;; *) fail "bad file after start: want 5xx, got $CODE" ;; esac
grep -q '"error"' "$T/resp" && grep -q 'llama.gguf' "$T/resp" ||
    fail "bad file after start: the error does not name the file: $(head -c 300 "$T/resp")"
req POST /v1/completions '{"model":"b","prompt":"x","max_tokens":2}'
[ "$CODE" = 200 ] || fail "bad file after start: the other model answers $CODE"
req GET /health
[ "$CODE" = 200 ] || fail "bad file after start: /health answers $CODE"
mv "$T/good.gguf" "$T/llama.gguf"
req POST /v1/completions '{"model":"a","prompt":"x","max_tokens":2}'
[ "$CODE" = 200 ] || fail "file repaired: model a answers $CODE $(head -c 200 "$T/resp")"
stop_server
echo "PASS"

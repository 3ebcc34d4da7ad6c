#!/usr/bin/env bash
# serve_logs.sh - `kiln serve` logs (docs/server.md, "Logs") on synthetic
# models: with --log-format json every line parses as JSON; access lines
# carry method, path, status, model, tokens and timings, a 4xx its error
# message; a stats line appears under load and none after ~3 s idle; slow
# requests are logged with their breakdown and counted in
# kiln_slow_requests_total. Then a text-format run whose every line has the
# documented prefix, with logfmt access lines.
# Usage: bash serve_logs.sh /path/to/kiln
set -u
KILN=${1:?usage: serve_logs.sh /path/to/kiln}
TEST_NAME=serve-logs
. "$(dirname "$0")/../server/lib.sh"

# usage errors
"$KILN" serve -m x.gguf --log-format xml >/dev/null 2>&1
[ $? -eq 2 ] || fail "bad --log-format is not a usage error"
"$KILN" serve -m x.gguf --log-stats-interval -1 >/dev/null 2>&1
[ $? -eq 2 ] || fail "negative --log-stats-interval is not a usage error"

synth_models

start_server json -m "$T/llama.gguf" -m emb="$T/bert.gguf" --ctx 200 --parallel 2 -t 1 \
    --log-format json --log-stats-interval 1 --slow-request-ms 1 --diagnostics
# a profile over the load records each slow request as an instant
curl -s -m 30 -X POST -H 'Content-Type: application/json' -d '' \
    "$URL/diagnostics/profiler/start?active_steps=100000" >"$T/prof.json"
PROF_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <"$T/prof.json") ||
    fail "profiler start: $(cat "$T/prof.json")"

# load: completions in parallel, a chat, an embedding, a 400 and a 404
CURLS=
for i in 1 2 3 4; do
    curl -s -m 60 -o /dev/null -H 'Content-Type: application/json' \
        --data-binary '{"model":"llama","prompt":"hello world","max_tokens":24,"ignore_eos":true}' \
        "$URL/v1/completions" &
    CURLS="$CURLS $!"
done
req POST /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":8}'
[ "$CODE" = 200 ] || fail "chat: $CODE $(cat "$T/resp")"
req POST /v1/embeddings '{"model":"emb","input":"some text"}'
[ "$CODE" = 200 ] || fail "embeddings: $CODE $(cat "$T/resp")"
req POST /v1/completions '{"model":"llama","prompt":"x","max_tokens":"many"}'
[ "$CODE" = 400 ] || fail "bad max_tokens: $CODE"
req POST /v1/completions '{"model":"nope","prompt":"x"}'
[ "$CODE" = 404 ] || fail "unknown model: $CODE"
for j in $CURLS; do wait "$j"; done
# a stats line covers the load (the interval is 1 s)
for i in $(seq 50); do
    grep -q '"event":"stats"' "$SRV_LOG" && break
    sleep 0.1
done
sleep 1.2
SLOW=$(metric kiln_slow_requests_total)
awk -v v="${SLOW:-0}" 'BEGIN { exit !(v > 0) }' || fail "kiln_slow_requests_total is '$SLOW'"
curl -s -m 30 -X POST -H 'Content-Type: application/json' -d '' "$URL/diagnostics/profiler/stop" >/dev/null
curl -s -m 30 "$URL/diagnostics/profiler/traces/$PROF_ID" >"$T/prof_trace.json"
python3 "$(dirname "$0")/../trace_validate.py" "$T/prof_trace.json" || fail "trace_validate on the slow-request profile"
python3 - "$T/prof_trace.json" <<'PY' || fail "no request_slow instants: $(head -c 400 "$T/prof_trace.json")"
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
slow = [e for e in ev if e.get("ph") == "i" and e["name"] == "request_slow"]
assert slow and all(e["args"]["e2e_ms"] > 1 for e in slow), slow[:3]
PY
# idle: no stats line in ~3 s (the scrape above is not inference work)
N_STATS=$(grep -c '"event":"stats"' "$SRV_LOG")
sleep 3
N_STATS2=$(grep -c '"event":"stats"' "$SRV_LOG")
[ "$N_STATS" = "$N_STATS2" ] || fail "stats lines while idle: $N_STATS then $N_STATS2"
stop_server

python3 - "$SRV_LOG" <<'PY' || { tail -40 "$SRV_LOG"; fail "JSON log"; }
import json, re, sys
ts_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
recs = []
for l in lines:
    try:
        d = json.loads(l)
    except Exception as e:
        sys.exit("not JSON: %r (%s)" % (l, e))
    assert ts_re.match(d["ts"]), d
    assert d["level"] in ("error", "warn", "info", "debug"), d
    assert isinstance(d["msg"], str), d
    recs.append(d)
assert [r["ts"] for r in recs] == sorted(r["ts"] for r in recs), "timestamps go backwards"
assert any("listening on http://127.0.0.1:" in r["msg"] for r in recs)
acc = [r for r in recs if r.get("event") == "access"]
gen = [r for r in acc if r["path"] == "/v1/completions" and r["status"] == 200]
assert len(gen) == 4, gen
for r in gen:
    assert r["method"] == "POST" and r["model"] == "llama", r
    assert r["prompt_tokens"] > 0 and r["output_tokens"] == 24, r
    for k in ("queue_ms", "ttft_ms", "e2e_ms"):
        assert isinstance(r[k], (int, float)) and r[k] >= 0, (k, r)
    assert r["ttft_ms"] <= r["e2e_ms"], r
chat = [r for r in acc if r["path"] == "/v1/chat/completions"]
assert len(chat) == 1 and chat[0]["status"] == 200, chat
emb = [r for r in acc if r["path"] == "/v1/embeddings"]
assert len(emb) == 1 and emb[0]["model"] == "emb" and emb[0]["prompt_tokens"] > 0, emb
e400 = [r for r in acc if r["status"] == 400]
assert len(e400) == 1 and "max_tokens" in e400[0]["error"], e400
e404 = [r for r in acc if r["status"] == 404]
assert len(e404) == 1 and "nope" in e404[0]["error"], e404
assert all("error" not in r for r in acc if r["status"] < 400)
stats = [r for r in recs if r.get("event") == "stats"]
assert stats, "no stats line"
assert sum(r["requests"] for r in stats) == 8, stats  # 4 + chat + emb + 400 + 404
assert sum(r["gen_tokens"] for r in stats) >= 4 * 24, stats
for r in stats:
    for k in ("interval_s", "req_per_s", "gen_tok_per_s", "running", "waiting", "kv_used",
              "kv_total", "kv_pct", "ttft_p99_ms", "itl_p99_ms", "errors"):
        assert k in r, (k, r)
assert any(isinstance(r["ttft_p99_ms"], (int, float)) and r["ttft_p99_ms"] > 0 for r in stats)
assert any(isinstance(r["itl_p99_ms"], (int, float)) and r["itl_p99_ms"] > 0 for r in stats)
assert sum(r["errors"] for r in stats) == 2, stats
slow = [r for r in recs if r.get("event") == "slow_request"]
assert slow and all(r["level"] == "warn" and r["e2e_ms"] > 1 for r in slow), slow
g = [r for r in slow if r["path"] == "/v1/completions" and r["status"] == 200]
assert g, slow
for k in ("queue_ms", "prefill_ms", "decode_ms", "prompt_tokens", "output_tokens", "slow_ms"):
    assert k in g[0], (k, g[0])
PY

# text format: every line carries the prefix; access lines are logfmt
start_server text -m "$T/llama.gguf" -t 1 --log-stats-interval 0
req POST /v1/completions '{"prompt":"hi","max_tokens":3}'
[ "$CODE" = 200 ] || fail "text run: completion: $CODE"
req POST /v1/completions '{"prompt":"hi","max_tokens":"x"}'
[ "$CODE" = 400 ] || fail "text run: 400: $CODE"
sleep 1.5
stop_server
python3 - "$SRV_LOG" <<'PY' || { cat "$SRV_LOG"; fail "text log"; }
import re, sys
pre = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z kiln [EWID] ")
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
assert lines
for l in lines:
    assert pre.match(l), l
acc = [l for l in lines if " access: " in l and "path=/v1/" in l]
assert len(acc) == 2, acc
assert re.search(r" method=POST path=/v1/completions status=200 model=llama prompt_tokens=\d+ "
                 r"output_tokens=3 queue_ms=\S+ ttft_ms=\S+ e2e_ms=\S+$", acc[0]), acc[0]
assert re.search(r" status=400 .* error=\"'max_tokens' must be an integer\"$", acc[1]), acc[1]
assert not any(" stats: " in l for l in lines), "stats line with --log-stats-interval 0"
PY
echo "serve_logs: ok"

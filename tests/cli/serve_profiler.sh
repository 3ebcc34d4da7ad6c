#!/usr/bin/env bash
# serve_profiler.sh - the HTTP profiler of `kiln serve --diagnostics` (issue
# 12 item 3): /diagnostics/profiler/* are 404 without the flag and behind the
# API key with it; wait 1 / warmup 1 / active 3 over one streaming request
# records exactly 3 engine "step" spans and a trace that trace_validate.py
# accepts; a second start while one waits is 409; stop while waiting gives
# state stopped and a valid empty trace; a tiny max_events drops events and
# still writes a valid trace; bad parameters are 400; the list keeps the
# last 8 traces. A trace is gzip (Content-Encoding, Vary) when
# Accept-Encoding takes it - gzip;q=0 refuses, * accepts - and decompresses
# to the identity body. benchmark-with-profiling (a second server, with a
# per-step delay so the run lasts): the benchmark's results plus a profile
# whose trace validates and holds its steps; a profiler start, a benchmark
# and a second benchmark-with-profiling during it are 409.
# A detail=ops session on a server with a decoder and an
# encoder holds per-layer spans inside each forward pass (engine and
# embeddings batcher), embed_pass/embed_batch spans for an embeddings
# request, and http_parse / http_write spans on the HTTP threads.
# Usage: bash serve_profiler.sh /path/to/kiln
set -u
KILN=${1:?usage: serve_profiler.sh /path/to/kiln}
TEST_NAME=serve-profiler
. "$(dirname "$0")/../server/lib.sh"
command -v python3 >/dev/null || {
    echo "SKIP: python3 is not installed"
    exit 0
}
VALIDATE="$(dirname "$0")/../trace_validate.py"
J='Content-Type: application/json'
A='Authorization: Bearer k'
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
post() { curl -s -m 30 -X POST -H "$J" -H "$A" -d '' "$URL/diagnostics/profiler/$1"; }
get() { curl -s -m 30 -H "$A" "$URL/diagnostics/profiler/$1"; }
# wait_state STATE: polls the status (10 s at most)
wait_state() {
    local i
    for i in $(seq 100); do
        [ "$(get status | field 'd["state"]')" = "$1" ] && return 0
        sleep 0.1
    done
    fail "profiler never reached $1: $(get status)"
}
stream() {
    curl -s -m 60 -N -o /dev/null -H "$J" -H "$A" "$URL/v1/completions" \
        -d "{\"prompt\":\"q\",\"max_tokens\":$1,\"ignore_eos\":true,\"stream\":true}" ||
        fail "streaming request"
}

synth_models

# off by default
start_server off -m "$T/llama.gguf" --ctx 256 -t 1
req POST /diagnostics/profiler/start '{}'
[ "$CODE" = 404 ] || fail "profiler without --diagnostics: $CODE"
req GET /diagnostics/profiler/status
[ "$CODE" = 404 ] || fail "profiler status without --diagnostics: $CODE"
stop_server

start_server on -m "$T/llama.gguf" --ctx 256 --parallel 1 -t 1 --diagnostics --api-key k
req GET /diagnostics/profiler/status
[ "$CODE" = 401 ] || fail "profiler without the key: $CODE"
[ "$(get status | field 'd["state"]')" = idle ] || fail "idle: $(get status)"

# bad parameters
for q in active_steps=0 wait_steps=-1 max_events=x detail=foo warmup_steps=1.5; do
    req POST "/diagnostics/profiler/start?$q" '{}' -H "$A"
    expect_error "start?$q" 400 invalid_request_error - invalid_value
done
req GET /diagnostics/profiler/traces/99 '' -H "$A"
expect_error "unknown trace" 404 not_found_error null trace_not_found
req POST /diagnostics/profiler/stop '{}' -H "$A"
expect_error "stop when idle" 409 invalid_request_error null profiler_not_active

# wait 1, warmup 1, active 3 over one streaming request
post 'start?wait_steps=1&warmup_steps=1&active_steps=3' >"$T/s1.json"
python3 - "$T/s1.json" <<'PY' || fail "start: $(cat "$T/s1.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["state"] == "waiting" and d["steps_remaining"] == 5 and d["id"] >= 1, d
PY
ID1=$(field 'd["id"]' <"$T/s1.json")
stream 20
wait_state done
get status >"$T/st1.json"
get "traces/$ID1" >"$T/t1.json"
curl -s -m 30 -D "$T/h1" -o /dev/null -H "$A" "$URL/diagnostics/profiler/traces/$ID1"
grep -qi '^content-type: application/json' "$T/h1" || fail "trace content type: $(cat "$T/h1")"
python3 "$VALIDATE" "$T/t1.json" || fail "trace_validate on the profiler trace"
grep -qi '^vary: accept-encoding' "$T/h1" || fail "no Vary: $(cat "$T/h1")"
grep -qi '^content-encoding' "$T/h1" && fail "identity asked, got: $(cat "$T/h1")"

# gzip when Accept-Encoding takes it; the body decompresses to the identity one
# enc HEADER-VALUE NAME: the trace fetched with that Accept-Encoding into
# $T/NAME.body, its headers in $T/NAME.hdr
enc() { curl -s -m 30 -H "$A" -H "Accept-Encoding: $1" -D "$T/$2.hdr" -o "$T/$2.body" \
    "$URL/diagnostics/profiler/traces/$ID1"; }
gz_check() { # NAME: gzip, decompressing to t1.json
    grep -qi '^content-encoding: gzip' "$T/$1.hdr" || fail "$1: not gzip: $(cat "$T/$1.hdr")"
    grep -qi '^vary: accept-encoding' "$T/$1.hdr" || fail "$1: no Vary"
    python3 -c 'import gzip, sys; sys.exit(gzip.open(sys.argv[1]).read() != open(sys.argv[2], "rb").read())' \
        "$T/$1.body" "$T/t1.json" || fail "$1: the gzip body is not the identity body"
}
enc gzip g1 && gz_check g1
enc gzip g2 && gz_check g2 # the cached copy
cmp -s "$T/g1.body" "$T/g2.body" || fail "the second gzip answer differs from the first"
enc '*' star && gz_check star
enc 'deflate, GZIP;Q=0.5' mixed && gz_check mixed
for v in 'gzip;q=0' 'identity' 'br, *;q=0' 'gzip;q=0, *' 'gzip;q=2'; do
    enc "$v" plain
    grep -qi '^content-encoding' "$T/plain.hdr" && fail "Accept-Encoding '$v' got $(grep -i '^content-encoding' "$T/plain.hdr")"
    cmp -s "$T/plain.body" "$T/t1.json" || fail "Accept-Encoding '$v': not the identity body"
done
curl -s -m 30 --compressed -H "$A" -o "$T/c.json" "$URL/diagnostics/profiler/traces/$ID1"
cmp -s "$T/c.json" "$T/t1.json" || fail "curl --compressed: the body differs from the identity one"
python3 "$VALIDATE" "$T/g1.body" || fail "trace_validate on the gzip body"
python3 - "$T/t1.json" "$T/st1.json" <<'PY' || fail "3 steps: $(head -c 600 "$T/t1.json")"
import json, sys
d = json.load(open(sys.argv[1]))
st = json.load(open(sys.argv[2]))
steps = [e for e in d["traceEvents"] if e.get("ph") == "X" and e.get("name") == "step"]
assert len(steps) == 3, len(steps)
assert any(e.get("name") == "forward" for e in d["traceEvents"])
assert d["otherData"]["profiler"]["active_steps"] == 3, d["otherData"]
assert not any(e.get("cat") == "op" for e in d["traceEvents"]), "detail=steps has op spans"
assert st["steps_seen"] == 5 and st["steps_remaining"] == 0 and st["events"] > 0, st
assert st["dropped"] == 0, st
PY

# a second start while one is waiting: 409; stop while waiting: an empty trace
post 'start?wait_steps=1000' >"$T/s2.json"
ID2=$(field 'd["id"]' <"$T/s2.json")
req POST '/diagnostics/profiler/start?active_steps=2' '{}' -H "$A"
expect_error "second start" 409 invalid_request_error null profiler_busy
post stop >"$T/stop.json"
[ "$(field 'd["state"]' <"$T/stop.json")" = stopped ] || fail "stop: $(cat "$T/stop.json")"
get "traces/$ID2" >"$T/t2.json"
python3 "$VALIDATE" "$T/t2.json" || fail "trace_validate on the empty trace"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["traceEvents"] == [], d' \
    "$T/t2.json" || fail "empty trace: $(head -c 300 "$T/t2.json")"

# a tiny event budget: events dropped, the trace still valid
post 'start?active_steps=5&max_events=10&detail=ops' >"$T/s3.json"
[ "$(field 'd["state"]' <"$T/s3.json")" = recording ] || fail "wait 0: $(cat "$T/s3.json")"
ID3=$(field 'd["id"]' <"$T/s3.json")
stream 20
wait_state done
get status >"$T/st3.json"
[ "$(field 'd["dropped"] > 0' <"$T/st3.json")" = True ] || fail "dropped: $(cat "$T/st3.json")"
get "traces/$ID3" >"$T/t3.json"
python3 "$VALIDATE" "$T/t3.json" || fail "trace_validate on the truncated trace"

# the list keeps the last 8
for i in $(seq 7); do
    post 'start?wait_steps=5' >/dev/null
    post stop >/dev/null
done
get traces >"$T/list.json"
python3 - "$T/list.json" "$ID1" "$ID3" <<'PY' || fail "list: $(cat "$T/list.json")"
import json, sys
d = json.load(open(sys.argv[1]))
ids = [t["id"] for t in d["traces"]]
assert len(ids) == 8, ids
assert int(sys.argv[2]) not in ids and int(sys.argv[3]) in ids, ids
for t in d["traces"]:
    assert t["bytes"] > 0 and t["state"] in ("done", "stopped"), t
PY
req GET "/diagnostics/profiler/traces/$ID1" '' -H "$A"
expect_error "dropped trace" 404 not_found_error null trace_not_found
stop_server

# benchmark-with-profiling; 3 ms per step makes the run last over a second
KILN_TEST_STEP_DELAY_US=3000 start_server bench -m "$T/llama.gguf" --ctx 256 --parallel 2 -t 1 \
    --diagnostics --api-key k
req POST '/diagnostics/profiler/benchmark-with-profiling?detail=foo' '{}' -H "$A"
expect_error "benchmark-with-profiling detail=foo" 400 invalid_request_error detail invalid_value
req POST '/diagnostics/profiler/benchmark-with-profiling?max_events=0' '{}' -H "$A"
expect_error "benchmark-with-profiling max_events=0" 400 invalid_request_error max_events invalid_value
req POST /diagnostics/profiler/benchmark-with-profiling '{"concurrency":99}' -H "$A"
expect_error "benchmark-with-profiling concurrency 99" 400 invalid_request_error - invalid_value
curl -s -m 120 -o "$T/pb.json" -w '%{http_code}' -H "$J" -H "$A" -X POST \
    "$URL/diagnostics/profiler/benchmark-with-profiling" \
    -d '{"concurrency":2,"requests":24,"max_tokens":32}' >"$T/pb.code" &
bpid=$!
for i in $(seq 100); do # until it records
    get status >"$T/pst.json"
    [ "$(field 'd.get("benchmark", False)' <"$T/pst.json")" = True ] && break
    sleep 0.05
done
[ "$(field 'd["state"]' <"$T/pst.json")" = recording ] || fail "status during the run: $(cat "$T/pst.json")"
req POST /diagnostics/profiler/start '{}' -H "$A"
expect_error "profiler start during benchmark-with-profiling" 409 invalid_request_error null profiler_busy
req POST /diagnostics/benchmark '{"requests":2}' -H "$A"
expect_error "benchmark during benchmark-with-profiling" 409 invalid_request_error null benchmark_running
req POST /diagnostics/profiler/benchmark-with-profiling '{"requests":2}' -H "$A"
expect_error "second benchmark-with-profiling" 409 invalid_request_error null benchmark_running
[ -s "$T/pb.code" ] && fail "the benchmark ended before the 409 checks; make it longer"
wait $bpid
[ "$(cat "$T/pb.code")" = 200 ] || fail "benchmark-with-profiling: $(cat "$T/pb.code") $(head -c 300 "$T/pb.json")"
PID=$(field 'd["profile"]["trace_id"]' <"$T/pb.json")
get "traces/$PID" >"$T/pt.json"
python3 "$VALIDATE" "$T/pt.json" || fail "trace_validate on the benchmark's trace"
python3 - "$T/pb.json" "$T/pt.json" <<'PY' || fail "benchmark-with-profiling: $(head -c 800 "$T/pb.json")"
import json, sys
d = json.load(open(sys.argv[1]))
t = json.load(open(sys.argv[2]))
run = d["bench"]["runs"][0]
assert d["bench"]["tool"] == "kiln bench" and run["summary"]["ok"] == 24, run["summary"]
assert run["summary"]["output_tps"] > 0
for k in ("before", "after", "verdict"):
    assert k in d, k
p = d["profile"]
assert p["state"] == "done" and p["dropped"] == 0 and p["events"] > 0, p
assert p["trace_url"] == "/diagnostics/profiler/traces/%d" % p["trace_id"], p
steps = [e for e in t["traceEvents"] if e.get("ph") == "X" and e.get("name") == "step"]
# 24 x 32 tokens over 2 slots: hundreds of steps, each in the trace
assert p["steps"] >= 24 * 32 // 2 - 24 and abs(len(steps) - p["steps"]) <= 1, (p["steps"], len(steps))
assert t["otherData"]["profiler"]["schedule"] == "benchmark-with-profiling", t["otherData"]
sm = p["summary"]
names = [s["name"] for s in sm["spans"]]
assert "step" in names and "forward" in names, names
st = next(s for s in sm["spans"] if s["name"] == "step")
assert st["count"] == len(steps) and st["total_ms"] > 0 and st["p99_ms"] >= st["p50_ms"], st
assert sm["step_ms"]["count"] == len(steps) and sm["step_ms"]["p50"] >= 3.0, sm["step_ms"]
assert any(th["busy_fraction"] > 0 for th in sm["threads"]), sm["threads"]
PY
# the profiler is free again; the trace is listed
[ "$(get status | field 'd["state"]')" = done ] || fail "status after: $(get status)"
get traces | grep -q "\"id\":$PID" || fail "the benchmark's trace is not listed: $(get traces)"
check_errors
stop_server

# detail=ops, a decoder and an encoder: layer spans, embedding batches, HTTP spans
start_server ops -m "$T/llama.gguf" -m "$T/bert.gguf" --ctx 256 --parallel 1 -t 2 --diagnostics \
    --api-key k
post 'start?active_steps=100000&detail=ops' >"$T/s4.json"
[ "$(field 'd["state"]' <"$T/s4.json")" = recording ] || fail "ops start: $(cat "$T/s4.json")"
ID4=$(field 'd["id"]' <"$T/s4.json")
req POST /v1/embeddings '{"model":"bert","input":["hello world","a b c"]}' -H "$A"
[ "$CODE" = 200 ] || fail "embeddings during the session: $CODE $(head -c 300 "$T/resp")"
stream 6
post stop >/dev/null
get "traces/$ID4" >"$T/t4.json"
python3 "$VALIDATE" "$T/t4.json" || fail "trace_validate on the ops trace"
python3 - "$T/t4.json" <<'PY' || fail "ops session: $(head -c 600 "$T/t4.json")"
import json, sys
d = json.load(open(sys.argv[1]))
od = d["otherData"]
assert od["detail"] == "ops" and od["fixed_nesting"] == 0, od
ev = d["traceEvents"]
names = {}  # thread name -> its tids (several prep and HTTP threads)
for e in ev:
    if e["ph"] == "M" and e["name"] == "thread_name":
        names.setdefault(e["args"]["name"], set()).add(e["tid"])
xs = [e for e in ev if e["ph"] == "X"]
def inside(e, p):
    return (e["tid"] == p["tid"] and e is not p and e["ts"] >= p["ts"] - 1e-3
            and e["ts"] + e["dur"] <= p["ts"] + p["dur"] + 1e-3)
# every forward pass (the scheduler's and the batcher's) holds 2 layers
fwd = [e for e in xs if e["name"] == "forward"]
threads = {e["tid"] for e in fwd}
assert names["engine"] & threads and names["embed-batcher"] & threads, (names, threads)
for f in fwd:
    for g in ("attention", "ffn"):
        n = sum(e["name"] == g for e in xs if inside(e, f))
        assert n == 2, (g, n, f)
ops = [e for e in xs if e.get("cat") == "op"]
assert ops and all(any(inside(e, f) for f in fwd) for e in ops), "op span outside a forward"
# the embeddings request: one pass of 2 inputs, its batch, tokenized on a prep thread
p = [e for e in xs if e["name"] == "embed_pass"]
assert len(p) == 1 and p[0]["args"]["inputs"] == 2 and p[0]["args"]["requests"] == 1, p
b = [e for e in xs if e["name"] == "embed_batch"]
assert b and all(any(inside(e, q) for q in p) for e in b), b
assert sum(e["args"]["inputs"] for e in b) == 2, b
tok = [e for e in xs if e["name"] == "tokenize" and e.get("cat") == "embed"]
assert tok and tok[0]["tid"] in names["http-prep"], (tok, names)
# HTTP: both bodies parsed on prep threads; JSON answers and stream chunks written
parse = [e for e in xs if e["name"] == "http_parse"]
assert len(parse) == 2 and all(e["tid"] in names["http-prep"] for e in parse), parse
assert all(e["args"]["bytes"] > 0 for e in parse), parse
write = [e for e in xs if e["name"] == "http_write"]
assert any(e["args"].get("status") == 200 and e["args"]["bytes"] > 100 for e in write), write
assert sum("status" not in e["args"] for e in write) >= 2, "no stream chunks written"
http = names.get("http", set()) | names["http-prep"]
assert all(e["tid"] in http for e in write), (write, names)
assert any(e["name"] == "submit" for e in xs)
PY
check_errors
stop_server
echo "serve_profiler: ok"

#!/usr/bin/env bash
# kiln bench when things go wrong: HTTP 500 and 400 answers, refused
# connections, requests past --timeout and malformed answers are counted by
# kind, the tool exits 0 with the counts in its report and never hangs (a
# duration-bounded open loop against a dead port stops by itself; Ctrl-C
# ends a run and the reports are still written); usage
# errors exit 2, an unreadable prompt file or compare input exits 1.
set -u
KILN=$1
T=${KILN_TEST_TMP:-/tmp}/cli-bench-errors-$$
mkdir -p "$T"
fail() { echo "FAIL: $*"; exit 1; }
source "$(dirname "$0")/../bench/stub.sh"

errors_of() { # json -> "kind=n ..." of the non-zero error kinds, and ok=n
    python3 -c "
import json, sys
s = json.load(open('$1'))['runs'][0]['summary']
print(' '.join(['ok=%d' % s['ok']] + ['%s=%d' % kv for kv in sorted(s['errors'].items()) if kv[1]]))"
}
expect() { # name, want, kiln bench args...
    local name=$1 want=$2
    shift 2
    local t0=$SECONDS
    timeout 30 "$KILN" bench -q --json "$T/$name.json" "$@" >"$T/$name.txt" 2>"$T/$name.err"
    local rc=$?
    [ $rc -eq 0 ] || fail "$name: exit $rc ($(cat "$T/$name.err"))"
    local got
    got=$(errors_of "$T/$name.json")
    [ "$got" = "$want" ] || fail "$name: got '$got', want '$want'"
    echo "$name: $got in $((SECONDS - t0)) s"
}

expect e500 "ok=0 http_5xx=6" --url "$STUB_URL/mode=500" --concurrency 2 --requests 6
grep -qF "errors (http_5xx 6)" "$T/e500.txt" || fail "summary lacks the error count: $(cat "$T/e500.txt")"
expect e400 "ok=0 http_4xx=3" --url "$STUB_URL/mode=400" --requests 3
expect refused "ok=0 connect=5" --url "$DEAD_URL" --concurrency 2 --requests 5 --no-models
expect bad "ok=0 bad_response=3" --url "$STUB_URL/mode=bad" --requests 3
expect badembed "ok=0 bad_response=2" --url "$STUB_URL/mode=bad" --workload embeddings --requests 2
# the stub answers slow requests after 30 s: --timeout 0.5 ends them
t0=$SECONDS
expect slow "ok=0 timeout=4" --url "$STUB_URL/mode=slow" --concurrency 4 --requests 4 --timeout 0.5
[ $((SECONDS - t0)) -le 10 ] || fail "timeouts took $((SECONDS - t0)) s"
# warm-up requests are not counted
expect mixed "ok=4" --url "$STUB_URL/ttft=5/itl=1" --requests 4 --warmup 2 --max-tokens 2
# open loop for 1 s against a dead port: stops by itself, every arrival counted
t0=$SECONDS
timeout 30 "$KILN" bench -q --url "$DEAD_URL" --no-models --rate 50 --duration 1 \
    --json "$T/open.json" >"$T/open.txt" 2>&1 || fail "open loop on a dead port: exit $?"
[ $((SECONDS - t0)) -le 8 ] || fail "open loop on a dead port took $((SECONDS - t0)) s"
python3 -c "
import json; s = json.load(open('$T/open.json'))['runs'][0]['summary']
assert s['ok'] == 0 and 20 <= s['errors']['connect'] == s['requests'] <= 120, s" ||
    fail "open loop counts: $(cat "$T/open.txt")"

# Ctrl-C (SIGINT) ends a long run at once and still writes the reports
"$KILN" bench -q --url "$STUB_URL/mode=slow" --concurrency 2 --duration 60 \
    --json "$T/int.json" >"$T/int.txt" 2>"$T/int.err" &
pid=$!
# a watchdog that ends with the run (so no stray sleep holds ctest's pipes)
(for _ in $(seq 300); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done
 kill -9 $pid) >/dev/null 2>&1 &
sleep 1.5
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 0 ] || fail "interrupted run: exit $rc ($(cat "$T/int.err"))"
grep -qF "interrupted" "$T/int.err" || fail "no interruption notice: $(cat "$T/int.err")"
[ "$(errors_of "$T/int.json")" = "ok=0 timeout=2" ] || fail "interrupted run: $(errors_of "$T/int.json")"

# usage errors (2) and runtime errors (1)
usage() {
    timeout 10 "$KILN" bench "$@" >/dev/null 2>&1
    local rc=$?
    [ $rc -eq 2 ] || fail "'bench $*': exit $rc, want 2"
}
usage --requests 3
usage --url "$STUB_URL" --concurrency 2 --rate 5
usage --url "$STUB_URL" --slo ttft=fast
usage --url "$STUB_URL" --workload images
usage --url "$STUB_URL" --concurrency 0
usage --url "$STUB_URL" --concurrency 1,2.5
usage --url "$STUB_URL" --bogus
usage --url "$STUB_URL" --extra-body '[1, 2]'
usage --url "$STUB_URL" --eos-fields stop_tokens
usage compare only-one.json
timeout 10 "$KILN" bench --help | grep -qF -- "--concurrency" || fail "--help"
timeout 10 "$KILN" bench --url "$STUB_URL" --prompts "$T/missing.jsonl" >/dev/null 2>"$T/err"
[ $? -eq 1 ] && grep -qF "missing.jsonl" "$T/err" || fail "missing prompt file: $(cat "$T/err")"
timeout 10 "$KILN" bench compare "$T/e500.json" "$T/nope.json" >/dev/null 2>"$T/err"
[ $? -eq 1 ] && grep -qF "nope.json" "$T/err" || fail "compare missing file: $(cat "$T/err")"
echo "PASS"

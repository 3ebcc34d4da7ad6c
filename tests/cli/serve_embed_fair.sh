#!/usr/bin/env bash
# serve_embed_fair.sh - head-of-line blocking in the embeddings batcher, as
# a hostile client sees it: `kiln serve` on the synthetic bert, one request
# of 2,048 long inputs (about 120,000 tokens) in the background, then, once
# its texts show as queued on /metrics, one-sentence requests while it runs.
# Each small one must answer 200 long before the big one does: the
# batcher splits the big request into token-budget passes and puts the small
# requests' inputs into the next pass. Prints both times; a small request
# must take under a quarter of the big one's time, or under 1 s (whichever
# holds: a quarter is the robust bound when ASan on a busy machine slows
# everything; 1 s when the big request itself is fast). The big request's
# vectors are then checked against the same inputs sent alone.
# FAIR_SLEEP_S=SECONDS sends the small requests that long after the big one
# instead of waiting for its queued texts (to measure a batcher that takes
# a request whole, which never shows them).
# Usage: bash serve_embed_fair.sh /path/to/kiln
set -u
KILN=${1:?usage: serve_embed_fair.sh /path/to/kiln}
T=${KILN_TEST_TMP:-/tmp}/cli-serve-embed-fair-$$
mkdir -p "$T"
SRV_PID=
BIG_PID=
trap '[ -n "$BIG_PID" ] && kill $BIG_PID 2>/dev/null; kill_server; rm -rf "$T"' EXIT
fail() {
    echo "FAIL: $*"
    exit 1
}
. "$(dirname "$0")/../server/lib.sh"

synth_models
start_server fair -m emb="$T/bert.gguf" -t 2

# 2,048 inputs of about 60 tokens each (the synthetic bert's context is 64)
python3 - "$T" <<'PY' || fail "writing the request bodies"
import json, sys
t = sys.argv[1]
words = "the quick brown fox jumps over a lazy dog and then runs far away".split()
big = [" ".join(words[(i + k) % len(words)] for k in range(58)) for i in range(2048)]
json.dump({"model": "emb", "input": big}, open(t + "/big.json", "w"))
json.dump({"model": "emb", "input": big[:3]}, open(t + "/big3.json", "w"))
json.dump({"model": "emb", "input": "one short sentence"}, open(t + "/small.json", "w"))
PY

# timed POST BODYFILE OUT: prints "CODE SECONDS"
timed() {
    curl -s -m 280 -o "$2" -w '%{http_code} %{time_total}\n' -H 'Content-Type: application/json' \
        --data-binary @"$1" "$URL/v1/embeddings"
}

# warm up (first-pass buffers), and the unloaded latency of a small request
read -r CODE S0 <<<"$(timed "$T/small.json" "$T/warm")"
[ "$CODE" = 200 ] || fail "warm-up: $CODE $(head -c 300 "$T/warm")"

timed "$T/big.json" "$T/big.out" >"$T/big.time" &
BIG_PID=$!
# until it is queued: its body read and tokenized, and passes running (the
# texts no pass took yet show as the queue depth; a batcher that took the
# whole request into one call would show none), at most 20 s
Q=
[ -n "${FAIR_SLEEP_S:-}" ] && sleep "$FAIR_SLEEP_S"
for i in $(seq $([ -n "${FAIR_SLEEP_S:-}" ] && echo 0 || echo 200)); do
    Q=$(metric 'kiln_queue_depth{model="emb"}')
    [ -n "$Q" ] && [ "${Q%.*}" -gt 0 ] 2>/dev/null && break
    kill -0 $BIG_PID 2>/dev/null || break
    sleep 0.1
done
kill -0 $BIG_PID 2>/dev/null || fail "the big request ended before a small one was sent" \
    "(its texts never showed as queued: $(cat "$T/big.time"))"
echo "queue depth before the small requests: ${Q:-?} texts"

N=5
for i in $(seq $N); do
    read -r CODE S <<<"$(timed "$T/small.json" "$T/small.$i")"
    [ "$CODE" = 200 ] || fail "small request $i: $CODE $(head -c 300 "$T/small.$i")"
    echo "$S" >>"$T/small.times"
done
BIG_ALIVE=0
kill -0 $BIG_PID 2>/dev/null && BIG_ALIVE=1
wait $BIG_PID
BIG_PID=
read -r CODE BIG <"$T/big.time"
[ "$CODE" = 200 ] || fail "big request: $CODE $(head -c 300 "$T/big.out")"
SMALL_MAX=$(sort -g "$T/small.times" | tail -1)
echo "big request (2048 inputs): ${BIG}s; small requests while it ran: $(tr '\n' ' ' <"$T/small.times")" \
    "(max ${SMALL_MAX}s; alone ${S0}s)"
[ $BIG_ALIVE = 1 ] || echo "note: the big request ended before the last small one"
python3 - "$SMALL_MAX" "$BIG" <<'PY' || fail "a small request waited behind the big one"
import sys
small, big = map(float, sys.argv[1:])
ok = small < big / 4 or small < 1.0
print("small max %.3f s vs big %.3f s: %s" % (small, big, "ok" if ok else "BLOCKED"))
sys.exit(0 if ok else 1)
PY

# the split request's vectors are the same inputs' vectors sent on their own
read -r CODE S <<<"$(timed "$T/big3.json" "$T/big3.out")"
[ "$CODE" = 200 ] || fail "3 inputs: $CODE"
python3 - "$T/big.out" "$T/big3.out" <<'PY' || fail "the big request's vectors"
import json, sys
big = json.load(open(sys.argv[1]))
few = json.load(open(sys.argv[2]))
assert len(big["data"]) == 2048 and [d["index"] for d in big["data"]] == list(range(2048))
for i, d in enumerate(few["data"]):
    a, b = big["data"][i]["embedding"], d["embedding"]
    worst = max(abs(x - y) for x, y in zip(a, b))
    assert len(a) == len(b) == 64 and worst <= 1e-5, (i, worst)
assert big["usage"]["prompt_tokens"] >= 2048 * 50, big["usage"]
PY
stop_server
echo "serve_embed_fair: ok"

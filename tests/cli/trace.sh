#!/usr/bin/env bash
# trace.sh - tracing from the command line: `kiln run --trace` on synthetic
# llama models (kiln synth; no shared data needed) writes a trace the strict
# validator accepts, `kiln trace summary` reads it back, and `kiln trace
# compare` finds no difference between runs of one setup (alternated) but
# finds the forward passes of a four-times-wider model slower.
# Usage: bash trace.sh /path/to/kiln
set -u
KILN=${1:?usage: trace.sh /path/to/kiln}
V="$(cd "$(dirname "$0")/.." && pwd)/trace_validate.py"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$KILN" trace >/dev/null 2>&1
[ $? -eq 2 ] || fail "kiln trace without a subcommand should exit 2"
"$KILN" trace --help | grep -q "kiln trace summary" || fail "kiln trace --help"
"$KILN" run --help | grep -q -- "--trace FILE" || fail "kiln run --help lacks --trace"
"$KILN" trace summary "$T/missing.json" >/dev/null 2>"$T/e"
[ $? -eq 1 ] || fail "summary of a missing file should exit 1"
"$KILN" trace compare "$T/a.json" >/dev/null 2>&1
[ $? -eq 2 ] || fail "compare with one file should exit 2"

"$KILN" synth --arch llama --n-embd 128 --n-layer 2 --n-head 4 --n-ff 256 --ctx 256 --vocab 300 \
    --type q8_0 -q -o "$T/small.gguf" >/dev/null || fail "synth small"
"$KILN" synth --arch llama --n-embd 512 --n-layer 4 --n-head 8 --n-ff 1024 --ctx 256 --vocab 300 \
    --type q8_0 -q -o "$T/wide.gguf" >/dev/null || fail "synth wide"

run() { # run MODEL OUT.json
    "$KILN" run -m "$1" -p "hello world" -n 48 --ignore-eos --seed 1 -t 1 --trace "$2" \
        >/dev/null 2>"$T/err" || fail "run $1: exit $?: $(cat "$T/err")"
}
run "$T/small.gguf" "$T/a.json"
grep -q "trace .*a.json: [0-9]* events" "$T/err" || fail "run does not report the trace: $(cat "$T/err")"
python3 "$V" "$T/a.json" || fail "the trace of kiln run is not valid"
python3 - "$T/a.json" <<'PY' || fail "trace content"
import json, sys
d = json.load(open(sys.argv[1]))
ev = d["traceEvents"]
names = {e["name"] for e in ev if e["ph"] == "X"}
for n in ("tokenize", "prefill", "step", "sample", "forward", "detokenize", "emit"):
    assert n in names, n
steps = [e for e in ev if e["ph"] == "X" and e["name"] == "step"]
assert len(steps) == 48, len(steps)
assert all("kv_used" in e["args"] for e in steps)
assert any(e["ph"] == "M" and e["args"]["name"] == "main" for e in ev)
od = d["otherData"]
assert od["schedule"] == "kiln run" and od["dropped_events"] == 0 and "version" in od
PY

"$KILN" trace summary "$T/a.json" >"$T/sum" 2>&1 || fail "summary exit $?"
grep -q "^step  *48 " "$T/sum" || fail "summary: no 48 steps: $(cat "$T/sum")"
grep -q "^forward  *47 " "$T/sum" || fail "summary: no 47 forwards"
grep -q "^main .*%" "$T/sum" || fail "summary: no busy fraction for main"
grep -q "step time (ms) over 48 steps" "$T/sum" || fail "summary: no step distribution"

# A/B: three runs per side, alternated
for i in 1 2 3; do
    run "$T/small.gguf" "$T/a$i.json"
    run "$T/small.gguf" "$T/b$i.json"
    run "$T/wide.gguf" "$T/w$i.json"
done
python3 "$V" "$T"/a?.json "$T"/w?.json || fail "A/B traces not valid"
# one setup: no difference beyond 10% (a shared CI machine drifts a few percent)
"$KILN" trace compare --min-change 10 --a "$T"/a?.json --b "$T"/b?.json >"$T/same" 2>&1 || fail "compare exit $?"
for s in step forward; do
    grep -q "^$s .*within noise" "$T/same" || fail "same setup: $s flagged: $(cat "$T/same")"
done
grep -q "no significant difference\|significant difference" "$T/same" || fail "no verdict line"
"$KILN" trace compare --a "$T"/a?.json --b "$T"/w?.json >"$T/diff" 2>&1 || fail "compare exit $?"
for s in step forward; do
    grep -q "^$s .*SLOWER" "$T/diff" || fail "wider model: $s not SLOWER: $(cat "$T/diff")"
done
grep -q "significant differences (B vs A)" "$T/diff" || fail "no count of differences"

[ $fails -eq 0 ] && echo "ok: kiln run --trace, trace summary and trace compare"
[ $fails -eq 0 ]

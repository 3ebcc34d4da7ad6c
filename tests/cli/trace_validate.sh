#!/usr/bin/env bash
# trace_validate.sh - the strict trace validator (tests/trace_validate.py)
# itself: it accepts tests/data/trace_good.json and rejects every
# tests/data/trace_bad_<rule>_*.json fixture, naming that rule.
# Usage: bash trace_validate.sh /path/to/kiln   (kiln is not used)
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
V="$HERE/trace_validate.py"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

python3 "$V" "$HERE/data/trace_good.json" || fail "trace_good.json rejected"
n=0
for f in "$HERE"/data/trace_bad_*.json; do
    n=$((n + 1))
    rule=$(basename "$f" .json)
    rule=${rule#trace_bad_}
    rule=${rule%%_*}
    out=$(python3 "$V" "$f" 2>&1)
    rc=$?
    [ $rc -eq 1 ] || fail "$(basename "$f"): exit $rc, want 1 ($out)"
    echo "$out" | grep -q ": $rule: " || fail "$(basename "$f"): no '$rule' problem reported: $out"
done
[ $n -ge 10 ] || fail "only $n bad fixtures found"
[ $fails -eq 0 ] && echo "ok: validator accepts the good trace and rejects $n bad ones"
[ $fails -eq 0 ]

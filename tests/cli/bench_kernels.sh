#!/usr/bin/env bash
# kiln bench-kernels: bad arguments exit 2 with a message naming the bad
# value; a tiny run prints the limits and a row per (type, ISA) and writes
# valid JSON.
set -u
KILN=$1
T=${KILN_TEST_TMP:-/tmp}/cli-bench-kernels-$$
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

for args in "--types q4_x" "--types q8_K" "-t 0" "-t abc" "--rows 12x" "--isa neon" "--batch" \
            "--bogus"; do
    # shellcheck disable=SC2086
    err=$("$KILN" bench-kernels $args 2>&1 >/dev/null); rc=$?
    [ $rc -eq 2 ] || fail "'$args': exit $rc, want 2"
    [ -n "$err" ] || fail "'$args': no message"
done
err=$("$KILN" bench-kernels --types q4_x 2>&1 >/dev/null)
grep -qF "'q4_x'" <<<"$err" || fail "bad type not named: $err"

out=$("$KILN" bench-kernels -t 1 --types q8_0,f32 --isa scalar --rows 32 -n 256 --mb 1 \
      --batch 8 --quick --json "$T/r.json" 2>/dev/null) || fail "tiny run: exit $?"
grep -qE "^limits: memory read [0-9.]+ GB/s" <<<"$out" || fail "no limits line: $out"
grep -qE "^q8_0 +scalar" <<<"$out" || fail "no q8_0 row: $out"
grep -qE "^f32 +scalar" <<<"$out" || fail "no f32 row: $out"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["results"]) == 2' \
    "$T/r.json" || fail "bad JSON: $(cat "$T/r.json")"
echo ok

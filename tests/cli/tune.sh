#!/usr/bin/env bash
# tune.sh - `kiln tune` (issue 13 item 0): --json is valid, every type asked
# for has a choice for matvec and matmul with positive speeds, measured or
# (when other work held the CPUs, as under `ctest -j`) "busy" and kept at
# the ISA rank; what was measured cleanly is in the cache file. `kiln info`
# shows a cached choice and why (from a cache written here, so the check
# does not depend on the machine's load), the rank for a thread count with
# no entry, "forced" under KILN_ISA and "rank: KILN_TUNE=off"; a corrupt
# cache is ignored with a warning. The cache is this test's own file
# (KILN_TUNE_FILE).
set -u
KILN=$1
T=${KILN_TEST_TMP:-/tmp}/cli-tune-$$
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 0; }
export KILN_TUNE_FILE="$T/cache/tune.json"
unset KILN_ISA KILN_TUNE

"$KILN" synth --shape llama-mini --type q8_0 --seed 1 -q -o "$T/m.gguf" >/dev/null ||
    fail "synth exit $?"
"$KILN" tune --types q8_0,q4_K -t 1 --json >"$T/out.json" 2>"$T/err" ||
    fail "tune exit $?: $(cat "$T/err")"
grep -q "tune: measuring the q8_0, q4_K kernels at 1 thread" "$T/err" ||
    fail "no log line on measuring: $(cat "$T/err")"
python3 - "$T/out.json" "$KILN_TUNE_FILE" <<'PY' || fail "tune --json: $(head -c 800 "$T/out.json")"
import json, os, sys
d = json.load(open(sys.argv[1]))
assert d["threads"] == 1 and d["cache"] == sys.argv[2] and d["cache_error"] is None, d
assert d["machine"]["read_gbs"] > 0 and d["seconds"] > 0
isas = {"scalar", "avx2", "avx512"}
assert [t["type"] for t in d["types"]] == ["q8_0", "q4_K"], d["types"]
for t in d["types"]:
    assert t["source"] in ("measured", "busy") and t["n"] == 2048 and t["rows"] == 5632, t
    assert 0 < t["cpu_share"] <= 1.5, t
    for op, unit in (("matvec", "gbs"), ("matmul", "gops")):
        o = t[op]
        assert o["choice"] in isas and o["choice"] in o[unit], o
        assert o[unit] and all(v > 0 for v in o[unit].values()), o
        assert set(o[unit]) <= isas, o
    assert t["matvec"]["bandwidth_percent"][t["matvec"]["choice"]] > 0, t
    if t["source"] == "busy":
        assert t["reason"].startswith("rank: other work held the CPUs"), t
    else:
        assert t["reason"].startswith("matvec " + t["matvec"]["choice"]), t
measured = {t["type"]: t for t in d["types"] if t["source"] == "measured"}
print("measured:", sorted(measured) or "none (busy)")
if measured:
    c = json.load(open(sys.argv[2]))
    assert c["kiln_tune"] == 1 and len(c["machines"]) == 1, c
    m = c["machines"][0]
    assert m["threads"] == 1 and set(m["types"]) == set(measured), m
    for name, t in measured.items():
        assert m["types"][name]["matvec"]["choice"] == t["matvec"]["choice"]
        assert m["types"][name]["matmul"]["choice"] == t["matmul"]["choice"]
else:
    assert not os.path.exists(sys.argv[2]), "busy measurements were cached"
PY

# kiln info reads the cache: an entry for this machine at 1 thread saying
# scalar for q8_0 matvec, the rank ISA for matmul
key=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print("|".join((d["cpu"], d["cpu_features"], d["rank"], d["version"])))' "$T/out.json")
IFS="|" read -r cpu feats rank ver <<<"$key"
mkdir -p "$(dirname "$KILN_TUNE_FILE")"
python3 - "$KILN_TUNE_FILE" "$cpu" "$feats" "$ver" "$rank" <<'PY' || fail "writing a cache"
import json, sys
path, cpu, feats, ver, rank = sys.argv[1:]
types = {"q8_0": {"when": "2026-12-01T10:00:00Z", "n": 2048, "rows": 5632, "cols": 64,
                  "seconds": 0.3,
                  "matvec": {"choice": "scalar", "gbs": {"scalar": 9.5, rank: 4.25}},
                  "matmul": {"choice": rank, "gops": {"scalar": 3.0, rank: 30.0}}}}
json.dump({"kiln_tune": 1, "machines": [{"cpu": cpu, "features": feats, "version": ver,
                                          "threads": 1, "types": types}]}, open(path, "w"))
PY
out=$("$KILN" info "$T/m.gguf" -t 1 2>"$T/err") || fail "info exit $?"
grep -qF "kernels at 1 thread" <<<"$out" || fail "no kernels section: $out"
line=$(grep -E "^  q8_0 +matvec" <<<"$out") || fail "no q8_0 kernel line: $out"
want="q8_0     matvec scalar  matmul $rank"
grep -qF "$want" <<<"$line" || fail "q8_0 line is not '$want': $line"
grep -qF "matvec scalar 9.5 GB/s vs $rank 4.2" <<<"$line" || fail "no speeds in: $line"
grep -qF "(tuned 2026-12-01, cache $KILN_TUNE_FILE)" <<<"$line" || fail "no cache reason: $line"
# a generation run with that cache: matvec on scalar, the output unchanged
"$KILN" run -m "$T/m.gguf" -p "hello" -n 6 -t 1 --temp 0 >"$T/a" 2>"$T/err" ||
    fail "run: $(cat "$T/err")"
KILN_TUNE=off "$KILN" run -m "$T/m.gguf" -p "hello" -n 6 -t 1 --temp 0 >"$T/b" 2>"$T/err" ||
    fail "run KILN_TUNE=off: $(cat "$T/err")"
cmp -s "$T/a" "$T/b" || fail "output differs with the cached choice: $(cat "$T/a") / $(cat "$T/b")"
# another thread count has no entry: the rank, for a model this small
out=$("$KILN" info "$T/m.gguf" -t 3) || fail "info -t 3 exit $?"
grep -qE "^  q8_0 +matvec $rank +matmul $rank +rank: [0-9.]+ MiB of q8_0 matrices" <<<"$out" ||
    fail "-t 3: no rank reason: $(grep -A3 kernels <<<"$out")"
out=$(KILN_TUNE=off "$KILN" info "$T/m.gguf" -t 1) || fail "KILN_TUNE=off info exit $?"
grep -qE "^  q8_0 +matvec $rank .*rank: KILN_TUNE=off" <<<"$out" || fail "KILN_TUNE=off not shown"
out=$(KILN_ISA=scalar "$KILN" info "$T/m.gguf" -t 1) || fail "KILN_ISA info exit $?"
grep -qE "^  q8_0 +matvec scalar +matmul scalar +forced: KILN_ISA=scalar" <<<"$out" ||
    fail "KILN_ISA=scalar not shown: $(grep -A3 kernels <<<"$out")"

# a corrupt cache: a warning, no failure
echo '{"kiln_tune": 1, "machines": [' >"$KILN_TUNE_FILE"
"$KILN" info "$T/m.gguf" -t 1 >/dev/null 2>"$T/err" || fail "info on a corrupt cache: exit $?"
grep -q "ignoring the kernel tune cache" "$T/err" || fail "no warning: $(cat "$T/err")"

"$KILN" tune --types q9_9 >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown type is not a usage error"
echo "PASS"

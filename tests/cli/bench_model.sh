#!/usr/bin/env bash
# bench_model.sh - `kiln bench-model` as a user drives it: the llama-bench
# style table for a decoder (pp and tg rows with their limits) and JSON that
# parses; the embeddings mode on an encoder (a row per batch size, the best
# one, the single-query latency), and on a decoder with --embed; usage errors. Timings are printed by the
# command but never asserted: the machine may be busy.
# Usage: bash bench_model.sh /path/to/kiln   (KILN_TEST_DATA: the shared data folder)
set -u
KILN=${1:?usage: bench_model.sh /path/to/kiln}
M=${KILN_TEST_DATA:-}/models
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# json_ok FILE PYTHON-ASSERTIONS: the file parses (python3 when present, else a grep).
json_ok() {
    if command -v python3 >/dev/null; then
        python3 -c "import json,sys; d = json.load(open(sys.argv[1])); $2" "$1"
    else
        grep -q '"results"' "$1"
    fi
}

# Usage errors need no data.
"$KILN" bench-model -p 16 >/dev/null 2>"$TMP/err"
[ $? -eq 2 ] || fail "missing -m should exit 2"
"$KILN" bench-model -m x.gguf -r 0 >/dev/null 2>&1
[ $? -eq 2 ] || fail "-r 0 should exit 2"
"$KILN" bench-model -m x.gguf --batch-sizes 1,,2 >/dev/null 2>&1
[ $? -eq 2 ] || fail "a bad --batch-sizes should exit 2"
"$KILN" bench-model -m /nonexistent.gguf >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] || fail "a missing model should exit 1"
grep -q "/nonexistent.gguf" "$TMP/err" || fail "a missing model: the error does not name it"

if [ -z "${KILN_TEST_DATA:-}" ] || [ ! -r "$M/stories260K.gguf" ]; then
    echo "SKIP: $M/stories260K.gguf not found (set KILN_TEST_DATA to the shared data folder)"
    [ $fails -eq 0 ] && exit 0 || exit 1
fi

# Decoder: pp16 and tg8 rows with a limit each, and the JSON.
"$KILN" bench-model -m "$M/stories260K.gguf" -p 16 -n 8 -r 1 -t 1 --quick \
    --json "$TMP/b.json" >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 0 ] || fail "bench-model: exit $rc: $(cat "$TMP/err")"
cat "$TMP/out"
grep -q "memory read .* GB/s" "$TMP/out" || fail "no machine line"
for col in model size params type threads test t/s "limit t/s" "% limit"; do
    grep -q "| *$col *|" "$TMP/out" || grep -q "$col" "$TMP/out" || fail "table lacks '$col'"
done
grep -Eq '^\| llama +\| .*\| +1 \| pp16 +\| +[0-9.]+ ± [0-9.]+ \| +[0-9.]+ \| +[0-9.]+%' "$TMP/out" ||
    fail "no pp16 row"
grep -Eq '^\| llama +\| .*\| tg8 +\| +[0-9.]+ ± [0-9.]+ \| +[0-9.]+ \| .*GB/s' "$TMP/out" ||
    fail "no tg8 row with a bandwidth limit"
json_ok "$TMP/b.json" '
r = {x["test"]: x for x in d["results"]}
assert set(r) == {"pp16", "tg8"}, r
assert d["threads"] == 1 and d["n_params"] > 200000 and d["size_bytes"] > 0
assert all(x["ok"] and x["tps_mean"] > 0 and x["limit_tps"] > 0 for x in r.values())
assert len(r["tg8"]["samples"]) == 1 and d["machine"]["read_gbs"] > 0' ||
    fail "the JSON does not parse or lacks fields: $(cat "$TMP/b.json")"

# Encoder: embeddings mode, chosen automatically.
if [ -r "$M/mini-bert-Q8_0.gguf" ]; then
    "$KILN" bench-model -m "$M/mini-bert-Q8_0.gguf" -r 1 -t 1 --quick --batch-sizes 1,16 \
        --query-reps 5 --json "$TMP/e.json" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    [ $rc -eq 0 ] || fail "embed: exit $rc: $(cat "$TMP/err")"
    cat "$TMP/out"
    grep -Eq '^\| bert .*\| embed b1 ' "$TMP/out" || fail "embed: no b1 row"
    grep -Eq '^\| bert .*\| embed b16 ' "$TMP/out" || fail "embed: no b16 row"
    grep -Eq '^256 sentences, [0-9]+ tokens .*best batch: (1|16) documents' "$TMP/out" ||
        fail "embed: no best batch line"
    grep -Eq '^single query .*[0-9]+ tokens\): median [0-9.]+ ms' "$TMP/out" ||
        fail "embed: no single-query latency"
    json_ok "$TMP/e.json" '
e = d["embed"]
assert e["texts"] == 256 and 4000 < e["tokens"] < 7000, e
assert e["best_batch_docs"] in (1, 16) and e["query"]["median_ms"] > 0
assert [x["batch_docs"] for x in d["results"]] == [1, 16]
assert all(x["docs_per_s"] > 0 for x in d["results"])' ||
        fail "embed: the JSON does not parse or lacks fields: $(cat "$TMP/e.json")"
    # --embed on a decoder benchmarks it as an embedder (last-token pooling).
    "$KILN" bench-model -m "$M/stories260K.gguf" --embed -r 1 -t 1 --quick --batch-sizes 1 \
        --query-reps 5 >"$TMP/out" 2>"$TMP/err"
    rc=$?
    [ $rc -eq 0 ] || fail "--embed on a decoder: exit $rc: $(cat "$TMP/err")"
    grep -Eq '^\| llama .*\| embed b1 ' "$TMP/out" || fail "--embed on a decoder: no b1 row"
else
    echo "SKIP: $M/mini-bert-Q8_0.gguf not found: no embeddings check"
fi

[ $fails -eq 0 ] && echo "bench_model.sh: all checks passed"
[ $fails -eq 0 ]

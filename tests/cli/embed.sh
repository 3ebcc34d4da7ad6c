#!/usr/bin/env bash
# kiln embed on a synthetic bert written by kiln synth (no shared data
# needed): JSON and JSONL output with unit-norm vectors, pooling and --dim
# options, the summary on stderr, and clear errors (exit 1) for bad input:
# empty text, invalid UTF-8, over-long text (and --truncate); usage errors
# exit 2; a synthetic llama decoder embeds (last-token pooling). With
# KILN_TEST_DATA, mini-bert's first reference sentence reproduces its
# reference vector, and mini-qwen2's llama.cpp's (tests/data).
set -u
KILN=$1
T=${KILN_TEST_TMP:-/tmp}/cli-embed-$$
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN" synth --arch bert --n-embd 64 --n-layer 2 --n-head 4 --n-ff 128 --ctx 64 --vocab 400 \
    --type q8_0 -q -o "$T/bert.gguf" >/dev/null || fail "synth bert"

# JSON: two texts, 64-dim vectors of norm 1, summary on stderr
"$KILN" embed -m "$T/bert.gguf" -t 2 "hello world" "a b c" >"$T/out.json" 2>"$T/err" ||
    fail "embed exit $? ($(cat "$T/err"))"
python3 - "$T/out.json" <<'PY' || fail "bad JSON output"
import json, math, sys
d = json.load(open(sys.argv[1]))
assert d["dim"] == 64 and len(d["data"]) == 2, d.keys()
for i, item in enumerate(d["data"]):
    assert item["index"] == i and item["n_tokens"] >= 3
    v = item["embedding"]
    assert len(v) == 64 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5
PY
for want in "2 documents" "tokens/s" "docs/s" "ms/doc" "batch size"; do
    grep -qF "$want" "$T/err" || fail "summary lacks '$want'"
done

# JSONL from a file, --dim 16, --pooling cls
printf 'first line\nsecond line\nthird\n' >"$T/in.txt"
"$KILN" embed -m "$T/bert.gguf" -f "$T/in.txt" --jsonl --dim 16 --pooling cls \
    >"$T/out.jsonl" 2>/dev/null || fail "jsonl exit $?"
[ "$(wc -l <"$T/out.jsonl")" -eq 3 ] || fail "expected 3 JSONL lines"
python3 - "$T/out.jsonl" <<'PY' || fail "bad JSONL output"
import json, math, sys
for i, line in enumerate(open(sys.argv[1])):
    item = json.loads(line)
    assert item["index"] == i and len(item["embedding"]) == 16
    assert abs(math.sqrt(sum(x * x for x in item["embedding"])) - 1) < 1e-5
PY
# pooling none: one vector per token
"$KILN" embed -m "$T/bert.gguf" --pooling none --no-normalize "one two" >"$T/none.json" \
    2>/dev/null || fail "pooling none exit $?"
python3 -c "
import json,sys; d=json.load(open('$T/none.json')); it=d['data'][0]
assert len(it['embedding']) == it['n_tokens'] and len(it['embedding'][0]) == 64" ||
    fail "pooling none shape"

# bad input: runtime errors (exit 1) naming the input
expect_err() { # want_text, args...
    local want=$1
    shift
    "$KILN" embed "$@" >/dev/null 2>"$T/e"
    local rc=$?
    [ $rc -eq 1 ] || fail "'$*': exit $rc, want 1"
    grep -qF -- "$want" "$T/e" || fail "'$*': error lacks '$want': $(cat "$T/e")"
}
expect_err "input 1 is an empty string" -m "$T/bert.gguf" "ok" ""
expect_err "input 0 is not valid UTF-8" -m "$T/bert.gguf" "$(printf 'bad \xff byte')"
long=$(for i in $(seq 100); do printf 'a b '; done)
expect_err "context of 64 tokens" -m "$T/bert.gguf" "short" "$long"
"$KILN" embed -m "$T/bert.gguf" --truncate --jsonl "$long" >"$T/tr" 2>/dev/null ||
    fail "--truncate exit $?"
grep -qF '"n_tokens":64,"truncated_from":202' "$T/tr" || fail "truncation not reported"
"$KILN" synth --arch llama --n-embd 64 --n-layer 1 --n-head 4 --n-ff 128 --ctx 64 --vocab 300 \
    -q -o "$T/llama.gguf" >/dev/null || fail "synth llama"
# a decoder embeds too: last-token pooling by default, unit norm
"$KILN" embed -m "$T/llama.gguf" --jsonl "hello" "a longer text here" >"$T/dec" 2>"$T/e" ||
    fail "decoder exit $?: $(cat "$T/e")"
python3 - "$T/dec" <<'PY' || fail "decoder output: $(head -c 300 "$T/dec")"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2
for r in rows:
    assert len(r["embedding"]) == 64 and abs(math.sqrt(sum(x * x for x in r["embedding"])) - 1) < 1e-4
assert rows[0]["embedding"] != rows[1]["embedding"]
PY
"$KILN" embed -m "$T/llama.gguf" "hello" 2>/dev/null | grep -qF '"pooling":"last"' ||
    fail "a decoder's default pooling is not last"
expect_err "cannot open" -m "$T/missing.gguf" "hello"

# usage errors
"$KILN" embed "text" >/dev/null 2>&1
[ $? -eq 2 ] || fail "missing -m is not a usage error"
"$KILN" embed -m "$T/bert.gguf" --pooling max "x" >/dev/null 2>&1
[ $? -eq 2 ] || fail "bad --pooling is not a usage error"
"$KILN" embed -m "$T/bert.gguf" >/dev/null 2>&1
[ $? -eq 2 ] || fail "no texts is not a usage error"

# reference vector (shared data)
if [ -n "${KILN_TEST_DATA:-}" ] && [ -f "$KILN_TEST_DATA/models/mini-bert-Q8_0.gguf" ]; then
    "$KILN" embed -m "$KILN_TEST_DATA/models/mini-bert-Q8_0.gguf" --jsonl \
        "The cat sits on the mat." >"$T/ref" 2>/dev/null || fail "mini-bert exit $?"
    python3 - "$T/ref" "$KILN_TEST_DATA/reference/embeddings/mini-bert-Q8_0.json" <<'PY' ||
import json, math, sys
got = json.loads(open(sys.argv[1]).readline())["embedding"]
ref = json.load(open(sys.argv[2]))["sentences"][0]["embedding"]
dot = sum(a * b for a, b in zip(got, ref))
assert dot / math.sqrt(sum(a * a for a in got) * sum(b * b for b in ref)) >= 0.9995
assert max(abs(a - b) for a, b in zip(got, ref)) <= 1e-2
PY
        fail "mini-bert vector differs from the reference"
else
    echo "SKIP reference check: KILN_TEST_DATA not set"
fi

# a decoder model against llama.cpp's vector (tests/data, see test_embed_decoder.c)
if [ -n "${KILN_TEST_DATA:-}" ] && [ -f "$KILN_TEST_DATA/models/mini-qwen2-Q8_0.gguf" ]; then
    "$KILN" embed -m "$KILN_TEST_DATA/models/mini-qwen2-Q8_0.gguf" "hello" >"$T/q" 2>/dev/null ||
        fail "mini-qwen2 'hello' exit $?"
    grep -qF '"pooling":"last"' "$T/q" || fail "mini-qwen2 pooling is not last"
    "$KILN" embed -m "$KILN_TEST_DATA/models/mini-qwen2-Q8_0.gguf" --jsonl \
        "The cat sits on the mat." >"$T/qref" 2>/dev/null || fail "mini-qwen2 exit $?"
    python3 - "$T/qref" "$(dirname "$0")/../data/embed-decoder-ref.json" <<'PY' ||
import json, math, sys
got = json.loads(open(sys.argv[1]).readline())["embedding"]
m = [m for m in json.load(open(sys.argv[2]))["models"] if m["model"] == "mini-qwen2-Q8_0.gguf"][0]
ref = m["sentences"][0]["last"]
dot = sum(a * b for a, b in zip(got, ref))
assert dot / math.sqrt(sum(a * a for a in got) * sum(b * b for b in ref)) >= 0.999
PY
        fail "mini-qwen2 vector differs from llama.cpp's"
else
    echo "SKIP decoder reference check: mini-qwen2-Q8_0.gguf not found"
fi
echo "PASS"

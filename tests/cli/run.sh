#!/usr/bin/env bash
# run.sh - `kiln run` as a user drives it: text and a timing summary for a
# real model, one clear error line (exit 1) for a missing model file, and an
# error naming both numbers for a prompt longer than the context.
# Usage: bash run.sh /path/to/kiln   (KILN_TEST_DATA: the shared data folder)
set -u
KILN=${1:?usage: run.sh /path/to/kiln}
MODEL=${KILN_TEST_DATA:-}/models/stories260K.gguf
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Usage errors need no data.
"$KILN" run -p "hi" >"$TMP/out" 2>"$TMP/err"
[ $? -eq 2 ] || fail "missing -m should exit 2"
grep -q -- "-m MODEL" "$TMP/err" || fail "missing -m should say what is required"

"$KILN" run -m /nonexistent/model.gguf -p "hi" >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 1 ] || fail "missing model: exit $rc, want 1"
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "missing model: want one error line, got: $(cat "$TMP/err")"
grep -q "/nonexistent/model.gguf" "$TMP/err" || fail "missing model: error does not name the file"
[ ! -s "$TMP/out" ] || fail "missing model: stdout is not empty"

if [ -z "${KILN_TEST_DATA:-}" ] || [ ! -r "$MODEL" ]; then
    echo "SKIP: $MODEL not found (set KILN_TEST_DATA to the shared data folder)"
    [ $fails -eq 0 ] && exit 0 || exit 1
fi

# Generation: text on stdout, the summary on stderr.
"$KILN" run -m "$MODEL" -p "Once upon a time" -n 16 >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 0 ] || fail "run: exit $rc: $(cat "$TMP/err")"
grep -q "^Once upon a time" "$TMP/out" || fail "run: stdout does not start with the prompt"
[ "$(wc -c <"$TMP/out")" -gt 20 ] || fail "run: no generated text: $(cat "$TMP/out")"
for word in load prompt generation tokens/s tokenize prefill "decode forward" sampling detokenize; do
    grep -q "$word" "$TMP/err" || fail "run: summary lacks '$word'"
done

# Greedy is deterministic and matches llama.cpp's continuation.
"$KILN" run -m "$MODEL" -p "Once upon a time" -n 12 --temp 0 -t 1 >"$TMP/out" 2>"$TMP/err"
grep -q "^Once upon a time, there was a little girl named Lily" "$TMP/out" ||
    fail "greedy: unexpected text: $(cat "$TMP/out")"

# Seeded sampling repeats itself.
"$KILN" run -m "$MODEL" -p "Once upon a time" -n 24 --seed 7 --temp 1 >"$TMP/a" 2>/dev/null
"$KILN" run -m "$MODEL" -p "Once upon a time" -n 24 --seed 7 --temp 1 >"$TMP/b" 2>/dev/null
cmp -s "$TMP/a" "$TMP/b" || fail "the same seed gave different text"

# A prompt longer than the context: an error naming both numbers.
"$KILN" run -m "$MODEL" -c 8 -p "Once upon a time there was a little girl named Lily" \
    >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 1 ] || fail "long prompt: exit $rc, want 1"
grep -Eq "[0-9]+ tokens.*context of 8" "$TMP/err" || fail "long prompt: error lacks the numbers: $(cat "$TMP/err")"
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "long prompt: want one error line: $(cat "$TMP/err")"

# A bad option value is a usage error.
"$KILN" run -m "$MODEL" -p "x" --top-p abc >/dev/null 2>&1
[ $? -eq 2 ] || fail "bad --top-p should exit 2"

[ $fails -eq 0 ] && echo "run.sh: all checks passed"
[ $fails -eq 0 ]

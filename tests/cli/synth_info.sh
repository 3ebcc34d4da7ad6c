#!/usr/bin/env bash
# kiln synth --shape bge-small, then kiln info on it: a complete BERT with a
# generated WordPiece vocabulary, every tensor of the table present; the same
# seed gives the same bytes.
set -u
KILN=$1
T=${KILN_TEST_TMP:-/tmp}/cli-synth-$$
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN" synth --shape bge-small --seed 3 -o "$T/bge.gguf" 2>"$T/progress" >/dev/null ||
    fail "synth exit $?"
grep -qF "[ 197/197]" "$T/progress" || fail "no progress for 197 tensors"
out=$("$KILN" info "$T/bge.gguf") || fail "info exit $?"
for want in "architecture: bert" "197 tensors" "all present with the expected shapes" \
    "tokenizer: bert" "pooling                  cls" "position_embd.weight" "f16"; do
    grep -qF -- "$want" <<<"$out" || fail "missing '$want'"
done
"$KILN" synth --shape bge-small --seed 3 -q -o "$T/bge2.gguf" >/dev/null || fail "second synth"
cmp -s "$T/bge.gguf" "$T/bge2.gguf" || fail "same seed, different bytes"

"$KILN" synth --shape no-such-shape -o "$T/x.gguf" >/dev/null 2>&1
[ $? -eq 2 ] || fail "unknown shape is not a usage error"
"$KILN" synth --shape llama-mini --type q9_9 -o "$T/x.gguf" >/dev/null 2>&1
[ $? -eq 2 ] || fail "unknown type is not a usage error"
echo "PASS"

#!/usr/bin/env bash
# perplexity.sh - `kiln perplexity` on the trained TinyStories models: the
# perplexity of a short story is finite and in a sane range, a top-k logits
# dump round-trips, Q3_K_M compared with the Q8_0 dump agrees on most top-1
# tokens with a small KL, a model compared with its own dump gives KL 0 and
# 100% agreement, and --tokens accepts a JSON list and bare ids.
# Usage: bash perplexity.sh /path/to/kiln   (KILN_TEST_DATA: the shared data folder)
#
# Measured when written (ctx 64, 2 threads): stories260K PPL 3.40 (854
# tokens, 13 chunks); TinyStories-656K Q8_0 116.5 and Q3_K_M 122.2 (409
# tokens, 6 chunks; its SPM vocabulary splits words unlike its training
# tokenizer, e.g. "On|ce |upon a tim|e", so its perplexity is high even on
# its own samples); Q3_K_M vs the Q8_0 dump: KL 0.026, top-1 agreement 87%.
set -u
KILN=${1:?usage: perplexity.sh /path/to/kiln}
M=${KILN_TEST_DATA:-}/models
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Usage errors need no data.
"$KILN" perplexity -f /dev/null >"$TMP/out" 2>"$TMP/err"
[ $? -eq 2 ] || fail "missing -m should exit 2"
"$KILN" perplexity -m x.gguf -f a --tokens b >/dev/null 2>&1
[ $? -eq 2 ] || fail "two inputs should exit 2"
"$KILN" perplexity -m x.gguf -f a --ctx 0 >/dev/null 2>&1
[ $? -eq 2 ] || fail "--ctx 0 should exit 2"

if [ -z "${KILN_TEST_DATA:-}" ] || [ ! -r "$M/stories260K.gguf" ] ||
    [ ! -r "$M/TinyStories-656K-Q8_0.gguf" ] || [ ! -r "$M/TinyStories-656K-Q3_K_M.gguf" ]; then
    echo "SKIP: the TinyStories models are not in $M (set KILN_TEST_DATA to the shared data folder)"
    [ $fails -eq 0 ] && exit 0 || exit 1
fi

cat >"$TMP/story.txt" <<'STORY'
Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, Lily saw a big red ball under a tree. She ran to the ball and picked it up. It was very shiny and pretty.
Lily's friend Tom came to play with her. "Can I play with the ball too?" Tom asked. Lily smiled and said, "Yes, we can play together!" They threw the ball to each other and laughed. The sun was warm and the birds were singing.
Then, a little dog came running to them. The dog wanted to play with the ball too. It jumped and barked. Lily and Tom were happy to see the dog. They threw the ball and the dog ran after it. The dog brought the ball back to Lily.
After a while, Lily's mom called her. "Lily, it is time to go home and eat dinner," she said. Lily was sad to leave, but she was also hungry. She said goodbye to Tom and the dog. "Can we play again tomorrow?" she asked. Tom said, "Yes, we can!"
At home, Lily ate her dinner with her mom and dad. She told them about the big red ball and the little dog. Her mom and dad smiled. They were happy that Lily had a fun day. Then Lily took a bath and went to bed. She dreamed about playing with the ball and the dog in the park.
The next day, Lily went back to the park. Tom was there, and so was the little dog. They played all day long. Lily learned that sharing makes playing more fun. From that day on, Lily, Tom and the dog were the best of friends.
Once upon a time, there was a small bird named Ben. Ben lived in a big tree near a pond. Every morning, Ben would fly around the pond and look for food. One day, Ben saw a shiny rock in the water. He wanted to get it, but he could not swim.
Ben asked his friend the frog for help. "Frog, can you get the shiny rock for me?" Ben asked. The frog said, "Yes, I can help you." The frog jumped into the water and swam to the rock. He picked it up and gave it to Ben. Ben was very happy. He said, "Thank you, Frog! You are a good friend."
STORY

# ppl FILE: the number after "PPL = " on the final line.
ppl() { sed -n 's/^Final estimate: PPL = \([0-9.]*\) .*/\1/p' "$1"; }
# in_range VALUE LO HI: LO < VALUE < HI (awk: the shell has no floats).
in_range() { awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(v != "" && v > lo && v < hi) }'; }

# stories260K: progress per chunk, then the estimate.
"$KILN" perplexity -m "$M/stories260K.gguf" -f "$TMP/story.txt" --ctx 64 >"$TMP/out" 2>"$TMP/err"
[ $? -eq 0 ] || fail "stories260K: exit $?: $(cat "$TMP/err")"
grep -Eq '^\[1\][0-9.]+,\[2\][0-9.]+,' "$TMP/out" || fail "stories260K: no per-chunk progress: $(cat "$TMP/out")"
grep -Eq '^Final estimate: PPL = [0-9.]+ \+/- [0-9.]+$' "$TMP/out" || fail "stories260K: no final estimate"
p=$(ppl "$TMP/out")
in_range "$p" 1.5 10 || fail "stories260K: PPL $p outside (1.5, 10) (3.40 when written)"

# TinyStories-656K Q8_0: dump the top-20 logits.
"$KILN" perplexity -m "$M/TinyStories-656K-Q8_0.gguf" -f "$TMP/story.txt" --ctx 64 \
    --dump-logits "$TMP/q8.json" --top-k 20 >"$TMP/out" 2>"$TMP/err"
[ $? -eq 0 ] || fail "656K Q8_0: exit: $(cat "$TMP/err")"
p8=$(ppl "$TMP/out")
in_range "$p8" 5 1000 || fail "656K Q8_0: PPL $p8 outside (5, 1000) (116.5 when written)"
if command -v python3 >/dev/null; then
    python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
assert d["top_k"] == 20 and d["n_ctx"] == 64 and len(d["positions"]) > 0
p = d["positions"][0]
assert len(p["ids"]) == 20 and len(p["logits"]) == 20 and p["logits"][0] >= p["logits"][19]
assert p["lse"] >= p["logits"][0]' "$TMP/q8.json" || fail "the dump is not the expected JSON"
else
    grep -q '"positions"' "$TMP/q8.json" || fail "the dump has no positions"
fi

# Q3_K_M against the Q8_0 dump: most top-1 tokens agree, small KL.
"$KILN" perplexity -m "$M/TinyStories-656K-Q3_K_M.gguf" --compare "$TMP/q8.json" >"$TMP/out" 2>"$TMP/err"
[ $? -eq 0 ] || fail "compare: exit: $(cat "$TMP/err")"
agree=$(sed -n 's/^  top-1 agreement *\([0-9.]*\) %.*/\1/p' "$TMP/out")
kl=$(sed -n 's/^  mean KL divergence *\([0-9.]*\) .*/\1/p' "$TMP/out")
in_range "$agree" 50 100.001 || fail "compare: top-1 agreement '$agree' not in (50, 100]"
in_range "$kl" 0.000001 0.2 || fail "compare: KL '$kl' not in (0, 0.2) (0.026 when written)"
grep -q "PPL reference   $p8 " "$TMP/out" || fail "compare: the reference PPL is not the dump's ($p8)"

# A model against its own dump: KL 0, full agreement.
"$KILN" perplexity -m "$M/TinyStories-656K-Q8_0.gguf" --compare "$TMP/q8.json" >"$TMP/out" 2>&1
grep -Eq '^  mean KL divergence  0\.0000[0-9]* ' "$TMP/out" || fail "self compare: KL not 0: $(grep KL "$TMP/out")"
grep -q '^  top-1 agreement     100.00 %' "$TMP/out" || fail "self compare: agreement not 100%"

# A dump from another vocabulary is refused with one line.
"$KILN" perplexity -m "$M/stories260K.gguf" --compare "$TMP/q8.json" >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] || fail "vocabulary mismatch should exit 1"
grep -q "vocabulary" "$TMP/err" || fail "vocabulary mismatch: unclear error: $(cat "$TMP/err")"

# --tokens: the dump's token list as a JSON list and as bare ids gives the same PPL.
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["tokens"]))' \
    "$TMP/q8.json" >"$TMP/tok.json" 2>/dev/null || tr -d '\n' <"$TMP/q8.json" |
    sed 's/.*"tokens": \(\[[^]]*\]\).*/\1/' >"$TMP/tok.json"
tr -d '[],' <"$TMP/tok.json" >"$TMP/tok.txt"
"$KILN" perplexity -m "$M/TinyStories-656K-Q8_0.gguf" --tokens "$TMP/tok.json" --ctx 64 >"$TMP/a" 2>&1
"$KILN" perplexity -m "$M/TinyStories-656K-Q8_0.gguf" --tokens "$TMP/tok.txt" --ctx 64 >"$TMP/b" 2>&1
[ "$(ppl "$TMP/a")" = "$p8" ] || fail "--tokens JSON: PPL $(ppl "$TMP/a"), want $p8"
[ "$(ppl "$TMP/b")" = "$p8" ] || fail "--tokens ids: PPL $(ppl "$TMP/b"), want $p8"

# Too few tokens for one chunk: both numbers.
"$KILN" perplexity -m "$M/stories260K.gguf" -f "$TMP/story.txt" --ctx 4096 >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] || fail "short input should exit 1"
grep -Eq "[0-9]+ tokens.*4096" "$TMP/err" || fail "short input: error lacks the numbers: $(cat "$TMP/err")"

[ $fails -eq 0 ] && echo "perplexity.sh: all checks passed"
[ $fails -eq 0 ]

#!/usr/bin/env bash
# chat.sh - `kiln chat` as a user drives it: two user lines piped in give two
# replies and a timing summary; a model without a chat template and no
# --chat-template is one clear error line (exit 1); a bad template name too.
# Usage: bash chat.sh /path/to/kiln   (KILN_TEST_DATA: the shared data folder)
set -u
KILN=${1:?usage: chat.sh /path/to/kiln}
MODEL=${KILN_TEST_DATA:-}/models/stories260K.gguf
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

echo hi | "$KILN" chat >"$TMP/out" 2>"$TMP/err"
[ $? -eq 2 ] || fail "missing -m should exit 2"
grep -q -- "-m MODEL" "$TMP/err" || fail "missing -m should say what is required"

if [ -z "${KILN_TEST_DATA:-}" ] || [ ! -r "$MODEL" ]; then
    echo "SKIP: $MODEL not found (set KILN_TEST_DATA to the shared data folder)"
    [ $fails -eq 0 ] && exit 0 || exit 1
fi

# Two turns through a pipe: two replies (one line each at -n 8), a summary.
printf 'Hello there\nTell me a story\n' |
    "$KILN" chat -m "$MODEL" --chat-template chatml -n 8 --seed 1 >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 0 ] || fail "chat: exit $rc: $(cat "$TMP/err")"
[ "$(wc -l <"$TMP/out")" -eq 2 ] || fail "chat: want two reply lines, got: $(cat "$TMP/out")"
[ "$(head -c 200 "$TMP/out" | tr -d '[:space:]' | wc -c)" -gt 0 ] || fail "chat: empty replies"
for word in load turns prompt "reused from the KV cache" generation tokens/s prefill sampling; do
    grep -q "$word" "$TMP/err" || fail "chat: summary lacks '$word'"
done
grep -q "turns *2" "$TMP/err" || fail "chat: want 2 turns: $(cat "$TMP/err")"
grep -Eq "\(\+[1-9][0-9]* reused" "$TMP/err" || fail "chat: the second turn did not reuse the cache"

# The same seed repeats the conversation; /exit ends it early.
printf 'Hello there\nTell me a story\n' |
    "$KILN" chat -m "$MODEL" --chat-template chatml -n 8 --seed 1 >"$TMP/b" 2>/dev/null
cmp -s "$TMP/out" "$TMP/b" || fail "chat: the same seed gave different replies"
printf 'Hello\n/exit\nnot read\n' |
    "$KILN" chat -m "$MODEL" --chat-template llama2 --system "Be brief." -n 4 >"$TMP/out" 2>"$TMP/err"
[ $? -eq 0 ] || fail "/exit: $(cat "$TMP/err")"
grep -q "turns *1" "$TMP/err" || fail "/exit: want 1 turn"

# No template in the model and none named: one clear error line, exit 1.
echo hi | "$KILN" chat -m "$MODEL" >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 1 ] || fail "no template: exit $rc, want 1"
grep -q "no chat template" "$TMP/err" || fail "no template: unclear error: $(cat "$TMP/err")"
grep -q -- "--chat-template" "$TMP/err" || fail "no template: error does not name the flag"
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "no template: want one error line: $(cat "$TMP/err")"

echo hi | "$KILN" chat -m "$MODEL" --chat-template alpaca >"$TMP/out" 2>"$TMP/err"
[ $? -eq 1 ] || fail "unknown template name should exit 1"
grep -q "unknown chat template 'alpaca'" "$TMP/err" || fail "unknown template: $(cat "$TMP/err")"

# kiln run's new sampling flags.
"$KILN" run -m "$MODEL" -p "Once upon a time" -n 30 --temp 0 --stop "Lily" >"$TMP/out" 2>/dev/null
grep -q "named $" "$TMP/out" || fail "run --stop: $(cat "$TMP/out")"
grep -q "Lily" "$TMP/out" && fail "run --stop: the stop string was printed"
"$KILN" run -m "$MODEL" -p "x" -n 4 --presence-penalty 0.5 --frequency-penalty 0.5 \
    --logit-bias 5=-inf --logit-bias 7=1.5 >/dev/null 2>&1 || fail "run: penalty/bias flags"
"$KILN" run -m "$MODEL" -p "x" --logit-bias 5 >/dev/null 2>&1
[ $? -eq 2 ] || fail "run: bad --logit-bias should exit 2"

[ $fails -eq 0 ] && echo "chat.sh: all checks passed"
[ $fails -eq 0 ]

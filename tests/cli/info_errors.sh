#!/usr/bin/env bash
# kiln info on bad input: a truncated file and a non-GGUF file give exit 1 and
# one line naming the file (and, when truncated, a byte offset); a file whose
# general.architecture is unknown is shown with the architecture called
# unsupported. Uses only files kiln synth writes.
set -u
KILN=$1
T=${KILN_TEST_TMP:-/tmp}/cli-info-errors-$$
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN" synth --arch llama --n-embd 64 --n-layer 1 --n-head 4 --n-ff 128 --ctx 64 --vocab 300 \
    --type f32 -q -o "$T/tiny.gguf" >/dev/null || fail "synth failed"

head -c 3000 "$T/tiny.gguf" >"$T/trunc.gguf"
err=$("$KILN" info "$T/trunc.gguf" 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] || fail "truncated: exit $rc, want 1"
[ "$(wc -l <<<"$err")" -eq 1 ] || fail "truncated: more than one line: $err"
grep -qE "^kiln: $T/trunc.gguf: .*byte [0-9]+" <<<"$err" || fail "truncated: message '$err'"

printf 'this is not a model\n' >"$T/text.gguf"
err=$("$KILN" info "$T/text.gguf" 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] || fail "non-GGUF: exit $rc, want 1"
grep -qE "^kiln: $T/text.gguf: .*GGUF" <<<"$err" || fail "non-GGUF: message '$err'"

err=$("$KILN" info "$T/missing.gguf" 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] || fail "missing file: exit $rc, want 1"
grep -qF "$T/missing.gguf" <<<"$err" || fail "missing file: message '$err'"

# general.architecture is the first key synth writes, so the first "llama" in
# the file is its value: overwrite it in place with "xyzzy".
cp "$T/tiny.gguf" "$T/arch.gguf"
off=$(grep -obUaF llama "$T/arch.gguf" | head -1 | cut -d: -f1)
printf 'xyzzy' | dd of="$T/arch.gguf" bs=1 seek="$off" conv=notrunc status=none
out=$("$KILN" info "$T/arch.gguf") || fail "unknown architecture: exit $?, want 0"
grep -qF "unsupported architecture 'xyzzy'" <<<"$out" || fail "unknown architecture not named"
grep -qF "token_embd.weight" <<<"$out" || fail "unknown architecture: no tensor table"

"$KILN" info >/dev/null 2>&1
[ $? -eq 2 ] || fail "no FILE is not a usage error"
echo "PASS"

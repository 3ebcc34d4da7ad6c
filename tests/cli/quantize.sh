#!/usr/bin/env bash
# kiln quantize: a synth F32 model to Q8_0 (types and file type in kiln info),
# an unwritable output path (exit 1, path named), an unknown type (exit 2,
# valid types listed), an unreadable input (exit 1).
set -u
KILN=$1
T=${KILN_TEST_TMP:-/tmp}/cli-quantize-$$
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$KILN" synth --arch qwen2 --n-embd 64 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 128 --ctx 64 \
    --vocab 300 --type f32 -q -o "$T/f32.gguf" >/dev/null || fail "synth failed"

out=$("$KILN" quantize "$T/f32.gguf" "$T/q8.gguf" Q8_0 --threads 2 2>"$T/progress") ||
    fail "quantize exit $?"
grep -qF "blk.1.ffn_down.weight" "$T/progress" || fail "no per-tensor progress"
grep -qF "general.file_type 7" <<<"$out" || fail "summary: $out"
info=$("$KILN" info "$T/q8.gguf") || fail "info on the output failed"
grep -qE "blk.0.attn_q.weight +q8_0" <<<"$info" || fail "attn_q is not q8_0"
grep -qE "blk.0.attn_q.bias +f32" <<<"$info" || fail "attn_q.bias is not f32"
grep -qF "general.file_type                        7 (Q8_0)" <<<"$info" || fail "file type not 7"

# rows of 64 do not fit q4_K's 256-element blocks: fallback, said per tensor
"$KILN" quantize "$T/f32.gguf" "$T/q4k.gguf" Q4_K_M 2>"$T/progress" >/dev/null || fail "Q4_K_M exit $?"
grep -qF "fallback" "$T/progress" || fail "fallback not reported"

err=$("$KILN" quantize "$T/f32.gguf" /nonexistent-dir/out.gguf q8_0 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] || fail "unwritable: exit $rc, want 1"
grep -qF "/nonexistent-dir/out.gguf" <<<"$err" || fail "unwritable: path not named: $err"

err=$("$KILN" quantize "$T/f32.gguf" "$T/x.gguf" q9_9 2>&1 >/dev/null); rc=$?
[ $rc -eq 2 ] || fail "unknown type: exit $rc, want 2"
grep -qF "Q4_K_M" <<<"$err" || fail "unknown type: valid types not listed: $err"

err=$("$KILN" quantize "$T/none.gguf" "$T/x.gguf" q8_0 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] || fail "missing input: exit $rc, want 1"
grep -qF "$T/none.gguf" <<<"$err" || fail "missing input not named: $err"
echo "PASS"

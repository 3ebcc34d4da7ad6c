#!/usr/bin/env bash
# kiln info on the shared test models: exit 0, the architecture, a tensor
# table, totals and a memory estimate; a vocab-only file and a file of an
# unsupported architecture still show what they can.
set -u
KILN=$1
M=${KILN_TEST_DATA:-}/models
if [ -z "${KILN_TEST_DATA:-}" ] || [ ! -f "$M/mini-llama-spm-Q8_0.gguf" ]; then
    echo "SKIP: shared models not found (set KILN_TEST_DATA)"
    exit 0
fi
fail() { echo "FAIL: $*"; exit 1; }

out=$("$KILN" info "$M/mini-llama-spm-Q8_0.gguf" --ctx 4096 --batch 256) || fail "exit $? on mini-llama-spm"
for want in "architecture: llama" "attention.head_count_kv  4" "tensors:" \
    "blk.3.ffn_down.weight" "q8_0" "parameters: 11,340,032" "memory at context 4096, batch 256" \
    "KV cache" "output tied to token_embd" "tokenizer: llama"; do
    grep -qF -- "$want" <<<"$out" || fail "mini-llama-spm: missing '$want'"
done
out=$("$KILN" info "$M/mini-bert-Q8_0.gguf") || fail "exit $? on mini-bert"
grep -qF "bidirectional encoder" <<<"$out" || fail "mini-bert: not shown as an encoder"
grep -qF "(encoder: none)" <<<"$out" || fail "mini-bert: KV cache not none"
out=$("$KILN" info "$M/vocab/ggml-vocab-bert-bge.gguf") || fail "exit $? on a vocab-only file"
grep -qF "vocab-only" <<<"$out" || fail "vocab-only file not reported"
out=$("$KILN" info "$M/quant/quant-conformance.gguf") || fail "exit $? on quant-conformance"
grep -qF "unsupported architecture 'quant-conformance'" <<<"$out" || fail "unsupported arch not said"
grep -qF "(type unsupported)" <<<"$out" || fail "unsupported tensor type not marked"
"$KILN" info "$M/mini-llama-spm-Q8_0.gguf" --kv-type q4_K >/dev/null 2>&1
[ $? -eq 2 ] || fail "bad --kv-type is not a usage error"
echo "PASS"

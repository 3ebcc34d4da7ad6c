/* memory.h - how much memory a model needs to run: its weights, the KV cache
 * at a context size, sequence count and cache element type, and a compute
 * buffer for one forward pass over a batch of tokens.
 *
 * The compute estimate is a planning figure, not an allocator's exact size.
 * Decoders (model/llama.c; attention is tiled, so no scores are kept):
 *   residual stream and its normed copy     2 * n_batch * n_embd * 4
 *   + the larger of
 *       attention: q, k and v rows           n_batch * (n_q + 2*n_kv) * 4
 *       FFN:       hidden rows               n_batch * n_ff * 4 * (2 if gated else 1)
 *   + rotation table                         n_batch * n_rot * 4
 *   + converted activations                  n_batch * max(n_embd, n_ff) * 2
 *     (F16's size; the int8 partners of quantized weights take about half)
 *   + their prepared copy for wide products  n_batch * m * 5 / 4, m = max(n_embd,
 *     (compute/kernels.h gemm_xp)            n_ff) rounded up to a multiple of 512
 *   + logits, one row per sequence           n_seq * n_vocab * 4
 * Encoders (no KV cache; attention within the batch, n_kv_len =
 * min(n_batch, n_ctx)):
 *   2 * n_batch * n_embd * 4
 *   + the larger of
 *       attention: q, k, v and output rows   n_batch * (n_q + 2*n_kv + n_embd) * 4
 *                  scores                    n_head * n_batch * n_kv_len * 4
 *       FFN:       hidden rows               as above
 *   + quantized activations                  n_batch * max(n_embd, n_ff) * 4
 *   + per-token embeddings                   n_batch * n_embd * 4
 * All functions are pure and thread-safe. */
#ifndef KILN_MODEL_MEMORY_H
#define KILN_MODEL_MEMORY_H

#include "kiln.h"
#include "model/arch.h"
#include "model/gguf.h"

#include <stdint.h>

struct mem_params {
    uint32_t n_ctx;    /* tokens of context per sequence */
    uint32_t n_seq;    /* sequences served at once (KV cache slots) */
    uint32_t n_batch;  /* tokens per forward pass */
    kiln_type kv_type; /* F16, F32 or Q8_0 */
};

struct mem_estimate {
    uint64_t weights;  /* sum of tensor sizes */
    uint64_t kv_cache; /* K and V for every layer, n_ctx * n_seq positions */
    uint64_t compute;  /* see the formula above */
    uint64_t total;
};

/* Sum of the sizes of all tensors in f. */
uint64_t mem_weight_bytes(const gguf_file *f);

/* Fills *out for a model with hyperparameters hp and weight_bytes of weights.
 * KILN_ERR_INVALID_ARG when a count is 0 or kv_type is not F16/F32/Q8_0;
 * KILN_ERR_RANGE when the KV row (n_head_kv * head_dim) is not a multiple of
 * kv_type's block size or a size overflows. */
kiln_status mem_estimate(const struct arch_hparams *hp, uint64_t weight_bytes,
                         const struct mem_params *p, struct mem_estimate *out);

#endif

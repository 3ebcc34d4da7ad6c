/* llama.h - the forward pass of llama-family decoders (RMSNorm, rotary
 * positions, grouped-query attention over a KV cache, SwiGLU FFN): llama,
 * and qwen2, which adds q/k/v biases and NEOX-style rotation.
 *
 * A llama_model binds a GGUF file's tensors (weights stay in the read-only
 * mapping) and is immutable: any number of contexts may share it. A
 * llama_ctx holds one sequence's state, the F32 KV cache for n_ctx
 * positions, and every scratch buffer a batch of up to n_batch tokens
 * needs, all allocated at creation: decoding never allocates. A context is
 * used by one thread at a time; its matrix products run on the borrowed pool.
 */
#ifndef KILN_MODEL_LLAMA_H
#define KILN_MODEL_LLAMA_H

#include "compute/threadpool.h"
#include "kiln.h"
#include "model/arch.h"
#include "model/gguf.h"

#include <stdbool.h>
#include <stdint.h>

/* A weight matrix: n_out rows of n_in elements, row r at data + r * row_bytes. */
struct llama_w {
    const char *name;
    kiln_type type;
    const void *data;
    int64_t n_in, n_out;
    size_t row_bytes;
};

struct llama_layer {
    const float *attn_norm, *ffn_norm;
    const float *bq, *bk, *bv; /* qwen2 biases; NULL for llama */
    struct llama_w wq, wk, wv, wo, gate, up, down;
};

typedef struct llama_model {
    struct arch_model am;
    const struct arch_hparams *hp; /* &am.hp */
    struct llama_w tok_embd, output;
    const float *output_norm;
    struct llama_layer *layers;
} llama_model;

/* Binds the tensors of f (borrowed: it must outlive the model). Fails with
 * KILN_ERR_UNSUPPORTED for an architecture this forward pass does not
 * implement or a tensor type the kernels cannot compute with (naming the
 * tensor and type), KILN_ERR_FORMAT for missing or misshapen tensors. */
llama_model *llama_model_load(const gguf_file *f, kiln_status *st);
void llama_model_free(llama_model *m);

typedef struct llama_ctx llama_ctx;

/* A context for m with room for n_ctx positions, prefilling at most n_batch
 * tokens per step (longer inputs are split), on pool (borrowed; its size is
 * the thread count). NULL and *st on failure. */
llama_ctx *llama_ctx_create(const llama_model *m, int32_t n_ctx, int32_t n_batch, kiln_pool *pool,
                            kiln_status *st);
void llama_ctx_free(llama_ctx *c);

int32_t llama_ctx_n_ctx(const llama_ctx *c);
/* Positions already in the KV cache. */
int32_t llama_ctx_n_past(const llama_ctx *c);
/* Empties the KV cache (the next token is at position 0). */
void llama_ctx_reset(llama_ctx *c);

/* Runs tokens[0..n) at positions n_past .. n_past + n - 1, appending them to
 * the KV cache, and writes the logits of the last token (all == false:
 * n_vocab floats) or of every token (all: n * n_vocab floats, token i at
 * logits + i * n_vocab). logits may be NULL to only fill the cache.
 * KILN_ERR_RANGE when the tokens do not fit in the context or an id is out
 * of the vocabulary (nothing is changed then). */
kiln_status llama_decode(llama_ctx *c, const int32_t *tokens, int32_t n, float *logits, bool all);

#endif

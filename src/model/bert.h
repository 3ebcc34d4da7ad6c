/* bert.h - the forward pass of BERT-family encoders over packed batches:
 * "bert" (MiniLM, bge, e5, gte: learned absolute positions and token-type
 * embeddings, separate q/k/v with biases, GELU FFN) and "nomic-bert" (fused
 * qkv, NEOX rotary positions, SwiGLU FFN). Both are post-LayerNorm:
 * x = LN(x + attn(x)), x = LN(x + ffn(x)), after an embedding LayerNorm.
 * Which variant runs follows the architecture table's flags (arch.h), not
 * the model's name: ARCH_F_ROPE selects rotary positions, ARCH_F_GATED_FFN
 * SwiGLU, so one block implementation serves every encoder of the same math.
 *
 * Packed batches: the tokens of many sequences are laid end to end with no
 * padding; projections and FFNs run on all of them at once (one matrix
 * product per weight), attention runs per sequence (a token attends to the
 * tokens of its own sequence only), and positions restart at 0 for each
 * sequence. Every per-token result depends only on its own sequence: the
 * activations are quantized per token, reductions run per row, and each
 * (sequence, head) attention is computed by one thread in a fixed order,
 * so a sequence gives the same vector alone or in any batch.
 *
 * A bert_model binds a GGUF file's tensors (borrowed; the file must outlive
 * it) and is immutable. A bert_ctx holds the scratch buffers for a number of
 * tokens (grown by bert_ctx_reserve, never during a pass) and runs on a
 * borrowed pool; one thread uses a context at a time. */
#ifndef KILN_MODEL_BERT_H
#define KILN_MODEL_BERT_H

#include "compute/threadpool.h"
#include "kiln.h"
#include "model/arch.h"
#include "model/gguf.h"

#include <stdbool.h>
#include <stdint.h>

/* A weight matrix: n_out rows of n_in elements. */
struct bert_w {
    const char *name;
    kiln_type type;
    const void *data;
    int64_t n_in, n_out;
    size_t row_bytes;
};

struct bert_layer {
    struct bert_w wq, wk, wv, wqkv, wo, up, gate, down;  /* wqkv or wq/wk/wv; gate: SwiGLU */
    const float *bq, *bk, *bv, *bqkv, *bo, *bup, *bdown; /* NULL when absent */
    const float *attn_norm, *attn_norm_b;                /* attn_output_norm */
    const float *out_norm, *out_norm_b;                  /* layer_output_norm */
};

typedef struct bert_model {
    struct arch_model am;
    const struct arch_hparams *hp; /* &am.hp */
    struct bert_w tok_embd;
    const float *type_embd; /* row 0 is added to every token; NULL when absent */
    const float *pos_embd;  /* learned positions; NULL with rotary positions */
    const float *embd_norm, *embd_norm_b;
    struct bert_layer *layers;
} bert_model;

/* Binds the tensors of f. KILN_ERR_UNSUPPORTED, naming the architecture,
 * for a model that is not a bidirectional encoder (a decoder such as llama
 * used where an encoder is required), or naming the tensor for a type the
 * kernels cannot use; KILN_ERR_FORMAT for missing or misshapen tensors. */
bert_model *bert_model_load(const gguf_file *f, kiln_status *st);
void bert_model_free(bert_model *m);

typedef struct bert_ctx bert_ctx;

/* A context on m (borrowed) running on pool (borrowed; NULL: the calling
 * thread only) with no token capacity yet. NULL and *st on failure. */
bert_ctx *bert_ctx_create(const bert_model *m, kiln_pool *pool, kiln_status *st);
void bert_ctx_free(bert_ctx *c);

/* Grows the buffers to hold a batch of n_tokens tokens (all sequences
 * together). KILN_ERR_NOMEM (the old buffers kept) when memory cannot be had;
 * KILN_ERR_RANGE when n_tokens is not positive. max_bytes > 0 caps the bytes
 * the buffers may take: a larger request fails as KILN_ERR_NOMEM too. */
kiln_status bert_ctx_reserve(bert_ctx *c, int32_t n_tokens, uint64_t max_bytes);
/* Tokens the buffers hold now (0 before the first reserve). */
int32_t bert_ctx_capacity(const bert_ctx *c);
/* Bytes the buffers for n_tokens tokens take. */
uint64_t bert_ctx_bytes(const bert_model *m, int32_t n_threads, int32_t n_tokens);

/* Encodes n_seq packed sequences: sequence i is tokens[seq_start[i] ..
 * seq_start[i + 1]) (seq_start has n_seq + 1 entries, starting at 0 and
 * increasing; every sequence non-empty and at most the training context).
 * *hidden receives the final hidden states, token t at (*hidden)[t * n_embd],
 * valid until the next call on c. KILN_ERR_RANGE (naming it) for a bad id,
 * an empty or over-long sequence or more tokens than the capacity. */
kiln_status bert_encode(bert_ctx *c, const int32_t *tokens, const int32_t *seq_start, int32_t n_seq,
                        const float **hidden);

#endif

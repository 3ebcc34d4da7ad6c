/* llama.h - the forward pass of llama-family decoders (RMSNorm, rotary
 * positions, grouped-query attention over a KV cache, SwiGLU FFN): llama,
 * and qwen2, which adds q/k/v biases and NEOX-style rotation.
 *
 * A llama_model binds a GGUF file's tensors (weights stay in the read-only
 * mapping) and is immutable: any number of contexts may share it. A
 * llama_ctx holds up to n_seq independent sequences (slots of a KV cache in
 * F32, F16 or Q8_0, n_ctx positions each) and every scratch buffer a step
 * of up to n_batch tokens needs, all allocated at creation: decoding never
 * allocates. A step runs several sequences' tokens in one forward pass (the
 * server's continuous batching): the weight products see all the step's
 * tokens at once, attention stays within each sequence. The whole layer
 * stack of a step is one task on the pool, its phases separated by
 * barriers. Attention is tiled with an online softmax, so its memory does
 * not depend on the context length. A context is used by one thread at a
 * time. A context made for embeddings (llama_ctx_params.embed) runs packed
 * cache-less passes instead (llama_embed): the same blocks, returning the
 * final hidden states rather than logits.
 */
#ifndef KILN_MODEL_LLAMA_H
#define KILN_MODEL_LLAMA_H

#include "compute/kernels.h"
#include "compute/threadpool.h"
#include "kiln.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/kvcache.h"

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

struct llama_ctx_params {
    int32_t n_ctx;            /* positions per sequence */
    int32_t n_batch;          /* most tokens in one forward pass (capped at n_ctx * n_seq) */
    int32_t n_seq;            /* sequence slots (each with n_ctx positions) */
    kiln_type type_k, type_v; /* KV cache element types: F32, F16 or Q8_0 */
    bool embed;               /* a context for llama_embed only (see there): n_seq must be 1,
                                 n_batch is rounded up to whole column tiles, the cache is
                                 one layer of n_batch rows and there are no logits */
};

/* A context for m (borrowed; it must outlive the context) on pool (borrowed;
 * its size is the thread count; NULL: the calling thread only). Slot 0 is
 * claimed (in use) at creation; the others are free. NULL and *st on
 * failure: KILN_ERR_INVALID_ARG for a non-positive size or a KV type that is
 * not F32/F16/Q8_0, KILN_ERR_UNSUPPORTED when Q8_0 does not fit the head
 * size, KILN_ERR_NOMEM. */
llama_ctx *llama_ctx_create(const llama_model *m, const struct llama_ctx_params *p, kiln_pool *pool,
                            kiln_status *st);
void llama_ctx_free(llama_ctx *c);

int32_t llama_ctx_n_ctx(const llama_ctx *c);
int32_t llama_ctx_n_batch(const llama_ctx *c);
int32_t llama_ctx_n_seq(const llama_ctx *c);
/* The context's KV cache (slots, fill levels, types). */
const struct kv_cache *llama_ctx_kv(const llama_ctx *c);
/* Bytes allocated: KV cache and compute buffers (activations, matmul
 * workspace, attention tiles, logits). */
void llama_ctx_memory(const llama_ctx *c, uint64_t *kv_bytes, uint64_t *compute_bytes);

/* Sequences: ids are slot indices in [0, n_seq). claim: the lowest free one
 * (KILN_ERR_RANGE when none); release: frees it and empties its cache;
 * truncate: keeps the first n positions (n <= n_past; KILN_ERR_RANGE
 * otherwise); n_past: positions filled, -1 for an id not in use. Errors for
 * an id out of range or not in use are KILN_ERR_INVALID_ARG naming it. */
kiln_status llama_seq_claim(llama_ctx *c, int32_t *seq);
kiln_status llama_seq_release(llama_ctx *c, int32_t seq);
kiln_status llama_seq_truncate(llama_ctx *c, int32_t seq, int32_t n);
int32_t llama_seq_n_past(const llama_ctx *c, int32_t seq);

/* Positions already in slot 0's cache; llama_ctx_reset empties slot 0
 * (claiming it again when it was released). */
int32_t llama_ctx_n_past(const llama_ctx *c);
void llama_ctx_reset(llama_ctx *c);

/* One sequence's part of a batched step. */
struct llama_batch_item {
    int32_t seq;
    const int32_t *tokens;
    int32_t n;
    float *logits; /* NULL: none; else the last token's (n_vocab floats), or with
                      all every token's (n * n_vocab floats, token i at i * n_vocab) */
    bool all;
};

/* One forward pass over every item's tokens at once: item i's tokens go at
 * its sequence's positions n_past .. n_past + n - 1 and are appended to its
 * cache; weight products run over all the step's tokens together, attention
 * within each sequence. Checks everything before computing anything
 * (nothing changes on error): KILN_ERR_INVALID_ARG for a sequence id out of
 * range, not in use or given twice, a NULL token array or n <= 0;
 * KILN_ERR_RANGE when the step has more than n_batch tokens, when an item
 * does not fit in its sequence's context, or for a token id outside the
 * vocabulary - each message names the item and the numbers. */
kiln_status llama_decode_batch(llama_ctx *c, const struct llama_batch_item *items, int32_t n_items);

/* Slot 0: runs tokens[0..n) in chunks of n_batch (llama_decode_batch), with
 * the logits of the last token (all == false: n_vocab floats) or of every
 * token (all: n * n_vocab floats); logits may be NULL. KILN_ERR_RANGE when
 * the tokens do not fit in the context or an id is out of the vocabulary
 * (nothing is changed then). */
kiln_status llama_decode(llama_ctx *c, const int32_t *tokens, int32_t n, float *logits, bool all);

/* Embeddings: the final hidden states (after the output norm, before the
 * output projection) of n_seq independent token sequences packed end to end
 * in one forward pass, for a context created with embed (KILN_ERR_INVALID_ARG
 * otherwise; such a context refuses llama_decode*). Sequence i is
 * tokens[seq_start[i] .. seq_start[i + 1]) (seq_start has n_seq + 1
 * entries, starting at 0, each sequence 1 to n_ctx tokens); its positions
 * start at 0 and attention is causal within it, never across sequences.
 * Nothing persists between calls: the cache is scratch, its rows reused
 * layer after layer. *hidden receives token t's vector at
 * (*hidden)[t * n_embd], valid until the next call on c.
 *
 * Batch invariance: a sequence's vectors do not depend on the other
 * sequences of the pass. The step is padded with zero columns (tokens of no
 * sequence, which write no cache rows and attend to nothing) to whole
 * KILN_GEMM_MAX_C-column tiles - and to whole tiles per thread when a weight
 * has too few rows for matmul.c to split rows over the threads, so that it
 * splits columns at tile boundaries - so every token's column of every
 * product is computed by the same kernel path in any batch (matmul.c takes
 * vec_dot for a single column, and the gemm kernels pick their summation
 * order by tile width). Every other step works per token or per (token,
 * head) in a fixed order.
 * KILN_ERR_RANGE (naming it) for a bad sequence layout, more than n_batch
 * tokens, or a token id outside the vocabulary; nothing runs then. */
kiln_status llama_embed(llama_ctx *c, const int32_t *tokens, const int32_t *seq_start,
                        int32_t n_seq, const float **hidden);

/* The attention of n_q query heads that share one KV head: for each head i,
 * out_i = softmax(q_i . K / sqrt(head_dim)) V over n_keys >= 1 rows of K
 * (type_k, head_dim elements each, consecutive from k_rows) and V (type_v,
 * from v_rows), tiled with an online softmax so memory does not depend on
 * n_keys. q and out hold n_q heads of head_dim floats one after another;
 * out may be q. Each query is converted to K's vec_dot partner type first
 * (F16 or Q8_0 for those caches). scratch: llama_attend_scratch(head_dim,
 * n_q) bytes, 64-byte aligned, owned by the calling thread. Exposed for
 * tests and other decoders. */
size_t llama_attend_scratch(int32_t head_dim, int32_t n_q);
void llama_attend(const struct kiln_kernels *kern, kiln_type type_k, kiln_type type_v,
                  int32_t head_dim, int32_t n_q, const float *q, const char *k_rows,
                  const char *v_rows, int32_t n_keys, float *out, void *scratch);

/* llama_attend for n_tok >= 1 consecutive query tokens of one sequence
 * (prompt attention), causal per token: token t's n_q heads are at
 * q + t * q_stride (floats), head i at + i * head_dim, and token t attends
 * to the first n_keys + t rows of K and V (n_keys >= 1). out has q's layout
 * and may be q. Each row's result is llama_attend's for that token up to
 * float summation order; memory does not depend on n_keys. scratch:
 * llama_attend_block_scratch(head_dim, n_tok, n_q) bytes, 64-byte aligned,
 * owned by the calling thread (it grows with n_tok * n_q, not n_keys). */
size_t llama_attend_block_scratch(int32_t head_dim, int32_t n_tok, int32_t n_q);
void llama_attend_block(const struct kiln_kernels *kern, kiln_type type_k, kiln_type type_v,
                        int32_t head_dim, int32_t n_tok, int32_t n_q, const float *q,
                        int64_t q_stride, const char *k_rows, const char *v_rows, int32_t n_keys,
                        float *out, void *scratch);

#endif

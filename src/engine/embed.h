/* embed.h - engine-internal pieces of the embeddings engine (embed.c): how
 * kiln_model_load recognises an encoder, and the accessors embed.c uses to
 * reach the encoder or decoder bindings inside a kiln_model (whose struct is private
 * to generate.c). The public API is in kiln.h. */
#ifndef KILN_ENGINE_EMBED_H
#define KILN_ENGINE_EMBED_H

#include "kiln.h"
#include "model/bert.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "text/tok_wpm.h"

#include <stdbool.h>

/* True when f's general.architecture is in the architecture table and is a
 * bidirectional encoder (no ARCH_F_CAUSAL): kiln_model_load then binds it
 * with bert_model_load and vocab_load_wpm instead of the decoder path. */
bool embed_arch_is_encoder(const gguf_file *f);

/* Defined in generate.c: the encoder forward-pass bindings and WordPiece
 * tokenizer of m, or NULL when m is a decoder; the decoder's bindings, or
 * NULL when m is an encoder. */
const bert_model *engine_model_bert(const kiln_model *m);
const tok_wpm *engine_model_wpm(const kiln_model *m);
const llama_model *engine_model_llama(const kiln_model *m);

/* ---- for the embeddings batcher (engine/batcher.c) ---- */

/* Validates and tokenizes one input the way kiln_embed does, errors naming
 * it as input `index`: text (len bytes of UTF-8) when text is not NULL,
 * else the token ids[0..n_ids) (each inside the vocabulary, else
 * KILN_ERR_RANGE) with [CLS] (a decoder's BOS) prepended and [SEP] (EOS)
 * appended when absent and the tokenizer adds them. An input longer than
 * the context is cut to it (keeping a final [SEP] or EOS) when truncate,
 * *truncated_from then the length
 * before (else 0), or else is KILN_ERR_RANGE naming both numbers. The
 * tokens go to *buf, grown with realloc as needed (*cap ids; the caller
 * frees it), *n_out of them. Reads only what does not change after
 * kiln_embed_ctx_create, so any thread may call it while another embeds. */
kiln_status embed_input_tokens(const kiln_embed_ctx *e, int32_t index, const char *text, size_t len,
                               const int32_t *ids, int32_t n_ids, int truncate, int32_t **buf,
                               size_t *cap, size_t *n_out, int32_t *truncated_from);

/* Embeds n pre-tokenized texts as kiln_embed would (same packing, passes,
 * pooling, dim and normalisation of e): text i is ids[start[i] ..
 * start[i + 1]) (start has n + 1 entries), 1 to the context's tokens
 * (KILN_ERR_RANGE naming it otherwise; the forward pass rejects ids outside the
 * vocabulary). truncated_from is all 0 in the result. */
kiln_status embed_tokens(kiln_embed_ctx *e, const int32_t *ids, const int64_t *start, int32_t n,
                         kiln_embeddings **out, kiln_embed_stats *stats);

/* Copies dim floats of src to dst (they may overlap) and L2-normalises
 * them when normalize: kiln_embed's own finishing of a pooled vector. */
void embed_finish_row(const float *src, int32_t dim, int normalize, float *dst);

/* Grows e's buffers to its batch size now (KILN_ERR_NOMEM when they do not
 * fit its memory budget; kiln_embed would then halve the batch). */
kiln_status embed_ctx_reserve(kiln_embed_ctx *e);
/* Bytes e's compute buffers hold now. */
uint64_t embed_ctx_compute_bytes(const kiln_embed_ctx *e);
/* The model's context (most tokens per text) and hidden width. */
int32_t embed_ctx_n_ctx(const kiln_embed_ctx *e);
int32_t embed_ctx_n_embd(const kiln_embed_ctx *e);

#endif

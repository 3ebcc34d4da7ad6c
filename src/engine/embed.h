/* embed.h - engine-internal pieces of the embeddings engine (embed.c): how
 * kiln_model_load recognises an encoder, and the accessors embed.c uses to
 * reach the encoder bindings inside a kiln_model (whose struct is private
 * to generate.c). The public API is in kiln.h. */
#ifndef KILN_ENGINE_EMBED_H
#define KILN_ENGINE_EMBED_H

#include "kiln.h"
#include "model/bert.h"
#include "model/gguf.h"
#include "text/tok_wpm.h"

#include <stdbool.h>

/* True when f's general.architecture is in the architecture table and is a
 * bidirectional encoder (no ARCH_F_CAUSAL): kiln_model_load then binds it
 * with bert_model_load and vocab_load_wpm instead of the decoder path. */
bool embed_arch_is_encoder(const gguf_file *f);

/* Defined in generate.c: the encoder forward-pass bindings and WordPiece
 * tokenizer of m, or NULL when m is a decoder. */
const bert_model *engine_model_bert(const kiln_model *m);
const tok_wpm *engine_model_wpm(const kiln_model *m);

#endif

/* vocab.h - a GGUF file's tokenizer metadata (tokenizer.ggml.*) turned into
 * a text-layer tokenizer. Today: SentencePiece ("llama") vocabularies; BPE
 * and WordPiece plug in here later.
 *
 * Key defaults follow llama.cpp for SPM: bos 1, eos 2, unk 0, add_bos true,
 * add_eos false, add_space_prefix true; token types default to normal and
 * scores to 0 when their arrays are absent. Thread-safe (reads f only). */
#ifndef KILN_MODEL_VOCAB_H
#define KILN_MODEL_VOCAB_H

#include "kiln.h"
#include "model/gguf.h"
#include "text/tok_bpe.h"
#include "text/tok_spm.h"
#include "text/tok_wpm.h"

/* The SentencePiece tokenizer of f. NULL and *st (when st is not NULL) on
 * failure: KILN_ERR_UNSUPPORTED naming tokenizer.ggml.model when it is not
 * "llama", KILN_ERR_FORMAT/NOT_FOUND naming a missing or malformed key. The
 * tokenizer copies what it keeps; f may be closed afterwards. */
tok_spm *vocab_load_spm(const gguf_file *f, kiln_status *st);

/* The WordPiece tokenizer of f (tokenizer.ggml.model "bert"). Ids: unk from
 * tokenizer.ggml.unknown_token_id (default 100), [CLS] from cls_token_id
 * (else bos_token_id; default 101), [SEP] from seperator_token_id (sic;
 * default 102). The vocabulary is taken as uncased (lowercase, strip
 * accents) unless a non-bracketed token has an ASCII capital letter.
 * NULL and *st on failure: KILN_ERR_UNSUPPORTED naming tokenizer.ggml.model
 * when it is not "bert", KILN_ERR_FORMAT/NOT_FOUND for a missing or
 * malformed key. Copies what it keeps; f may be closed afterwards. */
tok_wpm *vocab_load_wpm(const gguf_file *f, kiln_status *st);

/* True when f's tokenizer.ggml.model is "gpt2" (byte-level BPE). */
bool vocab_is_bpe(const gguf_file *f);

/* The byte-level BPE tokenizer of f: tokenizer.ggml.tokens, token_type,
 * merges and pre (the pre-tokenizer; absent: "default"). bos/eos default to
 * llama.cpp's 11 when their keys are absent, add_bos/add_eos to the
 * pre-tokenizer's rule (see tok_bpe.h). NULL and *st on failure:
 * KILN_ERR_UNSUPPORTED when the model is not "gpt2" or the pre-tokenizer is
 * unknown, KILN_ERR_FORMAT/NOT_FOUND for a missing or malformed key (merges
 * are required). Copies what it keeps; f may be closed afterwards. */
tok_bpe *vocab_load_bpe(const gguf_file *f, kiln_status *st);

#endif

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
#include "text/tok_spm.h"

/* The SentencePiece tokenizer of f. NULL and *st (when st is not NULL) on
 * failure: KILN_ERR_UNSUPPORTED naming tokenizer.ggml.model when it is not
 * "llama", KILN_ERR_FORMAT/NOT_FOUND naming a missing or malformed key. The
 * tokenizer copies what it keeps; f may be closed afterwards. */
tok_spm *vocab_load_spm(const gguf_file *f, kiln_status *st);

#endif

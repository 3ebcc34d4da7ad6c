/* tok_bpe.h - the byte-level BPE tokenizer (GGUF tokenizer.ggml.model
 * "gpt2": GPT-2, Llama 3, Qwen2, StarCoder, DeepSeek, Falcon, MPT, ...).
 *
 * Encoding follows llama.cpp (c392e509) so ids match it exactly:
 *   1. Special tokens are cut out of the text first: user-defined tokens
 *      always, control and unknown tokens only with parse_special. Longer
 *      tokens go first; each takes its leftmost non-overlapping occurrences
 *      in what is still plain text.
 *   2. Each plain-text fragment is decoded as UTF-8. A byte that does not
 *      start a valid sequence is kept as that byte (its byte-level token),
 *      and the pre-tokenizer sees it as U+FFFD; so any input is accepted,
 *      needs at most one token per byte, and decodes back to the same bytes
 *      where the vocabulary has that byte's token (GPT-2's has all 256).
 *      (llama.cpp instead replaces it by U+FFFD's three bytes; valid UTF-8,
 *      which is all the reference data has, is unaffected.)
 *   3. The pre-tokenizer named by tokenizer.ggml.pre splits it into words
 *      (see pretok.h).
 *   4. Each word's UTF-8 bytes are mapped to GPT-2's byte-to-unicode
 *      alphabet, split into characters, and adjacent symbols are merged by
 *      the lowest-ranked rule of tokenizer.ggml.merges (rank = position;
 *      ties: leftmost). With the pre-tokenizer's ignore_merges (llama3,
 *      tekken), a word that is itself a token skips the merges.
 *   5. A final symbol is its token; one that is not a token becomes the
 *      tokens of its single bytes, where those exist (else it is dropped,
 *      as in llama.cpp).
 * BOS/EOS are added with add_special as tokenizer.ggml.add_bos_token /
 * add_eos_token say, defaulting to the pre-tokenizer's rule (true for llama3,
 * tekken and chameleon, else false).
 *
 * Decoding (tok_bpe_piece) maps a normal token's characters back to bytes;
 * user-defined tokens are their text, control and unknown tokens their text
 * only when special is true. A piece may be part of a UTF-8 character, so
 * streaming callers pass pieces through a tok_utf8_stream (tok_spm.h).
 *
 * Tokens whose text marks the end of a turn ("<|endoftext|>", "<|im_end|>",
 * "<|eot_id|>", ...) and FIM tokens are treated as control tokens and the
 * former as end-of-generation, as llama.cpp does.
 *
 * A tok_bpe is built from plain arrays (model/vocab.c reads them from a GGUF
 * file) and copies what it keeps. It is immutable after creation and may be
 * used from any number of threads.
 */
#ifndef KILN_TEXT_TOK_BPE_H
#define KILN_TEXT_TOK_BPE_H

#include "kiln.h"
#include "text/tok_spm.h" /* enum tok_type, tok_utf8_stream */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tok_bpe tok_bpe;

/* A special-token id whose GGUF key is absent: llama.cpp's default applies
 * (BOS and EOS 11 when the vocabulary has that many tokens, else none). */
#define TOK_BPE_ID_DEFAULT (-2)

/* A vocabulary, borrowed for the duration of tok_bpe_create. */
struct tok_bpe_vocab {
    int32_t n_vocab;
    const char *const *text; /* token i: text[i][0..len[i]), in the byte-to-unicode alphabet */
    const uint32_t *len;
    const uint8_t *type; /* enum tok_type; NULL: all normal */
    int64_t n_merges;
    const char *const *merge; /* merge i: "left right" (split at the first space after byte 0) */
    const uint32_t *merge_len;
    const char *pre; /* tokenizer.ggml.pre, pre_len bytes; NULL: absent ("default") */
    size_t pre_len;
    int32_t bos, eos, eot, unk; /* -1: none; TOK_BPE_ID_DEFAULT: key absent */
    int8_t add_bos, add_eos;    /* -1: key absent, else 0/1 */
};

/* Builds a tokenizer, copying the vocabulary and compiling the pre-tokenizer.
 * NULL and *st (when st is not NULL) on failure: KILN_ERR_INVALID_ARG for an
 * empty vocabulary, KILN_ERR_UNSUPPORTED for an unknown pre-tokenizer,
 * KILN_ERR_NOMEM. */
tok_bpe *tok_bpe_create(const struct tok_bpe_vocab *v, kiln_status *st);
void tok_bpe_free(tok_bpe *t);

int32_t tok_bpe_n_vocab(const tok_bpe *t);
int32_t tok_bpe_bos(const tok_bpe *t); /* -1 when none */
int32_t tok_bpe_eos(const tok_bpe *t); /* -1 when none */
bool tok_bpe_add_bos(const tok_bpe *t);
/* True for tokens that end a generation (EOS, EOT and end-of-turn tokens). */
bool tok_bpe_is_eog(const tok_bpe *t, int32_t id);
/* The effective enum tok_type of id (after the control-token fix-ups). */
int tok_bpe_type(const tok_bpe *t, int32_t id);
/* The pre-tokenizer's canonical name ("gpt2", "llama3", ...). */
const char *tok_bpe_pre_name(const tok_bpe *t);

/* Tokenizes len bytes of text (any bytes). add_special adds BOS/EOS as the
 * vocabulary says; parse_special also turns control-token text into those
 * tokens. Writes at most cap ids and sets *n_ids to the number the text needs;
 * KILN_ERR_RANGE when that is more than cap (len + 2 is always enough).
 * Thread-safe; allocates scratch proportional to len. KILN_ERR_NOMEM, or
 * KILN_ERR_INTERNAL when the pre-tokenizer's regex engine fails. */
kiln_status tok_bpe_encode(const tok_bpe *t, const char *text, size_t len, bool add_special,
                           bool parse_special, int32_t *ids, size_t cap, size_t *n_ids);

/* tok_bpe_encode that stops as soon as more than max tokens are certain
 * (checked after each word): KILN_ERR_RANGE then, with *n_ids the tokens
 * counted so far (> max), a lower bound of the count, not the count.
 * max SIZE_MAX: tok_bpe_encode. */
kiln_status tok_bpe_encode_max(const tok_bpe *t, const char *text, size_t len, bool add_special,
                               bool parse_special, size_t max, int32_t *ids, size_t cap,
                               size_t *n_ids);

/* The bytes token id stands for (see above). Writes min(needed, cap) bytes
 * (no NUL) and returns the number needed; 0 for an id out of range. */
size_t tok_bpe_piece(const tok_bpe *t, int32_t id, bool special, char *buf, size_t cap);
/* An upper bound on tok_bpe_piece's result for any id. */
size_t tok_bpe_max_piece(const tok_bpe *t);

/* The most input bytes one token of tok_bpe_encode stands for, with or
 * without parse_special: the longest token text; 0 when a merge's result
 * is not a token, where no such bound holds. */
size_t tok_bpe_max_token_bytes(const tok_bpe *t);

/* When some byte's alphabet character is not a token (in GPT-2-style
 * vocabularies often the bytes that never occur in UTF-8, 0xc0, 0xc1,
 * 0xf5-0xff), such bytes are dropped: then a table of 256 weights, 1 for
 * those bytes, so ceil((len - the sum of its bytes' weights) /
 * tok_bpe_max_token_bytes) <= the count; NULL when no byte is dropped. */
const uint8_t *tok_bpe_drop_bytes(const tok_bpe *t);

/* The text of ids[0..n): their pieces concatenated, then, for pre-tokenizers
 * with clean_spaces, llama.cpp's clean-up (no space before ? ! . , and
 * before 's 'm 're 've; " ' " becomes "'"). Writes min(needed, cap) bytes and
 * sets *n_out to the number needed. KILN_ERR_NOMEM only. */
kiln_status tok_bpe_detokenize(const tok_bpe *t, const int32_t *ids, size_t n, bool special,
                               char *buf, size_t cap, size_t *n_out);

#endif

/* tok_spm.h - the SentencePiece-style ("llama") tokenizer, read from a GGUF
 * file's tokenizer.ggml.* metadata.
 *
 * Encoding follows llama.cpp's SPM rules so ids match it exactly: spaces
 * become U+2581 ("▁"), one "▁" is prepended when tokenizer.ggml.add_space_prefix
 * is true (the default) and the text is not empty, the text is split into
 * UTF-8 characters, and adjacent symbols are merged greedily, the pair whose
 * merged text is the highest-scoring vocabulary entry first (ties: leftmost).
 * A character that is not in the vocabulary becomes its <0xNN> byte tokens,
 * or one unknown token when the vocabulary has no byte tokens (llama.cpp
 * aborts there). Control
 * tokens are never produced from text (parse_special is always false here).
 *
 * Decoding is piece by piece (tok_spm_piece); a piece may be part of a UTF-8
 * character, so streaming callers pass pieces through a tok_utf8_stream.
 *
 * A tok_spm is built from plain arrays (model/vocab.c reads them from a GGUF
 * file's tokenizer.ggml.* keys) and copies what it keeps. It is immutable
 * after creation and may be used from any number of threads.
 */
#ifndef KILN_TEXT_TOK_SPM_H
#define KILN_TEXT_TOK_SPM_H

#include "kiln.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* tokenizer.ggml.token_type values (llama.cpp's). */
enum tok_type {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

typedef struct tok_spm tok_spm;

/* A vocabulary, borrowed for the duration of tok_spm_create. */
struct tok_spm_vocab {
    int32_t n_vocab;
    const char *const *text; /* token i: text[i][0..len[i]), "▁" for spaces */
    const uint32_t *len;
    const float *score;         /* merge priority, higher first; NULL: all 0 */
    const uint8_t *type;        /* enum tok_type; NULL: all normal */
    int32_t bos, eos, eot, unk; /* -1 (or out of range): none */
    bool add_bos, add_eos, add_space_prefix;
};

/* Builds a tokenizer, copying the vocabulary. NULL and *st (when st is not
 * NULL) on failure: KILN_ERR_INVALID_ARG for an empty vocabulary,
 * KILN_ERR_NOMEM. */
tok_spm *tok_spm_create(const struct tok_spm_vocab *v, kiln_status *st);
void tok_spm_free(tok_spm *t);

int32_t tok_spm_n_vocab(const tok_spm *t);
int32_t tok_spm_bos(const tok_spm *t); /* -1 when none */
int32_t tok_spm_eos(const tok_spm *t); /* -1 when none */
/* True for tokens that end a generation (EOS, EOT). */
bool tok_spm_is_eog(const tok_spm *t, int32_t id);

/* Tokenizes len bytes of text (any bytes; invalid UTF-8 is split per byte).
 * With add_special, BOS is prepended (and EOS appended) as the file's
 * tokenizer.ggml.add_bos_token / add_eos_token say. Writes at most cap ids
 * and sets *n_ids to the number the text needs; KILN_ERR_RANGE when that is
 * more than cap (len + 2 is always enough). Thread-safe; allocates scratch
 * proportional to len. */
kiln_status tok_spm_encode(const tok_spm *t, const char *text, size_t len, bool add_special,
                           int32_t *ids, size_t cap, size_t *n_ids);

/* tok_spm_encode that stops soon after more than max tokens are certain:
 * KILN_ERR_RANGE then, with *n_ids the tokens counted so far (> max), a
 * lower bound of the count, not the count. Where the vocabulary allows
 * (pieces never hold "\xe2\x96\x81" after another character, as with
 * SentencePiece's split_by_whitespace), the text is merged about 1 KiB at a
 * time, cut before runs of spaces, which gives the same ids, and the check
 * follows each chunk; otherwise it follows the whole text. max SIZE_MAX:
 * tok_spm_encode. */
kiln_status tok_spm_encode_max(const tok_spm *t, const char *text, size_t len, bool add_special,
                               size_t max, int32_t *ids, size_t cap, size_t *n_ids);

/* The bytes token id stands for: the text with "▁" as spaces, the single
 * byte of a <0xNN> token, and for control tokens their text when special is
 * true, nothing otherwise. Writes min(needed, cap) bytes (no NUL) and returns
 * the number needed; 0 for an id out of range. */
size_t tok_spm_piece(const tok_spm *t, int32_t id, bool special, char *buf, size_t cap);
/* An upper bound on tok_spm_piece's result for any id. */
size_t tok_spm_max_piece(const tok_spm *t);

/* The most input bytes one token of tok_spm_encode stands for: the longest
 * token text, and at least the 4 bytes of a character <unk> may replace. */
size_t tok_spm_max_token_bytes(const tok_spm *t);

/* Without <unk> and all byte tokens, characters the vocabulary cannot
 * spell are dropped. Then this is a table of 256 weights such that the
 * bytes dropped from a text never exceed the sum of its bytes' weights (so
 * ceil((len - that sum) / tok_spm_max_token_bytes) <= the count); NULL when
 * nothing is ever dropped. */
const uint8_t *tok_spm_drop_bytes(const tok_spm *t);

/* An incremental UTF-8 decoder for streamed pieces: passes through complete,
 * valid UTF-8 sequences, holds back an incomplete one until its next bytes
 * arrive, and turns each invalid byte (or truncated sequence) into U+FFFD,
 * so what it emits is always valid UTF-8. Zero-initialise to start. */
typedef struct tok_utf8_stream {
    unsigned char pending[4];
    int n_pending;
} tok_utf8_stream;

/* Appends the valid output for len more bytes to out, which must have room
 * for TOK_UTF8_OUT_MAX(len) bytes; returns the bytes written. */
#define TOK_UTF8_OUT_MAX(len) (3 * ((len) + 4))
size_t tok_utf8_feed(tok_utf8_stream *s, const char *in, size_t len, char *out);
/* Ends the stream: a held-back incomplete sequence becomes U+FFFD (out needs
 * 3 bytes). Returns the bytes written; the stream is reset. */
size_t tok_utf8_flush(tok_utf8_stream *s, char *out);

#endif

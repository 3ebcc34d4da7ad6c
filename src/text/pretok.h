/* pretok.h - the pre-tokenizers of byte-level BPE vocabularies: the regular
 * expressions, chosen by a GGUF file's tokenizer.ggml.pre, that cut text into
 * words before BPE merges run inside each word.
 *
 * The splitting rules reproduce llama.cpp's (c392e509): a pre-tokenizer is a
 * list of regexes applied in sequence; each regex splits every piece the
 * previous ones produced into its matches and the unmatched gaps between
 * them (gaps are kept as pieces too), and a regex never sees past the end of
 * the piece it splits (lookaheads and $ stop there). Matching is done by
 * PCRE2 in UTF mode with Unicode properties (\p{L}, \p{N}, \p{P}); \s is
 * ASCII whitespace, and before matching every non-ASCII whitespace code
 * point (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F,
 * U+205F, U+3000) is shown to the regex as U+000B, which is how llama.cpp
 * treats them. Each regex is compiled (and JIT-compiled when available) once
 * per pretok.
 *
 * A pretok is immutable after creation and may be used from any number of
 * threads: pretok_split allocates its match data per call.
 */
#ifndef KILN_TEXT_PRETOK_H
#define KILN_TEXT_PRETOK_H

#include "kiln.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pretok pretok;

/* Per-pre-tokenizer defaults llama.cpp attaches to the name. */
struct pretok_flags {
    bool add_bos;       /* BOS is added unless tokenizer.ggml.add_bos_token says otherwise */
    bool ignore_merges; /* a word that is a whole vocabulary entry skips the merges */
    bool clean_spaces;  /* detokenizing removes spaces before punctuation */
    bool no_bos;        /* there is no BOS unless tokenizer.ggml.bos_token_id names one */
};

/* The pre-tokenizer named name[0..len) ("gpt-2", "llama-bpe", "qwen2", ...;
 * NULL or "default": the default one). Writes its flags to *flags (may be
 * NULL). NULL and *st on failure: KILN_ERR_UNSUPPORTED naming an unknown
 * pre-tokenizer, KILN_ERR_INTERNAL when a regex does not compile,
 * KILN_ERR_NOMEM. */
pretok *pretok_create(const char *name, size_t len, struct pretok_flags *flags, kiln_status *st);
void pretok_free(pretok *p);

/* The canonical name of the pre-tokenizer p implements ("gpt2", "llama3", ...). */
const char *pretok_name(const pretok *p);

/* A code point value standing for the invalid input byte (value - PRETOK_RAW_BYTE);
 * the regexes see it as U+FFFD. */
#define PRETOK_RAW_BYTE 0x110000u

/* Splits the code points cp[0..n) (Unicode scalar values, or PRETOK_RAW_BYTE + b
 * for an invalid byte b) into words:
 * writes the end index of each word to ends (room for n entries; words are
 * non-empty, contiguous and cover cp) and their number to *n_words.
 * Thread-safe. KILN_ERR_NOMEM, or KILN_ERR_INTERNAL naming the regex when
 * matching fails (for example its resource limits). */
kiln_status pretok_split(const pretok *p, const uint32_t *cp, size_t n, size_t *ends,
                         size_t *n_words);

#endif

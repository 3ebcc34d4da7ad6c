/* tok_wpm.h - the WordPiece tokenizer of BERT-family encoders (GGUF
 * tokenizer.ggml.model "bert").
 *
 * Vocabulary convention (GGUF's, from llama.cpp's converter): a token that
 * starts a word is stored with a leading U+2581 ("▁the"), a continuation
 * piece without its "##" ("##s" -> "s"), and bracketed special tokens
 * ("[CLS]") as they are.
 *
 * Encoding, chosen so ids equal llama.cpp's (tests check the bert-bge vocab
 * test pairs and the reference tokenizations exactly):
 *   1. basic tokenization over code points (invalid UTF-8 bytes are dropped):
 *      when the vocabulary is uncased, each code point is replaced by the
 *      first code point of its canonical decomposition (NFD; this strips
 *      accents: "é" -> "e") and lowercased; white space (the Unicode
 *      White_Space property) ends a word; NUL, U+FFFD and other control
 *      and format characters (Cc, Cf, Co, Cs) are dropped; punctuation (P*),
 *      ASCII symbols and CJK ideographs become one-character words;
 *   2. WordPiece: for each word, greedy longest match of "▁" + word from the
 *      left, continuing with continuation pieces; a word with a part that
 *      matches nothing becomes one [UNK];
 *   3. with add_special, [CLS] first and [SEP] last.
 * There is no per-word length limit (llama.cpp has none).
 *
 * A tok_wpm is built from plain arrays (model/vocab.c reads them from GGUF)
 * and copies what it keeps. It is immutable after creation and may be used
 * from any number of threads.
 */
#ifndef KILN_TEXT_TOK_WPM_H
#define KILN_TEXT_TOK_WPM_H

#include "kiln.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tok_wpm tok_wpm;

/* A vocabulary, borrowed for the duration of tok_wpm_create. */
struct tok_wpm_vocab {
    int32_t n_vocab;
    const char *const *text; /* token i: text[i][0..len[i]) in the convention above */
    const uint32_t *len;
    const uint8_t *type;   /* enum tok_type (tok_spm.h) or NULL; control tokens render only
                              when asked */
    int32_t unk, cls, sep; /* -1: none (cls/sep then not added) */
    bool uncased;          /* lowercase and strip accents (see step 1) */
};

/* Builds a tokenizer, copying the vocabulary. NULL and *st (when st is not
 * NULL) on failure: KILN_ERR_INVALID_ARG for an empty vocabulary or no
 * [UNK], KILN_ERR_NOMEM. When two tokens have the same text the later id
 * wins (as in llama.cpp). */
tok_wpm *tok_wpm_create(const struct tok_wpm_vocab *v, kiln_status *st);
void tok_wpm_free(tok_wpm *t);

int32_t tok_wpm_n_vocab(const tok_wpm *t);
int32_t tok_wpm_cls(const tok_wpm *t); /* -1 when none */
int32_t tok_wpm_sep(const tok_wpm *t); /* -1 when none */
int32_t tok_wpm_unk(const tok_wpm *t);

/* Tokenizes len bytes of text. Writes at most cap ids and sets *n_ids to
 * the number the text needs; KILN_ERR_RANGE when that is more than cap
 * (2 * len + 2 is always enough). KILN_ERR_NOMEM when scratch memory
 * (proportional to len) cannot be had. Thread-safe. */
kiln_status tok_wpm_encode(const tok_wpm *t, const char *text, size_t len, bool add_special,
                           int32_t *ids, size_t cap, size_t *n_ids);

/* The text of token id for display: a word-initial token as " word", a
 * continuation piece as its text, a control token ([CLS]) as its text when
 * special is true and nothing otherwise. Writes min(needed, cap) bytes (no
 * NUL) and returns the number needed; 0 for an id out of range. */
size_t tok_wpm_piece(const tok_wpm *t, int32_t id, bool special, char *buf, size_t cap);

#endif

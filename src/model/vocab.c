/* vocab.c - reading tokenizer.ggml.* metadata into tokenizers (see vocab.h).
 * Invariant: the temporary arrays handed to tok_spm_create point into the
 * GGUF mapping and are freed before returning. */
#include "model/vocab.h"
#include "base/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An optional token id key: dflt when absent, -1 when malformed or out of range. */
static int32_t opt_id(const gguf_file *f, const char *key, int32_t n_vocab, int32_t dflt) {
    int64_t v;
    if (!gguf_find_kv(f, key)) return dflt;
    if (gguf_get_i64(f, key, &v) != KILN_OK || v < 0 || v >= n_vocab) return -1;
    return (int32_t)v;
}

static bool opt_bool(const gguf_file *f, const char *key, bool dflt) {
    bool v;
    if (!gguf_find_kv(f, key) || gguf_get_bool(f, key, &v) != KILN_OK) return dflt;
    return v;
}

/* An optional numeric array of exactly n entries; *out NULL when absent. */
static kiln_status opt_numeric_arr(const gguf_file *f, const char *key, uint64_t n,
                                   const gguf_value **out) {
    *out = NULL;
    if (!gguf_find_kv(f, key)) return KILN_OK;
    kiln_status s = gguf_get_arr(f, key, GGUF_VT_COUNT, out);
    if (s) return s;
    if ((*out)->arr.items || (*out)->arr.n != n)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: %s must be a numeric array of %llu entries like "
                         "tokenizer.ggml.tokens",
                         gguf_path(f), key, (unsigned long long)n);
    return KILN_OK;
}

static kiln_status check_model(const gguf_file *f) {
    gguf_str model;
    kiln_status s = gguf_get_str(f, "tokenizer.ggml.model", &model);
    if (s) return s;
    if (model.len != 5 || memcmp(model.ptr, "llama", 5) != 0)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "%s: tokenizer.ggml.model is '%.*s'; only 'llama' (SentencePiece) is "
                         "supported so far",
                         gguf_path(f), (int)(model.len > 64 ? 64 : model.len), model.ptr);
    return KILN_OK;
}

/* The per-token arrays of v from the GGUF arrays. */
static kiln_status fill_arrays(const gguf_file *f, const gguf_value *toks, const gguf_value *scores,
                               const gguf_value *types, struct tok_spm_vocab *v) {
    size_t n = (size_t)v->n_vocab;
    const char **text = malloc(n * sizeof *text);
    uint32_t *len = malloc(n * sizeof *len);
    float *score = scores ? malloc(n * sizeof *score) : NULL;
    uint8_t *type = types ? malloc(n) : NULL;
    v->text = text, v->len = len, v->score = score, v->type = type;
    if (!text || !len || (scores && !score) || (types && !type))
        return kiln_fail(KILN_ERR_NOMEM, "%s: no memory for the vocabulary", gguf_path(f));
    for (size_t i = 0; i < n; i++) {
        gguf_str str = toks->arr.items[i].str;
        if (str.len > UINT32_MAX)
            return kiln_fail(KILN_ERR_FORMAT, "%s: token %zu is too long", gguf_path(f), i);
        text[i] = str.ptr;
        len[i] = (uint32_t)str.len;
        if (score) score[i] = (float)gguf_arr_f64(scores, i);
        if (type) {
            int64_t ty = gguf_arr_i64(types, i);
            type[i] = (uint8_t)(ty >= 0 && ty <= TOK_TYPE_BYTE ? ty : TOK_TYPE_UNDEFINED);
        }
    }
    return KILN_OK;
}

tok_spm *vocab_load_spm(const gguf_file *f, kiln_status *st) {
    const gguf_value *toks = NULL, *scores = NULL, *types = NULL;
    struct tok_spm_vocab v = {0};
    tok_spm *t = NULL;
    kiln_status s = check_model(f);
    if (!s) s = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_VT_STRING, &toks);
    if (!s && (toks->arr.n == 0 || toks->arr.n > INT32_MAX / 4))
        s = kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", gguf_path(f),
                      (unsigned long long)toks->arr.n);
    if (!s) s = opt_numeric_arr(f, "tokenizer.ggml.scores", toks->arr.n, &scores);
    if (!s) s = opt_numeric_arr(f, "tokenizer.ggml.token_type", toks->arr.n, &types);
    if (!s) {
        v.n_vocab = (int32_t)toks->arr.n;
        s = fill_arrays(f, toks, scores, types, &v);
    }
    if (!s) {
        v.bos = opt_id(f, "tokenizer.ggml.bos_token_id", v.n_vocab, 1);
        v.eos = opt_id(f, "tokenizer.ggml.eos_token_id", v.n_vocab, 2);
        v.eot = opt_id(f, "tokenizer.ggml.eot_token_id", v.n_vocab, -1);
        v.unk = opt_id(f, "tokenizer.ggml.unknown_token_id", v.n_vocab, 0);
        v.add_bos = opt_bool(f, "tokenizer.ggml.add_bos_token", true);
        v.add_eos = opt_bool(f, "tokenizer.ggml.add_eos_token", false);
        v.add_space_prefix = opt_bool(f, "tokenizer.ggml.add_space_prefix", true);
        t = tok_spm_create(&v, &s);
    }
    free((void *)v.text);
    free((void *)v.len);
    free((void *)v.score);
    free((void *)v.type);
    if (st) *st = s;
    return t;
}

/* ---- WordPiece ("bert") ---- */

/* True when some ordinary token has an ASCII capital: a cased vocabulary. */
static bool wpm_cased(const struct tok_wpm_vocab *v) {
    for (int32_t i = 0; i < v->n_vocab; i++) {
        const char *s = v->text[i];
        if (v->len[i] == 0 || s[0] == '[') continue;
        for (uint32_t j = 0; j < v->len[i]; j++)
            if (s[j] >= 'A' && s[j] <= 'Z') return true;
    }
    return false;
}

tok_wpm *vocab_load_wpm(const gguf_file *f, kiln_status *st) {
    const gguf_value *toks = NULL, *types = NULL;
    struct tok_spm_vocab sv = {0}; /* reuses fill_arrays for text, len and type */
    tok_wpm *t = NULL;
    gguf_str model;
    kiln_status s = gguf_get_str(f, "tokenizer.ggml.model", &model);
    if (!s && (model.len != 4 || memcmp(model.ptr, "bert", 4) != 0))
        s = kiln_fail(KILN_ERR_UNSUPPORTED,
                      "%s: tokenizer.ggml.model is '%.*s', not 'bert' (WordPiece)", gguf_path(f),
                      (int)(model.len > 64 ? 64 : model.len), model.ptr);
    if (!s) s = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_VT_STRING, &toks);
    if (!s && (toks->arr.n == 0 || toks->arr.n > INT32_MAX / 4))
        s = kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", gguf_path(f),
                      (unsigned long long)toks->arr.n);
    if (!s) s = opt_numeric_arr(f, "tokenizer.ggml.token_type", toks->arr.n, &types);
    if (!s) {
        sv.n_vocab = (int32_t)toks->arr.n;
        s = fill_arrays(f, toks, NULL, types, &sv);
    }
    if (!s) {
        int32_t n = sv.n_vocab;
        int32_t cls = opt_id(f, "tokenizer.ggml.bos_token_id", n, 101);
        struct tok_wpm_vocab v = {
            .n_vocab = n,
            .text = sv.text,
            .len = sv.len,
            .type = sv.type,
            .unk = opt_id(f, "tokenizer.ggml.unknown_token_id", n, 100),
            .cls = opt_id(f, "tokenizer.ggml.cls_token_id", n, cls),
            .sep = opt_id(f, "tokenizer.ggml.seperator_token_id", n, 102),
        };
        v.uncased = !wpm_cased(&v);
        if (v.unk < 0)
            s = kiln_fail(KILN_ERR_FORMAT, "%s: the WordPiece vocabulary has no unknown token",
                          gguf_path(f));
        else
            t = tok_wpm_create(&v, &s);
    }
    free((void *)sv.text);
    free((void *)sv.len);
    free((void *)sv.score);
    free((void *)sv.type);
    if (st) *st = s;
    return t;
}

/* ---- byte-level BPE ("gpt2") ---- */

/* An optional token id key for BPE: TOK_BPE_ID_DEFAULT when absent (the text
 * layer applies llama.cpp's default), -1 when malformed or out of range. */
static int32_t bpe_id(const gguf_file *f, const char *key, int32_t n_vocab) {
    return gguf_find_kv(f, key) ? opt_id(f, key, n_vocab, -1) : TOK_BPE_ID_DEFAULT;
}

static int8_t bpe_flag(const gguf_file *f, const char *key) {
    bool v;
    if (!gguf_find_kv(f, key) || gguf_get_bool(f, key, &v) != KILN_OK) return -1;
    return v ? 1 : 0;
}

bool vocab_is_bpe(const gguf_file *f) {
    gguf_str model;
    return gguf_get_str(f, "tokenizer.ggml.model", &model) == KILN_OK && model.len == 4 &&
           memcmp(model.ptr, "gpt2", 4) == 0;
}

/* The merge strings of tokenizer.ggml.merges as pointer/length arrays. */
static kiln_status bpe_merges(const gguf_file *f, const char ***text, uint32_t **len, int64_t *n) {
    const gguf_value *mv;
    kiln_status s = gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_VT_STRING, &mv);
    if (s) return s;
    if (mv->arr.n > INT32_MAX)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer.ggml.merges has %llu entries",
                         gguf_path(f), (unsigned long long)mv->arr.n);
    *n = (int64_t)mv->arr.n;
    *text = malloc((mv->arr.n ? mv->arr.n : 1) * sizeof **text);
    *len = malloc((mv->arr.n ? mv->arr.n : 1) * sizeof **len);
    if (!*text || !*len) return kiln_fail(KILN_ERR_NOMEM, "%s: no memory for merges", gguf_path(f));
    for (uint64_t i = 0; i < mv->arr.n; i++) {
        gguf_str m = mv->arr.items[i].str;
        if (m.len > UINT32_MAX)
            return kiln_fail(KILN_ERR_FORMAT, "%s: merge %llu is too long", gguf_path(f),
                             (unsigned long long)i);
        (*text)[i] = m.ptr;
        (*len)[i] = (uint32_t)m.len;
    }
    return KILN_OK;
}

tok_bpe *vocab_load_bpe(const gguf_file *f, kiln_status *st) {
    const gguf_value *toks = NULL, *types = NULL;
    struct tok_spm_vocab sv = {0}; /* fill_arrays gives text, len and type */
    struct tok_bpe_vocab v = {0};
    const char **merges = NULL;
    uint32_t *merge_len = NULL;
    tok_bpe *t = NULL;
    gguf_str pre = {0};
    kiln_status s = KILN_OK;
    if (!vocab_is_bpe(f))
        s = kiln_fail(KILN_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model is not 'gpt2' (BPE)",
                      gguf_path(f));
    if (!s) s = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_VT_STRING, &toks);
    if (!s && (toks->arr.n == 0 || toks->arr.n > INT32_MAX / 4))
        s = kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", gguf_path(f),
                      (unsigned long long)toks->arr.n);
    if (!s) s = opt_numeric_arr(f, "tokenizer.ggml.token_type", toks->arr.n, &types);
    if (!s) {
        sv.n_vocab = (int32_t)toks->arr.n;
        s = fill_arrays(f, toks, NULL, types, &sv);
    }
    if (!s) s = bpe_merges(f, &merges, &merge_len, &v.n_merges);
    if (!s && gguf_find_kv(f, "tokenizer.ggml.pre"))
        s = gguf_get_str(f, "tokenizer.ggml.pre", &pre);
    if (!s) {
        int32_t n = sv.n_vocab;
        v.n_vocab = n;
        v.text = sv.text, v.len = sv.len, v.type = sv.type;
        v.merge = merges, v.merge_len = merge_len;
        v.pre = pre.ptr, v.pre_len = (size_t)pre.len;
        v.bos = bpe_id(f, "tokenizer.ggml.bos_token_id", n);
        v.eos = bpe_id(f, "tokenizer.ggml.eos_token_id", n);
        v.eot = bpe_id(f, "tokenizer.ggml.eot_token_id", n);
        v.unk = bpe_id(f, "tokenizer.ggml.unknown_token_id", n);
        v.add_bos = bpe_flag(f, "tokenizer.ggml.add_bos_token");
        v.add_eos = bpe_flag(f, "tokenizer.ggml.add_eos_token");
        t = tok_bpe_create(&v, &s);
        if (!t && s == KILN_ERR_UNSUPPORTED) { /* name the file too */
            char why[256];
            snprintf(why, sizeof why, "%s", kiln_last_error());
            s = kiln_fail(s, "%s: %s", gguf_path(f), why);
        }
    }
    free((void *)sv.text);
    free((void *)sv.len);
    free((void *)sv.score);
    free((void *)sv.type);
    free(merges);
    free(merge_len);
    if (st) *st = s;
    return t;
}

/* tok_bpe.c - byte-level BPE tokenizer (see tok_bpe.h for the rules).
 *
 * Invariants: token texts, merge texts and decoded pieces live in three
 * arenas owned by the tokenizer; the token table maps each text to the
 * highest id carrying it and the merge table each (left, right) pair to its
 * lowest rank, both with at least twice as many slots as entries (so probing
 * always ends). `special` lists the ids that step 1 of encoding may cut out,
 * longest text first (ties: lower id first). type[] holds the effective
 * types, after end-of-turn and FIM tokens were made control tokens.
 *
 * Encoding works word by word on one scratch allocation sized for the
 * longest word: symbols form a linked list over the mapped word; a symbol
 * with n == 0 was merged into its left neighbour, and a queued bigram whose
 * symbols changed size since it was queued is stale and skipped (sizes only
 * grow, so an unchanged size means unchanged text).
 *
 * max_bytes bounds the input bytes one emitted token stands for: a normal
 * token's text has one alphabet character (1-2 bytes) per input byte, a
 * special token's is the input it was cut from; so it is the longest token
 * text, provided every merge makes a token (else it is 0): then only a
 * byte whose alphabet character is no token is ever dropped (drop[b] = 1).
 */
#define _GNU_SOURCE /* memmem */
#include "text/tok_bpe.h"
#include "base/status.h"
#include "text/pretok.h"

#include <stdlib.h>
#include <string.h>

struct tok_bpe {
    int32_t n_vocab;
    char *arena; /* token texts */
    const char **text;
    uint32_t *len;
    uint8_t *type;
    uint8_t *eog;
    int32_t *slots; /* token table; -1 = empty */
    uint64_t slot_mask;
    char *piece_arena; /* decoded pieces (as if special) */
    size_t *piece_off;
    uint32_t *piece_len;
    size_t max_piece;
    size_t max_bytes;  /* tok_bpe_max_token_bytes */
    uint8_t drop[256]; /* tok_bpe_drop_bytes */
    bool any_drop;
    /* merges */
    int64_t n_merges;
    char *merge_arena;
    const char **m_text;
    uint32_t *m_left, *m_len; /* left = m_text[0..m_left), right = m_text[m_left+1..m_len) */
    int32_t *m_slots;         /* merge table; -1 = empty */
    uint64_t m_mask;
    /* special tokens for partitioning */
    int32_t *special;
    int32_t n_special;
    int32_t bos, eos, eot, unk;
    bool add_bos, add_eos, ignore_merges, clean_spaces;
    pretok *pre;
    /* GPT-2 byte-to-unicode alphabet: byte b is enc[b][0..enc_len[b]) */
    char enc[256][2];
    uint8_t enc_len[256];
    int16_t dec[324]; /* code point -> byte, -1 when none */
};

/* ---- hashing ---- */

static uint64_t fnv(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}
#define FNV_INIT 1469598103934665603ull

static int32_t lookup(const tok_bpe *t, const char *s, size_t n) {
    for (uint64_t i = fnv(FNV_INIT, s, n) & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        int32_t id = t->slots[i];
        if (id < 0) return -1;
        if (t->len[id] == n && memcmp(t->text[id], s, n) == 0) return id;
    }
}

static void insert_token(tok_bpe *t, int32_t id) {
    uint64_t i = fnv(FNV_INIT, t->text[id], t->len[id]) & t->slot_mask;
    for (;; i = (i + 1) & t->slot_mask) {
        int32_t o = t->slots[i];
        if (o < 0 || (t->len[o] == t->len[id] && !memcmp(t->text[o], t->text[id], t->len[id])))
            break;
    }
    t->slots[i] = id; /* a later duplicate replaces an earlier one */
}

static uint64_t pair_hash(const char *l, size_t nl, const char *r, size_t nr) {
    uint64_t h = fnv(FNV_INIT, l, nl);
    h = (h ^ 0x1ff) * 1099511628211ull; /* a separator no byte equals */
    return fnv(h, r, nr);
}

static bool merge_is(const tok_bpe *t, int32_t m, const char *l, size_t nl, const char *r,
                     size_t nr) {
    const char *s = t->m_text[m];
    return t->m_left[m] == nl && t->m_len[m] - nl - 1 == nr && !memcmp(s, l, nl) &&
           !memcmp(s + nl + 1, r, nr);
}

/* The rank of merging l and r, or -1. */
static int32_t merge_rank(const tok_bpe *t, const char *l, size_t nl, const char *r, size_t nr) {
    for (uint64_t i = pair_hash(l, nl, r, nr) & t->m_mask;; i = (i + 1) & t->m_mask) {
        int32_t m = t->m_slots[i];
        if (m < 0) return -1;
        if (merge_is(t, m, l, nl, r, nr)) return m;
    }
}

static void insert_merge(tok_bpe *t, int32_t m) {
    const char *s = t->m_text[m];
    size_t nl = t->m_left[m], nr = t->m_len[m] - nl - 1;
    uint64_t i = pair_hash(s, nl, s + nl + 1, nr) & t->m_mask;
    for (;; i = (i + 1) & t->m_mask) {
        int32_t o = t->m_slots[i];
        if (o < 0) break;
        if (merge_is(t, o, s, nl, s + nl + 1, nr)) return; /* the first rank wins */
    }
    t->m_slots[i] = m;
}

/* ---- construction ---- */

static void init_byte_alphabet(tok_bpe *t) {
    int next = 256;
    for (int i = 0; i < 324; i++) t->dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        int cp = self ? b : next++;
        if (cp < 0x80) {
            t->enc[b][0] = (char)cp;
            t->enc_len[b] = 1;
        } else {
            t->enc[b][0] = (char)(0xc0 | (cp >> 6));
            t->enc[b][1] = (char)(0x80 | (cp & 0x3f));
            t->enc_len[b] = 2;
        }
        t->dec[cp] = (int16_t)b;
    }
}

static uint64_t table_size(uint64_t n) {
    uint64_t s = 1;
    while (s < 2 * n) s <<= 1;
    return s;
}

static kiln_status copy_tokens(tok_bpe *t, const struct tok_bpe_vocab *v) {
    size_t n = (size_t)v->n_vocab, bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += v->len[i] ? v->len[i] : 24; /* "[EMPTY_i]" */
    uint64_t n_slots = table_size(n);
    t->arena = malloc(bytes ? bytes : 1);
    t->text = malloc(n * sizeof *t->text);
    t->len = malloc(n * sizeof *t->len);
    t->type = malloc(n);
    t->eog = calloc(n, 1);
    t->slots = malloc(n_slots * sizeof *t->slots);
    if (!t->arena || !t->text || !t->len || !t->type || !t->eog || !t->slots)
        return kiln_fail(KILN_ERR_NOMEM, "tokenizer: no memory for a %d-token vocabulary",
                         v->n_vocab);
    memset(t->slots, 0xff, n_slots * sizeof *t->slots);
    t->slot_mask = n_slots - 1;
    char *at = t->arena;
    for (size_t i = 0; i < n; i++) {
        size_t l = v->len[i];
        if (l) {
            memcpy(at, v->text[i], l);
        } else { /* llama.cpp renames empty tokens */
            int w = snprintf(at, 24, "[EMPTY_%zu]", i);
            l = w > 0 && w < 24 ? (size_t)w : 0;
        }
        t->text[i] = at;
        t->len[i] = (uint32_t)l;
        at += l;
        uint8_t ty = v->type ? v->type[i] : TOK_TYPE_NORMAL;
        t->type[i] = ty <= TOK_TYPE_BYTE ? ty : TOK_TYPE_UNDEFINED;
        insert_token(t, (int32_t)i);
    }
    return KILN_OK;
}

static kiln_status copy_merges(tok_bpe *t, const struct tok_bpe_vocab *v) {
    size_t n = (size_t)v->n_merges, bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += v->merge_len[i];
    uint64_t n_slots = table_size(n ? n : 1);
    t->merge_arena = malloc(bytes ? bytes : 1);
    t->m_text = malloc((n ? n : 1) * sizeof *t->m_text);
    t->m_left = malloc((n ? n : 1) * sizeof *t->m_left);
    t->m_len = malloc((n ? n : 1) * sizeof *t->m_len);
    t->m_slots = malloc(n_slots * sizeof *t->m_slots);
    if (!t->merge_arena || !t->m_text || !t->m_left || !t->m_len || !t->m_slots)
        return kiln_fail(KILN_ERR_NOMEM, "tokenizer: no memory for %zu merges", n);
    memset(t->m_slots, 0xff, n_slots * sizeof *t->m_slots);
    t->m_mask = n_slots - 1;
    t->n_merges = (int64_t)n;
    char *at = t->merge_arena;
    for (size_t i = 0; i < n; i++) {
        size_t l = v->merge_len[i];
        memcpy(at, v->merge[i], l);
        t->m_text[i] = at;
        t->m_len[i] = (uint32_t)l;
        at += l;
        const char *sp = l > 1 ? memchr(at - l + 1, ' ', l - 1) : NULL;
        if (!sp) { /* no separator: llama.cpp keys it ("", "") - never looked up */
            t->m_left[i] = 0;
            t->m_len[i] = 1;
            continue;
        }
        t->m_left[i] = (uint32_t)(sp - t->m_text[i]);
        insert_merge(t, (int32_t)i);
    }
    return KILN_OK;
}

/* Token texts llama.cpp treats as control (and the first group as
 * end-of-generation), whatever type the file gives them. */
static const char *const eog_texts[] = {"<|eot_id|>",    "<|im_end|>", "<|end|>", "<end_of_turn>",
                                        "<|endoftext|>", "<|eom_id|>", "<EOT>",   "_<EOT>"};
static const char *const eog_fim_texts[] = {"<|fim_pad|>",  "<fim-pad>",     "<PAD>",
                                            "<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>",       "<|file_sep|>"};
static const char *const control_texts[] = {
    "<\xef\xbd\x9c"
    "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", /* DeepSeek EOT */
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<\xef\xbd\x9c"
    "fim\xe2\x96\x81"
    "begin\xef\xbd\x9c>",
    "<PRE>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<\xef\xbd\x9c"
    "fim\xe2\x96\x81hole\xef\xbd\x9c>",
    "<SUF>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<\xef\xbd\x9c"
    "fim\xe2\x96\x81"
    "end\xef\xbd\x9c>",
    "<MID>"};

static void mark_texts(tok_bpe *t, const char *const *texts, size_t n, bool eog) {
    for (size_t k = 0; k < n; k++) {
        int32_t id = lookup(t, texts[k], strlen(texts[k]));
        if (id < 0) continue;
        t->type[id] = TOK_TYPE_CONTROL;
        if (eog) t->eog[id] = 1;
    }
}

static int32_t resolve_id(int32_t id, int32_t dflt, int32_t n_vocab) {
    if (id == TOK_BPE_ID_DEFAULT) id = dflt;
    return id >= 0 && id < n_vocab ? id : -1;
}

static void resolve_specials(tok_bpe *t, const struct tok_bpe_vocab *v,
                             const struct pretok_flags *fl) {
    t->bos = resolve_id(v->bos, fl->no_bos ? -1 : 11, v->n_vocab);
    t->eos = resolve_id(v->eos, 11, v->n_vocab);
    t->unk = resolve_id(v->unk, -1, v->n_vocab);
    t->eot = resolve_id(v->eot, -1, v->n_vocab);
    t->add_bos = v->add_bos >= 0 ? v->add_bos != 0 : fl->add_bos;
    t->add_eos = v->add_eos >= 0 ? v->add_eos != 0 : false;
    t->ignore_merges = fl->ignore_merges;
    t->clean_spaces = fl->clean_spaces;
    mark_texts(t, eog_texts, sizeof eog_texts / sizeof *eog_texts, true);
    mark_texts(t, eog_fim_texts, sizeof eog_fim_texts / sizeof *eog_fim_texts, true);
    mark_texts(t, control_texts, sizeof control_texts / sizeof *control_texts, false);
    if (t->eot < 0) { /* llama.cpp finds the end-of-turn token by its text */
        for (size_t k = 0; k < sizeof eog_texts / sizeof *eog_texts && t->eot < 0; k++)
            t->eot = lookup(t, eog_texts[k], strlen(eog_texts[k]));
        if (t->eot < 0) t->eot = lookup(t, control_texts[0], strlen(control_texts[0]));
    }
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if (t->eot >= 0) t->eog[t->eot] = 1;
}

/* Appends the piece of token id to out (NULL: only measures); returns its length. */
static size_t render_piece(const tok_bpe *t, int32_t id, char *out) {
    const char *s = t->text[id];
    size_t n = t->len[id], w = 0;
    switch (t->type[id]) {
    case TOK_TYPE_CONTROL:
    case TOK_TYPE_UNKNOWN:
    case TOK_TYPE_USER_DEFINED:
        if (out) memcpy(out, s, n);
        return n;
    case TOK_TYPE_NORMAL:
        break;
    default:
        return 0;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t cl = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        if (cl > n - i) cl = n - i;
        uint32_t cp = cl == 1 ? c : cl == 2 ? ((c & 0x1fu) << 6) | (s[i + 1] & 0x3fu) : 0xffff;
        int b = cp < 324 ? t->dec[cp] : -1;
        if (b >= 0) {
            if (out) out[w] = (char)b;
            w++;
        } else { /* llama.cpp: "[UNK_BYTE_0x" hex(char) token-text "]" */
            size_t need = 12 + 2 * cl + n + 1;
            if (out) {
                memcpy(out + w, "[UNK_BYTE_0x", 12);
                for (size_t k = 0; k < cl; k++) {
                    out[w + 12 + 2 * k] = hex[(unsigned char)s[i + k] >> 4];
                    out[w + 13 + 2 * k] = hex[(unsigned char)s[i + k] & 15];
                }
                memcpy(out + w + 12 + 2 * cl, s, n);
                out[w + need - 1] = ']';
            }
            w += need;
        }
        i += cl;
    }
    return w;
}

/* max_bytes and drop[] (see the invariants above): max_bytes is the
 * longest token text, or 0 when a merge's result is not a token (a symbol
 * that is no token falls back to its bytes' tokens, which may not exist:
 * then no bound holds). */
static kiln_status find_max_bytes(tok_bpe *t) {
    size_t longest = 0, max_merge = 1;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->len[i] > longest) longest = t->len[i];
    for (int b = 0; b < 256; b++) {
        t->drop[b] = lookup(t, t->enc[b], t->enc_len[b]) < 0;
        t->any_drop = t->any_drop || t->drop[b];
    }
    for (int64_t i = 0; i < t->n_merges; i++)
        if (t->m_len[i] > max_merge) max_merge = t->m_len[i];
    char *buf = malloc(max_merge);
    if (!buf) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    bool all = true;
    for (int64_t i = 0; i < t->n_merges && all; i++) {
        uint32_t l = t->m_left[i], n = t->m_len[i];
        if (l == 0 || l >= n) continue; /* never looked up */
        memcpy(buf, t->m_text[i], l);
        memcpy(buf + l, t->m_text[i] + l + 1, n - l - 1);
        all = lookup(t, buf, n - 1) >= 0;
    }
    free(buf);
    if (all) t->max_bytes = longest;
    return KILN_OK;
}

static kiln_status build_pieces(tok_bpe *t) {
    size_t n = (size_t)t->n_vocab, total = 0;
    t->piece_off = malloc(n * sizeof *t->piece_off);
    t->piece_len = malloc(n * sizeof *t->piece_len);
    if (!t->piece_off || !t->piece_len) goto nomem;
    for (size_t i = 0; i < n; i++) {
        size_t l = render_piece(t, (int32_t)i, NULL);
        t->piece_off[i] = total;
        t->piece_len[i] = (uint32_t)l;
        total += l;
        if (l > t->max_piece) t->max_piece = l;
    }
    if (!(t->piece_arena = malloc(total ? total : 1))) goto nomem;
    for (size_t i = 0; i < n; i++) render_piece(t, (int32_t)i, t->piece_arena + t->piece_off[i]);
    return KILN_OK;
nomem:
    return kiln_fail(KILN_ERR_NOMEM, "tokenizer: no memory for token pieces");
}

struct len_id {
    uint32_t len;
    int32_t id;
};

/* Longest text first, then the lower id. */
static int cmp_len_id(const void *a, const void *b) {
    const struct len_id *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool is_special_type(uint8_t ty) {
    return ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN;
}

static kiln_status build_special(tok_bpe *t) {
    int32_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) n += is_special_type(t->type[i]);
    struct len_id *tmp = malloc((size_t)(n ? n : 1) * sizeof *tmp);
    t->special = malloc((size_t)(n ? n : 1) * sizeof *t->special);
    if (!tmp || !t->special) {
        free(tmp);
        return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    }
    n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (is_special_type(t->type[i])) tmp[n++] = (struct len_id){t->len[i], i};
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_len_id);
    for (int32_t i = 0; i < n; i++) t->special[i] = tmp[i].id;
    t->n_special = n;
    free(tmp);
    return KILN_OK;
}

tok_bpe *tok_bpe_create(const struct tok_bpe_vocab *v, kiln_status *st) {
    kiln_status s = KILN_OK;
    tok_bpe *t = NULL;
    struct pretok_flags fl;
    if (v->n_vocab <= 0 || !v->text || !v->len || v->n_merges < 0 ||
        (v->n_merges > 0 && (!v->merge || !v->merge_len))) {
        s = kiln_fail(KILN_ERR_INVALID_ARG, "tokenizer: empty vocabulary (%d tokens)", v->n_vocab);
        goto fail;
    }
    if (!(t = calloc(1, sizeof *t))) {
        s = kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    t->n_vocab = v->n_vocab;
    init_byte_alphabet(t);
    if (!(t->pre = pretok_create(v->pre, v->pre_len, &fl, &s))) goto fail;
    if ((s = copy_tokens(t, v))) goto fail;
    if ((s = copy_merges(t, v))) goto fail;
    resolve_specials(t, v, &fl);
    if ((s = build_pieces(t))) goto fail;
    if ((s = build_special(t))) goto fail;
    if ((s = find_max_bytes(t))) goto fail;
    if (st) *st = KILN_OK;
    return t;
fail:
    tok_bpe_free(t);
    if (st) *st = s;
    return NULL;
}

void tok_bpe_free(tok_bpe *t) {
    if (!t) return;
    pretok_free(t->pre);
    free(t->arena);
    free(t->text);
    free(t->len);
    free(t->type);
    free(t->eog);
    free(t->slots);
    free(t->piece_arena);
    free(t->piece_off);
    free(t->piece_len);
    free(t->merge_arena);
    free(t->m_text);
    free(t->m_left);
    free(t->m_len);
    free(t->m_slots);
    free(t->special);
    free(t);
}

int32_t tok_bpe_n_vocab(const tok_bpe *t) {
    return t->n_vocab;
}
int32_t tok_bpe_bos(const tok_bpe *t) {
    return t->bos;
}
int32_t tok_bpe_eos(const tok_bpe *t) {
    return t->eos;
}
bool tok_bpe_add_bos(const tok_bpe *t) {
    return t->add_bos;
}
bool tok_bpe_is_eog(const tok_bpe *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->eog[id];
}
int tok_bpe_type(const tok_bpe *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->type[id] : TOK_TYPE_UNDEFINED;
}
const char *tok_bpe_pre_name(const tok_bpe *t) {
    return pretok_name(t->pre);
}

/* ---- encoding ---- */

struct out {
    int32_t *ids;
    size_t cap, n;
    size_t max; /* stop once n passes it (SIZE_MAX: never) */
};

static void emit(struct out *o, int32_t id) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* Decodes s[0..len) into code points; a byte b that does not start a valid
 * (shortest-form, non-surrogate, <= U+10FFFF) sequence becomes
 * PRETOK_RAW_BYTE + b, which the pre-tokenizer reads as U+FFFD and the word
 * keeps as the byte itself. cp needs room for len entries; returns the count. */
static size_t decode_utf8(const char *s, size_t len, uint32_t *cp) {
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t need = 0;
        uint32_t v = 0;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            cp[n++] = c;
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1, v = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, v = c & 0x0f;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, v = c & 0x07;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        }
        bool ok = need > 0 && i + need < len;
        for (size_t k = 1; ok && k <= need; k++) {
            unsigned char b = (unsigned char)s[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) ok = false;
            v = (v << 6) | (b & 0x3fu);
        }
        cp[n++] = ok ? v : PRETOK_RAW_BYTE + c;
        i += ok ? need + 1 : 1;
    }
    return n;
}

struct sym {
    int32_t prev, next;
    uint32_t off, n; /* bytes of the mapped word; n == 0: merged away */
};

struct bigram {
    int32_t rank, left, right;
    uint32_t size; /* bytes of the merged text when queued */
};

struct word_enc {
    const tok_bpe *t;
    char *w; /* the word in the byte-to-unicode alphabet */
    struct sym *sym;
    struct bigram *heap;
    size_t n_heap;
    struct out *o;
};

/* Heap order: the lowest rank first, then the leftmost pair. */
static bool before(const struct bigram *a, const struct bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(struct word_enc *e, struct bigram b) {
    size_t i = e->n_heap++;
    while (i > 0 && before(&b, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = b;
}

static struct bigram heap_pop(struct word_enc *e) {
    struct bigram top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&e->heap[c + 1], &e->heap[c])) c++;
        if (!before(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

static void try_bigram(struct word_enc *e, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const struct sym *l = &e->sym[left], *r = &e->sym[right];
    int32_t rank = merge_rank(e->t, e->w + l->off, l->n, e->w + r->off, r->n);
    if (rank >= 0) heap_push(e, (struct bigram){rank, left, right, l->n + r->n});
}

/* A final symbol: its token, else the tokens of its single bytes that exist. */
static void emit_symbol(struct word_enc *e, uint32_t off, uint32_t n) {
    int32_t id = lookup(e->t, e->w + off, n);
    if (id >= 0) {
        emit(e->o, id);
        return;
    }
    for (uint32_t k = 0; k < n; k++)
        if ((id = lookup(e->t, e->w + off + k, 1)) >= 0) emit(e->o, id);
}

static void bpe_word(struct word_enc *e, uint32_t wlen) {
    int32_t id;
    if (e->t->ignore_merges && (id = lookup(e->t, e->w, wlen)) >= 0) {
        emit(e->o, id);
        return;
    }
    int32_t n_sym = 0;
    for (uint32_t off = 0; off < wlen; n_sym++) {
        unsigned char c = (unsigned char)e->w[off];
        uint32_t cl = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        if (cl > wlen - off) cl = wlen - off;
        e->sym[n_sym] = (struct sym){n_sym - 1, n_sym + 1, off, cl};
        off += cl;
    }
    if (n_sym) e->sym[n_sym - 1].next = -1;
    e->n_heap = 0;
    for (int32_t i = 1; i < n_sym; i++) try_bigram(e, i - 1, i);
    while (e->n_heap) {
        struct bigram b = heap_pop(e);
        struct sym *l = &e->sym[b.left], *r = &e->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) e->sym[r->next].prev = b.left;
        try_bigram(e, l->prev, b.left);
        try_bigram(e, b.left, l->next);
    }
    for (int32_t i = n_sym ? 0 : -1; i >= 0; i = e->sym[i].next)
        emit_symbol(e, e->sym[i].off, e->sym[i].n);
}

static size_t cp_utf8(uint32_t c, unsigned char *o) {
    if (c < 0x80) return o[0] = (unsigned char)c, 1;
    if (c < 0x800) {
        o[0] = (unsigned char)(0xc0 | (c >> 6));
        o[1] = (unsigned char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (c >> 12));
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (c & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (c >> 18));
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (c & 0x3f));
    return 4;
}

/* Encodes one plain-text fragment: UTF-8 -> words -> byte alphabet -> BPE. */
static kiln_status encode_fragment(const tok_bpe *t, const char *s, size_t len, struct out *o) {
    kiln_status st = KILN_OK;
    struct word_enc e = {.t = t, .o = o};
    size_t n_words = 0, max_cp = 0;
    uint32_t *cp = malloc(len * sizeof *cp);
    size_t *ends = malloc(len * sizeof *ends);
    if (!cp || !ends) {
        st = kiln_fail(KILN_ERR_NOMEM, "tokenize: no memory for %zu bytes of text", len);
        goto done;
    }
    size_t n = decode_utf8(s, len, cp);
    if ((st = pretok_split(t->pre, cp, n, ends, &n_words))) goto done;
    for (size_t k = 0, start = 0; k < n_words; start = ends[k++])
        if (ends[k] - start > max_cp) max_cp = ends[k] - start;
    /* per code point: <= 4 UTF-8 bytes, each <= 2 bytes in the alphabet */
    size_t max_sym = 4 * max_cp;
    e.w = malloc(2 * max_sym + 1);
    e.sym = malloc((max_sym + 1) * sizeof *e.sym);
    e.heap = malloc((3 * max_sym + 1) * sizeof *e.heap);
    if (!e.w || !e.sym || !e.heap) {
        st = kiln_fail(KILN_ERR_NOMEM, "tokenize: no memory for a word of %zu characters", max_cp);
        goto done;
    }
    for (size_t k = 0, start = 0; k < n_words; start = ends[k++]) {
        uint32_t wlen = 0;
        for (size_t i = start; i < ends[k]; i++) {
            unsigned char u[4];
            size_t ul = cp[i] >= PRETOK_RAW_BYTE
                            ? (u[0] = (unsigned char)(cp[i] - PRETOK_RAW_BYTE), 1)
                            : cp_utf8(cp[i], u);
            for (size_t j = 0; j < ul; j++) {
                memcpy(e.w + wlen, t->enc[u[j]], t->enc_len[u[j]]);
                wlen += t->enc_len[u[j]];
            }
        }
        bpe_word(&e, wlen);
        if (o->n > o->max) break; /* the limit is passed: the rest cannot matter */
    }
done:
    free(cp);
    free(ends);
    free(e.w);
    free(e.sym);
    free(e.heap);
    return st;
}

/* A piece of the input: plain text (id -1) or a special token. */
struct frag {
    size_t off, len;
    int32_t id;
};

struct frags {
    struct frag *v;
    size_t n, cap;
};

static bool frag_push(struct frags *f, size_t off, size_t len, int32_t id) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        struct frag *v = realloc(f->v, cap * sizeof *v);
        if (!v) return false;
        f->v = v, f->cap = cap;
    }
    f->v[f->n++] = (struct frag){off, len, id};
    return true;
}

/* Cuts token id out of every plain fragment of *cur into *nxt. */
static bool cut_token(const tok_bpe *t, const char *text, int32_t id, const struct frags *cur,
                      struct frags *nxt) {
    const char *s = t->text[id];
    size_t tl = t->len[id];
    nxt->n = 0;
    for (size_t k = 0; k < cur->n; k++) {
        struct frag f = cur->v[k];
        if (f.id >= 0) {
            if (!frag_push(nxt, f.off, f.len, f.id)) return false;
            continue;
        }
        size_t pos = f.off, end = f.off + f.len;
        const char *p;
        while (end - pos >= tl && (p = memmem(text + pos, end - pos, s, tl))) {
            size_t q = (size_t)(p - text);
            if (q > pos && !frag_push(nxt, pos, q - pos, -1)) return false;
            if (!frag_push(nxt, q, tl, id)) return false;
            pos = q + tl;
        }
        if (pos < end && !frag_push(nxt, pos, end - pos, -1)) return false;
    }
    return true;
}

/* Step 1: splits text into plain fragments and special tokens (*out). */
static kiln_status partition(const tok_bpe *t, const char *text, size_t len, bool parse_special,
                             struct frags *out) {
    struct frags a = {0}, b = {0};
    uint64_t *pairs = calloc(1024, sizeof *pairs); /* which byte pairs occur */
    bool ok = pairs && frag_push(&a, 0, len, -1);
    uint8_t first[256] = {0};
    for (size_t i = 0; ok && i < len; i++) {
        first[(unsigned char)text[i]] = 1;
        if (i + 1 < len) {
            unsigned pr = (unsigned char)text[i] << 8 | (unsigned char)text[i + 1];
            pairs[pr >> 6] |= 1ull << (pr & 63);
        }
    }
    for (int32_t k = 0; ok && k < t->n_special; k++) {
        int32_t id = t->special[k];
        size_t tl = t->len[id];
        const unsigned char *s = (const unsigned char *)t->text[id];
        if (!parse_special && t->type[id] != TOK_TYPE_USER_DEFINED) continue;
        if (tl == 0 || tl > len || !first[s[0]]) continue;
        if (tl > 1 && !(pairs[(s[0] << 8 | s[1]) >> 6] & (1ull << ((s[0] << 8 | s[1]) & 63))))
            continue;
        if (!memmem(text, len, s, tl)) continue;
        ok = cut_token(t, text, id, &a, &b);
        struct frags x = a;
        a = b, b = x;
    }
    free(pairs);
    free(b.v);
    if (!ok) {
        free(a.v);
        return kiln_fail(KILN_ERR_NOMEM, "tokenize: no memory for %zu bytes of text", len);
    }
    *out = a;
    return KILN_OK;
}

kiln_status tok_bpe_encode_max(const tok_bpe *t, const char *text, size_t len, bool add_special,
                               bool parse_special, size_t max, int32_t *ids, size_t cap,
                               size_t *n_ids) {
    struct out o = {ids, cap, 0, max};
    kiln_status st = KILN_OK;
    *n_ids = 0;
    if (len > SIZE_MAX / 64)
        return kiln_fail(KILN_ERR_RANGE, "tokenize: text of %zu bytes is too long", len);
    if (add_special && t->add_bos && t->bos >= 0) emit(&o, t->bos);
    if (len > 0) {
        struct frags f = {0};
        if ((st = partition(t, text, len, parse_special, &f))) return st;
        for (size_t k = 0; k < f.n && !st && o.n <= max; k++) {
            if (f.v[k].id >= 0)
                emit(&o, f.v[k].id);
            else
                st = encode_fragment(t, text + f.v[k].off, f.v[k].len, &o);
        }
        free(f.v);
        if (st) return st;
    }
    if (o.n > max) {
        *n_ids = o.n;
        return kiln_fail(KILN_ERR_RANGE, "tokenize: the text needs more than %zu tokens", max);
    }
    if (add_special && t->add_eos && t->eos >= 0) emit(&o, t->eos);
    *n_ids = o.n;
    if (o.n > cap)
        return kiln_fail(KILN_ERR_RANGE, "tokenize: the text needs %zu tokens, room for %zu", o.n,
                         cap);
    return KILN_OK;
}

kiln_status tok_bpe_encode(const tok_bpe *t, const char *text, size_t len, bool add_special,
                           bool parse_special, int32_t *ids, size_t cap, size_t *n_ids) {
    return tok_bpe_encode_max(t, text, len, add_special, parse_special, SIZE_MAX, ids, cap, n_ids);
}

/* ---- decoding ---- */

size_t tok_bpe_piece(const tok_bpe *t, int32_t id, bool special, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    uint8_t ty = t->type[id];
    if (!special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) return 0;
    size_t n = t->piece_len[id];
    if (cap) memcpy(buf, t->piece_arena + t->piece_off[id], n < cap ? n : cap);
    return n;
}

size_t tok_bpe_max_piece(const tok_bpe *t) {
    return t->max_piece ? t->max_piece : 1;
}

size_t tok_bpe_max_token_bytes(const tok_bpe *t) {
    return t->max_bytes;
}

const uint8_t *tok_bpe_drop_bytes(const tok_bpe *t) {
    return t->any_drop ? t->drop : NULL;
}

/* llama.cpp's clean_up_tokenization_spaces, in three passes from src to dst
 * (each pass decides on the unmodified previous character). */
static size_t clean_spaces(char *a, size_t n, char *b) {
    size_t w = 0;
    if (n == 0) return 0;
    /* " ?", " !", " .", " ," lose the space */
    b[w++] = a[0];
    for (size_t i = 1; i < n; i++) {
        char x = a[i];
        if (a[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) w--;
        b[w++] = x;
    }
    /* " ' " becomes "'" */
    n = w, w = 0;
    a[w++] = b[0];
    char prev = b[0];
    for (size_t i = 1; i < n; i++) {
        char x = b[i];
        if (x == '\'' && i + 1 < n && prev == ' ' && b[i + 1] == ' ') {
            w--;
            a[w++] = x;
            i++;
            prev = '\0';
            continue;
        }
        a[w++] = x;
        prev = x;
    }
    /* " 's", " 'm", " 're", " 've" lose the space (" 't", " 'd", " 'll" keep it) */
    n = w, w = 0;
    b[w++] = a[0];
    for (size_t i = 1; i < n; i++) {
        char x = a[i];
        if (a[i - 1] == ' ' && x == '\'' && i + 1 < n) {
            char x1 = a[i + 1];
            if (x1 == 's' || x1 == 'm')
                w--;
            else if (x1 != 't' && x1 != 'd' && i + 2 < n &&
                     ((x1 == 'r' && a[i + 2] == 'e') || (x1 == 'v' && a[i + 2] == 'e')))
                w--;
        }
        b[w++] = x;
    }
    return w;
}

kiln_status tok_bpe_detokenize(const tok_bpe *t, const int32_t *ids, size_t n, bool special,
                               char *buf, size_t cap, size_t *n_out) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += tok_bpe_piece(t, ids[i], special, NULL, 0);
    char *a = malloc(total + 1), *b = malloc(total + 1);
    if (!a || !b) {
        free(a);
        free(b);
        return kiln_fail(KILN_ERR_NOMEM, "detokenize: no memory for %zu bytes", total);
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += tok_bpe_piece(t, ids[i], special, a + w, total - w);
    const char *res = a;
    if (t->clean_spaces) {
        w = clean_spaces(a, w, b);
        res = b;
    }
    if (cap) memcpy(buf, res, w < cap ? w : cap);
    *n_out = w;
    free(a);
    free(b);
    return KILN_OK;
}

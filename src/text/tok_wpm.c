/* tok_wpm.c - WordPiece tokenization (see tok_wpm.h for the rules).
 *
 * Invariants: every token's bytes live in one pool; the hash table is open
 * addressing over a power-of-two number of slots, at most half full, each
 * slot -1 or a token id; max_len is the longest token in bytes, so a match
 * is never longer. Encoding normalizes the text into one scratch buffer in
 * which every word is stored already prefixed with "▁", then matches each
 * word in place; scratch is allocated once per call.
 */
#include "text/tok_wpm.h"
#include "base/status.h"
#include "text/tok_spm.h" /* enum tok_type */

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define PHANTOM     "\xe2\x96\x81" /* U+2581, the word-start marker */
#define PHANTOM_LEN 3

struct tok_wpm {
    int32_t n_vocab;
    char *pool;
    size_t *off;
    uint32_t *len;
    uint8_t *type;
    int32_t *slots;
    uint64_t mask; /* slots - 1 */
    uint32_t max_len;
    int32_t unk, cls, sep;
    bool uncased;
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static int32_t lookup(const tok_wpm *t, const char *s, size_t n) {
    for (uint64_t i = hash_bytes(s, n) & t->mask;; i = (i + 1) & t->mask) {
        int32_t id = t->slots[i];
        if (id < 0) return -1;
        if (t->len[id] == n && !memcmp(t->pool + t->off[id], s, n)) return id;
    }
}

/* Inserts id; an earlier token with the same text is replaced. */
static void insert(tok_wpm *t, int32_t id) {
    const char *s = t->pool + t->off[id];
    size_t n = t->len[id];
    for (uint64_t i = hash_bytes(s, n) & t->mask;; i = (i + 1) & t->mask) {
        int32_t o = t->slots[i];
        if (o < 0 || (t->len[o] == n && !memcmp(t->pool + t->off[o], s, n))) {
            t->slots[i] = id;
            return;
        }
    }
}

static int32_t valid_id(const struct tok_wpm_vocab *v, int32_t id) {
    return id >= 0 && id < v->n_vocab ? id : -1;
}

tok_wpm *tok_wpm_create(const struct tok_wpm_vocab *v, kiln_status *st) {
    kiln_status s = KILN_OK;
    tok_wpm *t = calloc(1, sizeof *t);
    if (!t) goto nomem;
    if (v->n_vocab <= 0 || v->n_vocab > INT32_MAX / 4 || valid_id(v, v->unk) < 0) {
        s = kiln_fail(KILN_ERR_INVALID_ARG,
                      "wordpiece: a vocabulary needs tokens (has %d) and an unknown token (%d)",
                      v->n_vocab, v->unk);
        goto fail;
    }
    size_t n = (size_t)v->n_vocab, bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += v->len[i];
    uint64_t slots = 16;
    while (slots < 2 * (uint64_t)n) slots *= 2;
    t->n_vocab = v->n_vocab;
    t->pool = malloc(bytes ? bytes : 1);
    t->off = malloc(n * sizeof *t->off);
    t->len = malloc(n * sizeof *t->len);
    t->type = malloc(n);
    t->slots = malloc(slots * sizeof *t->slots);
    if (!t->pool || !t->off || !t->len || !t->type || !t->slots) goto nomem;
    t->mask = slots - 1;
    memset(t->slots, 0xff, slots * sizeof *t->slots);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(t->pool + o, v->text[i], v->len[i]);
        t->off[i] = o;
        t->len[i] = v->len[i];
        t->type[i] = v->type ? v->type[i] : TOK_TYPE_NORMAL;
        if (v->len[i] > t->max_len) t->max_len = v->len[i];
        o += v->len[i];
    }
    for (size_t i = 0; i < n; i++) insert(t, (int32_t)i);
    t->unk = v->unk;
    t->cls = valid_id(v, v->cls);
    t->sep = valid_id(v, v->sep);
    t->uncased = v->uncased;
    if (st) *st = KILN_OK;
    return t;
nomem:
    s = kiln_fail(KILN_ERR_NOMEM, "wordpiece: out of memory for a %d-token vocabulary", v->n_vocab);
fail:
    tok_wpm_free(t);
    if (st) *st = s;
    return NULL;
}

void tok_wpm_free(tok_wpm *t) {
    if (!t) return;
    free(t->pool);
    free(t->off);
    free(t->len);
    free(t->type);
    free(t->slots);
    free(t);
}

int32_t tok_wpm_n_vocab(const tok_wpm *t) {
    return t->n_vocab;
}
int32_t tok_wpm_cls(const tok_wpm *t) {
    return t->cls;
}
int32_t tok_wpm_sep(const tok_wpm *t) {
    return t->sep;
}
int32_t tok_wpm_unk(const tok_wpm *t) {
    return t->unk;
}

/* ---- basic tokenization ---- */

/* The Unicode White_Space property (PropList.txt). */
static bool is_space(int32_t c) {
    return (c >= 0x9 && c <= 0xd) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

/* CJK ideographs as BERT's basic tokenizer defines them (including its
 * 0x2B920 lower bound of Extension E). */
static bool is_cjk(int32_t c) {
    return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) ||
           (c >= 0x20000 && c <= 0x2a6df) || (c >= 0x2a700 && c <= 0x2b73f) ||
           (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b920 && c <= 0x2ceaf) ||
           (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f);
}

enum cp_class { CP_DROP, CP_SPACE, CP_ALONE, CP_WORD };

static enum cp_class classify(int32_t c) {
    if (is_space(c)) return CP_SPACE;
    if (c == 0 || c == 0xfffd) return CP_DROP;
    if (c < 0x80) {
        if (c < 0x20 || c == 0x7f) return CP_DROP;
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        return alnum ? CP_WORD : CP_ALONE; /* ASCII punctuation and symbols */
    }
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
        return CP_DROP;
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return CP_ALONE;
    default:
        return is_cjk(c) ? CP_ALONE : CP_WORD;
    }
}

/* Uncased vocabularies: the first code point of c's canonical decomposition,
 * lowercased. */
static int32_t fold(int32_t c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
    utf8proc_int32_t d[8];
    int bound = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char(c, d, 8, UTF8PROC_DECOMPOSE, &bound);
    if (n >= 1) c = d[0];
    return utf8proc_tolower(c);
}

/* Words of the text, each stored as "▁" + its bytes in buf. */
struct words {
    char *buf;
    size_t n_buf;
    size_t *start; /* word i is buf[start[i] .. start[i + 1]) */
    size_t n;
    bool open; /* the last word is still growing */
};

static void word_begin(struct words *w) {
    w->start[w->n++] = w->n_buf;
    memcpy(w->buf + w->n_buf, PHANTOM, PHANTOM_LEN);
    w->n_buf += PHANTOM_LEN;
    w->open = true;
}

static void put_cp(struct words *w, int32_t c) {
    w->n_buf += (size_t)utf8proc_encode_char(c, (utf8proc_uint8_t *)w->buf + w->n_buf);
}

static void split_words(const tok_wpm *t, const char *text, size_t len, struct words *w) {
    size_t i = 0;
    while (i < len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) { /* an invalid byte: dropped, like U+FFFD */
            i++;
            continue;
        }
        i += (size_t)k;
        if (t->uncased) c = fold(c);
        switch (classify(c)) {
        case CP_DROP:
            break;
        case CP_SPACE:
            w->open = false;
            break;
        case CP_ALONE:
            word_begin(w);
            put_cp(w, c);
            w->open = false;
            break;
        case CP_WORD:
            if (!w->open) word_begin(w);
            put_cp(w, c);
            break;
        }
    }
    w->start[w->n] = w->n_buf;
}

/* ---- WordPiece ---- */

static void emit(int32_t *ids, size_t cap, size_t *n, int32_t id) {
    if (*n < cap) ids[*n] = id;
    ++*n;
}

/* Greedy longest match of one word (with its "▁"); one [UNK] when a part
 * of it matches nothing. */
static void match_word(const tok_wpm *t, const char *s, size_t n, int32_t *ids, size_t cap,
                       size_t *n_ids) {
    size_t first = *n_ids;
    for (size_t i = 0; i < n;) {
        size_t j = n - i < t->max_len ? n : i + t->max_len;
        int32_t id = -1;
        for (; j > i; j--)
            if ((id = lookup(t, s + i, j - i)) >= 0) break;
        if (id < 0) {
            *n_ids = first;
            emit(ids, cap, n_ids, t->unk);
            return;
        }
        emit(ids, cap, n_ids, id);
        i = j;
    }
}

kiln_status tok_wpm_encode(const tok_wpm *t, const char *text, size_t len, bool add_special,
                           int32_t *ids, size_t cap, size_t *n_ids) {
    *n_ids = 0;
    /* A code point of k bytes folds to at most 4 (k >= 2) or stays 1 byte
     * (ASCII), and each word adds 3 bytes of "▁": 5 * len bounds the buffer. */
    if (len > (SIZE_MAX - 16) / 8)
        return kiln_fail(KILN_ERR_RANGE, "wordpiece: text of %zu bytes is too long", len);
    struct words w = {0};
    w.buf = malloc(5 * len + 16);
    w.start = malloc((len + 2) * sizeof *w.start);
    if (!w.buf || !w.start) {
        free(w.buf);
        free(w.start);
        return kiln_fail(KILN_ERR_NOMEM, "wordpiece: out of memory for %zu bytes of text", len);
    }
    split_words(t, text, len, &w);
    size_t n = 0;
    if (add_special && t->cls >= 0) emit(ids, cap, &n, t->cls);
    for (size_t i = 0; i < w.n; i++)
        match_word(t, w.buf + w.start[i], w.start[i + 1] - w.start[i], ids, cap, &n);
    if (add_special && t->sep >= 0) emit(ids, cap, &n, t->sep);
    free(w.buf);
    free(w.start);
    *n_ids = n;
    if (n > cap)
        return kiln_fail(KILN_ERR_RANGE, "wordpiece: the text needs %zu ids, room for %zu", n, cap);
    return KILN_OK;
}

size_t tok_wpm_piece(const tok_wpm *t, int32_t id, bool special, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    const char *s = t->pool + t->off[id];
    size_t n = t->len[id];
    if (t->type[id] == TOK_TYPE_CONTROL && !special) return 0;
    size_t skip = 0;
    const char *prefix = "";
    if (n >= PHANTOM_LEN && !memcmp(s, PHANTOM, PHANTOM_LEN)) {
        skip = PHANTOM_LEN;
        prefix = " ";
    }
    size_t np = strlen(prefix), need = np + n - skip;
    size_t a = np < cap ? np : cap;
    memcpy(buf, prefix, a);
    if (cap > a) memcpy(buf + a, s + skip, need - np < cap - a ? need - np : cap - a);
    return need;
}

/* tok_spm.c - SentencePiece-style tokenizer (see tok_spm.h for the rules).
 *
 * Invariants: `text[i]`/`len[i]` point into the tokenizer's own arena;
 * the hash table maps each token text to the highest id carrying it and has
 * at least twice as many slots as tokens (so probing always ends);
 * byte_tok[b] is the id of "<0xBB>" or -1. Encoding keeps its symbols in a
 * linked list over one scratch allocation; a symbol with n == 0 has been
 * merged into its left neighbour, and a queued bigram whose symbols changed
 * size since it was queued is stale and skipped.
 *
 * max_bytes bounds the input bytes one emitted token stands for: a piece
 * covers its own text's bytes of the normalized text, which is the input
 * with spaces widened to "\xe2\x96\x81" (never narrower), an <unk> one
 * character (<= 4 bytes), a byte token one byte. Without <unk>, a character
 * that is no piece and has a byte lacking its byte token is dropped; drop[]
 * weighs each byte so that a dropped character's bytes never weigh less
 * than its length (an ASCII byte that is not a piece and has no byte token
 * weighs 1; when any byte >= 0x80 lacks its byte token, every such byte
 * weighs 1, since a multi-byte character is made of them only).
 *
 * When no piece holds a "\xe2\x96\x81" right after a different character
 * (chunked: SentencePiece vocabularies trained with split_by_whitespace),
 * no merge crosses the start of a "\xe2\x96\x81" run, and merges on either
 * side of it never meet; so the text is merged in chunks cut there (about
 * SPM_CHUNK bytes each) with the same result, and encoding can stop after
 * the chunk that passed a limit.
 */
#include "text/tok_spm.h"
#include "base/status.h"

#include <stdlib.h>
#include <string.h>

struct tok_spm {
    int32_t n_vocab;
    char *arena; /* every token's bytes */
    const char **text;
    uint32_t *len;
    float *score;
    uint8_t *type;
    int32_t *slots; /* open addressing; -1 = empty */
    uint64_t slot_mask;
    size_t max_len;    /* longest token text */
    size_t max_bytes;  /* tok_spm_max_token_bytes */
    uint8_t drop[256]; /* tok_spm_drop_bytes */
    bool any_drop;
    bool chunked; /* no piece has "\xe2\x96\x81" right after another character */
    int32_t byte_tok[256];
    int32_t bos, eos, eot, unk;
    bool add_bos, add_eos, add_space_prefix;
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* The id of the token whose text is s[0..n), or -1. */
static int32_t lookup(const tok_spm *t, const char *s, size_t n) {
    for (uint64_t i = hash_bytes(s, n) & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        int32_t id = t->slots[i];
        if (id < 0) return -1;
        if (t->len[id] == n && memcmp(t->text[id], s, n) == 0) return id;
    }
}

/* Text that encoding may turn into this token: not control, unknown, byte or unused. */
static int32_t lookup_piece(const tok_spm *t, const char *s, size_t n) {
    int32_t id = lookup(t, s, n);
    if (id < 0) return -1;
    uint8_t ty = t->type[id];
    return ty == TOK_TYPE_NORMAL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNDEFINED ? id
                                                                                            : -1;
}

static void insert(tok_spm *t, int32_t id) {
    uint64_t i = hash_bytes(t->text[id], t->len[id]) & t->slot_mask;
    for (;; i = (i + 1) & t->slot_mask) {
        int32_t o = t->slots[i];
        if (o < 0 || (t->len[o] == t->len[id] && !memcmp(t->text[o], t->text[id], t->len[id])))
            break;
    }
    t->slots[i] = id; /* a later duplicate replaces an earlier one */
}

/* Copies the token texts into one arena and fills the per-token arrays. */
static kiln_status copy_vocab(tok_spm *t, const struct tok_spm_vocab *v) {
    size_t n = (size_t)v->n_vocab, bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += v->len[i];
    uint64_t n_slots = 1;
    while (n_slots < 2 * (uint64_t)n) n_slots <<= 1;
    t->arena = malloc(bytes ? bytes : 1);
    t->text = malloc(n * sizeof *t->text);
    t->len = malloc(n * sizeof *t->len);
    t->score = malloc(n * sizeof *t->score);
    t->type = malloc(n);
    t->slots = malloc(n_slots * sizeof *t->slots);
    if (!t->arena || !t->text || !t->len || !t->score || !t->type || !t->slots)
        return kiln_fail(KILN_ERR_NOMEM, "tokenizer: no memory for a %d-token vocabulary",
                         v->n_vocab);
    memset(t->slots, 0xff, n_slots * sizeof *t->slots);
    t->slot_mask = n_slots - 1;
    char *at = t->arena;
    for (size_t i = 0; i < n; i++) {
        if (v->len[i]) memcpy(at, v->text[i], v->len[i]);
        t->text[i] = at;
        t->len[i] = v->len[i];
        at += v->len[i];
        if (v->len[i] > t->max_len) t->max_len = v->len[i];
        t->score[i] = v->score ? v->score[i] : 0.0f;
        uint8_t ty = v->type ? v->type[i] : TOK_TYPE_NORMAL;
        t->type[i] = ty <= TOK_TYPE_BYTE ? ty : TOK_TYPE_UNDEFINED;
        insert(t, (int32_t)i);
    }
    return KILN_OK;
}

static void find_byte_tokens(tok_spm *t) {
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        int32_t id = lookup(t, name, sizeof name);
        t->byte_tok[b] = id >= 0 && t->type[id] == TOK_TYPE_BYTE ? id : -1;
    }
}

/* Bytes of the UTF-8 character starting with lead byte c (1 for invalid leads). */
static uint32_t utf8_len(unsigned char c) {
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

static const char WS[3] = {'\xe2', '\x96', '\x81'}; /* U+2581, the space of the pieces */

/* Whether encoding may merge in chunks (see the invariants): no piece
 * encoding can produce has a "\xe2\x96\x81" character right after another. */
static bool find_chunked(const tok_spm *t) {
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        if (ty != TOK_TYPE_NORMAL && ty != TOK_TYPE_USER_DEFINED && ty != TOK_TYPE_UNDEFINED)
            continue;
        const char *s = t->text[id];
        bool prev_ws = true;
        for (size_t off = 0, n = t->len[id]; off < n;) {
            uint32_t cl = utf8_len((unsigned char)s[off]);
            if (cl > n - off) cl = (uint32_t)(n - off);
            bool ws = cl == 3 && !memcmp(s + off, WS, 3);
            if (ws && !prev_ws) return false;
            prev_ws = ws;
            off += cl;
        }
    }
    return true;
}

/* drop[] (see the invariants): which bytes may belong to a dropped character. */
static void find_drops(tok_spm *t) {
    static const char ws[3] = {'\xe2', '\x96', '\x81'};
    bool high = false;
    if (t->unk >= 0) return; /* unknown characters become <unk>: nothing is dropped */
    for (int b = 0x80; b < 256; b++) high = high || t->byte_tok[b] < 0;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        /* a space is the symbol "\xe2\x96\x81": a piece, else those three bytes' tokens */
        bool piece = b == ' ' ? lookup_piece(t, ws, 3) >= 0 : lookup_piece(t, &c, 1) >= 0;
        bool bytes =
            b == ' ' ? t->byte_tok[0xe2] >= 0 && t->byte_tok[0x96] >= 0 && t->byte_tok[0x81] >= 0
                     : t->byte_tok[b] >= 0;
        t->drop[b] = b >= 0x80 ? high : !bytes && !piece;
        t->any_drop = t->any_drop || t->drop[b];
    }
}

static int32_t valid_id(int32_t id, int32_t n_vocab) {
    return id >= 0 && id < n_vocab ? id : -1;
}

tok_spm *tok_spm_create(const struct tok_spm_vocab *v, kiln_status *st) {
    kiln_status s = KILN_OK;
    tok_spm *t = NULL;
    if (v->n_vocab <= 0 || !v->text || !v->len) {
        s = kiln_fail(KILN_ERR_INVALID_ARG, "tokenizer: empty vocabulary (%d tokens)", v->n_vocab);
        goto fail;
    }
    if (!(t = calloc(1, sizeof *t))) {
        s = kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    t->n_vocab = v->n_vocab;
    if ((s = copy_vocab(t, v))) goto fail;
    find_byte_tokens(t);
    t->bos = valid_id(v->bos, v->n_vocab);
    t->eos = valid_id(v->eos, v->n_vocab);
    t->eot = valid_id(v->eot, v->n_vocab);
    t->unk = valid_id(v->unk, v->n_vocab);
    t->max_bytes = t->max_len > 4 ? t->max_len : 4;
    find_drops(t);
    t->chunked = find_chunked(t);
    t->add_bos = v->add_bos;
    t->add_eos = v->add_eos;
    t->add_space_prefix = v->add_space_prefix;
    if (st) *st = KILN_OK;
    return t;
fail:
    tok_spm_free(t);
    if (st) *st = s;
    return NULL;
}

void tok_spm_free(tok_spm *t) {
    if (!t) return;
    free(t->text);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->slots);
    free(t->arena);
    free(t);
}

int32_t tok_spm_n_vocab(const tok_spm *t) {
    return t->n_vocab;
}
int32_t tok_spm_bos(const tok_spm *t) {
    return t->bos;
}
int32_t tok_spm_eos(const tok_spm *t) {
    return t->eos;
}

bool tok_spm_is_eog(const tok_spm *t, int32_t id) {
    return id >= 0 && (id == t->eos || id == t->eot);
}

/* ---- encoding ---- */

struct sym {
    int32_t prev, next;
    uint32_t off, n; /* bytes of the normalized text; n == 0: merged away */
};

struct bigram {
    float score;
    int32_t left, right;
    uint32_t size; /* bytes of the merged text when queued */
};

struct encoder {
    const tok_spm *t;
    const char *norm;
    struct sym *sym;
    struct bigram *heap;
    size_t n_heap;
    int32_t *ids;
    size_t cap, n_ids;
};

/* Heap order: higher score first, then the leftmost pair. */
static bool before(const struct bigram *a, const struct bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(struct encoder *e, struct bigram b) {
    size_t i = e->n_heap++;
    while (i > 0 && before(&b, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = b;
}

static struct bigram heap_pop(struct encoder *e) {
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

static void try_bigram(struct encoder *e, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const struct sym *l = &e->sym[left], *r = &e->sym[right];
    uint32_t size = l->n + r->n;
    int32_t id = lookup_piece(e->t, e->norm + l->off, size);
    if (id < 0) return;
    heap_push(e, (struct bigram){e->t->score[id], left, right, size});
}

static void emit(struct encoder *e, int32_t id) {
    if (e->n_ids < e->cap) e->ids[e->n_ids] = id;
    e->n_ids++;
}

/* A final symbol: its token, else its bytes' <0xNN> tokens, else unknown. */
static void emit_symbol(struct encoder *e, const struct sym *s) {
    const char *p = e->norm + s->off;
    int32_t id = lookup_piece(e->t, p, s->n);
    if (id >= 0) {
        emit(e, id);
        return;
    }
    for (uint32_t i = 0; i < s->n; i++)
        if (e->t->byte_tok[(unsigned char)p[i]] < 0) {
            if (e->t->unk >= 0) emit(e, e->t->unk); /* no unknown token: drop the character */
            return;
        }
    for (uint32_t i = 0; i < s->n; i++) emit(e, e->t->byte_tok[(unsigned char)p[i]]);
}

/* Splits norm[start..n) into characters and merges them by score. */
static void merge_symbols(struct encoder *e, size_t start, size_t n) {
    int32_t n_sym = 0;
    for (size_t off = start; off < n; n_sym++) {
        uint32_t cl = utf8_len((unsigned char)e->norm[off]);
        if (cl > n - off) cl = (uint32_t)(n - off);
        e->sym[n_sym] = (struct sym){n_sym - 1, n_sym + 1, (uint32_t)off, cl};
        off += cl;
    }
    if (n_sym) e->sym[n_sym - 1].next = -1;
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
    for (int32_t i = n_sym ? 0 : -1; i >= 0; i = e->sym[i].next) emit_symbol(e, &e->sym[i]);
}

/* Bytes of normalized text merged at a time when the vocabulary allows: small
 * enough for an early stop soon after a limit, large enough to cost nothing. */
#define SPM_CHUNK 1024

/* The end of the chunk of norm[0..n) that starts at start: the first start
 * of a "\xe2\x96\x81" run at least SPM_CHUNK bytes on (n when there is
 * none, or when the vocabulary does not allow chunks). */
static size_t chunk_end(const tok_spm *t, const char *norm, size_t start, size_t n) {
    bool prev_ws = true;
    for (size_t off = start; t->chunked && off < n;) {
        uint32_t cl = utf8_len((unsigned char)norm[off]);
        if (cl > n - off) cl = (uint32_t)(n - off);
        bool ws = cl == 3 && !memcmp(norm + off, WS, 3);
        if (ws && !prev_ws && off - start >= SPM_CHUNK) return off;
        prev_ws = ws;
        off += cl;
    }
    return n;
}

/* Merges norm[0..n) chunk by chunk, stopping after the chunk that took the
 * count past max. */
static void merge_text(struct encoder *e, size_t n, size_t max) {
    for (size_t start = 0, end; start < n && e->n_ids <= max; start = end) {
        end = chunk_end(e->t, e->norm, start, n);
        merge_symbols(e, start, end);
    }
}

/* Writes the normalized text (optional "▁" prefix, spaces as "▁"); returns its length. */
static size_t normalize(const tok_spm *t, const char *text, size_t len, char *out) {
    static const char ws[3] = {'\xe2', '\x96', '\x81'};
    size_t n = 0;
    if (t->add_space_prefix) {
        memcpy(out, ws, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(out + n, ws, 3);
            n += 3;
        } else {
            out[n++] = text[i];
        }
    }
    return n;
}

kiln_status tok_spm_encode(const tok_spm *t, const char *text, size_t len, bool add_special,
                           int32_t *ids, size_t cap, size_t *n_ids) {
    return tok_spm_encode_max(t, text, len, add_special, SIZE_MAX, ids, cap, n_ids);
}

kiln_status tok_spm_encode_max(const tok_spm *t, const char *text, size_t len, bool add_special,
                               size_t max, int32_t *ids, size_t cap, size_t *n_ids) {
    struct encoder e = {.t = t, .ids = ids, .cap = cap};
    *n_ids = 0;
    if (add_special && t->add_bos && t->bos >= 0) emit(&e, t->bos);
    if (len > 0) {
        if (len > (SIZE_MAX / 16 - 8) / 3)
            return kiln_fail(KILN_ERR_RANGE, "tokenize: text of %zu bytes is too long", len);
        char *norm = malloc(3 * len + 3); /* every byte a space, plus the prefix */
        if (!norm)
            return kiln_fail(KILN_ERR_NOMEM, "tokenize: no memory for %zu bytes of text", len);
        size_t n = normalize(t, text, len, norm), chunk = 0;
        for (size_t start = 0, end; start < n; start = end) { /* symbols <= bytes per chunk */
            end = chunk_end(t, norm, start, n);
            if (end - start > chunk) chunk = end - start;
        }
        size_t sym_bytes = chunk * sizeof(struct sym);
        void *scratch = malloc(sym_bytes + (3 * chunk + 1) * sizeof(struct bigram));
        if (!scratch) {
            free(norm);
            return kiln_fail(KILN_ERR_NOMEM, "tokenize: no memory for %zu bytes of text", len);
        }
        e.sym = scratch;
        e.heap = (struct bigram *)((char *)scratch + sym_bytes);
        e.norm = norm;
        merge_text(&e, n, max);
        free(scratch);
        free(norm);
    }
    if (e.n_ids > max) {
        *n_ids = e.n_ids;
        return kiln_fail(KILN_ERR_RANGE, "tokenize: the text needs more than %zu tokens", max);
    }
    if (add_special && t->add_eos && t->eos >= 0) emit(&e, t->eos);
    *n_ids = e.n_ids;
    if (e.n_ids > cap)
        return kiln_fail(KILN_ERR_RANGE, "tokenize: the text needs %zu tokens, room for %zu",
                         e.n_ids, cap);
    return KILN_OK;
}

/* ---- decoding ---- */

static size_t put(char *buf, size_t cap, size_t at, const char *s, size_t n) {
    if (at < cap) memcpy(buf + at, s, n < cap - at ? n : cap - at);
    return at + n;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

size_t tok_spm_piece(const tok_spm *t, int32_t id, bool special, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    const char *s = t->text[id];
    size_t n = t->len[id], out = 0;
    switch (t->type[id]) {
    case TOK_TYPE_BYTE:
        if (n == 6 && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            char b = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            return put(buf, cap, 0, &b, 1);
        }
        return put(buf, cap, 0, s, n);
    case TOK_TYPE_CONTROL:
        return special ? put(buf, cap, 0, s, n) : 0;
    case TOK_TYPE_UNKNOWN:
        return put(buf, cap, 0, "\xe2\x96\x85", 3); /* U+2585 */
    case TOK_TYPE_UNUSED:
        return 0;
    default:
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                out = put(buf, cap, out, " ", 1);
                i += 3;
            } else {
                out = put(buf, cap, out, s + i, 1);
                i++;
            }
        }
        return out;
    }
}

size_t tok_spm_max_piece(const tok_spm *t) {
    return t->max_len > 3 ? t->max_len : 3;
}

size_t tok_spm_max_token_bytes(const tok_spm *t) {
    return t->max_bytes;
}

const uint8_t *tok_spm_drop_bytes(const tok_spm *t) {
    return t->any_drop ? t->drop : NULL;
}

/* ---- streaming UTF-8 ---- */

/* Length of the sequence a lead byte starts (0: not a lead byte), and the
 * allowed range of its first continuation byte (excludes overlongs,
 * surrogates and code points above U+10FFFF). */
static int seq_len(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xbf;
    if (c < 0x80) return 1;
    if (c < 0xc2) return 0;
    if (c < 0xe0) return 2;
    if (c < 0xf0) {
        if (c == 0xe0) *lo = 0xa0;
        if (c == 0xed) *hi = 0x9f;
        return 3;
    }
    if (c < 0xf5) {
        if (c == 0xf0) *lo = 0x90;
        if (c == 0xf4) *hi = 0x8f;
        return 4;
    }
    return 0;
}

static size_t put_replacement(char *out) {
    memcpy(out, "\xef\xbf\xbd", 3);
    return 3;
}

size_t tok_utf8_feed(tok_utf8_stream *s, const char *in, size_t len, char *out) {
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i], lo, hi;
        if (s->n_pending == 0) {
            int need = seq_len(c, &lo, &hi);
            if (need == 1) {
                out[w++] = (char)c;
            } else if (need == 0) {
                w += put_replacement(out + w);
            } else {
                s->pending[s->n_pending++] = c;
            }
            continue;
        }
        int need = seq_len(s->pending[0], &lo, &hi);
        if (s->n_pending > 1) lo = 0x80, hi = 0xbf;
        if (c < lo || c > hi) {
            /* the held sequence is broken: replace it and reread c as a lead */
            w += put_replacement(out + w);
            s->n_pending = 0;
            i--;
            continue;
        }
        s->pending[s->n_pending++] = c;
        if (s->n_pending == need) {
            memcpy(out + w, s->pending, (size_t)need);
            w += (size_t)need;
            s->n_pending = 0;
        }
    }
    return w;
}

size_t tok_utf8_flush(tok_utf8_stream *s, char *out) {
    if (s->n_pending == 0) return 0;
    s->n_pending = 0;
    return put_replacement(out);
}

/* test_tokenizer.c - the byte-level BPE tokenizer (text/tok_bpe, text/pretok)
 * against llama.cpp's outputs:
 *   - every models/vocab/ggml-vocab-*.gguf whose tokenizer.ggml.model is
 *     "gpt2" and that has an .inp/.out pair (llama.cpp's own tokenizer tests,
 *     add_special=false, parse_special=false) reproduces .out exactly;
 *   - reference/tokenizer.json: for every BPE entry and every file of it,
 *     ids (add_special), ids_no_special, pieces_hex and detok_no_special;
 *   - streamed detokenization gives back the input and never broken UTF-8;
 *   - edge cases: invalid UTF-8 (defined: each bad byte reads as U+FFFD),
 *     the empty string, a very long word, long whitespace runs, concurrent
 *     use from two threads, and a tiny hand-made vocabulary (no data needed).
 * Data-dependent tests skip, saying why, when KILN_TEST_DATA is absent. The
 * JSON reader is the small one from test_generate.c.
 */
#include "testutil.h"

#include "kiln.h"
#include "model/gguf.h"
#include "model/vocab.h"
#include "text/pretok.h"
#include "text/tok_bpe.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a minimal JSON reader ---------------------------------------------------------------- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv jv;
struct jv {
    enum jtype t;
    double num; /* J_NUM, J_BOOL */
    char *str;  /* J_STR: bytes (may contain NUL), len below */
    size_t len; /* J_STR bytes; J_ARR/J_OBJ items */
    jv *items;
    char **keys; /* J_OBJ */
};

struct jparser {
    const char *s, *end;
    bool bad;
};

static void jskip(struct jparser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\n' || *p->s == '\r' || *p->s == '\t'))
        p->s++;
}

static void jput_utf8(char *out, size_t *n, unsigned cp) {
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xc0 | (cp >> 6));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xe0 | (cp >> 12));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*n)++] = (char)(0xf0 | (cp >> 18));
        out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    }
}

static unsigned jhex4(struct jparser *p) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s < p->end ? *p->s++ : 0;
        v = v * 16 + (unsigned)(c >= '0' && c <= '9'   ? c - '0'
                                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                       : (p->bad = true, 0));
    }
    return v;
}

static char *jstring(struct jparser *p, size_t *len) {
    const char *q = ++p->s; /* after the quote */
    while (q < p->end && *q != '"') q += (*q == '\\') ? 2 : 1;
    char *out = malloc((size_t)(q - p->s) + 1);
    size_t n = 0;
    while (p->s < p->end && *p->s != '"') {
        char c = *p->s++;
        if (c != '\\') {
            out[n++] = c;
            continue;
        }
        c = *p->s++;
        switch (c) {
        case 'n':
            out[n++] = '\n';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'u': {
            unsigned cp = jhex4(p);
            if (cp >= 0xd800 && cp < 0xdc00 && p->s + 1 < p->end && p->s[0] == '\\' &&
                p->s[1] == 'u') {
                p->s += 2;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (jhex4(p) - 0xdc00);
            }
            jput_utf8(out, &n, cp);
            break;
        }
        default:
            out[n++] = c;
        }
    }
    p->s++;
    out[n] = 0;
    *len = n;
    return out;
}

static void jparse(struct jparser *p, jv *v);

static void jlist(struct jparser *p, jv *v, bool obj) {
    size_t cap = 0;
    p->s++;
    for (;;) {
        jskip(p);
        if (p->s >= p->end) {
            p->bad = true;
            return;
        }
        if (*p->s == (obj ? '}' : ']')) {
            p->s++;
            return;
        }
        if (*p->s == ',') p->s++, jskip(p);
        if (v->len == cap) {
            cap = cap ? cap * 2 : 8;
            v->items = realloc(v->items, cap * sizeof *v->items);
            if (obj) v->keys = realloc(v->keys, cap * sizeof *v->keys);
        }
        if (obj) {
            size_t kl;
            v->keys[v->len] = jstring(p, &kl);
            jskip(p);
            p->s++; /* ':' */
        }
        jparse(p, &v->items[v->len++]);
    }
}

static void jparse(struct jparser *p, jv *v) {
    memset(v, 0, sizeof *v);
    jskip(p);
    if (p->s >= p->end) {
        p->bad = true;
        return;
    }
    char c = *p->s;
    if (c == '{')
        v->t = J_OBJ, jlist(p, v, true);
    else if (c == '[')
        v->t = J_ARR, jlist(p, v, false);
    else if (c == '"')
        v->t = J_STR, v->str = jstring(p, &v->len);
    else if (!strncmp(p->s, "true", 4))
        v->t = J_BOOL, v->num = 1, p->s += 4;
    else if (!strncmp(p->s, "false", 5))
        v->t = J_BOOL, p->s += 5;
    else if (!strncmp(p->s, "null", 4))
        v->t = J_NULL, p->s += 4;
    else {
        char *e;
        v->t = J_NUM;
        v->num = strtod(p->s, &e);
        if (e == p->s)
            p->bad = true, p->s++;
        else
            p->s = e;
    }
}

static void jfree(jv *v) {
    for (size_t i = 0; i < (v->t == J_ARR || v->t == J_OBJ ? v->len : 0); i++) {
        jfree(&v->items[i]);
        if (v->t == J_OBJ) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
}

static const jv *jget(const jv *o, const char *key) {
    if (!o || o->t != J_OBJ) return NULL;
    for (size_t i = 0; i < o->len; i++)
        if (!strcmp(o->keys[i], key)) return &o->items[i];
    return NULL;
}

static const jv *jat(const jv *a, size_t i) {
    return a && a->t == J_ARR && i < a->len ? &a->items[i] : NULL;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

/* Parses the JSON file at data-relative path rel into *v; false (test skipped) when absent. */
static bool load_json(const char *rel, jv *v) {
    char path[1024];
    size_t n;
    if (!test_data_path(rel, path, sizeof path)) return false;
    char *text = read_file(path, &n);
    assert_non_null(text);
    struct jparser p = {text, text + n, false};
    jparse(&p, v);
    free(text);
    assert_false(p.bad);
    return true;
}

/* ids of a JSON array of numbers into out (cap entries); returns the count. */
static size_t jids(const jv *a, int32_t *out, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; a && a->t == J_ARR && i < a->len && n < cap; i++)
        out[n++] = (int32_t)a->items[i].num;
    return n;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static bool ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    print_message("    %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++) print_message(" %d", ids[i]);
    print_message("%s\n", n > 40 ? " ..." : "");
}

static int hexnib(char c) {
    return c <= '9' ? c - '0' : (c | 32) - 'a' + 10;
}

/* The BPE tokenizer of a data file, or NULL when the file is absent. */
static tok_bpe *load_bpe(const char *rel) {
    char path[1024];
    if (!test_data_path(rel, path, sizeof path)) return NULL;
    gguf_file *f = gguf_open(path, NULL);
    assert_non_null(f);
    kiln_status st;
    tok_bpe *t = vocab_load_bpe(f, &st);
    if (!t) print_message("  %s: %s\n", rel, kiln_last_error());
    assert_non_null(t);
    gguf_close(f);
    return t;
}

/* Streams the pieces of ids through the incremental UTF-8 decoder; checks
 * every chunk is valid UTF-8 and returns the concatenation (caller frees). */
static char *stream_text(const tok_bpe *t, const int32_t *ids, size_t n, size_t *len) {
    size_t cap = 64;
    for (size_t i = 0; i < n; i++) cap += TOK_UTF8_OUT_MAX(tok_bpe_max_piece(t));
    char *out = malloc(cap), *piece = malloc(tok_bpe_max_piece(t));
    char *chunk = malloc(TOK_UTF8_OUT_MAX(tok_bpe_max_piece(t)));
    tok_utf8_stream u = {0};
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        size_t np = tok_bpe_piece(t, ids[i], false, piece, tok_bpe_max_piece(t));
        size_t c = tok_utf8_feed(&u, piece, np, chunk);
        /* what comes out is whole characters: feeding it again holds nothing back */
        tok_utf8_stream check = {0};
        char *tmp = malloc(TOK_UTF8_OUT_MAX(c));
        assert_int_equal(tok_utf8_feed(&check, chunk, c, tmp), c);
        assert_int_equal(check.n_pending, 0);
        free(tmp);
        memcpy(out + w, chunk, c);
        w += c;
    }
    w += tok_utf8_flush(&u, out + w);
    free(piece);
    free(chunk);
    *len = w;
    return out;
}

/* ---- (a) llama.cpp's vocab tests ------------------------------------------------------------ */

/* vocab/<name>.inp/.out; returns mismatching cases, -1 when absent or not BPE. */
static int check_inp_out(const char *vocab) {
    char path[1024], rel[256];
    size_t n_inp, n_out;
    snprintf(rel, sizeof rel, "models/vocab/%s.inp", vocab);
    if (!test_data_path(rel, path, sizeof path)) return -1;
    snprintf(rel, sizeof rel, "models/vocab/%s", vocab);
    gguf_file *f = gguf_open(test_data_path(rel, path, sizeof path), NULL);
    assert_non_null(f);
    if (!vocab_is_bpe(f)) {
        gguf_close(f);
        return -1;
    }
    tok_bpe *t = vocab_load_bpe(f, NULL);
    if (!t) print_message("  %s: %s\n", vocab, kiln_last_error());
    assert_non_null(t);
    gguf_close(f);
    snprintf(rel, sizeof rel, "models/vocab/%s.inp", vocab);
    char *inp = read_file(test_data_path(rel, path, sizeof path), &n_inp);
    snprintf(rel, sizeof rel, "models/vocab/%s.out", vocab);
    char *out = read_file(test_data_path(rel, path, sizeof path), &n_out);
    assert_non_null(inp);
    assert_non_null(out);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    int fails = 0, cases = 0;
    char *s = inp, *line = out;
    for (char *e; (e = strstr(s, sep)) && line && *line; s = e + strlen(sep), cases++) {
        int32_t want[2048], got[2048];
        size_t nw = 0, ng;
        char *eol = strchr(line, '\n'), *q = line;
        if (eol) *eol = 0;
        for (char *end; nw < 2048; q = end) {
            long v = strtol(q, &end, 10);
            if (end == q) break;
            want[nw++] = (int32_t)v;
        }
        line = eol ? eol + 1 : NULL;
        assert_int_equal(tok_bpe_encode(t, s, (size_t)(e - s), false, false, got, 2048, &ng),
                         KILN_OK);
        if (!ids_equal(got, ng, want, nw)) {
            print_message("  %s case %d differs: '%.*s'\n", vocab, cases, (int)(e - s), s);
            print_ids("want", want, nw);
            print_ids("got ", got, ng);
            fails++;
        }
    }
    print_message("  %-32s pre %-14s %d/%d cases match\n", vocab, tok_bpe_pre_name(t),
                  cases - fails, cases);
    tok_bpe_free(t);
    free(inp);
    free(out);
    assert_true(cases >= 40);
    return fails;
}

static void test_vocab_files(void **state) {
    (void)state;
    static const char *const vocabs[] = {
        "ggml-vocab-deepseek-coder.gguf",
        "ggml-vocab-deepseek-llm.gguf",
        "ggml-vocab-falcon.gguf",
        "ggml-vocab-gpt-2.gguf",
        "ggml-vocab-mpt.gguf",
        "ggml-vocab-refact.gguf",
        "ggml-vocab-starcoder.gguf",
        "ggml-vocab-gpt-neox.gguf",
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-phi-3.gguf",
        "ggml-vocab-bert-bge.gguf",
        "ggml-vocab-baichuan.gguf",
    };
    int checked = 0, fails = 0;
    for (size_t i = 0; i < sizeof vocabs / sizeof *vocabs; i++) {
        int r = check_inp_out(vocabs[i]);
        if (r < 0) continue;
        checked++;
        fails += r;
    }
    if (!checked) {
        print_message("SKIP: models/vocab not found (set KILN_TEST_DATA)\n");
        skip();
    }
    assert_int_equal(checked, 7);
    assert_int_equal(fails, 0);
}

/* ---- (b) reference/tokenizer.json ------------------------------------------------------------ */

static int check_result(const tok_bpe *t, const jv *prompt, const jv *res) {
    const jv *text = jget(prompt, "text");
    const char *pid = jget(prompt, "id")->str;
    int32_t want[1024], got[1024], want_ns[1024];
    size_t n_got, nw = jids(jget(res, "ids"), want, 1024);
    size_t nw_ns = jids(jget(res, "ids_no_special"), want_ns, 1024);
    int fails = 0;
    assert_int_equal(tok_bpe_encode(t, text->str, text->len, true, false, got, 1024, &n_got),
                     KILN_OK);
    if (!ids_equal(got, n_got, want, nw)) {
        print_message("  %s: ids differ\n", pid);
        print_ids("want", want, nw);
        print_ids("got ", got, n_got);
        fails++;
    }
    const jv *hex = jget(res, "pieces_hex");
    for (size_t i = 0; i < n_got && i < nw && hex && i < hex->len; i++) {
        char piece[512], exp[512];
        size_t np = tok_bpe_piece(t, got[i], true, piece, sizeof piece), ne = 0;
        const jv *h = jat(hex, i);
        for (size_t k = 0; k + 1 < h->len && ne < sizeof exp; k += 2)
            exp[ne++] = (char)(hexnib(h->str[k]) * 16 + hexnib(h->str[k + 1]));
        if (np != ne || memcmp(piece, exp, ne)) {
            print_message("  %s: piece of id %d is '%.*s', want '%.*s'\n", pid, got[i], (int)np,
                          piece, (int)ne, exp);
            fails++;
        }
    }
    assert_int_equal(tok_bpe_encode(t, text->str, text->len, false, false, got, 1024, &n_got),
                     KILN_OK);
    if (!ids_equal(got, n_got, want_ns, nw_ns)) {
        print_message("  %s: ids_no_special differ\n", pid);
        print_ids("want", want_ns, nw_ns);
        print_ids("got ", got, n_got);
        fails++;
    }
    /* detokenization: llama_detokenize's text, and the streamed pieces */
    const jv *detok = jget(res, "detok_no_special");
    char buf[4096];
    size_t nd;
    assert_int_equal(tok_bpe_detokenize(t, got, n_got, false, buf, sizeof buf, &nd), KILN_OK);
    if (detok && (nd != detok->len || memcmp(buf, detok->str, nd))) {
        print_message("  %s: detokenized '%.*s', want '%.*s'\n", pid, (int)nd, buf, (int)detok->len,
                      detok->str);
        fails++;
    }
    const jv *rt = jget(res, "detok_no_special_roundtrip");
    size_t ns;
    char *streamed = stream_text(t, got, n_got, &ns);
    if (rt && rt->num && (ns != text->len || memcmp(streamed, text->str, ns))) {
        print_message("  %s: streamed text '%.*s' is not the input\n", pid, (int)ns, streamed);
        fails++;
    }
    free(streamed);
    return fails;
}

static void test_reference(void **state) {
    (void)state;
    jv root;
    if (!load_json("reference/tokenizer.json", &root)) {
        print_message("SKIP: reference/tokenizer.json not found (set KILN_TEST_DATA)\n");
        skip();
    }
    const jv *prompts = jget(&root, "prompts"), *toks = jget(&root, "tokenizers");
    int fails = 0, checked = 0, files = 0;
    for (size_t e = 0; e < toks->len; e++) {
        const jv *entry = &toks->items[e];
        if (strcmp(jget(entry, "vocab_type")->str, "bpe")) continue;
        const jv *fl = jget(entry, "files");
        for (size_t fi = 0; fi < fl->len; fi++) {
            tok_bpe *t = load_bpe(fl->items[fi].str);
            if (!t) continue;
            files++;
            assert_int_equal(tok_bpe_n_vocab(t), (int32_t)jget(entry, "n_vocab")->num);
            assert_int_equal(tok_bpe_bos(t), (int32_t)jget(entry, "bos_id")->num);
            assert_int_equal(tok_bpe_eos(t), (int32_t)jget(entry, "eos_id")->num);
            assert_int_equal(tok_bpe_add_bos(t), jget(entry, "add_bos")->num != 0);
            int before = fails;
            const jv *results = jget(entry, "results");
            for (size_t r = 0; r < results->len; r++) {
                fails += check_result(t, jat(prompts, r), &results->items[r]);
                checked++;
            }
            print_message("  %-40s %s\n", fl->items[fi].str,
                          fails == before ? "all prompts match" : "MISMATCH");
            tok_bpe_free(t);
        }
    }
    print_message("  %d BPE files, %d prompt results checked\n", files, checked);
    jfree(&root);
    assert_int_equal(fails, 0);
    assert_true(files >= 9);
}

/* ---- (c) edge cases ----------------------------------------------------------------------- */

static size_t encode(const tok_bpe *t, const char *s, size_t len, int32_t **ids) {
    size_t cap = len + 2, n;
    *ids = malloc(cap * sizeof **ids);
    assert_int_equal(tok_bpe_encode(t, s, len, false, false, *ids, cap, &n), KILN_OK);
    return n;
}

/* exact_bytes: invalid bytes decode back to themselves (GPT-2's vocabulary).
 * Not so for Falcon and StarCoder, which lack tokens for bytes that never
 * occur in UTF-8 (they are dropped, as llama.cpp drops untokenizable bytes),
 * nor for DeepSeek, whose
 * user-defined tokens "\xc3\x80" ... share the text of byte tokens. */
static void check_edges(const tok_bpe *t, const char *name, bool exact_bytes) {
    int32_t *a, *b;
    /* empty text: no tokens; with add_special only what the vocabulary adds */
    int32_t one[4];
    size_t n;
    assert_int_equal(tok_bpe_encode(t, "", 0, false, false, one, 4, &n), KILN_OK);
    assert_int_equal(n, 0);
    assert_int_equal(tok_bpe_encode(t, "", 0, true, false, one, 4, &n), KILN_OK);
    assert_int_equal(n, tok_bpe_add_bos(t) ? 1u : 0u);
    /* invalid UTF-8: each bad byte stays itself (one token at most), so the
     * text decodes back exactly; the valid parts tokenize as usual */
    static const char bad[] = "ab\xff"
                              "c\xe6\x97"
                              "d\xc0\x80\xed\xa0\x80\xf4\x90\x80\x80 \x80";
    size_t na = encode(t, bad, sizeof bad - 1, &a), nb;
    assert_true(na <= sizeof bad - 1);
    char back[64];
    assert_int_equal(tok_bpe_detokenize(t, a, na, false, back, sizeof back, &nb), KILN_OK);
    if (exact_bytes) {
        assert_int_equal(nb, sizeof bad - 1);
        assert_memory_equal(back, bad, nb);
    }
    nb = encode(t, "ab", 2, &b);
    assert_true(na > nb && ids_equal(a, nb, b, nb));
    free(a);
    free(b);
    /* a very long word and a long run of spaces: linear-time, lossless */
    size_t big = 200000;
    char *s = malloc(big + 1);
    for (size_t i = 0; i < big; i++) s[i] = "Pneumonoultramicroscopic"[i % 24];
    na = encode(t, s, big, &a);
    size_t nd;
    char *d = malloc(big + 64);
    assert_int_equal(tok_bpe_detokenize(t, a, na, false, d, big + 64, &nd), KILN_OK);
    assert_int_equal(nd, big);
    assert_memory_equal(d, s, big);
    free(a);
    memset(s, ' ', big);
    s[big - 1] = 'x';
    na = encode(t, s, big, &a);
    assert_true(na > 0);
    free(a);
    free(d);
    free(s);
    print_message("  %s: edge cases ok\n", name);
}

static void test_edge_cases(void **state) {
    (void)state;
    static const char *const files[] = {
        "models/vocab/ggml-vocab-gpt-2.gguf", "models/vocab/ggml-vocab-deepseek-llm.gguf",
        "models/vocab/ggml-vocab-falcon.gguf", "models/mini-llama-bpe-Q8_0.gguf"};
    int done = 0;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        tok_bpe *t = load_bpe(files[i]);
        if (!t) continue;
        check_edges(t, files[i], strstr(files[i], "gpt-2") != NULL);
        tok_bpe_free(t);
        done++;
    }
    if (!done) {
        print_message("SKIP: models/vocab not found (set KILN_TEST_DATA)\n");
        skip();
    }
}

struct thread_arg {
    const tok_bpe *t;
    const char *text;
    int32_t ids[256];
    size_t n;
};

static void *encode_many(void *p) {
    struct thread_arg *a = p;
    for (int i = 0; i < 200; i++) {
        int32_t ids[256];
        size_t n;
        if (tok_bpe_encode(a->t, a->text, strlen(a->text), true, false, ids, 256, &n) ||
            !ids_equal(ids, n, a->ids, a->n))
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    tok_bpe *t = load_bpe("models/mini-qwen2-Q8_0.gguf");
    if (!t) {
        print_message("SKIP: models/mini-qwen2-Q8_0.gguf not found (set KILN_TEST_DATA)\n");
        skip();
    }
    struct thread_arg a[2] = {{.t = t, .text = "Hello world! I'm sure it's fine, isn't it? 123"},
                              {.t = t, .text = "def add(a, b):\n    return a + b  # \xe6\x97\xa5"}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(
            tok_bpe_encode(t, a[i].text, strlen(a[i].text), true, false, a[i].ids, 256, &a[i].n),
            KILN_OK);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, encode_many, &a[i]), 0);
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(th[i], &r);
        assert_null(r);
    }
    tok_bpe_free(t);
}

/* ---- (d) a hand-made vocabulary (no data) ---------------------------------------------------- */

static void test_tiny_vocab(void **state) {
    (void)state;
    /* "Ġ" is the space byte in GPT-2's alphabet */
    static const char *const text[] = {"a",
                                       "b",
                                       "c",
                                       "\xc4\xa0",
                                       "ab",
                                       "abc",
                                       "\xc4\xa0"
                                       "a",
                                       "<|endoftext|>",
                                       "1",
                                       "2",
                                       "12",
                                       "<sp>"};
    static const uint8_t type[] = {1, 1, 1, 1, 1, 1, 1, 3, 1, 1, 1, 4};
    static const char *const merges[] = {"a b", "ab c", "\xc4\xa0 a", "1 2"};
    uint32_t len[12], mlen[4];
    for (int i = 0; i < 12; i++) len[i] = (uint32_t)strlen(text[i]);
    for (int i = 0; i < 4; i++) mlen[i] = (uint32_t)strlen(merges[i]);
    struct tok_bpe_vocab v = {.n_vocab = 12,
                              .text = text,
                              .len = len,
                              .type = type,
                              .n_merges = 4,
                              .merge = merges,
                              .merge_len = mlen,
                              .pre = "gpt-2",
                              .pre_len = 5,
                              .bos = 7,
                              .eos = 7,
                              .eot = TOK_BPE_ID_DEFAULT,
                              .unk = TOK_BPE_ID_DEFAULT,
                              .add_bos = -1,
                              .add_eos = -1};
    kiln_status st;
    tok_bpe *t = tok_bpe_create(&v, &st);
    assert_non_null(t);
    int32_t ids[16];
    size_t n;
    /* "abc a<sp>12": words "abc", " a", "<sp>" cut first, "12" */
    const char *s = "abc a<sp>12";
    assert_int_equal(tok_bpe_encode(t, s, strlen(s), true, false, ids, 16, &n), KILN_OK);
    int32_t want[] = {5, 6, 11, 10};
    assert_true(ids_equal(ids, n, want, 4));
    assert_false(tok_bpe_add_bos(t));
    assert_true(tok_bpe_is_eog(t, 7));
    /* a control token's text stays text unless parse_special */
    s = "<|endoftext|>";
    assert_int_equal(tok_bpe_encode(t, s, strlen(s), false, true, ids, 16, &n), KILN_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 7);
    assert_int_equal(tok_bpe_encode(t, s, strlen(s), false, false, ids, 16, &n), KILN_OK);
    for (size_t i = 0; i < n; i++) assert_int_not_equal(ids[i], 7);
    /* a cap too small reports the size needed */
    assert_int_equal(tok_bpe_encode(t, "abc abc", 7, false, false, ids, 1, &n), KILN_ERR_RANGE);
    assert_int_equal(n, 3); /* "abc", then " abc": a+b, ab+c first, so Ġ, abc */
    char piece[8];
    assert_int_equal(tok_bpe_piece(t, 6, false, piece, sizeof piece), 2);
    assert_memory_equal(piece, " a", 2);
    assert_int_equal(tok_bpe_piece(t, 7, false, piece, sizeof piece), 0);
    assert_int_equal(tok_bpe_piece(t, 7, true, piece, sizeof piece), 13);
    tok_bpe_free(t);
    /* an unknown pre-tokenizer is refused, naming it */
    v.pre = "no-such-pre";
    v.pre_len = 11;
    assert_null(tok_bpe_create(&v, &st));
    assert_int_equal(st, KILN_ERR_UNSUPPORTED);
    assert_non_null(strstr(kiln_last_error(), "no-such-pre"));
}

/* ---- (e) every pre-tokenizer compiles and splits (no data) ------------------------------------
 */

/* Splits UTF-8 text with pre-tokenizer name; returns the words joined by '|'. */
static void split_words(const char *name, const char *text, char *out, size_t cap) {
    kiln_status st;
    pretok *p = pretok_create(name, strlen(name), NULL, &st);
    if (!p) print_message("  %s: %s\n", name, kiln_last_error());
    assert_non_null(p);
    uint32_t cp[256];
    size_t n = 0, ends[256], nw, w = 0;
    for (const unsigned char *s = (const unsigned char *)text; *s && n < 256; n++) {
        size_t l = *s < 0x80 ? 1 : *s < 0xe0 ? 2 : *s < 0xf0 ? 3 : 4;
        uint32_t c = l == 1 ? *s : (uint32_t)(*s & (0x3f >> (l - 1)));
        for (size_t k = 1; k < l; k++) c = (c << 6) | (s[k] & 0x3fu);
        cp[n] = c;
        s += l;
    }
    assert_int_equal(pretok_split(p, cp, n, ends, &nw), KILN_OK);
    const unsigned char *s = (const unsigned char *)text;
    for (size_t k = 0, start = 0; k < nw; start = ends[k++]) {
        assert_true(ends[k] > start && ends[k] <= n);
        if (k && w + 1 < cap) out[w++] = '|';
        for (size_t i = start; i < ends[k]; i++) {
            size_t l = *s < 0x80 ? 1 : *s < 0xe0 ? 2 : *s < 0xf0 ? 3 : 4;
            for (size_t j = 0; j < l && w + 1 < cap; j++) out[w++] = (char)s[j];
            s += l;
        }
    }
    assert_true(nw == 0 || ends[nw - 1] == n);
    out[w] = 0;
    pretok_free(p);
}

static void test_pretokenizers(void **state) {
    (void)state;
    static const char *const names[] = {
        "default",     "llama3",       "llama-bpe",      "falcon3",      "dbrx",      "smaug-bpe",
        "chatglm-bpe", "deepseek-llm", "deepseek-coder", "falcon",       "starcoder", "refact",
        "codeshell",   "exaone",       "minerva-7b",     "command-r",    "smollm",    "gpt-2",
        "phi-2",       "mpt",          "olmo",           "jais",         "qwen2",     "stablelm2",
        "megrez",      "poro-chat",    "bloom",          "gpt3-finnish", "viking",    "tekken",
        "chameleon"};
    const char *text = "Hello world! I'm 12345 caf\xc3\xa9\xe3\x80\x80x  \n\n  y";
    char out[512];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        split_words(names[i], text, out, sizeof out);
    /* known answers, from the regexes' semantics */
    split_words("llama3", "Hello world! I'm 12345  \n\n  y", out, sizeof out);
    assert_string_equal(out, "Hello| world|!| I|'m| |123|45|  \n\n| | y");
    split_words("qwen2", "I'M 123", out, sizeof out);
    assert_string_equal(out, "I|'M| |1|2|3");
    split_words("gpt-2", "I'M 123", out, sizeof out);
    assert_string_equal(out, "I|'|M| 123");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_vocab), cmocka_unit_test(test_vocab_files),
        cmocka_unit_test(test_reference),  cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_threads),    cmocka_unit_test(test_pretokenizers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

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
 * Data-dependent tests skip, saying why, when KILN_TEST_DATA is absent. JSON
 * is read with jansson (testutil.h).
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

/* ---- helpers -------------------------------------------------------------------------------- */

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
    char *inp = test_read_file(test_data_path(rel, path, sizeof path), &n_inp);
    snprintf(rel, sizeof rel, "models/vocab/%s.out", vocab);
    char *out = test_read_file(test_data_path(rel, path, sizeof path), &n_out);
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
        if (!test_ids_equal(got, ng, want, nw)) {
            print_message("  %s case %d differs: '%.*s'\n", vocab, cases, (int)(e - s), s);
            test_print_ids("want", want, nw);
            test_print_ids("got ", got, ng);
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

static int check_result(const tok_bpe *t, const json_t *prompt, const json_t *res) {
    const json_t *text = json_object_get(prompt, "text");
    const char *tstr = json_string_value(text);
    size_t tlen = json_string_length(text);
    const char *pid = json_string_value(json_object_get(prompt, "id"));
    int32_t want[1024], got[1024], want_ns[1024];
    size_t n_got, nw = test_json_ids(json_object_get(res, "ids"), want, 1024);
    size_t nw_ns = test_json_ids(json_object_get(res, "ids_no_special"), want_ns, 1024);
    int fails = 0;
    assert_int_equal(tok_bpe_encode(t, tstr, tlen, true, false, got, 1024, &n_got), KILN_OK);
    if (!test_ids_equal(got, n_got, want, nw)) {
        print_message("  %s: ids differ\n", pid);
        test_print_ids("want", want, nw);
        test_print_ids("got ", got, n_got);
        fails++;
    }
    const json_t *hex = json_object_get(res, "pieces_hex");
    for (size_t i = 0; i < n_got && i < nw && hex && i < json_array_size(hex); i++) {
        char piece[512], exp[512];
        size_t np = tok_bpe_piece(t, got[i], true, piece, sizeof piece), ne = 0;
        const json_t *h = json_array_get(hex, i);
        const char *hs = json_string_value(h);
        for (size_t k = 0; k + 1 < json_string_length(h) && ne < sizeof exp; k += 2)
            exp[ne++] = (char)(test_hexnib(hs[k]) * 16 + test_hexnib(hs[k + 1]));
        if (np != ne || memcmp(piece, exp, ne)) {
            print_message("  %s: piece of id %d is '%.*s', want '%.*s'\n", pid, got[i], (int)np,
                          piece, (int)ne, exp);
            fails++;
        }
    }
    assert_int_equal(tok_bpe_encode(t, tstr, tlen, false, false, got, 1024, &n_got), KILN_OK);
    if (!test_ids_equal(got, n_got, want_ns, nw_ns)) {
        print_message("  %s: ids_no_special differ\n", pid);
        test_print_ids("want", want_ns, nw_ns);
        test_print_ids("got ", got, n_got);
        fails++;
    }
    /* detokenization: llama_detokenize's text, and the streamed pieces */
    const json_t *detok = json_object_get(res, "detok_no_special");
    char buf[4096];
    size_t nd;
    assert_int_equal(tok_bpe_detokenize(t, got, n_got, false, buf, sizeof buf, &nd), KILN_OK);
    if (detok && (nd != json_string_length(detok) || memcmp(buf, json_string_value(detok), nd))) {
        print_message("  %s: detokenized '%.*s', want '%.*s'\n", pid, (int)nd, buf,
                      (int)json_string_length(detok), json_string_value(detok));
        fails++;
    }
    const json_t *rt = json_object_get(res, "detok_no_special_roundtrip");
    size_t ns;
    char *streamed = stream_text(t, got, n_got, &ns);
    if (rt && test_json_num(rt) != 0 && (ns != tlen || memcmp(streamed, tstr, ns))) {
        print_message("  %s: streamed text '%.*s' is not the input\n", pid, (int)ns, streamed);
        fails++;
    }
    free(streamed);
    return fails;
}

static void test_reference(void **state) {
    (void)state;
    json_t *root = test_load_json("reference/tokenizer.json");
    if (!root) {
        print_message("SKIP: reference/tokenizer.json not found (set KILN_TEST_DATA)\n");
        skip();
    }
    const json_t *prompts = json_object_get(root, "prompts");
    const json_t *toks = json_object_get(root, "tokenizers");
    int fails = 0, checked = 0, files = 0;
    for (size_t e = 0; e < json_array_size(toks); e++) {
        const json_t *entry = json_array_get(toks, e);
        if (strcmp(json_string_value(json_object_get(entry, "vocab_type")), "bpe")) continue;
        const json_t *fl = json_object_get(entry, "files");
        for (size_t fi = 0; fi < json_array_size(fl); fi++) {
            const char *fname = json_string_value(json_array_get(fl, fi));
            tok_bpe *t = load_bpe(fname);
            if (!t) continue;
            files++;
            assert_int_equal(tok_bpe_n_vocab(t),
                             (int32_t)test_json_num(json_object_get(entry, "n_vocab")));
            assert_int_equal(tok_bpe_bos(t),
                             (int32_t)test_json_num(json_object_get(entry, "bos_id")));
            assert_int_equal(tok_bpe_eos(t),
                             (int32_t)test_json_num(json_object_get(entry, "eos_id")));
            assert_int_equal(tok_bpe_add_bos(t),
                             test_json_num(json_object_get(entry, "add_bos")) != 0);
            int before = fails;
            const json_t *results = json_object_get(entry, "results");
            for (size_t r = 0; r < json_array_size(results); r++) {
                fails += check_result(t, json_array_get(prompts, r), json_array_get(results, r));
                checked++;
            }
            print_message("  %-40s %s\n", fname,
                          fails == before ? "all prompts match" : "MISMATCH");
            tok_bpe_free(t);
        }
    }
    print_message("  %d BPE files, %d prompt results checked\n", files, checked);
    json_decref(root);
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
    assert_true(na > nb && test_ids_equal(a, nb, b, nb));
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
            !test_ids_equal(ids, n, a->ids, a->n))
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
    assert_true(test_ids_equal(ids, n, want, 4));
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

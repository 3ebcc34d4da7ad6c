/* test_embed.c - the embeddings engine: WordPiece tokenization, the BERT and
 * nomic-bert forward passes, pooling, normalisation, batching and bad input.
 *   - WordPiece conformance: the bert-bge vocab .inp/.out pairs (add_special
 *     false) and the reference tokenizer.json entries for the bert vocab
 *     (ids and pieces), exactly;
 *   - mini-bert-Q8_0 and mini-nomic-bert-F16 against reference/embeddings:
 *     ids exactly, cosine and max |delta| within the README's thresholds;
 *   - batch invariance: a text alone equals the same text inside a batch of
 *     64 mixed lengths within 1e-5;
 *   - a `kiln synth`-style bert written here (no shared data needed):
 *     pooling modes, Matryoshka truncation, truncation of long inputs, the
 *     halving of the batch on allocation failure and bad input.
 * Decoders as embedders are tested in test_embed_decoder.c.
 * Data-dependent tests skip, saying why, when KILN_TEST_DATA is absent.
 */
#include "testutil.h"

#include "kiln.h"
#include "model/bert.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "model/vocab.h"
#include "text/tok_wpm.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

/* ---- WordPiece ---- */

static void test_wpm_vocab_pairs(void **state) {
    (void)state;
    char p[512], q[600], r[600];
    TEST_DATA_OR_SKIP("models/vocab/ggml-vocab-bert-bge.gguf", p);
    snprintf(q, sizeof q, "%s.inp", p);
    snprintf(r, sizeof r, "%s.out", p);
    kiln_status st;
    gguf_file *f = gguf_open(p, &st);
    assert_non_null(f);
    tok_wpm *t = vocab_load_wpm(f, &st);
    assert_non_null(t);
    gguf_close(f);
    size_t ni, no;
    char *inp = test_read_file(q, &ni), *out = test_read_file(r, &no);
    assert_non_null(inp);
    assert_non_null(out);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *s = inp, *line = out;
    int n_cases = 0;
    while (*s) {
        char *end = strstr(s, sep);
        size_t len = end ? (size_t)(end - s) : strlen(s);
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        int32_t ids[4096], want[4096];
        size_t n = 0, nw = 0;
        assert_int_equal(tok_wpm_encode(t, s, len, false, ids, 4096, &n), KILN_OK);
        for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " ")) want[nw++] = atoi(tok);
        if (n != nw || memcmp(ids, want, n * sizeof *ids))
            fail_msg("case %d ('%.*s'): %zu ids, want %zu", n_cases, (int)len, s, n, nw);
        n_cases++;
        line = nl + 1;
        if (!end) break;
        s = end + strlen(sep);
    }
    assert_true(n_cases >= 40);
    free(inp);
    free(out);
    tok_wpm_free(t);
}

static void test_wpm_reference(void **state) {
    (void)state;
    char p[512], v[512];
    TEST_DATA_OR_SKIP("reference/tokenizer.json", p);
    TEST_DATA_OR_SKIP("models/vocab/ggml-vocab-bert-bge.gguf", v);
    json_t *root = test_load_json("reference/tokenizer.json");
    assert_non_null(root);
    kiln_status st;
    gguf_file *f = gguf_open(v, &st);
    assert_non_null(f);
    tok_wpm *t = vocab_load_wpm(f, &st);
    assert_non_null(t);
    gguf_close(f);
    const json_t *toks = json_object_get(root, "tokenizers");
    const json_t *prompts = json_object_get(root, "prompts");
    int checked = 0;
    for (size_t i = 0; i < json_array_size(toks); i++) {
        const json_t *tk = json_array_get(toks, i);
        if (strcmp(json_string_value(json_object_get(tk, "vocab_type")), "wpm")) continue;
        const json_t *res = json_object_get(tk, "results");
        for (size_t k = 0; k < json_array_size(res); k++) {
            const json_t *e = json_array_get(res, k), *ids = json_object_get(e, "ids");
            const json_t *pieces = json_object_get(e, "pieces");
            const char *pid = json_string_value(json_object_get(e, "prompt"));
            const json_t *text = NULL;
            for (size_t j = 0; j < json_array_size(prompts); j++) {
                const json_t *pr = json_array_get(prompts, j);
                if (!strcmp(json_string_value(json_object_get(pr, "id")), pid))
                    text = json_object_get(pr, "text");
            }
            assert_non_null(text);
            int32_t got[1024];
            size_t n;
            assert_int_equal(tok_wpm_encode(t, json_string_value(text), json_string_length(text),
                                            true, got, 1024, &n),
                             0);
            if (n != json_array_size(ids))
                fail_msg("%s: %zu ids, want %zu", pid, n, json_array_size(ids));
            for (size_t j = 0; j < n; j++) {
                int32_t wid = (int32_t)json_number_value(json_array_get(ids, j));
                if (got[j] != wid) fail_msg("%s: id %zu is %d, want %d", pid, j, got[j], (int)wid);
                char buf[256];
                size_t pl = tok_wpm_piece(t, got[j], true, buf, sizeof buf);
                const json_t *want = json_array_get(pieces, j);
                if (pl != json_string_length(want) || memcmp(buf, json_string_value(want), pl))
                    fail_msg("%s: piece %zu is '%.*s', want '%s'", pid, j, (int)pl, buf,
                             json_string_value(want));
            }
            checked++;
        }
    }
    assert_int_equal(checked, 12);
    tok_wpm_free(t);
    json_decref(root);
}

/* ---- reference embeddings ---- */

static void check_reference(const char *model, double min_cos, double max_diff) {
    char p[512], r[512], rel[256];
    snprintf(rel, sizeof rel, "models/%s.gguf", model);
    TEST_DATA_OR_SKIP(rel, p);
    snprintf(rel, sizeof rel, "reference/embeddings/%s.json", model);
    TEST_DATA_OR_SKIP(rel, r);
    json_t *root = test_load_json(rel);
    assert_non_null(root);
    const json_t *sent = json_object_get(root, "sentences");
    kiln_model *m = test_load_model(p);
    kiln_embed_ctx *e = test_embed_ctx(m, kiln_embed_default_params());
    const char *texts[64];
    int n = (int)json_array_size(sent);
    for (int i = 0; i < n; i++)
        texts[i] = json_string_value(json_object_get(json_array_get(sent, (size_t)i), "text"));
    kiln_embeddings *res = test_embed_ok(e, texts, n);
    double worst_cos = 1, worst_diff = 0;
    for (int i = 0; i < n; i++) {
        const json_t *si = json_array_get(sent, (size_t)i);
        const json_t *ids = json_object_get(si, "ids"), *emb = json_object_get(si, "embedding");
        int32_t got[1024];
        size_t nt;
        assert_int_equal(kiln_tokenize(m, texts[i], strlen(texts[i]), 1, got, 1024, &nt), 0);
        assert_int_equal(nt, json_array_size(ids));
        assert_int_equal(res->n_tokens[i], (int32_t)nt);
        for (size_t j = 0; j < nt; j++)
            assert_int_equal(got[j], (int32_t)json_number_value(json_array_get(ids, j)));
        assert_int_equal(json_array_size(emb), res->dim);
        const float *v = res->data + res->row[i] * res->dim;
        double dot = 0, na = 0, nb = 0, md = 0;
        for (int k = 0; k < res->dim; k++) {
            double a = v[k], b = json_number_value(json_array_get(emb, (size_t)k));
            dot += a * b, na += a * a, nb += b * b;
            md = fmax(md, fabs(a - b));
        }
        double cs = dot / sqrt(na * nb);
        worst_cos = fmin(worst_cos, cs);
        worst_diff = fmax(worst_diff, md);
    }
    print_message("%s: min cos %.8f, max |delta| %.2e (thresholds %.5f, %.0e)\n", model, worst_cos,
                  worst_diff, min_cos, max_diff);
    assert_true(worst_cos >= min_cos);
    assert_true(worst_diff <= max_diff);
    kiln_embeddings_free(res);
    kiln_embed_ctx_free(e);
    kiln_model_free(m);
    json_decref(root);
}

static void test_ref_nomic(void **state) {
    (void)state;
    check_reference("mini-nomic-bert-F16", 0.99999, 5e-4);
}

static void test_ref_bert(void **state) {
    (void)state;
    check_reference("mini-bert-Q8_0", 0.9995, 1e-2);
}

/* ---- batch invariance ---- */

static const char *const words[] = {"the",   "cat",    "sat",   "on",      "a",      "mat",
                                    "quick", "brown",  "fox",   "jumps",   "over",   "lazy",
                                    "dog",   "search", "ranks", "vectors", "of",     "text",
                                    "rain",  "in",     "spain", "falls",   "mainly", "plain"};

/* 64 texts of 1 to ~60 words, deterministic; text k is at index k. */
static char **mixed_texts(int n, uint64_t seed) {
    char **t = malloc((size_t)n * sizeof *t);
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        int nw = 1 + (int)(test_rand_u64(&s) % 60);
        t[i] = malloc(512);
        size_t o = 0;
        for (int w = 0; w < nw; w++) {
            const char *x = words[test_rand_u64(&s) % (sizeof words / sizeof words[0])];
            o += (size_t)snprintf(t[i] + o, 512 - o, "%s%s", w ? " " : "", x);
        }
    }
    return t;
}

static void check_invariance(const kiln_model *m, kiln_embed_params p) {
    kiln_embed_ctx *e = test_embed_ctx(m, p);
    char **t = mixed_texts(64, 42);
    kiln_embeddings *all = test_embed_ok(e, (const char *const *)t, 64);
    double worst = 0;
    int picks[] = {0, 7, 31, 63};
    for (int k = 0; k < 4; k++) {
        int i = picks[k];
        kiln_embeddings *one = test_embed_ok(e, (const char *const *)&t[i], 1);
        worst =
            fmax(worst, test_max_abs_diff(one->data, all->data + all->row[i] * all->dim, all->dim));
        kiln_embeddings_free(one);
    }
    print_message("batch invariance (%s): max |delta| %.2e\n", kiln_model_arch(m), worst);
    assert_true(worst <= 1e-5);
    for (int i = 0; i < 64; i++) free(t[i]);
    free(t);
    kiln_embeddings_free(all);
    kiln_embed_ctx_free(e);
}

static void test_invariance_data(void **state) {
    (void)state;
    char p[512];
    const char *models[] = {"models/mini-bert-Q8_0.gguf", "models/mini-nomic-bert-F16.gguf"};
    for (int i = 0; i < 2; i++) {
        TEST_DATA_OR_SKIP(models[i], p);
        kiln_model *m = test_load_model(p);
        kiln_embed_params ep = kiln_embed_default_params();
        ep.batch_tokens = 256; /* several batches of differing composition */
        check_invariance(m, ep);
        kiln_model_free(m);
    }
}

/* ---- a synthetic bert (no shared data needed) ---- */

static const char *synth_model(const char *name, enum arch_id arch, kiln_type type, char *buf,
                               size_t cap) {
    struct synth_params sp = {
        .hp = test_tiny_encoder_hp(arch), .type = type, .seed = 7, .n_threads = 2};
    return test_write_synth(name, &sp, buf, cap);
}

static void test_synth_bert(void **state) {
    (void)state;
    char path[512];
    const kiln_type types[] = {KILN_TYPE_F16, KILN_TYPE_Q8_0};
    const enum arch_id archs[] = {ARCH_BERT, ARCH_NOMIC_BERT};
    for (int a = 0; a < 2; a++)
        for (int k = 0; k < 2; k++) {
            synth_model("embed-synth.gguf", archs[a], types[k], path, sizeof path);
            kiln_model *m = test_load_model(path);
            kiln_embed_params p = kiln_embed_default_params();
            p.batch_tokens = 128;
            check_invariance(m, p);
            /* unit norms, and distinct texts give distinct vectors */
            kiln_embed_ctx *e = test_embed_ctx(m, kiln_embed_default_params());
            const char *t[] = {"hello world", "a b c d"};
            kiln_embeddings *r = test_embed_ok(e, t, 2);
            assert_int_equal(r->dim, 64);
            for (int i = 0; i < 2; i++) {
                double ss = 0;
                for (int j = 0; j < 64; j++)
                    ss += (double)r->data[i * 64 + j] * r->data[i * 64 + j];
                assert_true(fabs(ss - 1) < 1e-5);
            }
            assert_true(test_max_abs_diff(r->data, r->data + 64, 64) > 1e-3);
            kiln_embeddings_free(r);
            kiln_embed_ctx_free(e);
            kiln_model_free(m);
        }
}

static void test_pooling_and_dim(void **state) {
    (void)state;
    char path[512];
    synth_model("embed-pool.gguf", ARCH_BERT, KILN_TYPE_F16, path, sizeof path);
    kiln_model *m = test_load_model(path);
    const char *t[] = {"the quick brown fox"};
    kiln_embed_params p = kiln_embed_default_params();
    p.pooling = KILN_POOLING_NONE;
    p.normalize = 0;
    kiln_embed_ctx *e = test_embed_ctx(m, p);
    kiln_embeddings *tok = test_embed_ok(e, t, 1);
    int32_t L = tok->n_tokens[0];
    assert_int_equal(tok->n_rows, L);
    kiln_embed_ctx_free(e);
    /* mean, cls and last from the per-token vectors, unnormalised */
    kiln_pooling modes[] = {KILN_POOLING_MEAN, KILN_POOLING_CLS, KILN_POOLING_LAST};
    for (int k = 0; k < 3; k++) {
        p.pooling = modes[k];
        e = test_embed_ctx(m, p);
        assert_int_equal(kiln_embed_pooling(e), modes[k]);
        kiln_embeddings *r = test_embed_ok(e, t, 1);
        float want[64];
        for (int j = 0; j < 64; j++) {
            double s = 0;
            for (int i = 0; i < L; i++) s += tok->data[i * 64 + j];
            want[j] = modes[k] == KILN_POOLING_MEAN  ? (float)(s / L)
                      : modes[k] == KILN_POOLING_CLS ? tok->data[j]
                                                     : tok->data[(L - 1) * 64 + j];
        }
        assert_true(test_max_abs_diff(r->data, want, 64) < 1e-5);
        kiln_embeddings_free(r);
        kiln_embed_ctx_free(e);
    }
    /* Matryoshka: the first 16 components of the raw mean, renormalised */
    p.pooling = KILN_POOLING_MEAN;
    e = test_embed_ctx(m, p);
    kiln_embeddings *raw = test_embed_ok(e, t, 1);
    kiln_embed_ctx_free(e);
    p.normalize = 1;
    p.dim = 16;
    e = test_embed_ctx(m, p);
    assert_int_equal(kiln_embed_dim(e), 16);
    kiln_embeddings *r = test_embed_ok(e, t, 1);
    assert_int_equal(r->dim, 16);
    double ss = 0;
    for (int j = 0; j < 16; j++) ss += (double)raw->data[j] * raw->data[j];
    for (int j = 0; j < 16; j++) assert_true(fabs(r->data[j] - raw->data[j] / sqrt(ss)) < 1e-6);
    kiln_embeddings_free(r);
    kiln_embeddings_free(raw);
    kiln_embed_ctx_free(e);
    p.dim = 65;
    kiln_status st;
    assert_null(kiln_embed_ctx_create(m, &p, &st));
    assert_int_equal(st, KILN_ERR_INVALID_ARG);
    kiln_embeddings_free(tok);
    kiln_model_free(m);
}

static void expect_error(kiln_embed_ctx *e, const char *const *t, const size_t *lens, int32_t n,
                         kiln_status want, const char *const *parts) {
    kiln_embeddings *r = (kiln_embeddings *)1;
    kiln_status st = kiln_embed(e, t, lens, n, &r, NULL);
    assert_int_equal(st, want);
    assert_null(r);
    for (int i = 0; parts && parts[i]; i++)
        if (!strstr(kiln_last_error(), parts[i]))
            fail_msg("error '%s' lacks '%s'", kiln_last_error(), parts[i]);
}

static void test_bad_input(void **state) {
    (void)state;
    char path[512];
    synth_model("embed-bad.gguf", ARCH_BERT, KILN_TYPE_Q8_0, path, sizeof path);
    kiln_model *m = test_load_model(path);
    kiln_embed_ctx *e = test_embed_ctx(m, kiln_embed_default_params());
    const char *ok = "fine";
    expect_error(e, &ok, NULL, 0, KILN_ERR_INVALID_ARG, (const char *[]){"no inputs", NULL});
    const char *t2[] = {"fine", ""};
    expect_error(e, t2, NULL, 2, KILN_ERR_INVALID_ARG, (const char *[]){"input 1", "empty", NULL});
    const char *t3[] = {"fine", "ok", "bad \xc3\x28 utf8"};
    expect_error(e, t3, NULL, 3, KILN_ERR_INVALID_ARG,
                 (const char *[]){"input 2", "UTF-8", "offset 4", NULL});
    const char *t4[] = {"fine", NULL};
    expect_error(e, t4, NULL, 2, KILN_ERR_INVALID_ARG, (const char *[]){"input 1", NULL});
    /* over-long: context 64 */
    char longt[2048];
    size_t o = 0;
    for (int i = 0; i < 100; i++) o += (size_t)snprintf(longt + o, sizeof longt - o, "a b ");
    const char *t5[] = {"fine", "ok", "x", longt};
    expect_error(e, t5, NULL, 4, KILN_ERR_RANGE,
                 (const char *[]){"input 3", "202 tokens", "context of 64", NULL});
    kiln_embed_ctx_free(e);
    kiln_embed_params p = kiln_embed_default_params();
    p.truncate = 1;
    e = test_embed_ctx(m, p);
    kiln_embeddings *r = test_embed_ok(e, t5, 4);
    assert_int_equal(r->n_tokens[3], 64);
    assert_int_equal(r->truncated_from[3], 202);
    assert_int_equal(r->truncated_from[0], 0);
    kiln_embeddings_free(r);
    kiln_embed_ctx_free(e);
    kiln_model_free(m);
}

/* Allocation failure (a memory budget below what the batch needs) halves
 * the batch, at most 3 times, counted in the stats. */
static void test_halving(void **state) {
    (void)state;
    char path[512];
    synth_model("embed-oom.gguf", ARCH_BERT, KILN_TYPE_Q8_0, path, sizeof path);
    kiln_model *m = test_load_model(path);
    char **t = mixed_texts(64, 9);
    kiln_embed_params p = kiln_embed_default_params();
    p.n_threads = 2;
    p.batch_tokens = 1024;
    kiln_status st;
    kiln_model *mm = m;
    kiln_embed_ctx *e0 = test_embed_ctx(mm, p);
    kiln_embeddings *ref = test_embed_ok(e0, (const char *const *)t, 64);
    kiln_embed_ctx_free(e0);
    /* the budget allows 128 tokens but not 256: 1024 -> 512 -> 256 -> 128 */
    const bert_model *bm = NULL;
    (void)bm;
    uint64_t b128 = 0;
    {
        /* bert_ctx_bytes through a temporary load of the same file */
        gguf_file *f = gguf_open(path, &st);
        bert_model *b = bert_model_load(f, &st);
        assert_non_null(b);
        b128 = bert_ctx_bytes(b, 2, 128);
        bert_model_free(b);
        gguf_close(f);
    }
    p.mem_budget = b128 + 1;
    kiln_embed_ctx *e = test_embed_ctx(m, p);
    kiln_embeddings *r = NULL;
    kiln_embed_stats stats;
    st = kiln_embed(e, (const char *const *)t, NULL, 64, &r, &stats);
    assert_int_equal(st, KILN_OK);
    assert_int_equal(stats.n_halvings, 3);
    assert_int_equal(stats.batch_tokens, 128);
    assert_int_equal(kiln_embed_batch_tokens(e), 128);
    assert_true(test_max_abs_diff(r->data, ref->data, 64 * r->dim) <= 1e-5);
    kiln_embeddings_free(r);
    kiln_embed_ctx_free(e);
    /* one halving short: fails with a message naming the halvings */
    p.mem_budget = b128 / 2;
    e = test_embed_ctx(m, p);
    r = NULL;
    st = kiln_embed(e, (const char *const *)t, NULL, 64, &r, &stats);
    assert_int_equal(st, KILN_ERR_NOMEM);
    assert_non_null(strstr(kiln_last_error(), "halved 3 times"));
    assert_null(r);
    kiln_embed_ctx_free(e);
    for (int i = 0; i < 64; i++) free(t[i]);
    free(t);
    kiln_embeddings_free(ref);
    kiln_model_free(m);
}

static void test_find_batch(void **state) {
    (void)state;
    char path[512];
    synth_model("embed-find.gguf", ARCH_BERT, KILN_TYPE_Q8_0, path, sizeof path);
    kiln_model *m = test_load_model(path);
    char **t = mixed_texts(32, 5);
    int32_t sizes[] = {64, 256, 1024};
    kiln_embed_bench_point pts[3];
    int32_t best;
    kiln_embed_params p = kiln_embed_default_params();
    p.n_threads = 2;
    assert_int_equal(
        kiln_embed_find_batch(m, &p, (const char *const *)t, NULL, 32, sizes, 3, pts, &best),
        KILN_OK);
    assert_true(best >= 0 && best < 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pts[i].status, KILN_OK);
        assert_true(pts[i].tokens_per_s > 0);
    }
    for (int i = 0; i < 32; i++) free(t[i]);
    free(t);
    kiln_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wpm_vocab_pairs), cmocka_unit_test(test_wpm_reference),
        cmocka_unit_test(test_ref_nomic),       cmocka_unit_test(test_ref_bert),
        cmocka_unit_test(test_invariance_data), cmocka_unit_test(test_synth_bert),
        cmocka_unit_test(test_pooling_and_dim), cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_halving),         cmocka_unit_test(test_find_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

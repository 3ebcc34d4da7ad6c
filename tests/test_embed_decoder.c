/* test_embed_decoder.c - decoders (llama, qwen2) as embedders through the
 * embeddings API (kiln_embed*), on the generation engine's blocks
 * (model/llama.c's llama_embed):
 *   - mini-llama-spm-Q8_0, mini-qwen2-Q8_0 and stories260K (F32) against
 *     llama.cpp's vectors (last and mean pooling, 4 sentences packed in one
 *     call): token ids exactly, cosine >= 0.999 on Q8_0 (where rounding
 *     flips in the int8 activations differ) and >= 0.99999 with max |delta|
 *     <= 5e-4 on F32 (the same arithmetic); skipped when ../shared is absent;
 *   - llama_embed's hidden states are the generation path's: times the
 *     output matrix they give llama_decode's logits; the context refuses
 *     decoding and llama_embed checks its input;
 *   - batch invariance on synthetic llama and qwen2 models (Q8_0, F16; 2 and
 *     3 threads, 3 forcing per-thread padding): a text alone equals the same
 *     text in a batch of 64 mixed lengths within 1e-5;
 *   - pooling: last by default, mean/cls/last from the per-token vectors,
 *     causal attention (a prefix's vectors are the text's first vectors),
 *     <arch>.pooling_type and tokenizer.ggml.add_eos_token from metadata;
 *   - bad input, truncation, the halving of the batch on allocation failure
 *     and the batch-size finder, as for encoders.
 *
 * tests/data/embed-decoder-ref.json was made with llama.cpp c392e509, once
 * per model, sentence and pooling P (last, mean):
 *   llama-embedding -m ../shared/models/MODEL --pooling P -p "TEXT" \
 *       --embd-normalize 2 --embd-output-format json -c 2048 -b 2048 \
 *       -ub 2048 -t 2 --verbose-prompt
 * taking "embedding" from the JSON and the ids from --verbose-prompt's token
 * listing (the JSON's "command" field repeats this).
 */
#include "testutil.h"

#include "compute/threadpool.h"
#include "engine/embed.h"
#include "kiln.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/synth.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

/* A synthetic decoder (generated SPM vocabulary, tied embeddings) at path. */
static const char *synth_decoder(const char *name, enum arch_id arch, kiln_type type,
                                 uint32_t n_head_kv, char *buf, size_t cap) {
    struct synth_params sp = {.hp = {.arch = arch_get(arch),
                                     .n_embd = 64,
                                     .n_layer = 2,
                                     .n_head = 4,
                                     .n_head_kv = n_head_kv,
                                     .n_ff = 128,
                                     .n_ctx_train = 512,
                                     .n_vocab = 400,
                                     .rope_freq_base = 10000.0f,
                                     .norm_eps = 1e-5f},
                              .type = type,
                              .seed = 11,
                              .n_threads = 2};
    return test_write_synth(name, &sp, buf, cap);
}

/* A key to set when copying a file: a u32 or (is_bool) a bool. */
struct key_set {
    const char *key;
    bool is_bool;
    uint32_t val;
};

/* Copies the GGUF at src to dst with the keys set[0..n) set. */
static void copy_with_keys(const char *src, const char *dst, const struct key_set *set, int n) {
    kiln_status st;
    gguf_file *f = gguf_open(src, &st);
    assert_non_null(f);
    gguf_writer *w = test_gguf_copy_kvs(f);
    for (int i = 0; i < n; i++)
        assert_int_equal(set[i].is_bool ? gguf_set_bool(w, set[i].key, set[i].val != 0)
                                        : gguf_set_u32(w, set[i].key, set[i].val),
                         KILN_OK);
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        assert_int_equal(gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->size),
                         KILN_OK);
    }
    assert_int_equal(gguf_writer_write(w, dst), KILN_OK);
    gguf_writer_destroy(w);
    gguf_close(f);
}

static const char *const words[] = {"the",   "cat",    "sat",   "on",      "a",      "mat",
                                    "quick", "brown",  "fox",   "jumps",   "over",   "lazy",
                                    "dog",   "search", "ranks", "vectors", "of",     "text",
                                    "rain",  "in",     "spain", "falls",   "mainly", "plain"};

/* n texts of 1 to max_words words, deterministic. */
static char **mixed_texts(int n, int max_words, uint64_t seed) {
    char **t = malloc((size_t)n * sizeof *t);
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        int nw = 1 + (int)(test_rand_u64(&s) % (uint64_t)max_words);
        t[i] = malloc(512);
        size_t o = 0;
        for (int w = 0; w < nw; w++) {
            const char *x = words[test_rand_u64(&s) % (sizeof words / sizeof words[0])];
            o += (size_t)snprintf(t[i] + o, 512 - o, "%s%s", w ? " " : "", x);
        }
    }
    return t;
}

static void free_texts(char **t, int n) {
    for (int i = 0; i < n; i++) free(t[i]);
    free(t);
}

/* ---- against llama.cpp ---- */

static void check_reference_model(const json_t *mj, const char *dir) {
    const char *model = json_string_value(json_object_get(mj, "model"));
    char rel[256], p[512];
    snprintf(rel, sizeof rel, "models/%s", model);
    if (!test_data_path(rel, p, sizeof p)) {
        print_message("SKIP: %s not found (set KILN_TEST_DATA to the shared data folder)\n", rel);
        return;
    }
    (void)dir;
    const json_t *sent = json_object_get(mj, "sentences");
    int n = (int)json_array_size(sent);
    assert_true(n > 0 && n <= 8);
    const char *texts[8];
    for (int i = 0; i < n; i++)
        texts[i] = json_string_value(json_object_get(json_array_get(sent, (size_t)i), "text"));
    kiln_model *m = test_load_model(p);
    const char *pools[] = {"last", "mean"};
    const kiln_pooling modes[] = {KILN_POOLING_LAST, KILN_POOLING_MEAN};
    for (int k = 0; k < 2; k++) {
        kiln_embed_params ep = kiln_embed_default_params();
        ep.pooling = k == 0 ? KILN_POOLING_MODEL : modes[k]; /* last is the default */
        kiln_embed_ctx *e = test_embed_ctx(m, ep);
        assert_int_equal(kiln_embed_pooling(e), modes[k]);
        kiln_embeddings *r = test_embed_ok(e, texts, n);
        double worst_cos = 1, worst_diff = 0;
        for (int i = 0; i < n; i++) {
            const json_t *si = json_array_get(sent, (size_t)i);
            int32_t want[512], got[512];
            size_t nw = test_json_ids(json_object_get(si, "ids"), want, 512), ng;
            assert_int_equal(kiln_tokenize(m, texts[i], strlen(texts[i]), 1, got, 512, &ng),
                             KILN_OK);
            if (!test_ids_equal(got, ng, want, nw)) {
                test_print_ids("got", got, ng);
                test_print_ids("want", want, nw);
                fail_msg("%s: the ids of sentence %d differ from llama.cpp's", model, i);
            }
            assert_int_equal(r->n_tokens[i], (int32_t)nw);
            const json_t *emb = json_object_get(si, pools[k]);
            assert_int_equal(json_array_size(emb), r->dim);
            const float *v = r->data + r->row[i] * r->dim;
            double dot = 0, na = 0, nb = 0, md = 0;
            for (int j = 0; j < r->dim; j++) {
                double a = v[j], b = json_number_value(json_array_get(emb, (size_t)j));
                dot += a * b, na += a * a, nb += b * b;
                md = fmax(md, fabs(a - b));
            }
            worst_cos = fmin(worst_cos, dot / sqrt(na * nb));
            worst_diff = fmax(worst_diff, md);
        }
        bool q8 = strstr(model, "Q8_0") != NULL;
        print_message("%s %s pooling: min cos %.8f, max |delta| %.2e over %d sentences\n", model,
                      pools[k], worst_cos, worst_diff, n);
        assert_true(worst_cos >= (q8 ? 0.999 : 0.99999));
        if (!q8) assert_true(worst_diff <= 5e-4);
        kiln_embeddings_free(r);
        kiln_embed_ctx_free(e);
    }
    kiln_model_free(m);
}

static void test_reference(void **state) {
    (void)state;
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = 0;
    else
        snprintf(dir, sizeof dir, "./");
    snprintf(path, sizeof path, "%sdata/embed-decoder-ref.json", dir);
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) fail_msg("%s: %s (line %d)", path, err.text, err.line);
    const json_t *models = json_object_get(root, "models");
    assert_int_equal(json_array_size(models), 3);
    for (size_t i = 0; i < json_array_size(models); i++)
        check_reference_model(json_array_get(models, i), dir);
    json_decref(root);
}

/* ---- llama_embed is the generation path ---- */

static void test_hidden_is_generation(void **state) {
    (void)state;
    char path[512];
    synth_decoder("embdec-f32.gguf", ARCH_QWEN2, KILN_TYPE_F32, 2, path, sizeof path);
    kiln_status st;
    gguf_file *f = gguf_open(path, &st);
    assert_non_null(f);
    llama_model *lm = llama_model_load(f, &st);
    assert_non_null(lm);
    kiln_pool *pool = kiln_pool_create(2, &st);
    assert_non_null(pool);
    struct llama_ctx_params ep = {.n_ctx = 512,
                                  .n_batch = 20,
                                  .n_seq = 1,
                                  .type_k = KILN_TYPE_F16,
                                  .type_v = KILN_TYPE_F16,
                                  .embed = true};
    llama_ctx *ec = llama_ctx_create(lm, &ep, pool, &st);
    assert_non_null(ec);
    assert_int_equal(llama_ctx_n_batch(ec) % 8, 0); /* whole column tiles */
    assert_true(llama_ctx_n_batch(ec) >= 20);
    struct llama_ctx_params dp = ep;
    dp.embed = false;
    llama_ctx *dc = llama_ctx_create(lm, &dp, pool, &st);
    assert_non_null(dc);
    const int32_t toks[] = {1, 50, 60, 70, 80, 300, 9, 10, 11, 12, 13, 14};
    const int32_t seq[] = {0, 5, 12}; /* two texts: 5 and 7 tokens */
    const float *h;
    assert_int_equal(llama_embed(ec, toks, seq, 2, &h), KILN_OK);
    int64_t d = lm->hp->n_embd, nv = lm->hp->n_vocab;
    float *logits = malloc((size_t)(7 * nv) * sizeof *logits);
    /* the second text alone through the generation path, every token's logits */
    assert_int_equal(llama_decode(dc, toks + 5, 7, logits, true), KILN_OK);
    assert_int_equal(lm->output.type, KILN_TYPE_F32);
    double worst = 0, scale = 0;
    for (int t = 0; t < 7; t++)
        for (int64_t v = 0; v < nv; v++) {
            const float *w =
                (const float *)((const char *)lm->output.data + (size_t)v * lm->output.row_bytes);
            double z = 0;
            for (int64_t k = 0; k < d; k++) z += (double)w[k] * h[(5 + t) * d + k];
            worst = fmax(worst, fabs(z - logits[t * nv + v]));
            scale = fmax(scale, fabs(z));
        }
    print_message("hidden x output vs decode logits: max |delta| %.2e (largest logit %.2f)\n",
                  worst, scale);
    assert_true(worst <= 1e-4 * fmax(scale, 1));
    /* the context is for embeddings only, and the decoder context is not */
    assert_int_equal(llama_decode(ec, toks, 3, NULL, false), KILN_ERR_INVALID_ARG);
    assert_int_equal(llama_embed(dc, toks, seq, 2, &h), KILN_ERR_INVALID_ARG);
    /* bad layouts and ids change nothing and name the problem */
    const int32_t empty[] = {0, 5, 5};
    assert_int_equal(llama_embed(ec, toks, empty, 2, &h), KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "sequence 1"));
    const int32_t bad[] = {1, 2, 400};
    const int32_t one[] = {0, 3};
    assert_int_equal(llama_embed(ec, bad, one, 1, &h), KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "vocabulary"));
    int32_t many[600] = {0};
    const int32_t big[] = {0, 600};
    assert_int_equal(llama_embed(ec, many, big, 1, &h), KILN_ERR_RANGE);
    /* a step packs more tokens than one sequence's context: n_ctx only
     * bounds each sequence */
    struct llama_ctx_params small = ep;
    small.n_ctx = 8;
    llama_ctx *sc = llama_ctx_create(lm, &small, pool, &st);
    assert_non_null(sc);
    assert_true(llama_ctx_n_batch(sc) >= 20);
    const int32_t three[] = {0, 7, 14, 20};
    assert_int_equal(llama_embed(sc, many, three, 3, &h), KILN_OK);
    const int32_t nine[] = {0, 9};
    assert_int_equal(llama_embed(sc, many, nine, 1, &h), KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "1 to 8"));
    llama_ctx_free(sc);
    struct llama_ctx_params two = ep;
    two.n_seq = 2;
    assert_null(llama_ctx_create(lm, &two, pool, &st));
    assert_int_equal(st, KILN_ERR_INVALID_ARG);
    free(logits);
    llama_ctx_free(ec);
    llama_ctx_free(dc);
    kiln_pool_destroy(pool);
    llama_model_free(lm);
    gguf_close(f);
}

/* ---- batch invariance ---- */

/* Returns the most tokens of one text (a text longer than the batch runs
 * alone, in a context grown for it). */
static int32_t check_invariance(const kiln_model *m, int n_threads, const char *what) {
    kiln_embed_params p = kiln_embed_default_params();
    p.batch_tokens = 128; /* several passes of differing composition */
    p.n_threads = n_threads;
    kiln_embed_ctx *e = test_embed_ctx(m, p);
    char **t = mixed_texts(64, 40, 42);
    kiln_embed_stats st;
    kiln_embeddings *all = NULL;
    assert_int_equal(kiln_embed(e, (const char *const *)t, NULL, 64, &all, &st), KILN_OK);
    assert_true(st.n_batches > 1 && st.max_batch_texts > 1);
    double worst = 0;
    const int picks[] = {0, 7, 31, 63};
    for (int k = 0; k < 4; k++) {
        int i = picks[k];
        kiln_embeddings *one = test_embed_ok(e, (const char *const *)&t[i], 1);
        worst =
            fmax(worst, test_max_abs_diff(one->data, all->data + all->row[i] * all->dim, all->dim));
        kiln_embeddings_free(one);
    }
    /* a one-token text alone is a one-column product unless padded */
    int32_t ids[40];
    int64_t start[] = {0, 1, 40};
    for (int i = 0; i < 40; i++) ids[i] = 3 + 7 * i;
    kiln_embeddings *a = NULL, *b = NULL;
    assert_int_equal(embed_tokens(e, ids, start, 1, &a, NULL), KILN_OK);
    assert_int_equal(embed_tokens(e, ids, start, 2, &b, NULL), KILN_OK);
    worst = fmax(worst, test_max_abs_diff(a->data, b->data, a->dim));
    kiln_embeddings_free(a);
    kiln_embeddings_free(b);
    print_message("batch invariance (%s, %d threads): max |delta| %.2e\n", what, n_threads, worst);
    assert_true(worst <= 1e-5);
    /* stronger than promised: every product of a token's column runs the same
     * kernel path in any batch (llama_embed pads to whole tiles), and every
     * other step is per token, so the vectors are bitwise equal */
    assert_true(worst == 0);
    int32_t most = 0;
    for (int i = 0; i < 64; i++) most = all->n_tokens[i] > most ? all->n_tokens[i] : most;
    free_texts(t, 64);
    kiln_embeddings_free(all);
    kiln_embed_ctx_free(e);
    return most;
}

static void test_invariance_synth(void **state) {
    (void)state;
    char path[512];
    const enum arch_id archs[] = {ARCH_LLAMA, ARCH_QWEN2};
    const kiln_type types[] = {KILN_TYPE_Q8_0, KILN_TYPE_F16};
    for (int a = 0; a < 2; a++)
        for (int k = 0; k < 2; k++) {
            /* 1 KV head: wk and wv have 16 rows, fewer than matmul.c splits over 2 threads */
            synth_decoder("embdec-inv.gguf", archs[a], types[k], a == 0 ? 1 : 2, path, sizeof path);
            kiln_model *m = test_load_model(path);
            char what[64];
            snprintf(what, sizeof what, "%s %s", kiln_model_arch(m), kiln_type_name(types[k]));
            assert_true(check_invariance(m, 2, what) > 128); /* some text runs alone */
            check_invariance(m, 3, what);
            kiln_model_free(m);
        }
}

static void test_invariance_data(void **state) {
    (void)state;
    char p[512];
    const char *models[] = {"models/mini-qwen2-Q8_0.gguf", "models/mini-llama-spm-Q8_0.gguf"};
    for (int i = 0; i < 2; i++) {
        TEST_DATA_OR_SKIP(models[i], p);
        kiln_model *m = test_load_model(p);
        check_invariance(m, 2, models[i] + 7);
        kiln_model_free(m);
    }
}

/* ---- pooling and metadata ---- */

static void test_pooling(void **state) {
    (void)state;
    char path[512];
    synth_decoder("embdec-pool.gguf", ARCH_LLAMA, KILN_TYPE_Q8_0, 2, path, sizeof path);
    kiln_model *m = test_load_model(path);
    kiln_embed_ctx *e = test_embed_ctx(m, kiln_embed_default_params());
    assert_int_equal(kiln_embed_pooling(e), KILN_POOLING_LAST); /* no <arch>.pooling_type */
    assert_int_equal(kiln_embed_dim(e), 64);
    const char *t2[] = {"hello world", "a b c d"};
    kiln_embeddings *r = test_embed_ok(e, t2, 2);
    for (int i = 0; i < 2; i++) {
        double ss = 0;
        for (int j = 0; j < 64; j++) ss += (double)r->data[i * 64 + j] * r->data[i * 64 + j];
        assert_true(fabs(ss - 1) < 1e-5);
    }
    assert_true(test_max_abs_diff(r->data, r->data + 64, 64) > 1e-3);
    kiln_embeddings_free(r);
    kiln_embed_ctx_free(e);

    const char *t[] = {"the quick brown fox"};
    kiln_embed_params p = kiln_embed_default_params();
    p.pooling = KILN_POOLING_NONE;
    p.normalize = 0;
    e = test_embed_ctx(m, p);
    kiln_embeddings *tok = test_embed_ok(e, t, 1);
    int32_t L = tok->n_tokens[0];
    assert_true(L > 3);
    assert_int_equal(tok->n_rows, L);
    /* causal: the vectors of a prefix of the ids are the text's first vectors */
    int32_t ids[64];
    size_t n_ids;
    assert_int_equal(kiln_tokenize(m, t[0], strlen(t[0]), 1, ids, 64, &n_ids), KILN_OK);
    assert_int_equal((int32_t)n_ids, L);
    const int64_t start[] = {0, 3, 3 + L}; /* the prefix, then the whole text */
    int32_t both[128];
    memcpy(both, ids, 3 * sizeof *ids);
    memcpy(both + 3, ids, (size_t)L * sizeof *ids);
    kiln_embeddings *pre = NULL;
    assert_int_equal(embed_tokens(e, both, start, 2, &pre, NULL), KILN_OK);
    assert_true(test_max_abs_diff(pre->data, tok->data, 3 * 64) <= 1e-5);
    assert_true(test_max_abs_diff(pre->data + pre->row[1] * 64, tok->data, (int64_t)L * 64) <=
                1e-5);
    assert_true(test_max_abs_diff(pre->data + 2 * 64, tok->data + (L - 1) * 64, 64) > 1e-3);
    kiln_embeddings_free(pre);
    kiln_embed_ctx_free(e);
    /* mean, cls (the first token) and last from the per-token vectors */
    kiln_pooling modes[] = {KILN_POOLING_MEAN, KILN_POOLING_CLS, KILN_POOLING_LAST};
    for (int k = 0; k < 3; k++) {
        p.pooling = modes[k];
        e = test_embed_ctx(m, p);
        assert_int_equal(kiln_embed_pooling(e), modes[k]);
        r = test_embed_ok(e, t, 1);
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
    kiln_embeddings_free(tok);
    kiln_model_free(m);
}

/* <arch>.pooling_type and tokenizer.ggml.add_eos_token from the file. */
static void test_metadata(void **state) {
    (void)state;
    char src[512], dst[512];
    synth_decoder("embdec-meta-src.gguf", ARCH_LLAMA, KILN_TYPE_Q8_0, 2, src, sizeof src);
    test_tmp_path("embdec-meta.gguf", dst, sizeof dst);
    const struct key_set mean_eos[] = {{"llama.pooling_type", false, 1},
                                       {"tokenizer.ggml.add_eos_token", true, 1}};
    copy_with_keys(src, dst, mean_eos, 2);
    kiln_model *m = test_load_model(dst);
    int32_t bos = kiln_token_bos(m), eos = kiln_token_eos(m);
    assert_true(bos >= 0 && eos >= 0);
    kiln_embed_params p = kiln_embed_default_params();
    kiln_embed_ctx *e = test_embed_ctx(m, p);
    assert_int_equal(kiln_embed_pooling(e), KILN_POOLING_MEAN);
    /* a text gets BOS and EOS; so do ids that lack them */
    int32_t *buf = NULL, tf;
    size_t cap = 0, n;
    assert_int_equal(embed_input_tokens(e, 0, "ab", 2, NULL, 0, 0, &buf, &cap, &n, &tf), KILN_OK);
    assert_true(n >= 3);
    assert_int_equal(buf[0], bos);
    assert_int_equal(buf[n - 1], eos);
    const int32_t ids[] = {100, 101};
    assert_int_equal(embed_input_tokens(e, 0, NULL, 0, ids, 2, 0, &buf, &cap, &n, &tf), KILN_OK);
    assert_int_equal(n, 4);
    assert_int_equal(buf[0], bos);
    assert_int_equal(buf[1], 100);
    assert_int_equal(buf[3], eos);
    /* truncation keeps EOS last */
    char longt[2048];
    size_t o = 0;
    for (int i = 0; i < 300; i++) o += (size_t)snprintf(longt + o, sizeof longt - o, "a b ");
    assert_int_equal(embed_input_tokens(e, 5, longt, o, NULL, 0, 1, &buf, &cap, &n, &tf), KILN_OK);
    assert_int_equal(n, 512);
    assert_true(tf > 512);
    assert_int_equal(buf[511], eos);
    assert_int_equal(embed_input_tokens(e, 5, longt, o, NULL, 0, 0, &buf, &cap, &n, &tf),
                     KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "input 5"));
    kiln_embed_ctx_free(e);
    kiln_model_free(m);

    /* EOS only, and the same id as BOS (as in Qwen3-Embedding's files): it
     * is appended, never prepended */
    const struct key_set eos_only[] = {{"tokenizer.ggml.add_bos_token", true, 0},
                                       {"tokenizer.ggml.add_eos_token", true, 1},
                                       {"tokenizer.ggml.eos_token_id", false, (uint32_t)bos}};
    copy_with_keys(src, dst, eos_only, 3);
    m = test_load_model(dst);
    assert_int_equal(kiln_token_eos(m), bos);
    e = test_embed_ctx(m, p);
    assert_int_equal(kiln_embed_pooling(e), KILN_POOLING_LAST);
    assert_int_equal(embed_input_tokens(e, 0, NULL, 0, ids, 2, 0, &buf, &cap, &n, &tf), KILN_OK);
    assert_int_equal(n, 3);
    assert_int_equal(buf[0], 100);
    assert_int_equal(buf[2], bos);
    assert_int_equal(embed_input_tokens(e, 0, "ab", 2, NULL, 0, 0, &buf, &cap, &n, &tf), KILN_OK);
    assert_true(n >= 2 && buf[0] != bos && buf[n - 1] == bos);
    free(buf);
    kiln_embed_ctx_free(e);
    kiln_model_free(m);
}

/* ---- bad input, halving, the finder ---- */

static void expect_error(kiln_embed_ctx *e, const char *const *t, int32_t n, kiln_status want,
                         const char *const *parts) {
    kiln_embeddings *r = (kiln_embeddings *)1;
    kiln_status st = kiln_embed(e, t, NULL, n, &r, NULL);
    assert_int_equal(st, want);
    assert_null(r);
    for (int i = 0; parts && parts[i]; i++)
        if (!strstr(kiln_last_error(), parts[i]))
            fail_msg("error '%s' lacks '%s'", kiln_last_error(), parts[i]);
}

static void test_bad_input(void **state) {
    (void)state;
    char path[512];
    synth_decoder("embdec-bad.gguf", ARCH_QWEN2, KILN_TYPE_Q8_0, 2, path, sizeof path);
    kiln_model *m = test_load_model(path);
    kiln_embed_ctx *e = test_embed_ctx(m, kiln_embed_default_params());
    const char *ok = "fine";
    expect_error(e, &ok, 0, KILN_ERR_INVALID_ARG, (const char *[]){"no inputs", NULL});
    const char *t2[] = {"fine", ""};
    expect_error(e, t2, 2, KILN_ERR_INVALID_ARG, (const char *[]){"input 1", "empty", NULL});
    const char *t3[] = {"fine", "ok", "bad \xc3\x28 utf8"};
    expect_error(e, t3, 3, KILN_ERR_INVALID_ARG,
                 (const char *[]){"input 2", "UTF-8", "offset 4", NULL});
    const char *t4[] = {"fine", NULL};
    expect_error(e, t4, 2, KILN_ERR_INVALID_ARG, (const char *[]){"input 1", NULL});
    char longt[4096];
    size_t o = 0;
    for (int i = 0; i < 400; i++) o += (size_t)snprintf(longt + o, sizeof longt - o, "a b ");
    const char *t5[] = {"fine", "ok", "x", longt};
    expect_error(e, t5, 4, KILN_ERR_RANGE,
                 (const char *[]){"input 3", "tokens", "context of 512", NULL});
    /* ids outside the vocabulary (the batcher's path) */
    int32_t *buf = NULL, tf;
    size_t cap = 0, n;
    const int32_t bad[] = {5, 400};
    assert_int_equal(embed_input_tokens(e, 2, NULL, 0, bad, 2, 0, &buf, &cap, &n, &tf),
                     KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "input 2"));
    free(buf);
    kiln_embed_ctx_free(e);
    kiln_embed_params p = kiln_embed_default_params();
    p.truncate = 1;
    e = test_embed_ctx(m, p);
    kiln_embeddings *r = test_embed_ok(e, t5, 4);
    assert_int_equal(r->n_tokens[3], 512);
    assert_true(r->truncated_from[3] > 512);
    assert_int_equal(r->truncated_from[0], 0);
    kiln_embeddings_free(r);
    kiln_embed_ctx_free(e);
    kiln_model_free(m);
}

/* A budget below what the batch needs halves it (at most 3 times), and the
 * vectors do not change. */
static void test_halving(void **state) {
    (void)state;
    char path[512];
    synth_decoder("embdec-oom.gguf", ARCH_LLAMA, KILN_TYPE_Q8_0, 2, path, sizeof path);
    kiln_model *m = test_load_model(path);
    char **t = mixed_texts(32, 8, 9); /* each text well under 128 tokens */
    kiln_embed_params p = kiln_embed_default_params();
    p.n_threads = 2;
    p.batch_tokens = 1024;
    kiln_embed_ctx *e = test_embed_ctx(m, p);
    kiln_embeddings *ref = test_embed_ok(e, (const char *const *)t, 32);
    kiln_embed_ctx_free(e);
    /* what a 128-token context takes, on a pool of the same size */
    kiln_status st;
    kiln_pool *pool = kiln_pool_create(2, &st);
    struct llama_ctx_params lp = {.n_ctx = 512,
                                  .n_batch = 128,
                                  .n_seq = 1,
                                  .type_k = KILN_TYPE_F16,
                                  .type_v = KILN_TYPE_F16,
                                  .embed = true};
    llama_ctx *lc = llama_ctx_create(engine_model_llama(m), &lp, pool, &st);
    assert_non_null(lc);
    uint64_t kv, compute;
    llama_ctx_memory(lc, &kv, &compute);
    llama_ctx_free(lc);
    kiln_pool_destroy(pool);
    p.mem_budget = kv + compute + 1;
    e = test_embed_ctx(m, p);
    kiln_embeddings *r = NULL;
    kiln_embed_stats stats;
    st = kiln_embed(e, (const char *const *)t, NULL, 32, &r, &stats);
    if (st) print_error("embed: %s\n", kiln_last_error());
    assert_int_equal(st, KILN_OK);
    assert_int_equal(stats.n_halvings, 3);
    assert_int_equal(kiln_embed_batch_tokens(e), 128);
    assert_true(test_max_abs_diff(r->data, ref->data, 32 * (int64_t)r->dim) <= 1e-5);
    kiln_embeddings_free(r);
    kiln_embed_ctx_free(e);
    p.mem_budget = (kv + compute) / 2;
    e = test_embed_ctx(m, p);
    r = NULL;
    assert_int_equal(kiln_embed(e, (const char *const *)t, NULL, 32, &r, &stats), KILN_ERR_NOMEM);
    assert_non_null(strstr(kiln_last_error(), "halved 3 times"));
    assert_null(r);
    kiln_embed_ctx_free(e);
    /* the finder runs on a decoder too */
    int32_t sizes[] = {64, 256};
    kiln_embed_bench_point pts[2];
    int32_t best;
    p.mem_budget = 0;
    assert_int_equal(
        kiln_embed_find_batch(m, &p, (const char *const *)t, NULL, 32, sizes, 2, pts, &best),
        KILN_OK);
    assert_true(best == 0 || best == 1);
    assert_true(pts[0].tokens_per_s > 0 && pts[1].tokens_per_s > 0);
    free_texts(t, 32);
    kiln_embeddings_free(ref);
    kiln_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference),        cmocka_unit_test(test_hidden_is_generation),
        cmocka_unit_test(test_invariance_synth), cmocka_unit_test(test_invariance_data),
        cmocka_unit_test(test_pooling),          cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_bad_input),        cmocka_unit_test(test_halving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

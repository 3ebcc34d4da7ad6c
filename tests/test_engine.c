/* test_engine.c - the generation engine's forward pass machinery: several
 * sequences in one context (a batched step equals each sequence alone),
 * cache truncation and longest-common-prefix reuse, tiled attention against
 * a naive reference, F16/Q8_0 KV caches against F32, context memory against
 * model/memory.h's estimate, and the errors of the sequence API.
 *
 * Most tests run on small synthetic llamas written by synth_write, so a
 * fresh clone tests itself; the KV-type tests also run on the shared models
 * when KILN_TEST_DATA has them (and say so when it does not).
 */
#include "testutil.h"

#include "base/mem.h"
#include "compute/kernels.h"
#include "compute/types.h"
#include "kiln.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/memory.h"
#include "model/synth.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A synthetic llama: head size 32 (so Q8_0 caches apply), GQA 4:2. */
static const char *synth_model(const char *name, kiln_type type, char *path, size_t cap) {
    struct synth_params sp = {.hp = {.arch = arch_get(ARCH_LLAMA),
                                     .n_embd = 128,
                                     .n_layer = 2,
                                     .n_head = 4,
                                     .n_head_kv = 2,
                                     .n_ff = 256,
                                     .n_ctx_train = 512,
                                     .n_vocab = 320,
                                     .rope_freq_base = 10000.0f,
                                     .norm_eps = 1e-5f},
                              .type = type,
                              .seed = 7,
                              .n_threads = 1};
    return test_write_synth(name, &sp, path, cap);
}

static kiln_model *load(const char *path) {
    kiln_status st;
    kiln_model *m = kiln_model_load(path, &st);
    if (!m) print_message("load %s: %s\n", path, kiln_last_error());
    assert_non_null(m);
    return m;
}

static kiln_ctx *ctx(kiln_model *m, int32_t n_ctx, int32_t n_batch, int32_t n_seq, kiln_type kv,
                     int32_t threads) {
    kiln_ctx_params p = kiln_ctx_default_params();
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    p.n_seq_max = n_seq;
    p.n_threads = threads;
    p.type_k = p.type_v = kv;
    kiln_status st;
    kiln_ctx *c = kiln_ctx_create(m, &p, &st);
    if (!c) print_message("ctx: %s\n", kiln_last_error());
    assert_non_null(c);
    return c;
}

/* Deterministic token ids in [3, n_vocab). */
static void fill_tokens(int32_t *t, int32_t n, int32_t n_vocab, uint64_t seed) {
    uint64_t s = seed;
    for (int32_t i = 0; i < n; i++)
        t[i] = 3 + (int32_t)(test_rand_u64(&s) % (uint64_t)(n_vocab - 3));
}

/* ---- several sequences ---- */

/* Three sequences stepped together - prompts split into chunks that share
 * steps with other sequences' single-token decodes - give the logits each
 * gets alone, token by token. */
static void run_batched_vs_alone(kiln_type wtype, kiln_type kv) {
    char path[512];
    kiln_model *m = load(synth_model("eng-batch.gguf", wtype, path, sizeof path));
    int32_t nv = kiln_model_n_vocab(m);
    enum { NS = 3, NP_MAX = 40, NG = 6 };
    const int32_t np[NS] = {37, 5, 21};
    int32_t prompt[NS][NP_MAX + NG];
    for (int s = 0; s < NS; s++) fill_tokens(prompt[s], np[s] + NG, nv, 100 + (uint64_t)s);
    /* alone: the prompt at once (all logits), then NG single tokens */
    float *ref = malloc((size_t)NS * (NP_MAX + NG) * (size_t)nv * sizeof *ref);
    kiln_ctx *one = ctx(m, 128, 64, 1, kv, 2);
    for (int s = 0; s < NS; s++) {
        float *r = ref + (size_t)s * (NP_MAX + NG) * (size_t)nv;
        kiln_ctx_reset(one);
        assert_int_equal(kiln_decode(one, prompt[s], np[s], r, 1), KILN_OK);
        for (int g = 0; g < NG; g++)
            assert_int_equal(
                kiln_decode(one, &prompt[s][np[s] + g], 1, r + (size_t)(np[s] + g) * nv, 0),
                KILN_OK);
    }
    kiln_ctx_free(one);

    /* together: n_batch 32 forces A's prompt into two chunks */
    kiln_ctx *c = ctx(m, 128, 32, NS, kv, 2);
    int32_t seq[NS] = {0};
    assert_int_equal(kiln_seq_free(c, 0), KILN_OK); /* start from a clean slate */
    for (int s = 0; s < NS; s++) assert_int_equal(kiln_seq_create(c, &seq[s]), KILN_OK);
    assert_int_equal(seq[0], 0);
    assert_int_equal(seq[2], 2);
    float *got = malloc((size_t)NS * (NP_MAX + NG) * (size_t)nv * sizeof *got);
    int32_t fed[NS] = {0};
    double worst = 0;
    for (int step = 0; step < 20; step++) {
        kiln_seq_batch it[NS];
        int n_it = 0, budget = 32;
        for (int s = 0; s < NS; s++) {
            int32_t total = np[s] + NG;
            if (fed[s] >= total) continue;
            /* prompt tokens go in chunks (all logits), continuation one at a time */
            int32_t n = fed[s] < np[s] ? np[s] - fed[s] : 1;
            if (s == 0 && fed[s] < np[s]) n = n > 24 ? 24 : n; /* A: 24 + 13 */
            if (step == 0 && s == 2) continue;                 /* C joins a step late */
            if (n > budget) n = budget;
            if (n <= 0) continue;
            budget -= n;
            it[n_it++] = (kiln_seq_batch){.seq = seq[s],
                                          .tokens = &prompt[s][fed[s]],
                                          .n_tokens = n,
                                          .logits = got + ((size_t)s * (NP_MAX + NG) + fed[s]) * nv,
                                          .all_logits = fed[s] < np[s]};
            fed[s] += n;
        }
        if (!n_it) break;
        assert_int_equal(kiln_decode_batch(c, it, n_it), KILN_OK);
    }
    for (int s = 0; s < NS; s++) {
        assert_int_equal(fed[s], np[s] + NG);
        assert_int_equal(kiln_seq_n_past(c, seq[s]), np[s] + NG);
        size_t off = (size_t)s * (NP_MAX + NG) * nv, len = (size_t)(np[s] + NG) * nv;
        worst = fmax(worst, test_rel_diff(got + off, ref + off, len));
    }
    print_message("  %s weights, %s KV: batched vs alone, max relative difference %.3g\n",
                  kiln_type_name(wtype), kiln_type_name(kv), worst);
    assert_true(worst <= 1e-5);
    free(ref);
    free(got);
    kiln_ctx_free(c);
    kiln_model_free(m);
    remove(path);
}

static void test_batched_equals_alone(void **state) {
    (void)state;
    run_batched_vs_alone(KILN_TYPE_F32, KILN_TYPE_F32);
    run_batched_vs_alone(KILN_TYPE_Q8_0, KILN_TYPE_F16);
    run_batched_vs_alone(KILN_TYPE_Q4_0, KILN_TYPE_Q8_0);
}

/* Truncating a sequence and feeding other tokens equals a fresh run of the
 * resulting token list; kiln_generate_tokens reuses the longest common
 * prefix. */
static void test_truncate(void **state) {
    (void)state;
    char path[512];
    kiln_model *m = load(synth_model("eng-trunc.gguf", KILN_TYPE_Q8_0, path, sizeof path));
    int32_t nv = kiln_model_n_vocab(m);
    int32_t a[40], b[40];
    fill_tokens(a, 40, nv, 1);
    fill_tokens(b, 40, nv, 2);
    memcpy(b, a, 12 * sizeof *a); /* b shares a's first 12 tokens */
    float *la = malloc((size_t)28 * nv * sizeof *la), *lb = malloc((size_t)28 * nv * sizeof *lb);
    kiln_ctx *c = ctx(m, 64, 16, 2, KILN_TYPE_F16, 2);
    int32_t s1;
    assert_int_equal(kiln_seq_create(c, &s1), KILN_OK);
    assert_int_equal(s1, 1);
    kiln_seq_batch it = {.seq = s1, .tokens = a, .n_tokens = 16};
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_OK);
    it = (kiln_seq_batch){.seq = s1, .tokens = a + 16, .n_tokens = 4};
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_OK);
    assert_int_equal(kiln_seq_truncate(c, s1, 12), KILN_OK);
    assert_int_equal(kiln_seq_n_past(c, s1), 12);
    it = (kiln_seq_batch){
        .seq = s1, .tokens = b + 12, .n_tokens = 16, .logits = la, .all_logits = 1};
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_OK);
    /* fresh: sequence 0 of the same context, b[0..28) */
    assert_int_equal(kiln_decode(c, b, 28, lb, 1), KILN_OK);
    double d = test_rel_diff(la, lb + (size_t)12 * nv, (size_t)16 * nv);
    print_message("  truncate + re-feed vs fresh: max relative difference %.3g\n", d);
    assert_true(d <= 1e-5);

    /* longest-common-prefix reuse in kiln_generate_tokens */
    kiln_gen_params gp = kiln_gen_default_params();
    gp.n_predict = 1;
    gp.sampling.temp = 0;
    kiln_gen_stats st;
    kiln_ctx_reset(c);
    assert_int_equal(kiln_generate_tokens(c, a, 30, &gp, NULL, NULL, &st), KILN_OK);
    assert_int_equal(st.n_cached, 0);
    assert_int_equal(kiln_generate_tokens(c, b, 30, &gp, NULL, NULL, &st), KILN_OK);
    assert_int_equal(st.n_cached, 12);
    assert_int_equal(st.n_prompt, 18);
    assert_int_equal(kiln_generate_tokens(c, b, 30, &gp, NULL, NULL, &st), KILN_OK);
    assert_int_equal(st.n_cached, 29); /* all but the last, run again for its logits */
    assert_int_equal(kiln_generate_tokens(c, b, 20, &gp, NULL, NULL, &st), KILN_OK);
    assert_int_equal(st.n_cached, 19);
    free(la);
    free(lb);
    kiln_ctx_free(c);
    kiln_model_free(m);
    remove(path);
}

/* ---- tiled attention ---- */

/* Every ISA's attention kernels (axpy, exp_sum) against the scalar reference. */
static void test_attention_kernels(void **state) {
    (void)state;
    static const kiln_type types[] = {KILN_TYPE_F32, KILN_TYPE_F16, KILN_TYPE_Q8_0};
    static const int64_t ns[] = {32, 37, 64, 96, 128, 200};
    const struct kiln_kernels *ref = kiln_kernels_get(KILN_ISA_SCALAR);
    static const int64_t rows[] = {1, 3, 64};
    float x[256], o_ref[256], o[256], w[64];
    char *row = malloc(64 * 1024);
    uint64_t rs = 3;
    for (int i = 0; i < 256; i++) x[i] = test_rand_normal(&rs);
    for (int i = 0; i < 64; i++) w[i] = 0.1f + (float)(i % 5) * 0.2f;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        double worst = 0;
        for (size_t ti = 0; ti < 3; ti++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
                for (size_t ri = 0; ri < 3; ri++) {
                    kiln_type t = types[ti];
                    int64_t n = ns[ni], nr = rows[ri];
                    if (n % kiln_type_info(t)->blck) continue;
                    assert_non_null(k->axpy[t]);
                    size_t stride = kiln_row_size(t, n) + 8; /* rows need not be adjacent */
                    for (int64_t r = 0; r < nr; r++)
                        ref->from_float[t](x + (r * 7) % 50, row + (size_t)r * stride, n);
                    for (int64_t i = 0; i < n; i++) o_ref[i] = o[i] = 0.25f * (float)i - 3.0f;
                    ref->axpy[t](n, o_ref, row, stride, w, nr);
                    k->axpy[t](n, o, row, stride, w, nr);
                    worst = fmax(worst, test_rel_diff(o, o_ref, (size_t)n));
                }
        print_message("  axpy %s vs scalar: max relative difference %.3g\n",
                      kiln_isa_name((enum kiln_isa)isa), worst);
        assert_true(worst <= 1e-6);
        /* exp_sum over scores reaching far below the maximum, odd lengths included */
        double worst_e = 0, worst_s = 0;
        for (int64_t n = 1; n <= 70; n += 3) {
            float se[70], sr[70], max = -1e30f;
            for (int64_t i = 0; i < n; i++) {
                se[i] = sr[i] = (float)(i % 7) * 3.1f - 4.0f * (float)i + x[i];
                max = fmaxf(max, se[i]);
            }
            float a = k->exp_sum(se, n, max), b = ref->exp_sum(sr, n, max);
            for (int64_t i = 0; i < n; i++)
                worst_e = fmax(worst_e, fabs((double)se[i] - sr[i]) / fmax(1e-30, fabs(sr[i])));
            worst_s = fmax(worst_s, fabs((double)a - b) / b);
        }
        print_message("  exp_sum %s vs scalar: max relative difference %.3g (values), %.3g (sum)\n",
                      kiln_isa_name((enum kiln_isa)isa), worst_e, worst_s);
        assert_true(worst_e <= 4e-7 && worst_s <= 1e-6);
    }
    free(row);
}

/* softmax(q.K/sqrt(hd)) V in double over float rows. */
static void naive_attention(const float *q, const float *K, const float *V, int hd, int n,
                            float *out) {
    double *s = malloc((size_t)n * sizeof *s), mx = -INFINITY, sum = 0;
    for (int t = 0; t < n; t++) {
        double d = 0;
        for (int i = 0; i < hd; i++) d += (double)q[i] * K[(size_t)t * hd + i];
        s[t] = d / sqrt((double)hd);
        mx = fmax(mx, s[t]);
    }
    for (int t = 0; t < n; t++) sum += (s[t] = exp(s[t] - mx));
    for (int i = 0; i < hd; i++) {
        double o = 0;
        for (int t = 0; t < n; t++) o += s[t] * V[(size_t)t * hd + i];
        out[i] = (float)(o / sum);
    }
    free(s);
}

/* Three query heads sharing K and V, against the naive formula in double
 * on the values the kernels see (the cache's rows and the queries in K's
 * partner type), at lengths inside one tile, at its edges and across many. */
static void test_tiled_attention(void **state) {
    (void)state;
    const struct kiln_kernels *k = kiln_kernels_best();
    static const int lens[] = {1, 7, 63, 64, 65, 130, 200, 1000};
    static const kiln_type types[] = {KILN_TYPE_F32, KILN_TYPE_F16, KILN_TYPE_Q8_0};
    enum { HD = 64, NQ = 3, NMAX = 1000 };
    float *K = malloc((size_t)NMAX * HD * 4), *V = malloc((size_t)NMAX * HD * 4);
    float *Kd = malloc((size_t)NMAX * HD * 4), *Vd = malloc((size_t)NMAX * HD * 4);
    char *Kc = malloc((size_t)NMAX * HD * 4), *Vc = malloc((size_t)NMAX * HD * 4);
    float q[NQ * HD], qd[NQ * HD], out[NQ * HD], want[NQ * HD];
    void *scratch = kiln_aligned_alloc(64, llama_attend_scratch(HD, NQ));
    uint64_t rs = 5;
    for (int i = 0; i < NMAX * HD; i++) {
        K[i] = test_rand_normal(&rs);
        V[i] = test_rand_normal(&rs);
    }
    for (int i = 0; i < NQ * HD; i++) q[i] = (i < HD ? 0.3f : 1.0f) * test_rand_normal(&rs);
    for (size_t ti = 0; ti < 3; ti++) {
        kiln_type t = types[ti];
        size_t row = kiln_row_size(t, HD);
        double worst = 0;
        for (int r = 0; r < NMAX; r++) { /* the cache's rows and their exact values */
            k->from_float[t](K + r * HD, Kc + r * row, HD);
            k->from_float[t](V + r * HD, Vc + r * row, HD);
            k->to_float[t](Kc + r * row, Kd + r * HD, HD);
            k->to_float[t](Vc + r * row, Vd + r * HD, HD);
        }
        kiln_type qt = kiln_vec_dot_type(t);
        for (int h = 0; h < NQ; h++) {
            char qc[512];
            k->from_float[qt](q + h * HD, qc, HD);
            k->to_float[qt](qc, qd + h * HD, HD);
        }
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int n = lens[li];
            for (int h = 0; h < NQ; h++) naive_attention(qd + h * HD, Kd, Vd, HD, n, want + h * HD);
            llama_attend(k, t, t, HD, NQ, q, Kc, Vc, n, out, scratch);
            double d = test_rel_diff(out, want, (size_t)NQ * HD);
            worst = fmax(worst, d);
            if (d > 1e-5)
                print_message("    %s, %d keys: relative difference %.3g\n", kiln_type_name(t), n,
                              d);
        }
        print_message("  tiled attention %s: max relative difference to naive %.3g\n",
                      kiln_type_name(t), worst);
        assert_true(worst <= 1e-5);
    }
    kiln_aligned_free(scratch);
    free(K), free(V), free(Kd), free(Vd), free(Kc), free(Vc);
}

/* ---- KV cache types ---- */

/* Every position's logits with a kv-typed cache against an F32 cache, in
 * units of the F32 logits' standard deviation (the README's last_logits
 * thresholds: RMS <= 0.10 std, max <= 0.40 std). */
static void kv_type_case(kiln_model *m, const int32_t *toks, int32_t n, kiln_type kv,
                         const char *what) {
    int32_t nv = kiln_model_n_vocab(m);
    float *ref = malloc((size_t)n * nv * sizeof *ref), *got = malloc((size_t)n * nv * sizeof *got);
    kiln_ctx *c32 = ctx(m, 256, 64, 1, KILN_TYPE_F32, 2), *ck = ctx(m, 256, 64, 1, kv, 2);
    assert_int_equal(kiln_decode(c32, toks, n, ref, 1), KILN_OK);
    assert_int_equal(kiln_decode(ck, toks, n, got, 1), KILN_OK);
    double worst_rms = 0, worst_max = 0;
    for (int32_t i = 0; i < n; i++) {
        const float *r = ref + (size_t)i * nv, *g = got + (size_t)i * nv;
        double mean = 0, var = 0, ss = 0, mx = 0;
        for (int32_t v = 0; v < nv; v++) mean += r[v];
        mean /= nv;
        for (int32_t v = 0; v < nv; v++) {
            var += (r[v] - mean) * (r[v] - mean);
            double d = fabs((double)g[v] - r[v]);
            ss += d * d;
            mx = fmax(mx, d);
        }
        double sd = sqrt(var / nv);
        worst_rms = fmax(worst_rms, sqrt(ss / nv) / sd);
        worst_max = fmax(worst_max, mx / sd);
    }
    print_message("  %s, %s KV vs F32 over %d positions: worst RMS %.4f std, max %.4f std\n", what,
                  kiln_type_name(kv), n, worst_rms, worst_max);
    assert_true(worst_rms <= 0.10);
    assert_true(worst_max <= 0.40);
    free(ref);
    free(got);
    kiln_ctx_free(c32);
    kiln_ctx_free(ck);
}

static void test_kv_types_synth(void **state) {
    (void)state;
    char path[512];
    kiln_model *m = load(synth_model("eng-kv.gguf", KILN_TYPE_Q8_0, path, sizeof path));
    int32_t toks[200];
    fill_tokens(toks, 200, kiln_model_n_vocab(m), 9);
    kv_type_case(m, toks, 200, KILN_TYPE_F16, "synthetic");
    kv_type_case(m, toks, 200, KILN_TYPE_Q8_0, "synthetic");
    kiln_model_free(m);
    remove(path);
}

static void kv_shared_case(const char *model, bool q8) {
    char rel[256], path[1024];
    snprintf(rel, sizeof rel, "models/%s.gguf", model);
    if (!test_data_path(rel, path, sizeof path)) {
        print_message("  SKIP %s: not found (set KILN_TEST_DATA to the shared data folder)\n", rel);
        return;
    }
    kiln_model *m = load(path);
    static const char *text =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in "
        "the park with her friends. One day, she found a big red ball under a tree, and she "
        "wanted to share it with everyone she knew.";
    int32_t toks[256];
    size_t n;
    assert_int_equal(kiln_tokenize(m, text, strlen(text), 1, toks, 256, &n), KILN_OK);
    kv_type_case(m, toks, (int32_t)n, KILN_TYPE_F16, model);
    if (q8) kv_type_case(m, toks, (int32_t)n, KILN_TYPE_Q8_0, model);
    kiln_model_free(m);
}

static void test_kv_types_shared(void **state) {
    (void)state;
    char probe[1024];
    if (!test_data_path("models/stories260K.gguf", probe, sizeof probe)) {
        print_message("SKIP: models/stories260K.gguf not found (set KILN_TEST_DATA to the shared "
                      "data folder)\n");
        skip();
    }
    kv_shared_case("stories260K", false); /* head size 8: no Q8_0 */
    kv_shared_case("TinyStories-656K-Q8_0", false);
    kv_shared_case("mini-llama-spm-Q8_0", true);
    kv_shared_case("mini-qwen2-Q8_0", true);
}

/* ---- memory ---- */

static void test_memory_estimate(void **state) {
    (void)state;
    char path[512];
    synth_model("eng-mem.gguf", KILN_TYPE_Q8_0, path, sizeof path);
    kiln_model *m = load(path);
    kiln_status st;
    gguf_file *f = gguf_open(path, &st);
    assert_non_null(f);
    struct arch_hparams hp;
    assert_int_equal(arch_hparams_load(f, &hp), KILN_OK);
    static const struct {
        int32_t n_ctx, n_batch, n_seq;
        kiln_type kv;
    } cases[] = {{512, 64, 1, KILN_TYPE_F16},
                 {512, 512, 1, KILN_TYPE_F32},
                 {256, 32, 4, KILN_TYPE_Q8_0},
                 {2048, 256, 2, KILN_TYPE_F16}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kiln_ctx *c = ctx(m, cases[i].n_ctx, cases[i].n_batch, cases[i].n_seq, cases[i].kv, 2);
        uint64_t kv = 0, compute = 0;
        kiln_ctx_memory(c, &kv, &compute);
        struct mem_params mp = {(uint32_t)cases[i].n_ctx, (uint32_t)cases[i].n_seq,
                                (uint32_t)cases[i].n_batch, cases[i].kv};
        struct mem_estimate est;
        assert_int_equal(mem_estimate(&hp, 0, &mp, &est), KILN_OK);
        double ratio = (double)(kv + compute) / (double)(est.kv_cache + est.compute);
        print_message("  ctx %d batch %d seq %d %s: KV %llu (estimate %llu), compute %llu "
                      "(estimate %llu), total/estimate %.3f\n",
                      cases[i].n_ctx, cases[i].n_batch, cases[i].n_seq, kiln_type_name(cases[i].kv),
                      (unsigned long long)kv, (unsigned long long)est.kv_cache,
                      (unsigned long long)compute, (unsigned long long)est.compute, ratio);
        assert_true(kv == est.kv_cache);
        assert_true(ratio > 0.95 && ratio < 1.05);
        kiln_ctx_free(c);
    }
    gguf_close(f);
    kiln_model_free(m);
    remove(path);
}

/* ---- errors ---- */

static void test_errors(void **state) {
    (void)state;
    char path[512];
    kiln_model *m = load(synth_model("eng-err.gguf", KILN_TYPE_Q8_0, path, sizeof path));
    kiln_ctx *c = ctx(m, 16, 8, 2, KILN_TYPE_F16, 1);
    int32_t t[20], s1, s2;
    float lg[320];
    fill_tokens(t, 20, kiln_model_n_vocab(m), 3);
    assert_int_equal(kiln_seq_create(c, &s1), KILN_OK);
    assert_int_equal(kiln_seq_create(c, &s2), KILN_ERR_RANGE); /* both in use */
    assert_non_null(strstr(kiln_last_error(), "2 sequences"));
    kiln_seq_batch it = {.seq = 5, .tokens = t, .n_tokens = 1};
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_ERR_INVALID_ARG);
    assert_non_null(strstr(kiln_last_error(), "sequence id 5"));
    it.seq = -1;
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_ERR_INVALID_ARG);
    /* too many tokens for one step (n_batch 8) */
    kiln_seq_batch two[2] = {{.seq = 0, .tokens = t, .n_tokens = 5},
                             {.seq = s1, .tokens = t, .n_tokens = 4, .logits = lg}};
    assert_int_equal(kiln_decode_batch(c, two, 2), KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "9 tokens"));
    assert_int_equal(kiln_seq_n_past(c, 0), 0); /* nothing ran */
    /* the same sequence twice */
    two[1].seq = 0;
    assert_int_equal(kiln_decode_batch(c, two, 2), KILN_ERR_INVALID_ARG);
    two[1].seq = s1;
    two[0].n_tokens = 4;
    assert_int_equal(kiln_decode_batch(c, two, 2), KILN_OK);
    assert_int_equal(kiln_seq_n_past(c, s1), 4);
    /* past the context: 4 + 8 fits, 12 + 5 does not */
    it = (kiln_seq_batch){.seq = s1, .tokens = t, .n_tokens = 8};
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_OK);
    it.n_tokens = 5;
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "position 12"));
    assert_non_null(strstr(kiln_last_error(), "context of 16"));
    assert_int_equal(kiln_seq_n_past(c, s1), 12);
    /* a bad token id, an empty item */
    int32_t bad = 100000;
    it = (kiln_seq_batch){.seq = s1, .tokens = &bad, .n_tokens = 1};
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_ERR_RANGE);
    it = (kiln_seq_batch){.seq = s1, .tokens = t, .n_tokens = 0};
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_ERR_INVALID_ARG);
    /* truncation bounds; freed sequences */
    assert_int_equal(kiln_seq_truncate(c, s1, 13), KILN_ERR_RANGE);
    assert_int_equal(kiln_seq_truncate(c, s1, -1), KILN_ERR_RANGE);
    assert_int_equal(kiln_seq_free(c, s1), KILN_OK);
    assert_int_equal(kiln_seq_n_past(c, s1), -1);
    assert_int_equal(kiln_seq_free(c, s1), KILN_ERR_INVALID_ARG);
    it = (kiln_seq_batch){.seq = s1, .tokens = t, .n_tokens = 1};
    assert_int_equal(kiln_decode_batch(c, &it, 1), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_seq_create(c, &s2), KILN_OK);
    assert_int_equal(s2, s1);
    assert_int_equal(kiln_seq_n_past(c, s2), 0);
    /* a prompt over the context names both numbers */
    assert_int_equal(kiln_generate_tokens(c, t, 20, NULL, NULL, NULL, NULL), KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "20 tokens"));
    assert_non_null(strstr(kiln_last_error(), "context of 16"));
    kiln_ctx_free(c);
    /* bad KV types */
    kiln_ctx_params p = kiln_ctx_default_params();
    p.type_k = KILN_TYPE_Q4_0;
    kiln_status st;
    assert_null(kiln_ctx_create(m, &p, &st));
    assert_int_equal(st, KILN_ERR_INVALID_ARG);
    assert_non_null(strstr(kiln_last_error(), "q4_0"));
    kiln_model_free(m);
    remove(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_kernels),    cmocka_unit_test(test_tiled_attention),
        cmocka_unit_test(test_batched_equals_alone), cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_kv_types_synth),       cmocka_unit_test(test_kv_types_shared),
        cmocka_unit_test(test_memory_estimate),      cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

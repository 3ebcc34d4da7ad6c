/* test_eval.c - the evaluation arithmetic behind `kiln perplexity` and the
 * model description and machine limits behind `kiln bench-model` (kiln.h,
 * "benchmarks and evaluation"): log-sum-exp against a direct sum and on
 * logits that would overflow exp(); top-k against a full sort, ties
 * included; the top-k KL approximation against the exact KL (equal when k
 * covers the vocabulary, a lower bound otherwise, 0 for identical
 * distributions); the description of stories260K against its tensor table;
 * a quick machine measurement giving positive figures. */
#include "testutil.h"

#include "kiln.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill_logits(float *x, int n, uint64_t seed, float scale) {
    uint64_t s = seed;
    for (int i = 0; i < n; i++) x[i] = scale * test_rand_normal(&s);
}

static void test_logsumexp(void **state) {
    (void)state;
    float x[300];
    fill_logits(x, 300, 1, 3.0f);
    double direct = 0;
    for (int i = 0; i < 300; i++) direct += exp((double)x[i]);
    assert_true(fabs(kiln_logsumexp(x, 300) - log(direct)) < 1e-9);
    /* exp(1000) overflows; the result must not */
    for (int i = 0; i < 300; i++) x[i] += 1000.0f;
    double big = kiln_logsumexp(x, 300);
    assert_true(isfinite(big));
    assert_true(fabs(big - 1000.0 - log(direct)) < 1e-3);
    float one = -5.0f;
    assert_true(fabs(kiln_logsumexp(&one, 1) + 5.0) < 1e-12);
    assert_true(isinf(kiln_logsumexp(x, 0)) && kiln_logsumexp(x, 0) < 0);
}

static int cmp_desc(const void *a, const void *b) {
    const float *x = a, *y = b;
    return (*x < *y) - (*x > *y);
}

static void test_top_k(void **state) {
    (void)state;
    enum { N = 1000 };
    float x[N], sorted[N], vals[64];
    int32_t ids[64];
    fill_logits(x, N, 7, 1.0f);
    memcpy(sorted, x, sizeof x);
    qsort(sorted, N, sizeof *sorted, cmp_desc);
    const int32_t ks[] = {1, 2, 5, 17, 64};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        int32_t k = ks[t];
        assert_int_equal(kiln_top_k(x, N, k, ids, vals), k);
        for (int32_t i = 0; i < k; i++) {
            assert_true(vals[i] == sorted[i]);
            assert_true(x[ids[i]] == vals[i]);
        }
    }
    /* ties: the lower index first; k larger than n gives n */
    float t[6] = {1, 3, 3, 0, 3, 2};
    assert_int_equal(kiln_top_k(t, 6, 10, ids, NULL), 6);
    const int32_t want[6] = {1, 2, 4, 5, 0, 3};
    for (int i = 0; i < 6; i++) assert_int_equal(ids[i], want[i]);
    assert_int_equal(kiln_top_k(t, 6, 0, ids, NULL), 0);
}

/* Exact KL(P || Q) from two full logit vectors. */
static double exact_kl(const float *p, const float *q, int n) {
    double lp = kiln_logsumexp(p, n), lq = kiln_logsumexp(q, n), kl = 0;
    for (int i = 0; i < n; i++) kl += exp(p[i] - lp) * ((p[i] - lp) - (q[i] - lq));
    return kl;
}

static void test_kl_top_k(void **state) {
    (void)state;
    enum { N = 512 };
    float p[N], q[N], vals[N];
    int32_t ids[N];
    fill_logits(p, N, 11, 2.0f);
    uint64_t s = 99;
    for (int i = 0; i < N; i++) q[i] = p[i] + 0.3f * test_rand_normal(&s);
    double lp = kiln_logsumexp(p, N), lq = kiln_logsumexp(q, N), kl;
    double exact = exact_kl(p, q, N);
    assert_true(exact > 0.01);
    /* k = the whole vocabulary: exact */
    int32_t k = kiln_top_k(p, N, N, ids, vals);
    assert_int_equal(kiln_kl_top_k(ids, vals, k, lp, q, N, lq, &kl), KILN_OK);
    assert_true(fabs(kl - exact) < 1e-9);
    /* fewer: a lower bound that tightens as k grows */
    double prev = 0;
    const int32_t ks[] = {1, 5, 20, 100};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        k = kiln_top_k(p, N, ks[t], ids, vals);
        assert_int_equal(kiln_kl_top_k(ids, vals, k, lp, q, N, lq, &kl), KILN_OK);
        assert_true(kl <= exact + 1e-12);
        assert_true(kl >= prev - 1e-12);
        prev = kl;
    }
    /* a distribution against itself: 0 */
    k = kiln_top_k(p, N, 20, ids, vals);
    assert_int_equal(kiln_kl_top_k(ids, vals, k, lp, p, N, lp, &kl), KILN_OK);
    assert_true(kl < 1e-12);
    /* an id outside Q's vocabulary */
    ids[3] = N;
    assert_int_equal(kiln_kl_top_k(ids, vals, k, lp, q, N, lq, &kl), KILN_ERR_RANGE);
}

static void test_describe(void **state) {
    (void)state;
    char buf[1024];
    const char *path = TEST_DATA_OR_SKIP("models/stories260K.gguf", buf);
    kiln_model *m = kiln_model_load(path, NULL);
    assert_non_null(m);
    kiln_model_desc d;
    assert_int_equal(kiln_model_describe(m, &d), KILN_OK);
    /* stories260K: ~260K parameters in F32, output tied to the embedding */
    assert_true(d.n_params > 200000 && d.n_params < 320000);
    assert_true(d.n_bytes == d.n_params * 4);
    assert_true(d.n_matmul_params < d.n_params);
    assert_true(d.n_matmul_params > d.n_params / 2);
    assert_int_equal(d.int8_dot, 0);
    print_message("    stories260K: %llu params, %llu bytes, %llu multiplied per token, type %s\n",
                  (unsigned long long)d.n_params, (unsigned long long)d.n_bytes,
                  (unsigned long long)d.n_matmul_params, d.ftype);
    kiln_model_free(m);
}

static void test_machine(void **state) {
    (void)state;
    kiln_machine_limits l;
    assert_int_equal(kiln_machine_measure(1, 1, &l), KILN_OK);
    assert_int_equal(l.n_threads, 1);
    assert_true(l.read_gbs > 0.1);
    assert_non_null(l.fma_isa);
    print_message("    1 thread (quick): read %.1f GB/s, FMA %.0f GFLOP/s (%s), VNNI %.0f GOPS\n",
                  l.read_gbs, l.fma_gflops, l.fma_isa, l.vnni_gops);
    assert_int_equal(kiln_machine_measure(-1, 1, &l), KILN_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logsumexp), cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_kl_top_k),  cmocka_unit_test(test_describe),
        cmocka_unit_test(test_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

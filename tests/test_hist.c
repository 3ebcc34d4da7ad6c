/* test_hist.c - the log-linear histogram: bucket edges, quantiles of known
 * distributions within HIST_REL_ERROR of the exact order statistics,
 * merging, and the cumulative counts Prometheus exports. No shared data. */
#include "testutil.h"

#include "obs/hist.h"

#include <math.h>
#include <stdlib.h>

static hist h, h2; /* 64 KiB each: not on the stack */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_buckets(void **state) {
    (void)state;
    assert_int_equal(hist_bucket(0), 0);
    assert_int_equal(hist_bucket(-1), 0);
    assert_int_equal(hist_bucket(NAN), 0);
    assert_int_equal(hist_bucket(1e12), HIST_NBUCKETS - 1);
    /* Every bucket's edges contain the values that map to it, and each
     * bucket is at most 1/HIST_SUB of its lower edge wide. */
    for (int i = 1; i < HIST_NBUCKETS; i += 37) {
        double lo = hist_bucket_lo(i), hi = hist_bucket_hi(i);
        assert_int_equal(hist_bucket(lo), i);
        assert_int_equal(hist_bucket(nextafter(hi, 0)), i);
        assert_true(hi - lo <= lo / HIST_SUB * (1 + 1e-12));
    }
    for (double v = 1e-9; v < 1e9; v *= 1.37) {
        int i = hist_bucket(v);
        assert_true(hist_bucket_lo(i) <= v && v < hist_bucket_hi(i));
    }
}

/* Quantiles of a log-normal sample (latency-like) against a sort. */
static void test_quantiles(void **state) {
    (void)state;
    enum { N = 100000 };
    double *v = malloc(N * sizeof *v);
    hist_init(&h);
    uint64_t rng = 42;
    double sum = 0;
    for (int i = 0; i < N; i++) {
        double u1 = ((test_rand_u64(&rng) >> 11) + 1.0) * 0x1p-53,
               u2 = (test_rand_u64(&rng) >> 11) * 0x1p-53;
        double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        v[i] = 0.045 * exp(0.5 * z); /* seconds, median 45 ms */
        sum += v[i];
        hist_record(&h, v[i]);
    }
    qsort(v, N, sizeof *v, cmp_double);
    assert_int_equal(h.n, N);
    assert_true(h.min == v[0] && h.max == v[N - 1]);
    assert_true(fabs(hist_mean(&h) - sum / N) < 1e-12);
    const double qs[] = {0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999};
    for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
        double exact = v[(size_t)ceil(qs[k] * N) - 1], got = hist_quantile(&h, qs[k]);
        assert_true(fabs(got - exact) <= exact * HIST_REL_ERROR);
    }
    assert_true(hist_quantile(&h, 0) == v[0]);
    assert_true(hist_quantile(&h, 1) == v[N - 1]);
    free(v);
}

static void test_merge_and_le(void **state) {
    (void)state;
    hist_init(&h);
    hist_init(&h2);
    assert_true(hist_quantile(&h, 0.5) == 0 && hist_mean(&h) == 0 && hist_count_le(&h, 1) == 0);
    for (int i = 1; i <= 100; i++) hist_record(i <= 50 ? &h : &h2, i * 1e-3); /* 1..100 ms */
    hist_record_n(&h2, 0, 10);
    hist_merge(&h, &h2);
    assert_int_equal(h.n, 110);
    assert_true(h.min == 0 && h.max == 0.1);
    assert_int_equal(hist_count_le(&h, 0), 10);
    assert_int_equal(hist_count_le(&h, 0.0255), 10 + 25);
    assert_int_equal(hist_count_le(&h, 0.0505), 10 + 50);
    assert_int_equal(hist_count_le(&h, 1), 110);
    assert_true(fabs(hist_quantile(&h, 0.5) - 0.045) <= 0.045 * HIST_REL_ERROR);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_merge_and_le),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_tune.c - the kernel tuner (compute/tune.h): the pick rule on given
 * speeds; a real measurement in which the scalar variant must lose to AVX2
 * (where the CPU has it); choices measured at load written to the cache file
 * and read back by a fresh process state; small models not measured; a
 * corrupt cache ignored and replaced; an unwritable one leaving the choices
 * in memory; KILN_ISA forcing and KILN_TUNE=off keeping the rank.
 *
 * One test measures for real (~0.5 s); the others use a fake timing source
 * (kiln_tune_set_measure_hook) that says the highest ISA has the fastest
 * matvec and scalar the fastest matmul, so the choices, the composite and
 * the cache are checked whatever the machine's load. The "model" is 16 Q4_0
 * matrices of 2048 x 2048 (36 MiB: just over KILN_TUNE_MIN_BYTES). The
 * cache lives in the test build folder (KILN_TUNE_FILE), never in the
 * user's home. */
#include "testutil.h"

#include "compute/kernels.h"
#include "compute/threadpool.h"
#include "compute/tune.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static kiln_pool *pool;
static char cache[PATH_MAX];

/* 16 Q4_0 matrices of 2048 x 2048: 36 MiB, enough to be measured at load. */
static const struct kiln_tune_shape big[] = {{KILN_TYPE_Q4_0, 2048, 2048, 16}};

static int fake_calls;

/* The fake timing source: matvec faster the higher the ISA, matmul fastest
 * on scalar; a measurement of the given shape, stamped now. */
static kiln_status fake_measure(kiln_pool *p, kiln_type type, int64_t n, int64_t nr,
                                double budget_s, struct kiln_tune_choice *out) {
    (void)budget_s;
    fake_calls++;
    memset(out, 0, sizeof *out);
    out->type = type;
    out->n_threads = p ? kiln_pool_size(p) : 1;
    out->source = KILN_TUNE_SRC_MEASURED;
    out->n = n, out->nr = nr, out->nc = KILN_TUNE_MM_COLS;
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (kiln_kernels_get((enum kiln_isa)i)) {
            out->mv_gbs[i] = 10.0 + 5.0 * i;
            out->mm_gops[i] = 100.0 - 10.0 * i;
        }
    out->mv = kiln_tune_pick(out->mv_gbs, KILN_TUNE_MARGIN);
    out->mm = kiln_tune_pick(out->mm_gops, KILN_TUNE_MARGIN);
    snprintf(out->when, sizeof out->when, "2026-12-07T12:00:00Z");
    out->seconds = 0.01;
    out->cpu_share = 1;
    return KILN_OK;
}

static int setup(void **state) {
    (void)state;
    (void)kiln_kernels_best(); /* latch the rank before any test sets KILN_ISA */
    kiln_tune_set_measure_hook(fake_measure);
    pool = kiln_pool_create(2, NULL);
    test_tmp_path("tune-test.json", cache, sizeof cache);
    return pool ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kiln_pool_destroy(pool);
    unlink(cache);
    return 0;
}

/* A fresh start: no file, nothing remembered, no KILN_ISA / KILN_TUNE. */
static void fresh(const char *path) {
    fake_calls = 0;
    unlink(path);
    setenv("KILN_TUNE_FILE", path, 1);
    unsetenv("KILN_ISA");
    unsetenv("KILN_TUNE");
    kiln_tune_forget();
}

static int have(enum kiln_isa isa) {
    return kiln_kernels_get(isa) != NULL;
}

static void test_pick(void **state) {
    (void)state;
    /* the Zen 4 Q8_0 matvec: avx2 32.6 GB/s beats avx512 20.1 */
    double zen4[KILN_ISA_COUNT] = {4.0, 32.6, 20.1};
    assert_int_equal(kiln_tune_pick(zen4, KILN_TUNE_MARGIN), KILN_ISA_AVX2);
    /* within the margin the higher ISA stays */
    double close[KILN_ISA_COUNT] = {4.0, 30.5, 30.0};
    assert_int_equal(kiln_tune_pick(close, KILN_TUNE_MARGIN), KILN_ISA_AVX512);
    double past[KILN_ISA_COUNT] = {4.0, 31.0, 30.0}; /* 3.3% faster */
    assert_int_equal(kiln_tune_pick(past, KILN_TUNE_MARGIN), KILN_ISA_AVX2);
    /* an unmeasured ISA (0) is never picked; the highest measured is the default */
    double no512[KILN_ISA_COUNT] = {4.0, 30.0, 0};
    assert_int_equal(kiln_tune_pick(no512, KILN_TUNE_MARGIN), KILN_ISA_AVX2);
    double scalar_wins[KILN_ISA_COUNT] = {9.0, 0, 8.0};
    assert_int_equal(kiln_tune_pick(scalar_wins, KILN_TUNE_MARGIN), KILN_ISA_SCALAR);
    double none[KILN_ISA_COUNT] = {0, 0, 0};
    assert_int_equal(kiln_tune_pick(none, KILN_TUNE_MARGIN), KILN_ISA_COUNT);
}

/* A real measurement: every ISA this CPU runs gets numbers, and the scalar
 * variant, several times slower than AVX2, is not chosen: when the passes
 * were clean, because it measured slower (and the choice is the faster
 * one); when other work held the CPUs (BUSY, likely under `ctest -j`),
 * because the highest ISA is then kept. */
static void test_measure(void **state) {
    (void)state;
    struct kiln_tune_choice c;
    /* one thread: a busy machine leaves fewer passes unclean than at two */
    assert_int_equal(kiln_tune_measure(NULL, KILN_TYPE_Q8_0, 2048, 1024, 0.2, &c), KILN_OK);
    assert_int_equal(c.n_threads, 1);
    assert_true(c.n == 2048 && c.nr == 1024 && c.nc == KILN_TUNE_MM_COLS);
    assert_true(c.cpu_share > 0);
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (have((enum kiln_isa)i)) assert_true(c.mv_gbs[i] > 0 && c.mm_gops[i] > 0);
    print_message("q8_0 matvec GB/s scalar %.2f avx2 %.2f avx512 %.2f; matmul GOPS %.1f %.1f "
                  "%.1f; %.2f s; %s (CPU share %.2f)\n",
                  c.mv_gbs[0], c.mv_gbs[1], c.mv_gbs[2], c.mm_gops[0], c.mm_gops[1], c.mm_gops[2],
                  c.seconds, kiln_tune_source_name(c.source), c.cpu_share);
    assert_int_equal(c.source, c.busy ? KILN_TUNE_SRC_BUSY : KILN_TUNE_SRC_MEASURED);
    if (!have(KILN_ISA_AVX2)) {
        print_message("SKIP: scalar vs AVX2: this CPU has no AVX2\n");
        return;
    }
    assert_int_not_equal(c.mv, KILN_ISA_SCALAR);
    assert_int_not_equal(c.mm, KILN_ISA_SCALAR);
    if (c.busy) {
        print_message("the CPUs were shared: the highest ISA kept\n");
        assert_int_equal(c.mv, kiln_isa_detect());
        assert_int_equal(c.mm, kiln_isa_detect());
    } else {
        assert_true(c.mv_gbs[c.mv] > c.mv_gbs[KILN_ISA_SCALAR]);
        assert_true(c.mm_gops[c.mm] > c.mm_gops[KILN_ISA_SCALAR]);
    }
    /* unsupported shapes are refused */
    assert_int_equal(kiln_tune_measure(pool, KILN_TYPE_Q4_K, 100, 8, 0.1, &c),
                     KILN_ERR_UNSUPPORTED);
}

/* A load measures the big type, writes the file; a fresh state reads the
 * same choice and numbers back without measuring; the composite runs the
 * chosen tables. */
static void test_cache_roundtrip(void **state) {
    (void)state;
    fresh(cache);
    struct kiln_kernels k;
    struct kiln_tune_choice c, r;
    assert_int_equal(kiln_tune_select(pool, 0, big, 1, 0, &k, &c, 1), 1);
    assert_int_equal(fake_calls, 1);
    assert_int_equal(c.source, KILN_TUNE_SRC_MEASURED);
    assert_int_equal(c.type, KILN_TYPE_Q4_0);
    assert_int_equal(c.n, 2048);
    assert_int_equal(c.nr, 2048);
    /* matvec and matmul chosen apart: the fake's fastest of each */
    assert_int_equal(c.mv, kiln_isa_detect());
    assert_int_equal(c.mm, KILN_ISA_SCALAR);
    assert_int_equal(k.isa, kiln_isa_detect());
    assert_int_equal(kiln_kernels_for(&k, KILN_TYPE_Q4_0, 1)->isa, c.mv);
    assert_int_equal(kiln_kernels_for(&k, KILN_TYPE_Q4_0, 64)->isa, c.mm);
    assert_ptr_equal(kiln_kernels_for(&k, KILN_TYPE_Q8_0, 64), &k); /* untouched type */
    char path[PATH_MAX], err[256];
    kiln_tune_cache_info(path, sizeof path, err, sizeof err);
    assert_string_equal(path, cache);
    assert_string_equal(err, "");
    json_error_t je;
    json_t *j = json_load_file(cache, 0, &je);
    if (!j) fail_msg("%s: %s", cache, je.text);
    json_t *m = json_array_get(json_object_get(j, "machines"), 0);
    assert_int_equal(json_integer_value(json_object_get(m, "threads")), 2);
    const char *ch = json_string_value(json_object_get(
        json_object_get(json_object_get(json_object_get(m, "types"), "q4_0"), "matvec"), "choice"));
    assert_non_null(ch);
    assert_string_equal(ch, kiln_isa_name(c.mv));
    json_decref(j);
    /* the same call again in this process: remembered, not measured */
    assert_int_equal(kiln_tune_select(pool, 0, big, 1, 0, &k, &r, 1), 1);
    assert_int_equal(fake_calls, 1);
    assert_int_equal(r.source, KILN_TUNE_SRC_MEASURED);
    assert_string_equal(r.when, c.when);
    /* a new process (state forgotten): read from the file */
    kiln_tune_forget();
    assert_int_equal(kiln_tune_select(NULL, 2, big, 1, KILN_TUNE_NO_MEASURE, &k, &r, 1), 1);
    assert_int_equal(r.source, KILN_TUNE_SRC_CACHE);
    assert_int_equal(fake_calls, 1);
    assert_int_equal(r.mv, c.mv);
    assert_int_equal(r.mm, c.mm);
    assert_string_equal(r.when, c.when);
    for (int i = 0; i < KILN_ISA_COUNT; i++) {
        assert_true(fabs(r.mv_gbs[i] - c.mv_gbs[i]) <= 1e-4 * c.mv_gbs[i]);
        assert_true(fabs(r.mm_gops[i] - c.mm_gops[i]) <= 1e-4 * c.mm_gops[i]);
    }
    char why[512];
    kiln_tune_describe(&r, why, sizeof why);
    print_message("%s\n", why);
    assert_non_null(strstr(why, "matvec "));
    assert_non_null(strstr(why, cache));
    /* another thread count has no entry: a query that may not measure keeps the rank */
    assert_int_equal(kiln_tune_select(NULL, 3, big, 1, KILN_TUNE_NO_MEASURE, &k, &r, 1), 1);
    assert_int_equal(r.source, KILN_TUNE_SRC_PENDING);
    assert_int_equal(r.mv, kiln_isa_detect());
    /* the process's list for diagnostics holds the choice made */
    struct kiln_tune_choice all[8];
    int n = kiln_tune_choices(all, 8);
    assert_int_equal(n, 1);
    assert_int_equal(all[0].source, KILN_TUNE_SRC_CACHE);
}

/* Matrices too small to be worth measuring at load keep the rank and write
 * nothing; `kiln tune` (KILN_TUNE_MEASURE) measures them anyway. */
static void test_small(void **state) {
    (void)state;
    fresh(cache);
    const struct kiln_tune_shape tiny[] = {{KILN_TYPE_Q8_0, 256, 768, 4},
                                           {KILN_TYPE_F32, 256, 256, 1}};
    struct kiln_kernels k;
    struct kiln_tune_choice c[2];
    assert_int_equal(kiln_tune_select(pool, 0, tiny, 2, 0, &k, c, 2), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(c[i].source, KILN_TUNE_SRC_SMALL);
        assert_int_equal(c[i].mv, kiln_isa_detect());
        assert_int_equal(c[i].mm, kiln_isa_detect());
        assert_ptr_equal(kiln_kernels_for(&k, c[i].type, 1), &k);
    }
    assert_int_equal(k.isa, kiln_isa_detect());
    assert_int_not_equal(access(cache, F_OK), 0);
    assert_int_equal(fake_calls, 0);
    /* `kiln tune` measures them anyway */
    assert_int_equal(kiln_tune_select(pool, 0, tiny, 2, KILN_TUNE_MEASURE, &k, c, 2), 2);
    assert_int_equal(fake_calls, 2);
    assert_int_equal(c[0].source, KILN_TUNE_SRC_MEASURED);
    assert_int_equal(access(cache, F_OK), 0);
    char why[512];
    struct kiln_tune_choice sm = c[1];
    sm.source = KILN_TUNE_SRC_SMALL;
    sm.bytes = 256 * 256 * 4;
    kiln_tune_describe(&sm, why, sizeof why);
    assert_non_null(strstr(why, "rank: 0.2 MiB of f32 matrices"));
}

/* A corrupt file is ignored (the load measures) and replaced by a valid
 * one; a valid file of another machine is ignored quietly. */
static void test_corrupt(void **state) {
    (void)state;
    static const char *const bad[] = {
        "{\"kiln_tune\": 1, \"machines\": [", "[1, 2, 3]", "{\"kiln_tune\": 1, \"machines\": [7]}",
        "{\"kiln_tune\": 1, \"machines\": [{\"cpu\": \"other\", \"features\": \"\", "
        "\"version\": \"0\", \"threads\": 2, \"types\": {}}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fresh(cache);
        FILE *f = fopen(cache, "w");
        assert_non_null(f);
        fputs(bad[i], f);
        fclose(f);
        struct kiln_kernels k;
        struct kiln_tune_choice c;
        if (i > 0) { /* ignored: nothing known, and a query does not measure */
            assert_int_equal(kiln_tune_select(pool, 0, big, 1, KILN_TUNE_NO_MEASURE, &k, &c, 1), 1);
            assert_int_equal(c.source, KILN_TUNE_SRC_PENDING);
            continue;
        }
        assert_int_equal(kiln_tune_select(pool, 0, big, 1, 0, &k, &c, 1), 1);
        assert_int_equal(c.source, KILN_TUNE_SRC_MEASURED);
        json_t *j = json_load_file(cache, 0, NULL);
        assert_non_null(j);
        assert_int_equal(json_integer_value(json_object_get(j, "kiln_tune")), 1);
        assert_int_equal(json_array_size(json_object_get(j, "machines")), 1);
        json_decref(j);
    }
}

/* A cache that cannot be written (its directory would be inside a regular
 * file) is no error: the choice is made and held in memory. */
static void test_unwritable(void **state) {
    (void)state;
    char file[PATH_MAX], path[PATH_MAX + 32];
    test_tmp_path("tune-not-a-dir", file, sizeof file);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/kiln/tune.json", file);
    fresh(path);
    struct kiln_kernels k;
    struct kiln_tune_choice c;
    assert_int_equal(kiln_tune_select(pool, 0, big, 1, 0, &k, &c, 1), 1);
    assert_int_equal(c.source, KILN_TUNE_SRC_MEASURED);
    assert_int_equal(kiln_kernels_for(&k, KILN_TYPE_Q4_0, 1)->isa, c.mv);
    char p[PATH_MAX], err[256];
    kiln_tune_cache_info(p, sizeof p, err, sizeof err);
    assert_string_not_equal(err, "");
    char why[512];
    kiln_tune_describe(&c, why, sizeof why);
    assert_non_null(strstr(why, "in memory only"));
    unlink(file);
}

static kiln_status busy_measure(kiln_pool *p, kiln_type type, int64_t n, int64_t nr,
                                double budget_s, struct kiln_tune_choice *out) {
    kiln_status st = fake_measure(p, type, n, nr, budget_s, out);
    out->busy = 1;
    out->source = KILN_TUNE_SRC_BUSY;
    out->mv = out->mm = kiln_isa_detect();
    out->cpu_share = 0.4;
    return st;
}

/* A measurement taken while other work held the CPUs keeps the rank for
 * this process and is not cached. */
static void test_busy(void **state) {
    (void)state;
    fresh(cache);
    kiln_tune_set_measure_hook(busy_measure);
    struct kiln_kernels k;
    struct kiln_tune_choice c;
    assert_int_equal(kiln_tune_select(pool, 0, big, 1, 0, &k, &c, 1), 1);
    kiln_tune_set_measure_hook(fake_measure);
    assert_int_equal(c.source, KILN_TUNE_SRC_BUSY);
    assert_int_equal(c.mv, kiln_isa_detect());
    assert_ptr_equal(kiln_kernels_for(&k, KILN_TYPE_Q4_0, 1), &k);
    assert_int_not_equal(access(cache, F_OK), 0);
    char why[512];
    kiln_tune_describe(&c, why, sizeof why);
    assert_non_null(strstr(why, "40% of the time"));
    /* not measured again in this process; a new one measures */
    assert_int_equal(kiln_tune_select(pool, 0, big, 1, 0, &k, &c, 1), 1);
    assert_int_equal(c.source, KILN_TUNE_SRC_BUSY);
    kiln_tune_forget();
    assert_int_equal(kiln_tune_select(pool, 0, big, 1, 0, &k, &c, 1), 1);
    assert_int_equal(c.source, KILN_TUNE_SRC_MEASURED);
    assert_int_equal(access(cache, F_OK), 0);
}

/* KILN_ISA forces one table for everything; KILN_TUNE=off keeps the rank;
 * neither measures, whatever the sizes. */
static void test_env(void **state) {
    (void)state;
    struct kiln_kernels k;
    struct kiln_tune_choice c;
    fresh(cache);
    setenv("KILN_ISA", "scalar", 1);
    assert_int_equal(kiln_tune_select(pool, 0, big, 1, 0, &k, &c, 1), 1);
    assert_int_equal(c.source, KILN_TUNE_SRC_FORCED);
    assert_int_equal(c.mv, KILN_ISA_SCALAR);
    assert_int_equal(c.mm, KILN_ISA_SCALAR);
    assert_int_equal(k.isa, KILN_ISA_SCALAR);
    assert_ptr_equal(kiln_kernels_for(&k, KILN_TYPE_Q4_0, 1), &k);
    char why[512];
    kiln_tune_describe(&c, why, sizeof why);
    assert_string_equal(why, "forced: KILN_ISA=scalar");
    unsetenv("KILN_ISA");
    setenv("KILN_TUNE", "off", 1);
    assert_int_equal(kiln_tune_select(pool, 0, big, 1, 0, &k, &c, 1), 1);
    assert_int_equal(c.source, KILN_TUNE_SRC_OFF);
    assert_int_equal(c.mv, kiln_isa_detect());
    assert_int_equal(k.isa, kiln_isa_detect());
    kiln_tune_describe(&c, why, sizeof why);
    assert_string_equal(why, "rank: KILN_TUNE=off");
    unsetenv("KILN_TUNE");
    assert_int_not_equal(access(cache, F_OK), 0); /* nothing was measured */
    assert_int_equal(fake_calls, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_measure),
        cmocka_unit_test(test_cache_roundtrip),
        cmocka_unit_test(test_small),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_unwritable),
        cmocka_unit_test(test_busy),
        cmocka_unit_test(test_env),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

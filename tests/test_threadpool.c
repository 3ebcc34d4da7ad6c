/* test_threadpool.c - the worker pool: every thread runs every task once,
 * barriers order memory between phases, partial runs (run_n) leave the other
 * workers consistent, the sleeping (futex) path works, and the physical core
 * count is sane. Prints the measured run and barrier overheads. */
#include "testutil.h"

#include "base/time.h"
#include "compute/threadpool.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXT 8

struct count_task {
    atomic_int calls[MAXT];
    atomic_int bad_nth;
    int want_nth;
};

static void count_fn(void *arg, int ith, int nth) {
    struct count_task *t = arg;
    if (nth != t->want_nth || ith < 0 || ith >= nth)
        atomic_fetch_add(&t->bad_nth, 1);
    else
        atomic_fetch_add_explicit(&t->calls[ith], 1, memory_order_relaxed);
}

static void test_run_all_threads(void **state) {
    (void)state;
    for (int n = 1; n <= 4; n++) {
        kiln_status st;
        kiln_pool *p = kiln_pool_create(n, &st);
        assert_non_null(p);
        assert_int_equal(st, KILN_OK);
        assert_int_equal(kiln_pool_size(p), n);
        struct count_task t = {.want_nth = n};
        const int runs = 2000;
        for (int r = 0; r < runs; r++) kiln_pool_run(p, count_fn, &t);
        assert_int_equal(atomic_load(&t.bad_nth), 0);
        for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&t.calls[i]), runs);
        kiln_pool_destroy(p);
    }
}

/* Plain (non-atomic) writes before a barrier must be visible after it: each
 * phase every thread writes its slot, then checks everyone's slot. */
struct phase_task {
    kiln_pool *pool;
    int phases;
    int slots[MAXT * 16]; /* one cache line apart */
    atomic_int errors;
};

static void phase_fn(void *arg, int ith, int nth) {
    struct phase_task *t = arg;
    for (int ph = 1; ph <= t->phases; ph++) {
        t->slots[ith * 16] = ph;
        kiln_pool_barrier(t->pool);
        for (int j = 0; j < nth; j++)
            if (t->slots[j * 16] != ph) atomic_fetch_add(&t->errors, 1);
        kiln_pool_barrier(t->pool);
    }
}

static void run_phases(int n, int phases, int runs) {
    kiln_pool *p = kiln_pool_create(n, NULL);
    assert_non_null(p);
    struct phase_task t = {.pool = p, .phases = phases};
    for (int r = 0; r < runs; r++) kiln_pool_run(p, phase_fn, &t);
    assert_int_equal(atomic_load(&t.errors), 0);
    kiln_pool_destroy(p);
}

static void test_barrier_phases(void **state) {
    (void)state;
    for (int n = 1; n <= 4; n++) run_phases(n, 500, 20);
    /* partial runs, one thread included: barriers count only participants */
    kiln_pool *p = kiln_pool_create(4, NULL);
    assert_non_null(p);
    for (int nth = 4; nth >= 1; nth--) {
        struct phase_task t = {.pool = p, .phases = 100};
        for (int r = 0; r < 10; r++) kiln_pool_run_n(p, nth, phase_fn, &t);
        assert_int_equal(atomic_load(&t.errors), 0);
    }
    kiln_pool_destroy(p);
}

/* Barriers and runs through the sleeping path only. */
static void test_futex_path(void **state) {
    (void)state;
    setenv("KILN_POOL_SPIN_US", "0", 1);
    for (int n = 2; n <= 4; n++) run_phases(n, 200, 20);
    unsetenv("KILN_POOL_SPIN_US");
}

/* Alternating partial runs: a worker left out of one run must not be
 * confused by the next. */
static void test_run_n(void **state) {
    (void)state;
    kiln_pool *p = kiln_pool_create(4, NULL);
    assert_non_null(p);
    struct count_task t[5] = {
        {.want_nth = 0}, {.want_nth = 1}, {.want_nth = 2}, {.want_nth = 3}, {.want_nth = 4}};
    int expect[5][MAXT] = {{0}};
    uint64_t rng = 7;
    for (int r = 0; r < 3000; r++) {
        int nth = 1 + (int)(test_rand_u64(&rng) % 4);
        kiln_pool_run_n(p, nth, count_fn, &t[nth]);
        for (int i = 0; i < nth; i++) expect[nth][i]++;
    }
    for (int nth = 1; nth <= 4; nth++) {
        assert_int_equal(atomic_load(&t[nth].bad_nth), 0);
        for (int i = 0; i < MAXT; i++)
            assert_int_equal(atomic_load(&t[nth].calls[i]), expect[nth][i]);
    }
    kiln_pool_destroy(p);
}

static void test_create_errors(void **state) {
    (void)state;
    kiln_status st = KILN_OK;
    assert_null(kiln_pool_create(KILN_POOL_MAX_THREADS + 1, &st));
    assert_int_equal(st, KILN_ERR_RANGE);
    kiln_pool *p = kiln_pool_create(0, &st); /* default: physical cores */
    assert_non_null(p);
    assert_int_equal(kiln_pool_size(p), kiln_cpu_physical_cores());
    kiln_pool_destroy(p);
    kiln_pool_destroy(NULL);
}

static void test_physical_cores(void **state) {
    (void)state;
    int c = kiln_cpu_physical_cores();
    assert_true(c >= 1);
    print_message("physical cores: %d\n", c);
}

static void noop_fn(void *arg, int ith, int nth) {
    (void)arg, (void)ith, (void)nth;
}

struct bar_task {
    kiln_pool *pool;
    int n;
};
static void barrier_loop_fn(void *arg, int ith, int nth) {
    struct bar_task *t = arg;
    for (int i = 0; i < t->n; i++) kiln_pool_barrier(t->pool);
}

/* Reports the overheads; asserts nothing about speed (the machine may be
 * shared), only that the calls complete. */
static void test_overhead(void **state) {
    (void)state;
    int n = kiln_cpu_physical_cores();
    if (n < 2) n = 2;
    kiln_pool *p = kiln_pool_create(n, NULL);
    assert_non_null(p);
    const int runs = 20000;
    for (int i = 0; i < 100; i++) kiln_pool_run(p, noop_fn, NULL);
    int64_t t0 = kiln_now_ns();
    for (int i = 0; i < runs; i++) kiln_pool_run(p, noop_fn, NULL);
    int64_t t1 = kiln_now_ns();
    struct bar_task bt = {p, 100000};
    kiln_pool_run(p, barrier_loop_fn, &bt);
    int64_t t2 = kiln_now_ns();
    print_message("%d threads: empty run %.2f us, barrier %.3f us\n", n,
                  (double)(t1 - t0) / runs / 1e3, (double)(t2 - t1) / bt.n / 1e3);
    kiln_pool_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_all_threads), cmocka_unit_test(test_barrier_phases),
        cmocka_unit_test(test_futex_path),      cmocka_unit_test(test_run_n),
        cmocka_unit_test(test_create_errors),   cmocka_unit_test(test_physical_cores),
        cmocka_unit_test(test_overhead),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_window.c - obs/window.h: exact percentiles over the samples inside
 * the window, samples outside it ignored, and covered_s when the ring
 * overflowed inside the window. */
#include "obs/window.h"
#include "testutil.h"

static void test_stats(void **state) {
    (void)state;
    win *w = win_create(1000);
    assert_non_null(w);
    win_stats st;
    win_get(w, 100, 60, &st);
    assert_int_equal(st.n, 0);
    assert_true(st.covered_s == 60);
    for (int i = 1; i <= 100; i++) win_add(w, 50 + i * 0.1, i); /* t 50.1 .. 60 */
    win_add(w, 10, 1e6);                                        /* outside the window */
    win_get(w, 60, 20, &st);
    assert_int_equal(st.n, 100);
    assert_true(st.sum == 5050 && st.mean == 50.5);
    assert_true(st.p50 == 50 && st.p90 == 90 && st.p99 == 99 && st.max == 100);
    win_get(w, 60, 5, &st); /* (55, 60]: values 50 .. 100 */
    assert_int_equal(st.n, 50);
    assert_true(st.p50 == 75 && st.max == 100);
    win_destroy(w);
}

static void test_overflow(void **state) {
    (void)state;
    win *w = win_create(10);
    for (int i = 0; i < 100; i++) win_add(w, i, i); /* only 90 .. 99 kept */
    win_stats st;
    win_get(w, 99, 60, &st);
    assert_int_equal(st.n, 10);
    assert_true(st.covered_s == 9); /* from the oldest kept sample (90) to now */
    assert_true(st.p50 == 94 && st.max == 99);
    win_destroy(w);
    win_destroy(NULL);
    win_add(NULL, 1, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_strbuf.c - the growing text buffer: appends keep a NUL after the
 * bytes, printf of long output, growth across many appends, and free. No
 * shared data. */
#include "testutil.h"

#include "base/strbuf.h"

#include <string.h>

static void test_strbuf(void **state) {
    (void)state;
    strbuf b = {0};
    strbuf_put(&b, NULL, 0);
    assert_non_null(b.p);
    assert_int_equal(b.n, 0);
    assert_int_equal(b.p[0], 0);
    strbuf_puts(&b, "abc");
    strbuf_put(&b, "de\0f", 4); /* bytes, NULs included */
    assert_int_equal(b.n, 7);
    assert_memory_equal(b.p, "abcde\0f", 8);
    strbuf_free(&b);
    assert_null(b.p);
    assert_int_equal(b.n, 0);

    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    strbuf_printf(&b, "[%s] %d", big, 42); /* longer than the first capacity */
    assert_int_equal(b.n, 1 + 999 + 1 + 3);
    assert_string_equal(b.p + 1001, " 42");
    for (int i = 0; i < 10000; i++) strbuf_puts(&b, "0123456789");
    assert_int_equal(b.n, 1004 + 100000);
    assert_int_equal(b.p[b.n], 0);
    assert_false(b.oom);
    assert_true(b.cap > b.n);
    strbuf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_strbuf)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

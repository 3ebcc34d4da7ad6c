/* test_gzip.c - gzip (base/gz.h): buffers of several sizes and contents
 * compressed and read back through a file, plain files read as they are
 * whatever their names, corrupt and truncated streams refused; and the
 * server's Accept-Encoding negotiation (srv_accepts_gzip_value): weights,
 * "*", case, bad qvalues, several elements. */
#include "testutil.h"

#include "base/gz.h"
#include "server/srv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void test_round_trip(void **state) {
    (void)state;
    static const size_t sizes[] = {0, 1, 100, 70000, 3u << 20};
    uint64_t rng = 7;
    char path[512];
    test_tmp_path("gz_round_trip.gz", path, sizeof path);
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k];
        unsigned char *src = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++) /* half text-like, half random */
            src[i] = i % 2 ? (unsigned char)test_rand_u64(&rng) : (unsigned char)('a' + i % 7);
        size_t zn = 0;
        unsigned char *z = kiln_gzip(src, n, 6, &zn);
        assert_non_null(z);
        assert_true(zn >= 18 && z[0] == 0x1f && z[1] == 0x8b); /* header + trailer at least */
        write_file(path, z, zn);
        char *back = NULL;
        size_t bn = 0;
        assert_int_equal(kiln_read_file(path, &back, &bn), KILN_OK);
        assert_int_equal(bn, n);
        assert_int_equal(back[bn], 0);
        assert_memory_equal(back, src, n);
        free(back);
        free(z);
        free(src);
    }
    remove(path);
}

static void test_read_plain_and_bad(void **state) {
    (void)state;
    char path[512], *back = NULL;
    size_t bn = 0;
    /* plain text under a gzip name reads as it is */
    test_tmp_path("gz_plain.json.gz", path, sizeof path);
    write_file(path, "{\"a\":1}", 7);
    assert_int_equal(kiln_read_file(path, &back, &bn), KILN_OK);
    assert_int_equal(bn, 7);
    assert_string_equal(back, "{\"a\":1}");
    free(back);
    /* an empty file */
    write_file(path, "", 0);
    assert_int_equal(kiln_read_file(path, &back, &bn), KILN_OK);
    assert_int_equal(bn, 0);
    free(back);
    /* a truncated and a corrupted stream */
    static const char text[] = "the same words again and again and again and again";
    size_t zn = 0;
    unsigned char *z = kiln_gzip(text, sizeof text, 9, &zn);
    assert_non_null(z);
    write_file(path, z, zn - 6);
    assert_int_equal(kiln_read_file(path, &back, &bn), KILN_ERR_FORMAT);
    assert_null(back);
    assert_non_null(strstr(kiln_last_error(), "gz_plain.json.gz"));
    z[zn - 5] ^= 0xff; /* the CRC */
    write_file(path, z, zn);
    assert_int_equal(kiln_read_file(path, &back, &bn), KILN_ERR_FORMAT);
    free(z);
    assert_int_equal(kiln_read_file("/nonexistent/x.gz", &back, &bn), KILN_ERR_IO);
    assert_non_null(strstr(kiln_last_error(), "/nonexistent/x.gz"));
    remove(path);
}

static void test_accept_encoding(void **state) {
    (void)state;
    static const struct {
        const char *v;
        bool gzip;
    } cases[] = {
        {"gzip", true},
        {"GZip", true},
        {"x-gzip", true},
        {"gzip;q=0", false},
        {"gzip; q=0.000", false},
        {"gzip;q=0.001", true},
        {"gzip;Q=1.000", true},
        {"*", true},
        {"*;q=0", false},
        {"identity", false},
        {"", false},
        {NULL, false},
        {"deflate, br", false},
        {"br, *;q=0.1", true},
        {"gzip;q=0, *", false}, /* its own weight rules over "*" */
        {"*, gzip;q=0", false}, /* whatever the order */
        {"*;q=0, gzip;q=0.5", true},
        {"gzip;q=2", false},     /* a bad qvalue: the element is ignored */
        {"gzip;q=1.5, *", true}, /* ... and "*" decides */
        {"gzip;q=0.5x", false},
        {"  deflate ,\tgzip ; q=0.8 ", true},
        {"gzipx, xgzip", false},
        {"gzip;level=9;q=0.3", true},
        {",,gzip,,", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (srv_accepts_gzip_value(cases[i].v) != cases[i].gzip)
            fail_msg("Accept-Encoding \"%s\": want %d", cases[i].v ? cases[i].v : "(none)",
                     cases[i].gzip);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_read_plain_and_bad),
        cmocka_unit_test(test_accept_encoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* testutil.h - shared helpers for Kiln's cmocka tests: where the shared test
 * data lives, skipping with a printed reason, and scratch files. */
#ifndef KILN_TESTUTIL_H
#define KILN_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Full path of a file under $KILN_TEST_DATA (e.g. "models/stories260K.gguf")
 * in buf, or NULL when the data is absent. */
const char *test_data_path(const char *rel, char *buf, size_t cap);

/* Skips the current test, printing why, when the shared data file is absent.
 * Use: const char *p = TEST_DATA_OR_SKIP("models/x.gguf", buf); */
#define TEST_DATA_OR_SKIP(rel, buf)                                                                \
    ({                                                                                             \
        const char *p_ = test_data_path(rel, buf, sizeof buf);                                     \
        if (!p_) {                                                                                 \
            print_message("SKIP: %s not found (set KILN_TEST_DATA to the shared data folder)\n",   \
                          rel);                                                                    \
            skip();                                                                                \
        }                                                                                          \
        p_;                                                                                        \
    })

/* A path for a scratch file named `name` in the test build folder. */
const char *test_tmp_path(const char *name, char *buf, size_t cap);

/* Deterministic pseudo-random numbers for tests (splitmix64). */
uint64_t test_rand_u64(uint64_t *state);
/* Standard normal via Box-Muller. */
float test_rand_normal(uint64_t *state);

#endif

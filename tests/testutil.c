/* testutil.c - helpers shared by the cmocka tests (see testutil.h). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

const char *test_data_path(const char *rel, char *buf, size_t cap) {
    const char *dir = getenv("KILN_TEST_DATA");
    if (!dir || !*dir) return NULL;
    snprintf(buf, cap, "%s/%s", dir, rel);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

const char *test_tmp_path(const char *name, char *buf, size_t cap) {
    const char *dir = getenv("KILN_TEST_TMP"); /* set by CTest: the test build folder */
    if (!dir || !*dir) dir = getenv("TMPDIR");
    snprintf(buf, cap, "%s/%s", dir && *dir ? dir : P_tmpdir, name);
    return buf;
}

uint64_t test_rand_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float test_rand_normal(uint64_t *s) {
    double u1 = ((double)(test_rand_u64(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(test_rand_u64(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

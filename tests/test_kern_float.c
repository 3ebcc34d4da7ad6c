/* test_kern_float.c - the float gemm tiles (F32, F16) and F16's prepared
 * activations (kernels.h gemm_xprep / gemm_xp): the prepared layout, every
 * tile shape against the scalar vec_dot for odd row and column counts and K
 * tails, each (row, column) result bit for bit the same in any tile and in
 * the gemm and gemm_xp entries, and wide F16 matmuls through matmul.c
 * against vec_dot with a column's result independent of the product's width.
 * test_kern_legacy.c covers the 8 x 8 gemm tiles of all float types too.
 * No timing assertions. */
#include "testutil.h"

#include "base/fp16.h"
#include "base/mem.h"
#include "compute/kernels.h"
#include "compute/matmul.h"
#include "compute/types.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* K tails of every length class: below, at and just above one vector (16),
 * odd counts, the bge-small / conversion-group sizes, and 2100 (three K
 * chunks of the AVX-512 tiles, with a tail). */
static const int64_t lens[] = {1, 7, 15, 16, 17, 33, 100, 384, 513, 1536, 2100};
#define N_LENS (sizeof lens / sizeof lens[0])

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* n random values of type t (F32 or F16) in a row. */
static void *random_row(kiln_type t, int64_t n, uint64_t *rng) {
    float *f = xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) f[i] = 0.1f + test_rand_normal(rng);
    void *row = xmalloc(kiln_row_size(t, n));
    kiln_kernels_get(KILN_ISA_SCALAR)->from_float[t](f, row, n);
    free(f);
    return row;
}

static float elem(kiln_type t, const void *row, int64_t i) {
    if (t == KILN_TYPE_F16) return kiln_f16_to_f32(((const kiln_f16 *)row)[i]);
    return ((const float *)row)[i];
}

/* sum |w_i x_i|: the scale of a dot product's rounding error. */
static double magnitude(kiln_type t, const void *w, const void *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += fabs((double)elem(t, w, i) * elem(t, x, i));
    return s;
}

static void check_near(const char *what, kiln_type t, int64_t n, int nr, int nc, int r, int c,
                       float got, const void *w, const void *x) {
    float want = kiln_kernels_get(KILN_ISA_SCALAR)->vec_dot[t](n, w, x);
    double tol = 2e-6 * magnitude(t, w, x, n) + 1e-30;
    if (!(fabs((double)got - want) <= tol))
        fail_msg("%s %s n=%lld %dx%d at r=%d c=%d: %.9g, scalar %.9g", what, kiln_type_name(t),
                 (long long)n, nr, nc, r, c, (double)got, (double)want);
}

/* Random rows: MR weight rows (stride ws bytes) and MC partner rows (xs). */
struct mats {
    char *w, *x;
    size_t ws, xs;
};

static struct mats make_mats(kiln_type t, int64_t n, int mr, int mc, uint64_t *rng) {
    struct mats m;
    size_t row = kiln_row_size(t, n);
    m.ws = row + 8; /* strides not multiples of a vector, on purpose */
    m.xs = row + 12;
    m.w = xmalloc(m.ws * (size_t)mr);
    m.x = xmalloc(m.xs * (size_t)mc);
    for (int r = 0; r < mr; r++) {
        void *v = random_row(t, n, rng);
        memcpy(m.w + (size_t)r * m.ws, v, row);
        free(v);
    }
    for (int c = 0; c < mc; c++) {
        void *v = random_row(t, n, rng);
        memcpy(m.x + (size_t)c * m.xs, v, row);
        free(v);
    }
    return m;
}

static void test_xprep_layout(void **state) {
    (void)state;
    uint64_t rng = 3;
    int checked = 0;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k || !k->gemm_xprep[KILN_TYPE_F16]) continue;
        for (size_t li = 0; li < N_LENS; li++, checked++) {
            int64_t n = lens[li];
            size_t ps = kiln_gemm_xp_row_size(KILN_TYPE_F16, n);
            assert_int_equal(ps % 64, 0);
            assert_true(ps >= (size_t)n * sizeof(float));
            kiln_f16 *h = random_row(KILN_TYPE_F16, n, &rng);
            float *p = kiln_aligned_alloc(64, ps);
            assert_non_null(p);
            memset(p, 0x7f, ps);
            k->gemm_xprep[KILN_TYPE_F16](n, h, p);
            for (int64_t i = 0; i < (int64_t)(ps / sizeof(float)); i++) {
                float want = i < n ? kiln_f16_to_f32(h[i]) : 0.0f;
                if (memcmp(&p[i], &want, sizeof want))
                    fail_msg("f16 xprep n=%lld element %lld: %g, want %g", (long long)n,
                             (long long)i, (double)p[i], (double)want);
            }
            free(h);
            kiln_aligned_free(p);
        }
    }
    if (!checked) print_message("f16 xprep: no table has it here\n");
}

/* Every nr x nc gemm tile of type t against the scalar vec_dot, and each
 * result against the same pair in a 1 x 1 tile, bit for bit. */
static void check_gemm(const struct kiln_kernels *k, kiln_type t, int64_t n, uint64_t *rng) {
    enum { MR = KILN_GEMM_MAX_R, MC = KILN_GEMM_MAX_C };
    struct mats m = make_mats(t, n, MR, MC, rng);
    size_t os = MR + 3;
    float out[(MR + 3) * MC];
    for (int nr = 1; nr <= MR; nr++)
        for (int nc = 1; nc <= MC; nc++) {
            k->gemm[t](n, m.w, m.ws, nr, m.x, m.xs, nc, out, os);
            for (int c = 0; c < nc; c++)
                for (int r = 0; r < nr; r++) {
                    const char *w = m.w + (size_t)r * m.ws, *x = m.x + (size_t)c * m.xs;
                    float got = out[(size_t)c * os + r], one;
                    check_near("gemm", t, n, nr, nc, r, c, got, w, x);
                    k->gemm[t](n, w, m.ws, 1, x, m.xs, 1, &one, 1);
                    if (memcmp(&one, &got, sizeof one))
                        fail_msg("gemm %s n=%lld %dx%d r=%d c=%d: %.9g, alone %.9g",
                                 kiln_type_name(t), (long long)n, nr, nc, r, c, (double)got,
                                 (double)one);
                }
        }
    free(m.w);
    free(m.x);
}

static void test_gemm(void **state) {
    (void)state;
    uint64_t rng = 5;
    static const kiln_type types[] = {KILN_TYPE_F32, KILN_TYPE_F16};
    int checked = 0;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (size_t ti = 0; ti < 2; ti++)
            if (k->gemm[types[ti]])
                for (size_t li = 0; li < N_LENS; li++, checked++)
                    check_gemm(k, types[ti], lens[li], &rng);
    }
    print_message("float gemm: %d (type, isa, n) checked\n", checked);
}

/* F16 gemm_xp: every tile shape up to KILN_GEMM_XP_MAX_R x _C against the
 * scalar vec_dot, each result bit for bit equal to the pair alone and to
 * the F16 gemm entry (which reads the unprepared rows). */
static void check_xp(const struct kiln_kernels *k, int64_t n, uint64_t *rng) {
    enum { MR = KILN_GEMM_XP_MAX_R, MC = KILN_GEMM_XP_MAX_C };
    const kiln_type t = KILN_TYPE_F16;
    struct mats m = make_mats(t, n, MR, MC, rng);
    size_t ps = kiln_gemm_xp_row_size(t, n) + 64; /* a wider stride on purpose */
    char *xp = kiln_aligned_alloc(64, ps * MC);
    assert_non_null(xp);
    for (int c = 0; c < MC; c++) k->gemm_xprep[t](n, m.x + (size_t)c * m.xs, xp + (size_t)c * ps);
    size_t os = MR + 1;
    float *out = xmalloc(os * MC * sizeof(float));
    for (int nr = 1; nr <= MR; nr++)
        for (int nc = 1; nc <= MC; nc++) {
            k->gemm_xp[t](n, m.w, m.ws, nr, xp, ps, nc, out, os);
            for (int c = 0; c < nc; c++)
                for (int r = 0; r < nr; r++) {
                    const char *w = m.w + (size_t)r * m.ws;
                    float got = out[(size_t)c * os + r], one, g;
                    check_near("gemm_xp", t, n, nr, nc, r, c, got, w, m.x + (size_t)c * m.xs);
                    if (nr > 1 && nc > 1) continue; /* the 1 x 1 tiles come by below */
                    k->gemm_xp[t](n, w, m.ws, 1, xp + (size_t)c * ps, ps, 1, &one, 1);
                    k->gemm[t](n, w, m.ws, 1, m.x + (size_t)c * m.xs, m.xs, 1, &g, 1);
                    if (memcmp(&one, &got, sizeof one) || memcmp(&g, &got, sizeof g))
                        fail_msg("gemm_xp f16 n=%lld %dx%d r=%d c=%d: %.9g, alone %.9g, gemm "
                                 "%.9g",
                                 (long long)n, nr, nc, r, c, (double)got, (double)one, (double)g);
                }
        }
    /* the full tile against the 1-row and 1-column ones above, bit for bit */
    float *full = xmalloc((size_t)MR * MC * sizeof(float));
    k->gemm_xp[t](n, m.w, m.ws, MR, xp, ps, MC, full, MR);
    for (int c = 0; c < MC; c++)
        for (int r = 0; r < MR; r++) {
            float one;
            k->gemm_xp[t](n, m.w + (size_t)r * m.ws, m.ws, 1, xp + (size_t)c * ps, ps, 1, &one, 1);
            if (memcmp(&one, &full[c * MR + r], sizeof one))
                fail_msg("gemm_xp f16 n=%lld: full tile r=%d c=%d %.9g, alone %.9g", (long long)n,
                         r, c, (double)full[c * MR + r], (double)one);
        }
    free(full);
    free(out);
    free(m.w);
    free(m.x);
    kiln_aligned_free(xp);
}

static void test_gemm_xp(void **state) {
    (void)state;
    uint64_t rng = 9;
    int checked = 0;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k || !k->gemm_xp[KILN_TYPE_F16]) continue;
        assert_non_null(k->gemm_xprep[KILN_TYPE_F16]);
        assert_non_null(k->gemm[KILN_TYPE_F16]);
        for (size_t li = 0; li < N_LENS; li++, checked++) check_xp(k, lens[li], &rng);
    }
    if (!checked) print_message("f16 gemm_xp: no table has it here\n");
}

/* F16 matmuls through matmul.c (2 threads, every table): each column's
 * result against the scalar vec_dot of the F16-rounded activations, and
 * the first columns bit for bit the same in products of every width. */
static void test_matmul_f16(void **state) {
    (void)state;
    uint64_t rng = 17;
    static const int64_t shapes[][2] = {{37, 100}, {70, 384}, {16, 513}};
    static const int64_t widths[] = {2, 3, 7, 24, 25, 53};
    kiln_status st;
    kiln_pool *pool = kiln_pool_create(2, &st);
    assert_non_null(pool);
    const struct kiln_kernels *scalar = kiln_kernels_get(KILN_ISA_SCALAR);
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int64_t nr = shapes[si][0], n = shapes[si][1], maxc = widths[5];
            size_t ws = kiln_row_size(KILN_TYPE_F16, n);
            char *w = xmalloc(ws * (size_t)nr);
            for (int64_t r = 0; r < nr; r++) {
                void *v = random_row(KILN_TYPE_F16, n, &rng);
                memcpy(w + (size_t)r * ws, v, ws);
                free(v);
            }
            float *x = xmalloc((size_t)(n * maxc) * sizeof(float));
            for (int64_t i = 0; i < n * maxc; i++) x[i] = test_rand_normal(&rng);
            kiln_f16 *xh = xmalloc((size_t)n * sizeof(kiln_f16));
            float *y = xmalloc((size_t)(nr * maxc) * sizeof(float));
            float *first = xmalloc((size_t)(nr * 2) * sizeof(float));
            kiln_matmul_ctx *ctx =
                kiln_matmul_ctx_create(pool, k, kiln_matmul_work_size(KILN_TYPE_F16, n, maxc), &st);
            assert_non_null(ctx);
            for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
                int64_t nc = widths[wi];
                struct kiln_matmul_op op = {.type = KILN_TYPE_F16,
                                            .w = w,
                                            .w_stride = ws,
                                            .nr = nr,
                                            .n = n,
                                            .x = x,
                                            .nc = nc,
                                            .y = y};
                assert_int_equal(kiln_matmul_run(ctx, &op), KILN_OK);
                for (int64_t c = 0; c < nc; c++) {
                    scalar->from_float[KILN_TYPE_F16](x + c * n, xh, n);
                    for (int64_t r = 0; r < nr; r++)
                        check_near("matmul", KILN_TYPE_F16, n, (int)nr, (int)nc, (int)r, (int)c,
                                   y[c * nr + r], w + (size_t)r * ws, xh);
                }
                if (wi == 0)
                    memcpy(first, y, (size_t)(nr * 2) * sizeof(float));
                else if (memcmp(first, y, (size_t)(nr * 2) * sizeof(float)))
                    fail_msg("matmul f16/%s nr=%lld n=%lld: columns 0-1 differ at nc=%lld from "
                             "nc=2",
                             kiln_isa_name(k->isa), (long long)nr, (long long)n, (long long)nc);
            }
            kiln_matmul_ctx_destroy(ctx);
            free(w);
            free(x);
            free(xh);
            free(y);
            free(first);
        }
    }
    kiln_pool_destroy(pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xprep_layout),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_gemm_xp),
        cmocka_unit_test(test_matmul_f16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

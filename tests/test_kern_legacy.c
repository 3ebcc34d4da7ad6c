/* test_kern_legacy.c - the float (F32, F16, BF16) and legacy block kernels
 * (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, IQ4_NL): conformance with ggml's
 * reference data (models/quant/quant-conformance.gguf), every ISA variant
 * against the scalar reference, gemm tiles against vec_dot, and edge cases.
 * No timing assertions. */
#include "testutil.h"

#include "base/fp16.h"
#include "base/mem.h"
#include "compute/blocks.h"
#include "compute/kernels.h"
#include "compute/types.h"
#include "model/gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONF_FILE "models/quant/quant-conformance.gguf"
#define CONF_ROWS 4
#define CONF_COLS 1024

static const kiln_type weight_types[] = {KILN_TYPE_F32,  KILN_TYPE_F16,  KILN_TYPE_BF16,
                                         KILN_TYPE_Q4_0, KILN_TYPE_Q4_1, KILN_TYPE_Q5_0,
                                         KILN_TYPE_Q5_1, KILN_TYPE_Q8_0, KILN_TYPE_IQ4_NL};
#define N_WEIGHT_TYPES (sizeof weight_types / sizeof weight_types[0])

static const struct kiln_kernels *scalar(void) {
    return kiln_kernels_get(KILN_ISA_SCALAR);
}

/* ---- helpers ---- */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static float *random_floats(int64_t n, float mean, float sd, uint64_t *rng) {
    float *v = xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = mean + sd * test_rand_normal(rng);
    return v;
}

/* A quantized/converted row of type t made from n random floats. */
static void *random_row(kiln_type t, int64_t n, uint64_t *rng) {
    float *f = random_floats(n, 0.1f, 1.0f, rng);
    void *row = xmalloc(kiln_row_size(t, n));
    scalar()->from_float[t](f, row, n);
    free(f);
    return row;
}

/* count rows of random_row(t, n) at dst, stride bytes apart, drawn in order. */
static void random_rows(kiln_type t, int64_t n, int count, uint8_t *dst, size_t stride,
                        uint64_t *rng) {
    for (int i = 0; i < count; i++) {
        void *row = random_row(t, n, rng);
        memcpy(dst + (size_t)i * stride, row, kiln_row_size(t, n));
        free(row);
    }
}

/* sum |w_i * x_i| over the dequantized rows: the scale for dot tolerances. */
static double dot_magnitude(kiln_type wt, const void *w, const void *x, int64_t n) {
    kiln_type xt = kiln_vec_dot_type(wt);
    float *a = xmalloc((size_t)n * sizeof(float)), *b = xmalloc((size_t)n * sizeof(float));
    scalar()->to_float[wt](w, a, n);
    scalar()->to_float[xt](x, b, n);
    double m = 0;
    for (int64_t i = 0; i < n; i++) m += fabs((double)a[i] * b[i]);
    free(a);
    free(b);
    return m;
}

/* Compares two Q8_0/Q8_1 rows quantized from x; allows a qs byte to differ by
 * one only where x*127/amax is an exact .5 tie (round-half-even vs roundf). */
static void assert_q8_rows_match(kiln_type t, const uint8_t *got, const uint8_t *want,
                                 const float *x, int64_t n, const char *what) {
    size_t bs = kiln_type_info(t)->size, off = t == KILN_TYPE_Q8_1 ? 4 : 2;
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *g = got + b * bs, *w = want + b * bs;
        const float *xb = x + b * 32;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
        int ties = 0;
        for (int j = 0; j < 32; j++) {
            int8_t gq = (int8_t)g[off + j], wq = (int8_t)w[off + j];
            if (gq == wq) continue;
            float v = xb[j] * (127.0f / amax);
            if (abs(gq - wq) != 1 || v - floorf(v) != 0.5f)
                fail_msg("%s: block %lld byte %d: got %d want %d (x*id=%.9g)", what, (long long)b,
                         j, gq, wq, (double)v);
            ties++;
        }
        if (memcmp(g, w, 2)) fail_msg("%s: block %lld: d differs", what, (long long)b);
        if (off == 4 && !ties && memcmp(g + 2, w + 2, 2))
            fail_msg("%s: block %lld: s differs", what, (long long)b);
    }
}

static void assert_rows_match(kiln_type t, const void *got, const void *want, const float *x,
                              int64_t n, const char *what) {
    if (t == KILN_TYPE_Q8_0 || t == KILN_TYPE_Q8_1)
        assert_q8_rows_match(t, got, want, x, n, what);
    else if (memcmp(got, want, kiln_row_size(t, n)))
        fail_msg("%s: bytes differ", what);
}

/* ---- conformance with ggml ---- */

static const char *const conf_types[] = {"f16",  "bf16", "q4_0", "q4_1",
                                         "q5_0", "q5_1", "q8_0", "iq4_nl"};
#define N_CONF_TYPES (sizeof conf_types / sizeof conf_types[0])

static int conf_setup(void **state) {
    char buf[1024];
    const char *p = test_data_path(CONF_FILE, buf, sizeof buf);
    *state = p ? gguf_open(p, NULL) : NULL;
    if (p && !*state) print_message("gguf_open(%s): %s\n", p, kiln_last_error());
    return 0;
}

static int conf_teardown(void **state) {
    if (*state) gguf_close(*state);
    return 0;
}

static const gguf_file *conf_file(void **state) {
    char buf[1024];
    TEST_DATA_OR_SKIP(CONF_FILE, buf);
    assert_non_null(*state);
    return *state;
}

static const gguf_tensor *conf_tensor(const gguf_file *f, const char *prefix, const char *tname) {
    char name[64];
    snprintf(name, sizeof name, "%s%s%s", prefix, tname ? "." : "", tname ? tname : "");
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) fail_msg("tensor %s missing", name);
    return t;
}

static kiln_type conf_type(const char *tname) {
    kiln_type t;
    assert_int_equal(kiln_type_from_name(tname, &t), KILN_OK);
    return t;
}

static void test_conf_dequant(void **state) {
    const gguf_file *f = conf_file(state);
    float *out = xmalloc(CONF_ROWS * CONF_COLS * sizeof(float));
    for (size_t i = 0; i < N_CONF_TYPES; i++) {
        kiln_type t = conf_type(conf_types[i]);
        const gguf_tensor *q = conf_tensor(f, "q", conf_types[i]);
        const gguf_tensor *deq = conf_tensor(f, "deq", conf_types[i]);
        assert_int_equal(q->type, t);
        for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
            const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
            if (!k) continue;
            k->to_float[t](q->data, out, CONF_ROWS * CONF_COLS);
            for (int j = 0; j < CONF_ROWS * CONF_COLS; j++)
                if (kiln_f32_bits(out[j]) != kiln_f32_bits(((const float *)deq->data)[j]))
                    fail_msg("%s/%s: element %d: %.9g vs %.9g", conf_types[i],
                             kiln_isa_name(k->isa), j, (double)out[j],
                             (double)((const float *)deq->data)[j]);
        }
    }
    free(out);
}

static void test_conf_activation(void **state) {
    const gguf_file *f = conf_file(state);
    const float *x = conf_tensor(f, "x", NULL)->data;
    uint8_t *buf = xmalloc(4 * CONF_COLS);
    for (size_t i = 0; i < N_CONF_TYPES; i++) {
        kiln_type xt = kiln_vec_dot_type(conf_type(conf_types[i]));
        const gguf_tensor *xq = conf_tensor(f, "xq", conf_types[i]);
        assert_int_equal(xq->size, kiln_row_size(xt, CONF_COLS));
        for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
            const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
            if (!k) continue;
            char what[64];
            snprintf(what, sizeof what, "xq.%s/%s", conf_types[i], kiln_isa_name(k->isa));
            k->from_float[xt](x, buf, CONF_COLS);
            assert_rows_match(xt, buf, xq->data, x, CONF_COLS, what);
        }
    }
    free(buf);
}

static void test_conf_dot(void **state) {
    const gguf_file *f = conf_file(state);
    for (size_t i = 0; i < N_CONF_TYPES; i++) {
        kiln_type t = conf_type(conf_types[i]);
        const gguf_tensor *q = conf_tensor(f, "q", conf_types[i]);
        const void *xq = conf_tensor(f, "xq", conf_types[i])->data;
        const float *dot = conf_tensor(f, "dot", conf_types[i])->data;
        float maxdot = 0;
        for (int r = 0; r < CONF_ROWS; r++) maxdot = fmaxf(maxdot, fabsf(dot[r]));
        for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
            const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
            if (!k) continue;
            double worst = 0;
            for (int r = 0; r < CONF_ROWS; r++) {
                const uint8_t *row = (const uint8_t *)q->data + r * kiln_row_size(t, CONF_COLS);
                float got = k->vec_dot[t](CONF_COLS, row, xq);
                worst = fmax(worst, fabs((double)got - dot[r]) / maxdot);
            }
            print_message("dot %-6s %-6s max rel err %.2e\n", conf_types[i], kiln_isa_name(k->isa),
                          worst);
            if (worst > 1e-5)
                fail_msg("%s/%s: dot error %.3g", conf_types[i], kiln_isa_name(k->isa), worst);
        }
    }
}

static double rmse(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / (double)n);
}

static void test_conf_quantizer(void **state) {
    const gguf_file *f = conf_file(state);
    const float *src = conf_tensor(f, "src", NULL)->data;
    const int64_t n = CONF_ROWS * CONF_COLS;
    float *back = xmalloc((size_t)n * sizeof(float));
    void *q = xmalloc((size_t)n * 4);
    for (size_t i = 0; i < N_CONF_TYPES; i++) {
        kiln_type t = conf_type(conf_types[i]);
        double ref = rmse(conf_tensor(f, "deq", conf_types[i])->data, src, n);
        for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
            const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
            if (!k) continue;
            k->from_float[t](src, q, n);
            scalar()->to_float[t](q, back, n);
            double e = rmse(back, src, n);
            if (isa == KILN_ISA_SCALAR)
                print_message("quant %-6s rmse %.4e ggml %.4e ratio %.4f\n", conf_types[i], e, ref,
                              e / ref);
            if (e > 1.02 * ref)
                fail_msg("%s/%s: rmse %.4g > 1.02 x %.4g", conf_types[i], kiln_isa_name(k->isa), e,
                         ref);
        }
    }
    free(back);
    free(q);
}

/* ---- SIMD variants against the scalar reference ---- */

static const int64_t lengths[] = {32, 64, 96, 160, 224, 256, 288, 480, 512, 544, 1024, 1056, 4192};
#define N_LENGTHS (sizeof lengths / sizeof lengths[0])

static void check_vec_dot(const struct kiln_kernels *k, kiln_type wt, int64_t n, uint64_t *rng) {
    kiln_type xt = kiln_vec_dot_type(wt);
    void *w = random_row(wt, n, rng), *x = random_row(xt, n, rng);
    float want = scalar()->vec_dot[wt](n, w, x), got = k->vec_dot[wt](n, w, x);
    double tol = 1e-5 * dot_magnitude(wt, w, x, n) + 1e-30;
    if (fabs((double)got - want) > tol)
        fail_msg("vec_dot %s/%s n=%lld: %.9g vs scalar %.9g", kiln_type_name(wt),
                 kiln_isa_name(k->isa), (long long)n, (double)got, (double)want);
    free(w);
    free(x);
}

static void check_from_float(const struct kiln_kernels *k, kiln_type t, int64_t n, uint64_t *rng) {
    float *f = random_floats(n, 0.0f, 3.0f, rng);
    size_t sz = kiln_row_size(t, n);
    uint8_t *a = xmalloc(sz), *b = xmalloc(sz);
    char what[64];
    snprintf(what, sizeof what, "from_float %s/%s n=%lld", kiln_type_name(t), kiln_isa_name(k->isa),
             (long long)n);
    k->from_float[t](f, a, n);
    scalar()->from_float[t](f, b, n);
    assert_rows_match(t, a, b, f, n, what);
    free(f);
    free(a);
    free(b);
}

static void check_to_float(const struct kiln_kernels *k, kiln_type t, int64_t n, uint64_t *rng) {
    void *q = random_row(t, n, rng);
    float *a = xmalloc((size_t)n * sizeof(float)), *b = xmalloc((size_t)n * sizeof(float));
    k->to_float[t](q, a, n);
    scalar()->to_float[t](q, b, n);
    if (memcmp(a, b, (size_t)n * sizeof(float)))
        fail_msg("to_float %s/%s n=%lld differs", kiln_type_name(t), kiln_isa_name(k->isa),
                 (long long)n);
    free(q);
    free(a);
    free(b);
}

static void test_simd_vs_scalar(void **state) {
    (void)state;
    static const kiln_type conv_types[] = {
        KILN_TYPE_F32,  KILN_TYPE_F16,  KILN_TYPE_BF16, KILN_TYPE_Q4_0, KILN_TYPE_Q4_1,
        KILN_TYPE_Q5_0, KILN_TYPE_Q5_1, KILN_TYPE_Q8_0, KILN_TYPE_Q8_1, KILN_TYPE_IQ4_NL};
    uint64_t rng = 42;
    int checked = 0;
    for (int isa = KILN_ISA_AVX2; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) {
            print_message("SKIP: %s not available on this CPU\n",
                          kiln_isa_name((enum kiln_isa)isa));
            continue;
        }
        for (size_t li = 0; li < N_LENGTHS; li++) {
            for (size_t i = 0; i < N_WEIGHT_TYPES; i++) {
                check_vec_dot(k, weight_types[i], lengths[li], &rng);
                checked++;
            }
            for (size_t i = 0; i < sizeof conv_types / sizeof conv_types[0]; i++) {
                kiln_type t = conv_types[i];
                if (k->from_float[t] != scalar()->from_float[t])
                    check_from_float(k, t, lengths[li], &rng);
                if (k->to_float[t] != scalar()->to_float[t])
                    check_to_float(k, t, lengths[li], &rng);
            }
        }
    }
    static const int64_t odd[] = {1, 5, 17, 31, 63, 100, 1003}; /* float types: any length */
    for (int isa = KILN_ISA_AVX2; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        for (size_t li = 0; k && li < sizeof odd / sizeof odd[0]; li++) {
            for (int t = 0; t < 3; t++, checked++) {
                check_vec_dot(k, conv_types[t], odd[li], &rng);
                check_from_float(k, conv_types[t], odd[li], &rng);
                check_to_float(k, conv_types[t], odd[li], &rng);
            }
        }
    }
    print_message("simd vs scalar: %d vec_dot cases\n", checked);
}

/* ---- gemm tiles against vec_dot ---- */

static void check_gemm_tile(const struct kiln_kernels *k, kiln_type wt, int64_t n, int nr, int nc,
                            uint64_t *rng) {
    kiln_type xt = kiln_vec_dot_type(wt);
    size_t wrow = kiln_row_size(wt, n), xrow = kiln_row_size(xt, n);
    size_t ws = wrow + 18, xs = xrow + 34, os = (size_t)nr + 3; /* odd strides on purpose */
    uint8_t *w = xmalloc(ws * (size_t)nr), *x = xmalloc(xs * (size_t)nc);
    float *out = xmalloc(os * (size_t)nc * sizeof(float));
    random_rows(wt, n, nr, w, ws, rng);
    random_rows(xt, n, nc, x, xs, rng);
    k->gemm[wt](n, w, ws, nr, x, xs, nc, out, os);
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++) {
            float want = k->vec_dot[wt](n, w + r * ws, x + c * xs), got = out[c * os + r];
            double tol = 1e-5 * dot_magnitude(wt, w + r * ws, x + c * xs, n) + 1e-30;
            if (fabs((double)got - want) > tol)
                fail_msg("gemm %s/%s n=%lld %dx%d at r=%d c=%d: %.9g vs %.9g", kiln_type_name(wt),
                         kiln_isa_name(k->isa), (long long)n, nr, nc, r, c, (double)got,
                         (double)want);
        }
    free(w);
    free(x);
    free(out);
}

static void test_gemm_tiles(void **state) {
    (void)state;
    /* 1-3 blocks, 15 (a tail group only), 16 (one full group of the AVX-512
     * block-per-lane path), 17 and 33 (full groups plus a tail) */
    static const int64_t glen[] = {32, 64, 96, 480, 512, 544, 1056};
    uint64_t rng = 7;
    int tiles = 0;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (size_t i = 0; i < N_WEIGHT_TYPES; i++) {
            kiln_type t = weight_types[i];
            if (!k->gemm[t]) continue;
            for (size_t li = 0; li < sizeof glen / sizeof glen[0]; li++)
                for (int nr = 1; nr <= KILN_GEMM_MAX_R; nr++)
                    for (int nc = 1; nc <= KILN_GEMM_MAX_C; nc++, tiles++)
                        check_gemm_tile(k, t, glen[li], nr, nc, &rng);
            if (kiln_type_info(t)->blck > 1) continue;
            /* float types: vector tails (F16 chunks of 16, BF16 of 32) and
             * F16's 256-element conversion chunks with a tail */
            static const int64_t flen[] = {1, 15, 17, 33, 100, 257, 300};
            for (size_t li = 0; li < sizeof flen / sizeof flen[0]; li++)
                for (int nr = 1; nr <= KILN_GEMM_MAX_R; nr++)
                    for (int nc = 1; nc <= KILN_GEMM_MAX_C; nc++, tiles++)
                        check_gemm_tile(k, t, flen[li], nr, nc, &rng);
        }
    }
    print_message("gemm: %d tiles checked\n", tiles);
}

/* Batch invariance: a (row, column) result must not depend on the tile it
 * was computed in (rows 0..nr and columns 0..nc of an 8 x 8 tile against the
 * same pair alone), bit for bit, for columns 0..max_nc. The legacy types
 * whose AVX-512 gemm switches to the block-per-lane path for wider tiles
 * (Q4_0, Q8_0, IQ4_NL; a different summation order) are checked for the
 * matvec tiles (nc = 1) only. */
static void check_tile_invariance(const struct kiln_kernels *k, kiln_type wt, int64_t n, int max_nc,
                                  uint64_t *rng) {
    kiln_type xt = kiln_vec_dot_type(wt);
    size_t ws = kiln_row_size(wt, n), xs = kiln_row_size(xt, n);
    uint8_t *w = xmalloc(ws * KILN_GEMM_MAX_R), *x = xmalloc(xs * KILN_GEMM_MAX_C);
    random_rows(wt, n, KILN_GEMM_MAX_R, w, ws, rng);
    random_rows(xt, n, KILN_GEMM_MAX_C, x, xs, rng);
    float full[KILN_GEMM_MAX_R * KILN_GEMM_MAX_C];
    for (int nc = 1; nc <= max_nc; nc++) {
        k->gemm[wt](n, w, ws, KILN_GEMM_MAX_R, x, xs, nc, full, KILN_GEMM_MAX_R);
        for (int r = 0; r < KILN_GEMM_MAX_R; r++)
            for (int c = 0; c < nc; c++) {
                float one;
                k->gemm[wt](n, w + r * ws, ws, 1, x + c * xs, xs, 1, &one, 1);
                if (memcmp(&one, &full[c * KILN_GEMM_MAX_R + r], sizeof one))
                    fail_msg("gemm %s/%s n=%lld: 8x%d tile r=%d c=%d gives %.9g, alone %.9g",
                             kiln_type_name(wt), kiln_isa_name(k->isa), (long long)n, nc, r, c,
                             (double)full[c * KILN_GEMM_MAX_R + r], (double)one);
            }
    }
    free(w);
    free(x);
}

static void test_gemm_invariance(void **state) {
    (void)state;
    uint64_t rng = 11;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (size_t i = 0; i < N_WEIGHT_TYPES; i++) {
            kiln_type t = weight_types[i];
            if (!k->gemm[t]) continue;
            int wide = t != KILN_TYPE_Q4_0 && t != KILN_TYPE_Q8_0 && t != KILN_TYPE_IQ4_NL;
            check_tile_invariance(k, t, 544, wide ? KILN_GEMM_MAX_C : 1, &rng);
        }
    }
}

/* ---- matvec entries (kernels.h), every type that has one ---- */

#define MV_ROWS 11

/* MV_ROWS rows (stride padded by 64 bytes) against one column: every row
 * within vec_dot's tolerance of the scalar reference, and every call over
 * rows [s, s + cnt) equal bit for bit to the same rows of the full call,
 * so any split of the rows among threads gives the same y. */
static void check_matvec(const struct kiln_kernels *k, kiln_type wt, int64_t n, uint64_t *rng) {
    kiln_type xt = kiln_vec_dot_type(wt);
    size_t ws = kiln_row_size(wt, n) + 64;
    uint8_t *w = xmalloc(ws * MV_ROWS);
    memset(w, 0xff, ws * MV_ROWS);
    for (int r = 0; r < MV_ROWS; r++) {
        void *row = random_row(wt, n, rng);
        memcpy(w + r * ws, row, kiln_row_size(wt, n));
        free(row);
    }
    void *x = random_row(xt, n, rng);
    float full[MV_ROWS], part[MV_ROWS];
    k->matvec[wt](n, w, ws, MV_ROWS, x, full);
    for (int r = 0; r < MV_ROWS; r++) {
        float want = scalar()->vec_dot[wt](n, w + r * ws, x);
        double tol = 1e-5 * dot_magnitude(wt, w + r * ws, x, n) + 1e-30;
        if (fabs((double)full[r] - want) > tol)
            fail_msg("matvec %s/%s n=%lld row %d: %.9g vs scalar %.9g", kiln_type_name(wt),
                     kiln_isa_name(k->isa), (long long)n, r, (double)full[r], (double)want);
    }
    for (int s0 = 0; s0 < MV_ROWS; s0++)
        for (int cnt = 1; s0 + cnt <= MV_ROWS; cnt++) {
            k->matvec[wt](n, w + s0 * ws, ws, cnt, x, part);
            if (memcmp(part, full + s0, (size_t)cnt * sizeof(float)))
                fail_msg("matvec %s/%s n=%lld: rows [%d, %d) differ from the full call",
                         kiln_type_name(wt), kiln_isa_name(k->isa), (long long)n, s0, s0 + cnt);
        }
    free(w);
    free(x);
}

static void test_matvec(void **state) {
    (void)state;
    uint64_t rng = 23;
    int checked = 0;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (int t = 0; t < KILN_TYPE_COUNT; t++) {
            if (!k->matvec[t]) continue;
            int64_t blck = kiln_type_info((kiln_type)t)->blck;
            for (size_t i = 0; i < N_LENGTHS; i++)
                if (lengths[i] % blck == 0) check_matvec(k, (kiln_type)t, lengths[i], &rng);
            if (blck == 1) /* float types: masked tails */
                for (int64_t n = 1; n < 40; n += 7) check_matvec(k, (kiln_type)t, n, &rng);
            checked++;
        }
    }
    print_message("matvec: %d (ISA, type) entries checked\n", checked);
}

/* ---- prepared activations (kernels.h gemm_xprep / gemm_xp) ---- */

/* The prepared Q8_0 row at p (n elements) against kernels.h's layout,
 * computed here from the Q8_0 blocks at q. */
static void check_xp_layout(const uint8_t *p, const block_q8_0 *q, int64_t n) {
    int64_t nb = n / QK8_0, ng = (n + KILN_GEMM_XP_GROUP - 1) / KILN_GEMM_XP_GROUP;
    for (int64_t g = 0; g < ng; g++) {
        const uint8_t *grp = p + g * KILN_GEMM_XP_GROUP_BYTES;
        for (int j = 0; j < 16; j++) {
            int64_t b = g * 16 + j;
            float d;
            int32_t nsum, want_sum = 0;
            memcpy(&d, grp + 512 + 4 * j, 4);
            memcpy(&nsum, grp + 576 + 4 * j, 4);
            for (int e = 0; e < QK8_0; e++) {
                int8_t got = (int8_t)grp[64 * (e / 4) + 4 * j + e % 4];
                int8_t want = b < nb ? q[b].qs[e] : 0;
                if (got != want)
                    fail_msg("xprep n=%lld: group %lld block %d element %d: %d, want %d",
                             (long long)n, (long long)g, j, e, got, want);
                want_sum += want;
            }
            float want_d = b < nb ? kiln_f16_to_f32(q[b].d) : 0.0f;
            if (d != want_d || nsum != -want_sum)
                fail_msg("xprep n=%lld block %lld: d %g sum %d, want %g %d", (long long)n,
                         (long long)b, (double)d, -nsum, (double)want_d, want_sum);
        }
    }
}

/* One (row, column) result got of an nr x nc tile of `what`: within the
 * tolerance of check_gemm_tile of vec_dot(w row, x column), and bit for bit
 * the result `one` of the same pair in a 1 x 1 tile. */
static void check_tile_value(const struct kiln_kernels *k, const char *what, kiln_type wt,
                             int64_t n, const uint8_t *wr, const uint8_t *xc, int nr, int nc, int r,
                             int c, float got, float one) {
    float want = k->vec_dot[wt](n, wr, xc);
    double tol = 1e-5 * dot_magnitude(wt, wr, xc, n) + 1e-30;
    if (fabs((double)got - want) > tol)
        fail_msg("%s %s/%s n=%lld %dx%d at r=%d c=%d: %.9g vs %.9g", what, kiln_type_name(wt),
                 kiln_isa_name(k->isa), (long long)n, nr, nc, r, c, (double)got, (double)want);
    if (memcmp(&one, &got, sizeof one))
        fail_msg("%s %s/%s n=%lld: %dx%d tile r=%d c=%d gives %.9g, alone %.9g", what,
                 kiln_type_name(wt), kiln_isa_name(k->isa), (long long)n, nr, nc, r, c, (double)got,
                 (double)one);
}

/* Every gemm_xp tile shape against vec_dot (the tolerance of
 * check_gemm_tile), and each of its (row, column) results against the same
 * pair in a 1 x 1 tile, bit for bit. */
static void check_xp_tile(const struct kiln_kernels *k, kiln_type wt, int64_t n, uint64_t *rng) {
    size_t wrow = kiln_row_size(wt, n), xrow = kiln_row_size(KILN_TYPE_Q8_0, n);
    size_t ps = kiln_gemm_xp_row_size(KILN_TYPE_Q8_0, n) + 128; /* a wider stride on purpose */
    size_t ws = wrow + 18, os = KILN_GEMM_XP_MAX_R + 3;
    enum { MR = KILN_GEMM_XP_MAX_R, MC = KILN_GEMM_XP_MAX_C };
    uint8_t *w = xmalloc(ws * MR), *x = xmalloc(xrow * MC);
    uint8_t *xp = kiln_aligned_alloc(64, ps * MC);
    assert_non_null(xp);
    float *out = xmalloc(os * MC * sizeof(float));
    random_rows(wt, n, MR, w, ws, rng);
    random_rows(KILN_TYPE_Q8_0, n, MC, x, xrow, rng);
    for (int c = 0; c < MC; c++) {
        k->gemm_xprep[KILN_TYPE_Q8_0](n, x + c * xrow, xp + c * ps);
        check_xp_layout(xp + c * ps, (const block_q8_0 *)(const void *)(x + c * xrow), n);
    }
    for (int nr = 1; nr <= MR; nr++)
        for (int nc = 1; nc <= MC; nc++) {
            k->gemm_xp[wt](n, w, ws, nr, xp, ps, nc, out, os);
            for (int c = 0; c < nc; c++)
                for (int r = 0; r < nr; r++) {
                    float got = out[c * os + r], one;
                    k->gemm_xp[wt](n, w + r * ws, ws, 1, xp + c * ps, ps, 1, &one, 1);
                    check_tile_value(k, "gemm_xp", wt, n, w + r * ws, x + c * xrow, nr, nc, r, c,
                                     got, one);
                }
        }
    free(w);
    free(x);
    kiln_aligned_free(xp);
    free(out);
}

static void test_gemm_xp(void **state) {
    (void)state;
    static const int64_t glen[] = {32, 96, 160, 288, 416, 480, 512, 544, 1056};
    uint64_t rng = 13;
    int checked = 0;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (size_t i = 0; i < N_WEIGHT_TYPES; i++) {
            kiln_type t = weight_types[i];
            if (!k->gemm_xp[t]) continue;
            kiln_type vdt = kiln_vec_dot_type(t);
            if (vdt != KILN_TYPE_Q8_0) continue; /* float layouts: tests/test_kern_float.c */
            assert_non_null(k->gemm_xprep[vdt]);
            for (size_t li = 0; li < sizeof glen / sizeof glen[0]; li++, checked++)
                check_xp_tile(k, t, glen[li], &rng);
        }
    }
    if (!checked) print_message("gemm_xp: no table has prepared-activation tiles here\n");
}

/* ---- prepared weights (kernels.h gemm_wprep / gemm_wp) ---- */

/* gemm_wp over prepared rows: every nr <= KILN_GEMM_WP_MAX_R and nc up to
 * 13 (register-block tails) against vec_dot (check_xp_tile's tolerance),
 * gemm_xp bit for bit where the table has it, and a 1 x 1 tile bit for bit;
 * rows prepared together or one at a time are the same bytes. */
static void check_wp_tile(const struct kiln_kernels *k, kiln_type wt, int64_t n, uint64_t *rng) {
    enum { MR = KILN_GEMM_WP_MAX_R, MC = 13 };
    kiln_type vdt = kiln_vec_dot_type(wt);
    size_t wrow = kiln_row_size(wt, n), xrow = kiln_row_size(vdt, n);
    size_t ps = kiln_gemm_xp_row_size(vdt, n) + 64, pw = kiln_gemm_wp_row_size(n);
    size_t ws = wrow + 18, os = MR + 3;
    uint8_t *w = xmalloc(ws * MR), *x = xmalloc(xrow * MC);
    uint8_t *xp = kiln_aligned_alloc(64, ps * MC), *wp = kiln_aligned_alloc(64, pw * MR);
    uint8_t *wp1 = kiln_aligned_alloc(64, pw);
    assert_non_null(xp);
    assert_non_null(wp);
    assert_non_null(wp1);
    float *out = xmalloc(os * MC * sizeof(float));
    random_rows(wt, n, MR, w, ws, rng);
    random_rows(vdt, n, MC, x, xrow, rng);
    for (int c = 0; c < MC; c++) {
        k->gemm_xprep[vdt](n, x + c * xrow, xp + c * ps);
    }
    k->gemm_wprep[wt](n, w, ws, MR, wp);
    for (int r = 0; r < MR; r++) {
        k->gemm_wprep[wt](n, w + r * ws, ws, 1, wp1);
        if (memcmp(wp1, wp + r * pw, pw))
            fail_msg("gemm_wprep %s/%s n=%lld: row %d differs alone", kiln_type_name(wt),
                     kiln_isa_name(k->isa), (long long)n, r);
    }
    for (int nr = 1; nr <= MR; nr++)
        for (int nc = 1; nc <= MC; nc++) {
            k->gemm_wp[wt](n, wp, pw, nr, xp, ps, nc, out, os);
            for (int c = 0; c < nc; c++)
                for (int r = 0; r < nr; r++) {
                    float got = out[c * os + r], one;
                    k->gemm_wp[wt](n, wp + r * pw, pw, 1, xp + c * ps, ps, 1, &one, 1);
                    check_tile_value(k, "gemm_wp", wt, n, w + r * ws, x + c * xrow, nr, nc, r, c,
                                     got, one);
                    if (k->gemm_xp[wt]) {
                        k->gemm_xp[wt](n, w + r * ws, ws, 1, xp + c * ps, ps, 1, &one, 1);
                        if (memcmp(&one, &got, sizeof one))
                            fail_msg("gemm_wp %s/%s n=%lld r=%d c=%d: %.9g, gemm_xp %.9g",
                                     kiln_type_name(wt), kiln_isa_name(k->isa), (long long)n, r, c,
                                     (double)got, (double)one);
                    }
                }
        }
    free(w);
    free(x);
    kiln_aligned_free(xp);
    kiln_aligned_free(wp);
    kiln_aligned_free(wp1);
    free(out);
}

static void test_gemm_wp(void **state) {
    (void)state;
    static const int64_t glen[] = {32, 96, 160, 288, 416, 480, 512, 544, 1056, 2080};
    uint64_t rng = 17;
    int checked = 0;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (size_t i = 0; i < N_WEIGHT_TYPES; i++) {
            kiln_type t = weight_types[i];
            if (!k->gemm_wp[t]) continue;
            assert_non_null(k->gemm_wprep[t]);
            assert_non_null(k->gemm_xprep[kiln_vec_dot_type(t)]);
            for (size_t li = 0; li < sizeof glen / sizeof glen[0]; li++, checked++)
                check_wp_tile(k, t, glen[li], &rng);
        }
    }
    if (!checked) print_message("gemm_wp: no table has prepared-weight tiles here\n");
}

/* ---- edge cases ---- */

static void check_roundtrip(const struct kiln_kernels *k, kiln_type t, const float *src, int64_t n,
                            double rel_tol) {
    uint8_t *q = xmalloc(kiln_row_size(t, n));
    float *back = xmalloc((size_t)n * sizeof(float));
    double amax = 0;
    k->from_float[t](src, q, n);
    k->to_float[t](q, back, n);
    for (int64_t i = 0; i < n; i++) amax = fmax(amax, fabs(src[i]));
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(back[i]))
            fail_msg("%s/%s: element %lld not finite", kiln_type_name(t), kiln_isa_name(k->isa),
                     (long long)i);
        if (fabs((double)back[i] - src[i]) > rel_tol * amax)
            fail_msg("%s/%s: element %lld: %g vs %g", kiln_type_name(t), kiln_isa_name(k->isa),
                     (long long)i, (double)back[i], (double)src[i]);
    }
    free(q);
    free(back);
}

static void test_edge_cases(void **state) {
    (void)state;
    static const kiln_type all[] = {KILN_TYPE_F32,  KILN_TYPE_F16,   KILN_TYPE_BF16, KILN_TYPE_Q4_0,
                                    KILN_TYPE_Q4_1, KILN_TYPE_Q5_0,  KILN_TYPE_Q5_1, KILN_TYPE_Q8_0,
                                    KILN_TYPE_Q8_1, KILN_TYPE_IQ4_NL};
    static const double tol[] = {0, 1e-3, 8e-3, 0.13, 0.07, 0.065, 0.035, 0.005, 0.005, 0.11};
    enum { N = 512 };
    float zero[N] = {0}, big[N], mixed[N];
    uint64_t rng = 99;
    for (int i = 0; i < N; i++) {
        big[i] = 6.0e4f * (2.0f * (float)(test_rand_u64(&rng) >> 40) / 16777216.0f - 1.0f);
        mixed[i] = i < 256 ? 0.0f : 1e-3f * test_rand_normal(&rng); /* zero blocks, then tiny */
    }
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
            check_roundtrip(k, all[i], zero, N, 0.0);
            check_roundtrip(k, all[i], big, N, tol[i]);
            check_roundtrip(k, all[i], mixed, N, tol[i]);
        }
        for (size_t i = 0; i < N_WEIGHT_TYPES; i++) { /* zero weights . zero activations */
            kiln_type wt = weight_types[i], xt = kiln_vec_dot_type(wt);
            uint8_t w[N * 4], x[N * 4];
            k->from_float[wt](zero, w, N);
            k->from_float[xt](zero, x, N);
            float d0 = k->vec_dot[wt](N, w, x);
            k->from_float[xt](big, x, N);
            float d1 = k->vec_dot[wt](N, w, x);
            if (d0 != 0.0f || d1 != 0.0f)
                fail_msg("%s/%s: zero weights give %g, %g", kiln_type_name(wt),
                         kiln_isa_name(k->isa), (double)d0, (double)d1);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_dequant),    cmocka_unit_test(test_conf_activation),
        cmocka_unit_test(test_conf_dot),        cmocka_unit_test(test_conf_quantizer),
        cmocka_unit_test(test_simd_vs_scalar),  cmocka_unit_test(test_gemm_tiles),
        cmocka_unit_test(test_gemm_invariance), cmocka_unit_test(test_gemm_xp),
        cmocka_unit_test(test_gemm_wp),         cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_matvec),
    };
    return cmocka_run_group_tests(tests, conf_setup, conf_teardown);
}

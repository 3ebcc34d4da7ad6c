/* test_kern_kquant.c - the K-quant kernels (Q2_K..Q6_K, IQ4_XS, Q8_K):
 * conformance with GGML's reference data (models/quant/quant-conformance.gguf),
 * every SIMD variant against the scalar reference (vec_dot, gemm tiles,
 * to_float, from_float), quantizer quality, and edge cases. */
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

static const kiln_type kq_types[] = {KILN_TYPE_Q2_K, KILN_TYPE_Q3_K, KILN_TYPE_Q4_K,
                                     KILN_TYPE_Q5_K, KILN_TYPE_Q6_K, KILN_TYPE_IQ4_XS};
#define N_KQ (int)(sizeof kq_types / sizeof kq_types[0])

static const struct kiln_kernels *scalar(void) {
    return kiln_kernels_get(KILN_ISA_SCALAR);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    assert_non_null(p);
    return p;
}

static void fill_normal(float *x, int64_t n, float mean, float sd, uint64_t *rng) {
    for (int64_t i = 0; i < n; i++) x[i] = mean + sd * test_rand_normal(rng);
}

static double rmse(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / (double)n);
}

/* Distance in units in the last place between two finite floats. */
static int64_t ulp_diff(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return llabs((long long)ia - ib);
}

/* ---- conformance with GGML ---- */

static const gguf_tensor *must_find(gguf_file *f, const char *prefix, const char *type) {
    char name[64];
    snprintf(name, sizeof name, "%s%s", prefix, type);
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) fail_msg("tensor %s missing", name);
    return t;
}

/* Our Q8_K of x against GGML's: d exact, qs off by at most one (a rounding
 * tie), bsums the sums of our own qs. */
static void check_q8k(const struct kiln_kernels *k, const float *x, const block_q8_K *ref, int nb) {
    block_q8_K *y = xmalloc((size_t)nb * sizeof *y);
    k->from_float[KILN_TYPE_Q8_K](x, y, (int64_t)nb * QK_K);
    int ties = 0;
    for (int b = 0; b < nb; b++) {
        assert_true(y[b].d == ref[b].d);
        for (int j = 0; j < QK_K; j++) {
            int dq = y[b].qs[j] - ref[b].qs[j];
            assert_true(abs(dq) <= 1);
            ties += dq != 0;
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += y[b].qs[16 * j + i];
            assert_int_equal(s, y[b].bsums[j]);
            if (!memcmp(y[b].qs + 16 * j, ref[b].qs + 16 * j, 16))
                assert_int_equal(y[b].bsums[j], ref[b].bsums[j]);
        }
    }
    assert_true(ties <= 2);
    free(y);
}

static void conform_type(gguf_file *f, kiln_type t, const float *src, const float *x, int rows,
                         int cols) {
    const char *tn = kiln_type_name(t);
    const gguf_tensor *q = must_find(f, "q.", tn), *deq = must_find(f, "deq.", tn);
    const gguf_tensor *xq = must_find(f, "xq.", tn), *dot = must_find(f, "dot.", tn);
    assert_int_equal(q->type, t);
    assert_int_equal(xq->type, KILN_TYPE_Q8_K);
    size_t rs = kiln_row_size(t, cols);
    int64_t n = (int64_t)rows * cols, max_ulp = 0;
    float *y = xmalloc((size_t)n * sizeof *y);
    const float *dref = deq->data, *dotref = dot->data;

    scalar()->to_float[t](q->data, y, n);
    for (int64_t i = 0; i < n; i++) {
        int64_t u = ulp_diff(y[i], dref[i]);
        max_ulp = u > max_ulp ? u : max_ulp;
    }
    assert_true(max_ulp <= 1);

    float dmax = 0, derr[KILN_ISA_COUNT] = {0};
    for (int r = 0; r < rows; r++) dmax = fmaxf(dmax, fabsf(dotref[r]));
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        check_q8k(k, x, xq->data, cols / QK_K);
        for (int r = 0; r < rows; r++) {
            float d = k->vec_dot[t](cols, (const uint8_t *)q->data + r * rs, xq->data);
            derr[isa] = fmaxf(derr[isa], fabsf(d - dotref[r]));
        }
        assert_true(derr[isa] <= 1e-5f * dmax);
        if (k->to_float[t] != scalar()->to_float[t]) {
            float *z = xmalloc((size_t)n * sizeof *z);
            k->to_float[t](q->data, z, n);
            assert_memory_equal(z, y, (size_t)n * sizeof *z);
            free(z);
        }
    }

    void *mine = xmalloc(rs * (size_t)rows);
    scalar()->from_float[t](src, mine, n);
    scalar()->to_float[t](mine, y, n);
    double ours = rmse(y, src, n), ggml = rmse(dref, src, n);
    print_message("%-6s to_float max %d ulp; dot err scalar %.2e avx2 %.2e avx512 %.2e "
                  "(x max|dot| %.3g); RMSE ours %.5g ggml %.5g ratio %.4f\n",
                  tn, (int)max_ulp, derr[0] / dmax, derr[1] / dmax, derr[2] / dmax, dmax, ours,
                  ggml, ours / ggml);
    assert_true(ours <= 1.02 * ggml);
    free(mine);
    free(y);
}

static void test_conformance(void **state) {
    (void)state;
    char buf[4096];
    const char *path = TEST_DATA_OR_SKIP("models/quant/quant-conformance.gguf", buf);
    kiln_status st;
    gguf_file *f = gguf_open(path, &st);
    if (!f) fail_msg("%s: %s", path, kiln_last_error());
    const gguf_tensor *src = gguf_find_tensor(f, "src"), *x = gguf_find_tensor(f, "x");
    assert_non_null(src);
    assert_non_null(x);
    int cols = (int)src->ne[0], rows = (int)src->ne[1];
    assert_int_equal(x->ne[0], cols);
    for (int i = 0; i < N_KQ; i++) conform_type(f, kq_types[i], src->data, x->data, rows, cols);
    gguf_close(f);
}

/* ---- SIMD variants against the scalar reference ---- */

/* Gives every block sane random f16 scales (d, and dmin where the type has one). */
static void set_block_scales(kiln_type t, void *dst, int64_t nblocks, uint64_t *rng) {
    size_t bs = kiln_type_info(t)->size;
    uint8_t *p = dst;
    for (int64_t b = 0; b < nblocks; b++, p += bs) {
        kiln_f16 d = kiln_f32_to_f16(0.001f + 0.01f * (float)(test_rand_u64(rng) % 100) / 100);
        kiln_f16 m = kiln_f32_to_f16(0.002f * (float)(test_rand_u64(rng) % 100) / 100);
        switch (t) {
        case KILN_TYPE_Q2_K:
            memcpy(&((block_q2_K *)p)->d, &d, 2), memcpy(&((block_q2_K *)p)->dmin, &m, 2);
            break;
        case KILN_TYPE_Q3_K:
            memcpy(&((block_q3_K *)p)->d, &d, 2);
            break;
        case KILN_TYPE_Q4_K:
            memcpy(&((block_q4_K *)p)->d, &d, 2), memcpy(&((block_q4_K *)p)->dmin, &m, 2);
            break;
        case KILN_TYPE_Q5_K:
            memcpy(&((block_q5_K *)p)->d, &d, 2), memcpy(&((block_q5_K *)p)->dmin, &m, 2);
            break;
        case KILN_TYPE_Q6_K:
            memcpy(&((block_q6_K *)p)->d, &d, 2);
            break;
        case KILN_TYPE_IQ4_XS:
            memcpy(&((block_iq4_xs *)p)->d, &d, 2);
            break;
        default:
            fail();
        }
    }
}

/* Random weight rows: random bytes with sane f16 scales, so every bit
 * pattern of the quants and sub-scales is exercised. */
static void random_blocks(kiln_type t, void *dst, int64_t nblocks, uint64_t *rng) {
    size_t bs = kiln_type_info(t)->size;
    uint8_t *p = dst;
    for (size_t i = 0; i < (size_t)nblocks * bs; i++) p[i] = (uint8_t)test_rand_u64(rng);
    set_block_scales(t, dst, nblocks, rng);
}

/* Tolerance for comparing two evaluations of one dot product: a small
 * multiple of float rounding on the sum of |w_i * x_i|. */
static float dot_tol(kiln_type t, const void *w, const void *xq, int64_t n) {
    float *a = xmalloc((size_t)n * 4), *b = xmalloc((size_t)n * 4);
    scalar()->to_float[t](w, a, n);
    scalar()->to_float[KILN_TYPE_Q8_K](xq, b, n);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    free(a), free(b);
    return (float)(2e-6 * s) + 1e-30f;
}

static void check_vec_dot(const struct kiln_kernels *k, kiln_type t, int64_t n, uint64_t *rng) {
    int64_t nb = n / QK_K;
    void *w = xmalloc(kiln_row_size(t, n));
    float *xf = xmalloc((size_t)n * 4);
    block_q8_K *xq = xmalloc((size_t)nb * sizeof *xq);
    random_blocks(t, w, nb, rng);
    fill_normal(xf, n, 0, 1, rng);
    scalar()->from_float[KILN_TYPE_Q8_K](xf, xq, n);
    float ref = scalar()->vec_dot[t](n, w, xq), got = k->vec_dot[t](n, w, xq);
    float tol = dot_tol(t, w, xq, n);
    if (!(fabsf(got - ref) <= tol))
        fail_msg("%s %s n=%lld: %g vs scalar %g (tol %g)", kiln_isa_name(k->isa), kiln_type_name(t),
                 (long long)n, got, ref, tol);
    free(w), free(xf), free(xq);
}

static void check_gemm(const struct kiln_kernels *k, kiln_type t, int64_t n, uint64_t *rng) {
    const int R = KILN_GEMM_MAX_R, C = KILN_GEMM_MAX_C;
    size_t ws = kiln_row_size(t, n) + 64, xs = kiln_row_size(KILN_TYPE_Q8_K, n) + 4 * 73;
    uint8_t *w = xmalloc(ws * R), *x = xmalloc(xs * C);
    float *xf = xmalloc((size_t)n * 4), ref[KILN_GEMM_MAX_R * KILN_GEMM_MAX_C], tol[R * C];
    float out[KILN_GEMM_MAX_C * (KILN_GEMM_MAX_R + 3)];
    for (int r = 0; r < R; r++) random_blocks(t, w + r * ws, n / QK_K, rng);
    for (int c = 0; c < C; c++) {
        fill_normal(xf, n, 0, 1, rng);
        k->from_float[KILN_TYPE_Q8_K](xf, x + c * xs, n);
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            ref[c * R + r] = k->vec_dot[t](n, w + r * ws, x + c * xs);
            tol[c * R + r] = dot_tol(t, w + r * ws, x + c * xs, n);
        }
    for (int nr = 1; nr <= R; nr++)
        for (int nc = 1; nc <= C; nc++) {
            size_t os = (size_t)nr + 3;
            for (int i = 0; i < (int)(sizeof out / 4); i++) out[i] = NAN;
            k->gemm[t](n, w, ws, nr, x, xs, nc, out, os);
            for (int c = 0; c < nc; c++)
                for (int r = 0; r < nr; r++) {
                    float g = out[c * os + r], e = ref[c * R + r];
                    if (!(fabsf(g - e) <= tol[c * R + r]))
                        fail_msg("%s %s gemm %dx%d n=%lld [r%d c%d]: %g vs %g",
                                 kiln_isa_name(k->isa), kiln_type_name(t), nr, nc, (long long)n, r,
                                 c, g, e);
                }
        }
    free(w), free(x), free(xf);
}

static void check_conversions(const struct kiln_kernels *k, kiln_type t, int64_t n, uint64_t *rng) {
    const struct kiln_kernels *s = scalar();
    float *xf = xmalloc((size_t)n * 4), *a = xmalloc((size_t)n * 4), *b = xmalloc((size_t)n * 4);
    size_t rs = kiln_row_size(t, n);
    uint8_t *q1 = xmalloc(rs), *q2 = xmalloc(rs);
    fill_normal(xf, n, 0.1f, 1, rng);
    xf[5] = 30; /* an outlier */
    if (k->from_float[t] != s->from_float[t]) {
        s->from_float[t](xf, q1, n);
        k->from_float[t](xf, q2, n);
        assert_memory_equal(q1, q2, rs);
    }
    if (k->to_float[t] != s->to_float[t]) {
        random_blocks(t, q1, n / QK_K, rng);
        s->to_float[t](q1, a, n);
        k->to_float[t](q1, b, n);
        assert_memory_equal(a, b, (size_t)n * 4);
    }
    free(xf), free(a), free(b), free(q1), free(q2);
}

static void test_simd_vs_scalar(void **state) {
    (void)state;
    static const int64_t lens[] = {256, 512, 1024, 2816, 4096};
    uint64_t rng = 42;
    for (int isa = KILN_ISA_AVX2; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) {
            print_message("note: this CPU cannot run %s; not tested\n",
                          kiln_isa_name((enum kiln_isa)isa));
            continue;
        }
        int ngemm = 0;
        for (int i = 0; i < N_KQ; i++) {
            kiln_type t = kq_types[i];
            for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
                for (int rep = 0; rep < 4; rep++) check_vec_dot(k, t, lens[l], &rng);
                check_conversions(k, t, lens[l], &rng);
            }
            if (k->gemm[t]) {
                check_gemm(k, t, 256, &rng);
                check_gemm(k, t, 1536, &rng);
                ngemm++;
            }
        }
        /* The activation quantizer: identical bytes, including outliers. */
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
            int64_t n = lens[l];
            float *xf = xmalloc((size_t)n * 4);
            size_t rs = kiln_row_size(KILN_TYPE_Q8_K, n);
            uint8_t *a = xmalloc(rs), *b = xmalloc(rs);
            fill_normal(xf, n, 0, l + 1.0f, &rng);
            xf[n - 1] = -1000;
            scalar()->from_float[KILN_TYPE_Q8_K](xf, a, n);
            k->from_float[KILN_TYPE_Q8_K](xf, b, n);
            assert_memory_equal(a, b, rs);
            free(xf), free(a), free(b);
        }
        print_message("%s: vec_dot/to_float/from_float match scalar; gemm for %d types\n",
                      kiln_isa_name(k->isa), ngemm);
    }
}

/* Extreme operands: every quant and sub-scale byte at one pattern (all bits
 * set gives the largest quants and scales) against activations all +127,
 * all -127 or alternating. SIMD kernels sum products in int16 stages; this
 * checks none of them saturates or overflows, with odd block counts too. */
static void test_extreme_values(void **state) {
    (void)state;
    static const uint8_t wbytes[] = {0xff, 0x00, 0xaa, 0x55, 0x7f};
    static const int64_t lens[] = {768, 1024};
    uint64_t rng = 5;
    for (int isa = KILN_ISA_AVX2; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
            int64_t n = lens[l], nb = n / QK_K;
            block_q8_K *xq = xmalloc((size_t)nb * sizeof *xq);
            for (int xp = 0; xp < 3; xp++) {
                for (int64_t b = 0; b < nb; b++) {
                    xq[b].d = 0.01f;
                    for (int j = 0; j < QK_K; j++)
                        xq[b].qs[j] = (int8_t)(xp == 0   ? 127
                                               : xp == 1 ? -127
                                                         : (j & 1 ? 127 : -127));
                    for (int j = 0; j < QK_K / 16; j++) {
                        int sum = 0;
                        for (int i = 0; i < 16; i++) sum += xq[b].qs[16 * j + i];
                        xq[b].bsums[j] = (int16_t)sum;
                    }
                }
                for (int i = 0; i < N_KQ; i++) {
                    kiln_type t = kq_types[i];
                    size_t rs = kiln_row_size(t, n);
                    uint8_t *w = xmalloc(rs);
                    for (size_t wb = 0; wb < sizeof wbytes; wb++) {
                        memset(w, wbytes[wb], rs);
                        set_block_scales(t, w, nb, &rng);
                        float ref = scalar()->vec_dot[t](n, w, xq), got = k->vec_dot[t](n, w, xq);
                        float tol = dot_tol(t, w, xq, n);
                        if (!(fabsf(got - ref) <= tol))
                            fail_msg("%s %s n=%lld w=0x%02x x#%d: %g vs scalar %g",
                                     kiln_isa_name(k->isa), kiln_type_name(t), (long long)n,
                                     wbytes[wb], xp, got, ref);
                        if (k->gemm[t]) {
                            float out[2];
                            k->gemm[t](n, w, 0, 1, xq, 0, 2, out, 1);
                            assert_true(fabsf(out[0] - ref) <= tol && fabsf(out[1] - ref) <= tol);
                        }
                    }
                    free(w);
                }
            }
            free(xq);
        }
    }
}

/* ---- quantizer quality on random data and edge cases ---- */

static void test_zero_and_outliers(void **state) {
    (void)state;
    const int64_t n = 512;
    float x[512], y[512];
    block_q8_K xq[2];
    uint8_t q[2 * 256];
    uint64_t rng = 7;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (int i = 0; i < N_KQ; i++) {
            kiln_type t = kq_types[i];
            /* all zero: zero blocks, zero dot, no NaN */
            memset(x, 0, sizeof x);
            k->from_float[t](x, q, n);
            k->to_float[t](q, y, n);
            for (int j = 0; j < n; j++) assert_true(y[j] == 0);
            k->from_float[KILN_TYPE_Q8_K](x, xq, n);
            assert_true(xq[0].d == 0 && xq[1].d == 0);
            assert_true(k->vec_dot[t](n, q, xq) == 0);
            /* large outliers: finite and the outlier kept within 5% */
            fill_normal(x, n, 0, 1, &rng);
            x[3] = 1000, x[300] = -2500, x[511] = 0.5f;
            k->from_float[t](x, q, n);
            k->to_float[t](q, y, n);
            for (int j = 0; j < n; j++) assert_true(isfinite(y[j]));
            assert_true(fabsf(y[3] - 1000) < 50 && fabsf(y[300] + 2500) < 125);
            k->from_float[KILN_TYPE_Q8_K](x, xq, n);
            assert_true(isfinite(k->vec_dot[t](n, q, xq)));
        }
    }
}

/* Quantizer quality on more data than the conformance file: a regression
 * guard bounding the RMSE on N(0,1) data a little above what the current
 * quantizers reach (q2 .255, q3 .142, q4 .068, q5 .034, q6 .016, iq4_xs .073). */
static void test_quantizer_quality(void **state) {
    (void)state;
    static const double ceil_[N_KQ] = {0.27, 0.15, 0.075, 0.037, 0.018, 0.08};
    const int64_t n = 8 * 256;
    float *x = xmalloc(n * 4), *y = xmalloc(n * 4);
    uint8_t *q = xmalloc(kiln_row_size(KILN_TYPE_Q6_K, n) /* the largest */);
    uint64_t rng = 99;
    fill_normal(x, n, 0, 1, &rng);
    for (int i = 0; i < N_KQ; i++) {
        scalar()->from_float[kq_types[i]](x, q, n);
        scalar()->to_float[kq_types[i]](q, y, n);
        double rel = rmse(x, y, n); /* data has unit variance */
        print_message("%-6s relative RMSE on N(0,1): %.4f\n", kiln_type_name(kq_types[i]), rel);
        assert_true(rel <= ceil_[i]);
    }
    free(x), free(y), free(q);
}

/* gemm_wp (prepared weights and Q8_K activations, kernels.h): every nr <=
 * KILN_GEMM_WP_MAX_R and nc up to 13 against vec_dot (dot_tol), and each
 * result against a 1 x 1 tile bit for bit; an odd superblock count leaves a
 * half group. */
static void check_gemm_wp(const struct kiln_kernels *k, kiln_type t, int64_t n, uint64_t *rng) {
    enum { R = KILN_GEMM_WP_MAX_R, C = 13 };
    size_t ws = kiln_row_size(t, n) + 64, xs = kiln_row_size(KILN_TYPE_Q8_K, n) + 4 * 73;
    size_t ps = kiln_gemm_xp_row_size(KILN_TYPE_Q8_K, n) + 64, pw = kiln_gemm_wp_row_size(n);
    uint8_t *w = xmalloc(ws * R), *x = xmalloc(xs * C);
    uint8_t *xp = kiln_aligned_alloc(64, ps * C), *wp = kiln_aligned_alloc(64, pw * R);
    assert_non_null(xp);
    assert_non_null(wp);
    float *xf = xmalloc((size_t)n * 4), ref[R * C], tol[R * C], out[C * (R + 3)], one;
    for (int r = 0; r < R; r++) random_blocks(t, w + r * ws, n / QK_K, rng);
    for (int c = 0; c < C; c++) {
        fill_normal(xf, n, 0, 1, rng);
        if (c == 1) memset(xf, 0, (size_t)n * 4); /* an all-zero column: d = 0 */
        k->from_float[KILN_TYPE_Q8_K](xf, x + c * xs, n);
        k->gemm_xprep[KILN_TYPE_Q8_K](n, x + c * xs, xp + c * ps);
    }
    k->gemm_wprep[t](n, w, ws, R, wp);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            ref[c * R + r] = scalar()->vec_dot[t](n, w + r * ws, x + c * xs);
            tol[c * R + r] = dot_tol(t, w + r * ws, x + c * xs, n);
        }
    for (int nr = 1; nr <= R; nr++)
        for (int nc = 1; nc <= C; nc++) {
            size_t os = (size_t)nr + 3;
            for (int i = 0; i < (int)(sizeof out / 4); i++) out[i] = NAN;
            k->gemm_wp[t](n, wp, pw, nr, xp, ps, nc, out, os);
            for (int c = 0; c < nc; c++)
                for (int r = 0; r < nr; r++) {
                    float g = out[c * os + r], e = ref[c * R + r];
                    if (!(fabsf(g - e) <= tol[c * R + r]))
                        fail_msg("%s %s gemm_wp %dx%d n=%lld [r%d c%d]: %g vs scalar %g",
                                 kiln_isa_name(k->isa), kiln_type_name(t), nr, nc, (long long)n, r,
                                 c, g, e);
                    k->gemm_wp[t](n, wp + r * pw, pw, 1, xp + c * ps, ps, 1, &one, 1);
                    if (memcmp(&one, &g, sizeof g))
                        fail_msg("%s %s gemm_wp %dx%d n=%lld [r%d c%d]: %.9g, alone %.9g",
                                 kiln_isa_name(k->isa), kiln_type_name(t), nr, nc, (long long)n, r,
                                 c, g, one);
                }
        }
    free(w), free(x), free(xf);
    kiln_aligned_free(xp), kiln_aligned_free(wp);
}

static void test_gemm_wp(void **state) {
    (void)state;
    static const int64_t lens[] = {256, 512, 768, 2304, 5632};
    uint64_t rng = 23;
    int checked = 0;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (int i = 0; i < N_KQ; i++) {
            kiln_type t = kq_types[i];
            if (!k->gemm_wp[t]) continue;
            assert_non_null(k->gemm_wprep[t]);
            assert_non_null(k->gemm_xprep[KILN_TYPE_Q8_K]);
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++, checked++)
                check_gemm_wp(k, t, lens[li], &rng);
        }
    }
    if (!checked) print_message("gemm_wp: no K-quant prepared-weight tiles here\n");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conformance),       cmocka_unit_test(test_simd_vs_scalar),
        cmocka_unit_test(test_extreme_values),    cmocka_unit_test(test_zero_and_outliers),
        cmocka_unit_test(test_quantizer_quality), cmocka_unit_test(test_gemm_wp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* kern_attn.c - scalar reference kernels for attention over the KV cache:
 * axpy, o[0..n) += w * x[0..n), with x a row of an F32, F16 or Q8_0 cache
 * (attention accumulates V rows this way without converting them first),
 * summed over a tile of rows with weights, and exp_sum, the exponentials of a
 * tile of scores and their sum, and attn_gemm, the small F32 product of a
 * tile of queries and a tile of keys (scores, then their weighted V sums),
 * and swiglu, the gated FFN's activation (it shares the vector exp).
 * The AVX2
 * and AVX-512 variants (kern_attn_avx2.c, kern_attn_avx512.c) compute the
 * same sums with fused multiply-adds (within one rounding per element) and
 * a polynomial exp (within 2 ulp of expf). */
#include <math.h>

#include "base/fp16.h"
#include "compute/blocks.h"
#include "compute/kernels.h"

static const void *row_at(const void *x, size_t stride, int64_t r) {
    return (const char *)x + (size_t)r * stride;
}

static void f32_axpy(int64_t n, float *o, const void *x, size_t xs, const float *w, int64_t nr) {
    for (int64_t r = 0; r < nr; r++) {
        const float *v = row_at(x, xs, r);
        for (int64_t i = 0; i < n; i++) o[i] += w[r] * v[i];
    }
}

static void f16_axpy(int64_t n, float *o, const void *x, size_t xs, const float *w, int64_t nr) {
    for (int64_t r = 0; r < nr; r++) {
        const kiln_f16 *v = row_at(x, xs, r);
        for (int64_t i = 0; i < n; i++) o[i] += w[r] * kiln_f16_to_f32(v[i]);
    }
}

static void q8_0_axpy(int64_t n, float *o, const void *x, size_t xs, const float *w, int64_t nr) {
    for (int64_t r = 0; r < nr; r++) {
        const block_q8_0 *b = row_at(x, xs, r);
        for (int64_t j = 0; j < n / QK8_0; j++) {
            float d = kiln_f16_to_f32(b[j].d);
            for (int i = 0; i < QK8_0; i++) o[j * QK8_0 + i] += w[r] * (d * (float)b[j].qs[i]);
        }
    }
}

static float exp_sum(float *s, int64_t n, float max) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (s[i] = expf(s[i] - max));
    return (float)sum;
}

static void attn_gemm(int64_t m, int64_t n, int64_t k, const float *a, size_t a_rs, size_t a_cs,
                      const float *b, size_t ldb, float *c, size_t ldc, int acc) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float sum = acc ? c[i * ldc + j] : 0.0f;
            for (int64_t p = 0; p < k; p++) sum += a[i * a_rs + p * a_cs] * b[p * ldb + j];
            c[i * ldc + j] = sum;
        }
}

static void swiglu(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void kern_attn_register_scalar(struct kiln_kernels *k) {
    k->swiglu = swiglu;
    k->exp_sum = exp_sum;
    k->attn_gemm = attn_gemm;
    k->axpy[KILN_TYPE_F32] = f32_axpy;
    k->axpy[KILN_TYPE_F16] = f16_axpy;
    k->axpy[KILN_TYPE_Q8_0] = q8_0_axpy;
}

/* kern_attn_avx2.c - AVX2 variants of the attention kernels (kern_attn.c):
 * axpy over F32, F16 (F16C) and Q8_0 rows, keeping 32 floats of the output
 * in four registers while every row adds into them, with fused multiply-adds
 * (tails in scalar code); exp_sum with a polynomial exp; and attn_gemm in
 * tiles of 4 rows x 32 columns (16 accumulators), column tails with masked
 * loads and stores; swiglu with the same exp. */
#include "base/fp16.h"
#include "compute/blocks.h"
#include "compute/kernels.h"

#include <immintrin.h>
#include <math.h>

/* o is taken 32 floats (four registers) at a time; every row adds into them.
 * A tail of fewer than 32 floats (F32 and F16 only) is done in scalar code. */
static void f32_axpy(int64_t n, float *o, const void *x, size_t xs, const float *w, int64_t nr) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 acc[4];
        for (int k = 0; k < 4; k++) acc[k] = _mm256_loadu_ps(o + i + 8 * k);
        for (int64_t r = 0; r < nr; r++) {
            const float *v = (const float *)((const char *)x + (size_t)r * xs) + i;
            __m256 vw = _mm256_set1_ps(w[r]);
            for (int k = 0; k < 4; k++)
                acc[k] = _mm256_fmadd_ps(vw, _mm256_loadu_ps(v + 8 * k), acc[k]);
        }
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(o + i + 8 * k, acc[k]);
    }
    for (int64_t r = 0; r < nr && i < n; r++) {
        const float *v = (const float *)((const char *)x + (size_t)r * xs);
        for (int64_t t = i; t < n; t++) o[t] += w[r] * v[t];
    }
}

static void f16_axpy(int64_t n, float *o, const void *x, size_t xs, const float *w, int64_t nr) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 acc[4];
        for (int k = 0; k < 4; k++) acc[k] = _mm256_loadu_ps(o + i + 8 * k);
        for (int64_t r = 0; r < nr; r++) {
            const kiln_f16 *v = (const kiln_f16 *)((const char *)x + (size_t)r * xs) + i;
            __m256 vw = _mm256_set1_ps(w[r]);
            for (int k = 0; k < 4; k++)
                acc[k] = _mm256_fmadd_ps(
                    vw, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + 8 * k))), acc[k]);
        }
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(o + i + 8 * k, acc[k]);
    }
    for (int64_t r = 0; r < nr && i < n; r++) {
        const kiln_f16 *v = (const kiln_f16 *)((const char *)x + (size_t)r * xs);
        for (int64_t t = i; t < n; t++) o[t] += w[r] * kiln_f16_to_f32(v[t]);
    }
}

/* One block (32 floats) of o at a time. */
static void q8_0_axpy(int64_t n, float *o, const void *x, size_t xs, const float *w, int64_t nr) {
    for (int64_t j = 0; j < n / QK8_0; j++) {
        __m256 acc[4];
        for (int k = 0; k < 4; k++) acc[k] = _mm256_loadu_ps(o + j * QK8_0 + 8 * k);
        for (int64_t r = 0; r < nr; r++) {
            const block_q8_0 *b = (const block_q8_0 *)((const char *)x + (size_t)r * xs) + j;
            __m256 s = _mm256_set1_ps(w[r] * kiln_f16_to_f32(b->d));
            for (int k = 0; k < 4; k++) {
                __m128i q = _mm_loadl_epi64((const __m128i *)(b->qs + 8 * k));
                acc[k] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), acc[k]);
            }
        }
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(o + j * QK8_0 + 8 * k, acc[k]);
    }
}

/* exp(x) for x <= 0, as in kern_attn_avx512.c; 2^n is built in the exponent
 * bits, so x is clamped where 2^n stays normal (exp(-87) ~ 1.6e-38). */
static __m256 exp256(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static float exp_sum(float *s, int64_t n, float max) {
    __m256 vm = _mm256_set1_ps(max), acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8], sum = 0;
    _mm256_storeu_ps(lanes, acc);
    for (int j = 0; j < 8; j++) sum += lanes[j];
    for (; i < n; i++) sum += (s[i] = expf(s[i] - max));
    return sum;
}

/* Lanes [0, left) of 8 set, as a maskload/maskstore mask. */
static __m256i tail8(int64_t left) {
    static const int32_t ramp[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    __m256i l = _mm256_set1_epi32((int32_t)(left > 8 ? 8 : left < 0 ? 0 : left));
    return _mm256_cmpgt_epi32(l, _mm256_loadu_si256((const __m256i *)ramp));
}

/* Rows [0, mr) x 32 columns masked by m; mr <= 4 is a constant after
 * inlining, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void
gemm_tile(int mr, int64_t k, const float *a, size_t a_rs, size_t a_cs, const float *b, size_t ldb,
          float *c, size_t ldc, int acc, const __m256i m[4]) {
    __m256 s[4][4];
    for (int r = 0; r < mr; r++)
        for (int q = 0; q < 4; q++)
            s[r][q] = acc ? _mm256_maskload_ps(c + r * ldc + 8 * q, m[q]) : _mm256_setzero_ps();
    for (int64_t p = 0; p < k; p++) {
        __m256 bv[4];
        for (int q = 0; q < 4; q++) bv[q] = _mm256_maskload_ps(b + p * ldb + 8 * q, m[q]);
        for (int r = 0; r < mr; r++) {
            __m256 av = _mm256_broadcast_ss(a + r * a_rs + p * a_cs);
            for (int q = 0; q < 4; q++) s[r][q] = _mm256_fmadd_ps(av, bv[q], s[r][q]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int q = 0; q < 4; q++) _mm256_maskstore_ps(c + r * ldc + 8 * q, m[q], s[r][q]);
}

static void attn_gemm(int64_t m, int64_t n, int64_t k, const float *a, size_t a_rs, size_t a_cs,
                      const float *b, size_t ldb, float *c, size_t ldc, int acc) {
    for (int64_t j = 0; j < n; j += 32) {
        __m256i mk[4];
        for (int q = 0; q < 4; q++) mk[q] = tail8(n - j - 8 * q);
        int64_t i = 0;
        for (; i + 4 <= m; i += 4)
            gemm_tile(4, k, a + i * a_rs, a_rs, a_cs, b + j, ldb, c + i * ldc + j, ldc, acc, mk);
        switch (m - i) {
        case 3:
            gemm_tile(3, k, a + i * a_rs, a_rs, a_cs, b + j, ldb, c + i * ldc + j, ldc, acc, mk);
            break;
        case 2:
            gemm_tile(2, k, a + i * a_rs, a_rs, a_cs, b + j, ldb, c + i * ldc + j, ldc, acc, mk);
            break;
        case 1:
            gemm_tile(1, k, a + i * a_rs, a_rs, a_cs, b + j, ldb, c + i * ldc + j, ldc, acc, mk);
            break;
        default:
            break;
        }
    }
}

/* As in kern_attn_avx512.c: e = exp(-|g|), silu = g / (1 + e) for g >= 0
 * and g e / (1 + e) below; the tail in scalar code. */
static void swiglu(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 e = exp256(_mm256_or_ps(x, sign)); /* -|x| */
        __m256 num = _mm256_blendv_ps(x, _mm256_mul_ps(x, e), _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(num, _mm256_add_ps(one, e)),
                                              _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void kern_attn_register_avx2(struct kiln_kernels *k) {
    k->swiglu = swiglu;
    k->exp_sum = exp_sum;
    k->attn_gemm = attn_gemm;
    k->axpy[KILN_TYPE_F32] = f32_axpy;
    k->axpy[KILN_TYPE_F16] = f16_axpy;
    k->axpy[KILN_TYPE_Q8_0] = q8_0_axpy;
}

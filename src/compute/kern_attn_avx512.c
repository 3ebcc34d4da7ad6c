/* kern_attn_avx512.c - AVX-512 variants of the attention kernels
 * (kern_attn.c): axpy over F32, F16 (VCVTPH2PS) and Q8_0 rows, keeping 64
 * floats of the output in four registers (F16: eight, even and odd rows)
 * while every row adds into them,
 * with fused multiply-adds; tails use masked loads and stores; exp_sum
 * with a polynomial exp; and attn_gemm in tiles of 4 rows x 64 columns
 * (16 accumulators), a broadcast from a and four loads of b per step of p;
 * swiglu with the same exp. */
#include "base/fp16.h"
#include "compute/blocks.h"
#include "compute/kernels.h"

#include <immintrin.h>

static __mmask16 tail16(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

/* o is taken 64 floats (four registers) at a time; every row adds into them. */
static void f32_axpy(int64_t n, float *o, const void *x, size_t xs, const float *w, int64_t nr) {
    for (int64_t i = 0; i < n; i += 64) {
        __mmask16 m[4];
        __m512 acc[4];
        for (int k = 0; k < 4; k++) {
            m[k] = tail16(n - i - 16 * k);
            acc[k] = _mm512_maskz_loadu_ps(m[k], o + i + 16 * k);
        }
        for (int64_t r = 0; r < nr; r++) {
            const float *v = (const float *)((const char *)x + (size_t)r * xs) + i;
            __m512 vw = _mm512_set1_ps(w[r]);
            for (int k = 0; k < 4; k++)
                acc[k] = _mm512_fmadd_ps(vw, _mm512_maskz_loadu_ps(m[k], v + 16 * k), acc[k]);
        }
        for (int k = 0; k < 4; k++) _mm512_mask_storeu_ps(o + i + 16 * k, m[k], acc[k]);
    }
}

/* Even rows add into o's four registers and odd rows into four more, summed
 * at the end: eight FMA chains instead of four, so a row does not wait on
 * the previous row's additions (the FMA latency bound the loop otherwise). */
static void f16_axpy(int64_t n, float *o, const void *x, size_t xs, const float *w, int64_t nr) {
    for (int64_t i = 0; i < n; i += 64) {
        __mmask16 m[4];
        __m512 acc[4], odd[4];
        for (int k = 0; k < 4; k++) {
            m[k] = tail16(n - i - 16 * k);
            acc[k] = _mm512_maskz_loadu_ps(m[k], o + i + 16 * k);
            odd[k] = _mm512_setzero_ps();
        }
        int64_t r = 0;
        for (; r + 2 <= nr; r += 2) {
            const kiln_f16 *v = (const kiln_f16 *)((const char *)x + (size_t)r * xs) + i;
            const kiln_f16 *u = (const kiln_f16 *)((const char *)v + xs);
            __m512 vw = _mm512_set1_ps(w[r]), uw = _mm512_set1_ps(w[r + 1]);
            for (int k = 0; k < 4; k++) {
                acc[k] = _mm512_fmadd_ps(
                    vw, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m[k], v + 16 * k)), acc[k]);
                odd[k] = _mm512_fmadd_ps(
                    uw, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m[k], u + 16 * k)), odd[k]);
            }
        }
        if (r < nr) {
            const kiln_f16 *v = (const kiln_f16 *)((const char *)x + (size_t)r * xs) + i;
            __m512 vw = _mm512_set1_ps(w[r]);
            for (int k = 0; k < 4; k++)
                acc[k] = _mm512_fmadd_ps(
                    vw, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m[k], v + 16 * k)), acc[k]);
        }
        for (int k = 0; k < 4; k++)
            _mm512_mask_storeu_ps(o + i + 16 * k, m[k], _mm512_add_ps(acc[k], odd[k]));
    }
}

/* Two blocks (64 floats) of o at a time; n is a multiple of 32. */
static void q8_0_axpy(int64_t n, float *o, const void *x, size_t xs, const float *w, int64_t nr) {
    for (int64_t i = 0; i < n; i += 64) {
        int nb = n - i >= 64 ? 2 : 1;
        __m512 acc[4];
        for (int k = 0; k < 2 * nb; k++) acc[k] = _mm512_loadu_ps(o + i + 16 * k);
        for (int64_t r = 0; r < nr; r++) {
            const block_q8_0 *b =
                (const block_q8_0 *)((const char *)x + (size_t)r * xs) + i / QK8_0;
            for (int j = 0; j < nb; j++) {
                __m512 s = _mm512_set1_ps(w[r] * kiln_f16_to_f32(b[j].d));
                __m128i q0 = _mm_loadu_si128((const __m128i *)b[j].qs);
                __m128i q1 = _mm_loadu_si128((const __m128i *)(b[j].qs + 16));
                acc[2 * j] =
                    _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), acc[2 * j]);
                acc[2 * j + 1] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)),
                                                 acc[2 * j + 1]);
            }
        }
        for (int k = 0; k < 2 * nb; k++) _mm512_storeu_ps(o + i + 16 * k, acc[k]);
    }
}

/* exp(x) for x <= 0: x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor
 * polynomial to r^7 (relative error < 2e-8), times 2^n by VSCALEFPS, which
 * goes to 0 smoothly far below the normal range. */
static __m512 exp512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static float exp_sum(float *s, int64_t n, float max) {
    __m512 vm = _mm512_set1_ps(max), acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), vm));
        _mm512_mask_storeu_ps(s + i, m, e);
        acc = _mm512_mask_add_ps(acc, m, acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}

/* Rows [i, i + mr) x columns [j, j + 64) masked by m; mr <= 4 is a
 * constant after inlining, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void
gemm_tile(int mr, int64_t k, const float *a, size_t a_rs, size_t a_cs, const float *b, size_t ldb,
          float *c, size_t ldc, int acc, const __mmask16 m[4]) {
    __m512 s[4][4];
    for (int r = 0; r < mr; r++)
        for (int q = 0; q < 4; q++)
            s[r][q] = acc ? _mm512_maskz_loadu_ps(m[q], c + r * ldc + 16 * q) : _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p++) {
        __m512 bv[4];
        for (int q = 0; q < 4; q++) bv[q] = _mm512_maskz_loadu_ps(m[q], b + p * ldb + 16 * q);
        for (int r = 0; r < mr; r++) {
            __m512 av = _mm512_set1_ps(a[r * a_rs + p * a_cs]);
            for (int q = 0; q < 4; q++) s[r][q] = _mm512_fmadd_ps(av, bv[q], s[r][q]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int q = 0; q < 4; q++) _mm512_mask_storeu_ps(c + r * ldc + 16 * q, m[q], s[r][q]);
}

static void attn_gemm(int64_t m, int64_t n, int64_t k, const float *a, size_t a_rs, size_t a_cs,
                      const float *b, size_t ldb, float *c, size_t ldc, int acc) {
    for (int64_t j = 0; j < n; j += 64) {
        __mmask16 mk[4];
        for (int q = 0; q < 4; q++) mk[q] = tail16(n - j - 16 * q);
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

/* silu(g) = g / (1 + e) for g >= 0 and g e / (1 + e) below, e = exp(-|g|)
 * (so exp512 only sees arguments <= 0). */
static void swiglu(float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
        __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
        __m512 num = _mm512_mask_mul_ps(x, neg, x, e);
        __m512 r = _mm512_mul_ps(_mm512_div_ps(num, _mm512_add_ps(one, e)),
                                 _mm512_maskz_loadu_ps(m, u + i));
        _mm512_mask_storeu_ps(g + i, m, r);
    }
}

void kern_attn_register_avx512(struct kiln_kernels *k) {
    k->swiglu = swiglu;
    k->exp_sum = exp_sum;
    k->attn_gemm = attn_gemm;
    k->axpy[KILN_TYPE_F32] = f32_axpy;
    k->axpy[KILN_TYPE_F16] = f16_axpy;
    k->axpy[KILN_TYPE_Q8_0] = q8_0_axpy;
}

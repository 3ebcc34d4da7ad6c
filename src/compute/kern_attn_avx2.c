/* kern_attn_avx2.c - AVX2 variants of the attention kernels (kern_attn.c):
 * axpy over F32, F16 (F16C) and Q8_0 rows, 8 lanes per step with fused
 * multiply-adds; tails fall back to scalar code. */
#include "base/fp16.h"
#include "compute/blocks.h"
#include "compute/kernels.h"

#include <immintrin.h>

static void f32_axpy(int64_t n, float *o, const void *x, float w) {
    const float *v = x;
    __m256 vw = _mm256_set1_ps(w);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(v + i), _mm256_loadu_ps(o + i)));
    for (; i < n; i++) o[i] += w * v[i];
}

static void f16_axpy(int64_t n, float *o, const void *x, float w) {
    const kiln_f16 *v = x;
    __m256 vw = _mm256_set1_ps(w);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i)));
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(vw, xv, _mm256_loadu_ps(o + i)));
    }
    for (; i < n; i++) o[i] += w * kiln_f16_to_f32(v[i]);
}

static void q8_0_axpy(int64_t n, float *o, const void *x, float w) {
    const block_q8_0 *b = x;
    for (int64_t j = 0; j < n / QK8_0; j++, o += QK8_0) {
        __m256 s = _mm256_set1_ps(w * kiln_f16_to_f32(b[j].d));
        for (int k = 0; k < QK8_0; k += 8) {
            __m128i q = _mm_loadl_epi64((const __m128i *)(b[j].qs + k));
            __m256 xv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            _mm256_storeu_ps(o + k, _mm256_fmadd_ps(s, xv, _mm256_loadu_ps(o + k)));
        }
    }
}

void kern_attn_register_avx2(struct kiln_kernels *k) {
    k->axpy[KILN_TYPE_F32] = f32_axpy;
    k->axpy[KILN_TYPE_F16] = f16_axpy;
    k->axpy[KILN_TYPE_Q8_0] = q8_0_axpy;
}

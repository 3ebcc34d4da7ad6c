/* kern_attn_avx512.c - AVX-512 variants of the attention kernels
 * (kern_attn.c): axpy over F32, F16 (VCVTPH2PS) and Q8_0 rows, 16 lanes per
 * step with fused multiply-adds; tails use masked loads and stores. */
#include "base/fp16.h"
#include "compute/blocks.h"
#include "compute/kernels.h"

#include <immintrin.h>

static __mmask16 tail16(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

static void f32_axpy(int64_t n, float *o, const void *x, float w) {
    const float *v = x;
    __m512 vw = _mm512_set1_ps(w);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 r = _mm512_fmadd_ps(vw, _mm512_maskz_loadu_ps(m, v + i), _mm512_maskz_loadu_ps(m, o + i));
        _mm512_mask_storeu_ps(o + i, m, r);
    }
}

static void f16_axpy(int64_t n, float *o, const void *x, float w) {
    const kiln_f16 *v = x;
    __m512 vw = _mm512_set1_ps(w);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 xv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v + i));
        _mm512_mask_storeu_ps(o + i, m, _mm512_fmadd_ps(vw, xv, _mm512_maskz_loadu_ps(m, o + i)));
    }
}

static void q8_0_axpy(int64_t n, float *o, const void *x, float w) {
    const block_q8_0 *b = x;
    for (int64_t j = 0; j < n / QK8_0; j++, o += QK8_0) {
        __m512 s = _mm512_set1_ps(w * kiln_f16_to_f32(b[j].d));
        __m128i q0 = _mm_loadu_si128((const __m128i *)b[j].qs);
        __m128i q1 = _mm_loadu_si128((const __m128i *)(b[j].qs + 16));
        __m512 x0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0));
        __m512 x1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1));
        _mm512_storeu_ps(o, _mm512_fmadd_ps(s, x0, _mm512_loadu_ps(o)));
        _mm512_storeu_ps(o + 16, _mm512_fmadd_ps(s, x1, _mm512_loadu_ps(o + 16)));
    }
}

void kern_attn_register_avx512(struct kiln_kernels *k) {
    k->axpy[KILN_TYPE_F32] = f32_axpy;
    k->axpy[KILN_TYPE_F16] = f16_axpy;
    k->axpy[KILN_TYPE_Q8_0] = q8_0_axpy;
}

/* kern_float_avx512.c - AVX-512 kernels for F32, F16 and BF16: conversions
 * and dot products. BF16 dot products use AVX512-BF16 (VDPBF16PS, exact
 * products, f32 accumulation). Conversions give the same bits as the scalar
 * reference: F16 via VCVTPS2PH (round to nearest even), BF16 by integer
 * round-to-nearest-even (VCVTNEPS2BF16 would flush subnormals). Any n is
 * accepted; tails use masked loads and stores. */
#include "compute/kernels.h"

#include <immintrin.h>

static __mmask16 tail16(int64_t left) {
    return (__mmask16)((1u << left) - 1);
}

static float f32_vec_dot(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : tail16(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static __m512 load_f16(__mmask16 m, const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

static float f16_vec_dot(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(load_f16(0xffff, a + i), load_f16(0xffff, b + i), s0);
        s1 = _mm512_fmadd_ps(load_f16(0xffff, a + i + 16), load_f16(0xffff, b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : tail16(n - i);
        s0 = _mm512_fmadd_ps(load_f16(m, a + i), load_f16(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : tail16(n - i);
        _mm512_mask_storeu_ps(dst + i, m, load_f16(m, h + i));
    }
}

static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : tail16(n - i);
        __m256i v = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(h + i, m, v);
    }
}

static float bf16_vec_dot(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_dpbf16_ps(s0, (__m512bh)_mm512_loadu_si512(a + i),
                              (__m512bh)_mm512_loadu_si512(b + i));
        s1 = _mm512_dpbf16_ps(s1, (__m512bh)_mm512_loadu_si512(a + i + 32),
                              (__m512bh)_mm512_loadu_si512(b + i + 32));
    }
    for (; i < n; i += 32) {
        __mmask32 m = n - i >= 32 ? 0xffffffffu : (__mmask32)((1ull << (n - i)) - 1);
        s0 = _mm512_dpbf16_ps(s0, (__m512bh)_mm512_maskz_loadu_epi16(m, a + i),
                              (__m512bh)_mm512_maskz_loadu_epi16(m, b + i));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : tail16(n - i);
        __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, h + i));
        _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
}

/* Round to nearest even on the bits; NaN stays NaN (quieted), as in fp16.h. */
static __m256i bf16_round(__m512 f) {
    __m512i u = _mm512_castps_si512(f);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : tail16(n - i);
        _mm256_mask_storeu_epi16(h + i, m, bf16_round(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

void kern_float_register_avx512(struct kiln_kernels *k) {
    k->vec_dot[KILN_TYPE_F32] = f32_vec_dot;
    k->vec_dot[KILN_TYPE_F16] = f16_vec_dot;
    k->to_float[KILN_TYPE_F16] = f16_to_float;
    k->from_float[KILN_TYPE_F16] = f16_from_float;
    k->vec_dot[KILN_TYPE_BF16] = bf16_vec_dot;
    k->to_float[KILN_TYPE_BF16] = bf16_to_float;
    k->from_float[KILN_TYPE_BF16] = bf16_from_float;
}

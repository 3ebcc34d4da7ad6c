/* kern_float_avx2.c - AVX2 (+FMA, F16C) kernels for F32, F16 and BF16:
 * conversions (bit-identical to the scalar reference: F16 through VCVTPS2PH
 * with round to nearest even, BF16 by integer round-to-nearest-even) and dot
 * products. Any n is accepted; the last n % 8 elements go through a scalar tail. */
#include "base/fp16.h"
#include "compute/kernels.h"

#include <immintrin.h>

static float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static float f32_vec_dot(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static __m256 load_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const void *)p));
}

static float f16_vec_dot(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(load_f16(a + i), load_f16(b + i), s0);
        s1 = _mm256_fmadd_ps(load_f16(a + i + 8), load_f16(b + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += kiln_f16_to_f32(a[i]) * kiln_f16_to_f32(b[i]);
    return s;
}

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16(h + i));
    for (; i < n; i++) dst[i] = kiln_f16_to_f32(h[i]);
}

static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((void *)(h + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) h[i] = kiln_f32_to_f16(src[i]);
}

static __m256 load_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static float bf16_vec_dot(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(load_bf16(a + i), load_bf16(b + i), s0);
        s1 = _mm256_fmadd_ps(load_bf16(a + i + 8), load_bf16(b + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += kiln_bf16_to_f32(a[i]) * kiln_bf16_to_f32(b[i]);
    return s;
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_bf16(h + i));
    for (; i < n; i++) dst[i] = kiln_bf16_to_f32(h[i]);
}

/* 8 floats to bf16, round to nearest even; NaN stays NaN (quieted). */
static __m128i bf16_round(__m256 f) {
    __m256i u = _mm256_castps_si256(f);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    __m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
    r = _mm256_srli_epi32(_mm256_blendv_epi8(r, q, nan), 16);
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((void *)(h + i), bf16_round(_mm256_loadu_ps(src + i)));
    for (; i < n; i++) h[i] = kiln_f32_to_bf16(src[i]);
}

void kern_float_register_avx2(struct kiln_kernels *k) {
    k->vec_dot[KILN_TYPE_F32] = f32_vec_dot;
    k->vec_dot[KILN_TYPE_F16] = f16_vec_dot;
    k->to_float[KILN_TYPE_F16] = f16_to_float;
    k->from_float[KILN_TYPE_F16] = f16_from_float;
    k->vec_dot[KILN_TYPE_BF16] = bf16_vec_dot;
    k->to_float[KILN_TYPE_BF16] = bf16_to_float;
    k->from_float[KILN_TYPE_BF16] = bf16_from_float;
}

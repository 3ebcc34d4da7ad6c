/* kern_legacy_avx2.c - AVX2 (+FMA, F16C) kernels for the legacy block types:
 * Q8_0/Q8_1 activation quantizers and vec_dot for Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0 and IQ4_NL. One 32-element block fills one ymm in element order.
 * Signed weights (the "_0" types) multiply as |w| * (x with w's sign) through
 * VPMADDUBSW, whose pairwise i16 sums cannot saturate here (|w|,|x| <= 128,
 * and never both 128); affine types have unsigned q and multiply directly. */
#include "compute/blocks.h"
#include "compute/kernels.h"

#include <immintrin.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

enum wkind { WK_Q4_0, WK_Q5_0, WK_Q8_0, WK_IQ4_NL, WK_Q4_1, WK_Q5_1 };

INLINE size_t wk_size(enum wkind k) {
    switch (k) {
    case WK_Q4_0:
        return sizeof(block_q4_0);
    case WK_Q5_0:
        return sizeof(block_q5_0);
    case WK_Q8_0:
        return sizeof(block_q8_0);
    case WK_IQ4_NL:
        return sizeof(block_iq4_nl);
    case WK_Q4_1:
        return sizeof(block_q4_1);
    default:
        return sizeof(block_q5_1);
    }
}

INLINE int wk_affine(enum wkind k) {
    return k == WK_Q4_1 || k == WK_Q5_1;
}

INLINE float h2f(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return _cvtsh_ss(v);
}

INLINE __m256i nibbles(const uint8_t *qs) {
    __m128i v = _mm_loadu_si128((const void *)qs);
    __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

/* 0x10 in byte j where bit j of the 32-bit qh is set. */
INLINE __m256i high_bits(const uint8_t *qh4) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                            2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* Weight bytes: signed values for "_0" types, unsigned q for affine ones. */
INLINE __m256i load_w(enum wkind k, const uint8_t *b) {
    switch (k) {
    case WK_Q4_0:
        return _mm256_sub_epi8(nibbles(b + 2), _mm256_set1_epi8(8));
    case WK_Q5_0:
        return _mm256_sub_epi8(_mm256_or_si256(nibbles(b + 6), high_bits(b + 2)),
                               _mm256_set1_epi8(16));
    case WK_Q8_0:
        return _mm256_loadu_si256((const void *)(b + 2));
    case WK_IQ4_NL: {
        const __m256i lut =
            _mm256_broadcastsi128_si256(_mm_loadu_si128((const void *)kiln_iq4nl_values));
        return _mm256_shuffle_epi8(lut, nibbles(b + 2));
    }
    case WK_Q4_1:
        return nibbles(b + 4);
    default:
        return _mm256_or_si256(nibbles(b + 8), high_bits(b + 4));
    }
}

INLINE __m256i dot_i32(enum wkind k, __m256i w, __m256i x) {
    __m256i p = wk_affine(k) ? _mm256_maddubs_epi16(w, x)
                             : _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

INLINE float vec_dot_k(enum wkind k, int64_t n, const void *w, const void *x) {
    const uint8_t *wp = w, *xp = x;
    const size_t ws = wk_size(k), xs = wk_affine(k) ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t xq = wk_affine(k) ? 4 : 2;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float summ = 0.0f;
    const int64_t nb = n / 32;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *wb = wp + i * ws, *xb = xp + i * xs;
        __m256i s = dot_i32(k, load_w(k, wb), _mm256_loadu_si256((const void *)(xb + xq)));
        __m256 d = _mm256_set1_ps(h2f(wb) * h2f(xb));
        if (i & 1)
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc1);
        else
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc0);
        if (wk_affine(k)) summ += h2f(wb + 2) * h2f(xb + 2);
    }
    return hsum8(_mm256_add_ps(acc0, acc1)) + summ;
}

static float q4_0_vec_dot(int64_t n, const void *w, const void *x) {
    return vec_dot_k(WK_Q4_0, n, w, x);
}
static float q5_0_vec_dot(int64_t n, const void *w, const void *x) {
    return vec_dot_k(WK_Q5_0, n, w, x);
}
static float q8_0_vec_dot(int64_t n, const void *w, const void *x) {
    return vec_dot_k(WK_Q8_0, n, w, x);
}
static float iq4_nl_vec_dot(int64_t n, const void *w, const void *x) {
    return vec_dot_k(WK_IQ4_NL, n, w, x);
}
static float q4_1_vec_dot(int64_t n, const void *w, const void *x) {
    return vec_dot_k(WK_Q4_1, n, w, x);
}
static float q5_1_vec_dot(int64_t n, const void *w, const void *x) {
    return vec_dot_k(WK_Q5_1, n, w, x);
}

/* ---- Q8_0 / Q8_1 activation quantizers (round half to even, like scalar) ---- */

INLINE float quant_q8(const float *src, int8_t *qs, int *sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], m = _mm256_setzero_ps();
    for (int j = 0; j < 4; j++) {
        v[j] = _mm256_loadu_ps(src + 8 * j);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    float amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
    __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    __m256i q[4];
    for (int j = 0; j < 4; j++) q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id));
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
    *sum = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1))));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((void *)qs, p);
    return amax / 127.0f;
}

static void q8_0_from_float(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    int sum;
    for (int64_t i = 0; i < n / 32; i++) {
        float d = quant_q8(src + i * 32, b[i].qs, &sum);
        b[i].d = (kiln_f16)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    }
}

static void q8_1_from_float(const float *src, void *dst, int64_t n) {
    block_q8_1 *b = dst;
    int sum;
    for (int64_t i = 0; i < n / 32; i++) {
        float d = quant_q8(src + i * 32, b[i].qs, &sum);
        float s = d * (float)sum;
        s = s > 65504.0f ? 65504.0f : s < -65504.0f ? -65504.0f : s; /* as the scalar reference */
        b[i].d = (kiln_f16)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        b[i].s = (kiln_f16)_cvtss_sh(s, _MM_FROUND_TO_NEAREST_INT);
    }
}

void kern_legacy_register_avx2(struct kiln_kernels *k) {
    k->vec_dot[KILN_TYPE_Q4_0] = q4_0_vec_dot;
    k->vec_dot[KILN_TYPE_Q4_1] = q4_1_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_0] = q5_0_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_1] = q5_1_vec_dot;
    k->vec_dot[KILN_TYPE_Q8_0] = q8_0_vec_dot;
    k->vec_dot[KILN_TYPE_IQ4_NL] = iq4_nl_vec_dot;
    k->from_float[KILN_TYPE_Q8_0] = q8_0_from_float;
    k->from_float[KILN_TYPE_Q8_1] = q8_1_from_float;
}

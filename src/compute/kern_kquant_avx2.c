/* kern_kquant_avx2.c - AVX2/FMA kernels for the K-quant family: vec_dot of
 * Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS against Q8_K, and the Q8_K
 * activation quantizer (byte-identical to the scalar one).
 *
 * Products use _mm256_maddubs_epi16 (unsigned weight byte x signed activation
 * byte, pairs summed to int16) and _mm256_madd_epi16 with the sub-block scale.
 * Signed weights are offset to unsigned (Q3_K +4, Q6_K +32) and the offset is
 * removed with the Q8_K block sums; no pair sum can saturate int16 (largest:
 * 2*63*127). IQ4_XS levels are signed, so it uses the |w| x sign(x, w) form.
 * Integer sums are exact; only the per-block float combination differs from
 * the scalar reference in rounding order. */
#include "compute/blocks.h"
#include "compute/kern_kquant.h"
#include "compute/kernels.h"

#include <immintrin.h>

static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline float f16(kiln_f16 h) {
    return _cvtsh_ss(h);
}

/* 8 int32 of sum_pairs(scale * maddubs(u, x)), with scale constant per 128-bit lane. */
static inline __m256i dot_lanes(__m256i u, __m256i x, int sa, int sb) {
    __m256i sc = _mm256_set_m128i(_mm_set1_epi16((short)sb), _mm_set1_epi16((short)sa));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), sc);
}

/* sum_j mult[j] * bsums[j] for 16 int16 multipliers. */
static inline __m256i bsum_dot(const block_q8_K *x, __m256i mult) {
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), mult);
}

/* ---- Q4_K / Q5_K ---- */

/* 16 int16 of mins each repeated twice (a 32-element sub-block spans two bsums). */
static inline __m256i mins_x2(const uint8_t mn[8]) {
    __m128i m = _mm_loadl_epi64((const __m128i *)mn);
    m = _mm_shuffle_epi8(m, _mm_set_epi8(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0));
    return _mm256_cvtepu8_epi16(m);
}

static float q4k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q4_K *b = w;
    const block_q8_K *x = xv;
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        uint8_t sc[8], mn[8];
        kq_unpack_k4(b->scales, sc, mn);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * j));
            __m256i lo = _mm256_and_si256(q, m4),
                    hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i xl = _mm256_loadu_si256((const __m256i *)(x->qs + 64 * j));
            __m256i xh = _mm256_loadu_si256((const __m256i *)(x->qs + 64 * j + 32));
            sumi = _mm256_add_epi32(sumi, dot_lanes(lo, xl, sc[2 * j], sc[2 * j]));
            sumi = _mm256_add_epi32(sumi, dot_lanes(hi, xh, sc[2 * j + 1], sc[2 * j + 1]));
        }
        __m256i summ = bsum_dot(x, mins_x2(mn));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(x->d * f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(x->d * f16(b->dmin)), _mm256_cvtepi32_ps(summ), acc);
    }
    return hsum_ps(acc);
}

static float q5k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q5_K *b = w;
    const block_q8_K *x = xv;
    const __m256i m4 = _mm256_set1_epi8(15), b16 = _mm256_set1_epi8(16);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        uint8_t sc[8], mn[8];
        kq_unpack_k4(b->scales, sc, mn);
        __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * j));
            __m256i bl = _mm256_set1_epi8((char)(1 << (2 * j))), bh = _mm256_slli_epi16(bl, 1);
            __m256i lo = _mm256_and_si256(q, m4),
                    hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            lo = _mm256_or_si256(
                lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bl), bl), b16));
            hi = _mm256_or_si256(
                hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bh), bh), b16));
            __m256i xl = _mm256_loadu_si256((const __m256i *)(x->qs + 64 * j));
            __m256i xh = _mm256_loadu_si256((const __m256i *)(x->qs + 64 * j + 32));
            sumi = _mm256_add_epi32(sumi, dot_lanes(lo, xl, sc[2 * j], sc[2 * j]));
            sumi = _mm256_add_epi32(sumi, dot_lanes(hi, xh, sc[2 * j + 1], sc[2 * j + 1]));
        }
        __m256i summ = bsum_dot(x, mins_x2(mn));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(x->d * f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(x->d * f16(b->dmin)), _mm256_cvtepi32_ps(summ), acc);
    }
    return hsum_ps(acc);
}

/* ---- Q2_K / Q3_K: 2 low bits at shift 2j of qs[32h + l] ---- */

static float q2k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q2_K *b = w;
    const block_q8_K *x = xv;
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        __m128i s = _mm_loadu_si128((const __m128i *)b->scales);
        __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(15)));
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
            for (int j = 0; j < 4; j++) {
                __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
                __m256i xq = _mm256_loadu_si256((const __m256i *)(x->qs + 128 * h + 32 * j));
                int k = 8 * h + 2 * j;
                sumi = _mm256_add_epi32(sumi,
                                        dot_lanes(u, xq, b->scales[k] & 15, b->scales[k + 1] & 15));
            }
        }
        __m256i summ = bsum_dot(x, mn);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(x->d * f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(x->d * f16(b->dmin)), _mm256_cvtepi32_ps(summ), acc);
    }
    return hsum_ps(acc);
}

/* kq_unpack_q3 in registers (a byte-wise result reloaded as a vector would
 * stall store forwarding). */
static inline __m128i q3_scales(const uint8_t *s) {
    uint32_t a0, a1, a2;
    memcpy(&a0, s, 4);
    memcpy(&a1, s + 4, 4);
    memcpy(&a2, s + 8, 4);
    __m128i lo = _mm_set_epi32((int)(a1 >> 4), (int)(a0 >> 4), (int)a1, (int)a0);
    __m128i hi = _mm_set_epi32((int)(a2 >> 6), (int)(a2 >> 4), (int)(a2 >> 2), (int)a2);
    lo = _mm_and_si128(lo, _mm_set1_epi8(15));
    hi = _mm_slli_epi16(_mm_and_si128(hi, _mm_set1_epi8(3)), 4);
    return _mm_sub_epi8(_mm_or_si128(lo, hi), _mm_set1_epi8(32));
}

/* value = u - 4 with u = low2 | hbit << 2; the -4 is taken off with bsums. */
static float q3k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q3_K *b = w;
    const block_q8_K *x = xv;
    const __m256i m3 = _mm256_set1_epi8(3), b4 = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        int8_t sc[16];
        __m128i s8 = q3_scales(b->scales);
        _mm_storeu_si128((__m128i *)sc, s8);
        __m256i sc16 = _mm256_cvtepi8_epi16(s8);
        __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
            for (int j = 0; j < 4; j++) {
                __m256i bit = _mm256_set1_epi8((char)(1 << (4 * h + j)));
                __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
                u = _mm256_or_si256(
                    u, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), b4));
                __m256i xq = _mm256_loadu_si256((const __m256i *)(x->qs + 128 * h + 32 * j));
                int k = 8 * h + 2 * j;
                sumi = _mm256_add_epi32(sumi, dot_lanes(u, xq, sc[k], sc[k + 1]));
            }
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(bsum_dot(x, sc16), 2));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(x->d * f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_ps(acc);
}

/* ---- Q6_K: u = q + 32 in [0, 64) ---- */

static float q6k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q6_K *b = w;
    const block_q8_K *x = xv;
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            __m256i lo[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                             _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                             _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
            for (int k = 0; k < 4; k++) {
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m3);
                __m256i u = _mm256_or_si256(lo[k], _mm256_slli_epi16(hi, 4));
                __m256i xq = _mm256_loadu_si256((const __m256i *)(x->qs + 128 * h + 32 * k));
                int s = 8 * h + 2 * k;
                sumi = _mm256_add_epi32(sumi, dot_lanes(u, xq, b->scales[s], b->scales[s + 1]));
            }
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(bsum_dot(x, sc16), 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(x->d * f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_ps(acc);
}

/* ---- IQ4_XS: levels by table lookup, signed x signed via |w| * sign(x, w) ---- */

static float iq4xs_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_iq4_xs *b = w;
    const block_q8_K *x = xv;
    const __m128i m4 = _mm_set1_epi8(15);
    const __m256i lut =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kiln_iq4nl_values));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        __m256i sumi = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            __m128i q = _mm_loadu_si128((const __m128i *)(b->qs + 16 * ib));
            __m256i idx =
                _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
            __m256i v = _mm256_shuffle_epi8(lut, idx);
            __m256i xq = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * ib));
            __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(xq, v));
            int ls = kq_iq4xs_scale(b, ib);
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, _mm256_set1_epi16((short)ls)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(x->d * f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_ps(acc);
}

/* ---- Q8_K activation quantizer ---- */

static inline __m256 abs_ps(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

/* The first element of largest magnitude (as the scalar scan picks it). */
static float signed_absmax(const float *x) {
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < QK_K; j += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + j)));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    float amax = _mm_cvtss_f32(s);
    if (amax == 0) return 0;
    __m256 a = _mm256_set1_ps(amax);
    for (int j = 0; j < QK_K; j += 8) {
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + j)), a, _CMP_EQ_OQ));
        if (mask) return x[j + __builtin_ctz((unsigned)mask)];
    }
    return amax;
}

static void q8k_block(const float *x, block_q8_K *y) {
    float vmax = signed_absmax(x);
    if (vmax == 0) {
        memset(y, 0, sizeof *y);
        return;
    }
    float iscale = -127.f / vmax;
    const __m256 is = _mm256_set1_ps(iscale);
    const __m256i cap = _mm256_set1_epi32(127);
    for (int j = 0; j < QK_K; j += 32) {
        __m256i v[4];
        for (int k = 0; k < 4; k++)
            v[k] = _mm256_min_epi32(
                _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), is)), cap);
        y->bsums[j / 16] = (int16_t)hsum_epi32(_mm256_add_epi32(v[0], v[1]));
        y->bsums[j / 16 + 1] = (int16_t)hsum_epi32(_mm256_add_epi32(v[2], v[3]));
        __m256i p =
            _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(y->qs + j), p);
    }
    y->d = 1 / iscale;
}

static void q8k_from_float(const float *x, void *dst, int64_t n) {
    block_q8_K *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++) q8k_block(x + i * QK_K, y + i);
}

void kern_kquant_register_avx2(struct kiln_kernels *k) {
    k->from_float[KILN_TYPE_Q8_K] = q8k_from_float;
    k->vec_dot[KILN_TYPE_Q2_K] = q2k_vec_dot;
    k->vec_dot[KILN_TYPE_Q3_K] = q3k_vec_dot;
    k->vec_dot[KILN_TYPE_Q4_K] = q4k_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_K] = q5k_vec_dot;
    k->vec_dot[KILN_TYPE_Q6_K] = q6k_vec_dot;
    k->vec_dot[KILN_TYPE_IQ4_XS] = iq4xs_vec_dot;
}

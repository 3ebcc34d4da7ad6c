/* kern_kquant_avx512.c - AVX-512 (F/BW/VL/VNNI) kernels for the K-quant
 * family: vec_dot of Q4_K, Q5_K and Q6_K against Q8_K on 512-bit vectors, and
 * the Q4_K tile kernel (gemm). Q2_K, Q3_K, IQ4_XS and the Q8_K quantizer keep
 * the AVX2 versions this table was copied from.
 *
 * Each 64-byte weight vector is arranged to cover two consecutive sub-blocks
 * in element order, so the activation is read with plain loads. The product
 * is _mm512_maddubs_epi16 (unsigned 4..6-bit weight x signed int8, pair sums
 * fit int16) followed by VNNI _mm512_dpwssd_epi32, which multiplies the pair
 * sums by the sub-block scale and accumulates into int32 in one instruction.
 * The min (Q4_K/Q5_K) and offset (Q6_K) terms come from the Q8_K block sums.
 * The gemm tile unpacks a weight block once and reuses it for every column. */
#include "compute/blocks.h"
#include "compute/kern_kquant.h"
#include "compute/kernels.h"

#include <immintrin.h>

static inline float f16(kiln_f16 h) {
    return _cvtsh_ss(h);
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- Q4_K / Q5_K ---- */

/* One Q4_K/Q5_K block unpacked: w[k] holds sub-blocks 2k and 2k+1 (64 bytes,
 * element order), s[k] their scales as 32 int16 (16 each), mins the 8 mins
 * each repeated twice to pair with the 16 Q8_K bsums. */
struct k4_unpacked {
    __m512i w[4], s[4];
    __m256i mins;
    float d, dmin;
};

static inline void k4_scales(const uint8_t *packed, struct k4_unpacked *u) {
    uint8_t sc[8], mn[8];
    kq_unpack_k4(packed, sc, mn);
    __m512i sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
    for (int k = 0; k < 4; k++) {
        __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)(2 * k))),
                                         _mm256_set1_epi16((short)(2 * k + 1)), 1);
        u->s[k] = _mm512_permutexvar_epi16(idx, sc16);
    }
    __m128i m = _mm_loadl_epi64((const __m128i *)mn);
    m = _mm_shuffle_epi8(m, _mm_set_epi8(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0));
    u->mins = _mm256_cvtepu8_epi16(m);
}

/* Nibbles of qs: qs[32c + l] holds sub-block 2c (low) and 2c+1 (high). */
static inline void k4_nibbles(const uint8_t *qs, __m512i w[4]) {
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int h = 0; h < 2; h++) {
        __m512i q = _mm512_loadu_si512(qs + 64 * h);
        __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
        w[2 * h] = _mm512_shuffle_i64x2(lo, hi, 0x44);     /* sub-blocks 4h, 4h+1 */
        w[2 * h + 1] = _mm512_shuffle_i64x2(lo, hi, 0xee); /* sub-blocks 4h+2, 4h+3 */
    }
}

static inline void q4k_unpack(const block_q4_K *b, struct k4_unpacked *u) {
    k4_nibbles(b->qs, u->w);
    k4_scales(b->scales, u);
    u->d = f16(b->d), u->dmin = f16(b->dmin);
}

/* Adds each sub-block's fifth bit (bit s of qh[l] for sub-block s). */
static inline void q5k_unpack(const block_q5_K *b, struct k4_unpacked *u) {
    k4_nibbles(b->qs, u->w);
    __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    __m512i h = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 1), 1);
    const __m512i one = _mm512_set1_epi8(1);
    for (int k = 0; k < 4; k++) {
        __m512i bit = _mm512_and_si512(_mm512_srli_epi16(h, 2 * k), one);
        u->w[k] = _mm512_or_si512(u->w[k], _mm512_slli_epi16(bit, 4));
    }
    k4_scales(b->scales, u);
    u->d = f16(b->d), u->dmin = f16(b->dmin);
}

/* sum_s sc[s] * <q, x>_s as 16 int32 lanes. */
static inline __m512i k4_sumi(const struct k4_unpacked *u, const block_q8_K *x) {
    __m512i sumi = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++) {
        __m512i p = _mm512_maddubs_epi16(u->w[k], _mm512_loadu_si512(x->qs + 64 * k));
        sumi = _mm512_dpwssd_epi32(sumi, p, u->s[k]);
    }
    return sumi;
}

static inline __m256i k4_summ(const struct k4_unpacked *u, const block_q8_K *x) {
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), u->mins);
}

static float q4k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q4_K *b = w;
    const block_q8_K *x = xv;
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    struct k4_unpacked u;
    for (int64_t i = 0; i < n / QK_K; i++) {
        q4k_unpack(b + i, &u);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(k4_sumi(&u, x + i)), _mm512_set1_ps(u.d * x[i].d),
                              acc);
        accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(k4_summ(&u, x + i)),
                               _mm256_set1_ps(u.dmin * x[i].d), accm);
    }
    return _mm512_reduce_add_ps(acc) - hsum256(accm);
}

static float q5k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q5_K *b = w;
    const block_q8_K *x = xv;
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    struct k4_unpacked u;
    for (int64_t i = 0; i < n / QK_K; i++) {
        q5k_unpack(b + i, &u);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(k4_sumi(&u, x + i)), _mm512_set1_ps(u.d * x[i].d),
                              acc);
        accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(k4_summ(&u, x + i)),
                               _mm256_set1_ps(u.dmin * x[i].d), accm);
    }
    return _mm512_reduce_add_ps(acc) - hsum256(accm);
}

/* Rows r of the tile against NC columns; NC is a compile-time constant in
 * each instantiation so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void q4k_gemm_row(int64_t nb, const block_q4_K *w,
                                                               const uint8_t *x, size_t x_stride,
                                                               const int NC, float *out,
                                                               size_t out_stride) {
    __m512 acc[KILN_GEMM_MAX_C];
    __m256 accm[KILN_GEMM_MAX_C];
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps(), accm[c] = _mm256_setzero_ps();
    struct k4_unpacked u;
    for (int64_t i = 0; i < nb; i++) {
        q4k_unpack(w + i, &u);
        for (int c = 0; c < NC; c++) {
            const block_q8_K *xb = (const block_q8_K *)(x + c * x_stride) + i;
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(k4_sumi(&u, xb)),
                                     _mm512_set1_ps(u.d * xb->d), acc[c]);
            accm[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(k4_summ(&u, xb)),
                                      _mm256_set1_ps(u.dmin * xb->d), accm[c]);
        }
    }
    for (int c = 0; c < NC; c++)
        out[c * out_stride] = _mm512_reduce_add_ps(acc[c]) - hsum256(accm[c]);
}

#define Q4K_GEMM_NC(NC)                                                                            \
    static void q4k_gemm_##NC(int64_t nb, const uint8_t *w, size_t w_stride, int nr,               \
                              const uint8_t *x, size_t x_stride, float *out, size_t out_stride) {  \
        for (int r = 0; r < nr; r++)                                                               \
            q4k_gemm_row(nb, (const block_q4_K *)(w + r * w_stride), x, x_stride, NC, out + r,     \
                         out_stride);                                                              \
    }
Q4K_GEMM_NC(1)
Q4K_GEMM_NC(2)
Q4K_GEMM_NC(3)
Q4K_GEMM_NC(4)
Q4K_GEMM_NC(5)
Q4K_GEMM_NC(6)
Q4K_GEMM_NC(7)
Q4K_GEMM_NC(8)

static void q4k_gemm(int64_t n, const void *w, size_t w_stride, int nr, const void *x,
                     size_t x_stride, int nc, float *out, size_t out_stride) {
    typedef void (*fn)(int64_t, const uint8_t *, size_t, int, const uint8_t *, size_t, float *,
                       size_t);
    static const fn by_nc[KILN_GEMM_MAX_C + 1] = {NULL,       q4k_gemm_1, q4k_gemm_2,
                                                  q4k_gemm_3, q4k_gemm_4, q4k_gemm_5,
                                                  q4k_gemm_6, q4k_gemm_7, q4k_gemm_8};
    by_nc[nc](n / QK_K, w, w_stride, nr, x, x_stride, out, out_stride);
}

/* ---- Q6_K: u = q + 32 in [0, 64); 16-element sub-blocks ---- */

static float q6k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q6_K *b = w;
    const block_q8_K *x = xv;
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    __m512i idx[4];
    for (int v = 0; v < 4; v++) {
        __m256i a =
            _mm256_set_m128i(_mm_set1_epi16((short)(4 * v + 1)), _mm_set1_epi16((short)(4 * v)));
        __m256i c = _mm256_set_m128i(_mm_set1_epi16((short)(4 * v + 3)),
                                     _mm_set1_epi16((short)(4 * v + 2)));
        idx[v] = _mm512_inserti64x4(_mm512_castsi256_si512(a), c, 1);
    }
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        __m512i sc16 = _mm512_castsi256_si512(sc), sumi = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            __m512i l = _mm512_loadu_si512(b->ql + 64 * h);
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            __m512i hh =
                _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
            __m512i u0 = _mm512_or_si512(_mm512_and_si512(l, m4),
                                         _mm512_slli_epi16(_mm512_and_si512(hh, m3), 4));
            __m512i u1 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hh, 4), m3), 4));
            __m512i p0 = _mm512_maddubs_epi16(u0, _mm512_loadu_si512(x->qs + 128 * h));
            __m512i p1 = _mm512_maddubs_epi16(u1, _mm512_loadu_si512(x->qs + 128 * h + 64));
            sumi = _mm512_dpwssd_epi32(sumi, p0, _mm512_permutexvar_epi16(idx[2 * h], sc16));
            sumi = _mm512_dpwssd_epi32(sumi, p1, _mm512_permutexvar_epi16(idx[2 * h + 1], sc16));
        }
        __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), sc);
        sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(_mm256_slli_epi32(off, 5)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(x->d * f16(b->d)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

void kern_kquant_register_avx512(struct kiln_kernels *k) {
    k->vec_dot[KILN_TYPE_Q4_K] = q4k_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_K] = q5k_vec_dot;
    k->vec_dot[KILN_TYPE_Q6_K] = q6k_vec_dot;
    k->gemm[KILN_TYPE_Q4_K] = q4k_gemm;
}

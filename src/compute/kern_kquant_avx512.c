/* kern_kquant_avx512.c - AVX-512 (F/BW/VL/DQ/VNNI) kernels for the K-quant
 * family: vec_dot of Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS against Q8_K, tile
 * kernels (gemm) for Q4_K, Q5_K and Q6_K, and the Q8_K activation quantizer
 * (byte-identical to the scalar one).
 *
 * Layout: each 64-byte weight vector holds 64 consecutive elements in element
 * order, so the activation is read with plain 64-byte loads. The quant bits
 * are put there by broadcasting 32 packed bytes to both 256-bit halves and
 * shifting only the upper half (a masked shift): in every type the upper
 * half's elements sit a fixed number of bits above the lower half's.
 *
 * Products (Zen 5 runs the multiplies and shuffles at two per cycle, the
 * logic at four, so the count of the former sets the speed): VNNI
 * _mm512_dpbusd_epi32 (unsigned weight x signed activation) sums four
 * products into int32; for every type but IQ4_XS those sums fit int16
 * (|sum| <= 4*63*127), so two vectors of them are packed to int16
 * (_mm512_packs_epi32) and one _mm512_dpwssd_epi32 multiplies them by the
 * sub-block scales (int16 per lane, laid out in the pack's order by an in-lane
 * byte shuffle of the unpacked scales) and accumulates into int32. Signed
 * weights are offset to unsigned (Q3_K +4, Q6_K +32) and the offset is removed
 * with the Q8_K block sums, as are the mins of Q2_K/Q4_K/Q5_K. IQ4_XS looks up
 * its levels + 128 (sums of four reach 4*241*127, too big for int16) and
 * multiplies by the scale in int32. Q4_K/Q5_K vec_dot do the float work of
 * two blocks at once.
 *
 * Integer sums are exact; only the per-block float combination differs from
 * the scalar reference in rounding order. Scale bytes are unpacked in
 * registers (never stored and reloaded: that would stall store forwarding). */
#include "compute/blocks.h"
#include "compute/kern_kquant.h"
#include "compute/kern_wp_avx512.h"
#include "compute/kernels.h"

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

/* Fixed-count loops over vectors must be unrolled so their arrays stay in
 * registers; -O2 (the default build) would not do it on its own. */
#define UNROLL  _Pragma("GCC unroll 8")
#define HI_HALF 0xFFFF0000u /* the words of the upper 256 bits of a zmm */

static inline float f16(kiln_f16 h) {
    return _cvtsh_ss(h);
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 32 bytes at p in both halves of a zmm. */
static inline __m512i bcast32(const uint8_t *p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}

/* Byte-shuffle indices that turn a zmm whose every 128-bit lane holds the same
 * 16 bytes into int16 lanes (byte, 0): SEL32(k) gives 128-bit lane L words
 * 0-3 byte k + L/2 and words 4-7 byte k + 2 + L/2 (the order in which
 * _mm512_packs_epi32 leaves the sums of 32-element sub-blocks k..k+3). */
#define W16(b)   b, 0x80
#define W16x4(b) W16(b), W16(b), W16(b), W16(b)
#define SEL32(k)                                                                                   \
    {                                                                                              \
        W16x4(k), W16x4(k + 2), W16x4(k), W16x4(k + 2), W16x4(k + 1), W16x4(k + 3), W16x4(k + 1),  \
            W16x4(k + 3)                                                                           \
    }
/* For 16-element sub-blocks in sub16_sumi's packed order: 128-bit lane L
 * gets byte k + L in words 0-3 and byte k + 4 + L in words 4-7, as (byte, 0)
 * (unsigned scales) or (0, byte) for a following arithmetic shift by 8
 * (signed scales). */
#define W16H(b)       0x80, b
#define SELP_L(k, L)  W16x4(k + L), W16x4(k + 4 + L)
#define SELPH4(b)     W16H(b), W16H(b), W16H(b), W16H(b)
#define SELPH_L(k, L) SELPH4(k + L), SELPH4(k + 4 + L)
#define SELP(k)                                                                                    \
    { SELP_L(k, 0), SELP_L(k, 1), SELP_L(k, 2), SELP_L(k, 3) }
#define SELPH(k)                                                                                   \
    { SELPH_L(k, 0), SELPH_L(k, 1), SELPH_L(k, 2), SELPH_L(k, 3) }
static const uint8_t sel32[2][64] __attribute__((aligned(64))) = {SEL32(0), SEL32(4)};
static const uint8_t selp[2][64] __attribute__((aligned(64))) = {SELP(0), SELP(8)};
static const uint8_t selph[2][64] __attribute__((aligned(64))) = {SELPH(0), SELPH(8)};
/* 16 int16: bytes 8 + j/2 for j = 0..15 (Q4_K/Q5_K mins, each paired with two bsums). */
static const uint8_t selmin[32] __attribute__((aligned(32))) = {
    W16(8),  W16(8),  W16(9),  W16(9),  W16(10), W16(10), W16(11), W16(11),
    W16(12), W16(12), W16(13), W16(13), W16(14), W16(14), W16(15), W16(15)};

static inline __m512i sel(const uint8_t *idx, __m512i bytes) {
    return _mm512_shuffle_epi8(bytes, _mm512_load_si512((const void *)idx));
}

/* ---- Q4_K / Q5_K ---- */

/* The 8 scales (bytes 0-7) and 8 mins (bytes 8-15) of a Q4_K/Q5_K block, from
 * its first 16 bytes: d, dmin (dword 0) and the 12 scale bytes a0, a1, a2
 * (dwords 1-3); see kq_unpack_k4. */
static inline __m128i k4_scale_bytes(__m128i hdr) {
    __m128i p = _mm_shuffle_epi32(hdr, _MM_SHUFFLE(3, 2, 3, 1)); /* a0 a2 a1 a2 */
    __m128i q = _mm_shuffle_epi32(hdr, _MM_SHUFFLE(2, 2, 1, 1)); /* a0 a0 a1 a1 */
    __m128i lo = _mm_and_si128(_mm_srlv_epi32(p, _mm_setr_epi32(0, 0, 0, 4)),
                               _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    __m128i hi = _mm_and_si128(_mm_srli_epi32(q, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo, hi);
}

/* One Q4_K/Q5_K block unpacked: w[k] holds sub-blocks 2k and 2k+1 (elements
 * 64k..64k+63), s[j] the scales of sub-blocks 4j..4j+3 as int16 in the order
 * of k4_sumi's packed sums, mins the 8 mins each repeated twice to pair with
 * the 16 Q8_K bsums, dm = (d, dmin, ...). */
struct k4_unpacked {
    __m512i w[4], s[2];
    __m256i mins;
    __m128 dm;
};

static inline void k4_header(const void *blk, struct k4_unpacked *u) {
    __m128i hdr = _mm_loadu_si128((const __m128i *)blk);
    __m512i sb = _mm512_broadcast_i32x4(k4_scale_bytes(hdr));
    UNROLL
    for (int j = 0; j < 2; j++) u->s[j] = sel(sel32[j], sb);
    u->mins =
        _mm256_shuffle_epi8(_mm512_castsi512_si256(sb), _mm256_load_si256((const __m256i *)selmin));
    u->dm = _mm_cvtph_ps(hdr);
}

/* qs[32k + l]: low nibble element 64k + l, high nibble element 64k + 32 + l. */
static inline __m512i k4_nibbles(const uint8_t *qs32) {
    __m512i b = bcast32(qs32);
    return _mm512_and_si512(_mm512_mask_srli_epi16(b, HI_HALF, b, 4), _mm512_set1_epi8(15));
}

static inline void q4k_unpack(const block_q4_K *b, struct k4_unpacked *u) {
    UNROLL
    for (int k = 0; k < 4; k++) u->w[k] = k4_nibbles(b->qs + 32 * k);
    k4_header(b, u);
}

/* The fifth bit of element 32s + l is bit s of qh[l]. With the upper half of
 * h pre-shifted by one, bit 2k of h holds it for both halves of w[k]; each
 * shift below moves it to bit 4 (16-bit shifts: no wanted bit crosses a byte). */
static inline void q5k_unpack(const block_q5_K *b, struct k4_unpacked *u) {
    __m512i h = bcast32(b->qh);
    h = _mm512_mask_srli_epi16(h, HI_HALF, h, 1);
    const __m512i b4 = _mm512_set1_epi8(16);
    __m512i t[4] = {_mm512_slli_epi16(h, 4), _mm512_slli_epi16(h, 2), h, _mm512_srli_epi16(h, 2)};
    UNROLL
    for (int k = 0; k < 4; k++) /* w | (t & 16) */
        u->w[k] = _mm512_ternarylogic_epi32(k4_nibbles(b->qs + 32 * k), t[k], b4, 0xF8);
    k4_header(b, u);
}

/* sum_s sc[s] * <q, x>_s as 16 int32 lanes: sums of four products by
 * dpbusd (|sum| <= 4*31*127 fits int16), packed to int16 two vectors at a
 * time, then multiplied by the scales and summed in pairs by dpwssd. */
static inline __m512i k4_sumi(const struct k4_unpacked *u, const block_q8_K *x) {
    __m512i r[4], sumi = _mm512_setzero_si512();
    UNROLL
    for (int k = 0; k < 4; k++)
        r[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u->w[k],
                                   _mm512_loadu_si512(x->qs + 64 * k));
    UNROLL
    for (int j = 0; j < 2; j++)
        sumi = _mm512_dpwssd_epi32(sumi, _mm512_packs_epi32(r[2 * j], r[2 * j + 1]), u->s[j]);
    return sumi;
}

static inline __m256i k4_summ(const struct k4_unpacked *u, const block_q8_K *x) {
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), u->mins);
}

/* acc += d*x.d*sumi; accm += dmin*x.d*summ. */
static inline void k4_accum(const struct k4_unpacked *u, const block_q8_K *x, __m512 *acc,
                            __m256 *accm) {
    __m128 f = _mm_mul_ps(u->dm, _mm_set1_ps(x->d));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(k4_sumi(u, x)), _mm512_broadcastss_ps(f), *acc);
    *accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(k4_summ(u, x)),
                            _mm256_broadcastss_ps(_mm_movehdup_ps(f)), *accm);
}

/* Two blocks a, b at once share the float work: the int32 sums of each are
 * folded to 8 lanes and both go through one convert and one multiply-add,
 * as do their min sums. */
static inline void k4_accum2(const struct k4_unpacked *ua, const struct k4_unpacked *ub,
                             const block_q8_K *x, __m512 *acc, __m512 *accm) {
    __m512i sa = k4_sumi(ua, x), sb = k4_sumi(ub, x + 1);
    __m512i s = _mm512_add_epi32(_mm512_shuffle_i64x2(sa, sb, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_i64x2(sa, sb, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512i m = _mm512_inserti64x4(_mm512_castsi256_si512(k4_summ(ua, x)), k4_summ(ub, x + 1), 1);
    __m512 fa = _mm512_castps128_ps512(_mm_mul_ps(ua->dm, _mm_set1_ps(x[0].d)));
    __m512 fb = _mm512_castps128_ps512(_mm_mul_ps(ub->dm, _mm_set1_ps(x[1].d)));
    /* (d, dmin) x.d of a in lanes 0-7, of b in lanes 8-15 */
    const __m512i pick_d =
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 16, 16, 16, 16, 16, 16);
    const __m512i pick_m =
        _mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 17, 17, 17, 17, 17, 17, 17, 17);
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutex2var_ps(fa, pick_d, fb), *acc);
    *accm = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_permutex2var_ps(fa, pick_m, fb), *accm);
}

/* Matvec entries (kernels.h matvec) run the vec_dot code row after row and
 * prefetch the same blocks kiln_matvec_pf(row bytes) further on, so the
 * loads overlap the arithmetic (the kernels run near the memory speed). A
 * row's result equals vec_dot's bit for bit (the prefetch is the only
 * difference), so it does not depend on how rows are split. */

/* Prefetches the `bytes` bytes at p (p's lines; consecutive calls cover a
 * contiguous range). */
static inline __attribute__((always_inline)) void prefetch_span(const void *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

#define K4_VEC_DOT(NAME, BLOCK, UNPACK)                                                            \
    static inline __attribute__((always_inline)) float NAME##_row(int64_t n, const void *w,        \
                                                                  const void *xv, size_t pf) {     \
        const BLOCK *b = w;                                                                        \
        const block_q8_K *x = xv;                                                                  \
        __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();                              \
        __m256 acc1m = _mm256_setzero_ps();                                                        \
        struct k4_unpacked ua, ub;                                                                 \
        int64_t nb = n / QK_K, i = 0;                                                              \
        for (; i + 1 < nb; i += 2) {                                                               \
            if (pf) prefetch_span((const char *)(b + i) + pf, 2 * sizeof(BLOCK));                  \
            UNPACK(b + i, &ua);                                                                    \
            UNPACK(b + i + 1, &ub);                                                                \
            k4_accum2(&ua, &ub, x + i, &acc, &accm);                                               \
        }                                                                                          \
        if (i < nb) {                                                                              \
            if (pf) prefetch_span((const char *)(b + i) + pf, sizeof(BLOCK));                      \
            UNPACK(b + i, &ua);                                                                    \
            k4_accum(&ua, x + i, &acc, &acc1m);                                                    \
        }                                                                                          \
        return _mm512_reduce_add_ps(acc) - _mm512_reduce_add_ps(accm) - hsum256(acc1m);            \
    }                                                                                              \
    static float NAME##_vec_dot(int64_t n, const void *w, const void *xv) {                        \
        return NAME##_row(n, w, xv, 0);                                                            \
    }                                                                                              \
    static void NAME##_matvec(int64_t n, const void *w, size_t ws, int64_t nr, const void *x,      \
                              float *y) {                                                          \
        for (int64_t r = 0; r < nr; r++)                                                           \
            y[r] = NAME##_row(n, (const uint8_t *)w + (size_t)r * ws, x, kiln_matvec_pf(ws));      \
    }

K4_VEC_DOT(q4k, block_q4_K, q4k_unpack)
K4_VEC_DOT(q5k, block_q5_K, q5k_unpack)

/* ---- types with 16-element sub-blocks (Q2_K, Q3_K, Q6_K) ---- */

/* sumi + sum_s sc[s] * <w, x>_s for w[m] = elements 64m..64m+63 (unsigned,
 * < 64): dpbusd sums of four (|sum| <= 4*63*127 fits int16), packed to int16
 * two vectors at a time (128-bit lane L then holds sub-blocks L and 4 + L of
 * the pair), multiplied by the scales s and summed in pairs by dpwssd. */
static inline __m512i sub16_sumi(__m512i sumi, const __m512i w[4], const __m512i s[2],
                                 const block_q8_K *x) {
    __m512i r[4];
    UNROLL
    for (int m = 0; m < 4; m++)
        r[m] =
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[m], _mm512_loadu_si512(x->qs + 64 * m));
    sumi = _mm512_dpwssd_epi32(sumi, _mm512_packs_epi32(r[0], r[1]), s[0]);
    return _mm512_dpwssd_epi32(sumi, _mm512_packs_epi32(r[2], r[3]), s[1]);
}

/* sub16_sumi's scale vectors from 16 unsigned / signed scale bytes. */
static inline void sub16_scales(__m128i sc8, __m512i s[2]) {
    __m512i b = _mm512_broadcast_i32x4(sc8);
    s[0] = sel(selp[0], b), s[1] = sel(selp[1], b);
}

static inline void sub16_scales_signed(__m128i sc8, __m512i s[2]) {
    __m512i b = _mm512_broadcast_i32x4(sc8);
    s[0] = _mm512_srai_epi16(sel(selph[0], b), 8), s[1] = _mm512_srai_epi16(sel(selph[1], b), 8);
}

/* ---- Q6_K: u = q + 32 in [0, 64); 16-element sub-blocks ---- */

/* w[k]: elements 64k..64k+63; s: scales in sub16_sumi's order; off: -32 *
 * scale as int16 per bsum (removes the +32 with one dpwssd). */
struct q6k_unpacked {
    __m512i w[4], s[2];
    __m256i off;
    float d;
};

/* Element 128h + 32j + l: low nibble of ql[64h + 32(j%2) + l] (j < 2) or its
 * high nibble (j >= 2); top two bits at bit 2j of qh[32h + l]. */
static inline void q6k_unpack(const block_q6_K *b, struct q6k_unpacked *u) {
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    UNROLL
    for (int h = 0; h < 2; h++) {
        __m512i l = _mm512_loadu_si512(b->ql + 64 * h);
        __m512i hh = bcast32(b->qh + 32 * h);
        hh = _mm512_mask_srli_epi16(hh, HI_HALF, hh, 2);
        /* nibble | (hh & 3) << 4 and nibble | (hh & 0x30): w | (t & 0x30) */
        __m512i lo = _mm512_and_si512(l, m4), hi = _mm512_and_si512(_mm512_srli_epi16(l, 4), m4);
        u->w[2 * h] = _mm512_ternarylogic_epi32(lo, _mm512_slli_epi16(hh, 4), m30, 0xF8);
        u->w[2 * h + 1] = _mm512_ternarylogic_epi32(hi, hh, m30, 0xF8);
    }
    __m128i sc8 = _mm_loadu_si128((const __m128i *)b->scales);
    __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    sub16_scales_signed(sc8, u->s);
    u->off = _mm256_slli_epi16(_mm256_sub_epi16(_mm256_setzero_si256(), sc16), 5);
    u->d = f16(b->d);
}

/* sum over sub-blocks of scale * <q + 32, x>, minus 32 * scale * bsum. */
static inline __m512i q6k_sumi(const struct q6k_unpacked *u, const block_q8_K *x) {
    __m512i bs = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)x->bsums));
    __m512i sumi = _mm512_dpwssd_epi32(_mm512_setzero_si512(), bs, _mm512_zextsi256_si512(u->off));
    return sub16_sumi(sumi, u->w, u->s, x);
}

static inline __attribute__((always_inline)) float q6k_row(int64_t n, const void *w, const void *xv,
                                                           size_t pf) {
    const block_q6_K *b = w;
    const block_q8_K *x = xv;
    __m512 acc = _mm512_setzero_ps();
    struct q6k_unpacked u;
    for (int64_t i = 0; i < n / QK_K; i++) {
        if (pf) prefetch_span((const char *)(b + i) + pf, sizeof(block_q6_K));
        q6k_unpack(b + i, &u);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q6k_sumi(&u, x + i)), _mm512_set1_ps(u.d * x[i].d),
                              acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static float q6k_vec_dot(int64_t n, const void *w, const void *xv) {
    return q6k_row(n, w, xv, 0);
}

static void q6k_matvec(int64_t n, const void *w, size_t ws, int64_t nr, const void *x, float *y) {
    for (int64_t r = 0; r < nr; r++)
        y[r] = q6k_row(n, (const uint8_t *)w + (size_t)r * ws, x, kiln_matvec_pf(ws));
}

/* ---- Q2_K / Q3_K: low 2 bits of element 128h + 32j + l at bit 2j of qs[32h + l] ---- */

/* Vector m = 2h + v (elements 64m..64m+63): the upper half sits 2 bits above
 * the lower; v = 1 adds 4 more. */
static inline void q23_low2(const uint8_t *qs, __m512i w[4]) {
    const __m512i m3 = _mm512_set1_epi8(3);
    UNROLL
    for (int h = 0; h < 2; h++) {
        __m512i q = bcast32(qs + 32 * h);
        q = _mm512_mask_srli_epi16(q, HI_HALF, q, 2);
        w[2 * h] = _mm512_and_si512(q, m3);
        w[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m3);
    }
}

static inline void f16x2(const kiln_f16 *p, __m128 *dm) {
    uint32_t v;
    memcpy(&v, p, 4);
    *dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)v));
}

static float q2k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q2_K *b = w;
    const block_q8_K *x = xv;
    const __m128i m4 = _mm_set1_epi8(15);
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        __m128i sc = _mm_loadu_si128((const __m128i *)b->scales);
        __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
        __m512i wv[4], sv[2];
        sub16_scales(_mm_and_si128(sc, m4), sv);
        q23_low2(b->qs, wv);
        __m512i sumi = sub16_sumi(_mm512_setzero_si512(), wv, sv, x);
        __m256i summ = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), mn);
        __m128 f;
        f16x2(&b->d, &f);
        f = _mm_mul_ps(f, _mm_set1_ps(x->d));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_broadcastss_ps(f), acc);
        accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(summ), _mm256_broadcastss_ps(_mm_movehdup_ps(f)),
                               accm);
    }
    return _mm512_reduce_add_ps(acc) - hsum256(accm);
}

/* kq_unpack_q3 in registers: the 16 signed scales of a Q3_K block. The load
 * starts 4 bytes early (inside qs), so the scale bytes a0 a1 a2 are dwords
 * 1-3 and it stays inside the block. */
static inline __m128i q3_scales(const block_q3_K *b) {
    const uint8_t *p = (const uint8_t *)b + offsetof(block_q3_K, scales) - 4;
    __m128i s = _mm_loadu_si128((const __m128i *)p);
    __m128i lo = _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 1, 2, 1)); /* a0 a1 a0 a1 */
    __m128i hi = _mm_shuffle_epi32(s, _MM_SHUFFLE(3, 3, 3, 3)); /* a2 */
    lo = _mm_and_si128(_mm_srlv_epi32(lo, _mm_setr_epi32(0, 0, 4, 4)), _mm_set1_epi8(15));
    hi = _mm_and_si128(_mm_rolv_epi32(hi, _mm_setr_epi32(4, 2, 0, 30)), _mm_set1_epi8(0x30));
    return _mm_sub_epi8(_mm_or_si128(lo, hi), _mm_set1_epi8(32));
}

/* value = u - 4 with u = low2 | hbit << 2 (hbit of element 32j + l: bit j of
 * hmask[l]); the -4 is taken off with bsums. */
static float q3k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q3_K *b = w;
    const block_q8_K *x = xv;
    const __m512i b4 = _mm512_set1_epi8(4);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        __m128i sc8 = q3_scales(b);
        __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        __m512i sv[2];
        sub16_scales_signed(sc8, sv);
        __m256i off = _mm256_slli_epi16(_mm256_sub_epi16(_mm256_setzero_si256(), sc16), 2);
        __m512i bs = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)x->bsums));
        __m512i sumi = _mm512_dpwssd_epi32(_mm512_setzero_si512(), bs, _mm512_zextsi256_si512(off));
        __m512i u[4];
        /* bit 2m of hm holds the high bit of both halves of vector m */
        __m512i hm = bcast32(b->hmask), wv[4];
        hm = _mm512_mask_srli_epi16(hm, HI_HALF, hm, 1);
        __m512i t[4] = {_mm512_slli_epi16(hm, 2), hm, _mm512_srli_epi16(hm, 2),
                        _mm512_srli_epi16(hm, 4)};
        q23_low2(b->qs, wv);
        UNROLL
        for (int m = 0; m < 4; m++) u[m] = _mm512_ternarylogic_epi32(wv[m], t[m], b4, 0xF8);
        sumi = sub16_sumi(sumi, u, sv, x); /* u = w | (t & 4) */
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(x->d * f16(b->d)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* ---- IQ4_XS: levels + 128 by table lookup, dpbusd, scale in int32 ---- */

/* The 8 signed sub-block scales as int32. */
static inline __m256i iq4xs_scales(const block_iq4_xs *b) {
    uint32_t l;
    memcpy(&l, b->scales_l, 4);
    __m256i lo = _mm256_srlv_epi32(_mm256_set1_epi32((int)l),
                                   _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    __m256i hi = _mm256_srlv_epi32(_mm256_set1_epi32(b->scales_h),
                                   _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
    lo = _mm256_and_si256(lo, _mm256_set1_epi32(15));
    hi = _mm256_slli_epi32(_mm256_and_si256(hi, _mm256_set1_epi32(3)), 4);
    return _mm256_sub_epi32(_mm256_or_si256(lo, hi), _mm256_set1_epi32(32));
}

static float iq4xs_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_iq4_xs *b = w;
    const block_q8_K *x = xv;
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i lut = _mm512_broadcast_i32x4(_mm_xor_si128(
        _mm_loadu_si128((const __m128i *)kiln_iq4nl_values), _mm_set1_epi8((char)0x80)));
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, b++, x++) {
        __m256i sc = iq4xs_scales(b);
        __m512i sc512 = _mm512_castsi256_si512(sc), sumi = _mm512_setzero_si512();
        UNROLL
        for (int m = 0; m < 4; m++) {
            /* lanes: low and high nibbles of qs[32m..+16), then of qs[32m+16..+32) */
            __m512i q =
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * m)));
            q = _mm512_shuffle_i64x2(q, q, _MM_SHUFFLE(1, 1, 0, 0));
            q = _mm512_and_si512(_mm512_mask_srli_epi16(q, 0xFF00FF00u, q, 4), m4);
            __m512i r = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(lut, q),
                                            _mm512_loadu_si512(x->qs + 64 * m));
            __m512i s = _mm512_permutexvar_epi32(
                _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(2 * m)),
                                   _mm256_set1_epi32(2 * m + 1), 1),
                sc512);
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(r, s));
        }
        /* remove 128 * scale * (sum of the sub-block's x): scales as int16 pairs */
        __m256i sc2 = _mm256_or_si256(_mm256_and_si256(sc, _mm256_set1_epi32(0xffff)),
                                      _mm256_slli_epi32(sc, 16));
        __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), sc2);
        sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(_mm256_slli_epi32(off, 7)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_set1_ps(x->d * f16(b->d)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* ---- Q8_K activation quantizer ---- */

/* The first element of largest magnitude (as the scalar scan picks it). */
static float signed_absmax(const float *x) {
    __m512 m = _mm512_setzero_ps();
    for (int j = 0; j < QK_K; j += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
    float amax = _mm512_reduce_max_ps(m);
    if (amax == 0) return 0;
    __m512 a = _mm512_set1_ps(amax);
    for (int j = 0; j < QK_K; j += 16) {
        __mmask16 k = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + j)), a, _CMP_EQ_OQ);
        if (k) return x[j + __builtin_ctz((unsigned)k)];
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
    const __m512 is = _mm512_set1_ps(iscale);
    const __m512i cap = _mm512_set1_epi32(127), ones8 = _mm512_set1_epi8(1),
                  ones16 = _mm512_set1_epi16(1);
    /* packs interleave 4-dword groups per 128-bit lane; this puts them back */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512i s4[4];
    UNROLL
    for (int g = 0; g < 4; g++) {
        __m512i v[4];
        UNROLL
        for (int k = 0; k < 4; k++)
            v[k] = _mm512_min_epi32(
                _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 64 * g + 16 * k), is)), cap);
        __m512i p =
            _mm512_packs_epi16(_mm512_packs_epi32(v[0], v[1]), _mm512_packs_epi32(v[2], v[3]));
        p = _mm512_permutexvar_epi32(order, p);
        _mm512_storeu_si512(y->qs + 64 * g, p);
        s4[g] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones8, p); /* sums of 4 */
    }
    /* per 128-bit lane L: sums of 16 = bsums 4t + L for t = 0..3 */
    __m512i a = _mm512_madd_epi16(_mm512_packs_epi32(s4[0], s4[1]), ones16);
    __m512i c = _mm512_madd_epi16(_mm512_packs_epi32(s4[2], s4[3]), ones16);
    __m512i r = _mm512_madd_epi16(_mm512_packs_epi32(a, c), ones16);
    _mm256_storeu_si256((__m256i *)y->bsums,
                        _mm512_cvtepi32_epi16(_mm512_permutexvar_epi32(order, r)));
    y->d = 1 / iscale;
}

static void q8k_from_float(const float *x, void *dst, int64_t n) {
    block_q8_K *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++) q8k_block(x + i * QK_K, y + i);
}

/* ---- gemm tiles: a weight block is unpacked once per row for all columns ---- */

/* Rows of the tile against NC columns; NC is a compile-time constant in each
 * instantiation so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void
k4_gemm_row(int64_t nb, const uint8_t *w, size_t bsize, int q5, const uint8_t *x, size_t x_stride,
            const int NC, float *out, size_t out_stride) {
    __m512 acc[KILN_GEMM_MAX_C];
    __m256 accm[KILN_GEMM_MAX_C];
    UNROLL
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps(), accm[c] = _mm256_setzero_ps();
    struct k4_unpacked u;
    for (int64_t i = 0; i < nb; i++) {
        if (q5)
            q5k_unpack((const block_q5_K *)(w + i * bsize), &u);
        else
            q4k_unpack((const block_q4_K *)(w + i * bsize), &u);
        UNROLL
        for (int c = 0; c < NC; c++)
            k4_accum(&u, (const block_q8_K *)(x + c * x_stride) + i, &acc[c], &accm[c]);
    }
    UNROLL
    for (int c = 0; c < NC; c++)
        out[c * out_stride] = _mm512_reduce_add_ps(acc[c]) - hsum256(accm[c]);
}

static inline __attribute__((always_inline)) void q6k_gemm_row(int64_t nb, const uint8_t *w,
                                                               const uint8_t *x, size_t x_stride,
                                                               const int NC, float *out,
                                                               size_t out_stride) {
    __m512 acc[KILN_GEMM_MAX_C];
    UNROLL
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps();
    struct q6k_unpacked u;
    for (int64_t i = 0; i < nb; i++) {
        q6k_unpack((const block_q6_K *)w + i, &u);
        UNROLL
        for (int c = 0; c < NC; c++) {
            const block_q8_K *xb = (const block_q8_K *)(x + c * x_stride) + i;
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q6k_sumi(&u, xb)),
                                     _mm512_set1_ps(u.d * xb->d), acc[c]);
        }
    }
    UNROLL
    for (int c = 0; c < NC; c++) out[c * out_stride] = _mm512_reduce_add_ps(acc[c]);
}

typedef void (*gemm_nc_fn)(int64_t, const uint8_t *, size_t, int, const uint8_t *, size_t, float *,
                           size_t);

#define GEMM_NC(T, N, ROW)                                                                         \
    static void T##_gemm_##N(int64_t nb, const uint8_t *w, size_t w_stride, int nr,                \
                             const uint8_t *x, size_t x_stride, float *out, size_t out_stride) {   \
        const int NC = N;                                                                          \
        for (int r = 0; r < nr; r++) ROW;                                                          \
    }
#define GEMM_ALL(T, ROW)                                                                           \
    GEMM_NC(T, 1, ROW)                                                                             \
    GEMM_NC(T, 2, ROW)                                                                             \
    GEMM_NC(T, 3, ROW)                                                                             \
    GEMM_NC(T, 4, ROW)                                                                             \
    GEMM_NC(T, 5, ROW)                                                                             \
    GEMM_NC(T, 6, ROW)                                                                             \
    GEMM_NC(T, 7, ROW)                                                                             \
    GEMM_NC(T, 8, ROW)                                                                             \
    static void T##_gemm(int64_t n, const void *w, size_t w_stride, int nr, const void *x,         \
                         size_t x_stride, int nc, float *out, size_t out_stride) {                 \
        static const gemm_nc_fn by_nc[KILN_GEMM_MAX_C + 1] = {NULL,       T##_gemm_1, T##_gemm_2,  \
                                                              T##_gemm_3, T##_gemm_4, T##_gemm_5,  \
                                                              T##_gemm_6, T##_gemm_7, T##_gemm_8}; \
        by_nc[nc](n / QK_K, w, w_stride, nr, x, x_stride, out, out_stride);                        \
    }

GEMM_ALL(q4k, k4_gemm_row(nb, w + r * w_stride, sizeof(block_q4_K), 0, x, x_stride, NC, out + r,
                          out_stride))
GEMM_ALL(q5k, k4_gemm_row(nb, w + r * w_stride, sizeof(block_q5_K), 1, x, x_stride, NC, out + r,
                          out_stride))
GEMM_ALL(q6k, q6k_gemm_row(nb, w + r * w_stride, x, x_stride, NC, out + r, out_stride))

/* ---- tiles over prepared weights and activations (kernels.h gemm_wp) ----
 *
 * Q4_K/Q5_K in kern_wp_avx512.h's block-per-lane form: lane j of a group
 * (two superblocks) is sub-block j, its weight bytes the unsigned q (0..31),
 * its float scale d * sc_j (exact: an f16 times a 6-bit integer) and its min
 * -dmin * m_j; the Q8_K activations carry d and d * (the sub-block's sum of
 * qs, from two bsums). Integer sums of a lane reach 32 * 31 * 127, far from
 * int32's limits. Results differ from vec_dot only in the float rounding
 * order, and not at all between tiles (WP_MINS). */

static void q8k_xprep(int64_t n, const void *xq, void *dst) {
    const block_q8_K *b = xq;
    const int64_t nsb = n / QK_K;
    struct wp_xgrp *g = dst;
    for (int64_t i = 0; i < nsb; i += 2, g++) {
        _Alignas(64) uint8_t xb[512];
        _Alignas(64) float d[16], m[16];
        for (int h = 0; h < 2; h++) {
            const block_q8_K *sb = b + i + h;
            for (int s = 0; s < 8; s++) {
                int j = 8 * h + s;
                if (i + h >= nsb) {
                    d[j] = m[j] = 0.0f;
                    for (int k = 0; k < 8; k++) memset(xb + 64 * k + 4 * j, 0, 4);
                    continue;
                }
                d[j] = sb->d;
                m[j] = sb->d * (float)(sb->bsums[2 * s] + sb->bsums[2 * s + 1]);
                for (int k = 0; k < 8; k++) memcpy(xb + 64 * k + 4 * j, sb->qs + 32 * s + 4 * k, 4);
            }
        }
        for (int k = 0; k < 8; k++)
            _mm512_store_si512((void *)&g->x[k], _mm512_load_si512((const void *)(xb + 64 * k)));
        _mm512_store_ps(&g->d, _mm512_load_ps(d));
        _mm512_store_si512((void *)&g->third, _mm512_castps_si512(_mm512_load_ps(m)));
    }
}

/* Scales d * sc_j (*d8) and mins -dmin * m_j (*m8) of Q4_K/Q5_K superblock
 * blk. */
static inline __attribute__((always_inline)) void k4_wprep_dm(const uint8_t *blk, __m256 *d8,
                                                              __m256 *m8) {
    __m128i hdr = _mm_loadu_si128((const __m128i *)blk);
    __m128i sb = k4_scale_bytes(hdr); /* scales in bytes 0-7, mins in 8-15 */
    __m128 dm = _mm_cvtph_ps(hdr);    /* d, dmin */
    *d8 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sb)), _mm256_broadcastss_ps(dm));
    *m8 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sb, 8))),
                        _mm256_broadcastss_ps(_mm_sub_ps(_mm_setzero_ps(), _mm_movehdup_ps(dm))));
}

/* A group: superblocks b0 and b1 (NULL past the row's end: its lanes are
 * zero) into U[8], lane 8h + s = sub-block s of superblock h. Sub-blocks
 * 2p and 2p+1 are the low and high nibbles of qs dwords 8p..8p+7, so U[t]
 * lane 8h + s takes nibble s % 2 of dword 8(s / 2) + t of superblock h. One
 * VSHUFI32X4 per 64 bytes of qs gathers dwords t % 4 of each p into Z[t / 4]
 * (4h + p: one 128-bit lane each), and one VPERMT2D per t then gives all 16
 * lanes of U[t] (before the nibble shift). */
static inline __attribute__((always_inline)) void k4_wprep_grp(const uint8_t *b0, const uint8_t *b1,
                                                               int q5, __m512i *U) {
    const size_t qo = q5 ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
    const __m512i z = _mm512_setzero_si512();
    __m512i Qa0 = _mm512_loadu_si512((const void *)(b0 + qo)),
            Qb0 = _mm512_loadu_si512((const void *)(b0 + qo + 64));
    __m512i Qa1 = b1 ? _mm512_loadu_si512((const void *)(b1 + qo)) : z,
            Qb1 = b1 ? _mm512_loadu_si512((const void *)(b1 + qo + 64)) : z;
    /* Z[0] lanes (128-bit) p of superblock 0: dwords 8p..8p+3; Z[1]: 8p+4.. */
    const __m512i Z0[2] = {_mm512_shuffle_i32x4(Qa0, Qb0, 0x88),
                           _mm512_shuffle_i32x4(Qa0, Qb0, 0xDD)};
    const __m512i Z1[2] = {_mm512_shuffle_i32x4(Qa1, Qb1, 0x88),
                           _mm512_shuffle_i32x4(Qa1, Qb1, 0xDD)};
    /* lane 8h + s <- source h, dword 4 (s / 2) (+ t % 4) */
    const __m512i base =
        _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    const __m512i nib = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
    const __m512i sub = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i hsel = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 8, 8, 8, 8);
    const __m512i m4 = _mm512_set1_epi8(15), one = _mm512_set1_epi8(1);
    __m512i qh = z;
    if (q5) {
        const __m256i h0 =
            _mm256_loadu_si256((const __m256i *)((const block_q5_K *)(const void *)b0)->qh);
        const __m256i h1 =
            b1 ? _mm256_loadu_si256((const __m256i *)((const block_q5_K *)(const void *)b1)->qh)
               : _mm256_setzero_si256();
        qh = _mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1);
    }
    UNROLL
    for (int t = 0; t < 8; t++) {
        const __m512i tv = _mm512_set1_epi32(t % 4);
        __m512i v = _mm512_permutex2var_epi32(Z0[t / 4], _mm512_add_epi32(base, tv), Z1[t / 4]);
        v = _mm512_and_si512(_mm512_srlv_epi32(v, nib), m4);
        if (q5) { /* bit s of qh[4t..4t+3] of superblock h -> bit 4 */
            __m512i hb = _mm512_permutexvar_epi32(_mm512_add_epi32(hsel, _mm512_set1_epi32(t)), qh);
            hb = _mm512_and_si512(_mm512_srlv_epi32(hb, sub), one);
            v = _mm512_or_si512(v, _mm512_slli_epi32(hb, 4));
        }
        U[t] = v;
    }
}

static inline __attribute__((always_inline)) void
k4_wprep(int64_t n, const void *w, size_t wst, int nr, void *dst, size_t bsize, int q5) {
    const int64_t nsb = n / QK_K, ng = (nsb + 1) / 2;
    for (int r = 0; r < nr; r++) {
        const uint8_t *row = (const uint8_t *)w + r * wst;
        struct wp_wgrp *o = (struct wp_wgrp *)dst + r * ng;
        for (int64_t i = 0; i < nsb; i += 2, o++) {
            __m512i U[8];
            __m256 da, ma, db = _mm256_setzero_ps(), mb = _mm256_setzero_ps();
            const uint8_t *b0 = row + i * bsize, *b1 = i + 1 < nsb ? b0 + bsize : NULL;
            k4_wprep_grp(b0, b1, q5, U);
            k4_wprep_dm(b0, &da, &ma);
            if (b1) k4_wprep_dm(b1, &db, &mb);
            UNROLL
            for (int t = 0; t < 8; t++) _mm512_store_si512((void *)&o->u[t], U[t]);
            _mm512_store_ps(&o->d, _mm512_insertf32x8(_mm512_castps256_ps512(da), db, 1));
            _mm512_store_ps(&o->m, _mm512_insertf32x8(_mm512_castps256_ps512(ma), mb, 1));
        }
    }
}

static void q4k_wprep(int64_t n, const void *w, size_t wst, int nr, void *dst) {
    k4_wprep(n, w, wst, nr, dst, sizeof(block_q4_K), 0);
}
static void q5k_wprep(int64_t n, const void *w, size_t wst, int nr, void *dst) {
    k4_wprep(n, w, wst, nr, dst, sizeof(block_q5_K), 1);
}

WP_TILES(kq, WP_MINS, )

static void k4_gemm_wp(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs,
                       int nc, float *out, size_t os) {
    kq_wp_tile(n, w, ws, nr, x, xs, nc, out, os, _mm_setzero_si128());
}

void kern_kquant_register_avx512(struct kiln_kernels *k) {
    k->from_float[KILN_TYPE_Q8_K] = q8k_from_float;
    k->vec_dot[KILN_TYPE_Q2_K] = q2k_vec_dot;
    k->vec_dot[KILN_TYPE_Q3_K] = q3k_vec_dot;
    k->vec_dot[KILN_TYPE_Q4_K] = q4k_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_K] = q5k_vec_dot;
    k->vec_dot[KILN_TYPE_Q6_K] = q6k_vec_dot;
    k->vec_dot[KILN_TYPE_IQ4_XS] = iq4xs_vec_dot;
    k->matvec[KILN_TYPE_Q4_K] = q4k_matvec;
    k->matvec[KILN_TYPE_Q5_K] = q5k_matvec;
    k->matvec[KILN_TYPE_Q6_K] = q6k_matvec;
    k->gemm[KILN_TYPE_Q4_K] = q4k_gemm;
    k->gemm[KILN_TYPE_Q5_K] = q5k_gemm;
    k->gemm[KILN_TYPE_Q6_K] = q6k_gemm;
    k->gemm_xprep[KILN_TYPE_Q8_K] = q8k_xprep;
    k->gemm_wprep[KILN_TYPE_Q4_K] = q4k_wprep;
    k->gemm_wp[KILN_TYPE_Q4_K] = k4_gemm_wp;
    k->gemm_wprep[KILN_TYPE_Q5_K] = q5k_wprep;
    k->gemm_wp[KILN_TYPE_Q5_K] = k4_gemm_wp;
    /* One thread, L2, Zen 5 (loaded machine, thread CPU time): preparing a
     * row costs about what 4.5 (Q4_K) / 7.5 (Q5_K) columns of gemm tiles
     * save over the wp tiles (2500 / 1500 vs 540 GOPS-equivalent), so
     * narrower products keep gemm. */
    k->gemm_xp_min_cols[KILN_TYPE_Q4_K] = 5;
    k->gemm_xp_min_cols[KILN_TYPE_Q5_K] = 8;
}

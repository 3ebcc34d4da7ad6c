/* kern_legacy_avx512.c - AVX-512 (F/BW/VL/DQ + VNNI) kernels for the legacy
 * block types: Q8_0/Q8_1 activation quantizers, vec_dot for Q4_0, Q4_1, Q5_0,
 * Q5_1, Q8_0, IQ4_NL, multi-row matvec for Q4_0 and Q8_0 (see
 * "matvec" below), and gemm tiles for the Q8_0-partnered types.
 *
 * The integer core is VPDPBUSD (u8 x s8). Each weight block is turned into
 * unsigned bytes u = q + off (off = 8 for Q4_0, 16 for Q5_0, 128 for Q8_0 and
 * IQ4_NL; 0 for the affine Q4_1/Q5_1, whose q are already unsigned); then
 * sum((u - off) * x) = dpbusd(u, x) - dpbusd(off, x). In a gemm tile the
 * second term is computed once per activation and passed as the dpbusd
 * accumulator, so each (row, column) pair costs one dpbusd.
 * Two blocks share one zmm: bytes 0..31 are block i, 32..63 block i+1, so
 * lanes 0..7 of the int32 sum belong to block i and lanes 8..15 to i+1.
 *
 * gemm has two paths. Narrow tiles (matvec: nc = 1; a full 8 x 1 tile walks
 * its eight rows together) use the two-blocks-per-
 * zmm layout and prefetch the next tile's rows, since matmul.c walks rows in
 * order and each row alone is too short a stream for the hardware prefetcher.
 * Wider tiles of Q4_0, IQ4_NL and Q8_0 use the block-per-lane layout (see
 * "block-per-lane kernels" below), which needs AVX512-VBMI and is chosen at
 * registration when the CPU has it. */
#include "compute/blocks.h"
#include "compute/kern_wp_avx512.h"
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

INLINE int wk_off(enum wkind k) {
    return k == WK_Q4_0 ? 8 : k == WK_Q5_0 ? 16 : k == WK_Q8_0 || k == WK_IQ4_NL ? 128 : 0;
}

INLINE int wk_affine(enum wkind k) {
    return k == WK_Q4_1 || k == WK_Q5_1;
}

/* offset of qs in the block */
INLINE size_t wk_qs(enum wkind k) {
    switch (k) {
    case WK_Q4_0:
    case WK_Q8_0:
    case WK_IQ4_NL:
        return 2;
    case WK_Q4_1:
        return 4;
    case WK_Q5_0:
        return 6;
    default:
        return 8;
    }
}

INLINE uint16_t ld16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

INLINE uint32_t ld32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Nibbles of two blocks (16 bytes each; b may equal a for a single block)
 * as 64 bytes 0..15 in element order. */
INLINE __m512i nibbles2(const uint8_t *a, const uint8_t *b) {
    __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const void *)a)),
                                         _mm_loadu_si128((const void *)b), 1);
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(ab), _mm256_srli_epi16(ab, 4), 1);
    v = _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
    return _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0));
}

INLINE __m512i load2x32(const uint8_t *a, const uint8_t *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const void *)a)),
                              _mm256_loadu_si256((const void *)b), 1);
}

/* Unsigned weight bytes u = q + off of blocks a and b. When `one`, only block
 * a is read and the upper half is zero. */
INLINE __m512i load_w(enum wkind k, const uint8_t *a, const uint8_t *b, int one) {
    const uint8_t *bb = one ? a : b;
    __m512i u;
    if (k == WK_Q8_0) {
        u = one ? _mm512_castsi256_si512(_mm256_loadu_si256((const void *)(a + 2)))
                : load2x32(a + 2, b + 2);
        u = _mm512_xor_si512(u, _mm512_set1_epi8((char)0x80));
    } else {
        u = nibbles2(a + wk_qs(k), bb + wk_qs(k));
        if (k == WK_IQ4_NL) {
            const __m512i lut = _mm512_broadcast_i32x4(
                _mm_setr_epi8(1, 24, 45, 63, 79, 93, 106, 118, (char)129, (char)141, (char)153,
                              (char)166, (char)181, (char)197, (char)217, (char)241));
            u = _mm512_shuffle_epi8(lut, u);
        } else if (k == WK_Q5_0 || k == WK_Q5_1) {
            size_t qh = k == WK_Q5_0 ? 2 : 4;
            __mmask64 m = (uint64_t)ld32(a + qh) | (uint64_t)ld32(bb + qh) << 32;
            u = _mm512_mask_add_epi8(u, m, u, _mm512_set1_epi8(16));
        }
    }
    return one ? _mm512_inserti64x4(u, _mm256_setzero_si256(), 1) : u;
}

/* Activation bytes of blocks a and b (qs at byte offset qs). */
INLINE __m512i load_x(const uint8_t *a, const uint8_t *b, size_t qs, int one) {
    return one ? _mm512_castsi256_si512(_mm256_loadu_si256((const void *)(a + qs)))
               : load2x32(a + qs, b + qs);
}

INLINE __m512 spread2(__m128 p) {
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(p));
}

/* Two f16 values (the second may be 0) as floats in lanes 0 and 1. */
INLINE __m128 h2(uint16_t a, uint16_t b) {
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)a | (uint32_t)b << 16)));
}

INLINE float hsum(__m512 v) {
    return _mm512_reduce_add_ps(v);
}

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* ---- vec_dot ---- */

/* Integer sums of blocks i and i+1 (only i when `one`): lanes 0..7 and 8..15. */
INLINE __m512i sum_pair(enum wkind k, const uint8_t *wa, const uint8_t *xa, int one) {
    const size_t ws = wk_size(k), xs = wk_affine(k) ? sizeof(block_q8_1) : sizeof(block_q8_0);
    __m512i u = load_w(k, wa, wa + ws, one), xv = load_x(xa, xa + xs, wk_affine(k) ? 4 : 2, one);
    __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xv);
    if (!wk_off(k)) return s;
    const __m512i off = _mm512_set1_epi8((char)wk_off(k));
    return _mm512_sub_epi32(s, _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, xv));
}

/* The f16 at byte offset `at` of 8 consecutive blocks (stride bs) as floats. */
INLINE __m256 h8(const uint8_t *p, size_t bs, size_t at) {
    uint64_t lo = 0, hi = 0;
    for (int j = 0; j < 4; j++) {
        lo |= (uint64_t)ld16(p + j * bs + at) << 16 * j;
        hi |= (uint64_t)ld16(p + (j + 4) * bs + at) << 16 * j;
    }
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)hi, (long long)lo));
}

/* Lanes 2j, 2j+1 of p spread over 8 lanes each. */
INLINE __m512 spread_at(__m256 p, int j) {
    const __m512i idx = _mm512_add_epi32(
        _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), _mm512_set1_epi32(2 * j));
    return _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(p));
}

INLINE float vec_dot_k(enum wkind k, int64_t n, const void *w, const void *x) {
    const uint8_t *wp = w, *xp = x;
    const size_t ws = wk_size(k), xs = wk_affine(k) ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const int64_t nb = n / 32;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    __m256 accm = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) { /* 8 blocks: 4 independent FMA chains, batched scales */
        const uint8_t *w8 = wp + i * ws, *x8 = xp + i * xs;
        __m256 d = _mm256_mul_ps(h8(w8, ws, 0), h8(x8, xs, 0));
        for (int j = 0; j < 4; j++) {
            __m512i s = sum_pair(k, w8 + 2 * j * ws, x8 + 2 * j * xs, 0);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), spread_at(d, j), acc[j]);
        }
        if (wk_affine(k)) accm = _mm256_fmadd_ps(h8(w8, ws, 2), h8(x8, xs, 2), accm);
    }
    float r = 0.0f;
    for (; i < nb; i += 2) {
        const int one = i + 1 == nb;
        const uint8_t *wa = wp + i * ws, *xa = xp + i * xs;
        __m128 d = _mm_mul_ps(h2(ld16(wa), one ? 0 : ld16(wa + ws)),
                              h2(ld16(xa), one ? 0 : ld16(xa + xs)));
        acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum_pair(k, wa, xa, one)), spread2(d), acc[0]);
        if (wk_affine(k))
            for (int j = 0; j <= !one; j++)
                r += _cvtsh_ss(ld16(wa + j * ws + 2)) * _cvtsh_ss(ld16(xa + j * xs + 2));
    }
    r += hsum(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
    if (wk_affine(k)) r += hsum8(accm);
    return r;
}

static float q5_0_vec_dot(int64_t n, const void *w, const void *x) {
    return vec_dot_k(WK_Q5_0, n, w, x);
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

/* ---- matvec: Q4_0 and Q8_0 rows against one Q8_0 column ----
 *
 * mv_rows computes R (1..MV_R) rows together: the activation's share of a
 * block pair (its load, its offset correction, its scales) is done once for
 * all R rows, and each row costs one weight load, one VPDPBUSD (started
 * from the shared correction), a convert, a scale spread and an FMA. Each
 * row's operations and their order are the same whatever R, so a row's
 * result does not depend on the rows beside it; vec_dot is the R = 1 case.
 *
 * Q4_0 weights are loaded as 128-bit broadcasts (a load-port operation, no
 * shuffle): qs of block a in 128-bit lanes 0 and 1, of block b in lanes 2
 * and 3, ANDed with 0x0f in lanes 0 and 2 (the low nibbles: elements 0..15)
 * and 0xf0 in lanes 1 and 3 (16 x the high nibbles: elements 16..31), so the
 * bytes line up with the activation's element order without a shift. Their
 * offset is 8 in the low lanes and 128 in the high ones; the high lanes'
 * int32 sums are exactly 16 x the true ones, and so are their float
 * accumulators (a power of two commutes with rounding), which are scaled
 * by 1/16 once at the end. The weight scales of 8 blocks come from 64-byte
 * loads and one word permute (every d sits at an even offset).
 *
 * The matvec entry walks its rows MV_R at a time and prefetches the same
 * blocks kiln_matvec_pf(MV_R rows) further on (kernels.h). */

#define MV_R 4

/* The f16 d of the 8 blocks of a Q4_0 run at p (144 bytes) as floats. */
INLINE __m256 q4_0_d8(const uint8_t *p) {
    const __m512i idx = _mm512_setr_epi32(0x00090000, 0x001b0012, 0x00290020, 0x003b0032, 0, 0, 0,
                                          0, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i d = _mm512_permutex2var_epi16(_mm512_loadu_si512((const void *)p), idx,
                                          _mm512_loadu_si512((const void *)(p + 72)));
    return _mm256_cvtph_ps(_mm512_castsi512_si128(d));
}

/* The f16 d of the 8 blocks of a Q8_0 run at p (272 bytes) as floats. */
INLINE __m256 q8_0_d8(const uint8_t *p) {
    /* words 0, 17 of p and 34 - 32, 51 - 32 of p + 64; the same at p + 136 */
    const __m512i idx =
        _mm512_setr_epi32(0x00110000, 0x00330022, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i a = _mm512_permutex2var_epi16(_mm512_loadu_si512((const void *)p), idx,
                                          _mm512_loadu_si512((const void *)(p + 64)));
    __m512i b = _mm512_permutex2var_epi16(_mm512_loadu_si512((const void *)(p + 136)), idx,
                                          _mm512_loadu_si512((const void *)(p + 200)));
    __m128i ab = _mm_unpacklo_epi64(_mm512_castsi512_si128(a), _mm512_castsi512_si128(b));
    return _mm256_cvtph_ps(ab);
}

INLINE __m256 mv_d8(enum wkind k, const uint8_t *p) {
    return k == WK_Q8_0 ? q8_0_d8(p) : q4_0_d8(p);
}

/* Unsigned weight bytes of blocks a and a + 1 (only a when `one`). */
INLINE __m512i mv_w(enum wkind k, const uint8_t *wa, int one) {
    if (k == WK_Q8_0) return load_w(k, wa, wa + sizeof(block_q8_0), one);
    const __m512i mask = _mm512_setr_epi32(
        0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, (int)0xf0f0f0f0, (int)0xf0f0f0f0,
        (int)0xf0f0f0f0, (int)0xf0f0f0f0, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f,
        (int)0xf0f0f0f0, (int)0xf0f0f0f0, (int)0xf0f0f0f0, (int)0xf0f0f0f0);
    __m512i u = _mm512_broadcast_i32x4(_mm_loadu_si128((const void *)(wa + 2)));
    if (one) return _mm512_maskz_and_epi32(0x00ff, u, mask);
    u = _mm512_mask_broadcast_i32x4(u, 0xff00,
                                    _mm_loadu_si128((const void *)(wa + sizeof(block_q4_0) + 2)));
    return _mm512_and_si512(u, mask);
}

/* Minus the offset correction of the activation bytes xv. */
INLINE __m512i mv_corr(enum wkind k, __m512i xv) {
    const __m512i off =
        k != WK_Q4_0
            ? _mm512_set1_epi8((char)wk_off(k))
            : _mm512_setr_epi32(0x08080808, 0x08080808, 0x08080808, 0x08080808, (int)0x80808080,
                                (int)0x80808080, (int)0x80808080, (int)0x80808080, 0x08080808,
                                0x08080808, 0x08080808, 0x08080808, (int)0x80808080,
                                (int)0x80808080, (int)0x80808080, (int)0x80808080);
    return _mm512_sub_epi32(_mm512_setzero_si512(),
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, xv));
}

/* y[r] = dot(row r of w, x) for r < R; rows wst bytes apart; prefetches
 * the rows pf bytes further on. */
INLINE void mv_rows(enum wkind k, int R, int64_t n, const uint8_t *w, size_t wst, const uint8_t *x,
                    float *y, size_t pf) {
    const size_t ws = wk_size(k), xs = sizeof(block_q8_0);
    const int64_t nb = n / 32;
    __m512 acc[MV_R][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        const uint8_t *w8 = w + i * ws, *x8 = x + i * xs;
        /* activation scales: word permutes for Q4_0 (+2.5%), scalar loads for
         * Q8_0, whose weight loads keep the shuffle ports busier (-3% else) */
        __m256 dx = k == WK_Q4_0 ? q8_0_d8(x8) : h8(x8, xs, 0), d[MV_R];
        for (int r = 0; r < R; r++) {
            const char *p = (const char *)w8 + r * wst + pf;
            for (size_t o = 0; o < 8 * ws; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
            d[r] = _mm256_mul_ps(mv_d8(k, w8 + r * wst), dx);
        }
        for (int j = 0; j < 4; j++) {
            const uint8_t *xa = x8 + 2 * j * xs;
            __m512i xv = load_x(xa, xa + xs, 2, 0), corr = mv_corr(k, xv);
            for (int r = 0; r < R; r++) {
                __m512i s = _mm512_dpbusd_epi32(corr, mv_w(k, w8 + r * wst + 2 * j * ws, 0), xv);
                acc[r][j & 1] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), spread_at(d[r], j), acc[r][j & 1]);
            }
        }
    }
    for (; i < nb; i += 2) {
        const int one = i + 1 == nb;
        const uint8_t *xa = x + i * xs;
        __m512i xv = load_x(xa, xa + xs, 2, one), corr = mv_corr(k, xv);
        __m128 dx = h2(ld16(xa), one ? 0 : ld16(xa + xs));
        for (int r = 0; r < R; r++) {
            const uint8_t *wa = w + r * wst + i * ws;
            __m128 d = _mm_mul_ps(h2(ld16(wa), one ? 0 : ld16(wa + ws)), dx);
            __m512i s = _mm512_dpbusd_epi32(corr, mv_w(k, wa, one), xv);
            acc[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), spread2(d), acc[r][0]);
        }
    }
    const __m512 unscale = k == WK_Q4_0
                               ? _mm512_setr_ps(1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f, 1,
                                                1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f)
                               : _mm512_set1_ps(1.0f);
    for (int r = 0; r < R; r++) {
        __m512 a = _mm512_add_ps(acc[r][0], acc[r][1]);
        y[r] = hsum(k == WK_Q4_0 ? _mm512_mul_ps(a, unscale) : a);
    }
}

typedef void (*mv_fn)(int64_t, const uint8_t *, size_t, const uint8_t *, float *, size_t);
#define MV(K, R)                                                                                   \
    static void mv_##K##_##R(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x, float *y,   \
                             size_t pf) {                                                          \
        mv_rows(WK_##K, R, n, w, ws, x, y, pf);                                                    \
    }
MV(Q4_0, 1)
MV(Q4_0, MV_R)
MV(Q8_0, 1)
MV(Q8_0, MV_R)
/* { 1 row, MV_R rows } */
static const mv_fn mv_q4_0[2] = {mv_Q4_0_1, mv_Q4_0_MV_R};
static const mv_fn mv_q8_0[2] = {mv_Q8_0_1, mv_Q8_0_MV_R};

static void mv_split(const mv_fn *t, int64_t n, const void *w, size_t ws, int64_t nr, const void *x,
                     float *y) {
    const uint8_t *wp = w;
    const size_t pf = kiln_matvec_pf(MV_R * ws);
    int64_t r = 0;
    for (; r + MV_R <= nr; r += MV_R) t[1](n, wp + (size_t)r * ws, ws, x, y + r, pf);
    for (; r < nr; r++) t[0](n, wp + (size_t)r * ws, ws, x, y + r, pf);
}

static void q4_0_matvec(int64_t n, const void *w, size_t ws, int64_t nr, const void *x, float *y) {
    mv_split(mv_q4_0, n, w, ws, nr, x, y);
}
static void q8_0_matvec(int64_t n, const void *w, size_t ws, int64_t nr, const void *x, float *y) {
    mv_split(mv_q8_0, n, w, ws, nr, x, y);
}
static float q4_0_vec_dot(int64_t n, const void *w, const void *x) {
    float y;
    mv_Q4_0_1(n, w, 0, x, &y, 0);
    return y;
}
static float q8_0_vec_dot(int64_t n, const void *w, const void *x) {
    float y;
    mv_Q8_0_1(n, w, 0, x, &y, 0);
    return y;
}

/* ---- gemm: R x C sub-tiles (R, C <= 4) over Q8_0 activations ---- */

#define SUB 4

INLINE void tile_step(enum wkind k, int R, int C, int64_t i, int one, const uint8_t *w, size_t wst,
                      const uint8_t *x, size_t xst, __m512 acc[2 * SUB][SUB], int pf) {
    const size_t ws = wk_size(k), xs = sizeof(block_q8_0);
    const __m512i off = _mm512_set1_epi8((char)wk_off(k));
    __m512i xv[SUB], neg[SUB];
    __m128 dx[SUB];
    for (int c = 0; c < C; c++) {
        const uint8_t *xa = x + c * xst + i * xs;
        xv[c] = load_x(xa, xa + xs, 2, one);
        neg[c] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                  _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, xv[c]));
        dx[c] = h2(ld16(xa), one ? 0 : ld16(xa + xs));
    }
    for (int r = 0; r < R; r++) {
        const uint8_t *wa = w + r * wst + i * ws;
        __m512i u = load_w(k, wa, wa + ws, one);
        __m128 dw = h2(ld16(wa), one ? 0 : ld16(wa + ws));
        /* the last byte of these blocks in the row pf rows down: see grp_tile_step */
        const char *pa = (const char *)wa + (size_t)pf * wst;
        _mm_prefetch(pa + 2 * ws - 1, _MM_HINT_T0);
        if (2 * ws > 64) _mm_prefetch(pa, _MM_HINT_T0); /* Q8_0: 68 bytes may span 3 lines */
        for (int c = 0; c < C; c++) {
            __m512i s = _mm512_dpbusd_epi32(neg[c], u, xv[c]);
            acc[r][c] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), spread2(_mm_mul_ps(dw, dx[c])), acc[r][c]);
        }
    }
}

INLINE void tile_k(enum wkind k, int R, int C, int64_t n, const uint8_t *w, size_t wst,
                   const uint8_t *x, size_t xst, float *out, size_t ost, int pf) {
    __m512 acc[2 * SUB][SUB];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    const int64_t nb = n / 32;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) tile_step(k, R, C, i, 0, w, wst, x, xst, acc, pf);
    if (i < nb) tile_step(k, R, C, i, 1, w, wst, x, xst, acc, pf);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) out[c * ost + r] = hsum(acc[r][c]);
}

typedef void (*tile_fn)(int64_t, const uint8_t *, size_t, const uint8_t *, size_t, float *, size_t,
                        int);

#define TILE(K, R, C)                                                                              \
    static void tile_##K##_##R##x##C(int64_t n, const uint8_t *w, size_t ws, const uint8_t *x,     \
                                     size_t xs, float *o, size_t os, int pf) {                     \
        tile_k(WK_##K, R, C, n, w, ws, x, xs, o, os, pf);                                          \
    }
#define TILE_ROW(K, R) TILE(K, R, 1) TILE(K, R, 2) TILE(K, R, 3) TILE(K, R, 4)
#define TILES(K)       TILE_ROW(K, 1) TILE_ROW(K, 2) TILE_ROW(K, 3) TILE_ROW(K, 4)
#define TABLE_ROW(K, R)                                                                            \
    tile_##K##_##R##x1, tile_##K##_##R##x2, tile_##K##_##R##x3, tile_##K##_##R##x4
/* The R x C sub-tiles at (R - 1) * SUB + (C - 1), then the 8 x 1 matvec tile. */
#define TABLE(K)                                                                                   \
    { TABLE_ROW(K, 1), TABLE_ROW(K, 2), TABLE_ROW(K, 3), TABLE_ROW(K, 4), tile_##K##_8x1 }

TILES(Q4_0)
TILES(Q5_0)
TILES(Q8_0)
TILES(IQ4_NL)
TILE(Q4_0, 8, 1)
TILE(Q5_0, 8, 1)
TILE(Q8_0, 8, 1)
TILE(IQ4_NL, 8, 1)

static const tile_fn tiles_q4_0[17] = TABLE(Q4_0);
static const tile_fn tiles_q5_0[17] = TABLE(Q5_0);
static const tile_fn tiles_q8_0[17] = TABLE(Q8_0);
static const tile_fn tiles_iq4_nl[17] = TABLE(IQ4_NL);

/* Splits an nr x nc tile into sub-tiles of at most SUB x SUB; a full
 * 8 x 1 (matvec) tile runs as one. Each (row, column) sum is accumulated in
 * the same order whatever the sub-tile, so the split never changes results. */
static void gemm_split(const tile_fn *t, int64_t n, const void *w, size_t ws, int nr, const void *x,
                       size_t xs, int nc, float *out, size_t os) {
    if (nr == 2 * SUB && nc == 1) { /* all eight row streams at once: see gemm_matvec */
        t[16](n, w, ws, x, xs, out, os, nr);
        return;
    }
    for (int r0 = 0; r0 < nr; r0 += SUB) {
        int R = nr - r0 < SUB ? nr - r0 : SUB;
        for (int c0 = 0; c0 < nc; c0 += SUB) {
            int C = nc - c0 < SUB ? nc - c0 : SUB;
            t[(R - 1) * SUB + (C - 1)](n, (const uint8_t *)w + r0 * ws, ws,
                                       (const uint8_t *)x + c0 * xs, xs, out + c0 * os + r0, os,
                                       nr);
        }
    }
}

static void q4_0_gemm(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc,
                      float *out, size_t os) {
    gemm_split(tiles_q4_0, n, w, ws, nr, x, xs, nc, out, os);
}
static void q5_0_gemm(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc,
                      float *out, size_t os) {
    gemm_split(tiles_q5_0, n, w, ws, nr, x, xs, nc, out, os);
}
static void q8_0_gemm(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc,
                      float *out, size_t os) {
    gemm_split(tiles_q8_0, n, w, ws, nr, x, xs, nc, out, os);
}
static void iq4_nl_gemm(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs,
                        int nc, float *out, size_t os) {
    gemm_split(tiles_iq4_nl, n, w, ws, nr, x, xs, nc, out, os);
}

/* ---- block-per-lane kernels (Q4_0, IQ4_NL, Q8_0 weights) ----
 *
 * Sixteen consecutive blocks form a group. The weight and activation bytes
 * of a group are transposed into eight zmm each (U[k], X[k]) so that int32
 * lane j of every vector belongs to block j: lane j of X[k] holds bytes
 * 4k..4k+3 of block j's qs, and lane j of U[k] the same four elements of
 * the weight block (made unsigned, u = q + off). Eight chained VPDPBUSDs
 * then leave block j's whole integer dot product in lane j, so one
 * convert and one FMA apply all sixteen scale products at once.
 * The offset term -off * sum(x of block j) depends only on the activation:
 * it is computed once per column and group and starts the dpbusd chain.
 *
 * Transposition: a VPERMT2B over 128 loaded bytes picks one unit's bytes
 * (4 blocks of 18 bytes for Q4_0/IQ4_NL, 2 blocks of 34 for Q8_0) into an
 * order from which a short butterfly of 64/128-bit permutes finishes the
 * job. A tail group (< 16 blocks) uses masked loads; the lanes of missing
 * blocks are zero, scales included. */

/* These use VPERMB/VPERMT2B (AVX512-VBMI): registered only when the CPU has it. */
#define VBMI     __attribute__((target("avx512vbmi")))
#define INLINE_V static inline __attribute__((always_inline, target("avx512vbmi")))

#define GB 16 /* blocks per group */
/* Narrower tiles than this take the two-blocks-per-zmm path above: with few
 * columns the weight transposition is not paid back (measured on Zen 5;
 * Q8_0's transposition costs the most). */
#define GRP_MIN_NC(k) ((k) == WK_Q8_0 ? 6 : 3)

/* n bytes (n <= 64; n <= 0 gives zero) at p, never touching bytes past p + n. */
INLINE_V __m512i load_n(const uint8_t *p, int n, int full) {
    if (full) return _mm512_loadu_si512((const void *)p);
    if (n <= 0) return _mm512_setzero_si512();
    __mmask64 m = n >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << n) - 1;
    return _mm512_maskz_loadu_epi8(m, p);
}

/* 16 f16 scales of a group from the first 64 bytes A[u] of each unit: bytes
 * 2j, 2j+1 of the result are block j's d. `bpu` blocks per unit, `bs` bytes
 * per block. */
INLINE_V __m512 grp_scales(const __m512i *A, int units, int bpu, int bs) {
    uint8_t idx[64] = {0};
    for (int p = 0; p < 32; p++) idx[p] = (uint8_t)((p / 2 % bpu) * bs + (p & 1));
    const __m512i vi = _mm512_loadu_si512((const void *)idx);
    __m512i r = _mm512_setzero_si512();
    for (int u = 0; u < units; u++) {
        __mmask64 m = (__mmask64)(((uint64_t)1 << (2 * bpu)) - 1) << (2 * bpu * u);
        r = _mm512_mask_permutexvar_epi8(r, m, vi, A[u]);
    }
    return _mm512_cvtph_ps(_mm512_castsi512_si256(r));
}

struct wgrp {
    __m512i u[8];
    __m512 d;
};
struct xgrp {
    __m512i x[8];
    __m512 d;
    __m512i corr; /* -off * sum(x) per block */
};

/* Q4_0 / IQ4_NL weights: nb blocks (1..16) at p. */
INLINE_V void wgrp_q4(struct wgrp *g, enum wkind k, const uint8_t *p, int nb) {
    const int full = nb == GB;
    uint8_t idx[64];
    for (int o = 0; o < 64; o++) /* byte o = (lane k, block b, byte t) */
        idx[o] = (uint8_t)(18 * (o / 4 % 4) + 2 + 4 * (o / 16) + o % 4);
    const __m512i vi = _mm512_loadu_si512((const void *)idx);
    __m512i A[4], P[4];
    for (int u = 0; u < 4; u++) {
        const uint8_t *q = p + 72 * u;
        int avail = nb * 18 - 72 * u;
        A[u] = load_n(q, avail, full);
        __m512i B = full ? _mm512_castsi128_si512(_mm_loadl_epi64((const void *)(q + 64)))
                         : load_n(q + 64, avail > 72 ? 8 : avail - 64, 0);
        P[u] = _mm512_permutex2var_epi8(A[u], vi, B);
    }
    __m512i Q0 = _mm512_shuffle_i64x2(P[0], P[1], 0x44),
            Q1 = _mm512_shuffle_i64x2(P[0], P[1], 0xEE);
    __m512i Q2 = _mm512_shuffle_i64x2(P[2], P[3], 0x44),
            Q3 = _mm512_shuffle_i64x2(P[2], P[3], 0xEE);
    __m512i N[4] = {_mm512_shuffle_i64x2(Q0, Q2, 0x88), _mm512_shuffle_i64x2(Q0, Q2, 0xDD),
                    _mm512_shuffle_i64x2(Q1, Q3, 0x88), _mm512_shuffle_i64x2(Q1, Q3, 0xDD)};
    const __m512i lo = _mm512_set1_epi8(0x0f);
    for (int j = 0; j < 4; j++) {
        g->u[j] = _mm512_and_si512(N[j], lo);
        g->u[j + 4] = _mm512_and_si512(_mm512_srli_epi16(N[j], 4), lo);
    }
    if (k == WK_IQ4_NL) {
        const __m512i lut = _mm512_broadcast_i32x4(
            _mm_setr_epi8(1, 24, 45, 63, 79, 93, 106, 118, (char)129, (char)141, (char)153,
                          (char)166, (char)181, (char)197, (char)217, (char)241));
        for (int j = 0; j < 8; j++) g->u[j] = _mm512_shuffle_epi8(lut, g->u[j]);
    }
    g->d = grp_scales(A, 4, 4, 18);
}

/* Q8_0 bytes of nb blocks (1..16) at p, transposed into X[8]; returns scales.
 * Four units of 4 blocks (136 bytes at q = p + 136 v). Dwords 0..3 of a
 * unit's blocks lie in q[0, 128), dwords 4..7 in q[8, 136): one VPERMT2B
 * each puts dword 4h + l of block 4v + b at 128-bit lane l, dword b of
 * T[h][v]; a 4 x 4 transpose of 128-bit lanes (8 VSHUFI64X2 per half) then
 * gives X[4h + l], lane 4v + b. The scales (at q + 34 b, in the first
 * window) are merged unit by unit into one vector whose bytes not yet
 * written still hold the indices. */
INLINE_V __m512 grp_q8(__m512i *X, const uint8_t *p, int nb) {
    const int full = nb == GB;
    uint8_t idx[2][64], sidx[64] = {0};
    for (int h = 0; h < 2; h++)
        for (int o = 0; o < 64; o++) /* byte o = (lane l, block b, byte t) */
            idx[h][o] = (uint8_t)(34 * (o / 4 % 4) + 2 + 4 * (4 * h + o / 16) + o % 4 - 8 * h);
    for (int o = 0; o < 32; o++) sidx[o] = (uint8_t)(34 * (o / 2 % 4) + (o & 1));
    const __m512i v0 = _mm512_loadu_si512((const void *)idx[0]),
                  v1 = _mm512_loadu_si512((const void *)idx[1]);
    __m512i T[2][4], r = _mm512_loadu_si512((const void *)sidx);
    for (int v = 0; v < 4; v++) {
        const uint8_t *q = p + 136 * v;
        int avail = nb * 34 - 136 * v;
        __m512i L0 = load_n(q, avail, full), L1 = load_n(q + 64, avail - 64, full);
        __m512i M0 = load_n(q + 8, avail - 8, full), M1 = load_n(q + 72, avail - 72, full);
        T[0][v] = _mm512_permutex2var_epi8(L0, v0, L1);
        T[1][v] = _mm512_permutex2var_epi8(M0, v1, M1);
        r = _mm512_mask2_permutex2var_epi8(L0, r, (__mmask64)0xFF << (8 * v), L1);
    }
    for (int h = 0; h < 2; h++) {
        const __m512i *S = T[h];
        __m512i P0 = _mm512_shuffle_i64x2(S[0], S[1], 0x44),
                P1 = _mm512_shuffle_i64x2(S[0], S[1], 0xEE);
        __m512i P2 = _mm512_shuffle_i64x2(S[2], S[3], 0x44),
                P3 = _mm512_shuffle_i64x2(S[2], S[3], 0xEE);
        X[4 * h + 0] = _mm512_shuffle_i64x2(P0, P2, 0x88);
        X[4 * h + 1] = _mm512_shuffle_i64x2(P0, P2, 0xDD);
        X[4 * h + 2] = _mm512_shuffle_i64x2(P1, P3, 0x88);
        X[4 * h + 3] = _mm512_shuffle_i64x2(P1, P3, 0xDD);
    }
    return _mm512_cvtph_ps(_mm512_castsi512_si256(r));
}

INLINE_V void wgrp_load(struct wgrp *g, enum wkind k, const uint8_t *p, int nb) {
    if (k == WK_Q8_0) {
        g->d = grp_q8(g->u, p, nb);
        for (int j = 0; j < 8; j++)
            g->u[j] = _mm512_xor_si512(g->u[j], _mm512_set1_epi8((char)0x80));
    } else {
        wgrp_q4(g, k, p, nb);
    }
}

INLINE_V void xgrp_load(struct xgrp *g, enum wkind k, const uint8_t *p, int nb) {
    g->d = grp_q8(g->x, p, nb);
    const __m512i off = _mm512_set1_epi8((char)wk_off(k));
    __m512i s = _mm512_setzero_si512();
    for (int j = 0; j < 8; j++) s = _mm512_dpbusd_epi32(s, off, g->x[j]);
    g->corr = _mm512_sub_epi32(_mm512_setzero_si512(), s);
}

/* acc[r][c] += (block sums of row r . column c) * dw * dx, R x C unrolled. */
INLINE_V void grp_mk(int R, int C, const struct wgrp *w, const struct xgrp *x, __m512 *acc,
                     int acc_stride) {
    __m512i S[4][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) S[r][c] = x[c].corr;
    for (int j = 0; j < 8; j++) {
        __m512i xv[4];
        for (int c = 0; c < C; c++) xv[c] = x[c].x[j];
        for (int r = 0; r < R; r++) {
            __m512i u = w[r].u[j];
            for (int c = 0; c < C; c++) S[r][c] = _mm512_dpbusd_epi32(S[r][c], u, xv[c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            __m512 *a = &acc[r * acc_stride + c];
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S[r][c]), _mm512_mul_ps(w[r].d, x[c].d), *a);
        }
}

typedef void (*mk_fn)(const struct wgrp *, const struct xgrp *, __m512 *, int);
#define MK(R, C)                                                                                   \
    VBMI static void mk_##R##x##C(const struct wgrp *w, const struct xgrp *x, __m512 *a, int as) { \
        grp_mk(R, C, w, x, a, as);                                                                 \
    }
#define MK_ROW(R) MK(R, 1) MK(R, 2) MK(R, 3) MK(R, 4)
/* clang-format off */
MK_ROW(1) MK_ROW(2) MK_ROW(3) MK_ROW(4)
static const mk_fn mk_table[16] = {mk_1x1, mk_1x2, mk_1x3, mk_1x4, mk_2x1, mk_2x2, mk_2x3, mk_2x4,
                                   mk_3x1, mk_3x2, mk_3x3, mk_3x4, mk_4x1, mk_4x2, mk_4x3, mk_4x4};
/* clang-format on */

/* One group of an nr x nc tile. */
INLINE_V void grp_tile_step(enum wkind k, int64_t i, int nb, const uint8_t *w, size_t wst, int nr,
                            const uint8_t *x, size_t xst, int nc, struct wgrp *wg, struct xgrp *xg,
                            __m512 *acc) {
    const size_t ws = wk_size(k), xs = sizeof(block_q8_0);
    for (int c = 0; c < nc; c++) xgrp_load(&xg[c], k, x + c * xst + i * xs, nb);
    for (int r = 0; r < nr; r++) wgrp_load(&wg[r], k, w + r * wst + i * ws, nb);
    /* Callers walk rows in order (matmul.c): fetch this group of the next
     * tile's rows now, so each row's short stream does not start cold.
     * Prefetches never fault, so running past the matrix is harmless. */
    for (int r = 0; r < nr; r++) {
        const char *p = (const char *)w + (size_t)(nr + r) * wst + i * ws;
        for (size_t o = 0; o < (size_t)nb * ws; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
    }
    for (int r0 = 0; r0 < nr; r0 += 4) {
        int R = nr - r0 < 4 ? nr - r0 : 4;
        for (int c0 = 0; c0 < nc; c0 += 4) {
            int C = nc - c0 < 4 ? nc - c0 : 4;
            mk_table[(R - 1) * 4 + (C - 1)](wg + r0, xg + c0, acc + r0 * KILN_GEMM_MAX_C + c0,
                                            KILN_GEMM_MAX_C);
        }
    }
}

INLINE_V void grp_gemm(enum wkind k, int64_t n, const void *w, size_t wst, int nr, const void *x,
                       size_t xst, int nc, float *out, size_t ost) {
    struct wgrp wg[KILN_GEMM_MAX_R];
    struct xgrp xg[KILN_GEMM_MAX_C];
    __m512 acc[KILN_GEMM_MAX_R * KILN_GEMM_MAX_C];
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) acc[r * KILN_GEMM_MAX_C + c] = _mm512_setzero_ps();
    const int64_t nb = n / 32;
    int64_t i = 0;
    for (; i + GB <= nb; i += GB) grp_tile_step(k, i, GB, w, wst, nr, x, xst, nc, wg, xg, acc);
    if (i < nb) grp_tile_step(k, i, (int)(nb - i), w, wst, nr, x, xst, nc, wg, xg, acc);
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) out[c * ost + r] = hsum(acc[r * KILN_GEMM_MAX_C + c]);
}

VBMI static void q4_0_gemm_g(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs,
                             int nc, float *out, size_t os) {
    if (nc < GRP_MIN_NC(WK_Q4_0))
        q4_0_gemm(n, w, ws, nr, x, xs, nc, out, os);
    else
        grp_gemm(WK_Q4_0, n, w, ws, nr, x, xs, nc, out, os);
}
VBMI static void q8_0_gemm_g(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs,
                             int nc, float *out, size_t os) {
    if (nc < GRP_MIN_NC(WK_Q8_0))
        q8_0_gemm(n, w, ws, nr, x, xs, nc, out, os);
    else
        grp_gemm(WK_Q8_0, n, w, ws, nr, x, xs, nc, out, os);
}
VBMI static void iq4_nl_gemm_g(int64_t n, const void *w, size_t ws, int nr, const void *x,
                               size_t xs, int nc, float *out, size_t os) {
    if (nc < GRP_MIN_NC(WK_IQ4_NL))
        iq4_nl_gemm(n, w, ws, nr, x, xs, nc, out, os);
    else
        grp_gemm(WK_IQ4_NL, n, w, ws, nr, x, xs, nc, out, os);
}
/* ---- block-per-lane tiles over prepared activations (kernels.h, gemm_xp) ----
 *
 * The activations' share of grp_gemm (the Q8_0 transposition, the f16
 * scales, the offset correction) is done once per matmul by q8_0_xprep into
 * the layout kernels.h fixes, so a tile only transposes its weight rows and
 * loads the columns. The arithmetic is grp_gemm's, operation for operation
 * (the correction -off * sum(x) = (-sum) << log2(off) exactly in int32), so
 * a (row, column) result equals grp_gemm's bit for bit, whatever the tile. */

/* One prepared group: X[8], d, -sum. */
struct xpgrp {
    __m512i x[8];
    __m512 d;
    __m512i nsum;
};
_Static_assert(sizeof(struct xpgrp) == KILN_GEMM_XP_GROUP_BYTES, "prepared group layout");

VBMI static void q8_0_xprep(int64_t n, const void *xq, void *dst) {
    const uint8_t *p = xq;
    struct xpgrp *g = dst;
    const int64_t nb = n / 32;
    const __m512i one = _mm512_set1_epi8(1);
    for (int64_t i = 0; i < nb; i += GB, g++) {
        int cnt = nb - i < GB ? (int)(nb - i) : GB;
        __m512i X[8];
        g->d = grp_q8(X, p + i * sizeof(block_q8_0), cnt);
        __m512i s = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            _mm512_store_si512((void *)&g->x[j], X[j]);
            s = _mm512_dpbusd_epi32(s, one, X[j]);
        }
        g->nsum = _mm512_sub_epi32(_mm512_setzero_si512(), s);
    }
}

/* log2 of the weight offset, for the correction. */
INLINE int wk_off_shift(enum wkind k) {
    return k == WK_Q4_0 ? 3 : 7;
}

/* Register block of the prepared tiles: XR rows x XC columns (XR * XC
 * int32 sums + XC activation vectors + 1 weight vector <= 32 zmm). */
#define XR 4
#define XC 6

/* acc[r][c] += (block sums of row r . column c) * dw * dx over prepared
 * groups x[c] (xst bytes apart), R x C unrolled; sh = log2(off). */
INLINE_V void xp_mk(int R, int C, const struct wgrp *w, const uint8_t *x, size_t xst, __m128i sh,
                    __m512 *acc, int acc_stride) {
    const struct xpgrp *xg[XC];
    for (int c = 0; c < C; c++) xg[c] = (const struct xpgrp *)(const void *)(x + c * xst);
    __m512i S[XR][XC];
    for (int c = 0; c < C; c++) {
        __m512i corr = _mm512_sll_epi32(xg[c]->nsum, sh);
        for (int r = 0; r < R; r++) S[r][c] = corr;
    }
    for (int j = 0; j < 8; j++) {
        __m512i xv[XC];
        for (int c = 0; c < C; c++) xv[c] = xg[c]->x[j];
        for (int r = 0; r < R; r++) {
            __m512i u = w[r].u[j];
            for (int c = 0; c < C; c++) S[r][c] = _mm512_dpbusd_epi32(S[r][c], u, xv[c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            __m512 *a = &acc[r * acc_stride + c];
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S[r][c]), _mm512_mul_ps(w[r].d, xg[c]->d), *a);
        }
}

typedef void (*xmk_fn)(const struct wgrp *, const uint8_t *, size_t, __m128i, __m512 *, int);
#define XMK(R, C)                                                                                  \
    VBMI static void xmk_##R##x##C(const struct wgrp *w, const uint8_t *x, size_t xst, __m128i sh, \
                                   __m512 *a, int as) {                                            \
        xp_mk(R, C, w, x, xst, sh, a, as);                                                         \
    }
#define XMK_ROW(R)  XMK(R, 1) XMK(R, 2) XMK(R, 3) XMK(R, 4) XMK(R, 5) XMK(R, 6)
#define XMK_TROW(R) xmk_##R##x1, xmk_##R##x2, xmk_##R##x3, xmk_##R##x4, xmk_##R##x5, xmk_##R##x6
/* clang-format off */
XMK_ROW(1) XMK_ROW(2) XMK_ROW(3) XMK_ROW(4)
/* the R x C block at (R - 1) * XC + (C - 1) */
static const xmk_fn xmk_table[XR * XC] = {XMK_TROW(1), XMK_TROW(2), XMK_TROW(3), XMK_TROW(4)};
/* clang-format on */

INLINE_V void xp_gemm(enum wkind k, int64_t n, const void *w, size_t wst, int nr, const void *x,
                      size_t xst, int nc, float *out, size_t ost) {
    enum { AS = KILN_GEMM_XP_MAX_C };
    struct wgrp wg[KILN_GEMM_XP_MAX_R];
    __m512 acc[KILN_GEMM_XP_MAX_R * AS];
    const size_t ws = wk_size(k);
    const __m128i sh = _mm_cvtsi32_si128(wk_off_shift(k));
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) acc[r * AS + c] = _mm512_setzero_ps();
    const int64_t nb = n / 32;
    const uint8_t *wp = w, *xp = x;
    for (int64_t i = 0, g = 0; i < nb; i += GB, g++) {
        int cnt = nb - i < GB ? (int)(nb - i) : GB;
        for (int r = 0; r < nr; r++) wgrp_load(&wg[r], k, wp + r * wst + i * ws, cnt);
        /* this group of the next tile's rows: see grp_tile_step */
        for (int r = 0; r < nr; r++) {
            const char *p = (const char *)wp + (size_t)(nr + r) * wst + i * ws;
            for (size_t o = 0; o < (size_t)cnt * ws; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
        }
        const uint8_t *xg = xp + (size_t)g * KILN_GEMM_XP_GROUP_BYTES;
        for (int r0 = 0; r0 < nr; r0 += XR) {
            int R = nr - r0 < XR ? nr - r0 : XR;
            for (int c0 = 0; c0 < nc; c0 += XC) {
                int C = nc - c0 < XC ? nc - c0 : XC;
                xmk_table[(R - 1) * XC + (C - 1)](wg + r0, xg + (size_t)c0 * xst, xst, sh,
                                                  acc + r0 * AS + c0, AS);
            }
        }
    }
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) out[c * ost + r] = hsum(acc[r * AS + c]);
}

VBMI static void q4_0_gemm_xp(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs,
                              int nc, float *out, size_t os) {
    xp_gemm(WK_Q4_0, n, w, ws, nr, x, xs, nc, out, os);
}
VBMI static void q8_0_gemm_xp(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs,
                              int nc, float *out, size_t os) {
    xp_gemm(WK_Q8_0, n, w, ws, nr, x, xs, nc, out, os);
}
VBMI static void iq4_nl_gemm_xp(int64_t n, const void *w, size_t ws, int nr, const void *x,
                                size_t xs, int nc, float *out, size_t os) {
    xp_gemm(WK_IQ4_NL, n, w, ws, nr, x, xs, nc, out, os);
}

/* ---- block-per-lane tiles over prepared weights and activations (gemm_wp) ----
 *
 * gemm_wprep stores what wgrp_load makes of a group (U[8], then the 16 f16
 * scales as floats; kern_wp_avx512.h's layout) once per block of rows; the
 * tiles are kern_wp_avx512.h's WP_CORR ones. Each group does xp_mk's
 * operations on each (row, column), and the lanes are summed in hsum's
 * order, so every result equals gemm_xp's bit for bit, whatever the tile. */

/* Groups ahead that wp_prep prefetches into L1: the loads of a row's groups
 * were its hot spots (perf annotate) though matmul.c prefetches the block
 * into L2; Q8_0 matmul, 4096 x 4096 x 64, one thread: ~+3%. */
#define WP_PF 4
INLINE_V void wp_prep(enum wkind k, int64_t n, const void *w, size_t wst, int nr, void *dst) {
    const int64_t nb = n / 32, ng = (nb + GB - 1) / GB;
    const size_t ws = wk_size(k);
    for (int r = 0; r < nr; r++) {
        struct wp_wgrp *o = (struct wp_wgrp *)dst + r * ng;
        const uint8_t *p = (const uint8_t *)w + r * wst;
        for (int64_t i = 0; i < nb; i += GB, o++) {
            struct wgrp g;
            for (int l = 0; l < (int)(GB * ws); l += 64)
                __builtin_prefetch(p + (i + WP_PF * GB) * ws + l, 0, 3);
            wgrp_load(&g, k, p + i * ws, nb - i < GB ? (int)(nb - i) : GB);
            for (int j = 0; j < 8; j++) _mm512_store_si512((void *)&o->u[j], g.u[j]);
            _mm512_store_ps(&o->d, g.d);
            _mm512_store_ps(&o->m, _mm512_setzero_ps());
        }
    }
}

WP_TILES(leg, WP_CORR, VBMI)

#define WP_ENTRIES(T, K)                                                                           \
    VBMI static void T##_wprep(int64_t n, const void *w, size_t ws, int nr, void *dst) {           \
        wp_prep(K, n, w, ws, nr, dst);                                                             \
    }                                                                                              \
    VBMI static void T##_gemm_wp(int64_t n, const void *w, size_t ws, int nr, const void *x,       \
                                 size_t xs, int nc, float *out, size_t os) {                       \
        leg_wp_tile(n, w, ws, nr, x, xs, nc, out, os, _mm_cvtsi32_si128(wk_off_shift(K)));         \
    }
WP_ENTRIES(q4_0, WK_Q4_0)
WP_ENTRIES(q8_0, WK_Q8_0)
WP_ENTRIES(iq4_nl, WK_IQ4_NL)

/* ---- Q8_0 / Q8_1 activation quantizers (round half to even, like scalar) ---- */

/* Quantizes 32 floats to qs; returns d = amax/127 and the sum of qs. */
INLINE float quant_q8(const float *src, int8_t *qs, int *sum) {
    __m512 a = _mm512_loadu_ps(src), b = _mm512_loadu_ps(src + 16);
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, id));
    __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, id));
    _mm_storeu_si128((void *)qs, _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128((void *)(qs + 16), _mm512_cvtsepi32_epi8(qb));
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
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

void kern_legacy_register_avx512(struct kiln_kernels *k) {
    k->vec_dot[KILN_TYPE_Q4_0] = q4_0_vec_dot;
    k->vec_dot[KILN_TYPE_Q4_1] = q4_1_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_0] = q5_0_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_1] = q5_1_vec_dot;
    k->vec_dot[KILN_TYPE_Q8_0] = q8_0_vec_dot;
    /* one activation column: these come before gemm_matvec (matmul.c) */
    k->matvec[KILN_TYPE_Q4_0] = q4_0_matvec;
    k->matvec[KILN_TYPE_Q8_0] = q8_0_matvec;
    k->vec_dot[KILN_TYPE_IQ4_NL] = iq4_nl_vec_dot;
    k->gemm[KILN_TYPE_Q4_0] = q4_0_gemm;
    k->gemm[KILN_TYPE_Q5_0] = q5_0_gemm;
    k->gemm[KILN_TYPE_Q8_0] = q8_0_gemm;
    k->gemm[KILN_TYPE_IQ4_NL] = iq4_nl_gemm;
    /* One thread, 4096-element rows from memory, Zen 5: the 8x1
     * tile reads Q5_0 at 23.3 GB/s vs vec_dot 21.5, IQ4_NL 21.9 vs 19.1
     * (vec_dot is compute-bound at ~22 GB/s). Q4_0 and Q8_0 have matvec
     * entries, which matmul.c prefers. */
    k->gemm_matvec[KILN_TYPE_Q5_0] = 1;
    k->gemm_matvec[KILN_TYPE_IQ4_NL] = 1;
    if (__builtin_cpu_supports("avx512vbmi")) {
        k->gemm[KILN_TYPE_Q4_0] = q4_0_gemm_g;
        k->gemm[KILN_TYPE_Q8_0] = q8_0_gemm_g;
        k->gemm[KILN_TYPE_IQ4_NL] = iq4_nl_gemm_g;
        k->gemm_xprep[KILN_TYPE_Q8_0] = q8_0_xprep;
        k->gemm_xp[KILN_TYPE_Q4_0] = q4_0_gemm_xp;
        k->gemm_xp[KILN_TYPE_Q8_0] = q8_0_gemm_xp;
        /* One thread, tiles in L2, Zen 5: Q8_0's gemm_xp (its weight
         * transposition is the costliest) runs 8 x 8 tiles at 253 GOPS vs
         * gemm's 261, 8 x 12 at 317 and 8 x 24 at 400; Q4_0's beats gemm
         * from 2 columns on (224 vs 158). With prepared weights (gemm_wp,
         * one transposition per row for all columns: ~575 GOPS vs gemm's
         * ~256, thread CPU time, loaded machine) preparing a Q8_0 row costs
         * what ~6.7 columns of gemm tiles lose; a 2048 x 2048 matmul gave
         * 195 (gemm) vs 184 GOPS at 7 columns, 208 vs 271 at 9: hence 8. */
        k->gemm_xp_min_cols[KILN_TYPE_Q8_0] = 8;
        k->gemm_xp[KILN_TYPE_IQ4_NL] = iq4_nl_gemm_xp;
        k->gemm_wprep[KILN_TYPE_Q4_0] = q4_0_wprep;
        k->gemm_wp[KILN_TYPE_Q4_0] = q4_0_gemm_wp;
        k->gemm_wprep[KILN_TYPE_Q8_0] = q8_0_wprep;
        k->gemm_wp[KILN_TYPE_Q8_0] = q8_0_gemm_wp;
        k->gemm_wprep[KILN_TYPE_IQ4_NL] = iq4_nl_wprep;
        k->gemm_wp[KILN_TYPE_IQ4_NL] = iq4_nl_gemm_wp;
    }
    k->from_float[KILN_TYPE_Q8_0] = q8_0_from_float;
    k->from_float[KILN_TYPE_Q8_1] = q8_1_from_float;
}

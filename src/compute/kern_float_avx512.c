/* kern_float_avx512.c - AVX-512 kernels for F32, F16 and BF16: conversions,
 * dot products, gemm tiles for F32, F16 and BF16, and F16's prepared
 * activations (floats; gemm_xprep / gemm_xp, kernels.h) with the F16 tiles
 * that read them, and F16's multi-row matvec. F32/F16 tiles are FP32 FMA micro-kernels (this ISA
 * level has no F16 arithmetic); BF16 products use AVX512-BF16 (VDPBF16PS, exact products, f32
 * accumulation). Conversions give the same bits as the scalar reference: F16 via VCVTPS2PH (round
 * to nearest even), BF16 by integer round-to-nearest-even (VCVTNEPS2BF16 would flush subnormals).
 * Any n is accepted; tails use masked loads and stores. */
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

/* F16 matvec: MV16_R rows at a time share each activation load and its
 * conversion, and their 2 * MV16_R accumulator chains hide the FMA latency
 * (vec_dot's two chains cap one thread near 16 bytes of weights a cycle).
 * Each row keeps vec_dot's operations in vec_dot's order (even 16-element
 * chunks into one sum, odd into the other), so y[r] equals vec_dot's bit for
 * bit. The same columns kiln_matvec_pf(MV16_R rows) further on are
 * prefetched. */
#define MV16_R 4
static inline __attribute__((always_inline)) void f16_mv_rows(int R, int64_t n, const uint16_t *w,
                                                              size_t ws, const uint16_t *x,
                                                              float *y, size_t pf) {
    __m512 s[MV16_R][2];
    for (int r = 0; r < R; r++) s[r][0] = s[r][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 x0 = load_f16(0xffff, x + i), x1 = load_f16(0xffff, x + i + 16);
        for (int r = 0; r < R; r++) {
            const uint16_t *a = (const uint16_t *)((const char *)w + r * ws) + i;
            _mm_prefetch((const char *)a + pf, _MM_HINT_T0);
            s[r][0] = _mm512_fmadd_ps(load_f16(0xffff, a), x0, s[r][0]);
            s[r][1] = _mm512_fmadd_ps(load_f16(0xffff, a + 16), x1, s[r][1]);
        }
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : tail16(n - i);
        __m512 x0 = load_f16(m, x + i);
        for (int r = 0; r < R; r++) {
            const uint16_t *a = (const uint16_t *)((const char *)w + r * ws) + i;
            s[r][0] = _mm512_fmadd_ps(load_f16(m, a), x0, s[r][0]);
        }
    }
    for (int r = 0; r < R; r++) y[r] = _mm512_reduce_add_ps(_mm512_add_ps(s[r][0], s[r][1]));
}

static void f16_matvec(int64_t n, const void *w, size_t ws, int64_t nr, const void *x, float *y) {
    const char *wp = w;
    const size_t pf = kiln_matvec_pf(MV16_R * ws);
    int64_t r = 0;
    for (; r + MV16_R <= nr; r += MV16_R)
        f16_mv_rows(MV16_R, n, (const uint16_t *)(wp + (size_t)r * ws), ws, x, y + r, pf);
    for (; r < nr; r++)
        f16_mv_rows(1, n, (const uint16_t *)(wp + (size_t)r * ws), ws, x, y + r, pf);
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

/* ---- gemm tiles (F32, F16, BF16) ----
 *
 * A tile is computed in sub-tiles; in each, every vector of 16 (F32, F16 as
 * floats) or 32 (BF16) elements of a row and of a column is loaded once and
 * used for several multiply-adds, where vec_dot uses it for one. Each
 * (row, column) pair has one accumulator that takes the vectors in order,
 * the tail last (zero-filled), and is reduced to a float in a fixed order,
 * so a pair's result does not depend on the tile's shape or width (batch
 * invariance, tests/test_kern_legacy.c, tests/test_kern_float.c); it
 * differs from vec_dot's (two accumulators) only by float rounding.
 * Matrix-vector products keep vec_dot (one stream per thread reads memory
 * faster; gemm_matvec is 0). */

#define SUB    4
#define INLINE static inline __attribute__((always_inline))

/* Row i of a matrix of 16-bit elements with a stride of `stride` bytes. */
INLINE const uint16_t *row16(const uint16_t *p, int i, size_t stride) {
    return (const uint16_t *)((const char *)p + (size_t)i * stride);
}

/* F32 and F16 tiles: sub-tiles of up to FR rows x FC columns, 24
 * accumulators of 16 floats each held in registers over the whole row
 * (vectorised along K), F16 converted to F32 as loaded (VCVTPH2PS; exact).
 * Element kinds: */
#define FR 4
#define FC 6
enum {
    K_F32, /* float rows, any alignment */
    K_F16, /* F16 rows */
    K_XP   /* prepared F16 activations: float rows, 64-byte aligned, zero-padded
            * to a multiple of 16 (kiln_gemm_xp_row_size) */
};

INLINE __m512 fload(int kind, const void *p, size_t stride, int i, int64_t e, __mmask16 m,
                    int full) {
    const char *row = (const char *)p + (size_t)i * stride;
    if (kind == K_F16)
        return _mm512_cvtph_ps(
            full ? _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + e))
                 : _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + e));
    if (kind == K_XP) return _mm512_load_ps((const float *)row + e);
    return full ? _mm512_loadu_ps((const float *)row + e)
                : _mm512_maskz_loadu_ps(m, (const float *)row + e);
}

/* Sums of the 16 lanes of a0..a3 in lanes 0..3, each in the same fixed
 * order (halves of 256, then 128 bits, then pairs), whatever its partners. */
INLINE __m128 hsum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    __m512 t01 =
        _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xee));
    __m512 t23 =
        _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xee));
    /* 128-bit lane j of u: accumulator j, its lanes i and i + 4 (of t) added */
    __m512 u =
        _mm512_add_ps(_mm512_shuffle_f32x4(t01, t23, 0x88), _mm512_shuffle_f32x4(t01, t23, 0xdd));
    u = _mm512_add_ps(u, _mm512_permute_ps(u, 0x4e));
    u = _mm512_add_ps(u, _mm512_permute_ps(u, 0xb1));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), u));
}

INLINE void fstep(int R, int C, int wk, int xk, const void *w, size_t ws, const void *x, size_t xs,
                  int64_t e, __mmask16 m, int full, __m512 acc[FR][FC]) {
    __m512 wv[FR];
    for (int r = 0; r < R; r++) wv[r] = fload(wk, w, ws, r, e, m, full);
    for (int c = 0; c < C; c++) {
        __m512 xv = fload(xk, x, xs, c, e, m, full);
        for (int r = 0; r < R; r++) acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
    }
}

INLINE void fsub(int R, int C, int wk, int xk, int64_t n, const void *w, size_t ws, const void *x,
                 size_t xs, float *out, size_t os) {
    __m512 acc[FR][FC];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    /* One loop (n >= 1), the tail's mask computed in it: with a separate
     * tail step, or a loop that may not run, GCC keeps the accumulators in
     * memory. */
    int64_t e = 0;
    do {
        fstep(R, C, wk, xk, w, ws, x, xs, e, n - e >= 16 ? 0xffff : tail16(n - e), 0, acc);
        e += 16;
    } while (e < n);
    __m512 z = _mm512_setzero_ps();
    for (int c = 0; c < C; c++) {
        __m128 s =
            hsum4(acc[0][c], R > 1 ? acc[1][c] : z, R > 2 ? acc[2][c] : z, R > 3 ? acc[3][c] : z);
        _mm_mask_storeu_ps(out + (size_t)c * os, (__mmask8)((1u << R) - 1), s);
    }
}

typedef void (*fsub_fn)(int64_t, const void *, size_t, const void *, size_t, float *, size_t);
#define FSUB(T, WK, XK, R, C)                                                                      \
    static void T##_##R##x##C(int64_t n, const void *w, size_t ws, const void *x, size_t xs,       \
                              float *o, size_t os) {                                               \
        fsub(R, C, WK, XK, n, w, ws, x, xs, o, os);                                                \
    }
#define FSUB_ROW(T, WK, XK, R)                                                                     \
    FSUB(T, WK, XK, R, 1)                                                                          \
    FSUB(T, WK, XK, R, 2)                                                                          \
    FSUB(T, WK, XK, R, 3)                                                                          \
    FSUB(T, WK, XK, R, 4) FSUB(T, WK, XK, R, 5) FSUB(T, WK, XK, R, 6)
#define FSUBS(T, WK, XK)                                                                           \
    FSUB_ROW(T, WK, XK, 1) FSUB_ROW(T, WK, XK, 2) FSUB_ROW(T, WK, XK, 3) FSUB_ROW(T, WK, XK, 4)
#define FSUB_TROW(T, R) T##_##R##x1, T##_##R##x2, T##_##R##x3, T##_##R##x4, T##_##R##x5, T##_##R##x6
#define FSUB_TABLE(T)                                                                              \
    { FSUB_TROW(T, 1), FSUB_TROW(T, 2), FSUB_TROW(T, 3), FSUB_TROW(T, 4) }

FSUBS(f32t, K_F32, K_F32)
FSUBS(f16t, K_F16, K_F16)
FSUBS(f16xp, K_F16, K_XP)
static const fsub_fn f32_subs[FR * FC] = FSUB_TABLE(f32t);
static const fsub_fn f16_subs[FR * FC] = FSUB_TABLE(f16t);
static const fsub_fn f16xp_subs[FR * FC] = FSUB_TABLE(f16xp);

/* Splits an nr x nc tile into balanced sub-tiles of at most FR x FC,
 * columns outer (a column group's activations are reused from L1 by each
 * row group). */
static void fgemm_split(const fsub_fn *t, int64_t n, const char *w, size_t ws, int nr,
                        const char *x, size_t xs, int nc, float *out, size_t os) {
    if (n <= 0) {
        for (int c = 0; c < nc; c++)
            for (int r = 0; r < nr; r++) out[(size_t)c * os + r] = 0.0f;
        return;
    }
    int ncg = (nc + FC - 1) / FC, nrg = (nr + FR - 1) / FR;
    for (int j = 0; j < ncg; j++) {
        int c0 = nc * j / ncg, c1 = nc * (j + 1) / ncg;
        for (int i = 0; i < nrg; i++) {
            int r0 = nr * i / nrg, r1 = nr * (i + 1) / nrg;
            t[(r1 - r0 - 1) * FC + (c1 - c0 - 1)](n, w + (size_t)r0 * ws, ws, x + (size_t)c0 * xs,
                                                  xs, out + (size_t)c0 * os + r0, os);
        }
    }
}

static void f32_gemm(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc,
                     float *out, size_t os) {
    fgemm_split(f32_subs, n, w, ws, nr, x, xs, nc, out, os);
}

static void f16_gemm(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc,
                     float *out, size_t os) {
    fgemm_split(f16_subs, n, w, ws, nr, x, xs, nc, out, os);
}

/* Prepared F16 activations: the row as floats, zero-padded to a multiple
 * of 16 (kernels.h). */
static void f16_xprep(int64_t n, const void *xq, void *dst) {
    const uint16_t *h = xq;
    float *f = dst;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : tail16(n - i);
        _mm512_store_ps(f + i, load_f16(m, h + i));
    }
}

/* Same results as f16_gemm, bit for bit (the conversion is exact). */
static void f16_gemm_xp(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs,
                        int nc, float *out, size_t os) {
    fgemm_split(f16xp_subs, n, w, ws, nr, x, xs, nc, out, os);
}

/* One chunk of an R x C bf16 sub-tile: the elements at i picked by mask m. */
INLINE void bf16_step(int R, int C, int64_t i, __mmask32 m, const uint16_t *w, size_t ws,
                      const uint16_t *x, size_t xs, __m512 acc[SUB][SUB]) {
    __m512bh xv[SUB];
    for (int c = 0; c < C; c++) xv[c] = (__m512bh)_mm512_maskz_loadu_epi16(m, row16(x, c, xs) + i);
    for (int r = 0; r < R; r++) {
        __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, row16(w, r, ws) + i);
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv, xv[c]);
    }
}

INLINE void bf16_sub(int R, int C, int64_t n, const uint16_t *w, size_t ws, const uint16_t *x,
                     size_t xs, float *out, size_t os) {
    __m512 acc[SUB][SUB];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) bf16_step(R, C, i, 0xffffffffu, w, ws, x, xs, acc);
    if (i < n) bf16_step(R, C, i, (__mmask32)((1ull << (n - i)) - 1), w, ws, x, xs, acc);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) out[c * os + r] = _mm512_reduce_add_ps(acc[r][c]);
}

typedef void (*sub_fn)(int64_t, const uint16_t *, size_t, const uint16_t *, size_t, float *,
                       size_t);

#define SUBT(T, R, C)                                                                              \
    static void T##_##R##x##C(int64_t n, const uint16_t *w, size_t ws, const uint16_t *x,          \
                              size_t xs, float *o, size_t os) {                                    \
        T##_sub(R, C, n, w, ws, x, xs, o, os);                                                     \
    }
#define SUBT_ROW(T, R) SUBT(T, R, 1) SUBT(T, R, 2) SUBT(T, R, 3) SUBT(T, R, 4)
#define SUBTS(T)       SUBT_ROW(T, 1) SUBT_ROW(T, 2) SUBT_ROW(T, 3) SUBT_ROW(T, 4)
#define SUB_ROW(T, R)  T##_##R##x1, T##_##R##x2, T##_##R##x3, T##_##R##x4
#define SUB_TABLE(T)                                                                               \
    { SUB_ROW(T, 1), SUB_ROW(T, 2), SUB_ROW(T, 3), SUB_ROW(T, 4) }

SUBTS(bf16)
static const sub_fn bf16_subs[SUB * SUB] = SUB_TABLE(bf16);

/* Splits an nr x nc tile into sub-tiles. */
static void gemm_split(const sub_fn *t, int64_t n, const void *w, size_t ws, int nr, const void *x,
                       size_t xs, int nc, float *out, size_t os) {
    for (int r0 = 0; r0 < nr; r0 += SUB) {
        int R = nr - r0 < SUB ? nr - r0 : SUB;
        for (int c0 = 0; c0 < nc; c0 += SUB) {
            int C = nc - c0 < SUB ? nc - c0 : SUB;
            t[(R - 1) * SUB + (C - 1)](n, row16(w, r0, ws), ws, row16(x, c0, xs), xs,
                                       out + c0 * os + r0, os);
        }
    }
}

static void bf16_gemm(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc,
                      float *out, size_t os) {
    gemm_split(bf16_subs, n, w, ws, nr, x, xs, nc, out, os);
}

void kern_float_register_avx512(struct kiln_kernels *k) {
    k->vec_dot[KILN_TYPE_F32] = f32_vec_dot;
    k->vec_dot[KILN_TYPE_F16] = f16_vec_dot;
    k->matvec[KILN_TYPE_F16] = f16_matvec;
    k->gemm[KILN_TYPE_F32] = f32_gemm;
    k->gemm[KILN_TYPE_F16] = f16_gemm;
    k->gemm_xprep[KILN_TYPE_F16] = f16_xprep;
    k->gemm_xp[KILN_TYPE_F16] = f16_gemm_xp;
    k->gemm[KILN_TYPE_BF16] = bf16_gemm;
    k->to_float[KILN_TYPE_F16] = f16_to_float;
    k->from_float[KILN_TYPE_F16] = f16_from_float;
    k->vec_dot[KILN_TYPE_BF16] = bf16_vec_dot;
    k->to_float[KILN_TYPE_BF16] = bf16_to_float;
    k->from_float[KILN_TYPE_BF16] = bf16_from_float;
}

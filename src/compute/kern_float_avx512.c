/* kern_float_avx512.c - AVX-512 kernels for F32, F16 and BF16: conversions,
 * dot products, and gemm tiles for F16 and BF16. BF16 products use
 * AVX512-BF16 (VDPBF16PS, exact products, f32 accumulation). Conversions
 * give the same bits as the scalar reference: F16 via VCVTPS2PH (round to
 * nearest even), BF16 by integer round-to-nearest-even (VCVTNEPS2BF16
 * would flush subnormals). Any n is accepted; tails use masked loads and
 * stores. */
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

/* ---- gemm tiles (F16, BF16) ----
 *
 * A tile is computed in sub-tiles of at most SUB x SUB; in each, every
 * vector of 16 (F16, as floats) or 32 (BF16) elements of a row and of a
 * column is loaded once and used for up to SUB multiply-adds, where vec_dot
 * uses it for one. Each (row, column) pair has one accumulator that takes
 * the vectors in order, the tail last (zero-filled), so a pair's result
 * does not depend on the tile's shape or width (batch invariance,
 * tests/test_kern_legacy.c); it differs from vec_dot's (two accumulators)
 * only by float rounding. Matrix-vector products keep vec_dot (one stream
 * per thread reads memory faster; gemm_matvec is 0). */

#define SUB    4
#define INLINE static inline __attribute__((always_inline))

/* Row i of a matrix of 16-bit elements with a stride of `stride` bytes. */
INLINE const uint16_t *row16(const uint16_t *p, int i, size_t stride) {
    return (const uint16_t *)((const char *)p + (size_t)i * stride);
}

/* F16 tiles are converted to F32 in chunks of F16_KB elements (rows and
 * columns: 2 x 8 x F16_KB floats, in L1) so that each element is converted
 * once per tile rather than once per sub-tile; the sub-tiles then run on
 * floats, their accumulators kept in memory between chunks. */
#define F16_KB 256

INLINE void f16_sub(int R, int C, int64_t kl, const float *wf, const float *xf, __m512 *acc) {
    __m512 a[SUB][SUB];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) a[r][c] = acc[r * KILN_GEMM_MAX_C + c];
    for (int64_t i = 0; i < kl; i += 16) {
        __m512 xv[SUB];
        for (int c = 0; c < C; c++) xv[c] = _mm512_load_ps(xf + c * F16_KB + i);
        for (int r = 0; r < R; r++) {
            __m512 wv = _mm512_load_ps(wf + r * F16_KB + i);
            for (int c = 0; c < C; c++) a[r][c] = _mm512_fmadd_ps(wv, xv[c], a[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r * KILN_GEMM_MAX_C + c] = a[r][c];
}

/* kl elements (a multiple of 16) of chunk rows wf, xf into acc. */
typedef void (*f16_sub_fn)(int64_t, const float *, const float *, __m512 *);
#define F16_SUB(R, C)                                                                              \
    static void f16_##R##x##C(int64_t kl, const float *wf, const float *xf, __m512 *acc) {         \
        f16_sub(R, C, kl, wf, xf, acc);                                                            \
    }
#define F16_SUB_ROW(R) F16_SUB(R, 1) F16_SUB(R, 2) F16_SUB(R, 3) F16_SUB(R, 4)
F16_SUB_ROW(1)
F16_SUB_ROW(2)
F16_SUB_ROW(3)
F16_SUB_ROW(4)
static const f16_sub_fn f16_subs[SUB * SUB] = {f16_1x1, f16_1x2, f16_1x3, f16_1x4, f16_2x1, f16_2x2,
                                               f16_2x3, f16_2x4, f16_3x1, f16_3x2, f16_3x3, f16_3x4,
                                               f16_4x1, f16_4x2, f16_4x3, f16_4x4};

/* Elements [k0, k0 + kl) of `rows` rows as floats at buf (row stride
 * F16_KB), zero-filled to a multiple of 16. */
static void f16_chunk(const void *p, size_t stride, int rows, int64_t k0, int64_t kl, float *buf) {
    for (int r = 0; r < rows; r++) {
        const uint16_t *src = row16(p, r, stride) + k0;
        for (int64_t i = 0; i < kl; i += 16) {
            __mmask16 m = kl - i >= 16 ? 0xffff : tail16(kl - i);
            _mm512_store_ps(buf + r * F16_KB + i, load_f16(m, src + i));
        }
    }
}

static void f16_gemm(int64_t n, const void *w, size_t ws, int nr, const void *x, size_t xs, int nc,
                     float *out, size_t os) {
    _Alignas(64) float wf[KILN_GEMM_MAX_R * F16_KB], xf[KILN_GEMM_MAX_C * F16_KB];
    __m512 acc[KILN_GEMM_MAX_R * KILN_GEMM_MAX_C];
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) acc[r * KILN_GEMM_MAX_C + c] = _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < n; k0 += F16_KB) {
        int64_t kl = n - k0 < F16_KB ? n - k0 : F16_KB;
        f16_chunk(w, ws, nr, k0, kl, wf);
        f16_chunk(x, xs, nc, k0, kl, xf);
        int64_t kl16 = (kl + 15) / 16 * 16;
        for (int r0 = 0; r0 < nr; r0 += SUB) {
            int R = nr - r0 < SUB ? nr - r0 : SUB;
            for (int c0 = 0; c0 < nc; c0 += SUB) {
                int C = nc - c0 < SUB ? nc - c0 : SUB;
                f16_subs[(R - 1) * SUB + (C - 1)](kl16, wf + r0 * F16_KB, xf + c0 * F16_KB,
                                                  acc + r0 * KILN_GEMM_MAX_C + c0);
            }
        }
    }
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++)
            out[c * os + r] = _mm512_reduce_add_ps(acc[r * KILN_GEMM_MAX_C + c]);
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
    k->gemm[KILN_TYPE_F16] = f16_gemm;
    k->gemm[KILN_TYPE_BF16] = bf16_gemm;
    k->to_float[KILN_TYPE_F16] = f16_to_float;
    k->from_float[KILN_TYPE_F16] = f16_from_float;
    k->vec_dot[KILN_TYPE_BF16] = bf16_vec_dot;
    k->to_float[KILN_TYPE_BF16] = bf16_to_float;
    k->from_float[KILN_TYPE_BF16] = bf16_from_float;
}

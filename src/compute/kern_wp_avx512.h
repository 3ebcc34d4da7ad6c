/* kern_wp_avx512.h - the AVX-512 VNNI tiles over prepared weights and
 * prepared activations (kernels.h gemm_wprep / gemm_wp), shared by the
 * legacy (kern_legacy_avx512.c) and K-quant (kern_kquant_avx512.c)
 * families; include only from files compiled for AVX-512 VNNI.
 *
 * Both operands are in block-per-lane form: a group of 512 elements has 16
 * sub-blocks of 32 (Q4_0 / Q8_0 / IQ4_NL blocks, or K-quant sub-blocks), and
 * int32 lane j of vector k holds elements 4k..4k+3 of sub-block j. A
 * prepared weight group (struct wp_wgrp, 640 bytes) holds U[8] (unsigned
 * weight bytes u), the float scale of each sub-block and, for the K-quants,
 * minus its float min (dmin * m); a prepared activation group (kernels.h)
 * holds X[8] (signed), the float scale of each sub-block and a third vector
 * whose meaning depends on the mode:
 *   WP_CORR: int32 minus the sum of the sub-block's x; the weights carry an
 *            offset u = q + 2^sh, removed by starting each lane's sum at
 *            (-sum) << sh (exact in int32);
 *   WP_MINS: float d * sum(x); the weights' min term w.m * that is added
 *            with one more FMA.
 * Per group, for each (row, column): S = start + eight VPDPBUSD, then
 * acc += float(S) * (w.d * x.d) [+ w.m * x.m]. A tile walks its columns
 * WP_C at a time against all its rows (<= WP_R), the R x C accumulators in
 * registers over the whole row; at the end each accumulator's 16 lanes are
 * summed in the order _mm512_reduce_add_ps uses (lane i + lane i+8, then
 * i+4, i+2, i+1; wp_reduce16 does 16 accumulators at once), so a (row,
 * column) result never depends on the tile it was computed in. */
#ifndef KILN_COMPUTE_KERN_WP_AVX512_H
#define KILN_COMPUTE_KERN_WP_AVX512_H

#include "compute/kernels.h"

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

struct wp_wgrp {
    __m512i u[8];
    __m512 d;
    __m512 m; /* WP_MINS: -dmin * m per sub-block; WP_CORR: unused (0) */
};
struct wp_xgrp {
    __m512i x[8];
    __m512 d;
    __m512i third; /* WP_CORR: int32 -sum(x); WP_MINS: float d * sum(x) */
};
_Static_assert(sizeof(struct wp_wgrp) == KILN_GEMM_WP_GROUP_BYTES, "prepared weight group");
_Static_assert(sizeof(struct wp_xgrp) == KILN_GEMM_XP_GROUP_BYTES, "prepared activation group");

enum wp_mode { WP_CORR, WP_MINS };

/* Register block: R * C float accumulators, R * C int32 sums, C activation
 * vectors and a weight vector (31 zmm). */
#define WP_R KILN_GEMM_WP_MAX_R
#define WP_C 3

#define WP_INLINE static inline __attribute__((always_inline))
/* Loops over the register block must be unrolled for its arrays to stay in
 * registers (-O2 would not do it on its own). */
#define WP_UNROLL _Pragma("GCC unroll 16")

/* Sums of the 16 lanes of a[0..cnt) (cnt <= 16) into res[4 * (i % 4) + i / 4]
 * for a[i], pairing lanes in _mm512_reduce_add_ps's order. */
WP_INLINE void wp_reduce16(const __m512 *a, int cnt, float *res) {
    __m512 t[8], u[4], v[2];
    const __m512 z = _mm512_setzero_ps();
    WP_UNROLL
    for (int i = 0; i < 8; i++) {
        __m512 p = 2 * i < cnt ? a[2 * i] : z, q = 2 * i + 1 < cnt ? a[2 * i + 1] : z;
        t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(p, q, 0x44), _mm512_shuffle_f32x4(p, q, 0xEE));
    }
    WP_UNROLL
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xDD));
    WP_UNROLL
    for (int i = 0; i < 2; i++)
        v[i] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    _mm512_storeu_ps(res, _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                        _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1))));
}

/* R rows x C columns over ng groups: w prepared rows (wst bytes apart), x
 * prepared columns (xst apart); out[c * ost + r]. sh: log2 of the weight
 * offset (WP_CORR). */
WP_INLINE void wp_mk(enum wp_mode mode, int R, int C, int64_t ng, const uint8_t *w, size_t wst,
                     const uint8_t *x, size_t xst, __m128i sh, float *out, size_t ost) {
    __m512 acc[WP_R * WP_C];
    WP_UNROLL
    for (int i = 0; i < R * C; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        const struct wp_wgrp *wg[WP_R];
        const struct wp_xgrp *xg[WP_C];
        WP_UNROLL
        for (int r = 0; r < R; r++) wg[r] = (const struct wp_wgrp *)(const void *)(w + r * wst) + g;
        WP_UNROLL
        for (int c = 0; c < C; c++) xg[c] = (const struct wp_xgrp *)(const void *)(x + c * xst) + g;
        __m512i S[WP_R * WP_C];
        WP_UNROLL
        for (int c = 0; c < C; c++) {
            __m512i s0 =
                mode == WP_CORR ? _mm512_sll_epi32(xg[c]->third, sh) : _mm512_setzero_si512();
            WP_UNROLL
            for (int r = 0; r < R; r++) S[r * C + c] = s0;
        }
        WP_UNROLL
        for (int j = 0; j < 8; j++) {
            __m512i xv[WP_C];
            WP_UNROLL
            for (int c = 0; c < C; c++) xv[c] = _mm512_load_si512((const void *)&xg[c]->x[j]);
            WP_UNROLL
            for (int r = 0; r < R; r++) {
                __m512i u = _mm512_load_si512((const void *)&wg[r]->u[j]);
                WP_UNROLL
                for (int c = 0; c < C; c++)
                    S[r * C + c] = _mm512_dpbusd_epi32(S[r * C + c], u, xv[c]);
            }
        }
        WP_UNROLL
        for (int r = 0; r < R; r++) WP_UNROLL
        for (int c = 0; c < C; c++) {
            __m512 *a = &acc[r * C + c];
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S[r * C + c]),
                                 _mm512_mul_ps(wg[r]->d, xg[c]->d), *a);
            if (mode == WP_MINS)
                *a = _mm512_fmadd_ps(wg[r]->m, _mm512_castsi512_ps(xg[c]->third), *a);
        }
    }
    float res[16];
    wp_reduce16(acc, R * C, res);
    WP_UNROLL
    for (int i = 0; i < R * C; i++) out[(i % C) * ost + i / C] = res[4 * (i % 4) + i / 4];
}

typedef void (*wp_mk_fn)(int64_t, const uint8_t *, size_t, const uint8_t *, size_t, __m128i,
                         float *, size_t);

/* Defines PFX##_wp_tile(n, w, wst, nr, x, xst, nc, out, ost, sh): the gemm_wp
 * tile of `mode` (ATTR: extra function attributes). */
#define WP_MK1(PFX, MODE, ATTR, R, C)                                                              \
    ATTR static void PFX##_wpmk_##R##x##C(int64_t ng, const uint8_t *w, size_t wst,                \
                                          const uint8_t *x, size_t xst, __m128i sh, float *out,    \
                                          size_t ost) {                                            \
        wp_mk(MODE, R, C, ng, w, wst, x, xst, sh, out, ost);                                       \
    }
#define WP_MKROW(PFX, MODE, ATTR, R)                                                               \
    WP_MK1(PFX, MODE, ATTR, R, 1) WP_MK1(PFX, MODE, ATTR, R, 2) WP_MK1(PFX, MODE, ATTR, R, 3)
#define WP_TROW(PFX, R) PFX##_wpmk_##R##x1, PFX##_wpmk_##R##x2, PFX##_wpmk_##R##x3
#define WP_TILES(PFX, MODE, ATTR)                                                                  \
    WP_MKROW(PFX, MODE, ATTR, 1)                                                                   \
    WP_MKROW(PFX, MODE, ATTR, 2)                                                                   \
    WP_MKROW(PFX, MODE, ATTR, 3)                                                                   \
    WP_MKROW(PFX, MODE, ATTR, 4)                                                                   \
    static const wp_mk_fn PFX##_wpmk[WP_R * WP_C] = {WP_TROW(PFX, 1), WP_TROW(PFX, 2),             \
                                                     WP_TROW(PFX, 3), WP_TROW(PFX, 4)};            \
    WP_INLINE void PFX##_wp_tile(int64_t n, const void *w, size_t wst, int nr, const void *x,      \
                                 size_t xst, int nc, float *out, size_t ost, __m128i sh) {         \
        const int64_t ng = (n + KILN_GEMM_XP_GROUP - 1) / KILN_GEMM_XP_GROUP;                      \
        const wp_mk_fn *row = PFX##_wpmk + (nr - 1) * WP_C;                                        \
        int c = 0;                                                                                 \
        for (; c + WP_C <= nc; c += WP_C)                                                          \
            row[WP_C - 1](ng, w, wst, (const uint8_t *)x + (size_t)c * xst, xst, sh,               \
                          out + c * ost, ost);                                                     \
        if (c < nc)                                                                                \
            row[nc - c - 1](ng, w, wst, (const uint8_t *)x + (size_t)c * xst, xst, sh,             \
                            out + c * ost, ost);                                                   \
    }

#endif

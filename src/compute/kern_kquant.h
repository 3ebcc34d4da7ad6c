/* kern_kquant.h - helpers shared by the K-quant kernel variants
 * (kern_kquant.c, kern_kquant_avx2.c, kern_kquant_avx512.c): unpacking of the
 * packed sub-block scales, and the scalar Q8_K activation quantizer that every
 * variant must reproduce byte for byte.
 *
 * Scale packing facts (blocks.h layouts, little-endian):
 *  - Q4_K/Q5_K: 12 bytes hold 8 six-bit scales and 8 six-bit mins. Bytes 0-3
 *    carry scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; scales and mins
 *    4-7 keep their low 4 bits in bytes 8-11 (scale low nibble, min high
 *    nibble) and their top 2 bits in the top 2 bits of bytes 0-3 (scales) and
 *    4-7 (mins).
 *  - Q3_K: 12 bytes hold 16 six-bit scales biased by 32. Scale j has its low 4
 *    bits in byte j (j < 8, low nibble) or byte j-8 (high nibble), and its top
 *    2 bits at bit 2*(j/4) of byte 8 + j%4. */
#ifndef KILN_COMPUTE_KERN_KQUANT_H
#define KILN_COMPUTE_KERN_KQUANT_H

#include "compute/blocks.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* sc[0..8) = scales, mn[0..8) = mins of a Q4_K/Q5_K block. */
static inline void kq_unpack_k4(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t a0, a1, a2, v[4];
    memcpy(&a0, s, 4);
    memcpy(&a1, s + 4, 4);
    memcpy(&a2, s + 8, 4);
    v[0] = a0 & 0x3f3f3f3fu;
    v[1] = (a2 & 0x0f0f0f0fu) | ((a0 >> 6) & 0x03030303u) << 4;
    v[2] = a1 & 0x3f3f3f3fu;
    v[3] = ((a2 >> 4) & 0x0f0f0f0fu) | ((a1 >> 6) & 0x03030303u) << 4;
    memcpy(sc, v, 8);
    memcpy(mn, v + 2, 8);
}

/* Inverse of kq_unpack_k4: sc and mn are each < 64. */
static inline void kq_pack_k4(const uint8_t sc[8], const uint8_t mn[8], uint8_t *s) {
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
}

/* The 16 signed scales (bias removed) of a Q3_K block. */
static inline void kq_unpack_q3(const uint8_t *s, int8_t out[16]) {
    uint32_t a0, a1, a2, v[4];
    memcpy(&a0, s, 4);
    memcpy(&a1, s + 4, 4);
    memcpy(&a2, s + 8, 4);
    v[0] = (a0 & 0x0f0f0f0fu) | (a2 & 0x03030303u) << 4;
    v[1] = (a1 & 0x0f0f0f0fu) | ((a2 >> 2) & 0x03030303u) << 4;
    v[2] = ((a0 >> 4) & 0x0f0f0f0fu) | ((a2 >> 4) & 0x03030303u) << 4;
    v[3] = ((a1 >> 4) & 0x0f0f0f0fu) | ((a2 >> 6) & 0x03030303u) << 4;
    uint8_t u[16];
    memcpy(u, v, 16);
    for (int j = 0; j < 16; j++) out[j] = (int8_t)(u[j] - 32);
}

/* Inverse of kq_unpack_q3: biased scales b[j] = scale + 32 in [0, 64). */
static inline void kq_pack_q3(const uint8_t b[16], uint8_t *s) {
    memset(s, 0, 12);
    for (int j = 0; j < 16; j++) {
        s[j & 7] |= (uint8_t)((b[j] & 15) << (j < 8 ? 0 : 4));
        s[8 + (j & 3)] |= (uint8_t)((b[j] >> 4) << (2 * (j / 4)));
    }
}

/* The signed 6-bit scale of sub-block ib (0..7) of an IQ4_XS block. */
static inline int kq_iq4xs_scale(const block_iq4_xs *b, int ib) {
    int lo = (b->scales_l[ib / 2] >> (4 * (ib % 2))) & 15;
    int hi = (b->scales_h >> (2 * ib)) & 3;
    return (lo | hi << 4) - 32;
}

/* One Q8_K block from 256 floats: the element of largest magnitude maps to
 * -127 (scale d = -max/127), values round half to even, and qs is capped at
 * 127. This is the exact rule SIMD variants reproduce. */
static inline void kq_quantize_q8k_block(const float *x, block_q8_K *y) {
    float amax = 0, vmax = 0;
    for (int j = 0; j < QK_K; j++) {
        float a = fabsf(x[j]);
        if (a > amax) {
            amax = a;
            vmax = x[j];
        }
    }
    if (amax == 0) {
        memset(y, 0, sizeof *y);
        return;
    }
    float iscale = -127.f / vmax;
    for (int j = 0; j < QK_K; j++) {
        long v = lrintf(iscale * x[j]);
        y->qs[j] = (int8_t)(v > 127 ? 127 : v);
    }
    for (int j = 0; j < QK_K / 16; j++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += y->qs[16 * j + i];
        y->bsums[j] = (int16_t)s;
    }
    y->d = 1 / iscale;
}

#endif

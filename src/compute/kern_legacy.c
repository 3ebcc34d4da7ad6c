/* kern_legacy.c - scalar reference kernels for GGML's 32-element block types:
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL (weights) and Q8_0, Q8_1 (activations).
 *
 * Block layout facts (blocks.h): a 4-bit block stores element j in the low
 * nibble of qs[j] and element j+16 in its high nibble; Q5 types keep the fifth
 * bit of element i in bit i of the little-endian 32-bit qh. "_0" types are
 * symmetric (value = d * (q - offset)), "_1" types affine (value = d*q + m).
 *
 * Quantizers choose the scale from the block's extreme value, round it to f16
 * first and then round every element against the stored scale, so the stored
 * block is the best one for that scale. The Q8 activation quantizer uses
 * scale 127/amax and rounds half to even, which is what the SIMD variants do
 * too, so all variants produce identical bytes. */
#include "base/fp16.h"
#include "compute/blocks.h"
#include "compute/kernels.h"

#include <math.h>
#include <string.h>

/* ---- unpacking to small integers ---- */

static void unpack_nibbles(const uint8_t *qs, int offset, int8_t *q) {
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((qs[j] & 0x0f) - offset);
        q[j + 16] = (int8_t)((qs[j] >> 4) - offset);
    }
}

static void unpack_q5(const uint8_t *qh4, const uint8_t *qs, int offset, int8_t *q) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        q[j] = (int8_t)(lo - offset);
        q[j + 16] = (int8_t)(hi - offset);
    }
}

static void unpack_iq4nl(const uint8_t *qs, int8_t *q) {
    for (int j = 0; j < 16; j++) {
        q[j] = kiln_iq4nl_values[qs[j] & 0x0f];
        q[j + 16] = kiln_iq4nl_values[qs[j] >> 4];
    }
}

static int dot32(const int8_t *a, const int8_t *b) {
    int s = 0;
    for (int j = 0; j < 32; j++) s += a[j] * b[j];
    return s;
}

/* Symmetric and affine dequantization; kept apart so that a zero element of
 * a symmetric block keeps the sign of d * 0, as other implementations give. */
static void scale32(const int8_t *q, float d, float *dst) {
    for (int j = 0; j < 32; j++) dst[j] = (float)q[j] * d;
}

static void affine32(const int8_t *q, float d, float m, float *dst) {
    for (int j = 0; j < 32; j++) dst[j] = (float)q[j] * d + m;
}

/* ---- to_float ---- */

static void q4_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q4_0 *b = src;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, dst += 32) {
        unpack_nibbles(b[i].qs, 8, q);
        scale32(q, kiln_f16_to_f32(b[i].d), dst);
    }
}

static void q4_1_to_float(const void *src, float *dst, int64_t n) {
    const block_q4_1 *b = src;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, dst += 32) {
        unpack_nibbles(b[i].qs, 0, q);
        affine32(q, kiln_f16_to_f32(b[i].d), kiln_f16_to_f32(b[i].m), dst);
    }
}

static void q5_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q5_0 *b = src;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, dst += 32) {
        unpack_q5(b[i].qh, b[i].qs, 16, q);
        scale32(q, kiln_f16_to_f32(b[i].d), dst);
    }
}

static void q5_1_to_float(const void *src, float *dst, int64_t n) {
    const block_q5_1 *b = src;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, dst += 32) {
        unpack_q5(b[i].qh, b[i].qs, 0, q);
        affine32(q, kiln_f16_to_f32(b[i].d), kiln_f16_to_f32(b[i].m), dst);
    }
}

static void q8_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++, dst += 32) scale32(b[i].qs, kiln_f16_to_f32(b[i].d), dst);
}

static void q8_1_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_1 *b = src;
    for (int64_t i = 0; i < n / 32; i++, dst += 32) scale32(b[i].qs, kiln_f16_to_f32(b[i].d), dst);
}

static void iq4_nl_to_float(const void *src, float *dst, int64_t n) {
    const block_iq4_nl *b = src;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, dst += 32) {
        unpack_iq4nl(b[i].qs, q);
        scale32(q, kiln_f16_to_f32(b[i].d), dst);
    }
}

/* ---- quantizers ---- */

static float signed_absmax(const float *x) {
    float m = 0.0f, am = 0.0f;
    for (int j = 0; j < 32; j++) {
        if (fabsf(x[j]) > am) {
            am = fabsf(x[j]);
            m = x[j];
        }
    }
    return m;
}

static void min_max(const float *x, float *mn, float *mx) {
    *mn = *mx = x[0];
    for (int j = 1; j < 32; j++) {
        *mn = x[j] < *mn ? x[j] : *mn;
        *mx = x[j] > *mx ? x[j] : *mx;
    }
}

static int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* Symmetric: q = round(x/d) + offset in [0, 2*offset-1]; returns the f16 d. */
static kiln_f16 quant_sym(const float *x, int offset, uint8_t *q) {
    kiln_f16 d16 = kiln_f32_to_f16(signed_absmax(x) / (float)-offset);
    float d = kiln_f16_to_f32(d16), id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++)
        q[j] = (uint8_t)clampi((int)lrintf(x[j] * id) + offset, 0, 2 * offset - 1);
    return d16;
}

/* Affine: q = round((x - m)/d) in [0, qmax]; sets the f16 d and m. */
static void quant_affine(const float *x, int qmax, uint8_t *q, kiln_f16 *d16, kiln_f16 *m16) {
    float mn, mx;
    min_max(x, &mn, &mx);
    *d16 = kiln_f32_to_f16((mx - mn) / (float)qmax);
    *m16 = kiln_f32_to_f16(mn);
    float d = kiln_f16_to_f32(*d16), m = kiln_f16_to_f32(*m16);
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) q[j] = (uint8_t)clampi((int)lrintf((x[j] - m) * id), 0, qmax);
}

static void pack_nibbles(const uint8_t *q, uint8_t *qs) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] << 4));
}

static void pack_q5(const uint8_t *q, uint8_t *qh4, uint8_t *qs) {
    uint32_t qh = 0;
    for (int j = 0; j < 32; j++) qh |= (uint32_t)(q[j] >> 4) << j;
    memcpy(qh4, &qh, 4);
    pack_nibbles(q, qs);
}

static void q4_0_from_float(const float *src, void *dst, int64_t n) {
    block_q4_0 *b = dst;
    uint8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, src += 32) {
        b[i].d = quant_sym(src, 8, q);
        pack_nibbles(q, b[i].qs);
    }
}

static void q4_1_from_float(const float *src, void *dst, int64_t n) {
    block_q4_1 *b = dst;
    uint8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, src += 32) {
        quant_affine(src, 15, q, &b[i].d, &b[i].m);
        pack_nibbles(q, b[i].qs);
    }
}

static void q5_0_from_float(const float *src, void *dst, int64_t n) {
    block_q5_0 *b = dst;
    uint8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, src += 32) {
        b[i].d = quant_sym(src, 16, q);
        pack_q5(q, b[i].qh, b[i].qs);
    }
}

static void q5_1_from_float(const float *src, void *dst, int64_t n) {
    block_q5_1 *b = dst;
    uint8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, src += 32) {
        quant_affine(src, 31, q, &b[i].d, &b[i].m);
        pack_q5(q, b[i].qh, b[i].qs);
    }
}

/* Q8: d = amax/127 and q = round_half_even(x * 127/amax); returns sum(q). */
static int quant_q8(const float *x, int8_t *q, float *d) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        q[j] = (int8_t)nearbyintf(x[j] * id);
        sum += q[j];
    }
    *d = amax / 127.0f;
    return sum;
}

static void q8_0_from_float(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    float d;
    for (int64_t i = 0; i < n / 32; i++, src += 32) {
        quant_q8(src, b[i].qs, &d);
        b[i].d = kiln_f32_to_f16(d);
    }
}

static void q8_1_from_float(const float *src, void *dst, int64_t n) {
    block_q8_1 *b = dst;
    float d;
    for (int64_t i = 0; i < n / 32; i++, src += 32) {
        int sum = quant_q8(src, b[i].qs, &d);
        b[i].d = kiln_f32_to_f16(d);
        /* saturate: an infinite s would turn a zero min (m * s) into NaN */
        b[i].s = kiln_f32_to_f16(fminf(fmaxf(d * (float)sum, -65504.0f), 65504.0f));
    }
}

/* ---- IQ4_NL quantizer: a search over candidate scales ---- */

static int iq4_nearest(float v) {
    int lo = 0, hi = 15; /* levels are sorted ascending */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < kiln_iq4nl_values[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - kiln_iq4nl_values[lo] <= kiln_iq4nl_values[hi] - v ? lo : hi;
}

/* Squared error of x against levels chosen for scale d, stored as f16. */
static float iq4_error(const float *x, float d, uint8_t *q) {
    float id = d != 0.0f ? 1.0f / d : 0.0f, err = 0.0f;
    for (int j = 0; j < 32; j++) {
        q[j] = (uint8_t)iq4_nearest(x[j] * id);
        float e = x[j] - d * kiln_iq4nl_values[q[j]];
        err += e * e;
    }
    return err;
}

/* Least-squares scale for fixed levels q, rounded to f16. */
static float iq4_refit(const float *x, const uint8_t *q) {
    float sxl = 0.0f, sll = 0.0f;
    for (int j = 0; j < 32; j++) {
        float l = kiln_iq4nl_values[q[j]];
        sxl += x[j] * l;
        sll += l * l;
    }
    return kiln_f16_to_f32(kiln_f32_to_f16(sll > 0.0f ? sxl / sll : 0.0f));
}

static kiln_f16 iq4_quant_block(const float *x, uint8_t *qbest) {
    float mx = signed_absmax(x);
    uint8_t q[32];
    float best_d = kiln_f16_to_f32(kiln_f32_to_f16(mx / -127.0f));
    float best = iq4_error(x, best_d, qbest);
    /* map the extreme element to levels near -127 and near +113 */
    for (int t = -10; t <= 10 && mx != 0.0f; t++) {
        for (int side = 0; side < 2; side++) {
            float level = side ? 113.0f + t : -127.0f + t;
            iq4_error(x, mx / level, q);
            float d = iq4_refit(x, q);
            float err = iq4_error(x, d, q);
            if (err < best) {
                best = err;
                best_d = d;
                memcpy(qbest, q, 32);
            }
        }
    }
    return kiln_f32_to_f16(best_d);
}

static void iq4_nl_from_float(const float *src, void *dst, int64_t n) {
    block_iq4_nl *b = dst;
    uint8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, src += 32) {
        b[i].d = iq4_quant_block(src, q);
        pack_nibbles(q, b[i].qs);
    }
}

/* ---- dot products against Q8_0 / Q8_1 activations ---- */

static float q4_0_vec_dot(int64_t n, const void *w, const void *x) {
    const block_q4_0 *a = w;
    const block_q8_0 *b = x;
    int8_t q[32];
    float s = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        unpack_nibbles(a[i].qs, 8, q);
        s += kiln_f16_to_f32(a[i].d) * kiln_f16_to_f32(b[i].d) * (float)dot32(q, b[i].qs);
    }
    return s;
}

static float q4_1_vec_dot(int64_t n, const void *w, const void *x) {
    const block_q4_1 *a = w;
    const block_q8_1 *b = x;
    int8_t q[32];
    float s = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        unpack_nibbles(a[i].qs, 0, q);
        s += kiln_f16_to_f32(a[i].d) * kiln_f16_to_f32(b[i].d) * (float)dot32(q, b[i].qs) +
             kiln_f16_to_f32(a[i].m) * kiln_f16_to_f32(b[i].s);
    }
    return s;
}

static float q5_0_vec_dot(int64_t n, const void *w, const void *x) {
    const block_q5_0 *a = w;
    const block_q8_0 *b = x;
    int8_t q[32];
    float s = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        unpack_q5(a[i].qh, a[i].qs, 16, q);
        s += kiln_f16_to_f32(a[i].d) * kiln_f16_to_f32(b[i].d) * (float)dot32(q, b[i].qs);
    }
    return s;
}

static float q5_1_vec_dot(int64_t n, const void *w, const void *x) {
    const block_q5_1 *a = w;
    const block_q8_1 *b = x;
    int8_t q[32];
    float s = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        unpack_q5(a[i].qh, a[i].qs, 0, q);
        s += kiln_f16_to_f32(a[i].d) * kiln_f16_to_f32(b[i].d) * (float)dot32(q, b[i].qs) +
             kiln_f16_to_f32(a[i].m) * kiln_f16_to_f32(b[i].s);
    }
    return s;
}

static float q8_0_vec_dot(int64_t n, const void *w, const void *x) {
    const block_q8_0 *a = w;
    const block_q8_0 *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / 32; i++)
        s += kiln_f16_to_f32(a[i].d) * kiln_f16_to_f32(b[i].d) * (float)dot32(a[i].qs, b[i].qs);
    return s;
}

static float iq4_nl_vec_dot(int64_t n, const void *w, const void *x) {
    const block_iq4_nl *a = w;
    const block_q8_0 *b = x;
    int8_t q[32];
    float s = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        unpack_iq4nl(a[i].qs, q);
        s += kiln_f16_to_f32(a[i].d) * kiln_f16_to_f32(b[i].d) * (float)dot32(q, b[i].qs);
    }
    return s;
}

void kern_legacy_register_scalar(struct kiln_kernels *k) {
    k->to_float[KILN_TYPE_Q4_0] = q4_0_to_float;
    k->to_float[KILN_TYPE_Q4_1] = q4_1_to_float;
    k->to_float[KILN_TYPE_Q5_0] = q5_0_to_float;
    k->to_float[KILN_TYPE_Q5_1] = q5_1_to_float;
    k->to_float[KILN_TYPE_Q8_0] = q8_0_to_float;
    k->to_float[KILN_TYPE_Q8_1] = q8_1_to_float;
    k->to_float[KILN_TYPE_IQ4_NL] = iq4_nl_to_float;
    k->from_float[KILN_TYPE_Q4_0] = q4_0_from_float;
    k->from_float[KILN_TYPE_Q4_1] = q4_1_from_float;
    k->from_float[KILN_TYPE_Q5_0] = q5_0_from_float;
    k->from_float[KILN_TYPE_Q5_1] = q5_1_from_float;
    k->from_float[KILN_TYPE_Q8_0] = q8_0_from_float;
    k->from_float[KILN_TYPE_Q8_1] = q8_1_from_float;
    k->from_float[KILN_TYPE_IQ4_NL] = iq4_nl_from_float;
    k->vec_dot[KILN_TYPE_Q4_0] = q4_0_vec_dot;
    k->vec_dot[KILN_TYPE_Q4_1] = q4_1_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_0] = q5_0_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_1] = q5_1_vec_dot;
    k->vec_dot[KILN_TYPE_Q8_0] = q8_0_vec_dot;
    k->vec_dot[KILN_TYPE_IQ4_NL] = iq4_nl_vec_dot;
}

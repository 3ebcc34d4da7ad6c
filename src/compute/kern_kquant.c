/* kern_kquant.c - scalar reference kernels for the K-quant family: Q2_K, Q3_K,
 * Q4_K, Q5_K, Q6_K, IQ4_XS (weights, 256-element super-blocks) and Q8_K (their
 * activation type).
 *
 * Every weight block is a super-block of 256 elements split into sub-blocks
 * (16 or 32 elements) with small integer scales; the block's f16 `d` (and
 * `dmin` for the affine types) turns those into real scales:
 *   Q2_K, Q4_K, Q5_K: value = d*sc*q - dmin*mn   (q unsigned, 2/4/5 bits)
 *   Q3_K, Q6_K:       value = d*sc*q             (q signed, 3/6 bits)
 *   IQ4_XS:           value = d*sc*L[q]          (L: the 16 IQ4_NL levels)
 * Kernels here first unpack a block into 256 small integers plus per-sub-block
 * scales; the bit layouts live in the unpack/pack pairs below and in
 * kern_kquant.h. Dequantization evaluates exactly (d*sc)*q - (dmin*mn) in f32
 * without fused multiply-adds, which reproduces GGML bit for bit.
 *
 * Weight quantizers minimise the plain squared reconstruction error: each
 * sub-block's scale (and min) comes from a grid search with least-squares
 * refits; then the super-block scale is chosen, every integer sub-scale may
 * move by one step, and d/dmin are refitted jointly by least squares (keeping
 * the best result seen). They are slow and meant for model conversion. */
#include "base/fp16.h"
#include "compute/blocks.h"
#include "compute/kern_kquant.h"
#include "compute/kernels.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ---- unpacking: 256 integers per block ---- */

static void unpack_q2k(const block_q2_K *b, int8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++)
        q[e] = (int8_t)((b->qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3);
}

static void unpack_q3k(const block_q3_K *b, int8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++) {
        int lo = (b->qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
        int hi = (b->hmask[e % 32] >> (e / 32)) & 1;
        q[e] = (int8_t)(lo - (hi ? 0 : 4));
    }
}

static void unpack_q4k(const block_q4_K *b, int8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++)
        q[e] = (int8_t)((b->qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 15);
}

static void unpack_q5k(const block_q5_K *b, int8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++) {
        int lo = (b->qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 15;
        int hi = (b->qh[e % 32] >> (e / 32)) & 1;
        q[e] = (int8_t)(lo | hi << 4);
    }
}

/* Element e = 128h + 32k + l: low nibble of ql[64h + 32(k%2) + l] (k < 2) or
 * its high nibble (k >= 2); top 2 bits at bit 2k of qh[32h + l]. */
static void unpack_q6k(const block_q6_K *b, int8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++) {
        int h = e / 128, k = (e / 32) % 4, l = e % 32;
        int lo = (b->ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15;
        int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
        q[e] = (int8_t)((lo | hi << 4) - 32);
    }
}

static void unpack_iq4xs(const block_iq4_xs *b, int8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++)
        q[e] = kiln_iq4nl_values[(b->qs[16 * (e / 32) + e % 16] >> (4 * ((e / 16) % 2))) & 15];
}

/* ---- to_float ---- */

/* y[e] = (d*sc[e/sub])*q[e] - (dmin*mn[e/sub]); mn may be NULL. */
static void dequant_block(const int8_t *q, const int *sc, const int *mn, int sub, float d,
                          float dmin, float *y) {
    for (int j = 0; j < QK_K / sub; j++) {
        float dl = d * (float)sc[j];
        float ml = mn ? dmin * (float)mn[j] : 0.0f;
        for (int i = j * sub; i < (j + 1) * sub; i++) y[i] = dl * (float)q[i] - ml;
    }
}

static void q2k_to_float(const void *src, float *y, int64_t n) {
    const block_q2_K *b = src;
    int8_t q[QK_K];
    int sc[16], mn[16];
    for (int64_t i = 0; i < n / QK_K; i++, b++, y += QK_K) {
        unpack_q2k(b, q);
        for (int j = 0; j < 16; j++) sc[j] = b->scales[j] & 15, mn[j] = b->scales[j] >> 4;
        dequant_block(q, sc, mn, 16, kiln_f16_to_f32(b->d), kiln_f16_to_f32(b->dmin), y);
    }
}

static void q3k_to_float(const void *src, float *y, int64_t n) {
    const block_q3_K *b = src;
    int8_t q[QK_K], s8[16];
    int sc[16];
    for (int64_t i = 0; i < n / QK_K; i++, b++, y += QK_K) {
        unpack_q3k(b, q);
        kq_unpack_q3(b->scales, s8);
        for (int j = 0; j < 16; j++) sc[j] = s8[j];
        dequant_block(q, sc, NULL, 16, kiln_f16_to_f32(b->d), 0, y);
    }
}

static void k4_scales(const uint8_t *s, int sc[8], int mn[8]) {
    uint8_t a[8], m[8];
    kq_unpack_k4(s, a, m);
    for (int j = 0; j < 8; j++) sc[j] = a[j], mn[j] = m[j];
}

static void q4k_to_float(const void *src, float *y, int64_t n) {
    const block_q4_K *b = src;
    int8_t q[QK_K];
    int sc[8], mn[8];
    for (int64_t i = 0; i < n / QK_K; i++, b++, y += QK_K) {
        unpack_q4k(b, q);
        k4_scales(b->scales, sc, mn);
        dequant_block(q, sc, mn, 32, kiln_f16_to_f32(b->d), kiln_f16_to_f32(b->dmin), y);
    }
}

static void q5k_to_float(const void *src, float *y, int64_t n) {
    const block_q5_K *b = src;
    int8_t q[QK_K];
    int sc[8], mn[8];
    for (int64_t i = 0; i < n / QK_K; i++, b++, y += QK_K) {
        unpack_q5k(b, q);
        k4_scales(b->scales, sc, mn);
        dequant_block(q, sc, mn, 32, kiln_f16_to_f32(b->d), kiln_f16_to_f32(b->dmin), y);
    }
}

static void q6k_to_float(const void *src, float *y, int64_t n) {
    const block_q6_K *b = src;
    int8_t q[QK_K];
    int sc[16];
    for (int64_t i = 0; i < n / QK_K; i++, b++, y += QK_K) {
        unpack_q6k(b, q);
        for (int j = 0; j < 16; j++) sc[j] = b->scales[j];
        dequant_block(q, sc, NULL, 16, kiln_f16_to_f32(b->d), 0, y);
    }
}

static void iq4xs_to_float(const void *src, float *y, int64_t n) {
    const block_iq4_xs *b = src;
    int8_t q[QK_K];
    int sc[8];
    for (int64_t i = 0; i < n / QK_K; i++, b++, y += QK_K) {
        unpack_iq4xs(b, q);
        for (int j = 0; j < 8; j++) sc[j] = kq_iq4xs_scale(b, j);
        dequant_block(q, sc, NULL, 32, kiln_f16_to_f32(b->d), 0, y);
    }
}

static void q8k_to_float(const void *src, float *y, int64_t n) {
    const block_q8_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++, y += QK_K)
        for (int j = 0; j < QK_K; j++) y[j] = b->d * (float)b->qs[j];
}

static void q8k_from_float(const float *x, void *dst, int64_t n) {
    block_q8_K *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++) kq_quantize_q8k_block(x + i * QK_K, y + i);
}

/* ---- vec_dot against Q8_K ---- */

/* One block: x.d * (d * sum_j sc[j]*<q,x>_j - dmin * sum_j mn[j]*bsum_j). */
static float dot_block(const int8_t *q, const int *sc, const int *mn, int sub, float d, float dmin,
                       const block_q8_K *x) {
    int sumi = 0, summ = 0;
    for (int j = 0; j < QK_K / sub; j++) {
        int s = 0;
        for (int i = j * sub; i < (j + 1) * sub; i++) s += q[i] * x->qs[i];
        sumi += sc[j] * s;
        if (mn) {
            int bs = 0;
            for (int k = j * sub / 16; k < (j + 1) * sub / 16; k++) bs += x->bsums[k];
            summ += mn[j] * bs;
        }
    }
    return x->d * (d * (float)sumi - dmin * (float)summ);
}

static float q2k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q2_K *b = w;
    const block_q8_K *x = xv;
    int8_t q[QK_K];
    int sc[16], mn[16];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_q2k(b + i, q);
        for (int j = 0; j < 16; j++) sc[j] = b[i].scales[j] & 15, mn[j] = b[i].scales[j] >> 4;
        sum += dot_block(q, sc, mn, 16, kiln_f16_to_f32(b[i].d), kiln_f16_to_f32(b[i].dmin), x + i);
    }
    return sum;
}

static float q3k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q3_K *b = w;
    const block_q8_K *x = xv;
    int8_t q[QK_K], s8[16];
    int sc[16];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_q3k(b + i, q);
        kq_unpack_q3(b[i].scales, s8);
        for (int j = 0; j < 16; j++) sc[j] = s8[j];
        sum += dot_block(q, sc, NULL, 16, kiln_f16_to_f32(b[i].d), 0, x + i);
    }
    return sum;
}

static float q4k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q4_K *b = w;
    const block_q8_K *x = xv;
    int8_t q[QK_K];
    int sc[8], mn[8];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_q4k(b + i, q);
        k4_scales(b[i].scales, sc, mn);
        sum += dot_block(q, sc, mn, 32, kiln_f16_to_f32(b[i].d), kiln_f16_to_f32(b[i].dmin), x + i);
    }
    return sum;
}

static float q5k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q5_K *b = w;
    const block_q8_K *x = xv;
    int8_t q[QK_K];
    int sc[8], mn[8];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_q5k(b + i, q);
        k4_scales(b[i].scales, sc, mn);
        sum += dot_block(q, sc, mn, 32, kiln_f16_to_f32(b[i].d), kiln_f16_to_f32(b[i].dmin), x + i);
    }
    return sum;
}

static float q6k_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_q6_K *b = w;
    const block_q8_K *x = xv;
    int8_t q[QK_K];
    int sc[16];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_q6k(b + i, q);
        for (int j = 0; j < 16; j++) sc[j] = b[i].scales[j];
        sum += dot_block(q, sc, NULL, 16, kiln_f16_to_f32(b[i].d), 0, x + i);
    }
    return sum;
}

static float iq4xs_vec_dot(int64_t n, const void *w, const void *xv) {
    const block_iq4_xs *b = w;
    const block_q8_K *x = xv;
    int8_t q[QK_K];
    int sc[8];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_iq4xs(b + i, q);
        for (int j = 0; j < 8; j++) sc[j] = kq_iq4xs_scale(b + i, j);
        sum += dot_block(q, sc, NULL, 32, kiln_f16_to_f32(b[i].d), 0, x + i);
    }
    return sum;
}

/* ---- weight quantizers: sub-block fits ---- */

static float f16_round(float v) {
    return kiln_f16_to_f32(kiln_f32_to_f16(v));
}

static int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* The grid of a symmetric type: integer levels lo..hi, or a sorted table. */
struct symq {
    int lo, hi;          /* most negative and most positive level value */
    const int8_t *table; /* NULL: every integer in [lo, hi] */
    int nsub, sub;       /* sub-blocks per super-block, elements each */
    int slo, shi;        /* range of the integer sub-block scales */
};

/* The level value nearest to t. */
static int sym_nearest(const struct symq *k, float t) {
    if (!k->table) return clampi((int)lrintf(fminf(fmaxf(t, -1e6f), 1e6f)), k->lo, k->hi);
    int i = 0;
    while (i < 15 && t > 0.5f * (float)(k->table[i] + k->table[i + 1])) i++;
    return k->table[i];
}

/* Squared error of x ~ s*q with q re-rounded for scale s; q may be NULL. */
static float sym_err(const struct symq *k, const float *x, int n, float s, int8_t *q) {
    float err = 0, is = s != 0 ? 1 / s : 0;
    for (int i = 0; i < n; i++) {
        int v = s != 0 ? sym_nearest(k, x[i] * is) : 0;
        float e = x[i] - s * (float)v;
        err += e * e;
        if (q) q[i] = (int8_t)v;
    }
    return err;
}

/* Least-squares scale for x ~ s*q, with q rounded at 1/is. */
static float sym_refit(const struct symq *k, const float *x, int n, float is) {
    float sxq = 0, sqq = 0;
    for (int i = 0; i < n; i++) {
        int v = sym_nearest(k, x[i] * is);
        sxq += x[i] * (float)v;
        sqq += (float)(v * v);
    }
    return sqq > 0 ? sxq / sqq : 0;
}

/* The real scale minimising the squared error of one sub-block. */
static float fit_sym(const struct symq *k, const float *x, int n) {
    float amax = 0, vmax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), vmax = x[i];
    if (amax == 0) return 0;
    float best_s = 0, best = FLT_MAX;
    for (int side = 0; side < 2; side++) {
        float edge = side ? (float)k->hi : (float)k->lo;
        for (int g = 0; g <= 24; g++) {
            float t = edge * (0.7f + 0.6f * (float)g / 24);
            float s = sym_refit(k, x, n, t / vmax);
            for (int it = 0; it < 2 && s != 0; it++) s = sym_refit(k, x, n, 1 / s);
            float err = s != 0 ? sym_err(k, x, n, s, NULL) : FLT_MAX;
            if (err < best) best = err, best_s = s;
        }
    }
    return best_s;
}

/* Affine fit x ~ s*q - m (s >= 0, m >= 0, q in [0, qmax]) for given q:
 * returns the squared error and sets s, m. */
static float asym_lsq(const float *x, const int8_t *q, int n, float *s, float *m) {
    float sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int i = 0; i < n; i++) {
        sq += q[i], sqq += (float)(q[i] * q[i]), sx += x[i], sqx += (float)q[i] * x[i];
    }
    float det = (float)n * sqq - sq * sq, a = 0;
    *s = 0;
    if (det > 0) {
        *s = ((float)n * sqx - sq * sx) / det;
        a = (sx - *s * sq) / (float)n;
    }
    if (det <= 0 || a > 0) a = 0, *s = sqq > 0 ? sqx / sqq : 0;
    if (*s < 0) *s = 0, a = fminf(sx / (float)n, 0);
    *m = -a;
    float err = 0;
    for (int i = 0; i < n; i++) {
        float e = x[i] - (*s * (float)q[i] + a);
        err += e * e;
    }
    return err;
}

static void asym_round(const float *x, int n, int qmax, float s, float m, int8_t *q) {
    float is = s > 0 ? 1 / s : 0;
    for (int i = 0; i < n; i++) q[i] = (int8_t)clampi((int)lrintf((x[i] + m) * is), 0, qmax);
}

/* The real scale and min minimising the squared error of one sub-block. */
static void fit_asym(const float *x, int n, int qmax, float *s_out, float *m_out) {
    float lo = 0, hi = -FLT_MAX;
    for (int i = 0; i < n; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
    *s_out = 0, *m_out = -lo;
    if (hi <= lo) return;
    int8_t q[32];
    float best = FLT_MAX;
    for (int g = 0; g <= 24; g++) {
        float s = (hi - lo) / ((float)qmax * (0.7f + 0.6f * (float)g / 24)), m = -lo, err = 0;
        for (int it = 0; it < 3; it++) {
            asym_round(x, n, qmax, s, m, q);
            err = asym_lsq(x, q, n, &s, &m);
            if (s <= 0) break;
        }
        if (err < best) best = err, *s_out = s, *m_out = m;
    }
}

/* ---- weight quantizers: super-blocks ---- */

/* An affine super-block: q[256] in [0, qmax], integer sc/mn in [0, smax]. */
struct asymq {
    int nsub, sub, qmax, smax;
};

struct asym_out {
    int8_t q[QK_K];
    uint8_t sc[16], mn[16];
    float d, dmin, err;
};

/* Squared error of one sub-block for integer scale/min (q re-rounded). */
static float asym_sub_err(const struct asymq *k, const float *x, float d, float dmin, int sc,
                          int mn, int8_t *q) {
    float ds = d * (float)sc, dm = dmin * (float)mn, err = 0;
    asym_round(x, k->sub, k->qmax, ds, dm, q);
    for (int i = 0; i < k->sub; i++) {
        float e = x[i] - (ds * (float)q[i] - dm);
        err += e * e;
    }
    return err;
}

/* Chooses each sub-block's integers near s/d, m/dmin given d, dmin. */
static void asym_assign(const struct asymq *k, const float *x, const float *s, const float *m,
                        struct asym_out *o) {
    int8_t q[32];
    o->err = 0;
    for (int j = 0; j < k->nsub; j++) {
        const float *xj = x + j * k->sub;
        int sc0 = o->d > 0 ? (int)lrintf(s[j] / o->d) : 0;
        int mn0 = o->dmin > 0 ? (int)lrintf(m[j] / o->dmin) : 0;
        float best = FLT_MAX;
        for (int a = sc0 - 1; a <= sc0 + 1; a++) {
            for (int b = mn0 - 1; b <= mn0 + 1; b++) {
                int sa = clampi(a, 0, k->smax), mb = clampi(b, 0, k->smax);
                float err = asym_sub_err(k, xj, o->d, o->dmin, sa, mb, q);
                if (err < best) {
                    best = err, o->sc[j] = (uint8_t)sa, o->mn[j] = (uint8_t)mb;
                    memcpy(o->q + j * k->sub, q, (size_t)k->sub);
                }
            }
        }
        o->err += best;
    }
}

/* Joint least-squares d, dmin for fixed integers: x ~ d*(sc*q) - dmin*mn. */
static void asym_refit_d(const struct asymq *k, const float *x, struct asym_out *o) {
    double aa = 0, ab = 0, bb = 0, ax = 0, bx = 0;
    for (int i = 0; i < QK_K; i++) {
        double a = (double)o->sc[i / k->sub] * o->q[i], b = o->mn[i / k->sub];
        aa += a * a, ab += a * b, bb += b * b, ax += a * x[i], bx += b * x[i];
    }
    double det = aa * bb - ab * ab, d = 0, dm = 0;
    if (det > 0) {
        d = (ax * bb - bx * ab) / det;
        dm = (ax * ab - bx * aa) / det;
    }
    if (det <= 0 || dm < 0) dm = 0, d = aa > 0 ? ax / aa : 0;
    o->d = f16_round((float)(d > 0 ? d : 0));
    o->dmin = f16_round((float)dm);
}

static void quant_asym(const struct asymq *k, const float *x, struct asym_out *best) {
    float s[16], m[16], smax = 0, mmax = 0;
    for (int j = 0; j < k->nsub; j++) {
        fit_asym(x + j * k->sub, k->sub, k->qmax, &s[j], &m[j]);
        smax = fmaxf(smax, s[j]), mmax = fmaxf(mmax, m[j]);
    }
    struct asym_out o;
    memset(&o, 0, sizeof o);
    *best = o;
    best->err = FLT_MAX;
    for (int c = 0; c < 3; c++) {
        float f = 1.0f + 0.01f * (float)c; /* headroom so the largest scale can round up */
        o.d = f16_round(smax * f / (float)k->smax);
        o.dmin = f16_round(mmax * f / (float)k->smax);
        for (int it = 0; it < 3; it++) {
            asym_assign(k, x, s, m, &o);
            if (o.err < best->err) *best = o;
            asym_refit_d(k, x, &o);
        }
    }
}

/* A symmetric super-block: q[256] level values, integer sc in [slo, shi]. */
struct sym_out {
    int8_t q[QK_K];
    int sc[16];
    float d, err;
};

static void sym_assign(const struct symq *k, const float *x, const float *s, struct sym_out *o) {
    int8_t q[32];
    o->err = 0;
    for (int j = 0; j < k->nsub; j++) {
        const float *xj = x + j * k->sub;
        int sc0 = o->d != 0 ? (int)lrintf(s[j] / o->d) : 0;
        float best = FLT_MAX;
        for (int a = sc0 - 1; a <= sc0 + 1; a++) {
            int sa = clampi(a, k->slo, k->shi);
            float err = sym_err(k, xj, k->sub, o->d * (float)sa, q);
            if (err < best) {
                best = err, o->sc[j] = sa;
                memcpy(o->q + j * k->sub, q, (size_t)k->sub);
            }
        }
        o->err += best;
    }
}

static void sym_refit_d(const struct symq *k, const float *x, struct sym_out *o) {
    double aa = 0, ax = 0;
    for (int i = 0; i < QK_K; i++) {
        double a = (double)o->sc[i / k->sub] * o->q[i];
        aa += a * a, ax += a * x[i];
    }
    if (aa > 0) o->d = f16_round((float)(ax / aa));
}

static void quant_sym(const struct symq *k, const float *x, struct sym_out *best) {
    float s[16], smax = 0;
    for (int j = 0; j < k->nsub; j++) {
        s[j] = fit_sym(k, x + j * k->sub, k->sub);
        if (fabsf(s[j]) > fabsf(smax)) smax = s[j];
    }
    struct sym_out o;
    memset(&o, 0, sizeof o);
    *best = o;
    best->err = FLT_MAX;
    for (int c = 0; c < 4; c++) {
        float edge = (c & 1) ? (float)k->shi : (float)k->slo;
        o.d = f16_round(smax / edge * (c < 2 ? 1.0f : 1.02f));
        for (int it = 0; it < 3; it++) {
            sym_assign(k, x, s, &o);
            if (o.err < best->err) *best = o;
            sym_refit_d(k, x, &o);
        }
    }
}

/* ---- weight quantizers: packing ---- */

static const struct asymq Q2K = {16, 16, 3, 15};
static const struct asymq Q4K = {8, 32, 15, 63};
static const struct asymq Q5K = {8, 32, 31, 63};
static const struct symq Q3K = {-4, 3, NULL, 16, 16, -32, 31};
static const struct symq Q6K = {-32, 31, NULL, 16, 16, -128, 127};
static const struct symq IQ4XS = {-127, 113, kiln_iq4nl_values, 8, 32, -32, 31};

static void q2k_from_float(const float *x, void *dst, int64_t n) {
    block_q2_K *b = dst;
    struct asym_out o;
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        quant_asym(&Q2K, x, &o);
        memset(b, 0, sizeof *b);
        for (int j = 0; j < 16; j++) b->scales[j] = (uint8_t)(o.sc[j] | o.mn[j] << 4);
        for (int e = 0; e < QK_K; e++)
            b->qs[32 * (e / 128) + e % 32] |= (uint8_t)(o.q[e] << (2 * ((e / 32) % 4)));
        b->d = kiln_f32_to_f16(o.d), b->dmin = kiln_f32_to_f16(o.dmin);
    }
}

static void q3k_from_float(const float *x, void *dst, int64_t n) {
    block_q3_K *b = dst;
    struct sym_out o;
    uint8_t biased[16];
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        quant_sym(&Q3K, x, &o);
        memset(b, 0, sizeof *b);
        for (int j = 0; j < 16; j++) biased[j] = (uint8_t)(o.sc[j] + 32);
        kq_pack_q3(biased, b->scales);
        for (int e = 0; e < QK_K; e++) {
            int u = o.q[e] + 4;
            b->qs[32 * (e / 128) + e % 32] |= (uint8_t)((u & 3) << (2 * ((e / 32) % 4)));
            b->hmask[e % 32] |= (uint8_t)((u >> 2) << (e / 32));
        }
        b->d = kiln_f32_to_f16(o.d);
    }
}

static void q4k_from_float(const float *x, void *dst, int64_t n) {
    block_q4_K *b = dst;
    struct asym_out o;
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        quant_asym(&Q4K, x, &o);
        memset(b, 0, sizeof *b);
        kq_pack_k4(o.sc, o.mn, b->scales);
        for (int e = 0; e < QK_K; e++)
            b->qs[32 * (e / 64) + e % 32] |= (uint8_t)(o.q[e] << (4 * ((e / 32) % 2)));
        b->d = kiln_f32_to_f16(o.d), b->dmin = kiln_f32_to_f16(o.dmin);
    }
}

static void q5k_from_float(const float *x, void *dst, int64_t n) {
    block_q5_K *b = dst;
    struct asym_out o;
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        quant_asym(&Q5K, x, &o);
        memset(b, 0, sizeof *b);
        kq_pack_k4(o.sc, o.mn, b->scales);
        for (int e = 0; e < QK_K; e++) {
            b->qs[32 * (e / 64) + e % 32] |= (uint8_t)((o.q[e] & 15) << (4 * ((e / 32) % 2)));
            b->qh[e % 32] |= (uint8_t)((o.q[e] >> 4) << (e / 32));
        }
        b->d = kiln_f32_to_f16(o.d), b->dmin = kiln_f32_to_f16(o.dmin);
    }
}

static void q6k_from_float(const float *x, void *dst, int64_t n) {
    block_q6_K *b = dst;
    struct sym_out o;
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        quant_sym(&Q6K, x, &o);
        memset(b, 0, sizeof *b);
        for (int j = 0; j < 16; j++) b->scales[j] = (int8_t)o.sc[j];
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, k = (e / 32) % 4, l = e % 32, u = o.q[e] + 32;
            b->ql[64 * h + 32 * (k % 2) + l] |= (uint8_t)((u & 15) << (4 * (k / 2)));
            b->qh[32 * h + l] |= (uint8_t)((u >> 4) << (2 * k));
        }
        b->d = kiln_f32_to_f16(o.d);
    }
}

static int iq4_index(int v) {
    for (int i = 0; i < 16; i++)
        if (kiln_iq4nl_values[i] == v) return i;
    return 0;
}

static void iq4xs_from_float(const float *x, void *dst, int64_t n) {
    block_iq4_xs *b = dst;
    struct sym_out o;
    for (int64_t i = 0; i < n / QK_K; i++, b++, x += QK_K) {
        quant_sym(&IQ4XS, x, &o);
        memset(b, 0, sizeof *b);
        for (int j = 0; j < 8; j++) {
            int ls = o.sc[j] + 32;
            b->scales_l[j / 2] |= (uint8_t)((ls & 15) << (4 * (j % 2)));
            b->scales_h |= (uint16_t)((ls >> 4) << (2 * j));
        }
        for (int e = 0; e < QK_K; e++)
            b->qs[16 * (e / 32) + e % 16] |= (uint8_t)(iq4_index(o.q[e]) << (4 * ((e / 16) % 2)));
        b->d = kiln_f32_to_f16(o.d);
    }
}

void kern_kquant_register_scalar(struct kiln_kernels *k) {
    k->to_float[KILN_TYPE_Q2_K] = q2k_to_float;
    k->to_float[KILN_TYPE_Q3_K] = q3k_to_float;
    k->to_float[KILN_TYPE_Q4_K] = q4k_to_float;
    k->to_float[KILN_TYPE_Q5_K] = q5k_to_float;
    k->to_float[KILN_TYPE_Q6_K] = q6k_to_float;
    k->to_float[KILN_TYPE_IQ4_XS] = iq4xs_to_float;
    k->to_float[KILN_TYPE_Q8_K] = q8k_to_float;
    k->from_float[KILN_TYPE_Q2_K] = q2k_from_float;
    k->from_float[KILN_TYPE_Q3_K] = q3k_from_float;
    k->from_float[KILN_TYPE_Q4_K] = q4k_from_float;
    k->from_float[KILN_TYPE_Q5_K] = q5k_from_float;
    k->from_float[KILN_TYPE_Q6_K] = q6k_from_float;
    k->from_float[KILN_TYPE_IQ4_XS] = iq4xs_from_float;
    k->from_float[KILN_TYPE_Q8_K] = q8k_from_float;
    k->vec_dot[KILN_TYPE_Q2_K] = q2k_vec_dot;
    k->vec_dot[KILN_TYPE_Q3_K] = q3k_vec_dot;
    k->vec_dot[KILN_TYPE_Q4_K] = q4k_vec_dot;
    k->vec_dot[KILN_TYPE_Q5_K] = q5k_vec_dot;
    k->vec_dot[KILN_TYPE_Q6_K] = q6k_vec_dot;
    k->vec_dot[KILN_TYPE_IQ4_XS] = iq4xs_vec_dot;
}

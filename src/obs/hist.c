/* hist.c - log-linear histograms (see hist.h). A value v >= 2^-32 is split
 * by frexp into m * 2^e with m in [0.5, 1); its bucket is the octave e and
 * the linear sub-bucket floor((2m - 1) * HIST_SUB) inside it. */
#include "obs/hist.h"

#include <math.h>
#include <string.h>

void hist_init(hist *h) {
    memset(h, 0, sizeof *h);
}

int hist_bucket(double v) {
    if (!(v >= 0x1p-32)) return 0; /* also NaN */
    if (v >= 0x1p32) return HIST_NBUCKETS - 1;
    int e;
    double m = frexp(v, &e); /* v = m * 2^e, 0.5 <= m < 1, e in [HIST_MIN_EXP, HIST_MAX_EXP] */
    int sub = (int)((2.0 * m - 1.0) * HIST_SUB);
    if (sub >= HIST_SUB) sub = HIST_SUB - 1;
    return 1 + (e - HIST_MIN_EXP) * HIST_SUB + sub;
}

double hist_bucket_lo(int i) {
    if (i <= 0) return 0;
    int e = (i - 1) / HIST_SUB + HIST_MIN_EXP, sub = (i - 1) % HIST_SUB;
    return ldexp(0.5 + 0.5 * sub / HIST_SUB, e);
}

double hist_bucket_hi(int i) {
    if (i <= 0) return 0x1p-32;
    int e = (i - 1) / HIST_SUB + HIST_MIN_EXP, sub = (i - 1) % HIST_SUB;
    return ldexp(0.5 + 0.5 * (sub + 1) / HIST_SUB, e);
}

/* The value a bucket's entries read back as: its midpoint (0 for bucket 0). */
static double bucket_mid(int i) {
    return i == 0 ? 0 : 0.5 * (hist_bucket_lo(i) + hist_bucket_hi(i));
}

void hist_record_n(hist *h, double v, uint64_t count) {
    if (count == 0) return;
    if (!(v >= 0)) v = 0;
    if (h->n == 0 || v < h->min) h->min = v;
    if (h->n == 0 || v > h->max) h->max = v;
    h->n += count;
    h->sum += v * (double)count;
    h->counts[hist_bucket(v)] += count;
}

void hist_record(hist *h, double v) {
    hist_record_n(h, v, 1);
}

void hist_merge(hist *dst, const hist *src) {
    if (src->n == 0) return;
    if (dst->n == 0 || src->min < dst->min) dst->min = src->min;
    if (dst->n == 0 || src->max > dst->max) dst->max = src->max;
    dst->n += src->n;
    dst->sum += src->sum;
    for (int i = 0; i < HIST_NBUCKETS; i++) dst->counts[i] += src->counts[i];
}

double hist_mean(const hist *h) {
    return h->n ? h->sum / (double)h->n : 0;
}

double hist_quantile(const hist *h, double q) {
    if (h->n == 0) return 0;
    if (!(q > 0)) return h->min;
    if (q >= 1) return h->max;
    uint64_t rank = (uint64_t)ceil(q * (double)h->n);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_NBUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            double v = bucket_mid(i);
            return v < h->min ? h->min : v > h->max ? h->max : v;
        }
    }
    return h->max;
}

uint64_t hist_count_le(const hist *h, double bound) {
    if (h->n == 0) return 0;
    if (bound >= h->max) return h->n;
    if (bound < h->min) return 0;
    uint64_t c = 0;
    for (int i = 0; i < HIST_NBUCKETS && bucket_mid(i) <= bound; i++) c += h->counts[i];
    return c;
}

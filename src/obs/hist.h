/* hist.h - histograms of non-negative values with bounded relative error,
 * for latency percentiles (kiln bench) and the server's metrics.
 *
 * HDR-style log-linear buckets: each power of two is split into
 * HIST_SUB linear sub-buckets, so every bucket is at most 1/HIST_SUB of its
 * lower edge wide and a value read back from the histogram (a quantile) is
 * within HIST_REL_ERROR of a recorded value of that rank. Values are doubles
 * in whatever unit the caller picks (seconds, milliseconds, tokens);
 * recordable values span [2^-32, 2^32) (about 2.3e-10 to 4.3e9); smaller
 * ones (zero included) land in a bucket of their own read back as 0, larger
 * ones are clamped into the top bucket. count, sum, min and max are exact.
 *
 * A hist is a fixed-size value (about 64 KiB; no allocation) and is not
 * synchronised: a caller sharing one between threads locks around it.
 */
#ifndef KILN_OBS_HIST_H
#define KILN_OBS_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB      (1 << HIST_SUB_BITS) /* sub-buckets per power of two */
#define HIST_MIN_EXP  (-31)                /* the lowest octave is [2^-32, 2^-31) */
#define HIST_MAX_EXP  32                   /* the highest is [2^31, 2^32) */
#define HIST_NBUCKETS (1 + (HIST_MAX_EXP - HIST_MIN_EXP + 1) * HIST_SUB)
/* Largest relative distance between a quantile read back (a bucket's
 * midpoint) and the recorded value it stands for: half a bucket's width
 * over its lower edge. */
#define HIST_REL_ERROR (1.0 / (2 * HIST_SUB))

typedef struct hist {
    uint64_t n;      /* values recorded */
    double sum;      /* their exact sum */
    double min, max; /* exact; 0 when n == 0 */
    uint64_t counts[HIST_NBUCKETS];
} hist;

/* Empties h. */
void hist_init(hist *h);

/* Records value v (negative and NaN values are recorded as 0). */
void hist_record(hist *h, double v);

/* Records value v count times. */
void hist_record_n(hist *h, double v, uint64_t count);

/* Adds src's values to dst. */
void hist_merge(hist *dst, const hist *src);

/* The mean, or 0 when empty. */
double hist_mean(const hist *h);

/* The q-quantile (q in [0, 1]; 0.99 is p99): the value of rank
 * ceil(q * n) (at least 1) read back from its bucket, clamped to
 * [min, max], so within HIST_REL_ERROR of the exact order statistic.
 * 0 when empty. */
double hist_quantile(const hist *h, double q);

/* How many recorded values are <= bound, counting a bucket that straddles
 * bound by whether its midpoint is <= bound (the error of a value read back
 * applies). Prometheus' cumulative "le" buckets come from this. */
uint64_t hist_count_le(const hist *h, double bound);

/* The bucket index a value falls in, and a bucket's lower and upper edge
 * (index 0 is [0, 2^-32)). For tests and exporters. */
int hist_bucket(double v);
double hist_bucket_lo(int i);
double hist_bucket_hi(int i);

#endif

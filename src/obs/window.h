/* window.h - recent samples of one quantity (a latency, a token count) kept
 * with their times in a bounded ring, for statistics over the last N
 * seconds (the diagnostics snapshot's window), which cumulative histograms
 * cannot give. Exact percentiles of the samples in the window; when the
 * ring overflowed inside the window, covered_s says how much of it the
 * statistics cover. Thread-safe (a mutex per ring; win_add is a few
 * stores). */
#ifndef KILN_OBS_WINDOW_H
#define KILN_OBS_WINDOW_H

#include <stdint.h>

typedef struct win win;

/* A ring of cap samples (cap >= 1), or NULL when out of memory. */
win *win_create(int32_t cap);
void win_destroy(win *w); /* NULL is a no-op */

/* Records value v at time t (kiln_now_s() seconds; non-decreasing per
 * caller is not required). NULL w is a no-op. */
void win_add(win *w, double t, double v);

typedef struct win_stats {
    uint64_t n; /* samples in the window */
    double
        covered_s; /* seconds of the window the samples cover (< window when the ring overflowed) */
    double sum, mean, p50, p90, p99, max; /* 0 when n == 0 */
} win_stats;

/* Statistics of the samples with time in (now - window_s, now]. */
void win_get(win *w, double now, double window_s, win_stats *out);

#endif

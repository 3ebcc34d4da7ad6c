/* metrics.h - a thread-safe registry of metric families (counters, gauges,
 * histograms) with a Prometheus text exposition format 0.0.4 writer, for the
 * server's /metrics endpoint and anything else that wants counts.
 *
 * A registry holds families, registered once at start-up; a family has a
 * name, a one-line help text, a type and a fixed list of label names. A
 * series is one combination of label values; it is created on first update
 * and lives until the registry is destroyed. Families are written in
 * registration order, series in creation order, so the output is stable.
 *
 * Names are checked at registration so the exposition is valid and passes
 * `promtool check metrics` lint: metric and label names are lowercase
 * snake_case, [a-z_][a-z0-9_]* (stricter than the format, whose lint rejects
 * camelCase and colons); counters end in _total and no other family does; no
 * family ends in _bucket, _count or _sum (a histogram's series suffixes), so
 * no two families' series can collide; family names are unique; help is not
 * empty. Label names do not start with "__", are distinct, and a histogram
 * may not use "le". Name things in base units (_seconds, _bytes): the lint
 * flags milliseconds and the like.
 *
 * Threads: every function is thread-safe. Updates lock only their family, so
 * updates to different families never contend; metrics_write locks each
 * family in turn while it copies it out. A family holds at most
 * METRICS_MAX_SERIES series; updates that would create more are dropped (with
 * a warning logged once per family), which bounds memory when a label value
 * comes from user input.
 */
#ifndef KILN_OBS_METRICS_H
#define KILN_OBS_METRICS_H

#include "kiln.h"

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_SERIES 1024 /* per family */

typedef struct metrics metrics;
typedef struct metric metric; /* one family: name, help, type, label names */

/* An empty registry, or NULL when out of memory. */
metrics *metrics_create(void);
/* Frees the registry, its families and series. No thread may use m, or a
 * metric from it, during or after the call. NULL is a no-op. */
void metrics_destroy(metrics *m);

/* Register a family once (at start-up). name: a valid Prometheus metric name
 * (see above; counters must end in _total); help: one line (a newline in it
 * is escaped); labels: NULL-terminated label names, or NULL for none; all
 * strings are copied. Histograms take their exported upper bounds (n_bounds
 * >= 0 of them: finite, non-negative since hist records no negative values,
 * strictly ascending; copied; +Inf implied). Returns the family, owned by
 * the registry, or NULL with kiln_fail() recording why (KILN_ERR_INVALID_ARG
 * naming a bad or duplicate name, label or bounds; KILN_ERR_NOMEM). */
metric *metrics_counter(metrics *m, const char *name, const char *help, const char *const *labels);
metric *metrics_gauge(metrics *m, const char *name, const char *help, const char *const *labels);
metric *metrics_histogram(metrics *m, const char *name, const char *help, const char *const *labels,
                          const double *bounds, int n_bounds);

/* Update one series, selected by label values (NULL-terminated, as many as
 * the family's labels; NULL when it has none; copied on first use); the series
 * is created on first use. Thread-safe; cheap (a family lock and a hash
 * lookup; no allocation after a series exists). Label values should be UTF-8;
 * invalid bytes are written as U+FFFD.
 *
 * Misuse is dropped, never fatal, and logged once per family: a wrong number
 * of label values, the wrong family type, a negative or NaN increment of a
 * counter, or a new series beyond METRICS_MAX_SERIES. f == NULL is a no-op
 * (so a failed registration does not crash the code that updates it). */
void metric_inc(metric *f, const char *const *values, double v); /* counter / gauge += v */
/* gauge = v; also counters, to mirror a count kept elsewhere (CPU seconds). */
void metric_set(metric *f, const char *const *values, double v);
void metric_observe(metric *f, const char *const *values, double v); /* histogram */

/* Read back (tests, dashboards). metric_value: a counter's or gauge's value;
 * metric_quantile: the q-quantile (q in [0, 1]) of a histogram series, within
 * HIST_REL_ERROR (obs/hist.h); metric_count: a histogram series' number of
 * observations. NAN (0 for metric_count) when the series does not exist or
 * the family is of another type. */
double metric_value(metric *f, const char *const *values);
double metric_quantile(metric *f, const char *const *values, double q);
uint64_t metric_count(metric *f, const char *const *values);

/* Registers fn(user), called (in registration order, without any registry
 * lock held, so it may update metrics) at the start of each metrics_write, to
 * set gauges that are read at scrape time (RSS, queue depth). fn may run on
 * any thread that scrapes, concurrently with itself when two threads scrape
 * at once. KILN_ERR_NOMEM on failure. */
kiln_status metrics_on_scrape(metrics *m, void (*fn)(void *user), void *user);

/* size bytes of zeroed memory owned by the registry and freed by
 * metrics_destroy (state for a scrape callback), or NULL when out of memory.
 * Thread-safe. */
void *metrics_alloc(metrics *m, size_t size);

/* Writes the whole registry in Prometheus text exposition format 0.0.4
 * (# HELP, # TYPE, series with escaped label values, histogram _bucket{le=...}
 * cumulative incl. +Inf, _sum, _count) into a malloc'd NUL-terminated string
 * (*out, *len; the caller frees *out). A family with no series yet is written
 * as its HELP and TYPE lines only. KILN_ERR_NOMEM on failure (*out = NULL). */
kiln_status metrics_write(metrics *m, char **out, size_t *len);

/* Registers the standard process families, updated at scrape time from
 * obs/proc.h: process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_cpu_seconds_total, process_start_time_seconds, process_open_fds and
 * process_max_fds. Call once per registry. KILN_ERR_INVALID_ARG when one of
 * them cannot be registered (already registered, or out of memory: the
 * recorded message says which); KILN_ERR_NOMEM. (Defined in proc.c.) */
kiln_status metrics_add_process(metrics *m);

/* Standard bounds: latency in seconds (0.001 .. 960, 24 values: 1, 2.5, 5,
 * 7.5 per decade up to 10, then 20, 30, 60, 120, 240, 480, 960: a long
 * generation lasts minutes), fine latency for per-token and sub-millisecond
 * stages (0.0001 .. 1, 16 values), token counts (1 .. 131072, 13 values)
 * and sizes (1, 2, 4, ... 1024) for batch sizes. */
extern const double metrics_latency_bounds[];
extern const int metrics_n_latency_bounds;
extern const double metrics_fine_bounds[];
extern const int metrics_n_fine_bounds;
extern const double metrics_token_bounds[];
extern const int metrics_n_token_bounds;
extern const double metrics_size_bounds[];
extern const int metrics_n_size_bounds;

#endif

/* trace_doc.h - Chrome traces read back: a Chrome Trace Event JSON document
 * in object form (what trace_write makes, gzip-compressed or not) reduced to
 * what the analyses need - the durations of the complete ("X") spans by
 * name, each thread's spans and name, the trace's extent and its dropped
 * count - and the statistics `kiln trace summary` prints and the server's
 * benchmark-with-profiling answers with (per-span count, total, mean, p50,
 * p99; busy fraction per thread; the step-time distribution).
 *
 * Reading does not build the whole document: the traceEvents array is
 * parsed one event at a time (jansson, JSON_DISABLE_EOF_CHECK), so memory
 * is the text plus a few numbers per span, not a JSON tree per event.
 * Times are milliseconds. A trace_doc is owned by one thread at a time.
 */
#ifndef KILN_OBS_TRACE_DOC_H
#define KILN_OBS_TRACE_DOC_H

#include "base/status.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The durations (ms) of the spans of one name, in file order until a
 * statistics call sorts them. */
typedef struct trace_doc_series {
    char *name;
    double *v;
    size_t n, cap;
} trace_doc_series;

/* One thread: its name (from the thread_name metadata event; NULL when
 * none) and its spans' [start, end) in ms. */
typedef struct trace_doc_thread {
    long long tid;
    char *name;
    double *start, *end;
    size_t n, cap;
} trace_doc_thread;

typedef struct trace_doc {
    trace_doc_series *s; /* in order of first appearance */
    size_t n_s, cap_s;
    trace_doc_thread *th;
    size_t n_th, cap_th;
    double t_min, t_max; /* the events' extent (ms); both 0 when none */
    long long dropped;   /* otherData.dropped_events (0 when absent) */
    bool oom;            /* sticky: an allocation failed while reading */
} trace_doc;

/* Per-span statistics (ms). */
typedef struct trace_doc_stats {
    const char *name; /* borrowed from the series */
    size_t count;
    double total, mean, p50, p99, max;
} trace_doc_stats;

/* Reads the trace file at path (gzip-compressed or not: base/gz.h decides
 * by the magic bytes) into *t. KILN_OK, or an error naming the path (and
 * the byte offset of bad JSON); *t is empty then. trace_doc_free frees. */
kiln_status trace_doc_load(trace_doc *t, const char *path);
/* The same from text[0..n); what names it in error messages. */
kiln_status trace_doc_parse(trace_doc *t, const char *text, size_t n, const char *what);
void trace_doc_free(trace_doc *t);

/* The series called name, or NULL. */
trace_doc_series *trace_doc_find(const trace_doc *t, const char *name);
/* Sorts s's durations (ascending) and fills *out. */
void trace_doc_series_stats(trace_doc_series *s, trace_doc_stats *out);
/* The time covered by the union of th's spans (ms). */
double trace_doc_busy_ms(const trace_doc_thread *th);
/* Sorts v[0..n) ascending. */
void trace_doc_sort(double *v, size_t n);
/* The q-quantile (nearest rank) of sorted v[0..n); 0 when n is 0. */
double trace_doc_quantile(const double *v, size_t n, double q);
double trace_doc_mean(const double *v, size_t n);

/* The summary as JSON (new reference; NULL on out of memory):
 *   {"extent_ms", "dropped_events", "span_names",
 *    "spans": [{"name","count","total_ms","mean_ms","p50_ms","p99_ms","max_ms"}],
 *    "threads": [{"tid","name","busy_ms","busy_fraction"}],
 *    "step_ms": {"count","min","p10","p50","p90","p99","max","mean"} or null}
 * spans by total time, the largest first, at most max_spans of them (0: all);
 * threads without spans left out; step_ms from the spans named "step". */
json_t *trace_doc_summary_json(trace_doc *t, size_t max_spans);

#endif

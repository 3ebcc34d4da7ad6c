/* trace.h - the trace recorder: timed spans, async slices, flows, counters
 * and instants recorded by any thread into per-thread buffers while a trace
 * session is active, written out as Chrome Trace Event JSON (object form)
 * that Perfetto, chrome://tracing and speedscope read.
 *
 * Cost. With no session active an instrumented point costs one relaxed
 * atomic load (trace_on()); callers test it before computing arguments:
 *
 *     int64_t t0 = trace_on() ? trace_now() : 0;
 *     ... work ...
 *     if (t0) trace_span("forward", "engine", t0, trace_now() - t0, NULL, 0);
 *
 * While a session records, an event takes no lock: a thread appends to its
 * own buffer (a list of chunks it allocates itself) after reserving a place
 * in the session's max_events budget with one atomic add; events beyond
 * the budget are counted as dropped. A thread's buffer is registered once
 * (the first time it records or names itself), under a lock.
 *
 * Strings. name, cat, argument keys and counter names are stored as
 * pointers, not copied: they must be string literals (or otherwise outlive
 * the session's trace_write). Thread names are copied.
 *
 * Time. Timestamps are int64 nanoseconds of CLOCK_MONOTONIC (trace_now(),
 * the same clock as kiln_now_ns()); the JSON has microseconds since the
 * session started, with three decimals.
 *
 * One session at a time in the process; trace_start while one is active
 * fails with KILN_ERR_BUSY. trace_start/stop/write/free are called by one
 * controlling thread; the recording functions from any thread.
 */
#ifndef KILN_OBS_TRACE_H
#define KILN_OBS_TRACE_H

#include "base/status.h"
#include "base/time.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    TRACE_DETAIL_STEPS = 1, /* engine steps and their stages */
    TRACE_DETAIL_OPS = 2,   /* and per-layer operations inside forward passes */
} trace_detail;

typedef struct trace_opts {
    int64_t max_events;  /* events kept in all (0: TRACE_DEFAULT_MAX_EVENTS) */
    trace_detail detail; /* 0: TRACE_DETAIL_STEPS */
} trace_opts;

#define TRACE_DEFAULT_MAX_EVENTS (1 << 20)
#define TRACE_MAX_ARGS           4

/* A numeric argument of a span or a counter value. */
typedef struct trace_arg {
    const char *key; /* a literal */
    bool is_int;
    union {
        int64_t i;
        double d;
    } v;
} trace_arg;

#define TRACE_I(k, x) ((trace_arg){.key = (k), .is_int = true, .v.i = (int64_t)(x)})
#define TRACE_D(k, x) ((trace_arg){.key = (k), .is_int = false, .v.d = (double)(x)})

typedef struct trace_session trace_session;

typedef struct trace_stats {
    int64_t events;        /* recorded (kept) */
    int64_t dropped;       /* did not fit max_events */
    int64_t dropped_flows; /* flow starts or ends without their other half (at write) */
    int64_t fixed_nesting; /* spans shortened to nest in their parent (at write) */
    int32_t threads;       /* threads that recorded or named themselves */
} trace_stats;

/* The recording level: 0 off, else the active session's trace_detail. */
extern atomic_int trace_level_;

/* True while a session records. One relaxed load: the disabled fast path. */
static inline bool trace_on(void) {
    return atomic_load_explicit(&trace_level_, memory_order_relaxed) != 0;
}
/* True while a session records at detail=ops. */
static inline bool trace_on_ops(void) {
    return atomic_load_explicit(&trace_level_, memory_order_relaxed) >= TRACE_DETAIL_OPS;
}
/* The trace clock: CLOCK_MONOTONIC in nanoseconds (never 0). */
static inline int64_t trace_now(void) {
    return kiln_now_ns();
}

/* Starts recording. Returns the session (the caller frees it with
 * trace_free), or NULL with *st set: KILN_ERR_BUSY when one is active,
 * KILN_ERR_NOMEM. o may be NULL (defaults). */
trace_session *trace_start(const trace_opts *o, kiln_status *st);
/* Stops recording: after it returns no thread adds to s (events being
 * appended when it was called are finished first; it waits for them).
 * Idempotent. */
void trace_stop(trace_session *s);
/* Writes s (stopped first if it is not) to path as Chrome Trace Event JSON,
 * gzip-compressed when path ends in ".gz".
 * other (borrowed, may be NULL) is an object merged into "otherData"
 * (version, model, threads, schedule, machine limits: the caller's); the
 * recorder adds max_events, dropped_events, dropped_flows, fixed_nesting
 * and detail.
 * Writing enforces the rules viewers check: spans strictly nested per
 * thread, async slices paired, flows matched (unmatched ones dropped and
 * counted). KILN_OK, or an error naming the file. */
kiln_status trace_write(trace_session *s, const char *path, const json_t *other);
/* The same trace as a malloc'd NUL-terminated string (*len bytes; the
 * caller frees), or NULL with kiln_fail() saying why. */
char *trace_text(trace_session *s, const json_t *other, size_t *len);
/* Counts so far (dropped_flows and fixed_nesting after trace_write). */
void trace_get_stats(const trace_session *s, trace_stats *out);
/* Stops s if needed and frees it. NULL is a no-op. */
void trace_free(trace_session *s);

/* Recording (any thread; each returns at once when no session records). */

/* A complete span ("X"): [t0, t0 + dur) in trace_now() nanoseconds, with
 * up to TRACE_MAX_ARGS numeric arguments (args may be NULL when n is 0). */
void trace_span(const char *name, const char *cat, int64_t t0, int64_t dur, const trace_arg *args,
                int n_args);
/* An async slice ("b"/"e") on the track of (cat, id): overlapping lifetimes
 * such as a request's queued/prefill/decode phases. */
void trace_async_begin(const char *name, const char *cat, uint64_t id);
void trace_async_end(const char *name, const char *cat, uint64_t id);
/* A flow arrow from the span enclosing trace_flow_start on one thread to
 * the span enclosing trace_flow_end with the same id (on another). */
void trace_flow_start(const char *name, uint64_t id);
void trace_flow_end(const char *name, uint64_t id);
/* A counter ("C") sample: one series per argument key. */
void trace_counter(const char *name, const trace_arg *args, int n_args);
/* An instant ("i", thread scope) with optional arguments. */
void trace_instant(const char *name, const char *cat, const trace_arg *args, int n_args);
/* Names the calling thread in traces (copied; works with or without an
 * active session; keeps the first 31 bytes). */
void trace_thread_name(const char *name);

/* The step observer: a function the schedulers (and the embeddings
 * batchers, once per pass) call at the end of every engine step they run
 * (after the step's trace span), on their engine
 * threads, with the step's trace start (0 when trace_on() was false when the
 * step began). The HTTP profiler (server/api_prof.c) uses it to start and
 * stop a session exactly at step boundaries. NULL: none; the check is one
 * relaxed load. The hook must be cheap when it has nothing to do. */
typedef void (*trace_step_fn)(int64_t t_step);
extern _Atomic(trace_step_fn) trace_step_hook_;
static inline void trace_step_done(int64_t t_step) {
    trace_step_fn f = atomic_load_explicit(&trace_step_hook_, memory_order_acquire);
    if (f) f(t_step);
}
static inline void trace_set_step_hook(trace_step_fn f) {
    atomic_store_explicit(&trace_step_hook_, f, memory_order_release);
}

/* A span over a block of code (the instrumentation's shorthand):
 *     TRACE_SCOPE_BEGIN(t);  ... ;  TRACE_SCOPE_END(t, "sample", "engine");
 */
#define TRACE_SCOPE_BEGIN(var) int64_t var = trace_on() ? trace_now() : 0
#define TRACE_SCOPE_END(var, name, cat)                                                            \
    do {                                                                                           \
        if (var) trace_span((name), (cat), (var), trace_now() - (var), NULL, 0);                   \
    } while (0)

/* A chain of back-to-back spans: the phases of a forward pass, each timed
 * from the end of the one before (one clock reading per phase), grouped
 * into enclosing spans (a layer's attention, its FFN). Off (started with
 * on false), every call is one test of l->t:
 *
 *     trace_lap_start(&k, trace_on_ops());   (once per pass)
 *     trace_lap_open(&k);                    a group begins
 *     ... ; trace_lap_span(&k, "attn_qkv", "op", &a);
 *     ... ; trace_lap_span(&k, "attn_core", "op", &a);
 *     trace_lap_close(&k, "attention", "op", &a);
 *     ...
 *     trace_lap_end(&k);                     (once per pass)
 *
 * The spans are kept in the chain and recorded TRACE_LAP_SPANS at a time
 * (and at trace_lap_end) with one reservation and one stop handshake for
 * all of them: inside a forward pass, whose products evict the recorder's
 * state from the caches between phases, that is several times cheaper
 * than one trace_span per phase. Spans that began before the session that
 * records them are left out. The spans of one chain nest strictly (a group
 * ends where its last phase does), so they nest in any span the caller
 * opened before the chain began and closes after it ended on the same
 * thread. A chain belongs to one thread. */
#define TRACE_LAP_SPANS 48

struct trace_lap_rec {
    const char *name, *cat; /* literals */
    int64_t ts, dur;
    trace_arg arg;
    bool has_arg;
};

typedef struct trace_lap {
    int64_t t0; /* the open group's start */
    int64_t t;  /* the last lap point (0: the chain is off) */
    int n;      /* spans kept */
    struct trace_lap_rec rec[TRACE_LAP_SPANS];
} trace_lap;

/* Out of line: records the kept spans and empties the chain's buffer. */
void trace_lap_flush(trace_lap *l);

static inline void trace_lap_start(trace_lap *l, bool on) {
    l->t0 = l->t = on ? trace_now() : 0;
    l->n = 0;
}
static inline void trace_lap_keep(trace_lap *l, const char *name, const char *cat, int64_t ts,
                                  int64_t dur, const trace_arg *arg) {
    struct trace_lap_rec *r = &l->rec[l->n++];
    r->name = name, r->cat = cat, r->ts = ts, r->dur = dur;
    r->has_arg = arg != NULL;
    if (arg) r->arg = *arg;
    if (l->n == TRACE_LAP_SPANS) trace_lap_flush(l);
}
/* A phase: the span from the last lap point to now (arg: NULL or one
 * argument); now becomes the lap point. */
static inline void trace_lap_span(trace_lap *l, const char *name, const char *cat,
                                  const trace_arg *arg) {
    if (!l->t) return;
    int64_t t = trace_now();
    trace_lap_keep(l, name, cat, l->t, t - l->t, arg);
    l->t = t;
}
/* A group begins at the last lap point. */
static inline void trace_lap_open(trace_lap *l) {
    l->t0 = l->t;
}
/* The group: the span from its start to the last lap point. */
static inline void trace_lap_close(trace_lap *l, const char *name, const char *cat,
                                   const trace_arg *arg) {
    if (l->t) trace_lap_keep(l, name, cat, l->t0, l->t - l->t0, arg);
}
/* Records what the chain still keeps and turns it off. */
static inline void trace_lap_end(trace_lap *l) {
    if (l->n) trace_lap_flush(l);
    l->t = 0;
}

#endif

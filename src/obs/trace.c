/* trace.c - the trace recorder of trace.h and its Chrome Trace Event writer.
 *
 * Threads. Every thread that records (or names itself) owns one
 * trace_thread block, registered once in a process-wide list under g_mu and
 * kept for the process's life (a later session reuses it), so a thread can
 * name itself before any session starts. Only the owner appends to its
 * block's chunks, with no lock. The stop handshake: a recorder sets its
 * block's busy flag, then checks trace_level_ (both sequentially
 * consistent); trace_stop clears trace_level_, then waits for each busy
 * flag to drop before taking the block's chunks into the session. Either
 * the recorder sees the level cleared, or the stopper sees it busy, so no
 * event is half-written when the chunks move, and the session outlives every
 * recorder that reached it.
 *
 * Budget. Each event reserves its place with one relaxed atomic add on the
 * session's counter (a span chain's batch, with one add for all of it);
 * past max_events it counts as dropped instead.
 *
 * Writing (trace_write) happens on stopped sessions only and repairs what
 * viewers reject: spans are sorted per thread (start, then longer first) and
 * a span overrunning its parent is cut at the parent's end; an async end
 * without a begin is dropped and a begin without an end is closed at the
 * session's stop; flow starts and ends without their other half are dropped.
 * A path ending in ".gz" is written gzip-compressed (zlib's gzwrite).
 */
#include "obs/trace.h"

#include "base/strbuf.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define CHUNK_EVENTS 512

typedef struct trace_ev {
    const char *name, *cat;
    int64_t ts, dur; /* dur: X only */
    uint64_t id;     /* b/e/s/f */
    int32_t tid;     /* filled in at stop */
    char ph;
    uint8_t n_args;
    trace_arg args[TRACE_MAX_ARGS];
} trace_ev;

typedef struct chunk {
    struct chunk *next;
    int n;
    trace_ev ev[CHUNK_EVENTS];
} chunk;

typedef struct trace_thread {
    struct trace_thread *next; /* the registry, under g_mu */
    int32_t tid;
    char name[32];   /* under g_mu */
    atomic_int busy; /* the owner is appending (see the top of the file) */
    chunk *head, *tail;
} trace_thread;

typedef struct trace_tinfo {
    int32_t tid;
    char name[32];
    chunk *head;
} trace_tinfo;

struct trace_session {
    int64_t max_events;
    trace_detail detail;
    int64_t t_start, t_stop;
    atomic_int_fast64_t reserved, dropped;
    bool stopped;
    trace_tinfo *threads; /* taken at stop */
    int32_t n_threads;
    int64_t dropped_flows, fixed_nesting;
};

atomic_int trace_level_;
_Atomic(trace_step_fn) trace_step_hook_;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static trace_thread *g_threads; /* under g_mu */
static int32_t g_n_threads;     /* under g_mu */
static trace_session *_Atomic g_sess;
static _Thread_local trace_thread *tl_thr;

static trace_thread *thr_get(void) {
    if (tl_thr) return tl_thr;
    trace_thread *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    pthread_mutex_lock(&g_mu);
    t->tid = ++g_n_threads;
    t->next = g_threads;
    g_threads = t;
    pthread_mutex_unlock(&g_mu);
    return tl_thr = t;
}

void trace_thread_name(const char *name) {
    trace_thread *t = thr_get();
    if (!t) return;
    pthread_mutex_lock(&g_mu);
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    pthread_mutex_unlock(&g_mu);
}

/* Marks t busy and returns the recording session; NULL (and t not busy)
 * when none records. rec_end ends what it began. */
static trace_session *rec_begin(trace_thread *t) {
    atomic_store(&t->busy, 1);
    trace_session *s =
        atomic_load(&trace_level_) ? atomic_load_explicit(&g_sess, memory_order_relaxed) : NULL;
    if (!s) atomic_store_explicit(&t->busy, 0, memory_order_release);
    return s;
}

static void rec_end(trace_thread *t) {
    atomic_store_explicit(&t->busy, 0, memory_order_release);
}

/* The next free event of t's buffer (a new chunk when the last is full;
 * t->tail->n++ takes it), or NULL out of memory. t is busy. */
static trace_ev *rec_slot(trace_thread *t) {
    if (!t->tail || t->tail->n == CHUNK_EVENTS) {
        chunk *c = malloc(sizeof *c);
        if (!c) return NULL;
        c->next = NULL;
        c->n = 0;
        if (t->tail)
            t->tail->next = c;
        else
            t->head = c;
        t->tail = c;
    }
    return &t->tail->ev[t->tail->n];
}

static void fill(trace_ev *e, char ph, const char *name, const char *cat, int64_t ts, int64_t dur,
                 uint64_t id, const trace_arg *args, int n_args) {
    e->name = name;
    e->cat = cat;
    e->ts = ts;
    e->dur = dur;
    e->id = id;
    e->ph = ph;
    if (n_args > TRACE_MAX_ARGS) n_args = TRACE_MAX_ARGS;
    if (n_args < 0 || !args) n_args = 0;
    e->n_args = (uint8_t)n_args;
    for (int i = 0; i < n_args; i++) e->args[i] = args[i];
}

static void record(char ph, const char *name, const char *cat, int64_t ts, int64_t dur, uint64_t id,
                   const trace_arg *args, int n_args) {
    trace_thread *t = thr_get();
    if (!t) return;
    trace_session *s = rec_begin(t);
    if (!s) return;
    trace_ev *e = NULL;
    if (atomic_fetch_add_explicit(&s->reserved, 1, memory_order_relaxed) < s->max_events)
        e = rec_slot(t);
    if (e) {
        fill(e, ph, name, cat, ts, dur, id, args, n_args);
        t->tail->n++;
    } else {
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
    }
    rec_end(t);
}

void trace_lap_flush(trace_lap *l) {
    int n = l->n;
    l->n = 0;
    trace_thread *t = n ? thr_get() : NULL;
    if (!t) return;
    trace_session *s = rec_begin(t);
    if (!s) return;
    /* spans that began before this session (an earlier one's) stay out */
    int64_t k = 0, dropped = 0;
    for (int i = 0; i < n; i++) k += l->rec[i].ts >= s->t_start;
    int64_t r = atomic_fetch_add_explicit(&s->reserved, k, memory_order_relaxed);
    for (int i = 0; i < n; i++) {
        const struct trace_lap_rec *q = &l->rec[i];
        if (q->ts < s->t_start) continue;
        trace_ev *e = r++ < s->max_events ? rec_slot(t) : NULL;
        if (!e) {
            dropped++;
            continue;
        }
        fill(e, 'X', q->name, q->cat, q->ts, q->dur < 0 ? 0 : q->dur, 0, &q->arg, q->has_arg);
        t->tail->n++;
    }
    if (dropped) atomic_fetch_add_explicit(&s->dropped, dropped, memory_order_relaxed);
    rec_end(t);
}

void trace_span(const char *name, const char *cat, int64_t t0, int64_t dur, const trace_arg *args,
                int n_args) {
    if (!trace_on()) return;
    record('X', name, cat, t0, dur < 0 ? 0 : dur, 0, args, n_args);
}

void trace_async_begin(const char *name, const char *cat, uint64_t id) {
    if (trace_on()) record('b', name, cat, trace_now(), 0, id, NULL, 0);
}

void trace_async_end(const char *name, const char *cat, uint64_t id) {
    if (trace_on()) record('e', name, cat, trace_now(), 0, id, NULL, 0);
}

void trace_flow_start(const char *name, uint64_t id) {
    if (trace_on()) record('s', name, "flow", trace_now(), 0, id, NULL, 0);
}

void trace_flow_end(const char *name, uint64_t id) {
    if (trace_on()) record('f', name, "flow", trace_now(), 0, id, NULL, 0);
}

void trace_counter(const char *name, const trace_arg *args, int n_args) {
    if (trace_on()) record('C', name, "counter", trace_now(), 0, 0, args, n_args);
}

void trace_instant(const char *name, const char *cat, const trace_arg *args, int n_args) {
    if (trace_on()) record('i', name, cat, trace_now(), 0, 0, args, n_args);
}

trace_session *trace_start(const trace_opts *o, kiln_status *st) {
    trace_session *s = calloc(1, sizeof *s);
    if (!s) {
        if (st) *st = kiln_fail(KILN_ERR_NOMEM, "trace: out of memory");
        return NULL;
    }
    s->max_events = o && o->max_events > 0 ? o->max_events : TRACE_DEFAULT_MAX_EVENTS;
    s->detail = o && o->detail == TRACE_DETAIL_OPS ? TRACE_DETAIL_OPS : TRACE_DETAIL_STEPS;
    pthread_mutex_lock(&g_mu);
    if (atomic_load(&g_sess)) {
        pthread_mutex_unlock(&g_mu);
        free(s);
        if (st) *st = kiln_fail(KILN_ERR_BUSY, "trace: a session is already recording");
        return NULL;
    }
    s->t_start = trace_now();
    atomic_store(&g_sess, s);
    atomic_store(&trace_level_, (int)s->detail);
    pthread_mutex_unlock(&g_mu);
    if (st) *st = KILN_OK;
    return s;
}

void trace_stop(trace_session *s) {
    if (!s || s->stopped) return;
    pthread_mutex_lock(&g_mu);
    atomic_store(&trace_level_, 0);
    s->t_stop = trace_now();
    int32_t n = 0;
    for (trace_thread *t = g_threads; t; t = t->next) n++;
    s->threads = calloc((size_t)(n ? n : 1), sizeof *s->threads);
    int32_t k = 0;
    for (trace_thread *t = g_threads; t; t = t->next) {
        while (atomic_load(&t->busy)) sched_yield();
        if (s->threads) {
            trace_tinfo *ti = &s->threads[k++];
            ti->tid = t->tid;
            memcpy(ti->name, t->name, sizeof ti->name);
            ti->head = t->head;
        } else { /* no room to keep them: drop the events */
            for (chunk *c = t->head, *nx; c; c = nx) {
                nx = c->next;
                atomic_fetch_add(&s->dropped, c->n);
                free(c);
            }
        }
        t->head = t->tail = NULL;
    }
    s->n_threads = k;
    atomic_store(&g_sess, NULL);
    s->stopped = true;
    pthread_mutex_unlock(&g_mu);
}

void trace_get_stats(const trace_session *s, trace_stats *out) {
    memset(out, 0, sizeof *out);
    if (!s) return;
    int64_t r = atomic_load(&((trace_session *)s)->reserved);
    out->dropped = atomic_load(&((trace_session *)s)->dropped);
    out->events = r - out->dropped; /* every attempt reserved, kept or not */
    out->dropped_flows = s->dropped_flows;
    out->fixed_nesting = s->fixed_nesting;
    if (s->stopped) {
        for (int32_t i = 0; i < s->n_threads; i++)
            if (s->threads[i].head || s->threads[i].name[0]) out->threads++;
    } else {
        pthread_mutex_lock(&g_mu);
        out->threads = g_n_threads;
        pthread_mutex_unlock(&g_mu);
    }
}

void trace_free(trace_session *s) {
    if (!s) return;
    trace_stop(s);
    for (int32_t i = 0; i < s->n_threads; i++)
        for (chunk *c = s->threads[i].head, *nx; c; c = nx) {
            nx = c->next;
            free(c);
        }
    free(s->threads);
    free(s);
}

/* ---- writing ---- */

static void put_str(strbuf *b, const char *s) {
    strbuf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            strbuf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            strbuf_printf(b, "\\u%04x", *p);
        else
            strbuf_put(b, (const char *)p, 1);
    }
    strbuf_put(b, "\"", 1);
}

static void put_us(strbuf *b, int64_t ns) {
    if (ns < 0) ns = 0;
    strbuf_printf(b, "%" PRId64 ".%03d", ns / 1000, (int)(ns % 1000));
}

static void put_args(strbuf *b, const trace_ev *e) {
    strbuf_puts(b, ",\"args\":{");
    for (int i = 0; i < e->n_args; i++) {
        if (i) strbuf_put(b, ",", 1);
        put_str(b, e->args[i].key);
        if (e->args[i].is_int)
            strbuf_printf(b, ":%" PRId64, e->args[i].v.i);
        else
            strbuf_printf(b, ":%.9g", isfinite(e->args[i].v.d) ? e->args[i].v.d : 0.0);
    }
    strbuf_put(b, "}", 1);
}

typedef struct writer {
    strbuf b;
    FILE *f;
    gzFile gz; /* instead of f for a path ending in ".gz" */
    int pid;
    int64_t t0;
    bool first;
    bool io_err;
} writer;

/* Writes the buffer out to w->f once it is large (or at the end); without
 * a file the whole trace stays in w->b (trace_text). */
static void w_flush(writer *w, bool force) {
    if ((w->f || w->gz) && w->b.n && (force || w->b.n > (1 << 20))) {
        if (w->gz ? gzwrite(w->gz, w->b.p, (unsigned)w->b.n) != (int)w->b.n
                  : fwrite(w->b.p, 1, w->b.n, w->f) != w->b.n)
            w->io_err = true;
        w->b.n = 0;
        w->b.p[0] = 0;
    }
}

static void w_event(writer *w, const trace_ev *e) {
    strbuf *b = &w->b;
    strbuf_puts(b, w->first ? "\n" : ",\n");
    w->first = false;
    strbuf_printf(b, "{\"ph\":\"%c\",\"pid\":%d,\"tid\":%d,\"ts\":", e->ph, w->pid, e->tid);
    put_us(b, e->ts - w->t0);
    strbuf_puts(b, ",\"name\":");
    put_str(b, e->name);
    if (e->cat) {
        strbuf_puts(b, ",\"cat\":");
        put_str(b, e->cat);
    }
    switch (e->ph) {
    case 'X':
        strbuf_puts(b, ",\"dur\":");
        put_us(b, e->dur);
        put_args(b, e);
        break;
    case 'b':
    case 'e':
    case 's':
        strbuf_printf(b, ",\"id\":\"0x%" PRIx64 "\"", e->id);
        break;
    case 'f':
        strbuf_printf(b, ",\"id\":\"0x%" PRIx64 "\",\"bp\":\"e\"", e->id);
        break;
    case 'C':
        put_args(b, e);
        break;
    case 'i':
        strbuf_puts(b, ",\"s\":\"t\"");
        if (e->n_args) put_args(b, e);
        break;
    }
    strbuf_put(b, "}", 1);
    w_flush(w, false);
}

static void w_meta(writer *w, const char *what, int tid, const char *name) {
    strbuf_printf(
        &w->b, "%s{\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"ts\":0,\"name\":\"%s\",\"args\":{\"name\":",
        w->first ? "\n" : ",\n", w->pid, tid, what);
    w->first = false;
    put_str(&w->b, name);
    strbuf_puts(&w->b, "}}");
}

static int cmp_ts(const void *a, const void *b) {
    const trace_ev *x = *(trace_ev *const *)a, *y = *(trace_ev *const *)b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    if (x->dur != y->dur) return x->dur > y->dur ? -1 : 1; /* longer (the parent) first */
    return x < y ? -1 : x > y;                             /* stable: recording order */
}

static bool same_key(const trace_ev *a, const trace_ev *b) {
    return a->id == b->id && !strcmp(a->name, b->name) &&
           !strcmp(a->cat ? a->cat : "", b->cat ? b->cat : "");
}

/* Async slices (v: the b/e/s/f events in time order): pair each end with
 * the earliest open begin of the same (cat, id, name); drop unpaired ends
 * (ph = 0), close unpaired begins at t_stop (into closers). */
static void fix_async(trace_session *s, trace_ev **v, size_t n, trace_ev *closers,
                      size_t *n_closers) {
    bool *open = calloc(n ? n : 1, sizeof *open);
    for (size_t i = 0; i < n; i++) {
        if (v[i]->ph == 'b') {
            if (open) open[i] = true;
            continue;
        }
        if (v[i]->ph != 'e') continue;
        bool paired = false;
        for (size_t j = 0; open && j < i && !paired; j++)
            if (open[j] && same_key(v[j], v[i])) open[j] = false, paired = true;
        if (!paired) v[i]->ph = 0;
    }
    for (size_t j = 0; open && j < n; j++)
        if (open[j]) {
            trace_ev *c = &closers[(*n_closers)++];
            *c = *v[j];
            c->ph = 'e';
            c->ts = s->t_stop > c->ts ? s->t_stop : c->ts;
            c->n_args = 0;
        }
    free(open);
}

/* Flows (v as for fix_async): keep an s and a later f with the same
 * (name, id) as a pair; drop (ph = 0) and count the rest. */
static void fix_flows(trace_session *s, trace_ev **v, size_t n) {
    bool *paired = calloc(n ? n : 1, sizeof *paired);
    for (size_t i = 0; paired && i < n; i++) {
        if (v[i]->ph != 's') continue;
        for (size_t j = i + 1; j < n; j++)
            if (v[j]->ph == 'f' && !paired[j] && same_key(v[i], v[j])) {
                paired[i] = paired[j] = true;
                break;
            }
    }
    for (size_t i = 0; i < n; i++)
        if ((v[i]->ph == 's' || v[i]->ph == 'f') && !(paired && paired[i])) {
            v[i]->ph = 0;
            s->dropped_flows++;
        }
    free(paired);
}

/* Spans of one thread (sorted): cut a span overrunning the one enclosing it. */
static void fix_nesting(trace_session *s, trace_ev **v, size_t n) {
    int64_t stack[64];
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        trace_ev *e = v[i];
        if (e->ph != 'X') continue;
        while (depth && stack[depth - 1] <= e->ts) depth--;
        if (depth && e->ts + e->dur > stack[depth - 1]) {
            e->dur = stack[depth - 1] - e->ts;
            s->fixed_nesting++;
        }
        if (depth < 64) stack[depth++] = e->ts + e->dur;
    }
}

/* The trace to path, or, with path NULL, into *mem (the caller frees). */
static kiln_status write_trace(trace_session *s, const char *path, const json_t *other,
                               strbuf *mem) {
    trace_stop(s);
    kiln_status st = KILN_OK;
    size_t n = 0;
    for (int32_t i = 0; i < s->n_threads; i++)
        for (chunk *c = s->threads[i].head; c; c = c->next) n += (size_t)c->n;
    trace_ev **v = malloc((n ? n : 1) * sizeof *v);
    trace_ev *closers = malloc((n ? n : 1) * sizeof *closers);
    size_t *start = calloc((size_t)s->n_threads + 1, sizeof *start);
    writer w = {.pid = (int)getpid(), .t0 = s->t_start, .first = true};
    if (!v || !closers || !start) {
        st = kiln_fail(KILN_ERR_NOMEM, "trace: out of memory writing %zu events", n);
        goto done;
    }
    size_t k = 0;
    for (int32_t i = 0; i < s->n_threads; i++) {
        start[i] = k;
        for (chunk *c = s->threads[i].head; c; c = c->next)
            for (int j = 0; j < c->n; j++) {
                c->ev[j].tid = s->threads[i].tid;
                if (c->ev[j].ts < s->t_start) { /* began before the session: clip */
                    if (c->ev[j].ph == 'X') c->ev[j].dur -= s->t_start - c->ev[j].ts;
                    if (c->ev[j].dur < 0) c->ev[j].dur = 0;
                    c->ev[j].ts = s->t_start;
                }
                v[k++] = &c->ev[j];
            }
        qsort(v + start[i], k - start[i], sizeof *v, cmp_ts);
        fix_nesting(s, v + start[i], k - start[i]);
    }
    start[s->n_threads] = k;
    /* async and flow matching: those events in one time order over all threads */
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (strchr("besf", v[i]->ph)) m++;
    trace_ev **as = malloc((m ? m : 1) * sizeof *as);
    if (!as) {
        st = kiln_fail(KILN_ERR_NOMEM, "trace: out of memory writing %zu events", n);
        goto done;
    }
    m = 0;
    for (size_t i = 0; i < n; i++)
        if (strchr("besf", v[i]->ph)) as[m++] = v[i];
    qsort(as, m, sizeof *as, cmp_ts);
    size_t n_closers = 0;
    fix_async(s, as, m, closers, &n_closers);
    fix_flows(s, as, m);
    free(as);

    size_t plen = path ? strlen(path) : 0;
    bool gz = plen > 3 && !strcmp(path + plen - 3, ".gz");
    if (path && gz && !(w.gz = gzopen(path, "wb"))) {
        st = kiln_fail(KILN_ERR_IO, "trace: cannot open %s for writing", path);
        goto done;
    }
    if (path && !gz && !(w.f = fopen(path, "wb"))) {
        st = kiln_fail(KILN_ERR_IO, "trace: cannot open %s for writing", path);
        goto done;
    }
    strbuf_puts(&w.b, "{\"displayTimeUnit\":\"ms\",\"otherData\":");
    json_t *od = other ? json_deep_copy(other) : json_object();
    if (!json_is_object(od)) {
        json_decref(od);
        od = json_object();
    }
    json_object_set_new(od, "max_events", json_integer(s->max_events));
    json_object_set_new(od, "dropped_events", json_integer(atomic_load(&s->dropped)));
    json_object_set_new(od, "dropped_flows", json_integer(s->dropped_flows));
    json_object_set_new(od, "fixed_nesting", json_integer(s->fixed_nesting));
    json_object_set_new(od, "detail", json_string(s->detail == TRACE_DETAIL_OPS ? "ops" : "steps"));
    char *ods = json_dumps(od, JSON_COMPACT);
    json_decref(od);
    strbuf_puts(&w.b, ods ? ods : "{}");
    free(ods);
    strbuf_puts(&w.b, ",\"traceEvents\":[");
    w_meta(&w, "process_name", 0, "kiln");
    for (int32_t i = 0; i < s->n_threads; i++) {
        if (start[i] == start[i + 1]) continue;
        char buf[48];
        const char *nm = s->threads[i].name;
        if (!nm[0]) {
            snprintf(buf, sizeof buf, "thread-%d", (int)s->threads[i].tid);
            nm = buf;
        }
        w_meta(&w, "thread_name", s->threads[i].tid, nm);
    }
    for (size_t i = 0; i < n; i++)
        if (v[i]->ph) w_event(&w, v[i]);
    for (size_t i = 0; i < n_closers; i++) w_event(&w, &closers[i]);
    strbuf_puts(&w.b, "\n]}\n");
    if (w.b.oom) {
        st =
            kiln_fail(KILN_ERR_NOMEM, "trace: out of memory writing %s", path ? path : "the trace");
        goto done;
    }
    if (!path) {
        *mem = w.b;
        w.b = (strbuf){0};
        goto done;
    }
    w_flush(&w, true);
    if ((gz ? gzclose_w(w.gz) != Z_OK : fclose(w.f) != 0) || w.io_err)
        st = kiln_fail(KILN_ERR_IO, "trace: writing %s failed", path);
    w.f = NULL, w.gz = NULL;
done:
    if (w.f) fclose(w.f);
    if (w.gz) gzclose_w(w.gz);
    strbuf_free(&w.b);
    free(v);
    free(closers);
    free(start);
    return st;
}

kiln_status trace_write(trace_session *s, const char *path, const json_t *other) {
    return write_trace(s, path, other, NULL);
}

char *trace_text(trace_session *s, const json_t *other, size_t *len) {
    strbuf b = {0};
    if (write_trace(s, NULL, other, &b) != KILN_OK) {
        strbuf_free(&b);
        return NULL;
    }
    *len = b.n;
    return b.p;
}

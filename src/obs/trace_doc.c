/* trace_doc.c - Chrome traces read back and summarised (see trace_doc.h).
 *
 * The document's structure - the outer object (or a bare event array, the
 * other form Chrome accepts) and the traceEvents array - is walked here,
 * punctuation only; every value inside it (keys, each event, otherData) is
 * parsed by jansson with JSON_DISABLE_EOF_CHECK, which stops at the value's
 * end and reports how many bytes it read. */
#include "obs/trace_doc.h"

#include "base/gz.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- growing arrays (a failure sets t->oom and drops the value) */

static bool grow(trace_doc *t, void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * size);
    if (!q) {
        t->oom = true;
        return false;
    }
    *p = q;
    *cap = c;
    return true;
}

static char *dup_str(trace_doc *t, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) t->oom = true;
    return d ? memcpy(d, s, n) : NULL;
}

static trace_doc_series *series_get(trace_doc *t, const char *name) {
    trace_doc_series *s = trace_doc_find(t, name);
    if (s) return s;
    char *nm = dup_str(t, name);
    if (!nm || !grow(t, (void **)&t->s, &t->cap_s, t->n_s + 1, sizeof *t->s)) {
        free(nm);
        return NULL;
    }
    t->s[t->n_s] = (trace_doc_series){.name = nm};
    return &t->s[t->n_s++];
}

static trace_doc_thread *thread_get(trace_doc *t, long long tid) {
    for (size_t i = 0; i < t->n_th; i++)
        if (t->th[i].tid == tid) return &t->th[i];
    if (!grow(t, (void **)&t->th, &t->cap_th, t->n_th + 1, sizeof *t->th)) return NULL;
    t->th[t->n_th] = (trace_doc_thread){.tid = tid};
    return &t->th[t->n_th++];
}

static void push_dur(trace_doc *t, trace_doc_series *s, double d) {
    if (s && grow(t, (void **)&s->v, &s->cap, s->n + 1, sizeof *s->v)) s->v[s->n++] = d;
}

static void push_span(trace_doc *t, trace_doc_thread *th, double s, double e) {
    if (!th) return;
    /* start and end share cap: grow both from the same old value */
    size_t cap = th->cap, cap2 = th->cap;
    if (!grow(t, (void **)&th->start, &cap, th->n + 1, sizeof *th->start)) return;
    if (!grow(t, (void **)&th->end, &cap2, th->n + 1, sizeof *th->end)) return;
    th->cap = cap;
    th->start[th->n] = s;
    th->end[th->n++] = e;
}

/* ---- reading */

static void add_event(trace_doc *t, json_t *e) {
    const char *ph = json_string_value(json_object_get(e, "ph"));
    const char *name = json_string_value(json_object_get(e, "name"));
    if (!ph || !name) return;
    long long tid = json_integer_value(json_object_get(e, "tid"));
    if (!strcmp(ph, "M")) {
        const char *nm = json_string_value(json_object_get(json_object_get(e, "args"), "name"));
        trace_doc_thread *th = nm && !strcmp(name, "thread_name") ? thread_get(t, tid) : NULL;
        char *d = th ? dup_str(t, nm) : NULL;
        if (d) free(th->name), th->name = d;
        return;
    }
    json_t *jts = json_object_get(e, "ts");
    if (!json_is_number(jts)) return;
    double ts = json_number_value(jts) / 1e3, dur = 0;
    if (!strcmp(ph, "X")) {
        dur = json_number_value(json_object_get(e, "dur")) / 1e3;
        push_dur(t, series_get(t, name), dur);
        push_span(t, thread_get(t, tid), ts, ts + dur);
    }
    if (ts < t->t_min) t->t_min = ts;
    if (ts + dur > t->t_max) t->t_max = ts + dur;
}

struct cursor {
    const char *p;
    size_t n, i;
    const char *what;
};

static void skip_ws(struct cursor *c) {
    while (c->i < c->n && strchr(" \t\r\n", c->p[c->i]) && c->p[c->i]) c->i++;
}

/* The next non-space byte (0 at the end), not consumed. */
static char peek(struct cursor *c) {
    skip_ws(c);
    return c->i < c->n ? c->p[c->i] : 0;
}

static kiln_status bad(const struct cursor *c, const char *why) {
    return kiln_fail(KILN_ERR_FORMAT, "%s: bad trace JSON at byte %zu: %s", c->what, c->i, why);
}

/* The JSON value at the cursor (new reference), the cursor moved past it;
 * NULL with kiln_fail() on bad JSON. */
static json_t *value(struct cursor *c) {
    json_error_t e;
    skip_ws(c);
    json_t *v = json_loadb(c->p + c->i, c->n - c->i, JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &e);
    if (!v) {
        kiln_fail(KILN_ERR_FORMAT, "%s: bad trace JSON at byte %zu: %s", c->what,
                  c->i + (size_t)(e.position > 0 ? e.position : 0), e.text);
        return NULL;
    }
    c->i += (size_t)e.position;
    return v;
}

/* The event array at the cursor ('[' next). */
static kiln_status events(trace_doc *t, struct cursor *c) {
    c->i++; /* '[' */
    if (peek(c) == ']') {
        c->i++;
        return KILN_OK;
    }
    for (;;) {
        json_t *e = value(c);
        if (!e) return KILN_ERR_FORMAT;
        if (json_is_object(e)) add_event(t, e);
        json_decref(e);
        char ch = peek(c);
        c->i++;
        if (ch == ']') return KILN_OK;
        if (ch != ',') return bad(c, "expected ',' or ']' in traceEvents");
    }
}

/* The outer object at the cursor ('{' next). */
static kiln_status object(trace_doc *t, struct cursor *c) {
    bool seen = false;
    c->i++; /* '{' */
    if (peek(c) == '}') return bad(c, "no traceEvents array");
    for (;;) {
        json_t *k = value(c);
        if (!k) return KILN_ERR_FORMAT;
        bool is_ev = json_is_string(k) && !strcmp(json_string_value(k), "traceEvents");
        bool is_od = json_is_string(k) && !strcmp(json_string_value(k), "otherData");
        bool is_str = json_is_string(k);
        json_decref(k);
        if (!is_str) return bad(c, "expected a key");
        if (peek(c) != ':') return bad(c, "expected ':'");
        c->i++;
        if (is_ev) {
            if (peek(c) != '[') return bad(c, "traceEvents is not an array");
            kiln_status st = events(t, c);
            if (st) return st;
            seen = true;
        } else {
            json_t *v = value(c);
            if (!v) return KILN_ERR_FORMAT;
            if (is_od) t->dropped = json_integer_value(json_object_get(v, "dropped_events"));
            json_decref(v);
        }
        char ch = peek(c);
        c->i++;
        if (ch == '}') break;
        if (ch != ',') return bad(c, "expected ',' or '}'");
    }
    return seen ? KILN_OK : bad(c, "no traceEvents array");
}

kiln_status trace_doc_parse(trace_doc *t, const char *text, size_t n, const char *what) {
    memset(t, 0, sizeof *t);
    t->t_min = INFINITY;
    t->t_max = -INFINITY;
    struct cursor c = {.p = text, .n = n, .what = what};
    char ch = peek(&c);
    kiln_status st = ch == '{'   ? object(t, &c)
                     : ch == '[' ? events(t, &c)
                                 : bad(&c, "not a JSON object or array");
    if (!st && peek(&c)) st = bad(&c, "data after the trace");
    if (!st && t->oom) st = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory reading the trace", what);
    if (st) {
        trace_doc_free(t);
        return st;
    }
    if (!(t->t_max >= t->t_min)) t->t_min = t->t_max = 0;
    return KILN_OK;
}

kiln_status trace_doc_load(trace_doc *t, const char *path) {
    memset(t, 0, sizeof *t);
    char *text;
    size_t n;
    kiln_status st = kiln_read_file(path, &text, &n);
    if (st) return st;
    st = trace_doc_parse(t, text, n, path);
    free(text);
    return st;
}

void trace_doc_free(trace_doc *t) {
    for (size_t i = 0; i < t->n_s; i++) free(t->s[i].name), free(t->s[i].v);
    for (size_t i = 0; i < t->n_th; i++)
        free(t->th[i].name), free(t->th[i].start), free(t->th[i].end);
    free(t->s);
    free(t->th);
    memset(t, 0, sizeof *t);
}

/* ---- statistics */

trace_doc_series *trace_doc_find(const trace_doc *t, const char *name) {
    for (size_t i = 0; i < t->n_s; i++)
        if (!strcmp(t->s[i].name, name)) return &t->s[i];
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void trace_doc_sort(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
}

double trace_doc_quantile(const double *v, size_t n, double q) {
    if (!n) return 0;
    size_t k = (size_t)ceil(q * (double)n);
    return v[k ? (k > n ? n : k) - 1 : 0];
}

double trace_doc_mean(const double *v, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += v[i];
    return n ? s / (double)n : 0;
}

void trace_doc_series_stats(trace_doc_series *s, trace_doc_stats *out) {
    trace_doc_sort(s->v, s->n);
    double m = trace_doc_mean(s->v, s->n);
    *out = (trace_doc_stats){.name = s->name,
                             .count = s->n,
                             .total = m * (double)s->n,
                             .mean = m,
                             .p50 = trace_doc_quantile(s->v, s->n, 0.5),
                             .p99 = trace_doc_quantile(s->v, s->n, 0.99),
                             .max = s->n ? s->v[s->n - 1] : 0};
}

double trace_doc_busy_ms(const trace_doc_thread *th) {
    size_t n = th->n;
    double *iv = malloc((n ? 2 * n : 1) * sizeof *iv); /* (start, end) pairs */
    if (!iv) return 0;
    for (size_t i = 0; i < n; i++) iv[2 * i] = th->start[i], iv[2 * i + 1] = th->end[i];
    qsort(iv, n, 2 * sizeof *iv, cmp_double); /* compares the first double: the start */
    double busy = 0, cs = 0, ce = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (iv[2 * i] > ce) {
            if (ce > cs) busy += ce - cs;
            cs = iv[2 * i];
            ce = iv[2 * i + 1];
        } else if (iv[2 * i + 1] > ce) {
            ce = iv[2 * i + 1];
        }
    }
    if (n && ce > cs) busy += ce - cs;
    free(iv);
    return busy;
}

static int cmp_total_desc(const void *a, const void *b) {
    const trace_doc_stats *x = a, *y = b;
    return x->total > y->total ? -1 : x->total < y->total;
}

json_t *trace_doc_summary_json(trace_doc *t, size_t max_spans) {
    double extent = t->t_max - t->t_min;
    trace_doc_stats *st = malloc((t->n_s ? t->n_s : 1) * sizeof *st);
    json_t *spans = json_array(), *threads = json_array();
    if (!st || !spans || !threads) {
        free(st);
        json_decref(spans);
        json_decref(threads);
        return NULL;
    }
    for (size_t i = 0; i < t->n_s; i++) trace_doc_series_stats(&t->s[i], &st[i]);
    qsort(st, t->n_s, sizeof *st, cmp_total_desc);
    for (size_t i = 0; i < t->n_s && (!max_spans || i < max_spans); i++)
        json_array_append_new(spans,
                              json_pack("{s:s,s:I,s:f,s:f,s:f,s:f,s:f}", "name", st[i].name,
                                        "count", (json_int_t)st[i].count, "total_ms", st[i].total,
                                        "mean_ms", st[i].mean, "p50_ms", st[i].p50, "p99_ms",
                                        st[i].p99, "max_ms", st[i].max));
    free(st);
    for (size_t i = 0; i < t->n_th; i++) {
        const trace_doc_thread *th = &t->th[i];
        if (!th->n) continue;
        double b = trace_doc_busy_ms(th);
        json_array_append_new(threads, json_pack("{s:I,s:s?,s:f,s:f}", "tid", (json_int_t)th->tid,
                                                 "name", th->name, "busy_ms", b, "busy_fraction",
                                                 extent > 0 ? b / extent : 0.0));
    }
    json_t *step = json_null();
    trace_doc_series *s = trace_doc_find(t, "step");
    if (s && s->n) { /* sorted by trace_doc_series_stats above */
        const double *v = s->v;
        size_t n = s->n;
        step =
            json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)n, "min", v[0],
                      "p10", trace_doc_quantile(v, n, 0.1), "p50", trace_doc_quantile(v, n, 0.5),
                      "p90", trace_doc_quantile(v, n, 0.9), "p99", trace_doc_quantile(v, n, 0.99),
                      "max", v[n - 1], "mean", trace_doc_mean(v, n));
    }
    return json_pack("{s:f,s:I,s:I,s:o,s:o,s:o}", "extent_ms", extent, "dropped_events",
                     (json_int_t)t->dropped, "span_names", (json_int_t)t->n_s, "spans", spans,
                     "threads", threads, "step_ms", step);
}

/* metrics.c - the metrics registry and its Prometheus text writer (see
 * metrics.h).
 *
 * Invariants: a registry's families form a list in registration order,
 * appended under the registry lock and never removed before
 * metrics_destroy. A family's series form a list in creation order plus an
 * open-addressing hash table over their label values (power-of-two capacity,
 * at most half full), both changed only under the family lock; a series'
 * label values and its hist pointer never change after it is published, so
 * a writer that has taken the family lock once may read them afterwards
 * without it. Lock order: registry lock, then a family lock; updates and
 * scrape callbacks take only family locks.
 */
#include "obs/metrics.h"

#include "base/log.h"
#include "base/status.h"
#include "base/strbuf.h"
#include "obs/hist.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const char *const type_name[] = {"counter", "gauge", "histogram"};

typedef struct series {
    struct series *next; /* creation order */
    uint64_t hash;
    char **values; /* n_labels label values, in the same allocation */
    double value;  /* counter, gauge */
    hist *h;       /* histogram (64 KiB: its own allocation) */
} series;

struct metric {
    struct metric *next; /* registration order */
    char *name, *help;
    enum metric_type type;
    int n_labels;
    char **labels;
    double *bounds;
    int n_bounds;
    pthread_mutex_t lock; /* guards everything below */
    series *first, *last;
    series **table; /* cap slots, NULL = empty */
    size_t cap, n_series;
    bool warned; /* misuse is logged once */
};

struct scrape_cb {
    void (*fn)(void *user);
    void *user;
};

struct owned_block {
    struct owned_block *next;
    max_align_t data[];
};

struct metrics {
    pthread_mutex_t lock; /* guards the lists below */
    metric *first, *last;
    struct scrape_cb *cbs;
    int n_cbs, cap_cbs;
    struct owned_block *blocks; /* metrics_alloc */
};

const double metrics_latency_bounds[] = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
                                         0.1,   0.25,   0.5,   0.75,   1,    2.5,   5,    7.5,
                                         10,    20,     30,    60,     120,  240,   480,  960};
const int metrics_n_latency_bounds = sizeof metrics_latency_bounds / sizeof(double);
const double metrics_fine_bounds[] = {0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025,
                                      0.005,  0.0075,  0.01,   0.025,   0.05,  0.075,
                                      0.1,    0.25,    0.5,    1};
const int metrics_n_fine_bounds = sizeof metrics_fine_bounds / sizeof(double);
const double metrics_token_bounds[] = {1,    4,    16,   64,    256,   512,   1024,
                                       2048, 4096, 8192, 16384, 32768, 131072};
const int metrics_n_token_bounds = sizeof metrics_token_bounds / sizeof(double);
const double metrics_size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
const int metrics_n_size_bounds = sizeof metrics_size_bounds / sizeof(double);

/* ---- registry ---- */

metrics *metrics_create(void) {
    metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

static void family_free(metric *f) {
    if (!f) return;
    for (series *s = f->first, *next; s; s = next) {
        next = s->next;
        free(s->h);
        free(s);
    }
    free(f->table);
    if (f->labels)
        for (int i = 0; i < f->n_labels; i++) free(f->labels[i]);
    free(f->labels);
    free(f->bounds);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void metrics_destroy(metrics *m) {
    if (!m) return;
    for (metric *f = m->first, *next; f; f = next) {
        next = f->next;
        family_free(f);
    }
    for (struct owned_block *b = m->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(m->cbs);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Lowercase snake_case: [a-z_][a-z0-9_]*. Stricter than the format (which
 * allows capitals and colons) because promtool's lint rejects camelCase and
 * colons (reserved for recording rules). */
static bool valid_name(const char *s) {
    if (!s || !*s || (*s >= '0' && *s <= '9')) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
    return true;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

static kiln_status check_family(const metrics *m, const char *name, const char *help,
                                enum metric_type type, const char *const *labels, int n_labels,
                                const double *bounds, int n_bounds) {
    if (!valid_name(name))
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "metric name '%s' is not lowercase snake_case ([a-z_][a-z0-9_]*)",
                         name ? name : "(null)");
    if (!help || !*help)
        return kiln_fail(KILN_ERR_INVALID_ARG, "metric %s: help text is empty", name);
    bool total = ends_with(name, "_total");
    if (type == METRIC_COUNTER && !total)
        return kiln_fail(KILN_ERR_INVALID_ARG, "counter %s: name must end in _total", name);
    if (type != METRIC_COUNTER && total)
        return kiln_fail(KILN_ERR_INVALID_ARG, "%s %s: only counters end in _total",
                         type_name[type], name);
    if (ends_with(name, "_bucket") || ends_with(name, "_count") || ends_with(name, "_sum"))
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "metric %s: _bucket, _count and _sum are a histogram's series suffixes",
                         name);
    for (const metric *f = m->first; f; f = f->next)
        if (!strcmp(f->name, name))
            return kiln_fail(KILN_ERR_INVALID_ARG, "metric %s is already registered", name);
    for (int i = 0; i < n_labels; i++) {
        const char *l = labels[i];
        if (!valid_name(l) || !strncmp(l, "__", 2))
            return kiln_fail(KILN_ERR_INVALID_ARG,
                             "metric %s: label name '%s' is not snake_case or starts with __", name,
                             l);
        if (type == METRIC_HISTOGRAM && !strcmp(l, "le"))
            return kiln_fail(KILN_ERR_INVALID_ARG, "histogram %s: label 'le' is reserved", name);
        for (int j = 0; j < i; j++)
            if (!strcmp(labels[j], l))
                return kiln_fail(KILN_ERR_INVALID_ARG, "metric %s: label '%s' given twice", name,
                                 l);
    }
    if (n_bounds < 0 || (n_bounds > 0 && !bounds))
        return kiln_fail(KILN_ERR_INVALID_ARG, "histogram %s: %d bounds", name, n_bounds);
    for (int i = 0; i < n_bounds; i++)
        if (!isfinite(bounds[i]) || bounds[i] < 0 || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return kiln_fail(KILN_ERR_INVALID_ARG,
                             "histogram %s: bound %d (%g) is not finite, non-negative and above "
                             "the one before",
                             name, i, bounds[i]);
    return KILN_OK;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static metric *family_add(metrics *m, const char *name, const char *help, enum metric_type type,
                          const char *const *labels, const double *bounds, int n_bounds) {
    if (!m) {
        kiln_fail(KILN_ERR_INVALID_ARG, "metrics registry is NULL");
        return NULL;
    }
    int n_labels = 0;
    while (labels && labels[n_labels]) n_labels++;
    metric *f = NULL;
    pthread_mutex_lock(&m->lock);
    if (check_family(m, name, help, type, labels, n_labels, bounds, n_bounds) != KILN_OK) goto fail;
    f = calloc(1, sizeof *f);
    if (!f || pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        f = NULL;
        goto nomem;
    }
    f->type = type;
    f->name = dup_str(name);
    f->help = dup_str(help);
    f->n_labels = n_labels;
    f->labels = calloc((size_t)n_labels + 1, sizeof *f->labels);
    f->n_bounds = n_bounds;
    f->bounds = malloc(((size_t)n_bounds + 1) * sizeof *f->bounds);
    if (!f->name || !f->help || !f->labels || !f->bounds) goto nomem;
    for (int i = 0; i < n_labels; i++)
        if (!(f->labels[i] = dup_str(labels[i]))) goto nomem;
    if (n_bounds > 0) memcpy(f->bounds, bounds, (size_t)n_bounds * sizeof *bounds);
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    pthread_mutex_unlock(&m->lock);
    return f;
nomem:
    kiln_fail(KILN_ERR_NOMEM, "metric %s: out of memory", name);
fail:
    pthread_mutex_unlock(&m->lock);
    family_free(f);
    return NULL;
}

metric *metrics_counter(metrics *m, const char *name, const char *help, const char *const *labels) {
    return family_add(m, name, help, METRIC_COUNTER, labels, NULL, 0);
}

metric *metrics_gauge(metrics *m, const char *name, const char *help, const char *const *labels) {
    return family_add(m, name, help, METRIC_GAUGE, labels, NULL, 0);
}

metric *metrics_histogram(metrics *m, const char *name, const char *help, const char *const *labels,
                          const double *bounds, int n_bounds) {
    return family_add(m, name, help, METRIC_HISTOGRAM, labels, bounds, n_bounds);
}

kiln_status metrics_on_scrape(metrics *m, void (*fn)(void *user), void *user) {
    if (!m || !fn) return kiln_fail(KILN_ERR_INVALID_ARG, "metrics_on_scrape: NULL argument");
    kiln_status st = KILN_OK;
    pthread_mutex_lock(&m->lock);
    if (m->n_cbs == m->cap_cbs) {
        int cap = m->cap_cbs ? 2 * m->cap_cbs : 4;
        struct scrape_cb *c = realloc(m->cbs, (size_t)cap * sizeof *c);
        if (!c) {
            st = kiln_fail(KILN_ERR_NOMEM, "metrics_on_scrape: out of memory");
            goto out;
        }
        m->cbs = c;
        m->cap_cbs = cap;
    }
    m->cbs[m->n_cbs++] = (struct scrape_cb){fn, user};
out:
    pthread_mutex_unlock(&m->lock);
    return st;
}

void *metrics_alloc(metrics *m, size_t size) {
    if (!m || size > SIZE_MAX - sizeof(struct owned_block)) return NULL;
    struct owned_block *b = calloc(1, sizeof *b + size);
    if (!b) return NULL;
    pthread_mutex_lock(&m->lock);
    b->next = m->blocks;
    m->blocks = b;
    pthread_mutex_unlock(&m->lock);
    return b->data;
}

/* ---- series lookup (family lock held) ---- */

/* Logs the first misuse of a family; later ones are dropped silently. */
__attribute__((format(printf, 2, 3))) static void misuse(metric *f, const char *fmt, ...) {
    if (f->warned) return;
    f->warned = true;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    KILN_LOGW("metric %s: %s (dropped; further misuse of this family is not logged)", f->name, buf);
}

/* FNV-1a over the values, each followed by a NUL (so "a","bc" != "ab","c"). */
static uint64_t hash_values(const char *const *values, int n) {
    uint64_t h = 0xcbf29ce484222325u;
    for (int i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
            h = (h ^ *p) * 0x100000001b3u;
        h *= 0x100000001b3u;
    }
    return h;
}

static bool same_values(const series *s, const char *const *values, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(s->values[i], values[i])) return false;
    return true;
}

static bool table_grow(metric *f) {
    size_t cap = f->cap ? 2 * f->cap : 16;
    series **t = calloc(cap, sizeof *t);
    if (!t) return false;
    for (series *s = f->first; s; s = s->next) {
        size_t i = s->hash & (cap - 1);
        while (t[i]) i = (i + 1) & (cap - 1);
        t[i] = s;
    }
    free(f->table);
    f->table = t;
    f->cap = cap;
    return true;
}

static series *series_new(metric *f, const char *const *values, uint64_t hash) {
    size_t bytes = sizeof(series) + (size_t)f->n_labels * sizeof(char *);
    for (int i = 0; i < f->n_labels; i++) bytes += strlen(values[i]) + 1;
    series *s = calloc(1, bytes);
    if (!s) return NULL;
    s->hash = hash;
    s->values = (char **)(s + 1);
    char *p = (char *)(s->values + f->n_labels);
    for (int i = 0; i < f->n_labels; i++) {
        size_t n = strlen(values[i]) + 1;
        memcpy(p, values[i], n);
        s->values[i] = p;
        p += n;
    }
    if (f->type == METRIC_HISTOGRAM) {
        if (!(s->h = malloc(sizeof *s->h))) {
            free(s);
            return NULL;
        }
        hist_init(s->h);
    }
    return s;
}

/* The series for values, created when create is set; NULL (after logging
 * misuse) when the values do not fit the family or no series can be made. */
static series *series_get(metric *f, const char *const *values, bool create) {
    int n = 0;
    while (values && n <= f->n_labels && values[n]) n++;
    if (n != f->n_labels) {
        if (n > f->n_labels)
            misuse(f, "more than the %d label values expected", f->n_labels);
        else
            misuse(f, "%d label values given, %d expected", n, f->n_labels);
        return NULL;
    }
    if (n == 0 && (f->first || !create)) return f->first;
    uint64_t hash = hash_values(values, n);
    if (f->cap) {
        for (size_t i = hash & (f->cap - 1); f->table[i]; i = (i + 1) & (f->cap - 1))
            if (f->table[i]->hash == hash && same_values(f->table[i], values, n))
                return f->table[i];
    }
    if (!create) return NULL;
    if (f->n_series >= METRICS_MAX_SERIES) {
        misuse(f, "more than %d series", METRICS_MAX_SERIES);
        return NULL;
    }
    if (2 * (f->n_series + 1) > f->cap && !table_grow(f)) {
        misuse(f, "out of memory for a new series");
        return NULL;
    }
    series *s = series_new(f, values, hash);
    if (!s) {
        misuse(f, "out of memory for a new series");
        return NULL;
    }
    size_t i = hash & (f->cap - 1);
    while (f->table[i]) i = (i + 1) & (f->cap - 1);
    f->table[i] = s;
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    f->n_series++;
    return s;
}

/* ---- updates ---- */

void metric_inc(metric *f, const char *const *values, double v) {
    if (!f) return;
    pthread_mutex_lock(&f->lock);
    if (f->type == METRIC_HISTOGRAM) {
        misuse(f, "metric_inc on a histogram");
    } else if (f->type == METRIC_COUNTER && !(v >= 0)) {
        misuse(f, "counter increment %g is negative or NaN", v);
    } else {
        series *s = series_get(f, values, true);
        if (s) s->value += v;
    }
    pthread_mutex_unlock(&f->lock);
}

void metric_set(metric *f, const char *const *values, double v) {
    if (!f) return;
    pthread_mutex_lock(&f->lock);
    if (f->type == METRIC_HISTOGRAM) {
        misuse(f, "metric_set on a histogram");
    } else {
        series *s = series_get(f, values, true);
        if (s) s->value = v;
    }
    pthread_mutex_unlock(&f->lock);
}

void metric_observe(metric *f, const char *const *values, double v) {
    if (!f) return;
    pthread_mutex_lock(&f->lock);
    if (f->type != METRIC_HISTOGRAM) {
        misuse(f, "metric_observe on a %s", type_name[f->type]);
    } else {
        series *s = series_get(f, values, true);
        if (s) hist_record(s->h, v);
    }
    pthread_mutex_unlock(&f->lock);
}

double metric_value(metric *f, const char *const *values) {
    if (!f) return NAN;
    double v = NAN;
    pthread_mutex_lock(&f->lock);
    if (f->type != METRIC_HISTOGRAM) {
        series *s = series_get(f, values, false);
        if (s) v = s->value;
    }
    pthread_mutex_unlock(&f->lock);
    return v;
}

double metric_quantile(metric *f, const char *const *values, double q) {
    if (!f) return NAN;
    double v = NAN;
    pthread_mutex_lock(&f->lock);
    if (f->type == METRIC_HISTOGRAM) {
        series *s = series_get(f, values, false);
        if (s) v = hist_quantile(s->h, q);
    }
    pthread_mutex_unlock(&f->lock);
    return v;
}

uint64_t metric_count(metric *f, const char *const *values) {
    if (!f) return 0;
    uint64_t n = 0;
    pthread_mutex_lock(&f->lock);
    if (f->type == METRIC_HISTOGRAM) {
        series *s = series_get(f, values, false);
        if (s) n = s->h->n;
    }
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* ---- text exposition ---- */

/* The length of the valid UTF-8 sequence at s (1-4), or 0 when the bytes
 * there are not one (overlong forms, surrogates and values past U+10FFFF
 * included). */
static int utf8_len(const unsigned char *s) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int n = c >= 0xc2 && c <= 0xdf   ? 2
            : c >= 0xe0 && c <= 0xef ? 3
            : c >= 0xf0 && c <= 0xf4 ? 4
                                     : 0;
    if (!n) return 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0; /* overlong */
    if (c == 0xed && s[1] > 0x9f) return 0; /* surrogate */
    if (c == 0xf0 && s[1] < 0x90) return 0; /* overlong */
    if (c == 0xf4 && s[1] > 0x8f) return 0; /* past U+10FFFF */
    return n;
}

/* Appends s escaped for the exposition: backslash and newline always, the
 * double quote too in a label value (quote); invalid UTF-8 bytes become
 * U+FFFD, since Prometheus rejects a scrape that holds any. */
static void sb_escaped(strbuf *b, const char *s, bool quote) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p == '\\') {
            strbuf_put(b, "\\\\", 2);
            p++;
        } else if (*p == '\n') {
            strbuf_put(b, "\\n", 2);
            p++;
        } else if (*p == '"' && quote) {
            strbuf_put(b, "\\\"", 2);
            p++;
        } else {
            int n = utf8_len(p);
            if (n)
                strbuf_put(b, (const char *)p, (size_t)n);
            else
                strbuf_put(b, "\xef\xbf\xbd", 3);
            p += n ? n : 1;
        }
    }
}

/* A number as Prometheus (Go's ParseFloat) reads it: NaN, +Inf, -Inf,
 * integers without an exponent below 1e15, otherwise the shortest of %.15g
 * and %.17g that reads back exactly. */
static void fmt_num(char *buf, size_t cap, double v) {
    if (isnan(v))
        snprintf(buf, cap, "NaN");
    else if (isinf(v))
        snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, cap, "%.0f", v);
    else {
        snprintf(buf, cap, "%.15g", v);
        if (strtod(buf, NULL) != v) snprintf(buf, cap, "%.17g", v);
    }
}

/* name{l1="v1",...[,le="bound"]} value\n; no braces when there are no labels. */
static void write_sample(strbuf *b, const metric *f, const char *suffix, const series *s,
                         const char *le, const char *value) {
    strbuf_puts(b, f->name);
    strbuf_puts(b, suffix);
    if (f->n_labels || le) {
        strbuf_put(b, "{", 1);
        for (int i = 0; i < f->n_labels; i++) {
            if (i) strbuf_put(b, ",", 1);
            strbuf_puts(b, f->labels[i]);
            strbuf_put(b, "=\"", 2);
            sb_escaped(b, s->values[i], true);
            strbuf_put(b, "\"", 1);
        }
        if (le) {
            if (f->n_labels) strbuf_put(b, ",", 1);
            strbuf_puts(b, "le=\"");
            strbuf_puts(b, le);
            strbuf_put(b, "\"", 1);
        }
        strbuf_put(b, "}", 1);
    }
    strbuf_put(b, " ", 1);
    strbuf_puts(b, value);
    strbuf_put(b, "\n", 1);
}

/* The cumulative counts at bounds[0..nb) (ascending, non-negative): for
 * each bound exactly hist_count_le(h, bound), in one pass over the buckets
 * instead of one per bound. For k = hist_bucket(b), every bucket below k lies
 * wholly below b and every bucket above k wholly above it, so only bucket k
 * needs hist_count_le's midpoint test; its special cases (empty, b >= max,
 * b < min) are kept in its order. */
static void cumulative_counts(const hist *h, const double *bounds, int nb, uint64_t *out) {
    uint64_t below = 0; /* counts[0..i) */
    int i = 0;
    for (int j = 0; j < nb; j++) {
        double b = bounds[j];
        if (h->n == 0) {
            out[j] = 0;
        } else if (b >= h->max) {
            out[j] = h->n;
        } else if (b < h->min) {
            out[j] = 0;
        } else {
            int k = hist_bucket(b);
            for (; i < k; i++) below += h->counts[i];
            double mid = k == 0 ? 0 : 0.5 * (hist_bucket_lo(k) + hist_bucket_hi(k));
            out[j] = below + (mid <= b ? h->counts[k] : 0);
        }
    }
}

/* One histogram series from the counts copied out under the lock. */
static void write_histogram(strbuf *b, const metric *f, const series *s, const uint64_t *le_counts,
                            uint64_t n, double sum) {
    char le[32], val[32];
    for (int i = 0; i < f->n_bounds; i++) {
        fmt_num(le, sizeof le, f->bounds[i]);
        snprintf(val, sizeof val, "%" PRIu64, le_counts[i]);
        write_sample(b, f, "_bucket", s, le, val);
    }
    snprintf(val, sizeof val, "%" PRIu64, n);
    write_sample(b, f, "_bucket", s, "+Inf", val);
    fmt_num(val, sizeof val, sum);
    write_sample(b, f, "_sum", s, NULL, val);
    snprintf(val, sizeof val, "%" PRIu64, n);
    write_sample(b, f, "_count", s, NULL, val);
}

/* One family. Each series' numbers are copied out under the family lock
 * (a histogram's as its cumulative counts, a few microseconds), then
 * formatted without it. */
static void write_family(strbuf *b, metric *f) {
    strbuf_puts(b, "# HELP ");
    strbuf_puts(b, f->name);
    strbuf_put(b, " ", 1);
    sb_escaped(b, f->help, false);
    strbuf_puts(b, "\n# TYPE ");
    strbuf_puts(b, f->name);
    strbuf_put(b, " ", 1);
    strbuf_puts(b, type_name[f->type]);
    strbuf_put(b, "\n", 1);
    uint64_t *le_counts = NULL;
    if (f->type == METRIC_HISTOGRAM &&
        !(le_counts = malloc(((size_t)f->n_bounds + 1) * sizeof *le_counts))) {
        b->oom = true;
        return;
    }
    pthread_mutex_lock(&f->lock);
    series *s = f->first;
    pthread_mutex_unlock(&f->lock);
    while (s && !b->oom) {
        char val[32];
        uint64_t n = 0;
        double sum = 0;
        pthread_mutex_lock(&f->lock);
        if (f->type == METRIC_HISTOGRAM) {
            cumulative_counts(s->h, f->bounds, f->n_bounds, le_counts);
            n = s->h->n;
            sum = s->h->sum;
        } else {
            fmt_num(val, sizeof val, s->value);
        }
        series *next = s->next;
        pthread_mutex_unlock(&f->lock);
        if (f->type == METRIC_HISTOGRAM)
            write_histogram(b, f, s, le_counts, n, sum);
        else
            write_sample(b, f, "", s, NULL, val);
        s = next;
    }
    free(le_counts);
}

kiln_status metrics_write(metrics *m, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    if (!m) return kiln_fail(KILN_ERR_INVALID_ARG, "metrics_write: registry is NULL");
    strbuf b = {0};
    struct scrape_cb *cbs = NULL;
    kiln_status st = KILN_OK;

    pthread_mutex_lock(&m->lock);
    int n_cbs = m->n_cbs;
    if (n_cbs && (cbs = malloc((size_t)n_cbs * sizeof *cbs)))
        memcpy(cbs, m->cbs, (size_t)n_cbs * sizeof *cbs);
    pthread_mutex_unlock(&m->lock);
    if (n_cbs && !cbs) goto nomem;
    for (int i = 0; i < n_cbs; i++) cbs[i].fn(cbs[i].user);

    if (!strbuf_reserve(&b, 0)) goto nomem;
    pthread_mutex_lock(&m->lock);
    for (metric *f = m->first; f && !b.oom; f = f->next) write_family(&b, f);
    pthread_mutex_unlock(&m->lock);
    if (b.oom) goto nomem;
    *out = b.p;
    if (len) *len = b.n;
    b.p = NULL;
    goto done;
nomem:
    st = kiln_fail(KILN_ERR_NOMEM, "metrics_write: out of memory");
done:
    free(b.p);
    free(cbs);
    return st;
}

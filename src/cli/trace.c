/* trace.c - `kiln trace`: reads Chrome Trace Event JSON files that Kiln wrote
 * (kiln run --trace, the server's profiler), gzip-compressed or not (the
 * magic bytes decide, not the name), and explains them. Reading and the
 * per-span statistics are obs/trace_doc.h's; this file prints them and
 * holds the comparison.
 *
 *   kiln trace summary FILE
 *       per span name: count, total, mean, p50, p99 (ms); the busy fraction of
 *       each thread (time under its outermost spans over the trace's extent);
 *       the distribution of step times (spans named "step").
 *   kiln trace compare A.json B.json [--html OUT.html]
 *   kiln trace compare --a A1.json A2.json ... --b B1.json B2.json ...
 *       per span name, B's mean duration against A's. A difference is
 *       reported only when it exceeds the run-to-run spread: a hierarchical
 *       bootstrap (resample the traces of each side, then the spans within
 *       each) gives a 95% interval of the difference of means; it must
 *       exclude 0 and the relative change must exceed --min-change (2%).
 *       --html also writes the comparison as a self-contained page
 *       (bench/trace_html.c): the table, the step-time distributions of
 *       both sides and each trace's step statistics.
 *
 * Exit status: 0 (compare: also when differences were found), 1 on a file
 * that cannot be read or written, 2 on a usage error.
 */
#include "cli/commands.h"
#include "bench/bench.h"
#include "kiln.h"
#include "obs/trace_doc.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES 64

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "kiln trace: out of memory\n");
        exit(1);
    }
    return q;
}

/* Reads path; false (with a message) when it is not a trace. */
static bool load(trace_doc *t, const char *path) {
    if (trace_doc_load(t, path) == KILN_OK) return true;
    fprintf(stderr, "kiln trace: %s\n", kiln_last_error());
    return false;
}

static int cmd_summary(const char *path) {
    trace_doc t;
    if (!load(&t, path)) return 1;
    double extent = t.t_max - t.t_min;
    printf("trace %s: %.3f ms, %zu span names, %zu threads", path, extent, t.n_s, t.n_th);
    if (t.dropped) printf(", %lld events dropped (max_events)", t.dropped);
    printf("\n\n%-24s %8s %12s %10s %10s %10s %10s\n", "span", "count", "total ms", "mean ms",
           "p50 ms", "p99 ms", "max ms");
    for (size_t i = 0; i < t.n_s; i++) {
        trace_doc_stats st;
        trace_doc_series_stats(&t.s[i], &st);
        printf("%-24s %8zu %12.3f %10.4f %10.4f %10.4f %10.4f\n", st.name, st.count, st.total,
               st.mean, st.p50, st.p99, st.max);
    }
    printf("\n%-24s %8s %12s %10s\n", "thread", "tid", "busy ms", "busy");
    for (size_t i = 0; i < t.n_th; i++) {
        trace_doc_thread *th = &t.th[i];
        if (!th->n) continue;
        double b = trace_doc_busy_ms(th);
        printf("%-24s %8lld %12.3f %9.1f%%\n", th->name ? th->name : "?", th->tid, b,
               extent > 0 ? 100 * b / extent : 0.0);
    }
    trace_doc_series *st = trace_doc_find(&t, "step"); /* sorted above */
    if (st && st->n) {
        const double *v = st->v;
        size_t n = st->n;
        printf("\nstep time (ms) over %zu steps: min %.4f  p10 %.4f  p50 %.4f  p90 %.4f  p99 "
               "%.4f  max %.4f  mean %.4f\n",
               n, v[0], trace_doc_quantile(v, n, 0.1), trace_doc_quantile(v, n, 0.5),
               trace_doc_quantile(v, n, 0.9), trace_doc_quantile(v, n, 0.99), v[n - 1],
               trace_doc_mean(v, n));
        /* a coarse histogram: 8 equal-width bins between min and p99 */
        double lo = v[0], hi = trace_doc_quantile(v, n, 0.99), w = (hi - lo) / 8;
        if (w > 0) {
            size_t bins[9] = {0};
            for (size_t i = 0; i < n; i++) {
                int b = (int)((v[i] - lo) / w);
                bins[b < 0 ? 0 : b > 8 ? 8 : b]++;
            }
            for (int b = 0; b < 9; b++) {
                int bar = (int)(50.0 * (double)bins[b] / (double)n + 0.5);
                if (b < 8)
                    printf("  %9.4f - %9.4f %6zu ", lo + b * w, lo + (b + 1) * w, bins[b]);
                else
                    printf("  %9.4f +           %6zu ", hi, bins[b]);
                for (int k = 0; k < bar; k++) putchar('#');
                putchar('\n');
            }
        }
    } else {
        printf("\nno spans named \"step\"\n");
    }
    trace_doc_free(&t);
    return 0;
}

/* xorshift64*: a deterministic generator so compare's output is repeatable. */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static size_t rng_below(uint64_t *s, size_t n) {
    return (size_t)(rng_next(s) % n);
}

/* One bootstrap draw of the mean of a side: k traces drawn with replacement,
 * then each drawn trace's spans with replacement. */
static double draw_mean(trace_doc_series **sides, size_t k, uint64_t *rng) {
    double sum = 0;
    size_t cnt = 0;
    for (size_t j = 0; j < k; j++) {
        trace_doc_series *s = sides[rng_below(rng, k)];
        for (size_t i = 0; s && i < s->n; i++) sum += s->v[rng_below(rng, s->n)];
        cnt += s ? s->n : 0;
    }
    return cnt ? sum / (double)cnt : NAN;
}

/* One span name compared. */
struct cmp_row {
    const char *name; /* borrowed from a trace */
    size_t na, nb;    /* spans on each side */
    bool judged;      /* both sides have two or more (else why says what) */
    const char *why;
    double ma, mb, change, lo, hi; /* means, change %, 95% interval of B-A (ms) */
    int verdict;                   /* 0 within noise, 1 slower, -1 faster */
};

struct cmp {
    trace_doc ta[MAX_FILES], tb[MAX_FILES];
    size_t na, nb;
    const char *fa[MAX_FILES], *fb[MAX_FILES];
    int reps;
    double min_change;
    struct cmp_row *rows;
    size_t n_rows;
    int n_sig;
};

/* The series of name in each of n traces (NULL where absent) into out;
 * returns the spans counted and their sum in *sum. */
static size_t gather(trace_doc *t, size_t n, const char *name, trace_doc_series **out,
                     double *sum) {
    size_t cnt = 0;
    *sum = 0;
    for (size_t g = 0; g < n; g++) {
        out[g] = trace_doc_find(&t[g], name);
        if (out[g]) cnt += out[g]->n, *sum += trace_doc_mean(out[g]->v, out[g]->n) * out[g]->n;
    }
    return cnt;
}

static void compare_one(struct cmp *c, struct cmp_row *r, uint64_t *rng) {
    trace_doc_series *sa[MAX_FILES], *sb[MAX_FILES];
    double suma, sumb;
    r->na = gather(c->ta, c->na, r->name, sa, &suma);
    r->nb = gather(c->tb, c->nb, r->name, sb, &sumb);
    if (r->na < 2 || r->nb < 2) { /* no spread to judge against */
        r->why = !r->na ? "only in B" : !r->nb ? "only in A" : "too few samples";
        return;
    }
    r->judged = true;
    r->ma = suma / (double)r->na, r->mb = sumb / (double)r->nb;
    double *d = xrealloc(NULL, (size_t)c->reps * sizeof *d);
    int nd = 0;
    for (int k = 0; k < c->reps; k++) {
        double x = draw_mean(sa, c->na, rng), y = draw_mean(sb, c->nb, rng);
        if (isfinite(x) && isfinite(y)) d[nd++] = y - x;
    }
    trace_doc_sort(d, (size_t)nd);
    r->lo = nd ? d[(size_t)(0.025 * (nd - 1))] : 0;
    r->hi = nd ? d[(size_t)(0.975 * (nd - 1))] : 0;
    free(d);
    r->change = r->ma > 0 ? 100 * (r->mb - r->ma) / r->ma : 0;
    bool sig = nd && (r->lo > 0 || r->hi < 0) && fabs(r->change) > c->min_change;
    r->verdict = !sig ? 0 : r->change > 0 ? 1 : -1;
    c->n_sig += sig;
}

/* Every span name of A's traces, then those only in B's, in first-seen
 * order, each compared. */
static void compare_all(struct cmp *c) {
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    for (size_t f = 0; f < c->na + c->nb; f++) {
        trace_doc *t = f < c->na ? &c->ta[f] : &c->tb[f - c->na];
        for (size_t k = 0; k < t->n_s; k++) {
            size_t j = 0;
            while (j < c->n_rows && strcmp(c->rows[j].name, t->s[k].name)) j++;
            if (j < c->n_rows) continue;
            c->rows = xrealloc(c->rows, (c->n_rows + 1) * sizeof *c->rows);
            c->rows[c->n_rows++] = (struct cmp_row){.name = t->s[k].name};
        }
    }
    for (size_t i = 0; i < c->n_rows; i++) compare_one(c, &c->rows[i], &rng);
}

static const char *one_trace_note =
    "with one trace on a side the interval covers only its span-to-span spread, not run-to-run "
    "spread; pass several runs per side (--a ... --b ...)";

static void compare_print(const struct cmp *c) {
    printf("A: %zu trace%s, B: %zu trace%s; 95%% bootstrap interval (%d resamples), "
           "min change %.1f%%\n\n",
           c->na, c->na == 1 ? "" : "s", c->nb, c->nb == 1 ? "" : "s", c->reps, c->min_change);
    printf("%-24s %8s %8s %11s %11s %9s  %-23s %s\n", "span", "n A", "n B", "A mean ms",
           "B mean ms", "change", "95% interval B-A (ms)", "verdict");
    for (size_t i = 0; i < c->n_rows; i++) {
        const struct cmp_row *r = &c->rows[i];
        if (!r->judged) {
            printf("%-24s %8zu %8zu %11s %11s %9s  %-23s %s\n", r->name, r->na, r->nb, "-", "-",
                   "-", "-", r->why);
            continue;
        }
        char iv[64];
        snprintf(iv, sizeof iv, "[%+.4f, %+.4f]", r->lo, r->hi);
        printf("%-24s %8zu %8zu %11.4f %11.4f %+8.1f%%  %-23s %s\n", r->name, r->na, r->nb, r->ma,
               r->mb, r->change, iv,
               !r->verdict      ? "~ (within noise)"
               : r->verdict > 0 ? "SLOWER"
                                : "FASTER");
    }
    if (c->na == 1 || c->nb == 1) printf("\nnote: %s.\n", one_trace_note);
    if (c->n_sig)
        printf("\n%d significant difference%s (B vs A)\n", c->n_sig, c->n_sig == 1 ? "" : "s");
    else
        printf("\nno significant difference\n");
}

/* The step times of n traces pooled: quantiles and a CDF of at most 200
 * points ([ms, fraction]); JSON null when there are none. */
static json_t *steps_json(trace_doc *t, size_t n) {
    size_t cnt = 0;
    for (size_t g = 0; g < n; g++) {
        trace_doc_series *s = trace_doc_find(&t[g], "step");
        cnt += s ? s->n : 0;
    }
    if (!cnt) return json_null();
    double *v = xrealloc(NULL, cnt * sizeof *v);
    size_t k = 0;
    for (size_t g = 0; g < n; g++) {
        trace_doc_series *s = trace_doc_find(&t[g], "step");
        for (size_t i = 0; s && i < s->n; i++) v[k++] = s->v[i];
    }
    trace_doc_sort(v, cnt);
    json_t *cdf = json_array();
    size_t m = cnt < 200 ? cnt : 200;
    for (size_t j = 0; j < m; j++) {
        size_t i = (j + 1) * cnt / m - 1;
        json_array_append_new(cdf, json_pack("[f,f]", v[i], (double)(i + 1) / (double)cnt));
    }
    json_t *j =
        json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:o}", "count", (json_int_t)cnt, "min", v[0],
                  "p10", trace_doc_quantile(v, cnt, 0.1), "p50", trace_doc_quantile(v, cnt, 0.5),
                  "p90", trace_doc_quantile(v, cnt, 0.9), "p99", trace_doc_quantile(v, cnt, 0.99),
                  "max", v[cnt - 1], "mean", trace_doc_mean(v, cnt), "cdf", cdf);
    free(v);
    return j;
}

static json_t *num_or_null(bool ok, double v) {
    return ok ? json_real(v) : json_null();
}

/* The comparison as the HTML report's document (bench/trace_html.c). */
static json_t *compare_json(struct cmp *c) {
    json_t *fa = json_array(), *fb = json_array(), *spans = json_array(), *tr = json_array();
    for (size_t i = 0; i < c->na; i++) json_array_append_new(fa, json_string(c->fa[i]));
    for (size_t i = 0; i < c->nb; i++) json_array_append_new(fb, json_string(c->fb[i]));
    for (size_t i = 0; i < c->n_rows; i++) {
        const struct cmp_row *r = &c->rows[i];
        const char *v = !r->judged       ? r->why
                        : !r->verdict    ? "within noise"
                        : r->verdict > 0 ? "slower"
                                         : "faster";
        json_array_append_new(
            spans,
            json_pack("{s:s,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:s,s:b}", "name", r->name, "n_a",
                      (json_int_t)r->na, "n_b", (json_int_t)r->nb, "a_mean_ms",
                      num_or_null(r->judged, r->ma), "b_mean_ms", num_or_null(r->judged, r->mb),
                      "change_pct", num_or_null(r->judged, r->change), "lo_ms",
                      num_or_null(r->judged, r->lo), "hi_ms", num_or_null(r->judged, r->hi),
                      "verdict", v, "significant", r->verdict != 0));
    }
    for (size_t f = 0; f < c->na + c->nb; f++) {
        trace_doc *t = f < c->na ? &c->ta[f] : &c->tb[f - c->na];
        trace_doc_series *s = trace_doc_find(t, "step");
        trace_doc_stats st = {0};
        if (s) trace_doc_series_stats(s, &st);
        json_array_append_new(tr, json_pack("{s:s,s:s,s:I,s:o,s:o,s:o}", "file",
                                            f < c->na ? c->fa[f] : c->fb[f - c->na], "side",
                                            f < c->na ? "A" : "B", "steps", (json_int_t)st.count,
                                            "step_mean_ms", num_or_null(st.count, st.mean),
                                            "step_p50_ms", num_or_null(st.count, st.p50),
                                            "step_p99_ms", num_or_null(st.count, st.p99)));
    }
    return json_pack("{s:s,s:s,s:o,s:o,s:i,s:f,s:o,s:i,s:{s:o,s:o},s:o,s:o}", "tool",
                     "kiln trace compare", "kiln_version", kiln_version(), "a", fa, "b", fb, "reps",
                     c->reps, "min_change_pct", c->min_change, "spans", spans, "n_significant",
                     c->n_sig, "steps", "a", steps_json(c->ta, c->na), "b",
                     steps_json(c->tb, c->nb), "traces", tr, "note",
                     c->na == 1 || c->nb == 1 ? json_string(one_trace_note) : json_null());
}

static void compare_usage(FILE *out) {
    fprintf(out,
            "usage: kiln trace compare A.json B.json [options]\n"
            "       kiln trace compare --a A1.json [A2.json ...] --b B1.json [B2.json ...] "
            "[options]\n\n"
            "Compares the mean duration of each span name, B against A. A difference is\n"
            "reported when the 95%% bootstrap interval of B-A (resampling traces, then spans)\n"
            "excludes 0 and the change exceeds --min-change percent (default 2). Files may\n"
            "be gzip-compressed.\n"
            "  --min-change PCT   smallest relative change to report (default 2)\n"
            "  --reps N           bootstrap resamples (default 2000)\n"
            "  --html OUT.html    also write the comparison as a self-contained HTML page\n"
            "                     (the table, step-time distributions, per-trace steps)\n");
}

static int cmd_compare(int argc, char **argv) {
    static struct cmp c; /* large: kept off the stack */
    memset(&c, 0, sizeof c);
    const char *pos[MAX_FILES], *html = NULL;
    size_t np = 0;
    int side = 0;
    c.reps = 2000;
    c.min_change = 2.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            compare_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--a") || !strcmp(a, "-a")) {
            side = 1;
        } else if (!strcmp(a, "--b") || !strcmp(a, "-b")) {
            side = 2;
        } else if (!strcmp(a, "--html")) {
            if (i + 1 >= argc) goto usage;
            html = argv[++i];
        } else if (!strcmp(a, "--min-change") || !strcmp(a, "--reps")) {
            char *end;
            if (i + 1 >= argc) goto usage;
            double v = strtod(argv[++i], &end);
            if (*end || !(v >= 0)) goto usage;
            if (a[2] == 'm')
                c.min_change = v;
            else
                c.reps = v < 100 ? 100 : v > 1e6 ? 1000000 : (int)v;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "kiln trace compare: unknown option %s\n", a);
            goto usage;
        } else {
            const char **dst = side == 1 ? c.fa : side == 2 ? c.fb : pos;
            size_t *n = side == 1 ? &c.na : side == 2 ? &c.nb : &np;
            if (*n == MAX_FILES) goto usage;
            dst[(*n)++] = a;
        }
    }
    if (np == 2 && !c.na && !c.nb) {
        c.fa[c.na++] = pos[0];
        c.fb[c.nb++] = pos[1];
    } else if (np || !c.na || !c.nb) {
        goto usage;
    }

    size_t la = 0, lb = 0;
    int rc = 0;
    for (; la < c.na; la++)
        if (!load(&c.ta[la], c.fa[la])) {
            rc = 1;
            goto done;
        }
    for (; lb < c.nb; lb++)
        if (!load(&c.tb[lb], c.fb[lb])) {
            rc = 1;
            goto done;
        }
    compare_all(&c);
    compare_print(&c);
    if (html) {
        json_t *doc = compare_json(&c);
        if (!doc || bench_write_trace_html(html, doc) != KILN_OK) {
            fprintf(stderr, "kiln trace compare: %s\n", doc ? kiln_last_error() : "out of memory");
            rc = 1;
        }
        json_decref(doc);
    }
done:
    for (size_t i = 0; i < la; i++) trace_doc_free(&c.ta[i]);
    for (size_t i = 0; i < lb; i++) trace_doc_free(&c.tb[i]);
    free(c.rows);
    return rc;
usage:
    compare_usage(stderr);
    return 2;
}

static void trace_usage(FILE *out) {
    fprintf(out, "usage: kiln trace summary FILE\n"
                 "       kiln trace compare A.json B.json [--html OUT.html]\n"
                 "       kiln trace compare --a A1.json ... --b B1.json ... [--html OUT.html]\n\n"
                 "Reads Chrome Trace Event JSON written by kiln run --trace (or the server's\n"
                 "profiler, GET /diagnostics/profiler/traces/{id}), plain or gzip-compressed\n"
                 "(FILE.json.gz; detected by its content). summary: per-span count, total,\n"
                 "mean, p50, p99 (ms), busy fraction per thread and the step-time\n"
                 "distribution. compare: per-span mean of B against A, reporting only\n"
                 "differences beyond run-to-run spread, as text and with --html as a\n"
                 "self-contained page (kiln trace compare --help).\n");
}

int cmd_trace(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        trace_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "summary")) {
        if (argc == 3 && (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help"))) {
            trace_usage(stdout);
            return 0;
        }
        if (argc != 3) {
            fprintf(stderr, "kiln trace summary: one FILE is needed (kiln trace --help)\n");
            return 2;
        }
        return cmd_summary(argv[2]);
    }
    if (!strcmp(argv[1], "compare")) return cmd_compare(argc - 1, argv + 1);
    fprintf(stderr, "kiln trace: unknown subcommand '%s' (kiln trace --help)\n", argv[1]);
    return 2;
}

/* trace.c - `kiln trace`: reads Chrome Trace Event JSON files that Kiln wrote
 * (kiln run --trace, the server's profiler) and explains them.
 *
 *   kiln trace summary FILE
 *       per span name: count, total, mean, p50, p99 (ms); the busy fraction of
 *       each thread (time under its outermost spans over the trace's extent);
 *       the distribution of step times (spans named "step").
 *   kiln trace compare A.json B.json
 *   kiln trace compare --a A1.json A2.json ... --b B1.json B2.json ...
 *       per span name, B's mean duration against A's. A difference is
 *       reported only when it exceeds the run-to-run spread: a hierarchical
 *       bootstrap (resample the traces of each side, then the spans within
 *       each) gives a 95% interval of the difference of means; it must
 *       exclude 0 and the relative change must exceed --min-change (2%).
 *
 * Exit status: 0 (compare: also when differences were found), 1 on a file
 * that cannot be read, 2 on a usage error.
 */
#include "cli/commands.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES 64

/* The durations (ms) of the spans of one name in one trace. */
struct series {
    char *name;
    double *v;
    size_t n, cap;
};

struct thread_info {
    long long tid;
    char *name;
    double *start, *end; /* spans (ms), for the busy fraction */
    size_t n, cap;
};

struct trace {
    const char *path;
    struct series *s;
    size_t n_s;
    struct thread_info *th;
    size_t n_th;
    double t_min, t_max; /* ms */
    long long dropped;
};

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "kiln trace: out of memory\n");
        exit(1);
    }
    return q;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

static void push(double **v, size_t *n, size_t *cap, double x) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *v = xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = x;
}

static struct series *series_get(struct trace *t, const char *name) {
    for (size_t i = 0; i < t->n_s; i++)
        if (!strcmp(t->s[i].name, name)) return &t->s[i];
    t->s = xrealloc(t->s, (t->n_s + 1) * sizeof *t->s);
    t->s[t->n_s] = (struct series){.name = xstrdup(name)};
    return &t->s[t->n_s++];
}

static struct thread_info *thread_get(struct trace *t, long long tid) {
    for (size_t i = 0; i < t->n_th; i++)
        if (t->th[i].tid == tid) return &t->th[i];
    t->th = xrealloc(t->th, (t->n_th + 1) * sizeof *t->th);
    t->th[t->n_th] = (struct thread_info){.tid = tid};
    return &t->th[t->n_th++];
}

static void push_span(struct thread_info *th, double s, double e) {
    if (th->n == th->cap) {
        th->cap = th->cap ? 2 * th->cap : 64;
        th->start = xrealloc(th->start, th->cap * sizeof *th->start);
        th->end = xrealloc(th->end, th->cap * sizeof *th->end);
    }
    th->start[th->n] = s;
    th->end[th->n++] = e;
}

/* Reads path; false (with a message) when it is not a trace. */
static bool trace_load(struct trace *t, const char *path) {
    memset(t, 0, sizeof *t);
    t->path = path;
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) {
        fprintf(stderr, "kiln trace: %s: %s (line %d)\n", path, err.text, err.line);
        return false;
    }
    json_t *evs = json_object_get(root, "traceEvents");
    if (!json_is_array(evs)) {
        fprintf(stderr, "kiln trace: %s: no traceEvents array\n", path);
        json_decref(root);
        return false;
    }
    t->dropped =
        json_integer_value(json_object_get(json_object_get(root, "otherData"), "dropped_events"));
    t->t_min = INFINITY;
    t->t_max = -INFINITY;
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e) {
        const char *ph = json_string_value(json_object_get(e, "ph"));
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!ph || !name) continue;
        long long tid = json_integer_value(json_object_get(e, "tid"));
        if (!strcmp(ph, "M")) {
            const char *nm = json_string_value(json_object_get(json_object_get(e, "args"), "name"));
            if (!strcmp(name, "thread_name") && nm) {
                struct thread_info *th = thread_get(t, tid);
                free(th->name);
                th->name = xstrdup(nm);
            }
            continue;
        }
        double ts = json_number_value(json_object_get(e, "ts")) / 1e3;
        double dur = 0;
        if (!strcmp(ph, "X")) {
            dur = json_number_value(json_object_get(e, "dur")) / 1e3;
            struct series *s = series_get(t, name);
            push(&s->v, &s->n, &s->cap, dur);
            push_span(thread_get(t, tid), ts, ts + dur);
        }
        if (ts < t->t_min) t->t_min = ts;
        if (ts + dur > t->t_max) t->t_max = ts + dur;
    }
    json_decref(root);
    if (!(t->t_max >= t->t_min)) t->t_min = t->t_max = 0;
    return true;
}

static void trace_release(struct trace *t) {
    for (size_t i = 0; i < t->n_s; i++) free(t->s[i].name), free(t->s[i].v);
    for (size_t i = 0; i < t->n_th; i++)
        free(t->th[i].name), free(t->th[i].start), free(t->th[i].end);
    free(t->s);
    free(t->th);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile of sorted v[0..n) (nearest rank). */
static double quantile(const double *v, size_t n, double q) {
    if (!n) return 0;
    size_t k = (size_t)ceil(q * (double)n);
    return v[k ? k - 1 : 0];
}

static double mean(const double *v, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += v[i];
    return n ? s / (double)n : 0;
}

/* Time covered by the union of th's spans (ms). */
static double busy_ms(struct thread_info *th) {
    size_t n = th->n;
    double *iv = xrealloc(NULL, 2 * n * sizeof *iv); /* (start, end) pairs sorted by start */
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

static int cmd_summary(const char *path) {
    struct trace t;
    if (!trace_load(&t, path)) return 1;
    double extent = t.t_max - t.t_min;
    printf("trace %s: %.3f ms, %zu span names, %zu threads", path, extent, t.n_s, t.n_th);
    if (t.dropped) printf(", %lld events dropped (max_events)", t.dropped);
    printf("\n\n%-24s %8s %12s %10s %10s %10s %10s\n", "span", "count", "total ms", "mean ms",
           "p50 ms", "p99 ms", "max ms");
    for (size_t i = 0; i < t.n_s; i++) {
        struct series *s = &t.s[i];
        qsort(s->v, s->n, sizeof *s->v, cmp_double);
        printf("%-24s %8zu %12.3f %10.4f %10.4f %10.4f %10.4f\n", s->name, s->n,
               mean(s->v, s->n) * (double)s->n, mean(s->v, s->n), quantile(s->v, s->n, 0.5),
               quantile(s->v, s->n, 0.99), s->n ? s->v[s->n - 1] : 0.0);
    }
    printf("\n%-24s %8s %12s %10s\n", "thread", "tid", "busy ms", "busy");
    for (size_t i = 0; i < t.n_th; i++) {
        struct thread_info *th = &t.th[i];
        if (!th->n) continue;
        double b = busy_ms(th);
        printf("%-24s %8lld %12.3f %9.1f%%\n", th->name ? th->name : "?", th->tid, b,
               extent > 0 ? 100 * b / extent : 0.0);
    }
    struct series *st = NULL;
    for (size_t i = 0; i < t.n_s; i++)
        if (!strcmp(t.s[i].name, "step")) st = &t.s[i];
    if (st && st->n) {
        printf("\nstep time (ms) over %zu steps: min %.4f  p10 %.4f  p50 %.4f  p90 %.4f  p99 "
               "%.4f  max %.4f  mean %.4f\n",
               st->n, st->v[0], quantile(st->v, st->n, 0.1), quantile(st->v, st->n, 0.5),
               quantile(st->v, st->n, 0.9), quantile(st->v, st->n, 0.99), st->v[st->n - 1],
               mean(st->v, st->n));
        /* a coarse histogram: 8 equal-width bins between min and p99 */
        double lo = st->v[0], hi = quantile(st->v, st->n, 0.99), w = (hi - lo) / 8;
        if (w > 0) {
            size_t bins[9] = {0};
            for (size_t i = 0; i < st->n; i++) {
                int b = (int)((st->v[i] - lo) / w);
                bins[b < 0 ? 0 : b > 8 ? 8 : b]++;
            }
            for (int b = 0; b < 9; b++) {
                int bar = (int)(50.0 * (double)bins[b] / (double)st->n + 0.5);
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
    trace_release(&t);
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
static double draw_mean(struct series **sides, size_t k, uint64_t *rng) {
    double sum = 0;
    size_t cnt = 0;
    for (size_t j = 0; j < k; j++) {
        struct series *s = sides[rng_below(rng, k)];
        for (size_t i = 0; s && i < s->n; i++) sum += s->v[rng_below(rng, s->n)];
        cnt += s ? s->n : 0;
    }
    return cnt ? sum / (double)cnt : NAN;
}

static void compare_usage(FILE *out) {
    fprintf(out,
            "usage: kiln trace compare A.json B.json\n"
            "       kiln trace compare --a A1.json [A2.json ...] --b B1.json [B2.json ...]\n\n"
            "Compares the mean duration of each span name, B against A. A difference is\n"
            "reported when the 95%% bootstrap interval of B-A (resampling traces, then spans)\n"
            "excludes 0 and the change exceeds --min-change percent (default 2).\n"
            "  --min-change PCT   smallest relative change to report (default 2)\n"
            "  --reps N           bootstrap resamples (default 2000)\n");
}

static int cmd_compare(int argc, char **argv) {
    const char *fa[MAX_FILES], *fb[MAX_FILES], *pos[MAX_FILES];
    size_t na = 0, nb = 0, np = 0;
    int side = 0, reps = 2000;
    double min_change = 2.0;
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
        } else if (!strcmp(a, "--min-change") || !strcmp(a, "--reps")) {
            char *end;
            if (i + 1 >= argc) goto usage;
            double v = strtod(argv[++i], &end);
            if (*end || !(v >= 0)) goto usage;
            if (a[2] == 'm')
                min_change = v;
            else
                reps = v < 100 ? 100 : v > 1e6 ? 1000000 : (int)v;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "kiln trace compare: unknown option %s\n", a);
            goto usage;
        } else {
            const char **dst = side == 1 ? fa : side == 2 ? fb : pos;
            size_t *n = side == 1 ? &na : side == 2 ? &nb : &np;
            if (*n == MAX_FILES) goto usage;
            dst[(*n)++] = a;
        }
    }
    if (np == 2 && !na && !nb) {
        fa[na++] = pos[0];
        fb[nb++] = pos[1];
    } else if (np || !na || !nb) {
        goto usage;
    }

    struct trace ta[MAX_FILES], tb[MAX_FILES];
    size_t la = 0, lb = 0;
    int rc = 0;
    for (; la < na; la++)
        if (!trace_load(&ta[la], fa[la])) {
            rc = 1;
            goto done;
        }
    for (; lb < nb; lb++)
        if (!trace_load(&tb[lb], fb[lb])) {
            rc = 1;
            goto done;
        }
    printf("A: %zu trace%s, B: %zu trace%s; 95%% bootstrap interval (%d resamples), "
           "min change %.1f%%\n\n",
           na, na == 1 ? "" : "s", nb, nb == 1 ? "" : "s", reps, min_change);
    printf("%-24s %8s %8s %11s %11s %9s  %-23s %s\n", "span", "n A", "n B", "A mean ms",
           "B mean ms", "change", "95% interval B-A (ms)", "verdict");
    int n_sig = 0;
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    /* every span name of A's traces, then those only in B's, in first-seen order */
    const char **names = NULL;
    size_t n_names = 0;
    for (size_t f = 0; f < na + nb; f++) {
        struct trace *t = f < na ? &ta[f] : &tb[f - na];
        for (size_t k = 0; k < t->n_s; k++) {
            size_t j = 0;
            while (j < n_names && strcmp(names[j], t->s[k].name)) j++;
            if (j < n_names) continue;
            names = xrealloc(names, (n_names + 1) * sizeof *names);
            names[n_names++] = t->s[k].name;
        }
    }
    for (size_t ni = 0; ni < n_names; ni++) {
        const char *name = names[ni];
        {
            {
                struct series *sa[MAX_FILES], *sb[MAX_FILES];
                size_t ca = 0, cb = 0;
                double suma = 0, sumb = 0;
                for (size_t g = 0; g < na; g++) {
                    sa[g] = NULL;
                    for (size_t m = 0; m < ta[g].n_s; m++)
                        if (!strcmp(ta[g].s[m].name, name)) sa[g] = &ta[g].s[m];
                    if (sa[g]) ca += sa[g]->n, suma += mean(sa[g]->v, sa[g]->n) * sa[g]->n;
                }
                for (size_t g = 0; g < nb; g++) {
                    sb[g] = NULL;
                    for (size_t m = 0; m < tb[g].n_s; m++)
                        if (!strcmp(tb[g].s[m].name, name)) sb[g] = &tb[g].s[m];
                    if (sb[g]) cb += sb[g]->n, sumb += mean(sb[g]->v, sb[g]->n) * sb[g]->n;
                }
                if (ca < 2 || cb < 2) { /* no spread to judge against */
                    const char *why = !ca ? "only in B" : !cb ? "only in A" : "too few samples";
                    printf("%-24s %8zu %8zu %11s %11s %9s  %-23s %s\n", name, ca, cb, "-", "-", "-",
                           "-", why);
                    continue;
                }
                double ma = suma / (double)ca, mb = sumb / (double)cb;
                double *d = xrealloc(NULL, (size_t)reps * sizeof *d);
                int nd = 0;
                for (int r = 0; r < reps; r++) {
                    double x = draw_mean(sa, na, &rng), y = draw_mean(sb, nb, &rng);
                    if (isfinite(x) && isfinite(y)) d[nd++] = y - x;
                }
                qsort(d, (size_t)nd, sizeof *d, cmp_double);
                double lo = nd ? d[(size_t)(0.025 * (nd - 1))] : 0;
                double hi = nd ? d[(size_t)(0.975 * (nd - 1))] : 0;
                free(d);
                double change = ma > 0 ? 100 * (mb - ma) / ma : 0;
                bool sig = nd && (lo > 0 || hi < 0) && fabs(change) > min_change;
                n_sig += sig;
                char iv[64];
                snprintf(iv, sizeof iv, "[%+.4f, %+.4f]", lo, hi);
                printf("%-24s %8zu %8zu %11.4f %11.4f %+8.1f%%  %-23s %s\n", name, ca, cb, ma, mb,
                       change, iv,
                       !sig         ? "~ (within noise)"
                       : change > 0 ? "SLOWER"
                                    : "FASTER");
            }
        }
    }
    free(names);
    if (na == 1 || nb == 1)
        printf("\nnote: with one trace on a side the interval covers only its span-to-span "
               "spread,\nnot run-to-run spread; pass several runs per side (--a ... --b ...).\n");
    if (n_sig)
        printf("\n%d significant difference%s (B vs A)\n", n_sig, n_sig == 1 ? "" : "s");
    else
        printf("\nno significant difference\n");
done:
    for (size_t i = 0; i < la; i++) trace_release(&ta[i]);
    for (size_t i = 0; i < lb; i++) trace_release(&tb[i]);
    return rc;
usage:
    compare_usage(stderr);
    return 2;
}

static void trace_usage(FILE *out) {
    fprintf(out, "usage: kiln trace summary FILE\n"
                 "       kiln trace compare A.json B.json\n"
                 "       kiln trace compare --a A1.json ... --b B1.json ...\n\n"
                 "Reads Chrome Trace Event JSON written by kiln run --trace (or the server's\n"
                 "profiler). summary: per-span count, total, mean, p50, p99 (ms), busy fraction\n"
                 "per thread and the step-time distribution. compare: per-span mean of B\n"
                 "against A, reporting only differences beyond run-to-run spread\n"
                 "(kiln trace compare --help).\n");
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

/* compare.c - `kiln bench compare A.json B.json`: two runs (level by level
 * for sweeps) side by side with the ratio B/A, flagging differences larger
 * than the runs' own noise.
 *
 * The rule: a mean (TTFT, ITL, TPOT, e2e; or a throughput, taken as the
 * mean of its timeline buckets) differs when |mean_B - mean_A| >
 * 3 * sqrt(se_A^2 + se_B^2), se = sd / sqrt(n) - a two-sample z-test at
 * about 0.3% false alarms per line under normal noise. Quantiles are shown
 * with their ratios but not flagged (no standard error is kept for them).
 * Throughputs are judged by the spread of their timeline buckets (1 s, or
 * narrower in short runs) and need at least 3 whole buckets in both runs. */
#include "bench/bench.h"
#include "base/status.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static double num(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Mean and standard error of a timeline rate over its buckets (skipping the
 * last, partial one). */
static void tick_stats(const json_t *run, const char *k, double *mean, double *se) {
    const json_t *tl = json_object_get(run, "timeline");
    size_t n = json_array_size(tl);
    *mean = *se = NAN;
    if (n < 4) return;
    n--; /* last second is partial */
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) {
        double v = num(json_array_get(tl, i), k);
        s += v, ss += v * v;
    }
    double m = s / (double)n, var = (ss - (double)n * m * m) / (double)(n - 1);
    *mean = m;
    *se = sqrt(var > 0 ? var : 0) / sqrt((double)n);
}

static void line(FILE *f, const char *name, double a, double b, double se_a, double se_b,
                 int *flags) {
    char fa[32], fb[32];
    if (!isnan(se_a))
        snprintf(fa, sizeof fa, "%.2f±%.2f", a, se_a);
    else
        snprintf(fa, sizeof fa, "%.2f", a);
    if (!isnan(se_b))
        snprintf(fb, sizeof fb, "%.2f±%.2f", b, se_b);
    else
        snprintf(fb, sizeof fb, "%.2f", b);
    const char *flag = "";
    if (!isnan(se_a) && !isnan(se_b) && !isnan(a) && !isnan(b)) {
        double noise = 3 * sqrt(se_a * se_a + se_b * se_b);
        if (fabs(b - a) > noise && b != a) {
            flag = b > a ? "  * higher" : "  * lower";
            (*flags)++;
        }
    }
    char ratio[32];
    if (a > 0 && !isnan(b))
        snprintf(ratio, sizeof ratio, "%.3f", b / a);
    else
        snprintf(ratio, sizeof ratio, "-");
    fprintf(f, "%-22s %20s %20s %8s%s\n", name, fa, fb, ratio, flag);
}

static void compare_run(FILE *f, const json_t *ra, const json_t *rb, int *flags) {
    const json_t *sa = json_object_get(ra, "summary"), *sb = json_object_get(rb, "summary");
    fprintf(f, "%-22s %20s %20s %8s\n", "", "A", "B", "B/A");
    line(f, "requests ok", num(sa, "ok"), num(sb, "ok"), NAN, NAN, flags);
    line(f, "errors", num(sa, "requests") - num(sa, "ok"), num(sb, "requests") - num(sb, "ok"), NAN,
         NAN, flags);
    struct {
        const char *label, *sum_key, *tick_key;
    } tp[] = {{"req/s", "rps", "rps"}, {"output tok/s", "output_tps", "out_tps"}};
    for (int i = 0; i < 2; i++) {
        double ma, sea, mb, seb;
        tick_stats(ra, tp[i].tick_key, &ma, &sea);
        tick_stats(rb, tp[i].tick_key, &mb, &seb);
        /* show the run's own figure; judge noise from its per-second spread */
        double a = num(sa, tp[i].sum_key), b = num(sb, tp[i].sum_key);
        if (!isnan(ma) && !isnan(mb))
            line(f, tp[i].label, a, b, sea, seb, flags);
        else
            line(f, tp[i].label, a, b, NAN, NAN, flags);
    }
    line(f, "goodput req/s", num(sa, "goodput_rps"), num(sb, "goodput_rps"), NAN, NAN, flags);
    const char *ms[] = {"ttft", "itl", "tpot", "e2e"};
    for (int i = 0; i < 4; i++) {
        const json_t *a = json_object_get(sa, ms[i]), *b = json_object_get(sb, ms[i]);
        double na = num(a, "count"), nb = num(b, "count");
        if (!(na > 0) && !(nb > 0)) continue;
        char name[48];
        snprintf(name, sizeof name, "%s mean ms", ms[i]);
        double se_a = na > 1 ? num(a, "sd") / sqrt(na) : NAN;
        double se_b = nb > 1 ? num(b, "sd") / sqrt(nb) : NAN;
        line(f, name, num(a, "mean"), num(b, "mean"), se_a, se_b, flags);
        const char *qs[] = {"p50", "p90", "p99"};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "%s %s ms", ms[i], qs[k]);
            line(f, name, num(a, qs[k]), num(b, qs[k]), NAN, NAN, flags);
        }
    }
}

int bench_compare(FILE *f, const char *path_a, const char *path_b) {
    json_error_t e;
    json_t *a = json_load_file(path_a, 0, &e);
    if (!a) {
        kiln_fail(KILN_ERR_IO, "%s: %s (line %d)", path_a, e.text, e.line);
        return -1;
    }
    json_t *b = json_load_file(path_b, 0, &e);
    if (!b) {
        kiln_fail(KILN_ERR_IO, "%s: %s (line %d)", path_b, e.text, e.line);
        json_decref(a);
        return -1;
    }
    const json_t *runs_a = json_object_get(a, "runs"), *runs_b = json_object_get(b, "runs");
    int flags = -1;
    if (!json_array_size(runs_a) || !json_array_size(runs_b)) {
        kiln_fail(KILN_ERR_FORMAT, "%s: no runs in the file (not a kiln bench --json report)",
                  json_array_size(runs_a) ? path_b : path_a);
        goto done;
    }
    flags = 0;
    const json_t *pa = json_object_get(a, "params"), *pb = json_object_get(b, "params");
    fprintf(f, "A: %s  (%s, %s)\nB: %s  (%s, %s)\n", path_a,
            json_string_value(json_object_get(pa, "url")) ?: "?",
            json_string_value(json_object_get(pa, "workload")) ?: "?", path_b,
            json_string_value(json_object_get(pb, "url")) ?: "?",
            json_string_value(json_object_get(pb, "workload")) ?: "?");
    size_t n = json_array_size(runs_a) < json_array_size(runs_b) ? json_array_size(runs_a)
                                                                 : json_array_size(runs_b);
    const char *mode = json_string_value(json_object_get(pa, "mode")) ?: "level";
    for (size_t i = 0; i < n; i++) {
        const json_t *ra = json_array_get(runs_a, i), *rb = json_array_get(runs_b, i);
        fprintf(f, "\n== %s %g vs %g ==\n", mode, num(ra, "level"), num(rb, "level"));
        compare_run(f, ra, rb, &flags);
    }
    if (json_array_size(runs_a) != json_array_size(runs_b))
        fprintf(f, "\n(only the first %zu levels compared: the files have %zu and %zu)\n", n,
                json_array_size(runs_a), json_array_size(runs_b));
    fprintf(f,
            "\n%d difference%s beyond noise (* : |B-A| > 3 combined standard errors of the "
            "means; ± is one standard error)\n",
            flags, flags == 1 ? "" : "s");
done:
    json_decref(a);
    json_decref(b);
    return flags;
}

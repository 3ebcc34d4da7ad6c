/* report.c - kiln bench's console summary, JSON document of a run and CSV
 * of its requests. The JSON numbers are the same aggregates the console
 * shows (milliseconds for latencies), plus a per-second timeline and CDF
 * points read back from the histograms, which the HTML report plots. */
#include "bench/bench.h"
#include "base/status.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bench_metric_line(char *buf, size_t cap, const char *name, const bench_metric *m) {
    const hist *h = &m->h;
    if (!h->n) {
        snprintf(buf, cap, "%-5s count=0", name);
        return;
    }
    snprintf(buf, cap,
             "%-5s count=%llu, mean=%.2fms, min=%.2fms, max=%.2fms, p50=%.2fms, p90=%.2fms, "
             "p95=%.2fms, p99=%.2fms",
             name, (unsigned long long)h->n, hist_mean(h), h->min, h->max, hist_quantile(h, 0.5),
             hist_quantile(h, 0.9), hist_quantile(h, 0.95), hist_quantile(h, 0.99));
}

static void slo_text(char *buf, size_t cap, const bench_slo *slo) {
    int n = 0;
    buf[0] = 0;
    if (slo->ttft_ms > 0) n += snprintf(buf + n, cap - (size_t)n, " ttft<=%gms", slo->ttft_ms);
    if (slo->tpot_ms > 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, " tpot<=%gms", slo->tpot_ms);
    if (slo->e2e_ms > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " e2e<=%gms", slo->e2e_ms);
}

void bench_print_summary(FILE *f, const bench_stats *s, const bench_slo *slo) {
    uint64_t n_err = s->n - s->n_ok;
    fprintf(f, "requests: %llu ok, %llu errors", (unsigned long long)s->n_ok,
            (unsigned long long)n_err);
    if (n_err) {
        const char *sep = " (";
        for (int k = 1; k < BENCH_ERR_COUNT; k++)
            if (s->n_err[k]) {
                fprintf(f, "%s%s %llu", sep, bench_err_name((bench_err)k),
                        (unsigned long long)s->n_err[k]);
                sep = ", ";
            }
        fputc(')', f);
    }
    fprintf(f, " in %.2f s, at most %d in flight\n", s->window_s, s->max_in_flight);
    fprintf(f, "throughput: %.2f req/s, %.1f output tok/s, %.1f total tok/s\n", s->rps, s->out_tps,
            s->total_tps);
    char sl[128];
    slo_text(sl, sizeof sl, slo);
    if (sl[0])
        fprintf(f, "goodput: %.2f req/s (%.1f%% of requests meet%s)\n", s->goodput_rps,
                s->n ? 100.0 * (double)s->n_good / (double)s->n : 0.0, sl);
    char line[512];
    const bench_metric *ms[] = {&s->ttft, &s->itl, &s->tpot, &s->e2e};
    const char *names[] = {"ttft", "itl", "tpot", "e2e"};
    for (int i = 0; i < 4; i++) {
        bench_metric_line(line, sizeof line, names[i], ms[i]);
        fprintf(f, "%s\n", line);
    }
    bench_metric_line(line, sizeof line, "lag", &s->lag);
    fprintf(f, "%s  (send - scheduled)\n", line);
    bench_metric_line(line, sizeof line, "tool", &s->overhead);
    fprintf(f, "%s  (the tool's own share of e2e)\n", line);
    fprintf(f, "bench cpu: %.1f%% of one core\n", s->cpu_pct);
}

static json_t *metric_json(const bench_metric *m) {
    const hist *h = &m->h;
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "count", (json_int_t)h->n,
                     "mean", hist_mean(h), "sd", bench_metric_sd(m), "min", h->min, "max", h->max,
                     "p50", hist_quantile(h, 0.5), "p90", hist_quantile(h, 0.9), "p95",
                     hist_quantile(h, 0.95), "p99", hist_quantile(h, 0.99));
}

/* [[value_ms, fraction <= value], ...] read back from the histogram. */
static json_t *cdf_json(const hist *h) {
    json_t *a = json_array();
    if (!h->n) return a;
    double prev = -1;
    for (int i = 0; i <= 200; i++) {
        double q = i < 200 ? i / 200.0 : 1.0;
        if (i == 199) q = 0.995;
        double v = hist_quantile(h, q);
        if (v == prev && i != 200) continue;
        json_array_append_new(a, json_pack("[f, f]", v, q));
        prev = v;
    }
    return a;
}

static json_t *timeline_json(const bench_run *r) {
    int64_t t0 = -1, t1 = -1;
    for (size_t i = 0; i < r->n_recs; i++) {
        const bench_record *rec = &r->recs[i];
        if (rec->warmup) continue;
        if (t0 < 0 || rec->t_sched < t0) t0 = rec->t_sched;
        if (rec->t_done > t1) t1 = rec->t_done;
    }
    json_t *a = json_array();
    if (t0 < 0 || t1 < t0) return a;
    /* 1 s buckets, narrower for short runs so a plot still has ~20 points */
    double span = (double)(t1 - t0) * 1e-9, widths[] = {0.05, 0.1, 0.25, 0.5, 1};
    double bw = 1;
    for (int i = 0; i < 5; i++)
        if (span / widths[i] <= 40) {
            bw = widths[i];
            break;
        }
    int64_t bw_ns = (int64_t)(bw * 1e9);
    /* the last bucket ends at the last completion; a sliver shorter than
     * half a bucket joins the one before, so its rate is not all noise */
    size_t n = (size_t)((t1 - t0) / bw_ns) + 1;
    double rest = (double)(t1 - t0 - (int64_t)(n - 1) * bw_ns) * 1e-9;
    if (n > 1 && rest < bw / 2) n--, rest += bw;
    if (n > 100000) n = 100000;
    bench_tick *ticks = calloc(n, sizeof *ticks);
    if (!ticks) return a;
    for (size_t i = 0; i < r->n_recs; i++) {
        const bench_record *rec = &r->recs[i];
        if (rec->warmup || rec->t_done < 0) continue;
        size_t k = (size_t)((rec->t_done - t0) / bw_ns);
        if (k >= n) k = n - 1;
        ticks[k].done++;
        if (rec->err) {
            ticks[k].errors++;
            continue;
        }
        ticks[k].out_tokens += (uint64_t)(rec->out_tokens > 0 ? rec->out_tokens : 0);
        double ttft = bench_rec_ttft_ms(rec);
        if (ttft >= 0) ticks[k].ttft_sum_ms += ttft, ticks[k].ttft_n++;
    }
    for (size_t k = 0; k < n; k++) {
        const bench_tick *t = &ticks[k];
        double w = k + 1 < n ? bw : rest;
        if (w < 1e-3) w = 1e-3;
        json_t *o =
            json_pack("{s:f, s:f, s:I, s:I, s:I, s:f, s:f}", "t", bw * (double)k, "width", w,
                      "done", (json_int_t)t->done, "errors", (json_int_t)t->errors, "out_tokens",
                      (json_int_t)t->out_tokens, "rps", (double)(t->done - t->errors) / w,
                      "out_tps", (double)t->out_tokens / w);
        json_object_set_new(o, "ttft_mean",
                            t->ttft_n ? json_real(t->ttft_sum_ms / t->ttft_n) : json_null());
        json_array_append_new(a, o);
    }
    free(ticks);
    return a;
}

json_t *bench_run_json(const bench_run *r, const bench_stats *s) {
    json_t *errs = json_object();
    for (int k = 1; k < BENCH_ERR_COUNT; k++)
        json_object_set_new(errs, bench_err_name((bench_err)k),
                            json_integer((json_int_t)s->n_err[k]));
    json_t *sum =
        json_pack("{s:I, s:I, s:I, s:o, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:f, s:I}",
                  "requests", (json_int_t)s->n, "ok", (json_int_t)s->n_ok, "good",
                  (json_int_t)s->n_good, "errors", errs, "window_s", s->window_s, "rps", s->rps,
                  "output_tps", s->out_tps, "total_tps", s->total_tps, "goodput_rps",
                  s->goodput_rps, "goodput_frac", s->n ? (double)s->n_good / (double)s->n : 0.0,
                  "in_tokens", (json_int_t)s->in_tokens, "out_tokens", (json_int_t)s->out_tokens,
                  "cpu_pct", s->cpu_pct, "cancelled", (json_int_t)r->n_cancelled);
    json_object_set_new(sum, "max_in_flight", json_integer(r->max_in_flight));
    json_object_set_new(sum, "ttft", metric_json(&s->ttft));
    json_object_set_new(sum, "itl", metric_json(&s->itl));
    json_object_set_new(sum, "tpot", metric_json(&s->tpot));
    json_object_set_new(sum, "e2e", metric_json(&s->e2e));
    json_object_set_new(sum, "lag", metric_json(&s->lag));
    json_object_set_new(sum, "overhead", metric_json(&s->overhead));
    json_t *cdf = json_pack("{s:o, s:o, s:o}", "ttft", cdf_json(&s->ttft.h), "itl",
                            cdf_json(&s->itl.h), "e2e", cdf_json(&s->e2e.h));
    return json_pack("{s:o, s:o, s:o}", "summary", sum, "timeline", timeline_json(r), "cdf", cdf);
}

static void csv_ms(FILE *f, double v) {
    if (v < 0)
        fputs(",", f);
    else
        fprintf(f, ",%.3f", v);
}

kiln_status bench_write_csv(const char *path, const bench_run *const *runs, const double *levels,
                            size_t n_runs) {
    FILE *f = fopen(path, "w");
    if (!f) return kiln_fail(KILN_ERR_IO, "%s: %s", path, strerror(errno));
    fputs("level,index,warmup,t_sched_ms,t_send_ms,ttft_ms,e2e_ms,tpot_ms,itl_mean_ms,"
          "itl_max_ms,overhead_ms,in_tokens,out_tokens,usage,chunks,http_status,error\n",
          f);
    for (size_t k = 0; k < n_runs; k++) {
        for (size_t i = 0; i < runs[k]->n_recs; i++) {
            const bench_record *r = &runs[k]->recs[i];
            fprintf(f, "%g,%llu,%d,%.3f,%.3f", levels[k], (unsigned long long)r->index,
                    r->warmup ? 1 : 0, (double)r->t_sched * 1e-6, (double)r->t_send * 1e-6);
            csv_ms(f, bench_rec_ttft_ms(r));
            csv_ms(f, bench_rec_e2e_ms(r));
            csv_ms(f, bench_rec_tpot_ms(r));
            csv_ms(f, r->n_chunks > 1 ? r->itl_sum_ms / (r->n_chunks - 1) : -1);
            csv_ms(f, r->n_chunks > 1 ? r->itl_max_ms : -1);
            fprintf(f, ",%.4f", r->overhead_ms);
            fprintf(f, ",%lld,%lld,%d,%u,%d,%s\n", (long long)r->in_tokens,
                    (long long)r->out_tokens, r->usage ? 1 : 0, r->n_chunks, r->http_status,
                    bench_err_name(r->err));
        }
    }
    if (fclose(f)) return kiln_fail(KILN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return KILN_OK;
}

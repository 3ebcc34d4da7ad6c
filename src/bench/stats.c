/* stats.c - aggregates of a kiln bench run: latency distributions in
 * src/obs/hist.h histograms (milliseconds; quantiles within HIST_REL_ERROR),
 * sums of squares beside them for standard deviations (compare.c uses the
 * standard errors), counts of errors by kind, throughputs and goodput
 * against SLOs. Only measured (non-warm-up) requests count.
 *
 * Definitions: TTFT = first content - scheduled send time; e2e = done -
 * scheduled; TPOT = (done - first content) / (output tokens - 1), for
 * requests with at least 2 output tokens; ITL = each gap between content
 * events; lag = handed to curl - scheduled (the tool's own delay);
 * overhead = the tool's whole share of e2e (see bench_record). The
 * window runs from the first measured request's scheduled time to the last
 * measured completion. */
#include "bench/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *bench_err_name(bench_err e) {
    static const char *const names[BENCH_ERR_COUNT] = {
        "ok", "connect", "timeout", "http_4xx", "http_5xx", "bad_response", "network"};
    return (unsigned)e < BENCH_ERR_COUNT ? names[e] : "?";
}

double bench_rec_ttft_ms(const bench_record *rec) {
    return rec->t_first >= 0 ? (double)(rec->t_first - rec->t_sched) * 1e-6 : -1;
}

double bench_rec_e2e_ms(const bench_record *rec) {
    return rec->t_done >= 0 ? (double)(rec->t_done - rec->t_sched) * 1e-6 : -1;
}

double bench_rec_tpot_ms(const bench_record *rec) {
    if (rec->t_first < 0 || rec->t_done < 0 || rec->out_tokens < 2) return -1;
    return (double)(rec->t_done - rec->t_first) * 1e-6 / (double)(rec->out_tokens - 1);
}

bool bench_record_good(const bench_record *rec, const bench_slo *slo) {
    if (rec->err != BENCH_OK) return false;
    double ttft = bench_rec_ttft_ms(rec), tpot = bench_rec_tpot_ms(rec);
    if (slo->ttft_ms > 0 && ttft >= 0 && ttft > slo->ttft_ms) return false;
    if (slo->tpot_ms > 0 && tpot >= 0 && tpot > slo->tpot_ms) return false;
    if (slo->e2e_ms > 0 && bench_rec_e2e_ms(rec) > slo->e2e_ms) return false;
    return true;
}

static bool parse_ms(const char *s, size_t n, double *out) {
    char buf[64];
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    double v = strtod(buf, &end);
    if (end == buf || !(v > 0)) return false;
    if (!*end || !strcmp(end, "ms"))
        *out = v;
    else if (!strcmp(end, "s"))
        *out = v * 1e3;
    else if (!strcmp(end, "us"))
        *out = v * 1e-3;
    else
        return false;
    return true;
}

bool bench_slo_parse(const char *s, bench_slo *out) {
    memset(out, 0, sizeof *out);
    while (*s) {
        const char *comma = strchr(s, ','), *end = comma ? comma : s + strlen(s);
        const char *eq = memchr(s, '=', (size_t)(end - s));
        if (!eq) return false;
        size_t kl = (size_t)(eq - s);
        double *dst = kl == 4 && !memcmp(s, "ttft", 4)   ? &out->ttft_ms
                      : kl == 4 && !memcmp(s, "tpot", 4) ? &out->tpot_ms
                      : kl == 3 && !memcmp(s, "e2e", 3)  ? &out->e2e_ms
                                                         : NULL;
        if (!dst || !parse_ms(eq + 1, (size_t)(end - eq - 1), dst)) return false;
        s = comma ? comma + 1 : end;
    }
    return true;
}

static void metric_add(bench_metric *m, double v) {
    hist_record(&m->h, v);
    m->sumsq += v * v;
}

double bench_metric_sd(const bench_metric *m) {
    if (m->h.n < 2) return 0;
    double n = (double)m->h.n, mean = m->h.sum / n;
    double var = (m->sumsq - n * mean * mean) / (n - 1);
    return var > 0 ? sqrt(var) : 0;
}

bench_stats *bench_stats_compute(const bench_run *r, const bench_slo *slo) {
    bench_stats *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    bench_metric *ms[] = {&s->ttft, &s->itl, &s->tpot, &s->e2e, &s->lag, &s->overhead};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) hist_init(&ms[i]->h);
    s->itl.h = r->itl;
    s->itl.sumsq = r->itl_sumsq;
    int64_t t_first = -1, t_last = -1;
    for (size_t i = 0; i < r->n_recs; i++) {
        const bench_record *rec = &r->recs[i];
        if (rec->warmup) continue;
        s->n++;
        s->n_err[rec->err]++;
        if (t_first < 0 || rec->t_sched < t_first) t_first = rec->t_sched;
        if (rec->t_done > t_last) t_last = rec->t_done;
        metric_add(&s->lag, (double)(rec->t_send - rec->t_sched) * 1e-6);
        if (rec->err != BENCH_OK) continue;
        s->n_ok++;
        metric_add(&s->overhead, rec->overhead_ms);
        s->in_tokens += (uint64_t)(rec->in_tokens > 0 ? rec->in_tokens : 0);
        s->out_tokens += (uint64_t)(rec->out_tokens > 0 ? rec->out_tokens : 0);
        double ttft = bench_rec_ttft_ms(rec), tpot = bench_rec_tpot_ms(rec);
        if (ttft >= 0) metric_add(&s->ttft, ttft);
        if (tpot >= 0) metric_add(&s->tpot, tpot);
        metric_add(&s->e2e, bench_rec_e2e_ms(rec));
        if (slo && bench_record_good(rec, slo)) s->n_good++;
    }
    s->n_err[BENCH_OK] = 0;
    s->window_s = t_first >= 0 && t_last > t_first ? (double)(t_last - t_first) * 1e-9 : 0;
    if (s->window_s > 0) {
        s->rps = (double)s->n_ok / s->window_s;
        s->out_tps = (double)s->out_tokens / s->window_s;
        s->total_tps = (double)(s->in_tokens + s->out_tokens) / s->window_s;
        s->goodput_rps = (double)s->n_good / s->window_s;
    }
    double wall = (double)r->t_end * 1e-9;
    s->max_in_flight = r->max_in_flight;
    s->cpu_pct = wall > 0 ? 100.0 * r->cpu_s / wall : 0;
    return s;
}

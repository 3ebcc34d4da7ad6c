/* api_diag.c - GET /diagnostics/performance and /diagnostics/bottleneck-
 * analysis (kiln serve --diagnostics): a snapshot of the host, the machine's
 * measured limits, the process, each model and the engine, with the last
 * window's latency percentiles and throughput, and a verdict on what bounds
 * the server, judged against the machine's own roofline.
 *
 * Data: per-request samples (e2e, queue, TTFT, prefill, decode, tokens,
 * errors) and inter-token gaps go into sample rings (obs/window.h) as
 * requests finish; once a second the watcher thread (srv_diag_tick) turns
 * the schedulers' cumulative step statistics (kiln_sched_state) into
 * per-second deltas - busy and forward seconds, tokens, steps, estimated
 * bytes read and FLOPs from each model's shapes and KV length - and reads
 * the host's steal time. A snapshot only reads these rings and atomics
 * (kiln_registry_list copies each scheduler's state under its lock for a
 * moment): it never waits for a step. The machine limits are measured once,
 * after the models load (kiln_machine_measure, quick mode). GPU telemetry
 * (obs/gpu.h, NVML loaded at run time) is opened at start for /metrics; the
 * snapshot's "gpu" section and GPU findings are refreshed by the tick (an
 * NVML read can take tens of ms per device) and served from that copy.
 * The "kernels" section lists the kernel variant chosen per weight type
 * (measured, cached or by rank) as the models' contexts chose them. */
#include "base/log.h"
#include "base/time.h"
#include "bench/bench.h"
#include "obs/gpu.h"
#include "obs/host.h"
#include "obs/proc.h"
#include "obs/window.h"
#include "server/srv.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { DIAG_MAX_MODELS = 64 };

/* per-second deltas */
enum { W_BUSY, W_FWD, W_PRE, W_DEC, W_STEPS, W_BYTES, W_FLOPS, W_FLOPS_INT8, W_STEAL, W_SEC };
/* per request */
enum { R_E2E, R_QUEUE, R_TTFT, R_PREFILL, R_DECODE, R_GEN, R_PROMPT, R_ERR4, R_ERR5, R_ALL, R_N };

struct srv_diag {
    win *sec[W_SEC];
    win *req[R_N];
    win *itl;
    double last_tick;
    struct {
        char name[128];
        kiln_sched_state st;
    } prev[DIAG_MAX_MODELS];
    int n_prev;
    host_cpu_times cpu_prev;
    kiln_machine_limits limits;
    atomic_int limits_ok;
    double t_start;
    pthread_mutex_t gpu_mu;
    char *gpu_text, *gpu_findings; /* JSON of the last tick, under gpu_mu */
};

void srv_gpu_open(srv *s) {
    s->gpu = gpu_open(s->gpu_why, sizeof s->gpu_why);
    if (s->gpu && gpu_metrics_add(s->m.reg, s->gpu) != KILN_OK)
        KILN_LOGW("kiln serve: GPU metrics not registered: %s", kiln_last_error());
}

/* The snapshot's gpu section and the GPU findings, as JSON text. */
static void gpu_refresh(srv *s, int64_t waiting) {
    srv_diag *d = s->diag;
    json_t *j = gpu_json(s->gpu, s->gpu_why), *f = json_array();
    for (int i = 0; s->gpu && i < gpu_count(s->gpu); i++) {
        gpu_sample smp;
        gpu_finding out[GPU_MAX_FINDINGS];
        gpu_read(s->gpu, i, &smp);
        int n = gpu_findings(&smp, waiting, out, GPU_MAX_FINDINGS);
        for (int k = 0; k < n; k++) json_array_append_new(f, gpu_finding_json(&out[k]));
    }
    char *jt = j ? json_dumps(j, JSON_COMPACT) : NULL, *ft = json_dumps(f, JSON_COMPACT);
    json_decref(j);
    json_decref(f);
    pthread_mutex_lock(&d->gpu_mu);
    free(d->gpu_text);
    free(d->gpu_findings);
    d->gpu_text = jt, d->gpu_findings = ft;
    pthread_mutex_unlock(&d->gpu_mu);
}

/* A copy of the cached JSON text (p is gpu_text or gpu_findings), parsed. */
static json_t *gpu_cached(srv_diag *d, char *const *p) {
    pthread_mutex_lock(&d->gpu_mu);
    json_t *j = *p ? json_loads(*p, 0, NULL) : NULL;
    pthread_mutex_unlock(&d->gpu_mu);
    return j;
}

kiln_status srv_diag_init(srv *s) {
    srv_diag *d = calloc(1, sizeof *d);
    if (!d) return KILN_ERR_NOMEM;
    s->diag = d;
    for (int i = 0; i < W_SEC; i++)
        if (!(d->sec[i] = win_create(900))) return KILN_ERR_NOMEM;
    for (int i = 0; i < R_N; i++)
        if (!(d->req[i] = win_create(8192))) return KILN_ERR_NOMEM;
    if (!(d->itl = win_create(65536))) return KILN_ERR_NOMEM;
    d->t_start = kiln_now_s();
    host_cpu_times_read(&d->cpu_prev);
    pthread_mutex_init(&d->gpu_mu, NULL);
    gpu_refresh(s, 0);
    return KILN_OK;
}

void srv_diag_free(srv *s) {
    srv_diag *d = s->diag;
    if (!d) return;
    for (int i = 0; i < W_SEC; i++) win_destroy(d->sec[i]);
    for (int i = 0; i < R_N; i++) win_destroy(d->req[i]);
    win_destroy(d->itl);
    pthread_mutex_destroy(&d->gpu_mu);
    free(d->gpu_text);
    free(d->gpu_findings);
    free(d);
    s->diag = NULL;
}

void srv_diag_measure(srv *s, int32_t n_threads) {
    srv_diag *d = s->diag;
    if (!d) return;
    if (kiln_machine_measure(n_threads, 1, &d->limits) != KILN_OK) return;
    atomic_store(&d->limits_ok, 1);
    metric_set(s->m.mach_read, NULL, d->limits.read_gbs * 1e9);
    metric_set(s->m.mach_fma, NULL, d->limits.fma_gflops * 1e9);
    metric_set(s->m.mach_int8, NULL, d->limits.vnni_gops * 1e9);
}

void srv_diag_itl(srv *s, double gap) {
    if (s->diag) win_add(s->diag->itl, kiln_now_s(), gap);
}

void srv_diag_request(srv_req *r, double e2e) {
    srv_diag *d = r->s->diag;
    if (!d || r->route > SRV_R_EMBEDDINGS) return; /* the API routes only */
    double t = kiln_now_s();
    win_add(d->req[R_ALL], t, 1);
    win_add(d->req[R_E2E], t, e2e);
    if (r->status >= 500 || r->status == 499)
        win_add(d->req[R_ERR5], t, 1);
    else if (r->status >= 400)
        win_add(d->req[R_ERR4], t, 1);
    if (r->route == SRV_R_EMBEDDINGS || r->status != 200) return;
    const kiln_request_stats *st = &r->stats;
    win_add(d->req[R_QUEUE], t, st->t_queue);
    win_add(d->req[R_PREFILL], t, st->t_prefill);
    win_add(d->req[R_DECODE], t, st->t_decode);
    win_add(d->req[R_PROMPT], t, st->n_prompt);
    win_add(d->req[R_GEN], t, st->n_gen);
    if (st->n_gen > 0) win_add(d->req[R_TTFT], t, st->t_first_token);
}

/* The previous cumulative state of model name (a new slot when unseen). */
static kiln_sched_state *prev_of(srv_diag *d, const char *name) {
    for (int i = 0; i < d->n_prev; i++)
        if (!strcmp(d->prev[i].name, name)) return &d->prev[i].st;
    if (d->n_prev == DIAG_MAX_MODELS) return NULL;
    snprintf(d->prev[d->n_prev].name, sizeof d->prev[0].name, "%s", name);
    memset(&d->prev[d->n_prev].st, 0, sizeof(kiln_sched_state));
    return &d->prev[d->n_prev++].st;
}

void srv_est_work(const kiln_model_desc *d, const kiln_sched_state *st, double *flops,
                  double *bytes) {
    double toks = (double)st->n_prefill_tokens + (double)st->n_decode_tokens;
    double kv_pos = st->kv_total ? (double)st->kv_bytes / (double)st->kv_total : 0;
    *flops = 2.0 * (double)d->n_matmul_params * toks;
    *bytes = (double)st->n_steps * (double)d->n_bytes + (double)st->kv_read * kv_pos;
}

void srv_diag_tick(srv *s) {
    srv_diag *d = s->diag;
    double now = kiln_now_s();
    if (!d || now - d->last_tick < 1.0) return;
    d->last_tick = now;
    kiln_registry_entry e[DIAG_MAX_MODELS];
    int32_t n = kiln_registry_list(s->reg, e, DIAG_MAX_MODELS);
    double v[W_SEC] = {0};
    int64_t waiting = 0;
    for (int32_t i = 0; i < n && i < DIAG_MAX_MODELS; i++) {
        if (!e[i].loaded || !e[i].sched.n_slots) continue;
        waiting += e[i].sched.queued;
        kiln_sched_state *p = prev_of(d, e[i].name), *c = &e[i].sched;
        if (!p) continue;
        if (c->n_steps < p->n_steps) memset(p, 0, sizeof *p); /* reloaded */
        double f1, b1, f0, b0;
        srv_est_work(&e[i].desc, c, &f1, &b1);
        srv_est_work(&e[i].desc, p, &f0, &b0);
        v[W_BUSY] += c->t_busy - p->t_busy;
        v[W_FWD] += c->t_forward - p->t_forward;
        v[W_PRE] += (double)(c->n_prefill_tokens - p->n_prefill_tokens);
        v[W_DEC] += (double)(c->n_decode_tokens - p->n_decode_tokens);
        v[W_STEPS] += (double)(c->n_steps - p->n_steps);
        v[W_BYTES] += b1 - b0;
        v[e[i].desc.int8_dot ? W_FLOPS_INT8 : W_FLOPS] += f1 - f0;
        *p = *c;
    }
    host_cpu_times ct;
    host_cpu_times_read(&ct);
    if (ct.ok && d->cpu_prev.ok && ct.total > d->cpu_prev.total)
        v[W_STEAL] =
            100.0 * (double)(ct.steal - d->cpu_prev.steal) / (double)(ct.total - d->cpu_prev.total);
    d->cpu_prev = ct;
    for (int i = 0; i < W_SEC; i++) win_add(d->sec[i], now, v[i]);
    if (s->gpu) gpu_refresh(s, waiting);
}

/* ---- the snapshot */

static double window_of(srv_req *r) {
    const char *w = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "window");
    double x = w ? strtod(w, NULL) : 60;
    return x >= 1 && x <= 900 ? x : 60;
}

static json_t *pct_json(const win_stats *w, double scale) {
    if (!w->n) return json_pack("{s:i}", "count", 0);
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)w->n, "mean",
                     w->mean * scale, "p50", w->p50 * scale, "p90", w->p90 * scale, "p99",
                     w->p99 * scale, "max", w->max * scale);
}

/* Everything the two endpoints report, read once. */
struct snap {
    double window, now;
    win_stats sec[W_SEC], req[R_N], itl;
    kiln_registry_entry e[DIAG_MAX_MODELS];
    int32_t n_models;
    int32_t slots, busy, queued;
    int64_t kv_used, kv_total;
    double step_p50, step_p99; /* worst model's */
    host_info host;
    host_pressure psi_cpu, psi_mem, psi_io;
    kiln_machine_limits limits;
    bool limits_ok;
    /* derived */
    double busy_ratio, host_share, bw_frac, fma_frac, int8_frac, gbs, gflops, gops;
};

static void take(srv *s, double window, struct snap *p) {
    srv_diag *d = s->diag;
    memset(p, 0, sizeof *p);
    p->window = window;
    p->now = kiln_now_s();
    for (int i = 0; i < W_SEC; i++) win_get(d->sec[i], p->now, window, &p->sec[i]);
    for (int i = 0; i < R_N; i++) win_get(d->req[i], p->now, window, &p->req[i]);
    win_get(d->itl, p->now, window, &p->itl);
    p->n_models = kiln_registry_list(s->reg, p->e, DIAG_MAX_MODELS);
    if (p->n_models > DIAG_MAX_MODELS) p->n_models = DIAG_MAX_MODELS;
    for (int32_t i = 0; i < p->n_models; i++) {
        const kiln_sched_state *st = &p->e[i].sched;
        p->slots += st->n_slots, p->busy += st->busy_slots, p->queued += st->queued;
        p->kv_used += st->kv_used, p->kv_total += st->kv_total;
        if (st->step_p99 > p->step_p99) p->step_p50 = st->step_p50, p->step_p99 = st->step_p99;
    }
    host_info_read(&p->host);
    host_pressure_read("cpu", &p->psi_cpu);
    host_pressure_read("memory", &p->psi_mem);
    host_pressure_read("io", &p->psi_io);
    p->limits_ok = atomic_load(&d->limits_ok);
    p->limits = d->limits;
    /* the part of the window the server has been up (and the rings cover) */
    double span = p->now - d->t_start < window ? p->now - d->t_start : window;
    if (p->sec[W_BUSY].covered_s > 0 && p->sec[W_BUSY].covered_s < span)
        span = p->sec[W_BUSY].covered_s;
    double busy = p->sec[W_BUSY].sum, fwd = p->sec[W_FWD].sum;
    p->busy_ratio = span > 0 ? busy / span : 0;
    p->host_share = busy > 0 ? (busy - fwd) / busy : 0;
    if (fwd > 0) {
        p->gbs = p->sec[W_BYTES].sum / fwd / 1e9;
        p->gflops = p->sec[W_FLOPS].sum / fwd / 1e9;
        p->gops = p->sec[W_FLOPS_INT8].sum / fwd / 1e9;
    }
    if (p->limits_ok) {
        if (p->limits.read_gbs > 0) p->bw_frac = p->gbs / p->limits.read_gbs;
        if (p->limits.fma_gflops > 0) p->fma_frac = p->gflops / p->limits.fma_gflops;
        /* without VNNI, int8 products run on the FMA units' integer path:
         * the FMA peak is the nearest measured bound */
        double int8_peak = p->limits.vnni_gops > 0 ? p->limits.vnni_gops : p->limits.fma_gflops;
        if (int8_peak > 0) p->int8_frac = p->gops / int8_peak;
    }
}

/* The kernel variant each weight type's products run and why (kiln.h
 * kiln_kernel_choices): one entry per type and thread count loaded. */
static json_t *kernels_json(void) {
    kiln_kernel_choice c[64];
    int32_t n = kiln_kernel_choices(c, 64);
    json_t *a = json_array();
    for (int32_t i = 0; i < n && i < 64; i++) {
        json_t *gbs = json_object(), *gops = json_object();
        for (int32_t k = 0; k < c[i].n_measured; k++) {
            if (c[i].matvec_gbs[k] > 0)
                json_object_set_new(gbs, c[i].isa[k], json_real(c[i].matvec_gbs[k]));
            if (c[i].matmul_gops[k] > 0)
                json_object_set_new(gops, c[i].isa[k], json_real(c[i].matmul_gops[k]));
        }
        json_array_append_new(
            a, json_pack("{s:s,s:i,s:s,s:s,s:s,s:o,s:o,s:o,s:s}", "type", kiln_type_name(c[i].type),
                         "threads", c[i].n_threads, "matvec", c[i].matvec_isa, "matmul",
                         c[i].matmul_isa, "source", c[i].source, "matvec_gbs", gbs, "matmul_gops",
                         gops, "tuned", c[i].when[0] ? json_string(c[i].when) : json_null(),
                         "reason", c[i].reason));
    }
    return a;
}

static json_t *perf_json(srv *s, const struct snap *p) {
    json_t *models = json_array();
    for (int32_t i = 0; i < p->n_models; i++) {
        const kiln_registry_entry *e = &p->e[i];
        json_t *m = json_pack("{s:s,s:s,s:b,s:I}", "name", e->name, "kind",
                              e->is_encoder ? "embeddings" : "generation", "loaded", e->loaded,
                              "bytes", (json_int_t)e->bytes);
        if (e->loaded && e->sched.n_slots)
            json_object_set_new(
                m, "engine",
                json_pack("{s:i,s:i,s:i,s:I,s:I,s:I,s:f,s:f}", "slots", e->sched.n_slots,
                          "busy_slots", e->sched.busy_slots, "queued", e->sched.queued, "kv_used",
                          (json_int_t)e->sched.kv_used, "kv_total", (json_int_t)e->sched.kv_total,
                          "steps", (json_int_t)e->sched.n_steps, "step_p50_ms",
                          e->sched.step_p50 * 1e3, "step_p99_ms", e->sched.step_p99 * 1e3));
        json_array_append_new(models, m);
    }
    double span = p->window;
    const win_stats *rq = p->req;
    json_t *limits =
        p->limits_ok
            ? json_pack("{s:b,s:f,s:f,s:f,s:s,s:i}", "measured", 1, "read_gbs", p->limits.read_gbs,
                        "fma_gflops", p->limits.fma_gflops, "int8_gops", p->limits.vnni_gops,
                        "fma_isa", p->limits.fma_isa, "threads", p->limits.n_threads)
            : json_pack("{s:b,s:s}", "measured", 0, "reason", "not measured yet (after load)");
    json_t *psi = json_object();
    const host_pressure *ps[3] = {&p->psi_cpu, &p->psi_mem, &p->psi_io};
    const char *pn[3] = {"cpu", "memory", "io"};
    for (int i = 0; i < 3; i++)
        json_object_set_new(psi, pn[i],
                            ps[i]->ok ? json_pack("{s:f,s:f}", "some_avg10", ps[i]->avg10,
                                                  "some_avg60", ps[i]->avg60)
                                      : json_null());
    json_t *j = json_pack("{s:s,s:f,s:s,s:f}", "version", KILN_VERSION, "uptime_s",
                          p->now - s->diag->t_start, "build",
                          "kiln " KILN_VERSION " (" __DATE__ ")", "window_s", p->window);
    json_object_set_new(j, "host",
                        json_pack("{s:i,s:s,s:I,s:I,s:o,s:o}", "cpus", p->host.n_cpus, "cpu_model",
                                  p->host.cpu_model, "mem_total_bytes",
                                  (json_int_t)p->host.mem_total, "mem_available_bytes",
                                  (json_int_t)p->host.mem_available, "cpu_steal_percent",
                                  p->sec[W_STEAL].n ? json_real(p->sec[W_STEAL].mean) : json_null(),
                                  "pressure", psi));
    json_object_set_new(j, "machine_limits", limits);
    json_object_set_new(j, "process",
                        json_pack("{s:I,s:f,s:i,s:i}", "rss_bytes", (json_int_t)proc_rss_bytes(),
                                  "cpu_seconds", proc_cpu_seconds(), "threads", host_self_threads(),
                                  "open_fds", proc_open_fds()));
    json_object_set_new(j, "models", models);
    json_object_set_new(
        j, "engine",
        json_pack("{s:i,s:i,s:i,s:I,s:I,s:f,s:f,s:f,s:f,s:f}", "slots", p->slots, "busy_slots",
                  p->busy, "queued", p->queued, "kv_used", (json_int_t)p->kv_used, "kv_total",
                  (json_int_t)p->kv_total, "busy_ratio", p->busy_ratio, "step_p50_ms",
                  p->step_p50 * 1e3, "step_p99_ms", p->step_p99 * 1e3, "tokens_per_step",
                  p->sec[W_STEPS].sum > 0
                      ? (p->sec[W_PRE].sum + p->sec[W_DEC].sum) / p->sec[W_STEPS].sum
                      : 0.0,
                  "host_share", p->host_share));
    json_object_set_new(
        j, "window",
        json_pack("{s:o,s:o,s:o,s:o,s:f,s:f,s:f,s:{s:I,s:I},s:f,s:f,s:f,s:f,s:f}", "ttft_ms",
                  pct_json(&rq[R_TTFT], 1e3), "itl_ms", pct_json(&p->itl, 1e3), "e2e_ms",
                  pct_json(&rq[R_E2E], 1e3), "queue_ms", pct_json(&rq[R_QUEUE], 1e3),
                  "requests_per_s", (double)rq[R_ALL].n / span, "generated_tokens_per_s",
                  rq[R_GEN].sum / span, "prompt_tokens_per_s", rq[R_PROMPT].sum / span, "errors",
                  "client_4xx", (json_int_t)rq[R_ERR4].n, "server_5xx", (json_int_t)rq[R_ERR5].n,
                  "achieved_read_gbs", p->gbs, "bandwidth_fraction", p->bw_frac, "achieved_gflops",
                  p->gflops + p->gops, "fma_fraction", p->fma_frac, "int8_fraction", p->int8_frac));
    json_object_set_new(j, "kernels", kernels_json());
    json_t *gpu = gpu_cached(s->diag, &s->diag->gpu_text);
    json_object_set_new(j, "gpu",
                        gpu ? gpu : json_pack("{s:b,s:s}", "available", 0, "reason", s->gpu_why));
    return j;
}

/* Answers with fn's JSON of a snapshot over the request's ?window=. */
static enum MHD_Result answer_snap(srv_req *r, json_t *(*fn)(srv *, const struct snap *)) {
    struct snap *p = malloc(sizeof *p);
    if (!p) return srv_error(r, 500, "server_error", NULL, NULL, "out of memory");
    take(r->s, window_of(r), p);
    json_t *j = fn(r->s, p);
    free(p);
    return srv_respond_json(r, 200, j);
}

enum MHD_Result srv_handle_diag_perf(srv_req *r) {
    return answer_snap(r, perf_json);
}

/* ---- the verdict */

static void evidence(json_t *ev, const char *rule, double value, double threshold,
                     const char *means) {
    json_array_append_new(ev, json_pack("{s:s,s:f,s:f,s:s}", "rule", rule, "value", value,
                                        "threshold", threshold, "means", means));
}

static void finding(json_t *f, const char *code, const char *severity, const char *msg) {
    json_array_append_new(
        f, json_pack("{s:s,s:s,s:s}", "code", code, "severity", severity, "message", msg));
}

/* The quantities the verdict's rules compare with their thresholds. */
struct rules {
    double queue_share, steal, psi, dec_share;
};

static struct rules rules_of(const struct snap *p) {
    const win_stats *rq = p->req;
    double e2e = rq[R_E2E].sum, tok = p->sec[W_PRE].sum + p->sec[W_DEC].sum;
    return (struct rules){.queue_share = e2e > 0 ? rq[R_QUEUE].sum / e2e : 0,
                          .steal = p->sec[W_STEAL].n ? p->sec[W_STEAL].mean : 0,
                          .psi = p->psi_cpu.ok ? p->psi_cpu.avg10 : 0,
                          .dec_share = tok > 0 ? p->sec[W_DEC].sum / tok : 0};
}

/* The verdict (a static string): the first rule that holds, in this
 * order; *rec is its recommendation, or NULL. */
static const char *decide(const struct snap *p, const struct rules *x, const char **rec) {
    const win_stats *rq = p->req;
    const char *v, *r;
    if (rq[R_ALL].n == 0 && p->busy_ratio < 0.01 && p->queued == 0) {
        v = "idle", r = NULL;
    } else if (rq[R_ALL].n < 3 && p->sec[W_STEPS].sum < 20) {
        v = "insufficient_data", r = "send more requests or widen ?window=";
    } else if (x->queue_share > 0.5) {
        v = "queueing_bound";
        r = "raise --parallel (more slots share each step), or add replicas behind a balancer";
    } else if (x->steal > 5 || x->psi > 20) {
        v = "contention_bound";
        r = "give Kiln dedicated cores (fewer --threads, CPU pinning) or move the other load "
            "away";
    } else if (p->host_share > 0.3) {
        v = "host_overhead_bound";
        r = "reduce per-token host work (stop strings, logit_bias, penalties) or batch more "
            "sequences per step";
    } else if (p->limits_ok && p->bw_frac < 0.5 && p->fma_frac + p->int8_frac < 0.5) {
        /* neither resource near its measured limit: the steps are short
         * and their fixed costs (thread wake-ups, small matrices) rule */
        v = "host_overhead_bound";
        r = "the model is too small to load the machine: batch more sequences per step "
            "(--parallel) or use fewer --threads";
    } else if (x->dec_share >= 0.5) {
        v = "memory_bandwidth_bound";
        r = "use a smaller quantization (Q4_K_M, Q4_0) or more concurrent streams per step "
            "(--parallel)";
    } else {
        v = "compute_bound";
        r = "shorten prompts or reuse their prefix; use an int8-friendly quantization (Q8_0, "
            "Q4_K)";
    }
    *rec = r;
    return v;
}

static json_t *verdict_json(srv *s, const struct snap *p) {
    json_t *ev = json_array(), *fi = json_array(), *rec = json_array();
    const win_stats *rq = p->req;
    double e2e = rq[R_E2E].sum, q = rq[R_QUEUE].sum, pre = rq[R_PREFILL].sum,
           dec = rq[R_DECODE].sum;
    double other = e2e - q - pre - dec;
    if (other < 0) other = 0;
    struct rules x = rules_of(p);
    double steal = x.steal, psi = x.psi;
    /* every rule's evidence, whatever the verdict */
    evidence(ev, "engine_busy_ratio", p->busy_ratio, 0.01,
             "share of the window the engine spent in steps");
    evidence(ev, "queue_share_of_latency", x.queue_share, 0.5,
             "share of request time spent waiting for a slot");
    evidence(ev, "cpu_steal_percent", steal, 5, "hypervisor time taken from this VM");
    evidence(ev, "psi_cpu_some_avg10", psi, 20, "percent of time tasks waited for a CPU");
    evidence(ev, "host_share_of_step", p->host_share, 0.3,
             "share of step time outside the forward pass (batching, sampling, "
             "detokenizing, callbacks)");
    evidence(ev, "decode_token_share", x.dec_share, 0.5,
             "share of the tokens run that were generated (rest: prompt)");
    evidence(ev, "bandwidth_fraction", p->bw_frac, 0.5,
             "bytes read per second of forward pass over the measured bandwidth");
    evidence(ev, "compute_fraction", p->fma_frac + p->int8_frac, 0.5,
             "FLOPs per second of forward pass over the measured peak");
    const char *r, *v = decide(p, &x, &r);
    if (r) json_array_append_new(rec, json_string(r));
    if (steal > 5 || psi > 20)
        finding(fi, "HOST_CONTENTION", "warning",
                "other work is taking this machine's CPUs (steal or CPU pressure)");
    if (rq[R_E2E].n >= 10 && rq[R_E2E].p99 > 10 * rq[R_E2E].p50)
        finding(fi, "SLOW_REQUESTS", "info", "p99 latency is over 10x the median");
    if (p->host.mem_total && p->host.mem_available < p->host.mem_total / 10)
        finding(fi, "HIGH_MEMORY_USAGE", "warning", "less than 10% of the memory is available");
    if (p->kv_total && p->kv_used > p->kv_total * 9 / 10)
        finding(fi, "KV_CACHE_NEAR_FULL", "warning", "over 90% of the KV cache is in use");
    if (p->queued > 0)
        finding(fi, "QUEUE_BUILDING", "info", "requests are waiting for a slot right now");
    json_t *g = gpu_cached(s->diag, &s->diag->gpu_findings);
    if (json_is_array(g)) json_array_extend(fi, g);
    json_decref(g);
    return json_pack("{s:s,s:f,s:{s:f,s:f,s:f,s:f},s:o,s:o,s:o}", "verdict", v, "window_s",
                     p->window, "time_breakdown", "queue_s", q, "prefill_s", pre, "decode_s", dec,
                     "other_s", other, "evidence", ev, "findings", fi, "recommendations", rec);
}

const char *srv_diag_verdict(srv *s, double window) {
    if (!s->diag) return NULL;
    struct snap *p = malloc(sizeof *p);
    if (!p) return NULL;
    take(s, window, p);
    struct rules x = rules_of(p);
    const char *rec, *v = decide(p, &x, &rec);
    free(p);
    return v;
}

enum MHD_Result srv_handle_diag_bottleneck(srv_req *r) {
    return answer_snap(r, verdict_json);
}

/* ---- POST /diagnostics/benchmark
 *
 * Runs Kiln's own load generator (src/bench) in-process against this
 * server's address with a bounded workload, on the prep thread that handles
 * the request (the load's own requests go through the other prep threads),
 * and answers with the run as `kiln bench --json` writes it, the snapshot
 * before and after, and the verdict over the run. One at a time (409).
 * POST /diagnostics/profiler/benchmark-with-profiling (api_prof.c) runs
 * the same code with hooks that record a profile around the load. */

static atomic_int bench_busy;

/* Reads an integer field of the body in [lo, hi] (absent: *out unchanged);
 * false and *why on a bad value. */
static bool body_int(json_t *b, const char *key, int lo, int hi, int *out, char *why, size_t cap) {
    json_t *v = json_object_get(b, key);
    if (!v) return true;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(why, cap, "'%s' must be an integer from %d to %d", key, lo, hi);
        return false;
    }
    *out = (int)json_integer_value(v);
    return true;
}

static json_t *bench_doc(srv *s, bench_workload_opts *wo, bench_run_opts *ro, char *why,
                         size_t cap) {
    bench_workload w;
    if (bench_workload_init(&w, wo)) {
        snprintf(why, cap, "workload: %s", kiln_last_error());
        return NULL;
    }
    bench_run run;
    memset(&run, 0, sizeof run);
    if (bench_run_load(ro, &w, &run)) {
        snprintf(why, cap, "load generator: %s", kiln_last_error());
        bench_workload_free(&w);
        return NULL;
    }
    bench_slo slo;
    memset(&slo, 0, sizeof slo);
    bench_stats *st = bench_stats_compute(&run, &slo);
    json_t *jr = st ? bench_run_json(&run, st) : NULL;
    free(st);
    bench_run_free(&run);
    bench_workload_free(&w);
    if (!jr) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    json_object_set_new(jr, "level", json_real(ro->concurrency));
    (void)s;
    return json_pack("{s:s,s:s,s:{s:s,s:s,s:i,s:i,s:i},s:[o]}", "tool", "kiln bench",
                     "kiln_version", kiln_version(), "params", "url", ro->url, "workload",
                     bench_kind_name(wo->kind), "concurrency", ro->concurrency, "requests",
                     (int)ro->n_requests, "max_tokens", wo->max_tokens, "runs", jr);
}

enum MHD_Result srv_diag_bench_run(srv_req *r, const srv_bench_hooks *h) {
    srv *s = r->s;
    char why[512] = "";
    json_error_t je;
    json_t *b = r->body.n ? json_loadb(r->body.p, r->body.n, 0, &je) : json_object();
    if (!json_is_object(b)) {
        json_decref(b);
        return srv_error(r, 400, "invalid_request_error", NULL, "invalid_json",
                         "the body must be a JSON object (or empty)");
    }
    static const char *const keys[] = {"workload",   "model",        "concurrency", "requests",
                                       "max_tokens", "input_tokens", NULL};
    const char *key;
    json_t *v;
    json_object_foreach(b, key, v) {
        bool ok = false;
        for (int i = 0; keys[i]; i++) ok |= !strcmp(keys[i], key);
        if (!ok) {
            enum MHD_Result res =
                srv_error(r, 400, "invalid_request_error", NULL, "unknown_parameter",
                          "unknown field '%.64s' (fields: workload, model, concurrency, "
                          "requests, max_tokens, input_tokens)",
                          key);
            json_decref(b); /* key lives in b */
            return res;
        }
    }
    bench_workload_opts wo = {.kind = BENCH_COMPLETIONS,
                              .input_tokens = 32,
                              .max_tokens = 32,
                              .ignore_eos = true,
                              .eos_fields = BENCH_EOS_IGNORE_EOS,
                              .stream = true,
                              .inputs_per_request = 1,
                              .seed = 1};
    int conc = 4, nreq = 32;
    const char *wl = json_string_value(json_object_get(b, "workload"));
    if ((wl && !bench_kind_from_name(wl, &wo.kind)) || (json_object_get(b, "workload") && !wl))
        snprintf(why, sizeof why, "'workload' must be chat, completions or embeddings");
    /* each stops at the first bad one, which fills why */
    if (!why[0] && body_int(b, "concurrency", 1, 16, &conc, why, sizeof why) &&
        body_int(b, "requests", 1, 256, &nreq, why, sizeof why) &&
        body_int(b, "max_tokens", 1, 256, &wo.max_tokens, why, sizeof why))
        body_int(b, "input_tokens", 1, 1024, &wo.input_tokens, why, sizeof why);
    wo.model = json_string_value(json_object_get(b, "model"));
    if (!wo.model) wo.model = s->first_model;
    if (why[0]) {
        json_decref(b);
        return srv_error(r, 400, "invalid_request_error", NULL, "invalid_value", "%s", why);
    }
    if (s->prep_slots < 2) {
        json_decref(b);
        return srv_error(r, 503, "unavailable_error", NULL, "not_enough_threads",
                         "the benchmark needs --http-threads 2 or more (it holds one prep "
                         "thread while its requests use the others)");
    }
    int idle = 0;
    if (!atomic_compare_exchange_strong(&bench_busy, &idle, 1)) {
        json_decref(b);
        return srv_error(r, 409, "invalid_request_error", NULL, "benchmark_running",
                         "a benchmark is already running; try again when it ends");
    }
    enum MHD_Result res;
    if (h && !h->begin(r, h->ud, &res)) { /* it answered */
        json_decref(b);
        atomic_store(&bench_busy, 0);
        return res;
    }
    char url[128];
    snprintf(url, sizeof url, "http://%s:%d/v1/%s", s->ipv6 ? "[::1]" : "127.0.0.1", s->port,
             wo.kind == BENCH_CHAT         ? "chat/completions"
             : wo.kind == BENCH_EMBEDDINGS ? "embeddings"
                                           : "completions");
    bench_run_opts ro = {.url = url,
                         .api_key = s->api_key,
                         .mode = BENCH_CLOSED,
                         .concurrency = conc,
                         .burst = 1,
                         .n_requests = (uint64_t)nreq,
                         .timeout_s = 60,
                         .spin_us = -1,
                         .seed = 1};
    struct snap *p = malloc(sizeof *p);
    json_t *before = NULL, *after = NULL, *verdict = NULL, *doc = NULL;
    double t0 = kiln_now_s();
    if (p) take(s, 60, p), before = perf_json(s, p);
    doc = bench_doc(s, &wo, &ro, why, sizeof why);
    json_t *extra = h ? h->end(r, h->ud) : NULL;
    if (p) {
        /* the verdict over the run itself (and a second of margin) */
        srv_diag_tick(s);
        take(s, kiln_now_s() - t0 + 1, p);
        after = perf_json(s, p);
        verdict = verdict_json(s, p);
    }
    free(p);
    json_decref(b);
    atomic_store(&bench_busy, 0);
    if (!doc) {
        json_decref(before);
        json_decref(after);
        json_decref(verdict);
        json_decref(extra);
        return srv_error(r, 500, "server_error", NULL, NULL, "benchmark failed: %s", why);
    }
    json_t *ans = json_pack("{s:o,s:o*,s:o*,s:o*}", "bench", doc, "before", before, "after", after,
                            "verdict", verdict);
    if (ans && extra) json_object_set(ans, h->key, extra);
    json_decref(extra);
    return srv_respond_json(r, 200, ans);
}

enum MHD_Result srv_handle_diag_bench(srv_req *r) {
    return srv_diag_bench_run(r, NULL);
}

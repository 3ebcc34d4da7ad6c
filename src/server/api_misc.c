/* api_misc.c - the operational endpoints: GET /health, GET /v1/models and
 * GET /metrics, and the server's metric families (registered once at
 * start; gauges of the engine's state are read at scrape time).
 *
 * /health is the hot path of load balancers: it reads one atomic and
 * queues a shared, pre-built response, so it takes no lock the engine
 * holds. */
#include "base/log.h"
#include "obs/host.h"
#include "server/srv.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum MHD_Result srv_handle_health(srv_req *r) {
    srv *s = r->s;
    int ready = atomic_load(&s->ready);
    if (ready == 1 && !atomic_load(&s->stopping)) {
        if (!r->origin) {
            r->status = 200;
            r->phase = SRV_P_ANSWERED;
            return MHD_queue_response(r->conn, 200, s->health_ok);
        }
        return srv_respond_json(r, 200, json_pack("{s:s}", "status", "ok"));
    }
    bool draining = atomic_load(&s->stopping);
    const char *why = draining    ? "draining: the server is shutting down"
                      : ready < 0 ? s->load_error
                                  : "loading models";
    const char *status = draining ? "draining" : ready < 0 ? "error" : "loading";
    json_t *j = json_pack("{s:s,s:s,s:{s:s,s:s,s:i}}", "status", status, "reason", why, "error",
                          "message", why, "type", "unavailable_error", "code", 503);
    return srv_respond_json_h(r, 503, j, draining ? "Retry-After" : NULL, "5");
}

enum MHD_Result srv_handle_models(srv_req *r) {
    srv *s = r->s;
    kiln_registry_entry e[256];
    int32_t n = kiln_registry_list(s->reg, e, 256);
    json_t *data = json_array();
    for (int32_t i = 0; i < n && i < 256; i++) {
        json_array_append_new(
            data,
            json_pack("{s:s,s:s,s:I,s:s,s:b,s:b,s:b,s:s,s:I,s:i}", "id", e[i].name, "object",
                      "model", "created", (json_int_t)s->started, "owned_by", "kiln", "loaded",
                      e[i].loaded, "loading", e[i].loading, "pinned", e[i].pinned, "kind",
                      e[i].loaded || e[i].is_encoder
                          ? (e[i].is_encoder ? "embeddings" : "generation")
                          : "unknown",
                      "bytes", (json_int_t)e[i].bytes, "requests", e[i].n_holders));
    }
    return srv_respond_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

enum MHD_Result srv_handle_metrics(srv_req *r) {
    char *txt = NULL;
    size_t len = 0;
    if (metrics_write(r->s->m.reg, &txt, &len) != KILN_OK)
        return srv_error(r, 500, "server_error", NULL, NULL, "writing metrics: %s",
                         kiln_last_error());
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, txt, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(txt);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return srv_respond(r, 200, resp);
}

/* ---- metric families */

static const char *const l_route_status[] = {"route", "status", NULL};
static const char *const l_route[] = {"route", NULL};
static const char *const l_model[] = {"model", NULL};

/* Scrape time: the registry's models and each loaded model's engine state
 * (from the registry's snapshot: reading it neither loads nor holds a
 * model, so scrapes do not disturb the LRU order). */
static void on_scrape(void *user) {
    srv *s = user;
    kiln_registry_entry e[256];
    int32_t n = kiln_registry_list(s->reg, e, 256);
    int loaded = 0;
    for (int32_t i = 0; i < n && i < 256; i++) {
        const char *v[] = {e[i].name, NULL};
        bool on = e[i].loaded && !e[i].loading;
        loaded += on;
        metric_set(s->m.model_bytes, v, on ? (double)e[i].bytes : 0);
        if (on && !e[i].is_encoder) {
            const kiln_sched_state *st = &e[i].sched;
            const char *pre[] = {e[i].name, "prefill", NULL}, *dec[] = {e[i].name, "decode", NULL};
            metric_set(s->m.eng_busy, v, st->t_busy);
            metric_set(s->m.eng_forward, v, st->t_forward);
            metric_set(s->m.eng_steps, v, (double)st->n_steps);
            metric_set(s->m.eng_tokens, pre, (double)st->n_prefill_tokens);
            metric_set(s->m.eng_tokens, dec, (double)st->n_decode_tokens);
            metric_set(s->m.eng_step_p99, v, st->step_p99);
            double flops, bytes;
            srv_est_work(&e[i].desc, st, &flops, &bytes);
            metric_set(s->m.est_flops, v, flops);
            metric_set(s->m.est_bytes, v, bytes);
            metric_set(s->m.busy_slots, v, st->busy_slots);
            metric_set(s->m.queue_depth, v, st->queued);
            metric_set(s->m.kv_used, v, (double)st->kv_used);
            metric_set(s->m.kv_ratio, v, st->kv_total ? (double)st->kv_used / st->kv_total : 0);
        } else {
            /* encoders have no slots or KV cache: no such series for them */
            metric_set(s->m.queue_depth, v, on ? e[i].batcher.queued : 0);
            if (!e[i].is_encoder) {
                metric_set(s->m.busy_slots, v, 0);
                metric_set(s->m.kv_used, v, 0);
                metric_set(s->m.kv_ratio, v, 0);
            }
        }
    }
    metric_set(s->m.models_loaded, NULL, loaded);
    host_cpu_times ct;
    host_cpu_times_read(&ct);
    if (ct.ok) metric_set(s->m.host_steal, NULL, (double)ct.steal / host_clock_ticks());
    static const char *const res[] = {"cpu", "memory", "io"};
    for (int i = 0; i < 3; i++) {
        host_pressure p;
        host_pressure_read(res[i], &p);
        if (!p.ok) continue;
        const char *some[] = {res[i], "some", NULL}, *full[] = {res[i], "full", NULL};
        metric_set(s->m.host_stall, some, (double)p.some_total_us * 1e-6);
        metric_set(s->m.host_stall, full, (double)p.full_total_us * 1e-6);
    }
}

kiln_status srv_metrics_init(srv *s) {
    srv_metrics *m = &s->m;
    const double *lb = metrics_latency_bounds, *sb = metrics_size_bounds;
    int nl = metrics_n_latency_bounds, ns = metrics_n_size_bounds;
    if (!(m->reg = metrics_create())) return KILN_ERR_NOMEM;
    m->requests = metrics_counter(m->reg, "kiln_http_requests_total",
                                  "HTTP requests answered, by route and status.", l_route_status);
    m->latency =
        metrics_histogram(m->reg, "kiln_http_request_duration_seconds",
                          "Time from a request's headers to its completion.", l_route, lb, nl);
    m->in_flight = metrics_gauge(m->reg, "kiln_http_requests_in_flight",
                                 "Requests received and not yet completed.", NULL);
    m->queue =
        metrics_histogram(m->reg, "kiln_queue_time_seconds",
                          "Time a request waited before the engine started it.", l_model, lb, nl);
    m->ttft = metrics_histogram(m->reg, "kiln_time_to_first_token_seconds",
                                "Submission to the first generated token.", l_model, lb, nl);
    m->itl = metrics_histogram(m->reg, "kiln_inter_token_latency_seconds",
                               "Time between consecutive generated tokens of a request.", l_model,
                               metrics_fine_bounds, metrics_n_fine_bounds);
    m->prefill =
        metrics_histogram(m->reg, "kiln_prefill_time_seconds",
                          "Per request: admission to the first generated token.", l_model, lb, nl);
    m->decode =
        metrics_histogram(m->reg, "kiln_decode_time_seconds",
                          "Per request: the first generated token to the last.", l_model, lb, nl);
    m->tokenize = metrics_histogram(m->reg, "kiln_tokenization_time_seconds",
                                    "Per request: chat template and tokenizer time.", l_model,
                                    metrics_fine_bounds, metrics_n_fine_bounds);
    m->emb_batch =
        metrics_histogram(m->reg, "kiln_embedding_batch_size",
                          "Texts in the merged embedding call a request joined.", l_model, sb, ns);
    m->emb_batch_latency = metrics_histogram(m->reg, "kiln_embedding_batch_latency_seconds",
                                             "Inference time of the merged embedding call a "
                                             "request joined.",
                                             l_model, lb, nl);
    m->prompt_tokens = metrics_counter(m->reg, "kiln_prompt_tokens_total",
                                       "Prompt tokens of finished generation requests.", l_model);
    m->gen_tokens = metrics_counter(m->reg, "kiln_generated_tokens_total",
                                    "Tokens generated by finished generation requests.", l_model);
    m->emb_tokens = metrics_counter(m->reg, "kiln_embedding_tokens_total",
                                    "Tokens embedded by finished embedding requests.", l_model);
    m->queue_depth = metrics_gauge(m->reg, "kiln_queue_depth",
                                   "Requests (generation) or texts (embeddings) waiting.", l_model);
    m->busy_slots =
        metrics_gauge(m->reg, "kiln_busy_slots", "Generation slots holding a request.", l_model);
    m->kv_used = metrics_gauge(m->reg, "kiln_kv_cache_used_positions",
                               "KV-cache positions held by busy slots.", l_model);
    m->kv_ratio =
        metrics_gauge(m->reg, "kiln_kv_cache_usage_ratio",
                      "Share of all slots' KV-cache positions held by busy slots.", l_model);
    m->models_loaded = metrics_gauge(m->reg, "kiln_models_loaded", "Models loaded now.", NULL);
    m->model_bytes =
        metrics_gauge(m->reg, "kiln_model_bytes",
                      "Memory of each loaded model (weights, KV cache, buffers).", l_model);
    static const char *const l_model_reason[] = {"model", "reason", NULL},
                             *const l_version[] = {"version", NULL},
                             *const l_phase[] = {"model", "phase", NULL};
    const double *tb = metrics_token_bounds;
    int nt = metrics_n_token_bounds;
    m->finished = metrics_counter(m->reg, "kiln_requests_finished_total",
                                  "Generation requests finished, by reason (stop, length, "
                                  "cancelled, error).",
                                  l_model_reason);
    m->prompt_len =
        metrics_histogram(m->reg, "kiln_prompt_length_tokens",
                          "Prompt tokens per finished generation request.", l_model, tb, nt);
    m->output_len =
        metrics_histogram(m->reg, "kiln_output_length_tokens",
                          "Generated tokens per finished generation request.", l_model, tb, nt);
    m->build_info =
        metrics_gauge(m->reg, "kiln_build_info", "Always 1; the version as a label.", l_version);
    m->eng_busy = metrics_counter(m->reg, "kiln_engine_busy_seconds_total",
                                  "Seconds the model's scheduler spent in steps.", l_model);
    m->eng_forward = metrics_counter(
        m->reg, "kiln_engine_forward_seconds_total",
        "Seconds of those steps in the forward pass (the rest is host overhead).", l_model);
    m->eng_steps =
        metrics_counter(m->reg, "kiln_engine_steps_total", "Scheduler steps run.", l_model);
    m->eng_tokens = metrics_counter(m->reg, "kiln_engine_tokens_total",
                                    "Tokens the steps ran, by phase (prefill, decode).", l_phase);
    m->eng_step_p99 =
        metrics_gauge(m->reg, "kiln_engine_step_p99_seconds",
                      "99th percentile of the model's last 256 step durations.", l_model);
    m->mach_read = metrics_gauge(m->reg, "kiln_machine_read_bandwidth_bytes_per_second",
                                 "Memory read bandwidth measured at start (--diagnostics).", NULL);
    m->mach_fma = metrics_gauge(m->reg, "kiln_machine_fma_flops_per_second",
                                "FP32 FMA peak measured at start (--diagnostics).", NULL);
    m->mach_int8 = metrics_gauge(m->reg, "kiln_machine_int8_ops_per_second",
                                 "int8 dot-product peak measured at start (--diagnostics; 0 "
                                 "without VNNI).",
                                 NULL);
    m->slow = metrics_counter(m->reg, "kiln_slow_requests_total",
                              "Requests slower end-to-end than --slow-request-ms.", NULL);
    static const char *const l_res_kind[] = {"resource", "kind", NULL};
    m->est_flops = metrics_counter(m->reg, "kiln_engine_estimated_flops_total",
                                   "Floating-point (or int8) operations the steps did, estimated "
                                   "from the model's shapes: 2 per matrix weight per token.",
                                   l_model);
    m->est_bytes = metrics_counter(m->reg, "kiln_engine_estimated_read_bytes_total",
                                   "Bytes the steps read, estimated: every weight once per step "
                                   "and each decoded sequence's KV cache.",
                                   l_model);
    m->host_steal = metrics_counter(m->reg, "kiln_host_cpu_steal_seconds_total",
                                    "CPU time the hypervisor gave to others, all CPUs of the host "
                                    "(/proc/stat steal).",
                                    NULL);
    m->host_stall = metrics_counter(m->reg, "kiln_host_pressure_stall_seconds_total",
                                    "Time tasks of the host stalled waiting for a resource "
                                    "(PSI: some = at least one task, full = all).",
                                    l_res_kind);
    if (!m->est_flops || !m->est_bytes || !m->host_steal || !m->host_stall)
        return KILN_ERR_INTERNAL;
    if (!m->slow || !m->requests || !m->latency || !m->in_flight || !m->queue || !m->ttft ||
        !m->itl || !m->prefill || !m->decode || !m->tokenize || !m->emb_batch ||
        !m->emb_batch_latency || !m->prompt_tokens || !m->gen_tokens || !m->emb_tokens ||
        !m->queue_depth || !m->busy_slots || !m->kv_used || !m->kv_ratio || !m->models_loaded ||
        !m->model_bytes || !m->finished || !m->prompt_len || !m->output_len || !m->build_info ||
        !m->eng_busy || !m->eng_forward || !m->eng_steps || !m->eng_tokens || !m->eng_step_p99 ||
        !m->mach_read || !m->mach_fma || !m->mach_int8)
        return KILN_ERR_INTERNAL;
    const char *ver[] = {KILN_VERSION, NULL};
    metric_set(m->build_info, ver, 1);
    kiln_status st = metrics_add_process(m->reg);
    if (st) return st;
    metric_set(m->in_flight, NULL, 0);
    metric_set(m->models_loaded, NULL, 0);
    metric_inc(m->slow, NULL, 0); /* shown from the start */
    return metrics_on_scrape(m->reg, on_scrape, s);
}

void srv_metrics_free(srv *s) {
    metrics_destroy(s->m.reg);
    s->m.reg = NULL;
}

void srv_metrics_request(srv *s, srv_route route, int status, double seconds) {
    char code[16];
    snprintf(code, sizeof code, "%d", status);
    const char *v[] = {srv_route_label(route), code, NULL};
    metric_inc(s->m.requests, v, 1);
    const char *v1[] = {srv_route_label(route), NULL};
    metric_observe(s->m.latency, v1, seconds);
}

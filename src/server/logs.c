/* logs.c - the server's own log lines (docs/server.md, "Logs"): an access
 * line per request, a slow-request line (and kiln_slow_requests_total) for
 * each request slower end-to-end than --slow-request-ms, and a stats line
 * every --log-stats-interval seconds while there is work.
 *
 * The stats line's interval figures come from counters of this file, not
 * from the Prometheus histograms (which never reset): finished inference
 * requests, errors and tokens are atomics, and TTFT and inter-token gaps go
 * into log-spaced buckets (four per octave, so a p99 is good to ~19%) that
 * the watcher thread swaps to zero at each line. Only inference routes
 * (/v1/chat/completions, /v1/completions, /v1/embeddings) count, so health
 * checks and scrapes neither fill the line nor keep it coming when idle.
 * Engine state (running, waiting, KV use, step times) is the registry's
 * snapshot; reading it neither loads nor holds a model. */
#include "base/log.h"
#include "base/time.h"
#include "obs/trace.h"
#include "server/srv.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* bucket i holds values in (2^((i-OFF-1)/4), 2^((i-OFF)/4)] ms */
enum { LOG_OFF = 28 };

static int bucket_of(double ms) {
    if (!(ms > 0)) return 0;
    int i = (int)ceil(log2(ms) * 4) + LOG_OFF;
    return i < 0 ? 0 : i >= SRV_LOG_BUCKETS ? SRV_LOG_BUCKETS - 1 : i;
}

static double bucket_upper_ms(int i) {
    return exp2((double)(i - LOG_OFF) / 4);
}

/* Takes the interval's counts (zeroing them); the p99's bucket bound in
 * ms, or NAN with no samples. */
static double take_p99(atomic_uint_fast32_t *b, uint64_t *count) {
    uint32_t c[SRV_LOG_BUCKETS];
    uint64_t n = 0;
    for (int i = 0; i < SRV_LOG_BUCKETS; i++) n += c[i] = (uint32_t)atomic_exchange(&b[i], 0);
    *count = n;
    if (!n) return NAN;
    uint64_t want = (uint64_t)ceil(0.99 * (double)n), acc = 0;
    for (int i = 0; i < SRV_LOG_BUCKETS; i++)
        if ((acc += c[i]) >= want) return bucket_upper_ms(i);
    return bucket_upper_ms(SRV_LOG_BUCKETS - 1);
}

static bool inference_route(srv_route r) {
    return r == SRV_R_CHAT || r == SRV_R_COMPLETIONS || r == SRV_R_EMBEDDINGS;
}

void srv_logs_init(srv *s, const srv_config *c) {
    s->log_stats_s = c->log_stats_interval_s > 0 ? c->log_stats_interval_s : 0;
    s->slow_ms = c->slow_request_ms > 0 ? c->slow_request_ms : 0;
    s->log_t_last = kiln_now_s();
}

void srv_logs_token(srv *s, double gap) {
    atomic_fetch_add_explicit(&s->log_n_gen, 1, memory_order_relaxed);
    if (gap >= 0)
        atomic_fetch_add_explicit(&s->log_itl[bucket_of(gap * 1e3)], 1, memory_order_relaxed);
}

void srv_logs_error(srv_req *r, const char *msg) {
    snprintf(r->err_msg, sizeof r->err_msg, "%s", msg);
}

void srv_logs_request(srv_req *r, double e2e) {
    srv *s = r->s;
    bool infer = inference_route(r->route), gen = r->route != SRV_R_EMBEDDINGS;
    int status = r->status ? r->status : 499;
    kiln_request_stats st;
    int64_t emb_tokens;
    double emb_queue;
    pthread_mutex_lock(&r->mu);
    st = r->stats;
    emb_tokens = r->emb_tokens;
    emb_queue = r->t_queue;
    const char *model = r->model_name; /* written before the engine saw r; freed with r */
    if (!r->err_msg[0] && r->error) snprintf(r->err_msg, sizeof r->err_msg, "%s", r->error);
    pthread_mutex_unlock(&r->mu);
    bool has_ttft = gen && st.n_gen > 0;
    if (infer) {
        atomic_fetch_add_explicit(&s->log_n_req, 1, memory_order_relaxed);
        if (status >= 400) atomic_fetch_add_explicit(&s->log_n_err, 1, memory_order_relaxed);
        if (has_ttft)
            atomic_fetch_add_explicit(&s->log_ttft[bucket_of(st.t_first_token * 1e3)], 1,
                                      memory_order_relaxed);
    }
    bool slow = s->slow_ms > 0 && e2e * 1e3 > s->slow_ms;
    if (slow) {
        metric_inc(s->m.slow, NULL, 1);
        if (trace_on()) {
            trace_arg a[2] = {TRACE_D("e2e_ms", e2e * 1e3), TRACE_I("status", status)};
            trace_instant("request_slow", "http", a, 2);
        }
    }
    if (!kiln_log_enabled(KILN_LOG_INFO) && !(slow && kiln_log_enabled(KILN_LOG_WARN)) &&
        !(status >= 500 && kiln_log_enabled(KILN_LOG_WARN)))
        return;
    const char *path = r->path[0] ? r->path : "-";
    const char *method = r->method[0] ? r->method : "-";
    kiln_log_field f[16];
    int n = 0;
    f[n++] = KILN_LF_STR("method", method);
    f[n++] = KILN_LF_STR("path", path);
    f[n++] = KILN_LF_INT("status", status);
    f[n++] = KILN_LF_STR("model", model);
    if (infer) {
        f[n++] = KILN_LF_INT("prompt_tokens", gen ? st.n_prompt : emb_tokens);
        f[n++] = KILN_LF_INT("output_tokens", gen ? st.n_gen : 0);
        f[n++] = KILN_LF_DBL("queue_ms", (gen ? st.t_queue : emb_queue) * 1e3);
        f[n++] = KILN_LF_DBL("ttft_ms", has_ttft ? st.t_first_token * 1e3 : NAN);
    }
    f[n++] = KILN_LF_DBL("e2e_ms", e2e * 1e3);
    int n_access = n;
    if (status >= 400) f[n_access++] = KILN_LF_STR("error", r->err_msg[0] ? r->err_msg : NULL);
    /* 5xx is the server's fault: a warning; 4xx and 499 the client's */
    kiln_log_kv(status >= 500 ? KILN_LOG_WARN : KILN_LOG_INFO, "access", f, n_access, "%s %s %d",
                method, path, status);
    if (!slow) return;
    f[n++] = KILN_LF_DBL("slow_ms", s->slow_ms);
    if (infer && gen) {
        f[n++] = KILN_LF_DBL("prefill_ms", st.t_prefill * 1e3);
        f[n++] = KILN_LF_DBL("decode_ms", st.t_decode * 1e3);
        f[n++] = KILN_LF_INT("cached_tokens", st.n_cached);
    }
    kiln_log_kv(KILN_LOG_WARN, "slow_request", f, n, "%s %s took %.1f ms (over %.0f ms)", method,
                path, e2e * 1e3, s->slow_ms);
}

/* The engines' state, summed over the loaded models. */
typedef struct engine_sum {
    int64_t running, waiting, kv_used, kv_total;
    double step_p50, step_p99; /* the slowest model's */
} engine_sum;

static void engine_state(srv *s, engine_sum *e) {
    memset(e, 0, sizeof *e);
    e->step_p50 = e->step_p99 = NAN;
    kiln_registry_entry ent[64];
    int32_t n = kiln_registry_list(s->reg, ent, 64);
    for (int32_t i = 0; i < n && i < 64; i++) {
        if (!ent[i].loaded || ent[i].loading) continue;
        if (ent[i].is_encoder) {
            e->waiting += ent[i].batcher.queued;
            continue;
        }
        const kiln_sched_state *st = &ent[i].sched;
        e->running += st->busy_slots;
        e->waiting += st->queued;
        e->kv_used += st->kv_used;
        e->kv_total += st->kv_total;
        if (st->n_recent_steps > 0) {
            if (!(e->step_p50 >= st->step_p50)) e->step_p50 = st->step_p50;
            if (!(e->step_p99 >= st->step_p99)) e->step_p99 = st->step_p99;
        }
    }
}

void srv_logs_tick(srv *s) {
    if (!(s->log_stats_s > 0) || !s->reg) return;
    double now = kiln_now_s(), dt = now - s->log_t_last;
    if (dt < s->log_stats_s) return;
    s->log_t_last = now;
    uint64_t n_req = atomic_exchange(&s->log_n_req, 0);
    uint64_t n_err = atomic_exchange(&s->log_n_err, 0);
    uint64_t n_gen = atomic_exchange(&s->log_n_gen, 0);
    uint64_t n_ttft, n_itl;
    double ttft = take_p99(s->log_ttft, &n_ttft), itl = take_p99(s->log_itl, &n_itl);
    engine_sum e;
    engine_state(s, &e);
    if (!n_req && !n_gen && !e.running && !e.waiting) return; /* idle: nothing to say */
    double kv_pct = e.kv_total ? 100.0 * (double)e.kv_used / (double)e.kv_total : 0;
    kiln_log_field f[] = {
        KILN_LF_DBL("interval_s", dt),
        KILN_LF_INT("requests", n_req),
        KILN_LF_DBL("req_per_s", (double)n_req / dt),
        KILN_LF_INT("errors", n_err),
        KILN_LF_INT("gen_tokens", n_gen),
        KILN_LF_DBL("gen_tok_per_s", (double)n_gen / dt),
        KILN_LF_INT("running", e.running),
        KILN_LF_INT("waiting", e.waiting),
        KILN_LF_INT("kv_used", e.kv_used),
        KILN_LF_INT("kv_total", e.kv_total),
        KILN_LF_DBL("kv_pct", kv_pct),
        KILN_LF_DBL("step_p50_ms", e.step_p50 * 1e3),
        KILN_LF_DBL("step_p99_ms", e.step_p99 * 1e3),
        KILN_LF_DBL("ttft_p99_ms", ttft),
        KILN_LF_DBL("itl_p99_ms", itl),
        /* with --diagnostics: what bounds the server over the interval */
        KILN_LF_STR("verdict", srv_diag_verdict(s, dt)),
    };
    kiln_log_kv(KILN_LOG_INFO, "stats", f, (int)(sizeof f / sizeof f[0]),
                "%.1f req/s, %.1f tok/s, %lld running, %lld waiting, KV %.0f%%", (double)n_req / dt,
                (double)n_gen / dt, (long long)e.running, (long long)e.waiting, kv_pct);
}

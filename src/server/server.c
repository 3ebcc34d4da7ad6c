/* server.c - the HTTP layer of `kiln serve`: the libmicrohttpd daemon and
 * its lifecycle, the request objects (see srv.h for their lifetime rules),
 * the access handler (route, method, CORS preflight, API key, body limit,
 * UTF-8, then the endpoint), suspend/resume, responses and OpenAI error
 * JSON, and the background load of the start-up models.
 *
 * Threads: MHD runs a small pool of event-driven workers (epoll where
 * available); a connection waiting for the engine is suspended, so neither
 * idle keep-alive connections nor streams hold a thread. Engine callbacks
 * run on the engine's threads and only append to a request's buffers and
 * resume its connection. /health reads one atomic and reuses one response
 * object: it takes no lock the engine holds. */
#include "base/log.h"
#include "base/status.h"
#include "base/time.h"
#include "obs/gpu.h"
#include "obs/trace.h"
#include "server/openai.h"
#include "server/srv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- request objects */

static srv_req *req_create(srv *s, struct MHD_Connection *conn, srv_route route) {
    srv_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->refs = 1;
    r->s = s;
    r->conn = conn;
    r->route = route;
    r->t_start = kiln_now_s();
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    r->sc = srv_conn_of(conn);
    pthread_mutex_lock(&s->mu);
    r->all_next = s->all_head;
    if (s->all_head) s->all_head->all_prev = r;
    s->all_head = r;
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(&s->n_reqs, 1);
    metric_inc(s->m.in_flight, NULL, 1);
    return r;
}

void srv_req_unref(srv_req *r) {
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left) return;
    pthread_mutex_destroy(&r->mu);
    if (r->deferred) MHD_destroy_response(r->deferred);
    strbuf_free(&r->body);
    strbuf_free(&r->text);
    strbuf_free(&r->out);
    free(r->model_name);
    free(r->error);
    free(r->emb);
    free(r);
}

void srv_req_wake(srv_req *r) {
    pthread_mutex_lock(&r->mu);
    /* while a prep thread handles r, it decides when to resume */
    bool resume = r->suspended && !r->in_prep;
    if (resume) r->suspended = false;
    struct MHD_Connection *c = r->conn;
    pthread_mutex_unlock(&r->mu);
    /* A suspended connection cannot complete, so c is valid until resumed. */
    if (resume && c) MHD_resume_connection(c);
}

void srv_req_suspend_locked(srv_req *r) {
    if (r->suspended || r->done) return;
    r->suspended = true;
    MHD_suspend_connection(r->conn);
}

void srv_gen_track(srv_req *r) {
    srv *s = r->s;
    pthread_mutex_lock(&s->mu);
    r->gen_prev = NULL;
    r->gen_next = s->gen_head;
    if (s->gen_head) s->gen_head->gen_prev = r;
    s->gen_head = r;
    pthread_mutex_unlock(&s->mu);
}

void srv_gen_untrack(srv_req *r) {
    srv *s = r->s;
    pthread_mutex_lock(&s->mu);
    if (r->gen_prev)
        r->gen_prev->gen_next = r->gen_next;
    else if (s->gen_head == r)
        s->gen_head = r->gen_next;
    if (r->gen_next) r->gen_next->gen_prev = r->gen_prev;
    r->gen_prev = r->gen_next = NULL;
    pthread_mutex_unlock(&s->mu);
}

/* ---- responses */

static void add_common_headers(srv_req *r, struct MHD_Response *resp) {
    if (r->origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->origin);
        if (strcmp(r->origin, "*")) MHD_add_response_header(resp, "Vary", "Origin");
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "x-queue-time, x-tokenization-time, x-inference-time");
    }
    if (atomic_load(&r->s->stopping)) MHD_add_response_header(resp, "Connection", "close");
}

enum MHD_Result srv_respond(srv_req *r, unsigned status, struct MHD_Response *resp) {
    if (!resp) return MHD_NO;
    add_common_headers(r, resp);
    r->status = (int)status;
    r->phase = SRV_P_ANSWERED;
    if (r->in_prep) {
        /* on a prep thread: MHD's thread queues it once resumed */
        r->deferred = resp;
        r->deferred_status = status;
        return MHD_YES;
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result srv_respond_json(srv_req *r, unsigned status, void *jv) {
    return srv_respond_json_h(r, status, jv, NULL, NULL);
}

/* srv_respond_json_h without its trace span; *bytes: the body's size. */
static enum MHD_Result respond_json(srv_req *r, unsigned status, void *jv, const char *name,
                                    const char *value, int64_t *bytes) {
    json_t *j = jv;
    if (status >= 400 && j) {
        /* the message of an error answer, for its access line */
        const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        if (m) srv_logs_error(r, m);
    }
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!txt) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"server_error\",\"param\":null,\"code\":null}}";
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (resp) MHD_add_response_header(resp, "Content-Type", "application/json");
        return srv_respond(r, 500, resp);
    }
    *bytes = (int64_t)strlen(txt);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(txt);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (name) MHD_add_response_header(resp, name, value);
    return srv_respond(r, status, resp);
}

/* The http_write span: serialising the JSON and queueing it. */
enum MHD_Result srv_respond_json_h(srv_req *r, unsigned status, void *jv, const char *name,
                                   const char *value) {
    TRACE_SCOPE_BEGIN(tw);
    int64_t bytes = 0;
    enum MHD_Result ret = respond_json(r, status, jv, name, value, &bytes);
    srv_trace_http("http_write", tw, (int)status, bytes);
    return ret;
}

static enum MHD_Result error_v(srv_req *r, unsigned status, const char *type, const char *param,
                               const char *code, const char *fmt, va_list ap) {
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    srv_utf8_trim(msg);
    json_t *e = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", msg, "type", type, "param",
                          param ? json_string(param) : json_null(), "code",
                          code ? json_string(code) : json_null());
    return srv_respond_json(r, status, e);
}

enum MHD_Result srv_error(srv_req *r, unsigned status, const char *type, const char *param,
                          const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = error_v(r, status, type, param, code, fmt, ap);
    va_end(ap);
    return ret;
}

enum MHD_Result srv_stopped(srv_req *r) {
    return srv_error(r, 503, "unavailable_error", NULL, "server_shutting_down",
                     "the server stopped before the answer was ready");
}

enum MHD_Result srv_error_status(srv_req *r, kiln_status st, const char *msg) {
    switch (st) {
    case KILN_ERR_BUSY:
        return srv_respond_json_h(r, 429,
                                  json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg,
                                            "type", "rate_limit_error", "param", "code",
                                            "rate_limit_exceeded"),
                                  "Retry-After", "1");
    case KILN_ERR_NOT_FOUND:
        return srv_error(r, 404, "not_found_error", "model", "model_not_found", "%s", msg);
    case KILN_ERR_RANGE:
        return srv_error(r, 400, "invalid_request_error", NULL, "context_length_exceeded", "%s",
                         msg);
    case KILN_ERR_INVALID_ARG:
    case KILN_ERR_UNSUPPORTED:
        return srv_error(r, 400, "invalid_request_error", NULL, NULL, "%s", msg);
    case KILN_ERR_NOMEM:
        return srv_error(r, 503, "unavailable_error", NULL, "insufficient_memory", "%s", msg);
    default:
        return srv_error(r, 500, "server_error", NULL, NULL, "%s", msg);
    }
}

/* ---- models */

bool srv_acquire(srv_req *r, const char *name, enum MHD_Result *res) {
    srv *s = r->s;
    if (!name) name = s->first_model;
    kiln_status st = kiln_registry_acquire(s->reg, name, &r->served);
    if (st == KILN_OK) return true;
    r->served = NULL;
    *res = srv_error_status(r, st, kiln_last_error());
    return false;
}

/* ---- the access handler */

static const char *header(struct MHD_Connection *c, const char *name) {
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* The allowed origin to echo for this request, or NULL. */
static const char *cors_origin(srv *s, struct MHD_Connection *c) {
    if (!s->cors) return NULL;
    const char *o = header(c, "Origin");
    for (int i = 0; i < s->n_cors; i++) {
        if (!strcmp(s->cors[i], "*")) return "*";
        if (o && !strcmp(s->cors[i], o)) return s->cors[i];
    }
    return NULL;
}

static enum MHD_Result preflight(srv_req *r) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    const char *m = r->route == SRV_R_UNKNOWN ? "GET, POST, OPTIONS" : srv_route_method(r->route);
    char allow[64];
    snprintf(allow, sizeof allow, "%s, OPTIONS", m);
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow);
    const char *h = header(r->conn, "Access-Control-Request-Headers");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            h ? h : "Authorization, Content-Type");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "86400");
    return srv_respond(r, 204, resp);
}

/* The key a request must present on route, or NULL when it needs none:
 * the API key on the /v1 routes; on /metrics the metrics key, else the API key
 * unless --public-metrics. */
static const char *key_for(const srv *s, srv_route route) {
    if (route == SRV_R_METRICS)
        return s->metrics_key ? s->metrics_key : s->public_metrics ? NULL : s->api_key;
    return srv_route_auth(route) ? s->api_key : NULL;
}

/* The key is taken from "Authorization: Bearer KEY" (the scheme's case does
 * not matter, RFC 9110) or "X-Api-Key: KEY" (what some SDKs send). */
static bool authorized(const char *key, struct MHD_Connection *c) {
    if (!key) return true;
    const char *h = header(c, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) {
        h = header(c, "X-Api-Key");
        return h && srv_const_eq(h, key);
    }
    h += 7;
    while (*h == ' ') h++;
    return srv_const_eq(h, key);
}

/* 1 when the request's Content-Type is JSON (application/json, any
 * parameters such as charset); a POST with another type is refused, which
 * also keeps browsers' cross-site "simple" form posts out. */
static bool json_content(struct MHD_Connection *c) {
    const char *t = header(c, "Content-Type");
    if (!t) return false;
    while (*t == ' ') t++;
    size_t n = strcspn(t, "; ");
    return n == 16 && !strncasecmp(t, "application/json", 16);
}

/* Checks made on the headers alone; answers and returns true when the
 * request ends here. */
static bool early_answer(srv_req *r, const char *method, const char *url, enum MHD_Result *res) {
    srv *s = r->s;
    struct MHD_Connection *c = r->conn;
    r->origin = cors_origin(s, c);
    if (!strcmp(method, "OPTIONS") && s->cors) {
        *res = preflight(r);
        return true;
    }
    if (r->route == SRV_R_UNKNOWN ||
        (r->route >= SRV_R_DIAG_PERF && r->route < SRV_R_UNKNOWN && !s->diag)) {
        *res = srv_error(r, 404, "not_found_error", NULL, "not_found",
                         "no route for %s %.200s (routes: /v1/chat/completions, /v1/completions, "
                         "/v1/embeddings, /v1/models, /health, /metrics%s)",
                         method, url,
                         s->diag ? ", /diagnostics/performance, /diagnostics/bottleneck-analysis"
                                 : "; /diagnostics/* with kiln serve --diagnostics");
        return true;
    }
    const char *want = srv_route_method(r->route);
    bool ok = !strcmp(method, want) || (!strcmp(want, "GET") && !strcmp(method, "HEAD"));
    if (!ok) {
        char allow[32];
        snprintf(allow, sizeof allow, "%s%s", want, strcmp(want, "GET") ? "" : ", HEAD");
        *res = srv_respond_json_h(r, 405,
                                  json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message",
                                            "method not allowed for this route", "type",
                                            "invalid_request_error", "param", "code",
                                            "method_not_allowed"),
                                  "Allow", allow);
        return true;
    }
    if (!authorized(key_for(s, r->route), c)) {
        *res = srv_error(r, 401, "authentication_error", NULL, "invalid_api_key",
                         r->route == SRV_R_METRICS
                             ? "missing or invalid metrics key (send Authorization: Bearer KEY; "
                               "see --metrics-key and --public-metrics)"
                             : "missing or invalid API key (send Authorization: Bearer KEY)");
        return true;
    }
    if (!strcmp(want, "POST") && !json_content(c)) {
        const char *t = header(c, "Content-Type");
        *res = srv_error(r, 415, "invalid_request_error", NULL, "unsupported_media_type",
                         "Content-Type must be application/json (got %.60s)", t ? t : "none");
        return true;
    }
    if (atomic_load(&s->stopping) && r->route != SRV_R_HEALTH) {
        *res = srv_respond_json_h(r, 503,
                                  json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message",
                                            "the server is shutting down (draining); retry on "
                                            "another instance",
                                            "type", "unavailable_error", "param", "code",
                                            "server_shutting_down"),
                                  "Retry-After", "5");
        return true;
    }
    if (atomic_load(&s->ready) == 0 && !strcmp(want, "POST")) {
        /* Answer at once rather than hold an HTTP worker while models load. */
        *res = srv_error(r, 503, "unavailable_error", NULL, "loading",
                         "the models are still loading (see /health)");
        return true;
    }
    return false;
}

/* A Content-Length over the limit: a body up to SRV_DISCARD_MAX over it is
 * read and dropped, then answered 413 (a client that writes its whole body
 * before reading gets the answer instead of a reset); a larger one, or a
 * client that waits for "100 Continue", is answered at once (MHD closes the
 * connection). */
#define SRV_DISCARD_MAX ((unsigned long long)16 << 20)
static bool too_large(srv_req *r, enum MHD_Result *res) {
    const char *cl = header(r->conn, "Content-Length");
    if (!cl) return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    if (errno || end == cl || n <= r->s->max_body) return false;
    const char *expect = header(r->conn, "Expect");
    if (n - r->s->max_body <= SRV_DISCARD_MAX && !expect) {
        r->body_too_large = true;
        return false;
    }
    r->origin = cors_origin(r->s, r->conn);
    *res =
        srv_error(r, 413, "invalid_request_error", NULL, "request_too_large",
                  "request body of %llu bytes is over the limit of %zu bytes", n, r->s->max_body);
    return true;
}

/* Framing that libmicrohttpd lets through but a proxy in front may read
 * differently (request smuggling): a NUL in the target, more than one
 * Content-Length, Content-Length beside Transfer-Encoding. Answered 400
 * and the connection closed. */
static enum MHD_Result count_cl(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value) {
    (void)kind, (void)value;
    if (!strcasecmp(key, "Content-Length")) (*(int *)cls)++;
    return MHD_YES;
}

static bool bad_framing(srv_req *r, enum MHD_Result *res) {
    struct MHD_Connection *c = r->conn;
    const char *why = NULL;
    int n_cl = 0;
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_cl, &n_cl);
    if (srv_conn_bad_uri(r->s, r->sc))
        why = "the request path contains a NUL byte (%00)";
    else if (n_cl > 1)
        why = "more than one Content-Length header";
    else if (n_cl && header(c, "Transfer-Encoding"))
        why = "both Content-Length and Transfer-Encoding headers";
    if (!why) return false;
    r->origin = cors_origin(r->s, c);
    *res = srv_respond_json_h(r, 400,
                              json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", why, "type",
                                        "invalid_request_error", "param", "code", "bad_request"),
                              "Connection", "close");
    return true;
}

/* Too many connections are open: answer 503 (the reaper evicts idle ones). */
static bool over_limit(srv_req *r, enum MHD_Result *res) {
    srv *s = r->s;
    if (srv_conn_count(s) <= s->max_conns) return false;
    r->origin = cors_origin(s, r->conn);
    *res = srv_respond_json_h(
        r, 503,
        json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message",
                  "too many open connections; retry shortly (see --max-connections)", "type",
                  "unavailable_error", "param", "code", "too_many_connections"),
        "Retry-After", "1");
    return true;
}

/* ---- prep threads
 *
 * Work that costs more than reading a request - parsing a body of up to
 * --max-body bytes, loading a model on first use, rendering and tokenizing
 * a prompt, tokenizing embedding inputs - runs on a small pool of prep
 * threads, never on MHD's threads, which each serve many connections: one
 * large request must not delay the others' accepts and answers. The
 * connection is suspended while its request waits for and runs on a prep
 * thread (r->in_prep). A response the endpoint makes there is kept in
 * r->deferred and queued by MHD's thread once the prep thread resumes the
 * connection; a non-streaming request submitted to the engine stays
 * suspended until the engine's DONE wakes it (srv_req_wake does not resume
 * during prep; the prep thread checks r->done when it ends). The queue holds
 * one reference to r. Two FIFOs: bodies of SRV_PREP_BIG bytes or more, and
 * the rest; at most all threads but one work on big ones, so a small
 * request never waits behind a row of large ones. */

#define SRV_PREP_BIG ((size_t)64 << 10)

static void prep_push(srv_req **head, srv_req **tail, srv_req *r) {
    r->prep_next = NULL;
    if (*tail)
        (*tail)->prep_next = r;
    else
        *head = r;
    *tail = r;
}

static srv_req *prep_pop(srv_req **head, srv_req **tail) {
    srv_req *r = *head;
    if (r && !(*head = r->prep_next)) *tail = NULL;
    return r;
}

static enum MHD_Result body_done(srv_req *r);

static enum MHD_Result prep_start(srv_req *r) {
    srv *s = r->s;
    pthread_mutex_lock(&r->mu);
    r->refs++; /* the prep queue's */
    r->in_prep = true;
    r->phase = SRV_P_PREP;
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&s->prep_mu);
    if (r->body.n >= SRV_PREP_BIG)
        prep_push(&s->prep_big_head, &s->prep_big_tail, r);
    else
        prep_push(&s->prep_head, &s->prep_tail, r);
    pthread_cond_broadcast(&s->prep_cv);
    pthread_mutex_unlock(&s->prep_mu);
    return MHD_YES;
}

static void prep_run(srv_req *r) {
    enum MHD_Result res =
        atomic_load(&r->s->prep_abort)
            ? srv_error(r, 503, "unavailable_error", NULL, "server_shutting_down",
                        "the server stopped before the request was handled (draining)")
            : body_done(r);
    pthread_mutex_lock(&r->mu);
    r->in_prep = false;
    if (res == MHD_NO && !r->deferred) r->prep_failed = true;
    /* a submitted non-streaming request waits for the engine's DONE */
    bool resume = r->suspended && (r->phase != SRV_P_WAIT || r->done);
    if (resume) r->suspended = false;
    struct MHD_Connection *c = r->conn;
    pthread_mutex_unlock(&r->mu);
    if (resume && c) MHD_resume_connection(c);
    srv_req_unref(r);
}

static void *prep_main(void *arg) {
    srv *s = arg;
    srv_trace_thread("http-prep");
    pthread_mutex_lock(&s->prep_mu);
    for (;;) {
        srv_req *r;
        bool big = false;
        for (;;) {
            if ((r = prep_pop(&s->prep_head, &s->prep_tail))) break;
            if (s->prep_big_running < s->prep_slots - 1 || s->prep_slots == 1)
                if ((r = prep_pop(&s->prep_big_head, &s->prep_big_tail))) {
                    big = true;
                    break;
                }
            if (s->prep_stop && !s->prep_big_head) break;
            pthread_cond_wait(&s->prep_cv, &s->prep_mu);
        }
        if (!r) break; /* stopping, queues empty */
        s->prep_big_running += big;
        pthread_mutex_unlock(&s->prep_mu);
        prep_run(r);
        pthread_mutex_lock(&s->prep_mu);
        s->prep_big_running -= big;
        if (big) pthread_cond_broadcast(&s->prep_cv); /* a big one may go now */
    }
    pthread_mutex_unlock(&s->prep_mu);
    return NULL;
}

/* Resumed after prep: queue what the endpoint answered, or go on waiting. */
static enum MHD_Result prep_resumed(srv_req *r) {
    if (r->deferred) {
        struct MHD_Response *resp = r->deferred;
        r->deferred = NULL;
        enum MHD_Result ret = MHD_queue_response(r->conn, r->deferred_status, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    if (r->prep_failed) return MHD_NO;
    if (r->phase == SRV_P_WAIT)
        return r->route == SRV_R_EMBEDDINGS ? srv_finish_embeddings(r) : srv_finish_generate(r);
    return MHD_YES;
}

/* The body is complete: check it and hand it to the endpoint (prep thread). */
static enum MHD_Result body_done(srv_req *r) {
    if (r->body.oom) return srv_error(r, 500, "server_error", NULL, NULL, "out of memory");
    long bad = srv_utf8_invalid_at(r->body.p ? r->body.p : "", r->body.n);
    if (bad >= 0)
        return srv_error(r, 400, "invalid_request_error", NULL, "invalid_utf8",
                         "request body is not valid UTF-8 (byte %ld)", bad);
    switch (r->route) {
    case SRV_R_CHAT:
    case SRV_R_COMPLETIONS:
        return srv_handle_generate(r);
    case SRV_R_EMBEDDINGS:
        return srv_handle_embeddings(r);
    case SRV_R_DIAG_BENCH:
        return srv_handle_diag_bench(r);
    case SRV_R_PROF_BENCH:
        return srv_handle_prof_bench(r);
    default:
        return srv_error(r, 500, "server_error", NULL, NULL, "no handler");
    }
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
    srv *s = cls;
    srv_req *r = *con_cls;
    enum MHD_Result res;
    if (!r) {
        if (!(r = req_create(s, conn, srv_route_of(url)))) return MHD_NO;
        *con_cls = r;
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", url);
        r->http11 = version && strcmp(version, "HTTP/1.0") && strncmp(version, "HTTP/0", 6);
        srv_conn_phase_set(s, r->sc, SRV_C_BODY);
        /* Bad framing, the connection limit and a body far too large are
         * answered before the body is read (MHD closes such a connection);
         * everything else once the request is complete, so keep-alive
         * connections stay open. */
        if (bad_framing(r, &res) || over_limit(r, &res) || too_large(r, &res)) {
            srv_conn_phase_set(s, r->sc, SRV_C_BUSY);
            return res;
        }
        return MHD_YES;
    }
    if (r->deferred || r->prep_failed) return prep_resumed(r);
    if (r->phase == SRV_P_BODY) {
        if (*upload_data_size) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            srv_conn_body(s, r->sc, n);
            if (r->body_too_large || r->body.n + n > s->max_body) {
                /* discard the rest */
                r->body_too_large = true;
                strbuf_free(&r->body);
                return MHD_YES;
            }
            strbuf_put(&r->body, upload_data, n);
            return MHD_YES;
        }
        srv_conn_phase_set(s, r->sc, SRV_C_BUSY);
        if (r->body_too_large) {
            char msg[128];
            snprintf(msg, sizeof msg, "request body is over the limit of %zu bytes (--max-body)",
                     s->max_body);
            r->origin = cors_origin(s, conn);
            return srv_respond_json_h(r, 413,
                                      json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg,
                                                "type", "invalid_request_error", "param", "code",
                                                "request_too_large"),
                                      "Connection", "close");
        }
        if (early_answer(r, method, url, &res)) return res;
        switch (r->route) {
        case SRV_R_HEALTH:
            return srv_handle_health(r);
        case SRV_R_MODELS:
            return srv_handle_models(r);
        case SRV_R_METRICS:
            return srv_handle_metrics(r);
        case SRV_R_DIAG_PERF:
            return srv_handle_diag_perf(r);
        case SRV_R_DIAG_BOTTLENECK:
            return srv_handle_diag_bottleneck(r);
        case SRV_R_PROF_START:
        case SRV_R_PROF_STOP:
        case SRV_R_PROF_STATUS:
        case SRV_R_PROF_TRACES:
        case SRV_R_PROF_TRACE:
            return srv_handle_prof(r);
        default:
            return prep_start(r);
        }
    }
    if (r->phase == SRV_P_WAIT) {
        /* resumed: the engine is done */
        return r->route == SRV_R_EMBEDDINGS ? srv_finish_embeddings(r) : srv_finish_generate(r);
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    srv *s = cls;
    srv_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    srv_conn_phase_set(s, srv_conn_of(conn), SRV_C_IDLE);
    pthread_mutex_lock(&r->mu);
    r->mhd_done = true;
    r->conn = NULL;
    bool cancel = r->submitted && !r->done && r->served && r->served->sched;
    /* the watcher and shutdown use r->served only under r->mu */
    kiln_served *served = r->served;
    r->served = NULL;
    pthread_mutex_unlock(&r->mu);
    if (cancel) {
        /* The client went away: free its slot within a step (the model is
         * still held, so its scheduler lives). */
        kiln_sched_cancel(served->sched, r->sched_id);
    }
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status == 0) r->status = 499;
    srv_metrics_request(s, r->route, r->status ? r->status : 499, kiln_now_s() - r->t_start);
    srv_diag_request(r, kiln_now_s() - r->t_start);
    srv_logs_request(r, kiln_now_s() - r->t_start);
    metric_inc(s->m.in_flight, NULL, -1);
    if (served) kiln_registry_release(s->reg, served);
    pthread_mutex_lock(&s->mu);
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        s->all_head = r->all_next;
    if (r->all_next) r->all_next->all_prev = r->all_prev;
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_sub(&s->n_reqs, 1);
    srv_req_unref(r);
}

/* ---- clients that vanish while suspended
 *
 * MHD does not watch a suspended connection, so a client that goes away
 * while its request waits in the queue or generates an answer would hold
 * its slot until the end. The watcher looks at the sockets of the
 * generation requests every 100 ms. A reset or an error means the peer is
 * gone: the request is cancelled, which frees its slot within a step. The
 * end of the client's stream alone is not a disconnect - a client may send
 * its request and shut down its write side (legal HTTP) while it waits for
 * the answer - so it only triggers one probe write: a closed peer answers
 * it with a reset, a half-closed one reads it. The probe is an SSE comment
 * for a stream (written by the stream's reader) and an interim
 * "100 Continue" before a non-streaming answer (HTTP/1.1 clients must
 * accept 1xx responses; nothing else is being written then, the connection
 * being suspended with no response queued). A socket of a request whose
 * connection already completed is skipped (its number may have been
 * reused). The same thread runs the connection reaper (conns.c). */

enum { PEER_OK, PEER_EOF, PEER_GONE };

static int peer_state(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return PEER_OK;
    if (p.revents & (POLLHUP | POLLERR)) return PEER_GONE;
    char c;
    return (p.revents & POLLIN) && recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0 ? PEER_EOF
                                                                                 : PEER_OK;
}

/* The probe of a non-streaming request (r->mu held, connection suspended). */
static void probe_write(srv_req *r) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (r->http11) (void)!send(r->fd, cont, sizeof cont - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void *watcher_main(void *arg) {
    srv *s = arg;
    enum { MAX = 256 };
    while (!atomic_load(&s->watcher_stop)) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        srv_conns_reap(s);
        srv_diag_tick(s);
        if (s->diag) srv_prof_tick(s);
        srv_logs_tick(s);
        srv_req *wake[MAX];
        int n_wake = 0;
        pthread_mutex_lock(&s->mu);
        for (srv_req *r = s->gen_head; r && n_wake < MAX; r = r->gen_next) {
            pthread_mutex_lock(&r->mu);
            bool look = r->submitted && r->suspended && !r->mhd_done && !r->done && r->fd >= 0 &&
                        atomic_load(&r->cancel_reason) == SRV_CANCEL_NONE && r->served &&
                        r->served->sched;
            int st = look ? peer_state(r->fd) : PEER_OK;
            if (st == PEER_GONE) {
                /* under r->mu the request holds its model, so the scheduler
                 * lives; it never calls back holding its own lock */
                atomic_store(&r->cancel_reason, SRV_CANCEL_CLIENT_GONE);
                kiln_sched_cancel(r->served->sched, r->sched_id);
            } else if (st == PEER_EOF && !r->probed) {
                r->probed = true;
                if (r->stream) {
                    r->probe_due = true;
                    r->refs++; /* kept alive until woken below */
                    wake[n_wake++] = r;
                } else {
                    probe_write(r);
                }
            }
            pthread_mutex_unlock(&r->mu);
        }
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < n_wake; i++) {
            srv_req_wake(wake[i]); /* its reader writes the probe */
            srv_req_unref(wake[i]);
        }
    }
    return NULL;
}

/* ---- start-up load */

static void *loader_main(void *arg) {
    srv *s = arg;
    double t0 = kiln_now_s();
    kiln_status st = kiln_registry_load_all(s->reg);
    if (st != KILN_OK) {
        snprintf(s->load_error, sizeof s->load_error, "%s", kiln_last_error());
        KILN_LOGE("kiln serve: loading models failed: %s", s->load_error);
        atomic_store(&s->ready, -1);
        return NULL;
    }
    kiln_registry_entry e[64];
    int32_t n = kiln_registry_list(s->reg, e, 64);
    for (int32_t i = 0; i < n && i < 64; i++)
        KILN_LOGI("kiln serve: model %s (%s): %s, %s, %.1f MiB%s", e[i].name, e[i].path,
                  e[i].loaded ? "loaded" : "not loaded",
                  e[i].is_encoder ? "embeddings" : "generation", (double)e[i].bytes / (1 << 20),
                  e[i].pinned ? ", pinned" : "");
    if (s->diag) {
        /* the roofline the verdicts are judged against (~0.1 s) */
        srv_diag_measure(s, s->engine_threads);
        KILN_LOGI("kiln serve: diagnostics on (/diagnostics/performance, "
                  "/diagnostics/bottleneck-analysis)");
    }
    KILN_LOGI("kiln serve: ready in %.2f s", kiln_now_s() - t0);
    atomic_store(&s->ready, 1);
    return NULL;
}

/* ---- lifecycle */

static char *dup_str(const char *x) {
    if (!x) return NULL;
    size_t n = strlen(x);
    char *d = malloc(n + 1);
    if (d) memcpy(d, x, n + 1);
    return d;
}

static int bind_addr(const char *host, int port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        return AF_INET;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        return AF_INET6;
    }
    if (!strcmp(host, "localhost")) return bind_addr("127.0.0.1", port, ss);
    return -1;
}

/* srv_log_limited: at most LOG_BURST lines per LOG_WINDOW seconds, so a
 * flood of aborted connections cannot flood the log. */
enum { LOG_BURST = 8 };
#define LOG_WINDOW 10.0

static void log_limited_v(srv *s, const char *fmt, va_list ap) {
    double now = kiln_now_s();
    int suppressed = 0;
    bool show;
    pthread_mutex_lock(&s->log_mu);
    if (now - s->log_window > LOG_WINDOW) {
        suppressed = s->log_suppressed;
        s->log_window = now;
        s->log_n = s->log_suppressed = 0;
    }
    show = s->log_n < LOG_BURST;
    if (show)
        s->log_n++;
    else
        s->log_suppressed++;
    pthread_mutex_unlock(&s->log_mu);
    if (suppressed)
        KILN_LOGW("kiln serve: %d similar message(s) suppressed in the last %.0f s", suppressed,
                  LOG_WINDOW);
    if (!show) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    KILN_LOGW("%s", msg);
}

void srv_log_limited(srv *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_limited_v(s, fmt, ap);
    va_end(ap);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    srv_log_limited(cls, "kiln serve: http: %s", msg);
}

static kiln_status start_daemon(srv *s, const srv_config *c) {
    struct sockaddr_storage ss;
    int fam = bind_addr(c->host ? c->host : "127.0.0.1", c->port, &ss);
    if (fam < 0)
        return kiln_fail(KILN_ERR_INVALID_ARG, "--host %s: not an IPv4 or IPv6 address", c->host);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if (fam == AF_INET6) flags |= MHD_USE_IPv6;
    s->ipv6 = fam == AF_INET6;
    unsigned threads = c->http_threads > 0 ? (unsigned)c->http_threads : 4;
    unsigned timeout = (unsigned)(s->idle_timeout + 0.5);
    unsigned per_ip = c->max_conns_per_ip > 0   ? (unsigned)c->max_conns_per_ip
                      : c->max_conns_per_ip < 0 ? 0 /* MHD: no limit */
                                                : 64;
    s->d = MHD_start_daemon(
        flags, (uint16_t)c->port, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_CONNECTION_TIMEOUT,
        timeout,
        /* room above the soft limit to answer 503 instead of refusing */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->max_conns + 64,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, srv_conn_notify,
        s, MHD_OPTION_URI_LOG_CALLBACK, srv_conn_uri, s, MHD_OPTION_END);
    if (!s->d)
        return kiln_fail(KILN_ERR_IO, "cannot listen on %s port %d (address in use?)",
                         c->host ? c->host : "127.0.0.1", c->port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : c->port;
    return KILN_OK;
}

/* Prep threads: as many as HTTP threads, within SRV_MAX_PREP. */
static int c_prep_threads(const srv_config *c) {
    int n = c->http_threads > 0 ? c->http_threads : 4;
    return n < SRV_MAX_PREP ? n : SRV_MAX_PREP;
}

srv *srv_create(const srv_config *c, kiln_status *st) {
    kiln_status ret = KILN_ERR_NOMEM;
    srv *s = calloc(1, sizeof *s);
    if (!s) goto fail;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);
    pthread_mutex_init(&s->log_mu, NULL);
    pthread_mutex_init(&s->prep_mu, NULL);
    pthread_cond_init(&s->prep_cv, NULL);
    s->started = (int64_t)time(NULL);
    s->max_body = c->max_body ? c->max_body : (size_t)8 << 20;
    s->idle_timeout = c->conn_timeout_s > 0 ? c->conn_timeout_s : 60;
    s->header_timeout = c->header_timeout_s > 0 ? c->header_timeout_s : 10;
    s->body_min_rate = c->body_min_rate > 0 ? c->body_min_rate : c->body_min_rate < 0 ? 0 : 1024;
    s->max_conns = c->max_conns > 0 ? c->max_conns : 1024;
    s->public_metrics = c->public_metrics;
    srv_logs_init(s, c);
    if ((c->api_key && !(s->api_key = dup_str(c->api_key))) ||
        (c->metrics_key && !(s->metrics_key = dup_str(c->metrics_key))) ||
        (c->chat_template && !(s->chat_template = dup_str(c->chat_template))))
        goto fail;
    if (c->cors && c->cors[0]) {
        while (c->cors[s->n_cors]) s->n_cors++;
        if (!(s->cors = calloc((size_t)s->n_cors + 1, sizeof *s->cors))) goto fail;
        for (int i = 0; i < s->n_cors; i++)
            if (!(s->cors[i] = dup_str(c->cors[i]))) goto fail;
    }
    static const char ok[] = "{\"status\":\"ok\"}";
    s->health_ok =
        MHD_create_response_from_buffer(sizeof ok - 1, (void *)ok, MHD_RESPMEM_PERSISTENT);
    if (!s->health_ok) goto fail;
    MHD_add_response_header(s->health_ok, "Content-Type", "application/json");
    if ((ret = srv_metrics_init(s))) goto fail;
    s->engine_threads = c->reg.sched.n_threads;
    srv_gpu_open(s);
    if (c->diagnostics && ((ret = srv_diag_init(s)) || (ret = srv_prof_init(s)))) goto fail;
    if (!(s->reg = kiln_registry_create(&c->reg, &ret))) goto fail;
    for (int i = 0; i < c->n_models; i++)
        if ((ret =
                 kiln_registry_add(s->reg, c->models[i].name, c->models[i].path, c->models[i].pin)))
            goto fail;
    if (c->n_models && !(s->first_model = dup_str(c->models[0].name))) {
        ret = KILN_ERR_NOMEM;
        goto fail;
    }
    /* the threads that serve connections first, then the daemon */
    s->prep_slots = c_prep_threads(c);
    for (; s->n_prep < s->prep_slots; s->n_prep++)
        if (pthread_create(&s->prep[s->n_prep], NULL, prep_main, s)) {
            ret = kiln_fail(KILN_ERR_INTERNAL, "cannot start a prep thread");
            goto fail;
        }
    if (pthread_create(&s->watcher, NULL, watcher_main, s)) {
        ret = kiln_fail(KILN_ERR_INTERNAL, "cannot start the connection watcher thread");
        goto fail;
    }
    s->watcher_started = true;
    if ((ret = start_daemon(s, c))) goto fail;
    if (pthread_create(&s->loader, NULL, loader_main, s)) {
        ret = kiln_fail(KILN_ERR_INTERNAL, "cannot start the model loading thread");
        goto fail;
    }
    s->loader_started = true;
    if (st) *st = KILN_OK;
    return s;
fail:
    if (st) *st = ret;
    srv_destroy(s);
    return NULL;
}

int srv_port(const srv *s) {
    return s->port;
}

/* Cancels every generation request still running (the deadline passed). */
static void cancel_all(srv *s) {
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (srv_req *r = s->gen_head; r; r = r->gen_next) {
        pthread_mutex_lock(&r->mu);
        if (r->submitted && !r->done && r->served && r->served->sched) {
            int none = SRV_CANCEL_NONE;
            atomic_compare_exchange_strong(&r->cancel_reason, &none, SRV_CANCEL_SHUTDOWN);
            kiln_sched_cancel(r->served->sched, r->sched_id); /* model held under r->mu */
            n++;
        }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&s->mu);
    if (n) KILN_LOGW("kiln serve: cancelled %d request(s) at the shutdown deadline", n);
}

/* The last resort before the daemon stops (MHD must not stop with a
 * suspended connection): every request still waiting is resumed and told
 * to answer 503 (or end its stream) instead of waiting again. */
static void force_end_all(srv *s) {
    enum { MAX = 4096 };
    srv_req *wake[MAX];
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (srv_req *r = s->all_head; r && n < MAX; r = r->all_next) {
        pthread_mutex_lock(&r->mu);
        r->force_end = true;
        if (r->suspended && r->conn) {
            r->suspended = false;
            r->refs++;
            wake[n++] = r;
        }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
        MHD_resume_connection(wake[i]->conn); /* suspended: its connection lives */
        srv_req_unref(wake[i]);
    }
    if (n) KILN_LOGW("kiln serve: ended %d request(s) still waiting at shutdown", n);
}

/* Joins the prep threads once their queues are empty. */
static void prep_stop_all(srv *s) {
    pthread_mutex_lock(&s->prep_mu);
    s->prep_stop = true;
    pthread_cond_broadcast(&s->prep_cv);
    pthread_mutex_unlock(&s->prep_mu);
    for (int i = 0; i < s->n_prep; i++) pthread_join(s->prep[i], NULL);
    s->n_prep = 0;
}

static void wait_idle(srv *s, double until) {
    while (atomic_load(&s->n_reqs) > 0 && kiln_now_s() < until) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void srv_shutdown(srv *s, double deadline_s) {
    if (!s || s->shut_down) return;
    s->shut_down = true;
    atomic_store(&s->stopping, 1);
    if (s->d) {
        /* Stop listening at once: new clients are refused (a balancer
         * moves on) instead of waiting in the backlog until the deadline.
         * The socket is closed only after MHD stops (its threads may still
         * look at it). */
        MHD_socket fd = MHD_quiesce_daemon(s->d);
        if (fd != MHD_INVALID_SOCKET) shutdown(fd, SHUT_RDWR);
        int n = atomic_load(&s->n_reqs);
        if (n) KILN_LOGI("kiln serve: waiting up to %.0f s for %d request(s)", deadline_s, n);
        wait_idle(s, kiln_now_s() + deadline_s);
        if (atomic_load(&s->n_reqs) > 0) {
            atomic_store(&s->prep_abort, 1); /* queued requests answer 503 */
            cancel_all(s);
            wait_idle(s, kiln_now_s() + 5);
        }
        /* MHD must not stop with a suspended connection: the prep threads
         * finish first (nothing new is queued while stopping), then
         * whatever still waits is ended */
        prep_stop_all(s);
        if (atomic_load(&s->n_reqs) > 0) {
            force_end_all(s);
            wait_idle(s, kiln_now_s() + 5);
        }
        MHD_stop_daemon(s->d);
        s->d = NULL;
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
    if (s->loader_started) {
        pthread_join(s->loader, NULL);
        s->loader_started = false;
    }
    if (s->watcher_started) {
        atomic_store(&s->watcher_stop, 1);
        pthread_join(s->watcher, NULL);
        s->watcher_started = false;
    }
    prep_stop_all(s);
}

void srv_destroy(srv *s) {
    if (!s) return;
    srv_shutdown(s, 0);
    kiln_registry_destroy(s->reg);
    srv_metrics_free(s);
    srv_prof_free(s);
    srv_diag_free(s);
    gpu_close(s->gpu);
    if (s->health_ok) MHD_destroy_response(s->health_ok);
    if (s->cors)
        for (int i = 0; i < s->n_cors; i++) free(s->cors[i]);
    free(s->cors);
    free(s->api_key);
    free(s->metrics_key);
    free(s->chat_template);
    free(s->first_model);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->conn_mu);
    pthread_mutex_destroy(&s->log_mu);
    pthread_mutex_destroy(&s->prep_mu);
    pthread_cond_destroy(&s->prep_cv);
    free(s);
}

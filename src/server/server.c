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
    bool resume = r->suspended;
    r->suspended = false;
    struct MHD_Connection *c = r->conn;
    pthread_mutex_unlock(&r->mu);
    /* A suspended connection cannot complete, so c is valid until resumed. */
    if (resume) MHD_resume_connection(c);
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
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result srv_respond_json(srv_req *r, unsigned status, void *jv) {
    json_t *j = jv;
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
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(txt);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    return srv_respond(r, status, resp);
}

static enum MHD_Result error_v(srv_req *r, unsigned status, const char *type, const char *param,
                               const char *code, const char *fmt, va_list ap) {
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
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

enum MHD_Result srv_error_status(srv_req *r, kiln_status st, const char *msg) {
    switch (st) {
    case KILN_ERR_BUSY: {
        struct MHD_Response *resp;
        char *txt;
        json_t *e = json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg, "type",
                              "rate_limit_error", "param", "code", "rate_limit_exceeded");
        txt = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        if (!txt) return MHD_NO;
        resp = MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
            free(txt);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "application/json");
        MHD_add_response_header(resp, "Retry-After", "1");
        return srv_respond(r, 429, resp);
    }
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

static bool authorized(srv *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *h = header(c, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) {
        /* some clients send the key alone in x-api-key */
        h = header(c, "X-Api-Key");
        return h && srv_const_eq(h, s->api_key);
    }
    h += 7;
    while (*h == ' ') h++;
    return srv_const_eq(h, s->api_key);
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
    if (r->route == SRV_R_UNKNOWN) {
        *res = srv_error(r, 404, "not_found_error", NULL, "not_found",
                         "no route for %s %.200s (routes: /v1/chat/completions, /v1/completions, "
                         "/v1/embeddings, /v1/models, /health, /metrics)",
                         method, url);
        return true;
    }
    const char *want = srv_route_method(r->route);
    bool ok = !strcmp(method, want) || (!strcmp(want, "GET") && !strcmp(method, "HEAD"));
    if (!ok) {
        char allow[32];
        snprintf(allow, sizeof allow, "%s%s", want, strcmp(want, "GET") ? "" : ", HEAD");
        json_t *e = json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message",
                              "method not allowed for this route", "type", "invalid_request_error",
                              "param", "code", "method_not_allowed");
        char *txt = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        struct MHD_Response *resp =
            txt ? MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_FREE) : NULL;
        if (!resp) {
            free(txt);
            *res = MHD_NO;
            return true;
        }
        MHD_add_response_header(resp, "Content-Type", "application/json");
        MHD_add_response_header(resp, "Allow", allow);
        *res = srv_respond(r, 405, resp);
        return true;
    }
    if (srv_route_auth(r->route) && !authorized(s, c)) {
        *res = srv_error(r, 401, "authentication_error", NULL, "invalid_api_key",
                         "missing or invalid API key (send Authorization: Bearer KEY)");
        return true;
    }
    if (atomic_load(&s->stopping) && r->route != SRV_R_HEALTH) {
        *res = srv_error(r, 503, "unavailable_error", NULL, NULL, "the server is shutting down");
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

/* A Content-Length over the limit is answered before the body is read. */
static bool too_large(srv_req *r, enum MHD_Result *res) {
    const char *cl = header(r->conn, "Content-Length");
    if (!cl) return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    if (errno || end == cl || n <= r->s->max_body) return false;
    r->origin = cors_origin(r->s, r->conn);
    *res =
        srv_error(r, 413, "invalid_request_error", NULL, "request_too_large",
                  "request body of %llu bytes is over the limit of %zu bytes", n, r->s->max_body);
    return true;
}

/* The body is complete: check it and hand it to the endpoint. */
static enum MHD_Result body_done(srv_req *r) {
    srv *s = r->s;
    if (r->body_too_large)
        return srv_error(r, 413, "invalid_request_error", NULL, "request_too_large",
                         "request body is over the limit of %zu bytes", s->max_body);
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
        /* Only a body known to be too large is answered before it is read
         * (MHD closes such a connection); everything else is answered once
         * the request is complete, so keep-alive connections stay open. */
        if (too_large(r, &res)) return res;
        return MHD_YES;
    }
    if (r->phase == SRV_P_BODY) {
        if (*upload_data_size) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            if (r->body_too_large || r->body.n + n > s->max_body) {
                /* discard the rest */
                r->body_too_large = true;
                strbuf_free(&r->body);
                return MHD_YES;
            }
            strbuf_put(&r->body, upload_data, n);
            return MHD_YES;
        }
        if (early_answer(r, method, url, &res)) return res;
        switch (r->route) {
        case SRV_R_HEALTH:
            return srv_handle_health(r);
        case SRV_R_MODELS:
            return srv_handle_models(r);
        case SRV_R_METRICS:
            return srv_handle_metrics(r);
        default:
            return body_done(r);
        }
    }
    if (r->phase == SRV_P_WAIT) {
        /* resumed: the engine is done */
        return r->route == SRV_R_EMBEDDINGS ? srv_finish_embeddings(r) : srv_finish_generate(r);
    }
    (void)version;
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    srv *s = cls;
    srv_req *r = *con_cls;
    (void)conn;
    if (!r) return;
    *con_cls = NULL;
    pthread_mutex_lock(&r->mu);
    r->mhd_done = true;
    r->conn = NULL;
    bool cancel = r->submitted && !r->done && r->served && r->served->sched;
    pthread_mutex_unlock(&r->mu);
    if (cancel) {
        /* The client went away: free its slot within a step. */
        kiln_sched_cancel(r->served->sched, r->sched_id);
    }
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status == 0) r->status = 499;
    srv_metrics_request(s, r->route, r->status ? r->status : 499, kiln_now_s() - r->t_start);
    metric_inc(s->m.in_flight, NULL, -1);
    if (r->served) kiln_registry_release(s->reg, r->served);
    r->served = NULL;
    atomic_fetch_sub(&s->n_reqs, 1);
    srv_req_unref(r);
}

/* ---- clients that vanish while suspended
 *
 * MHD does not watch a suspended connection, so a client that goes away
 * while its request waits in the queue or generates a non-streaming answer
 * would hold its slot until the end. The watcher looks at the sockets of
 * the generation requests every 100 ms: end of stream (the peer closed)
 * cancels the request, which frees its slot within a step. A socket of a
 * request whose connection already completed is skipped (its number may
 * have been reused). */

static bool peer_closed(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLHUP | POLLERR)) return true;
    char c;
    return (p.revents & POLLIN) && recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void *watcher_main(void *arg) {
    srv *s = arg;
    enum { MAX = 256 };
    while (!atomic_load(&s->watcher_stop)) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        kiln_sched *sched[MAX];
        uint64_t ids[MAX];
        int n = 0;
        pthread_mutex_lock(&s->mu);
        for (srv_req *r = s->gen_head; r && n < MAX; r = r->gen_next) {
            pthread_mutex_lock(&r->mu);
            bool look = r->suspended && !r->mhd_done && !r->done && !r->cancelled && r->fd >= 0;
            if (look && peer_closed(r->fd) && r->served && r->served->sched) {
                r->cancelled = true;
                sched[n] = r->served->sched;
                ids[n++] = r->sched_id;
            }
            pthread_mutex_unlock(&r->mu);
        }
        pthread_mutex_unlock(&s->mu);
        /* a suspended connection's request holds its model: the scheduler lives */
        for (int i = 0; i < n; i++) kiln_sched_cancel(sched[i], ids[i]);
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

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    (void)cls;
    KILN_LOGW("kiln serve: http: %s", msg);
}

static kiln_status start_daemon(srv *s, const srv_config *c) {
    struct sockaddr_storage ss;
    int fam = bind_addr(c->host ? c->host : "127.0.0.1", c->port, &ss);
    if (fam < 0)
        return kiln_fail(KILN_ERR_INVALID_ARG, "--host %s: not an IPv4 or IPv6 address", c->host);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if (fam == AF_INET6) flags |= MHD_USE_IPv6;
    unsigned threads = c->http_threads > 0 ? (unsigned)c->http_threads : 4;
    unsigned timeout = c->conn_timeout_s > 0 ? (unsigned)(c->conn_timeout_s + 0.5) : 60;
    s->d = MHD_start_daemon(
        flags, (uint16_t)c->port, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_CONNECTION_TIMEOUT,
        timeout, MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->d)
        return kiln_fail(KILN_ERR_IO, "cannot listen on %s port %d (address in use?)",
                         c->host ? c->host : "127.0.0.1", c->port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : c->port;
    return KILN_OK;
}

srv *srv_create(const srv_config *c, kiln_status *st) {
    kiln_status ret = KILN_ERR_NOMEM;
    srv *s = calloc(1, sizeof *s);
    if (!s) goto fail;
    pthread_mutex_init(&s->mu, NULL);
    s->started = (int64_t)time(NULL);
    s->max_body = c->max_body ? c->max_body : (size_t)8 << 20;
    if ((c->api_key && !(s->api_key = dup_str(c->api_key))) ||
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
    if (!(s->reg = kiln_registry_create(&c->reg, &ret))) goto fail;
    for (int i = 0; i < c->n_models; i++)
        if ((ret =
                 kiln_registry_add(s->reg, c->models[i].name, c->models[i].path, c->models[i].pin)))
            goto fail;
    if (c->n_models && !(s->first_model = dup_str(c->models[0].name))) {
        ret = KILN_ERR_NOMEM;
        goto fail;
    }
    if ((ret = start_daemon(s, c))) goto fail;
    if (pthread_create(&s->loader, NULL, loader_main, s)) {
        ret = kiln_fail(KILN_ERR_INTERNAL, "cannot start the model loading thread");
        goto fail;
    }
    s->loader_started = true;
    if (pthread_create(&s->watcher, NULL, watcher_main, s)) {
        ret = kiln_fail(KILN_ERR_INTERNAL, "cannot start the connection watcher thread");
        goto fail;
    }
    s->watcher_started = true;
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
    enum { MAX = 1024 };
    kiln_sched *sched[MAX];
    uint64_t ids[MAX];
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (srv_req *r = s->gen_head; r && n < MAX; r = r->gen_next) {
        if (!r->served || !r->served->sched) continue;
        sched[n] = r->served->sched;
        ids[n++] = r->sched_id;
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) kiln_sched_cancel(sched[i], ids[i]);
    if (n) KILN_LOGW("kiln serve: cancelled %d request(s) at the shutdown deadline", n);
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
        MHD_socket fd = MHD_quiesce_daemon(s->d);
        int n = atomic_load(&s->n_reqs);
        if (n) KILN_LOGI("kiln serve: waiting up to %.0f s for %d request(s)", deadline_s, n);
        wait_idle(s, kiln_now_s() + deadline_s);
        if (atomic_load(&s->n_reqs) > 0) {
            cancel_all(s);
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
}

void srv_destroy(srv *s) {
    if (!s) return;
    srv_shutdown(s, 0);
    kiln_registry_destroy(s->reg);
    srv_metrics_free(s);
    if (s->health_ok) MHD_destroy_response(s->health_ok);
    if (s->cors)
        for (int i = 0; i < s->n_cors; i++) free(s->cors[i]);
    free(s->cors);
    free(s->api_key);
    free(s->chat_template);
    free(s->first_model);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* srv.h - internals shared by the files of src/server: the server object,
 * the per-request object and its lifetime rules, the growable byte buffer,
 * the metric families, and the entry points of each endpoint.
 *
 * Request lifetime (the invariant every file relies on): a srv_req is
 * reference-counted. MHD holds one reference from the first call of the
 * access handler until its completion callback; the engine holds one from a
 * successful submit until its DONE (or the embeddings result) callback.
 * The object is freed when both are gone, so an engine callback never sees
 * freed memory. r->mu guards the fields the engine thread writes (out,
 * done, suspended, results) and those the watcher and shutdown read
 * (submitted, sched_id, served, conn, force_end). r->conn is valid while MHD holds its
 * reference; a connection is suspended only under r->mu with r->suspended
 * set, and only the party that clears r->suspended (under r->mu) resumes it,
 * outside the lock. */
#ifndef KILN_SERVER_SRV_H
#define KILN_SERVER_SRV_H

#include "kiln.h"
#include "obs/metrics.h"
#include "server/server.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include "base/strbuf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Base64 (RFC 4648, padded) of n bytes appended to b. */
void srv_base64(strbuf *b, const unsigned char *p, size_t n);
/* -1 when p[0..n) is valid UTF-8, else the offset of the first bad byte. */
long srv_utf8_invalid_at(const char *p, size_t n);
/* 1 when a and b are equal; runs in time that depends only on the lengths. */
int srv_const_eq(const char *a, const char *b);
/* Content-coding negotiation (RFC 9110 12.5.3). srv_accept_scan raises
 * *q_gzip and *q_any (start them at -1: not listed) to the weights one
 * Accept-Encoding value gives "gzip"/"x-gzip" and "*"; elements with a bad
 * weight are ignored. srv_accepts_gzip_value says whether one value
 * accepts gzip (gzip's own weight, else that of "*", must be above 0;
 * NULL or not listed: no); srv_accepts_gzip does the same over all the
 * request's Accept-Encoding lines (r->conn valid). */
void srv_accept_scan(const char *v, double *q_gzip, double *q_any);
bool srv_accepts_gzip_value(const char *v);
struct srv_req;
bool srv_accepts_gzip(struct srv_req *r);
/* Trace spans of the HTTP layer (obs/trace.h, cat "http"): name (a literal:
 * http_parse, http_write, tokenize, submit) from t0 (0: not tracing; take it
 * with TRACE_SCOPE_BEGIN) to now, with the HTTP status (when > 0) and the
 * bytes (when >= 0) as arguments. The first span a thread records names it
 * "http" (libmicrohttpd's threads) unless srv_trace_thread named it first. */
void srv_trace_http(const char *name, int64_t t0, int status, int64_t bytes);
/* Names the calling thread in traces, once per thread. */
void srv_trace_thread(const char *name);

/* ---- routes */

typedef enum srv_route {
    SRV_R_CHAT,
    SRV_R_COMPLETIONS,
    SRV_R_EMBEDDINGS,
    SRV_R_MODELS,
    SRV_R_HEALTH,
    SRV_R_METRICS,
    SRV_R_DIAG_PERF,
    SRV_R_DIAG_BOTTLENECK,
    SRV_R_PROF_START, /* the profiler routes (api_prof.c): diagnostics too */
    SRV_R_PROF_STOP,
    SRV_R_PROF_STATUS,
    SRV_R_PROF_TRACES,
    SRV_R_PROF_TRACE, /* /diagnostics/profiler/traces/{id} (a prefix) */
    SRV_R_PROF_BENCH, /* POST /diagnostics/profiler/benchmark-with-profiling (prep thread) */
    SRV_R_DIAG_BENCH, /* POST /diagnostics/benchmark (api_diag.c, on a prep thread) */
    SRV_R_UNKNOWN,
    SRV_R_COUNT
} srv_route;

/* The route of a path (query string excluded), and its label for metrics. */
srv_route srv_route_of(const char *url);
const char *srv_route_label(srv_route r);
/* "GET" or "POST": the one method the route answers (HEAD with GET). */
const char *srv_route_method(srv_route r);
/* 1 when the route needs the API key. */
int srv_route_auth(srv_route r);

/* ---- metrics */

typedef struct srv_metrics {
    metrics *reg;
    metric *requests, *latency, *queue, *ttft, *itl, *prefill, *decode, *tokenize;
    metric *emb_batch, *emb_batch_latency, *prompt_tokens, *gen_tokens, *emb_tokens;
    metric *in_flight, *queue_depth, *busy_slots, *kv_used, *kv_ratio, *models_loaded, *model_bytes;
    /* engines, request outcomes and lengths, the build and the machine */
    metric *finished, *prompt_len, *output_len, *build_info;
    metric *eng_busy, *eng_forward, *eng_steps, *eng_tokens, *eng_step_p99;
    metric *mach_read, *mach_fma, *mach_int8;
    metric *slow; /* kiln_slow_requests_total (logs.c) */
    metric *est_flops, *est_bytes, *host_steal, *host_stall;
} srv_metrics;

/* ---- connections (conns.c) */

typedef enum srv_conn_phase {
    SRV_C_NEW,  /* accepted, no request line yet */
    SRV_C_IDLE, /* keep-alive, between requests */
    SRV_C_HEAD, /* request line read, headers pending */
    SRV_C_BODY, /* headers read, body arriving */
    SRV_C_BUSY  /* request complete, being answered */
} srv_conn_phase;

typedef struct srv_conn srv_conn;

/* MHD_OPTION_NOTIFY_CONNECTION: tracks each connection (cls is the srv). */
void srv_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode toe);
/* MHD_OPTION_URI_LOG_CALLBACK: a request line arrived (raw, still escaped
 * target); returns NULL. */
void *srv_conn_uri(void *cls, const char *uri, struct MHD_Connection *c);
/* The tracked connection of c, or NULL (untracked). */
srv_conn *srv_conn_of(struct MHD_Connection *c);
/* The phase of k changes (no-op for NULL or the same phase). */
void srv_conn_phase_set(srv *s, srv_conn *k, srv_conn_phase phase);
/* n more body bytes arrived on k. */
void srv_conn_body(srv *s, srv_conn *k, size_t n);
/* True when the current request's raw target held a NUL ("%00"). */
bool srv_conn_bad_uri(srv *s, srv_conn *k);
/* Open connections. */
int srv_conn_count(srv *s);
/* Shuts down connections past their deadline (watcher thread, every 100 ms). */
void srv_conns_reap(srv *s);

/* Logs a warning unless more than a few were logged in the last 10 s (then
 * counts it, and says how many were suppressed once the window passes). */
void srv_log_limited(srv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the server */

#define SRV_MAX_PREP    16  /* prep threads at most */
#define SRV_LOG_BUCKETS 112 /* logs.c: interval latency buckets, 4 per octave from 0.008 ms */

struct srv {
    struct MHD_Daemon *d;
    int port;
    kiln_registry *reg;
    srv_metrics m;
    /* configuration (owned copies) */
    char *api_key, *metrics_key, *chat_template;
    bool public_metrics;
    char **cors; /* NULL-terminated, or NULL */
    int n_cors;
    size_t max_body;
    /* connection limits (conns.c) */
    double header_timeout, idle_timeout, body_min_rate;
    int max_conns; /* soft limit: above it, 503 and idle connections evicted */
    pthread_mutex_t conn_mu;
    srv_conn *conns;
    int n_conns;
    /* srv_log_limited */
    pthread_mutex_t log_mu;
    double log_window;
    int log_n, log_suppressed;
    char *first_model; /* the model used when a request names none */
    int64_t started;   /* Unix time, for "created" fields */
    /* state */
    atomic_int ready;    /* 1 when the start-up models loaded; -1 when one failed */
    atomic_int stopping; /* 1 after srv_shutdown began */
    atomic_int n_reqs;   /* request objects alive (MHD side) */
    atomic_uint_fast64_t next_id;
    char load_error[512]; /* why the start-up load failed (ready == -1) */
    pthread_t loader;
    bool loader_started, shut_down;
    pthread_t watcher; /* finds clients gone while their connection is suspended */
    bool watcher_started;
    atomic_int watcher_stop;
    /* prep threads (server.c): a FIFO of requests, guarded by prep_mu */
    pthread_t prep[SRV_MAX_PREP];
    int n_prep;
    pthread_mutex_t prep_mu;
    pthread_cond_t prep_cv;
    struct srv_req *prep_head, *prep_tail;         /* small bodies */
    struct srv_req *prep_big_head, *prep_big_tail; /* bodies of SRV_PREP_BIG or more */
    int prep_big_running;
    bool prep_stop;
    int prep_slots;        /* prep threads wanted */
    atomic_int prep_abort; /* at the shutdown deadline: queued requests answer 503 */
    /* guards the lists of generation requests (cancel at shutdown) and of
     * all requests (force_end_all); lock order: mu, then a request's mu */
    pthread_mutex_t mu;
    struct srv_req *gen_head, *all_head;
    struct MHD_Response *health_ok; /* shared 200 response of /health */
    struct srv_diag *diag;          /* NULL unless --diagnostics */
    struct gpu_telemetry *gpu;      /* NVML, or NULL (gpu_why says why) */
    char gpu_why[256];
    int32_t engine_threads; /* for the machine-limit measurement */
    bool ipv6;              /* listening on IPv6 (the benchmark's target address) */
    /* logs.c: --log-stats-interval and --slow-request-ms (0: off); the
     * stats line's interval counters (atomics, swapped to zero by the
     * watcher thread, which alone reads and writes log_t_last) */
    double log_stats_s, slow_ms, log_t_last;
    atomic_uint_fast64_t log_n_req, log_n_err, log_n_gen;
    atomic_uint_fast32_t log_ttft[SRV_LOG_BUCKETS], log_itl[SRV_LOG_BUCKETS];
};

typedef enum srv_phase {
    SRV_P_BODY,    /* reading the request body */
    SRV_P_PREP,    /* queued for or running on a prep thread (server.c) */
    SRV_P_WAIT,    /* submitted; waiting for the engine (non-streaming) */
    SRV_P_STREAM,  /* streaming response queued */
    SRV_P_ANSWERED /* a response was queued */
} srv_phase;

enum { SRV_CANCEL_NONE, SRV_CANCEL_CLIENT_GONE, SRV_CANCEL_SHUTDOWN };

typedef struct srv_req {
    pthread_mutex_t mu;
    int refs;
    srv *s;
    struct MHD_Connection *conn;
    srv_route route;
    srv_phase phase;
    double t_start;
    char method[8];     /* for the access line: the request's method, */
    char path[128];     /* its path (no query string; cut), */
    char err_msg[256];  /* and the message of an error answer (cut) */
    int status;         /* HTTP status of the queued response (metrics) */
    const char *origin; /* CORS origin to echo (a string of s->cors or "*"), or NULL */
    strbuf body;
    bool body_too_large;
    /* prep (server.c): in_prep is set by MHD's thread before the request is
     * queued and cleared by the prep thread under mu; deferred is the
     * response made there, queued by MHD's thread after the resume */
    bool in_prep, prep_failed;
    struct srv_req *prep_next;
    struct MHD_Response *deferred;
    unsigned deferred_status;
    /* engine side */
    kiln_served *served;
    uint64_t sched_id;
    bool submitted, suspended, done, mhd_done;
    struct srv_req *gen_prev, *gen_next; /* in s->gen_head while submitted to a scheduler */
    struct srv_req *all_prev, *all_next; /* in s->all_head while MHD holds it */
    bool force_end; /* shutting down: answer 503 / end the stream instead of waiting */
    int fd;         /* the connection's socket (watched for a vanished client) */
    srv_conn *sc;   /* its tracked connection, or NULL */
    bool http11;    /* HTTP/1.1 or later (may be sent an interim 1xx) */
    bool probed;    /* the watcher saw the client's end of stream and probed once */
    bool probe_due; /* a stream's reader writes the probe (an SSE comment) */
    /* why the server cancelled it (SRV_CANCEL_*), read when the engine's
     * DONE says cancelled */
    atomic_int cancel_reason;
    /* generation */
    bool chat, stream, include_usage, role_sent, final_sent;
    char *model_name;
    char id[48];
    int64_t created; /* Unix time of the request */
    int32_t n_prompt;
    double t_tokenize, t_last_token;
    strbuf text; /* generated text not yet formatted (streaming) or all of it */
    strbuf out;  /* formatted bytes waiting to be sent (streaming) */
    size_t out_off;
    kiln_request_stats stats;
    kiln_status status_engine;
    char *error; /* engine's error message (DONE with an error) */
    /* embeddings */
    bool b64;
    float *emb;
    int32_t n_emb, dim;
    int64_t emb_tokens;
    double t_queue, t_emb_tok, t_inference;
} srv_req;

/* Drops one reference; frees r at zero. Thread-safe. */
void srv_req_unref(srv_req *r);

/* Takes r->suspended under r->mu and resumes the connection when it was
 * suspended. Call after making new data available (engine thread). */
void srv_req_wake(srv_req *r);
/* Suspends r's connection unless r->done or data is available (pending
 * says so); call from MHD's callbacks only, with r->mu held. */
void srv_req_suspend_locked(srv_req *r);

/* Queues a response with status (records it for metrics) and the CORS and
 * common headers. Consumes resp (destroys the caller's reference). */
enum MHD_Result srv_respond(srv_req *r, unsigned status, struct MHD_Response *resp);
/* A JSON body (json_dumps'd; steals j) with status. */
enum MHD_Result srv_respond_json(srv_req *r, unsigned status, void *json_t_j);
/* The same with one more response header (name NULL: none). */
enum MHD_Result srv_respond_json_h(srv_req *r, unsigned status, void *json_t_j, const char *name,
                                   const char *value);
/* OpenAI error JSON: {"error": {"message", "type", "param", "code"}}. param
 * and code may be NULL (JSON null). */
enum MHD_Result srv_error(srv_req *r, unsigned status, const char *type, const char *param,
                          const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* 503 server_shutting_down: the server stops before r's answer is ready. */
enum MHD_Result srv_stopped(srv_req *r);
/* Maps an engine status to an HTTP status and error type/code and answers
 * with msg (submit and acquire failures). */
enum MHD_Result srv_error_status(srv_req *r, kiln_status st, const char *msg);

/* Endpoints (api_*.c). Each answers (queues a response) or suspends r and
 * returns MHD_YES. */
enum MHD_Result srv_handle_generate(srv_req *r);   /* chat and completions, after the body */
enum MHD_Result srv_finish_generate(srv_req *r);   /* non-streaming, after DONE */
enum MHD_Result srv_handle_embeddings(srv_req *r); /* after the body */
enum MHD_Result srv_finish_embeddings(srv_req *r); /* after the result */
enum MHD_Result srv_handle_models(srv_req *r);
enum MHD_Result srv_handle_health(srv_req *r);
enum MHD_Result srv_handle_metrics(srv_req *r);

/* Diagnostics (api_diag.c; kiln serve --diagnostics). */
typedef struct srv_diag srv_diag;
kiln_status srv_diag_init(srv *s); /* s->diag; KILN_ERR_NOMEM */
/* Opens GPU telemetry (s->gpu, else s->gpu_why) and registers kiln_gpu_*. */
void srv_gpu_open(srv *s);
void srv_diag_free(srv *s);
/* Measures the machine's limits once (quick mode; after the models load). */
void srv_diag_measure(srv *s, int32_t n_threads);
/* Once a second (called more often by the watcher): the engines' deltas. */
void srv_diag_tick(srv *s);
/* A finished request (on_completed) and an inter-token gap (engine thread). */
void srv_diag_request(srv_req *r, double e2e);
void srv_diag_itl(srv *s, double gap);
/* The work a generation model's steps did since it loaded, estimated from
 * its shapes: FLOPs (2 per matrix weight per token run) and bytes read
 * (every weight once per step, and each decoded sequence its KV positions).
 * Cumulative; for kiln_engine_estimated_* and the diagnostics window. */
void srv_est_work(const kiln_model_desc *d, const kiln_sched_state *st, double *flops,
                  double *bytes);
enum MHD_Result srv_handle_diag_perf(srv_req *r);
/* POST /diagnostics/benchmark: blocks its prep thread for the run. */
enum MHD_Result srv_handle_diag_bench(srv_req *r);
/* What another endpoint adds around the same benchmark: begin runs once the
 * body is valid and the benchmark is claimed (no other one runs), before
 * the load; it returns false after answering r itself (*res: its result)
 * to call the run off. end runs after the load, whether or not it
 * succeeded, and returns an object (new reference, or NULL) set as
 * answer[key]. Both on the prep thread that runs the benchmark. */
typedef struct srv_bench_hooks {
    bool (*begin)(srv_req *r, void *ud, enum MHD_Result *res);
    struct json_t *(*end)(srv_req *r, void *ud); /* jansson json_t */
    const char *key;
    void *ud;
} srv_bench_hooks;
/* The benchmark of POST /diagnostics/benchmark - its body, limits, 409 and
 * answer - with h's additions (NULL: none). */
enum MHD_Result srv_diag_bench_run(srv_req *r, const srv_bench_hooks *h);
/* The verdict over the last window seconds (a static string), or NULL
 * without --diagnostics. */
const char *srv_diag_verdict(srv *s, double window);
enum MHD_Result srv_handle_diag_bottleneck(srv_req *r);

/* The HTTP profiler (api_prof.c; with --diagnostics): trace sessions armed
 * over HTTP and counted in engine steps through the scheduler's step hook
 * (obs/trace.h); finished traces kept in memory. One srv per process has
 * it (the hook is global). */
kiln_status srv_prof_init(srv *s);           /* KILN_ERR_NOMEM */
void srv_prof_free(srv *s);                  /* ends a session, drops the traces */
void srv_prof_tick(srv *s);                  /* watcher thread: stores a finished trace */
enum MHD_Result srv_handle_prof(srv_req *r); /* the SRV_R_PROF_* routes */
/* POST /diagnostics/profiler/benchmark-with-profiling: srv_diag_bench_run
 * with a profiler session recording the load (its prep thread). */
enum MHD_Result srv_handle_prof_bench(srv_req *r);

/* Logs (logs.c): the access line of a finished request (on_completed; e2e
 * in seconds), with its slow-request line and count; a generated token and
 * its gap to the previous one (engine thread; gap < 0: the first); the
 * message of an error answer kept for the access line; the stats line
 * when its interval passed (watcher thread, every 100 ms). */
void srv_logs_init(srv *s, const srv_config *c);
void srv_logs_request(srv_req *r, double e2e);
void srv_logs_token(srv *s, double gap);
void srv_logs_error(srv_req *r, const char *msg);
void srv_logs_tick(srv *s);

/* Metric families: registered once; the scrape callback reads the registry. */
kiln_status srv_metrics_init(srv *s);
void srv_metrics_free(srv *s);
/* Counts a finished request (route, status, latency). */
void srv_metrics_request(srv *s, srv_route route, int status, double seconds);

/* Acquires the model a request names (NULL: the default one), answering
 * 404/500 itself on failure (returns false then, *res set to the result). */
bool srv_acquire(srv_req *r, const char *name, enum MHD_Result *res);

/* Registers r as a submitted generation request (for cancel at shutdown) /
 * removes it. */
void srv_gen_track(srv_req *r);
void srv_gen_untrack(srv_req *r);

#endif

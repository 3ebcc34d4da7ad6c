/* api_prof.c - the HTTP profiler (kiln serve --diagnostics):
 *
 *   POST /diagnostics/profiler/start?wait_steps=&warmup_steps=&active_steps=
 *        &max_events=&detail=steps|ops
 *   POST /diagnostics/profiler/stop
 *   GET  /diagnostics/profiler/status
 *   GET  /diagnostics/profiler/traces          the list
 *   GET  /diagnostics/profiler/traces/{id}     one Chrome trace (JSON; gzip when
 *                                              the request's Accept-Encoding takes it)
 *   POST /diagnostics/profiler/benchmark-with-profiling?max_events=&detail=
 *        POST /diagnostics/benchmark's run (api_diag.c) recorded as a session
 *
 * A session follows PyTorch's schedule(wait, warmup, active), counted in
 * engine steps (the steps of any model's scheduler and the passes of any
 * embeddings batcher): waiting (wait_steps steps pass), warmup
 * (warmup_steps steps pass: not recorded - the recorder starts when the
 * active phase begins, so nothing warm-up did can leak into the trace),
 * recording (the trace recorder, obs/trace.h, records active_steps steps),
 * then done: the trace is kept in memory (the last PROF_MAX_TRACES). stop
 * ends a session at once (state stopped), keeping what was recorded (an
 * empty trace when it was still waiting).
 *
 * Step boundaries. The schedulers and batchers call the step hook
 * (trace_step_done) on their engine threads at the end of each step they
 * run; prof_step counts it and starts or stops the recorder there, so the
 * phases begin and end exactly at step boundaries. A step counts as
 * recorded when it began after the recorder started (its trace start
 * t_step >= t_rec): the step in flight when a session starts with wait 0 /
 * warmup 0 is not counted (it has no "step" span). While no session is
 * armed the hook costs one relaxed load.
 *
 * Writing. A finished session's trace is made in memory (trace_text) by
 * prof_flush, under the profiler's lock, from the watcher thread (srv_prof_tick) or from the
 * next profiler request, whichever comes first - never from an engine
 * thread. One profiler per process (the hook is global).
 *
 * Compression. A trace asked for with gzip is compressed once, outside the
 * lock (from a copy), and the result kept beside the JSON for later asks.
 *
 * Benchmark with profiling. The session starts recording at once (no wait
 * or warm-up) with no step limit, owned by the benchmark (p->bench_id):
 * starts are 409 until the benchmark ends it, so the trace covers the
 * load's engine steps up to max_events. A stop during the run ends the
 * recording early; the benchmark then answers with what was recorded. */
#include "base/gz.h"
#include "base/log.h"
#include "base/time.h"
#include "obs/trace.h"
#include "obs/trace_doc.h"
#include "server/srv.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { PROF_MAX_TRACES = 8 };
#define PROF_DEFAULT_MAX_EVENTS 200000

typedef enum { P_IDLE, P_WAITING, P_WARMUP, P_RECORDING, P_DONE, P_STOPPED } prof_state;
static const char *const state_names[] = {"idle",      "waiting", "warmup",
                                          "recording", "done",    "stopped"};

struct prof_trace {
    int64_t id;
    double created; /* Unix seconds */
    int64_t steps, events, dropped;
    const char *state; /* done or stopped */
    char *json;
    size_t bytes;
    unsigned char *gz; /* the JSON gzip-compressed, made on the first ask; or NULL */
    size_t gz_bytes;
};

struct prof {
    pthread_mutex_t mu;
    atomic_int armed; /* 1 while waiting, warmup or recording */
    prof_state state;
    int64_t id, next_id;
    int64_t wait, warmup, active, max_events;
    trace_detail detail;
    int64_t steps_seen, recorded, t_rec;
    double created;
    trace_session *ts; /* recording, or finished and not stored yet */
    bool pending;      /* ts is finished: prof_flush stores it */
    trace_stats last;  /* the stats of the last finished session */
    char why[256];     /* why the recorder did not start ("" when it did) */
    struct prof_trace traces[PROF_MAX_TRACES];
    int n_traces;
    int64_t bench_id; /* the session a benchmark-with-profiling owns; 0: none */
};

static struct prof *g_prof;

/* ---- the session (p->mu held) */

static void begin_recording(struct prof *p) {
    trace_opts o = {.max_events = p->max_events, .detail = p->detail};
    kiln_status st = KILN_OK;
    p->t_rec = trace_now();
    p->ts = trace_start(&o, &st);
    if (!p->ts) { /* another session (kiln run --trace in-process, say) */
        snprintf(p->why, sizeof p->why, "the trace recorder did not start: %s",
                 st == KILN_ERR_BUSY ? "another trace session is active" : "out of memory");
        p->state = P_STOPPED;
        p->pending = true;
        atomic_store(&p->armed, 0);
        return;
    }
    p->state = P_RECORDING;
}

/* Ends the session in state final (done or stopped); prof_flush stores it. */
static void finish(struct prof *p, prof_state final) {
    if (p->ts) {
        trace_stop(p->ts);
        trace_get_stats(p->ts, &p->last);
    } else {
        memset(&p->last, 0, sizeof p->last);
    }
    p->state = final;
    p->pending = true;
    atomic_store(&p->armed, 0);
}

/* The step hook (engine threads). */
static void prof_step(int64_t t_step) {
    struct prof *p = g_prof;
    if (!p || !atomic_load_explicit(&p->armed, memory_order_relaxed)) return;
    pthread_mutex_lock(&p->mu);
    if (atomic_load(&p->armed)) {
        p->steps_seen++;
        if (p->state == P_WAITING || p->state == P_WARMUP) {
            if (p->steps_seen >= p->wait + p->warmup)
                begin_recording(p);
            else if (p->steps_seen >= p->wait)
                p->state = P_WARMUP;
        } else if (p->state == P_RECORDING) {
            if (t_step && t_step >= p->t_rec) p->recorded++;
            if (p->recorded >= p->active) finish(p, P_DONE);
        }
    }
    pthread_mutex_unlock(&p->mu);
}

/* The trace's otherData: the session's schedule. */
static json_t *other_data(const struct prof *p) {
    json_t *o = json_pack("{s:s,s:s,s:{s:I,s:I,s:I,s:I,s:I,s:s}}", "version", KILN_VERSION,
                          "source", "kiln serve profiler", "profiler", "id", (json_int_t)p->id,
                          "wait_steps", (json_int_t)p->wait, "warmup_steps", (json_int_t)p->warmup,
                          "active_steps", (json_int_t)p->active, "steps_recorded",
                          (json_int_t)p->recorded, "warmup", "not recorded");
    if (o && p->why[0]) json_object_set_new(o, "error", json_string(p->why));
    if (o && p->bench_id && p->bench_id == p->id) /* steps: the whole run, not active_steps */
        json_object_set_new(json_object_get(o, "profiler"), "schedule",
                            json_string("benchmark-with-profiling"));
    return o;
}

/* A finished session's trace: Chrome trace JSON. */
static char *session_text(struct prof *p, size_t *n) {
    json_t *od = other_data(p);
    char *txt = NULL;
    if (!p->ts) { /* nothing recorded: a valid empty trace */
        json_t *doc =
            json_pack("{s:[],s:s,s:O}", "traceEvents", "displayTimeUnit", "ms", "otherData", od);
        if (doc) {
            json_object_set_new(json_object_get(doc, "otherData"), "max_events",
                                json_integer(p->max_events));
            json_object_set_new(json_object_get(doc, "otherData"), "dropped_events",
                                json_integer(0));
            json_object_set_new(json_object_get(doc, "otherData"), "detail",
                                json_string(p->detail == TRACE_DETAIL_OPS ? "ops" : "steps"));
        }
        txt = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        json_decref(od);
        if (txt) *n = strlen(txt);
        return txt;
    }
    if (!(txt = trace_text(p->ts, od, n))) KILN_LOGW("kiln serve: profiler: %s", kiln_last_error());
    json_decref(od);
    return txt;
}

/* Stores a finished session's trace in the list (p->mu held). */
static void prof_flush(struct prof *p) {
    if (!p->pending) return;
    p->pending = false;
    size_t n = 0;
    char *txt = session_text(p, &n);
    if (p->ts) trace_get_stats(p->ts, &p->last);
    trace_free(p->ts);
    p->ts = NULL;
    if (!txt) return;
    if (p->n_traces == PROF_MAX_TRACES) { /* the oldest goes */
        free(p->traces[0].json);
        free(p->traces[0].gz);
        memmove(p->traces, p->traces + 1, (PROF_MAX_TRACES - 1) * sizeof p->traces[0]);
        p->n_traces--;
    }
    p->traces[p->n_traces++] = (struct prof_trace){.id = p->id,
                                                   .created = p->created,
                                                   .steps = p->recorded,
                                                   .events = p->last.events,
                                                   .dropped = p->last.dropped,
                                                   .state = state_names[p->state],
                                                   .json = txt,
                                                   .bytes = n};
}

/* ---- lifetime */

kiln_status srv_prof_init(srv *s) {
    (void)s;
    struct prof *p = calloc(1, sizeof *p);
    if (!p) return KILN_ERR_NOMEM;
    pthread_mutex_init(&p->mu, NULL);
    p->next_id = 1;
    g_prof = p;
    trace_set_step_hook(prof_step);
    return KILN_OK;
}

void srv_prof_free(srv *s) {
    (void)s;
    struct prof *p = g_prof;
    if (!p) return;
    trace_set_step_hook(NULL);
    g_prof = NULL;
    trace_free(p->ts); /* the engines are gone (the registry is destroyed first) */
    for (int i = 0; i < p->n_traces; i++) free(p->traces[i].json), free(p->traces[i].gz);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void srv_prof_tick(srv *s) {
    (void)s;
    struct prof *p = g_prof;
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    prof_flush(p);
    pthread_mutex_unlock(&p->mu);
}

/* ---- the endpoints */

/* The status object (p->mu held). */
static json_t *status_json(struct prof *p) {
    trace_stats st = p->last;
    if (p->state == P_RECORDING && p->ts) trace_get_stats(p->ts, &st);
    if (p->state == P_IDLE || p->state == P_WAITING || p->state == P_WARMUP)
        memset(&st, 0, sizeof st);
    int64_t left = 0;
    bool bench = p->bench_id && p->bench_id == p->id;
    if (p->state == P_WAITING || p->state == P_WARMUP)
        left = p->wait + p->warmup - p->steps_seen + p->active;
    else if (p->state == P_RECORDING)
        left = p->active - p->recorded;
    json_t *j = json_pack(
        "{s:s,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "state", state_names[p->state], "id",
        p->id ? json_integer(p->id) : json_null(), "steps_seen", (json_int_t)p->steps_seen,
        "steps_remaining", (json_int_t)(left > 0 ? left : 0), "steps_recorded",
        (json_int_t)p->recorded, "events", (json_int_t)st.events, "dropped", (json_int_t)st.dropped,
        "wait_steps", (json_int_t)p->wait, "warmup_steps", (json_int_t)p->warmup, "active_steps",
        (json_int_t)p->active, "detail", p->detail == TRACE_DETAIL_OPS ? "ops" : "steps");
    if (j && p->why[0]) json_object_set_new(j, "error", json_string(p->why));
    if (j && bench) { /* no step limit: it records until the benchmark ends */
        json_object_set_new(j, "benchmark", json_true());
        json_object_set_new(j, "steps_remaining", json_null());
    }
    return j;
}

/* Reads integer query parameter name into *out (def when absent); false
 * when it is not an integer in [lo, hi]. */
static bool int_arg(srv_req *r, const char *name, int64_t def, int64_t lo, int64_t hi,
                    int64_t *out) {
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v || !*v) {
        *out = def;
        return true;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || x < lo || x > hi) return false;
    *out = x;
    return true;
}

/* Starts a session (p->mu held): false after answering 409 (*res) when
 * one is armed or a benchmark owns the profiler. */
static bool arm(srv_req *r, struct prof *p, int64_t w, int64_t wu, int64_t a, int64_t me,
                trace_detail detail, enum MHD_Result *res) {
    prof_flush(p);
    if (atomic_load(&p->armed) || p->bench_id) {
        *res = srv_error(r, 409, "invalid_request_error", NULL, "profiler_busy",
                         p->bench_id ? "profiler session %lld is recording a benchmark "
                                       "(benchmark-with-profiling); try again when it ends"
                                     : "profiler session %lld is %s; stop it first (POST "
                                       "/diagnostics/profiler/stop)",
                         (long long)p->id, state_names[p->state]);
        return false;
    }
    p->id = p->next_id++;
    p->wait = w, p->warmup = wu, p->active = a, p->max_events = me, p->detail = detail;
    p->steps_seen = p->recorded = 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    p->created = (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
    p->why[0] = 0;
    memset(&p->last, 0, sizeof p->last);
    p->state = w > 0 ? P_WAITING : P_WARMUP;
    atomic_store(&p->armed, 1);
    if (w + wu == 0) begin_recording(p); /* now: the next steps are the active ones */
    return true;
}

/* The detail query parameter into *out; false when it is neither steps
 * nor ops. */
static bool detail_arg(srv_req *r, trace_detail *out) {
    const char *d = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "detail");
    *out = d && !strcmp(d, "ops") ? TRACE_DETAIL_OPS : TRACE_DETAIL_STEPS;
    return !d || !*d || !strcmp(d, "ops") || !strcmp(d, "steps");
}

static enum MHD_Result bad_detail(srv_req *r) {
    return srv_error(r, 400, "invalid_request_error", "detail", "invalid_value",
                     "detail must be steps or ops");
}

static enum MHD_Result handle_start(srv_req *r, struct prof *p) {
    int64_t w, wu, a, me;
    static const struct {
        const char *name;
        int64_t def, lo, hi;
    } spec[4] = {{"wait_steps", 0, 0, 1000000000},
                 {"warmup_steps", 0, 0, 1000000000},
                 {"active_steps", 5, 1, 1000000000},
                 {"max_events", PROF_DEFAULT_MAX_EVENTS, 1, 1 << 26}};
    int64_t *dst[4] = {&w, &wu, &a, &me};
    for (int i = 0; i < 4; i++)
        if (!int_arg(r, spec[i].name, spec[i].def, spec[i].lo, spec[i].hi, dst[i]))
            return srv_error(r, 400, "invalid_request_error", spec[i].name, "invalid_value",
                             "%s must be an integer in [%lld, %lld]", spec[i].name,
                             (long long)spec[i].lo, (long long)spec[i].hi);
    trace_detail detail;
    if (!detail_arg(r, &detail)) return bad_detail(r);
    pthread_mutex_lock(&p->mu);
    enum MHD_Result res;
    if (!arm(r, p, w, wu, a, me, detail, &res)) {
        pthread_mutex_unlock(&p->mu);
        return res;
    }
    json_t *j = status_json(p);
    unsigned code = p->state == P_STOPPED && p->why[0] ? 409 : 200;
    pthread_mutex_unlock(&p->mu);
    return srv_respond_json(r, code, j);
}

static enum MHD_Result handle_stop(srv_req *r, struct prof *p) {
    pthread_mutex_lock(&p->mu);
    if (!atomic_load(&p->armed)) {
        pthread_mutex_unlock(&p->mu);
        return srv_error(r, 409, "invalid_request_error", NULL, "profiler_not_active",
                         "no profiler session is waiting or recording");
    }
    finish(p, P_STOPPED);
    prof_flush(p);
    json_t *j = status_json(p);
    pthread_mutex_unlock(&p->mu);
    return srv_respond_json(r, 200, j);
}

static enum MHD_Result handle_list(srv_req *r, struct prof *p) {
    json_t *a = json_array();
    pthread_mutex_lock(&p->mu);
    prof_flush(p);
    for (int i = p->n_traces - 1; i >= 0; i--) { /* newest first */
        const struct prof_trace *t = &p->traces[i];
        json_array_append_new(a, json_pack("{s:I,s:f,s:s,s:I,s:I,s:I,s:I}", "id", (json_int_t)t->id,
                                           "created", t->created, "state", t->state, "steps",
                                           (json_int_t)t->steps, "events", (json_int_t)t->events,
                                           "dropped", (json_int_t)t->dropped, "bytes",
                                           (json_int_t)t->bytes));
    }
    pthread_mutex_unlock(&p->mu);
    return srv_respond_json(r, 200,
                            json_pack("{s:o,s:i}", "traces", a, "max_traces", PROF_MAX_TRACES));
}

/* The index of trace id in the list (p->mu held), or -1. */
static int find_trace(const struct prof *p, int64_t id) {
    for (int i = 0; i < p->n_traces; i++)
        if (p->traces[i].id == id) return i;
    return -1;
}

/* Trace i's gzip form, made once (p->mu held on entry and on return; it is
 * dropped while compressing, so the trace may be gone after: returns its
 * index then, or -1). */
static int trace_gz(struct prof *p, int i) {
    if (p->traces[i].gz) return i;
    int64_t id = p->traces[i].id;
    size_t n = p->traces[i].bytes, gn = 0;
    char *copy = malloc(n ? n : 1);
    if (!copy) return i; /* answered without compression */
    memcpy(copy, p->traces[i].json, n);
    pthread_mutex_unlock(&p->mu);
    unsigned char *gz = kiln_gzip(copy, n, 6, &gn);
    free(copy);
    if (!gz) KILN_LOGW("kiln serve: profiler: %s", kiln_last_error());
    pthread_mutex_lock(&p->mu);
    i = find_trace(p, id);
    if (i >= 0 && !p->traces[i].gz && gz) {
        p->traces[i].gz = gz, p->traces[i].gz_bytes = gn;
        gz = NULL;
    }
    free(gz); /* another ask stored one first, or the trace went */
    return i;
}

static enum MHD_Result handle_get(srv_req *r, struct prof *p) {
    const char *s = r->path + strlen("/diagnostics/profiler/traces/");
    char *end;
    errno = 0;
    long long id = strtoll(s, &end, 10);
    bool ok = !errno && end != s && (!*end || !strcmp(end, "/")) && id > 0;
    bool gzip = ok && srv_accepts_gzip(r), zipped = false;
    struct MHD_Response *resp = NULL;
    pthread_mutex_lock(&p->mu);
    prof_flush(p);
    int i = ok ? find_trace(p, id) : -1;
    if (i >= 0 && gzip) i = trace_gz(p, i);
    if (i >= 0) {
        const struct prof_trace *t = &p->traces[i];
        zipped = gzip && t->gz;
        resp = zipped ? MHD_create_response_from_buffer(t->gz_bytes, t->gz, MHD_RESPMEM_MUST_COPY)
                      : MHD_create_response_from_buffer(t->bytes, t->json, MHD_RESPMEM_MUST_COPY);
    }
    pthread_mutex_unlock(&p->mu);
    if (!resp)
        return srv_error(r, 404, "not_found_error", NULL, "trace_not_found",
                         "no profiler trace %.40s (GET /diagnostics/profiler/traces lists them)",
                         s);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Vary", "Accept-Encoding");
    if (zipped) MHD_add_response_header(resp, "Content-Encoding", "gzip");
    return srv_respond(r, 200, resp);
}

enum MHD_Result srv_handle_prof(srv_req *r) {
    struct prof *p = g_prof;
    if (!p) return srv_error(r, 404, "not_found_error", NULL, "not_found", "no profiler");
    switch (r->route) {
    case SRV_R_PROF_START:
        return handle_start(r, p);
    case SRV_R_PROF_STOP:
        return handle_stop(r, p);
    case SRV_R_PROF_TRACES:
        return handle_list(r, p);
    case SRV_R_PROF_TRACE:
        return handle_get(r, p);
    default: {
        pthread_mutex_lock(&p->mu);
        prof_flush(p);
        json_t *j = status_json(p);
        pthread_mutex_unlock(&p->mu);
        return srv_respond_json(r, 200, j);
    }
    }
}

/* ---- POST /diagnostics/profiler/benchmark-with-profiling
 *
 * Runs on a prep thread (like POST /diagnostics/benchmark): the query is
 * read there, from the suspended connection, whose headers MHD no longer
 * changes. */

#define PROF_BENCH_SUMMARY_SPANS 12

struct prof_bench {
    struct prof *p;
    int64_t max_events;
    trace_detail detail;
    int64_t id; /* the session, once begin armed it */
};

static bool bench_begin(srv_req *r, void *ud, enum MHD_Result *res) {
    struct prof_bench *b = ud;
    struct prof *p = b->p;
    pthread_mutex_lock(&p->mu);
    /* no step limit (the start's largest): the benchmark's end stops it */
    bool ok = arm(r, p, 0, 0, 1000000000, b->max_events, b->detail, res);
    if (ok && p->state == P_STOPPED) { /* the recorder did not start */
        *res = srv_error(r, 409, "invalid_request_error", NULL, "profiler_busy", "%s", p->why);
        ok = false;
    }
    if (ok) b->id = p->bench_id = p->id;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

static struct json_t *bench_end(srv_req *r, void *ud) {
    (void)r;
    struct prof_bench *b = ud;
    struct prof *p = b->p;
    pthread_mutex_lock(&p->mu);
    if (p->id == b->id && atomic_load(&p->armed)) finish(p, P_DONE);
    prof_flush(p);
    p->bench_id = 0;
    int i = find_trace(p, b->id);
    char *text = NULL;
    size_t n = 0;
    json_t *j;
    if (i < 0) {
        j = json_pack("{s:I,s:s}", "trace_id", (json_int_t)b->id, "error",
                      "the trace could not be made (out of memory)");
    } else {
        const struct prof_trace *t = &p->traces[i];
        char url[96];
        snprintf(url, sizeof url, "/diagnostics/profiler/traces/%lld", (long long)t->id);
        j = json_pack(
            "{s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:s,s:I}", "trace_id", (json_int_t)t->id, "trace_url",
            url, "state", t->state, "steps", (json_int_t)t->steps, "events", (json_int_t)t->events,
            "dropped", (json_int_t)t->dropped, "max_events", (json_int_t)b->max_events, "detail",
            b->detail == TRACE_DETAIL_OPS ? "ops" : "steps", "bytes", (json_int_t)t->bytes);
        if ((text = malloc(t->bytes + 1))) memcpy(text, t->json, t->bytes), n = t->bytes;
    }
    pthread_mutex_unlock(&p->mu);
    /* the summary, as kiln trace summary reads it (outside the lock) */
    trace_doc doc;
    if (j && text && trace_doc_parse(&doc, text, n, "the profile") == KILN_OK) {
        json_object_set_new(j, "summary", trace_doc_summary_json(&doc, PROF_BENCH_SUMMARY_SPANS));
        trace_doc_free(&doc);
    } else if (j && text) {
        json_object_set_new(j, "summary_error", json_string(kiln_last_error()));
    }
    free(text);
    return j;
}

enum MHD_Result srv_handle_prof_bench(srv_req *r) {
    struct prof *p = g_prof;
    if (!p) return srv_error(r, 404, "not_found_error", NULL, "not_found", "no profiler");
    struct prof_bench b = {.p = p};
    if (!int_arg(r, "max_events", PROF_DEFAULT_MAX_EVENTS, 1, 1 << 26, &b.max_events))
        return srv_error(r, 400, "invalid_request_error", "max_events", "invalid_value",
                         "max_events must be an integer in [1, %d]", 1 << 26);
    if (!detail_arg(r, &b.detail)) return bad_detail(r);
    srv_bench_hooks h = {.begin = bench_begin, .end = bench_end, .key = "profile", .ud = &b};
    return srv_diag_bench_run(r, &h);
}

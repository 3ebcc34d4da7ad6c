/* loadgen.c - kiln bench's load engine: one thread drives every request
 * through libcurl's multi interface in socket-action mode over epoll (no
 * thread per client, so thousands of concurrent streams cost one fd each).
 * Arrivals of the open loop are timed by a timerfd with nanosecond
 * deadlines, and the loop polls instead of sleeping in the last spin_ns
 * before each; the closed loop starts a client's next request from the
 * completion of its last. Each record also gets the tool's own share of its
 * latency (overhead_ms), so reports can say how much of a latency was ours.
 *
 * Invariants: a record is appended when its request is scheduled and its
 * t_sched never changes (latency is counted from it, so a server that
 * falls behind an open-loop schedule shows it: no coordinated omission);
 * every request added to the multi handle is finished exactly once, by
 * curl's completion message or by the hard stop; the loop never waits past
 * the hard stop (bound + timeout + 2 s).
 */
#include "bench/bench.h"
#include "base/status.h"
#include "base/time.h"

#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define MAX_BODY (64u << 20) /* a longer non-stream answer is a bad response */

typedef struct engine engine;

typedef struct req {
    CURL *easy;
    engine *e;
    size_t rec; /* index into e->r->recs */
    bool stream, bad, saw_event, status_checked, http_error;
    int64_t t_last; /* last content event (ns, relative) */
    int64_t t_in;   /* when the loop woke up to read this request's last bytes */
    bench_sse sse;
    char *body; /* non-stream answer */
    size_t body_len, body_cap;
    struct req *next_free;
} req;

struct engine {
    const bench_run_opts *o;
    const bench_workload *w;
    bench_run *r;
    CURLM *multi;
    int epfd, tfd;
    struct curl_slist *hdrs;
    int64_t t0;            /* absolute ns of the run's start */
    int64_t curl_deadline; /* relative ns when curl wants a timeout call; -1 */
    req *free_reqs;
    int64_t t_woke; /* when the loop last returned from epoll_wait */
    req **all;      /* every req made, to free them */
    size_t n_all, cap_all;
    uint64_t n_sched, target; /* scheduled so far; warmup + n_requests */
    int64_t t_measure;        /* t_sched of the first measured request; -1 */
    int64_t next_arrival;     /* open loop */
    int64_t spin_ns;          /* poll instead of sleeping this close to an arrival */
    uint64_t rng;
    int in_flight;
    bool sched_over; /* no more requests will be scheduled */
    int64_t t_hard;  /* hard stop (relative ns), set when sched_over */
    bool failed;     /* out of memory inside a callback */
    /* progress */
    int64_t t_prog;
    uint64_t done, errors, prog_done, prog_tokens, tokens;
    bool tty;
};

static int64_t rel_now(const engine *e) {
    return kiln_now_ns() - e->t0;
}

long bench_raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max;
        if (!setrlimit(RLIMIT_NOFILE, &want)) rl = want;
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1L << 30 : (long)rl.rlim_cur;
}

/* ---- curl callbacks ------------------------------------------------------ */

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
    engine *e = userp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev = {.data.fd = s};
    if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
    if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, s, &ev) && errno == ENOENT)
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, s, &ev);
    return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp) {
    engine *e = userp;
    e->curl_deadline = timeout_ms < 0 ? -1 : rel_now(e) + (int64_t)timeout_ms * 1000000;
    return 0;
}

static void on_event(void *ud, const bench_sse_event *ev) {
    req *q = ud;
    bench_record *rec = &q->e->r->recs[q->rec];
    q->saw_event = true;
    if (ev->bad) q->bad = true;
    if (ev->prompt_tokens >= 0) rec->in_tokens = ev->prompt_tokens, rec->usage = true;
    if (ev->completion_tokens >= 0) rec->out_tokens = ev->completion_tokens, rec->usage = true;
    if (!ev->content_len) return;
    int64_t now = rel_now(q->e);
    if (rec->t_first < 0) {
        rec->t_first = now;
    } else {
        double gap = (double)(now - q->t_last) * 1e-6;
        rec->itl_sum_ms += gap;
        if (gap > rec->itl_max_ms) rec->itl_max_ms = gap;
        if (!rec->warmup) {
            hist_record(&q->e->r->itl, gap);
            q->e->r->itl_sumsq += gap * gap;
        }
    }
    q->t_last = now;
    rec->n_chunks++;
    q->e->tokens++;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud) {
    req *q = ud;
    size_t len = size * n;
    q->t_in = q->e->t_woke;
    if (!q->status_checked) {
        long code = 0;
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
        q->status_checked = true;
        q->http_error = code >= 400;
    }
    if (q->stream && !q->http_error) {
        if (!bench_sse_feed(&q->sse, p, len, on_event, q)) q->e->failed = true;
        return len;
    }
    if (q->body_len + len > MAX_BODY) return 0; /* CURLE_WRITE_ERROR: bad response */
    if (q->body_len + len + 1 > q->body_cap) {
        size_t cap = q->body_cap ? q->body_cap : 4096;
        while (cap < q->body_len + len + 1) cap *= 2;
        char *nb = realloc(q->body, cap);
        if (!nb) return 0;
        q->body = nb;
        q->body_cap = cap;
    }
    memcpy(q->body + q->body_len, p, len);
    q->body_len += len;
    return len;
}

/* ---- requests ------------------------------------------------------------ */

static req *req_get(engine *e) {
    req *q = e->free_reqs;
    if (q) {
        e->free_reqs = q->next_free;
        return q;
    }
    if (e->n_all == e->cap_all) {
        size_t cap = e->cap_all ? e->cap_all * 2 : 64;
        req **na = realloc(e->all, cap * sizeof *na);
        if (!na) return NULL;
        e->all = na;
        e->cap_all = cap;
    }
    q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->easy = curl_easy_init();
    if (!q->easy) {
        free(q);
        return NULL;
    }
    q->e = e;
    bench_sse_init(&q->sse);
    CURL *c = q->easy;
    curl_easy_setopt(c, CURLOPT_URL, e->o->url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, e->hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(c, CURLOPT_PRIVATE, q);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    if (e->o->timeout_s > 0) {
        long ms = (long)ceil(e->o->timeout_s * 1000);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ms);
    }
    e->all[e->n_all++] = q;
    return q;
}

static void req_put(engine *e, req *q) {
    q->next_free = e->free_reqs;
    e->free_reqs = q;
}

static bench_record *new_record(engine *e) {
    bench_run *r = e->r;
    if (r->n_recs == r->cap_recs) {
        size_t cap = r->cap_recs ? r->cap_recs * 2 : 1024;
        bench_record *nr = realloc(r->recs, cap * sizeof *nr);
        if (!nr) return NULL;
        r->recs = nr;
        r->cap_recs = cap;
    }
    return &r->recs[r->n_recs++];
}

/* Whether another request may be scheduled at relative time t. */
static bool may_schedule(engine *e, int64_t t) {
    if (e->sched_over || e->failed) return false;
    bool over = e->n_sched >= e->target;
    if (!over && e->o->duration_s > 0 && e->t_measure >= 0 &&
        t >= e->t_measure + (int64_t)(e->o->duration_s * 1e9))
        over = true;
    if (over) {
        e->sched_over = true;
        double grace = e->o->timeout_s > 0 ? e->o->timeout_s : 60;
        e->t_hard = rel_now(e) + (int64_t)((grace + 2) * 1e9);
    }
    return !over;
}

/* Schedules request number e->n_sched, due at t_sched, and hands it to curl. */
static void launch(engine *e, int64_t t_sched) {
    bench_record *rec = new_record(e);
    req *q = rec ? req_get(e) : NULL;
    if (!q) {
        if (rec) e->r->n_recs--;
        e->failed = true;
        kiln_fail(KILN_ERR_NOMEM, "bench: out of memory starting a request");
        return;
    }
    uint64_t idx = e->n_sched++;
    const bench_body *b = bench_workload_body(e->w, e->o->first_body + idx);
    *rec = (bench_record){.index = idx,
                          .warmup = idx < e->o->warmup,
                          .t_sched = t_sched,
                          .t_first = -1,
                          .t_done = -1,
                          .in_tokens = b->input_tokens,
                          .err = BENCH_OK};
    if (!rec->warmup && e->t_measure < 0) e->t_measure = t_sched;
    q->rec = (size_t)(rec - e->r->recs);
    q->stream = e->w->o.stream && e->w->o.kind != BENCH_EMBEDDINGS;
    q->bad = q->saw_event = q->status_checked = q->http_error = false;
    q->t_last = q->t_in = -1;
    q->body_len = 0;
    bench_sse_reset(&q->sse);
    curl_easy_setopt(q->easy, CURLOPT_POSTFIELDS, b->json);
    curl_easy_setopt(q->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->len);
    rec->t_send = rel_now(e);
    if (curl_multi_add_handle(e->multi, q->easy) != CURLM_OK) {
        rec->t_done = rec->t_send;
        rec->err = BENCH_ERR_NETWORK;
        req_put(e, q);
        return;
    }
    if (++e->in_flight > e->r->max_in_flight) e->r->max_in_flight = e->in_flight;
}

/* Reads a non-stream answer: usage, and whether it has the expected shape. */
static void finish_body(req *q, bench_record *rec) {
    json_t *j = json_loadb(q->body ? q->body : "", q->body_len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(j) || json_object_get(j, "error")) {
        q->bad = true;
    } else {
        json_t *u = json_object_get(j, "usage");
        json_t *pt = json_object_get(u, "prompt_tokens"),
               *ct = json_object_get(u, "completion_tokens");
        if (json_is_integer(pt)) rec->in_tokens = json_integer_value(pt), rec->usage = true;
        if (json_is_integer(ct)) rec->out_tokens = json_integer_value(ct), rec->usage = true;
        json_t *data = json_object_get(j, "data"), *choices = json_object_get(j, "choices");
        if (q->e->w->o.kind == BENCH_EMBEDDINGS) {
            int per = q->e->w->o.inputs_per_request > 0 ? q->e->w->o.inputs_per_request : 1;
            if (!json_is_array(data) || json_array_size(data) != (size_t)per) q->bad = true;
        } else if (!json_is_array(choices) || !json_array_size(choices)) {
            q->bad = true;
        }
    }
    json_decref(j);
}

static bench_err err_of_curl(CURLcode rc) {
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return BENCH_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return BENCH_ERR_TIMEOUT;
    case CURLE_WRITE_ERROR:
        return BENCH_ERR_BAD_RESPONSE;
    default:
        return BENCH_ERR_NETWORK;
    }
}

static void finish(engine *e, req *q, CURLcode rc, bool cancelled) {
    bench_record *rec = &e->r->recs[q->rec];
    rec->t_done = rel_now(e);
    long code = 0;
    curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
    rec->http_status = (int)code;
    curl_off_t pre = 0, conn = 0;
    curl_easy_getinfo(q->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
    curl_easy_getinfo(q->easy, CURLINFO_CONNECT_TIME_T, &conn);
    rec->overhead_ms = (double)(rec->t_send - rec->t_sched) * 1e-6 +
                       (pre > conn ? (double)(pre - conn) * 1e-3 : 0) +
                       (q->t_in >= 0 ? (double)(rec->t_done - q->t_in) * 1e-6 : 0);
    if (cancelled) {
        rec->err = BENCH_ERR_TIMEOUT;
    } else if (rc != CURLE_OK) {
        rec->err = err_of_curl(rc);
    } else if (code >= 500) {
        rec->err = BENCH_ERR_HTTP_5XX;
    } else if (code >= 400) {
        rec->err = BENCH_ERR_HTTP_4XX;
    } else {
        if (!q->stream)
            finish_body(q, rec);
        else if (!q->saw_event)
            q->bad = true;
        if (code < 200 || code >= 300 || q->bad) rec->err = BENCH_ERR_BAD_RESPONSE;
    }
    if (!rec->usage && q->stream) rec->out_tokens = rec->n_chunks;
    curl_multi_remove_handle(e->multi, q->easy);
    req_put(e, q);
    e->in_flight--;
    if (!rec->warmup) {
        e->done++;
        if (rec->err) e->errors++;
    }
    /* closed loop: this client goes on */
    if (!cancelled && e->o->mode == BENCH_CLOSED) {
        int64_t now = rel_now(e);
        if (may_schedule(e, now)) launch(e, now);
    }
}

static void drain_done(engine *e) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(e->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        req *q = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
        finish(e, q, m->data.result, false);
    }
}

/* ---- scheduling ---------------------------------------------------------- */

static int64_t next_gap_ns(engine *e) {
    double mean = 1e9 * (e->o->burst > 1 ? e->o->burst : 1) / e->o->rate;
    if (!e->o->poisson) return (int64_t)mean;
    uint64_t z = (e->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    double u = ((double)(z >> 11) + 0.5) * 0x1p-53; /* (0, 1) */
    return (int64_t)(-log(u) * mean);
}

/* Open loop: launches every arrival due by now, hands them to curl at once
 * (so they are written before the loop sleeps again) and arms the timer
 * spin_ns before the next arrival; the main loop polls without sleeping
 * from then on, so timer wake-up latency (~70 us in this VM) does not
 * delay the send; 100 us costs ~3% of a core at 1000 arrivals/s. */
static void open_arrivals(engine *e) {
    int64_t now = rel_now(e);
    bool launched = false;
    while (e->next_arrival <= now && !e->sched_over) {
        for (int k = 0; k < (e->o->burst > 1 ? e->o->burst : 1); k++)
            if (may_schedule(e, e->next_arrival)) launch(e, e->next_arrival), launched = true;
        e->next_arrival += next_gap_ns(e);
    }
    if (launched && e->curl_deadline >= 0 && rel_now(e) >= e->curl_deadline) {
        int running;
        e->curl_deadline = -1;
        curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    if (e->sched_over) return;
    struct itimerspec its = {0};
    int64_t at = e->t0 + e->next_arrival - e->spin_ns;
    its.it_value.tv_sec = at / 1000000000;
    its.it_value.tv_nsec = at % 1000000000;
    timerfd_settime(e->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void progress(engine *e, bool final) {
    int64_t now = rel_now(e);
    int64_t every = e->tty ? 1000000000 : 5000000000;
    if (!e->o->progress || (!final && now - e->t_prog < every)) return;
    double dt = (double)(now - e->t_prog) * 1e-9;
    if (dt <= 0) dt = 1e-9;
    double rps = (double)(e->done - e->prog_done) / dt;
    double tps = (double)(e->tokens - e->prog_tokens) / dt;
    fprintf(stderr,
            "%s[bench] %6.1fs  done %llu  errors %llu  in flight %d  %.1f req/s  %.0f tok/s%s",
            e->tty ? "\r\033[K" : "", (double)now * 1e-9, (unsigned long long)e->done,
            (unsigned long long)e->errors, e->in_flight, rps, tps, e->tty && !final ? "" : "\n");
    fflush(stderr);
    e->t_prog = now;
    e->prog_done = e->done;
    e->prog_tokens = e->tokens;
}

/* ---- the run --------------------------------------------------------------- */

static kiln_status check_opts(const bench_run_opts *o, const bench_workload *w) {
    if (!o->url || !*o->url) return kiln_fail(KILN_ERR_INVALID_ARG, "bench: no URL");
    if (!w || !w->n_bodies) return kiln_fail(KILN_ERR_INVALID_ARG, "bench: empty workload");
    if (o->mode == BENCH_CLOSED && o->concurrency < 1)
        return kiln_fail(KILN_ERR_INVALID_ARG, "bench: concurrency %d < 1", o->concurrency);
    if (o->mode == BENCH_OPEN && !(o->rate > 0))
        return kiln_fail(KILN_ERR_INVALID_ARG, "bench: rate %g is not positive", o->rate);
    if (o->n_requests == 0 && !(o->duration_s > 0))
        return kiln_fail(KILN_ERR_INVALID_ARG, "bench: neither a request count nor a duration");
    return KILN_OK;
}

static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static kiln_status engine_init(engine *e) {
    static bool curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT))
            return kiln_fail(KILN_ERR_INTERNAL, "bench: curl_global_init failed");
        curl_ready = true;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    e->multi = curl_multi_init();
    if (e->epfd < 0 || e->tfd < 0 || !e->multi)
        return kiln_fail(KILN_ERR_INTERNAL, "bench: cannot set up epoll/timerfd/curl: %s",
                         strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = e->tfd};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->tfd, &ev))
        return kiln_fail(KILN_ERR_INTERNAL, "bench: epoll_ctl: %s", strerror(errno));
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    long conc = e->o->mode == BENCH_CLOSED ? e->o->concurrency : 1024;
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, conc < 64 ? 64L : conc);
    if (e->o->max_connections > 0)
        curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)e->o->max_connections);
    e->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    e->hdrs = curl_slist_append(e->hdrs, "Expect:"); /* no 100-continue round trip */
    if (e->o->api_key && *e->o->api_key) {
        char h[1024];
        snprintf(h, sizeof h, "Authorization: Bearer %s", e->o->api_key);
        e->hdrs = curl_slist_append(e->hdrs, h);
    }
    if (!e->hdrs) return kiln_fail(KILN_ERR_NOMEM, "bench: out of memory");
    return KILN_OK;
}

static void engine_free(engine *e) {
    for (size_t i = 0; i < e->n_all; i++) {
        if (e->multi) curl_multi_remove_handle(e->multi, e->all[i]->easy);
        curl_easy_cleanup(e->all[i]->easy);
        bench_sse_free(&e->all[i]->sse);
        free(e->all[i]->body);
        free(e->all[i]);
    }
    free(e->all);
    if (e->multi) curl_multi_cleanup(e->multi);
    curl_slist_free_all(e->hdrs);
    if (e->epfd >= 0) close(e->epfd);
    if (e->tfd >= 0) close(e->tfd);
}

/* Finishes every request still in flight at the hard stop. */
static void cancel_all(engine *e) {
    for (size_t i = 0; i < e->n_all; i++) {
        req *q = e->all[i];
        bool busy = true;
        for (req *f = e->free_reqs; f && busy; f = f->next_free) busy = f != q;
        if (busy) {
            finish(e, q, CURLE_OPERATION_TIMEDOUT, true);
            e->r->n_cancelled++;
        }
    }
}

kiln_status bench_run_load(const bench_run_opts *o, const bench_workload *w, bench_run *r) {
    memset(r, 0, sizeof *r);
    hist_init(&r->itl);
    kiln_status st = check_opts(o, w);
    if (st) return st;
    engine e = {.o = o,
                .w = w,
                .r = r,
                .epfd = -1,
                .tfd = -1,
                .curl_deadline = -1,
                .t_measure = -1,
                .rng = o->seed ? o->seed : 0x62656e6368};
    e.target = o->n_requests ? o->warmup + o->n_requests : UINT64_MAX;
    e.spin_ns = o->spin_us >= 0 ? (int64_t)o->spin_us * 1000 : 100000;
    e.tty = isatty(2);
    if ((st = engine_init(&e))) goto fail;
    /* the default 50 us timer slack would make every arrival late */
    int old_slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    double cpu0 = cpu_now();
    e.t0 = kiln_now_ns();
    if (o->mode == BENCH_CLOSED) {
        for (int c = 0; c < o->concurrency && may_schedule(&e, 0); c++) launch(&e, 0);
    } else {
        open_arrivals(&e);
    }
    struct epoll_event evs[256];
    while (!e.failed) {
        int64_t now = rel_now(&e);
        if (o->stop && *o->stop && !(e.sched_over && e.t_hard <= now)) {
            e.sched_over = true; /* interrupted: stop now, keep what was measured */
            e.t_hard = now;
        }
        if (e.sched_over && e.in_flight == 0) break;
        if (e.sched_over && now >= e.t_hard) {
            cancel_all(&e);
            break;
        }
        int64_t wait = 1000000000; /* progress tick */
        if (e.curl_deadline >= 0 && e.curl_deadline - now < wait) wait = e.curl_deadline - now;
        if (e.sched_over && e.t_hard - now < wait) wait = e.t_hard - now;
        bool open = o->mode == BENCH_OPEN && !e.sched_over;
        if (open && e.next_arrival - now <= e.spin_ns) wait = 0; /* due soon: poll */
        int wait_ms = wait <= 0 ? 0 : (int)((wait + 999999) / 1000000);
        int n = epoll_wait(e.epfd, evs, 256, wait_ms);
        if (n < 0 && errno != EINTR) {
            st = kiln_fail(KILN_ERR_INTERNAL, "bench: epoll_wait: %s", strerror(errno));
            break;
        }
        int running;
        e.t_woke = rel_now(&e);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == e.tfd) {
                uint64_t ticks;
                if (read(e.tfd, &ticks, sizeof ticks) < 0) { /* spurious: nothing due */
                }
                continue;
            }
            int flags = 0;
            if (evs[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
            curl_multi_socket_action(e.multi, evs[i].data.fd, flags, &running);
        }
        if (e.curl_deadline >= 0 && rel_now(&e) >= e.curl_deadline) {
            e.curl_deadline = -1;
            curl_multi_socket_action(e.multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        drain_done(&e);
        if (open && !e.sched_over && rel_now(&e) >= e.next_arrival) open_arrivals(&e);
        progress(&e, false);
    }
    if (e.failed && !st) st = kiln_fail(KILN_ERR_NOMEM, "bench: out of memory during the run");
    r->t_end = rel_now(&e);
    r->cpu_s = cpu_now() - cpu0;
    if (old_slack > 0) prctl(PR_SET_TIMERSLACK, (unsigned long)old_slack, 0, 0, 0);
    if (e.tty || e.done) progress(&e, true);
fail:
    engine_free(&e);
    return st;
}

void bench_run_free(bench_run *r) {
    free(r->recs);
    r->recs = NULL;
    r->n_recs = r->cap_recs = 0;
}

/* ---- one GET ------------------------------------------------------------- */

static size_t get_cb(char *p, size_t size, size_t n, void *ud) {
    char **buf = ud;
    size_t old = *buf ? strlen(*buf) : 0, len = size * n;
    if (old + len > (1u << 20)) return 0;
    char *nb = realloc(*buf, old + len + 1);
    if (!nb) return 0;
    memcpy(nb + old, p, len);
    nb[old + len] = 0;
    *buf = nb;
    return len;
}

json_t *bench_http_get_json(const char *url, const char *api_key, double timeout_s) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return NULL;
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    char *buf = NULL;
    struct curl_slist *h = NULL;
    if (api_key && *api_key) {
        char line[1024];
        snprintf(line, sizeof line, "Authorization: Bearer %s", api_key);
        h = curl_slist_append(h, line);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, get_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1000));
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    json_t *j = NULL;
    if (curl_easy_perform(c) == CURLE_OK && buf) j = json_loads(buf, 0, NULL);
    free(buf);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return j;
}

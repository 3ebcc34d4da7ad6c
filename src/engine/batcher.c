/* batcher.c - kiln.h's kiln_embed_batcher: dynamic batching of embedding
 * requests on one encoder model, served by one engine thread.
 *
 * Submitting threads validate and tokenize their own inputs (errors are
 * synchronous and name the input; tokenization runs in parallel across
 * clients) and allocate the request's answer once (its vectors, rows and
 * token counts), then queue it. The engine thread waits for work; once a
 * request is queued it waits until the oldest has waited max_wait_ms or
 * max_tokens tokens are waiting, then runs passes while there is work.
 *
 * A pass takes texts from the queued requests round-robin in arrival order
 * - one text of each per round, each request's texts in their own order -
 * while they fit max_tokens; a request whose next text does not fit sits
 * out the rest of that pass, and the oldest request's next text always goes
 * (alone when it is longer than max_tokens). The texts are embedded with
 * ONE embed_tokens call on the batcher's kiln_embed_ctx, which has
 * normalize 0 and dim 0 (full, raw vectors), so requests with different dim
 * and normalize share a pass; each text's rows are cut to its request's dim
 * and normalised as kiln_embed would, straight into the request's answer.
 * A request larger than a pass is thus spread over several, and a request
 * queued behind it gets its texts into the very next pass: a small
 * request's latency is bounded by about two passes (the one running when it
 * arrives, then its own) whatever is queued before it. A request's callback
 * runs - outside the mutex - after the pass that embeds its last text.
 * Texts never depend on the pass they land in (embed.c packs whole texts),
 * so a split request's vectors are those of the same texts embedded alone.
 *
 * Invariants: the mutex guards the queue (head/tail, links, queued_texts,
 * queued_tokens), stop, n_batches and compute_bytes; only the engine thread
 * touches the kiln_embed_ctx, the pass list and a queued request's progress
 * (taken, pass_n, done, ...). A request stays queued, partly embedded or
 * not, until the engine thread unlinks it after the pass that finished or
 * failed it, or destroy does after joining the thread; its callback is
 * called exactly once. Between passes every queued request has texts not
 * yet embedded and pass_n 0. queued_texts and queued_tokens count what no
 * pass has taken yet; queued_texts never exceeds max_queue.
 *
 * Trace spans (obs/trace.h; cat "embed"): tokenize on the submitting
 * thread; embed_pass (requests, inputs, tokens) on the engine thread
 * ("embed-batcher"), holding embed.c's embed_batch spans. A pass is this
 * engine's step: it ends with the step hook (trace_step_done), so the HTTP
 * profiler's schedule counts passes as it counts a scheduler's steps.
 */
#include "base/status.h"
#include "base/time.h"
#include "engine/embed.h"
#include "kiln.h"
#include "obs/trace.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_TOKENS 4096
#define DEFAULT_WAIT_MS    2.0
#define DEFAULT_MAX_QUEUE  4096
#define PASS_LIST_INIT     16

/* One submitted request: its texts' tokens end to end, its answer, and how
 * far the passes have got through it. */
struct breq {
    struct breq *next;
    int32_t n;               /* texts */
    int32_t *ids;            /* tokens of every text */
    int64_t *start;          /* text i: ids[start[i] .. start[i + 1]) */
    int32_t *truncated_from; /* per text, 0 when not cut */
    int32_t dim;             /* components kept (the model's width when 0 was asked) */
    int normalize;
    kiln_embed_fn fn;
    void *user;
    double t_submit, t_tokenize;
    kiln_embeddings out; /* the answer: allocated at submission, rows written pass by pass */
    /* the engine thread's (and destroy's, once the thread is joined) */
    int32_t taken;    /* texts 0 .. taken embedded by finished passes */
    int32_t pass_n;   /* texts taken .. taken + pass_n are in the pass being built or run */
    int32_t n_passes; /* passes that embedded some of its texts */
    int32_t last_batch_texts;
    int first_in_batch;
    int done;              /* 1: every text embedded; -1: failed (status, err) */
    kiln_status status;    /* when failed */
    char *err;             /* when failed: the message (NULL: out of memory for it) */
    double t_start, t_end; /* start of its first pass, end of its last */
};

struct kiln_embed_batcher {
    const kiln_model *m;
    kiln_embed_ctx *e;
    kiln_batcher_params p;
    int32_t n_embd;
    int pooled; /* one row per text (else one per token) */
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* work arrived, or stop (CLOCK_MONOTONIC for timed waits) */
    struct breq *head, *tail;
    int32_t queued_texts;
    int64_t queued_tokens;
    int stop;
    uint64_t n_batches;
    uint64_t compute_bytes;
    struct breq **pass; /* the engine thread's: a pass's requests (and, building it, candidates) */
    int32_t pass_cap;
};

kiln_batcher_params kiln_batcher_default_params(void) {
    kiln_batcher_params p = {0};
    p.embed = kiln_embed_default_params();
    p.max_tokens = DEFAULT_MAX_TOKENS;
    p.max_wait_ms = DEFAULT_WAIT_MS;
    p.max_queue = DEFAULT_MAX_QUEUE;
    return p;
}

static void breq_free(struct breq *q) {
    if (!q) return;
    free(q->ids);
    free(q->start);
    free(q->truncated_from);
    free(q->out.data);
    free(q->out.row);
    free(q->out.n_tokens);
    free(q->err);
    free(q);
}

static int64_t breq_tokens(const struct breq *q) {
    return q->start[q->n] - q->start[0];
}

/* Calls q's callback with a failure. */
static void breq_fail(struct breq *q, kiln_status st, const char *msg, int32_t batch_texts) {
    kiln_embed_result r = {.status = st, .error = msg, .batch_texts = batch_texts};
    r.t_tokenize = q->t_tokenize;
    r.n_passes = q->n_passes;
    q->fn(q->user, &r);
}

/* Hands q its answer, complete, through its callback. */
static void breq_deliver(struct breq *q) {
    kiln_embed_result r = {.status = KILN_OK,
                           .emb = &q->out,
                           .n_tokens = breq_tokens(q),
                           .t_queue = q->t_start - q->t_submit,
                           .t_tokenize = q->t_tokenize,
                           .t_inference = q->t_end - q->t_start,
                           .batch_texts = q->last_batch_texts,
                           .first_in_batch = q->first_in_batch,
                           .n_passes = q->n_passes};
    q->fn(q->user, &r);
}

/* Marks q failed by the pass that ran its texts taken .. taken + pass_n
 * (msg: why); the callback comes once it is unlinked. */
static void breq_set_failed(struct breq *q, kiln_status st, const char *msg) {
    char buf[512];
    snprintf(buf, sizeof buf, "embed batcher: inputs %d to %d (of %d): %s", q->taken,
             q->taken + q->pass_n - 1, q->n, msg ? msg : kiln_status_str(st));
    size_t len = strlen(buf);
    if ((q->err = malloc(len + 1))) memcpy(q->err, buf, len + 1);
    q->status = st;
    q->done = -1;
}

/* Writes the rows of q's texts in this pass - texts first .. first +
 * q->pass_n of the pass's result all - into q's answer, cut to its dim and
 * normalised as asked. */
static void breq_store(struct breq *q, const kiln_embeddings *all, int32_t first) {
    for (int32_t k = 0; k < q->pass_n; k++) {
        int32_t i = q->taken + k, j = first + k;
        int64_t src = all->row[j], dst = q->out.row[i];
        int64_t rows = (j + 1 < all->n_texts ? all->row[j + 1] : all->n_rows) - src;
        KILN_ASSERT(all->n_tokens[j] == q->out.n_tokens[i]);
        KILN_ASSERT(rows == (i + 1 < q->n ? q->out.row[i + 1] : q->out.n_rows) - dst);
        for (int64_t r = 0; r < rows; r++)
            embed_finish_row(all->data + (src + r) * all->dim, q->dim, q->normalize,
                             q->out.data + (dst + r) * q->dim);
    }
}

/* Embeds the texts the requests m[0..n_req) took into this pass with ONE
 * embed_tokens call and stores each one's rows; a request whose last text
 * it was is marked done. When a merged call fails, each request's texts
 * run again on their own, so one request's failure is not the others'; a
 * request whose own call fails is marked failed. Called on the engine
 * thread without the mutex. */
static void run_pass(kiln_embed_batcher *b, struct breq *const *m, int32_t n_req) {
    int32_t n_texts = 0;
    int64_t n_tokens = 0;
    for (int32_t i = 0; i < n_req; i++) {
        const struct breq *q = m[i];
        n_texts += q->pass_n;
        n_tokens += q->start[q->taken + q->pass_n] - q->start[q->taken];
    }
    int32_t *ids = malloc((size_t)(n_tokens ? n_tokens : 1) * sizeof *ids);
    int64_t *start = malloc(((size_t)n_texts + 1) * sizeof *start);
    kiln_embeddings *all = NULL;
    kiln_status st;
    TRACE_SCOPE_BEGIN(tp);
    double t0 = kiln_now_s(), t1 = t0;
    if (!ids || !start) {
        st = kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory for a batch of %lld tokens",
                       (long long)n_tokens);
    } else {
        int64_t o = 0;
        int32_t t = 0;
        for (int32_t i = 0; i < n_req; i++) {
            const struct breq *q = m[i];
            int64_t from = q->start[q->taken], to = q->start[q->taken + q->pass_n];
            memcpy(ids + o, q->ids + from, (size_t)(to - from) * sizeof *ids);
            for (int32_t k = 0; k < q->pass_n; k++) start[t++] = o + q->start[q->taken + k] - from;
            o += to - from;
        }
        start[t] = o;
        st = embed_tokens(b->e, ids, start, n_texts, &all, NULL);
        t1 = kiln_now_s();
    }
    free(ids);
    free(start);
    if (tp) {
        trace_arg a[3] = {TRACE_I("requests", n_req), TRACE_I("inputs", n_texts),
                          TRACE_I("tokens", n_tokens)};
        trace_span("embed_pass", "embed", tp, trace_now() - tp, a, 3);
    }
    if (st) {
        kiln_embeddings_free(all);
        if (n_req == 1) {
            breq_set_failed(m[0], st, kiln_last_error());
            return;
        }
        /* the merged call failed (memory, most likely): each request on its own */
        for (int32_t i = 0; i < n_req; i++) run_pass(b, &m[i], 1);
        return;
    }
    uint64_t bytes = embed_ctx_compute_bytes(b->e);
    pthread_mutex_lock(&b->mu);
    b->n_batches++;
    b->compute_bytes = bytes;
    pthread_mutex_unlock(&b->mu);
    int marked = 0;
    int32_t first = 0;
    for (int32_t i = 0; i < n_req; i++) {
        struct breq *q = m[i];
        breq_store(q, all, first);
        first += q->pass_n;
        if (!q->n_passes++) q->t_start = t0;
        q->t_end = t1;
        q->last_batch_texts = n_texts;
        q->taken += q->pass_n;
        q->pass_n = 0;
        if (q->taken < q->n) continue;
        q->done = 1;
        /* per-pass statistics come from one request this pass embedded whole */
        if (q->n_passes == 1 && !marked) q->first_in_batch = marked = 1;
    }
    kiln_embeddings_free(all);
}

/* Builds the next pass (mutex held, a request queued): round-robin over the
 * queued requests in arrival order, one text of each per round, while they
 * fit max_tokens; a request whose next text does not fit is out of this
 * pass. The oldest request's next text always goes. Sets each request's
 * pass_n, takes the texts off the queued counts and lists the pass's
 * requests in b->pass in arrival order; returns how many (at least 1). */
static int32_t pick_pass(kiln_embed_batcher *b) {
    /* candidates: every text takes a token, so at most max_tokens requests */
    int32_t n_act = 0;
    for (struct breq *q = b->head; q && n_act < b->p.max_tokens; q = q->next) {
        if (n_act == b->pass_cap) {
            struct breq **p = realloc(b->pass, (size_t)b->pass_cap * 2 * sizeof *p);
            if (!p) break; /* the others wait for a later pass */
            b->pass = p, b->pass_cap *= 2;
        }
        b->pass[n_act++] = q;
    }
    int32_t n_texts = 0, n_req = 0;
    int64_t used = 0;
    while (n_act > 0) { /* one round; b->pass[0..n_act) keeps those that may take more */
        int32_t kept = 0;
        for (int32_t k = 0; k < n_act; k++) {
            struct breq *q = b->pass[k];
            int32_t i = q->taken + q->pass_n;
            int64_t len = q->start[i + 1] - q->start[i];
            if (n_texts > 0 && used + len > b->p.max_tokens) continue;
            if (!q->pass_n++) n_req++;
            used += len;
            n_texts++;
            if (i + 1 < q->n) b->pass[kept++] = q;
        }
        n_act = kept;
    }
    b->queued_texts -= n_texts;
    b->queued_tokens -= used;
    int32_t k = 0;
    for (struct breq *q = b->head; q && k < n_req; q = q->next)
        if (q->pass_n) b->pass[k++] = q;
    KILN_ASSERT(k == n_req && n_req > 0);
    return n_req;
}

/* Unlinks the requests the last pass finished or failed (mutex held) and
 * returns them as a list in arrival order; a failed one's texts that no
 * pass took leave the queued counts. */
static struct breq *unlink_finished(kiln_embed_batcher *b) {
    struct breq *fin = NULL, **fin_tail = &fin, *last = NULL;
    for (struct breq **pp = &b->head; *pp;) {
        struct breq *q = *pp;
        if (!q->done) {
            last = q;
            pp = &q->next;
            continue;
        }
        *pp = q->next;
        if (q->done < 0) {
            int32_t from = q->taken + q->pass_n;
            b->queued_texts -= q->n - from;
            b->queued_tokens -= q->start[q->n] - q->start[from];
        }
        q->next = NULL;
        *fin_tail = q;
        fin_tail = &q->next;
    }
    b->tail = last;
    return fin;
}

static struct timespec abs_time(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    if (ts.tv_nsec < 0) ts.tv_nsec = 0;
    return ts;
}

/* The engine thread: wait, pick a pass, embed, answer the requests it
 * finished; until stop. */
static void *engine_main(void *arg) {
    kiln_embed_batcher *b = arg;
    trace_thread_name("embed-batcher");
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        if (!b->head) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        if (b->p.max_wait_ms > 0) {
            /* a partly embedded head is old: no wait while it runs */
            double deadline = b->head->t_submit + b->p.max_wait_ms * 1e-3;
            struct timespec ts = abs_time(deadline);
            while (!b->stop && b->queued_tokens < b->p.max_tokens && kiln_now_s() < deadline)
                if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT) break;
            if (b->stop) break;
        }
        int32_t n_req = pick_pass(b);
        pthread_mutex_unlock(&b->mu);
        int64_t t_pass = trace_on() ? trace_now() : 0;
        run_pass(b, b->pass, n_req);
        pthread_mutex_lock(&b->mu);
        struct breq *fin = unlink_finished(b);
        pthread_mutex_unlock(&b->mu);
        while (fin) {
            struct breq *next = fin->next;
            if (fin->done > 0)
                breq_deliver(fin);
            else
                breq_fail(fin, fin->status,
                          fin->err ? fin->err : "embed batcher: a forward pass failed",
                          fin->last_batch_texts);
            breq_free(fin);
            fin = next;
        }
        trace_step_done(t_pass); /* the step observer (the HTTP profiler) */
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

kiln_embed_batcher *kiln_embed_batcher_create(const kiln_model *m, const kiln_batcher_params *p,
                                              kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_batcher_params d = p ? *p : kiln_batcher_default_params();
    int mu_ok = 0, cv_ok = 0;
    kiln_embed_batcher *b = calloc(1, sizeof *b);
    if (!b || !(b->pass = malloc(PASS_LIST_INIT * sizeof *b->pass))) {
        s = kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory");
        goto fail;
    }
    b->pass_cap = PASS_LIST_INIT;
    if (d.max_tokens < 0 || d.max_queue < 0) {
        s = kiln_fail(KILN_ERR_INVALID_ARG,
                      "embed batcher: max_tokens %d and max_queue %d must not be negative",
                      d.max_tokens, d.max_queue);
        goto fail;
    }
    if (!d.max_tokens) d.max_tokens = DEFAULT_MAX_TOKENS;
    if (!d.max_queue) d.max_queue = DEFAULT_MAX_QUEUE;
    if (d.max_wait_ms == 0) d.max_wait_ms = DEFAULT_WAIT_MS;
    if (isnan(d.max_wait_ms)) {
        s = kiln_fail(KILN_ERR_INVALID_ARG, "embed batcher: max_wait_ms is not a number");
        goto fail;
    }
    /* full, raw vectors; each request's dim and normalisation come after */
    d.embed.dim = 0;
    d.embed.normalize = 0;
    d.embed.truncate = 0; /* inputs arrive tokenized and already fitted */
    b->m = m;
    b->p = d;
    if (!(b->e = kiln_embed_ctx_create(m, &d.embed, &s))) goto fail;
    b->n_embd = embed_ctx_n_embd(b->e);
    b->pooled = kiln_embed_pooling(b->e) != KILN_POOLING_NONE;
    /* the buffers for a full pass now, so compute_bytes is known at load;
     * if they do not fit, kiln_embed's halving deals with it at the first pass */
    (void)embed_ctx_reserve(b->e);
    b->compute_bytes = embed_ctx_compute_bytes(b->e);
    pthread_condattr_t ca;
    if (pthread_mutex_init(&b->mu, NULL)) {
        s = kiln_fail(KILN_ERR_NOMEM, "embed batcher: cannot create a mutex");
        goto fail;
    }
    mu_ok = 1;
    if (pthread_condattr_init(&ca)) {
        s = kiln_fail(KILN_ERR_NOMEM, "embed batcher: cannot create a condition variable");
        goto fail;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    cv_ok = !pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!cv_ok) {
        s = kiln_fail(KILN_ERR_NOMEM, "embed batcher: cannot create a condition variable");
        goto fail;
    }
    if (pthread_create(&b->thread, NULL, engine_main, b)) {
        s = kiln_fail(KILN_ERR_NOMEM, "embed batcher: cannot start the engine thread");
        goto fail;
    }
    b->started = 1;
    if (st) *st = KILN_OK;
    return b;
fail:
    if (b) {
        if (cv_ok) pthread_cond_destroy(&b->cv);
        if (mu_ok) pthread_mutex_destroy(&b->mu);
        kiln_embed_ctx_free(b->e);
        free(b->pass);
        free(b);
    }
    if (st) *st = s;
    return NULL;
}

void kiln_embed_batcher_destroy(kiln_embed_batcher *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (b->started) pthread_join(b->thread, NULL);
    /* the thread is gone: what is still queued, partly embedded or not, fails */
    struct breq *q = b->head;
    b->head = b->tail = NULL;
    while (q) {
        struct breq *next = q->next;
        char msg[160];
        if (q->taken)
            snprintf(msg, sizeof msg,
                     "embed batcher: stopping; the request (%d inputs, %d of them embedded) was "
                     "not finished",
                     q->n, q->taken);
        else
            snprintf(msg, sizeof msg,
                     "embed batcher: stopping; the request (%d input%s) was not embedded", q->n,
                     q->n == 1 ? "" : "s");
        kiln_fail(KILN_ERR_BUSY, "%s", msg);
        breq_fail(q, KILN_ERR_BUSY, msg, 0);
        breq_free(q);
        q = next;
    }
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    kiln_embed_ctx_free(b->e);
    free(b->pass);
    free(b);
}

/* Allocates q's answer (q->n, q->start and q->dim set): one row per text
 * when pooled, else one per token; rows and token counts filled in now. */
static kiln_status alloc_answer(struct breq *q, int pooled) {
    kiln_embeddings *o = &q->out;
    o->n_texts = q->n;
    o->dim = q->dim;
    o->row = malloc((size_t)q->n * sizeof *o->row);
    o->n_tokens = malloc((size_t)q->n * sizeof *o->n_tokens);
    if (!o->row || !o->n_tokens)
        return kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory for %d inputs", q->n);
    int64_t rows = 0;
    for (int32_t i = 0; i < q->n; i++) {
        o->row[i] = rows;
        o->n_tokens[i] = (int32_t)(q->start[i + 1] - q->start[i]);
        rows += pooled ? 1 : o->n_tokens[i];
    }
    o->n_rows = rows;
    o->data = malloc((size_t)(rows ? rows : 1) * (size_t)q->dim * sizeof *o->data);
    if (!o->data)
        return kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory for %lld vectors of %d",
                         (long long)rows, q->dim);
    o->truncated_from = q->truncated_from;
    return KILN_OK;
}
/* Validates and tokenizes in[0..n) into a new request (*out). */
static kiln_status make_request(kiln_embed_batcher *b, const kiln_embed_input *in, int32_t n,
                                int truncate, struct breq **out) {
    kiln_status s = KILN_OK;
    int32_t *tmp = NULL;
    size_t tmp_cap = 0, ids_cap = 0;
    TRACE_SCOPE_BEGIN(tt);
    struct breq *q = calloc(1, sizeof *q);
    if (!q) return kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory");
    q->n = n;
    q->start = malloc(((size_t)n + 1) * sizeof *q->start);
    q->truncated_from = calloc((size_t)n, sizeof *q->truncated_from);
    if (!q->start || !q->truncated_from) {
        s = kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory for %d inputs", n);
        goto fail;
    }
    int64_t o = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t need;
        const kiln_embed_input *x = &in[i];
        if ((s = embed_input_tokens(b->e, i, x->text, x->len, x->ids, x->n_ids, truncate, &tmp,
                                    &tmp_cap, &need, &q->truncated_from[i])))
            goto fail;
        if ((size_t)o + need > ids_cap) {
            size_t cap = ids_cap ? ids_cap * 2 : 256;
            while (cap < (size_t)o + need) cap *= 2;
            int32_t *p = realloc(q->ids, cap * sizeof *p);
            if (!p) {
                s = kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory for %zu token ids",
                              cap);
                goto fail;
            }
            q->ids = p, ids_cap = cap;
        }
        memcpy(q->ids + o, tmp, need * sizeof *tmp);
        q->start[i] = o;
        o += (int64_t)need;
    }
    q->start[n] = o;
    free(tmp);
    if (tt) {
        trace_arg a[2] = {TRACE_I("inputs", n), TRACE_I("tokens", o)};
        trace_span("tokenize", "embed", tt, trace_now() - tt, a, 2);
    }
    *out = q;
    return KILN_OK;
fail:
    free(tmp);
    breq_free(q);
    return s;
}

kiln_status kiln_embed_batcher_submit(kiln_embed_batcher *b, const kiln_embed_input *in, int32_t n,
                                      int32_t dim, int normalize, int truncate, kiln_embed_fn fn,
                                      void *user) {
    double t0 = kiln_now_s();
    if (n <= 0 || !in) return kiln_fail(KILN_ERR_INVALID_ARG, "embed batcher: no inputs (%d)", n);
    if (!fn) return kiln_fail(KILN_ERR_INVALID_ARG, "embed batcher: no callback");
    if (dim < 0)
        return kiln_fail(KILN_ERR_INVALID_ARG, "embed batcher: dimension %d is negative", dim);
    if (dim > b->n_embd)
        return kiln_fail(KILN_ERR_RANGE,
                         "embed batcher: dimension %d is larger than the model's %d", dim,
                         b->n_embd);
    if (n > b->p.max_queue)
        return kiln_fail(KILN_ERR_BUSY,
                         "embed batcher: %d inputs are more than the queue holds (%d texts)", n,
                         b->p.max_queue);
    /* a cheap early answer under load; checked again when queueing */
    pthread_mutex_lock(&b->mu);
    int32_t queued = b->queued_texts, stopping = b->stop;
    pthread_mutex_unlock(&b->mu);
    if (stopping) return kiln_fail(KILN_ERR_BUSY, "embed batcher: stopping");
    if (queued + n > b->p.max_queue)
        return kiln_fail(KILN_ERR_BUSY,
                         "embed batcher: queue full (%d texts waiting, at most %d; %d more "
                         "asked); try again later",
                         queued, b->p.max_queue, n);
    struct breq *q = NULL;
    kiln_status s = make_request(b, in, n, truncate, &q);
    if (s) return s;
    q->dim = dim ? dim : b->n_embd;
    if ((s = alloc_answer(q, b->pooled))) {
        breq_free(q);
        return s;
    }
    q->normalize = normalize;
    q->fn = fn;
    q->user = user;
    q->t_submit = t0;
    q->t_tokenize = kiln_now_s() - t0;
    pthread_mutex_lock(&b->mu);
    if (b->stop || b->queued_texts + n > b->p.max_queue) {
        queued = b->queued_texts, stopping = b->stop;
        pthread_mutex_unlock(&b->mu);
        breq_free(q);
        if (stopping) return kiln_fail(KILN_ERR_BUSY, "embed batcher: stopping");
        return kiln_fail(KILN_ERR_BUSY,
                         "embed batcher: queue full (%d texts waiting, at most %d; %d more "
                         "asked); try again later",
                         queued, b->p.max_queue, n);
    }
    if (b->tail)
        b->tail->next = q;
    else
        b->head = q;
    b->tail = q;
    b->queued_texts += n;
    b->queued_tokens += breq_tokens(q);
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return KILN_OK;
}

int32_t kiln_embed_batcher_dim(const kiln_embed_batcher *b) {
    return b->n_embd;
}

void kiln_embed_batcher_get_state(kiln_embed_batcher *b, kiln_batcher_state *out) {
    pthread_mutex_lock(&b->mu);
    out->queued = b->queued_texts;
    out->n_batches = b->n_batches;
    out->compute_bytes = b->compute_bytes;
    pthread_mutex_unlock(&b->mu);
}

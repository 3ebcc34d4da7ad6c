/* batcher.c - kiln.h's kiln_embed_batcher: dynamic batching of embedding
 * requests on one encoder model, served by one engine thread.
 *
 * Submitting threads validate and tokenize their own inputs (errors are
 * synchronous and name the input; tokenization runs in parallel across
 * clients), then queue a request holding its token ids. The engine thread
 * waits for work; once a request is queued it waits until the oldest has
 * waited max_wait_ms or max_tokens tokens are queued, takes whole requests
 * from the front (up to max_tokens tokens, always at least one) and embeds
 * them with ONE embed_tokens call on its kiln_embed_ctx, which has
 * normalize 0 and dim 0 (full, raw vectors), so requests with different dim
 * and normalize share a pass; each request's rows are then cut to its dim
 * and normalised as kiln_embed would, and its callback runs - outside the
 * mutex.
 *
 * Invariants: the mutex guards the queue (head/tail, queued_texts,
 * queued_tokens), stop, n_batches and compute_bytes; only the engine thread
 * touches the kiln_embed_ctx. A request is owned by the queue until the
 * engine thread (or destroy, after the thread is joined) takes it, and its
 * callback is called exactly once. queued_texts never exceeds max_queue.
 */
#include "base/status.h"
#include "base/time.h"
#include "engine/embed.h"
#include "kiln.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_TOKENS 4096
#define DEFAULT_WAIT_MS    2.0
#define DEFAULT_MAX_QUEUE  4096

/* One submitted request: its texts' tokens end to end. */
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
};

struct kiln_embed_batcher {
    const kiln_model *m;
    kiln_embed_ctx *e;
    kiln_batcher_params p;
    int32_t n_embd;
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
    free(q);
}

static int64_t breq_tokens(const struct breq *q) {
    return q->start[q->n] - q->start[0];
}

/* Calls q's callback with a failure. */
static void breq_fail(struct breq *q, kiln_status st, const char *msg, int32_t batch_texts) {
    kiln_embed_result r = {.status = st, .error = msg, .batch_texts = batch_texts};
    r.t_tokenize = q->t_tokenize;
    q->fn(q->user, &r);
}

/* Hands q its rows of the merged result all (texts first .. first + q->n),
 * cut to its dim and normalised as asked, through its callback. */
static void breq_deliver(struct breq *q, const kiln_embeddings *all, int32_t first,
                         const kiln_embed_result *common) {
    kiln_embeddings out = {.n_texts = q->n, .dim = q->dim};
    int64_t row0 = all->row[first];
    int64_t row1 = first + q->n < all->n_texts ? all->row[first + q->n] : all->n_rows;
    out.n_rows = row1 - row0;
    out.data = malloc((size_t)(out.n_rows ? out.n_rows : 1) * (size_t)q->dim * sizeof(float));
    out.row = malloc((size_t)q->n * sizeof *out.row);
    out.n_tokens = malloc((size_t)q->n * sizeof *out.n_tokens);
    if (!out.data || !out.row || !out.n_tokens) {
        kiln_status st = kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory for %lld vectors",
                                   (long long)out.n_rows);
        breq_fail(q, st, kiln_last_error(), common->batch_texts);
        goto done;
    }
    for (int64_t k = 0; k < out.n_rows; k++)
        embed_finish_row(all->data + (row0 + k) * all->dim, q->dim, q->normalize,
                         out.data + k * q->dim);
    for (int32_t i = 0; i < q->n; i++) {
        out.row[i] = all->row[first + i] - row0;
        out.n_tokens[i] = all->n_tokens[first + i];
    }
    out.truncated_from = q->truncated_from;
    kiln_embed_result r = *common;
    r.status = KILN_OK;
    r.emb = &out;
    r.n_tokens = breq_tokens(q);
    r.t_tokenize = q->t_tokenize;
    q->fn(q->user, &r);
done:
    free(out.data);
    free(out.row);
    free(out.n_tokens);
}

/* Runs the requests batch[0..n_req) as one embed_tokens call and answers
 * each (frees them). When a merged call fails, each request runs again on
 * its own. Called on the engine thread without the mutex. */
static void run_batch(kiln_embed_batcher *b, struct breq *const *batch, int32_t n_req) {
    int32_t n_texts = 0;
    int64_t n_tokens = 0;
    for (int32_t i = 0; i < n_req; i++) {
        n_texts += batch[i]->n;
        n_tokens += breq_tokens(batch[i]);
    }
    int32_t *ids = malloc((size_t)(n_tokens ? n_tokens : 1) * sizeof *ids);
    int64_t *start = malloc(((size_t)n_texts + 1) * sizeof *start);
    kiln_embeddings *all = NULL;
    kiln_status st;
    double t0 = kiln_now_s(), t1 = t0;
    if (!ids || !start) {
        st = kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory for a batch of %lld tokens",
                       (long long)n_tokens);
    } else {
        int64_t o = 0;
        int32_t t = 0;
        for (int32_t i = 0; i < n_req; i++) {
            const struct breq *q = batch[i];
            memcpy(ids + o, q->ids, (size_t)breq_tokens(q) * sizeof *ids);
            for (int32_t k = 0; k < q->n; k++) start[t++] = o + q->start[k] - q->start[0];
            o += breq_tokens(q);
        }
        start[t] = o;
        st = embed_tokens(b->e, ids, start, n_texts, &all, NULL);
        t1 = kiln_now_s();
    }
    if (st && n_req > 1) {
        /* the merged call failed (memory, most likely): each request on its
         * own, so one request's failure is not the others' and its message
         * names its own inputs */
        kiln_embeddings_free(all);
        free(ids);
        free(start);
        for (int32_t i = 0; i < n_req; i++) run_batch(b, &batch[i], 1);
        return;
    }
    uint64_t bytes = embed_ctx_compute_bytes(b->e);
    pthread_mutex_lock(&b->mu);
    b->n_batches++;
    b->compute_bytes = bytes;
    pthread_mutex_unlock(&b->mu);
    kiln_embed_result common = {.t_inference = t1 - t0, .batch_texts = n_texts};
    const char *msg = st ? kiln_last_error() : NULL;
    int32_t first = 0;
    for (int32_t i = 0; i < n_req; i++) {
        struct breq *q = batch[i];
        common.t_queue = t0 - q->t_submit;
        common.first_in_batch = i == 0;
        if (st)
            breq_fail(q, st, msg, n_texts);
        else
            breq_deliver(q, all, first, &common);
        first += q->n;
        breq_free(q);
    }
    kiln_embeddings_free(all);
    free(ids);
    free(start);
}

static struct timespec abs_time(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    if (ts.tv_nsec < 0) ts.tv_nsec = 0;
    return ts;
}

/* The engine thread: wait, gather, embed, answer; until stop. */
static void *engine_main(void *arg) {
    kiln_embed_batcher *b = arg;
    int32_t cap = 16;
    struct breq **batch = malloc((size_t)cap * sizeof *batch);
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        if (!b->head) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        if (b->p.max_wait_ms > 0) {
            double deadline = b->head->t_submit + b->p.max_wait_ms * 1e-3;
            struct timespec ts = abs_time(deadline);
            while (!b->stop && b->queued_tokens < b->p.max_tokens && kiln_now_s() < deadline)
                if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT) break;
            if (b->stop) break;
        }
        /* whole requests from the front, up to max_tokens (at least one) */
        int32_t n_req = 0;
        int64_t tokens = 0;
        while (b->head && (n_req == 0 || tokens + breq_tokens(b->head) <= b->p.max_tokens)) {
            if (n_req == cap) {
                struct breq **p = batch ? realloc(batch, (size_t)cap * 2 * sizeof *p) : NULL;
                if (!p) break; /* run what we have; the rest waits for the next turn */
                batch = p, cap *= 2;
            }
            if (!batch) break;
            struct breq *q = b->head;
            b->head = q->next;
            if (!b->head) b->tail = NULL;
            q->next = NULL;
            tokens += breq_tokens(q);
            b->queued_tokens -= breq_tokens(q);
            b->queued_texts -= q->n;
            batch[n_req++] = q;
        }
        if (n_req == 0) { /* no memory even for the batch list: fail the oldest */
            struct breq *q = b->head;
            b->head = q->next;
            if (!b->head) b->tail = NULL;
            b->queued_tokens -= breq_tokens(q);
            b->queued_texts -= q->n;
            pthread_mutex_unlock(&b->mu);
            breq_fail(q, KILN_ERR_NOMEM, "embed batcher: out of memory", 0);
            breq_free(q);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        pthread_mutex_unlock(&b->mu);
        run_batch(b, batch, n_req);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    free(batch);
    return NULL;
}

kiln_embed_batcher *kiln_embed_batcher_create(const kiln_model *m, const kiln_batcher_params *p,
                                              kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_batcher_params d = p ? *p : kiln_batcher_default_params();
    int mu_ok = 0, cv_ok = 0;
    kiln_embed_batcher *b = calloc(1, sizeof *b);
    if (!b) {
        s = kiln_fail(KILN_ERR_NOMEM, "embed batcher: out of memory");
        goto fail;
    }
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
    /* the thread is gone: what is still queued fails */
    struct breq *q = b->head;
    b->head = b->tail = NULL;
    while (q) {
        struct breq *next = q->next;
        char msg[160];
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
    free(b);
}

/* Validates and tokenizes in[0..n) into a new request (*out). */
static kiln_status make_request(kiln_embed_batcher *b, const kiln_embed_input *in, int32_t n,
                                int truncate, struct breq **out) {
    kiln_status s = KILN_OK;
    int32_t *tmp = NULL;
    size_t tmp_cap = 0, ids_cap = 0;
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

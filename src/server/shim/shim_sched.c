/* shim_sched.c - TEMPORARY stand-in for kiln_sched_* (helper "sched" owns
 * the real one in src/engine/), so the server can be tested before it
 * lands. Delete this file when the real scheduler is merged. One request at
 * a time through kiln_generate_tokens on one context; no batching. Uses only
 * kiln.h. */
#include "kiln.h"
#include "base/status.h"
#include "base/time.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct shim_job {
    struct shim_job *next;
    uint64_t id;
    int32_t *ids, n;
    kiln_gen_params p;
    char **stop;
    kiln_logit_bias *bias;
    kiln_sched_fn fn;
    void *user;
    volatile int cancelled;
    double t_submit, t_admit, t_first;
    int32_t n_gen;
} shim_job;

struct kiln_sched {
    const kiln_model *m;
    kiln_ctx *ctx;
    kiln_sched_params p;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    shim_job *head, *tail, *cur;
    int32_t queued;
    uint64_t next_id, steps;
    int stop;
};

kiln_sched_params kiln_sched_default_params(void) {
    kiln_sched_params p = {0};
    p.n_slots = 4;
    p.max_queue = 256;
    p.type_k = p.type_v = KILN_TYPE_F16;
    return p;
}

static int on_tok(void *user, int32_t id, const char *text, size_t len) {
    shim_job *j = user;
    if (j->cancelled) return 1;
    if (id >= 0) {
        if (!j->n_gen++) j->t_first = kiln_now_s();
        kiln_sched_event ev = {KILN_SCHED_TOKEN, id, text, len, KILN_OK, NULL, NULL};
        j->fn(j->user, &ev);
    } else if (len) {
        kiln_sched_event ev = {KILN_SCHED_TOKEN, id, text, len, KILN_OK, NULL, NULL};
        j->fn(j->user, &ev);
    }
    return 0;
}

static void job_free(shim_job *j) {
    for (int32_t i = 0; i < j->p.n_stop; i++) free(j->stop[i]);
    free(j->stop);
    free(j->bias);
    free(j->ids);
    free(j);
}

static void run_job(kiln_sched *s, shim_job *j) {
    kiln_request_stats rs = {0};
    kiln_gen_stats gs = {0};
    kiln_status st = KILN_OK;
    j->t_admit = kiln_now_s();
    if (!j->cancelled) {
        kiln_ctx_reset(s->ctx);
        st = kiln_generate_tokens(s->ctx, j->ids, j->n, &j->p, on_tok, j, &gs);
    }
    double t_end = kiln_now_s();
    rs.n_prompt = j->n;
    rs.n_cached = gs.n_cached;
    rs.n_gen = j->n_gen;
    rs.t_queue = j->t_admit - j->t_submit;
    rs.t_prefill = (j->n_gen ? j->t_first : t_end) - j->t_admit;
    rs.t_first_token = j->n_gen ? j->t_first - j->t_submit : 0;
    rs.t_decode = j->n_gen ? t_end - j->t_first : 0;
    rs.finish = j->cancelled ? KILN_FINISH_CANCELLED : gs.finish;
    kiln_sched_event ev = {KILN_SCHED_DONE, -1, "", 0, st, st ? kiln_last_error() : NULL, &rs};
    j->fn(j->user, &ev);
}

static void *engine(void *arg) {
    kiln_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stop) pthread_cond_wait(&s->cv, &s->mu);
        if (!s->head && s->stop) break;
        shim_job *j = s->head;
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        s->queued--;
        if (s->stop) j->cancelled = 1;
        s->cur = j;
        pthread_mutex_unlock(&s->mu);
        run_job(s, j);
        pthread_mutex_lock(&s->mu);
        s->cur = NULL;
        s->steps++;
        job_free(j);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

kiln_sched *kiln_sched_create(const kiln_model *m, const kiln_sched_params *p, kiln_status *st) {
    kiln_sched *s = calloc(1, sizeof *s);
    kiln_ctx_params cp = kiln_ctx_default_params();
    s->m = m;
    s->p = *p;
    if (!s->p.max_queue) s->p.max_queue = 256;
    if (!s->p.n_slots) s->p.n_slots = 4;
    cp.n_ctx = p->n_ctx;
    cp.n_batch = p->n_batch;
    cp.n_threads = p->n_threads;
    if (!(s->ctx = kiln_ctx_create(m, &cp, st))) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_create(&s->th, NULL, engine, s);
    if (st) *st = KILN_OK;
    return s;
}

void kiln_sched_destroy(kiln_sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    if (s->cur) s->cur->cancelled = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    kiln_ctx_free(s->ctx);
    free(s);
}

kiln_status kiln_sched_submit(kiln_sched *s, const int32_t *ids, int32_t n,
                              const kiln_gen_params *p, kiln_sched_fn fn, void *user,
                              uint64_t *id) {
    int32_t nctx = kiln_ctx_n_ctx(s->ctx), nv = kiln_model_n_vocab(s->m);
    if (n <= 0) return kiln_fail(KILN_ERR_RANGE, "empty prompt");
    for (int32_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= nv)
            return kiln_fail(KILN_ERR_RANGE, "token %d outside the vocabulary", ids[i]);
    if (n >= nctx)
        return kiln_fail(KILN_ERR_RANGE, "prompt of %d tokens does not fit the context of %d", n,
                         nctx);
    shim_job *j = calloc(1, sizeof *j);
    j->ids = malloc((size_t)n * sizeof *ids);
    memcpy(j->ids, ids, (size_t)n * sizeof *ids);
    j->n = n;
    j->p = *p;
    j->stop = calloc((size_t)p->n_stop + 1, sizeof *j->stop);
    for (int32_t i = 0; i < p->n_stop; i++) j->stop[i] = strdup(p->stop[i]);
    j->p.stop = (const char *const *)j->stop;
    if (p->sampling.n_logit_bias) {
        j->bias = malloc((size_t)p->sampling.n_logit_bias * sizeof *j->bias);
        memcpy(j->bias, p->sampling.logit_bias, (size_t)p->sampling.n_logit_bias * sizeof *j->bias);
    }
    j->p.sampling.logit_bias = j->bias;
    j->fn = fn;
    j->user = user;
    j->t_submit = kiln_now_s();
    pthread_mutex_lock(&s->mu);
    if (s->queued >= s->p.max_queue) {
        pthread_mutex_unlock(&s->mu);
        job_free(j);
        return kiln_fail(KILN_ERR_BUSY, "the queue is full (%d requests)", s->p.max_queue);
    }
    j->id = ++s->next_id;
    if (id) *id = j->id;
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    s->queued++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return KILN_OK;
}

void kiln_sched_cancel(kiln_sched *s, uint64_t id) {
    pthread_mutex_lock(&s->mu);
    if (s->cur && s->cur->id == id) s->cur->cancelled = 1;
    for (shim_job *j = s->head; j; j = j->next)
        if (j->id == id) j->cancelled = 1;
    pthread_mutex_unlock(&s->mu);
}

void kiln_sched_get_state(kiln_sched *s, kiln_sched_state *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    out->n_slots = s->p.n_slots;
    out->busy_slots = s->cur ? 1 : 0;
    out->queued = s->queued;
    out->kv_total = (int64_t)kiln_ctx_n_ctx(s->ctx) * s->p.n_slots;
    out->n_steps = s->steps;
    pthread_mutex_unlock(&s->mu);
}

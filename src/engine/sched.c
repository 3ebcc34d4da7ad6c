/* sched.c - the continuous-batching scheduler of kiln.h (kiln_sched_*): one
 * engine thread serves generation requests on one decoder model, running
 * every busy slot's next token and chunks of the prompts being prefilled in
 * one kiln_decode_batch per step.
 *
 * Threads. The engine thread alone touches the context, the slots' caches,
 * samplers and token memories, and calls the callbacks (never holding the
 * mutex, so a callback may submit or cancel). Client threads only touch the
 * queue, the requests' cancel flags and the published snapshot, all under
 * mu; the engine sleeps on cv when nothing is queued or running.
 *
 * Slots. Slot i is sequence i of the context, claimed for the scheduler's
 * whole life. A slot is busy while req != NULL (written under mu by the
 * engine, so kiln_sched_cancel can find running requests); toks[0..n_toks)
 * mirrors exactly what its KV cache holds (prompt and decoded tokens),
 * also after the request ends, so the next request sharing a prefix with it
 * keeps that prefix (kiln_seq_truncate) and prefills only the rest - always
 * at least the prompt's last token, whose logits start the generation.
 *
 * A step: cancellations and timeouts are collected and queued requests
 * admitted (under mu), requests that ended are finished, then one batch
 * holds one token for each decoding slot and, with the remaining budget of
 * n_batch tokens, prompt chunks of the prefilling slots in admission order.
 * A slot whose logits came back samples, emits its TOKEN event and either
 * finishes (DONE) or decodes that token in the next step. n_batch >= n_slots,
 * so a step always has room for every decoding slot plus one prefill token.
 *
 * A callback may call kiln_sched_submit and kiln_sched_cancel, never
 * kiln_sched_destroy (the engine thread would wait for itself).
 *
 * Timings of a request (kiln_request_stats): the "first generated token" is
 * the first one sampled (even an end-of-generation token that is not
 * delivered); when none was sampled, t_prefill runs to the end and
 * t_first_token and t_decode are 0.
 */
#include "base/status.h"
#include "base/time.h"
#include "engine/genseq.h"
#include "kiln.h"
#include "obs/trace.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A request, from submission to its DONE event. */
struct sched_req {
    uint64_t id;
    int32_t *ids; /* the prompt (owned) */
    int32_t n;
    kiln_gen_params p; /* stop and logit_bias point into the copies below */
    char **stop;       /* p.n_stop strings, each in stop_buf */
    char *stop_buf;
    kiln_logit_bias *bias; /* p.n_logit_bias entries */
    kiln_sched_fn fn;
    void *user;
    double t_submit, deadline; /* deadline 0: none */
    bool cancelled;            /* under mu */
    kiln_finish why;           /* ended while queued: why */
    struct sched_req *next;    /* the queue */
};

struct sched_slot {
    int32_t seq;
    struct sched_req *req; /* written under mu; NULL when free */
    int32_t *toks;         /* n_ctx: the tokens the sequence's cache holds */
    int32_t n_toks;
    int32_t keep;   /* at admission: cached prefix to keep */
    int32_t n_done; /* prompt tokens in the cache */
    bool decoding;  /* next is sampled and waits to be decoded */
    int32_t next;
    uint64_t order; /* admission number: prefill order */
    bool ending;    /* set under mu: finish with end_why before the next step */
    kiln_finish end_why;
    struct genseq g;
    float *logits; /* n_vocab */
    kiln_request_stats st;
    double t_admit, t_first; /* t_first 0: nothing sampled yet */
};

#define SCHED_STEP_RING 256 /* recent step durations kept for percentiles */

struct kiln_sched {
    const kiln_model *m;
    kiln_ctx *c;
    int32_t n_slots, n_ctx, n_batch, max_queue, n_vocab;
    double timeout_s;
    struct sched_slot *slots;
    kiln_seq_batch *items;         /* n_slots: a step's batch */
    struct sched_slot **item_slot; /* the slot of each item */
    struct sched_slot **admit;     /* n_slots: the slots filled in this round */
    uint64_t kv_bytes, compute_bytes;
    uint64_t admitted; /* engine: admissions so far */

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool sync_ok; /* mu and cv initialised */
    /* under mu: */
    struct sched_req *qhead, *qtail;
    int32_t n_queued;
    uint64_t next_id;
    bool stopping;
    int64_t kv_used; /* published after each step and when a request ends */
    uint64_t n_steps;
    /* step statistics (kiln_sched_state): cumulative, published per step */
    double t_busy, t_forward;
    uint64_t n_prefill_tok, n_decode_tok;
    int64_t kv_read; /* KV positions the decode steps read, summed */
    double step_dur[SCHED_STEP_RING];
    /* test hook: KILN_TEST_STEP_DELAY_US adds host time to every step (the
     * diagnostics tests make a host-overhead-bound server with it) */
    long test_delay_us;
    uint64_t step_head; /* steps recorded in step_dur (ring) */
};

kiln_sched_params kiln_sched_default_params(void) {
    return (kiln_sched_params){.n_slots = 4,
                               .n_ctx = 0,
                               .n_batch = 512,
                               .n_threads = 0,
                               .max_queue = 256,
                               .type_k = KILN_TYPE_F16,
                               .type_v = KILN_TYPE_F16,
                               .timeout_s = 0};
}

static void req_free(struct sched_req *r) {
    if (!r) return;
    free(r->ids);
    free(r->stop);
    free(r->stop_buf);
    free(r->bias);
    free(r);
}

/* Hands ev to the request's callback (engine thread, mu not held). */
static void deliver_done(struct sched_req *r, kiln_request_stats *st, const char *text, size_t len,
                         kiln_status status, const char *error) {
    kiln_sched_event ev = {.kind = KILN_SCHED_DONE,
                           .token = -1,
                           .text = text ? text : "",
                           .len = text ? len : 0,
                           .status = status,
                           .error = status ? error : NULL,
                           .stats = st};
    r->fn(r->user, &ev);
}

/* Engine thread, under mu: publishes the positions busy slots hold. */
static void publish_kv(kiln_sched *s) {
    int64_t used = 0;
    for (int32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].req) used += s->slots[i].n_toks;
    s->kv_used = used;
}

/* Ends a request that never reached a slot (cancelled, timed out, stopped). */
static void end_queued(struct sched_req *r, kiln_finish why) {
    kiln_request_stats st = {.n_prompt = r->n, .finish = why};
    st.t_queue = kiln_now_s() - r->t_submit;
    trace_async_end("queued", "request", r->id);
    deliver_done(r, &st, NULL, 0, KILN_OK, NULL);
    req_free(r);
}

/* Ends the slot's request: its DONE event (with the held-back text when it
 * ended well), then the slot is free; its token memory stays. */
static void end_slot(kiln_sched *s, struct sched_slot *sl, kiln_finish why, kiln_status status,
                     const char *error) {
    struct sched_req *r = sl->req;
    double now = kiln_now_s();
    sl->st.finish = why;
    if (sl->t_first > 0) {
        sl->st.t_decode = now - sl->t_first;
    } else {
        sl->st.t_prefill = now - sl->t_admit;
        sl->st.t_first_token = 0;
    }
    if (trace_on()) {
        trace_async_end(sl->t_first > 0 ? "decode" : "prefill", "request", r->id);
        trace_arg a[3] = {TRACE_I("id", r->id), TRACE_I("finish", why),
                          TRACE_I("generated", sl->st.n_gen)};
        trace_instant(why == KILN_FINISH_CANCELLED ? "request_cancelled" : "request_finished",
                      "request", a, 3);
    }
    size_t w = status == KILN_OK && sl->g.stop ? genseq_flush(&sl->g) : 0;
    deliver_done(r, &sl->st, sl->g.out, w, status, error);
    genseq_free(&sl->g);
    pthread_mutex_lock(&s->mu);
    sl->req = NULL;
    sl->ending = false;
    sl->decoding = false;
    publish_kv(s);
    pthread_mutex_unlock(&s->mu);
    req_free(r);
}

/* The number of leading tokens a and b share, at most lim. */
static int32_t common_prefix(const int32_t *a, const int32_t *b, int32_t lim) {
    int32_t k = 0;
    while (k < lim && a[k] == b[k]) k++;
    return k;
}

/* Under mu: the free slot whose remembered tokens share the longest prefix
 * with r's prompt (at most n - 1 tokens: the last is run for its logits),
 * the lowest index on a tie; NULL when every slot is busy. */
static struct sched_slot *pick_slot(kiln_sched *s, const struct sched_req *r) {
    struct sched_slot *best = NULL;
    for (int32_t i = 0; i < s->n_slots; i++) {
        struct sched_slot *sl = &s->slots[i];
        if (sl->req) continue;
        int32_t lim = sl->n_toks < r->n - 1 ? sl->n_toks : r->n - 1;
        int32_t k = common_prefix(sl->toks, r->ids, lim);
        if (!best || k > best->keep) {
            best = sl;
            sl->keep = k;
        }
    }
    return best;
}

/* Engine thread, after admission: the slot keeps its cached prefix and gets
 * its sampler and text state. */
static kiln_status start_slot(kiln_sched *s, struct sched_slot *sl) {
    struct sched_req *r = sl->req;
    if (trace_on()) {
        trace_flow_end("enqueue", r->id);
        trace_async_end("queued", "request", r->id);
        trace_async_begin("prefill", "request", r->id);
    }
    memset(&sl->st, 0, sizeof sl->st);
    sl->t_admit = kiln_now_s();
    sl->t_first = 0;
    sl->st.n_prompt = r->n;
    sl->st.t_queue = sl->t_admit - r->t_submit;
    sl->decoding = false;
    sl->order = s->admitted++;
    kiln_status st = kiln_seq_truncate(s->c, sl->seq, sl->keep);
    if (st) return st;
    sl->n_toks = sl->keep;
    sl->n_done = sl->keep;
    sl->st.n_cached = sl->keep;
    return genseq_init(&sl->g, s->m, &r->p, r->ids, r->n);
}

/* Engine thread: the slot's logits came back; samples, emits, and either
 * ends the request or leaves the token to be decoded next step. */
static void on_logits(kiln_sched *s, struct sched_slot *sl) {
    struct sched_req *r = sl->req;
    if (sl->st.n_gen >= r->p.n_predict) {
        end_slot(s, sl, KILN_FINISH_LENGTH, KILN_OK, NULL);
        return;
    }
    TRACE_SCOPE_BEGIN(tt);
    int32_t id = genseq_sample(&sl->g, sl->logits);
    TRACE_SCOPE_END(tt, "sample", "engine");
    if (sl->t_first == 0) {
        if (trace_on()) {
            trace_async_end("prefill", "request", r->id);
            trace_async_begin("decode", "request", r->id);
        }
        sl->t_first = kiln_now_s();
        sl->st.t_prefill = sl->t_first - sl->t_admit;
        sl->st.t_first_token = sl->t_first - r->t_submit;
    }
    if (r->p.stop_at_eog && kiln_token_is_eog(s->m, id)) {
        end_slot(s, sl, KILN_FINISH_EOG, KILN_OK, NULL);
        return;
    }
    sl->st.n_gen++;
    bool hit = false;
    TRACE_SCOPE_BEGIN(td);
    size_t w = genseq_detok(&sl->g, id, &hit);
    TRACE_SCOPE_END(td, "detokenize", "engine");
    kiln_sched_event ev = {.kind = KILN_SCHED_TOKEN, .token = id, .text = sl->g.out, .len = w};
    TRACE_SCOPE_BEGIN(te);
    r->fn(r->user, &ev);
    TRACE_SCOPE_END(te, "emit", "engine");
    if (hit)
        end_slot(s, sl, KILN_FINISH_STOP, KILN_OK, NULL);
    else if (sl->st.n_gen >= r->p.n_predict)
        end_slot(s, sl, KILN_FINISH_LENGTH, KILN_OK, NULL);
    else if (sl->n_toks >= s->n_ctx)
        end_slot(s, sl, KILN_FINISH_CTX, KILN_OK, NULL);
    else {
        sl->next = id;
        sl->decoding = true;
    }
}

/* Records the trace of a step begun at t_step (0: not tracing): its span
 * and the scheduler's counters. */
static void trace_step(int64_t t_step, int32_t n, uint64_t n_pre, uint64_t n_dec, int64_t kv,
                       int32_t waiting) {
    if (!t_step || !trace_on()) return;
    trace_arg a[4] = {TRACE_I("batch", n), TRACE_I("prefill_tokens", n_pre),
                      TRACE_I("decode_tokens", n_dec), TRACE_I("kv_used", kv)};
    trace_span("step", "engine", t_step, trace_now() - t_step, a, 4);
    trace_arg c[3] = {TRACE_I("waiting", waiting), TRACE_I("running", n), TRACE_I("kv_used", kv)};
    trace_counter("scheduler", c, 3);
}

/* Engine thread: one kiln_decode_batch over the busy slots (see the top of
 * the file), then sampling for each slot that got logits. t_step: the
 * step's trace start (its scheduling included), 0 when not tracing. */
static void run_step(kiln_sched *s, int64_t t_step) {
    double t0 = kiln_now_s();
    int32_t n = 0, budget = s->n_batch;
    for (int32_t i = 0; i < s->n_slots; i++) {
        struct sched_slot *sl = &s->slots[i];
        if (!sl->req || !sl->decoding) continue;
        s->items[n] = (kiln_seq_batch){
            .seq = sl->seq, .tokens = &sl->next, .n_tokens = 1, .logits = sl->logits};
        s->item_slot[n++] = sl;
        budget--;
    }
    uint64_t after = 0; /* prefilling slots in admission order */
    for (bool first = true; budget > 0; first = false) {
        struct sched_slot *pick = NULL;
        for (int32_t i = 0; i < s->n_slots; i++) {
            struct sched_slot *sl = &s->slots[i];
            if (!sl->req || sl->decoding || (!first && sl->order <= after)) continue;
            if (!pick || sl->order < pick->order) pick = sl;
        }
        if (!pick) break;
        after = pick->order;
        int32_t left = pick->req->n - pick->n_done, take = left < budget ? left : budget;
        s->items[n] = (kiln_seq_batch){.seq = pick->seq,
                                       .tokens = pick->req->ids + pick->n_done,
                                       .n_tokens = take,
                                       .logits = take == left ? pick->logits : NULL};
        s->item_slot[n++] = pick;
        budget -= take;
    }
    if (n == 0) return;
    double tf = kiln_now_s();
    TRACE_SCOPE_BEGIN(t_fwd);
    kiln_status st = kiln_decode_batch(s->c, s->items, n);
    TRACE_SCOPE_END(t_fwd, "forward", "engine");
    tf = kiln_now_s() - tf;
    if (st) { /* nothing changed in the cache; the step's requests fail */
        char msg[512];
        snprintf(msg, sizeof msg, "scheduler step of %d sequences failed: %s", n,
                 kiln_last_error());
        for (int32_t i = 0; i < n; i++) end_slot(s, s->item_slot[i], KILN_FINISH_LENGTH, st, msg);
        return;
    }
    uint64_t n_pre = 0, n_dec = 0;
    int64_t kv_read = 0;
    for (int32_t i = 0; i < n; i++) {
        struct sched_slot *sl = s->item_slot[i];
        const kiln_seq_batch *it = &s->items[i];
        if (sl->decoding)
            n_dec += (uint64_t)it->n_tokens, kv_read += sl->n_toks + 1;
        else
            n_pre += (uint64_t)it->n_tokens;
        memcpy(sl->toks + sl->n_toks, it->tokens, (size_t)it->n_tokens * sizeof(int32_t));
        sl->n_toks += it->n_tokens;
        if (!sl->decoding) sl->n_done += it->n_tokens;
    }
    pthread_mutex_lock(&s->mu);
    s->n_steps++;
    publish_kv(s);
    int64_t kv_used = s->kv_used;
    int32_t waiting = s->n_queued;
    pthread_mutex_unlock(&s->mu);
    for (int32_t i = 0; i < n; i++)
        if (s->items[i].logits) on_logits(s, s->item_slot[i]);
    if (s->test_delay_us > 0) {
        struct timespec ts = {s->test_delay_us / 1000000, (s->test_delay_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
    /* the step's statistics include its sampling and callbacks */
    double dur = kiln_now_s() - t0;
    pthread_mutex_lock(&s->mu);
    s->t_busy += dur;
    s->t_forward += tf;
    s->n_prefill_tok += n_pre;
    s->n_decode_tok += n_dec;
    s->kv_read += kv_read;
    s->step_dur[s->step_head++ % SCHED_STEP_RING] = dur;
    pthread_mutex_unlock(&s->mu);
    trace_step(t_step, n, n_pre, n_dec, kv_used, waiting);
    trace_step_done(t_step); /* the step observer (the HTTP profiler) */
}

static bool any_busy(const kiln_sched *s) {
    for (int32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].req) return true;
    return false;
}

static void *engine_main(void *arg) {
    kiln_sched *s = arg;
    struct sched_slot **admit = s->admit;
    trace_thread_name("engine");
    for (;;) {
        struct sched_req *gone = NULL, **gone_end = &gone; /* queued requests that ended */
        int32_t n_admit = 0;
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && !s->qhead && !any_busy(s)) pthread_cond_wait(&s->cv, &s->mu);
        TRACE_SCOPE_BEGIN(t_step);
        bool stop = s->stopping;
        double now = kiln_now_s();
        for (struct sched_req **pp = &s->qhead, *r; (r = *pp);) {
            bool late = r->deadline > 0 && now >= r->deadline;
            if (!stop && !r->cancelled && !late) {
                pp = &r->next;
                continue;
            }
            *pp = r->next;
            s->n_queued--;
            r->why = stop || r->cancelled ? KILN_FINISH_CANCELLED : KILN_FINISH_TIMEOUT;
            r->next = NULL;
            *gone_end = r;
            gone_end = &r->next;
        }
        s->qtail = NULL;
        for (struct sched_req *r = s->qhead; r; r = r->next) s->qtail = r;
        for (int32_t i = 0; i < s->n_slots; i++) {
            struct sched_slot *sl = &s->slots[i];
            if (!sl->req) continue;
            if (stop || sl->req->cancelled) {
                sl->ending = true;
                sl->end_why = KILN_FINISH_CANCELLED;
            } else if (sl->req->deadline > 0 && now >= sl->req->deadline) {
                sl->ending = true;
                sl->end_why = KILN_FINISH_TIMEOUT;
            }
        }
        while (!stop && s->qhead) {
            struct sched_slot *sl = pick_slot(s, s->qhead);
            if (!sl) break;
            sl->req = s->qhead;
            s->qhead = s->qhead->next;
            if (!s->qhead) s->qtail = NULL;
            s->n_queued--;
            sl->req->next = NULL;
            admit[n_admit++] = sl;
        }
        pthread_mutex_unlock(&s->mu);

        while (gone) {
            struct sched_req *r = gone;
            gone = r->next;
            end_queued(r, r->why);
        }
        for (int32_t i = 0; i < s->n_slots; i++) {
            struct sched_slot *sl = &s->slots[i];
            if (sl->req && sl->ending) end_slot(s, sl, sl->end_why, KILN_OK, NULL);
        }
        for (int32_t i = 0; i < n_admit; i++) {
            kiln_status st = start_slot(s, admit[i]);
            if (st) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", kiln_last_error());
                end_slot(s, admit[i], KILN_FINISH_LENGTH, st, msg);
            }
        }
        TRACE_SCOPE_END(t_step, "schedule", "engine");
        if (stop) break;
        run_step(s, t_step);
    }
    return NULL;
}

kiln_sched *kiln_sched_create(const kiln_model *m, const kiln_sched_params *p, kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_sched_params d = p ? *p : kiln_sched_default_params();
    kiln_sched *sc = calloc(1, sizeof *sc);
    if (!sc) {
        s = kiln_fail(KILN_ERR_NOMEM, "scheduler: out of memory");
        goto fail;
    }
    const char *delay = getenv("KILN_TEST_STEP_DELAY_US");
    sc->test_delay_us = delay ? strtol(delay, NULL, 10) : 0;
    if (d.n_slots < 0 || d.max_queue < 0 || !(d.timeout_s >= 0) || d.n_batch < 0) {
        s = kiln_fail(KILN_ERR_RANGE,
                      "scheduler: n_slots %d, n_batch %d, max_queue %d and timeout_s %g must "
                      "not be negative",
                      d.n_slots, d.n_batch, d.max_queue, d.timeout_s);
        goto fail;
    }
    sc->m = m;
    sc->n_slots = d.n_slots ? d.n_slots : 4;
    sc->max_queue = d.max_queue ? d.max_queue : 256;
    sc->timeout_s = d.timeout_s;
    kiln_ctx_params cp = {.n_ctx = d.n_ctx,
                          .n_batch = d.n_batch,
                          .n_threads = d.n_threads,
                          .type_k = d.type_k,
                          .type_v = d.type_v,
                          .n_seq_max = sc->n_slots};
    if (!(sc->c = kiln_ctx_create(m, &cp, &s))) goto fail;
    sc->n_ctx = kiln_ctx_n_ctx(sc->c);
    sc->n_batch = kiln_ctx_n_batch(sc->c);
    sc->n_vocab = kiln_model_n_vocab(m);
    if (sc->n_batch < sc->n_slots) {
        s = kiln_fail(KILN_ERR_RANGE,
                      "scheduler: n_batch %d is smaller than n_slots %d (a step must hold one "
                      "token of every slot)",
                      sc->n_batch, sc->n_slots);
        goto fail;
    }
    kiln_ctx_memory(sc->c, &sc->kv_bytes, &sc->compute_bytes);
    sc->slots = calloc((size_t)sc->n_slots, sizeof *sc->slots);
    sc->items = calloc((size_t)sc->n_slots, sizeof *sc->items);
    sc->item_slot = calloc((size_t)sc->n_slots, sizeof *sc->item_slot);
    sc->admit = calloc((size_t)sc->n_slots, sizeof *sc->admit);
    if (!sc->slots || !sc->items || !sc->item_slot || !sc->admit) goto nomem;
    for (int32_t i = 0; i < sc->n_slots; i++) {
        struct sched_slot *sl = &sc->slots[i];
        if (i > 0 && (s = kiln_seq_create(sc->c, &sl->seq)) != KILN_OK) goto fail;
        sl->toks = malloc((size_t)sc->n_ctx * sizeof *sl->toks);
        sl->logits = malloc((size_t)sc->n_vocab * sizeof *sl->logits);
        if (!sl->toks || !sl->logits) goto nomem;
        sc->compute_bytes +=
            (uint64_t)sc->n_ctx * sizeof(int32_t) + (uint64_t)sc->n_vocab * sizeof(float);
    }
    if (pthread_mutex_init(&sc->mu, NULL)) goto nomem;
    if (pthread_cond_init(&sc->cv, NULL)) {
        pthread_mutex_destroy(&sc->mu);
        goto nomem;
    }
    sc->sync_ok = true;
    if (pthread_create(&sc->thread, NULL, engine_main, sc)) {
        s = kiln_fail(KILN_ERR_NOMEM, "scheduler: cannot start the engine thread");
        goto fail;
    }
    sc->started = true;
    if (st) *st = KILN_OK;
    return sc;
nomem:
    s = kiln_fail(KILN_ERR_NOMEM, "scheduler: out of memory for %d slots", sc->n_slots);
fail:
    kiln_sched_destroy(sc);
    if (st) *st = s;
    return NULL;
}

void kiln_sched_destroy(kiln_sched *s) {
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    if (s->sync_ok) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
    }
    for (int32_t i = 0; s->slots && i < s->n_slots; i++) {
        free(s->slots[i].toks);
        free(s->slots[i].logits);
    }
    free(s->slots);
    free(s->items);
    free(s->item_slot);
    free(s->admit);
    kiln_ctx_free(s->c);
    free(s);
}

/* A copy of p in r: its stop strings and logit bias too. */
static kiln_status copy_params(struct sched_req *r, const kiln_gen_params *p) {
    r->p = *p;
    r->p.stop = NULL;
    r->p.sampling.logit_bias = NULL;
    if (p->n_stop > 0) {
        size_t total = 0;
        for (int32_t i = 0; i < p->n_stop; i++) total += (p->stop[i] ? strlen(p->stop[i]) : 0) + 1;
        r->stop = malloc((size_t)p->n_stop * sizeof *r->stop);
        r->stop_buf = malloc(total);
        if (!r->stop || !r->stop_buf) goto nomem;
        size_t at = 0;
        for (int32_t i = 0; i < p->n_stop; i++) {
            size_t l = p->stop[i] ? strlen(p->stop[i]) : 0;
            if (l) memcpy(r->stop_buf + at, p->stop[i], l);
            r->stop_buf[at + l] = '\0';
            r->stop[i] = r->stop_buf + at;
            at += l + 1;
        }
        r->p.stop = (const char *const *)r->stop;
    } else {
        r->p.n_stop = 0;
    }
    if (p->sampling.n_logit_bias > 0) {
        size_t bytes = (size_t)p->sampling.n_logit_bias * sizeof *r->bias;
        if (!(r->bias = malloc(bytes))) goto nomem;
        memcpy(r->bias, p->sampling.logit_bias, bytes);
        r->p.sampling.logit_bias = r->bias;
    }
    return KILN_OK;
nomem:
    return kiln_fail(KILN_ERR_NOMEM, "scheduler: out of memory for a request's parameters");
}

/* The sampler's checks of p (it is created on the engine thread at
 * admission; checking now keeps a bad request out of the queue). */
static kiln_status check_sampling(const kiln_sched *s, const kiln_gen_params *p) {
    struct sampler_params par = genseq_sampler_params(p);
    kiln_status st;
    sampler *smp = sampler_create(s->n_vocab, &par, &st);
    sampler_free(smp);
    return st;
}

kiln_status kiln_sched_submit(kiln_sched *s, const int32_t *ids, int32_t n,
                              const kiln_gen_params *p, kiln_sched_fn fn, void *user,
                              uint64_t *id) {
    kiln_status st = KILN_OK;
    struct sched_req *r = NULL;
    kiln_gen_params dflt = kiln_gen_default_params();
    if (!p) p = &dflt;
    if (!s || !fn) {
        st = kiln_fail(KILN_ERR_INVALID_ARG, "scheduler: submit needs a scheduler and a callback");
        goto fail;
    }
    if (n <= 0 || !ids) {
        st = kiln_fail(KILN_ERR_RANGE, "scheduler: the prompt has %d tokens; it needs at least 1",
                       ids ? n : 0);
        goto fail;
    }
    if (n > s->n_ctx) {
        st = kiln_fail(KILN_ERR_RANGE,
                       "scheduler: the prompt is %d tokens, longer than a slot's context of %d "
                       "tokens",
                       n, s->n_ctx);
        goto fail;
    }
    for (int32_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->n_vocab) {
            st = kiln_fail(KILN_ERR_RANGE,
                           "scheduler: prompt token %d (at %d) is outside the vocabulary of %d",
                           ids[i], i, s->n_vocab);
            goto fail;
        }
    if ((p->n_stop > 0 && !p->stop) || (p->sampling.n_logit_bias > 0 && !p->sampling.logit_bias)) {
        st = kiln_fail(KILN_ERR_INVALID_ARG,
                       "scheduler: %d stop strings or %d logit biases given without their array",
                       p->n_stop, p->sampling.n_logit_bias);
        goto fail;
    }
    if ((st = check_sampling(s, p)) != KILN_OK) goto fail;
    if (!(r = calloc(1, sizeof *r)) || !(r->ids = malloc((size_t)n * sizeof *r->ids))) {
        st = kiln_fail(KILN_ERR_NOMEM, "scheduler: out of memory for a prompt of %d tokens", n);
        goto fail;
    }
    memcpy(r->ids, ids, (size_t)n * sizeof *ids);
    r->n = n;
    if ((st = copy_params(r, p)) != KILN_OK) goto fail;
    r->fn = fn;
    r->user = user;
    r->t_submit = kiln_now_s();
    r->deadline = s->timeout_s > 0 ? r->t_submit + s->timeout_s : 0;
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->n_queued >= s->max_queue) {
        st = s->stopping
                 ? kiln_fail(KILN_ERR_BUSY, "scheduler: stopping; no new requests")
                 : kiln_fail(KILN_ERR_BUSY, "scheduler: the queue is full (%d requests waiting)",
                             s->n_queued);
        pthread_mutex_unlock(&s->mu);
        goto fail;
    }
    r->id = ++s->next_id;
    if (trace_on()) {
        trace_async_begin("queued", "request", r->id);
        trace_flow_start("enqueue", r->id);
    }
    if (s->qtail)
        s->qtail->next = r;
    else
        s->qhead = r;
    s->qtail = r;
    s->n_queued++;
    if (id) *id = r->id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return KILN_OK;
fail:
    req_free(r);
    return st;
}

void kiln_sched_cancel(kiln_sched *s, uint64_t id) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    bool found = false;
    for (struct sched_req *r = s->qhead; r && !found; r = r->next)
        if (r->id == id) found = r->cancelled = true;
    for (int32_t i = 0; i < s->n_slots && !found; i++)
        if (s->slots[i].req && s->slots[i].req->id == id) found = s->slots[i].req->cancelled = true;
    if (found) pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void kiln_sched_get_state(kiln_sched *s, kiln_sched_state *out) {
    memset(out, 0, sizeof *out);
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    out->n_slots = s->n_slots;
    for (int32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].req) out->busy_slots++;
    out->queued = s->n_queued;
    out->kv_used = s->kv_used;
    out->kv_total = (int64_t)s->n_slots * s->n_ctx;
    out->kv_bytes = s->kv_bytes;
    out->compute_bytes = s->compute_bytes;
    out->n_steps = s->n_steps;
    out->t_busy = s->t_busy;
    out->t_forward = s->t_forward;
    out->n_prefill_tokens = s->n_prefill_tok;
    out->n_decode_tokens = s->n_decode_tok;
    out->kv_read = s->kv_read;
    int n = s->step_head < SCHED_STEP_RING ? (int)s->step_head : SCHED_STEP_RING;
    double d[SCHED_STEP_RING];
    memcpy(d, s->step_dur, (size_t)n * sizeof *d);
    pthread_mutex_unlock(&s->mu);
    /* percentiles of the recent steps, sorted outside the lock */
    for (int i = 1; i < n; i++) /* insertion sort: n <= 256 */
        for (int j = i; j > 0 && d[j - 1] > d[j]; j--) {
            double t = d[j];
            d[j] = d[j - 1];
            d[j - 1] = t;
        }
    out->n_recent_steps = n;
    out->step_p50 = n ? d[(n - 1) / 2] : 0;
    out->step_p99 = n ? d[(int)((n - 1) * 0.99)] : 0;
}

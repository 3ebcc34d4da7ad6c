/* test_sched.c - the continuous-batching scheduler (kiln_sched_*):
 *   - equivalence: requests of different lengths (one prompt longer than
 *     n_batch, so it is prefilled in chunks between other slots' decoding)
 *     submitted together to 3 slots give, greedily, the same token ids and
 *     text as kiln_generate_tokens alone on a fresh context;
 *   - submission errors (queue full, prompt too long, empty, bad id, bad
 *     parameter) return a status and never call the callback;
 *   - cancellation (from another thread and from the callback itself),
 *     timeouts (running and queued), stop strings and end-of-generation,
 *     destroy with requests running and queued (exactly one DONE each), and
 *     prefix reuse across requests (n_cached > 0, same output);
 *   - prompt packing: prompts waiting together fill each step's n_batch;
 *   - create errors and the state snapshot.
 * A synthetic llama (model/synth.h) written at start makes every test run
 * without shared data; the equivalence test also runs on the shared
 * stories260K and mini-llama-spm-Q8_0 models when present. Events are
 * collected under a mutex and every wait has a time limit.
 */
#include "testutil.h"

#include "kiln.h"
#include "model/arch.h"
#include "model/synth.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_GEN 256
#define WAIT_S  20.0

/* ---- event collection ---- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

/* What one request received; every field under g_mu. */
struct rec {
    int32_t ids[MAX_GEN];
    int n_ids;
    char text[8192];
    size_t len;
    int n_done, n_after_done; /* DONE events; events after the DONE */
    kiln_status status;
    char error[512];
    kiln_request_stats st;
    /* behaviour */
    kiln_sched *s;
    uint64_t id;
    int cancel_after; /* > 0: the callback cancels its own request after this many tokens */
    int sleep_us;     /* per TOKEN event: slows generation down for the time-based tests */
    int n_at_cancel;  /* tokens received when the test cancelled */
    /* on DONE, submit chain_ids[0..chain_n) for the next rec (from the engine thread) */
    const int32_t *chain_ids;
    int32_t chain_n;
    const kiln_gen_params *chain_p;
    kiln_status chain_status;
};

static void append(struct rec *r, const char *t, size_t n) {
    if (n > sizeof r->text - r->len) n = sizeof r->text - r->len;
    memcpy(r->text + r->len, t, n);
    r->len += n;
}

static void on_event(void *user, const kiln_sched_event *ev) {
    struct rec *r = user;
    int sleep_us = 0;
    uint64_t cancel = 0;
    pthread_mutex_lock(&g_mu);
    if (r->n_done) r->n_after_done++;
    if (ev->kind == KILN_SCHED_TOKEN) {
        if (r->n_ids < MAX_GEN) r->ids[r->n_ids++] = ev->token;
        append(r, ev->text, ev->len);
        sleep_us = r->sleep_us;
        if (r->cancel_after > 0 && r->n_ids == r->cancel_after) cancel = r->id;
    } else {
        append(r, ev->text, ev->len);
        r->n_done++;
        r->status = ev->status;
        if (ev->error) snprintf(r->error, sizeof r->error, "%s", ev->error);
        if (ev->stats) r->st = *ev->stats;
    }
    pthread_cond_broadcast(&g_cv);
    kiln_sched *s = r->s;
    bool chain = ev->kind == KILN_SCHED_DONE && r->chain_ids;
    pthread_mutex_unlock(&g_mu);
    if (cancel) kiln_sched_cancel(s, cancel); /* from the engine thread: must not deadlock */
    if (chain) { /* submitting from the callback must not deadlock either */
        struct rec *nx = r + 1;
        uint64_t id;
        kiln_status st =
            kiln_sched_submit(s, r->chain_ids, r->chain_n, r->chain_p, on_event, nx, &id);
        pthread_mutex_lock(&g_mu);
        nx->s = s;
        nx->id = id;
        r->chain_status = st;
        pthread_cond_broadcast(&g_cv);
        pthread_mutex_unlock(&g_mu);
    }
    if (sleep_us) usleep((useconds_t)sleep_us);
}

static struct timespec deadline_in(double s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)s;
    ts.tv_nsec += (long)((s - (double)(time_t)s) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Waits (at most WAIT_S) until every rec has its DONE; false on time-out. */
static bool wait_done(struct rec *r, int n) {
    struct timespec dl = deadline_in(WAIT_S);
    bool ok = true;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < n && ok; i++)
        while (!r[i].n_done && ok) ok = pthread_cond_timedwait(&g_cv, &g_mu, &dl) != ETIMEDOUT;
    pthread_mutex_unlock(&g_mu);
    return ok;
}

/* Waits until r has at least k tokens (or its DONE); returns the count. */
static int wait_tokens(struct rec *r, int k) {
    struct timespec dl = deadline_in(WAIT_S);
    pthread_mutex_lock(&g_mu);
    while (r->n_ids < k && !r->n_done)
        if (pthread_cond_timedwait(&g_cv, &g_mu, &dl) == ETIMEDOUT) break;
    int n = r->n_ids;
    pthread_mutex_unlock(&g_mu);
    return n;
}

/* The records of the running test and its scheduler live outside the
 * test's frame, so when an assertion fails the per-test teardown can stop
 * the scheduler while its callbacks still have somewhere to write. */
static struct rec g_recs[8];
static kiln_sched *g_live;

static struct rec *new_recs(int n) {
    assert_true(n <= 8);
    pthread_mutex_lock(&g_mu);
    memset(g_recs, 0, (size_t)n * sizeof *g_recs);
    pthread_mutex_unlock(&g_mu);
    return g_recs;
}

static kiln_sched *live(kiln_sched *s) {
    g_live = s;
    return s;
}

static void end_sched(kiln_sched *s) {
    g_live = NULL;
    kiln_sched_destroy(s);
}

static int after_test(void **state) {
    (void)state;
    end_sched(g_live);
    return 0;
}

/* Submits under g_mu so the callback sees rec->id and rec->s. */
static kiln_status submit(kiln_sched *s, struct rec *r, const int32_t *ids, int32_t n,
                          const kiln_gen_params *p) {
    pthread_mutex_lock(&g_mu);
    r->s = s;
    kiln_status st = kiln_sched_submit(s, ids, n, p, on_event, r, &r->id);
    pthread_mutex_unlock(&g_mu);
    return st;
}

/* ---- reference: kiln_generate_tokens alone ---- */

struct ref {
    int32_t ids[MAX_GEN];
    int n_ids;
    char text[8192];
    size_t len;
    kiln_gen_stats st;
};

static int ref_token(void *user, int32_t id, const char *text, size_t len) {
    struct ref *r = user;
    if (id >= 0 && r->n_ids < MAX_GEN) r->ids[r->n_ids++] = id;
    if (len > sizeof r->text - r->len) len = sizeof r->text - r->len;
    memcpy(r->text + r->len, text, len);
    r->len += len;
    return 0;
}

static void reference(const kiln_model *m, const kiln_sched_params *sp, const int32_t *ids,
                      int32_t n, const kiln_gen_params *gp, struct ref *out) {
    kiln_ctx_params cp = {.n_ctx = sp->n_ctx,
                          .n_batch = sp->n_batch,
                          .n_threads = sp->n_threads,
                          .type_k = sp->type_k,
                          .type_v = sp->type_v,
                          .n_seq_max = 1};
    kiln_status st;
    kiln_ctx *c = kiln_ctx_create(m, &cp, &st);
    assert_non_null(c);
    memset(out, 0, sizeof *out);
    assert_int_equal(kiln_generate_tokens(c, ids, n, gp, ref_token, out, &out->st), KILN_OK);
    kiln_ctx_free(c);
}

/* The logit gap, on a fresh context, between tokens a and b after
 * prompt[0..n) + gen[0..k): how near a tie greedy decoding was there. */
static float tie_gap(const kiln_model *m, const kiln_sched_params *sp, const int32_t *prompt,
                     int32_t n, const int32_t *gen, int32_t k, int32_t a, int32_t b) {
    kiln_ctx_params cp = {
        .n_ctx = sp->n_ctx, .n_batch = sp->n_batch, .n_threads = sp->n_threads, .n_seq_max = 1};
    cp.type_k = sp->type_k;
    cp.type_v = sp->type_v;
    kiln_ctx *c = kiln_ctx_create(m, &cp, NULL);
    assert_non_null(c);
    int32_t *all = malloc((size_t)(n + k) * sizeof *all);
    float *lg = malloc((size_t)kiln_model_n_vocab(m) * sizeof *lg);
    memcpy(all, prompt, (size_t)n * sizeof *all);
    memcpy(all + n, gen, (size_t)k * sizeof *all);
    assert_int_equal(kiln_decode(c, all, n + k, lg, 0), KILN_OK);
    float gap = lg[a] - lg[b];
    free(all);
    free(lg);
    kiln_ctx_free(c);
    return gap < 0 ? -gap : gap;
}

/* ---- models ---- */

static kiln_model *g_synth;
static char g_synth_path[512];

static int setup(void **state) {
    (void)state;
    struct synth_params sp = {
        .hp = test_tiny_decoder_hp(256), .type = KILN_TYPE_F32, .seed = 7, .n_threads = 1};
    test_tmp_path("sched-synth.gguf", g_synth_path, sizeof g_synth_path);
    if (synth_write(&sp, g_synth_path) != KILN_OK) {
        fprintf(stderr, "synth: %s\n", kiln_last_error());
        return -1;
    }
    kiln_status st;
    g_synth = kiln_model_load(g_synth_path, &st);
    if (!g_synth) fprintf(stderr, "load: %s\n", kiln_last_error());
    return g_synth ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kiln_model_free(g_synth);
    remove(g_synth_path);
    return 0;
}

static kiln_sched_params small_params(int32_t n_slots) {
    kiln_sched_params p = kiln_sched_default_params();
    p.n_slots = n_slots;
    p.n_ctx = 160;
    p.n_batch = 16;
    p.n_threads = 2;
    return p;
}

static kiln_gen_params greedy(int32_t n_predict) {
    kiln_gen_params p = kiln_gen_default_params();
    p.n_predict = n_predict;
    p.stop_at_eog = 0;
    p.sampling.temp = 0;
    return p;
}

static int32_t tokenize(const kiln_model *m, const char *text, int32_t *ids, size_t cap) {
    size_t n;
    assert_int_equal(kiln_tokenize(m, text, strlen(text), 1, ids, cap, &n), KILN_OK);
    return (int32_t)n;
}

static const char *const k_prompts[] = {
    "Once upon a time",
    "A",
    "The little dog ran to the park and saw a big red ball. He wanted to play with it, so",
    "Tom and Lily",
    "She said hello",
    "One day, a girl named Sue found a shiny stone in the garden.",
};
#define N_PROMPTS 6

/* 1. Six requests, three slots, one prompt longer than n_batch: each gets
 * what it gets alone. With tie_tol 0 exactly; otherwise a request may part
 * from its reference only at a near tie (logit gap <= tie_tol): for
 * quantized weights a one-token step runs vec_dot and a step of several
 * tokens the gemm tile (compute/matmul.c), whose sums round differently. */
static void check_equivalence(const kiln_model *m, const char *name, float tie_tol) {
    kiln_sched_params sp = small_params(3);
    kiln_gen_params gp = greedy(16);
    int32_t ids[N_PROMPTS][160];
    int32_t n[N_PROMPTS];
    bool chunked = false;
    for (int i = 0; i < N_PROMPTS; i++) {
        n[i] = tokenize(m, k_prompts[i], ids[i], 160);
        if (n[i] > sp.n_batch) chunked = true;
    }
    assert_true(chunked);
    kiln_status st;
    kiln_sched *s = live(kiln_sched_create(m, &sp, &st));
    assert_non_null(s);
    struct rec *r = new_recs(N_PROMPTS);
    for (int i = 0; i < N_PROMPTS; i++) assert_int_equal(submit(s, &r[i], ids[i], n[i], &gp), 0);
    assert_true(wait_done(r, N_PROMPTS));
    int mismatches = 0, ties = 0;
    for (int i = 0; i < N_PROMPTS; i++) {
        struct ref want;
        reference(m, &sp, ids[i], n[i], &gp, &want);
        assert_int_equal(r[i].n_done, 1);
        assert_int_equal(r[i].status, KILN_OK);
        assert_int_equal(r[i].st.finish, KILN_FINISH_LENGTH);
        assert_int_equal(r[i].st.n_gen, 16);
        assert_int_equal(r[i].st.n_prompt, n[i]);
        if (!test_ids_equal(r[i].ids, (size_t)r[i].n_ids, want.ids, (size_t)want.n_ids) ||
            r[i].len != want.len || memcmp(r[i].text, want.text, want.len) != 0) {
            print_message("  %s: request %d (%d prompt tokens) differs from generation alone\n",
                          name, i, n[i]);
            test_print_ids("sched", r[i].ids, (size_t)r[i].n_ids);
            test_print_ids("alone", want.ids, (size_t)want.n_ids);
            int32_t k = 0;
            while (k < r[i].n_ids && k < want.n_ids && r[i].ids[k] == want.ids[k]) k++;
            if (k < r[i].n_ids && k < want.n_ids) {
                float gap = tie_gap(m, &sp, ids[i], n[i], want.ids, k, want.ids[k], r[i].ids[k]);
                print_message("    first difference at token %d: logit gap %.3g\n", k, gap);
                if (gap <= tie_tol) {
                    ties++;
                    continue;
                }
            }
            mismatches++;
        }
    }
    kiln_sched_state ss;
    kiln_sched_get_state(s, &ss);
    print_message("  %s: %d requests in %llu steps, %d mismatches, %d near ties\n", name, N_PROMPTS,
                  (unsigned long long)ss.n_steps, mismatches, ties);
    assert_int_equal(mismatches, 0);
    assert_int_equal(ss.n_slots, 3);
    assert_int_equal(ss.busy_slots, 0);
    assert_int_equal(ss.queued, 0);
    assert_int_equal(ss.kv_used, 0);
    assert_true(ss.kv_total == 3 * 160);
    assert_true(ss.kv_bytes > 0 && ss.compute_bytes > 0);
    /* batching: fewer steps than the requests' tokens run one at a time */
    assert_true(ss.n_steps < (uint64_t)(N_PROMPTS * 16));
    end_sched(s);
    for (int i = 0; i < N_PROMPTS; i++) assert_int_equal(r[i].n_after_done, 0);
}

static void test_equivalence_synth(void **state) {
    (void)state;
    check_equivalence(g_synth, "synthetic", 0);
}

static void test_equivalence_stories(void **state) {
    (void)state;
    char buf[512];
    const char *path = TEST_DATA_OR_SKIP("models/stories260K.gguf", buf);
    kiln_model *m = kiln_model_load(path, NULL);
    assert_non_null(m);
    check_equivalence(m, "stories260K", 0);
    kiln_model_free(m);
}

static void test_equivalence_spm_q8(void **state) {
    (void)state;
    char buf[512];
    const char *path = TEST_DATA_OR_SKIP("models/mini-llama-spm-Q8_0.gguf", buf);
    kiln_model *m = kiln_model_load(path, NULL);
    assert_non_null(m);
    check_equivalence(m, "mini-llama-spm-Q8_0", 0.02f);
    kiln_model_free(m);
}

/* 2. Submission errors: a status, nothing queued, no callback. */
static void test_submit_errors(void **state) {
    (void)state;
    kiln_sched_params sp = small_params(1);
    sp.max_queue = 2;
    kiln_status st;
    kiln_sched *s = live(kiln_sched_create(g_synth, &sp, &st));
    assert_non_null(s);
    int32_t ids[200];
    int32_t n = tokenize(g_synth, "Once upon a time", ids, 200);
    struct rec *bad = new_recs(6) + 5;
    kiln_gen_params gp = greedy(8);
    assert_int_equal(submit(s, bad, ids, 0, &gp), KILN_ERR_RANGE);
    int32_t too_long[200];
    for (int32_t i = 0; i < 200; i++) too_long[i] = 5;
    assert_int_equal(submit(s, bad, too_long, 200, &gp), KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "200"));
    assert_non_null(strstr(kiln_last_error(), "160"));
    int32_t oov[3] = {1, 320, 5};
    assert_int_equal(submit(s, bad, oov, 3, &gp), KILN_ERR_RANGE);
    assert_non_null(strstr(kiln_last_error(), "320"));
    oov[1] = -1;
    assert_int_equal(submit(s, bad, oov, 3, &gp), KILN_ERR_RANGE);
    kiln_gen_params bp = gp;
    kiln_logit_bias lb = {.token = 999, .bias = 1};
    bp.sampling.logit_bias = &lb;
    bp.sampling.n_logit_bias = 1;
    assert_int_equal(submit(s, bad, ids, n, &bp), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_sched_submit(s, ids, n, &gp, NULL, NULL, NULL), KILN_ERR_INVALID_ARG);
    /* queue full: one slot busy with a long request, two waiting */
    struct rec *r = new_recs(5);
    kiln_gen_params longp = greedy(120);
    r[0].sleep_us = 5000; /* 0.6 s: still running after the submits below */
    int busy = 0, ok = 1;
    assert_int_equal(submit(s, &r[0], ids, n, &longp), KILN_OK);
    assert_true(wait_tokens(&r[0], 1) >= 1); /* running: the queue is empty */
    for (int i = 1; i < 5; i++) {
        st = submit(s, &r[i], ids, n, &gp);
        if (st == KILN_ERR_BUSY) {
            busy++;
            r[i].n_done = -1; /* never submitted */
        } else {
            assert_int_equal(st, KILN_OK);
            ok++;
        }
    }
    assert_int_equal(ok, 3);
    assert_int_equal(busy, 2);
    assert_non_null(strstr(kiln_last_error(), "full"));
    kiln_sched_state ss;
    kiln_sched_get_state(s, &ss);
    assert_int_equal(ss.queued, 2);
    assert_int_equal(ss.busy_slots, 1);
    assert_true(ss.kv_used >= n && ss.kv_used <= 160);
    kiln_sched_cancel(s, r[0].id);
    for (int i = 0; i < 5; i++)
        if (r[i].n_done == 0) assert_true(wait_done(&r[i], 1));
    end_sched(s);
    assert_int_equal(bad->n_done, 0);
    assert_int_equal(bad->n_ids, 0);
    for (int i = 0; i < 5; i++) {
        if (r[i].n_done < 0) {
            assert_int_equal(r[i].n_ids, 0); /* a rejected request is never called */
            continue;
        }
        assert_int_equal(r[i].n_done, 1);
        assert_int_equal(r[i].n_after_done, 0);
    }
}

/* 3. Cancellation: from the callback (exactly after that token) and from
 * this thread (within a step); the slot goes to the queued request. */
static void test_cancel(void **state) {
    (void)state;
    kiln_sched_params sp = small_params(1);
    kiln_sched *s = live(kiln_sched_create(g_synth, &sp, NULL));
    assert_non_null(s);
    int32_t ids[64];
    int32_t n = tokenize(g_synth, "Tom and Lily", ids, 64);
    kiln_gen_params longp = greedy(120), shortp = greedy(6);
    struct rec *r = new_recs(3);
    r[0].cancel_after = 3;
    r[1].sleep_us = 1000;
    assert_int_equal(submit(s, &r[0], ids, n, &longp), KILN_OK);
    assert_int_equal(submit(s, &r[1], ids, n, &longp), KILN_OK);
    assert_int_equal(submit(s, &r[2], ids, n, &shortp), KILN_OK);
    assert_true(wait_done(&r[0], 1));
    assert_int_equal(wait_tokens(&r[1], 4) >= 4, 1);
    pthread_mutex_lock(&g_mu);
    r[1].n_at_cancel = r[1].n_ids;
    pthread_mutex_unlock(&g_mu);
    kiln_sched_cancel(s, r[1].id);
    assert_true(wait_done(r, 3));
    kiln_sched_cancel(s, r[1].id); /* finished: ignored */
    kiln_sched_cancel(s, 987654);  /* unknown: ignored */
    assert_int_equal(r[0].st.finish, KILN_FINISH_CANCELLED);
    assert_int_equal(r[0].n_ids, 3);
    assert_int_equal(r[0].st.n_gen, 3);
    assert_int_equal(r[1].st.finish, KILN_FINISH_CANCELLED);
    /* the step running when cancel came may add one token; racing with our read, two */
    assert_true(r[1].n_ids <= r[1].n_at_cancel + 2);
    assert_int_equal(r[2].status, KILN_OK);
    assert_int_equal(r[2].st.finish, KILN_FINISH_LENGTH);
    assert_int_equal(r[2].n_ids, 6);
    assert_true(r[2].st.t_queue > 0);
    assert_true(r[2].st.t_first_token >= r[2].st.t_queue);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].n_done, 1);
        assert_int_equal(r[i].status, KILN_OK);
    }
    end_sched(s);
    for (int i = 0; i < 3; i++) assert_int_equal(r[i].n_after_done, 0);
}

/* A callback may submit: a request whose DONE submits the next one. */
static void test_submit_from_callback(void **state) {
    (void)state;
    kiln_sched_params sp = small_params(2);
    kiln_sched *s = live(kiln_sched_create(g_synth, &sp, NULL));
    assert_non_null(s);
    int32_t ids[64];
    int32_t n = tokenize(g_synth, "Tom and Lily", ids, 64);
    kiln_gen_params gp = greedy(5);
    struct rec *r = new_recs(3);
    r[0].chain_ids = r[1].chain_ids = ids;
    r[0].chain_n = r[1].chain_n = n;
    r[0].chain_p = r[1].chain_p = &gp;
    assert_int_equal(submit(s, &r[0], ids, n, &gp), KILN_OK);
    assert_true(wait_done(r, 3));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].n_done, 1);
        assert_int_equal(r[i].st.finish, KILN_FINISH_LENGTH);
        assert_int_equal(r[i].n_ids, 5);
        assert_memory_equal(r[i].ids, r[0].ids, 5 * sizeof(int32_t));
    }
    assert_int_equal(r[0].chain_status, KILN_OK);
    assert_int_equal(r[1].chain_status, KILN_OK);
    assert_int_equal(r[2].st.n_cached, n - 1); /* the same prompt, in the same slot */
    end_sched(s);
}

/* 4. Timeouts, for a running request and for one still queued. */
static void test_timeout(void **state) {
    (void)state;
    kiln_sched_params sp = small_params(1);
    sp.timeout_s = 0.1;
    kiln_sched *s = live(kiln_sched_create(g_synth, &sp, NULL));
    assert_non_null(s);
    int32_t ids[64];
    int32_t n = tokenize(g_synth, "She said hello", ids, 64);
    kiln_gen_params gp = greedy(140);
    struct rec *r = new_recs(2);
    /* Each token of the running request takes 0.25 s, so the round after its
     * first token is past both deadlines unless the second submit came 0.15 s
     * after the first. With 3 ms per token the margin was one step, and a
     * TSan build once admitted the queued request before its deadline. */
    r[0].sleep_us = 250000;
    assert_int_equal(submit(s, &r[0], ids, n, &gp), KILN_OK);
    assert_int_equal(submit(s, &r[1], ids, n, &gp), KILN_OK);
    assert_true(wait_done(r, 2));
    assert_int_equal(r[0].st.finish, KILN_FINISH_TIMEOUT);
    assert_true(r[0].st.n_gen > 0 && r[0].st.n_gen < 140);
    assert_int_equal(r[1].st.finish, KILN_FINISH_TIMEOUT);
    assert_int_equal(r[1].st.n_gen, 0);
    assert_true(r[1].st.t_queue >= 0.1);
    end_sched(s);
}

/* 5. Stop strings and end-of-generation end requests as kiln_generate does. */
static void test_stop_and_eog(void **state) {
    (void)state;
    kiln_sched_params sp = small_params(2);
    kiln_sched *s = live(kiln_sched_create(g_synth, &sp, NULL));
    assert_non_null(s);
    int32_t ids[64];
    int32_t n = tokenize(g_synth, "One day", ids, 64);
    kiln_gen_params gp = greedy(24);
    struct ref plain;
    reference(g_synth, &sp, ids, n, &gp, &plain);
    assert_true(plain.len >= 8);
    /* a stop string from the middle of the greedy text */
    char stop[4];
    memcpy(stop, plain.text + plain.len / 2, 3);
    stop[3] = '\0';
    const char *stops[] = {"never appears \x01", stop};
    kiln_gen_params sp_stop = gp;
    sp_stop.stop = stops;
    sp_stop.n_stop = 2;
    /* end-of-generation: a large bias on EOS */
    kiln_gen_params sp_eog = gp;
    kiln_logit_bias lb = {.token = kiln_token_eos(g_synth), .bias = 1000};
    sp_eog.stop_at_eog = 1;
    sp_eog.sampling.logit_bias = &lb;
    sp_eog.sampling.n_logit_bias = 1;
    struct rec *r = new_recs(2);
    assert_int_equal(submit(s, &r[0], ids, n, &sp_stop), KILN_OK);
    assert_int_equal(submit(s, &r[1], ids, n, &sp_eog), KILN_OK);
    memset(stop, 0, sizeof stop); /* copied at submission */
    lb.bias = 0;
    assert_true(wait_done(r, 2));
    memcpy(stop, plain.text + plain.len / 2, 3);
    lb.bias = 1000;
    struct ref want_stop, want_eog;
    reference(g_synth, &sp, ids, n, &sp_stop, &want_stop);
    reference(g_synth, &sp, ids, n, &sp_eog, &want_eog);
    assert_int_equal(want_stop.st.finish, KILN_FINISH_STOP);
    assert_int_equal(r[0].st.finish, KILN_FINISH_STOP);
    assert_int_equal(r[0].len, want_stop.len);
    assert_memory_equal(r[0].text, want_stop.text, want_stop.len);
    assert_null(strstr(r[0].text, stop));
    assert_true(
        test_ids_equal(r[0].ids, (size_t)r[0].n_ids, want_stop.ids, (size_t)want_stop.n_ids));
    assert_int_equal(want_eog.st.finish, KILN_FINISH_EOG);
    assert_int_equal(r[1].st.finish, KILN_FINISH_EOG);
    assert_int_equal(r[1].n_ids, 0);
    assert_int_equal(r[1].st.n_gen, 0);
    end_sched(s);
}

/* 6. Destroy with requests running and queued: one DONE each, cancelled. */
static void test_destroy_busy(void **state) {
    (void)state;
    kiln_sched_params sp = small_params(2);
    kiln_sched *s = live(kiln_sched_create(g_synth, &sp, NULL));
    assert_non_null(s);
    int32_t ids[64];
    int32_t n = tokenize(g_synth, "The little dog", ids, 64);
    kiln_gen_params gp = greedy(120);
    struct rec *r = new_recs(6);
    for (int i = 0; i < 6; i++) {
        r[i].sleep_us = 500;
        assert_int_equal(submit(s, &r[i], ids, n, &gp), KILN_OK);
    }
    wait_tokens(&r[0], 2);
    end_sched(s);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(r[i].n_done, 1);
        assert_int_equal(r[i].n_after_done, 0);
        assert_int_equal(r[i].status, KILN_OK);
        assert_int_equal(r[i].st.finish, KILN_FINISH_CANCELLED);
    }
    assert_true(r[0].n_ids >= 2 && r[0].n_ids < 120);
    assert_int_equal(r[5].n_ids, 0); /* still queued */
}

/* 7. Prefix reuse: the same prompt extended reuses the slot's cache and
 * gives what it gives alone. */
static void test_prefix_reuse(void **state) {
    (void)state;
    kiln_sched_params sp = small_params(2);
    kiln_sched *s = live(kiln_sched_create(g_synth, &sp, NULL));
    assert_non_null(s);
    int32_t a[160], b[160];
    int32_t na = tokenize(g_synth, "Once upon a time there was", a, 160);
    int32_t nb = tokenize(g_synth, "Once upon a time there was a cat", b, 160);
    assert_true(nb > na && memcmp(a, b, (size_t)na * sizeof *a) == 0);
    kiln_gen_params gp = greedy(8);
    struct rec *r = new_recs(3);
    assert_int_equal(submit(s, &r[0], a, na, &gp), KILN_OK);
    assert_true(wait_done(&r[0], 1));
    assert_int_equal(r[0].st.n_cached, 0);
    assert_int_equal(submit(s, &r[1], b, nb, &gp), KILN_OK);
    assert_true(wait_done(&r[1], 1));
    print_message("  prompt of %d tokens: %d reused from a slot\n", nb, r[1].st.n_cached);
    assert_true(r[1].st.n_cached >= na);
    assert_true(r[1].st.n_cached < nb);
    struct ref want;
    reference(g_synth, &sp, b, nb, &gp, &want);
    assert_true(test_ids_equal(r[1].ids, (size_t)r[1].n_ids, want.ids, (size_t)want.n_ids));
    assert_int_equal(r[1].len, want.len);
    assert_memory_equal(r[1].text, want.text, want.len);
    /* the same prompt again: all but its last token reused */
    assert_int_equal(submit(s, &r[2], b, nb, &gp), KILN_OK);
    assert_true(wait_done(&r[2], 1));
    assert_int_equal(r[2].st.n_cached, nb - 1);
    assert_true(test_ids_equal(r[2].ids, (size_t)r[2].n_ids, want.ids, (size_t)want.n_ids));
    end_sched(s);
}

/* 8. Prompt packing: prompts that wait together fill each step's n_batch
 * budget with chunks (a step of n_batch tokens prefills faster than several
 * small ones), so 4 prompts of 10 tokens take ceil(40 / 16) = 3 steps with
 * n_batch 16, not 4. They are queued while the engine sits in a slow
 * callback of an earlier request, so they are admitted at the same step. */
static void test_prefill_packing(void **state) {
    (void)state;
    kiln_sched_params sp = small_params(5);
    kiln_sched *s = live(kiln_sched_create(g_synth, &sp, NULL));
    assert_non_null(s);
    int32_t nv = kiln_model_n_vocab(g_synth), ids[5][10];
    for (int i = 0; i < 5; i++) /* no two share a first token: nothing is reused */
        for (int t = 0; t < 10; t++) ids[i][t] = (int32_t)((3 + 7 * i + 11 * t) % nv);
    kiln_gen_params gp = greedy(1);
    struct rec *r = new_recs(5);
    r[0].sleep_us = 1000000;
    assert_int_equal(submit(s, &r[0], ids[0], 3, &gp), KILN_OK);
    assert_int_equal(wait_tokens(&r[0], 1), 1); /* the engine now sleeps in its callback */
    for (int i = 1; i < 5; i++) assert_int_equal(submit(s, &r[i], ids[i], 10, &gp), KILN_OK);
    assert_true(wait_done(r, 5));
    kiln_sched_state ss;
    kiln_sched_get_state(s, &ss);
    print_message("  4 prompts of 10 tokens, n_batch %d: %llu steps after the first request's 1\n",
                  sp.n_batch, (unsigned long long)ss.n_steps - 1);
    for (int i = 0; i < 5; i++) assert_int_equal(r[i].n_ids, 1);
    assert_int_equal(ss.n_steps, 1 + 3);
    end_sched(s);
}

/* Create errors, defaults, and a context that fills up. */
static void test_create_and_ctx_full(void **state) {
    (void)state;
    kiln_sched_params d = kiln_sched_default_params();
    assert_int_equal(d.n_slots, 4);
    assert_int_equal(d.max_queue, 256);
    assert_int_equal(d.type_k, KILN_TYPE_F16);
    kiln_status st;
    kiln_sched_params sp = small_params(4);
    sp.n_batch = 2;
    assert_null(kiln_sched_create(g_synth, &sp, &st));
    assert_int_equal(st, KILN_ERR_RANGE);
    sp = small_params(1);
    sp.n_slots = -1;
    assert_null(kiln_sched_create(g_synth, &sp, &st));
    assert_int_equal(st, KILN_ERR_RANGE);
    kiln_sched_destroy(NULL);
    char buf[512];
    if (test_data_path("models/mini-bert-Q8_0.gguf", buf, sizeof buf)) {
        kiln_model *enc = kiln_model_load(buf, NULL);
        assert_non_null(enc);
        assert_null(kiln_sched_create(enc, NULL, &st));
        assert_int_equal(st, KILN_ERR_UNSUPPORTED);
        kiln_model_free(enc);
    }
    /* context of 24 positions: the request ends with KILN_FINISH_CTX */
    sp = small_params(2);
    sp.n_ctx = 24;
    kiln_sched *s = live(kiln_sched_create(g_synth, &sp, &st));
    assert_non_null(s);
    int32_t ids[64];
    int32_t n = tokenize(g_synth, "Once upon", ids, 64);
    kiln_gen_params gp = greedy(100);
    struct rec *r = new_recs(1);
    assert_int_equal(submit(s, r, ids, n, &gp), KILN_OK);
    assert_true(wait_done(r, 1));
    assert_int_equal(r->st.finish, KILN_FINISH_CTX);
    assert_int_equal(r->st.n_gen, 24 - n + 1);
    struct ref want;
    reference(g_synth, &sp, ids, n, &gp, &want);
    assert_int_equal(want.st.finish, KILN_FINISH_CTX);
    assert_true(test_ids_equal(r->ids, (size_t)r->n_ids, want.ids, (size_t)want.n_ids));
    end_sched(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_equivalence_synth, after_test),
        cmocka_unit_test_teardown(test_equivalence_stories, after_test),
        cmocka_unit_test_teardown(test_equivalence_spm_q8, after_test),
        cmocka_unit_test_teardown(test_submit_errors, after_test),
        cmocka_unit_test_teardown(test_cancel, after_test),
        cmocka_unit_test_teardown(test_timeout, after_test),
        cmocka_unit_test_teardown(test_submit_from_callback, after_test),
        cmocka_unit_test_teardown(test_stop_and_eog, after_test),
        cmocka_unit_test_teardown(test_destroy_busy, after_test),
        cmocka_unit_test_teardown(test_prefix_reuse, after_test),
        cmocka_unit_test_teardown(test_prefill_packing, after_test),
        cmocka_unit_test_teardown(test_create_and_ctx_full, after_test),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

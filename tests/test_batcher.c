/* test_batcher.c - the dynamic embeddings batcher (kiln_embed_batcher_*):
 *   - 16 threads each submit one sentence at once: every vector equals
 *     kiln_embed of that sentence alone within 1e-5 (batch invariance) and
 *     fewer than 16 forward passes ran (requests were merged);
 *   - dim and normalize per request in one merged pass: the full raw vector
 *     equals kiln_embed's unnormalised one, the cut one has norm 1 and is
 *     proportional to the raw vector's first components;
 *   - token-id input (with and without [CLS]/[SEP]) equals the text's vector;
 *   - synchronous errors naming the input (fn never called): n == 0, empty
 *     text, invalid UTF-8, dim larger than the model's, ids outside the
 *     vocabulary, a text longer than the context unless truncating;
 *   - a decoder (llama) embeds through the batcher as kiln_embed does;
 *   - destroy with queued requests fails them with KILN_ERR_BUSY
 *     ("stopping"), and a full queue answers KILN_ERR_BUSY;
 *   - max_tokens: texts are merged up to it, a request larger than it is
 *     split over passes of whole texts, and a text longer than it still
 *     runs (alone);
 *   - fairness (no head-of-line blocking): a 1-input request submitted
 *     behind a 512-input one finishes first, in the next pass or the one
 *     after, and one submitted while the big one is partly embedded (the
 *     engine thread held in a callback) finishes in the very next pass,
 *     while the big one is split over passes it shares with them; the
 *     big one's vectors equal kiln_embed of the same inputs in one call
 *     within 1e-5 (the texts are packed into different forward passes;
 *     embed.c keeps each text whole in one pass, so this is batch
 *     invariance: bit-identical where the kernels' results do not depend on
 *     the rows around a text, which the test prints but does not require),
 *     also with pooling none (a row per token); every callback exactly once;
 *   - destroy while a request is partly embedded fails it (and the one
 *     queued behind it) exactly once, saying how far it got.
 * A synthetic bert written here runs without shared data; the same checks
 * run on mini-bert-Q8_0 when KILN_TEST_DATA has it (else a printed skip).
 */
#include "testutil.h"

#include "kiln.h"
#include "model/arch.h"
#include "model/synth.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ---- */

/* Callbacks so far, over every sink: each records its place. */
static atomic_int n_callbacks;

/* One request's answer, copied out of the callback. */
struct sink {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    kiln_status status;
    char error[256];
    float *data;
    int64_t n_rows;
    int32_t dim, n_texts, batch_texts, first_in_batch, n_passes;
    int32_t n_tokens0, truncated0;
    int64_t n_tokens;
    double t_queue, t_inference;
    int order;                   /* n_callbacks when it came (1 first) */
    kiln_embed_batcher *b;       /* when set: n_batches read in the callback */
    uint64_t passes_at_callback; /* passes run when it came, its own included */
    struct gate *gate;           /* when set: the callback then waits for it to open */
};

/* Holds the engine thread inside a callback (tests only: a real callback
 * must not block) so that the test can act between two passes. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
};

static void gate_open(struct gate *g) {
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void sink_init(struct sink *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void sink_free(struct sink *s) {
    free(s->data);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static void on_result(void *user, const kiln_embed_result *r) {
    struct sink *s = user;
    pthread_mutex_lock(&s->mu);
    s->calls++;
    s->order = atomic_fetch_add(&n_callbacks, 1) + 1;
    s->status = r->status;
    s->batch_texts = r->batch_texts;
    s->first_in_batch = r->first_in_batch;
    s->n_passes = r->n_passes;
    s->n_tokens = r->n_tokens;
    s->t_queue = r->t_queue;
    s->t_inference = r->t_inference;
    if (s->b) { /* the callback runs outside the batcher's mutex */
        kiln_batcher_state bs;
        kiln_embed_batcher_get_state(s->b, &bs);
        s->passes_at_callback = bs.n_batches;
    }
    if (r->status) {
        snprintf(s->error, sizeof s->error, "%s", r->error ? r->error : "");
    } else {
        const kiln_embeddings *e = r->emb;
        s->n_rows = e->n_rows;
        s->dim = e->dim;
        s->n_texts = e->n_texts;
        s->n_tokens0 = e->n_tokens[0];
        s->truncated0 = e->truncated_from[0];
        s->data = malloc((size_t)e->n_rows * (size_t)e->dim * sizeof(float));
        memcpy(s->data, e->data, (size_t)e->n_rows * (size_t)e->dim * sizeof(float));
    }
    pthread_cond_broadcast(&s->cv);
    struct gate *g = s->gate;
    pthread_mutex_unlock(&s->mu);
    if (g) {
        pthread_mutex_lock(&g->mu);
        while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
        pthread_mutex_unlock(&g->mu);
    }
}

/* Waits (at most 30 s) for the callback; fails the test on a timeout. */
static void sink_wait(struct sink *s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (!s->calls && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    int calls = s->calls;
    pthread_mutex_unlock(&s->mu);
    if (!calls) fail_msg("the batcher's callback did not come within 30 s");
}

static kiln_embed_batcher *make_batcher(const kiln_model *m, double wait_ms, int32_t max_queue) {
    kiln_batcher_params p = kiln_batcher_default_params();
    p.embed.n_threads = 2;
    p.max_wait_ms = wait_ms;
    p.max_queue = max_queue;
    kiln_status st;
    kiln_embed_batcher *b = kiln_embed_batcher_create(m, &p, &st);
    if (!b) print_error("batcher: %s\n", kiln_last_error());
    assert_non_null(b);
    return b;
}

/* kiln_embed of one text with normalize as given (full width). */
static float *embed_alone(const kiln_model *m, const char *text, int normalize, int32_t *dim) {
    kiln_embed_params p = kiln_embed_default_params();
    p.n_threads = 2;
    p.normalize = normalize;
    kiln_status st;
    kiln_embed_ctx *e = kiln_embed_ctx_create(m, &p, &st);
    assert_non_null(e);
    kiln_embeddings *r = NULL;
    st = kiln_embed(e, &text, NULL, 1, &r, NULL);
    if (st) print_error("embed: %s\n", kiln_last_error());
    assert_int_equal(st, KILN_OK);
    *dim = r->dim;
    float *v = malloc((size_t)r->dim * sizeof *v);
    memcpy(v, r->data, (size_t)r->dim * sizeof *v);
    kiln_embeddings_free(r);
    kiln_embed_ctx_free(e);
    return v;
}

static kiln_embed_input text_input(const char *t) {
    return (kiln_embed_input){.text = t, .len = strlen(t)};
}

static kiln_status submit_text(kiln_embed_batcher *b, const char *t, int32_t dim, int normalize,
                               int truncate, struct sink *s) {
    kiln_embed_input in = text_input(t);
    return kiln_embed_batcher_submit(b, &in, 1, dim, normalize, truncate, on_result, s);
}

static const char *synth_bert(const char *name, enum arch_id arch, char *buf, size_t cap) {
    struct synth_params sp = {
        .hp = test_tiny_encoder_hp(arch), .type = KILN_TYPE_Q8_0, .seed = 11, .n_threads = 2};
    return test_write_synth(name, &sp, buf, cap);
}

static const char *const sentences[16] = {
    "the quick brown fox jumps over the lazy dog",
    "a b c d",
    "hello world",
    "rain in spain falls mainly on the plain",
    "embeddings are vectors",
    "one",
    "two words",
    "several more words in this one sentence",
    "the cat sat on the mat",
    "x y z",
    "batching merges requests that arrive together",
    "short",
    "a longer sentence with quite a few more words than the others have",
    "numbers 1 2 3 4 5",
    "punctuation, too!",
    "the end",
};

/* ---- concurrent single-sentence clients ---- */

struct client {
    kiln_embed_batcher *b;
    pthread_barrier_t *go;
    const char *text;
    struct sink sink;
    kiln_status submit_status;
};

static void *client_main(void *arg) {
    struct client *c = arg;
    pthread_barrier_wait(c->go);
    c->submit_status = submit_text(c->b, c->text, 0, 1, 0, &c->sink);
    return NULL;
}

static void check_concurrent(const kiln_model *m) {
    kiln_embed_batcher *b = make_batcher(m, 50, 0);
    struct client cl[16];
    pthread_t th[16];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 16);
    for (int i = 0; i < 16; i++) {
        cl[i] = (struct client){.b = b, .go = &go, .text = sentences[i]};
        sink_init(&cl[i].sink);
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    for (int i = 0; i < 16; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    double worst = 0;
    int32_t most = 0, firsts = 0;
    for (int i = 0; i < 16; i++) {
        if (cl[i].submit_status) print_error("submit %d: %s\n", i, kiln_last_error());
        assert_int_equal(cl[i].submit_status, KILN_OK);
        sink_wait(&cl[i].sink);
        assert_int_equal(cl[i].sink.calls, 1);
        assert_int_equal(cl[i].sink.status, KILN_OK);
        firsts += cl[i].sink.first_in_batch;
        int32_t dim;
        float *want = embed_alone(m, sentences[i], 1, &dim);
        assert_int_equal(cl[i].sink.dim, dim);
        assert_int_equal(cl[i].sink.n_rows, 1);
        worst = fmax(worst, test_max_abs_diff(cl[i].sink.data, want, dim));
        if (cl[i].sink.batch_texts > most) most = cl[i].sink.batch_texts;
        free(want);
        sink_free(&cl[i].sink);
    }
    kiln_batcher_state bs;
    kiln_embed_batcher_get_state(b, &bs);
    print_message("%s: 16 clients, %llu passes, most texts in one %d, max |delta| %.2e\n",
                  kiln_model_arch(m), (unsigned long long)bs.n_batches, most, worst);
    assert_true(worst <= 1e-5);
    assert_true(bs.n_batches >= 1 && bs.n_batches < 16);
    assert_int_equal(firsts, (int)bs.n_batches); /* one request of each pass is marked first */
    assert_true(most > 1);
    assert_int_equal(bs.queued, 0);
    assert_true(bs.compute_bytes > 0);
    kiln_embed_batcher_destroy(b);
}

/* ---- dim and normalize per request, in one pass ---- */

static void check_dim_normalize(const kiln_model *m) {
    const char *t = sentences[0];
    /* a long wait: both requests are queued before the pass */
    kiln_embed_batcher *b = make_batcher(m, 300, 0);
    struct sink raw, cut;
    sink_init(&raw);
    sink_init(&cut);
    assert_int_equal(submit_text(b, t, 0, 0, 0, &raw), KILN_OK);
    assert_int_equal(submit_text(b, t, 16, 1, 0, &cut), KILN_OK);
    sink_wait(&raw);
    sink_wait(&cut);
    assert_int_equal(raw.status, KILN_OK);
    assert_int_equal(cut.status, KILN_OK);
    assert_int_equal(raw.batch_texts, 2); /* one merged pass */
    assert_int_equal(cut.batch_texts, 2);
    int32_t dim;
    float *want = embed_alone(m, t, 0, &dim);
    assert_int_equal(raw.dim, dim);
    assert_int_equal(kiln_embed_batcher_dim(b), dim);
    assert_true(test_max_abs_diff(raw.data, want, dim) <= 1e-5);
    assert_int_equal(cut.dim, 16);
    double ss = 0, n16 = 0;
    for (int j = 0; j < 16; j++) {
        ss += (double)cut.data[j] * cut.data[j];
        n16 += (double)want[j] * want[j];
    }
    assert_true(fabs(ss - 1) < 1e-5);
    for (int j = 0; j < 16; j++) assert_true(fabs(cut.data[j] - want[j] / sqrt(n16)) < 1e-5);
    free(want);
    sink_free(&raw);
    sink_free(&cut);
    kiln_embed_batcher_destroy(b);
}

/* ---- token ids as input ---- */

static void check_ids(const kiln_model *m) {
    const char *t = sentences[3];
    int32_t ids[256];
    size_t n;
    assert_int_equal(kiln_tokenize(m, t, strlen(t), 1, ids, 256, &n), KILN_OK);
    assert_true(n > 2);
    kiln_embed_batcher *b = make_batcher(m, -1, 0);
    struct sink a, full, bare;
    sink_init(&a);
    sink_init(&full);
    sink_init(&bare);
    assert_int_equal(submit_text(b, t, 0, 1, 0, &a), KILN_OK);
    kiln_embed_input in = {.ids = ids, .n_ids = (int32_t)n};
    assert_int_equal(kiln_embed_batcher_submit(b, &in, 1, 0, 1, 0, on_result, &full), KILN_OK);
    /* without [CLS] and [SEP]: the batcher adds them */
    in = (kiln_embed_input){.ids = ids + 1, .n_ids = (int32_t)n - 2};
    assert_int_equal(kiln_embed_batcher_submit(b, &in, 1, 0, 1, 0, on_result, &bare), KILN_OK);
    sink_wait(&a);
    sink_wait(&full);
    sink_wait(&bare);
    assert_int_equal(a.status + full.status + bare.status, KILN_OK);
    assert_int_equal(full.n_tokens0, (int32_t)n);
    assert_int_equal(bare.n_tokens0, (int32_t)n);
    assert_true(test_max_abs_diff(a.data, full.data, a.dim) <= 1e-5);
    assert_true(test_max_abs_diff(a.data, bare.data, a.dim) <= 1e-5);
    sink_free(&a);
    sink_free(&full);
    sink_free(&bare);
    kiln_embed_batcher_destroy(b);
}

static void test_synth(void **state) {
    (void)state;
    char path[512];
    synth_bert("batcher-synth.gguf", ARCH_BERT, path, sizeof path);
    kiln_model *m = test_load_model(path);
    check_concurrent(m);
    check_dim_normalize(m);
    check_ids(m);
    kiln_model_free(m);
}

static void test_mini_bert(void **state) {
    (void)state;
    char p[512];
    TEST_DATA_OR_SKIP("models/mini-bert-Q8_0.gguf", p);
    kiln_model *m = test_load_model(p);
    check_concurrent(m);
    check_dim_normalize(m);
    check_ids(m);
    kiln_model_free(m);
}

/* ---- errors ---- */

static void expect_error(kiln_embed_batcher *b, const kiln_embed_input *in, int32_t n, int32_t dim,
                         int truncate, kiln_status want, const char *const *parts) {
    struct sink s;
    sink_init(&s);
    kiln_status st = kiln_embed_batcher_submit(b, in, n, dim, 1, truncate, on_result, &s);
    if (st != want) print_error("got %d (%s), want %d\n", st, kiln_last_error(), want);
    assert_int_equal(st, want);
    for (int i = 0; parts && parts[i]; i++)
        if (!strstr(kiln_last_error(), parts[i]))
            fail_msg("error '%s' lacks '%s'", kiln_last_error(), parts[i]);
    assert_int_equal(s.calls, 0);
    sink_free(&s);
}

static void test_errors(void **state) {
    (void)state;
    char path[512];
    synth_bert("batcher-errors.gguf", ARCH_BERT, path, sizeof path);
    kiln_model *m = test_load_model(path);
    kiln_embed_batcher *b = make_batcher(m, -1, 0);
    kiln_embed_input two[2] = {text_input("fine"), text_input("")};
    expect_error(b, two, 0, 0, 0, KILN_ERR_INVALID_ARG, (const char *[]){"no inputs", NULL});
    expect_error(b, two, 2, 0, 0, KILN_ERR_INVALID_ARG, (const char *[]){"input 1", "empty", NULL});
    kiln_embed_input bad[2] = {text_input("fine"), text_input("bad \xc3\x28 utf8")};
    expect_error(b, bad, 2, 0, 0, KILN_ERR_INVALID_ARG,
                 (const char *[]){"input 1", "UTF-8", "offset 4", NULL});
    expect_error(b, two, 1, 65, 0, KILN_ERR_RANGE, (const char *[]){"65", "64", NULL});
    int32_t ids[] = {2, 10, 400, 3};
    kiln_embed_input in_ids[2] = {text_input("fine"), {.ids = ids, .n_ids = 4}};
    expect_error(b, in_ids, 2, 0, 0, KILN_ERR_RANGE,
                 (const char *[]){"input 1", "400", "vocabulary", NULL});
    kiln_embed_input no_ids = {.ids = ids, .n_ids = 0};
    expect_error(b, &no_ids, 1, 0, 0, KILN_ERR_INVALID_ARG, (const char *[]){"input 0", NULL});
    /* over-long (context 64): an error unless truncating */
    char longt[2048];
    size_t o = 0;
    for (int i = 0; i < 100; i++) o += (size_t)snprintf(longt + o, sizeof longt - o, "a b ");
    kiln_embed_input lng[2] = {text_input("ok"), text_input(longt)};
    expect_error(b, lng, 2, 0, 0, KILN_ERR_RANGE,
                 (const char *[]){"input 1", "202 tokens", "context of 64", NULL});
    struct sink s;
    sink_init(&s);
    assert_int_equal(kiln_embed_batcher_submit(b, &lng[1], 1, 0, 1, 1, on_result, &s), KILN_OK);
    sink_wait(&s);
    assert_int_equal(s.status, KILN_OK);
    assert_int_equal(s.n_tokens0, 64);
    assert_int_equal(s.truncated0, 202);
    sink_free(&s);
    kiln_embed_batcher_destroy(b);
    kiln_model_free(m);

    /* a decoder embeds through the batcher too, as kiln_embed does */
    struct synth_params sp = {.type = KILN_TYPE_Q8_0, .seed = 3, .n_threads = 2};
    sp.hp = (struct arch_hparams){.arch = arch_get(ARCH_LLAMA),
                                  .n_embd = 64,
                                  .n_layer = 1,
                                  .n_head = 4,
                                  .n_head_kv = 4,
                                  .n_ff = 128,
                                  .n_ctx_train = 64,
                                  .n_vocab = 300,
                                  .rope_freq_base = 10000.0f,
                                  .norm_eps = 1e-5f};
    m = test_load_model(test_write_synth("batcher-llama.gguf", &sp, path, sizeof path));
    kiln_status st;
    b = kiln_embed_batcher_create(m, NULL, &st);
    assert_non_null(b);
    struct sink ds;
    sink_init(&ds);
    assert_int_equal(submit_text(b, "hello world", 0, 1, 0, &ds), KILN_OK);
    sink_wait(&ds);
    assert_int_equal(ds.status, KILN_OK);
    assert_int_equal(ds.dim, 64);
    kiln_embed_ctx *de = kiln_embed_ctx_create(m, NULL, &st);
    assert_non_null(de);
    const char *dt = "hello world";
    kiln_embeddings *dr = NULL;
    assert_int_equal(kiln_embed(de, &dt, NULL, 1, &dr, NULL), KILN_OK);
    for (int32_t k = 0; k < 64; k++) assert_true(fabsf(dr->data[k] - ds.data[k]) <= 1e-5f);
    kiln_embeddings_free(dr);
    kiln_embed_ctx_free(de);
    sink_free(&ds);
    kiln_embed_batcher_destroy(b);
    kiln_model_free(m);
}

/* ---- stopping and a full queue ---- */

static void test_destroy_and_busy(void **state) {
    (void)state;
    char path[512];
    synth_bert("batcher-busy.gguf", ARCH_BERT, path, sizeof path);
    kiln_model *m = test_load_model(path);
    /* a one-minute wait for company: everything submitted stays queued */
    kiln_embed_batcher *b = make_batcher(m, 60000, 4);
    struct sink s[5];
    for (int i = 0; i < 5; i++) sink_init(&s[i]);
    for (int i = 0; i < 3; i++) assert_int_equal(submit_text(b, sentences[i], 0, 1, 0, &s[i]), 0);
    kiln_embed_input two[2] = {text_input("one"), text_input("two")};
    kiln_status st = kiln_embed_batcher_submit(b, two, 2, 0, 1, 0, on_result, &s[3]);
    assert_int_equal(st, KILN_ERR_BUSY);
    assert_non_null(strstr(kiln_last_error(), "queue full"));
    assert_int_equal(submit_text(b, "four", 0, 1, 0, &s[3]), KILN_OK);
    assert_int_equal(submit_text(b, "five", 0, 1, 0, &s[4]), KILN_ERR_BUSY);
    kiln_batcher_state bs;
    kiln_embed_batcher_get_state(b, &bs);
    assert_int_equal(bs.queued, 4);
    assert_int_equal(bs.n_batches, 0);
    kiln_embed_batcher_destroy(b);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(s[i].calls, 1);
        assert_int_equal(s[i].status, KILN_ERR_BUSY);
        assert_non_null(strstr(s[i].error, "stopping"));
    }
    assert_int_equal(s[4].calls, 0);
    for (int i = 0; i < 5; i++) sink_free(&s[i]);
    kiln_model_free(m);
}

/* ---- max_tokens: texts up to it, larger requests split, always one text ---- */

static void test_max_tokens(void **state) {
    (void)state;
    char path[512];
    synth_bert("batcher-maxtok.gguf", ARCH_BERT, path, sizeof path);
    kiln_model *m = test_load_model(path);
    kiln_batcher_params p = kiln_batcher_default_params();
    p.embed.n_threads = 2;
    p.max_wait_ms = 300;
    p.max_tokens = 10;
    kiln_status st;
    kiln_embed_batcher *b = kiln_embed_batcher_create(m, &p, &st);
    assert_non_null(b);
    /* "a b c d" is 6 tokens with [CLS] and [SEP]: no two fit in 10 */
    struct sink s[4], big, lng;
    for (int i = 0; i < 4; i++) {
        sink_init(&s[i]);
        assert_int_equal(submit_text(b, "a b c d", 0, 1, 0, &s[i]), KILN_OK);
    }
    /* one request of 2 texts, 12 tokens: split into two passes of one text */
    kiln_embed_input two[2] = {text_input("a b c d"), text_input("a b c d")};
    sink_init(&big);
    assert_int_equal(kiln_embed_batcher_submit(b, two, 2, 0, 1, 0, on_result, &big), KILN_OK);
    /* one text of 12 tokens, longer than max_tokens: runs anyway, alone */
    sink_init(&lng);
    assert_int_equal(submit_text(b, "a b a b a b a b a b", 0, 1, 0, &lng), KILN_OK);
    for (int i = 0; i < 4; i++) {
        sink_wait(&s[i]);
        assert_int_equal(s[i].status, KILN_OK);
        assert_int_equal(s[i].n_tokens0, 6);
        assert_int_equal(s[i].batch_texts, 1);
        assert_int_equal(s[i].n_passes, 1);
        assert_int_equal(s[i].first_in_batch, 1);
    }
    sink_wait(&big);
    assert_int_equal(big.status, KILN_OK);
    assert_int_equal(big.n_texts, 2);
    assert_int_equal(big.n_rows, 2);
    assert_int_equal(big.n_tokens, 12);
    assert_int_equal(big.batch_texts, 1);
    assert_int_equal(big.n_passes, 2);
    assert_int_equal(big.first_in_batch, 0); /* split: not one pass's statistics */
    for (int r = 0; r < 2; r++)
        assert_true(test_max_abs_diff(big.data + r * big.dim, s[0].data, big.dim) <= 1e-5);
    sink_wait(&lng);
    assert_int_equal(lng.status, KILN_OK);
    assert_int_equal(lng.n_tokens0, 12);
    assert_int_equal(lng.batch_texts, 1);
    for (int i = 0; i < 4; i++) sink_free(&s[i]);
    sink_free(&big);
    sink_free(&lng);
    kiln_batcher_state bs;
    kiln_embed_batcher_get_state(b, &bs);
    assert_int_equal(bs.n_batches, 7);
    kiln_embed_batcher_destroy(b);
    kiln_model_free(m);
}

/* ---- fairness: a small request is not blocked by a big one queued first ---- */

#define FAIR_N   512
#define FAIR_TOK 256 /* max_tokens: the big request takes a dozen passes and more */

static void check_fair(const kiln_model *m, kiln_pooling pooling, const char *what) {
    kiln_batcher_params p = kiln_batcher_default_params();
    p.embed.n_threads = 2;
    p.embed.pooling = pooling;
    p.max_wait_ms = -1;
    p.max_tokens = FAIR_TOK;
    kiln_status st;
    kiln_embed_batcher *b = kiln_embed_batcher_create(m, &p, &st);
    assert_non_null(b);
    static const char *texts[FAIR_N];
    static kiln_embed_input in[FAIR_N];
    for (int i = 0; i < FAIR_N; i++) {
        texts[i] = sentences[i % 16];
        in[i] = text_input(texts[i]);
    }
    struct gate gate = {.open = 0};
    pthread_mutex_init(&gate.mu, NULL);
    pthread_cond_init(&gate.cv, NULL);
    struct sink big, small, later;
    sink_init(&big);
    sink_init(&small);
    sink_init(&later);
    big.b = small.b = later.b = b;
    small.gate = &gate;
    assert_int_equal(kiln_embed_batcher_submit(b, in, FAIR_N, 0, 1, 0, on_result, &big), KILN_OK);
    kiln_batcher_state bs;
    kiln_embed_batcher_get_state(b, &bs);
    uint64_t k0 = bs.n_batches; /* passes done; the next may have started without it */
    assert_int_equal(submit_text(b, "hello world", 0, 1, 0, &small), KILN_OK);
    /* the engine thread now waits in small's callback, the big request
     * partly embedded: one more small request joins the very next pass */
    sink_wait(&small);
    kiln_embed_batcher_get_state(b, &bs);
    uint64_t k1 = bs.n_batches;
    assert_int_equal(small.passes_at_callback, k1);
    assert_int_equal(big.calls, 0);
    assert_int_equal(submit_text(b, "the cat sat on the mat", 0, 1, 0, &later), KILN_OK);
    gate_open(&gate);
    sink_wait(&later);
    sink_wait(&big);
    assert_int_equal(small.status, KILN_OK);
    assert_int_equal(later.status, KILN_OK);
    assert_int_equal(big.status, KILN_OK);
    kiln_embed_batcher_get_state(b, &bs);
    print_message("pooling %s: the big request took %d passes (%llu in all); a small one "
                  "submitted after pass %llu finished in pass %llu, another submitted after "
                  "pass %llu in pass %llu (%d texts in it)\n",
                  what, big.n_passes, (unsigned long long)bs.n_batches, (unsigned long long)k0,
                  (unsigned long long)small.passes_at_callback, (unsigned long long)k1,
                  (unsigned long long)later.passes_at_callback, later.batch_texts);
    /* the small ones came first, in the pass after the one running at their
     * submission at the latest, sharing it with the big one's texts */
    assert_true(small.order < later.order && later.order < big.order);
    assert_true(small.passes_at_callback <= k0 + 2);
    assert_int_equal(later.passes_at_callback, k1 + 1);
    struct sink *smalls[2] = {&small, &later};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(smalls[i]->n_passes, 1);
        assert_int_equal(smalls[i]->first_in_batch, 1);
        assert_true(smalls[i]->batch_texts > 1);
        assert_true(smalls[i]->t_queue >= 0 && smalls[i]->t_inference > 0);
    }
    /* the big one was split over every pass (the small ones shared two) */
    assert_true(big.n_passes >= FAIR_N * 3 / FAIR_TOK);
    assert_int_equal((uint64_t)big.n_passes, bs.n_batches);
    assert_int_equal(big.passes_at_callback, bs.n_batches);
    assert_int_equal(big.first_in_batch, 0);
    assert_true(big.t_inference > 0 && big.t_queue >= 0);
    assert_int_equal(bs.queued, 0);
    /* its vectors: those of kiln_embed on the same texts in one call */
    kiln_embed_params ep = kiln_embed_default_params();
    ep.pooling = pooling;
    kiln_embed_ctx *e = test_embed_ctx(m, ep);
    kiln_embeddings *want = test_embed_ok(e, texts, FAIR_N);
    int64_t n_tokens = 0;
    for (int i = 0; i < FAIR_N; i++) n_tokens += want->n_tokens[i];
    assert_int_equal(big.n_texts, FAIR_N);
    assert_int_equal(big.n_tokens, n_tokens);
    assert_int_equal(big.n_rows, want->n_rows);
    assert_int_equal(big.dim, want->dim);
    double worst = test_max_abs_diff(big.data, want->data, want->n_rows * want->dim);
    print_message("pooling %s: %lld rows, max |delta| against one kiln_embed call %.2e\n", what,
                  (long long)want->n_rows, worst);
    assert_true(worst <= 1e-5);
    kiln_embeddings_free(want);
    kiln_embed_ctx_free(e);
    kiln_embed_batcher_destroy(b);
    /* after destroy no callback can come: each came exactly once */
    assert_int_equal(big.calls, 1);
    assert_int_equal(small.calls, 1);
    assert_int_equal(later.calls, 1);
    sink_free(&big);
    sink_free(&small);
    sink_free(&later);
    pthread_mutex_destroy(&gate.mu);
    pthread_cond_destroy(&gate.cv);
}

static void test_fair(void **state) {
    (void)state;
    char path[512];
    synth_bert("batcher-fair.gguf", ARCH_BERT, path, sizeof path);
    kiln_model *m = test_load_model(path);
    check_fair(m, KILN_POOLING_MODEL, "model");
    check_fair(m, KILN_POOLING_NONE, "none");
    kiln_model_free(m);
}

/* ---- destroy while a request is partly embedded ---- */

#define PARTIAL_N 4000

static void test_destroy_partial(void **state) {
    (void)state;
    char path[512];
    synth_bert("batcher-partial.gguf", ARCH_BERT, path, sizeof path);
    kiln_model *m = test_load_model(path);
    kiln_batcher_params p = kiln_batcher_default_params();
    p.embed.n_threads = 2;
    p.max_wait_ms = -1;
    p.max_tokens = 16; /* two 6-token texts a pass: the big request takes 2,000 */
    kiln_status st;
    kiln_embed_batcher *b = kiln_embed_batcher_create(m, &p, &st);
    assert_non_null(b);
    static kiln_embed_input in[PARTIAL_N];
    for (int i = 0; i < PARTIAL_N; i++) in[i] = text_input("a b c d");
    struct sink big, mid, small;
    sink_init(&big);
    sink_init(&mid);
    sink_init(&small);
    assert_int_equal(kiln_embed_batcher_submit(b, in, PARTIAL_N, 0, 1, 0, on_result, &big), 0);
    assert_int_equal(kiln_embed_batcher_submit(b, in, 50, 0, 1, 0, on_result, &mid), 0);
    assert_int_equal(submit_text(b, "hello world", 0, 1, 0, &small), 0);
    kiln_batcher_state bs;
    for (int i = 0; i < 30000; i++) { /* until a few passes ran (30 s at most) */
        kiln_embed_batcher_get_state(b, &bs);
        if (bs.n_batches >= 3) break;
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    assert_true(bs.n_batches >= 3);
    /* texts a pass took no longer count as queued */
    assert_true(bs.queued <= PARTIAL_N + 50 + 1 - 3);
    kiln_embed_batcher_destroy(b);
    assert_int_equal(big.calls, 1);
    assert_int_equal(big.status, KILN_ERR_BUSY);
    if (!strstr(big.error, "stopping") || !strstr(big.error, "of them embedded"))
        fail_msg("destroy's message for a partly embedded request: '%s'", big.error);
    print_message("partly embedded at destroy: %s\n", big.error);
    /* the others: answered or failed, but once */
    assert_int_equal(mid.calls, 1);
    assert_true(mid.status == KILN_OK || mid.status == KILN_ERR_BUSY);
    assert_int_equal(small.calls, 1);
    assert_true(small.status == KILN_OK || small.status == KILN_ERR_BUSY);
    sink_free(&big);
    sink_free(&mid);
    sink_free(&small);
    kiln_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synth),           cmocka_unit_test(test_mini_bert),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_destroy_and_busy),
        cmocka_unit_test(test_max_tokens),      cmocka_unit_test(test_fair),
        cmocka_unit_test(test_destroy_partial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

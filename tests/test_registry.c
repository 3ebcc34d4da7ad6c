/* test_registry.c - the model registry (kiln_registry_*) on small synthetic
 * models written here (no shared data needed):
 *   - add / acquire / release: the handle carries the model and its server
 *     (an embeddings batcher for an encoder, which embeds; a scheduler for a
 *     decoder), list shows loaded, holders and last use;
 *   - add errors: a duplicate name (KILN_ERR_INVALID_ARG), a missing file
 *     (KILN_ERR_IO), a file that is not GGUF (KILN_ERR_FORMAT); an unknown
 *     name at acquire is KILN_ERR_NOT_FOUND listing the available names;
 *   - a budget that fits one model: acquiring the second unloads the first
 *     (least recently used); a held or pinned model is never unloaded and
 *     acquire then fails with KILN_ERR_NOMEM naming the budget; a model
 *     larger than the budget alone fails the same way;
 *   - 8 threads acquiring one unloaded model at once all get the one load;
 *     a failing load returns its error to every waiter and is retried on a
 *     later acquire;
 *   - load_all loads what fits, in order;
 *   - a decoder gets a scheduler, and its memory counts the KV cache.
 */
#include "testutil.h"

#include "kiln.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/synth.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static const char *synth(const char *name, enum arch_id arch, uint64_t seed, char *buf,
                         size_t cap) {
    struct synth_params sp = {
        .hp = test_tiny_encoder_hp(arch), .type = KILN_TYPE_Q8_0, .seed = seed, .n_threads = 2};
    if (arch == ARCH_LLAMA) { /* a decoder of the same size */
        sp.hp.n_vocab = 300;
        sp.hp.n_token_types = 0;
        sp.hp.pooling_type = 0;
        sp.hp.rope_freq_base = 10000.0f;
        sp.hp.norm_eps = 1e-5f;
    }
    return test_write_synth(name, &sp, buf, cap);
}

/* Three encoders a, b, c (different seeds, same shape). */
static char paths[3][512];

static int setup_models(void **state) {
    (void)state;
    synth("registry-a.gguf", ARCH_BERT, 1, paths[0], sizeof paths[0]);
    synth("registry-b.gguf", ARCH_BERT, 2, paths[1], sizeof paths[1]);
    synth("registry-c.gguf", ARCH_NOMIC_BERT, 3, paths[2], sizeof paths[2]);
    return 0;
}

static kiln_registry_params small_params(uint64_t budget) {
    kiln_registry_params p = kiln_registry_default_params();
    p.mem_budget = budget;
    p.batcher.embed.n_threads = 1;
    p.batcher.embed.batch_tokens = 256;
    p.sched.n_threads = 1;
    p.sched.n_slots = 2;
    p.sched.n_ctx = 64;
    return p;
}

static kiln_registry *make_registry(uint64_t budget) {
    kiln_registry_params p = small_params(budget);
    kiln_status st;
    kiln_registry *r = kiln_registry_create(&p, &st);
    assert_non_null(r);
    return r;
}

static void add_ok(kiln_registry *r, const char *name, const char *path, int pin) {
    kiln_status st = kiln_registry_add(r, name, path, pin);
    if (st) print_error("add %s: %s\n", name, kiln_last_error());
    assert_int_equal(st, KILN_OK);
}

static kiln_served *acquire_ok(kiln_registry *r, const char *name) {
    kiln_served *h = NULL;
    kiln_status st = kiln_registry_acquire(r, name, &h);
    if (st) print_error("acquire %s: %s\n", name, kiln_last_error());
    assert_int_equal(st, KILN_OK);
    assert_non_null(h);
    return h;
}

static kiln_registry_entry entry(kiln_registry *r, const char *name) {
    kiln_registry_entry e[8];
    int32_t n = kiln_registry_list(r, e, 8);
    for (int32_t i = 0; i < n && i < 8; i++)
        if (!strcmp(e[i].name, name)) return e[i];
    fail_msg("no entry '%s'", name);
    return e[0];
}

/* The largest memory figure of a, b and c, estimated and measured. */
static uint64_t biggest_model(void) {
    kiln_registry *r = make_registry(0);
    const char *names[] = {"a", "b", "c"};
    uint64_t most = 0;
    for (int i = 0; i < 3; i++) {
        add_ok(r, names[i], paths[i], 0);
        uint64_t est = entry(r, names[i]).bytes;
        kiln_served *h = acquire_ok(r, names[i]);
        uint64_t used = entry(r, names[i]).bytes;
        kiln_registry_release(r, h);
        print_message("%s: estimate %llu bytes, loaded %llu\n", names[i], (unsigned long long)est,
                      (unsigned long long)used);
        if (est > most) most = est;
        if (used > most) most = used;
    }
    kiln_registry_destroy(r);
    return most;
}

/* ---- embedding through a served batcher ---- */

struct wait1 {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    kiln_status st;
    int32_t dim;
};

static void on_emb(void *user, const kiln_embed_result *res) {
    struct wait1 *w = user;
    pthread_mutex_lock(&w->mu);
    w->st = res->status;
    w->dim = res->status ? 0 : res->emb->dim;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void embed_one(kiln_embed_batcher *b) {
    struct wait1 w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    kiln_embed_input in = {.text = "hello world", .len = 11};
    assert_int_equal(kiln_embed_batcher_submit(b, &in, 1, 0, 1, 0, on_emb, &w), KILN_OK);
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(w.st, KILN_OK);
    assert_int_equal(w.dim, 64);
}

/* ---- tests ---- */

static void test_add_acquire_release(void **state) {
    (void)state;
    kiln_registry *r = make_registry(0);
    add_ok(r, "a", paths[0], 0);
    add_ok(r, "b", paths[1], 1);
    kiln_registry_entry e = entry(r, "a");
    assert_false(e.loaded);
    assert_int_equal(e.n_holders, 0);
    assert_true(e.bytes > 0);
    assert_true(e.last_used == 0);
    assert_string_equal(e.path, paths[0]);
    assert_true(entry(r, "b").pinned);

    kiln_served *h = acquire_ok(r, "a");
    assert_string_equal(h->name, "a");
    assert_non_null(h->model);
    assert_non_null(h->embed);
    assert_null(h->sched);
    embed_one(h->embed);
    e = entry(r, "a");
    assert_true(e.loaded && e.is_encoder && !e.loading);
    assert_int_equal(e.n_holders, 1);
    kiln_served *h2 = acquire_ok(r, "a");
    assert_ptr_equal(h2, h);
    assert_int_equal(entry(r, "a").n_holders, 2);
    kiln_registry_release(r, h2);
    kiln_registry_release(r, h);
    e = entry(r, "a");
    assert_int_equal(e.n_holders, 0);
    assert_true(e.last_used > 0);
    assert_true(e.loaded);

    /* errors at add and for an unknown name */
    assert_int_equal(kiln_registry_add(r, "a", paths[1], 0), KILN_ERR_INVALID_ARG);
    assert_non_null(strstr(kiln_last_error(), "'a'"));
    char missing[512];
    test_tmp_path("registry-missing.gguf", missing, sizeof missing);
    remove(missing);
    assert_int_equal(kiln_registry_add(r, "m", missing, 0), KILN_ERR_IO);
    char junk[512];
    test_tmp_path("registry-junk.gguf", junk, sizeof junk);
    FILE *f = fopen(junk, "wb");
    assert_non_null(f);
    fputs("this is not a GGUF file, just some text long enough to have a header", f);
    fclose(f);
    assert_int_equal(kiln_registry_add(r, "j", junk, 0), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "'j'"));
    assert_int_equal(kiln_registry_list(r, NULL, 0), 2);
    kiln_served *none = (kiln_served *)1;
    assert_int_equal(kiln_registry_acquire(r, "nope", &none), KILN_ERR_NOT_FOUND);
    assert_null(none);
    const char *msg = kiln_last_error();
    assert_non_null(strstr(msg, "'nope'"));
    assert_non_null(strstr(msg, "'a'"));
    assert_non_null(strstr(msg, "'b'"));
    kiln_registry_destroy(r);
}

static void test_budget_lru(void **state) {
    (void)state;
    uint64_t one = biggest_model();
    uint64_t budget = one + one / 4; /* room for one model, not two */
    kiln_registry *r = make_registry(budget);
    add_ok(r, "a", paths[0], 0);
    add_ok(r, "b", paths[1], 0);
    add_ok(r, "c", paths[2], 0);

    kiln_served *ha = acquire_ok(r, "a");
    kiln_registry_release(r, ha);
    kiln_served *hb = acquire_ok(r, "b"); /* a is least recently used, unheld: unloaded */
    assert_false(entry(r, "a").loaded);
    assert_true(entry(r, "b").loaded);

    /* b is held: nothing can make room for a */
    kiln_served *h = (kiln_served *)1;
    assert_int_equal(kiln_registry_acquire(r, "a", &h), KILN_ERR_NOMEM);
    assert_null(h);
    assert_non_null(strstr(kiln_last_error(), "budget"));
    assert_non_null(strstr(kiln_last_error(), "'a'"));
    assert_true(entry(r, "b").loaded);
    kiln_registry_release(r, hb);
    ha = acquire_ok(r, "a");
    assert_false(entry(r, "b").loaded);
    kiln_registry_release(r, ha);
    kiln_registry_destroy(r);

    /* pinned: never unloaded */
    r = make_registry(budget);
    add_ok(r, "a", paths[0], 1);
    add_ok(r, "b", paths[1], 0);
    assert_int_equal(kiln_registry_load_all(r), KILN_OK);
    assert_true(entry(r, "a").loaded);
    assert_false(entry(r, "b").loaded); /* did not fit next to a: loads on first use */
    assert_int_equal(kiln_registry_acquire(r, "b", &h), KILN_ERR_NOMEM);
    assert_true(entry(r, "a").loaded);
    kiln_registry_destroy(r);

    /* larger than the budget even alone */
    r = make_registry(one / 2);
    add_ok(r, "a", paths[0], 0);
    assert_int_equal(kiln_registry_acquire(r, "a", &h), KILN_ERR_NOMEM);
    assert_non_null(strstr(kiln_last_error(), "alone"));
    kiln_registry_destroy(r);
}

struct racer {
    kiln_registry *r;
    pthread_barrier_t *go;
    const char *name;
    kiln_served *h;
    kiln_status st;
    char error[256];
};

static void *racer_main(void *arg) {
    struct racer *x = arg;
    pthread_barrier_wait(x->go);
    x->st = kiln_registry_acquire(x->r, x->name, &x->h);
    if (x->st) snprintf(x->error, sizeof x->error, "%s", kiln_last_error());
    return NULL;
}

static void race(kiln_registry *r, const char *name, struct racer *x, int n) {
    pthread_t th[8];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        x[i] = (struct racer){.r = r, .go = &go, .name = name};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &x[i]), 0);
    }
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
}

static void test_concurrent_acquire(void **state) {
    (void)state;
    kiln_registry *r = make_registry(0);
    add_ok(r, "a", paths[0], 0);
    struct racer x[8];
    race(r, "a", x, 8);
    for (int i = 0; i < 8; i++) {
        if (x[i].st) print_error("racer %d: %s\n", i, x[i].error);
        assert_int_equal(x[i].st, KILN_OK);
        /* one load: every holder has the same model and batcher */
        assert_ptr_equal(x[i].h, x[0].h);
        assert_ptr_equal(x[i].h->model, x[0].h->model);
        assert_ptr_equal(x[i].h->embed, x[0].h->embed);
    }
    kiln_registry_entry e = entry(r, "a");
    assert_true(e.loaded);
    assert_int_equal(e.n_holders, 8);
    for (int i = 0; i < 8; i++) kiln_registry_release(r, x[i].h);
    assert_int_equal(entry(r, "a").n_holders, 0);
    kiln_registry_destroy(r);
}

/* A GGUF that opens but does not load (an encoder with no tensors): every
 * waiter gets the error, and a later acquire tries again. */
static void test_failed_load(void **state) {
    (void)state;
    char path[512];
    test_tmp_path("registry-empty.gguf", path, sizeof path);
    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    assert_int_equal(gguf_set_str(w, "general.architecture", "bert"), KILN_OK);
    assert_int_equal(gguf_writer_write(w, path), KILN_OK);
    gguf_writer_destroy(w);
    kiln_registry *r = make_registry(0);
    add_ok(r, "broken", path, 0);
    add_ok(r, "a", paths[0], 0);
    struct racer x[4];
    race(r, "broken", x, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_not_equal(x[i].st, KILN_OK);
        assert_null(x[i].h);
        if (!strstr(x[i].error, "'broken'")) fail_msg("error '%s' lacks the name", x[i].error);
    }
    kiln_registry_entry e = entry(r, "broken");
    assert_false(e.loaded || e.loading);
    kiln_served *h = (kiln_served *)1;
    assert_int_equal(kiln_registry_acquire(r, "broken", &h), x[0].st);
    /* load_all reports it by name and still loads the rest */
    assert_int_not_equal(kiln_registry_load_all(r), KILN_OK);
    assert_non_null(strstr(kiln_last_error(), "'broken'"));
    assert_true(entry(r, "a").loaded);
    kiln_registry_destroy(r);
}

/* A decoder is served by a scheduler; its memory counts the KV cache. */
static void test_decoder(void **state) {
    (void)state;
    char path[512];
    synth("registry-d.gguf", ARCH_LLAMA, 4, path, sizeof path);
    kiln_registry *r = make_registry(0);
    add_ok(r, "d", path, 0);
    add_ok(r, "a", paths[0], 0);
    kiln_registry_entry e = entry(r, "d");
    assert_false(e.is_encoder); /* probed at add */
    uint64_t est = e.bytes;
    kiln_served *h = acquire_ok(r, "d");
    assert_non_null(h->model);
    assert_non_null(h->sched);
    assert_null(h->embed);
    kiln_sched_state ss;
    kiln_sched_get_state(h->sched, &ss);
    assert_int_equal(ss.n_slots, 2);
    assert_true(ss.kv_bytes > 0);
    e = entry(r, "d");
    assert_true(e.loaded);
    assert_false(e.is_encoder);
    assert_true(e.bytes > ss.kv_bytes + ss.compute_bytes);
    /* The list carries the engine's state without holding the model. */
    double used = e.last_used;
    assert_int_equal(e.sched.n_slots, 2);
    assert_true(e.sched.kv_bytes == ss.kv_bytes);
    assert_int_equal(e.batcher.n_batches, 0);
    assert_true(entry(r, "d").last_used == used);
    print_message("decoder: estimate %llu bytes, loaded %llu (KV %llu, compute %llu)\n",
                  (unsigned long long)est, (unsigned long long)e.bytes,
                  (unsigned long long)ss.kv_bytes, (unsigned long long)ss.compute_bytes);
    kiln_served *ha = acquire_ok(r, "a");
    assert_true(entry(r, "a").is_encoder);
    assert_non_null(ha->embed);
    kiln_registry_release(r, ha);
    kiln_registry_release(r, h);
    kiln_registry_destroy(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_acquire_release),
        cmocka_unit_test(test_budget_lru),
        cmocka_unit_test(test_concurrent_acquire),
        cmocka_unit_test(test_failed_load),
        cmocka_unit_test(test_decoder),
    };
    return cmocka_run_group_tests(tests, setup_models, NULL);
}

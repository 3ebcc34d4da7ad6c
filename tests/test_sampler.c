/* test_sampler.c - the sampler's penalties, logit bias and seeding, the stop
 * string matcher, and a benchmark printing ns per token for each sampler
 * configuration at 32k and 152k vocabularies (printed, never asserted).
 * Needs no shared data. */
#include "testutil.h"

#include "base/time.h"
#include "text/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct sampler_params greedy(void) {
    return (struct sampler_params){.temp = 0, .repeat_penalty = 1.0f, .repeat_last_n = 8};
}

/* OpenAI semantics: logit -= presence * [count > 0] + frequency * count. */
static void test_presence_frequency(void **state) {
    (void)state;
    float logits[6] = {1.0f, 0.9f, 0.0f, -1.0f, 0.5f, 0.2f};
    struct sampler_params p = greedy();
    p.presence_penalty = 0.2f; /* 1.0 - 0.2 < 0.9 */
    sampler *s = sampler_create(6, &p, NULL);
    assert_int_equal(sampler_sample(s, logits), 0); /* empty window: no penalty */
    sampler_accept(s, 0);
    assert_int_equal(sampler_sample(s, logits), 1);
    sampler_free(s);
    p.presence_penalty = 0.05f; /* 0.95 > 0.9 */
    s = sampler_create(6, &p, NULL);
    sampler_accept(s, 0);
    sampler_accept(s, 0);
    assert_int_equal(sampler_sample(s, logits), 0); /* presence does not grow with the count */
    sampler_free(s);

    p = greedy();
    p.frequency_penalty = 0.06f; /* twice: 1.0 - 0.12 < 0.9 */
    s = sampler_create(6, &p, NULL);
    sampler_accept(s, 0);
    assert_int_equal(sampler_sample(s, logits), 0); /* once: 0.94 */
    sampler_accept(s, 0);
    assert_int_equal(sampler_sample(s, logits), 1);
    sampler_free(s);

    /* the window: with repeat_last_n 2, token 0 falls out after two others */
    p.repeat_last_n = 2;
    p.frequency_penalty = 1.0f;
    s = sampler_create(6, &p, NULL);
    sampler_accept(s, 0);
    assert_int_equal(sampler_sample(s, logits), 1);
    sampler_accept(s, 5);
    sampler_accept(s, 5);
    assert_int_equal(sampler_sample(s, logits), 0);
    /* reset forgets the window */
    sampler_accept(s, 0);
    sampler_reset(s);
    assert_int_equal(sampler_sample(s, logits), 0);
    sampler_free(s);

    /* negative penalties encourage repetition; combined with the repetition penalty */
    p = greedy();
    p.presence_penalty = -0.5f;
    p.repeat_penalty = 1.2f;
    s = sampler_create(6, &p, NULL);
    sampler_accept(s, 4); /* 0.5 / 1.2 + 0.5 = 0.917 < 1.0 */
    assert_int_equal(sampler_sample(s, logits), 0);
    sampler_accept(s, 1); /* 0.9 / 1.2 + 0.5 = 1.25 */
    assert_int_equal(sampler_sample(s, logits), 1);
    sampler_free(s);
}

static void test_logit_bias(void **state) {
    (void)state;
    float logits[6] = {1.0f, 0.9f, 0.0f, -1.0f, 0.5f, 0.2f};
    kiln_logit_bias ban[] = {{0, -INFINITY}}, boost[] = {{3, 2.5f}, {3, 0.1f}};
    struct sampler_params p = greedy();
    p.logit_bias = ban;
    p.n_logit_bias = 1;
    sampler *s = sampler_create(6, &p, NULL);
    ban[0].token = 2; /* the sampler keeps its own copy */
    assert_int_equal(sampler_sample(s, logits), 1);
    sampler_free(s);
    p.logit_bias = boost; /* both entries apply: -1 + 2.6 = 1.6 */
    p.n_logit_bias = 2;
    s = sampler_create(6, &p, NULL);
    assert_int_equal(sampler_sample(s, logits), 3);
    sampler_free(s);
    /* a banned token is never drawn, whatever the temperature */
    kiln_logit_bias ban2[] = {{0, -INFINITY}, {1, -INFINITY}};
    p = (struct sampler_params){.temp = 3,
                                .top_p = 1,
                                .repeat_penalty = 1,
                                .seed = 3,
                                .logit_bias = ban2,
                                .n_logit_bias = 2};
    s = sampler_create(6, &p, NULL);
    for (int i = 0; i < 3000; i++) {
        int32_t id = sampler_sample(s, logits);
        assert_true(id >= 2 && id < 6);
    }
    sampler_free(s);
    /* bad biases are refused, naming the token */
    kiln_logit_bias bad[] = {{6, 1.0f}};
    p.logit_bias = bad;
    p.n_logit_bias = 1;
    kiln_status st;
    assert_null(sampler_create(6, &p, &st));
    assert_int_equal(st, KILN_ERR_INVALID_ARG);
    assert_non_null(strstr(kiln_last_error(), "token 6"));
    /* banning every token is refused (nothing could be sampled); banning
     * all but one always draws that one */
    kiln_logit_bias all[7] = {{0, -INFINITY}, {1, -INFINITY}, {2, -INFINITY}, {3, -INFINITY},
                              {4, -INFINITY}, {5, -INFINITY}, {5, -INFINITY}};
    p.logit_bias = all;
    p.n_logit_bias = 7;
    assert_null(sampler_create(6, &p, &st));
    assert_int_equal(st, KILN_ERR_INVALID_ARG);
    assert_non_null(strstr(kiln_last_error(), "no token can be sampled"));
    all[5].bias = 0;
    all[6].token = 4; /* duplicates count once: token 5 stays */
    s = sampler_create(6, &p, &st);
    assert_non_null(s);
    for (int i = 0; i < 200; i++) assert_int_equal(sampler_sample(s, logits), 5);
    sampler_free(s);
    p.n_logit_bias = 0;
    p.presence_penalty = NAN;
    assert_null(sampler_create(6, &p, &st));
}

static void test_seed(void **state) {
    (void)state;
    enum { NV = 1000 };
    static float logits[NV];
    uint64_t r = 5;
    for (int i = 0; i < NV; i++) logits[i] = test_rand_normal(&r) * 2;
    struct sampler_params p = {.temp = 1, .top_k = 0, .top_p = 1, .repeat_penalty = 1, .seed = 99};
    sampler *a = sampler_create(NV, &p, NULL), *b = sampler_create(NV, &p, NULL);
    p.seed = 100;
    sampler *c = sampler_create(NV, &p, NULL);
    int32_t first[64];
    int diff = 0;
    for (int i = 0; i < 64; i++) {
        first[i] = sampler_sample(a, logits);
        assert_int_equal(first[i], sampler_sample(b, logits));
        diff += first[i] != sampler_sample(c, logits);
    }
    assert_true(diff > 32);
    sampler_reset(a); /* reseeding repeats the sequence */
    for (int i = 0; i < 64; i++) assert_int_equal(first[i], sampler_sample(a, logits));
    sampler_free(a);
    sampler_free(b);
    sampler_free(c);
}

/* Feeds pieces; returns what came out in out (NUL-terminated) and whether a stop hit. */
static bool feed_all(stop_matcher *m, const char *const *pieces, char *out) {
    char buf[256];
    bool hit = false;
    size_t n = 0;
    for (int i = 0; pieces[i] && !hit; i++) {
        size_t w = stop_feed(m, pieces[i], strlen(pieces[i]), buf, &hit);
        memcpy(out + n, buf, w);
        n += w;
    }
    if (!hit) n += stop_flush(m, out + n);
    out[n] = 0;
    return hit;
}

static void test_stop_strings(void **state) {
    (void)state;
    char out[256];
    const char *stops[] = {"o w", "STOP", "", "abcd", "bc"};
    stop_matcher *m = stop_create(stops, 2, NULL);
    assert_int_equal(stop_max_len(m), 4);
    /* a stop string spanning pieces; nothing of it or after it comes out */
    assert_true(feed_all(m, (const char *const[]){"Hel", "lo", " wo", "rld", NULL}, out));
    assert_string_equal(out, "Hell");
    stop_reset(m);
    /* text that might start a stop string is held, then released */
    char buf[64];
    bool hit;
    size_t w = stop_feed(m, "abcST", 5, buf, &hit);
    assert_false(hit);
    assert_int_equal(w, 3);
    w = stop_feed(m, "OX", 2, buf, &hit);
    assert_int_equal(w, 4);
    assert_memory_equal(buf, "STOX", 4);
    w = stop_feed(m, "xxS", 3, buf, &hit);
    assert_int_equal(w, 2);
    assert_int_equal(stop_flush(m, buf), 1); /* the end releases the held "S" */
    assert_int_equal(buf[0], 'S');
    /* a whole stop string inside one piece */
    stop_reset(m);
    assert_true(feed_all(m, (const char *const[]){"one STOP two", NULL}, out));
    assert_string_equal(out, "one ");
    stop_free(m);
    /* the earliest match wins; empty strings are ignored */
    m = stop_create(stops + 2, 3, NULL);
    assert_true(feed_all(m, (const char *const[]){"xa", "bcd", NULL}, out));
    assert_string_equal(out, "x");
    stop_free(m);
    /* no stop strings: everything passes at once */
    m = stop_create(NULL, 0, NULL);
    assert_false(feed_all(m, (const char *const[]){"a", "b", NULL}, out));
    assert_string_equal(out, "ab");
    w = stop_feed(m, "q", 1, buf, &hit);
    assert_int_equal(w, 1);
    stop_free(m);
}

/* ---- benchmark ---- */

struct bench_cfg {
    const char *name;
    struct sampler_params p;
};

static void bench_vocab(int32_t nv) {
    static kiln_logit_bias bias[] = {{11, -INFINITY}, {12, 1.5f}, {13, -2.0f}, {14, 0.5f}};
    const struct bench_cfg cfgs[] = {
        {"greedy", {.temp = 0, .repeat_penalty = 1, .repeat_last_n = 64}},
        {"greedy + penalties + bias",
         {.temp = 0,
          .repeat_penalty = 1.1f,
          .repeat_last_n = 64,
          .presence_penalty = 0.5f,
          .frequency_penalty = 0.5f,
          .logit_bias = bias,
          .n_logit_bias = 4}},
        {"temp 0.8 (full softmax)", {.temp = 0.8f, .top_p = 1, .repeat_penalty = 1}},
        {"top-k 40, temp 0.8", {.temp = 0.8f, .top_k = 40, .top_p = 1, .repeat_penalty = 1}},
        {"top-p 0.95, temp 0.8", {.temp = 0.8f, .top_p = 0.95f, .repeat_penalty = 1}},
        {"min-p 0.05, temp 0.8", {.temp = 0.8f, .top_p = 1, .min_p = 0.05f, .repeat_penalty = 1}},
        {"default: k40 p0.95 minp0.05 t0.8",
         {.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .repeat_penalty = 1}},
        {"default + penalties + bias",
         {.temp = 0.8f,
          .top_k = 40,
          .top_p = 0.95f,
          .min_p = 0.05f,
          .repeat_penalty = 1.1f,
          .repeat_last_n = 64,
          .presence_penalty = 0.5f,
          .frequency_penalty = 0.5f,
          .logit_bias = bias,
          .n_logit_bias = 4}},
    };
    enum { N_LOGITS = 8 };
    float *logits = malloc((size_t)nv * N_LOGITS * sizeof *logits);
    uint64_t r = 17;
    for (size_t i = 0; i < (size_t)nv * N_LOGITS; i++) logits[i] = test_rand_normal(&r) * 3;
    print_message("  sampler, vocabulary %d (ns per token, %d distinct logit vectors):\n", nv,
                  N_LOGITS);
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        struct sampler_params p = cfgs[c].p;
        p.seed = 1;
        sampler *s = sampler_create(nv, &p, NULL);
        assert_non_null(s);
        for (int i = 0; i < 64; i++) sampler_accept(s, (int32_t)(test_rand_u64(&r) % (uint64_t)nv));
        int iters = nv > 100000 ? 200 : 600;
        int64_t best = INT64_MAX;
        for (int rep = 0; rep < 3; rep++) {
            int64_t t0 = kiln_now_ns();
            for (int i = 0; i < iters; i++)
                sampler_accept(s, sampler_sample(s, logits + (size_t)(i % N_LOGITS) * nv));
            int64_t dt = (kiln_now_ns() - t0) / iters;
            if (dt < best) best = dt;
        }
        print_message("    %-36s %9lld ns\n", cfgs[c].name, (long long)best);
        sampler_free(s);
    }
    free(logits);
}

static void test_bench(void **state) {
    (void)state;
    bench_vocab(32000);
    bench_vocab(151936);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presence_frequency),
        cmocka_unit_test(test_logit_bias),
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

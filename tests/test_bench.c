/* test_bench.c - kiln bench's pieces that need no server: the SSE parser
 * fed in every possible split, statistics (percentiles of known
 * distributions within the histogram's stated error, TTFT/TPOT/e2e
 * definitions, warm-up exclusion, errors by kind, goodput against SLOs),
 * SLO parsing, and workload bodies (synthetic prompts, ignore_eos, JSONL
 * files and their errors, embeddings inputs). The engine itself is tested
 * against a stub server by tests/cli/bench_*.sh. */
#include "testutil.h"

#include "bench/bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- SSE ------------------------------------------------------------------ */

struct sse_tally {
    int events, content, bytes, done, bad;
    int64_t prompt, completion;
};

static void tally(void *ud, const bench_sse_event *ev) {
    struct sse_tally *t = ud;
    t->events++;
    if (ev->content_len) t->content++, t->bytes += (int)ev->content_len;
    if (ev->done) t->done++;
    if (ev->bad) t->bad++;
    if (ev->prompt_tokens >= 0) t->prompt = ev->prompt_tokens;
    if (ev->completion_tokens >= 0) t->completion = ev->completion_tokens;
}

static const char stream[] =
    ": a comment line\r\n"
    "event: message\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n"
    "data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u00e9\"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"text\":\"xyz\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n"
    "data: [DONE]\n\n";

static void check_tally(const struct sse_tally *t) {
    assert_int_equal(t->events, 6);  /* comment and event: lines are not data */
    assert_int_equal(t->content, 3); /* the empty first delta is no token */
    assert_int_equal(t->bytes, 3 + 5 + 3);
    assert_int_equal(t->done, 1);
    assert_int_equal(t->bad, 0);
    assert_int_equal(t->prompt, 7);
    assert_int_equal(t->completion, 3);
}

static void test_sse_splits(void **state) {
    (void)state;
    size_t n = strlen(stream);
    /* whole, then split once at every position, then byte by byte */
    for (size_t cut = 0; cut <= n; cut++) {
        bench_sse s;
        bench_sse_init(&s);
        struct sse_tally t = {.prompt = -1, .completion = -1};
        assert_true(bench_sse_feed(&s, stream, cut, tally, &t));
        assert_true(bench_sse_feed(&s, stream + cut, n - cut, tally, &t));
        check_tally(&t);
        bench_sse_free(&s);
    }
    bench_sse s;
    bench_sse_init(&s);
    struct sse_tally t = {.prompt = -1, .completion = -1};
    for (size_t i = 0; i < n; i++) assert_true(bench_sse_feed(&s, stream + i, 1, tally, &t));
    check_tally(&t);
    bench_sse_free(&s);
}

static void test_sse_bad(void **state) {
    (void)state;
    bench_sse_event ev;
    bench_sse_parse("not json", 8, &ev);
    assert_true(ev.bad);
    const char *err = "{\"error\":{\"message\":\"overloaded\"}}";
    bench_sse_parse(err, strlen(err), &ev);
    assert_true(ev.bad);
    bench_sse_parse("[DONE]", 6, &ev);
    assert_true(ev.done && !ev.bad);
    const char *usage_only = "{\"usage\":{\"completion_tokens\":12}}";
    bench_sse_parse(usage_only, strlen(usage_only), &ev);
    assert_int_equal(ev.completion_tokens, 12);
    assert_int_equal(ev.prompt_tokens, -1);
    assert_int_equal(ev.content_len, 0);
}

/* ---- statistics ------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* e2e of n records drawn from a log-normal; every quantile the report shows
 * is within HIST_REL_ERROR of the exact order statistic of that rank. */
static void test_stats_percentiles(void **state) {
    (void)state;
    const size_t n = 20000;
    bench_run r = {0};
    hist_init(&r.itl);
    r.recs = calloc(n, sizeof *r.recs);
    double *e2e = malloc(n * sizeof *e2e);
    assert_non_null(r.recs);
    assert_non_null(e2e);
    uint64_t rng = 42;
    for (size_t i = 0; i < n; i++) {
        double ms = 50 * exp(0.8 * test_rand_normal(&rng)); /* median 50 ms, long tail */
        int64_t ns = (int64_t)llround(ms * 1e6);
        e2e[i] = (double)ns * 1e-6;
        r.recs[i] = (bench_record){.index = i,
                                   .t_sched = 1000000 * (int64_t)i,
                                   .t_send = 1000000 * (int64_t)i,
                                   .t_first = -1,
                                   .t_done = 1000000 * (int64_t)i + ns,
                                   .err = BENCH_OK};
    }
    r.n_recs = n;
    r.t_end = r.recs[n - 1].t_done;
    bench_slo slo = {0};
    bench_stats *s = bench_stats_compute(&r, &slo);
    assert_non_null(s);
    qsort(e2e, n, sizeof *e2e, cmp_double);
    const double qs[] = {0.5, 0.9, 0.95, 0.99, 0.999};
    for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
        size_t rank = (size_t)ceil(qs[k] * (double)n); /* 1-based */
        double exact = e2e[rank - 1], got = hist_quantile(&s->e2e.h, qs[k]);
        double rel = fabs(got - exact) / exact;
        if (rel > HIST_REL_ERROR)
            print_error("p%g: got %.4f, exact %.4f (rel %.5f > %.5f)\n", qs[k] * 100, got, exact,
                        rel, HIST_REL_ERROR);
        assert_true(rel <= HIST_REL_ERROR);
    }
    assert_true(fabs(s->e2e.h.min - e2e[0]) < 1e-9);
    assert_true(fabs(s->e2e.h.max - e2e[n - 1]) < 1e-9);
    double mean = 0, ss = 0;
    for (size_t i = 0; i < n; i++) mean += e2e[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) ss += (e2e[i] - mean) * (e2e[i] - mean);
    assert_true(fabs(hist_mean(&s->e2e.h) - mean) < 1e-6 * mean);
    assert_true(fabs(bench_metric_sd(&s->e2e) - sqrt(ss / (double)(n - 1))) < 1e-6 * mean);
    /* no streams: no TTFT or TPOT */
    assert_int_equal(s->ttft.h.n, 0);
    assert_int_equal(s->tpot.h.n, 0);
    free(s);
    free(e2e);
    bench_run_free(&r);
}

/* Uniform 1..1000 ms exactly: p50 = 500, p99 = 990 within the error. */
static void test_stats_uniform(void **state) {
    (void)state;
    bench_metric m = {0};
    hist_init(&m.h);
    for (int i = 1000; i >= 1; i--) hist_record(&m.h, i);
    double want[][2] = {{0.5, 500}, {0.9, 900}, {0.95, 950}, {0.99, 990}};
    for (int k = 0; k < 4; k++) {
        double got = hist_quantile(&m.h, want[k][0]);
        assert_true(fabs(got - want[k][1]) <= HIST_REL_ERROR * want[k][1]);
    }
    char line[256];
    bench_metric_line(line, sizeof line, "e2e", &m);
    assert_non_null(strstr(line, "e2e   count=1000, mean=500.50ms, min=1.00ms, max=1000.00ms"));
    assert_non_null(strstr(line, "p95="));
}

static bench_record rec_ms(double sched, double first, double done, int64_t out, bench_err err) {
    return (bench_record){.t_sched = (int64_t)(sched * 1e6),
                          .t_send = (int64_t)(sched * 1e6) + 100000, /* 0.1 ms lag */
                          .t_first = first < 0 ? -1 : (int64_t)(first * 1e6),
                          .t_done = (int64_t)(done * 1e6),
                          .out_tokens = out,
                          .in_tokens = 10,
                          .err = err};
}

static void test_stats_definitions(void **state) {
    (void)state;
    bench_record recs[] = {
        rec_ms(0, 100, 1000, 10, BENCH_OK), /* warm-up, excluded */
        rec_ms(0, 100, 1000, 10, BENCH_OK), /* ttft 100, tpot 900/9 = 100 */
        rec_ms(100, 150, 500, 8, BENCH_OK), /* ttft 50, tpot 350/7 = 50, e2e 400 */
        rec_ms(200, 800, 900, 1, BENCH_OK), /* ttft 600 (misses), no tpot */
        rec_ms(300, -1, 310, 0, BENCH_ERR_CONNECT),  rec_ms(400, -1, 1400, 0, BENCH_ERR_TIMEOUT),
        rec_ms(500, -1, 510, 0, BENCH_ERR_HTTP_5XX),
    };
    recs[0].warmup = true;
    recs[0].t_sched = -5000000000; /* long before: would stretch the window */
    bench_run r = {.recs = recs, .n_recs = 7, .t_end = 2000000000, .cpu_s = 0.5};
    hist_init(&r.itl);
    bench_slo slo;
    assert_true(bench_slo_parse("ttft=500ms,tpot=0.08s", &slo));
    bench_stats *s = bench_stats_compute(&r, &slo);
    assert_non_null(s);
    assert_int_equal(s->n, 6);
    assert_int_equal(s->n_ok, 3);
    assert_int_equal(s->n_err[BENCH_ERR_CONNECT], 1);
    assert_int_equal(s->n_err[BENCH_ERR_TIMEOUT], 1);
    assert_int_equal(s->n_err[BENCH_ERR_HTTP_5XX], 1);
    assert_int_equal(s->n_err[BENCH_ERR_HTTP_4XX], 0);
    assert_int_equal(s->ttft.h.n, 3);
    assert_true(fabs(s->ttft.h.min - 50) < 1e-9 && fabs(s->ttft.h.max - 600) < 1e-9);
    assert_int_equal(s->tpot.h.n, 2);
    assert_true(fabs(s->tpot.h.min - 50) < 1e-9 && fabs(s->tpot.h.max - 100) < 1e-9);
    assert_true(fabs(hist_mean(&s->e2e.h) - (1000 + 400 + 700) / 3.0) < 1e-9);
    /* only the second request meets ttft<=500 and tpot<=80 (the first has tpot 100) */
    assert_int_equal(s->n_good, 1);
    assert_true(fabs(s->window_s - 1.4) < 1e-9); /* sched 0 .. done 1400 ms */
    assert_true(fabs(s->rps - 3 / 1.4) < 1e-9);
    assert_int_equal(s->out_tokens, 19);
    assert_true(fabs(s->out_tps - 19 / 1.4) < 1e-9);
    assert_true(fabs(s->total_tps - (19 + 30) / 1.4) < 1e-9);
    assert_true(fabs(s->goodput_rps - 1 / 1.4) < 1e-9);
    assert_true(fabs(s->cpu_pct - 25) < 1e-9);
    assert_true(fabs(s->lag.h.max - 0.1) < 1e-9);
    free(s);
}

static void test_slo_parse(void **state) {
    (void)state;
    bench_slo s;
    assert_true(bench_slo_parse("ttft=500ms,tpot=50ms,e2e=2s", &s));
    assert_true(s.ttft_ms == 500 && s.tpot_ms == 50 && s.e2e_ms == 2000);
    assert_true(bench_slo_parse("e2e=1500", &s));
    assert_true(s.e2e_ms == 1500 && s.ttft_ms == 0);
    assert_true(bench_slo_parse("ttft=250us", &s) && fabs(s.ttft_ms - 0.25) < 1e-12);
    assert_false(bench_slo_parse("ttft", &s));
    assert_false(bench_slo_parse("latency=5ms", &s));
    assert_false(bench_slo_parse("ttft=5min", &s));
    assert_false(bench_slo_parse("ttft=-1ms", &s));
}

/* ---- workloads --------------------------------------------------------------- */

static void test_synthetic_chat(void **state) {
    (void)state;
    bench_workload_opts o = {.kind = BENCH_CHAT,
                             .model = "m",
                             .input_tokens = 100,
                             .n_prompts = 4,
                             .max_tokens = 32,
                             .ignore_eos = true,
                             .stream = true,
                             .seed = 7};
    bench_workload w;
    assert_int_equal(bench_workload_init(&w, &o), KILN_OK);
    assert_int_equal(w.n_bodies, 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *j = json_loads(w.bodies[i].json, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "model")), "m");
        assert_int_equal(json_integer_value(json_object_get(j, "max_tokens")), 32);
        assert_int_equal(json_integer_value(json_object_get(j, "min_tokens")), 32);
        assert_true(json_is_true(json_object_get(j, "ignore_eos")));
        assert_true(json_is_true(json_object_get(j, "stream")));
        assert_true(
            json_is_true(json_object_get(json_object_get(j, "stream_options"), "include_usage")));
        const char *content = json_string_value(
            json_object_get(json_array_get(json_object_get(j, "messages"), 0), "content"));
        assert_non_null(content);
        int words = 1;
        for (const char *p = content; *p; p++) words += *p == ' ';
        assert_int_equal(words, 100);
        json_decref(j);
    }
    assert_string_not_equal(w.bodies[0].json, w.bodies[1].json); /* distinct prompts */
    assert_ptr_equal(bench_workload_body(&w, 5), &w.bodies[1]);  /* cycles */
    bench_workload_free(&w);

    /* only ignore_eos (for servers that reject unknown fields), extra fields merged */
    o.eos_fields = BENCH_EOS_IGNORE_EOS;
    o.extra = json_pack("{s:f, s:s}", "temperature", 0.0, "model", "override");
    o.stream = false;
    assert_int_equal(bench_workload_init(&w, &o), KILN_OK);
    json_t *j = json_loads(w.bodies[0].json, 0, NULL);
    assert_true(json_is_true(json_object_get(j, "ignore_eos")));
    assert_null(json_object_get(j, "min_tokens"));
    assert_null(json_object_get(j, "stream"));
    assert_true(json_real_value(json_object_get(j, "temperature")) == 0.0);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "override");
    json_decref(j);
    json_decref(o.extra);
    bench_workload_free(&w);
}

static const char *write_tmp(const char *name, const char *text, char *buf, size_t cap) {
    test_tmp_path(name, buf, cap);
    FILE *f = fopen(buf, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return buf;
}

static void test_jsonl(void **state) {
    (void)state;
    char path[512];
    write_tmp("bench_prompts.jsonl",
              "{\"prompt\": \"one two three\", \"max_tokens\": 5}\n\n"
              "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"},"
              " {\"role\": \"user\", \"content\": \"hi there\"}]}\n",
              path, sizeof path);
    bench_workload_opts o = {.kind = BENCH_COMPLETIONS, .prompt_file = path, .stream = false};
    bench_workload w;
    assert_int_equal(bench_workload_init(&w, &o), KILN_OK);
    assert_int_equal(w.n_bodies, 2);
    json_t *j0 = json_loads(w.bodies[0].json, 0, NULL), *j1 = json_loads(w.bodies[1].json, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j0, "prompt")), "one two three");
    assert_int_equal(json_integer_value(json_object_get(j0, "max_tokens")), 5);
    assert_null(json_object_get(j0, "stream"));
    assert_null(json_object_get(j0, "model"));
    assert_string_equal(json_string_value(json_object_get(j1, "prompt")), "be brief\nhi there");
    assert_null(json_object_get(j1, "max_tokens")); /* none in the file or the options */
    assert_int_equal(w.bodies[0].input_tokens, 3);
    assert_int_equal(w.bodies[1].input_tokens, 4);
    json_decref(j0);
    json_decref(j1);
    bench_workload_free(&w);

    /* chat keeps the messages; --max-tokens overrides the file */
    o.kind = BENCH_CHAT;
    o.max_tokens = 9;
    assert_int_equal(bench_workload_init(&w, &o), KILN_OK);
    j0 = json_loads(w.bodies[0].json, 0, NULL);
    j1 = json_loads(w.bodies[1].json, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j0, "max_tokens")), 9);
    assert_int_equal(json_array_size(json_object_get(j1, "messages")), 2);
    json_decref(j0);
    json_decref(j1);
    bench_workload_free(&w);

    /* embeddings: 3 inputs per request */
    o.kind = BENCH_EMBEDDINGS;
    o.inputs_per_request = 3;
    assert_int_equal(bench_workload_init(&w, &o), KILN_OK);
    j0 = json_loads(w.bodies[0].json, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(j0, "input")), 3);
    json_decref(j0);
    bench_workload_free(&w);

    /* errors name the line */
    write_tmp("bench_bad.jsonl", "{\"prompt\": \"ok\"}\n{\"text\": \"no\"}\n", path, sizeof path);
    assert_int_equal(bench_workload_init(&w, &o), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "bench_bad.jsonl:2"));
    write_tmp("bench_bad.jsonl", "{\"prompt\": \"ok\"}\nnot json\n", path, sizeof path);
    assert_int_equal(bench_workload_init(&w, &o), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), ":2"));
    write_tmp("bench_bad.jsonl", "\n\n", path, sizeof path);
    assert_int_equal(bench_workload_init(&w, &o), KILN_ERR_INVALID_ARG);
    o.prompt_file = "/nonexistent/prompts.jsonl";
    assert_int_equal(bench_workload_init(&w, &o), KILN_ERR_IO);
    assert_non_null(strstr(kiln_last_error(), "/nonexistent/prompts.jsonl"));
}

static void test_synth_words(void **state) {
    (void)state;
    char buf[64];
    uint64_t rng = 1;
    size_t n = bench_synth_words(buf, sizeof buf, 1000, &rng); /* cut short by cap */
    assert_true(n < sizeof buf && strlen(buf) == n);
    rng = 1;
    n = bench_synth_words(buf, sizeof buf, 3, &rng);
    int spaces = 0;
    for (size_t i = 0; i < n; i++) spaces += buf[i] == ' ';
    assert_int_equal(spaces, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_splits),        cmocka_unit_test(test_sse_bad),
        cmocka_unit_test(test_stats_percentiles), cmocka_unit_test(test_stats_uniform),
        cmocka_unit_test(test_stats_definitions), cmocka_unit_test(test_slo_parse),
        cmocka_unit_test(test_synthetic_chat),    cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_synth_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

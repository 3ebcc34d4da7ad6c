/* test_trace.c - the trace recorder (obs/trace.h): events from several
 * threads at once, the max_events budget and its dropped count, the writer's
 * repairs (nesting, unpaired async and flow events), that nothing is
 * recorded with no session active, span chains (trace_lap), and the
 * scheduler's spans at detail=steps and detail=ops (per-layer spans of the
 * engine thread, nested in each forward pass, none needing repair). The
 * JSON it writes is read back with jansson here; tests/cli/trace.sh runs
 * the strict validator on real runs. The reader (obs/trace_doc.h): a
 * written trace - plain and gzip (a ".gz" path) - read back with its spans,
 * threads and summary; the array form; bad JSON and a truncated gzip file
 * fail naming the place. */
#include "testutil.h"

#include "obs/trace.h"
#include "obs/trace_doc.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define N_THREADS 4
#define N_PER     2000

static json_t *load(const char *path) {
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) fail_msg("%s: %s (line %d)", path, err.text, err.line);
    return j;
}

static size_t count_ph(json_t *root, const char *ph, const char *name) {
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(json_object_get(root, "traceEvents"), i, e) {
        if (strcmp(json_string_value(json_object_get(e, "ph")), ph)) continue;
        if (name && strcmp(json_string_value(json_object_get(e, "name")), name)) continue;
        n++;
    }
    return n;
}

static void *worker(void *arg) {
    char nm[16];
    snprintf(nm, sizeof nm, "worker-%d", (int)(intptr_t)arg);
    trace_thread_name(nm);
    for (int i = 0; i < N_PER; i++) {
        int64_t t0 = trace_now();
        trace_arg a[2] = {TRACE_I("i", i), TRACE_D("x", 0.5 * i)};
        trace_span("inner", "test", t0, trace_now() - t0, a, 2);
        trace_span("outer", "test", t0, trace_now() - t0 + 10, NULL, 0);
        if (i % 100 == 0) trace_counter("progress", &a[0], 1);
    }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    kiln_status st;
    trace_session *s = trace_start(&(trace_opts){.max_events = 1 << 20}, &st);
    assert_non_null(s);
    assert_true(trace_on());
    assert_null(trace_start(NULL, &st)); /* one at a time */
    assert_int_equal(st, KILN_ERR_BUSY);
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    trace_stop(s);
    assert_false(trace_on());
    trace_stats ts;
    trace_get_stats(s, &ts);
    int64_t want = (int64_t)N_THREADS * (2 * N_PER + N_PER / 100);
    assert_int_equal(ts.events, want);
    assert_int_equal(ts.dropped, 0);
    char path[512];
    json_t *other = json_pack("{s:s,s:i}", "model", "none", "threads", N_THREADS);
    assert_int_equal(trace_write(s, test_tmp_path("trace_threads.json", path, sizeof path), other),
                     0);
    json_decref(other);
    json_t *j = load(path);
    assert_string_equal(json_string_value(json_object_get(j, "displayTimeUnit")), "ms");
    json_t *od = json_object_get(j, "otherData");
    assert_string_equal(json_string_value(json_object_get(od, "model")), "none");
    assert_int_equal(json_integer_value(json_object_get(od, "dropped_events")), 0);
    assert_int_equal(count_ph(j, "X", "inner"), N_THREADS * N_PER);
    assert_int_equal(count_ph(j, "C", NULL), N_THREADS * N_PER / 100);
    assert_int_equal(count_ph(j, "M", "thread_name"), N_THREADS);
    assert_int_equal(count_ph(j, "M", "process_name"), 1);
    json_decref(j);
    trace_free(s);
}

static void test_dropped(void **state) {
    (void)state;
    trace_session *s = trace_start(&(trace_opts){.max_events = 100}, NULL);
    assert_non_null(s);
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    trace_stats ts;
    trace_get_stats(s, &ts);
    assert_int_equal(ts.events, 100);
    assert_int_equal(ts.events + ts.dropped, (int64_t)N_THREADS * (2 * N_PER + N_PER / 100));
    char path[512];
    assert_int_equal(trace_write(s, test_tmp_path("trace_dropped.json", path, sizeof path), NULL),
                     0);
    json_t *j = load(path);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "otherData"), "dropped_events")),
        ts.dropped);
    json_decref(j);
    trace_free(s);
}

static void test_disabled(void **state) {
    (void)state;
    assert_false(trace_on());
    assert_false(trace_on_ops());
    /* recording with no session does nothing (and does not crash) */
    trace_span("x", "t", trace_now(), 5, NULL, 0);
    trace_async_begin("a", "t", 1);
    trace_counter("c", &TRACE_I("v", 1), 1);
    /* the disabled path is one load: a million checks take well under a ms each */
    int64_t t0 = trace_now();
    volatile int hits = 0;
    for (int i = 0; i < 1000000; i++)
        if (trace_on()) hits++;
    int64_t dt = trace_now() - t0;
    assert_int_equal(hits, 0);
    print_message("disabled trace_on(): %.2f ns per check\n", (double)dt / 1e6);
    assert_true(dt < 100 * 1000000LL); /* < 100 ns each even under sanitizers */
    /* events recorded before a session are not in it */
    trace_session *s = trace_start(&(trace_opts){.detail = TRACE_DETAIL_OPS}, NULL);
    assert_true(trace_on_ops());
    trace_stats ts;
    trace_get_stats(s, &ts);
    assert_int_equal(ts.events, 0);
    trace_free(s);
    assert_false(trace_on());
}

static void test_repairs(void **state) {
    (void)state;
    trace_session *s = trace_start(NULL, NULL);
    int64_t t = trace_now();
    trace_span("parent", "t", t, 1000, NULL, 0);
    trace_span("child", "t", t + 500, 800, NULL, 0); /* overruns its parent: cut */
    trace_span("same", "t", t, 400, NULL, 0);        /* same start, shorter: nested */
    trace_async_begin("queued", "req", 7);
    trace_async_end("queued", "req", 7);
    trace_async_begin("decode", "req", 7); /* never ended: closed at stop */
    trace_async_end("prefill", "req", 9);  /* never begun: dropped */
    trace_flow_start("enqueue", 3);
    trace_flow_end("enqueue", 3);
    trace_flow_start("enqueue", 4); /* no end: dropped */
    trace_flow_end("other", 5);     /* no start: dropped */
    char path[512];
    assert_int_equal(trace_write(s, test_tmp_path("trace_repairs.json", path, sizeof path), NULL),
                     0);
    trace_stats ts;
    trace_get_stats(s, &ts);
    assert_int_equal(ts.dropped_flows, 2);
    assert_int_equal(ts.fixed_nesting, 1);
    json_t *j = load(path);
    assert_int_equal(count_ph(j, "b", NULL), 2);
    assert_int_equal(count_ph(j, "e", NULL), 2);
    assert_int_equal(count_ph(j, "s", NULL), 1);
    assert_int_equal(count_ph(j, "f", NULL), 1);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "traceEvents"), i, e) {
        if (!strcmp(json_string_value(json_object_get(e, "name")), "child"))
            assert_true(json_number_value(json_object_get(e, "dur")) <= 0.5 + 1e-9);
    }
    json_decref(j);
    trace_free(s);
}

/* A trace of known spans written plain and as .gz, read back by trace_doc. */
static void test_doc(void **state) {
    (void)state;
    trace_session *s = trace_start(NULL, NULL);
    trace_thread_name("doc-main");
    int64_t t = trace_now();
    for (int i = 0; i < 10; i++) /* steps of 1..10 us, each with a 100 ns sample */
        trace_span("step", "engine", t + i * 20000, (i + 1) * 1000, NULL, 0);
    for (int i = 0; i < 10; i++) trace_span("sample", "engine", t + i * 20000 + 10, 100, NULL, 0);
    trace_async_begin("queued", "req", 1);
    trace_async_end("queued", "req", 1);
    char plain[512], gz[512];
    test_tmp_path("trace_doc.json", plain, sizeof plain);
    test_tmp_path("trace_doc.json.gz", gz, sizeof gz);
    assert_int_equal(trace_write(s, plain, NULL), KILN_OK);
    assert_int_equal(trace_write(s, gz, NULL), KILN_OK);
    trace_free(s);
    size_t n = 0;
    char *head = test_read_file(gz, &n);
    assert_true(n > 2 && (unsigned char)head[0] == 0x1f && (unsigned char)head[1] == 0x8b);
    free(head);
    const char *paths[2] = {plain, gz};
    for (int k = 0; k < 2; k++) {
        trace_doc d;
        assert_int_equal(trace_doc_load(&d, paths[k]), KILN_OK);
        assert_int_equal(d.n_s, 2);
        trace_doc_series *st = trace_doc_find(&d, "step");
        assert_non_null(st);
        assert_int_equal(st->n, 10);
        trace_doc_stats x;
        trace_doc_series_stats(st, &x);
        assert_int_equal(x.count, 10);
        assert_true(fabs(x.total - 0.055) < 1e-9 && fabs(x.max - 0.010) < 1e-9);
        assert_true(fabs(x.p50 - 0.005) < 1e-9 && fabs(x.p99 - 0.010) < 1e-9);
        trace_doc_thread *th = NULL;
        for (size_t i = 0; i < d.n_th; i++)
            if (d.th[i].name && !strcmp(d.th[i].name, "doc-main")) th = &d.th[i];
        assert_non_null(th);
        assert_true(fabs(trace_doc_busy_ms(th) - 0.055) < 1e-9); /* samples inside the steps */
        json_t *j = trace_doc_summary_json(&d, 1);
        json_t *sp = json_object_get(j, "spans");
        assert_int_equal(json_array_size(sp), 1); /* the largest total only */
        assert_string_equal(json_string_value(json_object_get(json_array_get(sp, 0), "name")),
                            "step");
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(j, "step_ms"), "count")), 10);
        json_decref(j);
        trace_doc_free(&d);
    }
    /* a truncated gzip stream: a format error naming the file */
    size_t len = 0;
    char *all = test_read_file(gz, &len);
    char cut[512];
    test_tmp_path("trace_doc_cut.json.gz", cut, sizeof cut);
    FILE *f = fopen(cut, "wb");
    assert_non_null(f);
    fwrite(all, 1, len / 2, f);
    fclose(f);
    free(all);
    trace_doc d;
    assert_int_equal(trace_doc_load(&d, cut), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "trace_doc_cut.json.gz"));
    assert_int_equal(trace_doc_load(&d, "/nonexistent/trace.json"), KILN_ERR_IO);
    remove(plain);
    remove(gz);
    remove(cut);
}

/* trace_doc_parse on hand-written documents: the array form, values it
 * skips, and errors with their byte offsets. */
static void test_doc_parse(void **state) {
    (void)state;
    static const char arr[] =
        " [ {\"ph\":\"X\",\"name\":\"a\",\"pid\":1,\"tid\":2,\"ts\":1000,\"dur\":500},\n"
        "   {\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":1,\"tid\":2,\"args\":{\"name\":\"w\"}},"
        "   {\"ph\":\"i\",\"name\":\"late\",\"pid\":1,\"tid\":2,\"ts\":3000} ] ";
    trace_doc d;
    assert_int_equal(trace_doc_parse(&d, arr, strlen(arr), "arr"), KILN_OK);
    assert_int_equal(d.n_s, 1);
    assert_int_equal(d.n_th, 1);
    assert_string_equal(d.th[0].name, "w");
    assert_true(fabs(d.t_min - 1.0) < 1e-12 && fabs(d.t_max - 3.0) < 1e-12);
    trace_doc_free(&d);
    static const char obj[] = "{\"displayTimeUnit\":\"ms\",\"n\":12,\"otherData\":"
                              "{\"dropped_events\":7},\"traceEvents\":[],\"x\":[1,{\"y\":2}]}";
    assert_int_equal(trace_doc_parse(&d, obj, strlen(obj), "obj"), KILN_OK);
    assert_int_equal(d.dropped, 7);
    assert_int_equal(d.n_s, 0);
    trace_doc_free(&d);
    static const char *const bad[] = {
        "{\"traceEvents\":[{\"ph\":\"X\"} {}]}", /* no comma */
        "{\"displayTimeUnit\":\"ms\"}",          /* no events */
        "{\"traceEvents\":[{\"ph\":]}",          /* bad value */
        "{\"traceEvents\":[]} x",                /* trailing data */
        "42",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(trace_doc_parse(&d, bad[i], strlen(bad[i]), "bad"), KILN_ERR_FORMAT);
        assert_non_null(strstr(kiln_last_error(), "bad: bad trace JSON at byte"));
    }
}

/* A span chain: off at detail=steps (nothing recorded), back-to-back phases
 * inside their groups at detail=ops, nothing to repair; kept spans are
 * recorded in batches within max_events, and those that began before the
 * session recording them are left out. */
static void test_lap(void **state) {
    (void)state;
    trace_lap k;
    trace_lap_start(&k, trace_on_ops()); /* no session: off */
    assert_int_equal(k.t, 0);
    trace_lap_span(&k, "p", "op", NULL);
    trace_lap_close(&k, "g", "op", NULL);
    trace_lap_end(&k);
    trace_session *s = trace_start(&(trace_opts){.detail = TRACE_DETAIL_STEPS}, NULL);
    assert_non_null(s);
    trace_lap_start(&k, trace_on_ops());
    trace_lap_span(&k, "p", "op", NULL);
    trace_lap_end(&k);
    trace_stats st;
    trace_get_stats(s, &st);
    assert_int_equal(st.events, 0);
    trace_free(s);

    s = trace_start(&(trace_opts){.detail = TRACE_DETAIL_OPS}, NULL);
    trace_lap_start(&k, trace_on_ops());
    assert_true(k.t > 0);
    trace_arg a = TRACE_I("layer", 0);
    for (int il = 0; il < 3; il++) {
        a = TRACE_I("layer", il);
        trace_lap_open(&k);
        trace_lap_span(&k, "attn_qkv", "op", &a);
        trace_lap_span(&k, "attn_core", "op", &a);
        trace_lap_close(&k, "attention", "op", &a);
        trace_lap_open(&k);
        trace_lap_span(&k, "ffn_down", "op", &a);
        trace_lap_close(&k, "ffn", "op", &a);
    }
    trace_get_stats(s, &st);
    assert_int_equal(st.events, 0); /* kept until the chain ends (or fills) */
    trace_lap_end(&k);
    char path[512];
    assert_int_equal(trace_write(s, test_tmp_path("trace_lap.json", path, sizeof path), NULL), 0);
    trace_get_stats(s, &st);
    assert_int_equal(st.events, 3 * 5);
    assert_int_equal(st.fixed_nesting, 0);
    trace_free(s);
    json_t *j = load(path);
    assert_int_equal(count_ph(j, "X", "attention"), 3);
    assert_int_equal(count_ph(j, "X", "attn_core"), 3);
    /* each group spans exactly its phases: the sum of the phases' durations */
    double group = 0, phases = 0, last_end = -1;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "traceEvents"), i, e) {
        const char *nm = json_string_value(json_object_get(e, "name"));
        if (strcmp(json_string_value(json_object_get(e, "ph")), "X")) continue;
        double ts = json_number_value(json_object_get(e, "ts"));
        double dur = json_number_value(json_object_get(e, "dur"));
        json_int_t layer = json_integer_value(json_object_get(json_object_get(e, "args"), "layer"));
        assert_true(layer >= 0 && layer < 3);
        if (!strcmp(nm, "attention") || !strcmp(nm, "ffn")) {
            group += dur;
            continue;
        }
        if (last_end >= 0) assert_true(fabs(ts - last_end) < 1e-6); /* back to back */
        last_end = ts + dur;
        phases += dur;
    }
    assert_true(fabs(group - phases) < 1e-6);
    json_decref(j);

    /* over the budget: kept, then dropped, in one batch */
    s = trace_start(&(trace_opts){.detail = TRACE_DETAIL_OPS, .max_events = 10}, NULL);
    trace_lap_start(&k, trace_on_ops());
    for (int r = 0; r < 30; r++) trace_lap_span(&k, "phase", "op", NULL);
    trace_lap_end(&k);
    trace_get_stats(s, &st);
    assert_int_equal(st.events, 10);
    assert_int_equal(st.dropped, 20);
    trace_free(s);

    /* spans kept during one session are not recorded into the next */
    s = trace_start(&(trace_opts){.detail = TRACE_DETAIL_OPS}, NULL);
    trace_lap_start(&k, trace_on_ops());
    trace_lap_span(&k, "old", "op", NULL);
    trace_free(s);
    s = trace_start(&(trace_opts){.detail = TRACE_DETAIL_OPS}, NULL);
    trace_lap_span(&k, "straddles", "op", NULL); /* began before this session too */
    trace_lap_end(&k);
    trace_get_stats(s, &st);
    assert_int_equal(st.events + st.dropped, 0);
    trace_free(s);

    /* the cost of a recorded phase (clock reading and event): docs/perf.md */
    enum { N = 100000 };
    s = trace_start(&(trace_opts){.detail = TRACE_DETAIL_OPS, .max_events = N}, NULL);
    trace_lap_start(&k, trace_on_ops());
    int64_t t0 = trace_now();
    for (int r = 0; r < N; r++) trace_lap_span(&k, "phase", "op", &a);
    trace_lap_end(&k);
    int64_t dt = trace_now() - t0;
    trace_get_stats(s, &st);
    assert_int_equal(st.events, N);
    print_message("a recorded trace_lap_span: %.1f ns\n", (double)dt / N);
    trace_free(s);
}

/* Per-layer spans of a scheduler at detail=ops: on the engine thread only,
 * n_layer attention and ffn spans (each with its phases) inside every
 * forward span, and lm_head once per forward (every step wants logits). */
static void check_ops(json_t *j, int n_layer) {
    size_t i, k;
    json_t *e, *f;
    size_t n_fwd = 0;
    json_t *evs = json_object_get(j, "traceEvents");
    json_array_foreach(evs, i, f) {
        if (strcmp(json_string_value(json_object_get(f, "name")), "forward")) continue;
        n_fwd++;
        json_int_t tid = json_integer_value(json_object_get(f, "tid"));
        double t0 = json_number_value(json_object_get(f, "ts"));
        double t1 = t0 + json_number_value(json_object_get(f, "dur"));
        int attn = 0, ffn = 0, head = 0, core = 0;
        json_array_foreach(evs, k, e) {
            if (strcmp(json_string_value(json_object_get(e, "ph")), "X")) continue;
            if (json_integer_value(json_object_get(e, "tid")) != tid) continue;
            double ts = json_number_value(json_object_get(e, "ts"));
            if (ts < t0 || ts + json_number_value(json_object_get(e, "dur")) > t1 + 1e-6) continue;
            const char *nm = json_string_value(json_object_get(e, "name"));
            attn += !strcmp(nm, "attention");
            ffn += !strcmp(nm, "ffn");
            core += !strcmp(nm, "attn_core");
            head += !strcmp(nm, "lm_head");
        }
        assert_int_equal(attn, n_layer);
        assert_int_equal(ffn, n_layer);
        assert_int_equal(core, n_layer);
        assert_int_equal(head, 1);
    }
    assert_true(n_fwd > 0);
    assert_int_equal(count_ph(j, "X", "attention"), n_fwd * (size_t)n_layer);
    assert_int_equal(count_ph(j, "X", "lm_head"), n_fwd);
}

/* The scheduler's instrumentation: steps with their arguments, per-request
 * async slices queued -> prefill -> decode, enqueue flows, counters. */
static atomic_int g_done;

static void on_ev(void *user, const kiln_sched_event *ev) {
    (void)user;
    if (ev->kind == KILN_SCHED_DONE) atomic_fetch_add(&g_done, 1);
}

static void sched_trace(trace_detail detail) {
    char mpath[512], path[512];
    struct synth_params sp = {
        .hp = test_tiny_decoder_hp(256), .type = KILN_TYPE_F32, .seed = 7, .n_threads = 1};
    test_tmp_path("trace-synth.gguf", mpath, sizeof mpath);
    assert_int_equal(synth_write(&sp, mpath), KILN_OK);
    kiln_model *m = kiln_model_load(mpath, NULL);
    assert_non_null(m);
    kiln_sched_params pp = kiln_sched_default_params();
    pp.n_slots = 2;
    pp.n_ctx = 256;
    pp.n_threads = detail == TRACE_DETAIL_OPS ? 2 : 1; /* ops: thread 0 of a pool records */
    trace_session *ts = trace_start(&(trace_opts){.detail = detail}, NULL);
    assert_non_null(ts);
    kiln_sched *s = kiln_sched_create(m, &pp, NULL);
    assert_non_null(s);
    kiln_gen_params gp = kiln_gen_default_params();
    gp.n_predict = 8;
    gp.stop_at_eog = 0;
    int32_t ids[4][6] = {{1, 5, 6, 7, 8, 9}, {1, 10, 11}, {1, 12, 13, 14}, {1, 20}};
    int32_t lens[4] = {6, 3, 4, 2};
    atomic_store(&g_done, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(kiln_sched_submit(s, ids[i], lens[i], &gp, on_ev, NULL, NULL), KILN_OK);
    while (atomic_load(&g_done) < 4) usleep(1000);
    kiln_sched_destroy(s);
    assert_int_equal(trace_write(ts, test_tmp_path("trace_sched.json", path, sizeof path), NULL),
                     KILN_OK);
    trace_stats st;
    trace_get_stats(ts, &st);
    assert_int_equal(st.dropped_flows, 0);
    assert_int_equal(st.fixed_nesting, 0);
    trace_free(ts);
    json_t *j = load(path);
    if (detail == TRACE_DETAIL_OPS)
        check_ops(j, sp.hp.n_layer);
    else
        assert_int_equal(count_ph(j, "X", "attention"), 0);
    size_t steps = count_ph(j, "X", "step");
    assert_true(steps >= 8);
    assert_int_equal(count_ph(j, "X", "forward"), steps);
    assert_int_equal(count_ph(j, "C", "scheduler"), steps);
    assert_int_equal(count_ph(j, "b", "queued"), 4);
    assert_int_equal(count_ph(j, "e", "queued"), 4);
    assert_int_equal(count_ph(j, "b", "decode"), 4);
    assert_int_equal(count_ph(j, "e", "decode"), 4);
    assert_int_equal(count_ph(j, "s", "enqueue"), 4);
    assert_int_equal(count_ph(j, "f", "enqueue"), 4);
    assert_int_equal(count_ph(j, "X", "sample"), 4 * 8);
    size_t i;
    json_t *e;
    bool named = false;
    json_array_foreach(json_object_get(j, "traceEvents"), i, e) {
        const char *nm = json_string_value(json_object_get(e, "name"));
        if (!strcmp(nm, "thread_name") &&
            !strcmp(json_string_value(json_object_get(json_object_get(e, "args"), "name")),
                    "engine"))
            named = true;
        if (!strcmp(nm, "step")) {
            json_t *a = json_object_get(e, "args");
            assert_true(json_integer_value(json_object_get(a, "batch")) >= 1);
            assert_non_null(json_object_get(a, "kv_used"));
            assert_non_null(json_object_get(a, "prefill_tokens"));
        }
    }
    assert_true(named);
    json_decref(j);
    kiln_model_free(m);
    remove(mpath);
}

static void test_sched_trace(void **state) {
    (void)state;
    sched_trace(TRACE_DETAIL_STEPS);
}

static void test_sched_trace_ops(void **state) {
    (void)state;
    sched_trace(TRACE_DETAIL_OPS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_dropped),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_repairs),
        cmocka_unit_test(test_lap),
        cmocka_unit_test(test_sched_trace),
        cmocka_unit_test(test_sched_trace_ops),
        cmocka_unit_test(test_doc),
        cmocka_unit_test(test_doc_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

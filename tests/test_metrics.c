/* test_metrics.c - the metrics registry and its Prometheus text writer:
 * exact expositions of counters, gauges and histograms with and without
 * labels, escaping, cumulative bucket counts, name checks, misuse dropped,
 * the series cap, scrape callbacks, exact totals under 8 threads updating
 * while another scrapes, the process statistics, and validity under the real
 * parser and linter (`promtool check metrics`, skipped with a printed reason
 * when promtool is not on PATH). No shared data. */
#include "testutil.h"

#include "base/time.h"
#include "obs/hist.h"
#include "obs/metrics.h"
#include "obs/proc.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *scrape(metrics *m) {
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(metrics_write(m, &out, &len), KILN_OK);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));
    return out;
}

static void test_counter_gauge(void **state) {
    (void)state;
    metrics *m = metrics_create();
    assert_non_null(m);
    metric *req = metrics_counter(m, "kiln_requests_total", "Requests served.", NULL);
    const char *const labels[] = {"model", "code", NULL};
    metric *resp =
        metrics_counter(m, "kiln_responses_total", "Responses by model and code.", labels);
    metric *depth = metrics_gauge(m, "kiln_queue_depth", "Requests waiting.", NULL);
    metric *empty = metrics_gauge(m, "kiln_unused", "Never set.", (const char *const[]){"x", NULL});
    assert_non_null(req);
    assert_non_null(resp);
    assert_non_null(depth);
    assert_non_null(empty);

    metric_inc(req, NULL, 1);
    metric_inc(req, NULL, 2);
    /* series in creation order, not sorted */
    metric_inc(resp, (const char *const[]){"tiny", "200", NULL}, 1);
    metric_inc(resp, (const char *const[]){"big", "500", NULL}, 1);
    metric_inc(resp, (const char *const[]){"tiny", "200", NULL}, 4);
    metric_set(depth, NULL, 7);
    metric_inc(depth, NULL, -2.5);

    assert_true(metric_value(req, NULL) == 3);
    assert_true(metric_value(resp, (const char *const[]){"tiny", "200", NULL}) == 5);
    assert_true(metric_value(resp, (const char *const[]){"big", "500", NULL}) == 1);
    assert_true(isnan(metric_value(resp, (const char *const[]){"big", "200", NULL})));
    assert_true(metric_value(depth, NULL) == 4.5);
    assert_true(isnan(metric_value(empty, (const char *const[]){"a", NULL})));

    char *out = scrape(m);
    const char *want = "# HELP kiln_requests_total Requests served.\n"
                       "# TYPE kiln_requests_total counter\n"
                       "kiln_requests_total 3\n"
                       "# HELP kiln_responses_total Responses by model and code.\n"
                       "# TYPE kiln_responses_total counter\n"
                       "kiln_responses_total{model=\"tiny\",code=\"200\"} 5\n"
                       "kiln_responses_total{model=\"big\",code=\"500\"} 1\n"
                       "# HELP kiln_queue_depth Requests waiting.\n"
                       "# TYPE kiln_queue_depth gauge\n"
                       "kiln_queue_depth 4.5\n"
                       "# HELP kiln_unused Never set.\n"
                       "# TYPE kiln_unused gauge\n";
    assert_string_equal(out, want);
    free(out);
    metrics_destroy(m);
}

/* Values as Go's ParseFloat reads them, shortest exact form. */
static void test_number_format(void **state) {
    (void)state;
    metrics *m = metrics_create();
    const char *const l[] = {"v", NULL};
    metric *g = metrics_gauge(m, "kiln_numbers", "Formatting.", l);
    metric_set(g, (const char *const[]){"a", NULL}, 0.1);
    metric_set(g, (const char *const[]){"b", NULL}, 1e20);
    metric_set(g, (const char *const[]){"c", NULL}, -3);
    metric_set(g, (const char *const[]){"d", NULL}, NAN);
    metric_set(g, (const char *const[]){"e", NULL}, INFINITY);
    metric_set(g, (const char *const[]){"f", NULL}, -INFINITY);
    metric_set(g, (const char *const[]){"g", NULL}, 1.0 / 3);
    metric_set(g, (const char *const[]){"h", NULL}, 123456789012.0);
    char *out = scrape(m);
    const char *want = "# HELP kiln_numbers Formatting.\n"
                       "# TYPE kiln_numbers gauge\n"
                       "kiln_numbers{v=\"a\"} 0.1\n"
                       "kiln_numbers{v=\"b\"} 1e+20\n"
                       "kiln_numbers{v=\"c\"} -3\n"
                       "kiln_numbers{v=\"d\"} NaN\n"
                       "kiln_numbers{v=\"e\"} +Inf\n"
                       "kiln_numbers{v=\"f\"} -Inf\n"
                       "kiln_numbers{v=\"g\"} 0.33333333333333331\n"
                       "kiln_numbers{v=\"h\"} 123456789012\n";
    assert_string_equal(out, want);
    free(out);
    metrics_destroy(m);
}

static void test_histogram(void **state) {
    (void)state;
    metrics *m = metrics_create();
    const double bounds[] = {0.01, 0.1, 1};
    metric *lat = metrics_histogram(m, "kiln_latency_seconds", "Latency.", NULL, bounds, 3);
    const char *const l[] = {"route", NULL};
    metric *byr =
        metrics_histogram(m, "kiln_route_latency_seconds", "Latency by route.", l, bounds, 3);
    assert_non_null(lat);
    assert_non_null(byr);
    /* values well away from the bounds: counts exact */
    const double v[] = {0.005, 0.05, 0.05, 0.5, 5, 0.0099, 0.101};
    double sum = 0;
    for (int i = 0; i < 7; i++) {
        metric_observe(lat, NULL, v[i]);
        sum += v[i];
    }
    metric_observe(byr, (const char *const[]){"/v1/chat", NULL}, 0.2);
    metric_observe(byr, (const char *const[]){"/v1/embed", NULL}, 0.002);
    metric_observe(byr, (const char *const[]){"/v1/chat", NULL}, 2);

    assert_int_equal(metric_count(lat, NULL), 7);
    assert_int_equal(metric_count(byr, (const char *const[]){"/v1/chat", NULL}), 2);
    assert_int_equal(metric_count(byr, (const char *const[]){"/nope", NULL}), 0);
    double med = metric_quantile(lat, NULL, 0.5); /* 4th of 7 sorted: 0.05 */
    assert_true(fabs(med - 0.05) <= 0.05 * 0.01);
    assert_true(metric_quantile(lat, NULL, 1) == 5);
    assert_true(isnan(metric_quantile(byr, (const char *const[]){"/nope", NULL}, 0.5)));
    assert_true(isnan(metric_value(lat, NULL)));

    char *out = scrape(m);
    /* the sum is checked by value below; SUM stands for it here */
    const char *want = "# HELP kiln_latency_seconds Latency.\n"
                       "# TYPE kiln_latency_seconds histogram\n"
                       "kiln_latency_seconds_bucket{le=\"0.01\"} 2\n"
                       "kiln_latency_seconds_bucket{le=\"0.1\"} 4\n"
                       "kiln_latency_seconds_bucket{le=\"1\"} 6\n"
                       "kiln_latency_seconds_bucket{le=\"+Inf\"} 7\n"
                       "kiln_latency_seconds_sum SUM\n"
                       "kiln_latency_seconds_count 7\n"
                       "# HELP kiln_route_latency_seconds Latency by route.\n"
                       "# TYPE kiln_route_latency_seconds histogram\n"
                       "kiln_route_latency_seconds_bucket{route=\"/v1/chat\",le=\"0.01\"} 0\n"
                       "kiln_route_latency_seconds_bucket{route=\"/v1/chat\",le=\"0.1\"} 0\n"
                       "kiln_route_latency_seconds_bucket{route=\"/v1/chat\",le=\"1\"} 1\n"
                       "kiln_route_latency_seconds_bucket{route=\"/v1/chat\",le=\"+Inf\"} 2\n"
                       "kiln_route_latency_seconds_sum{route=\"/v1/chat\"} 2.2\n"
                       "kiln_route_latency_seconds_count{route=\"/v1/chat\"} 2\n"
                       "kiln_route_latency_seconds_bucket{route=\"/v1/embed\",le=\"0.01\"} 1\n"
                       "kiln_route_latency_seconds_bucket{route=\"/v1/embed\",le=\"0.1\"} 1\n"
                       "kiln_route_latency_seconds_bucket{route=\"/v1/embed\",le=\"1\"} 1\n"
                       "kiln_route_latency_seconds_bucket{route=\"/v1/embed\",le=\"+Inf\"} 1\n"
                       "kiln_route_latency_seconds_sum{route=\"/v1/embed\"} 0.002\n"
                       "kiln_route_latency_seconds_count{route=\"/v1/embed\"} 1\n";
    char *sum_line = strstr(out, "kiln_latency_seconds_sum ");
    assert_non_null(sum_line);
    assert_true(strtod(sum_line + strlen("kiln_latency_seconds_sum "), NULL) == sum);
    const char *want_sum = strstr(want, "kiln_latency_seconds_sum ");
    size_t head = (size_t)(want_sum - want);
    assert_int_equal(strncmp(out, want, head), 0);
    assert_string_equal(strchr(sum_line, '\n'), strchr(want_sum, '\n'));
    free(out);

    /* the standard bounds are ascending and as documented */
    assert_int_equal(metrics_n_latency_bounds, 24);
    assert_true(metrics_latency_bounds[0] == 0.001);
    assert_true(metrics_latency_bounds[metrics_n_latency_bounds - 1] == 960);
    assert_int_equal(metrics_n_size_bounds, 11);
    for (int i = 0; i < metrics_n_size_bounds; i++)
        assert_true(metrics_size_bounds[i] == (double)(1 << i));
    metric *std = metrics_histogram(m, "kiln_std_seconds", "Standard bounds.", NULL,
                                    metrics_latency_bounds, metrics_n_latency_bounds);
    assert_non_null(std);
    /* one value in the middle of each gap between bounds: the count at each
     * bound is exactly the number of gaps below it */
    for (int i = 0; i < metrics_n_latency_bounds; i++) {
        double lo = i ? metrics_latency_bounds[i - 1] : 0;
        metric_observe(std, NULL, 0.5 * (lo + metrics_latency_bounds[i]));
    }
    out = scrape(m);
    for (int i = 0; i < metrics_n_latency_bounds; i++) {
        char line[128];
        char le[32];
        snprintf(le, sizeof le, "%.15g", metrics_latency_bounds[i]);
        snprintf(line, sizeof line, "kiln_std_seconds_bucket{le=\"%s\"} %d\n", le, i + 1);
        assert_non_null(strstr(out, line));
    }
    free(out);
    metrics_destroy(m);
}

/* The exported bucket counts equal hist_count_le at every bound, bounds on
 * and beside recorded values and bucket edges included. */
static hist ref; /* 64 KiB: not on the stack */

static void test_buckets_match_hist(void **state) {
    (void)state;
    enum { NV = 3000, NB = 60 };
    double bounds[NB];
    uint64_t rng = 99;
    hist_init(&ref);
    metrics *m = metrics_create();
    double v[NV];
    for (int i = 0; i < NV; i++) {
        v[i] = i % 50 == 0 ? 0 : exp(-9 + 12 * (double)(test_rand_u64(&rng) >> 11) * 0x1p-53);
        hist_record(&ref, v[i]);
    }
    /* ascending bounds: some at recorded values, some at bucket edges and
     * midpoints, some below the minimum and above the maximum */
    double b = 0;
    for (int i = 0; i < NB; i++) {
        double cand;
        switch (i % 4) {
        case 0:
            cand = v[test_rand_u64(&rng) % NV];
            break;
        case 1:
            cand = hist_bucket_lo(hist_bucket(b * 1.3 + 1e-5));
            break;
        case 2: {
            int k = hist_bucket(b * 1.2 + 1e-5);
            cand = 0.5 * (hist_bucket_lo(k) + hist_bucket_hi(k));
            break;
        }
        default:
            cand = b * 1.5 + 1e-5;
            break;
        }
        b = cand > b ? cand : nextafter(b, INFINITY);
        if (i == 0) b = 0;
        bounds[i] = b;
    }
    assert_true(bounds[NB - 1] > ref.max); /* the walk passed every value */
    metric *h = metrics_histogram(m, "kiln_match_seconds", "Match.", NULL, bounds, NB);
    assert_non_null(h);
    for (int i = 0; i < NV; i++) metric_observe(h, NULL, v[i]);
    char *out = scrape(m);
    const char *p = out;
    for (int i = 0; i < NB; i++) {
        p = strstr(p, "kiln_match_seconds_bucket{le=\"");
        assert_non_null(p);
        p += strlen("kiln_match_seconds_bucket{le=\"");
        char *end;
        double le = strtod(p, &end);
        assert_true(le == bounds[i]); /* written exactly */
        assert_true(end[0] == '"' && end[1] == '}');
        unsigned long long c = strtoull(end + 2, NULL, 10);
        if (c != hist_count_le(&ref, bounds[i]))
            print_message("bound %d (%.17g): %llu, hist_count_le %llu\n", i, bounds[i], c,
                          (unsigned long long)hist_count_le(&ref, bounds[i]));
        assert_true(c == hist_count_le(&ref, bounds[i]));
    }
    free(out);
    metrics_destroy(m);
}

static void test_escaping(void **state) {
    (void)state;
    metrics *m = metrics_create();
    const char *const l[] = {"path", NULL};
    metric *g =
        metrics_gauge(m, "kiln_escape_test", "Help with \\ backslash\nand newline \"q\".", l);
    metric_set(g, (const char *const[]){"a\\b\"c\nd", NULL}, 1);
    metric_set(g, (const char *const[]){"bad\xff utf8 \xc3\xa9", NULL}, 2);
    metric_set(g, (const char *const[]){"", NULL}, 3);
    char *out = scrape(m);
    const char *want = "# HELP kiln_escape_test Help with \\\\ backslash\\nand newline \"q\".\n"
                       "# TYPE kiln_escape_test gauge\n"
                       "kiln_escape_test{path=\"a\\\\b\\\"c\\nd\"} 1\n"
                       "kiln_escape_test{path=\"bad\xef\xbf\xbd utf8 \xc3\xa9\"} 2\n"
                       "kiln_escape_test{path=\"\"} 3\n";
    assert_string_equal(out, want);
    free(out);
    metrics_destroy(m);
}

static void test_bad_names(void **state) {
    (void)state;
    metrics *m = metrics_create();
    const char *const none[] = {NULL};
    const char *const dup[] = {"a", "a", NULL};
    const char *const reserved[] = {"__name", NULL};
    const char *const camel[] = {"modelName", NULL};
    const char *const le[] = {"le", NULL};
    const double asc[] = {1, 2}, desc[] = {2, 1}, nanb[] = {1, NAN}, infb[] = {1, INFINITY},
                 neg[] = {-1, 1};

    assert_null(metrics_counter(m, "kiln_requests", "No _total.", NULL));
    assert_non_null(strstr(kiln_last_error(), "_total"));
    assert_null(metrics_gauge(m, "kiln_things_total", "Gauge with _total.", NULL));
    assert_null(metrics_counter(m, "", "Empty.", NULL));
    assert_null(metrics_counter(m, NULL, "Null.", NULL));
    assert_null(metrics_counter(m, "1kiln_total", "Digit first.", NULL));
    assert_null(metrics_counter(m, "kiln-requests_total", "Dash.", NULL));
    assert_null(metrics_counter(m, "kiln requests_total", "Space.", NULL));
    assert_null(metrics_counter(m, "kilnRequests_total", "Camel case.", NULL));
    assert_null(metrics_counter(m, "kiln:requests_total", "Colon.", NULL));
    assert_null(metrics_counter(m, "kiln_requests_total", "", NULL));
    assert_null(metrics_counter(m, "kiln_requests_total", NULL, NULL));
    assert_null(metrics_gauge(m, "kiln_queue_count", "Histogram suffix.", NULL));
    assert_null(metrics_gauge(m, "kiln_queue_sum", "Histogram suffix.", NULL));
    assert_null(metrics_histogram(m, "kiln_lat_bucket", "Suffix.", NULL, asc, 2));
    assert_null(metrics_histogram(m, "kiln_lat_total", "Suffix.", NULL, asc, 2));
    assert_null(metrics_counter(m, "kiln_a_total", "Dup label.", dup));
    assert_null(metrics_counter(m, "kiln_a_total", "Reserved label.", reserved));
    assert_null(metrics_counter(m, "kiln_a_total", "Camel label.", camel));
    assert_null(metrics_histogram(m, "kiln_lat_seconds", "le label.", le, asc, 2));
    assert_null(metrics_histogram(m, "kiln_lat_seconds", "Descending.", NULL, desc, 2));
    assert_null(
        metrics_histogram(m, "kiln_lat_seconds", "Equal.", NULL, (const double[]){1, 1}, 2));
    assert_null(metrics_histogram(m, "kiln_lat_seconds", "NaN.", NULL, nanb, 2));
    assert_null(metrics_histogram(m, "kiln_lat_seconds", "Inf.", NULL, infb, 2));
    assert_null(metrics_histogram(m, "kiln_lat_seconds", "Negative.", NULL, neg, 2));
    assert_null(metrics_histogram(m, "kiln_lat_seconds", "Null bounds.", NULL, NULL, 2));
    assert_null(metrics_histogram(m, "kiln_lat_seconds", "Negative count.", NULL, asc, -1));

    /* good ones, then duplicates of them */
    assert_non_null(metrics_counter(m, "kiln_a_total", "Empty label list.", none));
    assert_non_null(metrics_histogram(m, "kiln_lat_seconds", "Only +Inf.", NULL, NULL, 0));
    assert_non_null(metrics_counter(m, "_kiln_b_total", "Leading underscore.", le));
    assert_null(metrics_counter(m, "kiln_a_total", "Again.", NULL));
    assert_non_null(strstr(kiln_last_error(), "already registered"));
    assert_null(metrics_gauge(m, "kiln_lat_seconds", "Same name, other type.", NULL));

    /* only the good families appear */
    char *out = scrape(m);
    assert_string_equal(out, "# HELP kiln_a_total Empty label list.\n"
                             "# TYPE kiln_a_total counter\n"
                             "# HELP kiln_lat_seconds Only +Inf.\n"
                             "# TYPE kiln_lat_seconds histogram\n"
                             "# HELP _kiln_b_total Leading underscore.\n"
                             "# TYPE _kiln_b_total counter\n");
    free(out);
    metrics_destroy(m);
}

/* Wrong label counts, wrong types and negative counter increments are
 * dropped without creating series; NULL families are no-ops. */
static void test_misuse(void **state) {
    (void)state;
    metrics *m = metrics_create();
    const char *const l[] = {"a", "b", NULL};
    metric *c = metrics_counter(m, "kiln_misuse_total", "Misuse.", l);
    metric *g = metrics_gauge(m, "kiln_misuse", "Misuse.", NULL);
    metric *h = metrics_histogram(m, "kiln_misuse_seconds", "Misuse.", NULL, NULL, 0);
    metric_inc(c, NULL, 1);
    metric_inc(c, (const char *const[]){"x", NULL}, 1);
    metric_inc(g, (const char *const[]){NULL}, 1); /* no values: as NULL */
    metric_inc(g, NULL, 1);
    assert_true(metric_value(g, (const char *const[]){NULL}) == 2);
    metric_set(g, NULL, 0);
    metric_inc(c, (const char *const[]){"x", "y", "z", NULL}, 1);
    metric_inc(c, (const char *const[]){"x", "y", NULL}, -1);
    metric_inc(c, (const char *const[]){"x", "y", NULL}, NAN);
    metric_observe(c, (const char *const[]){"x", "y", NULL}, 1);
    metric_inc(g, (const char *const[]){"x", NULL}, 1);
    metric_observe(g, NULL, 1);
    metric_inc(h, NULL, 1);
    metric_set(h, NULL, 1);
    metric_inc(NULL, NULL, 1);
    metric_set(NULL, NULL, 1);
    metric_observe(NULL, NULL, 1);
    assert_true(isnan(metric_value(NULL, NULL)));
    assert_true(isnan(metric_quantile(NULL, NULL, 0.5)));
    assert_int_equal(metric_count(NULL, NULL), 0);
    char *out = scrape(m);
    assert_string_equal(out, "# HELP kiln_misuse_total Misuse.\n"
                             "# TYPE kiln_misuse_total counter\n"
                             "# HELP kiln_misuse Misuse.\n"
                             "# TYPE kiln_misuse gauge\n"
                             "kiln_misuse 0\n"
                             "# HELP kiln_misuse_seconds Misuse.\n"
                             "# TYPE kiln_misuse_seconds histogram\n");
    free(out);
    /* a counter may be set (mirroring a count kept elsewhere) */
    metric_set(c, (const char *const[]){"x", "y", NULL}, 12);
    assert_true(metric_value(c, (const char *const[]){"x", "y", NULL}) == 12);
    metrics_destroy(m);
}

static void test_series_cap(void **state) {
    (void)state;
    metrics *m = metrics_create();
    const char *const l[] = {"id", NULL};
    metric *c = metrics_counter(m, "kiln_capped_total", "Capped.", l);
    char v[32];
    for (int i = 0; i < METRICS_MAX_SERIES + 10; i++) {
        snprintf(v, sizeof v, "s%d", i);
        metric_inc(c, (const char *const[]){v, NULL}, 1);
    }
    snprintf(v, sizeof v, "s%d", METRICS_MAX_SERIES - 1);
    assert_true(metric_value(c, (const char *const[]){v, NULL}) == 1);
    snprintf(v, sizeof v, "s%d", METRICS_MAX_SERIES);
    assert_true(isnan(metric_value(c, (const char *const[]){v, NULL})));
    /* existing series still update, and every one is found again */
    metric_inc(c, (const char *const[]){"s0", NULL}, 1);
    assert_true(metric_value(c, (const char *const[]){"s0", NULL}) == 2);
    for (int i = 0; i < METRICS_MAX_SERIES; i += 97) {
        snprintf(v, sizeof v, "s%d", i);
        assert_true(metric_value(c, (const char *const[]){v, NULL}) == (i ? 1 : 2));
    }
    char *out = scrape(m);
    int lines = 0;
    for (char *p = out; (p = strchr(p, '\n')); p++) lines++;
    assert_int_equal(lines, 2 + METRICS_MAX_SERIES);
    free(out);
    metrics_destroy(m);
}

struct cb_state {
    metric *g;
    int calls;
};

static void on_scrape(void *user) {
    struct cb_state *s = user;
    s->calls++;
    metric_set(s->g, NULL, s->calls * 10);
}

static void test_on_scrape(void **state) {
    (void)state;
    metrics *m = metrics_create();
    struct cb_state s = {metrics_gauge(m, "kiln_scrapes", "Scrapes seen.", NULL), 0};
    assert_int_equal(metrics_on_scrape(m, on_scrape, &s), KILN_OK);
    char *out = scrape(m);
    assert_non_null(strstr(out, "\nkiln_scrapes 10\n"));
    free(out);
    out = scrape(m);
    assert_non_null(strstr(out, "\nkiln_scrapes 20\n"));
    free(out);
    assert_int_equal(s.calls, 2);
    void *blk = metrics_alloc(m, 100);
    assert_non_null(blk);
    assert_true(((unsigned char *)blk)[99] == 0);
    metrics_destroy(m); /* frees blk (ASan checks) */
}

/* 8 threads update shared and per-thread series while a ninth scrapes. */
enum { NTHREADS = 8, NITER = 20000 };

struct worker {
    metric *c, *cl, *g, *h;
    int id;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    char idv[16];
    snprintf(idv, sizeof idv, "t%d", w->id);
    const char *const mine[] = {idv, NULL}, *const shared[] = {"shared", NULL};
    for (int i = 0; i < NITER; i++) {
        metric_inc(w->c, NULL, 1);
        metric_inc(w->cl, mine, 1);
        metric_inc(w->cl, shared, 2);
        metric_inc(w->g, NULL, (i & 1) ? -1 : 1);
        metric_observe(w->h, NULL, 0.05);
    }
    return NULL;
}

static int scraping;

static void *scraper_main(void *arg) {
    metrics *m = arg;
    while (__atomic_load_n(&scraping, __ATOMIC_SEQ_CST)) {
        char *out = NULL;
        size_t len;
        if (metrics_write(m, &out, &len) == KILN_OK) free(out);
    }
    return NULL;
}

/* Registers families while the others update and scrape. */
static void *registrar_main(void *arg) {
    metrics *m = arg;
    for (int i = 0; i < 50; i++) {
        char name[32];
        snprintf(name, sizeof name, "kiln_late_%d", i);
        metric *g = metrics_gauge(m, name, "Registered late.", NULL);
        metric_set(g, NULL, i);
    }
    return NULL;
}

static void test_concurrency(void **state) {
    (void)state;
    metrics *m = metrics_create();
    const char *const l[] = {"thread", NULL};
    struct worker w[NTHREADS];
    metric *c = metrics_counter(m, "kiln_conc_total", "Concurrent counter.", NULL);
    metric *cl = metrics_counter(m, "kiln_conc_labeled_total", "Per thread.", l);
    metric *g = metrics_gauge(m, "kiln_conc_gauge", "Up and down.", NULL);
    metric *h = metrics_histogram(m, "kiln_conc_seconds", "Observations.", NULL,
                                  metrics_latency_bounds, metrics_n_latency_bounds);
    pthread_t t[NTHREADS], sc;
    __atomic_store_n(&scraping, 1, __ATOMIC_SEQ_CST);
    assert_int_equal(pthread_create(&sc, NULL, scraper_main, m), 0);
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){c, cl, g, h, i};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    pthread_t reg;
    assert_int_equal(pthread_create(&reg, NULL, registrar_main, m), 0);
    for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
    pthread_join(reg, NULL);
    __atomic_store_n(&scraping, 0, __ATOMIC_SEQ_CST);
    pthread_join(sc, NULL);

    assert_true(metric_value(c, NULL) == NTHREADS * NITER);
    assert_true(metric_value(cl, (const char *const[]){"shared", NULL}) == 2.0 * NTHREADS * NITER);
    for (int i = 0; i < NTHREADS; i++) {
        char idv[16];
        snprintf(idv, sizeof idv, "t%d", i);
        assert_true(metric_value(cl, (const char *const[]){idv, NULL}) == NITER);
    }
    assert_true(metric_value(g, NULL) == 0);
    assert_int_equal(metric_count(h, NULL), NTHREADS * NITER);
    char *out = scrape(m);
    char line[128];
    snprintf(line, sizeof line, "\nkiln_conc_total %d\n", NTHREADS * NITER);
    assert_non_null(strstr(out, line));
    snprintf(line, sizeof line, "\nkiln_conc_seconds_bucket{le=\"0.075\"} %d\n", NTHREADS * NITER);
    assert_non_null(strstr(out, line));
    snprintf(line, sizeof line, "\nkiln_conc_seconds_bucket{le=\"0.025\"} 0\n");
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "\nkiln_late_49 49\n"));
    free(out);
    metrics_destroy(m);
}

static void test_proc(void **state) {
    (void)state;
    uint64_t rss = proc_rss_bytes();
    assert_true(rss > 100 * 1024 && rss < (uint64_t)1 << 40);
    assert_true(proc_vm_bytes() >= rss);
    double cpu0 = proc_cpu_seconds();
    volatile double x = 0;
    for (int i = 0; i < 3000000; i++) x += i * 1e-9;
    assert_true(proc_cpu_seconds() >= cpu0);
    int fds = proc_open_fds();
    assert_true(fds >= 3);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(proc_open_fds(), fds + 2);
    close(p[0]);
    close(p[1]);
    assert_true(proc_max_fds() == -1 || proc_max_fds() >= fds);
    double start = proc_start_time_seconds(), now = (double)time(NULL);
    assert_true(start > now - 3600 && start <= now + 1);

    metrics *m = metrics_create();
    assert_int_equal(metrics_add_process(m), KILN_OK);
    assert_int_equal(metrics_add_process(m), KILN_ERR_INVALID_ARG);
    char *out = scrape(m);
    const char *names[] = {"\nprocess_resident_memory_bytes ",
                           "\nprocess_virtual_memory_bytes ",
                           "\nprocess_cpu_seconds_total ",
                           "\nprocess_start_time_seconds ",
                           "\nprocess_open_fds ",
                           "\nprocess_max_fds "};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *s = strstr(out, names[i]);
        if (!s) print_message("missing %s in:\n%s", names[i], out);
        assert_non_null(s);
        if (i < 4) assert_true(strtod(s + strlen(names[i]), NULL) > 0);
    }
    free(out);
    metrics_destroy(m);
}

/* The exposition of every kind of family passes promtool's parser and lint
 * with nothing printed. */
static void test_promtool(void **state) {
    (void)state;
    metrics *m = metrics_create();
    assert_int_equal(metrics_add_process(m), KILN_OK);
    const char *const l2[] = {"model", "status", NULL}, *const l1[] = {"model", NULL};
    metric *req = metrics_counter(m, "kiln_requests_total", "Requests by model and status.", l2);
    metric *tok = metrics_counter(m, "kiln_generated_tokens_total", "Tokens generated.", NULL);
    metric *q = metrics_gauge(m, "kiln_queue_depth", "Requests waiting.", l1);
    metric *lat =
        metrics_histogram(m, "kiln_request_duration_seconds", "Request latency in seconds.", l1,
                          metrics_latency_bounds, metrics_n_latency_bounds);
    metric *bs = metrics_histogram(m, "kiln_batch_size", "Sequences per decode step.", NULL,
                                   metrics_size_bounds, metrics_n_size_bounds);
    metrics_histogram(m, "kiln_unused_seconds", "Never observed.", NULL, metrics_latency_bounds,
                      metrics_n_latency_bounds);
    assert_non_null(req);
    assert_non_null(lat);
    metric_inc(req, (const char *const[]){"tiny \"q\" \\ \n", "200", NULL}, 3);
    metric_inc(req, (const char *const[]){"tiny", "500", NULL}, 1);
    metric_inc(tok, NULL, 12345);
    metric_set(q, (const char *const[]){"tiny", NULL}, 2);
    metric_set(q, (const char *const[]){"bad\xff", NULL}, NAN);
    uint64_t rng = 7;
    for (int i = 0; i < 1000; i++) {
        metric_observe(lat, (const char *const[]){i % 3 ? "tiny" : "big", NULL},
                       (double)(test_rand_u64(&rng) % 100000) * 1e-4);
        metric_observe(bs, NULL, (double)(1 + test_rand_u64(&rng) % 64));
    }
    char *out = scrape(m);
    char path[512], outpath[512];
    test_tmp_path("metrics_exposition.txt", path, sizeof path);
    test_tmp_path("metrics_promtool.txt", outpath, sizeof outpath);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(out, 1, strlen(out), fp), strlen(out));
    fclose(fp);
    free(out);
    metrics_destroy(m);

    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        print_message("SKIP: promtool not on PATH (Debian package prometheus); exposition left "
                      "in %s\n",
                      path);
        return;
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "timeout 20 promtool check metrics < '%s' > '%s' 2>&1", path,
             outpath);
    int rc = system(cmd);
    size_t len = 0;
    char *msg = test_read_file(outpath, &len);
    assert_non_null(msg);
    if (rc != 0 || len) print_message("promtool (status %d) says:\n%s\n", rc, msg);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    assert_int_equal(len, 0);
    free(msg);

    /* the check is live: promtool fails a counter without _total */
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("# HELP kiln_bad x\n# TYPE kiln_bad counter\nkiln_bad 1\n", fp);
    fclose(fp);
    rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) != 0);
}

/* Costs on this machine, printed, never asserted (a shared machine: noisy). */
static void test_bench(void **state) {
    (void)state;
    enum { N = 200000 };
    metrics *m = metrics_create();
    const char *const l2[] = {"model", "status", NULL}, *const l1[] = {"model", NULL};
    metric *c = metrics_counter(m, "kiln_bench_total", "Bench.", NULL);
    metric *cl = metrics_counter(m, "kiln_bench_labeled_total", "Bench.", l2);
    metric *h = metrics_histogram(m, "kiln_bench_seconds", "Bench.", l1, metrics_latency_bounds,
                                  metrics_n_latency_bounds);
    const char *const v2[] = {"tinyllama-1.1b-chat", "200", NULL};
    const char *const v1[] = {"tinyllama-1.1b-chat", NULL};
    double t0 = kiln_now_s();
    for (int i = 0; i < N; i++) metric_inc(c, NULL, 1);
    double t1 = kiln_now_s();
    for (int i = 0; i < N; i++) metric_inc(cl, v2, 1);
    double t2 = kiln_now_s();
    for (int i = 0; i < N; i++) metric_observe(h, v1, 1e-3 * (i % 5000));
    double t3 = kiln_now_s();
    /* a scrape of 10 well-filled histogram series plus the counters */
    for (int s = 0; s < 9; s++) {
        char name[16];
        snprintf(name, sizeof name, "model%d", s);
        for (int i = 0; i < 1000; i++)
            metric_observe(h, (const char *const[]){name, NULL}, 1e-4 * (i * 37 % 100000));
    }
    enum { SCRAPES = 20 };
    double t4 = kiln_now_s();
    size_t bytes = 0;
    for (int i = 0; i < SCRAPES; i++) {
        char *out = scrape(m);
        bytes = strlen(out);
        free(out);
    }
    double t5 = kiln_now_s();
    print_message("metric_inc %.0f ns, labeled metric_inc %.0f ns, metric_observe %.0f ns; "
                  "scrape of 10 histogram series (%zu bytes) %.0f us\n",
                  (t1 - t0) / N * 1e9, (t2 - t1) / N * 1e9, (t3 - t2) / N * 1e9, bytes,
                  (t5 - t4) / SCRAPES * 1e6);
    metrics_destroy(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_gauge), cmocka_unit_test(test_number_format),
        cmocka_unit_test(test_histogram),     cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_bad_names),     cmocka_unit_test(test_misuse),
        cmocka_unit_test(test_series_cap),    cmocka_unit_test(test_on_scrape),
        cmocka_unit_test(test_concurrency),   cmocka_unit_test(test_proc),
        cmocka_unit_test(test_promtool),      cmocka_unit_test(test_buckets_match_hist),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

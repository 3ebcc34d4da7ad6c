/* test_log.c - the log's line formats (base/log.h): text lines carry the
 * documented prefix and logfmt fields; JSON lines parse (jansson) with the
 * typed fields, escaping of quotes, backslashes, newlines, control
 * characters and invalid UTF-8; a record far over KILN_LOG_LINE_MAX stays
 * one valid line; and records logged from several threads into a file are
 * whole lines with timestamps that never go backwards. No shared data. */
#include "testutil.h"

#include "base/log.h"

#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 2026-12-07T20:15:01.123Z */
static const int64_t T0 = 1796674501123LL;

static const char *const PREFIX_RE =
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z kiln [EWID] ";

static bool prefix_ok(const char *line) {
    regex_t re;
    assert_int_equal(regcomp(&re, PREFIX_RE, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, line, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* One line: ends in exactly one '\n', the only one. */
static void assert_one_line(const char *buf, size_t n) {
    assert_true(n > 0);
    assert_int_equal(buf[n - 1], '\n');
    assert_null(memchr(buf, '\n', n - 1));
    assert_int_equal(strlen(buf), n);
}

static void test_text(void **state) {
    (void)state;
    char buf[1024];
    size_t n = kiln_log_format_line(buf, sizeof buf, KILN_LOG_FMT_TEXT, T0, KILN_LOG_WARN, NULL,
                                    NULL, 0, "kiln serve: listening on http://127.0.0.1:8080");
    assert_string_equal(buf, "2026-12-07T20:15:01.123Z kiln W kiln serve: listening on "
                             "http://127.0.0.1:8080\n");
    assert_one_line(buf, n);
    assert_true(prefix_ok(buf));

    kiln_log_field f[] = {KILN_LF_STR("path", "/v1/completions"),
                          KILN_LF_INT("status", 404),
                          KILN_LF_DBL("e2e_ms", 1.5),
                          KILN_LF_STR("model", NULL),
                          KILN_LF_STR("error", "model 'x' \"y\"\nz"),
                          KILN_LF_BOOL("ok", 0),
                          KILN_LF_DBL("ttft_ms", NAN)};
    n = kiln_log_format_line(buf, sizeof buf, KILN_LOG_FMT_TEXT, T0, KILN_LOG_INFO, "access", f, 7,
                             "ignored in text");
    assert_string_equal(buf, "2026-12-07T20:15:01.123Z kiln I access: path=/v1/completions "
                             "status=404 e2e_ms=1.5 model=- error=\"model 'x' \\\"y\\\"\\nz\" "
                             "ok=false ttft_ms=-\n");
    assert_one_line(buf, n);
    assert_true(prefix_ok(buf));

    /* control characters and bad UTF-8 never reach a text line raw */
    n = kiln_log_format_line(buf, sizeof buf, KILN_LOG_FMT_TEXT, T0, KILN_LOG_DEBUG, NULL, NULL, 0,
                             "a\nb\rc\td\x01 \xff \xc3\xa9");
    assert_string_equal(buf, "2026-12-07T20:15:01.123Z kiln D a\\nb\\rc\\td\\x01 \\xFF \xc3\xa9\n");
    assert_one_line(buf, n);
}

static json_t *parse_line(const char *buf, size_t n) {
    assert_one_line(buf, n);
    json_error_t je;
    json_t *j = json_loadb(buf, n, 0, &je);
    if (!j) fail_msg("not JSON (%s): %s", je.text, buf);
    return j;
}

static void test_json(void **state) {
    (void)state;
    char buf[2048];
    const char *nasty = "q\"uote back\\slash nl\n cr\r tab\t bell\x07 del\x7f bad\xff ok\xc3\xa9";
    kiln_log_field f[] = {KILN_LF_STR("error", nasty),      KILN_LF_INT("status", 400),
                          KILN_LF_DBL("e2e_ms", 2.25),      KILN_LF_STR("model", NULL),
                          KILN_LF_DBL("ttft_ms", INFINITY), KILN_LF_BOOL("slow", 1)};
    size_t n = kiln_log_format_line(buf, sizeof buf, KILN_LOG_FMT_JSON, T0, KILN_LOG_ERROR,
                                    "access", f, 6, "POST \"x\"\n");
    json_t *j = parse_line(buf, n);
    assert_string_equal(json_string_value(json_object_get(j, "ts")), "2026-12-07T20:15:01.123Z");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    assert_string_equal(json_string_value(json_object_get(j, "event")), "access");
    const char *want =
        "q\"uote back\\slash nl\n cr\r tab\t bell\x07 del\x7f bad\xef\xbf\xbd ok\xc3\xa9";
    assert_string_equal(json_string_value(json_object_get(j, "error")), want);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "POST \"x\"\n");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 400);
    assert_true(json_real_value(json_object_get(j, "e2e_ms")) == 2.25);
    assert_true(json_is_null(json_object_get(j, "model")));
    assert_true(json_is_null(json_object_get(j, "ttft_ms")));
    assert_true(json_is_true(json_object_get(j, "slow")));
    json_decref(j);

    /* no event, no fields: ts, level, msg only */
    n = kiln_log_format_line(buf, sizeof buf, KILN_LOG_FMT_JSON, T0, KILN_LOG_INFO, NULL, NULL, 0,
                             "plain");
    j = parse_line(buf, n);
    assert_int_equal(json_object_size(j), 3);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "plain");
    json_decref(j);
}

/* Cut records stay one valid line, whatever the cut falls in. */
static void test_truncation(void **state) {
    (void)state;
    static char big[20000];
    for (size_t i = 0; i < sizeof big - 1; i++) big[i] = "a\"\n\xc3\xa9"[i % 5];
    big[sizeof big - 1] = 0;
    char buf[KILN_LOG_LINE_MAX];
    for (size_t cap = 128; cap <= sizeof buf; cap += 97) {
        kiln_log_field f[] = {KILN_LF_INT("a", 1), KILN_LF_STR("big", big), KILN_LF_INT("b", 2)};
        size_t n =
            kiln_log_format_line(buf, cap, KILN_LOG_FMT_JSON, T0, KILN_LOG_INFO, "e", f, 3, big);
        assert_true(n < cap);
        json_decref(parse_line(buf, n));
        n = kiln_log_format_line(buf, cap, KILN_LOG_FMT_TEXT, T0, KILN_LOG_INFO, "e", f, 3, big);
        assert_true(n < cap);
        assert_one_line(buf, n);
        assert_true(prefix_ok(buf));
    }
}

enum { THREADS = 4, PER_THREAD = 200 };

static void *logger(void *arg) {
    long t = (long)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        kiln_log_field f[] = {KILN_LF_INT("thread", t), KILN_LF_INT("i", i)};
        kiln_log_kv(KILN_LOG_INFO, "test", f, 2, "line %d of thread %ld %s", i, t,
                    "padding padding padding padding padding padding padding padding");
    }
    return NULL;
}

/* Records from several threads: whole lines, each valid JSON, timestamps
 * never going backwards, every record present. */
static void test_threads(void **state) {
    (void)state;
    char path[512];
    test_tmp_path("log-threads-XXXXXX", path, sizeof path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    kiln_log_set_fd(fd);
    kiln_log_set_format(KILN_LOG_FMT_JSON);
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, logger, (void *)t), 0);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    kiln_log_set_fd(2);
    kiln_log_set_format(KILN_LOG_FMT_TEXT);
    close(fd);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[KILN_LOG_LINE_MAX + 2], last[64] = "";
    int count[THREADS] = {0}, total = 0;
    while (fgets(line, sizeof line, fp)) {
        json_t *j = parse_line(line, strlen(line));
        const char *ts = json_string_value(json_object_get(j, "ts"));
        assert_non_null(ts);
        assert_int_equal(strlen(ts), 24);
        assert_true(strcmp(ts, last) >= 0); /* same width: string order is time order */
        snprintf(last, sizeof last, "%s", ts);
        int t = (int)json_integer_value(json_object_get(j, "thread"));
        int i = (int)json_integer_value(json_object_get(j, "i"));
        assert_true(t >= 0 && t < THREADS);
        assert_int_equal(i, count[t]); /* a thread's records in its order */
        count[t]++;
        total++;
        json_decref(j);
    }
    fclose(fp);
    unlink(path);
    assert_int_equal(total, THREADS * PER_THREAD);
}

static void test_parse(void **state) {
    (void)state;
    assert_int_equal(kiln_log_format_parse("text"), KILN_LOG_FMT_TEXT);
    assert_int_equal(kiln_log_format_parse("json"), KILN_LOG_FMT_JSON);
    assert_int_equal(kiln_log_format_parse("JSON"), -1);
    assert_int_equal(kiln_log_format_parse(NULL), -1);
    assert_true(kiln_log_enabled(KILN_LOG_ERROR));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),       cmocka_unit_test(test_json),
        cmocka_unit_test(test_truncation), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

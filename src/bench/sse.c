/* sse.c - the text/event-stream side of kiln bench: splits a body fed in
 * arbitrary pieces into lines (a piece may end mid-line or between "\r" and
 * "\n"), and interprets each "data:" payload of an OpenAI-style stream with
 * jansson: content length of choices[0].delta.content (chat) or
 * choices[0].text (completions), usage counts, [DONE], error objects.
 * Invariant: s->line holds the bytes of the current incomplete line only. */
#include "bench/bench.h"

#include <stdlib.h>
#include <string.h>

#define SSE_MAX_LINE (16u << 20) /* a longer line is reported as bad */

void bench_sse_init(bench_sse *s) {
    memset(s, 0, sizeof *s);
}

void bench_sse_free(bench_sse *s) {
    free(s->line);
    memset(s, 0, sizeof *s);
}

void bench_sse_reset(bench_sse *s) {
    s->len = 0;
    s->overflow = false;
}

static size_t str_len_of(const json_t *v) {
    return json_is_string(v) ? json_string_length(v) : 0;
}

void bench_sse_parse(const char *payload, size_t n, bench_sse_event *ev) {
    memset(ev, 0, sizeof *ev);
    ev->prompt_tokens = ev->completion_tokens = -1;
    if (n == 6 && !memcmp(payload, "[DONE]", 6)) {
        ev->done = true;
        return;
    }
    json_t *j = json_loadb(payload, n, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(j) || json_object_get(j, "error")) {
        ev->bad = true;
        json_decref(j);
        return;
    }
    json_t *choices = json_object_get(j, "choices");
    json_t *c0 = json_is_array(choices) ? json_array_get(choices, 0) : NULL;
    if (json_is_object(c0)) {
        json_t *delta = json_object_get(c0, "delta");
        if (json_is_object(delta)) {
            ev->content_len = str_len_of(json_object_get(delta, "content"));
            /* reasoning models stream their thoughts first: tokens too */
            if (!ev->content_len)
                ev->content_len = str_len_of(json_object_get(delta, "reasoning_content"));
        } else {
            ev->content_len = str_len_of(json_object_get(c0, "text"));
        }
    }
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage)) {
        json_t *p = json_object_get(usage, "prompt_tokens");
        json_t *c = json_object_get(usage, "completion_tokens");
        if (json_is_integer(p)) ev->prompt_tokens = json_integer_value(p);
        if (json_is_integer(c)) ev->completion_tokens = json_integer_value(c);
    }
    json_decref(j);
}

/* One complete line without its terminator. */
static void sse_line(const char *l, size_t n, bench_sse_fn fn, void *ud) {
    if (n < 5 || memcmp(l, "data:", 5)) return;
    l += 5, n -= 5;
    if (n && *l == ' ') l++, n--;
    bench_sse_event ev;
    bench_sse_parse(l, n, &ev);
    fn(ud, &ev);
}

bool bench_sse_feed(bench_sse *s, const char *p, size_t n, bench_sse_fn fn, void *ud) {
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (s->overflow) {
            /* skip the rest of an over-long line */
        } else if (s->len + take > SSE_MAX_LINE) {
            s->overflow = true;
            bench_sse_event ev = {.bad = true, .prompt_tokens = -1, .completion_tokens = -1};
            fn(ud, &ev);
        } else if (nl && s->len == 0) {
            /* the common case: a whole line inside this piece, no copy */
            size_t ln = take;
            if (ln && p[ln - 1] == '\r') ln--;
            sse_line(p, ln, fn, ud);
        } else {
            if (s->len + take > s->cap) {
                size_t cap = s->cap ? s->cap : 256;
                while (cap < s->len + take) cap *= 2;
                char *nb = realloc(s->line, cap);
                if (!nb) return false;
                s->line = nb;
                s->cap = cap;
            }
            memcpy(s->line + s->len, p, take);
            s->len += take;
            if (nl) {
                size_t ln = s->len;
                if (ln && s->line[ln - 1] == '\r') ln--;
                sse_line(s->line, ln, fn, ud);
                s->len = 0;
            }
        }
        if (nl) {
            s->overflow = false;
            s->len = 0;
        }
        p += take + (nl ? 1 : 0);
        n -= take + (nl ? 1 : 0);
    }
    return true;
}

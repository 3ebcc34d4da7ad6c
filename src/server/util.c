/* util.c - small helpers of the server: the growable buffer, base64,
 * UTF-8 validation, constant-time comparison, content-coding negotiation
 * (Accept-Encoding), the HTTP layer's trace spans, and the route table
 * (path -> route, its method, whether it needs the API key, its metrics
 * label). */
#include "obs/trace.h"
#include "server/openai.h"
#include "server/srv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void srv_base64(strbuf *b, const unsigned char *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        q[0] = tab[v >> 18 & 63];
        q[1] = tab[v >> 12 & 63];
        q[2] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        strbuf_put(b, q, 4);
    }
}

void srv_utf8_trim(char *s) {
    size_t n = strlen(s);
    long bad = srv_utf8_invalid_at(s, n);
    if (bad >= 0) s[bad] = 0;
}

long srv_utf8_invalid_at(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return (long)i;
        }
        if (i + len > n) return (long)i;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return (long)i;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return (long)i;
        i += len;
    }
    return -1;
}

static _Thread_local bool tl_named;

void srv_trace_thread(const char *name) {
    if (tl_named) return;
    trace_thread_name(name);
    tl_named = true;
}

void srv_trace_http(const char *name, int64_t t0, int status, int64_t bytes) {
    if (!t0) return;
    int64_t t1 = trace_now();
    srv_trace_thread("http");
    trace_arg a[2];
    int n = 0;
    if (status > 0) a[n++] = TRACE_I("status", status);
    if (bytes >= 0) a[n++] = TRACE_I("bytes", bytes);
    trace_span(name, "http", t0, t1 - t0, a, n);
}

int srv_const_eq(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = (unsigned char)(na != nb);
    /* Walk the expected key's length whatever the input, so the time says
     * nothing about how much of it matched. */
    for (size_t i = 0; i < nb; i++) diff |= (unsigned char)(b[i] ^ (i < na ? a[i] : 0));
    return diff == 0;
}

/* ---- Accept-Encoding (RFC 9110 section 12.5.3)
 *
 * A list of codings, each with an optional weight: "gzip;q=0.5, br, *;q=0".
 * The weight of gzip is that of a "gzip" (or "x-gzip") element, else that of
 * "*", else 0 (not listed: refused); q=0 means "not acceptable". An element
 * whose weight is not a valid qvalue is ignored. */

static bool is_ows(char c) {
    return c == ' ' || c == '\t';
}

/* A qvalue: "0" ["." 0-3 digits] or "1" ["." 0-3 zeros]; -1 when bad. */
static double qvalue(const char *p, size_t n) {
    if (!n || (p[0] != '0' && p[0] != '1') || (n > 1 && p[1] != '.') || n > 5) return -1;
    double q = p[0] - '0', scale = 0.1;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (p[i] < '0' || p[i] > '9' || (p[0] == '1' && p[i] != '0')) return -1;
        q += (p[i] - '0') * scale;
    }
    return q;
}

void srv_accept_scan(const char *v, double *q_gzip, double *q_any) {
    while (v && *v) {
        size_t n = strcspn(v, ","); /* one element: v[0..n) */
        const char *e = v, *end = v + n;
        while (e < end && is_ows(*e)) e++;
        size_t tn = 0;
        while (e + tn < end && e[tn] != ';' && !is_ows(e[tn])) tn++;
        double q = 1;
        for (const char *p = e + tn; p < end && q >= 0;) { /* parameters */
            while (p < end && (is_ows(*p) || *p == ';')) p++;
            size_t pn = strcspn(p, ";,");
            const char *pe = p + pn < end ? p + pn : end;
            while (pe > p && is_ows(pe[-1])) pe--;
            if (pe - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=')
                q = qvalue(p + 2, (size_t)(pe - p - 2));
            p += pn;
        }
        if (q >= 0 && tn) {
            if ((tn == 4 && !strncasecmp(e, "gzip", 4)) ||
                (tn == 6 && !strncasecmp(e, "x-gzip", 6)))
                *q_gzip = q > *q_gzip ? q : *q_gzip;
            else if (tn == 1 && *e == '*')
                *q_any = q > *q_any ? q : *q_any;
        }
        v = *end ? end + 1 : end;
    }
}

bool srv_accepts_gzip_value(const char *v) {
    double qg = -1, qa = -1;
    srv_accept_scan(v, &qg, &qa);
    return qg >= 0 ? qg > 0 : qa > 0;
}

struct accept_ctx {
    double q_gzip, q_any;
};

static enum MHD_Result accept_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value) {
    (void)kind;
    struct accept_ctx *c = cls;
    if (key && !strcasecmp(key, "Accept-Encoding")) srv_accept_scan(value, &c->q_gzip, &c->q_any);
    return MHD_YES;
}

bool srv_accepts_gzip(srv_req *r) {
    struct accept_ctx c = {-1, -1}; /* every Accept-Encoding line, as one list */
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, accept_header, &c);
    return c.q_gzip >= 0 ? c.q_gzip > 0 : c.q_any > 0;
}

static const struct {
    const char *path, *label, *method;
    int auth;
} routes[SRV_R_COUNT] = {
    [SRV_R_CHAT] = {"/v1/chat/completions", "/v1/chat/completions", "POST", 1},
    [SRV_R_COMPLETIONS] = {"/v1/completions", "/v1/completions", "POST", 1},
    [SRV_R_EMBEDDINGS] = {"/v1/embeddings", "/v1/embeddings", "POST", 1},
    [SRV_R_MODELS] = {"/v1/models", "/v1/models", "GET", 1},
    [SRV_R_HEALTH] = {"/health", "/health", "GET", 0},
    [SRV_R_METRICS] = {"/metrics", "/metrics", "GET", 0},
    [SRV_R_DIAG_PERF] = {"/diagnostics/performance", "/diagnostics/performance", "GET", 1},
    [SRV_R_DIAG_BOTTLENECK] = {"/diagnostics/bottleneck-analysis",
                               "/diagnostics/bottleneck-analysis", "GET", 1},
    [SRV_R_PROF_START] = {"/diagnostics/profiler/start", "/diagnostics/profiler/start", "POST", 1},
    [SRV_R_PROF_STOP] = {"/diagnostics/profiler/stop", "/diagnostics/profiler/stop", "POST", 1},
    [SRV_R_PROF_STATUS] = {"/diagnostics/profiler/status", "/diagnostics/profiler/status", "GET",
                           1},
    [SRV_R_PROF_TRACES] = {"/diagnostics/profiler/traces", "/diagnostics/profiler/traces", "GET",
                           1},
    [SRV_R_PROF_TRACE] = {"/diagnostics/profiler/traces/", "/diagnostics/profiler/traces/{id}",
                          "GET", 1},
    [SRV_R_PROF_BENCH] = {"/diagnostics/profiler/benchmark-with-profiling",
                          "/diagnostics/profiler/benchmark-with-profiling", "POST", 1},
    [SRV_R_DIAG_BENCH] = {"/diagnostics/benchmark", "/diagnostics/benchmark", "POST", 1},
    [SRV_R_UNKNOWN] = {NULL, "other", NULL, 0},
};

srv_route srv_route_of(const char *url) {
    size_t n = strcspn(url, "?");
    /* A trailing slash is the same route ("/v1/models/"). */
    if (n > 1 && url[n - 1] == '/') n--;
    for (int r = 0; r < SRV_R_UNKNOWN; r++)
        if (r != SRV_R_PROF_TRACE && strlen(routes[r].path) == n && !memcmp(url, routes[r].path, n))
            return (srv_route)r;
    /* a prefix route: /diagnostics/profiler/traces/{id} (one segment) */
    size_t np = strlen(routes[SRV_R_PROF_TRACE].path);
    if (n > np && !memcmp(url, routes[SRV_R_PROF_TRACE].path, np) && !memchr(url + np, '/', n - np))
        return SRV_R_PROF_TRACE;
    return SRV_R_UNKNOWN;
}

const char *srv_route_label(srv_route r) {
    return routes[r].label;
}

const char *srv_route_method(srv_route r) {
    return routes[r].method;
}

int srv_route_auth(srv_route r) {
    return routes[r].auth;
}

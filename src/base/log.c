/* log.c - leveled logging to stderr as timestamped text or JSON lines (the
 * formats are specified in log.h). Owns the process-wide level, format and
 * output descriptor, and the lock that makes each record one write(2) with
 * a timestamp no earlier than the previous record's. Formatting is pure
 * (kiln_log_format_line) and bounded: a record never exceeds
 * KILN_LOG_LINE_MAX bytes, and a JSON record stays valid when cut. */
#include "base/log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = -1;
static atomic_int g_format = KILN_LOG_FMT_TEXT;
static atomic_int g_fd = 2;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t g_last_ms; /* under g_mu */

static int log_threshold(void) {
    int level = atomic_load_explicit(&g_level, memory_order_relaxed);
    if (level < 0) {
        const char *e = getenv("KILN_LOG");
        level = KILN_LOG_INFO;
        if (e && !strcmp(e, "error"))
            level = KILN_LOG_ERROR;
        else if (e && !strcmp(e, "warn"))
            level = KILN_LOG_WARN;
        else if (e && !strcmp(e, "debug"))
            level = KILN_LOG_DEBUG;
        atomic_store_explicit(&g_level, level, memory_order_relaxed);
    }
    return level;
}

int kiln_log_enabled(enum kiln_log_level lvl) {
    return (int)lvl <= log_threshold();
}

void kiln_log_set_format(enum kiln_log_format f) {
    atomic_store(&g_format, (int)f);
}

enum kiln_log_format kiln_log_get_format(void) {
    return (enum kiln_log_format)atomic_load(&g_format);
}

int kiln_log_format_parse(const char *s) {
    if (s && !strcmp(s, "text")) return KILN_LOG_FMT_TEXT;
    if (s && !strcmp(s, "json")) return KILN_LOG_FMT_JSON;
    return -1;
}

void kiln_log_set_fd(int fd) {
    atomic_store(&g_fd, fd);
}

/* ---- a bounded line writer
 *
 * Ordinary writes stop at lim = cap - RESERVE and set full; the reserve
 * holds what closes a cut record (a quote, "null", "}", "\n", the NUL). */

enum { RESERVE = 16 };

typedef struct lw {
    char *p;
    size_t n, lim, cap;
    bool full;
} lw;

static bool lw_put(lw *w, const char *s, size_t len) {
    if (w->full || w->n + len > w->lim) {
        w->full = true;
        return false;
    }
    memcpy(w->p + w->n, s, len);
    w->n += len;
    return true;
}

static bool lw_str(lw *w, const char *s) {
    return lw_put(w, s, strlen(s));
}

/* Into the reserve: only what closes a record. */
static void lw_force(lw *w, const char *s) {
    size_t len = strlen(s);
    if (w->n + len + 1 > w->cap) len = w->cap - 1 - w->n;
    memcpy(w->p + w->n, s, len);
    w->n += len;
}

/* The length of the valid UTF-8 sequence at s[0..n) (1 for ASCII), or 0. */
static size_t u8len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

/* s escaped: JSON string contents (RFC 8259; invalid UTF-8 becomes
 * U+FFFD), or text (control characters and invalid bytes as \n \r \t
 * \xHH; with quoted, '"' and '\\' escaped too). Stops, whole sequences
 * only, when the line is full. */
static void lw_escape(lw *w, const char *str, bool json, bool quoted) {
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        char esc[8];
        const char *out = esc;
        size_t len = u8len(s + i, n - i), used = len ? len : 1;
        if (!len) {
            if (json)
                out = "\\ufffd";
            else
                snprintf(esc, sizeof esc, "\\x%02X", c);
        } else if (len > 1) {
            if (!lw_put(w, (const char *)s + i, len)) return;
            i += len;
            continue;
        } else if (c == '\n')
            out = "\\n";
        else if (c == '\r')
            out = "\\r";
        else if (c == '\t')
            out = "\\t";
        else if (c < 0x20 || c == 0x7F) {
            if (json)
                snprintf(esc, sizeof esc, "\\u%04x", c);
            else
                snprintf(esc, sizeof esc, "\\x%02X", c);
        } else if ((c == '"' || c == '\\') && (json || quoted)) {
            esc[0] = '\\', esc[1] = (char)c, esc[2] = 0;
        } else {
            esc[0] = (char)c, esc[1] = 0;
        }
        if (!lw_str(w, out)) return;
        i += used;
    }
}

static bool needs_quotes(const char *s) {
    if (!*s) return true;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7F) return true;
    return false;
}

static void fmt_ts(char *out, size_t cap, int64_t ms) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static void fmt_num(char *out, size_t cap, const kiln_log_field *f, bool json) {
    if (f->type == KILN_LF_T_INT)
        snprintf(out, cap, "%lld", (long long)f->i);
    else if (f->type == KILN_LF_T_BOOL)
        snprintf(out, cap, "%s", f->b ? "true" : "false");
    else if (!isfinite(f->d))
        snprintf(out, cap, "%s", json ? "null" : "-");
    else
        snprintf(out, cap, "%.6g", f->d);
}

static const char *const level_name[] = {"error", "warn", "info", "debug"};
static const char level_letter[] = "EWID";

static void line_json(lw *w, const char *ts, enum kiln_log_level lvl, const char *event,
                      const kiln_log_field *f, int n, const char *msg) {
    lw_str(w, "{\"ts\":\"");
    lw_str(w, ts);
    lw_str(w, "\",\"level\":\"");
    lw_str(w, level_name[lvl]);
    lw_str(w, "\"");
    if (event && lw_str(w, ",\"event\":\"")) {
        lw_escape(w, event, true, true);
        if (w->full) goto close_str;
        lw_str(w, "\"");
    }
    for (int i = 0; i < n && !w->full; i++) {
        char key[80];
        snprintf(key, sizeof key, ",\"%s\":", f[i].key);
        if (!lw_str(w, key)) break;
        if (f[i].type == KILN_LF_T_STR && f[i].s) {
            if (!lw_str(w, "\"")) goto close_null;
            lw_escape(w, f[i].s, true, true);
            if (w->full) goto close_str;
            lw_str(w, "\"");
        } else {
            char num[40] = "null";
            if (f[i].type != KILN_LF_T_STR) fmt_num(num, sizeof num, &f[i], true);
            if (!lw_str(w, num)) goto close_null;
        }
    }
    if (!w->full && lw_str(w, ",\"msg\":\"")) {
        lw_escape(w, msg, true, true);
        if (w->full) goto close_str;
        lw_str(w, "\"");
    }
    goto close;
close_null:
    lw_force(w, "null");
    goto close;
close_str:
    lw_force(w, "\"");
close:
    lw_force(w, "}\n");
}

static void line_text(lw *w, const char *ts, enum kiln_log_level lvl, const char *event,
                      const kiln_log_field *f, int n, const char *msg) {
    char head[128];
    snprintf(head, sizeof head, "%s kiln %c ", ts, level_letter[lvl]);
    lw_str(w, head);
    if (event) {
        lw_escape(w, event, false, false);
        lw_str(w, ":");
    }
    /* with fields, the text line is logfmt: they say what the message says */
    if (!n) {
        if (event && *msg) lw_str(w, " ");
        lw_escape(w, msg, false, false);
    }
    for (int i = 0; i < n && !w->full; i++) {
        if ((i || event) && !lw_str(w, " ")) break;
        if (!lw_str(w, f[i].key) || !lw_str(w, "=")) break;
        if (f[i].type == KILN_LF_T_STR) {
            const char *v = f[i].s ? f[i].s : "-";
            bool q = needs_quotes(v);
            if (q) lw_str(w, "\"");
            lw_escape(w, v, false, q);
            if (q && !w->full) lw_str(w, "\"");
        } else {
            char num[40];
            fmt_num(num, sizeof num, &f[i], false);
            lw_str(w, num);
        }
    }
    lw_force(w, "\n");
}

size_t kiln_log_format_line(char *buf, size_t cap, enum kiln_log_format fmt, int64_t ms_utc,
                            enum kiln_log_level lvl, const char *event, const kiln_log_field *f,
                            int n, const char *msg) {
    if ((unsigned)lvl > KILN_LOG_DEBUG) lvl = KILN_LOG_ERROR;
    lw w = {buf, 0, cap - RESERVE, cap, false};
    char ts[96];
    fmt_ts(ts, sizeof ts, ms_utc);
    if (fmt == KILN_LOG_FMT_JSON)
        line_json(&w, ts, lvl, event, f, n, msg ? msg : "");
    else
        line_text(&w, ts, lvl, event, f, n, msg ? msg : "");
    buf[w.n] = 0;
    return w.n;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void emit(enum kiln_log_level lvl, const char *event, const kiln_log_field *f, int n,
                 const char *msg) {
    char line[KILN_LOG_LINE_MAX];
    enum kiln_log_format fmt = kiln_log_get_format();
    int fd = atomic_load(&g_fd);
    pthread_mutex_lock(&g_mu);
    int64_t ms = now_ms();
    if (ms < g_last_ms) ms = g_last_ms; /* the wall clock stepped back */
    g_last_ms = ms;
    size_t len = kiln_log_format_line(line, sizeof line, fmt, ms, lvl, event, f, n, msg);
    for (size_t off = 0; off < len;) {
        ssize_t k = write(fd, line + off, len - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
    pthread_mutex_unlock(&g_mu);
}

void kiln_log(enum kiln_log_level lvl, const char *fmt, ...) {
    if (!kiln_log_enabled(lvl)) return;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(lvl, NULL, NULL, 0, msg);
}

void kiln_log_kv(enum kiln_log_level lvl, const char *event, const kiln_log_field *f, int n,
                 const char *fmt, ...) {
    if (!kiln_log_enabled(lvl)) return;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(lvl, event, f, n, msg);
}

/* log.h - leveled, timestamped logging to stderr, as text or JSON lines.
 *
 * The level comes from KILN_LOG (error|warn|info|debug; default info) the
 * first time it is read. Every record is one line written with one
 * write(2) under a process-wide lock, so lines from different threads never
 * interleave and their timestamps never go backwards in the output (the
 * clock is clamped to the last stamp written).
 *
 * Text (the default):
 *   2026-12-07T20:15:01.123Z kiln I kiln serve: listening on http://127.0.0.1:8080
 *   2026-12-07T20:15:02.456Z kiln I access: method=POST path=/v1/completions status=200 ...
 * i.e. ISO-8601 UTC with milliseconds, "kiln", one letter E|W|I|D, then the
 * message. A record with an event starts with "EVENT:"; a record with
 * fields is logfmt - its fields as key=value stand in for the message
 * (a string with a blank, '"', '=' or '\' in it, or an empty one, is
 * double-quoted with \" and \\ escaped; a NULL string or a non-finite
 * number is "-"). Control
 * characters never reach the output raw: \n, \r, \t and \xHH instead.
 * Every text line matches
 *   ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z kiln [EWID][ ]
 *
 * JSON (kiln_log_set_format(KILN_LOG_FMT_JSON)): one object per line,
 *   {"ts":"2026-12-07T20:15:01.123Z","level":"info","event":"access",
 *    "status":200,...,"msg":"..."}
 * with "event" and the fields (in the caller's order) only when the caller
 * gives them, "msg" last; strings are
 * escaped per RFC 8259; a non-finite double is null. A record longer than
 * KILN_LOG_LINE_MAX bytes is cut inside a string value (at a UTF-8
 * boundary), fields that no longer fit are dropped, and the line stays
 * valid JSON. */
#ifndef KILN_BASE_LOG_H
#define KILN_BASE_LOG_H

#include <stddef.h>
#include <stdint.h>

enum kiln_log_level { KILN_LOG_ERROR, KILN_LOG_WARN, KILN_LOG_INFO, KILN_LOG_DEBUG };

enum kiln_log_format { KILN_LOG_FMT_TEXT, KILN_LOG_FMT_JSON };

#define KILN_LOG_LINE_MAX 8192

/* A structured field of a record: a key (plain ASCII identifier, not
 * escaped) and a typed value. Build them with the KILN_LF_* macros. */
typedef enum kiln_log_ftype {
    KILN_LF_T_STR,
    KILN_LF_T_INT,
    KILN_LF_T_DBL,
    KILN_LF_T_BOOL
} kiln_log_ftype;

typedef struct kiln_log_field {
    const char *key;
    kiln_log_ftype type;
    union {
        const char *s; /* NULL: JSON null / text "-" */
        int64_t i;
        double d;
        int b;
    };
} kiln_log_field;

#define KILN_LF_STR(k, v)  ((kiln_log_field){.key = (k), .type = KILN_LF_T_STR, .s = (v)})
#define KILN_LF_INT(k, v)  ((kiln_log_field){.key = (k), .type = KILN_LF_T_INT, .i = (int64_t)(v)})
#define KILN_LF_DBL(k, v)  ((kiln_log_field){.key = (k), .type = KILN_LF_T_DBL, .d = (double)(v)})
#define KILN_LF_BOOL(k, v) ((kiln_log_field){.key = (k), .type = KILN_LF_T_BOOL, .b = !!(v)})

/* Plain message (printf format). Thread-safe. */
void kiln_log(enum kiln_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A structured record: event names the kind of line ("access", "stats",
 * "slow_request"; NULL: none), f[0..n) its fields (borrowed for the call),
 * fmt the human message. Thread-safe. */
void kiln_log_kv(enum kiln_log_level lvl, const char *event, const kiln_log_field *f, int n,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* 1 when a record of lvl would be written (skip building costly fields). */
int kiln_log_enabled(enum kiln_log_level lvl);

/* The output format (process-wide; set it before the threads that log
 * start). Default text. */
void kiln_log_set_format(enum kiln_log_format f);
enum kiln_log_format kiln_log_get_format(void);
/* Parses "text" or "json"; -1 for anything else. */
int kiln_log_format_parse(const char *s);

/* Where records go (default 2, stderr); for tests. */
void kiln_log_set_fd(int fd);

/* Formats one record into buf[0..cap) (cap >= 128) as the current format
 * would, with ms_utc (milliseconds since the Unix epoch) as its time and
 * msg as the message; always ends in '\n' and a NUL. Returns the length
 * without the NUL. Pure; for tests and for kiln_log itself. */
size_t kiln_log_format_line(char *buf, size_t cap, enum kiln_log_format fmt, int64_t ms_utc,
                            enum kiln_log_level lvl, const char *event, const kiln_log_field *f,
                            int n, const char *msg);

#define KILN_LOGE(...) kiln_log(KILN_LOG_ERROR, __VA_ARGS__)
#define KILN_LOGW(...) kiln_log(KILN_LOG_WARN, __VA_ARGS__)
#define KILN_LOGI(...) kiln_log(KILN_LOG_INFO, __VA_ARGS__)
#define KILN_LOGD(...) kiln_log(KILN_LOG_DEBUG, __VA_ARGS__)

#endif

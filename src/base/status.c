/* status.c - status strings and the per-thread last-error message. */
#include "base/status.h"

#include <stdarg.h>

static _Thread_local char last_error[512];

const char *kiln_status_str(kiln_status st) {
    static const char *const names[KILN_STATUS_COUNT] = {
        [KILN_OK] = "ok",
        [KILN_ERR_INVALID_ARG] = "invalid argument",
        [KILN_ERR_IO] = "I/O error",
        [KILN_ERR_FORMAT] = "format error",
        [KILN_ERR_UNSUPPORTED] = "unsupported",
        [KILN_ERR_NOMEM] = "out of memory",
        [KILN_ERR_NOT_FOUND] = "not found",
        [KILN_ERR_RANGE] = "out of range",
        [KILN_ERR_INTERNAL] = "internal error",
        [KILN_ERR_BUSY] = "busy",
    };
    if ((unsigned)st >= KILN_STATUS_COUNT) return "unknown status";
    return names[st];
}

kiln_status kiln_fail(kiln_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

void kiln_clear_error(void) {
    last_error[0] = 0;
}

const char *kiln_last_error(void) {
    return last_error;
}

const char *kiln_version(void) {
    return KILN_VERSION;
}

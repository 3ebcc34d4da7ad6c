/* log.c - leveled logging to stderr; one fprintf per message so lines from
 * different threads do not interleave. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int log_threshold(void) {
    static int level = -1; /* benign race: every thread computes the same value */
    if (level < 0) {
        const char *e = getenv("KILN_LOG");
        int l = KILN_LOG_INFO;
        if (e && !strcmp(e, "error"))
            l = KILN_LOG_ERROR;
        else if (e && !strcmp(e, "warn"))
            l = KILN_LOG_WARN;
        else if (e && !strcmp(e, "debug"))
            l = KILN_LOG_DEBUG;
        level = l;
    }
    return level;
}

void kiln_log(enum kiln_log_level lvl, const char *fmt, ...) {
    if ((int)lvl > log_threshold()) return;
    static const char *const tag[] = {"error", "warn", "info", "debug"};
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kiln %s: %s\n", tag[lvl], buf);
}

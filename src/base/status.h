/* status.h - error reporting for library code: the thread-local message that
 * accompanies a non-zero kiln_status, and the always-on assertion macro. */
#ifndef KILN_BASE_STATUS_H
#define KILN_BASE_STATUS_H

#include "kiln.h"

#include <stdio.h>
#include <stdlib.h>

/* Records a printf-style message for the calling thread and returns st, so a
 * failure reads: return kiln_fail(KILN_ERR_FORMAT, "%s: bad x at offset %zu", ...). */
kiln_status kiln_fail(kiln_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears the calling thread's message. */
void kiln_clear_error(void);

/* Invariant checks that stay on in release builds. A failure is a bug in Kiln:
 * print where and abort (library code never calls the exit function). */
#define KILN_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "kiln: %s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif

/* time.h - monotonic clock readings for timers and benchmarks. */
#ifndef KILN_BASE_TIME_H
#define KILN_BASE_TIME_H

#include <stdint.h>
#include <time.h>

static inline int64_t kiln_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline double kiln_now_s(void) {
    return (double)kiln_now_ns() * 1e-9;
}

#endif

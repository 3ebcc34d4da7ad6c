/* mem.h - allocation helpers: cache-line/SIMD aligned buffers and overflow-
 * checked size arithmetic. Allocation failures return NULL; callers report
 * KILN_ERR_NOMEM. */
#ifndef KILN_BASE_MEM_H
#define KILN_BASE_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KILN_CACHE_LINE 64

/* Returns memory aligned to `align` (a power of two >= sizeof(void*)), or NULL.
 * Free with kiln_aligned_free. */
void *kiln_aligned_alloc(size_t align, size_t size);
void kiln_aligned_free(void *p);

/* *out = a * b / a + b; false on overflow. */
static inline bool kiln_mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool kiln_add_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Rounds x up to a multiple of align (a power of two). */
static inline uint64_t kiln_align_up(uint64_t x, uint64_t align) {
    return (x + align - 1) & ~(align - 1);
}

#endif

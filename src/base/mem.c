/* mem.c - aligned allocation. */
#include "base/mem.h"

#include <stdlib.h>

void *kiln_aligned_alloc(size_t align, size_t size) {
    void *p = NULL;
    if (size == 0) size = align;
    if (posix_memalign(&p, align, size) != 0) return NULL;
    return p;
}

void kiln_aligned_free(void *p) {
    free(p);
}

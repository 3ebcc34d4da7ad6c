/* file.h - read-only memory mapping of whole files (model weights are mapped,
 * never copied) and small whole-file helpers. */
#ifndef KILN_BASE_FILE_H
#define KILN_BASE_FILE_H

#include "kiln.h"

#include <stddef.h>

typedef struct kiln_map {
    const void *data; /* NULL for an empty file */
    size_t size;
} kiln_map;

/* Maps `path` read-only. On failure returns a status and a message naming the
 * path and the OS error. Release with kiln_map_close. */
kiln_status kiln_map_open(const char *path, kiln_map *out);
void kiln_map_close(kiln_map *m);
/* Enters every page of m into the page tables now (reading from disk what
 * the page cache lacks), so that the first pass over the weights does not
 * take a page fault per page. Best effort: nothing happens on a kernel
 * without MADV_POPULATE_READ (Linux < 5.14). */
void kiln_map_prefault(const kiln_map *m);

#endif

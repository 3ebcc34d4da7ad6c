/* file.h - whole files in memory, read-only: mapped from the page cache, or
 * for model weights about to run read into huge-page-backed memory. */
#ifndef KILN_BASE_FILE_H
#define KILN_BASE_FILE_H

#include "kiln.h"

#include <stddef.h>

typedef struct kiln_map {
    const void *data; /* NULL for an empty file */
    size_t size;
    size_t copy; /* kiln_map_load's private copy: bytes mapped at data; 0: the file's mapping */
} kiln_map;

/* Maps `path` read-only. On failure returns a status and a message naming the
 * path and the OS error. Release with kiln_map_close. */
kiln_status kiln_map_open(const char *path, kiln_map *out);
/* Files of this size and more are worth kiln_map_load's copy. */
#define KILN_MAP_COPY_MIN ((size_t)64 << 20)
/* Like kiln_map_open, but a file of at least KILN_MAP_COPY_MIN bytes is read
 * into private memory backed by transparent huge pages (then made
 * read-only) when the kernel offers them and the environment does not set
 * KILN_MMAP=1: a pass over the weights then needs a TLB entry per 2 MiB
 * instead of per 4 KiB page (decode measured 15-30% faster, docs/perf.md),
 * at the price of a copy beside the page cache's. Otherwise, when the copy
 * would take more than half of the memory the kernel reports available, or
 * when that memory cannot be had, the file is mapped. A read error fails,
 * naming the path and the OS error. */
kiln_status kiln_map_load(const char *path, kiln_map *out);
void kiln_map_close(kiln_map *m);
/* Enters every page of a file mapping into the page tables now (reading from disk what
 * the page cache lacks), so that the first pass over the weights does not
 * take a page fault per page. Best effort: nothing happens on a kernel
 * without MADV_POPULATE_READ (Linux < 5.14). */
void kiln_map_prefault(const kiln_map *m);

#endif

/* gz.h - gzip (RFC 1952) through zlib: a buffer compressed in memory (HTTP
 * Content-Encoding: gzip) and a whole file read back whether or not it is
 * compressed. Writing a compressed file is zlib's gzopen/gzwrite; nothing
 * here keeps state, so every function is thread-safe. */
#ifndef KILN_BASE_GZ_H
#define KILN_BASE_GZ_H

#include "kiln.h"

#include <stddef.h>

/* src[0..n) as one gzip member at zlib level (1 fastest .. 9 smallest; -1
 * zlib's default, 6), malloc'd (the caller frees); its size in *out_n.
 * NULL with kiln_fail() saying why (out of memory). */
unsigned char *kiln_gzip(const void *src, size_t n, int level, size_t *out_n);

/* The whole file at path in *out (malloc'd, NUL-terminated; *n bytes before
 * the NUL), decompressed when it begins with the gzip magic bytes (1f 8b),
 * read as it is otherwise: the name does not matter. KILN_ERR_IO naming the
 * path and the OS error, KILN_ERR_FORMAT for a corrupt or truncated gzip
 * stream, KILN_ERR_NOMEM; *out is NULL then. */
kiln_status kiln_read_file(const char *path, char **out, size_t *n);

#endif

/* gz.c - gzip in memory and whole-file reads through zlib (see gz.h). zlib
 * counts in unsigned int, so buffers larger than that go through it in
 * pieces. */
#include "base/gz.h"
#include "base/status.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define GZ_PIECE ((size_t)1 << 30) /* at most this much per zlib call */

static size_t min_sz(size_t a, size_t b) {
    return a < b ? a : b;
}

unsigned char *kiln_gzip(const void *src, size_t n, int level, size_t *out_n) {
    z_stream z;
    memset(&z, 0, sizeof z);
    /* window bits 15 + 16: the gzip wrapper (header and CRC-32) */
    if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        kiln_fail(KILN_ERR_NOMEM, "gzip: cannot set up the compressor");
        return NULL;
    }
    size_t cap = deflateBound(&z, (uLong)min_sz(n, ULONG_MAX)), used = 0, left = n;
    const unsigned char *in = src;
    unsigned char *out = malloc(cap ? cap : 64);
    int rc = Z_OK;
    while (out && rc != Z_STREAM_END) {
        if (!z.avail_in && left) {
            z.next_in = (Bytef *)in;
            z.avail_in = (uInt)min_sz(left, GZ_PIECE);
            in += z.avail_in;
            left -= z.avail_in;
        }
        if (used == cap) { /* deflateBound is exact for one piece; more can need room */
            unsigned char *p = realloc(out, cap * 2);
            if (!p) break;
            out = p, cap *= 2;
        }
        z.next_out = out + used;
        z.avail_out = (uInt)min_sz(cap - used, GZ_PIECE);
        size_t room = z.avail_out;
        rc = deflate(&z, left ? Z_NO_FLUSH : Z_FINISH);
        used += room - z.avail_out;
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) break;
    }
    deflateEnd(&z);
    if (!out || rc != Z_STREAM_END) {
        free(out);
        kiln_fail(KILN_ERR_NOMEM, "gzip: out of memory compressing %zu bytes", n);
        return NULL;
    }
    *out_n = used;
    return out;
}

kiln_status kiln_read_file(const char *path, char **out, size_t *n) {
    *out = NULL;
    *n = 0;
    /* gzopen reads a file without the gzip magic as it is ("transparent") */
    gzFile g = gzopen(path, "rb");
    if (!g) return kiln_fail(KILN_ERR_IO, "%s: %s", path, strerror(errno ? errno : ENOMEM));
    gzbuffer(g, 1 << 17);
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    kiln_status st = KILN_OK;
    for (;;) {
        if (!buf) {
            st = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory reading it", path);
            break;
        }
        if (cap - len < 2) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                buf = NULL;
                continue;
            }
            buf = p, cap *= 2;
        }
        int got = gzread(g, buf + len, (unsigned)min_sz(cap - len - 1, INT_MAX));
        if (got > 0) {
            len += (size_t)got;
            continue;
        }
        int zerr = Z_OK;
        const char *msg = gzerror(g, &zerr);
        if (got < 0 || (zerr != Z_OK && zerr != Z_STREAM_END))
            st = zerr == Z_ERRNO ? kiln_fail(KILN_ERR_IO, "%s: %s", path, strerror(errno))
                                 : kiln_fail(KILN_ERR_FORMAT, "%s: bad gzip data: %s", path, msg);
        break;
    }
    gzclose_r(g);
    if (st) {
        free(buf);
        return st;
    }
    buf[len] = 0;
    *out = buf;
    *n = len;
    return KILN_OK;
}

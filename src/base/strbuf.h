/* strbuf.h - a growing, NUL-terminated byte buffer for building text (JSON
 * bodies, SSE events, Prometheus exposition, chat prompts).
 *
 * A failed allocation is sticky: it sets oom, later appends do nothing, and
 * the caller checks oom once at the end instead of after every append. p is
 * NULL until the first append; otherwise p[n] is always 0. A zero-initialised
 * strbuf is empty and valid. Not synchronised.
 */
#ifndef KILN_BASE_STRBUF_H
#define KILN_BASE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct strbuf {
    char *p;
    size_t n, cap;
    bool oom;
} strbuf;

/* Makes room for extra more bytes (and the NUL); false (and oom) on failure. */
bool strbuf_reserve(strbuf *b, size_t extra);
/* Appends n bytes of s (s may be NULL when n is 0). */
void strbuf_put(strbuf *b, const char *s, size_t n);
void strbuf_puts(strbuf *b, const char *s);
void strbuf_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees the bytes and empties b. */
void strbuf_free(strbuf *b);

#endif

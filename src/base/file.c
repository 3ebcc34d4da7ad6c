/* file.c - whole files in memory, read-only (see file.h): a mapping of the
 * file, or a private copy in huge pages. Invariant: copy != 0 exactly when
 * data is an anonymous region of copy bytes (the file size rounded up to
 * whole huge pages) that this module allocated. */
#define _GNU_SOURCE
#include "base/file.h"
#include "base/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define HUGE_PAGE ((size_t)2 << 20)
/* kiln_map_load reads this much per call */
#define READ_CHUNK ((size_t)8 << 20)

/* Opens path read-only as a regular file; *size gets its size. */
static kiln_status open_regular(const char *path, int *fd_out, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kiln_fail(KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kiln_fail(KILN_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kiln_fail(KILN_ERR_IO, "%s: not a regular file", path);
    }
    *fd_out = fd;
    *size = (size_t)st.st_size;
    return KILN_OK;
}

/* Maps the open file fd (size bytes) into *out and closes fd. */
static kiln_status map_fd(const char *path, int fd, size_t size, kiln_map *out) {
    *out = (kiln_map){0};
    if (size > 0) {
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return kiln_fail(KILN_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, size, strerror(e));
        }
        *out = (kiln_map){.data = p, .size = size};
    }
    close(fd);
    return KILN_OK;
}

kiln_status kiln_map_open(const char *path, kiln_map *out) {
    *out = (kiln_map){0};
    int fd;
    size_t size;
    kiln_status s = open_regular(path, &fd, &size);
    return s ? s : map_fd(path, fd, size, out);
}

/* Whether the kernel gives huge pages to a region that asks (MADV_HUGEPAGE):
 * transparent huge pages set to "always" or "madvise", not "never". */
static int huge_pages_offered(void) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return 0;
    char line[128] = "";
    int ok = fgets(line, sizeof line, f) && !strstr(line, "[never]");
    fclose(f);
    return ok;
#else
    return 0;
#endif
}

/* Whether a private copy of `bytes` leaves room: at most half of what the
 * kernel reports as available (free memory plus reclaimable cache), so a
 * model near the machine's size keeps the file mapping (which can page)
 * rather than risking the out-of-memory killer. */
static int copy_fits(size_t bytes) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[128];
    unsigned long long kb = 0;
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
    fclose(f);
    return found && (unsigned long long)bytes / 1024 <= kb / 2;
}

/* A huge-page-aligned private region of `bytes` (a multiple of HUGE_PAGE),
 * its pages faulted in, or NULL. */
static void *huge_region(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    char *raw =
        mmap(NULL, bytes + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (p + bytes < raw + bytes + HUGE_PAGE) munmap(p + bytes, (size_t)(raw + HUGE_PAGE - p));
    (void)madvise(p, bytes, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
    /* faulting the pages in first, then copying, is ~8x faster than letting
     * the copy take the faults (2 GB: 0.43 s against 3.3 s); EINVAL is a
     * kernel without it (the copy then takes the faults), anything else
     * (ENOMEM) means the memory is not there */
    if (madvise(p, bytes, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
        munmap(p, bytes);
        return NULL;
    }
#endif
    return p;
#else
    (void)bytes;
    return NULL;
#endif
}

kiln_status kiln_map_load(const char *path, kiln_map *out) {
    const char *env = getenv("KILN_MMAP");
    if (env && *env && strcmp(env, "0") != 0) return kiln_map_open(path, out);
    *out = (kiln_map){0};
    int fd;
    size_t size;
    kiln_status s = open_regular(path, &fd, &size);
    if (s) return s;
    char *p = NULL;
    size_t bytes = (size + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (size < KILN_MAP_COPY_MIN || !huge_pages_offered() || !copy_fits(bytes) ||
        !(p = huge_region(bytes)))
        return map_fd(path, fd, size, out);
    for (size_t off = 0; off < size;) {
        size_t want = size - off < READ_CHUNK ? size - off : READ_CHUNK;
        ssize_t r = pread(fd, p + off, want, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            munmap(p, bytes);
            close(fd);
            return kiln_fail(KILN_ERR_IO, "%s: cannot read at byte %zu of %zu: %s", path, off, size,
                             e ? strerror(e) : "the file ended early");
        }
        off += (size_t)r;
    }
    close(fd);
    (void)mprotect(p, bytes, PROT_READ);
    *out = (kiln_map){.data = p, .size = size, .copy = bytes};
    return KILN_OK;
}

void kiln_map_prefault(const kiln_map *m) {
#ifdef MADV_POPULATE_READ
    if (m->data && !m->copy) (void)madvise((void *)m->data, m->size, MADV_POPULATE_READ);
#else
    (void)m;
#endif
}

void kiln_map_close(kiln_map *m) {
    if (m->data) munmap((void *)m->data, m->copy ? m->copy : m->size);
    *m = (kiln_map){0};
}

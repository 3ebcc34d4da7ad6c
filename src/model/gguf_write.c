/* gguf_write.c - the GGUF writer: collects metadata (serialized at once into
 * per-key byte strings) and borrowed tensor data, then writes a version-3 file
 * with every tensor aligned to general.alignment (default 32). The file is
 * written to "<path>.tmp" and renamed, so a failure leaves no partial file. */
#include "model/gguf.h"
#include "base/mem.h"
#include "base/status.h"
#include "compute/types.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct buf {
    uint8_t *p;
    size_t len, cap;
};

struct wkv {
    char *key;
    struct buf val; /* type tag + value, as in the file */
};

struct wtensor {
    char *name;
    kiln_type type;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    const void *data;
    uint64_t size, offset;
};

struct gguf_writer {
    struct wkv *kvs;
    size_t n_kv, cap_kv;
    struct wtensor *tensors;
    size_t n_tensors, cap_tensors;
    uint32_t alignment;
};

static bool buf_put(struct buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return true;
}

static bool put_u32(struct buf *b, uint32_t v) {
    return buf_put(b, &v, 4);
}
static bool put_u64(struct buf *b, uint64_t v) {
    return buf_put(b, &v, 8);
}
static bool put_str(struct buf *b, const char *s, size_t n) {
    return put_u64(b, n) && buf_put(b, s, n);
}

gguf_writer *gguf_writer_create(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_destroy(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val.p);
    }
    free(w->kvs);
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    free(w);
}

/* Returns the (emptied) value buffer for key, creating the pair if needed. */
static struct buf *slot(gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kvs[i].key, key)) {
            w->kvs[i].val.len = 0;
            return &w->kvs[i].val;
        }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        struct wkv *p = realloc(w->kvs, cap * sizeof *p);
        if (!p) return NULL;
        w->kvs = p;
        w->cap_kv = cap;
    }
    struct wkv *kv = &w->kvs[w->n_kv];
    memset(kv, 0, sizeof *kv);
    if (!(kv->key = strdup(key))) return NULL;
    w->n_kv++;
    return &kv->val;
}

static kiln_status nomem(const char *key) {
    return kiln_fail(KILN_ERR_NOMEM, "gguf writer: no memory for '%s'", key);
}

static kiln_status set_fixed(gguf_writer *w, const char *key, enum gguf_vtype t, const void *v) {
    struct buf *b = slot(w, key);
    if (!b || !put_u32(b, t) || !buf_put(b, v, gguf_vtype_size(t))) return nomem(key);
    return KILN_OK;
}

kiln_status gguf_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    if (!strcmp(key, "general.alignment")) {
        if (v == 0 || (v & (v - 1)))
            return kiln_fail(KILN_ERR_INVALID_ARG, "general.alignment %u is not a power of two", v);
        w->alignment = v;
    }
    return set_fixed(w, key, GGUF_VT_UINT32, &v);
}
kiln_status gguf_set_i32(gguf_writer *w, const char *key, int32_t v) {
    return set_fixed(w, key, GGUF_VT_INT32, &v);
}
kiln_status gguf_set_u64(gguf_writer *w, const char *key, uint64_t v) {
    return set_fixed(w, key, GGUF_VT_UINT64, &v);
}
kiln_status gguf_set_f32(gguf_writer *w, const char *key, float v) {
    return set_fixed(w, key, GGUF_VT_FLOAT32, &v);
}
kiln_status gguf_set_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t b = v;
    return set_fixed(w, key, GGUF_VT_BOOL, &b);
}

kiln_status gguf_set_strn(gguf_writer *w, const char *key, const char *v, size_t len) {
    struct buf *b = slot(w, key);
    if (!b || !put_u32(b, GGUF_VT_STRING) || !put_str(b, v, len)) return nomem(key);
    return KILN_OK;
}
kiln_status gguf_set_str(gguf_writer *w, const char *key, const char *v) {
    return gguf_set_strn(w, key, v, strlen(v));
}

kiln_status gguf_set_arr_data(gguf_writer *w, const char *key, enum gguf_vtype elem,
                              const void *data, uint64_t n) {
    size_t es = gguf_vtype_size(elem);
    if (!es)
        return kiln_fail(KILN_ERR_INVALID_ARG, "gguf writer: '%s': %s is not a fixed-size type",
                         key, gguf_vtype_name(elem));
    struct buf *b = slot(w, key);
    if (!b || !put_u32(b, GGUF_VT_ARRAY) || !put_u32(b, elem) || !put_u64(b, n) ||
        !buf_put(b, data, n * es))
        return nomem(key);
    return KILN_OK;
}

kiln_status gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    struct buf *b = slot(w, key);
    if (!b || !put_u32(b, GGUF_VT_ARRAY) || !put_u32(b, GGUF_VT_STRING) || !put_u64(b, n))
        return nomem(key);
    for (uint64_t i = 0; i < n; i++)
        if (!put_str(b, v[i], strlen(v[i]))) return nomem(key);
    return KILN_OK;
}

/* Serializes v without its type tag. */
static bool put_value(struct buf *b, const gguf_value *v) {
    switch (v->type) {
    case GGUF_VT_STRING:
        return put_str(b, v->str.ptr, v->str.len);
    case GGUF_VT_ARRAY:
        if (!put_u32(b, v->arr.type) || !put_u64(b, v->arr.n)) return false;
        if (!v->arr.items) return buf_put(b, v->arr.raw, v->arr.n * gguf_vtype_size(v->arr.type));
        for (uint64_t i = 0; i < v->arr.n; i++)
            if (!put_value(b, &v->arr.items[i])) return false;
        return true;
    case GGUF_VT_FLOAT32: {
        float f = (float)v->f64;
        return buf_put(b, &f, 4);
    }
    case GGUF_VT_FLOAT64:
        return buf_put(b, &v->f64, 8);
    default: /* integers and bool: little-endian low bytes of u64 */
        return buf_put(b, &v->u64, gguf_vtype_size(v->type));
    }
}

kiln_status gguf_set_value(gguf_writer *w, const char *key, const gguf_value *v) {
    if (!strcmp(key, "general.alignment") && v->type == GGUF_VT_UINT32)
        return gguf_set_u32(w, key, (uint32_t)v->u64);
    struct buf *b = slot(w, key);
    if (!b || !put_u32(b, v->type) || !put_value(b, v)) return nomem(key);
    return KILN_OK;
}

kiln_status gguf_add_tensor(gguf_writer *w, const char *name, kiln_type type, int n_dims,
                            const int64_t *ne, const void *data, uint64_t size) {
    const struct kiln_type_info *ti = kiln_type_info(type);
    if (!ti)
        return kiln_fail(KILN_ERR_INVALID_ARG, "gguf writer: tensor '%s': unknown type %d", name,
                         type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return kiln_fail(KILN_ERR_INVALID_ARG, "gguf writer: tensor '%s': n_dims %d", name, n_dims);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name))
            return kiln_fail(KILN_ERR_INVALID_ARG, "gguf writer: tensor '%s' added twice", name);
    struct wtensor t = {.type = type, .n_dims = n_dims, .data = data, .size = size};
    uint64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 0 || !kiln_mul_ok(n, (uint64_t)t.ne[d], &n))
            return kiln_fail(KILN_ERR_INVALID_ARG, "gguf writer: tensor '%s': bad shape", name);
    }
    if (t.ne[0] % ti->blck || n / (uint64_t)ti->blck * ti->size != size)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "gguf writer: tensor '%s': %llu bytes do not match shape and type %s",
                         name, (unsigned long long)size, ti->name);
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        struct wtensor *p = realloc(w->tensors, cap * sizeof *p);
        if (!p) return nomem(name);
        w->tensors = p;
        w->cap_tensors = cap;
    }
    if (!(t.name = strdup(name))) return nomem(name);
    w->tensors[w->n_tensors++] = t;
    return KILN_OK;
}

static bool write_pad(FILE *fp, uint64_t *pos, uint32_t align) {
    static const uint8_t zeros[64];
    uint64_t pad = kiln_align_up(*pos, align) - *pos;
    *pos += pad;
    while (pad) {
        size_t n = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        if (fwrite(zeros, 1, n, fp) != n) return false;
        pad -= n;
    }
    return true;
}

/* Header, metadata and tensor infos, serialized into one buffer. */
static bool build_header(gguf_writer *w, struct buf *h) {
    if (!put_u32(h, GGUF_MAGIC) || !put_u32(h, 3) || !put_u64(h, w->n_tensors) ||
        !put_u64(h, w->n_kv))
        return false;
    for (size_t i = 0; i < w->n_kv; i++)
        if (!put_str(h, w->kvs[i].key, strlen(w->kvs[i].key)) ||
            !buf_put(h, w->kvs[i].val.p, w->kvs[i].val.len))
            return false;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        struct wtensor *t = &w->tensors[i];
        t->offset = off;
        off = kiln_align_up(off + t->size, w->alignment);
        if (!put_str(h, t->name, strlen(t->name)) || !put_u32(h, (uint32_t)t->n_dims)) return false;
        for (int d = 0; d < t->n_dims; d++)
            if (!put_u64(h, (uint64_t)t->ne[d])) return false;
        if (!put_u32(h, t->type) || !put_u64(h, t->offset)) return false;
    }
    return true;
}

kiln_status gguf_writer_write(gguf_writer *w, const char *path) {
    struct buf h = {0};
    kiln_status st = KILN_OK;
    char tmp[4096];
    FILE *fp = NULL;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        st = kiln_fail(KILN_ERR_INVALID_ARG, "%s: path too long", path);
        goto fail;
    }
    if (!build_header(w, &h)) {
        st = nomem(path);
        goto fail;
    }
    if (!(fp = fopen(tmp, "wb"))) {
        st = kiln_fail(KILN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        goto fail;
    }
    uint64_t pos = h.len;
    bool ok = fwrite(h.p, 1, h.len, fp) == h.len && write_pad(fp, &pos, w->alignment);
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        ok = fwrite(t->data, 1, t->size, fp) == t->size;
        pos += t->size;
        if (ok) ok = write_pad(fp, &pos, w->alignment); /* llama.cpp pads the last one too */
    }
    int e = errno;
    if (fclose(fp) != 0 && ok) {
        ok = false;
        e = errno;
    }
    fp = NULL;
    if (!ok) {
        st = kiln_fail(KILN_ERR_IO, "%s: write failed: %s", path, strerror(e));
        remove(tmp);
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        st = kiln_fail(KILN_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp,
                       strerror(errno));
        remove(tmp);
    }
fail:
    free(h.p);
    return st;
}

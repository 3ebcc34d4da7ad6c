/* gguf.c - the GGUF reader: maps a file, validates everything before use, and
 * indexes its metadata and tensors (see gguf.h for the contract).
 *
 * Invariant: every read goes through struct rd, which checks the remaining
 * length first; every count is bounded by the bytes left before anything is
 * allocated for it, so a hostile file can neither read out of bounds nor make
 * the reader allocate more than a small multiple of the file size. */
#include "model/gguf.h"
#include "base/file.h"
#include "base/mem.h"
#include "base/status.h"
#include "compute/types.h"

#include <stdlib.h>
#include <string.h>

#define GGUF_MAX_DEPTH    4     /* nesting of arrays in arrays */
#define GGUF_MAX_KEY_LEN  65535 /* spec: keys are at most 2^16-1 bytes */
#define GGUF_MAX_NAME_LEN 65535 /* tensor names: ggml uses 64, be lenient */

struct gguf_file {
    char *path;
    kiln_map map;
    const uint8_t *base;
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    gguf_kv *kvs;
    int64_t n_tensors;
    gguf_tensor *tensors;
};

struct rd {
    const uint8_t *base;
    uint64_t size, off;
    const char *name;
};

static const char *const vtype_names[GGUF_VT_COUNT] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64"};

const char *gguf_vtype_name(enum gguf_vtype t) {
    if ((unsigned)t >= GGUF_VT_COUNT) return "invalid";
    return vtype_names[t];
}

size_t gguf_vtype_size(enum gguf_vtype t) {
    static const size_t sizes[GGUF_VT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return (unsigned)t < GGUF_VT_COUNT ? sizes[t] : 0;
}

static kiln_status rd_need(struct rd *r, uint64_t n, const char *field) {
    if (n > r->size - r->off)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: %s at byte %llu: needs %llu bytes but the file ends at %llu "
                         "(truncated or corrupt)",
                         r->name, field, (unsigned long long)r->off, (unsigned long long)n,
                         (unsigned long long)r->size);
    return KILN_OK;
}

static kiln_status rd_bytes(struct rd *r, void *dst, uint64_t n, const char *field) {
    kiln_status st = rd_need(r, n, field);
    if (st) return st;
    memcpy(dst, r->base + r->off, n);
    r->off += n;
    return KILN_OK;
}

static kiln_status rd_u32(struct rd *r, uint32_t *v, const char *f) {
    return rd_bytes(r, v, 4, f);
}
static kiln_status rd_u64(struct rd *r, uint64_t *v, const char *f) {
    return rd_bytes(r, v, 8, f);
}

static kiln_status rd_str(struct rd *r, gguf_str *s, uint64_t max_len, const char *field) {
    uint64_t at = r->off;
    kiln_status st = rd_u64(r, &s->len, field);
    if (st) return st;
    if (s->len > max_len)
        return kiln_fail(KILN_ERR_FORMAT, "%s: %s at byte %llu: length %llu exceeds the limit %llu",
                         r->name, field, (unsigned long long)at, (unsigned long long)s->len,
                         (unsigned long long)max_len);
    if ((st = rd_need(r, s->len, field))) return st;
    s->ptr = (const char *)r->base + r->off;
    r->off += s->len;
    return KILN_OK;
}

static char *dup_str(gguf_str s) {
    char *p = malloc(s.len + 1);
    if (!p) return NULL;
    memcpy(p, s.ptr, s.len);
    p[s.len] = 0;
    return p;
}

static void value_free(gguf_value *v) {
    if (v->type != GGUF_VT_ARRAY || !v->arr.items) return;
    for (uint64_t i = 0; i < v->arr.n; i++) value_free(&v->arr.items[i]);
    free(v->arr.items);
    v->arr.items = NULL;
}

static kiln_status rd_value(struct rd *r, enum gguf_vtype type, gguf_value *v, int depth,
                            const char *key);

static kiln_status rd_array(struct rd *r, gguf_value *v, int depth, const char *key) {
    uint64_t at = r->off;
    uint32_t et;
    kiln_status st = rd_u32(r, &et, "array element type");
    if (st) return st;
    if (et >= GGUF_VT_COUNT)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: key '%s': array element type %u at byte %llu is not a GGUF type",
                         r->name, key, et, (unsigned long long)at);
    if (et == GGUF_VT_ARRAY && depth >= GGUF_MAX_DEPTH)
        return kiln_fail(KILN_ERR_FORMAT, "%s: key '%s': arrays nested deeper than %d at byte %llu",
                         r->name, key, GGUF_MAX_DEPTH, (unsigned long long)at);
    uint64_t n;
    if ((st = rd_u64(r, &n, "array length"))) return st;
    v->arr.type = (enum gguf_vtype)et;
    v->arr.n = n;
    v->arr.raw = r->base + r->off;
    v->arr.items = NULL;
    size_t es = gguf_vtype_size(v->arr.type);
    /* minimum bytes per element: strings have an 8-byte length, arrays 12 */
    uint64_t min = es ? es : (et == GGUF_VT_STRING ? 8 : 12);
    if (n > (r->size - r->off) / min)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: key '%s': array length %llu at byte %llu does not fit in the file",
                         r->name, key, (unsigned long long)n, (unsigned long long)(at + 4));
    if (es) {
        if (et == GGUF_VT_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (r->base[r->off + i] > 1)
                    return kiln_fail(
                        KILN_ERR_FORMAT,
                        "%s: key '%s': bool element %llu at byte %llu is %u, not 0 or 1", r->name,
                        key, (unsigned long long)i, (unsigned long long)(r->off + i),
                        r->base[r->off + i]);
        r->off += n * es;
        return KILN_OK;
    }
    v->arr.items = calloc(n ? n : 1, sizeof *v->arr.items);
    if (!v->arr.items)
        return kiln_fail(KILN_ERR_NOMEM, "%s: key '%s': no memory for %llu array items", r->name,
                         key, (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        v->arr.items[i].type = v->arr.type;
        if ((st = rd_value(r, v->arr.type, &v->arr.items[i], depth + 1, key))) {
            v->arr.n = i + 1; /* free what was parsed */
            return st;
        }
    }
    return KILN_OK;
}

static kiln_status rd_value(struct rd *r, enum gguf_vtype type, gguf_value *v, int depth,
                            const char *key) {
    uint8_t b[8];
    kiln_status st;
    v->type = type;
    uint64_t at = r->off;
    switch (type) {
    case GGUF_VT_STRING:
        return rd_str(r, &v->str, UINT64_MAX, "string value");
    case GGUF_VT_ARRAY:
        return rd_array(r, v, depth, key);
    default:
        break;
    }
    size_t n = gguf_vtype_size(type);
    if ((st = rd_bytes(r, b, n, "value"))) return st;
    switch (type) {
    case GGUF_VT_UINT8:
        v->u64 = b[0];
        break;
    case GGUF_VT_INT8:
        v->i64 = (int8_t)b[0];
        break;
    case GGUF_VT_UINT16: {
        uint16_t x;
        memcpy(&x, b, 2);
        v->u64 = x;
        break;
    }
    case GGUF_VT_INT16: {
        int16_t x;
        memcpy(&x, b, 2);
        v->i64 = x;
        break;
    }
    case GGUF_VT_UINT32: {
        uint32_t x;
        memcpy(&x, b, 4);
        v->u64 = x;
        break;
    }
    case GGUF_VT_INT32: {
        int32_t x;
        memcpy(&x, b, 4);
        v->i64 = x;
        break;
    }
    case GGUF_VT_FLOAT32: {
        float x;
        memcpy(&x, b, 4);
        v->f64 = x;
        break;
    }
    case GGUF_VT_BOOL:
        if (b[0] > 1)
            return kiln_fail(KILN_ERR_FORMAT, "%s: key '%s': bool at byte %llu is %u, not 0 or 1",
                             r->name, key, (unsigned long long)at, b[0]);
        v->u64 = b[0];
        break;
    case GGUF_VT_UINT64:
        memcpy(&v->u64, b, 8);
        break;
    case GGUF_VT_INT64:
        memcpy(&v->i64, b, 8);
        break;
    case GGUF_VT_FLOAT64:
        memcpy(&v->f64, b, 8);
        break;
    default:
        return kiln_fail(KILN_ERR_INTERNAL, "gguf: unhandled type %d", type);
    }
    return KILN_OK;
}

static kiln_status read_kvs(gguf_file *f, struct rd *r, uint64_t n_kv) {
    /* each pair needs at least 8 (key length) + 4 (type) + 1 bytes */
    if (n_kv > (r->size - r->off) / 13)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: metadata count %llu at byte 16 does not fit in the file", r->name,
                         (unsigned long long)n_kv);
    f->kvs = calloc(n_kv ? n_kv : 1, sizeof *f->kvs);
    if (!f->kvs)
        return kiln_fail(KILN_ERR_NOMEM, "%s: no memory for %llu metadata pairs", r->name,
                         (unsigned long long)n_kv);
    kiln_status st;
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &f->kvs[i];
        kv->offset = r->off;
        gguf_str key;
        if ((st = rd_str(r, &key, GGUF_MAX_KEY_LEN, "metadata key"))) return st;
        if (key.len == 0 || memchr(key.ptr, 0, key.len))
            return kiln_fail(KILN_ERR_FORMAT,
                             "%s: metadata key %llu at byte %llu is empty or holds a NUL byte",
                             r->name, (unsigned long long)i, (unsigned long long)kv->offset);
        if (!(kv->key = dup_str(key))) return kiln_fail(KILN_ERR_NOMEM, "%s: no memory", r->name);
        f->n_kv = (int64_t)i + 1;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(f->kvs[j].key, kv->key))
                return kiln_fail(KILN_ERR_FORMAT,
                                 "%s: metadata key '%s' at byte %llu appears twice", r->name,
                                 kv->key, (unsigned long long)kv->offset);
        uint32_t type;
        uint64_t tat = r->off;
        if ((st = rd_u32(r, &type, "metadata value type"))) return st;
        if (type >= GGUF_VT_COUNT)
            return kiln_fail(KILN_ERR_FORMAT,
                             "%s: key '%s': value type %u at byte %llu is not a GGUF type", r->name,
                             kv->key, type, (unsigned long long)tat);
        if ((st = rd_value(r, (enum gguf_vtype)type, &kv->value, 0, kv->key))) return st;
    }
    return KILN_OK;
}

static kiln_status read_alignment(gguf_file *f, const char *name) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find_kv(f, "general.alignment");
    if (!kv) return KILN_OK;
    if (kv->value.type != GGUF_VT_UINT32)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: general.alignment at byte %llu has type %s, expected uint32", name,
                         (unsigned long long)kv->offset, gguf_vtype_name(kv->value.type));
    uint64_t a = kv->value.u64;
    if (a == 0 || (a & (a - 1)) || a > (1u << 20))
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: general.alignment at byte %llu is %llu, not a power of two <= 1 MiB",
                         name, (unsigned long long)kv->offset, (unsigned long long)a);
    f->alignment = (uint32_t)a;
    return KILN_OK;
}

static kiln_status read_tensor_info(gguf_file *f, struct rd *r, gguf_tensor *t, int64_t i) {
    kiln_status st;
    t->info_offset = r->off;
    gguf_str name;
    if ((st = rd_str(r, &name, GGUF_MAX_NAME_LEN, "tensor name"))) return st;
    if (name.len == 0 || memchr(name.ptr, 0, name.len))
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: tensor %lld at byte %llu has an empty name or a NUL byte in it",
                         r->name, (long long)i, (unsigned long long)t->info_offset);
    if (!(t->name = dup_str(name))) return kiln_fail(KILN_ERR_NOMEM, "%s: no memory", r->name);
    uint32_t n_dims, type;
    uint64_t at = r->off;
    if ((st = rd_u32(r, &n_dims, "tensor n_dims"))) return st;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor '%s': n_dims %u at byte %llu is not in 1..%d",
                         r->name, t->name, n_dims, (unsigned long long)at, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    uint64_t n_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        at = r->off;
        if (d < t->n_dims && (st = rd_u64(r, &ne, "tensor dimension"))) return st;
        if (ne > INT64_MAX || !kiln_mul_ok(n_elems, ne, &n_elems) || n_elems > INT64_MAX)
            return kiln_fail(
                KILN_ERR_FORMAT,
                "%s: tensor '%s': dimension %d (%llu) at byte %llu overflows the element count",
                r->name, t->name, d, (unsigned long long)ne, (unsigned long long)at);
        t->ne[d] = (int64_t)ne;
    }
    t->n_elems = n_elems;
    at = r->off;
    if ((st = rd_u32(r, &type, "tensor type"))) return st;
    const struct kiln_type_info *ti = kiln_type_info((kiln_type)type);
    if (!ti)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: tensor '%s': type %u at byte %llu is not a known GGML type", r->name,
                         t->name, type, (unsigned long long)at);
    t->type = (kiln_type)type;
    if (t->ne[0] % ti->blck)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: tensor '%s': row length %lld at byte %llu is not a multiple of %s's "
                         "block size %lld",
                         r->name, t->name, (long long)t->ne[0],
                         (unsigned long long)(t->info_offset + name.len + 12), ti->name,
                         (long long)ti->blck);
    t->size = n_elems / (uint64_t)ti->blck * ti->size; /* cannot overflow: bounded below */
    at = r->off;
    if ((st = rd_u64(r, &t->offset, "tensor data offset"))) return st;
    if (t->offset % f->alignment)
        return kiln_fail(
            KILN_ERR_FORMAT,
            "%s: tensor '%s': data offset %llu at byte %llu is not a multiple of the alignment %u",
            r->name, t->name, (unsigned long long)t->offset, (unsigned long long)at, f->alignment);
    return KILN_OK;
}

static int cmp_offset(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every tensor lies inside the data section and no two overlap. */
static kiln_status check_tensor_extents(gguf_file *f, const char *name) {
    uint64_t avail = f->size >= f->data_offset ? f->size - f->data_offset : 0;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->size > avail || t->offset > avail - t->size)
            return kiln_fail(KILN_ERR_FORMAT,
                             "%s: tensor '%s' (info at byte %llu): data [%llu, +%llu) ends past "
                             "the end of the file (%llu bytes of data)",
                             name, t->name, (unsigned long long)t->info_offset,
                             (unsigned long long)(f->data_offset + t->offset),
                             (unsigned long long)t->size, (unsigned long long)avail);
        t->data = f->base + f->data_offset + t->offset;
    }
    if (f->n_tensors < 2) return KILN_OK;
    gguf_tensor **order = malloc((size_t)f->n_tensors * sizeof *order);
    if (!order) return kiln_fail(KILN_ERR_NOMEM, "%s: no memory", name);
    for (int64_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n_tensors, sizeof *order, cmp_offset);
    kiln_status st = KILN_OK;
    for (int64_t i = 1; i < f->n_tensors && !st; i++)
        if (order[i - 1]->offset + order[i - 1]->size > order[i]->offset)
            st = kiln_fail(
                KILN_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap (data offsets %llu and %llu)",
                name, order[i - 1]->name, order[i]->name, (unsigned long long)order[i - 1]->offset,
                (unsigned long long)order[i]->offset);
    free(order);
    return st;
}

static kiln_status read_tensors(gguf_file *f, struct rd *r, uint64_t n) {
    /* each info needs at least 8 + 1 + 4 + 8 + 4 + 8 bytes */
    if (n > (r->size - r->off) / 33)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: tensor count %llu at byte 8 does not fit in the file", r->name,
                         (unsigned long long)n);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors)
        return kiln_fail(KILN_ERR_NOMEM, "%s: no memory for %llu tensors", r->name,
                         (unsigned long long)n);
    kiln_status st;
    for (uint64_t i = 0; i < n; i++) {
        f->n_tensors = (int64_t)i + 1;
        if ((st = read_tensor_info(f, r, &f->tensors[i], (int64_t)i))) return st;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(f->tensors[j].name, f->tensors[i].name))
                return kiln_fail(KILN_ERR_FORMAT, "%s: tensor name '%s' at byte %llu appears twice",
                                 r->name, f->tensors[i].name,
                                 (unsigned long long)f->tensors[i].info_offset);
    }
    return KILN_OK;
}

static kiln_status parse(gguf_file *f, const char *name) {
    struct rd r = {f->base, f->size, 0, name};
    uint32_t magic;
    kiln_status st;
    if (f->size < 4 || (rd_u32(&r, &magic, "magic"), magic != GGUF_MAGIC))
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: not a GGUF file (the first 4 bytes at byte 0 are not \"GGUF\")",
                         name);
    if ((st = rd_u32(&r, &f->version, "version"))) return st;
    if (f->version == 1)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "%s: GGUF version 1 (byte 4) is not supported; convert the model with a "
                         "current llama.cpp",
                         name);
    if (f->version != 2 && f->version != 3)
        return kiln_fail(KILN_ERR_FORMAT, "%s: GGUF version %u at byte 4 is not 2 or 3", name,
                         f->version);
    uint64_t n_tensors, n_kv;
    if ((st = rd_u64(&r, &n_tensors, "tensor count"))) return st;
    if ((st = rd_u64(&r, &n_kv, "metadata count"))) return st;
    if ((st = read_kvs(f, &r, n_kv))) return st;
    if ((st = read_alignment(f, name))) return st;
    if ((st = read_tensors(f, &r, n_tensors))) return st;
    f->data_offset = kiln_align_up(r.off, f->alignment);
    if (f->n_tensors > 0 && f->data_offset > f->size)
        return kiln_fail(
            KILN_ERR_FORMAT,
            "%s: the tensor data section (byte %llu) starts past the end of the file (%llu bytes)",
            name, (unsigned long long)f->data_offset, (unsigned long long)f->size);
    return check_tensor_extents(f, name);
}

gguf_file *gguf_open_memory(const void *data, size_t size, const char *name, kiln_status *st) {
    kiln_status s = KILN_OK;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name ? name : "<memory>"))) {
        s = kiln_fail(KILN_ERR_NOMEM, "%s: no memory", name);
        goto fail;
    }
    f->base = data;
    f->size = size;
    if ((s = parse(f, f->path))) goto fail;
    if (st) *st = KILN_OK;
    return f;
fail:
    gguf_close(f);
    if (st) *st = s;
    return NULL;
}

static gguf_file *open_with(kiln_status (*place)(const char *, kiln_map *), const char *path,
                            kiln_status *st) {
    kiln_map map;
    kiln_status s = place(path, &map);
    if (s) {
        if (st) *st = s;
        return NULL;
    }
    gguf_file *f = gguf_open_memory(map.data, map.size, path, st);
    if (!f) {
        kiln_map_close(&map);
        return NULL;
    }
    f->map = map;
    return f;
}

gguf_file *gguf_open(const char *path, kiln_status *st) {
    return open_with(kiln_map_open, path, st);
}

gguf_file *gguf_load(const char *path, kiln_status *st) {
    return open_with(kiln_map_load, path, st);
}

void gguf_prefault(const gguf_file *f) {
    kiln_map_prefault(&f->map);
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n_kv; i++) {
        free((void *)f->kvs[i].key);
        value_free(&f->kvs[i].value);
    }
    free(f->kvs);
    for (int64_t i = 0; i < f->n_tensors; i++) free((void *)f->tensors[i].name);
    free(f->tensors);
    kiln_map_close(&f->map);
    free(f->path);
    free(f);
}

const char *gguf_path(const gguf_file *f) {
    return f->path;
}
uint32_t gguf_version(const gguf_file *f) {
    return f->version;
}
uint32_t gguf_alignment(const gguf_file *f) {
    return f->alignment;
}
uint64_t gguf_file_size(const gguf_file *f) {
    return f->size;
}
uint64_t gguf_data_offset(const gguf_file *f) {
    return f->data_offset;
}
int64_t gguf_kv_count(const gguf_file *f) {
    return f->n_kv;
}
int64_t gguf_tensor_count(const gguf_file *f) {
    return f->n_tensors;
}

const gguf_kv *gguf_kv_at(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_kv ? &f->kvs[i] : NULL;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    for (int64_t i = 0; i < f->n_kv; i++)
        if (f->kvs[i].key && !strcmp(f->kvs[i].key, key)) return &f->kvs[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (int64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].name && !strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* ---- typed getters ---- */

static bool is_int(enum gguf_vtype t) {
    return t <= GGUF_VT_INT32 || t == GGUF_VT_UINT64 || t == GGUF_VT_INT64;
}
static bool is_signed(enum gguf_vtype t) {
    return t == GGUF_VT_INT8 || t == GGUF_VT_INT16 || t == GGUF_VT_INT32 || t == GGUF_VT_INT64;
}

static kiln_status find_typed(const gguf_file *f, const char *key, const gguf_kv **kv) {
    *kv = gguf_find_kv(f, key);
    if (!*kv)
        return kiln_fail(KILN_ERR_NOT_FOUND, "%s: metadata key '%s' is missing", f->path, key);
    return KILN_OK;
}

static kiln_status wrong_type(const gguf_file *f, const gguf_kv *kv, const char *want) {
    return kiln_fail(KILN_ERR_FORMAT, "%s: metadata key '%s' (byte %llu) has type %s, expected %s",
                     f->path, kv->key, (unsigned long long)kv->offset,
                     gguf_vtype_name(kv->value.type), want);
}

kiln_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv;
    kiln_status st = find_typed(f, key, &kv);
    if (st) return st;
    if (!is_int(kv->value.type)) return wrong_type(f, kv, "an integer");
    if (!is_signed(kv->value.type) && kv->value.u64 > INT64_MAX)
        return kiln_fail(KILN_ERR_FORMAT, "%s: metadata key '%s' value %llu is out of range",
                         f->path, key, (unsigned long long)kv->value.u64);
    *out = kv->value.i64;
    return KILN_OK;
}

kiln_status gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out) {
    const gguf_kv *kv;
    kiln_status st = find_typed(f, key, &kv);
    if (st) return st;
    if (!is_int(kv->value.type)) return wrong_type(f, kv, "an integer");
    if (is_signed(kv->value.type) && kv->value.i64 < 0)
        return kiln_fail(KILN_ERR_FORMAT, "%s: metadata key '%s' is negative (%lld)", f->path, key,
                         (long long)kv->value.i64);
    *out = kv->value.u64;
    return KILN_OK;
}

kiln_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    uint64_t v;
    kiln_status st = gguf_get_u64(f, key, &v);
    if (st) return st;
    if (v > UINT32_MAX)
        return kiln_fail(KILN_ERR_FORMAT, "%s: metadata key '%s' value %llu does not fit 32 bits",
                         f->path, key, (unsigned long long)v);
    *out = (uint32_t)v;
    return KILN_OK;
}

kiln_status gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const gguf_kv *kv;
    kiln_status st = find_typed(f, key, &kv);
    if (st) return st;
    enum gguf_vtype t = kv->value.type;
    if (t == GGUF_VT_FLOAT32 || t == GGUF_VT_FLOAT64)
        *out = (float)kv->value.f64;
    else if (is_signed(t))
        *out = (float)kv->value.i64;
    else if (is_int(t))
        *out = (float)kv->value.u64;
    else
        return wrong_type(f, kv, "a number");
    return KILN_OK;
}

kiln_status gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv;
    kiln_status st = find_typed(f, key, &kv);
    if (st) return st;
    if (kv->value.type != GGUF_VT_BOOL) return wrong_type(f, kv, "bool");
    *out = kv->value.u64 != 0;
    return KILN_OK;
}

kiln_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const gguf_kv *kv;
    kiln_status st = find_typed(f, key, &kv);
    if (st) return st;
    if (kv->value.type != GGUF_VT_STRING) return wrong_type(f, kv, "string");
    *out = kv->value.str;
    return KILN_OK;
}

kiln_status gguf_get_arr(const gguf_file *f, const char *key, enum gguf_vtype elem,
                         const gguf_value **out) {
    const gguf_kv *kv;
    kiln_status st = find_typed(f, key, &kv);
    if (st) return st;
    if (kv->value.type != GGUF_VT_ARRAY) return wrong_type(f, kv, "array");
    if (elem != GGUF_VT_COUNT && kv->value.arr.type != elem)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: metadata key '%s' (byte %llu) is an array of %s, expected %s",
                         f->path, key, (unsigned long long)kv->offset,
                         gguf_vtype_name(kv->value.arr.type), gguf_vtype_name(elem));
    *out = &kv->value;
    return KILN_OK;
}

int64_t gguf_arr_i64(const gguf_value *arr, uint64_t i) {
    const uint8_t *p = (const uint8_t *)arr->arr.raw + i * gguf_vtype_size(arr->arr.type);
    switch (arr->arr.type) {
    case GGUF_VT_UINT8:
    case GGUF_VT_BOOL:
        return *p;
    case GGUF_VT_INT8:
        return (int8_t)*p;
    case GGUF_VT_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        return x;
    }
    case GGUF_VT_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        return x;
    }
    case GGUF_VT_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_VT_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_VT_UINT64:
    case GGUF_VT_INT64: {
        int64_t x;
        memcpy(&x, p, 8);
        return x;
    }
    case GGUF_VT_FLOAT32:
    case GGUF_VT_FLOAT64:
        return (int64_t)gguf_arr_f64(arr, i);
    default:
        return 0;
    }
}

double gguf_arr_f64(const gguf_value *arr, uint64_t i) {
    const uint8_t *p = (const uint8_t *)arr->arr.raw + i * gguf_vtype_size(arr->arr.type);
    switch (arr->arr.type) {
    case GGUF_VT_FLOAT32: {
        float x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_VT_FLOAT64: {
        double x;
        memcpy(&x, p, 8);
        return x;
    }
    case GGUF_VT_UINT64: {
        uint64_t x;
        memcpy(&x, p, 8);
        return (double)x;
    }
    default:
        return (double)gguf_arr_i64(arr, i);
    }
}

/* quantize.c - file types, the quantization rules and fallback, parallel row
 * conversion through the kernel tables, and whole-file requantization (see
 * quantize.h). */
#include "model/quantize.h"
#include "base/status.h"
#include "compute/kernels.h"
#include "compute/types.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The canonical mix ("Q4_K_M") comes before the other mixes and the bare type
 * name of the same tensor type, so that quant_ftype_of_type and listings by
 * file type find it first. */
static const struct quant_ftype ftypes[] = {
    {"F32", 0, KILN_TYPE_F32},        {"F16", 1, KILN_TYPE_F16},
    {"BF16", 32, KILN_TYPE_BF16},     {"Q4_0", 2, KILN_TYPE_Q4_0},
    {"Q4_1", 3, KILN_TYPE_Q4_1},      {"Q5_0", 8, KILN_TYPE_Q5_0},
    {"Q5_1", 9, KILN_TYPE_Q5_1},      {"Q8_0", 7, KILN_TYPE_Q8_0},
    {"Q2_K", 10, KILN_TYPE_Q2_K},     {"Q3_K_M", 12, KILN_TYPE_Q3_K},
    {"Q3_K_S", 11, KILN_TYPE_Q3_K},   {"Q3_K_L", 13, KILN_TYPE_Q3_K},
    {"Q3_K", 12, KILN_TYPE_Q3_K},     {"Q4_K_M", 15, KILN_TYPE_Q4_K},
    {"Q4_K_S", 14, KILN_TYPE_Q4_K},   {"Q4_K", 15, KILN_TYPE_Q4_K},
    {"Q5_K_M", 17, KILN_TYPE_Q5_K},   {"Q5_K_S", 16, KILN_TYPE_Q5_K},
    {"Q5_K", 17, KILN_TYPE_Q5_K},     {"Q6_K", 18, KILN_TYPE_Q6_K},
    {"IQ4_NL", 25, KILN_TYPE_IQ4_NL}, {"IQ4_XS", 30, KILN_TYPE_IQ4_XS},
};
#define N_FTYPES ((int)(sizeof ftypes / sizeof ftypes[0]))

int quant_ftype_count(void) {
    return N_FTYPES;
}

const struct quant_ftype *quant_ftype_at(int i) {
    return i >= 0 && i < N_FTYPES ? &ftypes[i] : NULL;
}

kiln_status quant_ftype_parse(const char *name, struct quant_ftype *out) {
    for (int i = 0; i < N_FTYPES; i++)
        if (!strcasecmp(ftypes[i].name, name)) {
            *out = ftypes[i];
            return KILN_OK;
        }
    char list[512];
    size_t len = 0;
    list[0] = 0;
    for (int i = 0; i < N_FTYPES && len < sizeof list; i++)
        len +=
            (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", ftypes[i].name);
    return kiln_fail(KILN_ERR_NOT_FOUND, "unknown type '%s' (valid: %s)", name, list);
}

uint32_t quant_ftype_of_type(kiln_type t) {
    for (int i = 0; i < N_FTYPES; i++)
        if (ftypes[i].type == t) return ftypes[i].ftype;
    return UINT32_MAX;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

bool quant_tensor_wanted(const char *name, int n_dims) {
    return n_dims >= 2 && ends_with(name, ".weight") && strcmp(name, "token_types.weight") &&
           strcmp(name, "position_embd.weight");
}

static bool fits(kiln_type t, int64_t ne0) {
    const struct kiln_type_info *ti = kiln_type_info(t);
    return ti && ne0 % ti->blck == 0;
}

kiln_type quant_fallback_type(kiln_type want, int64_t ne0) {
    if (fits(want, ne0)) return want;
    kiln_type alt;
    switch (want) {
    case KILN_TYPE_Q2_K:
    case KILN_TYPE_Q3_K:
    case KILN_TYPE_IQ4_XS:
        alt = KILN_TYPE_IQ4_NL;
        break;
    case KILN_TYPE_Q4_K:
        alt = KILN_TYPE_Q5_0;
        break;
    case KILN_TYPE_Q5_K:
        alt = KILN_TYPE_Q5_1;
        break;
    case KILN_TYPE_Q6_K:
        alt = KILN_TYPE_Q8_0;
        break;
    default:
        alt = KILN_TYPE_F16;
        break;
    }
    return fits(alt, ne0) ? alt : KILN_TYPE_F16;
}

kiln_status quant_check_output(const char *path) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return kiln_fail(KILN_ERR_IO, "%s: path too long", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return kiln_fail(KILN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    fclose(fp);
    remove(tmp);
    return KILN_OK;
}

struct convert_task {
    kiln_to_float_fn to_float; /* NULL when the source is F32 */
    kiln_from_float_fn from_float;
    const uint8_t *src;
    uint8_t *dst;
    size_t src_row, dst_row;
    int64_t ne0, nrows;
    float *scratch; /* ne0 floats per thread */
};

static void convert_worker(void *arg, int ith, int nth) {
    const struct convert_task *t = arg;
    int64_t r0 = t->nrows * ith / nth, r1 = t->nrows * (ith + 1) / nth;
    float *row = t->scratch + (size_t)ith * (size_t)t->ne0;
    for (int64_t r = r0; r < r1; r++) {
        const void *s = t->src + (size_t)r * t->src_row;
        if (t->to_float) t->to_float(s, row, t->ne0);
        t->from_float(t->to_float ? row : (const float *)s, t->dst + (size_t)r * t->dst_row,
                      t->ne0);
    }
}

kiln_status quant_convert_rows(kiln_type from, const void *src, kiln_type to, void *dst,
                               int64_t ne0, int64_t nrows, kiln_pool *pool) {
    const struct kiln_kernels *k = kiln_kernels_best();
    const char *fn = kiln_type_name(from), *tn = kiln_type_name(to);
    if (!fn || !tn || !fits(from, ne0) || !fits(to, ne0))
        return kiln_fail(KILN_ERR_INVALID_ARG, "convert: rows of %lld do not fit %s -> %s",
                         (long long)ne0, fn ? fn : "?", tn ? tn : "?");
    struct convert_task t = {
        .to_float = from == KILN_TYPE_F32 ? NULL : k->to_float[from],
        .from_float = k->from_float[to],
        .src = src,
        .dst = dst,
        .src_row = kiln_row_size(from, ne0),
        .dst_row = kiln_row_size(to, ne0),
        .ne0 = ne0,
        .nrows = nrows,
    };
    if (from != KILN_TYPE_F32 && !t.to_float)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "no dequantizer for type %s in the %s kernels", fn,
                         kiln_isa_name(k->isa));
    if (!t.from_float)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "no quantizer for type %s in the %s kernels", tn,
                         kiln_isa_name(k->isa));
    int nth = pool ? kiln_pool_size(pool) : 1;
    if (nrows < nth) nth = nrows > 0 ? (int)nrows : 1;
    if (!(t.scratch = malloc((size_t)nth * (size_t)ne0 * sizeof(float))))
        return kiln_fail(KILN_ERR_NOMEM, "convert: no memory for %d rows of %lld floats", nth,
                         (long long)ne0);
    if (pool && nth > 1)
        kiln_pool_run_n(pool, nth, convert_worker, &t);
    else
        convert_worker(&t, 0, 1);
    free(t.scratch);
    return KILN_OK;
}

/* Prefixes the current error message with the file and tensor names. */
static kiln_status fail_tensor(kiln_status st, const char *path, const char *name) {
    char msg[400];
    snprintf(msg, sizeof msg, "%s", kiln_last_error());
    return kiln_fail(st, "%s: tensor '%s': %s", path, name, msg);
}

static kiln_status copy_metadata(const gguf_file *in, gguf_writer *w,
                                 const struct quant_ftype *ft) {
    kiln_status st = KILN_OK;
    for (int64_t i = 0; i < gguf_kv_count(in) && !st; i++) {
        const gguf_kv *kv = gguf_kv_at(in, i);
        st = gguf_set_value(w, kv->key, &kv->value);
    }
    if (!st) st = gguf_set_u32(w, "general.file_type", ft->ftype);
    if (!st && kiln_type_info(ft->type)->blck > 1)
        st = gguf_set_u32(w, "general.quantization_version", 2);
    return st;
}

/* Converts (or borrows) one tensor and adds it to w; *buf receives memory the
 * caller frees after the write. */
static kiln_status do_tensor(const gguf_file *in, const gguf_tensor *t,
                             const struct quant_params *p, kiln_pool *pool, gguf_writer *w,
                             void **buf, struct quant_progress *pr) {
    kiln_type to = t->type;
    pr->converted = pr->fell_back = false;
    if (quant_tensor_wanted(t->name, t->n_dims)) {
        to = quant_fallback_type(p->ftype.type, t->ne[0]);
        pr->fell_back = to != p->ftype.type;
    }
    const void *data = t->data;
    uint64_t nrows = t->n_elems / (uint64_t)t->ne[0], size = t->size;
    if (to != t->type) {
        size = kiln_row_size(to, t->ne[0]) * nrows;
        if (!(*buf = malloc(size ? size : 1)))
            return kiln_fail(KILN_ERR_NOMEM, "%s: tensor '%s': no memory for %llu bytes",
                             gguf_path(in), t->name, (unsigned long long)size);
        kiln_status st =
            quant_convert_rows(t->type, t->data, to, *buf, t->ne[0], (int64_t)nrows, pool);
        if (st) return fail_tensor(st, gguf_path(in), t->name);
        data = *buf;
        pr->converted = true;
    }
    pr->from = t->type;
    pr->to = to;
    pr->bytes_in = t->size;
    pr->bytes_out = size;
    kiln_status st = gguf_add_tensor(w, t->name, to, t->n_dims, t->ne, data, size);
    return st ? fail_tensor(st, gguf_path(in), t->name) : KILN_OK;
}

static void add_stats(struct quant_stats *s, const struct quant_progress *pr) {
    s->bytes_in += pr->bytes_in;
    s->bytes_out += pr->bytes_out;
    if (pr->converted)
        s->n_converted++;
    else
        s->n_copied++;
    if (pr->fell_back) s->n_fallback++;
}

kiln_status quant_file(const char *in, const char *out, const struct quant_params *p,
                       struct quant_stats *stats) {
    struct quant_stats s = {0};
    kiln_status st;
    gguf_writer *w = NULL;
    kiln_pool *pool = NULL;
    void **bufs = NULL;
    int64_t n = 0;
    gguf_file *f = gguf_open(in, &st);
    if (!f) return st;
    n = gguf_tensor_count(f);
    if ((st = quant_check_output(out))) goto done;
    if (!(w = gguf_writer_create()) || !(bufs = calloc((size_t)n + 1, sizeof *bufs))) {
        st = kiln_fail(KILN_ERR_NOMEM, "%s: no memory", in);
        goto done;
    }
    if (!(pool = kiln_pool_create(p->n_threads, &st))) goto done;
    if ((st = copy_metadata(f, w, &p->ftype))) goto done;
    for (int64_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        struct quant_progress pr = {
            .index = (int)i, .count = (int)n, .name = t->name, .n_dims = t->n_dims, .ne = t->ne};
        if ((st = do_tensor(f, t, p, pool, w, &bufs[i], &pr))) goto done;
        add_stats(&s, &pr);
        if (p->progress) p->progress(p->ud, &pr);
    }
    if ((st = gguf_writer_write(w, out))) goto done;
    s.file_in = gguf_file_size(f);
    FILE *fp = fopen(out, "rb");
    if (fp && fseek(fp, 0, SEEK_END) == 0) s.file_out = (uint64_t)ftell(fp);
    if (fp) fclose(fp);
    if (stats) *stats = s;
done:
    for (int64_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    kiln_pool_destroy(pool);
    gguf_writer_destroy(w);
    gguf_close(f);
    return st;
}

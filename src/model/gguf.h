/* gguf.h - GGUF reading (versions 2 and 3) and writing.
 *
 * Reading maps the file read-only and validates every count, length, offset,
 * shape and type against the file size and the format's rules before using
 * it; a bad file yields KILN_ERR_FORMAT (or _UNSUPPORTED) and a message that
 * names the file, the field and its byte offset. String values point into the
 * mapping (not NUL-terminated); keys and tensor names are NUL-terminated
 * copies. Tensor data pointers point into the mapping and stay valid until
 * gguf_close(). A gguf_file is immutable after opening and may be read from
 * any number of threads.
 *
 * Writing collects metadata and tensors (borrowed data pointers) and writes
 * them with the alignment of `general.alignment` (default 32). */
#ifndef KILN_MODEL_GGUF_H
#define KILN_MODEL_GGUF_H

#include "kiln.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC             0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS          4

enum gguf_vtype {
    GGUF_VT_UINT8 = 0,
    GGUF_VT_INT8 = 1,
    GGUF_VT_UINT16 = 2,
    GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4,
    GGUF_VT_INT32 = 5,
    GGUF_VT_FLOAT32 = 6,
    GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8,
    GGUF_VT_ARRAY = 9,
    GGUF_VT_UINT64 = 10,
    GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12,
    GGUF_VT_COUNT
};

/* "uint32", "string", ... */
const char *gguf_vtype_name(enum gguf_vtype t);
/* Bytes of one element of a fixed-size type; 0 for string and array. */
size_t gguf_vtype_size(enum gguf_vtype t);

typedef struct gguf_str {
    const char *ptr; /* not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_value gguf_value;
struct gguf_value {
    enum gguf_vtype type;
    union {
        uint64_t u64; /* UINT8/16/32/64 and BOOL (0/1) */
        int64_t i64;  /* INT8/16/32/64 */
        double f64;   /* FLOAT32/64 */
        gguf_str str; /* STRING */
        struct {
            enum gguf_vtype type; /* element type */
            uint64_t n;
            const void *raw;   /* fixed-size elements: n * gguf_vtype_size(type) bytes, unaligned */
            gguf_value *items; /* STRING and ARRAY elements: n parsed values; else NULL */
        } arr;
    };
};

typedef struct gguf_kv {
    const char *key;
    gguf_value value;
    uint64_t offset; /* byte offset of the key in the file */
} gguf_kv;

typedef struct gguf_tensor {
    const char *name;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length; unused dims are 1 */
    kiln_type type;
    uint64_t offset; /* relative to the start of the data section */
    uint64_t n_elems;
    uint64_t size;        /* bytes */
    const void *data;     /* into the mapping */
    uint64_t info_offset; /* byte offset of the tensor info in the file */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Opens and validates path. NULL on failure with *st set (if st) and the
 * message in kiln_last_error(). */
gguf_file *gguf_open(const char *path, kiln_status *st);
/* gguf_open for a model about to run: the file is placed by kiln_map_load
 * (read into huge pages when that helps, see file.h), then validated. */
gguf_file *gguf_load(const char *path, kiln_status *st);
/* Validates an in-memory image (not copied; must outlive the gguf_file).
 * `name` is used in messages. */
gguf_file *gguf_open_memory(const void *data, size_t size, const char *name, kiln_status *st);
void gguf_close(gguf_file *f);
/* kiln_map_prefault of the file's mapping (nothing for an in-memory image):
 * for models about to run, not for readers of metadata. */
void gguf_prefault(const gguf_file *f);

const char *gguf_path(const gguf_file *f);
uint32_t gguf_version(const gguf_file *f);
uint32_t gguf_alignment(const gguf_file *f);
uint64_t gguf_file_size(const gguf_file *f);
uint64_t gguf_data_offset(const gguf_file *f); /* start of the tensor data section */

int64_t gguf_kv_count(const gguf_file *f);
const gguf_kv *gguf_kv_at(const gguf_file *f, int64_t i);
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key); /* NULL if absent */

int64_t gguf_tensor_count(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* NULL if absent */

/* Typed getters. KILN_ERR_NOT_FOUND when absent (message names the key),
 * KILN_ERR_FORMAT when present with a type that does not convert (message
 * names the key and both types) or out of range for the output type.
 * Integer getters accept any integer type; float getters any number. */
kiln_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
kiln_status gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
kiln_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
kiln_status gguf_get_f32(const gguf_file *f, const char *key, float *out);
kiln_status gguf_get_bool(const gguf_file *f, const char *key, bool *out);
kiln_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
/* An array whose elements have type elem (GGUF_VT_COUNT: any). */
kiln_status gguf_get_arr(const gguf_file *f, const char *key, enum gguf_vtype elem,
                         const gguf_value **out);

/* Element i of a fixed-size numeric array value, converted. */
int64_t gguf_arr_i64(const gguf_value *arr, uint64_t i);
double gguf_arr_f64(const gguf_value *arr, uint64_t i);

/* ---- writing ---- */

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_create(void);
void gguf_writer_destroy(gguf_writer *w);

/* Setting a key that exists replaces its value. Strings are copied. */
kiln_status gguf_set_u32(gguf_writer *w, const char *key, uint32_t v);
kiln_status gguf_set_i32(gguf_writer *w, const char *key, int32_t v);
kiln_status gguf_set_u64(gguf_writer *w, const char *key, uint64_t v);
kiln_status gguf_set_f32(gguf_writer *w, const char *key, float v);
kiln_status gguf_set_bool(gguf_writer *w, const char *key, bool v);
kiln_status gguf_set_str(gguf_writer *w, const char *key, const char *v);
kiln_status gguf_set_strn(gguf_writer *w, const char *key, const char *v, size_t len);
/* A numeric array of n elements of fixed-size type elem, copied from data. */
kiln_status gguf_set_arr_data(gguf_writer *w, const char *key, enum gguf_vtype elem,
                              const void *data, uint64_t n);
kiln_status gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* Copies any value read from a file (including nested arrays). */
kiln_status gguf_set_value(gguf_writer *w, const char *key, const gguf_value *v);

/* Adds a tensor; data (size bytes, which must equal the size its type and
 * shape imply) is borrowed until gguf_writer_write returns. */
kiln_status gguf_add_tensor(gguf_writer *w, const char *name, kiln_type type, int n_dims,
                            const int64_t *ne, const void *data, uint64_t size);

/* Writes a version-3 file to path (via a temporary file renamed into place,
 * so a failed write leaves no partial file). */
kiln_status gguf_writer_write(gguf_writer *w, const char *path);

#endif

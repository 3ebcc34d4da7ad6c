/* quantize.h - converting model weights between tensor types: the table of
 * file types (GGML's LLAMA_FTYPE numbering for general.file_type, with the
 * tensor type each one stores matrices in), the rule for which tensors are
 * quantized and the fallback when a row does not fit a type's blocks, row
 * conversion through the kernel tables (to_float, then from_float), and
 * requantizing a whole GGUF file.
 *
 * Kiln quantizes every matrix to the base type of the file type ("Q4_K_M"
 * stores Q4_K everywhere); it does not reproduce llama.cpp's per-tensor mixes. */
#ifndef KILN_MODEL_QUANTIZE_H
#define KILN_MODEL_QUANTIZE_H

#include "kiln.h"
#include "compute/threadpool.h"
#include "model/gguf.h"

#include <stdbool.h>
#include <stdint.h>

struct quant_ftype {
    const char *name; /* "Q4_K_M" */
    uint32_t ftype;   /* general.file_type value */
    kiln_type type;   /* what matrices are stored as */
};

/* Parses a file-type or tensor-type name, case-insensitively ("q8_0",
 * "Q4_K_M", "q4_K", "f16"). KILN_ERR_NOT_FOUND when unknown (message lists
 * the valid names). */
kiln_status quant_ftype_parse(const char *name, struct quant_ftype *out);
/* The table, for listings: entry i of quant_ftype_count(). */
int quant_ftype_count(void);
const struct quant_ftype *quant_ftype_at(int i);
/* The general.file_type for a file whose matrices are all of type t, or
 * UINT32_MAX when there is none. */
uint32_t quant_ftype_of_type(kiln_type t);

/* True when tensor `name` of n_dims dimensions is a weight matrix to convert:
 * 2-D or more, named "*.weight", and not token_types or position_embd
 * (those stay in their type, F32, as llama.cpp needs). */
bool quant_tensor_wanted(const char *name, int n_dims);

/* want, or the type to use instead when rows of ne0 elements are not a
 * multiple of want's block: K- and IQ- quants fall back to a 32-block type
 * (Q2_K..Q3_K, IQ4_XS -> IQ4_NL; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0),
 * and anything that still does not fit to F16. */
kiln_type quant_fallback_type(kiln_type want, int64_t ne0);

/* Converts nrows rows of ne0 elements from type `from` at src to type `to`
 * at dst (kiln_row_size(to, ne0) * nrows bytes) through F32, splitting rows
 * over pool's threads (pool NULL: the calling thread). KILN_ERR_UNSUPPORTED
 * naming the type when the kernel table has no to_float for `from` or no
 * from_float for `to`; KILN_ERR_NOMEM. */
kiln_status quant_convert_rows(kiln_type from, const void *src, kiln_type to, void *dst,
                               int64_t ne0, int64_t nrows, kiln_pool *pool);

/* Checks that path can be written (creates and removes "<path>.tmp", which
 * the GGUF writer uses). KILN_ERR_IO naming the path and the OS error. */
kiln_status quant_check_output(const char *path);

struct quant_progress {
    int index, count; /* tensor index, number of tensors */
    const char *name;
    int n_dims;
    const int64_t *ne;
    kiln_type from, to;
    bool converted; /* false: copied unchanged */
    bool fell_back; /* `to` is a fallback for the requested type */
    uint64_t bytes_in, bytes_out;
};

struct quant_params {
    struct quant_ftype ftype;
    int n_threads; /* <= 0: physical cores */
    /* Called after each tensor is converted (may be NULL). */
    void (*progress)(void *ud, const struct quant_progress *p);
    void *ud;
};

struct quant_stats {
    uint64_t bytes_in, bytes_out; /* tensor data, in and out */
    uint64_t file_in, file_out;   /* whole files */
    int n_converted, n_copied, n_fallback;
};

/* Reads the GGUF file `in`, converts its weight matrices as described above,
 * copies all metadata with general.file_type (and general.quantization_version)
 * updated, and writes `out`. Holds the converted tensors in memory until the
 * write (the input is mapped). Errors name the file or tensor at fault:
 * KILN_ERR_IO for an unreadable input or unwritable output, the reader's
 * status for a malformed input, KILN_ERR_UNSUPPORTED for a type with no
 * kernel. stats may be NULL. */
kiln_status quant_file(const char *in, const char *out, const struct quant_params *p,
                       struct quant_stats *stats);

#endif

/* types.h - tensor element types: block geometry (elements per block, bytes
 * per block), names, and each type's dot-product partner (the type activations
 * are quantized to before an int8/float dot product with a weight row).
 * Geometry is known for every GGML type so that files holding types Kiln
 * cannot compute with still validate and list. */
#ifndef KILN_COMPUTE_TYPES_H
#define KILN_COMPUTE_TYPES_H

#include "kiln.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kiln_type_info {
    const char *name; /* GGML name, e.g. "q4_K" */
    int64_t blck;     /* elements per block (1 for plain types) */
    size_t size;      /* bytes per block */
};

/* Geometry of t, or NULL when t is not a known GGML type. */
const struct kiln_type_info *kiln_type_info(kiln_type t);

/* Bytes for n elements of t; n must be a multiple of the block size. */
size_t kiln_row_size(kiln_type t, int64_t n);

/* The type activations are converted to for t's dot product: F32->F32,
 * F16->F16, BF16->BF16, Q4_0/Q5_0/Q8_0/IQ4_NL->Q8_0, Q4_1/Q5_1->Q8_1,
 * K-quants and IQ4_XS->Q8_K. KILN_TYPE_COUNT for unsupported types. */
kiln_type kiln_vec_dot_type(kiln_type t);

#endif

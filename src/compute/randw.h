/* randw.h - weight matrices of random content for measurements (the tuner,
 * tune.c; `kiln bench-kernels`): every page differs, so no layer between the
 * kernels and memory (a hypervisor merging identical pages, a compressing
 * memory controller) can serve the reads faster than real weights would be
 * (docs/perf.md, "Measure with random data"). */
#ifndef KILN_COMPUTE_RANDW_H
#define KILN_COMPUTE_RANDW_H

#include "kiln.h"

#include <stdint.h>

/* Fills count matrices of rows x cols elements of type t, consecutive at dst
 * (kiln_row_size(t, cols) * rows * count bytes): random quantized values
 * under block scales taken from real quantized rows (so every value is
 * finite and of a realistic size), or random floats of moderate size for
 * F32, F16 and BF16. seed picks the content. cols is a multiple of t's block
 * size and t has a scalar quantizer (kiln_type_supported). Returns 0, or -1
 * when scratch memory cannot be had (dst is then partly written).
 * Thread-safe. */
int kiln_randw_fill(kiln_type t, void *dst, int64_t rows, int64_t cols, int64_t count,
                    uint64_t seed);

#endif

/* matmul.h - matrix products of quantized or float weights with float
 * activations, split across a thread pool: y = W x.
 *
 * W has nr rows of n elements of any supported kiln_type (row r at
 * w + r * w_stride bytes); X has nc columns of n floats; Y has nc columns of
 * nr floats, y[c * y_stride + r]. One operation runs in two phases:
 *   1. the activations are converted once into W's vec_dot partner type
 *      (kiln_vec_dot_type: Q8_0, Q8_1, Q8_K, F16, BF16; F32 is used as is)
 *      into the context's workspace, the blocks split across threads; for
 *      wide products (matmul.c XP_MIN_COLS) of a partner type whose table
 *      has a prepared layout (kernels.h gemm_xprep) also into that layout
 *      when the weight type's tiles read it (gemm_wp over weight rows
 *      prepared once per block of rows, else gemm_xp);
 *   2. after a barrier, the output rows are split across threads in ranges
 *      that begin on a cache-line boundary of y (no two threads write the
 *      same line), and each thread walks its rows in tiles of up to
 *      KILN_GEMM_MAX_R rows x KILN_GEMM_MAX_C columns with the kernel table's
 *      gemm entry, or row by row with vec_dot when the table has no gemm
 *      and for nc = 1 (one sequential weight stream per thread) unless the
 *      table's gemm_matvec marks the type's tile as the faster matvec.
 *      When nr is too small to give every thread rows, columns are split.
 *
 * The context owns the workspace, sized at creation or by
 * kiln_matmul_reserve(): the hot path never allocates. A context is used by
 * one operation at a time (its workspace is shared by that operation's
 * threads); use one context per concurrent caller.
 */
#ifndef KILN_COMPUTE_MATMUL_H
#define KILN_COMPUTE_MATMUL_H

#include "compute/kernels.h"
#include "compute/threadpool.h"
#include "kiln.h"

#include <stddef.h>
#include <stdint.h>

/* One product y = W x. Pointers are borrowed for the duration of the call. */
struct kiln_matmul_op {
    kiln_type type;   /* W's element type */
    const void *w;    /* nr rows */
    size_t w_stride;  /* bytes between rows of W, >= kiln_row_size(type, n) */
    int64_t nr;       /* rows of W = rows of y */
    int64_t n;        /* elements per row, a multiple of type's block size */
    const float *x;   /* nc columns of n floats */
    int64_t x_stride; /* floats between columns of x; 0 means n */
    int64_t nc;       /* columns of x and y (1 = matrix-vector product) */
    float *y;         /* output, y[c * y_stride + r] */
    int64_t y_stride; /* floats between columns of y; 0 means nr */
    /* 1: the context's workspace already holds these activations (same x,
     * n, nc, x_stride) converted to this type's vec_dot partner by the
     * previous operation on this context, e.g. Q, K and V, or gate and up,
     * projections of one input. Skips phase 1 and its barrier. */
    int reuse_x;
};

typedef struct kiln_matmul_ctx kiln_matmul_ctx;

/* Bytes of workspace an operation of this type with nc columns of n
 * elements needs (0 for F32 weights, which use x directly). */
size_t kiln_matmul_work_size(kiln_type type, int64_t n, int64_t nc);

/* Creates a context that runs on `pool` (borrowed; NULL = the calling thread
 * only) with kernel table `kern` (NULL = kiln_kernels_best()) and a workspace
 * of work_bytes (see kiln_matmul_work_size; grow later with
 * kiln_matmul_reserve). Returns NULL and sets *st on failure. */
kiln_matmul_ctx *kiln_matmul_ctx_create(kiln_pool *pool, const struct kiln_kernels *kern,
                                        size_t work_bytes, kiln_status *st);
void kiln_matmul_ctx_destroy(kiln_matmul_ctx *ctx);

/* Makes the workspace at least work_bytes (reallocating; not during an
 * operation). KILN_ERR_NOMEM on failure, leaving the old workspace. */
kiln_status kiln_matmul_reserve(kiln_matmul_ctx *ctx, size_t work_bytes);

/* The kernel table the context uses. */
const struct kiln_kernels *kiln_matmul_kernels(const kiln_matmul_ctx *ctx);

/* Checks that op can run on this context: shapes, strides, the workspace
 * size, and that the table has the kernels for op->type. (Whether the
 * workspace holds op's activations for reuse_x depends on the operations
 * before it: kiln_matmul_run reports a mismatch, kiln_matmul_task asserts.) Returns KILN_OK or
 * a status with a message naming what is wrong (KILN_ERR_UNSUPPORTED when a
 * kernel is missing). Does not touch the data. */
kiln_status kiln_matmul_check(const kiln_matmul_ctx *ctx, const struct kiln_matmul_op *op);

/* Runs op on the context's pool (all its threads) and returns when y is
 * written. Returns kiln_matmul_check's status; on error nothing is written. */
kiln_status kiln_matmul_run(kiln_matmul_ctx *ctx, const struct kiln_matmul_op *op);

/* The part of op that thread ith of nth does, for callers that run many
 * operations inside one pool task (a forward pass). Must be called by all nth
 * threads of a kiln_pool_run on the context's pool (or with nth == 1 on any
 * thread), with an op that kiln_matmul_check accepted. Contains one pool
 * barrier (after the activation conversion) when the type needs conversion,
 * reuse_x is 0 and nth > 1; it does NOT end with a barrier: call kiln_pool_barrier before
 * reading y, and before the next operation that reuses this context. */
void kiln_matmul_task(kiln_matmul_ctx *ctx, const struct kiln_matmul_op *op, int ith, int nth);

#endif

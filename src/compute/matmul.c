/* matmul.c - the threaded driver for y = W x over the per-ISA kernel tables
 * (see matmul.h for the contract and the two phases).
 *
 * Invariants: the workspace holds nc converted activation rows, each
 * xrow_stride(vdt, n) bytes (the partner row size rounded up to a cache
 * line), so rows start on cache-line boundaries, followed, when the product
 * is wide enough for prepared activations (xp_row_stride > 0), by nc
 * prepared rows of kiln_gemm_xp_row_size bytes; threads write disjoint parts
 * of it in phase 1 and only read it in phase 2. Room for the prepared rows
 * depends only on the partner type and nc, so an operation with reuse_x
 * finds the layout it expects; they are written only for an operation whose
 * tiles read them (ctx->conv.has_xp says whether they are there; an
 * operation with reuse_x that reads them and finds them missing prepares
 * them from the converted rows, behind one more barrier). An operation runs
 * from the table kiln_kernels_for(ctx->kern, type, nc) names; with a
 * composite table consecutive operations may use different per-ISA tables,
 * which read each other's converted and prepared rows (kernels.h: the same
 * layouts). In phase 2 the row ranges are
 * disjoint and, except at y's ends, start on cache-line boundaries of
 * column 0 of y. No allocation happens in kiln_matmul_task.
 */
#include "compute/matmul.h"
#include "base/mem.h"
#include "base/status.h"
#include "compute/types.h"

#include <stdlib.h>

/* Floats per cache line: thread row ranges start on multiples of this. */
#define ROW_ALIGN (KILN_CACHE_LINE / (int64_t)sizeof(float))
/* Elements per unit of activation conversion work (rounded up to whole blocks). */
#define CONVERT_UNIT 256
/* Converted activations a thread keeps in its L2 (1 MB on Zen 4/5, 2 MB on
 * recent Intel) for one pass over its rows. */
#define XBLOCK_BYTES (512 * 1024)
/* Fewer activation columns than this use vec_dot even when the table has a
 * gemm, unless the table's gemm_matvec says the type's tile is faster: for
 * a matrix-vector product one weight stream per thread (vec_dot, row after
 * row) often reads memory faster than a tile's KILN_GEMM_MAX_R parallel row
 * streams (measured on Zen 5: Q8_0 and Q4_K matvec 10-20% faster), but where
 * vec_dot is compute-bound below the memory bandwidth (Q4_0, Q5_0, IQ4_NL
 * on AVX-512) the tile, which shares the per-column work across rows, wins. */
#define GEMM_MIN_COLS 2
/* From this many activation columns on, a partner type with a prepared
 * layout (kernels.h, gemm_xprep) is also converted into it, and weight types
 * whose table has a gemm_xp use those tiles for every column of the product
 * from their gemm_xp_min_cols on (so a column's result depends on the
 * product's width only through these thresholds, never on where the column
 * falls in a tile). Measured on Zen 5 (one thread, tiles in L2): Q4_0's
 * prepared tiles beat its gemm from 2 columns on (8 x 2: 224 vs 158 GOPS,
 * 8 x 3: 293 vs 219, 8 x 4: 331 vs 242). */
#define XP_MIN_COLS 2
/* Below this many multiply-adds an operation runs on one thread. */
#define MIN_PARALLEL_MACS (1 << 16)

/* What the workspace holds: written by thread 0 of a converting operation,
 * read by later operations after a barrier (or by kiln_matmul_check). */
struct converted {
    kiln_type vdt; /* KILN_TYPE_COUNT: nothing */
    const float *x;
    int64_t n, nc, x_stride;
    int has_xp; /* the prepared rows are written too (not compared by same_converted) */
};

struct kiln_matmul_ctx {
    kiln_pool *pool;
    const struct kiln_kernels *kern;
    void *work;
    size_t cap;
    struct converted conv;
};

static struct converted converted_of(const struct kiln_matmul_op *op) {
    return (struct converted){kiln_vec_dot_type(op->type),         op->x, op->n, op->nc,
                              op->x_stride ? op->x_stride : op->n, 0};
}

static int same_converted(const struct converted *a, const struct converted *b) {
    return a->vdt == b->vdt && a->x == b->x && a->n == b->n && a->nc == b->nc &&
           a->x_stride == b->x_stride;
}

static size_t xrow_stride(kiln_type vdt, int64_t n) {
    return (size_t)kiln_align_up(kiln_row_size(vdt, n), KILN_CACHE_LINE);
}

/* Bytes of one prepared activation row, 0 when nc columns of vdt do not
 * use the prepared layout with table k (NULL: any table that has it). */
static size_t xp_row_stride(const struct kiln_kernels *k, kiln_type vdt, int64_t n, int64_t nc) {
    if (nc < XP_MIN_COLS || (unsigned)vdt >= KILN_TYPE_COUNT || (k && !k->gemm_xprep[vdt]))
        return 0;
    return kiln_gemm_xp_row_size(vdt, n);
}

/* Which tiles op runs with table k when ps > 0 (prepared activations have
 * room): 2 = prepared weights (gemm_wp), 1 = gemm_xp, 0 = neither (the
 * prepared rows are then not read, so not written). Depends only on the
 * table, the type, n and nc. */
static int xp_use(const struct kiln_kernels *k, const struct kiln_matmul_op *op, size_t ps) {
    kiln_type t = op->type;
    if (!ps || op->nc < k->gemm_xp_min_cols[t]) return 0;
    if (k->gemm_wp[t] && k->gemm_wprep[t] && op->n <= KILN_GEMM_WP_MAX_N) return 2;
    return k->gemm_xp[t] ? 1 : 0;
}

size_t kiln_matmul_work_size(kiln_type type, int64_t n, int64_t nc) {
    kiln_type vdt = kiln_vec_dot_type(type);
    if (vdt == KILN_TYPE_COUNT || vdt == KILN_TYPE_F32 || n <= 0 || nc <= 0) return 0;
    uint64_t size;
    if (!kiln_mul_ok(xrow_stride(vdt, n) + xp_row_stride(NULL, vdt, n, nc), (uint64_t)nc, &size) ||
        size > SIZE_MAX)
        return SIZE_MAX;
    return (size_t)size;
}

kiln_matmul_ctx *kiln_matmul_ctx_create(kiln_pool *pool, const struct kiln_kernels *kern,
                                        size_t work_bytes, kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_matmul_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        s = kiln_fail(KILN_ERR_NOMEM, "matmul: out of memory for the context");
        goto fail;
    }
    ctx->pool = pool;
    ctx->conv.vdt = KILN_TYPE_COUNT;
    ctx->kern = kern ? kern : kiln_kernels_best();
    s = kiln_matmul_reserve(ctx, work_bytes);
    if (s) goto fail;
    if (st) *st = KILN_OK;
    return ctx;
fail:
    kiln_matmul_ctx_destroy(ctx);
    if (st) *st = s;
    return NULL;
}

void kiln_matmul_ctx_destroy(kiln_matmul_ctx *ctx) {
    if (!ctx) return;
    kiln_aligned_free(ctx->work);
    free(ctx);
}

kiln_status kiln_matmul_reserve(kiln_matmul_ctx *ctx, size_t work_bytes) {
    if (work_bytes <= ctx->cap) return KILN_OK;
    void *w = kiln_aligned_alloc(KILN_CACHE_LINE, work_bytes);
    if (!w)
        return kiln_fail(KILN_ERR_NOMEM, "matmul: cannot allocate a %zu-byte workspace",
                         work_bytes);
    kiln_aligned_free(ctx->work);
    ctx->work = w;
    ctx->cap = work_bytes;
    ctx->conv.vdt = KILN_TYPE_COUNT;
    return KILN_OK;
}

const struct kiln_kernels *kiln_matmul_kernels(const kiln_matmul_ctx *ctx) {
    return ctx->kern;
}

kiln_status kiln_matmul_check(const kiln_matmul_ctx *ctx, const struct kiln_matmul_op *op) {
    const struct kiln_type_info *ti = kiln_type_info(op->type);
    kiln_type vdt = kiln_vec_dot_type(op->type);
    const char *tn = ti ? ti->name : "?";
    if (!ti || vdt == KILN_TYPE_COUNT)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "matmul: weight type %d is not supported",
                         (int)op->type);
    if (op->n <= 0 || op->n % ti->blck || op->nr < 0 || op->nc < 0)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "matmul: bad shape %s nr=%lld n=%lld nc=%lld (n must be a positive "
                         "multiple of %lld)",
                         tn, (long long)op->nr, (long long)op->n, (long long)op->nc,
                         (long long)ti->blck);
    if (op->w_stride < kiln_row_size(op->type, op->n) || (op->x_stride && op->x_stride < op->n) ||
        (op->y_stride && op->y_stride < op->nr))
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "matmul: strides too small (w_stride=%zu for a %zu-byte %s row, "
                         "x_stride=%lld, y_stride=%lld)",
                         op->w_stride, kiln_row_size(op->type, op->n), tn, (long long)op->x_stride,
                         (long long)op->y_stride);
    if (op->nr && op->nc && (!op->w || !op->x || !op->y))
        return kiln_fail(KILN_ERR_INVALID_ARG, "matmul: NULL w, x or y");
    const struct kiln_kernels *k = kiln_kernels_for(ctx->kern, op->type, op->nc);
    if (!k->vec_dot[op->type])
        return kiln_fail(KILN_ERR_UNSUPPORTED, "matmul: no %s vec_dot in the %s kernels", tn,
                         kiln_isa_name(k->isa));
    if (vdt != KILN_TYPE_F32 && !k->from_float[vdt])
        return kiln_fail(KILN_ERR_UNSUPPORTED, "matmul: no %s from_float in the %s kernels",
                         kiln_type_name(vdt), kiln_isa_name(k->isa));
    size_t need = kiln_matmul_work_size(op->type, op->n, op->nc);
    if (need > ctx->cap)
        return kiln_fail(KILN_ERR_RANGE,
                         "matmul: workspace of %zu bytes, %s n=%lld nc=%lld needs %zu "
                         "(kiln_matmul_reserve)",
                         ctx->cap, tn, (long long)op->n, (long long)op->nc, need);
    return KILN_OK;
}

/* Phase 1: this thread's share of the activation conversion. Work is cut
 * into units of about CONVERT_UNIT elements (whole blocks) over all columns;
 * with prepared rows (ps > 0, at xp) a unit is one prepared group, converted
 * to the partner type and then prepared. */
static void convert_part(const struct kiln_kernels *k, kiln_type vdt,
                         const struct kiln_matmul_op *op, char *work, size_t xs, char *xp,
                         size_t ps, int ith, int nth) {
    const struct kiln_type_info *vi = kiln_type_info(vdt);
    if (!xp) ps = 0;
    int64_t unit = ps ? KILN_GEMM_XP_GROUP : (CONVERT_UNIT + vi->blck - 1) / vi->blck * vi->blck;
    int64_t per_col = (op->n + unit - 1) / unit;
    int64_t total = per_col * op->nc;
    int64_t u0 = total * ith / nth, u1 = total * (ith + 1) / nth;
    int64_t x_stride = op->x_stride ? op->x_stride : op->n;
    kiln_from_float_fn from = k->from_float[vdt];
    size_t unit_bytes = kiln_row_size(vdt, unit);
    size_t xp_group_bytes = ps ? kiln_gemm_xp_row_size(vdt, unit) : 0;
    for (int64_t u = u0; u < u1; u++) {
        int64_t c = u / per_col, j = u % per_col;
        int64_t e0 = j * unit;
        int64_t cnt = op->n - e0 < unit ? op->n - e0 : unit;
        char *q = work + (size_t)c * xs + (size_t)j * unit_bytes;
        from(op->x + c * x_stride + e0, q, cnt);
        if (ps) k->gemm_xprep[vdt](cnt, q, xp + (size_t)c * ps + (size_t)j * xp_group_bytes);
    }
}

/* Prepares this thread's share of the prepared rows from the converted
 * rows already in the workspace (reuse_x of an operation that did not
 * write them), in units of one group. */
static void xprep_part(const struct kiln_kernels *k, kiln_type vdt, const struct kiln_matmul_op *op,
                       const char *work, size_t xs, char *xp, size_t ps, int ith, int nth) {
    int64_t per_col = (op->n + KILN_GEMM_XP_GROUP - 1) / KILN_GEMM_XP_GROUP;
    int64_t total = per_col * op->nc;
    int64_t u0 = total * ith / nth, u1 = total * (ith + 1) / nth;
    size_t unit_bytes = kiln_row_size(vdt, KILN_GEMM_XP_GROUP);
    size_t xp_group_bytes = kiln_gemm_xp_row_size(vdt, KILN_GEMM_XP_GROUP);
    for (int64_t u = u0; u < u1; u++) {
        int64_t c = u / per_col, j = u % per_col, e0 = j * KILN_GEMM_XP_GROUP;
        int64_t cnt = op->n - e0 < KILN_GEMM_XP_GROUP ? op->n - e0 : KILN_GEMM_XP_GROUP;
        k->gemm_xprep[vdt](cnt, work + (size_t)c * xs + (size_t)j * unit_bytes,
                           xp + (size_t)c * ps + (size_t)j * xp_group_bytes);
    }
}

/* Rows [r0, r1) against columns [cb0, cb1) with prepared weights: each
 * block of KILN_GEMM_WP_MAX_R rows is prepared once into a stack buffer and
 * run against all the columns; while it runs, the next block's weights are
 * fetched into L2 a slice per WP_CHUNK columns (the rows of a block
 * are short streams the hardware prefetcher would start late). */
#define WP_CHUNK 24
static void compute_wp(const struct kiln_kernels *k, const struct kiln_matmul_op *op,
                       const char *xp, size_t ps, int64_t r0, int64_t r1, int64_t cb0,
                       int64_t cb1) {
    _Alignas(64) char buf[KILN_GEMM_WP_MAX_R * (KILN_GEMM_WP_MAX_N / KILN_GEMM_XP_GROUP) *
                          KILN_GEMM_WP_GROUP_BYTES];
    const char *w = op->w;
    size_t ws = op->w_stride, rs = kiln_row_size(op->type, op->n);
    size_t pw = kiln_gemm_wp_row_size(op->n);
    int64_t ys = op->y_stride ? op->y_stride : op->nr;
    const int tr = KILN_GEMM_WP_MAX_R;
    int64_t chunks = (cb1 - cb0 + WP_CHUNK - 1) / WP_CHUNK;
    for (int64_t r = r0; r < r1; r += tr) {
        int nrt = (int)(r1 - r < tr ? r1 - r : tr);
        k->gemm_wprep[op->type](op->n, w + (size_t)r * ws, ws, nrt, buf);
        /* the next block's rows: whole lines from its first row's start to
         * its last row's end, a share per chunk */
        int64_t nx = r1 - (r + tr) < tr ? r1 - (r + tr) : tr;
        const char *p0 = w + (size_t)(r + tr) * ws;
        size_t span = nx > 0 ? (size_t)(nx - 1) * ws + rs : 0;
        size_t lines = (span + 63) / 64, per = (lines + (size_t)chunks - 1) / (size_t)chunks, l = 0;
        for (int64_t c = cb0; c < cb1; c += WP_CHUNK) {
            int nct = (int)(cb1 - c < WP_CHUNK ? cb1 - c : WP_CHUNK);
            k->gemm_wp[op->type](op->n, buf, pw, nrt, xp + (size_t)c * ps, ps, nct,
                                 op->y + c * ys + r, (size_t)ys);
            for (size_t e = l + per; l < e && l < lines; l++) __builtin_prefetch(p0 + l * 64, 0, 2);
        }
    }
}

/* Phase 2 over rows [r0, r1) and columns [c0, c1). Activations are taken in
 * blocks of columns that fit in L2, each block against all the rows, so the
 * weights stream from memory once per block and the activations stay cached.
 * xp: the prepared rows (ps bytes apart), or NULL. */
static void compute_part(const struct kiln_kernels *k, const struct kiln_matmul_op *op,
                         const char *xq, size_t xs, const char *xp, size_t ps, int64_t r0,
                         int64_t r1, int64_t c0, int64_t c1) {
    if (xp_use(k, op, xp ? ps : 0) == 2) {
        int64_t cb = (int64_t)(XBLOCK_BYTES / ps) / WP_CHUNK * WP_CHUNK;
        if (cb < WP_CHUNK) cb = WP_CHUNK;
        for (int64_t cb0 = c0; cb0 < c1; cb0 += cb)
            compute_wp(k, op, xp, ps, r0, r1, cb0, cb0 + cb < c1 ? cb0 + cb : c1);
        return;
    }
    const char *w = op->w;
    size_t ws = op->w_stride;
    int64_t ys = op->y_stride ? op->y_stride : op->nr;
    int64_t n = op->n;
    kiln_gemm_fn gemm =
        op->nc >= GEMM_MIN_COLS || k->gemm_matvec[op->type] ? k->gemm[op->type] : NULL;
    int tr = KILN_GEMM_MAX_R, tc = KILN_GEMM_MAX_C;
    if (xp_use(k, op, xp ? ps : 0) == 1) {
        gemm = k->gemm_xp[op->type];
        xq = xp;
        xs = ps;
        tr = KILN_GEMM_XP_MAX_R;
        tc = KILN_GEMM_XP_MAX_C;
    }
    kiln_vec_dot_fn dot = k->vec_dot[op->type];
    /* One column: the table's matvec entry, when the type has one, comes
     * before gemm_matvec and vec_dot: one call over this thread's rows, so
     * the kernel shares activation work across rows and prefetches its own
     * weight stream. */
    if (op->nc == 1 && k->matvec[op->type]) {
        if (c0 < c1 && r0 < r1)
            k->matvec[op->type](n, w + (size_t)r0 * ws, ws, r1 - r0, xq, op->y + r0);
        return;
    }
    int64_t cb = (int64_t)(XBLOCK_BYTES / xs) / tc * tc;
    if (cb < tc) cb = tc;
    for (int64_t cb0 = c0; cb0 < c1; cb0 += cb) {
        int64_t cb1 = cb0 + cb < c1 ? cb0 + cb : c1;
        if (gemm) {
            for (int64_t r = r0; r < r1; r += tr) {
                int nrt = (int)(r1 - r < tr ? r1 - r : tr);
                for (int64_t c = cb0; c < cb1; c += tc) {
                    int nct = (int)(cb1 - c < tc ? cb1 - c : tc);
                    gemm(n, w + (size_t)r * ws, ws, nrt, xq + (size_t)c * xs, xs, nct,
                         op->y + c * ys + r, (size_t)ys);
                }
            }
        } else {
            for (int64_t r = r0; r < r1; r++) {
                const char *wr = w + (size_t)r * ws;
                for (int64_t c = cb0; c < cb1; c++)
                    op->y[c * ys + r] = dot(n, wr, xq + (size_t)c * xs);
            }
        }
    }
}

/* Start of thread i's rows (i in [0, nth]): an even split moved down to a
 * cache-line boundary of y. Monotone in i, so the ranges are disjoint. */
static int64_t row_bound(const struct kiln_matmul_op *op, int i, int nth) {
    if (i <= 0) return 0;
    if (i >= nth) return op->nr;
    int64_t off = (int64_t)(((uintptr_t)op->y / sizeof(float)) % ROW_ALIGN);
    int64_t r = op->nr * i / nth;
    r -= (r + off) % ROW_ALIGN;
    return r < 0 ? 0 : r;
}

void kiln_matmul_task(kiln_matmul_ctx *ctx, const struct kiln_matmul_op *op, int ith, int nth) {
    if (op->nr == 0 || op->nc == 0) return;
    /* every entry of this product from one table (kernels.h: what may be mixed) */
    const struct kiln_kernels *k = kiln_kernels_for(ctx->kern, op->type, op->nc);
    kiln_type vdt = kiln_vec_dot_type(op->type);
    const char *xq;
    char *xp = NULL;
    size_t xs, ps = 0;
    if (vdt == KILN_TYPE_F32) {
        xq = (const char *)op->x;
        xs = (size_t)(op->x_stride ? op->x_stride : op->n) * sizeof(float);
    } else {
        xs = xrow_stride(vdt, op->n);
        ps = xp_row_stride(k, vdt, op->n, op->nc);
        KILN_ASSERT((xs + ps) * (size_t)op->nc <= ctx->cap);
        if (xp_use(k, op, ps)) xp = (char *)ctx->work + xs * (size_t)op->nc;
        if (op->reuse_x) {
            struct converted want = converted_of(op);
            KILN_ASSERT(same_converted(&ctx->conv, &want));
            if (xp && !ctx->conv.has_xp) { /* every thread sees the same flag here */
                xprep_part(k, vdt, op, ctx->work, xs, xp, ps, ith, nth);
                if (nth > 1) {
                    KILN_ASSERT(ctx->pool);
                    kiln_pool_barrier(ctx->pool);
                }
                if (ith == 0) ctx->conv.has_xp = 1; /* after the barrier: all have read it */
            }
        } else {
            convert_part(k, vdt, op, ctx->work, xs, xp, ps, ith, nth);
            if (ith == 0) {
                ctx->conv = converted_of(op);
                ctx->conv.has_xp = xp != NULL;
            }
            if (nth > 1) {
                KILN_ASSERT(ctx->pool);
                kiln_pool_barrier(ctx->pool);
            }
        }
        xq = ctx->work;
    }
    if (op->nr >= (int64_t)nth * ROW_ALIGN || op->nc < nth)
        compute_part(k, op, xq, xs, xp, ps, row_bound(op, ith, nth), row_bound(op, ith + 1, nth), 0,
                     op->nc);
    else
        compute_part(k, op, xq, xs, xp, ps, 0, op->nr, op->nc * ith / nth,
                     op->nc * (ith + 1) / nth);
}

struct run_args {
    kiln_matmul_ctx *ctx;
    const struct kiln_matmul_op *op;
};

static void run_fn(void *arg, int ith, int nth) {
    struct run_args *a = arg;
    kiln_matmul_task(a->ctx, a->op, ith, nth);
}

kiln_status kiln_matmul_run(kiln_matmul_ctx *ctx, const struct kiln_matmul_op *op) {
    kiln_status s = kiln_matmul_check(ctx, op);
    if (s || op->nr == 0 || op->nc == 0) return s;
    struct converted want = converted_of(op);
    if (op->reuse_x && want.vdt != KILN_TYPE_F32 && !same_converted(&ctx->conv, &want))
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "matmul: reuse_x, but the workspace does not hold these %s activations",
                         kiln_type_name(want.vdt));
    int nth = ctx->pool ? kiln_pool_size(ctx->pool) : 1;
    if ((double)op->nr * (double)op->n * (double)op->nc < MIN_PARALLEL_MACS) nth = 1;
    struct run_args a = {ctx, op};
    if (nth == 1)
        kiln_matmul_task(ctx, op, 0, 1);
    else
        kiln_pool_run_n(ctx->pool, nth, run_fn, &a);
    return KILN_OK;
}

/* kernels.h - the per-ISA kernel tables: for each tensor type, conversion to
 * F32, conversion from F32 (weight quantizers and activation quantizers), the
 * dot product of a weight row with an activation row already converted to
 * the type's vec_dot partner (types.h), and an optional tiled product that
 * computes several rows x several activations per call.
 *
 * Every entry has a scalar reference (KILN_ISA_SCALAR). The AVX2 and AVX-512
 * tables start as copies of the table below them and override what they
 * accelerate, so every entry of every available table is callable.
 * tests/test_kernels.c checks each override against the scalar reference.
 *
 * Run-time choice: kiln_kernels_best() picks the best ISA the CPU has, unless
 * the environment variable KILN_ISA (scalar|avx2|avx512) forces one. A
 * composite table (kiln_kernels_compose; tune.c fills one per context from
 * measurements) keeps every entry of such a table but runs each weight
 * type's matrix products from the per-ISA table measured fastest for it.
 * All functions here are thread-safe; tables are immutable after first use.
 *
 * What may be mixed (checked against the kernels and their tests): a
 * product runs all its entries - activation conversion, prepared rows,
 * tiles - from the one table kiln_kernels_for() names, so the prepared
 * weights (gemm_wprep/gemm_wp, a layout private to a kernel family) never
 * meet another family's. Products of different types in one composite may
 * come from different tables and share converted activations (matmul.h
 * reuse_x): that is sound because the partner rows are the same format in
 * every table - Q8_K, F16 and BF16 bit for bit, Q8_0/Q8_1 up to one unit of
 * a quant at an exact .5 tie (round-half-even vs roundf;
 * tests/test_kern_legacy.c) - and the prepared-activation layout below is
 * fixed whatever the ISA. */
#ifndef KILN_COMPUTE_KERNELS_H
#define KILN_COMPUTE_KERNELS_H

#include "kiln.h"

#include <stddef.h>
#include <stdint.h>

enum kiln_isa { KILN_ISA_SCALAR, KILN_ISA_AVX2, KILN_ISA_AVX512, KILN_ISA_COUNT };

/* dst[0..n) = values of the n elements at src. n is a multiple of the block size. */
typedef void (*kiln_to_float_fn)(const void *src, float *dst, int64_t n);
/* Quantizes/converts n floats (a multiple of the block size) into blocks at dst. */
typedef void (*kiln_from_float_fn)(const float *src, void *dst, int64_t n);
/* Dot product of n elements: w is a row of the weight type, x a row of its
 * vec_dot partner type. */
typedef float (*kiln_vec_dot_fn)(int64_t n, const void *w, const void *x);
/* Tile: for r < nr and c < nc,
 *   out[c * out_stride + r] = vec_dot(n, w + r * w_stride, x + c * x_stride)
 * (strides in bytes for w and x, in floats for out). Lets a kernel load each
 * weight block once for several activations and each activation block once
 * for several rows. nr <= KILN_GEMM_MAX_R, nc <= KILN_GEMM_MAX_C. */
typedef void (*kiln_gemm_fn)(int64_t n, const void *w, size_t w_stride, int nr, const void *x,
                             size_t x_stride, int nc, float *out, size_t out_stride);

/* Matrix-vector product: y[r] = vec_dot(n, w + r * w_stride, x) for
 * r < nr (any nr >= 1), within vec_dot's tolerance of the scalar reference.
 * A row's result must not depend on nr or on the row's place in the call
 * (bit for bit), so that any split of the rows among threads gives the same
 * y. One call per thread lets the kernel share each activation load across
 * several rows and prefetch its own weight stream. */
typedef void (*kiln_matvec_fn)(int64_t n, const void *w, size_t w_stride, int64_t nr, const void *x,
                               float *y);

/* How far ahead a matvec entry prefetches its weights: the fewest whole
 * groups of `group` bytes (the rows it walks together) that reach
 * KILN_MATVEC_PF_BYTES. A row is a short stream the hardware prefetcher
 * alone starts too late, and one or two rows ahead is too close to cover
 * the memory latency at full bandwidth. Measured in decode on Zen 5, 2
 * threads (docs/perf.md): ~8 KB ahead beat 2-4 KB by 5-15% and 16 KB. */
#define KILN_MATVEC_PF_BYTES 8192
static inline size_t kiln_matvec_pf(size_t group) {
    size_t g = (KILN_MATVEC_PF_BYTES + group - 1) / group;
    return (g ? g : 1) * group;
}

/* o[0..n) += sum over r < n_rows of w[r] * (the n elements of the row at
 * x + r * x_stride bytes); n a multiple of the type's block size.
 * Attention's weighted sum of V rows (kern_attn*.c): one call per tile,
 * with o held in registers across the rows. */
typedef void (*kiln_axpy_fn)(int64_t n, float *o, const void *x, size_t x_stride, const float *w,
                             int64_t n_rows);
/* s[i] = exp(s[i] - max) for i < n; returns their sum. max >= every s[i]
 * (so each result is in [0, 1]). Attention's softmax over a tile of scores. */
typedef float (*kiln_exp_sum_fn)(float *s, int64_t n, float max);
/* Small F32 product for attention over a tile of queries x a tile of keys
 * (kern_attn*.c): for i < m and j < n,
 *   c[i * ldc + j] = (acc ? c[i * ldc + j] : 0)
 *                    + sum over p < k, in order, of a[i * a_rs + p * a_cs] * b[p * ldb + j]
 * (strides in floats). a is only read one element at a time, so it may be
 * read transposed or strided; b's rows are contiguous. Each product may be
 * fused with its addition (within one rounding per term of the reference).
 * Prompt attention computes its scores with it (queries x the transposed K
 * tile) and their weighted sum of V rows (scores x the V tile). m, n, k >= 0;
 * c does not overlap a or b. tests/test_attn.c checks every ISA's attn_gemm
 * and swiglu against the scalar ones. */
typedef void (*kiln_attn_gemm_fn)(int64_t m, int64_t n, int64_t k, const float *a, size_t a_rs,
                                  size_t a_cs, const float *b, size_t ldb, float *c, size_t ldc,
                                  int acc);

/* g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i] for i < n: the
 * gated FFN's activation (llama.c). It lives with the attention kernels,
 * which have the vector exp; SIMD variants within a few ulp of the scalar
 * reference (expf). */
typedef void (*kiln_swiglu_fn)(float *g, const float *u, int64_t n);

#define KILN_GEMM_MAX_R 8
#define KILN_GEMM_MAX_C 8

/* Prepared activations ("xp") for gemm. A kernel family may read the
 * activations of wide products in a layout of its own, made once per matmul
 * from the partner-type rows (gemm_xprep, indexed by the partner type), so
 * that its tiles (gemm_xp, indexed by the weight type) only load them.
 * gemm_xp has kiln_gemm_fn's contract except that x points to prepared rows
 * (x_stride bytes apart) and nr <= KILN_GEMM_XP_MAX_R, nc <= KILN_GEMM_XP_MAX_C;
 * its results must not depend on nr and nc (each (row, column) is computed
 * the same way in any tile). The layouts are fixed here, whatever the ISA:
 *
 * Q8_0 partner, KILN_GEMM_XP_GROUP_BYTES per group of 16 blocks (512
 * elements; the last group of a row is padded with zero blocks: qs, d and
 * sum all 0):
 *   bytes   0..511  eight 64-byte vectors X[k]: int32 lane j of X[k] holds
 *                   qs[4k..4k+3] of block j of the group;
 *   bytes 512..575  16 floats: d of each block;
 *   bytes 576..639  16 int32: minus the sum of each block's qs.
 * F16 partner: the row as floats (exact), zero-padded to a multiple of 16
 * elements; a group of KILN_GEMM_XP_GROUP elements is
 * kiln_gemm_xp_row_size(KILN_TYPE_F16, KILN_GEMM_XP_GROUP) bytes.
 *
 * Prepared rows start on 64-byte boundaries. */
typedef void (*kiln_gemm_xprep_fn)(int64_t n, const void *xq, void *dst);
/* Q8_K partner, the same group size (two superblocks; 16 sub-blocks of 32
 * elements; a missing second superblock is all zero):
 *   bytes   0..511  X[k]: int32 lane j holds qs[4k..4k+3] of sub-block j
 *                   (elements 32j..32j+31 of the group);
 *   bytes 512..575  16 floats: d of sub-block j's superblock;
 *   bytes 576..639  16 floats: d * (the sum of sub-block j's qs). */
#define KILN_GEMM_XP_MAX_R       8
#define KILN_GEMM_XP_MAX_C       24
#define KILN_GEMM_XP_GROUP       512 /* elements per Q8_0 group */
#define KILN_GEMM_XP_GROUP_BYTES 640
/* Bytes of one prepared row of n elements of partner type vdt; 0 when vdt
 * has no prepared layout. */
size_t kiln_gemm_xp_row_size(kiln_type vdt, int64_t n);

/* Prepared weights ("wp") for wide products. gemm_wprep[type](n, w,
 * w_stride, nr, dst) converts nr <= KILN_GEMM_WP_MAX_R weight rows (w_stride
 * bytes apart) of n <= KILN_GEMM_WP_MAX_N elements into nr prepared rows of
 * kiln_gemm_wp_row_size(n) bytes each, consecutive at dst (64-byte
 * aligned): groups of KILN_GEMM_XP_GROUP elements, KILN_GEMM_WP_GROUP_BYTES
 * each, in a layout private to the kernel family that registers both
 * entries. gemm_wp[type] has gemm_xp's contract except that w points to
 * such prepared rows (w_stride = kiln_gemm_wp_row_size(n)), nr <=
 * KILN_GEMM_WP_MAX_R and nc is any positive count: the tile walks its
 * columns in register blocks, keeping every accumulator in registers over
 * the whole row, and stores each result once. Its results must not depend
 * on nr and nc, and where the table also has a gemm_xp for the type, they
 * equal gemm_xp's bit for bit. A driver prepares a block of rows once and
 * runs it against all the columns it holds in cache (matmul.c keeps the
 * prepared rows on its stack: KILN_GEMM_WP_MAX_R * the row size at
 * KILN_GEMM_WP_MAX_N is 80 KiB). */
typedef void (*kiln_gemm_wprep_fn)(int64_t n, const void *w, size_t w_stride, int nr, void *dst);
#define KILN_GEMM_WP_MAX_R       4
#define KILN_GEMM_WP_MAX_N       16384
#define KILN_GEMM_WP_GROUP_BYTES 640
/* Bytes of one prepared weight row of n elements (any type with gemm_wprep). */
size_t kiln_gemm_wp_row_size(int64_t n);

struct kiln_kernels {
    enum kiln_isa isa;
    kiln_to_float_fn to_float[KILN_TYPE_COUNT];
    kiln_from_float_fn from_float[KILN_TYPE_COUNT];
    kiln_vec_dot_fn vec_dot[KILN_TYPE_COUNT];
    kiln_gemm_fn gemm[KILN_TYPE_COUNT]; /* NULL: callers loop over vec_dot */
    /* 1: for a matrix-vector product (one activation column) gemm tiles of
     * KILN_GEMM_MAX_R rows x 1 column are faster than vec_dot row by row
     * (measured by the kernel family that sets it); 0: use vec_dot. */
    unsigned char gemm_matvec[KILN_TYPE_COUNT];
    /* Matrix-vector products (one activation column): used by matmul.c for
     * nc == 1 before gemm_matvec and vec_dot; NULL: not available. */
    kiln_matvec_fn matvec[KILN_TYPE_COUNT];
    /* Prepared activations (see above); NULL: not available. xprep converts
     * one partner-type row of n elements (a multiple of the block size) at
     * xq into kiln_gemm_xp_row_size(vdt, n) bytes at dst (64-byte aligned). */
    kiln_gemm_xprep_fn gemm_xprep[KILN_TYPE_COUNT]; /* by partner type */
    kiln_gemm_fn gemm_xp[KILN_TYPE_COUNT];          /* by weight type */
    /* Prepared weights (see above), both by weight type; NULL: not
     * available. matmul.c prefers them to gemm_xp where both exist. */
    kiln_gemm_wprep_fn gemm_wprep[KILN_TYPE_COUNT];
    kiln_gemm_fn gemm_wp[KILN_TYPE_COUNT];
    /* Products with fewer columns than this keep the type's gemm even when
     * prepared tiles (gemm_xp, gemm_wp) exist (transposing expensive
     * weights pays off only over enough columns); 0: from matmul.c's
     * minimum on. */
    unsigned char gemm_xp_min_cols[KILN_TYPE_COUNT];
    kiln_axpy_fn axpy[KILN_TYPE_COUNT]; /* KV cache types (F32, F16, Q8_0); else NULL */
    kiln_exp_sum_fn exp_sum;
    kiln_attn_gemm_fn attn_gemm;
    kiln_swiglu_fn swiglu;
    /* Matrix products only (matmul.c, through kiln_kernels_for): the table
     * whose entries run a weight type's one-column products (mv_from:
     * decode) and its wider ones (mm_from: prefill, batches); NULL: this
     * table. Set in composite tables only; they point at per-ISA tables. */
    const struct kiln_kernels *mv_from[KILN_TYPE_COUNT];
    const struct kiln_kernels *mm_from[KILN_TYPE_COUNT];
};

/* The table whose entries run a product of weight type t with nc activation
 * columns: k's mv_from[t] (nc == 1) or mm_from[t] when set, else k. */
static inline const struct kiln_kernels *kiln_kernels_for(const struct kiln_kernels *k, kiln_type t,
                                                          int64_t nc) {
    const struct kiln_kernels *f = NULL;
    if ((unsigned)t < KILN_TYPE_COUNT) f = nc == 1 ? k->mv_from[t] : k->mm_from[t];
    return f ? f : k;
}

const char *kiln_isa_name(enum kiln_isa isa);
/* Parses "scalar", "avx2", "avx512"; returns KILN_ISA_COUNT when unknown. */
enum kiln_isa kiln_isa_from_name(const char *name);
/* The best ISA this CPU (and OS) supports. */
enum kiln_isa kiln_isa_detect(void);
/* The table for isa, or NULL when this CPU cannot run it. */
const struct kiln_kernels *kiln_kernels_get(enum kiln_isa isa);
/* The table to use: KILN_ISA from the environment when set and available
 * (an unavailable or unknown value is reported once and ignored), else the
 * detected best. */
const struct kiln_kernels *kiln_kernels_best(void);
/* The ISA that KILN_ISA forces, or KILN_ISA_COUNT when it is unset, unknown
 * or one this CPU cannot run (kiln_kernels_best reports those). Reads the
 * environment on every call. */
enum kiln_isa kiln_isa_forced(void);
/* The CPU features the tables depend on, as detected: a static string such
 * as "avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512vnni avx512bf16
 * avx512vbmi" ("" on a CPU with none of them). */
const char *kiln_cpu_features(void);

/* Fills *out with a composite of the per-ISA tables: a copy of base (every
 * entry: conversions, attention, KV cache kernels) whose products of weight
 * type t run from the table of ISA mv[t] for one column and mm[t] for more
 * (kiln_kernels_for). An ISA the CPU cannot run, KILN_ISA_COUNT, or base's
 * own ISA leaves base in charge. base is a per-ISA table. */
void kiln_kernels_compose(const struct kiln_kernels *base, const enum kiln_isa mv[KILN_TYPE_COUNT],
                          const enum kiln_isa mm[KILN_TYPE_COUNT], struct kiln_kernels *out);

/* Registration: each kernel family fills or overrides its entries. Called
 * once per table by kernels.c, in ISA order (scalar first). */
void kern_float_register_scalar(struct kiln_kernels *k);
void kern_float_register_avx2(struct kiln_kernels *k);
void kern_float_register_avx512(struct kiln_kernels *k);
void kern_legacy_register_scalar(struct kiln_kernels *k);
void kern_legacy_register_avx2(struct kiln_kernels *k);
void kern_legacy_register_avx512(struct kiln_kernels *k);
void kern_kquant_register_scalar(struct kiln_kernels *k);
void kern_kquant_register_avx2(struct kiln_kernels *k);
void kern_kquant_register_avx512(struct kiln_kernels *k);
void kern_attn_register_scalar(struct kiln_kernels *k);
void kern_attn_register_avx2(struct kiln_kernels *k);
void kern_attn_register_avx512(struct kiln_kernels *k);

#endif

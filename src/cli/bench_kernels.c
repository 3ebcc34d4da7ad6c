/* bench_kernels.c - `kiln bench-kernels`: how close the matmul kernels come to
 * the machine's limits.
 *
 * First it measures the machine with the thread count under test: memory
 * read bandwidth (a streaming read over 1 GiB), the FP32 FMA peak and the
 * int8 VNNI peak (register-only loops). Then, for each weight type and ISA:
 *  - matvec (nc = 1): one pool task runs the product over enough distinct
 *    matrices to total --mb megabytes (so nothing stays in cache), a barrier
 *    between products as in a forward pass; reported as GB/s of weight bytes
 *    read and as a share of the measured bandwidth;
 *  - matmul (nc = --batch): one matrix, reported as 2*rows*cols*batch / time
 *    in GOPS and as a share of the VNNI peak (types whose activations are
 *    quantized to int8) or the FMA peak (float types).
 * Every figure is the best of several repetitions; the limits (measured by
 * compute/peaks.c, shared with bench-model) are measured before and after the kernels and the
 * higher reading kept. Results go to stdout as a table (and to --json FILE); progress goes to
 * stderr. Owns nothing beyond the command's run; all buffers are freed on return.
 */
#include "base/mem.h"
#include "base/time.h"
#include "cli/commands.h"
#include "compute/kernels.h"
#include "compute/matmul.h"
#include "compute/peaks.h"
#include "compute/randw.h"
#include "compute/threadpool.h"
#include "compute/types.h"
#include "kiln.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)

struct options {
    int threads;
    int types[KILN_TYPE_COUNT]; /* 1 = benchmark this type */
    int isas[KILN_ISA_COUNT];
    int64_t rows, cols, batch, mb;
    const char *json;
    int quick; /* short machine measurement (tests): 64 MiB read, ~10 ms loops */
};

struct machine {
    double bw_gbs;       /* memory read bandwidth, GB/s (1e9) */
    double fma_gflops;   /* FP32 FMA peak */
    double vnni_gops;    /* int8 dot-product peak, 0 when the CPU has no VNNI */
    const char *fma_isa; /* which registers the FMA figure used */
};

struct result {
    kiln_type type;
    enum kiln_isa isa;
    int has_gemm;
    const char *skip; /* why nothing was measured, or NULL */
    double mv_gbs, mv_us;
    double mm_gops;
    int int8; /* matmul compared with the VNNI peak (else FMA) */
    /* kernel ceilings: one thread, data in L1/L2 (no memory traffic) */
    double dot_gbs;   /* vec_dot, GB/s of weight bytes */
    double tile_gops; /* gemm 8x8 tiles (vec_dot when no gemm), GOPS */
};

/* ---- machine peaks (compute/peaks.c) ------------------------------------------------------ */

static int measure_machine(kiln_pool *pool, struct machine *m, int quick) {
    struct kiln_peaks pk;
    if (kiln_peaks_measure(pool, &pk, quick) != KILN_OK) {
        fprintf(stderr, "kiln bench-kernels: %s\n", kiln_last_error());
        return 1;
    }
    *m = (struct machine){pk.bw_gbs, pk.fma_gflops, pk.vnni_gops, pk.fma_isa};
    fprintf(stderr, "bench-kernels: memory read %.1f GB/s\n", m->bw_gbs);
    fprintf(stderr, "bench-kernels: FP32 FMA %.0f GFLOP/s\n", m->fma_gflops);
    if (m->vnni_gops > 0) fprintf(stderr, "bench-kernels: int8 VNNI %.0f GOPS\n", m->vnni_gops);
    return 0;
}

/* ---- kernels ----------------------------------------------------------------------------- */

struct mv_task {
    kiln_matmul_ctx *ctx;
    kiln_pool *pool;
    const struct kiln_matmul_op *ops;
    int count;
};

static void mv_fn(void *arg, int ith, int nth) {
    struct mv_task *t = arg;
    for (int i = 0; i < t->count; i++) {
        kiln_matmul_task(t->ctx, &t->ops[i], ith, nth);
        kiln_pool_barrier(t->pool);
    }
}

/* Best seconds of fn over reps of at least ~20 ms. */
struct ceil_args {
    const struct kiln_kernels *k;
    kiln_type t;
    const char *w, *xq;
    size_t rs, xs;
    int64_t n, rows;
    float *y;
    int tiles;
    const char *xp; /* prepared activations (kernels.h gemm_xp), or NULL */
    size_t ps;
    const char *wp; /* all rows prepared (kernels.h gemm_wp), or NULL */
    size_t pw;
};

static void ceil_once(struct ceil_args *a) {
    if (a->tiles && a->wp) {
        for (int64_t r = 0; r + KILN_GEMM_WP_MAX_R <= a->rows; r += KILN_GEMM_WP_MAX_R)
            a->k->gemm_wp[a->t](a->n, a->wp + (size_t)r * a->pw, a->pw, KILN_GEMM_WP_MAX_R, a->xp,
                                a->ps, KILN_GEMM_XP_MAX_C, a->y + r, (size_t)a->rows);
    } else if (a->tiles && a->xp) {
        for (int64_t r = 0; r + KILN_GEMM_XP_MAX_R <= a->rows; r += KILN_GEMM_XP_MAX_R)
            a->k->gemm_xp[a->t](a->n, a->w + (size_t)r * a->rs, a->rs, KILN_GEMM_XP_MAX_R, a->xp,
                                a->ps, KILN_GEMM_XP_MAX_C, a->y + r, (size_t)a->rows);
    } else if (a->tiles && a->k->gemm[a->t]) {
        for (int64_t r = 0; r + KILN_GEMM_MAX_R <= a->rows; r += KILN_GEMM_MAX_R)
            a->k->gemm[a->t](a->n, a->w + (size_t)r * a->rs, a->rs, KILN_GEMM_MAX_R, a->xq, a->xs,
                             KILN_GEMM_MAX_C, a->y + r, (size_t)a->rows);
    } else if (!a->tiles && a->k->matvec[a->t]) { /* what matmul.c runs for one column */
        a->k->matvec[a->t](a->n, a->w, a->rs, a->rows, a->xq, a->y);
    } else {
        int nc = a->tiles ? KILN_GEMM_MAX_C : 1;
        for (int64_t r = 0; r < a->rows; r++)
            for (int c = 0; c < nc; c++)
                a->y[c * a->rows + r] =
                    a->k->vec_dot[a->t](a->n, a->w + (size_t)r * a->rs, a->xq + (size_t)c * a->xs);
    }
}

static double ceil_time(struct ceil_args *a) {
    ceil_once(a);
    int reps = 1;
    for (;;) {
        int64_t t0 = kiln_now_ns();
        for (int i = 0; i < reps; i++) ceil_once(a);
        double s = (double)(kiln_now_ns() - t0) * 1e-9;
        if (s > 0.02) break;
        reps *= 2;
    }
    double best = 1e30;
    for (int k = 0; k < 5; k++) {
        int64_t t0 = kiln_now_ns();
        for (int i = 0; i < reps; i++) ceil_once(a);
        double s = (double)(kiln_now_ns() - t0) * 1e-9 / reps;
        if (s < best) best = s;
    }
    return best;
}

/* What the kernels do on one thread when memory is not the limit: 32 rows
 * (in L2) against activations already converted. Tells whether a matvec
 * below the bandwidth is the kernel's fault. The one-column figure is the
 * type's matvec entry (kernels.h) when it has one, else vec_dot row by row:
 * what matmul.c runs for one column (gemm_matvec aside). Tiles are the gemm's 8 x 8, or
 * the prepared-activation tiles (KILN_GEMM_XP_MAX_R x _C) when the table has
 * them, or, when it has prepared-weight tiles, those (KILN_GEMM_WP_MAX_R
 * rows x KILN_GEMM_XP_MAX_C columns) over rows prepared beforehand (not
 * timed: matmul.c prepares a block of rows once per ~200 columns), as
 * matmul.c uses them for wide products. */
static void kernel_ceilings(const struct kiln_kernels *k, kiln_type t, const char *w, size_t rs,
                            const struct options *o, const float *x, struct result *res) {
    kiln_type vdt = kiln_vec_dot_type(t);
    int64_t rows = o->rows < 32 ? o->rows : 32;
    size_t xs =
        vdt == KILN_TYPE_F32 ? (size_t)o->cols * sizeof(float) : kiln_row_size(vdt, o->cols);
    int use_wp = vdt != KILN_TYPE_F32 && k->gemm_wp[t] && k->gemm_wprep[t] && k->gemm_xprep[vdt] &&
                 o->cols <= KILN_GEMM_WP_MAX_N;
    int use_xp = use_wp || (vdt != KILN_TYPE_F32 && k->gemm_xp[t] && k->gemm_xprep[vdt]);
    int tr = use_xp ? KILN_GEMM_XP_MAX_R : KILN_GEMM_MAX_R;
    int tc = use_xp ? KILN_GEMM_XP_MAX_C : KILN_GEMM_MAX_C;
    size_t ps = use_xp ? kiln_gemm_xp_row_size(vdt, o->cols) : 0;
    char *xq = kiln_aligned_alloc(64, xs * (size_t)tc);
    char *xp = use_xp ? kiln_aligned_alloc(64, ps * (size_t)tc) : NULL;
    float *y = malloc(sizeof(float) * (size_t)rows * (size_t)tc);
    size_t pw = use_wp ? kiln_gemm_wp_row_size(o->cols) : 0;
    char *wp = use_wp ? kiln_aligned_alloc(64, pw * (size_t)rows) : NULL;
    if (!xq || !y || (use_xp && !xp) || (use_wp && !wp) || o->batch < tc) goto done;
    for (int64_t r = 0; use_wp && r < rows; r += KILN_GEMM_WP_MAX_R) {
        int nr = rows - r < KILN_GEMM_WP_MAX_R ? (int)(rows - r) : KILN_GEMM_WP_MAX_R;
        k->gemm_wprep[t](o->cols, w + (size_t)r * rs, rs, nr, wp + (size_t)r * pw);
    }
    for (int c = 0; c < tc; c++) {
        if (vdt == KILN_TYPE_F32)
            memcpy(xq + (size_t)c * xs, x + c * o->cols, xs);
        else
            k->from_float[vdt](x + c * o->cols, xq + (size_t)c * xs, o->cols);
        if (use_xp) k->gemm_xprep[vdt](o->cols, xq + (size_t)c * xs, xp + (size_t)c * ps);
    }
    struct ceil_args a = {k, t, w, xq, rs, xs, o->cols, rows, y, 0, NULL, 0, NULL, 0};
    res->dot_gbs = (double)rs * (double)rows / ceil_time(&a) * 1e-9;
    a.tiles = 1;
    a.xp = xp;
    a.ps = ps;
    a.wp = wp;
    a.pw = pw;
    rows = rows / tr * tr;
    a.rows = rows;
    if (rows) res->tile_gops = 2.0 * (double)rows * (double)o->cols * tc / ceil_time(&a) * 1e-9;
done:
    kiln_aligned_free(xq);
    kiln_aligned_free(xp);
    kiln_aligned_free(wp);
    free(y);
}

static void bench_one(kiln_pool *pool, const struct options *o, struct result *res, char *wbuf,
                      const float *x) {
    const struct kiln_kernels *k = kiln_kernels_get(res->isa);
    const struct kiln_kernels *scalar = kiln_kernels_get(KILN_ISA_SCALAR);
    kiln_type t = res->type;
    kiln_type vdt = kiln_vec_dot_type(t);
    res->int8 = vdt == KILN_TYPE_Q8_0 || vdt == KILN_TYPE_Q8_1 || vdt == KILN_TYPE_Q8_K;
    res->has_gemm = k->gemm[t] != NULL;
    if (o->cols % kiln_type_info(t)->blck) {
        res->skip = "cols not a multiple of the block size";
        return;
    }
    if (!k->vec_dot[t] || (vdt != KILN_TYPE_F32 && !k->from_float[vdt])) {
        res->skip = "no kernel registered";
        return;
    }
    if (t != KILN_TYPE_F32 && !scalar->from_float[t]) {
        res->skip = "no quantizer registered";
        return;
    }
    size_t rs = kiln_row_size(t, o->cols);
    size_t msize = rs * (size_t)o->rows;
    int count = (int)(((double)o->mb * MIB + (double)msize - 1) / (double)msize);
    if (count < 1) count = 1;
    if (kiln_randw_fill(t, wbuf, o->rows, o->cols, count, 0)) {
        res->skip = "out of memory";
        return;
    }
    size_t work = kiln_matmul_work_size(t, o->cols, o->batch);
    kiln_matmul_ctx *ctx = kiln_matmul_ctx_create(pool, k, work, NULL);
    struct kiln_matmul_op *ops = calloc((size_t)count, sizeof *ops);
    float *y = kiln_aligned_alloc(64, sizeof(float) * (size_t)(o->rows * o->batch));
    if (!ctx || !ops || !y) {
        res->skip = "out of memory";
        goto done;
    }
    for (int m = 0; m < count; m++)
        ops[m] = (struct kiln_matmul_op){.type = t,
                                         .w = wbuf + (size_t)m * msize,
                                         .w_stride = rs,
                                         .nr = o->rows,
                                         .n = o->cols,
                                         .x = x,
                                         .nc = 1,
                                         .y = y};
    if (kiln_matmul_check(ctx, &ops[0])) {
        res->skip = kiln_last_error();
        goto done;
    }
    /* matvec: passes over all matrices, best pass; at least 3, up to ~1 s */
    struct mv_task mt = {ctx, pool, ops, count};
    kiln_pool_run(pool, mv_fn, &mt); /* warm-up */
    double best = 1e30, total = 0;
    for (int pass = 0; pass < 3 || (total < 1.0 && pass < 20); pass++) {
        int64_t t0 = kiln_now_ns();
        kiln_pool_run(pool, mv_fn, &mt);
        double s = (double)(kiln_now_ns() - t0) * 1e-9;
        total += s;
        if (s < best) best = s;
    }
    res->mv_gbs = (double)msize * count / best * 1e-9;
    res->mv_us = best / count * 1e6;
    /* matmul: one matrix, batch columns */
    struct kiln_matmul_op op = ops[0];
    op.nc = o->batch;
    kiln_matmul_run(ctx, &op); /* warm-up */
    best = 1e30, total = 0;
    for (int rep = 0; rep < 3 || (total < 1.0 && rep < 50); rep++) {
        int64_t t0 = kiln_now_ns();
        kiln_matmul_run(ctx, &op);
        double s = (double)(kiln_now_ns() - t0) * 1e-9;
        total += s;
        if (s < best) best = s;
    }
    res->mm_gops = 2.0 * (double)o->rows * (double)o->cols * (double)o->batch / best * 1e-9;
    kernel_ceilings(k, t, wbuf, rs, o, x, res);
done:
    kiln_aligned_free(y);
    free(ops);
    kiln_matmul_ctx_destroy(ctx);
}

/* ---- options and output ---------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f, "usage: kiln bench-kernels [options]\n"
               "Measures memory bandwidth and FMA/VNNI peaks, then each kernel's matvec GB/s and\n"
               "matmul GOPS against them.\n\n"
               "  -t, --threads N    threads (default: physical cores)\n"
               "  --types LIST       weight types, e.g. q4_0,q8_0,q4_K (default: all supported)\n"
               "  --isa LIST         scalar,avx2,avx512 (default: all this CPU runs)\n"
               "  --rows M           matrix rows (default 4096)\n"
               "  -n, --cols K       matrix columns = elements per row (default 4096)\n"
               "  --batch B          matmul activation columns (default 64)\n"
               "  --mb MB            matvec cycles through matrices totalling >= MB (default 512)\n"
               "  --json FILE        also write the results as JSON\n"
               "  --quick            measure the machine briefly (64 MiB read; for tests)\n");
}

static int parse_int(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "kiln bench-kernels: %s expects an integer in [%lld, %lld], got '%s'\n",
                opt, (long long)lo, (long long)hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* Splits a comma list in place-free fashion, calling fn on each item. */
static int parse_list(const char *opt, const char *s, int (*fn)(const char *item, void *ctx),
                      void *ctx) {
    if (!s || !*s) {
        fprintf(stderr, "kiln bench-kernels: %s expects a comma-separated list\n", opt);
        return -1;
    }
    char item[64];
    while (*s) {
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= sizeof item) {
            fprintf(stderr, "kiln bench-kernels: %s: bad list item in '%s'\n", opt, s);
            return -1;
        }
        memcpy(item, s, len);
        item[len] = 0;
        if (fn(item, ctx)) return -1;
        s += len;
        if (*s == ',') s++;
    }
    return 0;
}

static int add_type(const char *name, void *ctx) {
    struct options *o = ctx;
    kiln_type t;
    if (kiln_type_from_name(name, &t) != KILN_OK || !kiln_type_supported(t)) {
        fprintf(stderr,
                "kiln bench-kernels: unknown or unsupported weight type '%s' (supported:", name);
        for (int i = 0; i < KILN_TYPE_COUNT; i++)
            if (kiln_type_supported((kiln_type)i) && kiln_type_name((kiln_type)i))
                fprintf(stderr, " %s", kiln_type_name((kiln_type)i));
        fprintf(stderr, ")\n");
        return -1;
    }
    o->types[t] = 1;
    return 0;
}

static int add_isa(const char *name, void *ctx) {
    struct options *o = ctx;
    enum kiln_isa isa = kiln_isa_from_name(name);
    if (isa == KILN_ISA_COUNT) {
        fprintf(stderr, "kiln bench-kernels: unknown ISA '%s' (scalar, avx2, avx512)\n", name);
        return -1;
    }
    o->isas[isa] = 1;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o) {
    int any_type = 0, any_isa = 0;
    int64_t v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (parse_int(a, val, 1, KILN_POOL_MAX_THREADS, &v)) return -1;
            o->threads = (int)v, i++;
        } else if (!strcmp(a, "--rows")) {
            if (parse_int(a, val, 1, 1 << 20, &o->rows)) return -1;
            i++;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--cols")) {
            if (parse_int(a, val, 1, 1 << 20, &o->cols)) return -1;
            i++;
        } else if (!strcmp(a, "--batch")) {
            if (parse_int(a, val, 1, 4096, &o->batch)) return -1;
            i++;
        } else if (!strcmp(a, "--mb")) {
            if (parse_int(a, val, 1, 1 << 20, &o->mb)) return -1;
            i++;
        } else if (!strcmp(a, "--types")) {
            if (parse_list(a, val, add_type, o)) return -1;
            any_type = 1, i++;
        } else if (!strcmp(a, "--isa")) {
            if (parse_list(a, val, add_isa, o)) return -1;
            any_isa = 1, i++;
        } else if (!strcmp(a, "--quick")) {
            o->quick = 1;
        } else if (!strcmp(a, "--json")) {
            if (!val) {
                fprintf(stderr, "kiln bench-kernels: --json expects a file name\n");
                return -1;
            }
            o->json = val, i++;
        } else {
            fprintf(stderr, "kiln bench-kernels: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        }
    }
    if (!any_type)
        for (int t = 0; t < KILN_TYPE_COUNT; t++) o->types[t] = kiln_type_supported((kiln_type)t);
    if (!any_isa)
        for (int i = 0; i < KILN_ISA_COUNT; i++) o->isas[i] = 1;
    return 0;
}

static double pct(double v, double limit) {
    return limit > 0 ? 100.0 * v / limit : 0;
}

static void print_table(const struct options *o, const struct machine *m, const struct result *r,
                        int nres) {
    printf("kiln bench-kernels: %d threads, W %lld x %lld, matvec over >= %lld MB, "
           "matmul batch %lld\n",
           o->threads, (long long)o->rows, (long long)o->cols, (long long)o->mb,
           (long long)o->batch);
    printf("limits: memory read %.1f GB/s | FP32 FMA %.0f GFLOP/s (%s) | int8 VNNI %.0f GOPS\n\n",
           m->bw_gbs, m->fma_gflops, m->fma_isa, m->vnni_gops);
    printf("%-8s %-7s %-5s | %12s %7s %9s %6s | %12s %7s %12s\n", "type", "isa", "gemm",
           "matvec GB/s", "% bw", "limit", "us/mv", "matmul GOPS", "% peak", "limit");
    for (int i = 0; i < nres; i++) {
        const struct result *x = &r[i];
        printf("%-8s %-7s %-5s | ", kiln_type_name(x->type), kiln_isa_name(x->isa),
               x->skip       ? ""
               : x->has_gemm ? "yes"
                             : "no");
        if (x->skip) {
            printf("skipped: %s\n", x->skip);
            continue;
        }
        double peak = x->int8 ? m->vnni_gops : m->fma_gflops;
        printf("%12.1f %6.0f%% %9.1f %6.0f | %12.1f %6.0f%% %7.0f %-4s\n", x->mv_gbs,
               pct(x->mv_gbs, m->bw_gbs), m->bw_gbs, x->mv_us, x->mm_gops, pct(x->mm_gops, peak),
               peak, x->int8 ? "vnni" : "fma");
    }
    /* The kernels' own ceilings: a matvec cannot beat threads x vec_dot
     * speed, nor a matmul threads x tile speed. */
    printf("\nkernel ceilings (1 thread, weights and activations in L2; compare x%d threads with "
           "the limits):\n",
           o->threads);
    printf("%-8s %-7s | %14s %14s | %14s %12s\n", "type", "isa", "matvec GB/s", "x threads",
           "tile GOPS", "% of 1 core");
    for (int i = 0; i < nres; i++) {
        const struct result *x = &r[i];
        if (x->skip) continue;
        double core_peak = (x->int8 ? m->vnni_gops : m->fma_gflops) / o->threads;
        printf("%-8s %-7s | %14.1f %14.1f | %14.1f %11.0f%%\n", kiln_type_name(x->type),
               kiln_isa_name(x->isa), x->dot_gbs, x->dot_gbs * o->threads, x->tile_gops,
               pct(x->tile_gops, core_peak));
    }
}

static int write_json(const char *path, const struct options *o, const struct machine *m,
                      const struct result *r, int nres) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kiln bench-kernels: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f,
            "{\n  \"threads\": %d, \"rows\": %lld, \"cols\": %lld, \"batch\": %lld, \"mb\": %lld,\n"
            "  \"machine\": {\"read_gbs\": %.2f, \"fma_gflops\": %.1f, \"fma_isa\": \"%s\", "
            "\"vnni_gops\": %.1f},\n  \"results\": [",
            o->threads, (long long)o->rows, (long long)o->cols, (long long)o->batch,
            (long long)o->mb, m->bw_gbs, m->fma_gflops, m->fma_isa, m->vnni_gops);
    for (int i = 0; i < nres; i++) {
        const struct result *x = &r[i];
        fprintf(f, "%s\n    {\"type\": \"%s\", \"isa\": \"%s\"", i ? "," : "",
                kiln_type_name(x->type), kiln_isa_name(x->isa));
        if (x->skip) {
            fprintf(f, ", \"skipped\": \"");
            for (const char *c = x->skip; *c; c++)
                if (*c == '"' || *c == '\\')
                    fprintf(f, "\\%c", *c);
                else if ((unsigned char)*c >= 0x20)
                    fputc(*c, f);
            fprintf(f, "\"}");
            continue;
        }
        double peak = x->int8 ? m->vnni_gops : m->fma_gflops;
        fprintf(f,
                ", \"gemm\": %s, \"matvec_gbs\": %.2f, \"matvec_pct_bw\": %.1f, "
                "\"matvec_us\": %.1f, \"matmul_gops\": %.2f, \"matmul_peak\": \"%s\", "
                "\"matmul_pct_peak\": %.1f, \"vec_dot_l2_gbs_1t\": %.2f, "
                "\"tile_l2_gops_1t\": %.2f}",
                x->has_gemm ? "true" : "false", x->mv_gbs, pct(x->mv_gbs, m->bw_gbs), x->mv_us,
                x->mm_gops, x->int8 ? "vnni" : "fma", pct(x->mm_gops, peak), x->dot_gbs,
                x->tile_gops);
    }
    fprintf(f, "\n  ]\n}\n");
    if (fclose(f)) {
        fprintf(stderr, "kiln bench-kernels: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int cmd_bench_kernels(int argc, char **argv) {
    struct options o = {
        .threads = kiln_cpu_physical_cores(), .rows = 4096, .cols = 4096, .batch = 64, .mb = 512};
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc < 0 ? 2 : 0;

    int ret = 1;
    struct result *res = NULL;
    char *wbuf = NULL;
    float *x = NULL;
    kiln_status st;
    kiln_pool *pool = kiln_pool_create(o.threads, &st);
    if (!pool) {
        fprintf(stderr, "kiln bench-kernels: %s\n", kiln_last_error());
        return 1;
    }
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (o.isas[i] && !kiln_kernels_get((enum kiln_isa)i)) {
            fprintf(stderr, "kiln bench-kernels: this CPU cannot run %s kernels; skipping them\n",
                    kiln_isa_name((enum kiln_isa)i));
            o.isas[i] = 0;
        }
    int nres = 0;
    res = calloc(KILN_TYPE_COUNT * KILN_ISA_COUNT, sizeof *res);
    /* the largest matvec set: >= mb plus one matrix of the widest type */
    size_t max_msize = 0;
    for (int t = 0; t < KILN_TYPE_COUNT; t++) {
        if (!o.types[t]) continue;
        size_t ms = kiln_row_size((kiln_type)t, o.cols) * (size_t)o.rows;
        if (ms > max_msize) max_msize = ms;
        for (int i = 0; i < KILN_ISA_COUNT; i++)
            if (o.isas[i]) res[nres++] = (struct result){.type = (kiln_type)t, .isa = i};
    }
    if (nres == 0) {
        fprintf(stderr, "kiln bench-kernels: nothing to measure\n");
        goto done;
    }
    size_t wsize = (size_t)((double)o.mb * MIB) + 2 * max_msize;
    wbuf = kiln_aligned_alloc(4096, wsize);
    x = malloc(sizeof(float) * (size_t)(o.cols * o.batch));
    if (!res || !wbuf || !x) {
        fprintf(stderr, "kiln bench-kernels: cannot allocate %.0f MB for the weights\n",
                (double)wsize / MIB);
        goto done;
    }
    uint64_t z = 88172645463325252ull;
    for (int64_t i = 0; i < o.cols * o.batch; i++) {
        z ^= z << 13, z ^= z >> 7, z ^= z << 17;
        x[i] = (float)(z >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
    }

    struct machine m;
    double load = 0;
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf", &load) != 1) load = 0;
        fclose(lf);
    }
    if (load > 0.5)
        fprintf(stderr,
                "bench-kernels: warning: load average %.1f: other work on this machine will "
                "lower and scatter the numbers\n",
                load);
    fprintf(stderr, "bench-kernels: measuring the machine with %d threads...\n", o.threads);
    if (measure_machine(pool, &m, o.quick)) goto done;
    for (int i = 0; i < nres; i++) {
        fprintf(stderr, "bench-kernels: [%d/%d] %s %s\n", i + 1, nres, kiln_type_name(res[i].type),
                kiln_isa_name(res[i].isa));
        bench_one(pool, &o, &res[i], wbuf, x);
    }
    /* Measure the limits again and keep the higher figure: a limit measured
     * while something else ran would flatter every percentage. */
    struct machine m2;
    fprintf(stderr, "bench-kernels: measuring the machine again...\n");
    if (measure_machine(pool, &m2, o.quick)) goto done;
    if (m2.bw_gbs < 0.9 * m.bw_gbs || m.bw_gbs < 0.9 * m2.bw_gbs ||
        m2.vnni_gops < 0.9 * m.vnni_gops || m.vnni_gops < 0.9 * m2.vnni_gops)
        fprintf(stderr,
                "bench-kernels: warning: the limits moved during the run (read %.1f then %.1f "
                "GB/s, VNNI %.0f then %.0f GOPS): the machine is busy\n",
                m.bw_gbs, m2.bw_gbs, m.vnni_gops, m2.vnni_gops);
    if (m2.bw_gbs > m.bw_gbs) m.bw_gbs = m2.bw_gbs;
    if (m2.fma_gflops > m.fma_gflops) m.fma_gflops = m2.fma_gflops;
    if (m2.vnni_gops > m.vnni_gops) m.vnni_gops = m2.vnni_gops;
    print_table(&o, &m, res, nres);
    if (o.json && write_json(o.json, &o, &m, res, nres)) goto done;
    ret = 0;
done:
    free(x);
    kiln_aligned_free(wbuf);
    free(res);
    kiln_pool_destroy(pool);
    return ret;
}

/* test_matmul.c - the threaded matmul driver against a double-precision
 * reference.
 *
 * The reference multiplies W as the scalar table's to_float sees it with the
 * activations as the tested table converted them (dequantized here, from the
 * block layouts), so the only difference left is the kernels' float
 * rounding; a driver mistake (wrong row, column, stride, tile edge, thread
 * range) shows up as an error of the order of the values themselves.
 *
 * Two sets of kernels are exercised: a small table private to this test
 * (F32 and Q8_0 with and without a gemm entry), so the driver is tested
 * whatever the real tables contain, and every real ISA table this CPU runs,
 * for each weight type whose entries are registered (others are reported as
 * skipped). Thread counts 1..4, nc 1..70, several shapes and strides.
 */
#include "testutil.h"

#include "base/fp16.h"
#include "base/mem.h"
#include "base/status.h"
#include "compute/blocks.h"
#include "compute/kernels.h"
#include "compute/matmul.h"
#include "compute/types.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the test's own kernels ---------------------------------------------------------------- */

static void t_q8_0_from_float(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float amax = 0;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(src[i * QK8_0 + j]));
        float d = amax / 127;
        b[i].d = kiln_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++)
            b[i].qs[j] = (int8_t)(d ? lrintf(src[i * QK8_0 + j] / d) : 0);
    }
}

static void t_q8_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++)
        for (int j = 0; j < QK8_0; j++)
            dst[i * QK8_0 + j] = kiln_f16_to_f32(b[i].d) * (float)b[i].qs[j];
}

static float t_q8_0_dot(int64_t n, const void *w, const void *x) {
    const block_q8_0 *a = w, *b = x;
    float s = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int acc = 0;
        for (int j = 0; j < QK8_0; j++) acc += a[i].qs[j] * b[i].qs[j];
        s += kiln_f16_to_f32(a[i].d) * kiln_f16_to_f32(b[i].d) * (float)acc;
    }
    return s;
}

static void t_f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static float t_f32_dot(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return (float)s;
}

/* A gemm that checks its limits and writes through the tile contract. */
static void t_gemm_q8_0(int64_t n, const void *w, size_t w_stride, int nr, const void *x,
                        size_t x_stride, int nc, float *out, size_t out_stride) {
    KILN_ASSERT(nr >= 1 && nr <= KILN_GEMM_MAX_R && nc >= 1 && nc <= KILN_GEMM_MAX_C);
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++)
            out[c * out_stride + r] =
                t_q8_0_dot(n, (const char *)w + r * w_stride, (const char *)x + c * x_stride);
}

static struct kiln_kernels test_tables[2]; /* [0] with gemm, [1] vec_dot only */

static void build_test_tables(void) {
    for (int i = 0; i < 2; i++) {
        struct kiln_kernels *k = &test_tables[i];
        memset(k, 0, sizeof *k);
        k->isa = KILN_ISA_SCALAR;
        k->to_float[KILN_TYPE_F32] = t_f32_to_float;
        k->vec_dot[KILN_TYPE_F32] = t_f32_dot;
        k->to_float[KILN_TYPE_Q8_0] = t_q8_0_to_float;
        k->from_float[KILN_TYPE_Q8_0] = t_q8_0_from_float;
        k->vec_dot[KILN_TYPE_Q8_0] = t_q8_0_dot;
        if (i == 0) k->gemm[KILN_TYPE_Q8_0] = t_gemm_q8_0;
    }
}

/* ---- reference ------------------------------------------------------------------------------- */

/* Dequantizes n activations converted to the vec_dot partner type vdt. */
static void partner_to_float(kiln_type vdt, const void *src, float *dst, int64_t n) {
    switch (vdt) {
    case KILN_TYPE_F32:
        memcpy(dst, src, (size_t)n * 4);
        break;
    case KILN_TYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = kiln_f16_to_f32(((const kiln_f16 *)src)[i]);
        break;
    case KILN_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = kiln_bf16_to_f32(((const kiln_bf16 *)src)[i]);
        break;
    case KILN_TYPE_Q8_0:
        t_q8_0_to_float(src, dst, n);
        break;
    case KILN_TYPE_Q8_1: {
        const block_q8_1 *b = src;
        for (int64_t i = 0; i < n / QK8_1; i++)
            for (int j = 0; j < QK8_1; j++)
                dst[i * QK8_1 + j] = kiln_f16_to_f32(b[i].d) * (float)b[i].qs[j];
        break;
    }
    case KILN_TYPE_Q8_K: {
        const block_q8_K *b = src;
        for (int64_t i = 0; i < n / QK_K; i++)
            for (int j = 0; j < QK_K; j++) dst[i * QK_K + j] = b[i].d * (float)b[i].qs[j];
        break;
    }
    default:
        fail_msg("no dequantizer for partner type %s", kiln_type_name(vdt));
    }
}

/* Quantized weights, shared by all the products of one shape. */
struct weights {
    kiln_type type;
    int64_t nr, n;
    size_t w_stride;
    void *w;   /* nr rows, w_stride apart */
    float *wf; /* W as to_float sees it, nr x n */
};

struct problem {
    const struct weights *wt;
    kiln_type type;
    int64_t nr, n, nc;
    size_t w_stride;
    int64_t x_stride, y_stride;
    const void *w;
    const float *wf;
    float *x;       /* nc columns, x_stride apart */
    float *y_store; /* y lives at y_store + y_off */
    float *y;
};

/* Random weights quantized by `quant` and read back by `deq`; padded rows
 * are 64 bytes longer than needed. */
static void weights_init(struct weights *wt, kiln_type type, int64_t nr, int64_t n, int padded,
                         kiln_from_float_fn quant, kiln_to_float_fn deq, uint64_t seed) {
    wt->type = type;
    wt->nr = nr, wt->n = n;
    size_t rs = kiln_row_size(type, n);
    wt->w_stride = padded ? rs + 64 : rs;
    wt->w = kiln_aligned_alloc(64, wt->w_stride * (size_t)nr);
    wt->wf = malloc(sizeof(float) * (size_t)(nr * n));
    float *row = malloc(sizeof(float) * (size_t)n);
    assert_true(wt->w && wt->wf && row);
    uint64_t rng = seed;
    for (int64_t r = 0; r < nr; r++) {
        float scale = 0.5f + (float)(r % 7) * 0.25f;
        for (int64_t i = 0; i < n; i++) row[i] = test_rand_normal(&rng) * scale;
        quant(row, (char *)wt->w + (size_t)r * wt->w_stride, n);
        deq((char *)wt->w + (size_t)r * wt->w_stride, wt->wf + r * n, n);
    }
    free(row);
}

static void weights_free(struct weights *wt) {
    kiln_aligned_free(wt->w);
    free(wt->wf);
}

static void problem_free(struct problem *p) {
    free(p->x);
    free(p->y_store);
}

/* Random activations for nc columns against wt; padded strides and a y that
 * starts off a cache line when `padded`. */
static void problem_init(struct problem *p, const struct weights *wt, int64_t nc, int padded,
                         uint64_t seed) {
    memset(p, 0, sizeof *p);
    p->wt = wt;
    p->type = wt->type;
    p->nr = wt->nr, p->n = wt->n, p->nc = nc;
    p->w = wt->w, p->wf = wt->wf, p->w_stride = wt->w_stride;
    p->x_stride = padded ? p->n + 3 : p->n;
    p->y_stride = padded ? p->nr + 5 : p->nr;
    p->x = malloc(sizeof(float) * (size_t)(p->x_stride * nc));
    int y_off = padded ? 1 : 0; /* misaligns y against cache lines */
    p->y_store = malloc(sizeof(float) * (size_t)(p->y_stride * nc + y_off));
    assert_true(p->x && p->y_store);
    p->y = p->y_store + y_off;
    uint64_t rng = seed;
    for (int64_t i = 0; i < p->x_stride * nc; i++) p->x[i] = test_rand_normal(&rng);
    for (int64_t i = 0; i < p->y_stride * nc + y_off; i++) p->y_store[i] = NAN;
}

/* Runs the problem on ctx and checks y against the reference built from the
 * partner-type activations the tested table produces. Returns the worst
 * error relative to sum |w x|. */
static double check_problem(kiln_matmul_ctx *ctx, struct problem *p, const char *what) {
    const struct kiln_kernels *k = kiln_matmul_kernels(ctx);
    struct kiln_matmul_op op = {.type = p->type,
                                .w = p->w,
                                .w_stride = p->w_stride,
                                .nr = p->nr,
                                .n = p->n,
                                .x = p->x,
                                .x_stride = p->x_stride,
                                .nc = p->nc,
                                .y = p->y,
                                .y_stride = p->y_stride};
    assert_int_equal(kiln_matmul_reserve(ctx, kiln_matmul_work_size(p->type, p->n, p->nc)),
                     KILN_OK);
    kiln_status st = kiln_matmul_run(ctx, &op);
    if (st) fail_msg("%s: %s", what, kiln_last_error());

    kiln_type vdt = kiln_vec_dot_type(p->type);
    size_t prow = kiln_row_size(vdt, p->n);
    void *xq = malloc(prow);
    float *xd = malloc(sizeof(float) * (size_t)p->n);
    double worst = 0;
    /* Q8_1 carries s = d * sum(qs) rounded to f16, which kernels use for the
     * weights' min term; the reference does not, so allow that rounding. */
    double tol = vdt == KILN_TYPE_Q8_1 ? 2e-3 : 2e-4;
    for (int64_t c = 0; c < p->nc; c++) {
        const float *xc = p->x + c * p->x_stride;
        if (vdt == KILN_TYPE_F32)
            memcpy(xd, xc, sizeof(float) * (size_t)p->n);
        else {
            k->from_float[vdt](xc, xq, p->n);
            partner_to_float(vdt, xq, xd, p->n);
        }
        for (int64_t r = 0; r < p->nr; r++) {
            double ref = 0, mag = 0;
            const float *wr = p->wf + r * p->n;
            for (int64_t i = 0; i < p->n; i++) {
                ref += (double)wr[i] * xd[i];
                mag += fabs((double)wr[i] * xd[i]);
            }
            double got = p->y[c * p->y_stride + r];
            double err = fabs(got - ref) / (mag + 1e-30);
            if (!(err <= tol))
                fail_msg("%s: y[c=%lld, r=%lld] = %.7g, reference %.7g (|w x| sum %.4g)", what,
                         (long long)c, (long long)r, got, ref, mag);
            if (err > worst) worst = err;
        }
        /* padding between columns must be untouched */
        for (int64_t r = p->nr; r < p->y_stride; r++)
            if (!isnan(p->y[c * p->y_stride + r]))
                fail_msg("%s: wrote y padding at c=%lld r=%lld", what, (long long)c, (long long)r);
    }
    free(xq);
    free(xd);
    return worst;
}

/* ---- test cases ------------------------------------------------------------------------------ */

static const int64_t ncs[] = {1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 64, 70};
#define N_NCS ((int)(sizeof ncs / sizeof ncs[0]))

struct shape {
    int64_t nr, n;
};
static const struct shape shapes[] = {{1, 256},  {5, 512},   {16, 256},
                                      {37, 768}, {100, 256}, {129, 512}};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static kiln_pool *pools[5];
static kiln_matmul_ctx *ctxs[5];

static int setup(void **state) {
    (void)state;
    build_test_tables();
    for (int t = 1; t <= 4; t++) {
        pools[t] = kiln_pool_create(t, NULL);
        if (!pools[t]) return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int t = 1; t <= 4; t++) kiln_pool_destroy(pools[t]);
    return 0;
}

/* Sanitizer builds run one combination in five (still every thread count
 * and padding) over the smaller shapes, to keep the test short. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SWEEP_STRIDE 5
#define SWEEP_SHAPES (N_SHAPES - 2)
#else
#define SWEEP_STRIDE 1
#define SWEEP_SHAPES N_SHAPES
#endif

/* Weights for every shape, unpadded [s][0] and padded [s][1]. */
static struct weights wsets[N_SHAPES][2];

static void wsets_init(kiln_type type, kiln_from_float_fn quant, kiln_to_float_fn deq,
                       int64_t min_n) {
    for (int s = 0; s < SWEEP_SHAPES; s++)
        for (int pad = 0; pad < 2; pad++)
            weights_init(&wsets[s][pad], type, shapes[s].nr,
                         shapes[s].n < min_n ? min_n : shapes[s].n, pad, quant, deq,
                         (uint64_t)(s * 131 + pad * 17 + type));
}

static void wsets_free(void) {
    for (int s = 0; s < SWEEP_SHAPES; s++)
        for (int pad = 0; pad < 2; pad++) weights_free(&wsets[s][pad]);
}

/* Every (shape, nc) of wsets on thread counts cycling 1..4, one in three
 * with padded strides and a misaligned y; returns the worst relative error. */
static double sweep(const struct kiln_kernels *k, const char *label) {
    double worst = 0;
    int combo = 0;
    for (int t = 1; t <= 4; t++) {
        ctxs[t] = kiln_matmul_ctx_create(pools[t], k, 0, NULL);
        assert_non_null(ctxs[t]);
    }
    for (int s = 0; s < SWEEP_SHAPES; s++) {
        for (int ci = 0; ci < N_NCS; ci++, combo++) {
            if (combo % SWEEP_STRIDE) continue;
            int padded = combo % 3 == 2;
            int threads = 1 + combo % 4;
            const struct weights *wt = &wsets[s][padded];
            struct problem p;
            problem_init(&p, wt, ncs[ci], padded, (uint64_t)(combo * 7919 + wt->type));
            char what[160];
            snprintf(what, sizeof what, "%s %s nr=%lld n=%lld nc=%lld threads=%d%s", label,
                     kiln_type_name(wt->type), (long long)p.nr, (long long)p.n, (long long)p.nc,
                     threads, padded ? " padded" : "");
            double e = check_problem(ctxs[threads], &p, what);
            if (e > worst) worst = e;
            problem_free(&p);
        }
    }
    for (int t = 1; t <= 4; t++) kiln_matmul_ctx_destroy(ctxs[t]);
    return worst;
}

static void f32_copy(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void test_driver_own_kernels(void **state) {
    (void)state;
    for (int i = 0; i < 2; i++) {
        const struct kiln_kernels *k = &test_tables[i];
        const char *label = i == 0 ? "test-gemm" : "test-vec_dot";
        wsets_init(KILN_TYPE_Q8_0, t_q8_0_from_float, t_q8_0_to_float, 0);
        double e1 = sweep(k, label);
        wsets_free();
        wsets_init(KILN_TYPE_F32, f32_copy, t_f32_to_float, 0);
        double e2 = sweep(k, label);
        wsets_free();
        print_message("%s: worst relative error q8_0 %.2g, f32 %.2g\n", label, e1, e2);
    }
}

static const kiln_type weight_types[] = {
    KILN_TYPE_F32,  KILN_TYPE_F16,  KILN_TYPE_BF16, KILN_TYPE_Q4_0,   KILN_TYPE_Q4_1,
    KILN_TYPE_Q5_0, KILN_TYPE_Q5_1, KILN_TYPE_Q8_0, KILN_TYPE_Q2_K,   KILN_TYPE_Q3_K,
    KILN_TYPE_Q4_K, KILN_TYPE_Q5_K, KILN_TYPE_Q6_K, KILN_TYPE_IQ4_NL, KILN_TYPE_IQ4_XS};

static void test_real_kernels(void **state) {
    (void)state;
    const struct kiln_kernels *scalar = kiln_kernels_get(KILN_ISA_SCALAR);
    assert_non_null(scalar);
    int tested = 0;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++)
        if (!kiln_kernels_get((enum kiln_isa)isa))
            print_message("SKIP: %s kernels: this CPU cannot run them\n",
                          kiln_isa_name((enum kiln_isa)isa));
    for (size_t ti = 0; ti < sizeof weight_types / sizeof weight_types[0]; ti++) {
        kiln_type t = weight_types[ti];
        kiln_type vdt = kiln_vec_dot_type(t);
        kiln_from_float_fn quant = t == KILN_TYPE_F32 ? f32_copy : scalar->from_float[t];
        kiln_to_float_fn deq = scalar->to_float[t];
        if (t == KILN_TYPE_F32 && !deq) deq = t_f32_to_float;
        if (!quant || !deq) {
            print_message("SKIP: %s: no scalar quantizer or to_float registered\n",
                          kiln_type_name(t));
            continue;
        }
        wsets_init(t, quant, deq, kiln_type_info(t)->blck);
        for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
            const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
            if (!k) continue;
            if (!k->vec_dot[t] || (vdt != KILN_TYPE_F32 && !k->from_float[vdt])) {
                print_message("SKIP: %s %s: kernels not registered (vec_dot %s, activation "
                              "from_float %s)\n",
                              kiln_isa_name(k->isa), kiln_type_name(t),
                              k->vec_dot[t] ? "yes" : "no",
                              vdt == KILN_TYPE_F32 || k->from_float[vdt] ? "yes" : "no");
                continue;
            }
            double e = sweep(k, kiln_isa_name(k->isa));
            print_message("%s %s%s: worst relative error %.2g\n", kiln_isa_name(k->isa),
                          kiln_type_name(t), k->gemm[t] ? " (gemm)" : "", e);
            tested++;
        }
        wsets_free();
    }
    print_message("%d (ISA, type) pairs tested\n", tested);
}

/* Two dependent products inside one pool task, as a forward pass does:
 * h = W1 x, barrier, y = W2 h. */
struct chain {
    kiln_matmul_ctx *ctx;
    struct kiln_matmul_op op1, op2, op3;
    kiln_pool *pool;
};
/* h = W1 x; y3 = W2 x reusing x's conversion; barrier; y2 = W2 h */
static void chain_fn(void *arg, int ith, int nth) {
    struct chain *c = arg;
    kiln_matmul_task(c->ctx, &c->op1, ith, nth);
    kiln_matmul_task(c->ctx, &c->op3, ith, nth);
    kiln_pool_barrier(c->pool);
    kiln_matmul_task(c->ctx, &c->op2, ith, nth);
}

static void test_in_task_chain(void **state) {
    (void)state;
    const int64_t n = 256, nc = 5;
    struct weights w1, w2;
    weights_init(&w1, KILN_TYPE_Q8_0, n, n, 0, t_q8_0_from_float, t_q8_0_to_float, 11);
    weights_init(&w2, KILN_TYPE_Q8_0, 64, n, 0, t_q8_0_from_float, t_q8_0_to_float, 12);
    struct problem p1, p2;
    problem_init(&p1, &w1, nc, 0, 13);
    problem_init(&p2, &w2, nc, 0, 14);
    for (int t = 1; t <= 4; t++) {
        kiln_matmul_ctx *ctx = kiln_matmul_ctx_create(
            pools[t], &test_tables[0], kiln_matmul_work_size(KILN_TYPE_Q8_0, n, nc), NULL);
        assert_non_null(ctx);
        struct chain c = {.ctx = ctx, .pool = pools[t]};
        c.op1 = (struct kiln_matmul_op){.type = KILN_TYPE_Q8_0,
                                        .w = p1.w,
                                        .w_stride = p1.w_stride,
                                        .nr = n,
                                        .n = n,
                                        .x = p1.x,
                                        .nc = nc,
                                        .y = p1.y};
        c.op2 = (struct kiln_matmul_op){.type = KILN_TYPE_Q8_0,
                                        .w = p2.w,
                                        .w_stride = p2.w_stride,
                                        .nr = 64,
                                        .n = n,
                                        .x = p1.y,
                                        .nc = nc,
                                        .y = p2.y};
        assert_int_equal(kiln_matmul_check(ctx, &c.op1), KILN_OK);
        assert_int_equal(kiln_matmul_check(ctx, &c.op2), KILN_OK);
        float y3[64 * 5], y3_ref[64 * 5];
        c.op3 = c.op2;
        c.op3.x = p1.x;
        c.op3.y = y3;
        c.op3.reuse_x = 1;
        /* reuse before anything was converted is refused */
        assert_int_equal(kiln_matmul_run(ctx, &c.op3), KILN_ERR_INVALID_ARG);
        kiln_pool_run(pools[t], chain_fn, &c);
        float h[256 * 5], y2[64 * 5];
        memcpy(h, p1.y, sizeof h);
        memcpy(y2, p2.y, sizeof y2);
        /* the same two products one at a time */
        kiln_matmul_ctx *one = kiln_matmul_ctx_create(NULL, &test_tables[1], 0, NULL);
        assert_int_equal(kiln_matmul_reserve(one, kiln_matmul_work_size(KILN_TYPE_Q8_0, n, nc)),
                         KILN_OK);
        assert_int_equal(kiln_matmul_run(one, &c.op1), KILN_OK);
        struct kiln_matmul_op op3 = c.op3;
        op3.y = y3_ref;
        assert_int_equal(kiln_matmul_run(one, &op3), KILN_OK); /* reuses op1's x */
        assert_int_equal(kiln_matmul_run(one, &c.op2), KILN_OK);
        assert_int_equal(kiln_matmul_run(one, &op3), KILN_ERR_INVALID_ARG); /* x changed */
        assert_memory_equal(h, p1.y, sizeof h);
        assert_memory_equal(y2, p2.y, sizeof y2);
        assert_memory_equal(y3, y3_ref, sizeof y3);
        kiln_matmul_ctx_destroy(one);
        kiln_matmul_ctx_destroy(ctx);
    }
    problem_free(&p1);
    problem_free(&p2);
    weights_free(&w1);
    weights_free(&w2);
}

/* The prepared-tile paths of the best table: rows of n = KILN_GEMM_WP_MAX_N
 * (prepared weights, several column blocks) and just above it (the
 * fallback), odd row counts, two threads; and an operation with reuse_x
 * whose tiles read prepared activations that the operation before it (whose
 * tiles did not) left unwritten: it prepares them and gives the same y,
 * bit for bit, as without reuse_x. */
static void test_prepared_paths(void **state) {
    (void)state;
    const struct kiln_kernels *k = kiln_kernels_best();
    const struct kiln_kernels *scalar = kiln_kernels_get(KILN_ISA_SCALAR);
    static const kiln_type types[] = {KILN_TYPE_Q4_0, KILN_TYPE_Q4_K};
    static const int64_t lens[] = {KILN_GEMM_WP_MAX_N, KILN_GEMM_WP_MAX_N + 512};
    kiln_matmul_ctx *ctx = kiln_matmul_ctx_create(pools[2], k, 0, NULL);
    assert_non_null(ctx);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            struct weights wt;
            weights_init(&wt, types[ti], 13, lens[li], (int)li, scalar->from_float[types[ti]],
                         scalar->to_float[types[ti]], 31 + li);
            struct problem p;
            problem_init(&p, &wt, 70, (int)li, 37 + li);
            char what[96];
            snprintf(what, sizeof what, "best %s nr=13 n=%lld nc=70 threads=2",
                     kiln_type_name(types[ti]), (long long)lens[li]);
            check_problem(ctx, &p, what);
            problem_free(&p);
            weights_free(&wt);
        }
    /* reuse: Q8_0 at 5 columns (gemm tiles) then Q4_0 on the same x */
    const int64_t n = 1536, nc = 5, nr = 40;
    struct weights w8, w4;
    weights_init(&w8, KILN_TYPE_Q8_0, nr, n, 0, t_q8_0_from_float, t_q8_0_to_float, 41);
    weights_init(&w4, KILN_TYPE_Q4_0, nr, n, 0, scalar->from_float[KILN_TYPE_Q4_0],
                 scalar->to_float[KILN_TYPE_Q4_0], 42);
    struct problem p8;
    problem_init(&p8, &w8, nc, 0, 43);
    float y4[40 * 5], y4_ref[40 * 5];
    struct kiln_matmul_op op8 = {.type = KILN_TYPE_Q8_0,
                                 .w = w8.w,
                                 .w_stride = w8.w_stride,
                                 .nr = nr,
                                 .n = n,
                                 .x = p8.x,
                                 .nc = nc,
                                 .y = p8.y};
    struct kiln_matmul_op op4 = op8;
    op4.type = KILN_TYPE_Q4_0, op4.w = w4.w, op4.w_stride = w4.w_stride, op4.y = y4_ref;
    size_t need = kiln_matmul_work_size(KILN_TYPE_Q4_0, n, nc);
    assert_int_equal(kiln_matmul_reserve(ctx, need), KILN_OK);
    for (int t = 1; t <= 4; t++) {
        kiln_matmul_ctx *c = kiln_matmul_ctx_create(pools[t], k, need, NULL);
        assert_non_null(c);
        op4.reuse_x = 0, op4.y = y4_ref;
        assert_int_equal(kiln_matmul_run(c, &op4), KILN_OK);
        assert_int_equal(kiln_matmul_run(c, &op8), KILN_OK);
        op4.reuse_x = 1, op4.y = y4;
        assert_int_equal(kiln_matmul_run(c, &op4), KILN_OK);
        assert_memory_equal(y4, y4_ref, sizeof y4);
        assert_int_equal(kiln_matmul_run(c, &op4), KILN_OK); /* prepared rows now present */
        assert_memory_equal(y4, y4_ref, sizeof y4);
        kiln_matmul_ctx_destroy(c);
    }
    problem_free(&p8);
    weights_free(&w8);
    weights_free(&w4);
    kiln_matmul_ctx_destroy(ctx);
}

/* y of op run on table k (2 threads), into y (nr * nc floats). */
static void run_on(const struct kiln_kernels *k, const struct kiln_matmul_op *op, float *y) {
    kiln_matmul_ctx *c =
        kiln_matmul_ctx_create(pools[2], k, kiln_matmul_work_size(op->type, op->n, op->nc), NULL);
    assert_non_null(c);
    struct kiln_matmul_op o = *op;
    o.y = y, o.reuse_x = 0;
    assert_int_equal(kiln_matmul_run(c, &o), KILN_OK);
    kiln_matmul_ctx_destroy(c);
}

/* Composite tables (kernels.h kiln_kernels_compose): for every ordered pair
 * of ISAs (a, b) this CPU runs, a table based on a whose one-column products
 * come from b gives, bit for bit, b's y for one column and a's for nine;
 * and a product that reuses activations another table converted (Q4_K on
 * a, then Q6_K on b with reuse_x; their Q8_K rows are the same bytes in
 * every table) gives b's y. */
static void test_composite(void **state) {
    (void)state;
    const struct kiln_kernels *scalar = kiln_kernels_get(KILN_ISA_SCALAR);
    static const kiln_type types[] = {KILN_TYPE_Q8_0, KILN_TYPE_Q4_0, KILN_TYPE_Q4_K,
                                      KILN_TYPE_Q6_K, KILN_TYPE_F16};
    enum { NR = 37, N = 512, NC = 9 };
    int pairs = 0;
    for (int a = 0; a < KILN_ISA_COUNT; a++)
        for (int b = 0; b < KILN_ISA_COUNT; b++) {
            const struct kiln_kernels *ka = kiln_kernels_get((enum kiln_isa)a),
                                      *kb = kiln_kernels_get((enum kiln_isa)b);
            if (a == b || !ka || !kb) continue;
            enum kiln_isa mv[KILN_TYPE_COUNT], mm[KILN_TYPE_COUNT];
            for (int t = 0; t < KILN_TYPE_COUNT; t++)
                mv[t] = (enum kiln_isa)b, mm[t] = KILN_ISA_COUNT;
            mm[KILN_TYPE_Q6_K] = (enum kiln_isa)b;
            struct kiln_kernels comp;
            kiln_kernels_compose(ka, mv, mm, &comp);
            assert_int_equal(comp.isa, a);
            assert_ptr_equal(comp.to_float[KILN_TYPE_Q4_K], ka->to_float[KILN_TYPE_Q4_K]);
            assert_ptr_equal(kiln_kernels_for(&comp, KILN_TYPE_Q8_0, 1), kb);
            assert_ptr_equal(kiln_kernels_for(&comp, KILN_TYPE_Q8_0, 2), &comp);
            for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
                kiln_type t = types[ti];
                struct weights wt;
                weights_init(&wt, t, NR, N, 0, scalar->from_float[t], scalar->to_float[t],
                             101 + ti);
                struct problem p;
                problem_init(&p, &wt, NC, 0, 103 + ti);
                float got[NR * NC], want[NR * NC];
                for (int nc = 1; nc <= NC; nc += NC - 1) {
                    struct kiln_matmul_op op = {.type = t,
                                                .w = wt.w,
                                                .w_stride = wt.w_stride,
                                                .nr = NR,
                                                .n = N,
                                                .x = p.x,
                                                .nc = nc};
                    run_on(&comp, &op, got);
                    run_on(nc == 1 || t == KILN_TYPE_Q6_K ? kb : ka, &op, want);
                    if (memcmp(got, want, sizeof(float) * (size_t)(NR * nc)))
                        fail_msg("composite %s+%s %s nc=%d: y differs from %s's",
                                 kiln_isa_name(ka->isa), kiln_isa_name(kb->isa), kiln_type_name(t),
                                 nc, nc == 1 ? kiln_isa_name(kb->isa) : kiln_isa_name(ka->isa));
                }
                problem_free(&p);
                weights_free(&wt);
            }
            /* reuse across tables: Q4_K (table a) converts, Q6_K (table b) reuses */
            struct weights w4, w6;
            weights_init(&w4, KILN_TYPE_Q4_K, NR, N, 0, scalar->from_float[KILN_TYPE_Q4_K],
                         scalar->to_float[KILN_TYPE_Q4_K], 201);
            weights_init(&w6, KILN_TYPE_Q6_K, NR, N, 0, scalar->from_float[KILN_TYPE_Q6_K],
                         scalar->to_float[KILN_TYPE_Q6_K], 202);
            struct problem p;
            problem_init(&p, &w4, NC, 0, 203);
            float y4[NR * NC], y6[NR * NC], want[NR * NC];
            struct kiln_matmul_op o4 = {.type = KILN_TYPE_Q4_K,
                                        .w = w4.w,
                                        .w_stride = w4.w_stride,
                                        .nr = NR,
                                        .n = N,
                                        .x = p.x,
                                        .nc = NC,
                                        .y = y4};
            struct kiln_matmul_op o6 = o4;
            o6.type = KILN_TYPE_Q6_K, o6.w = w6.w, o6.w_stride = w6.w_stride, o6.y = y6;
            o6.reuse_x = 1;
            kiln_matmul_ctx *c = kiln_matmul_ctx_create(
                pools[2], &comp, kiln_matmul_work_size(KILN_TYPE_Q4_K, N, NC), NULL);
            assert_non_null(c);
            assert_int_equal(kiln_matmul_run(c, &o4), KILN_OK);
            assert_int_equal(kiln_matmul_run(c, &o6), KILN_OK);
            kiln_matmul_ctx_destroy(c);
            run_on(kb, &o6, want);
            if (memcmp(y6, want, sizeof want))
                fail_msg("composite %s+%s: Q6_K reusing Q4_K's activations differs from %s's",
                         kiln_isa_name(ka->isa), kiln_isa_name(kb->isa), kiln_isa_name(kb->isa));
            problem_free(&p);
            weights_free(&w4);
            weights_free(&w6);
            pairs++;
        }
    print_message("%d ISA pairs composed\n", pairs);
    if (!pairs) print_message("SKIP: composites need two ISAs; this CPU runs one\n");
}

static void test_check_errors(void **state) {
    (void)state;
    kiln_matmul_ctx *ctx = kiln_matmul_ctx_create(NULL, &test_tables[0], 0, NULL);
    assert_non_null(ctx);
    float x[256], y[4];
    static block_q8_0 w[4 * 8];
    struct kiln_matmul_op op = {.type = KILN_TYPE_Q8_0,
                                .w = w,
                                .w_stride = sizeof(block_q8_0) * 8,
                                .nr = 4,
                                .n = 256,
                                .x = x,
                                .nc = 1,
                                .y = y};
    assert_int_equal(kiln_matmul_run(ctx, &op), KILN_ERR_RANGE); /* no workspace yet */
    assert_non_null(strstr(kiln_last_error(), "workspace"));
    assert_int_equal(kiln_matmul_reserve(ctx, kiln_matmul_work_size(KILN_TYPE_Q8_0, 256, 1)),
                     KILN_OK);
    assert_int_equal(kiln_matmul_check(ctx, &op), KILN_OK);
    op.n = 250;
    assert_int_equal(kiln_matmul_check(ctx, &op), KILN_ERR_INVALID_ARG);
    op.n = 256;
    op.w_stride = 10;
    assert_int_equal(kiln_matmul_check(ctx, &op), KILN_ERR_INVALID_ARG);
    op.w_stride = sizeof(block_q8_0) * 8;
    op.type = KILN_TYPE_Q4_K; /* not in the test table */
    assert_int_equal(kiln_matmul_check(ctx, &op), KILN_ERR_UNSUPPORTED);
    op.type = KILN_TYPE_I32;
    assert_int_equal(kiln_matmul_check(ctx, &op), KILN_ERR_UNSUPPORTED);
    op.type = KILN_TYPE_Q8_0;
    op.nr = 0; /* empty products are fine and write nothing */
    assert_int_equal(kiln_matmul_run(ctx, &op), KILN_OK);
    assert_int_equal(kiln_matmul_work_size(KILN_TYPE_F32, 4096, 64), 0);
    kiln_matmul_ctx_destroy(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_errors),  cmocka_unit_test(test_driver_own_kernels),
        cmocka_unit_test(test_in_task_chain), cmocka_unit_test(test_prepared_paths),
        cmocka_unit_test(test_real_kernels),  cmocka_unit_test(test_composite),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

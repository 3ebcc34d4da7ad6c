/* test_attn.c - prompt attention over blocks of query tokens (and the
 * swiglu kernel that shares its vector exp): every ISA's
 * attn_gemm (kernels.h) against the scalar reference at odd sizes, tile
 * tails, strided and transposed a, with and without accumulation; and
 * llama_attend_block (model/llama.h) against llama_attend token by token -
 * the one-query path decode uses - for each KV cache type, block lengths
 * across a key tile's edges, and the causal edge inside the last tile. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"
#include "compute/kernels.h"
#include "compute/types.h"
#include "model/llama.h"
#include "testutil.h"

/* attn_gemm of each ISA vs the scalar table: m and n around the 4-row and
 * 16/32/64-column tiles, k from 1, a read row-major and transposed. */
static void test_attn_gemm(void **state) {
    (void)state;
    enum { MAXD = 140 };
    static const int64_t ms[] = {1, 2, 3, 4, 5, 7, 9, 128, 131};
    static const int64_t ns[] = {1, 7, 16, 17, 31, 33, 64, 65, 100};
    static const int64_t ks[] = {1, 5, 64, 65};
    const struct kiln_kernels *ref = kiln_kernels_get(KILN_ISA_SCALAR);
    float *a = malloc(MAXD * MAXD * sizeof *a), *b = malloc(MAXD * MAXD * sizeof *b);
    float *c0 = malloc(MAXD * MAXD * sizeof *c0), *c_ref = malloc(MAXD * MAXD * sizeof *c_ref);
    float *c = malloc(MAXD * MAXD * sizeof *c);
    uint64_t rs = 11;
    for (int i = 0; i < MAXD * MAXD; i++) {
        a[i] = test_rand_normal(&rs);
        b[i] = test_rand_normal(&rs);
        c0[i] = test_rand_normal(&rs);
    }
    assert_non_null(ref->attn_gemm);
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        assert_non_null(k->attn_gemm);
        double worst = 0;
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
                for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
                    for (int mode = 0; mode < 4; mode++) {
                        int64_t m = ms[mi], n = ns[ni], kk = ks[ki];
                        int acc = mode & 1, trans = mode >> 1;
                        /* a is m x kk: row-major (stride MAXD) or transposed */
                        size_t a_rs = trans ? 1 : MAXD, a_cs = trans ? MAXD : 1;
                        size_t ldc = (size_t)n + 3; /* columns past n must stay untouched */
                        memcpy(c_ref, c0, MAXD * MAXD * sizeof *c0);
                        memcpy(c, c0, MAXD * MAXD * sizeof *c0);
                        ref->attn_gemm(m, n, kk, a, a_rs, a_cs, b, MAXD, c_ref, ldc, acc);
                        k->attn_gemm(m, n, kk, a, a_rs, a_cs, b, MAXD, c, ldc, acc);
                        for (int64_t i = 0; i < m; i++)
                            for (int64_t j = n; j < (int64_t)ldc; j++)
                                assert_true(c[i * (int64_t)ldc + j] == c0[i * (int64_t)ldc + j]);
                        /* relative to the size of the terms summed */
                        double d =
                            test_rel_diff(c, c_ref, (size_t)(m * (int64_t)ldc)) / sqrt((double)kk);
                        worst = fmax(worst, d);
                    }
        print_message("  attn_gemm %s vs scalar: max difference %.3g (per sqrt(k))\n",
                      kiln_isa_name((enum kiln_isa)isa), worst);
        assert_true(worst <= 1e-6);
    }
    free(a), free(b), free(c0), free(c_ref), free(c);
}

/* llama_attend_block vs llama_attend for each token of the block: the same
 * queries and cache rows, token t of the block seeing n_keys + t keys. */
static void check_block(const struct kiln_kernels *k, kiln_type t, int32_t n_tok, int32_t n_q,
                        int32_t n_keys, const char *Kc, const char *Vc, const float *q,
                        double *worst) {
    enum { HD = 64 };
    int64_t stride = (int64_t)n_q * HD + 16; /* tokens need not be adjacent */
    float *out = malloc((size_t)(n_tok * stride) * sizeof *out);
    float *one = malloc((size_t)n_q * HD * sizeof *one);
    void *s1 = kiln_aligned_alloc(64, llama_attend_scratch(HD, n_q));
    void *sb = kiln_aligned_alloc(64, llama_attend_block_scratch(HD, n_tok, n_q));
    for (int64_t i = 0; i < n_tok * stride; i++) out[i] = -7.0f; /* gaps stay as they are */
    llama_attend_block(k, t, t, HD, n_tok, n_q, q, stride, Kc, Vc, n_keys, out, sb);
    for (int32_t tok = 0; tok < n_tok; tok++) {
        llama_attend(k, t, t, HD, n_q, q + tok * stride, Kc, Vc, n_keys + tok, one, s1);
        double d = test_rel_diff(out + tok * stride, one, (size_t)n_q * HD);
        if (d > 1e-5)
            print_message("    %s %s: %d tokens x %d heads from %d keys, token %d: %.3g\n",
                          kiln_isa_name(k->isa), kiln_type_name(t), n_tok, n_q, n_keys, tok, d);
        *worst = fmax(*worst, d);
        for (int64_t g = (int64_t)n_q * HD; g < stride; g++)
            assert_true(out[tok * stride + g] == -7.0f);
    }
    /* in place (out = q, as the forward pass calls it): the same results */
    float *inplace = malloc((size_t)(n_tok * stride) * sizeof *inplace);
    memcpy(inplace, q, (size_t)(n_tok * stride) * sizeof *inplace);
    llama_attend_block(k, t, t, HD, n_tok, n_q, inplace, stride, Kc, Vc, n_keys, inplace, sb);
    for (int32_t tok = 0; tok < n_tok; tok++)
        assert_memory_equal(inplace + tok * stride, out + tok * stride,
                            (size_t)n_q * HD * sizeof *out);
    free(inplace);
    kiln_aligned_free(s1);
    kiln_aligned_free(sb);
    free(out), free(one);
}

static void test_block_vs_single(void **state) {
    (void)state;
    enum { HD = 64, NMAX = 400, QMAX = 20 * 8 * HD + 20 * 16 };
    static const kiln_type types[] = {KILN_TYPE_F32, KILN_TYPE_F16, KILN_TYPE_Q8_0};
    static const int32_t toks[] = {1, 2, 5, 16, 17};
    static const int32_t qs[] = {1, 3, 8};
    static const int32_t keys[] = {1, 3, 48, 63, 64, 65, 130, 300};
    float *K = malloc((size_t)NMAX * HD * sizeof *K), *V = malloc((size_t)NMAX * HD * sizeof *V);
    char *Kc = malloc((size_t)NMAX * HD * 4), *Vc = malloc((size_t)NMAX * HD * 4);
    float *q = malloc(QMAX * sizeof *q);
    uint64_t rs = 5;
    for (int i = 0; i < NMAX * HD; i++) {
        K[i] = test_rand_normal(&rs);
        V[i] = test_rand_normal(&rs);
    }
    /* some heads sharp (large scores: the running maximum moves) */
    for (int i = 0; i < QMAX; i++) q[i] = (i % 3 ? 0.4f : 2.5f) * test_rand_normal(&rs);
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        for (size_t ti = 0; ti < 3; ti++) {
            kiln_type t = types[ti];
            size_t row = kiln_row_size(t, HD);
            for (int r = 0; r < NMAX; r++) {
                k->from_float[t](K + r * HD, Kc + r * row, HD);
                k->from_float[t](V + r * HD, Vc + r * row, HD);
            }
            double worst = 0;
            for (size_t a = 0; a < sizeof toks / sizeof toks[0]; a++)
                for (size_t b = 0; b < sizeof qs / sizeof qs[0]; b++)
                    for (size_t c = 0; c < sizeof keys / sizeof keys[0]; c++)
                        if (keys[c] + toks[a] <= NMAX)
                            check_block(k, t, toks[a], qs[b], keys[c], Kc, Vc, q, &worst);
            print_message("  block vs single-token attention, %s %s: max relative difference "
                          "%.3g\n",
                          kiln_isa_name(k->isa), kiln_type_name(t), worst);
            assert_true(worst <= 1e-5);
        }
    }
    free(K), free(V), free(Kc), free(Vc), free(q);
}

/* swiglu of each ISA vs the scalar reference (expf), over odd lengths and
 * gate values from -100 to 100 (exp over- and underflow on either side). */
static void test_swiglu(void **state) {
    (void)state;
    enum { N = 517 };
    const struct kiln_kernels *ref = kiln_kernels_get(KILN_ISA_SCALAR);
    float g0[N], u[N], want[N], got[N];
    uint64_t rs = 9;
    for (int i = 0; i < N; i++) {
        g0[i] = i < 40 ? (float)(i - 20) * 5.0f : 3.0f * test_rand_normal(&rs);
        u[i] = test_rand_normal(&rs);
    }
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)isa);
        if (!k) continue;
        assert_non_null(k->swiglu);
        double worst = 0;
        for (int64_t n = 1; n <= N; n += 37) {
            memcpy(want, g0, sizeof want);
            memcpy(got, g0, sizeof got);
            ref->swiglu(want, u, n);
            k->swiglu(got, u, n);
            for (int64_t i = 0; i < n; i++)
                worst = fmax(worst, fabs((double)got[i] - want[i]) /
                                        fmax(1e-30, fabs((double)g0[i] * u[i])));
            for (int64_t i = n; i < N; i++) assert_true(got[i] == g0[i]);
        }
        print_message("  swiglu %s vs scalar: max difference %.3g (relative to |g u|)\n",
                      kiln_isa_name((enum kiln_isa)isa), worst);
        assert_true(worst <= 1e-6);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_attn_gemm),
        cmocka_unit_test(test_block_vs_single),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* kern_attn.c - scalar reference kernels for attention over the KV cache:
 * axpy, o[0..n) += w * x[0..n), with x a row of an F32, F16 or Q8_0 cache.
 * Attention accumulates V rows this way without converting them first. The
 * AVX2 and AVX-512 variants (kern_attn_avx2.c, kern_attn_avx512.c) compute
 * the same sums with fused multiply-adds (within one rounding per element). */
#include "base/fp16.h"
#include "compute/blocks.h"
#include "compute/kernels.h"

static void f32_axpy(int64_t n, float *o, const void *x, float w) {
    const float *v = x;
    for (int64_t i = 0; i < n; i++) o[i] += w * v[i];
}

static void f16_axpy(int64_t n, float *o, const void *x, float w) {
    const kiln_f16 *v = x;
    for (int64_t i = 0; i < n; i++) o[i] += w * kiln_f16_to_f32(v[i]);
}

static void q8_0_axpy(int64_t n, float *o, const void *x, float w) {
    const block_q8_0 *b = x;
    for (int64_t j = 0; j < n / QK8_0; j++) {
        float d = kiln_f16_to_f32(b[j].d);
        for (int i = 0; i < QK8_0; i++) o[j * QK8_0 + i] += w * (d * (float)b[j].qs[i]);
    }
}

void kern_attn_register_scalar(struct kiln_kernels *k) {
    k->axpy[KILN_TYPE_F32] = f32_axpy;
    k->axpy[KILN_TYPE_F16] = f16_axpy;
    k->axpy[KILN_TYPE_Q8_0] = q8_0_axpy;
}

/* kern_float.c - scalar reference kernels for the plain float types F32, F16
 * and BF16: conversion to and from F32 and the same-type dot product (the
 * activation is converted to the weight's own type, kiln_vec_dot_type()).
 * Conversions round to nearest even (fp16.h), matching F16C and AVX512-BF16
 * hardware except that BF16 hardware flushes subnormal inputs to zero. The
 * dot products accumulate in double so the reference is order-independent. */
#include "base/fp16.h"
#include "compute/kernels.h"

#include <string.h>

static void f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f32_from_float(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static float f32_vec_dot(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return (float)s;
}

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const kiln_f16 *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = kiln_f16_to_f32(h[i]);
}

static void f16_from_float(const float *src, void *dst, int64_t n) {
    kiln_f16 *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = kiln_f32_to_f16(src[i]);
}

static float f16_vec_dot(int64_t n, const void *w, const void *x) {
    const kiln_f16 *a = w, *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)kiln_f16_to_f32(a[i]) * kiln_f16_to_f32(b[i]);
    return (float)s;
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const kiln_bf16 *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = kiln_bf16_to_f32(h[i]);
}

static void bf16_from_float(const float *src, void *dst, int64_t n) {
    kiln_bf16 *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = kiln_f32_to_bf16(src[i]);
}

static float bf16_vec_dot(int64_t n, const void *w, const void *x) {
    const kiln_bf16 *a = w, *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)kiln_bf16_to_f32(a[i]) * kiln_bf16_to_f32(b[i]);
    return (float)s;
}

void kern_float_register_scalar(struct kiln_kernels *k) {
    k->to_float[KILN_TYPE_F32] = f32_to_float;
    k->from_float[KILN_TYPE_F32] = f32_from_float;
    k->vec_dot[KILN_TYPE_F32] = f32_vec_dot;
    k->to_float[KILN_TYPE_F16] = f16_to_float;
    k->from_float[KILN_TYPE_F16] = f16_from_float;
    k->vec_dot[KILN_TYPE_F16] = f16_vec_dot;
    k->to_float[KILN_TYPE_BF16] = bf16_to_float;
    k->from_float[KILN_TYPE_BF16] = bf16_from_float;
    k->vec_dot[KILN_TYPE_BF16] = bf16_vec_dot;
}

/* randw.c - random weight matrices for measurements (see randw.h). The
 * quantized payload is random bits; the bytes of each block that hold its
 * scales come from one of TEMPLATE_BLOCKS blocks quantized from random
 * floats, so a block decodes to values like a real model's. */
#include "compute/randw.h"
#include "compute/kernels.h"
#include "compute/types.h"

#include <stdlib.h>
#include <string.h>

/* Distinct quantized blocks whose scales the matrices reuse: quantizing
 * is slow for some types (K-quant scalar quantizers search each block's
 * scales; ~1 us per element), and a few dozen scale values are as
 * realistic as millions for a kernel, whose work does not depend on them. */
#define TEMPLATE_BLOCKS 32

/* Bytes of each block that hold f16/f32 scales; off -1: layout unknown here,
 * so whole quantized blocks are copied instead. */
struct scale_bytes {
    int off, len;
};

static struct scale_bytes scale_bytes_of(kiln_type t) {
    switch (t) {
    case KILN_TYPE_Q4_0:
    case KILN_TYPE_Q5_0:
    case KILN_TYPE_Q8_0:
    case KILN_TYPE_IQ4_NL:
    case KILN_TYPE_IQ4_XS:
        return (struct scale_bytes){0, 2};
    case KILN_TYPE_Q4_1:
    case KILN_TYPE_Q5_1:
    case KILN_TYPE_Q4_K:
    case KILN_TYPE_Q5_K:
        return (struct scale_bytes){0, 4};
    case KILN_TYPE_Q2_K:
        return (struct scale_bytes){80, 4};
    case KILN_TYPE_Q3_K:
        return (struct scale_bytes){108, 2};
    case KILN_TYPE_Q6_K:
        return (struct scale_bytes){208, 2};
    default:
        return (struct scale_bytes){-1, 0};
    }
}

static uint64_t xorshift(uint64_t *z) {
    *z ^= *z << 13, *z ^= *z >> 7, *z ^= *z << 17;
    return *z;
}

int kiln_randw_fill(kiln_type t, void *dst_, int64_t rows, int64_t cols, int64_t count,
                    uint64_t seed) {
    char *dst = dst_;
    const struct kiln_kernels *scalar = kiln_kernels_get(KILN_ISA_SCALAR);
    const struct kiln_type_info *ti = kiln_type_info(t);
    size_t rs = kiln_row_size(t, cols), total = rs * (size_t)rows * (size_t)count;
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + 0x9e3779b97f4a7c15ull;
    if (!z) z = 1;
    if (t == KILN_TYPE_F32 || t == KILN_TYPE_F16 || t == KILN_TYPE_BF16) {
        for (size_t i = 0; i + 8 <= total; i += 8) {
            uint64_t v = xorshift(&z);
            if (t == KILN_TYPE_F32) /* +-[2^-7, 2^-6) */
                v = (v & 0x807FFFFF807FFFFFull) | 0x3C0000003C000000ull;
            else if (t == KILN_TYPE_F16)
                v = (v & 0x83FF83FF83FF83FFull) | 0x2000200020002000ull;
            else
                v = (v & 0x807F807F807F807Full) | 0x3C003C003C003C00ull;
            memcpy(dst + i, &v, 8);
        }
        if (total % 8) memset(dst + total / 8 * 8, 0, total % 8); /* +-0 */
        return 0;
    }
    /* TEMPLATE_BLOCKS blocks quantized from random floats lend their scale
     * bytes to the blocks of every row, in an order that varies by row */
    struct scale_bytes sb = scale_bytes_of(t);
    int64_t tcols = (cols < TEMPLATE_BLOCKS * ti->blck ? cols : TEMPLATE_BLOCKS * ti->blck);
    size_t nt = (size_t)(tcols / ti->blck);
    char *tmpl = malloc(kiln_row_size(t, tcols));
    float *f = malloc(sizeof(float) * (size_t)tcols);
    if (!f || !tmpl) {
        free(f);
        free(tmpl);
        return -1;
    }
    for (int64_t i = 0; i < tcols; i++)
        f[i] = ((float)(xorshift(&z) >> 40) / (float)(1 << 24) - 0.5f) * 0.2f;
    scalar->from_float[t](f, tmpl, tcols);
    free(f);
    size_t i = 0;
    for (; i + 8 <= total; i += 8) {
        uint64_t v = xorshift(&z);
        memcpy(dst + i, &v, 8);
    }
    uint64_t tail = xorshift(&z);
    memcpy(dst + i, &tail, total - i);
    size_t nb = rs / ti->size;
    for (int64_t r = 0; r < rows * count; r++) {
        char *row = dst + (size_t)r * rs;
        for (size_t b = 0; b < nb; b++) {
            const char *src = tmpl + ((size_t)r * 7 + b) % nt * ti->size;
            if (sb.off < 0) /* layout unknown here: the whole quantized block */
                memcpy(row + b * ti->size, src, ti->size);
            else
                memcpy(row + b * ti->size + sb.off, src + sb.off, (size_t)sb.len);
        }
    }
    free(tmpl);
    return 0;
}

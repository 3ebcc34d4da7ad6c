/* fp16.h - scalar conversions between float and IEEE half (F16) and bfloat16
 * (BF16). Exact: f32->f16 rounds to nearest even, handles subnormals, inf and
 * NaN, as hardware F16C does; f32->bf16 rounds to nearest even and keeps NaN. */
#ifndef KILN_BASE_FP16_H
#define KILN_BASE_FP16_H

#include <stdint.h>
#include <string.h>

typedef uint16_t kiln_f16;
typedef uint16_t kiln_bf16;

static inline uint32_t kiln_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float kiln_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float kiln_f16_to_f32(kiln_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return kiln_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return kiln_bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return kiln_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline kiln_f16 kiln_f32_to_f16(float f) {
    uint32_t u = kiln_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf or nan */
        return (kiln_f16)(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 | ((abs >> 13) & 0x3ff) : 0));
    if (abs >= 0x477ff000u) return (kiln_f16)(sign | 0x7c00); /* rounds to >= 65536: inf */
    if (abs < 0x38800000u) {                                  /* below 2^-14: subnormal half */
        if (abs < 0x33000000u) return (kiln_f16)sign;         /* < 2^-25 rounds to 0 */
        uint32_t e = abs >> 23;
        uint32_t m = (abs & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (kiln_f16)(sign | r);
    }
    uint32_t r = (abs - 0x38000000u) >> 13; /* rebias exponent 127 -> 15 */
    uint32_t rem = abs & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (kiln_f16)(sign | r);
}

static inline float kiln_bf16_to_f32(kiln_bf16 h) {
    return kiln_bits_f32((uint32_t)h << 16);
}

static inline kiln_bf16 kiln_f32_to_bf16(float f) {
    uint32_t u = kiln_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (kiln_bf16)((u >> 16) | 64); /* quiet nan */
    return (kiln_bf16)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

#endif

/* blocks.h - the byte layouts of GGML's quantized blocks, shared by every
 * kernel variant. These are file-format facts: a GGUF tensor of type T is an
 * array of these structs, little-endian, with no padding. */
#ifndef KILN_COMPUTE_BLOCKS_H
#define KILN_COMPUTE_BLOCKS_H

#include "base/fp16.h"

#include <stdint.h>

#define QK4_0        32
#define QK4_1        32
#define QK5_0        32
#define QK5_1        32
#define QK8_0        32
#define QK8_1        32
#define QK4_NL       32
#define QK_K         256
#define K_SCALE_SIZE 12

typedef struct {
    kiln_f16 d;
    uint8_t qs[QK4_0 / 2];
} block_q4_0;
typedef struct {
    kiln_f16 d, m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
typedef struct {
    kiln_f16 d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
typedef struct {
    kiln_f16 d, m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
typedef struct {
    kiln_f16 d;
    int8_t qs[QK8_0];
} block_q8_0;
/* s = d * sum(qs), stored as f16 */
typedef struct {
    kiln_f16 d, s;
    int8_t qs[QK8_1];
} block_q8_1;
typedef struct {
    kiln_f16 d;
    uint8_t qs[QK4_NL / 2];
} block_iq4_nl;

typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    kiln_f16 d, dmin;
} block_q2_K;
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    kiln_f16 d;
} block_q3_K;
typedef struct {
    kiln_f16 d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {
    kiln_f16 d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    kiln_f16 d;
} block_q6_K;
/* bsums[j] = sum of qs[16j .. 16j+15] */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
typedef struct {
    kiln_f16 d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1");
_Static_assert(sizeof(block_iq4_nl) == 18, "iq4_nl");
_Static_assert(sizeof(block_q2_K) == 84, "q2_K");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K");
_Static_assert(sizeof(block_iq4_xs) == 136, "iq4_xs");

/* The 16 non-linear levels shared by IQ4_NL and IQ4_XS. */
static const int8_t kiln_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                             1,    13,   25,  38,  53,  69,  89,  113};

#endif

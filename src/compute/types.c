/* types.c - the table of GGML tensor types: names, block geometry, dot-product
 * partners, and which ones Kiln computes with. */
#include "compute/types.h"

#include <strings.h>

static const struct kiln_type_info infos[KILN_TYPE_COUNT] = {
    [KILN_TYPE_F32] = {"f32", 1, 4},
    [KILN_TYPE_F16] = {"f16", 1, 2},
    [KILN_TYPE_Q4_0] = {"q4_0", 32, 18},
    [KILN_TYPE_Q4_1] = {"q4_1", 32, 20},
    [KILN_TYPE_Q5_0] = {"q5_0", 32, 22},
    [KILN_TYPE_Q5_1] = {"q5_1", 32, 24},
    [KILN_TYPE_Q8_0] = {"q8_0", 32, 34},
    [KILN_TYPE_Q8_1] = {"q8_1", 32, 36},
    [KILN_TYPE_Q2_K] = {"q2_K", 256, 84},
    [KILN_TYPE_Q3_K] = {"q3_K", 256, 110},
    [KILN_TYPE_Q4_K] = {"q4_K", 256, 144},
    [KILN_TYPE_Q5_K] = {"q5_K", 256, 176},
    [KILN_TYPE_Q6_K] = {"q6_K", 256, 210},
    [KILN_TYPE_Q8_K] = {"q8_K", 256, 292},
    [KILN_TYPE_IQ2_XXS] = {"iq2_xxs", 256, 66},
    [KILN_TYPE_IQ2_XS] = {"iq2_xs", 256, 74},
    [KILN_TYPE_IQ3_XXS] = {"iq3_xxs", 256, 98},
    [KILN_TYPE_IQ1_S] = {"iq1_s", 256, 50},
    [KILN_TYPE_IQ4_NL] = {"iq4_nl", 32, 18},
    [KILN_TYPE_IQ3_S] = {"iq3_s", 256, 110},
    [KILN_TYPE_IQ2_S] = {"iq2_s", 256, 82},
    [KILN_TYPE_IQ4_XS] = {"iq4_xs", 256, 136},
    [KILN_TYPE_I8] = {"i8", 1, 1},
    [KILN_TYPE_I16] = {"i16", 1, 2},
    [KILN_TYPE_I32] = {"i32", 1, 4},
    [KILN_TYPE_I64] = {"i64", 1, 8},
    [KILN_TYPE_F64] = {"f64", 1, 8},
    [KILN_TYPE_IQ1_M] = {"iq1_m", 256, 56},
    [KILN_TYPE_BF16] = {"bf16", 1, 2},
    [KILN_TYPE_TQ1_0] = {"tq1_0", 256, 54},
    [KILN_TYPE_TQ2_0] = {"tq2_0", 256, 66},
    [KILN_TYPE_MXFP4] = {"mxfp4", 32, 17},
};

const struct kiln_type_info *kiln_type_info(kiln_type t) {
    if ((unsigned)t >= KILN_TYPE_COUNT || !infos[t].name) return NULL;
    return &infos[t];
}

const char *kiln_type_name(kiln_type t) {
    const struct kiln_type_info *ti = kiln_type_info(t);
    return ti ? ti->name : NULL;
}

kiln_status kiln_type_from_name(const char *name, kiln_type *out) {
    for (int t = 0; t < KILN_TYPE_COUNT; t++) {
        if (infos[t].name && !strcasecmp(infos[t].name, name)) {
            *out = (kiln_type)t;
            return KILN_OK;
        }
    }
    return KILN_ERR_NOT_FOUND;
}

size_t kiln_row_size(kiln_type t, int64_t n) {
    const struct kiln_type_info *ti = kiln_type_info(t);
    return ti ? (size_t)(n / ti->blck) * ti->size : 0;
}

kiln_type kiln_vec_dot_type(kiln_type t) {
    switch (t) {
    case KILN_TYPE_F32:
        return KILN_TYPE_F32;
    case KILN_TYPE_F16:
        return KILN_TYPE_F16;
    case KILN_TYPE_BF16:
        return KILN_TYPE_BF16;
    case KILN_TYPE_Q4_0:
    case KILN_TYPE_Q5_0:
    case KILN_TYPE_Q8_0:
    case KILN_TYPE_IQ4_NL:
        return KILN_TYPE_Q8_0;
    case KILN_TYPE_Q4_1:
    case KILN_TYPE_Q5_1:
        return KILN_TYPE_Q8_1;
    case KILN_TYPE_Q2_K:
    case KILN_TYPE_Q3_K:
    case KILN_TYPE_Q4_K:
    case KILN_TYPE_Q5_K:
    case KILN_TYPE_Q6_K:
    case KILN_TYPE_IQ4_XS:
        return KILN_TYPE_Q8_K;
    default:
        return KILN_TYPE_COUNT;
    }
}

int kiln_type_supported(kiln_type t) {
    return kiln_vec_dot_type(t) != KILN_TYPE_COUNT;
}

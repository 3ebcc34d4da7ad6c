/* kernels.c - CPU feature detection, the per-ISA kernel tables (built once,
 * immutable afterwards; see kernels.h for the layering of overrides) and
 * composites of them (kiln_kernels_compose; the choice is tune.c's). */
#include "compute/kernels.h"
#include "base/log.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct kiln_kernels tables[KILN_ISA_COUNT];
static int available[KILN_ISA_COUNT];
static char features[160]; /* kiln_cpu_features(), written by detect() */
static pthread_once_t once = PTHREAD_ONCE_INIT;

const char *kiln_isa_name(enum kiln_isa isa) {
    static const char *const names[KILN_ISA_COUNT] = {"scalar", "avx2", "avx512"};
    return (unsigned)isa < KILN_ISA_COUNT ? names[isa] : "unknown";
}

enum kiln_isa kiln_isa_from_name(const char *name) {
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (!strcmp(name, kiln_isa_name((enum kiln_isa)i))) return (enum kiln_isa)i;
    return KILN_ISA_COUNT;
}

#if defined(__x86_64__)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* CPUID feature bits, checked together with the OS having enabled the
 * YMM (AVX) and ZMM/opmask (AVX-512) register state. */
static void detect(void) {
    available[KILN_ISA_SCALAR] = 1;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int fma = (c >> 12) & 1, f16c = (c >> 29) & 1, osxsave = (c >> 27) & 1;
    if (!osxsave) return;
    uint64_t xcr0 = xgetbv0();
    int ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    int avx2 = (b >> 5) & 1, f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1,
        vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
    unsigned a1 = 0, b1, c1, d1;
    __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
    int bf16 = (a1 >> 5) & 1;
    int vbmi = (c >> 1) & 1;
    const struct {
        int on;
        const char *name;
    } fl[] = {{ymm && avx2, "avx2"},
              {fma, "fma"},
              {f16c, "f16c"},
              {zmm && f, "avx512f"},
              {zmm && bw, "avx512bw"},
              {zmm && vl, "avx512vl"},
              {zmm && dq, "avx512dq"},
              {zmm && vnni, "avx512vnni"},
              {zmm && bf16, "avx512bf16"},
              {zmm && vbmi, "avx512vbmi"}};
    size_t o = 0;
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        if (fl[i].on && o < sizeof features)
            o += (size_t)snprintf(features + o, sizeof features - o, "%s%s", o ? " " : "",
                                  fl[i].name);
    available[KILN_ISA_AVX2] = ymm && avx2 && fma && f16c;
    /* The AVX-512 variant also uses VNNI and BF16 instructions (Zen 4+,
     * Sapphire Rapids+); older AVX-512 CPUs run the AVX2 variant. */
    available[KILN_ISA_AVX512] =
        available[KILN_ISA_AVX2] && zmm && f && dq && bw && vl && vnni && bf16;
}
#else
static void detect(void) {
    available[KILN_ISA_SCALAR] = 1;
}
#endif

static void build_tables(void) {
    detect();
    struct kiln_kernels *k = &tables[KILN_ISA_SCALAR];
    k->isa = KILN_ISA_SCALAR;
    kern_float_register_scalar(k);
    kern_legacy_register_scalar(k);
    kern_kquant_register_scalar(k);
    kern_attn_register_scalar(k);
#if defined(__x86_64__)
    /* The register functions are compiled for their ISA (the compiler may
     * use its instructions even there), so only a CPU that has it runs them. */
    if (!available[KILN_ISA_AVX2]) return;
    tables[KILN_ISA_AVX2] = tables[KILN_ISA_SCALAR];
    k = &tables[KILN_ISA_AVX2];
    k->isa = KILN_ISA_AVX2;
    kern_float_register_avx2(k);
    kern_legacy_register_avx2(k);
    kern_kquant_register_avx2(k);
    kern_attn_register_avx2(k);
    if (!available[KILN_ISA_AVX512]) return;
    tables[KILN_ISA_AVX512] = tables[KILN_ISA_AVX2];
    k = &tables[KILN_ISA_AVX512];
    k->isa = KILN_ISA_AVX512;
    kern_float_register_avx512(k);
    kern_legacy_register_avx512(k);
    kern_kquant_register_avx512(k);
    kern_attn_register_avx512(k);
#endif
}

size_t kiln_gemm_xp_row_size(kiln_type vdt, int64_t n) {
    if (n <= 0) return 0;
    if (vdt == KILN_TYPE_F16) return (size_t)((n + 15) / 16) * 16 * sizeof(float);
    if (vdt != KILN_TYPE_Q8_0 && vdt != KILN_TYPE_Q8_K) return 0;
    return (size_t)((n + KILN_GEMM_XP_GROUP - 1) / KILN_GEMM_XP_GROUP) * KILN_GEMM_XP_GROUP_BYTES;
}

size_t kiln_gemm_wp_row_size(int64_t n) {
    if (n <= 0) return 0;
    return (size_t)((n + KILN_GEMM_XP_GROUP - 1) / KILN_GEMM_XP_GROUP) * KILN_GEMM_WP_GROUP_BYTES;
}

enum kiln_isa kiln_isa_detect(void) {
    pthread_once(&once, build_tables);
    for (int i = KILN_ISA_COUNT - 1; i > 0; i--)
        if (available[i]) return (enum kiln_isa)i;
    return KILN_ISA_SCALAR;
}

const struct kiln_kernels *kiln_kernels_get(enum kiln_isa isa) {
    pthread_once(&once, build_tables);
    if ((unsigned)isa >= KILN_ISA_COUNT || !available[isa]) return NULL;
    return &tables[isa];
}

static const struct kiln_kernels *best;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

const char *kiln_cpu_features(void) {
    pthread_once(&once, build_tables);
    return features;
}

enum kiln_isa kiln_isa_forced(void) {
    const char *e = getenv("KILN_ISA");
    if (!e || !*e) return KILN_ISA_COUNT;
    enum kiln_isa want = kiln_isa_from_name(e);
    return want != KILN_ISA_COUNT && kiln_kernels_get(want) ? want : KILN_ISA_COUNT;
}

void kiln_kernels_compose(const struct kiln_kernels *base, const enum kiln_isa mv[KILN_TYPE_COUNT],
                          const enum kiln_isa mm[KILN_TYPE_COUNT], struct kiln_kernels *out) {
    *out = *base;
    for (int t = 0; t < KILN_TYPE_COUNT; t++) {
        const struct kiln_kernels *a = kiln_kernels_get(mv[t]), *b = kiln_kernels_get(mm[t]);
        out->mv_from[t] = a && a->isa != base->isa ? a : NULL;
        out->mm_from[t] = b && b->isa != base->isa ? b : NULL;
    }
}

static void choose_best(void) {
    enum kiln_isa isa = kiln_isa_detect();
    const char *e = getenv("KILN_ISA");
    if (e && *e) {
        enum kiln_isa want = kiln_isa_from_name(e);
        if (want == KILN_ISA_COUNT)
            KILN_LOGW("KILN_ISA=%s is not one of scalar, avx2, avx512; using %s", e,
                      kiln_isa_name(isa));
        else if (!kiln_kernels_get(want))
            KILN_LOGW("KILN_ISA=%s: this CPU cannot run it; using %s", e, kiln_isa_name(isa));
        else
            isa = want;
    }
    best = &tables[isa];
}

const struct kiln_kernels *kiln_kernels_best(void) {
    pthread_once(&best_once, choose_best);
    return best;
}

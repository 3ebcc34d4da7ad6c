/* peaks.c - measuring the machine's memory read bandwidth and FP32 FMA and
 * int8 VNNI peaks on a thread pool (see peaks.h). The ISA-specific loops
 * use target attributes so this file builds without -mavx512f and runs the
 * loops only where kiln_isa_detect() allows. Moved here from bench-kernels
 * so every benchmark measures the same way. */
#include "compute/peaks.h"

#include "base/mem.h"
#include "base/status.h"
#include "base/time.h"
#include "compute/kernels.h"

#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define GIB (1024.0 * 1024.0 * 1024.0)
#define MIB (1024.0 * 1024.0)

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t read_avx512(const char *p, size_t n) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 256 <= n; i += 256) {
        a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p + i)));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p + i + 64)));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p + i + 128)));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p + i + 192)));
    }
    a0 = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
    return (uint64_t)_mm512_reduce_add_epi64(a0);
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const char *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t l[4];
    _mm256_storeu_si256((__m256i *)l, a0);
    return l[0] + l[1] + l[2] + l[3];
}

/* 16 independent accumulators: enough to cover the FMA latency on two pipes. */
#define REP16(X)                                                                                   \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

__attribute__((target("avx512f"))) static float fma_avx512(int64_t iters) {
#define DECL(i) __m512 a##i = _mm512_set1_ps(0.001f * (i + 1));
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, b, c);
#define SUM(i)  s = _mm512_add_ps(s, a##i);
    REP16(DECL)
    __m512 b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f), s = _mm512_setzero_ps();
    for (int64_t it = 0; it < iters; it++) {
        REP16(STEP)
    }
    REP16(SUM)
    return _mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
}

__attribute__((target("avx2,fma"))) static float fma_avx2(int64_t iters) {
#define DECL(i) __m256 a##i = _mm256_set1_ps(0.001f * (i + 1));
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, b, c);
#define SUM(i)  s = _mm256_add_ps(s, a##i);
    REP16(DECL)
    __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(0.0001f), s = _mm256_setzero_ps();
    for (int64_t it = 0; it < iters; it++) {
        REP16(STEP)
    }
    REP16(SUM)
    float l[8];
    _mm256_storeu_ps(l, s);
    return l[0] + l[1] + l[2] + l[3] + l[4] + l[5] + l[6] + l[7];
#undef DECL
#undef STEP
#undef SUM
}

__attribute__((target("avx512f,avx512vnni"))) static float vnni_avx512(int64_t iters) {
#define DECL(i) __m512i a##i = _mm512_set1_epi32(i);
#define STEP(i) a##i = _mm512_dpbusd_epi32(a##i, u, v);
#define SUM(i)  s = _mm512_add_epi32(s, a##i);
    REP16(DECL)
    __m512i u = _mm512_set1_epi8(3), v = _mm512_set1_epi8(-2), s = _mm512_setzero_si512();
    for (int64_t it = 0; it < iters; it++) {
        REP16(STEP)
    }
    REP16(SUM)
    /* the lanes wrap (vpdpbusd does not saturate); add them as unsigned so
     * the sum's wrap is defined too */
    uint32_t l[16], sum = 0;
    _mm512_storeu_si512((void *)l, s);
    for (int i = 0; i < 16; i++) sum += l[i];
    return (float)sum;
#undef DECL
#undef STEP
#undef SUM
}
#endif

static uint64_t read_scalar(const char *p, size_t n) {
    const uint64_t *q = (const uint64_t *)p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= n / 8; i += 4)
        s0 += q[i], s1 += q[i + 1], s2 += q[i + 2], s3 += q[i + 3];
    return s0 + s1 + s2 + s3;
}

enum peak_kind { PEAK_READ, PEAK_FMA512, PEAK_FMA256, PEAK_VNNI512 };

struct peak_task {
    enum peak_kind kind;
    const char *buf;
    size_t size;
    int64_t iters;
    _Atomic uint64_t sink;
};

static void peak_fn(void *arg, int ith, int nth) {
    struct peak_task *t = arg;
    uint64_t v = 0;
    switch (t->kind) {
    case PEAK_READ: {
        /* slices of whole 256-byte lines so every byte is read exactly once */
        size_t lines = t->size / 256;
        size_t l0 = lines * (size_t)ith / (size_t)nth, l1 = lines * (size_t)(ith + 1) / (size_t)nth;
        const char *p = t->buf + l0 * 256;
        size_t n = (l1 - l0) * 256;
#if defined(__x86_64__)
        if (kiln_isa_detect() >= KILN_ISA_AVX512)
            v = read_avx512(p, n);
        else if (kiln_isa_detect() >= KILN_ISA_AVX2)
            v = read_avx2(p, n);
        else
#endif
            v = read_scalar(p, n);
        break;
    }
#if defined(__x86_64__)
    case PEAK_FMA512:
        v = (uint64_t)fma_avx512(t->iters);
        break;
    case PEAK_FMA256:
        v = (uint64_t)fma_avx2(t->iters);
        break;
    case PEAK_VNNI512:
        v = (uint64_t)vnni_avx512(t->iters);
        break;
#else
    default:
        break;
#endif
    }
    atomic_fetch_add_explicit(&t->sink, v, memory_order_relaxed);
}

/* Best time of `reps` runs of the task on the whole pool. */
static double best_run_s(kiln_pool *pool, struct peak_task *t, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        int64_t t0 = kiln_now_ns();
        kiln_pool_run(pool, peak_fn, t);
        double s = (double)(kiln_now_ns() - t0) * 1e-9;
        if (s < best) best = s;
    }
    return best;
}

/* Register-only loops: ops per iteration per thread given; the iteration
 * count is grown until one run takes about 0.2 s. */
static double compute_peak(kiln_pool *pool, enum peak_kind kind, double ops_per_iter, int quick) {
    struct peak_task t = {.kind = kind, .iters = 1 << 12};
    for (;;) {
        double s = best_run_s(pool, &t, 1);
        if (s > (quick ? 0.005 : 0.05)) break;
        t.iters *= 4;
    }
    t.iters = (int64_t)((double)t.iters * 2);
    double s = best_run_s(pool, &t, 3);
    return ops_per_iter * (double)t.iters * kiln_pool_size(pool) / s * 1e-9;
}

kiln_status kiln_peaks_measure(kiln_pool *pool, struct kiln_peaks *m, int quick) {
    memset(m, 0, sizeof *m);
    size_t size = (size_t)(quick ? GIB / 16 : GIB);
    char *buf = kiln_aligned_alloc(4096, size);
    if (!buf)
        return kiln_fail(KILN_ERR_NOMEM, "peaks: cannot allocate %.0f MiB for the bandwidth test",
                         (double)size / MIB);
    /* Random content: pages filled with one repeated byte may be merged or
     * compressed by the hypervisor and then read from cache (measured on the
     * reference VM: 73 GB/s for such pages against ~35 GB/s for random). */
    uint64_t z = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i + 8 <= size; i += 8) {
        z ^= z << 13, z ^= z >> 7, z ^= z << 17;
        memcpy(buf + i, &z, 8);
    }
    struct peak_task t = {.kind = PEAK_READ, .buf = buf, .size = size};
    double s = best_run_s(pool, &t, 8);
    m->bw_gbs = (double)size / s * 1e-9;
    kiln_aligned_free(buf);
#if defined(__x86_64__)
    if (kiln_isa_detect() >= KILN_ISA_AVX512) {
        m->fma_gflops = compute_peak(pool, PEAK_FMA512, 16 * 16 * 2, quick);
        m->fma_isa = "avx512";
    } else if (kiln_isa_detect() >= KILN_ISA_AVX2) {
        m->fma_gflops = compute_peak(pool, PEAK_FMA256, 16 * 8 * 2, quick);
        m->fma_isa = "avx2";
    }
    /* kiln's avx512 table requires VNNI, so the detected ISA tells */
    if (kiln_isa_detect() >= KILN_ISA_AVX512)
        m->vnni_gops = compute_peak(pool, PEAK_VNNI512, 16 * 64 * 2, quick);
#endif
    if (!m->fma_isa) m->fma_isa = "none";
    return KILN_OK;
}

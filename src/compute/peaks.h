/* peaks.h - the machine's limits as a thread pool sees them: memory read
 * bandwidth and the FP32 FMA and int8 VNNI compute peaks. Benchmarks print
 * their results beside these (bench-kernels per kernel, bench-model per
 * model through kiln_machine_measure in kiln.h).
 *
 * Bandwidth is a streaming read over a buffer far larger than the caches
 * (1 GiB; 64 MiB when quick), every thread reading its own slice, best of 8;
 * the peaks are register-only loops with 16 independent accumulators per
 * thread, sized to run ~0.1 s (quick: ~10 ms), best of 3. */
#ifndef KILN_COMPUTE_PEAKS_H
#define KILN_COMPUTE_PEAKS_H

#include "compute/threadpool.h"
#include "kiln.h"

struct kiln_peaks {
    double bw_gbs;       /* memory read bandwidth, GB/s (1e9 bytes) */
    double fma_gflops;   /* FP32 FMA peak, GFLOP/s (one FMA = 2 flops) */
    double vnni_gops;    /* int8 dot-product peak, GOPS; 0 when the CPU has no VNNI */
    const char *fma_isa; /* "avx512", "avx2" or "none" (static) */
};

/* Measures *out on every thread of pool (the thread count under test).
 * KILN_ERR_NOMEM (with a message) when the read buffer cannot be allocated.
 * Uses the pool; call it from the thread that owns the pool. */
kiln_status kiln_peaks_measure(kiln_pool *pool, struct kiln_peaks *out, int quick);

#endif

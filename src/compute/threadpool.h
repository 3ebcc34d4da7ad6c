/* threadpool.h - a persistent pool of worker threads for the compute layer.
 *
 * A pool of N threads is N-1 workers created once plus the calling thread,
 * which takes part in every run as thread 0. kiln_pool_run() hands one task
 * to threads 0..nth-1 and returns when all of them have finished it. Inside a
 * task, kiln_pool_barrier() separates phases (convert activations, barrier,
 * multiply, barrier, ...), so a forward pass can be one run with many phases
 * instead of one run per operation.
 *
 * Waiting (workers between runs, threads in a barrier) spins on an atomic
 * for a short time, then sleeps on a futex; the thread that releases the
 * waiters issues a wake-up system call only when someone is asleep. A barrier
 * between busy threads therefore costs well under a microsecond, and idle
 * workers cost no CPU.
 *
 * Thread-safety: one thread at a time may call kiln_pool_run / _run_n on a
 * given pool (runs are not nested and not concurrent; a second caller is a
 * bug caught by KILN_ASSERT). kiln_pool_barrier may only be called from inside
 * a task, by every participating thread, the same number of times.
 * kiln_pool_size and kiln_cpu_physical_cores may be called from any thread.
 */
#ifndef KILN_COMPUTE_THREADPOOL_H
#define KILN_COMPUTE_THREADPOOL_H

#include "kiln.h"

#include <stdint.h>

typedef struct kiln_pool kiln_pool;

/* A task: called once on each participating thread with its index ith in
 * [0, nth). Thread 0 is the thread that called kiln_pool_run. */
typedef void (*kiln_pool_fn)(void *arg, int ith, int nth);

/* Creates a pool of n_threads threads in all (the caller counts as one, so
 * n_threads - 1 workers are started); n_threads <= 0 means
 * kiln_cpu_physical_cores(). Returns NULL and sets *st (when st is not NULL)
 * on failure: KILN_ERR_RANGE for more than KILN_POOL_MAX_THREADS,
 * KILN_ERR_NOMEM or KILN_ERR_INTERNAL when a thread cannot be started.
 * The spin time before sleeping is 50 us by default (0 when the pool has more
 * threads than the CPUs online); KILN_POOL_SPIN_US in the environment
 * overrides it. */
kiln_pool *kiln_pool_create(int n_threads, kiln_status *st);

/* Stops and joins the workers and frees the pool. Must not be called while a
 * run is in progress. NULL is ignored. */
void kiln_pool_destroy(kiln_pool *pool);

/* Threads in the pool, caller included (>= 1). */
int kiln_pool_size(const kiln_pool *pool);

/* Runs fn(arg, ith, nth) on all kiln_pool_size() threads and returns when
 * every call has returned. Memory written by any thread inside fn is visible
 * to the caller afterwards, and memory the caller wrote before the call is
 * visible inside fn. */
void kiln_pool_run(kiln_pool *pool, kiln_pool_fn fn, void *arg);

/* Same, on the first nth threads only (1 <= nth <= kiln_pool_size); the other
 * workers stay asleep or spinning and are not waited for. */
void kiln_pool_run_n(kiln_pool *pool, int nth, kiln_pool_fn fn, void *arg);

/* Inside a task: waits until all nth threads of the current run have
 * reached the barrier; memory written before the barrier by any of them is
 * visible to all after it. A no-op when nth == 1. */
void kiln_pool_barrier(kiln_pool *pool);

/* Physical cores available to this process: distinct (package, core) pairs
 * among the CPUs in the affinity mask, from /sys/devices/system/cpu topology;
 * falls back to the online CPU count. Always >= 1. Thread-safe. */
int kiln_cpu_physical_cores(void);

#define KILN_POOL_MAX_THREADS 1024

#endif

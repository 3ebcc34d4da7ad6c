/* threadpool.c - the persistent worker pool (see threadpool.h for the contract).
 *
 * Synchronisation, all through C11 atomics (so TSan sees every edge):
 * - Runs: `ctl` packs the run generation (low 32 bits) and the run's thread
 *   count (high 32 bits) in one word, so a worker that reads a generation
 *   also reads the matching thread count. The caller writes fn/arg/cur_nth,
 *   then `ctl` (release), then `run_word` (= generation, the futex word).
 *   Workers wait until run_word differs from the last generation they saw,
 *   then read `ctl` (acquire). Only participants are waited for, so fn/arg
 *   cannot change while a participant reads them.
 * - Barrier: a counter (`bar_count`) and a phase word (`bar_phase`) on
 *   separate cache lines. The last thread to arrive resets the counter and
 *   advances the phase (release); the others wait for the phase to change
 *   (acquire). The end of a run is one more barrier, so the caller returns
 *   only after every participant has finished fn.
 * - Sleeping: a waiter spins for spin_ns, then registers in a sleeper count
 *   and futex-waits on the word. A releaser writes the word, then reads the
 *   sleeper count (both sequentially consistent) and wakes only when it is
 *   non-zero; the ordering guarantees that no wake-up is lost.
 * Invariants: run_word == (uint32_t)ctl outside kiln_pool_run's publication;
 * bar_count == 0 whenever no thread is inside a barrier.
 */
#define _GNU_SOURCE
#include "compute/threadpool.h"
#include "base/mem.h"
#include "base/status.h"
#include "base/time.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define DEFAULT_SPIN_NS 50000

struct worker {
    kiln_pool *pool;
    int ith;
    pthread_t thread;
};

struct kiln_pool {
    int n;                  /* threads including the caller */
    int64_t spin_ns;        /* how long a waiter spins before sleeping */
    struct worker *workers; /* n - 1 entries */
    atomic_flag busy;       /* set while a run is in progress */

    /* Written by the caller before publishing a run; read-only during it. */
    _Alignas(KILN_CACHE_LINE) kiln_pool_fn fn;
    void *arg;
    int cur_nth;
    atomic_int stop;
    _Atomic uint64_t ctl; /* generation | nth << 32 */

    _Alignas(KILN_CACHE_LINE) _Atomic uint32_t run_word;
    _Atomic uint32_t run_sleepers;

    _Alignas(KILN_CACHE_LINE) _Atomic uint32_t bar_count;
    _Alignas(KILN_CACHE_LINE) _Atomic uint32_t bar_phase;
    _Atomic uint32_t bar_sleepers;
};

static void futex_wait(_Atomic uint32_t *word, uint32_t val) {
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
    (void)word, (void)val;
    sched_yield();
#endif
}

static void futex_wake_all(_Atomic uint32_t *word) {
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

/* Returns once *word != val (acquire), spinning first, then sleeping. */
static void wait_change(_Atomic uint32_t *word, uint32_t val, _Atomic uint32_t *sleepers,
                        int64_t spin_ns) {
    if (atomic_load_explicit(word, memory_order_acquire) != val) return;
    int64_t deadline = 0;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != val) return;
        if (i < 64 || deadline == 0 || (i & 63) || kiln_now_ns() < deadline) {
            if (i == 64) deadline = kiln_now_ns() + spin_ns;
            cpu_relax();
            continue;
        }
        atomic_fetch_add(sleepers, 1);
        futex_wait(word, val);
        atomic_fetch_sub(sleepers, 1);
        i = 0;
        deadline = 0;
    }
}

/* Stores val into *word and wakes any sleeper on it. */
static void publish(_Atomic uint32_t *word, uint32_t val, _Atomic uint32_t *sleepers) {
    atomic_store(word, val);
    if (atomic_load(sleepers)) futex_wake_all(word);
}

void kiln_pool_barrier(kiln_pool *p) {
    int nth = p->cur_nth;
    if (nth <= 1) return;
    /* Coherence (and the acquire on ctl for a thread joining a run) makes
     * this the phase of the barrier we are entering: it cannot advance
     * before we arrive. */
    uint32_t ph = atomic_load_explicit(&p->bar_phase, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == (uint32_t)nth - 1) {
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        publish(&p->bar_phase, ph + 1, &p->bar_sleepers);
    } else {
        wait_change(&p->bar_phase, ph, &p->bar_sleepers, p->spin_ns);
    }
}

static void *worker_main(void *v) {
    struct worker *w = v;
    kiln_pool *p = w->pool;
    uint32_t seen = 0;
    for (;;) {
        wait_change(&p->run_word, seen, &p->run_sleepers, p->spin_ns);
        uint64_t c = atomic_load_explicit(&p->ctl, memory_order_acquire);
        seen = (uint32_t)c;
        if (atomic_load_explicit(&p->stop, memory_order_relaxed)) break;
        int nth = (int)(c >> 32);
        if (w->ith >= nth) continue;
        p->fn(p->arg, w->ith, nth);
        kiln_pool_barrier(p);
    }
    return NULL;
}

static void start_run(kiln_pool *p, int nth, kiln_pool_fn fn, void *arg) {
    p->fn = fn;
    p->arg = arg;
    p->cur_nth = nth;
    uint32_t gen = (uint32_t)atomic_load_explicit(&p->ctl, memory_order_relaxed) + 1;
    atomic_store_explicit(&p->ctl, (uint64_t)gen | (uint64_t)nth << 32, memory_order_release);
    publish(&p->run_word, gen, &p->run_sleepers);
}

static int64_t spin_from_env(int n) {
    const char *e = getenv("KILN_POOL_SPIN_US");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end == 0 && v >= 0 && v <= 10000000) return (int64_t)v * 1000;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    /* More threads than CPUs: a spinning waiter would steal the time slice
     * of the thread it waits for. */
    if (online > 0 && n > online) return 0;
    return DEFAULT_SPIN_NS;
}

kiln_pool *kiln_pool_create(int n_threads, kiln_status *st) {
    kiln_status s = KILN_OK;
    if (n_threads <= 0) n_threads = kiln_cpu_physical_cores();
    if (n_threads > KILN_POOL_MAX_THREADS) {
        s = kiln_fail(KILN_ERR_RANGE, "thread pool: %d threads requested, at most %d", n_threads,
                      KILN_POOL_MAX_THREADS);
        goto fail_early;
    }
    kiln_pool *p = kiln_aligned_alloc(KILN_CACHE_LINE, sizeof *p);
    if (!p) {
        s = kiln_fail(KILN_ERR_NOMEM, "thread pool: out of memory");
        goto fail_early;
    }
    *p = (kiln_pool){.n = n_threads, .spin_ns = spin_from_env(n_threads)};
    atomic_flag_clear(&p->busy);
    atomic_init(&p->stop, 0);
    atomic_init(&p->ctl, 0);
    atomic_init(&p->run_word, 0);
    atomic_init(&p->run_sleepers, 0);
    atomic_init(&p->bar_count, 0);
    atomic_init(&p->bar_phase, 0);
    atomic_init(&p->bar_sleepers, 0);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        s = kiln_fail(KILN_ERR_NOMEM, "thread pool: out of memory");
        goto fail;
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker *w = &p->workers[i - 1];
        w->pool = p;
        w->ith = i;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc) {
            s = kiln_fail(KILN_ERR_INTERNAL, "thread pool: cannot start thread %d of %d (error %d)",
                          i, n_threads, rc);
            p->n = i; /* destroy joins the ones started */
            goto fail;
        }
    }
    if (st) *st = KILN_OK;
    return p;
fail:
    kiln_pool_destroy(p);
fail_early:
    if (st) *st = s;
    return NULL;
}

void kiln_pool_destroy(kiln_pool *p) {
    if (!p) return;
    if (p->workers) {
        atomic_store_explicit(&p->stop, 1, memory_order_relaxed);
        start_run(p, p->n, NULL, NULL);
        for (int i = 1; i < p->n; i++) pthread_join(p->workers[i - 1].thread, NULL);
        free(p->workers);
    }
    kiln_aligned_free(p);
}

int kiln_pool_size(const kiln_pool *p) {
    return p->n;
}

void kiln_pool_run_n(kiln_pool *p, int nth, kiln_pool_fn fn, void *arg) {
    KILN_ASSERT(nth >= 1 && nth <= p->n);
    KILN_ASSERT(!atomic_flag_test_and_set_explicit(&p->busy, memory_order_acquire));
    if (nth == 1) {
        p->cur_nth = 1; /* barriers inside fn return at once */
        fn(arg, 0, 1);
    } else {
        start_run(p, nth, fn, arg);
        fn(arg, 0, nth);
        kiln_pool_barrier(p);
    }
    atomic_flag_clear_explicit(&p->busy, memory_order_release);
}

void kiln_pool_run(kiln_pool *p, kiln_pool_fn fn, void *arg) {
    kiln_pool_run_n(p, p->n, fn, arg);
}

static int read_int_file(const char *path, int *out) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fscanf(f, "%d", out) == 1;
    fclose(f);
    return ok;
}

int kiln_cpu_physical_cores(void) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int fallback = online > 0 ? (int)online : 1;
#ifdef __linux__
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return fallback;
    if (CPU_COUNT(&set) > 0 && CPU_COUNT(&set) < fallback) fallback = CPU_COUNT(&set);
    int cap = CPU_COUNT(&set), n = 0, ok = 1;
    int *ids = malloc(sizeof(int) * 2 * (size_t)(cap > 0 ? cap : 1)); /* (package, core) pairs */
    if (!ids) return fallback;
    for (int cpu = 0; cpu < CPU_SETSIZE && ok && n < cap; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        char path[128];
        int pid, cid;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id",
                 cpu);
        ok = read_int_file(path, &pid);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        ok = ok && read_int_file(path, &cid);
        int dup = 0;
        for (int j = 0; j < n && !dup; j++) dup = ids[2 * j] == pid && ids[2 * j + 1] == cid;
        if (ok && !dup) {
            ids[2 * n] = pid;
            ids[2 * n + 1] = cid;
            n++;
        }
    }
    free(ids);
    if (!ok) return fallback;
    return n > 0 ? n : fallback;
#else
    return fallback;
#endif
}

/* tune.h - kernel variants chosen by measurement: for each weight type, which
 * per-ISA table runs its one-column products (matvec: decode) and which its
 * wider ones (matmul: prefill, batched decode, embeddings), and why.
 *
 * The ISA rank (the highest ISA the CPU runs) is not always the fastest: on
 * Zen 4, whose AVX-512 runs on 256-bit units, the AVX2 matvec of Q8_0, Q6_K
 * and IQ4_XS read weights faster than the AVX-512 one. So each available
 * ISA's matvec and matmul of a type are timed through the real driver
 * (matmul.c) on the caller's threads, at the model's dominant shape of that
 * type, over random weights (randw.h) large enough that matvec reads them
 * from memory; the highest ISA is kept unless another is faster by more than
 * KILN_TUNE_MARGIN. Tables are composed with kiln_kernels_compose.
 *
 * Choices are remembered per (weight type, thread count) in this process
 * and in a small JSON cache (like FFTW's wisdom), keyed by the CPU model
 * string, the CPU features the tables depend on (kiln_cpu_features), Kiln's
 * version and the thread count. The file is $KILN_TUNE_FILE, else
 * $XDG_CACHE_HOME/kiln/tune.json, else ~/.cache/kiln/tune.json; it is read
 * at first use and rewritten (merged with what another process wrote, to a
 * temporary file renamed over it) after each measurement. A missing home or
 * a file that cannot be written only keeps the choices in memory (one
 * warning); a corrupt file is ignored with a warning and replaced.
 *
 * What decides, in order: KILN_ISA=isa forces that table everywhere (no
 * measurement); KILN_TUNE=off keeps the rank; a choice already made in this
 * process or in the cache; else, when the model holds at least
 * KILN_TUNE_MIN_BYTES of the type's matrices, a measurement now (a fraction
 * of a second per type; one log line says so; a measurement taken while
 * other work held the CPUs is not trusted: the rank, not cached, and a
 * later process measures again); else the rank (a type whose
 * matrices fit in a last-level cache gains too little to pay for its
 * measurement, and the test suite's tiny models never measure).
 *
 * Thread-safety: every function may be called from any thread. Measurements
 * are serialised (a second caller that needs one waits, and takes the
 * first's result for a type both need); reading choices never waits for a
 * measurement. A measurement runs on the caller's pool, so the caller must
 * own it (no other run on it meanwhile). */
#ifndef KILN_COMPUTE_TUNE_H
#define KILN_COMPUTE_TUNE_H

#include "compute/kernels.h"
#include "compute/threadpool.h"
#include "kiln.h"

#include <stddef.h>
#include <stdint.h>

/* Keep the highest ISA unless another is faster by more than this share. */
#define KILN_TUNE_MARGIN 0.03
/* Below this many bytes of a type's matrices in a model, loading does not
 * measure (the rank stands, or the cache's choice when it has one). */
#define KILN_TUNE_MIN_BYTES ((int64_t)32 << 20)
/* A timed pass counts only when the process's CPU time over it is at least
 * this share of its wall time x threads: no thread was descheduled for long
 * (a stalled thread holds the others at the next barrier, and the pass then
 * times the machine's load, not the kernel). */
#define KILN_TUNE_CLEAN_SHARE 0.8
/* Activation columns of the timed matmul. */
#define KILN_TUNE_MM_COLS 64

/* count weight matrices of nr rows of n elements of type, in one model. */
struct kiln_tune_shape {
    kiln_type type;
    int64_t n, nr, count;
};

enum kiln_tune_source {
    KILN_TUNE_SRC_MEASURED, /* measured by this process */
    KILN_TUNE_SRC_CACHE,    /* read from the cache file */
    KILN_TUNE_SRC_FORCED,   /* KILN_ISA */
    KILN_TUNE_SRC_OFF,      /* KILN_TUNE=off: the rank */
    KILN_TUNE_SRC_SMALL,    /* matrices below KILN_TUNE_MIN_BYTES: the rank */
    KILN_TUNE_SRC_PENDING,  /* not measured yet (KILN_TUNE_NO_MEASURE): the rank */
    KILN_TUNE_SRC_BUSY,     /* measured while the CPUs were shared: the rank, not cached */
    KILN_TUNE_SRC_COUNT
};

/* How one weight type's products are chosen at one thread count. */
struct kiln_tune_choice {
    kiln_type type;
    int n_threads;
    enum kiln_isa mv, mm; /* the tables of one-column and of wider products */
    enum kiln_tune_source source;
    /* measured (MEASURED, CACHE): matvec GB/s of weights read and matmul
     * GOPS (2 per multiply-add) per ISA; 0 where not measured */
    double mv_gbs[KILN_ISA_COUNT], mm_gops[KILN_ISA_COUNT];
    int64_t n, nr, nc; /* the shape measured: nr rows of n elements; nc matmul columns */
    double seconds;    /* the measurement's wall time */
    char when[24];     /* its UTC time, "2026-12-07T10:11:12Z"; "" when not measured */
    int64_t bytes;     /* the model's bytes of the type's matrices (SMALL, PENDING) */
    /* BUSY: some ISA had no clean pass (its threads ran under
     * KILN_TUNE_CLEAN_SHARE of the time: other work took the CPUs); cpu_share:
     * the process's CPU time over the passes / (wall time x threads) */
    int busy;
    double cpu_share;
};

/* What kiln_tune_select measures with: kiln_tune_measure, or a test's fake
 * (kiln_tune_set_measure_hook). */
typedef kiln_status (*kiln_tune_measure_fn)(kiln_pool *pool, kiln_type type, int64_t n, int64_t nr,
                                            double budget_s, struct kiln_tune_choice *out);

/* kiln_tune_select flags */
#define KILN_TUNE_MEASURE                                                                          \
    1                          /* measure every type now, whatever the cache, sizes,               \
                                  KILN_ISA and KILN_TUNE say (`kiln tune`) */
#define KILN_TUNE_NO_MEASURE 2 /* never measure (cache, else rank: `kiln info`) */

/* Chooses the kernels for products of the given shapes, run on pool (its
 * size is the thread count; NULL: on the calling thread, n_threads then
 * naming the thread count the choice is for, <= 0 for one) and writes into
 * *out the composite table to run them with (a per-ISA table's copy where
 * nothing is tuned). Writes the choice of each distinct type among shapes
 * (supported types only, in order of first appearance) to choices[0..cap)
 * when choices is not NULL, and returns how many there are. Never fails: a
 * measurement that cannot run (out of memory) leaves the rank, with a
 * warning. Measuring without a pool at n_threads > 1 measures on one thread. */
int kiln_tune_select(kiln_pool *pool, int n_threads, const struct kiln_tune_shape *shapes,
                     int n_shapes, int flags, struct kiln_kernels *out,
                     struct kiln_tune_choice *choices, int cap);

/* Measures every available ISA's matvec and matmul of type at nr rows of n
 * elements on pool (NULL: the calling thread) for about budget_s seconds in
 * all, and fills *out: source MEASURED and the choices by kiln_tune_pick,
 * confirmed head to head when they are not the highest ISA; or, when the
 * CPUs were taken by other work during the passes, source BUSY and the
 * highest ISA. Remembers nothing. KILN_ERR_NOMEM, KILN_ERR_UNSUPPORTED (no
 * kernel for the type, n not a multiple of its block). */
kiln_status kiln_tune_measure(kiln_pool *pool, kiln_type type, int64_t n, int64_t nr,
                              double budget_s, struct kiln_tune_choice *out);

/* The ISA to keep given each ISA's speed (higher is faster; 0 = not
 * measured): the highest measured ISA, unless another is faster by more
 * than margin. KILN_ISA_COUNT when none was measured. */
enum kiln_isa kiln_tune_pick(const double speed[KILN_ISA_COUNT], double margin);

/* Every choice this process has made so far (one per type and thread
 * count), at most cap into out; returns how many there are. */
int kiln_tune_choices(struct kiln_tune_choice *out, int cap);

/* One line saying why c chose what it did, e.g. "matvec avx2 32.6 GB/s vs
 * avx512 20.1; matmul avx512 410 GOPS vs avx2 150 (tuned 2026-12-07, cache
 * /home/u/.cache/kiln/tune.json)" or "forced: KILN_ISA=avx2". */
void kiln_tune_describe(const struct kiln_tune_choice *c, char *buf, size_t cap);

const char *kiln_tune_source_name(enum kiln_tune_source s);

/* The cache file's path ("" when there is none: no KILN_TUNE_FILE, XDG
 * cache or HOME), and why the last write failed ("" when it did not or
 * none was tried). */
void kiln_tune_cache_info(char *path, size_t path_cap, char *write_error, size_t err_cap);

/* Makes kiln_tune_select measure with fn (NULL: kiln_tune_measure again):
 * a fake timing source for tests. Not thread-safe against a selection in
 * progress. */
void kiln_tune_set_measure_hook(kiln_tune_measure_fn fn);

/* Forgets every choice made in this process and the cache's content read,
 * so the next selection reads the file again (tests). */
void kiln_tune_forget(void);

#endif

/* tune.c - the kernel tuner: measures each ISA's matvec and matmul of a
 * weight type through matmul.c, picks per type, and keeps the choices in
 * this process and in the JSON cache file (see tune.h for the rules).
 *
 * State (all under `mu`, which is never held while measuring): `known`,
 * the measured results by (type, threads), read from the cache file at
 * first use (entries of this machine's key: CPU model, features and
 * version) or measured here (busy ones too, which are never written, so
 * this process does not measure them again); `used`, the last choice made
 * per (type, threads), whatever its source, for diagnostics.
 * Neither shrinks except through kiln_tune_forget. The composite tables
 * handed out are the caller's copies, so nothing here is shared with a
 * running product.
 *
 * File format (version 1):
 *   {"kiln_tune": 1,
 *    "machines": [{"cpu": "AMD EPYC 9R14", "features": "avx2 fma ...",
 *                  "version": "0.1.0", "threads": 2,
 *                  "types": {"q8_0": {"when": "2026-12-07T10:11:12Z",
 *                                     "n": 2048, "rows": 5632, "cols": 64,
 *                                     "seconds": 0.3,
 *                                     "matvec": {"choice": "avx2",
 *                                                "gbs": {"avx2": 32.6, ...}},
 *                                     "matmul": {"choice": "avx512",
 *                                                "gops": {...}}}}}]}
 * A machine entry matches on all four keys; a type entry with an unknown
 * choice or ISA name is skipped. Anything else malformed makes the whole
 * file "corrupt": ignored with a warning, replaced at the next write. */
#include "compute/tune.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/status.h"
#include "base/time.h"
#include "compute/matmul.h"
#include "compute/randw.h"
#include "compute/types.h"
#include "obs/host.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Matvec reads at least this many bytes of weights per pass (copies of the
 * matrix), and at least twice the last-level cache, so that it reads them
 * from memory as decode does; at most TUNE_MV_MAX_BYTES. */
#define TUNE_MV_BYTES     ((size_t)64 << 20)
#define TUNE_MV_MAX_BYTES ((size_t)256 << 20)
/* Rows of the timed matmul (enough for every thread to get hundreds). */
#define TUNE_MM_ROWS 1024
/* Seconds of measurement for all the types a load tunes, and the bounds of
 * one type's share; `kiln tune` (KILN_TUNE_MEASURE) gives each type
 * TUNE_EXPLICIT_S. Timing rounds alternate the ISAs so that a change in the
 * machine's load hits them alike. */
#define TUNE_LOAD_S     1.2
#define TUNE_TYPE_MIN_S 0.06
#define TUNE_TYPE_MAX_S 0.3
#define TUNE_EXPLICIT_S 0.4
#define TUNE_ROUNDS     3
/* After the first round an ISA slower than the best by this factor stops
 * being timed (it cannot come within the margin). */
#define TUNE_PRUNE 1.5
/* The same after the first probe, which is rougher (cold, small). */
#define TUNE_PROBE_PRUNE 3.0
#define MAX_CHOICES      256

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t measure_mu = PTHREAD_MUTEX_INITIALIZER; /* one measurement at a time */
static int loaded;                                             /* the cache file was read */
static struct kiln_tune_choice known[MAX_CHOICES], used[MAX_CHOICES];
static int n_known, n_used;
static char cache_path[PATH_MAX]; /* "" when none */
static char write_err[256];
static int warned_write;
static kiln_tune_measure_fn measure_hook = kiln_tune_measure;

const char *kiln_tune_source_name(enum kiln_tune_source s) {
    static const char *const names[KILN_TUNE_SRC_COUNT] = {"measured", "cache",   "forced", "off",
                                                           "small",    "pending", "busy"};
    return (unsigned)s < KILN_TUNE_SRC_COUNT ? names[s] : "?";
}

enum kiln_isa kiln_tune_pick(const double speed[KILN_ISA_COUNT], double margin) {
    enum kiln_isa top = KILN_ISA_COUNT, fast = KILN_ISA_COUNT;
    for (int i = KILN_ISA_COUNT - 1; i >= 0; i--) {
        if (!(speed[i] > 0)) continue;
        if (top == KILN_ISA_COUNT) top = (enum kiln_isa)i;
        if (fast == KILN_ISA_COUNT || speed[i] > speed[fast]) fast = (enum kiln_isa)i;
    }
    if (top == KILN_ISA_COUNT) return top;
    return speed[fast] > speed[top] * (1.0 + margin) ? fast : top;
}

/* ---- measurement ------------------------------------------------------------------------ */

/* Whether tables a and b run the same code for products of t with one
 * column (mm = 0) or several (mm = 1): then one measurement stands for both. */
static int same_path(const struct kiln_kernels *a, const struct kiln_kernels *b, kiln_type t,
                     int mm) {
    kiln_type v = kiln_vec_dot_type(t);
    if (a->vec_dot[t] != b->vec_dot[t] || a->from_float[v] != b->from_float[v]) return 0;
    if (!mm)
        return a->matvec[t] == b->matvec[t] && a->gemm_matvec[t] == b->gemm_matvec[t] &&
               (!a->gemm_matvec[t] || a->gemm[t] == b->gemm[t]);
    return a->gemm[t] == b->gemm[t] && a->gemm_xp[t] == b->gemm_xp[t] &&
           a->gemm_wprep[t] == b->gemm_wprep[t] && a->gemm_wp[t] == b->gemm_wp[t] &&
           a->gemm_xprep[v] == b->gemm_xprep[v] && a->gemm_xp_min_cols[t] == b->gemm_xp_min_cols[t];
}

struct mv_task {
    kiln_matmul_ctx *ctx;
    kiln_pool *pool;
    const struct kiln_matmul_op *ops;
    int64_t count;
};

/* One pass over the matvec set, each product followed by a barrier as in
 * a forward pass. */
static void mv_fn(void *arg, int ith, int nth) {
    struct mv_task *t = arg;
    for (int64_t i = 0; i < t->count; i++) {
        kiln_matmul_task(t->ctx, &t->ops[i], ith, nth);
        if (nth > 1) kiln_pool_barrier(t->pool);
    }
}

struct bench {
    kiln_pool *pool;
    int nth; /* threads a pass runs on */
    kiln_matmul_ctx *ctx[KILN_ISA_COUNT];
    struct kiln_matmul_op *ops; /* count matvec products, then ops[count] is the matmul */
    int64_t count;
    double cpu_s, wall_s; /* over every pass timed: the process's CPU time, wall time */
};

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds of one pass (mm = 0: the matvec set; 1: the matmul) with isa;
 * *clean: its threads ran (or spun) at least KILN_TUNE_CLEAN_SHARE of the time,
 * so no one of them was descheduled for long (a stalled thread holds the
 * others at the next barrier, and the pass times the machine's load, not
 * the kernel). */
static double run_once(struct bench *b, enum kiln_isa isa, int mm, int *clean) {
    double c0 = cpu_now();
    int64_t t0 = kiln_now_ns();
    if (mm) {
        kiln_matmul_run(b->ctx[isa], &b->ops[b->count]);
    } else {
        struct mv_task t = {b->ctx[isa], b->pool, b->ops, b->count};
        if (b->pool)
            kiln_pool_run(b->pool, mv_fn, &t);
        else
            mv_fn(&t, 0, 1);
    }
    double wall = (double)(kiln_now_ns() - t0) * 1e-9, cpu = cpu_now() - c0;
    b->cpu_s += cpu, b->wall_s += wall;
    *clean = cpu >= KILN_TUNE_CLEAN_SHARE * wall * b->nth;
    return wall;
}

/* A pass's seconds with isa estimated from a small part of it (one matrix
 * of the set, its own: index k; TUNE_PROBE_ROWS rows of the matmul), so an
 * ISA many times slower than another costs little to rule out. */
#define TUNE_PROBE_ROWS 64
static double probe(struct bench *b, enum kiln_isa isa, int mm, int k) {
    int64_t t0 = kiln_now_ns();
    double scale;
    if (mm) {
        struct kiln_matmul_op op = b->ops[b->count];
        scale = (double)op.nr / (op.nr < TUNE_PROBE_ROWS ? op.nr : TUNE_PROBE_ROWS);
        op.nr = op.nr < TUNE_PROBE_ROWS ? op.nr : TUNE_PROBE_ROWS;
        kiln_matmul_run(b->ctx[isa], &op);
    } else {
        struct mv_task t = {b->ctx[isa], b->pool, b->ops + k % b->count, 1};
        scale = (double)b->count;
        if (b->pool)
            kiln_pool_run(b->pool, mv_fn, &t);
        else
            mv_fn(&t, 0, 1);
    }
    return (double)(kiln_now_ns() - t0) * 1e-9 * scale;
}

/* The highest ISA in live[], or -1. */
static int top_of(const int live[KILN_ISA_COUNT]) {
    for (int i = KILN_ISA_COUNT - 1; i >= 0; i--)
        if (live[i]) return i;
    return -1;
}

/* Drops from live[] the ISAs but keep whose best[] is more than factor
 * times the fastest live one's; returns how many stay. The highest ISA is
 * kept (the default must be measured fully: a stalled probe must not rule
 * it out). */
static int prune(int live[KILN_ISA_COUNT], const double best[KILN_ISA_COUNT], double factor,
                 int keep) {
    double fastest = 0;
    int n = 0;
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (live[i] && (fastest == 0 || best[i] < fastest)) fastest = best[i];
    for (int i = 0; i < KILN_ISA_COUNT; i++) {
        if (live[i] && i != keep && best[i] > fastest * factor) live[i] = 0;
        n += live[i];
    }
    return n;
}

/* Times the ISAs in live[] (others keep best = 0) for about budget_s (at
 * most twice that, plus the probes): a probe of each rules out the far
 * slower ones (their best is the probe's estimate), then rounds alternate
 * the rest, each timing whole passes for its share of the budget; best[i] =
 * the fastest clean pass (run_once), or the fastest pass when none was
 * clean. Returns 0, or -1 when an ISA
 * still in the running had no clean pass (the timings are not to be
 * trusted). */
static int time_isas(struct bench *b, int mm, const int live_in[KILN_ISA_COUNT], double budget_s,
                     double best[KILN_ISA_COUNT]) {
    int live[KILN_ISA_COUNT], n_live = 0, top = top_of(live_in), clean;
    double any[KILN_ISA_COUNT] = {0};
    for (int i = 0; i < KILN_ISA_COUNT; i++) {
        live[i] = live_in[i];
        best[i] = live[i] ? probe(b, (enum kiln_isa)i, mm, i) : 0;
    }
    n_live = prune(live, best, TUNE_PROBE_PRUNE, top);
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (live[i]) best[i] = any[i] = 0;
    if (!n_live) return 0;
    double slice = budget_s / (TUNE_ROUNDS * n_live);
    /* every live ISA times at least one pass per round, which a slow ISA on
     * a busy machine can stretch: past twice the budget, stop */
    int64_t deadline = kiln_now_ns() + (int64_t)(2 * budget_s * 1e9);
    for (int r = 0; r < TUNE_ROUNDS && kiln_now_ns() < deadline; r++) {
        for (int i = KILN_ISA_COUNT - 1; i >= 0; i--) {
            if (!live[i]) continue;
            int64_t end = kiln_now_ns() + (int64_t)(slice * 1e9);
            do {
                double s = run_once(b, (enum kiln_isa)i, mm, &clean);
                if (any[i] == 0 || s < any[i]) any[i] = s;
                if (clean && (best[i] == 0 || s < best[i])) best[i] = s;
            } while (kiln_now_ns() < end);
        }
        /* the close call on clean passes only; without them, only an ISA
         * far slower even so is ruled out (never the highest) */
        int all_clean = 1;
        for (int i = 0; i < KILN_ISA_COUNT; i++) all_clean &= !live[i] || best[i] > 0;
        n_live = all_clean ? prune(live, best, TUNE_PRUNE, top)
                           : prune(live, any, TUNE_PROBE_PRUNE, top);
        if (n_live <= 1 && r > 0) break;
    }
    int ok = 1;
    for (int i = 0; i < KILN_ISA_COUNT; i++) {
        if (live[i] && best[i] == 0) ok = 0;
        if (best[i] == 0) best[i] = any[i]; /* also one ruled out without a clean pass */
    }
    return ok ? 0 : -1;
}

/* speed[i] = work / best pass of the ISA measured for i (twin[i], or i). */
static void speeds(const double best[KILN_ISA_COUNT], const int twin[KILN_ISA_COUNT], double work,
                   double speed[KILN_ISA_COUNT]) {
    for (int i = 0; i < KILN_ISA_COUNT; i++) {
        int j = twin[i] >= 0 ? twin[i] : i;
        speed[i] = best[j] > 0 ? work / best[j] : 0;
    }
}

/* Measures one op (mm 0: matvec, 1: matmul) of the ISAs in live[] and
 * returns the choice; speed[] gets work / the best pass of each. A winner
 * other than the highest ISA must win again, head to head with it, before
 * it replaces it, so that the default does not lose to noise; speed[] then
 * holds the better reading of the two runs. When the passes were not clean
 * (time_isas), the highest ISA stays and *busy is set. */
static enum kiln_isa measure_op(struct bench *b, int mm, const int live[KILN_ISA_COUNT],
                                const int twin[KILN_ISA_COUNT], double budget_s, double work,
                                double speed[KILN_ISA_COUNT], int *busy) {
    double best[KILN_ISA_COUNT], again[KILN_ISA_COUNT];
    int dirty = time_isas(b, mm, live, budget_s, best);
    speeds(best, twin, work, speed);
    enum kiln_isa pick = kiln_tune_pick(speed, KILN_TUNE_MARGIN);
    int top = KILN_ISA_COUNT - 1;
    while (top >= 0 && !(speed[top] > 0)) top--;
    if (pick == KILN_ISA_COUNT) return pick;
    if (dirty) *busy = 1;
    if (dirty || (int)pick == top) return (enum kiln_isa)top;
    int duel[KILN_ISA_COUNT] = {0}, p = (int)pick;
    duel[twin[p] >= 0 ? twin[p] : p] = 1;
    duel[twin[top] >= 0 ? twin[top] : top] = 1;
    dirty = time_isas(b, mm, duel, budget_s, best);
    speeds(best, twin, work, again);
    enum kiln_isa confirmed = kiln_tune_pick(again, KILN_TUNE_MARGIN);
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (again[i] > speed[i]) speed[i] = again[i];
    if (dirty) *busy = 1;
    return !dirty && confirmed == pick ? pick : (enum kiln_isa)top;
}

static void utc_now(char *buf, size_t cap) {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Bytes of weights one matvec pass reads: TUNE_MV_BYTES, or twice the
 * last-level cache when that is larger, at most TUNE_MV_MAX_BYTES. */
static size_t mv_bytes(void) {
    size_t want = TUNE_MV_BYTES;
#ifdef _SC_LEVEL3_CACHE_SIZE
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0 && (size_t)l3 * 2 > want) want = (size_t)l3 * 2;
#endif
    return want < TUNE_MV_MAX_BYTES ? want : TUNE_MV_MAX_BYTES;
}

kiln_status kiln_tune_measure(kiln_pool *pool, kiln_type type, int64_t n, int64_t nr,
                              double budget_s, struct kiln_tune_choice *out) {
    const struct kiln_type_info *ti = kiln_type_info(type);
    kiln_type vdt = kiln_vec_dot_type(type);
    const struct kiln_kernels *scalar = kiln_kernels_get(KILN_ISA_SCALAR);
    if (!ti || vdt == KILN_TYPE_COUNT || !scalar->vec_dot[type] || n <= 0 || nr <= 0 ||
        n % ti->blck || (type != KILN_TYPE_F32 && !scalar->from_float[type]))
        return kiln_fail(KILN_ERR_UNSUPPORTED, "tune: cannot measure %s at %lld x %lld",
                         ti ? ti->name : "?", (long long)nr, (long long)n);
    kiln_status st = KILN_OK;
    int64_t t0 = kiln_now_ns();
    memset(out, 0, sizeof *out);
    out->type = type;
    out->n_threads = pool ? kiln_pool_size(pool) : 1;
    out->source = KILN_TUNE_SRC_MEASURED;
    size_t rs = kiln_row_size(type, n), want = mv_bytes();
    int64_t rows = nr;
    if ((size_t)rows * rs > want) rows = (int64_t)(want / rs) < 64 ? 64 : (int64_t)(want / rs);
    size_t msize = (size_t)rows * rs;
    int64_t count = (int64_t)((want + msize - 1) / msize);
    int64_t mm_rows = rows < TUNE_MM_ROWS ? rows : TUNE_MM_ROWS, nc = KILN_TUNE_MM_COLS;
    out->n = n, out->nr = rows, out->nc = nc;
    struct bench b = {.pool = pool, .nth = pool ? kiln_pool_size(pool) : 1, .count = count};
    size_t wbytes = msize * (size_t)count;
    char *w = kiln_aligned_alloc((size_t)1 << 21, wbytes);
    float *x = kiln_aligned_alloc(KILN_CACHE_LINE, sizeof(float) * (size_t)(n * nc));
    float *y = kiln_aligned_alloc(KILN_CACHE_LINE, sizeof(float) * (size_t)(rows * nc));
    b.ops = calloc((size_t)count + 1, sizeof *b.ops);
    if (!w || !x || !y || !b.ops) {
        st = kiln_fail(KILN_ERR_NOMEM, "tune: out of memory for %zu bytes of %s weights", wbytes,
                       ti->name);
        goto done;
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(w, wbytes, MADV_HUGEPAGE); /* as kiln_map_load gives model weights */
#endif
    if (kiln_randw_fill(type, w, rows, n, count, (uint64_t)type + 1)) {
        st = kiln_fail(KILN_ERR_NOMEM, "tune: out of memory for %s weights", ti->name);
        goto done;
    }
    uint64_t z = 0x2545F4914F6CDD1Dull;
    for (int64_t i = 0; i < n * nc; i++) {
        z ^= z << 13, z ^= z >> 7, z ^= z << 17;
        x[i] = (float)(z >> 40) / (float)(1 << 23) - 1.0f;
    }
    for (int64_t m = 0; m < count; m++)
        b.ops[m] = (struct kiln_matmul_op){.type = type,
                                           .w = w + (size_t)m * msize,
                                           .w_stride = rs,
                                           .nr = rows,
                                           .n = n,
                                           .x = x,
                                           .nc = 1,
                                           .y = y};
    b.ops[count] = b.ops[0];
    b.ops[count].nr = mm_rows;
    b.ops[count].nc = nc;
    int live[2][KILN_ISA_COUNT] = {{0}};
    int twin[2][KILN_ISA_COUNT]; /* the lower ISA whose measurement stands for this one */
    size_t work = kiln_matmul_work_size(type, n, nc);
    for (int i = 0; i < KILN_ISA_COUNT; i++) {
        const struct kiln_kernels *k = kiln_kernels_get((enum kiln_isa)i);
        twin[0][i] = twin[1][i] = -1;
        if (!k || !(b.ctx[i] = kiln_matmul_ctx_create(pool, k, work, NULL))) continue;
        if (kiln_matmul_check(b.ctx[i], &b.ops[0]) || kiln_matmul_check(b.ctx[i], &b.ops[count]))
            continue;
        for (int mm = 0; mm < 2; mm++) {
            for (int j = 0; j < i && twin[mm][i] < 0; j++)
                if (b.ctx[j] && (live[mm][j] || twin[mm][j] >= 0) &&
                    same_path(k, kiln_kernels_get((enum kiln_isa)j), type, mm))
                    twin[mm][i] = twin[mm][j] >= 0 ? twin[mm][j] : j;
            live[mm][i] = twin[mm][i] < 0;
        }
    }
    out->mv = measure_op(&b, 0, live[0], twin[0], budget_s / 2, (double)wbytes * 1e-9, out->mv_gbs,
                         &out->busy);
    out->mm =
        measure_op(&b, 1, live[1], twin[1], budget_s / 2,
                   2.0 * (double)mm_rows * (double)n * (double)nc * 1e-9, out->mm_gops, &out->busy);
    out->cpu_share = b.wall_s > 0 ? b.cpu_s / (b.wall_s * b.nth) : 0;
    if (out->busy) out->source = KILN_TUNE_SRC_BUSY;
    if (out->mv == KILN_ISA_COUNT || out->mm == KILN_ISA_COUNT)
        st = kiln_fail(KILN_ERR_UNSUPPORTED, "tune: no kernel table runs %s", ti->name);
    utc_now(out->when, sizeof out->when);
    out->seconds = (double)(kiln_now_ns() - t0) * 1e-9;
done:
    for (int i = 0; i < KILN_ISA_COUNT; i++) kiln_matmul_ctx_destroy(b.ctx[i]);
    free(b.ops);
    kiln_aligned_free(w);
    kiln_aligned_free(x);
    kiln_aligned_free(y);
    return st;
}

/* ---- the cache file --------------------------------------------------------------------- */

static void resolve_path(void) {
    const char *f = getenv("KILN_TUNE_FILE"), *xdg = getenv("XDG_CACHE_HOME"),
               *home = getenv("HOME");
    cache_path[0] = 0;
    if (f && *f)
        snprintf(cache_path, sizeof cache_path, "%s", f);
    else if (xdg && *xdg)
        snprintf(cache_path, sizeof cache_path, "%s/kiln/tune.json", xdg);
    else if (home && *home)
        snprintf(cache_path, sizeof cache_path, "%s/.cache/kiln/tune.json", home);
}

struct key {
    char cpu[128];
    const char *features, *version;
};

static struct key machine_key(void) {
    struct key k;
    host_info h;
    host_info_read(&h);
    snprintf(k.cpu, sizeof k.cpu, "%s", h.cpu_model[0] ? h.cpu_model : "unknown");
    k.features = kiln_cpu_features();
    k.version = KILN_VERSION;
    return k;
}

static int key_matches(json_t *m, const struct key *k, int threads) {
    const char *cpu = json_string_value(json_object_get(m, "cpu"));
    const char *fe = json_string_value(json_object_get(m, "features"));
    const char *ve = json_string_value(json_object_get(m, "version"));
    json_t *th = json_object_get(m, "threads");
    return cpu && fe && ve && json_is_integer(th) && !strcmp(cpu, k->cpu) &&
           !strcmp(fe, k->features) && !strcmp(ve, k->version) &&
           (threads <= 0 || json_integer_value(th) == threads);
}

/* Reads the file: its root when it is a valid version-1 cache, NULL when
 * missing (*corrupt 0) or invalid (*corrupt 1, why in msg). */
static json_t *read_file(int *corrupt, char *msg, size_t cap) {
    *corrupt = 0;
    if (!cache_path[0]) return NULL;
    json_error_t err;
    json_t *root = json_load_file(cache_path, 0, &err);
    if (!root) {
        if (access(cache_path, F_OK) != 0) return NULL;
        *corrupt = 1;
        snprintf(msg, cap, "line %d: %s", err.line, err.text);
        return NULL;
    }
    json_t *ms = json_object_get(root, "machines");
    if (json_integer_value(json_object_get(root, "kiln_tune")) != 1 || !json_is_array(ms)) {
        *corrupt = 1;
        snprintf(msg, cap, "not a version-1 tune cache");
        json_decref(root);
        return NULL;
    }
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m) {
        if (!json_is_object(m) || !json_is_object(json_object_get(m, "types"))) {
            *corrupt = 1;
            snprintf(msg, cap, "machine entry %zu is not an object with \"types\"", i);
            json_decref(root);
            return NULL;
        }
    }
    return root;
}

/* One op's object: "choice" and the per-ISA numbers under name. */
static int parse_op(json_t *o, const char *name, enum kiln_isa *choice, double v[KILN_ISA_COUNT]) {
    const char *c = json_string_value(json_object_get(o, "choice"));
    json_t *nums = json_object_get(o, name);
    if (!c || !json_is_object(nums)) return -1;
    *choice = kiln_isa_from_name(c);
    if (*choice == KILN_ISA_COUNT) return -1;
    const char *isa;
    json_t *val;
    json_object_foreach(nums, isa, val) {
        enum kiln_isa i = kiln_isa_from_name(isa);
        if (i == KILN_ISA_COUNT || !json_is_number(val)) return -1;
        v[i] = json_number_value(val);
    }
    return 0;
}

static int parse_type(const char *name, json_t *o, int threads, struct kiln_tune_choice *c) {
    memset(c, 0, sizeof *c);
    if (kiln_type_from_name(name, &c->type) != KILN_OK || !kiln_type_supported(c->type)) return -1;
    c->n_threads = threads;
    c->source = KILN_TUNE_SRC_CACHE;
    c->n = json_integer_value(json_object_get(o, "n"));
    c->nr = json_integer_value(json_object_get(o, "rows"));
    c->nc = json_integer_value(json_object_get(o, "cols"));
    c->seconds = json_number_value(json_object_get(o, "seconds"));
    const char *when = json_string_value(json_object_get(o, "when"));
    snprintf(c->when, sizeof c->when, "%s", when ? when : "");
    if (parse_op(json_object_get(o, "matvec"), "gbs", &c->mv, c->mv_gbs) ||
        parse_op(json_object_get(o, "matmul"), "gops", &c->mm, c->mm_gops))
        return -1;
    /* a choice this CPU cannot run (a hand-edited file) is no choice */
    return kiln_kernels_get(c->mv) && kiln_kernels_get(c->mm) ? 0 : -1;
}

static struct kiln_tune_choice *find(struct kiln_tune_choice *arr, int n, kiln_type t, int th) {
    for (int i = 0; i < n; i++)
        if (arr[i].type == t && arr[i].n_threads == th) return &arr[i];
    return NULL;
}

static void put(struct kiln_tune_choice *arr, int *n, const struct kiln_tune_choice *c) {
    struct kiln_tune_choice *e = find(arr, *n, c->type, c->n_threads);
    if (!e && *n < MAX_CHOICES) e = &arr[(*n)++];
    if (e) *e = *c;
}

/* First use: the path, and this machine's entries of the file. */
static void load_cache(void) {
    if (loaded) return;
    loaded = 1;
    resolve_path();
    char msg[256];
    int corrupt;
    json_t *root = read_file(&corrupt, msg, sizeof msg);
    if (corrupt)
        KILN_LOGW("tune: ignoring the kernel tune cache %s (%s); it is rewritten after the next "
                  "measurement",
                  cache_path, msg);
    if (!root) return;
    struct key k = machine_key();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(root, "machines"), i, m) {
        if (!key_matches(m, &k, 0)) continue;
        int threads = (int)json_integer_value(json_object_get(m, "threads"));
        const char *name;
        json_t *o;
        json_object_foreach(json_object_get(m, "types"), name, o) {
            struct kiln_tune_choice c;
            if (threads > 0 && parse_type(name, o, threads, &c) == 0) put(known, &n_known, &c);
        }
    }
    json_decref(root);
}

static json_t *op_json(enum kiln_isa choice, const double v[KILN_ISA_COUNT], const char *name) {
    json_t *nums = json_object();
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (v[i] > 0) json_object_set_new(nums, kiln_isa_name((enum kiln_isa)i), json_real(v[i]));
    return json_pack("{s:s,s:o}", "choice", kiln_isa_name(choice), name, nums);
}

static json_t *type_json(const struct kiln_tune_choice *c) {
    return json_pack("{s:s,s:I,s:I,s:I,s:f,s:o,s:o}", "when", c->when, "n", (json_int_t)c->n,
                     "rows", (json_int_t)c->nr, "cols", (json_int_t)c->nc, "seconds", c->seconds,
                     "matvec", op_json(c->mv, c->mv_gbs, "gbs"), "matmul",
                     op_json(c->mm, c->mm_gops, "gops"));
}

/* mkdir -p of path's directory. */
static int make_parent(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(dir, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Writes the n measured choices c into the file (merged with its current
 * content), atomically. Failures are remembered in write_err and warned
 * about once. */
static void write_cache(const struct kiln_tune_choice *c, int n) {
    write_err[0] = 0;
    if (!cache_path[0]) {
        snprintf(write_err, sizeof write_err, "no KILN_TUNE_FILE, XDG_CACHE_HOME or HOME");
    } else {
        char msg[256], tmp[PATH_MAX + 32];
        int corrupt;
        json_t *root = read_file(&corrupt, msg, sizeof msg);
        if (!root) root = json_pack("{s:i,s:[]}", "kiln_tune", 1, "machines");
        json_t *ms = json_object_get(root, "machines"), *m = NULL, *e;
        struct key k = machine_key();
        size_t i;
        for (int j = 0; j < n; j++) {
            m = NULL;
            json_array_foreach(ms, i, e) {
                if (key_matches(e, &k, c[j].n_threads)) m = e;
            }
            if (!m) {
                m = json_pack("{s:s,s:s,s:s,s:i,s:{}}", "cpu", k.cpu, "features", k.features,
                              "version", k.version, "threads", c[j].n_threads, "types");
                json_array_append_new(ms, m);
            }
            json_object_set_new(json_object_get(m, "types"), kiln_type_name(c[j].type),
                                type_json(&c[j]));
        }
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", cache_path, (long)getpid());
        if (make_parent(cache_path) != 0)
            snprintf(write_err, sizeof write_err, "cannot create its directory: %s",
                     strerror(errno));
        else if (json_dump_file(root, tmp,
                                JSON_INDENT(1) | JSON_SORT_KEYS | JSON_REAL_PRECISION(5)) != 0)
            snprintf(write_err, sizeof write_err, "cannot write a temporary file beside it: %s",
                     strerror(errno));
        else if (rename(tmp, cache_path) != 0) {
            snprintf(write_err, sizeof write_err, "cannot rename the temporary file over it: %s",
                     strerror(errno));
            unlink(tmp);
        }
        json_decref(root);
    }
    if (write_err[0] && !warned_write) {
        warned_write = 1;
        KILN_LOGW("tune: kernel choices stay in memory, not cached in %s: %s",
                  cache_path[0] ? cache_path : "(no file)", write_err);
    }
}

/* ---- selection -------------------------------------------------------------------------- */

struct type_need {
    kiln_type type;
    int64_t bytes, n, nr, dom; /* all its matrices' bytes; the dominant shape and its bytes */
};

static int collect(const struct kiln_tune_shape *shapes, int n_shapes, struct type_need *need) {
    int nt = 0;
    for (int s = 0; s < n_shapes; s++) {
        const struct kiln_tune_shape *sh = &shapes[s];
        if ((unsigned)sh->type >= KILN_TYPE_COUNT || !kiln_type_supported(sh->type) || sh->n <= 0 ||
            sh->nr <= 0 || sh->count <= 0)
            continue;
        int i = 0;
        while (i < nt && need[i].type != sh->type) i++;
        if (i == nt) need[nt++] = (struct type_need){.type = sh->type};
        int64_t b = (int64_t)kiln_row_size(sh->type, sh->n) * sh->nr * sh->count;
        need[i].bytes += b;
        if (b > need[i].dom) need[i].dom = b, need[i].n = sh->n, need[i].nr = sh->nr;
    }
    return nt;
}

static struct kiln_tune_choice rank_choice(kiln_type t, int th, enum kiln_isa isa,
                                           enum kiln_tune_source src, int64_t bytes) {
    struct kiln_tune_choice c = {.type = t, .n_threads = th, .mv = isa, .mm = isa, .source = src};
    c.bytes = bytes;
    return c;
}

/* Measures the types need[todo[0..n_todo)] on pool (NULL: a pool of th
 * threads made for it) and stores each result in got[todo[j]], known and
 * the file. Measurements are serialised by measure_mu (two at once would
 * disturb each other's timing), without holding mu, so that readers of the
 * choices (a diagnostics snapshot) do not wait for one; a type that
 * another thread measured meanwhile is taken from it. */
static void measure_types(kiln_pool *pool, int th, int flags, enum kiln_isa rank,
                          const struct type_need *need, const int *todo, int n_todo,
                          struct kiln_tune_choice *got) {
    int left[KILN_TYPE_COUNT], n_left = 0;
    char names[256], where[PATH_MAX];
    size_t o = 0;
    names[0] = 0;
    pthread_mutex_lock(&measure_mu);
    pthread_mutex_lock(&mu);
    for (int j = 0; j < n_todo; j++) {
        const struct kiln_tune_choice *k = find(known, n_known, need[todo[j]].type, th);
        if (k && !(flags & KILN_TUNE_MEASURE))
            got[todo[j]] = *k;
        else {
            left[n_left++] = todo[j];
            if (o < sizeof names)
                o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", n_left > 1 ? ", " : "",
                                      kiln_type_name(need[todo[j]].type));
        }
    }
    snprintf(where, sizeof where, "%s", cache_path[0] ? cache_path : "memory only");
    pthread_mutex_unlock(&mu);
    if (!n_left) goto done;
    double per = (flags & KILN_TUNE_MEASURE) ? TUNE_EXPLICIT_S : TUNE_LOAD_S / n_left;
    if (!(flags & KILN_TUNE_MEASURE))
        per = per < TUNE_TYPE_MIN_S   ? TUNE_TYPE_MIN_S
              : per > TUNE_TYPE_MAX_S ? TUNE_TYPE_MAX_S
                                      : per;
    KILN_LOGI("tune: measuring the %s kernels at %d thread%s (about %.1f s; cached in %s)", names,
              th, th == 1 ? "" : "s", (per + 0.15) * n_left, where);
    struct kiln_tune_choice done_c[KILN_TYPE_COUNT];
    int n_done = 0;
    kiln_pool *tmp = !pool && th > 1 ? kiln_pool_create(th, NULL) : NULL;
    for (int j = 0; j < n_left; j++) {
        const struct type_need *nd = &need[left[j]];
        struct kiln_tune_choice c;
        if (!pool && th > 1 && !tmp) {
            KILN_LOGW("tune: no pool of %d threads to measure on; keeping %s for %s", th,
                      kiln_isa_name(rank), kiln_type_name(nd->type));
            continue;
        }
        if (measure_hook(pool ? pool : tmp, nd->type, nd->n, nd->nr, per, &c) != KILN_OK) {
            KILN_LOGW("tune: %s; keeping %s for %s", kiln_last_error(), kiln_isa_name(rank),
                      kiln_type_name(nd->type));
            continue;
        }
        c.n_threads = th;
        c.bytes = nd->bytes;
        got[left[j]] = c;
        done_c[n_done++] = c;
        if (c.busy)
            KILN_LOGW(
                "tune: other work held the CPUs while %s was measured (its threads ran %.0f%% "
                "of the time): keeping %s, not cached; a later run measures again",
                kiln_type_name(nd->type), 100 * c.cpu_share, kiln_isa_name(c.mv));
    }
    kiln_pool_destroy(tmp);
    /* busy results hold for this process only */
    struct kiln_tune_choice keep[KILN_TYPE_COUNT];
    int n_keep = 0;
    pthread_mutex_lock(&mu);
    for (int j = 0; j < n_done; j++) {
        put(known, &n_known, &done_c[j]);
        if (!done_c[j].busy) keep[n_keep++] = done_c[j];
    }
    if (n_keep) write_cache(keep, n_keep);
    pthread_mutex_unlock(&mu);
done:
    pthread_mutex_unlock(&measure_mu);
}

int kiln_tune_select(kiln_pool *pool, int n_threads, const struct kiln_tune_shape *shapes,
                     int n_shapes, int flags, struct kiln_kernels *out,
                     struct kiln_tune_choice *choices, int cap) {
    struct type_need need[KILN_TYPE_COUNT];
    int nt = collect(shapes, n_shapes, need);
    int th = pool ? kiln_pool_size(pool) : n_threads > 0 ? n_threads : 1;
    (void)kiln_kernels_best(); /* reports a bad KILN_ISA once */
    enum kiln_isa forced = kiln_isa_forced(), rank = kiln_isa_detect();
    const char *tune_env = getenv("KILN_TUNE");
    int off = tune_env && !strcmp(tune_env, "off"), explicit = flags & KILN_TUNE_MEASURE;
    struct kiln_tune_choice got[KILN_TYPE_COUNT];
    int todo[KILN_TYPE_COUNT], n_todo = 0;
    pthread_mutex_lock(&mu);
    load_cache();
    for (int i = 0; i < nt; i++) {
        kiln_type t = need[i].type;
        const struct kiln_tune_choice *k = find(known, n_known, t, th);
        int small = need[i].bytes < KILN_TUNE_MIN_BYTES;
        if (forced != KILN_ISA_COUNT && !explicit)
            got[i] = rank_choice(t, th, forced, KILN_TUNE_SRC_FORCED, need[i].bytes);
        else if (off && !explicit)
            got[i] = rank_choice(t, th, rank, KILN_TUNE_SRC_OFF, need[i].bytes);
        else if (k && !explicit)
            got[i] = *k;
        else if (explicit || (!(flags & KILN_TUNE_NO_MEASURE) && !small)) {
            got[i] = rank_choice(t, th, rank, KILN_TUNE_SRC_PENDING, need[i].bytes);
            todo[n_todo++] = i;
        } else
            got[i] = rank_choice(t, th, rank, small ? KILN_TUNE_SRC_SMALL : KILN_TUNE_SRC_PENDING,
                                 need[i].bytes);
    }
    pthread_mutex_unlock(&mu);
    if (n_todo) measure_types(pool, th, flags, rank, need, todo, n_todo, got);
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nt; i++)
        if (got[i].source != KILN_TUNE_SRC_PENDING) put(used, &n_used, &got[i]);
    pthread_mutex_unlock(&mu);
    enum kiln_isa mv[KILN_TYPE_COUNT], mm[KILN_TYPE_COUNT];
    for (int t = 0; t < KILN_TYPE_COUNT; t++) mv[t] = mm[t] = KILN_ISA_COUNT;
    for (int i = 0; i < nt; i++) mv[got[i].type] = got[i].mv, mm[got[i].type] = got[i].mm;
    kiln_kernels_compose(kiln_kernels_get(forced != KILN_ISA_COUNT ? forced : rank), mv, mm, out);
    for (int i = 0; i < nt && choices && i < cap; i++) choices[i] = got[i];
    return nt;
}

int kiln_tune_choices(struct kiln_tune_choice *out, int cap) {
    pthread_mutex_lock(&mu);
    int n = n_used;
    for (int i = 0; i < n && i < cap; i++) out[i] = used[i];
    pthread_mutex_unlock(&mu);
    return n;
}

void kiln_tune_cache_info(char *path, size_t path_cap, char *error, size_t err_cap) {
    pthread_mutex_lock(&mu);
    if (!loaded) resolve_path();
    if (path) snprintf(path, path_cap, "%s", cache_path);
    if (error) snprintf(error, err_cap, "%s", write_err);
    pthread_mutex_unlock(&mu);
}

void kiln_tune_set_measure_hook(kiln_tune_measure_fn fn) {
    measure_hook = fn ? fn : kiln_tune_measure;
}

void kiln_tune_forget(void) {
    pthread_mutex_lock(&mu);
    loaded = n_known = n_used = warned_write = 0;
    write_err[0] = 0;
    pthread_mutex_unlock(&mu);
}

/* ---- description ------------------------------------------------------------------------ */

static const char *num(double v, char *buf, size_t cap) {
    snprintf(buf, cap, v >= 100 ? "%.0f" : "%.1f", v);
    return buf;
}

/* "avx2 32.6 GB/s vs avx512 20.1, scalar 4.2" */
static size_t describe_op(char *buf, size_t cap, enum kiln_isa choice,
                          const double v[KILN_ISA_COUNT], const char *unit) {
    char a[32];
    size_t o = (size_t)snprintf(buf, cap, "%s %s %s", kiln_isa_name(choice),
                                num(v[choice], a, sizeof a), unit);
    int first = 1;
    for (int i = KILN_ISA_COUNT - 1; i >= 0 && o < cap; i--) {
        if (i == (int)choice || !(v[i] > 0)) continue;
        o += (size_t)snprintf(buf + o, cap - o, "%s%s %s", first ? " vs " : ", ",
                              kiln_isa_name((enum kiln_isa)i), num(v[i], a, sizeof a));
        first = 0;
    }
    return o < cap ? o : cap;
}

void kiln_tune_describe(const struct kiln_tune_choice *c, char *buf, size_t cap) {
    char path[PATH_MAX], err[256];
    if (!cap) return;
    buf[0] = 0;
    switch (c->source) {
    case KILN_TUNE_SRC_FORCED:
        snprintf(buf, cap, "forced: KILN_ISA=%s", kiln_isa_name(c->mv));
        return;
    case KILN_TUNE_SRC_OFF:
        snprintf(buf, cap, "rank: KILN_TUNE=off");
        return;
    case KILN_TUNE_SRC_SMALL:
        snprintf(buf, cap,
                 "rank: %.1f MiB of %s matrices, under the %lld MiB worth measuring at load "
                 "(`kiln tune` measures any)",
                 (double)c->bytes / (1 << 20), kiln_type_name(c->type),
                 (long long)(KILN_TUNE_MIN_BYTES >> 20));
        return;
    case KILN_TUNE_SRC_BUSY:
        snprintf(buf, cap,
                 "rank: other work held the CPUs while measuring (threads ran %.0f%% of the "
                 "time); not cached, measured again by a later run",
                 100 * c->cpu_share);
        return;
    case KILN_TUNE_SRC_PENDING:
        snprintf(buf, cap, "rank: not measured yet (the first load measures it, or `kiln tune`)");
        return;
    default:
        break;
    }
    kiln_tune_cache_info(path, sizeof path, err, sizeof err);
    size_t o = (size_t)snprintf(buf, cap, "matvec ");
    o += describe_op(buf + o, cap - o, c->mv, c->mv_gbs, "GB/s");
    if (o < cap) o += (size_t)snprintf(buf + o, cap - o, "; matmul ");
    if (o < cap) o += describe_op(buf + o, cap - o, c->mm, c->mm_gops, "GOPS");
    char day[11];
    snprintf(day, sizeof day, "%.10s", c->when);
    if (o < cap) {
        if (c->source == KILN_TUNE_SRC_CACHE)
            snprintf(buf + o, cap - o, " (tuned %s, cache %s)", day, path);
        else if (path[0] && !err[0])
            snprintf(buf + o, cap - o, " (tuned %s, now; cache %s)", day, path);
        else
            snprintf(buf + o, cap - o, " (tuned %s, now; in memory only)", day);
    }
}

/* tune.c - `kiln tune`: (re)measures which kernel variant runs each weight
 * type's matvec and matmul fastest on this machine at a thread count, writes
 * the choices to the tune cache (compute/tune.h) and prints them with each
 * variant's speed against the machine's measured limits (compute/peaks.c).
 * With -m the types and shapes are the model's; without, every supported
 * type at TinyLlama-1.1B's layer shapes. Owns nothing past the run. */
#include "base/time.h"
#include "cli/commands.h"
#include "compute/kernels.h"
#include "compute/peaks.h"
#include "compute/threadpool.h"
#include "compute/tune.h"
#include "compute/types.h"
#include "kiln.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "obs/host.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHAPES 64

struct tune_opts {
    const char *model;
    int threads;
    int json;
    int types[KILN_TYPE_COUNT]; /* 1: tune this type; all 0: every type present */
    int any_type;
};

static void tune_usage(FILE *f) {
    fprintf(f,
            "usage: kiln tune [-m MODEL] [-t N] [--types LIST] [--json]\n"
            "Measures each kernel variant (ISA) of each weight type's matvec (decode) and\n"
            "matmul (prefill) on this machine, keeps the fastest (the highest ISA unless\n"
            "another is faster by more than %.0f%%) and writes the choices to the tune cache,\n"
            "which model loads read ($KILN_TUNE_FILE, else $XDG_CACHE_HOME/kiln/tune.json,\n"
            "else ~/.cache/kiln/tune.json). Passes during which other work held the CPUs do\n"
            "not count; a type left without clean ones keeps the ISA rank, uncached (\"busy\").\n"
            "KILN_ISA=... and KILN_TUNE=off make loads ignore the cache.\n\n"
            "  -m, --model FILE   the model's matrix types and shapes (default: every type at\n"
            "                     TinyLlama-1.1B's layer shapes)\n"
            "  -t, --threads N    threads (default: physical cores); choices are per count\n"
            "  --types LIST       only these types, e.g. q4_0,q8_0,q4_K\n"
            "  --json             print the results as JSON\n",
            KILN_TUNE_MARGIN * 100);
}

static int add_types(const char *list, struct tune_opts *o) {
    char item[32];
    while (*list) {
        size_t len = strcspn(list, ",");
        kiln_type t;
        if (!len || len >= sizeof item) goto bad;
        memcpy(item, list, len);
        item[len] = 0;
        if (kiln_type_from_name(item, &t) != KILN_OK || !kiln_type_supported(t)) goto bad;
        o->types[t] = 1;
        o->any_type = 1;
        list += len + (list[len] == ',');
        continue;
    bad:
        fprintf(stderr, "kiln tune: unknown or unsupported weight type in '%s'\n", list);
        return -1;
    }
    return 0;
}

/* Returns 0, 1 after --help, or 2 after a usage error. */
static int parse_tune_args(int argc, char **argv, struct tune_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tune_usage(stdout);
            return 1;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v) {
            o->model = argv[++i];
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && v) {
            char *end;
            errno = 0;
            long n = strtol(argv[++i], &end, 10);
            if (!*v || *end || errno || n < 1 || n > KILN_POOL_MAX_THREADS) {
                fprintf(stderr, "kiln tune: -t expects 1..%d, got '%s'\n", KILN_POOL_MAX_THREADS,
                        v);
                return 2;
            }
            o->threads = (int)n;
        } else if (!strcmp(a, "--types") && v) {
            if (add_types(argv[++i], o)) return 2;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else {
            fprintf(stderr, "kiln tune: unknown or incomplete option '%s'\n", a);
            tune_usage(stderr);
            return 2;
        }
    }
    return 0;
}

/* The shapes to tune: the model's (NULL path: TinyLlama-1.1B's layer for
 * every supported type), less the types --types leaves out. -1 after a
 * message when the model cannot be read. */
static int tune_shapes(const struct tune_opts *o, struct kiln_tune_shape *sh) {
    int n = 0;
    if (o->model) {
        kiln_status st;
        gguf_file *f = gguf_open(o->model, &st);
        struct arch_model m;
        if (!f || arch_model_load(f, &m)) {
            fprintf(stderr, "kiln tune: %s\n", kiln_last_error());
            if (f) gguf_close(f);
            return -1;
        }
        n = arch_model_shapes(&m, sh, MAX_SHAPES);
        n = n < MAX_SHAPES ? n : MAX_SHAPES;
        arch_model_free(&m);
        gguf_close(f);
    } else {
        static const int64_t layer[][3] = {
            {2048, 2048, 2}, {2048, 256, 2}, {2048, 5632, 2}, {5632, 2048, 1}}; /* n, rows, count */
        for (int t = 0; t < KILN_TYPE_COUNT; t++)
            for (size_t i = 0; kiln_type_supported((kiln_type)t) && i < 4; i++)
                sh[n++] =
                    (struct kiln_tune_shape){(kiln_type)t, layer[i][0], layer[i][1], layer[i][2]};
    }
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!o->any_type || o->types[sh[i].type]) sh[k++] = sh[i];
    return k;
}

/* The peak a matmul of type t is compared with: VNNI for int8 dot products
 * (the FMA peak without VNNI), else FMA. */
static double mm_peak(kiln_type t, const struct kiln_peaks *pk) {
    kiln_type v = kiln_vec_dot_type(t);
    int int8 = v == KILN_TYPE_Q8_0 || v == KILN_TYPE_Q8_1 || v == KILN_TYPE_Q8_K;
    return int8 && pk->vnni_gops > 0 ? pk->vnni_gops : pk->fma_gflops;
}

static json_t *op_json(enum kiln_isa choice, const double v[KILN_ISA_COUNT], const char *unit,
                       double peak, const char *share) {
    json_t *nums = json_object(), *pct = json_object();
    for (int i = 0; i < KILN_ISA_COUNT; i++) {
        if (!(v[i] > 0)) continue;
        json_object_set_new(nums, kiln_isa_name((enum kiln_isa)i), json_real(v[i]));
        if (peak > 0)
            json_object_set_new(pct, kiln_isa_name((enum kiln_isa)i), json_real(100 * v[i] / peak));
    }
    return json_pack("{s:s,s:o,s:o}", "choice", kiln_isa_name(choice), unit, nums, share, pct);
}

static void print_json(const struct kiln_tune_choice *c, int n, int threads,
                       const struct kiln_peaks *pk, double secs, const char *path,
                       const char *err) {
    json_t *types = json_array();
    host_info h;
    host_info_read(&h);
    for (int i = 0; i < n; i++) {
        char why[512];
        kiln_tune_describe(&c[i], why, sizeof why);
        json_array_append_new(
            types,
            json_pack(
                "{s:s,s:s,s:f,s:I,s:I,s:I,s:f,s:o,s:o,s:s}", "type", kiln_type_name(c[i].type),
                "source", kiln_tune_source_name(c[i].source), "cpu_share", c[i].cpu_share, "n",
                (json_int_t)c[i].n, "rows", (json_int_t)c[i].nr, "cols", (json_int_t)c[i].nc,
                "seconds", c[i].seconds, "matvec",
                op_json(c[i].mv, c[i].mv_gbs, "gbs", pk->bw_gbs, "bandwidth_percent"), "matmul",
                op_json(c[i].mm, c[i].mm_gops, "gops", mm_peak(c[i].type, pk), "peak_percent"),
                "reason", why));
    }
    json_t *j = json_pack(
        "{s:s,s:i,s:s,s:s,s:s,s:{s:f,s:f,s:f},s:f,s:s,s:o,s:o}", "version", KILN_VERSION, "threads",
        threads, "cpu", h.cpu_model[0] ? h.cpu_model : "unknown", "cpu_features",
        kiln_cpu_features(), "rank", kiln_isa_name(kiln_isa_detect()), "machine", "read_gbs",
        pk->bw_gbs, "fma_gflops", pk->fma_gflops, "int8_gops", pk->vnni_gops, "seconds", secs,
        "cache", path, "cache_error", err[0] ? json_string(err) : json_null(), "types", types);
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    if (s) printf("%s\n", s);
    free(s);
    json_decref(j);
}

static void print_cell(double v, const char *unit, double peak) {
    char b[48];
    if (!(v > 0))
        snprintf(b, sizeof b, "-");
    else if (peak > 0)
        snprintf(b, sizeof b, "%7.1f %s %3.0f%%", v, unit, 100 * v / peak);
    else
        snprintf(b, sizeof b, "%7.1f %s", v, unit);
    printf(" %-20s", b);
}

static void print_table(const struct kiln_tune_choice *c, int n, int threads,
                        const struct kiln_peaks *pk, double secs, const char *path,
                        const char *err) {
    printf("kiln tune: %d thread%s, CPU features \"%s\", memory read %.1f GB/s, FMA %.0f "
           "GFLOP/s%s, %.1f s\n",
           threads, threads == 1 ? "" : "s", kiln_cpu_features(), pk->bw_gbs, pk->fma_gflops,
           pk->vnni_gops > 0 ? "" : ", no VNNI", secs);
    printf("%-8s %-7s", "type", "op");
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (kiln_kernels_get((enum kiln_isa)i)) printf(" %-20s", kiln_isa_name((enum kiln_isa)i));
    printf(" chosen\n");
    for (int r = 0; r < n; r++)
        for (int mm = 0; mm < 2; mm++) {
            printf("%-8s %-7s", kiln_type_name(c[r].type), mm ? "matmul" : "matvec");
            for (int i = 0; i < KILN_ISA_COUNT; i++)
                if (kiln_kernels_get((enum kiln_isa)i))
                    print_cell(mm ? c[r].mm_gops[i] : c[r].mv_gbs[i], mm ? "GOPS" : "GB/s",
                               mm ? mm_peak(c[r].type, pk) : pk->bw_gbs);
            printf(" %s%s\n", kiln_isa_name(mm ? c[r].mm : c[r].mv),
                   c[r].busy ? " (busy: kept, not cached)" : "");
        }
    printf("matvec: GB/s of weights read, %% of the memory read bandwidth; matmul: %d columns, "
           "GOPS, %% of the FMA (or VNNI) peak\n",
           KILN_TUNE_MM_COLS);
    int busy = 0;
    for (int r = 0; r < n; r++) busy += c[r].busy;
    if (busy)
        printf("busy: other work held the CPUs during the passes of the types marked so (kiln "
               "tune's threads ran under %.0f%% of the time); their ISA rank is kept and not "
               "cached: run `kiln tune` again when the machine is quieter\n",
               100 * KILN_TUNE_CLEAN_SHARE);
    if (busy == n)
        printf("nothing cached\n");
    else if (err[0])
        printf("not cached (%s): the choices held for this run only\n", err);
    else
        printf("cached in %s\n", path);
}

int cmd_tune(int argc, char **argv) {
    struct tune_opts o = {0};
    int rc = parse_tune_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    struct kiln_tune_shape sh[MAX_SHAPES];
    int n = tune_shapes(&o, sh);
    if (n < 0) return 1;
    if (n == 0) {
        fprintf(stderr, "kiln tune: no matrix of the requested types to tune\n");
        return 1;
    }
    kiln_status st;
    kiln_pool *pool = kiln_pool_create(o.threads, &st);
    if (!pool) {
        fprintf(stderr, "kiln tune: %s\n", kiln_last_error());
        return 1;
    }
    const char *isa = getenv("KILN_ISA"), *tune = getenv("KILN_TUNE");
    if (isa && *isa)
        fprintf(stderr, "kiln tune: note: KILN_ISA=%s is set: loads use it, not these choices\n",
                isa);
    else if (tune && !strcmp(tune, "off"))
        fprintf(stderr, "kiln tune: note: KILN_TUNE=off is set: loads keep the ISA rank\n");
    struct kiln_peaks pk;
    if (kiln_peaks_measure(pool, &pk, 1) != KILN_OK) memset(&pk, 0, sizeof pk);
    struct kiln_tune_choice c[KILN_TYPE_COUNT];
    struct kiln_kernels k;
    double t0 = kiln_now_s();
    int nt = kiln_tune_select(pool, 0, sh, n, KILN_TUNE_MEASURE, &k, c, KILN_TYPE_COUNT);
    double secs = kiln_now_s() - t0;
    char path[PATH_MAX], err[256];
    kiln_tune_cache_info(path, sizeof path, err, sizeof err);
    int threads = kiln_pool_size(pool);
    kiln_pool_destroy(pool);
    nt = nt < KILN_TYPE_COUNT ? nt : KILN_TYPE_COUNT;
    int measured = 0;
    for (int i = 0; i < nt; i++)
        measured += c[i].source == KILN_TUNE_SRC_MEASURED || c[i].source == KILN_TUNE_SRC_BUSY;
    if (o.json)
        print_json(c, nt, threads, &pk, secs, path, err);
    else
        print_table(c, nt, threads, &pk, secs, path, err);
    return measured == nt ? 0 : 1;
}

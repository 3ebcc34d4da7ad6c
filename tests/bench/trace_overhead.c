/* trace_overhead.c - what recording a trace costs decode (docs/perf.md,
 * "Diagnostics and tracing overhead"), measured finely enough to see 1%
 * on a noisy shared machine: one process decodes blocks of TOKENS tokens
 * one at a time (kiln bench-model's tg: a "forward" span per decode call),
 * alternating no trace, detail=steps and detail=ops block by block in a
 * rotating order, and reports tokens/s per variant and, per round, each
 * traced block's speed over the untraced block next to it (the median of
 * those ratios: drift on the machine cancels within a round). Each traced
 * block records into a session of its own, kept until the end, so every
 * event lands in fresh memory as in a `--trace` run of the CLI.
 *   cc -O2 -Isrc -Iinclude tests/bench/trace_overhead.c build/libkiln.a ...
 *   (tests/bench/trace_overhead.sh builds and runs it)
 *   trace_overhead MODEL [ROUNDS=150] [TOKENS=64] [THREADS=2]
 * Not a CI test: it measures. */
#include "kiln.h"
#include "obs/trace.h"

#include <stdio.h>
#include <stdlib.h>

enum { V_NONE, V_STEPS, V_OPS, N_V };
static const char *const names[N_V] = {"none", "steps", "ops"};

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Tokens/s of one block; its session (traced variants) goes to *keep. */
static double block(kiln_ctx *c, int n, int v, trace_session **keep, int64_t *events) {
    trace_opts o = {.detail = v == V_OPS ? TRACE_DETAIL_OPS : TRACE_DETAIL_STEPS};
    trace_session *s = v == V_NONE ? NULL : trace_start(&o, NULL);
    kiln_ctx_reset(c);
    int64_t t0 = trace_now();
    for (int i = 0; i < n; i++) {
        int32_t id = 1 + i % 200;
        TRACE_SCOPE_BEGIN(tf);
        kiln_decode(c, &id, 1, NULL, 0);
        TRACE_SCOPE_END(tf, "forward", "bench");
    }
    double tps = n / ((double)(trace_now() - t0) * 1e-9);
    if (s) {
        trace_stop(s);
        trace_stats st;
        trace_get_stats(s, &st);
        *events += st.events;
    }
    *keep = s;
    return tps;
}

static void quartiles(double *x, int n, double q[3]) {
    qsort(x, (size_t)n, sizeof *x, cmp);
    q[0] = x[n / 4], q[1] = x[n / 2], q[2] = x[3 * n / 4];
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: trace_overhead MODEL [ROUNDS] [TOKENS] [THREADS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 150, n = argc > 3 ? atoi(argv[3]) : 64;
    int threads = argc > 4 ? atoi(argv[4]) : 2;
    kiln_model *m = kiln_model_load(argv[1], NULL);
    kiln_ctx_params p = kiln_ctx_default_params();
    p.n_ctx = n + 1;
    p.n_threads = threads;
    kiln_ctx *c = m ? kiln_ctx_create(m, &p, NULL) : NULL;
    double *tps = malloc(sizeof(double) * N_V * (size_t)rounds);
    double *ratio = malloc(sizeof(double) * N_V * (size_t)rounds);
    trace_session **keep = calloc((size_t)N_V * (size_t)rounds, sizeof *keep);
    if (!c || !tps || !ratio || !keep) {
        fprintf(stderr, "trace_overhead: %s\n", c ? "out of memory" : kiln_last_error());
        return 1;
    }
    int64_t events[N_V] = {0}, dummy = 0;
    trace_session *warm;
    for (int v = 0; v < N_V; v++) { /* warm-up */
        block(c, n, v, &warm, &dummy);
        trace_free(warm);
    }
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < N_V; k++) {
            int v = (k + r) % N_V;
            tps[v * rounds + r] = block(c, n, v, &keep[v * rounds + r], &events[v]);
        }
        for (int v = 0; v < N_V; v++) ratio[v * rounds + r] = tps[v * rounds + r] / tps[r];
    }
    printf("%d rounds of %d-token blocks, %d threads, alternated\n", rounds, n, threads);
    for (int v = 0; v < N_V; v++) {
        double q[3], qr[3];
        quartiles(tps + v * rounds, rounds, q);
        quartiles(ratio + v * rounds, rounds, qr);
        printf("%-6s %8.1f tokens/s (p25 %.1f, p75 %.1f)  %5.1f events/token", names[v], q[1], q[0],
               q[2], (double)events[v] / ((double)rounds * n));
        if (v)
            printf("  vs none: %+.2f%% (p25 %+.2f%%, p75 %+.2f%%)", 100 * (qr[1] - 1),
                   100 * (qr[0] - 1), 100 * (qr[2] - 1));
        printf("\n");
    }
    for (int i = 0; i < N_V * rounds; i++) trace_free(keep[i]);
    free(keep);
    free(tps);
    free(ratio);
    kiln_ctx_free(c);
    kiln_model_free(m);
    return 0;
}

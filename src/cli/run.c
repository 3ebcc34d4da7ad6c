/* run.c - `kiln run`: generate text from a prompt, streaming it to stdout,
 * then print a timing summary (load, prompt and generation tokens/s, time
 * per stage) on stderr. Uses only the public API (kiln.h).
 * Exit status: 0 on success, 1 on a runtime error (one line on stderr), 2 on
 * a usage error. --trace FILE also records the run (tokenize, prefill, each
 * decode step with its sample/detokenize/emit/forward; with --trace-detail
 * ops each forward pass's layers too) as a Chrome trace (obs/trace.h; gzip
 * when FILE ends in ".gz"; read it with `kiln trace summary`). */
#include "cli/commands.h"
#include "cli/gen_opts.h"
#include "cli/trace_opts.h"
#include "kiln.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct run_opts {
    const char *model, *prompt;
    struct cli_trace_opts trace;
    struct cli_gen_opts g;
};

static void run_usage(FILE *out) {
    fprintf(
        out,
        "usage: kiln run -m MODEL.gguf -p PROMPT [options]\n\n"
        "Generates a continuation of PROMPT, streaming it to stdout; a timing summary\n"
        "goes to stderr.\n\n"
        "  -m, --model FILE        GGUF model (llama or qwen2; SentencePiece or BPE vocabulary)\n"
        "  -p, --prompt TEXT       the prompt (BOS is added as the model asks)\n");
    cli_trace_usage(out, "the generation");
    cli_gen_usage(out);
}

/* Parses argv; returns -1 to go on, else the exit status (help: 0, usage error: 2). */
static int parse_args(int argc, char **argv, struct run_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            run_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--ignore-eos")) {
            o->g.gen.stop_at_eog = 0;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln run: %s needs a value (kiln run --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
            o->prompt = v;
        else {
            int r = cli_trace_opt(&o->trace, "run", a, v);
            if (r == 0) r = cli_gen_opt(&o->g, "run", a, v);
            if (r < 0) return 2;
            if (r == 0) {
                fprintf(stderr, "kiln run: unknown option: %s (kiln run --help)\n", a);
                return 2;
            }
        }
    }
    if (!o->model || !o->prompt) {
        fprintf(stderr, "kiln run: -m MODEL and -p PROMPT are required (kiln run --help)\n");
        return 2;
    }
    if (cli_trace_check(&o->trace, "run")) return 2;
    return -1;
}

/* Echoes the prompt before the first generated text, so a failure before
 * generation starts leaves stdout empty. */
struct printer {
    const char *prompt;
    bool started;
};

static void start_output(struct printer *p) {
    if (p->started) return;
    fputs(p->prompt, stdout);
    p->started = true;
}

static int print_token(void *user, int32_t id, const char *text, size_t len) {
    (void)id;
    start_output(user);
    if (len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

static double per_s(double n, double t) {
    return t > 0 ? n / t : 0;
}

static void print_summary(const struct run_opts *o, const kiln_ctx *c, double t_load,
                          const kiln_gen_stats *s) {
    double t_gen = s->t_decode + s->t_sample + s->t_detok;
    int n_fwd = s->n_gen > 0 ? s->n_gen - 1 : 0;
    fprintf(stderr, "\n--- kiln run: %s, context %d, %d threads, seed %llu\n", o->model,
            kiln_ctx_n_ctx(c), kiln_ctx_n_threads(c), (unsigned long long)o->g.gen.sampling.seed);
    uint64_t kv = 0, compute = 0;
    kiln_ctx_memory(c, &kv, &compute);
    fprintf(stderr, "memory      KV cache %s %.2f MiB, compute buffers %.2f MiB\n",
            kiln_type_name(kiln_ctx_type_k(c)), (double)kv / (1 << 20),
            (double)compute / (1 << 20));
    fprintf(stderr, "load        %10.2f ms\n", t_load * 1e3);
    fprintf(stderr, "prompt      %6d tokens in %9.2f ms  %10.1f tokens/s\n", s->n_prompt,
            s->t_prefill * 1e3, per_s(s->n_prompt, s->t_prefill));
    fprintf(stderr, "generation  %6d tokens in %9.2f ms  %10.1f tokens/s\n", s->n_gen, t_gen * 1e3,
            per_s(s->n_gen, t_gen));
    fprintf(stderr,
            "stages      tokenize %.3f ms | prefill %.2f ms | decode forward %.2f ms "
            "(%d x %.3f ms) | sampling %.3f ms | detokenize %.3f ms\n",
            s->t_tokenize * 1e3, s->t_prefill * 1e3, s->t_decode * 1e3, n_fwd,
            n_fwd ? s->t_decode * 1e3 / n_fwd : 0.0, s->t_sample * 1e3, s->t_detok * 1e3);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Writes the run's trace; 0, or 1 with a message on stderr. */
static int write_trace(trace_session *ts, const struct run_opts *o, const kiln_ctx *c) {
    json_t *od = json_pack("{s:s,s:s,s:s,s:i,s:i,s:i}", "version", kiln_version(), "model",
                           o->model, "schedule", "kiln run", "threads", kiln_ctx_n_threads(c),
                           "n_ctx", kiln_ctx_n_ctx(c), "n_predict", o->g.gen.n_predict);
    return cli_trace_write(ts, &o->trace, "run", od);
}

int cmd_run(int argc, char **argv) {
    struct run_opts o = {.model = NULL};
    cli_trace_opts_init(&o.trace);
    cli_gen_opts_init(&o.g);
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    if (!o.g.seed_set) o.g.gen.sampling.seed = (uint64_t)time(NULL);

    double t0 = now_s();
    kiln_ctx *c = NULL;
    kiln_model *m = kiln_model_load(o.model, NULL);
    if (m) c = kiln_ctx_create(m, &o.g.ctx, NULL);
    double t_load = now_s() - t0;
    kiln_gen_stats stats;
    struct printer pr = {o.prompt, false};
    trace_session *ts = NULL;
    bool ok = c != NULL, trace_failed = false;
    if (ok) ts = cli_trace_start(&o.trace, "run", &trace_failed);
    if (trace_failed) {
        rc = 3; /* reported */
        ok = false;
    }
    if (ok) {
        if (kiln_generate(c, o.prompt, strlen(o.prompt), &o.g.gen, print_token, &pr, &stats) ==
            KILN_OK) {
            start_output(&pr);
            fputc('\n', stdout);
            fflush(stdout);
            print_summary(&o, c, t_load, &stats);
            rc = ts ? write_trace(ts, &o, c) : 0;
            if (rc) rc = 3; /* reported */
        }
    }
    trace_free(ts);
    if (rc == 3) {
        rc = 1;
    } else if (rc != 0) {
        fflush(stdout);
        fprintf(stderr, "%skiln run: %s\n", pr.started ? "\n" : "", kiln_last_error());
        rc = 1;
    }
    kiln_ctx_free(c);
    kiln_model_free(m);
    return rc;
}

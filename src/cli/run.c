/* run.c - `kiln run`: generate text from a prompt, streaming it to stdout,
 * then print a timing summary (load, prompt and generation tokens/s, time
 * per stage) on stderr. Uses only the public API (kiln.h).
 * Exit status: 0 on success, 1 on a runtime error (one line on stderr), 2 on
 * a usage error. */
#include "cli/commands.h"
#include "kiln.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct run_opts {
    const char *model, *prompt;
    kiln_gen_params gen;
    kiln_ctx_params ctx;
    bool seed_set;
};

static void run_usage(FILE *out) {
    fprintf(
        out,
        "usage: kiln run -m MODEL.gguf -p PROMPT [options]\n\n"
        "Generates a continuation of PROMPT, streaming it to stdout; a timing summary\n"
        "goes to stderr.\n\n"
        "  -m, --model FILE        GGUF model (llama-family, SentencePiece tokenizer)\n"
        "  -p, --prompt TEXT       the prompt (BOS is added as the model asks)\n"
        "  -n, --n-predict N       most tokens to generate (default 128)\n"
        "  -c, --ctx N             context size (default: the model's, at most 4096)\n"
        "  -t, --threads N         threads (default: physical cores)\n"
        "      --temp T            temperature; 0 = greedy (default 0.8)\n"
        "      --top-k K           keep the K most likely tokens; 0 = off (default 40)\n"
        "      --top-p P           nucleus sampling; 1 = off (default 0.95)\n"
        "      --min-p P           drop tokens below P x the best's probability (default 0.05)\n"
        "      --repeat-penalty R  penalize the last --repeat-last-n tokens; 1 = off "
        "(default 1)\n"
        "      --repeat-last-n N   (default 64)\n"
        "      --seed S            random seed (default: from the clock; printed)\n"
        "      --ignore-eos        keep generating after an end-of-text token\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || v != v) return false;
    *out = v;
    return true;
}

/* A numeric option's value into its field; false on a bad value. */
static bool set_numeric(struct run_opts *o, const char *a, const char *v) {
    kiln_sampling *sp = &o->gen.sampling;
    long l;
    if (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))
        return parse_long(v, 0, 1L << 30, &l) && ((o->gen.n_predict = (int32_t)l), true);
    if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
        return parse_long(v, 1, 1L << 24, &l) && ((o->ctx.n_ctx = (int32_t)l), true);
    if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
        return parse_long(v, 1, 1024, &l) && ((o->ctx.n_threads = (int32_t)l), true);
    if (!strcmp(a, "--top-k"))
        return parse_long(v, 0, 1L << 30, &l) && ((sp->top_k = (int32_t)l), true);
    if (!strcmp(a, "--repeat-last-n"))
        return parse_long(v, 0, 1L << 20, &l) && ((sp->repeat_last_n = (int32_t)l), true);
    if (!strcmp(a, "--seed")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (errno || end == v || *end) return false;
        sp->seed = s;
        o->seed_set = true;
        return true;
    }
    if (!strcmp(a, "--temp")) return parse_float(v, &sp->temp);
    if (!strcmp(a, "--top-p")) return parse_float(v, &sp->top_p);
    if (!strcmp(a, "--min-p")) return parse_float(v, &sp->min_p);
    if (!strcmp(a, "--repeat-penalty"))
        return parse_float(v, &sp->repeat_penalty) && sp->repeat_penalty > 0;
    return false;
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
            o->gen.stop_at_eog = 0;
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
        else if (!set_numeric(o, a, v)) {
            fprintf(stderr, "kiln run: unknown option or bad value: %s %s (kiln run --help)\n", a,
                    v);
            return 2;
        }
    }
    if (!o->model || !o->prompt) {
        fprintf(stderr, "kiln run: -m MODEL and -p PROMPT are required (kiln run --help)\n");
        return 2;
    }
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
            kiln_ctx_n_ctx(c), kiln_ctx_n_threads(c), (unsigned long long)o->gen.sampling.seed);
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

int cmd_run(int argc, char **argv) {
    struct run_opts o = {.gen = kiln_gen_default_params(), .ctx = kiln_ctx_default_params()};
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    if (!o.seed_set) o.gen.sampling.seed = (uint64_t)time(NULL);

    double t0 = now_s();
    kiln_ctx *c = NULL;
    kiln_model *m = kiln_model_load(o.model, NULL);
    if (m) c = kiln_ctx_create(m, &o.ctx, NULL);
    double t_load = now_s() - t0;
    kiln_gen_stats stats;
    struct printer pr = {o.prompt, false};
    if (c) {
        if (kiln_generate(c, o.prompt, strlen(o.prompt), &o.gen, print_token, &pr, &stats) ==
            KILN_OK) {
            start_output(&pr);
            fputc('\n', stdout);
            fflush(stdout);
            print_summary(&o, c, t_load, &stats);
            rc = 0;
        }
    }
    if (rc != 0) {
        fflush(stdout);
        fprintf(stderr, "%skiln run: %s\n", pr.started ? "\n" : "", kiln_last_error());
        rc = 1;
    }
    kiln_ctx_free(c);
    kiln_model_free(m);
    return rc;
}

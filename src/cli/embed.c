/* embed.c - `kiln embed`: embeddings for texts given as arguments or read
 * from a file (one text per line), printed as one JSON document (or one
 * JSON line per input with --jsonl) on stdout, then a summary on stderr:
 * documents, tokens, docs/s, tokens/s, ms/doc and the batch size used.
 * Uses only the public API (kiln.h). --trace FILE records the call
 * (tokenize, each batch's forward and pooling; with --trace-detail ops each
 * forward pass's layers) as a Chrome trace (obs/trace.h).
 * Exit status: 0 on success, 1 on a runtime error (one line on stderr), 2 on
 * a usage error. */
#include "cli/commands.h"
#include "cli/trace_opts.h"
#include "kiln.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct embed_opts {
    const char *model, *file;
    bool jsonl;
    kiln_embed_params p;
    struct cli_trace_opts trace;
    char **texts; /* arguments (borrowed) and file lines (owned) */
    size_t *lens;
    int32_t n, cap;
    char *file_buf;
};

static void embed_usage(FILE *out) {
    fprintf(out,
            "usage: kiln embed -m MODEL.gguf [TEXT ...] [-f FILE] [options]\n\n"
            "Embeds each TEXT (and each line of FILE; '-' is stdin) with an encoder (bert,\n"
            "nomic-bert) or decoder (llama, qwen2) model and prints the vectors as JSON; a\n"
            "summary goes to stderr.\n\n"
            "  -m, --model FILE        GGUF model\n"
            "  -f, --file FILE         read texts from FILE, one per line\n"
            "      --jsonl             print one JSON object per input line\n"
            "      --pooling P         mean, cls, last or none (default: the model's)\n"
            "      --no-normalize      do not L2-normalise the vectors\n"
            "      --dim N             keep the first N components (Matryoshka), renormalised\n"
            "      --batch-size N      tokens per forward pass (default: from a memory budget)\n"
            "      --truncate          cut texts longer than the model's context (else an "
            "error)\n"
            "  -t, --threads N         threads (default: physical cores)\n");
    cli_trace_usage(out, "the embedding");
}

static bool parse_int(const char *s, long lo, long hi, int32_t *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = (int32_t)v;
    return true;
}

static bool add_text(struct embed_opts *o, char *t, size_t len) {
    if (o->n == o->cap) {
        int32_t cap = o->cap ? o->cap * 2 : 64;
        char **nt = realloc(o->texts, (size_t)cap * sizeof *nt);
        size_t *nl = nt ? realloc(o->lens, (size_t)cap * sizeof *nl) : NULL;
        if (nt) o->texts = nt;
        if (!nt || !nl) return false;
        o->lens = nl;
        o->cap = cap;
    }
    o->texts[o->n] = t;
    o->lens[o->n++] = len;
    return true;
}

/* Reads FILE ('-': stdin) and adds each line (without its \n or \r\n). */
static int read_lines(struct embed_opts *o) {
    FILE *f = strcmp(o->file, "-") ? fopen(o->file, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "kiln embed: cannot open %s: %s\n", o->file, strerror(errno));
        return 1;
    }
    size_t cap = 1 << 16, len = 0, r;
    char *buf = malloc(cap);
    while (buf && (r = fread(buf + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    if (f != stdin) fclose(f);
    if (!buf) {
        fprintf(stderr, "kiln embed: out of memory reading %s\n", o->file);
        return 1;
    }
    o->file_buf = buf;
    for (size_t i = 0; i < len;) {
        char *nl = memchr(buf + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - buf) : len, l = end - i;
        if (l && buf[i + l - 1] == '\r') l--;
        if (!add_text(o, buf + i, l)) {
            fprintf(stderr, "kiln embed: out of memory\n");
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

/* One option at argv[*i]; 0 ok, 2 usage error (printed). */
static int parse_opt(int argc, char **argv, int *i, struct embed_opts *o) {
    const char *a = argv[*i];
    if (!strcmp(a, "--jsonl")) return o->jsonl = true, 0;
    if (!strcmp(a, "--no-normalize")) return o->p.normalize = 0, 0;
    if (!strcmp(a, "--truncate")) return o->p.truncate = 1, 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "kiln embed: %s needs a value\n", a);
        return 2;
    }
    const char *v = argv[++*i];
    int tr = cli_trace_opt(&o->trace, "embed", a, v);
    if (tr) return tr < 0 ? 2 : 0;
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) return o->model = v, 0;
    if (!strcmp(a, "-f") || !strcmp(a, "--file")) return o->file = v, 0;
    if (!strcmp(a, "--pooling")) {
        kiln_pooling ps[] = {KILN_POOLING_NONE, KILN_POOLING_MEAN, KILN_POOLING_CLS,
                             KILN_POOLING_LAST};
        for (int k = 0; k < 4; k++)
            if (!strcmp(v, kiln_pooling_name(ps[k]))) return o->p.pooling = ps[k], 0;
    } else if (!strcmp(a, "--dim")) {
        if (parse_int(v, 1, 1 << 20, &o->p.dim)) return 0;
    } else if (!strcmp(a, "--batch-size")) {
        if (parse_int(v, 1, 1 << 24, &o->p.batch_tokens)) return 0;
    } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
        if (parse_int(v, 1, 1024, &o->p.n_threads)) return 0;
    } else {
        fprintf(stderr, "kiln embed: unknown option %s\n", a);
        return 2;
    }
    fprintf(stderr, "kiln embed: bad value '%s' for %s\n", v, a);
    return 2;
}

static int parse_args(int argc, char **argv, struct embed_opts *o) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            embed_usage(stdout);
            return -1;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            int r = parse_opt(argc, argv, &i, o);
            if (r) return r;
        } else if (!add_text(o, argv[i], strlen(argv[i]))) {
            fprintf(stderr, "kiln embed: out of memory\n");
            return 1;
        }
    }
    if (!o->model) {
        fprintf(stderr, "kiln embed: -m MODEL is required\n\n");
        embed_usage(stderr);
        return 2;
    }
    if (cli_trace_check(&o->trace, "embed")) return 2;
    if (o->file && read_lines(o)) return 1;
    if (o->n == 0) {
        fprintf(stderr, "kiln embed: no texts (give TEXT arguments or -f FILE)\n");
        return 2;
    }
    return 0;
}

static void print_vec(const float *v, int32_t dim) {
    putchar('[');
    for (int32_t k = 0; k < dim; k++) printf(k ? ",%.8g" : "%.8g", (double)v[k]);
    putchar(']');
}

/* The vectors of input i: one, or one per token (pooling none). */
static void print_item(const kiln_embeddings *r, int32_t i, bool per_token) {
    printf("{\"index\":%d,\"n_tokens\":%d,", i, r->n_tokens[i]);
    if (r->truncated_from[i]) printf("\"truncated_from\":%d,", r->truncated_from[i]);
    printf("\"embedding\":");
    const float *v = r->data + r->row[i] * r->dim;
    if (!per_token) {
        print_vec(v, r->dim);
    } else {
        putchar('[');
        for (int32_t t = 0; t < r->n_tokens[i]; t++) {
            if (t) putchar(',');
            print_vec(v + (int64_t)t * r->dim, r->dim);
        }
        putchar(']');
    }
    putchar('}');
}

static void print_json(const struct embed_opts *o, const kiln_embed_ctx *e,
                       const kiln_embeddings *r) {
    bool per_token = kiln_embed_pooling(e) == KILN_POOLING_NONE;
    if (o->jsonl) {
        for (int32_t i = 0; i < r->n_texts; i++) {
            print_item(r, i, per_token);
            putchar('\n');
        }
        return;
    }
    printf("{\"object\":\"list\",\"model\":\"");
    for (const char *c = o->model; *c; c++) printf(*c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
    printf("\",\"dim\":%d,\"pooling\":\"%s\",\"normalized\":%s,\"data\":[", r->dim,
           kiln_pooling_name(kiln_embed_pooling(e)), o->p.normalize ? "true" : "false");
    for (int32_t i = 0; i < r->n_texts; i++) {
        if (i) putchar(',');
        print_item(r, i, per_token);
    }
    printf("]}\n");
}

static void print_summary(const kiln_embed_stats *s, double t_load, int32_t n_threads) {
    double t = s->t_total > 0 ? s->t_total : 1e-9;
    fprintf(stderr,
            "\nembed: %d documents, %lld tokens in %.3f s: %.1f docs/s, %.0f tokens/s, "
            "%.3f ms/doc\n"
            "       batch size %d tokens (%d passes, at most %d texts per pass), %d threads, "
            "%d halvings on allocation failure\n"
            "       load %.0f ms, tokenize %.1f ms, forward %.1f ms, pool %.1f ms\n",
            s->n_texts, (long long)s->n_tokens, s->t_total, s->n_texts / t, (double)s->n_tokens / t,
            1e3 * t / (s->n_texts ? s->n_texts : 1), s->batch_tokens, s->n_batches,
            s->max_batch_texts, n_threads, s->n_halvings, 1e3 * t_load, 1e3 * s->t_tokenize,
            1e3 * s->t_forward, 1e3 * s->t_pool);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cmd_embed(int argc, char **argv) {
    struct embed_opts o = {.p = kiln_embed_default_params()};
    kiln_model *m = NULL;
    kiln_embed_ctx *e = NULL;
    kiln_embeddings *r = NULL;
    trace_session *ts = NULL;
    cli_trace_opts_init(&o.trace);
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        rc = rc < 0 ? 0 : rc;
        goto done;
    }
    kiln_status st;
    double t0 = now_s();
    rc = 1;
    if (!(m = kiln_model_load(o.model, &st))) {
        fprintf(stderr, "kiln embed: %s\n", kiln_last_error());
        goto done;
    }
    if (!(e = kiln_embed_ctx_create(m, &o.p, &st))) {
        fprintf(stderr, "kiln embed: %s\n", kiln_last_error());
        goto done;
    }
    double t_load = now_s() - t0;
    kiln_embed_stats stats;
    bool trace_failed;
    ts = cli_trace_start(&o.trace, "embed", &trace_failed);
    if (trace_failed) goto done;
    if ((st = kiln_embed(e, (const char *const *)o.texts, o.lens, o.n, &r, &stats))) {
        fprintf(stderr, "kiln embed: %s\n", kiln_last_error());
        goto done;
    }
    trace_stop(ts);
    print_json(&o, e, r);
    fflush(stdout);
    print_summary(&stats, t_load, stats.n_threads);
    json_t *od = json_pack("{s:s,s:s,s:s,s:i,s:i,s:i}", "version", kiln_version(), "model", o.model,
                           "schedule", "kiln embed", "threads", stats.n_threads, "inputs", o.n,
                           "batch_tokens", stats.batch_tokens);
    rc = cli_trace_write(ts, &o.trace, "embed", od);
done:
    trace_free(ts);
    kiln_embeddings_free(r);
    kiln_embed_ctx_free(e);
    kiln_model_free(m);
    free(o.texts);
    free(o.lens);
    free(o.file_buf);
    return rc;
}

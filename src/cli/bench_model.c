/* bench_model.c - `kiln bench-model`: a model's speed beside the machine's
 * limits, llama-bench style.
 *
 * Decoders: pp<P> decodes P tokens in one batch from an empty cache (prompt
 * processing; the tokens are BOS then pseudo-random ids) and tg<N> decodes
 * N tokens one at a time from an empty cache (generation; sampling is not
 * included). Each runs once as a warm-up, then --reps times; the table
 * gives tokens/s as mean +/- sample standard deviation over the reps.
 *
 * Encoders (--embed, or automatically for an encoder model): the sentences
 * (a built-in set of 256 English sentences of varied length, or -f FILE,
 * one per line) are embedded in batches of B documents for every B in
 * --batch-sizes, giving docs/s and tokens/s per B and the best B (the
 * batch-size finder); then the latency of one short query (about 10 tokens:
 * tokenize + forward + pooling) as the median of --query-reps calls.
 *
 * Beside every result, its limit on this machine, measured by the same
 * command with the same thread count before and after the runs (the higher
 * reading kept; kiln_machine_measure, the measurement bench-kernels uses):
 *  - generation reads every weight once per token: limit = memory read
 *    bandwidth / model bytes;
 *  - prompt processing and embeddings are compute-bound: limit = peak /
 *    (2 x weights multiplied per token), the peak being int8 VNNI for
 *    quantized weights whose products run on int8 and FP32 FMA for float
 *    weights. Attention's FLOPs are left out (small at these lengths), so
 *    the limit is slightly optimistic.
 * The load average is printed: other work on the machine lowers the results
 * and the measured limits alike.
 *
 * The table goes to stdout (and JSON to --json FILE), progress to stderr.
 * Uses only the public API (kiln.h). --trace FILE records the runs (the
 * machine measurements excluded) as a Chrome trace (obs/trace.h): a "pp" or
 * "tg" span per run (rep 0: the warm-up) holding a "forward" span per
 * decode call, or the embeddings engine's spans; --trace-detail ops adds
 * each forward pass's layers. Tracing costs time: compare traced numbers
 * only with traced numbers (docs/perf.md measures how much).
 */
#include "cli/commands.h"
#include "cli/trace_opts.h"
#include "kiln.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SIZES 32
#define MAX_REPS  1000

struct bm_opts {
    const char *model, *json, *file;
    int32_t n_prompt, n_gen, reps, n_threads, n_batch, query_reps;
    int32_t sizes[MAX_SIZES], n_sizes;
    bool embed, quick;
    struct cli_trace_opts trace;
};

/* One row of the table. */
struct bm_row {
    char test[32];
    int32_t n_tokens;         /* tokens per rep */
    double mean, sd;          /* tokens/s */
    double docs_mean;         /* embeddings: docs/s */
    double limit;             /* tokens/s */
    char basis[96];           /* what the limit comes from */
    double samples[MAX_REPS]; /* tokens/s per rep */
    int32_t n_samples;
    kiln_status status; /* KILN_OK, or why the row could not run */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: kiln bench-model -m MODEL.gguf [options]\n\n"
            "Prompt processing (pp) and generation (tg) tokens/s of a decoder, or embedding\n"
            "docs/s and tokens/s per batch size of an encoder, each beside its limit on this\n"
            "machine (memory bandwidth / model bytes for tg; the FMA or VNNI peak for pp and\n"
            "embeddings), measured with the same thread count.\n\n"
            "  -m, --model FILE      GGUF model\n"
            "  -p, --n-prompt N      prompt tokens for pp (default 512; 0 skips)\n"
            "  -n, --n-gen N         generated tokens for tg (default 128; 0 skips)\n"
            "  -r, --reps N          repetitions after one warm-up (default 3)\n"
            "  -t, --threads N       threads (default: physical cores)\n"
            "  -b, --batch N         most tokens per prefill pass (default 512)\n"
            "      --json FILE       also write the results as JSON\n"
            "      --quick           measure the machine briefly (for tests)\n"
            "embeddings (an encoder model; --embed forces this mode):\n"
            "      --embed           benchmark the embeddings path\n"
            "      --batch-sizes L   documents per batch to try (default 1,8,16,32,64,128,256)\n"
            "  -f, --file FILE       sentences, one per line (default: 256 built-in ones)\n"
            "      --query-reps N    single-query latency samples (default 50)\n"
            "tracing:\n");
    cli_trace_usage(out, "the runs");
}

static bool parse_i32(const char *s, long lo, long hi, int32_t *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = (int32_t)v;
    return true;
}

static bool parse_sizes(const char *s, struct bm_opts *o) {
    o->n_sizes = 0;
    while (*s) {
        char item[16];
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= sizeof item || o->n_sizes == MAX_SIZES) return false;
        memcpy(item, s, len);
        item[len] = 0;
        if (!parse_i32(item, 1, 1 << 20, &o->sizes[o->n_sizes++])) return false;
        s += len;
        if (*s == ',') s++;
    }
    return o->n_sizes > 0;
}

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct bm_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--embed")) {
            o->embed = true;
            continue;
        }
        if (!strcmp(a, "--quick")) {
            o->quick = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln bench-model: %s needs a value (kiln bench-model --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        bool ok = true;
        int tr = cli_trace_opt(&o->trace, "bench-model", a, v);
        if (tr < 0) return 2;
        if (tr > 0) continue;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--json"))
            o->json = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file"))
            o->file = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt"))
            ok = parse_i32(v, 0, 1 << 20, &o->n_prompt);
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen"))
            ok = parse_i32(v, 0, 1 << 20, &o->n_gen);
        else if (!strcmp(a, "-r") || !strcmp(a, "--reps"))
            ok = parse_i32(v, 1, MAX_REPS, &o->reps);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = parse_i32(v, 1, 1024, &o->n_threads);
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch"))
            ok = parse_i32(v, 1, 1 << 16, &o->n_batch);
        else if (!strcmp(a, "--query-reps"))
            ok = parse_i32(v, 1, 100000, &o->query_reps);
        else if (!strcmp(a, "--batch-sizes"))
            ok = parse_sizes(v, o);
        else {
            fprintf(stderr, "kiln bench-model: unknown option: %s (kiln bench-model --help)\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "kiln bench-model: bad value for %s: '%s'\n", a, v);
            return 2;
        }
    }
    if (!o->model) {
        fprintf(stderr, "kiln bench-model: -m MODEL is required (kiln bench-model --help)\n");
        return 2;
    }
    if (cli_trace_check(&o->trace, "bench-model")) return 2;
    return -1;
}

/* ---- statistics and limits ------------------------------------------------------------- */

static void row_stats(struct bm_row *r) {
    double s = 0, s2 = 0;
    for (int32_t i = 0; i < r->n_samples; i++) s += r->samples[i];
    r->mean = r->n_samples ? s / r->n_samples : 0;
    for (int32_t i = 0; i < r->n_samples; i++)
        s2 += (r->samples[i] - r->mean) * (r->samples[i] - r->mean);
    r->sd = r->n_samples > 1 ? sqrt(s2 / (r->n_samples - 1)) : 0;
}

static double load_average(void) {
    double load = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1) load = -1;
        fclose(f);
    }
    return load;
}

/* The limits before and after the runs; the higher reading of each kept. */
static int measure(const struct bm_opts *o, kiln_machine_limits *l, bool again) {
    kiln_machine_limits x;
    fprintf(stderr, "bench-model: measuring the machine%s...\n", again ? " again" : "");
    if (kiln_machine_measure(o->n_threads, o->quick, &x) != KILN_OK) {
        fprintf(stderr, "kiln bench-model: %s\n", kiln_last_error());
        return -1;
    }
    if (!again) {
        *l = x;
        return 0;
    }
    if (x.read_gbs < 0.9 * l->read_gbs || l->read_gbs < 0.9 * x.read_gbs)
        fprintf(stderr,
                "bench-model: warning: the bandwidth moved during the run (%.1f then %.1f GB/s): "
                "the machine is busy\n",
                l->read_gbs, x.read_gbs);
    if (x.read_gbs > l->read_gbs) l->read_gbs = x.read_gbs;
    if (x.fma_gflops > l->fma_gflops) l->fma_gflops = x.fma_gflops;
    if (x.vnni_gops > l->vnni_gops) l->vnni_gops = x.vnni_gops;
    return 0;
}

/* Tokens/s a compute-bound pass can reach: the peak over 2 x the weights
 * multiplied per token. */
static double compute_limit(const kiln_model_desc *d, const kiln_machine_limits *l, char *basis,
                            size_t cap) {
    bool int8 = d->int8_dot && l->vnni_gops > 0;
    double peak = int8 ? l->vnni_gops : l->fma_gflops;
    double flops = 2.0 * (double)d->n_matmul_params;
    snprintf(basis, cap, "%s %.0f G/s / %.4g GFLOP per token", int8 ? "int8 VNNI" : "FP32 FMA",
             peak, flops * 1e-9);
    return flops > 0 ? peak * 1e9 / flops : 0;
}

/* ---- decoders ------------------------------------------------------------------------- */

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

/* Fills ids with BOS (when the model has one) then pseudo-random ids. */
static void fill_tokens(const kiln_model *m, int32_t *ids, int32_t n, uint64_t seed) {
    int32_t nv = kiln_model_n_vocab(m), bos = kiln_token_bos(m);
    for (int32_t i = 0; i < n; i++) ids[i] = (int32_t)(xorshift(&seed) % (uint64_t)nv);
    if (n > 0 && bos >= 0) ids[0] = bos;
}

/* One decode call, a "forward" span when tracing. */
static kiln_status forward(kiln_ctx *c, const int32_t *ids, int32_t n) {
    TRACE_SCOPE_BEGIN(tf);
    kiln_status st = kiln_decode(c, ids, n, NULL, 0);
    TRACE_SCOPE_END(tf, "forward", "bench");
    return st;
}

/* Seconds for one pp run (n tokens in one call) or tg run (n calls of one);
 * rep: its number in the trace (0: the warm-up). */
static kiln_status run_once(kiln_ctx *c, const int32_t *ids, int32_t n, bool gen, int32_t rep,
                            double *secs) {
    kiln_ctx_reset(c);
    TRACE_SCOPE_BEGIN(tr);
    double t0 = now_s();
    kiln_status st = KILN_OK;
    if (gen)
        for (int32_t i = 0; i < n && !st; i++) st = forward(c, ids + i, 1);
    else
        st = forward(c, ids, n);
    *secs = now_s() - t0;
    if (tr) {
        trace_arg a[2] = {TRACE_I("tokens", n), TRACE_I("rep", rep)};
        trace_span(gen ? "tg" : "pp", "bench", tr, trace_now() - tr, a, 2);
    }
    return st;
}

static int bench_test(const struct bm_opts *o, kiln_ctx *c, const int32_t *ids, int32_t n, bool gen,
                      struct bm_row *r) {
    double s;
    snprintf(r->test, sizeof r->test, "%s%d", gen ? "tg" : "pp", n);
    r->n_tokens = n;
    fprintf(stderr, "bench-model: %s: warm-up", r->test);
    if (run_once(c, ids, n, gen, 0, &s) != KILN_OK) {
        fprintf(stderr, "\nkiln bench-model: %s: %s\n", r->test, kiln_last_error());
        return -1;
    }
    for (int32_t i = 0; i < o->reps; i++) {
        if (run_once(c, ids, n, gen, i + 1, &s) != KILN_OK) {
            fprintf(stderr, "\nkiln bench-model: %s: %s\n", r->test, kiln_last_error());
            return -1;
        }
        r->samples[r->n_samples++] = s > 0 ? n / s : 0;
        fprintf(stderr, ", %.2f", r->samples[r->n_samples - 1]);
    }
    fprintf(stderr, " tokens/s\n");
    row_stats(r);
    return 0;
}

static int bench_decoder(const struct bm_opts *o, kiln_model *m, const kiln_machine_limits *l,
                         struct bm_row *rows, int *n_rows) {
    int rc = -1;
    int32_t n_max = o->n_prompt > o->n_gen ? o->n_prompt : o->n_gen;
    kiln_ctx_params cp = kiln_ctx_default_params();
    cp.n_ctx = n_max + 1;
    cp.n_batch = o->n_prompt > 0 && o->n_prompt < o->n_batch ? o->n_prompt : o->n_batch;
    cp.n_threads = l->n_threads;
    int32_t *ids = malloc((size_t)(n_max ? n_max : 1) * sizeof *ids);
    kiln_ctx *c = ids ? kiln_ctx_create(m, &cp, NULL) : NULL;
    if (!c) {
        fprintf(stderr, "kiln bench-model: %s\n", ids ? kiln_last_error() : "out of memory");
        goto done;
    }
    fill_tokens(m, ids, n_max, 0x2545f4914f6cdd1dull);
    if (o->n_prompt > 0) {
        struct bm_row *r = &rows[(*n_rows)++];
        if (bench_test(o, c, ids, o->n_prompt, false, r)) goto done;
    }
    if (o->n_gen > 0) {
        struct bm_row *r = &rows[(*n_rows)++];
        if (bench_test(o, c, ids, o->n_gen, true, r)) goto done;
    }
    rc = 0;
done:
    kiln_ctx_free(c);
    free(ids);
    return rc;
}

/* Each row's limit, from the model and the machine. */
static void set_limits(struct bm_row *rows, int n_rows, const kiln_model_desc *d,
                       const kiln_machine_limits *l) {
    for (int i = 0; i < n_rows; i++) {
        struct bm_row *r = &rows[i];
        if (!strncmp(r->test, "tg", 2)) {
            r->limit = d->n_bytes ? l->read_gbs * 1e9 / (double)d->n_bytes : 0;
            snprintf(r->basis, sizeof r->basis, "read %.1f GB/s / %.1f MiB per token", l->read_gbs,
                     (double)d->n_bytes / (1024.0 * 1024.0));
        } else
            r->limit = compute_limit(d, l, r->basis, sizeof r->basis);
    }
}

/* ---- encoders ------------------------------------------------------------------------- */

/* The built-in sentences: 256 of varied length, composed from fragments so
 * that the set is fixed without a data file. */
static const char *const subjects[] = {
    "The committee",
    "My neighbour's old dog",
    "A small startup in Berlin",
    "The new library downtown",
    "Our team lead",
    "The river near the village",
    "A retired teacher from Ohio",
    "The city council",
    "Most of the students",
    "The weather service",
    "An engineer at the plant",
    "The quiet boy in the back row",
    "The hospital's night staff",
    "A group of volunteers",
    "The museum",
    "Her grandmother",
    "The farmers in the valley",
    "A well-known chef",
    "The airline",
    "Our internet provider",
    "The orchestra",
    "A local bakery",
    "The research group",
    "Two hikers",
    "The software update",
    "The mayor",
    "My sister",
    "The football club",
    "A freight train",
    "The school board",
    "The old lighthouse keeper",
    "A curious child",
};
static const char *const predicates[] = {
    "announced a new policy on remote work",
    "spent the whole afternoon repairing the fence",
    "raised enough money to open a second office",
    "stayed open late for the exam period",
    "asked everyone to submit their reports by Friday",
    "flooded the lower fields",
    "wrote a book about growing vegetables in small gardens",
    "approved the budget for the new bridge",
    "preferred online lectures to classes in person",
    "warned of heavy snow in the mountains",
    "found a faster way to test the valves",
    "won the regional spelling contest",
    "handled twice the usual number of patients",
    "planted three hundred trees along the road",
    "opened an exhibition of early photographs",
    "taught me how to bake bread without yeast",
    "switched to crops that need less water",
    "shared her favourite recipe for lentil soup",
    "cancelled several flights",
    "doubled the speed of our connection",
    "played a concert for the hospital patients",
    "started selling sourdough on Sundays",
    "published a study on sleep and memory",
    "got lost in the fog",
    "fixed the bug that crashed the app",
    "promised cheaper public transport",
    "moved to a flat near the station",
    "signed a young goalkeeper",
    "was delayed by a fallen tree",
    "voted to start classes an hour later",
    "told stories about shipwrecks",
    "asked why the sky turns red at sunset",
};
static const char *const tails[] = {
    "",
    " after the storm had passed",
    " because the budget was cut again this year",
    " on a cold Tuesday morning",
    " despite the complaints from residents",
    " while most people were still on holiday",
    " and nobody seemed surprised",
    " for the first time in a decade",
    " although the forecast had promised sunshine",
    " to the delight of the children",
    " before anyone could stop them",
    " according to a report published last week",
};
static const char *const queries[] = {
    "How do I reset my password?",        "What time does the pharmacy close?",
    "Best way to cook brown rice",        "Is the museum open on Mondays?",
    "Symptoms of a vitamin D deficiency", "Cheap flights to Lisbon in May",
    "How long should I boil an egg?",     "Why is my laptop so slow?",
};

#define N_BUILTIN 256

/* Sentence i of the built-in set into buf. */
static void builtin_sentence(int i, char *buf, size_t cap) {
    size_t ns = sizeof subjects / sizeof *subjects, np = sizeof predicates / sizeof *predicates,
           nt = sizeof tails / sizeof *tails;
    if (i % 8 == 7) {
        snprintf(buf, cap, "%s", queries[(i / 8) % (sizeof queries / sizeof *queries)]);
        return;
    }
    const char *t1 = tails[(size_t)(i * 5 + 1) % nt];
    const char *t2 = i % 2 == 0 ? tails[(size_t)(i * 7 + 4) % nt] : "";
    if (t1 == t2) t2 = "";
    snprintf(buf, cap, "%s %s%s%s.", subjects[(size_t)i % ns],
             predicates[(size_t)(i * 13 + 5) % np], t1, t2);
}

struct texts {
    char **s;
    size_t *len;
    int32_t n, cap;
};

static int texts_add(struct texts *t, const char *s, size_t len) {
    if (t->n == t->cap) {
        int32_t ncap = t->cap ? t->cap * 2 : 256;
        char **ns = realloc(t->s, (size_t)ncap * sizeof *ns);
        if (ns) t->s = ns;
        size_t *nl = realloc(t->len, (size_t)ncap * sizeof *nl);
        if (nl) t->len = nl;
        if (!ns || !nl) return -1;
        t->cap = ncap;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, s, len);
    c[len] = 0;
    t->s[t->n] = c;
    t->len[t->n++] = len;
    return 0;
}

static void texts_free(struct texts *t) {
    for (int32_t i = 0; i < t->n; i++) free(t->s[i]);
    free(t->s);
    free(t->len);
}

/* The sentences: -f FILE (non-empty lines) or the built-in set. */
static int load_texts(const struct bm_opts *o, struct texts *t) {
    char buf[4096];
    if (!o->file) {
        for (int i = 0; i < N_BUILTIN; i++) {
            builtin_sentence(i, buf, sizeof buf);
            if (texts_add(t, buf, strlen(buf))) goto nomem;
        }
        return 0;
    }
    FILE *f = fopen(o->file, "r");
    if (!f) {
        fprintf(stderr, "kiln bench-model: cannot open %s: %s\n", o->file, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (len > 0 && texts_add(t, line, (size_t)len)) {
            free(line);
            fclose(f);
            goto nomem;
        }
    }
    free(line);
    fclose(f);
    if (t->n == 0) {
        fprintf(stderr, "kiln bench-model: %s has no non-empty lines\n", o->file);
        return -1;
    }
    return 0;
nomem:
    fprintf(stderr, "kiln bench-model: out of memory for the sentences\n");
    return -1;
}

/* Embeds all texts in groups of b per kiln_embed call; seconds in *secs.
 * Traced as an "embed_run" span (batch_docs b). */
static kiln_status embed_all(kiln_embed_ctx *e, const struct texts *t, int32_t b, double *secs) {
    TRACE_SCOPE_BEGIN(tr);
    double t0 = now_s();
    for (int32_t i = 0; i < t->n; i += b) {
        int32_t n = t->n - i < b ? t->n - i : b;
        kiln_embeddings *r = NULL;
        kiln_status st = kiln_embed(e, (const char *const *)t->s + i, t->len + i, n, &r, NULL);
        kiln_embeddings_free(r);
        if (st) return st;
    }
    *secs = now_s() - t0;
    if (tr) {
        trace_arg a = TRACE_I("batch_docs", b);
        trace_span("embed_run", "bench", tr, trace_now() - tr, &a, 1);
    }
    return KILN_OK;
}

/* A text of about 10 tokens (special tokens included): words added until
 * the count reaches 10. */
static void short_query(const kiln_model *m, char *buf, size_t cap, int32_t *n_tok) {
    static const char *const words[] = {"how", "do",  "i",     "reset", "the", "password", "on",
                                        "my",  "new", "phone", "after", "an",  "update",   "today"};
    int32_t ids[64];
    size_t n = 0, used = 0;
    buf[0] = 0;
    for (size_t w = 0; w < sizeof words / sizeof *words; w++) {
        int k = snprintf(buf + used, cap - used, "%s%s", used ? " " : "", words[w]);
        if (k < 0 || (size_t)k >= cap - used) break;
        used += (size_t)k;
        if (kiln_tokenize(m, buf, used, 1, ids, 64, &n) != KILN_OK) break;
        if (n >= 10) break;
    }
    *n_tok = (int32_t)n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct query_result {
    int32_t n_tokens, reps;
    double median_ms, min_ms, p90_ms;
    char text[128];
};

static int bench_query(const struct bm_opts *o, kiln_model *m, int32_t n_threads,
                       struct query_result *q) {
    kiln_embed_params p = kiln_embed_default_params();
    p.n_threads = n_threads;
    kiln_embed_ctx *e = kiln_embed_ctx_create(m, &p, NULL);
    double *ms = malloc((size_t)o->query_reps * sizeof *ms);
    int rc = -1;
    if (!e || !ms) {
        fprintf(stderr, "kiln bench-model: %s\n", e ? "out of memory" : kiln_last_error());
        goto done;
    }
    short_query(m, q->text, sizeof q->text, &q->n_tokens);
    const char *text = q->text;
    for (int32_t i = -3; i < o->query_reps; i++) { /* three warm-ups */
        kiln_embeddings *r = NULL;
        double t0 = now_s();
        kiln_status st = kiln_embed(e, &text, NULL, 1, &r, NULL);
        double dt = now_s() - t0;
        kiln_embeddings_free(r);
        if (st) {
            fprintf(stderr, "kiln bench-model: query: %s\n", kiln_last_error());
            goto done;
        }
        if (i >= 0) ms[i] = dt * 1e3;
    }
    qsort(ms, (size_t)o->query_reps, sizeof *ms, cmp_double);
    q->reps = o->query_reps;
    q->median_ms = ms[o->query_reps / 2];
    q->min_ms = ms[0];
    q->p90_ms =
        ms[(o->query_reps * 9) / 10 < o->query_reps ? (o->query_reps * 9) / 10 : o->query_reps - 1];
    rc = 0;
done:
    free(ms);
    kiln_embed_ctx_free(e);
    return rc;
}

static int bench_encoder(const struct bm_opts *o, kiln_model *m, const kiln_machine_limits *l,
                         const struct texts *t, struct bm_row *rows, int *n_rows,
                         struct query_result *q, int64_t *n_tokens) {
    /* tokens per text, to size each batch's pass */
    int32_t *ntok = malloc((size_t)t->n * sizeof *ntok);
    int32_t *ids = malloc(8192 * sizeof *ids);
    if (!ntok || !ids) {
        free(ntok);
        free(ids);
        fprintf(stderr, "kiln bench-model: out of memory\n");
        return -1;
    }
    *n_tokens = 0;
    for (int32_t i = 0; i < t->n; i++) {
        size_t n = 0;
        if (kiln_tokenize(m, t->s[i], t->len[i], 1, ids, 8192, &n) != KILN_OK) n = 8192;
        ntok[i] = (int32_t)n;
        *n_tokens += (int64_t)n;
    }
    free(ids);
    for (int32_t k = 0; k < o->n_sizes; k++) {
        int32_t b = o->sizes[k];
        struct bm_row *r = &rows[(*n_rows)++];
        snprintf(r->test, sizeof r->test, "embed b%d", b);
        r->n_tokens = (int32_t)*n_tokens;
        /* one forward pass per batch: room for the biggest group of b texts */
        int32_t most = 0;
        for (int32_t i = 0; i < t->n; i += b) {
            int32_t sum = 0;
            for (int32_t j = i; j < t->n && j < i + b; j++) sum += ntok[j];
            if (sum > most) most = sum;
        }
        kiln_embed_params p = kiln_embed_default_params();
        p.n_threads = l->n_threads;
        p.batch_tokens = most;
        p.mem_budget = 0;
        kiln_embed_ctx *e = kiln_embed_ctx_create(m, &p, &r->status);
        double s = 0, docs = 0;
        fprintf(stderr, "bench-model: %s (%d tokens per pass): warm-up", r->test, most);
        if (e) r->status = embed_all(e, t, b, &s);
        for (int32_t i = 0; e && !r->status && i < o->reps; i++) {
            r->status = embed_all(e, t, b, &s);
            if (r->status) break;
            r->samples[r->n_samples++] = s > 0 ? (double)*n_tokens / s : 0;
            docs += s > 0 ? t->n / s : 0;
            fprintf(stderr, ", %.0f", r->samples[r->n_samples - 1]);
        }
        fprintf(stderr, " tokens/s\n");
        if (r->status) {
            if (r->status == KILN_ERR_INVALID_ARG || r->status == KILN_ERR_RANGE ||
                r->status == KILN_ERR_UNSUPPORTED) {
                fprintf(stderr, "kiln bench-model: %s\n", kiln_last_error());
                kiln_embed_ctx_free(e);
                free(ntok);
                return -1;
            }
            fprintf(stderr, "bench-model: %s failed: %s\n", r->test, kiln_last_error());
        }
        row_stats(r);
        r->docs_mean = r->n_samples ? docs / r->n_samples : 0;
        kiln_embed_ctx_free(e);
    }
    free(ntok);
    return bench_query(o, m, l->n_threads, q);
}

/* ---- output --------------------------------------------------------------------------- */

static const char *fmt_params(uint64_t n, char *buf, size_t cap) {
    if (n >= 1000000000ull)
        snprintf(buf, cap, "%.2f B", (double)n * 1e-9);
    else if (n >= 1000000ull)
        snprintf(buf, cap, "%.2f M", (double)n * 1e-6);
    else
        snprintf(buf, cap, "%.2f K", (double)n * 1e-3);
    return buf;
}

static const char *fmt_size(uint64_t n, char *buf, size_t cap) {
    double mib = (double)n / (1024.0 * 1024.0);
    if (mib >= 1024.0)
        snprintf(buf, cap, "%.2f GiB", mib / 1024.0);
    else if (mib >= 1.0)
        snprintf(buf, cap, "%.2f MiB", mib);
    else
        snprintf(buf, cap, "%.2f KiB", (double)n / 1024.0);
    return buf;
}

static void print_table(const struct bm_opts *o, const kiln_model *m, const kiln_model_desc *d,
                        const kiln_machine_limits *l, double load, const struct bm_row *rows,
                        int n_rows) {
    char sz[32], np[32];
    bool embed = n_rows > 0 && rows[0].test[0] == 'e';
    printf("kiln bench-model: %s\n", o->model);
    printf("machine: %d threads, load average %.2f | memory read %.1f GB/s | FP32 FMA %.0f "
           "GFLOP/s (%s) | int8 VNNI %.0f GOPS\n\n",
           l->n_threads, load, l->read_gbs, l->fma_gflops, l->fma_isa, l->vnni_gops);
    printf("| %-10s | %10s | %9s | %-7s | %7s | %-10s | %18s |%s %10s | %7s | %s\n", "model",
           "size", "params", "type", "threads", "test", "t/s", embed ? " docs/s     |" : "",
           "limit t/s", "% limit", "limit from");
    printf("| ---------- | ---------: | --------: | ------- | ------: | ---------- | "
           "-----------------: |%s ---------: | ------: | ----------\n",
           embed ? " ---------: |" : "");
    for (int i = 0; i < n_rows; i++) {
        const struct bm_row *r = &rows[i];
        char tps[48], docs[24] = "";
        if (r->status)
            snprintf(tps, sizeof tps, "failed: %s", kiln_status_str(r->status));
        else
            snprintf(tps, sizeof tps, "%.2f \xc2\xb1 %.2f", r->mean, r->sd);
        if (embed) snprintf(docs, sizeof docs, " %10.1f |", r->docs_mean);
        printf("| %-10s | %10s | %9s | %-7s | %7d | %-10s | %19s |%s %10.1f | %6.1f%% | %s\n",
               kiln_model_arch(m), fmt_size(d->n_bytes, sz, sizeof sz),
               fmt_params(d->n_params, np, sizeof np), d->ftype, l->n_threads, r->test, tps, docs,
               r->limit, r->limit > 0 ? 100.0 * r->mean / r->limit : 0, r->basis);
    }
}

static void json_str(FILE *f, const char *s) {
    json_t *v = json_string(s); /* NULL for invalid UTF-8: write it as "" */
    if (!v || json_dumpf(v, f, JSON_ENCODE_ANY) != 0) fputs("\"\"", f);
    json_decref(v);
}

static int write_json(const struct bm_opts *o, const kiln_model *m, const kiln_model_desc *d,
                      const kiln_machine_limits *l, double load, const struct bm_row *rows,
                      int n_rows, const struct query_result *q, int64_t n_texts, int64_t n_tokens,
                      int best) {
    FILE *f = fopen(o->json, "w");
    if (!f) {
        fprintf(stderr, "kiln bench-model: cannot write %s: %s\n", o->json, strerror(errno));
        return -1;
    }
    fprintf(f, "{\n  \"model\": ");
    json_str(f, o->model);
    fprintf(f, ", \"arch\": ");
    json_str(f, kiln_model_arch(m));
    fprintf(f, ", \"type\": ");
    json_str(f, d->ftype);
    fprintf(f,
            ",\n  \"size_bytes\": %llu, \"n_params\": %llu, \"n_matmul_params\": %llu, "
            "\"int8_dot\": %s,\n  \"threads\": %d, \"reps\": %d, \"load_average\": %.2f,\n"
            "  \"machine\": {\"read_gbs\": %.2f, \"fma_gflops\": %.1f, \"fma_isa\": \"%s\", "
            "\"vnni_gops\": %.1f},\n  \"results\": [",
            (unsigned long long)d->n_bytes, (unsigned long long)d->n_params,
            (unsigned long long)d->n_matmul_params, d->int8_dot ? "true" : "false", l->n_threads,
            o->reps, load, l->read_gbs, l->fma_gflops, l->fma_isa, l->vnni_gops);
    for (int i = 0; i < n_rows; i++) {
        const struct bm_row *r = &rows[i];
        fprintf(f,
                "%s\n    {\"test\": \"%s\", \"n_tokens\": %d, \"ok\": %s, \"tps_mean\": %.3f, "
                "\"tps_sd\": %.3f, ",
                i ? "," : "", r->test, r->n_tokens, r->status ? "false" : "true", r->mean, r->sd);
        if (r->test[0] == 'e')
            fprintf(f, "\"batch_docs\": %d, \"docs_per_s\": %.3f, ", o->sizes[i], r->docs_mean);
        fprintf(f, "\"samples\": [");
        for (int32_t k = 0; k < r->n_samples; k++)
            fprintf(f, "%s%.3f", k ? ", " : "", r->samples[k]);
        fprintf(f,
                "], \"limit_tps\": %.3f, \"fraction_of_limit\": %.4f, \"limit_from\": ", r->limit,
                r->limit > 0 ? r->mean / r->limit : 0);
        json_str(f, r->basis);
        fprintf(f, "}");
    }
    fprintf(f, "\n  ]");
    if (q) {
        fprintf(f,
                ",\n  \"embed\": {\"texts\": %lld, \"tokens\": %lld, \"best_batch_docs\": %d,\n"
                "    \"query\": {\"text\": ",
                (long long)n_texts, (long long)n_tokens, best >= 0 ? o->sizes[best] : 0);
        json_str(f, q->text);
        fprintf(f,
                ", \"n_tokens\": %d, \"reps\": %d, \"median_ms\": %.4f, \"min_ms\": %.4f, "
                "\"p90_ms\": %.4f}}",
                q->n_tokens, q->reps, q->median_ms, q->min_ms, q->p90_ms);
    }
    fprintf(f, "\n}\n");
    if (fclose(f)) {
        fprintf(stderr, "kiln bench-model: cannot write %s: %s\n", o->json, strerror(errno));
        return -1;
    }
    return 0;
}

int cmd_bench_model(int argc, char **argv) {
    struct bm_opts o = {.n_prompt = 512,
                        .n_gen = 128,
                        .reps = 3,
                        .n_batch = 512,
                        .query_reps = 50,
                        .sizes = {1, 8, 16, 32, 64, 128, 256},
                        .n_sizes = 7};
    cli_trace_opts_init(&o.trace);
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    rc = 1;
    struct texts t = {0};
    struct bm_row *rows = calloc(MAX_SIZES + 2, sizeof *rows);
    kiln_model *m = NULL;
    trace_session *ts = NULL;
    if (!rows) {
        fprintf(stderr, "kiln bench-model: out of memory\n");
        return 1;
    }
    if (!(m = kiln_model_load(o.model, NULL))) {
        fprintf(stderr, "kiln bench-model: %s\n", kiln_last_error());
        goto done;
    }
    /* an encoder cannot have a generation context: embeddings mode */
    kiln_ctx_params probe = kiln_ctx_default_params();
    probe.n_ctx = 8, probe.n_threads = 1;
    kiln_status st;
    kiln_ctx *pc = o.embed ? NULL : kiln_ctx_create(m, &probe, &st);
    if (!o.embed && !pc) {
        if (st != KILN_ERR_UNSUPPORTED) {
            fprintf(stderr, "kiln bench-model: %s\n", kiln_last_error());
            goto done;
        }
        o.embed = true;
        fprintf(stderr, "bench-model: %s is an encoder: benchmarking embeddings\n", o.model);
    }
    kiln_ctx_free(pc);

    kiln_model_desc d;
    kiln_machine_limits l;
    if (kiln_model_describe(m, &d) != KILN_OK) {
        fprintf(stderr, "kiln bench-model: %s\n", kiln_last_error());
        goto done;
    }
    double load = load_average();
    if (load > 0.5)
        fprintf(stderr,
                "bench-model: warning: load average %.1f: other work on this machine lowers and "
                "scatters the numbers\n",
                load);
    if (o.embed && load_texts(&o, &t)) goto done;
    if (measure(&o, &l, false)) goto done;
    int n_rows = 0, best = -1;
    struct query_result q = {0};
    int64_t n_tokens = 0;
    bool trace_failed;
    ts = cli_trace_start(&o.trace, "bench-model", &trace_failed);
    if (trace_failed) goto done;
    if (o.embed) {
        if (bench_encoder(&o, m, &l, &t, rows, &n_rows, &q, &n_tokens)) goto done;
        for (int i = 0; i < n_rows; i++)
            if (!rows[i].status && (best < 0 || rows[i].mean > rows[best].mean)) best = i;
    } else if (bench_decoder(&o, m, &l, rows, &n_rows))
        goto done;
    trace_stop(ts);
    if (measure(&o, &l, true)) goto done; /* the contexts and their threads are gone */
    set_limits(rows, n_rows, &d, &l);
    print_table(&o, m, &d, &l, load, rows, n_rows);
    if (o.embed) {
        printf("\n%d sentences, %lld tokens (%.1f per sentence)", t.n, (long long)n_tokens,
               t.n ? (double)n_tokens / t.n : 0);
        if (best >= 0)
            printf("; best batch: %d documents, %.1f docs/s, %.1f tokens/s (%.1f%% of the FLOP "
                   "limit)\n",
                   o.sizes[best], rows[best].docs_mean, rows[best].mean,
                   rows[best].limit > 0 ? 100.0 * rows[best].mean / rows[best].limit : 0);
        else
            printf("; no batch size ran\n");
        printf("single query (\"%s\", %d tokens): median %.3f ms, min %.3f ms, p90 %.3f ms over "
               "%d runs (tokenize + forward + pooling)\n",
               q.text, q.n_tokens, q.median_ms, q.min_ms, q.p90_ms, q.reps);
    }
    if (o.json &&
        write_json(&o, m, &d, &l, load, rows, n_rows, o.embed ? &q : NULL, t.n, n_tokens, best))
        goto done;
    if (ts) {
        json_t *od = json_pack("{s:s,s:s,s:s,s:i,s:i,s:{s:f,s:f,s:f}}", "version", kiln_version(),
                               "model", o.model, "schedule", "kiln bench-model", "threads",
                               l.n_threads, "reps", o.reps, "machine", "read_gbs", l.read_gbs,
                               "fma_gflops", l.fma_gflops, "vnni_gops", l.vnni_gops);
        if (cli_trace_write(ts, &o.trace, "bench-model", od)) goto done;
    }
    rc = 0;
done:
    trace_free(ts);
    texts_free(&t);
    free(rows);
    kiln_model_free(m);
    return rc;
}

/* perplexity.c - `kiln perplexity`: how well a model predicts a text, and
 * how far a model's next-token distributions are from another's (how users
 * judge a quantization).
 *
 * The text is tokenized (BOS added as the model asks) and cut into chunks of
 * --ctx tokens; the tail that does not fill a chunk is dropped. Each chunk is
 * evaluated from an empty KV cache with teacher forcing (one kiln_decode
 * with all logits); when the token list starts with BOS, every chunk's first
 * token is replaced by BOS, so each chunk starts like a document. As in
 * llama.cpp's perplexity, only the second half of each chunk is scored: the
 * tokens at chunk positions ctx/2 + 1 .. ctx - 1, each predicted from at
 * least ctx/2 tokens of context, so the score does not reward or punish how
 * the model copes with a nearly empty context. Perplexity is exp(mean
 * negative log-likelihood) over the scored tokens; the +/- is its standard
 * error from the spread of the per-token values (scored tokens treated as
 * independent).
 *
 * --dump-logits writes, for every scored token, the top-k logits of the
 * distribution that predicted it, its log-sum-exp and the token's NLL, plus
 * the token list and the chunking, as JSON. --compare FILE reads such a dump
 * from another model file (same vocabulary), evaluates the same tokens in
 * the same chunks, and reports both perplexities, the mean KL divergence
 * KL(reference || this model) and how often both models' most likely token
 * agree. The KL uses kiln_kl_top_k's approximation (kiln.h): the reference is
 * known only by its top k, so both distributions are compared over those k
 * tokens plus one bucket for all others - a lower bound of the true KL.
 *
 * Progress and results go to stdout; errors are one line on stderr (exit 1;
 * usage errors exit 2). Uses only the public API (kiln.h) and jansson. */
#include "cli/commands.h"
#include "kiln.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PPL_DEFAULT_CTX  512
#define PPL_DEFAULT_TOPK 20
#define PPL_MAX_TOPK     1024

struct ppl_opts {
    const char *model, *text, *tokens, *dump, *compare;
    int32_t n_ctx, n_batch, n_threads, top_k;
};

/* A dump read back for --compare: one entry per scored token. */
struct ref_dump {
    char model[512];
    int32_t n_vocab, n_ctx, top_k;
    int32_t *tokens;
    size_t n_tokens;
    size_t n_pos;
    int64_t *pos;
    double *lse, *nll;
    int32_t *ids;  /* n_pos * top_k */
    float *logits; /* n_pos * top_k */
};

/* Mean and standard error of a series of per-token values. */
struct series {
    double n, s1, s2;
};

static void series_add(struct series *s, double v) {
    s->n += 1, s->s1 += v, s->s2 += v * v;
}
static double series_mean(const struct series *s) {
    return s->n > 0 ? s->s1 / s->n : 0;
}
static double series_sem(const struct series *s) {
    if (s->n < 2) return 0;
    double m = series_mean(s), var = s->s2 / s->n - m * m;
    return var > 0 ? sqrt(var / (s->n - 1)) : 0;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: kiln perplexity -m MODEL.gguf (-f TEXT | --tokens FILE | --compare DUMP) "
            "[options]\n\n"
            "Perplexity of a text under a model: the text is tokenized (BOS added as the model\n"
            "asks), cut into chunks of --ctx tokens, each chunk evaluated from an empty cache,\n"
            "and the second half of every chunk scored (as llama.cpp's perplexity does).\n"
            "Prints the running perplexity per chunk, [1]x,[2]y,..., then PPL = X +/- Y.\n\n"
            "  -m, --model FILE      GGUF model (a decoder)\n"
            "  -f, --file FILE       the text to score\n"
            "      --tokens FILE     score these token ids instead (a JSON list or\n"
            "                        whitespace-separated ids)\n"
            "  -c, --ctx N           tokens per chunk (default: min(512, the model's context))\n"
            "  -b, --batch N         most tokens per forward pass (default: --ctx)\n"
            "  -t, --threads N       threads (default: physical cores)\n"
            "      --dump-logits FILE  write the top-k logits of every scored position, their\n"
            "                        log-sum-exp and the token list as JSON\n"
            "      --top-k K         logits kept per position in the dump (default %d)\n"
            "      --compare DUMP    evaluate the dump's tokens in its chunks and compare with\n"
            "                        it: both perplexities, mean KL(dump || this model) and\n"
            "                        top-1 agreement. The dump keeps only the top k logits, so\n"
            "                        the KL compares those k tokens plus one bucket for the\n"
            "                        rest (a lower bound of the true KL).\n",
            PPL_DEFAULT_TOPK);
}

static bool parse_i32(const char *s, long lo, long hi, int32_t *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = (int32_t)v;
    return true;
}

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct ppl_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln perplexity: %s needs a value (kiln perplexity --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        bool ok = true;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file"))
            o->text = v;
        else if (!strcmp(a, "--tokens"))
            o->tokens = v;
        else if (!strcmp(a, "--dump-logits"))
            o->dump = v;
        else if (!strcmp(a, "--compare"))
            o->compare = v;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
            ok = parse_i32(v, 4, 1L << 20, &o->n_ctx);
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch"))
            ok = parse_i32(v, 1, 1L << 20, &o->n_batch);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = parse_i32(v, 1, 1024, &o->n_threads);
        else if (!strcmp(a, "--top-k"))
            ok = parse_i32(v, 1, PPL_MAX_TOPK, &o->top_k);
        else {
            fprintf(stderr, "kiln perplexity: unknown option: %s (kiln perplexity --help)\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "kiln perplexity: bad value for %s: '%s'\n", a, v);
            return 2;
        }
    }
    int inputs = (o->text != NULL) + (o->tokens != NULL) + (o->compare != NULL);
    if (!o->model || inputs != 1) {
        fprintf(stderr, "kiln perplexity: -m MODEL and one of -f TEXT, --tokens FILE or "
                        "--compare DUMP are required (kiln perplexity --help)\n");
        return 2;
    }
    return -1;
}

/* The whole file in a new NUL-terminated buffer; NULL with a message. */
static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (!f) {
        fprintf(stderr, "kiln perplexity: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (cap - n < 65536) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                fprintf(stderr, "kiln perplexity: %s: out of memory\n", path);
                goto fail;
            }
            buf = nb, cap = ncap;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        fprintf(stderr, "kiln perplexity: cannot read %s: %s\n", path, strerror(errno));
        goto fail;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* Token ids from a JSON array or whitespace-separated integers. */
static int32_t *read_token_file(const char *path, size_t *n_out) {
    size_t len, n = 0, cap = 0;
    char *text = read_all(path, &len);
    int32_t *ids = NULL;
    if (!text) return NULL;
    const char *p = text + strspn(text, " \t\r\n");
    if (*p == '[') {
        json_error_t err;
        json_t *arr = json_loads(text, 0, &err);
        if (!arr || !json_is_array(arr)) {
            fprintf(stderr, "kiln perplexity: %s: not a JSON list of token ids (line %d: %s)\n",
                    path, err.line, err.text);
            json_decref(arr);
            goto fail;
        }
        n = json_array_size(arr);
        ids = malloc((n ? n : 1) * sizeof *ids);
        for (size_t i = 0; ids && i < n; i++) {
            json_t *v = json_array_get(arr, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > INT32_MAX) {
                fprintf(stderr, "kiln perplexity: %s: item %zu is not a token id\n", path, i);
                json_decref(arr);
                goto fail;
            }
            ids[i] = (int32_t)json_integer_value(v);
        }
        json_decref(arr);
    } else {
        while (*p) {
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || v < 0 || v > INT32_MAX) {
                fprintf(stderr, "kiln perplexity: %s: bad token id at byte %zu\n", path,
                        (size_t)(p - text));
                goto fail;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                int32_t *ni = realloc(ids, cap * sizeof *ids);
                if (!ni) goto nomem;
                ids = ni;
            }
            ids[n++] = (int32_t)v;
            p = end + strspn(end, " \t\r\n,");
        }
    }
    if (!ids) goto nomem;
    free(text);
    *n_out = n;
    return ids;
nomem:
    fprintf(stderr, "kiln perplexity: %s: out of memory\n", path);
fail:
    free(ids);
    free(text);
    return NULL;
}

static void ref_free(struct ref_dump *r) {
    free(r->tokens);
    free(r->pos);
    free(r->lse);
    free(r->nll);
    free(r->ids);
    free(r->logits);
}

static bool json_int_field(json_t *obj, const char *key, long lo, long hi, int64_t *out) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return false;
    *out = json_integer_value(v);
    return true;
}

static bool json_num_array(json_t *arr, size_t n, double *out) {
    if (!json_is_array(arr) || json_array_size(arr) != n) return false;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_number(v)) return false;
        out[i] = json_number_value(v);
    }
    return true;
}

/* Reads a --dump-logits file; 0 on success, else a message on stderr. */
static int read_dump(const char *path, struct ref_dump *r) {
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    const char *why = NULL;
    size_t bad_at = 0;
    memset(r, 0, sizeof *r);
    if (!root) {
        fprintf(stderr, "kiln perplexity: %s: not a logits dump: line %d: %s\n", path, err.line,
                err.text);
        return -1;
    }
    json_t *model = json_object_get(root, "model");
    snprintf(r->model, sizeof r->model, "%s",
             json_is_string(model) ? json_string_value(model) : "?");
    int64_t n_vocab, n_ctx, top_k;
    if (!json_int_field(root, "n_vocab", 1, INT32_MAX, &n_vocab) ||
        !json_int_field(root, "n_ctx", 4, INT32_MAX, &n_ctx) ||
        !json_int_field(root, "top_k", 1, PPL_MAX_TOPK, &top_k)) {
        why = "n_vocab, n_ctx or top_k missing or out of range";
        goto fail;
    }
    r->n_vocab = (int32_t)n_vocab, r->n_ctx = (int32_t)n_ctx, r->top_k = (int32_t)top_k;
    json_t *toks = json_object_get(root, "tokens"), *pos = json_object_get(root, "positions");
    if (!json_is_array(toks) || !json_is_array(pos)) {
        why = "no \"tokens\" or \"positions\" list";
        goto fail;
    }
    r->n_tokens = json_array_size(toks);
    r->n_pos = json_array_size(pos);
    size_t k = (size_t)r->top_k, np = r->n_pos ? r->n_pos : 1;
    r->tokens = malloc((r->n_tokens ? r->n_tokens : 1) * sizeof *r->tokens);
    r->pos = malloc(np * sizeof *r->pos);
    r->lse = malloc(np * sizeof *r->lse);
    r->nll = malloc(np * sizeof *r->nll);
    r->ids = malloc(np * k * sizeof *r->ids);
    r->logits = malloc(np * k * sizeof *r->logits);
    double *tmp = malloc(k * sizeof *tmp);
    if (!r->tokens || !r->pos || !r->lse || !r->nll || !r->ids || !r->logits || !tmp) {
        free(tmp);
        why = "out of memory";
        goto fail;
    }
    for (size_t i = 0; i < r->n_tokens; i++) {
        json_t *t = json_array_get(toks, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 ||
            json_integer_value(t) >= r->n_vocab) {
            free(tmp);
            why = "a token id outside the vocabulary in \"tokens\"";
            bad_at = i;
            goto fail;
        }
        r->tokens[i] = (int32_t)json_integer_value(t);
    }
    for (size_t i = 0; i < r->n_pos; i++) {
        json_t *e = json_array_get(pos, i), *l = json_object_get(e, "lse"),
               *nl = json_object_get(e, "nll");
        bad_at = i;
        if (!json_int_field(e, "pos", 1, (long)r->n_tokens - 1, &r->pos[i]) || !json_is_number(l) ||
            !json_is_number(nl) || !json_num_array(json_object_get(e, "ids"), k, tmp)) {
            free(tmp);
            why = "a malformed entry in \"positions\"";
            goto fail;
        }
        r->lse[i] = json_number_value(l);
        r->nll[i] = json_number_value(nl);
        for (size_t j = 0; j < k; j++) r->ids[i * k + j] = (int32_t)tmp[j];
        if (!json_num_array(json_object_get(e, "logits"), k, tmp)) {
            free(tmp);
            why = "a malformed \"logits\" list in \"positions\"";
            goto fail;
        }
        for (size_t j = 0; j < k; j++) r->logits[i * k + j] = (float)tmp[j];
    }
    free(tmp);
    json_decref(root);
    return 0;
fail:
    fprintf(stderr, "kiln perplexity: %s: not a usable logits dump: %s (item %zu)\n", path, why,
            bad_at);
    json_decref(root);
    ref_free(r);
    return -1;
}

/* The JSON string body of s (quotes, backslashes and control bytes escaped). */
static void json_str(FILE *f, const char *s) {
    json_t *v = json_string(s); /* NULL for invalid UTF-8: write it as "" */
    if (!v || json_dumpf(v, f, JSON_ENCODE_ANY) != 0) fputs("\"\"", f);
    json_decref(v);
}

/* Everything one evaluation pass needs and accumulates. */
struct eval {
    const struct ppl_opts *o;
    kiln_model *m;
    kiln_ctx *c;
    int32_t n_vocab, n_ctx, first;
    const int32_t *tokens;
    size_t n_tokens;
    bool bos_first;
    float *logits;
    /* --dump-logits */
    FILE *dump;
    int32_t *top_ids;
    float *top_vals;
    size_t n_dumped;
    /* --compare */
    const struct ref_dump *ref;
    size_t ref_i;
    struct series nll, ref_nll, kl;
    double kl_max;
    size_t agree;
};

static int write_dump_head(struct eval *e) {
    FILE *f = e->dump;
    fprintf(f, "{\"format\": \"kiln-logits-1\", \"model\": ");
    json_str(f, e->o->model);
    fprintf(f,
            ",\n \"n_vocab\": %d, \"n_ctx\": %d, \"first\": %d, \"top_k\": %d, "
            "\"bos_first\": %s,\n \"tokens\": [",
            e->n_vocab, e->n_ctx, e->first, e->o->top_k, e->bos_first ? "true" : "false");
    for (size_t i = 0; i < e->n_tokens; i++)
        fprintf(f, "%s%d", i ? (i % 32 ? ", " : ",\n  ") : "", e->tokens[i]);
    fprintf(f, "],\n \"positions\": [");
    return 0;
}

/* Scores the position predicting tokens[pos] from the logits row. */
static int score(struct eval *e, size_t pos, const float *row) {
    int32_t target = e->tokens[pos];
    double lse = kiln_logsumexp(row, e->n_vocab);
    double nll = lse - (double)row[target];
    series_add(&e->nll, nll);
    if (e->dump) {
        int32_t k = kiln_top_k(row, e->n_vocab, e->o->top_k, e->top_ids, e->top_vals);
        fprintf(e->dump, "%s\n  {\"pos\": %zu, \"lse\": %.9g, \"nll\": %.9g, \"ids\": [",
                e->n_dumped ? "," : "", pos, lse, nll);
        for (int32_t i = 0; i < k; i++) fprintf(e->dump, "%s%d", i ? ", " : "", e->top_ids[i]);
        fprintf(e->dump, "], \"logits\": [");
        for (int32_t i = 0; i < k; i++)
            fprintf(e->dump, "%s%.9g", i ? ", " : "", (double)e->top_vals[i]);
        fprintf(e->dump, "]}");
        e->n_dumped++;
    }
    if (e->ref) {
        const struct ref_dump *r = e->ref;
        if (e->ref_i >= r->n_pos || r->pos[e->ref_i] != (int64_t)pos) {
            fprintf(stderr,
                    "kiln perplexity: %s: the dump's scored positions do not match its chunks "
                    "(entry %zu)\n",
                    e->o->compare, e->ref_i);
            return -1;
        }
        size_t k = (size_t)r->top_k, i = e->ref_i++;
        double kl;
        if (kiln_kl_top_k(r->ids + i * k, r->logits + i * k, r->top_k, r->lse[i], row, e->n_vocab,
                          lse, &kl) != KILN_OK) {
            fprintf(stderr, "kiln perplexity: %s: entry %zu: %s\n", e->o->compare, i,
                    kiln_last_error());
            return -1;
        }
        series_add(&e->kl, kl);
        if (kl > e->kl_max) e->kl_max = kl;
        series_add(&e->ref_nll, r->nll[i]);
        int32_t best;
        kiln_top_k(row, e->n_vocab, 1, &best, NULL);
        if (best == r->ids[i * k]) e->agree++;
    }
    return 0;
}

/* Evaluates every chunk, printing the running perplexity. */
static int run_chunks(struct eval *e) {
    size_t n_chunk = e->n_tokens / (size_t)e->n_ctx;
    int32_t *chunk = malloc((size_t)e->n_ctx * sizeof *chunk);
    if (!chunk) {
        fprintf(stderr, "kiln perplexity: out of memory\n");
        return -1;
    }
    int32_t bos = kiln_token_bos(e->m);
    for (size_t ci = 0; ci < n_chunk; ci++) {
        size_t start = ci * (size_t)e->n_ctx;
        memcpy(chunk, e->tokens + start, (size_t)e->n_ctx * sizeof *chunk);
        if (e->bos_first) chunk[0] = bos;
        kiln_ctx_reset(e->c);
        if (kiln_decode(e->c, chunk, e->n_ctx, e->logits, 1) != KILN_OK) {
            fprintf(stderr, "\nkiln perplexity: chunk %zu: %s\n", ci + 1, kiln_last_error());
            free(chunk);
            return -1;
        }
        for (int32_t j = e->first; j < e->n_ctx - 1; j++)
            if (score(e, start + (size_t)j + 1, e->logits + (size_t)j * (size_t)e->n_vocab)) {
                free(chunk);
                return -1;
            }
        printf("[%zu]%.4f,", ci + 1, exp(series_mean(&e->nll)));
        fflush(stdout);
    }
    printf("\n");
    free(chunk);
    return 0;
}

static void print_results(const struct eval *e, double seconds) {
    double ppl = exp(series_mean(&e->nll));
    printf("scored %.0f tokens in %zu chunks of %d (second half of each), %.2f s, %.1f tokens/s\n",
           e->nll.n, e->n_tokens / (size_t)e->n_ctx, e->n_ctx, seconds,
           seconds > 0 ? (double)(e->n_tokens / (size_t)e->n_ctx * (size_t)e->n_ctx) / seconds : 0);
    printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, ppl * series_sem(&e->nll));
    if (!e->ref) return;
    double rppl = exp(series_mean(&e->ref_nll));
    printf("compare with %s (model %s, top %d logits per position):\n", e->o->compare,
           e->ref->model, e->ref->top_k);
    printf("  PPL reference   %.4f +/- %.5f\n", rppl, rppl * series_sem(&e->ref_nll));
    printf("  PPL this model  %.4f +/- %.5f  (ratio %.4f)\n", ppl, ppl * series_sem(&e->nll),
           rppl > 0 ? ppl / rppl : 0);
    printf("  mean KL divergence  %.6f +/- %.6f nats  (max %.6f; top-%d + tail approximation)\n",
           series_mean(&e->kl), series_sem(&e->kl), e->kl_max, e->ref->top_k);
    printf("  top-1 agreement     %.2f %%  (%zu of %.0f)\n",
           e->kl.n > 0 ? 100.0 * (double)e->agree / e->kl.n : 0, e->agree, e->kl.n);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The tokens to score, from -f, --tokens or the dump. */
static int32_t *load_tokens(const struct ppl_opts *o, const kiln_model *m,
                            const struct ref_dump *ref, size_t *n) {
    if (ref) {
        int32_t *t = malloc((ref->n_tokens ? ref->n_tokens : 1) * sizeof *t);
        if (!t) {
            fprintf(stderr, "kiln perplexity: out of memory\n");
            return NULL;
        }
        memcpy(t, ref->tokens, ref->n_tokens * sizeof *t);
        *n = ref->n_tokens;
        return t;
    }
    if (o->tokens) return read_token_file(o->tokens, n);
    size_t len;
    char *text = read_all(o->text, &len);
    if (!text) return NULL;
    int32_t *ids = malloc((len + 2) * sizeof *ids);
    if (!ids || kiln_tokenize(m, text, len, 1, ids, len + 2, n) != KILN_OK) {
        fprintf(stderr, "kiln perplexity: %s: %s\n", o->text,
                ids ? kiln_last_error() : "out of memory");
        free(ids);
        ids = NULL;
    }
    free(text);
    return ids;
}

int cmd_perplexity(int argc, char **argv) {
    struct ppl_opts o = {.top_k = PPL_DEFAULT_TOPK};
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;

    struct ref_dump ref;
    bool have_ref = false;
    struct eval e = {.o = &o};
    int32_t *tokens = NULL;
    rc = 1;
    if (o.compare) {
        if (read_dump(o.compare, &ref)) return 1;
        have_ref = true;
        e.ref = &ref;
    }
    if (!(e.m = kiln_model_load(o.model, NULL))) {
        fprintf(stderr, "kiln perplexity: %s\n", kiln_last_error());
        goto done;
    }
    e.n_vocab = kiln_model_n_vocab(e.m);
    if (have_ref) {
        if (ref.n_vocab != e.n_vocab) {
            fprintf(stderr,
                    "kiln perplexity: %s has %d logits per position but %s has a vocabulary of "
                    "%d: the models must share a vocabulary\n",
                    o.compare, ref.n_vocab, o.model, e.n_vocab);
            goto done;
        }
        if (o.n_ctx && o.n_ctx != ref.n_ctx) {
            fprintf(stderr, "kiln perplexity: --ctx %d differs from the dump's chunks of %d\n",
                    o.n_ctx, ref.n_ctx);
            goto done;
        }
        o.n_ctx = ref.n_ctx;
    }
    if (!o.n_ctx) {
        o.n_ctx = kiln_model_n_ctx_train(e.m);
        if (o.n_ctx > PPL_DEFAULT_CTX || o.n_ctx <= 0) o.n_ctx = PPL_DEFAULT_CTX;
    }
    if (!(tokens = load_tokens(&o, e.m, e.ref, &e.n_tokens))) goto done;
    for (size_t i = 0; i < e.n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= e.n_vocab) {
            fprintf(stderr, "kiln perplexity: token %zu is %d, outside the vocabulary of %d\n", i,
                    tokens[i], e.n_vocab);
            goto done;
        }
    e.tokens = tokens;
    e.n_ctx = o.n_ctx;
    e.first = o.n_ctx / 2;
    if (e.n_tokens < (size_t)o.n_ctx) {
        fprintf(stderr,
                "kiln perplexity: the input has %zu tokens, fewer than one chunk of %d (use a "
                "longer text or a smaller --ctx)\n",
                e.n_tokens, o.n_ctx);
        goto done;
    }
    e.bos_first = kiln_token_bos(e.m) >= 0 && tokens[0] == kiln_token_bos(e.m);

    kiln_ctx_params cp = kiln_ctx_default_params();
    cp.n_ctx = o.n_ctx;
    cp.n_batch = o.n_batch ? (o.n_batch < o.n_ctx ? o.n_batch : o.n_ctx) : o.n_ctx;
    cp.n_threads = o.n_threads;
    e.logits = malloc((size_t)o.n_ctx * (size_t)e.n_vocab * sizeof *e.logits);
    e.top_ids = malloc((size_t)o.top_k * sizeof *e.top_ids);
    e.top_vals = malloc((size_t)o.top_k * sizeof *e.top_vals);
    if (!e.logits || !e.top_ids || !e.top_vals) {
        fprintf(stderr, "kiln perplexity: out of memory for %d x %d logits\n", o.n_ctx, e.n_vocab);
        goto done;
    }
    if (!(e.c = kiln_ctx_create(e.m, &cp, NULL))) {
        fprintf(stderr, "kiln perplexity: %s\n", kiln_last_error());
        goto done;
    }
    if (o.dump) {
        if (!(e.dump = fopen(o.dump, "w"))) {
            fprintf(stderr, "kiln perplexity: cannot write %s: %s\n", o.dump, strerror(errno));
            goto done;
        }
        write_dump_head(&e);
    }
    printf("perplexity: %s, %zu tokens, %zu chunks of %d, %d threads%s\n", o.model, e.n_tokens,
           e.n_tokens / (size_t)o.n_ctx, o.n_ctx, kiln_ctx_n_threads(e.c),
           e.bos_first ? ", BOS starts each chunk" : "");
    double t0 = now_s();
    if (run_chunks(&e)) goto done;
    double seconds = now_s() - t0;
    if (e.ref && e.ref_i != ref.n_pos) {
        fprintf(stderr, "kiln perplexity: %s has %zu scored positions but its chunks give %zu\n",
                o.compare, ref.n_pos, e.ref_i);
        goto done;
    }
    if (e.dump) {
        fprintf(e.dump, "\n ]}\n");
        FILE *f = e.dump;
        e.dump = NULL;
        if (fclose(f)) {
            fprintf(stderr, "kiln perplexity: cannot write %s: %s\n", o.dump, strerror(errno));
            goto done;
        }
    }
    print_results(&e, seconds);
    rc = 0;
done:
    if (e.dump) fclose(e.dump);
    free(e.logits);
    free(e.top_ids);
    free(e.top_vals);
    free(tokens);
    kiln_ctx_free(e.c);
    kiln_model_free(e.m);
    if (have_ref) ref_free(&ref);
    return rc;
}

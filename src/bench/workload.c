/* workload.c - the requests kiln bench sends: chat, completions or
 * embeddings bodies built once before a run from a JSONL prompt file or
 * from synthetic prompts of a given length, then cycled by request index.
 * Invariant: after a successful bench_workload_init, n_bodies >= 1 and
 * every body is a complete JSON document. */
#include "bench/bench.h"
#include "base/status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *bench_kind_name(bench_kind k) {
    switch (k) {
    case BENCH_CHAT:
        return "chat";
    case BENCH_COMPLETIONS:
        return "completions";
    case BENCH_EMBEDDINGS:
        return "embeddings";
    }
    return "?";
}

bool bench_kind_from_name(const char *name, bench_kind *out) {
    for (int k = BENCH_CHAT; k <= BENCH_EMBEDDINGS; k++)
        if (!strcmp(name, bench_kind_name((bench_kind)k))) return *out = (bench_kind)k, true;
    return false;
}

/* Common English words that are a single token (with their leading space)
 * in GPT-2/Llama/Qwen-style vocabularies. */
static const char *const vocab_words[] = {
    "the",   "of",   "and",  "to",    "in",   "is",    "it",     "that",  "for",   "on",
    "with",  "as",   "was",  "at",    "by",   "be",    "this",   "are",   "from",  "or",
    "have",  "an",   "they", "which", "one",  "you",   "were",   "all",   "we",    "when",
    "there", "can",  "been", "has",   "more", "if",    "will",   "would", "about", "time",
    "them",  "some", "so",   "other", "into", "two",   "like",   "could", "first", "water",
    "new",   "day",  "man",  "house", "work", "world", "life",   "hand",  "part",  "place",
    "year",  "back", "way",  "good",  "long", "great", "little", "old",   "right", "small",
};

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

size_t bench_synth_words(char *buf, size_t cap, int n, uint64_t *rng) {
    size_t len = 0, nw = sizeof vocab_words / sizeof vocab_words[0];
    if (!cap) return 0;
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        const char *w = vocab_words[rng_next(rng) % nw];
        size_t wl = strlen(w);
        if (len + wl + 2 > cap) break;
        if (i) buf[len++] = ' ';
        memcpy(buf + len, w, wl);
        len += wl;
        buf[len] = 0;
    }
    return len;
}

/* A prompt from the file or the generator: text or chat messages. */
typedef struct prompt {
    json_t *text;     /* string, or NULL */
    json_t *messages; /* array, or NULL */
    int max_tokens;   /* 0: none given */
    int words;        /* estimated input tokens */
} prompt;

static int count_words(const char *s) {
    int n = 0;
    bool in = false;
    for (; *s; s++) {
        bool sp = *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r';
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}

/* The prompt as one string (messages' contents joined by newlines). */
static char *prompt_text(const prompt *p) {
    if (p->text) return strdup(json_string_value(p->text));
    size_t len = 0, i;
    json_t *m;
    json_array_foreach(p->messages, i, m) {
        const char *c = json_string_value(json_object_get(m, "content"));
        len += (c ? strlen(c) : 0) + 1;
    }
    char *out = malloc(len + 1);
    if (!out) return NULL;
    len = 0;
    json_array_foreach(p->messages, i, m) {
        const char *c = json_string_value(json_object_get(m, "content"));
        size_t l = c ? strlen(c) : 0;
        if (len) out[len++] = '\n';
        memcpy(out + len, c ? c : "", l);
        len += l;
    }
    out[len] = 0;
    return out;
}

static kiln_status add_body(bench_workload *w, json_t *req, int words, int max_tokens) {
    bench_body *nb = realloc(w->bodies, (w->n_bodies + 1) * sizeof *nb);
    if (!nb) return kiln_fail(KILN_ERR_NOMEM, "bench: out of memory building requests");
    w->bodies = nb;
    char *js = json_dumps(req, JSON_COMPACT);
    if (!js) return kiln_fail(KILN_ERR_NOMEM, "bench: out of memory building requests");
    w->bodies[w->n_bodies++] = (bench_body){
        .json = js, .len = strlen(js), .input_tokens = words, .max_tokens = max_tokens};
    return KILN_OK;
}

/* The chat/completions body for one prompt. */
static kiln_status build_gen(bench_workload *w, const prompt *p) {
    const bench_workload_opts *o = &w->o;
    json_t *req = json_object();
    kiln_status st;
    if (!req) return kiln_fail(KILN_ERR_NOMEM, "bench: out of memory building requests");
    if (o->model) json_object_set_new(req, "model", json_string(o->model));
    if (o->kind == BENCH_CHAT) {
        json_t *msgs = p->messages ? json_incref(p->messages) : json_array();
        if (!p->messages) {
            json_t *m = json_object();
            json_object_set_new(m, "role", json_string("user"));
            json_object_set(m, "content", p->text);
            json_array_append_new(msgs, m);
        }
        json_object_set_new(req, "messages", msgs);
    } else {
        char *t = prompt_text(p);
        if (!t) {
            st = kiln_fail(KILN_ERR_NOMEM, "bench: out of memory building requests");
            goto fail;
        }
        json_object_set_new(req, "prompt", json_string(t));
        free(t);
    }
    int mt = o->max_tokens ? o->max_tokens : p->max_tokens;
    if (mt > 0) json_object_set_new(req, "max_tokens", json_integer(mt));
    if (o->ignore_eos && mt > 0) {
        /* llama.cpp and vLLM (and Kiln) read ignore_eos; vLLM also min_tokens */
        unsigned f = o->eos_fields ? o->eos_fields : BENCH_EOS_IGNORE_EOS | BENCH_EOS_MIN_TOKENS;
        if (f & BENCH_EOS_IGNORE_EOS) json_object_set_new(req, "ignore_eos", json_true());
        if (f & BENCH_EOS_MIN_TOKENS) json_object_set_new(req, "min_tokens", json_integer(mt));
    }
    if (o->stream) {
        json_object_set_new(req, "stream", json_true());
        json_t *so = json_object();
        json_object_set_new(so, "include_usage", json_true());
        json_object_set_new(req, "stream_options", so);
    }
    if (o->extra) json_object_update(req, o->extra);
    st = add_body(w, req, p->words, mt > 0 ? mt : 0);
fail:
    json_decref(req);
    return st;
}

/* Embedding bodies: inputs_per_request consecutive prompts each. */
static kiln_status build_embed(bench_workload *w, const prompt *ps, size_t n) {
    const bench_workload_opts *o = &w->o;
    int per = o->inputs_per_request > 0 ? o->inputs_per_request : 1;
    size_t n_req = n; /* as many bodies as prompts, each starting at its own */
    kiln_status st = KILN_OK;
    for (size_t i = 0; i < n_req && !st; i++) {
        json_t *req = json_object(), *in = json_array();
        int words = 0;
        if (o->model) json_object_set_new(req, "model", json_string(o->model));
        for (int k = 0; k < per; k++) {
            const prompt *p = &ps[(i + (size_t)k) % n];
            char *t = prompt_text(p);
            if (!t) {
                st = kiln_fail(KILN_ERR_NOMEM, "bench: out of memory building requests");
                break;
            }
            json_array_append_new(in, json_string(t));
            free(t);
            words += p->words;
        }
        json_object_set_new(req, "input", in);
        if (o->extra) json_object_update(req, o->extra);
        if (!st) st = add_body(w, req, words, 0);
        json_decref(req);
    }
    return st;
}

static kiln_status parse_line(const char *path, int lineno, const char *line, size_t len,
                              prompt *p) {
    json_error_t e;
    json_t *j = json_loadb(line, len, 0, &e);
    if (!json_is_object(j)) {
        json_decref(j);
        return kiln_fail(KILN_ERR_FORMAT, "%s:%d: not a JSON object (%s)", path, lineno,
                         j ? "another JSON value" : e.text);
    }
    json_t *t = json_object_get(j, "prompt"), *m = json_object_get(j, "messages");
    json_t *mt = json_object_get(j, "max_tokens");
    memset(p, 0, sizeof *p);
    if (json_is_string(t)) {
        p->text = json_incref(t);
        p->words = count_words(json_string_value(t));
    } else if (json_is_array(m) && json_array_size(m) > 0) {
        size_t i;
        json_t *x;
        json_array_foreach(m, i, x) {
            const char *c = json_string_value(json_object_get(x, "content"));
            if (!json_is_object(x) || !json_is_string(json_object_get(x, "role"))) {
                json_decref(j);
                return kiln_fail(KILN_ERR_FORMAT, "%s:%d: message %zu lacks a role", path, lineno,
                                 i);
            }
            if (c) p->words += count_words(c);
        }
        p->messages = json_incref(m);
    } else {
        json_decref(j);
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s:%d: needs \"prompt\" (a string) or \"messages\" (an array)", path,
                         lineno);
    }
    if (json_is_integer(mt)) p->max_tokens = (int)json_integer_value(mt);
    json_decref(j);
    return KILN_OK;
}

static kiln_status read_prompts(const char *path, prompt **out, size_t *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return kiln_fail(KILN_ERR_IO, "%s: %s", path, strerror(errno));
    prompt *ps = NULL;
    size_t n = 0, cap = 0, lcap = 0;
    char *line = NULL;
    ssize_t got;
    int lineno = 0;
    kiln_status st = KILN_OK;
    while ((got = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
            len--;
        if (!len) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            prompt *np = realloc(ps, cap * sizeof *np);
            if (!np) {
                st = kiln_fail(KILN_ERR_NOMEM, "bench: out of memory reading %s", path);
                break;
            }
            ps = np;
        }
        if ((st = parse_line(path, lineno, line, len, &ps[n]))) break;
        n++;
    }
    free(line);
    fclose(f);
    if (!st && n == 0) st = kiln_fail(KILN_ERR_INVALID_ARG, "%s: no prompts in the file", path);
    *out = ps;
    *n_out = n;
    return st;
}

static kiln_status synth_prompts(const bench_workload_opts *o, prompt **out, size_t *n_out) {
    size_t n = o->n_prompts > 0 ? (size_t)o->n_prompts : 1024;
    int words = o->input_tokens > 0 ? o->input_tokens : 32;
    prompt *ps = calloc(n, sizeof *ps);
    size_t cap = (size_t)words * 8 + 16;
    char *buf = malloc(cap);
    uint64_t rng = o->seed ? o->seed : 0x6b696c6e;
    kiln_status st = KILN_OK;
    if (!ps || !buf) {
        st = kiln_fail(KILN_ERR_NOMEM, "bench: out of memory making prompts");
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        bench_synth_words(buf, cap, words, &rng);
        ps[i].text = json_string(buf);
        ps[i].words = words;
    }
    free(buf);
    *out = ps;
    *n_out = n;
    return st;
}

kiln_status bench_workload_init(bench_workload *w, const bench_workload_opts *o) {
    memset(w, 0, sizeof *w);
    w->o = *o;
    prompt *ps = NULL;
    size_t n = 0;
    kiln_status st;
    if (o->input_tokens < 0 || o->max_tokens < 0 || o->inputs_per_request < 0)
        return kiln_fail(KILN_ERR_INVALID_ARG, "bench: negative token count or input count");
    st = o->prompt_file ? read_prompts(o->prompt_file, &ps, &n) : synth_prompts(o, &ps, &n);
    if (st) goto done;
    if (o->kind == BENCH_EMBEDDINGS) {
        st = build_embed(w, ps, n);
    } else {
        for (size_t i = 0; i < n && !st; i++) st = build_gen(w, &ps[i]);
    }
done:
    for (size_t i = 0; i < n; i++) {
        json_decref(ps[i].text);
        json_decref(ps[i].messages);
    }
    free(ps);
    if (st) bench_workload_free(w);
    return st;
}

void bench_workload_free(bench_workload *w) {
    for (size_t i = 0; i < w->n_bodies; i++) free(w->bodies[i].json);
    free(w->bodies);
    w->bodies = NULL;
    w->n_bodies = 0;
}

const bench_body *bench_workload_body(const bench_workload *w, uint64_t i) {
    return &w->bodies[i % w->n_bodies];
}

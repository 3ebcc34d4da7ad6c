/* chat.c - `kiln chat`: an interactive chat in the terminal. Reads one user
 * message per line from stdin (a terminal or a pipe; "/exit" or end of
 * input ends it), renders the whole conversation with the model's chat
 * template (or the family named by --chat-template), and streams the
 * assistant's reply to stdout. The KV cache is reused across turns: each
 * new prompt extends the previous one, so only the new tokens are
 * prefilled (kiln_generate_tokens). A timing summary over all turns goes to
 * stderr at the end. Uses only the public API (kiln.h).
 * Exit status: 0 on success, 1 on a runtime error (one line on stderr), 2 on
 * a usage error. */
#include "base/strbuf.h"
#include "cli/commands.h"
#include "cli/gen_opts.h"
#include "kiln.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct chat_opts {
    const char *model, *system, *tmpl;
    struct cli_gen_opts g;
};

static void chat_usage(FILE *out) {
    fprintf(out,
            "usage: kiln chat -m MODEL.gguf [options]\n\n"
            "Chats with the model: reads a user message per line from stdin (/exit or end of\n"
            "input ends the chat) and streams each reply to stdout; a timing summary goes to\n"
            "stderr at the end.\n\n"
            "  -m, --model FILE        GGUF model\n"
            "      --system TEXT       a system message to start the conversation with\n"
            "      --chat-template NAME  the template family to use instead of the model's:\n"
            "                          chatml (qwen), llama2, llama3, mistral-legacy, "
            "mistral-v1,\n"
            "                          mistral-v3, mistral-v3-tekken, mistral-v7, "
            "mistral-v7-tekken,\n"
            "                          gemma, phi3, zephyr (required when the model has none)\n");
    cli_gen_usage(out);
}

static int parse_args(int argc, char **argv, struct chat_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            chat_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--ignore-eos")) {
            o->g.gen.stop_at_eog = 0;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln chat: %s needs a value (kiln chat --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--system"))
            o->system = v;
        else if (!strcmp(a, "--chat-template"))
            o->tmpl = v;
        else {
            int r = cli_gen_opt(&o->g, "chat", a, v);
            if (r < 0) return 2;
            if (r == 0) {
                fprintf(stderr, "kiln chat: unknown option: %s (kiln chat --help)\n", a);
                return 2;
            }
        }
    }
    if (!o->model) {
        fprintf(stderr, "kiln chat: -m MODEL is required (kiln chat --help)\n");
        return 2;
    }
    return -1;
}

/* ---- the conversation ---- */

struct history {
    kiln_chat_message *m;
    size_t n, cap;
};

/* Appends a message, taking ownership of content (malloc'd). */
static bool history_add(struct history *h, const char *role, char *content) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 16;
        kiln_chat_message *m = realloc(h->m, cap * sizeof *m);
        if (!m) return false;
        h->m = m;
        h->cap = cap;
    }
    h->m[h->n++] = (kiln_chat_message){role, content};
    return true;
}

static void history_free(struct history *h) {
    for (size_t i = 0; i < h->n; i++) free((char *)h->m[i].content);
    free(h->m);
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* Totals over the turns. */
struct totals {
    int turns;
    int64_t n_prompt, n_cached, n_gen;
    double t_render, t_prefill, t_decode, t_sample, t_detok;
};

struct session {
    const struct chat_opts *o;
    kiln_model *m;
    kiln_ctx *c;
    const char *family;
    kiln_gen_params gen; /* o->g.gen plus the family's end-of-turn stop strings */
    const char *stops[CLI_MAX_STOP + 8];
    struct history h;
    int32_t *ids;
    size_t ids_cap;
    struct totals tot;
};

static int print_token(void *user, int32_t id, const char *text, size_t len) {
    (void)id;
    strbuf_put(user, text, len);
    if (len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Renders the conversation and tokenizes it into s->ids; returns the count or
 * -1. The messages' text is tokenized as plain text (kiln_chat_tokenize): a
 * line holding "<|im_end|>" cannot end the user's turn early. */
static int32_t build_prompt(struct session *s) {
    size_t n;
    kiln_status st;
    while ((st = kiln_chat_tokenize(s->m, s->o->tmpl, s->h.m, s->h.n, 1, 0, s->ids, s->ids_cap,
                                    &n)) == KILN_ERR_RANGE &&
           n > s->ids_cap) {
        int32_t *p = realloc(s->ids, n * sizeof *p);
        if (!p) return -1;
        s->ids = p;
        s->ids_cap = n;
    }
    return st || n > INT32_MAX ? -1 : (int32_t)n;
}

/* One user message -> one streamed reply. false on a runtime error. */
static bool chat_turn(struct session *s, const char *line) {
    char *msg = dup_str(line);
    if (!msg || !history_add(&s->h, "user", msg)) {
        free(msg);
        return false;
    }
    double t0 = now_s();
    int32_t n = build_prompt(s);
    s->tot.t_render += now_s() - t0;
    if (n < 0) return false;
    strbuf reply = {0};
    kiln_gen_stats st;
    s->gen.sampling.seed = s->o->g.gen.sampling.seed + (uint64_t)s->tot.turns;
    kiln_status rc = kiln_generate_tokens(s->c, s->ids, n, &s->gen, print_token, &reply, &st);
    fputc('\n', stdout);
    fflush(stdout);
    if (rc || reply.oom || !history_add(&s->h, "assistant", reply.p ? reply.p : dup_str(""))) {
        free(reply.p);
        return false;
    }
    s->tot.turns++;
    s->tot.n_prompt += st.n_prompt;
    s->tot.n_cached += st.n_cached;
    s->tot.n_gen += st.n_gen;
    s->tot.t_prefill += st.t_prefill;
    s->tot.t_decode += st.t_decode;
    s->tot.t_sample += st.t_sample;
    s->tot.t_detok += st.t_detok;
    return true;
}

static double per_s(double n, double t) {
    return t > 0 ? n / t : 0;
}

static void print_summary(const struct session *s, double t_load) {
    const struct totals *t = &s->tot;
    double t_gen = t->t_decode + t->t_sample + t->t_detok;
    int64_t n_fwd = t->n_gen > t->turns ? t->n_gen - t->turns : 0;
    fprintf(stderr, "\n--- kiln chat: %s, template %s, context %d, %d threads, seed %llu\n",
            s->o->model, s->family, kiln_ctx_n_ctx(s->c), kiln_ctx_n_threads(s->c),
            (unsigned long long)s->o->g.gen.sampling.seed);
    fprintf(stderr, "load        %10.2f ms\n", t_load * 1e3);
    fprintf(stderr, "turns       %6d\n", t->turns);
    fprintf(stderr,
            "prompt      %6lld tokens in %9.2f ms  %10.1f tokens/s  (+%lld reused from the KV "
            "cache)\n",
            (long long)t->n_prompt, t->t_prefill * 1e3, per_s((double)t->n_prompt, t->t_prefill),
            (long long)t->n_cached);
    fprintf(stderr, "generation  %6lld tokens in %9.2f ms  %10.1f tokens/s\n", (long long)t->n_gen,
            t_gen * 1e3, per_s((double)t->n_gen, t_gen));
    fprintf(stderr,
            "stages      template+tokenize %.3f ms | prefill %.2f ms | decode forward %.2f ms "
            "(%lld x %.3f ms) | sampling %.3f ms | detokenize %.3f ms\n",
            t->t_render * 1e3, t->t_prefill * 1e3, t->t_decode * 1e3, (long long)n_fwd,
            n_fwd ? t->t_decode * 1e3 / (double)n_fwd : 0.0, t->t_sample * 1e3, t->t_detok * 1e3);
}

/* The user's stop strings plus the family's end-of-turn markers. */
static void setup_stops(struct session *s) {
    int32_t n = 0;
    for (int32_t i = 0; i < s->o->g.gen.n_stop; i++) s->stops[n++] = s->o->g.gen.stop[i];
    for (const char *const *p = kiln_chat_stop_strings(s->family); *p && n < CLI_MAX_STOP + 8; p++)
        s->stops[n++] = *p;
    s->gen = s->o->g.gen;
    s->gen.stop = s->stops;
    s->gen.n_stop = n;
}

static bool chat_loop(struct session *s) {
    bool tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    bool ok = true;
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        ssize_t r = getline(&line, &cap, stdin);
        if (r < 0) break;
        while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r')) line[--r] = 0;
        if (!strcmp(line, "/exit")) break;
        if (r == 0) continue;
        if (!(ok = chat_turn(s, line))) break;
    }
    free(line);
    return ok;
}

int cmd_chat(int argc, char **argv) {
    struct chat_opts o = {.model = NULL};
    cli_gen_opts_init(&o.g);
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    if (!o.g.seed_set) o.g.gen.sampling.seed = (uint64_t)time(NULL);

    struct session s = {.o = &o};
    double t0 = now_s();
    bool ok = false;
    if (!(s.m = kiln_model_load(o.model, NULL))) goto done;
    if (!(s.family = kiln_chat_template_family(s.m, o.tmpl))) goto done;
    if (!(s.c = kiln_ctx_create(s.m, &o.g.ctx, NULL))) goto done;
    double t_load = now_s() - t0;
    setup_stops(&s);
    if (o.system && !history_add(&s.h, "system", dup_str(o.system))) goto done;
    if ((ok = chat_loop(&s))) print_summary(&s, t_load);
done:
    if (!ok) {
        fflush(stdout);
        fprintf(stderr, "kiln chat: %s\n", kiln_last_error());
    }
    history_free(&s.h);
    free(s.ids);
    kiln_ctx_free(s.c);
    kiln_model_free(s.m);
    return ok ? 0 : 1;
}

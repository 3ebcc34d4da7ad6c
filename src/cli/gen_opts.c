/* gen_opts.c - parsing the generation options shared by run and chat (see
 * gen_opts.h). */
#include "cli/gen_opts.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void cli_gen_opts_init(struct cli_gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->gen = kiln_gen_default_params();
    o->ctx = kiln_ctx_default_params();
    o->gen.stop = o->stop;
    o->gen.sampling.logit_bias = o->bias;
}

void cli_gen_usage(FILE *out) {
    fprintf(
        out,
        "  -n, --n-predict N       most tokens to generate (default 128)\n"
        "  -c, --ctx N             context size (default: the model's, at most 4096)\n"
        "  -t, --threads N         threads (default: physical cores)\n"
        "      --kv-type T         KV cache type: f16 (default), f32 or q8_0\n"
        "  -b, --batch N           most tokens per prefill step (default 512)\n"
        "      --temp T            temperature; 0 = greedy (default 0.8)\n"
        "      --top-k K           keep the K most likely tokens; 0 = off (default 40)\n"
        "      --top-p P           nucleus sampling; 1 = off (default 0.95)\n"
        "      --min-p P           drop tokens below P x the best's probability (default 0.05)\n"
        "      --repeat-penalty R  penalize the last --repeat-last-n tokens; 1 = off "
        "(default 1)\n"
        "      --repeat-last-n N   the penalties' window (default 64)\n"
        "      --presence-penalty P   subtract P from the logit of every token in the window "
        "(default 0)\n"
        "      --frequency-penalty F  subtract F x its count in the window (default 0)\n"
        "      --logit-bias ID=BIAS   add BIAS to token ID's logit; BIAS -inf bans it "
        "(repeatable)\n"
        "      --stop STR          end the output before STR (repeatable)\n"
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
    if (errno || end == s || *end || isnan(v)) return false;
    *out = v;
    return true;
}

/* ID=BIAS, BIAS a number or -inf. */
static bool parse_bias(const char *v, kiln_logit_bias *b) {
    const char *eq = strchr(v, '=');
    char id[32];
    long l;
    if (!eq || (size_t)(eq - v) >= sizeof id) return false;
    memcpy(id, v, (size_t)(eq - v));
    id[eq - v] = 0;
    if (!parse_long(id, 0, INT32_MAX, &l)) return false;
    b->token = (int32_t)l;
    if (!strcmp(eq + 1, "-inf")) {
        b->bias = -INFINITY;
        return true;
    }
    return parse_float(eq + 1, &b->bias) && isfinite(b->bias);
}

static int bad(const char *cmd, const char *a, const char *v, const char *why) {
    fprintf(stderr, "kiln %s: bad value for %s: '%s'%s%s\n", cmd, a, v, why ? ": " : "",
            why ? why : "");
    return -1;
}

int cli_gen_opt(struct cli_gen_opts *o, const char *cmd, const char *a, const char *v) {
    kiln_sampling *sp = &o->gen.sampling;
    long l;
    bool ok;
    if (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))
        ok = parse_long(v, 0, 1L << 30, &l) && ((o->gen.n_predict = (int32_t)l), true);
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
        ok = parse_long(v, 1, 1L << 24, &l) && ((o->ctx.n_ctx = (int32_t)l), true);
    else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
        ok = parse_long(v, 1, 1024, &l) && ((o->ctx.n_threads = (int32_t)l), true);
    else if (!strcmp(a, "-b") || !strcmp(a, "--batch"))
        ok = parse_long(v, 1, 1L << 20, &l) && ((o->ctx.n_batch = (int32_t)l), true);
    else if (!strcmp(a, "--kv-type")) {
        kiln_type t;
        ok = kiln_type_from_name(v, &t) == KILN_OK &&
             (t == KILN_TYPE_F16 || t == KILN_TYPE_F32 || t == KILN_TYPE_Q8_0);
        if (ok) o->ctx.type_k = o->ctx.type_v = t;
    } else if (!strcmp(a, "--top-k"))
        ok = parse_long(v, 0, 1L << 30, &l) && ((sp->top_k = (int32_t)l), true);
    else if (!strcmp(a, "--repeat-last-n"))
        ok = parse_long(v, 0, 1L << 20, &l) && ((sp->repeat_last_n = (int32_t)l), true);
    else if (!strcmp(a, "--seed")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        ok = !errno && end != v && !*end && v[0] != '-';
        if (ok) sp->seed = s, o->seed_set = true;
    } else if (!strcmp(a, "--temp"))
        ok = parse_float(v, &sp->temp);
    else if (!strcmp(a, "--top-p"))
        ok = parse_float(v, &sp->top_p);
    else if (!strcmp(a, "--min-p"))
        ok = parse_float(v, &sp->min_p);
    else if (!strcmp(a, "--repeat-penalty"))
        ok = parse_float(v, &sp->repeat_penalty) && sp->repeat_penalty > 0;
    else if (!strcmp(a, "--presence-penalty"))
        ok = parse_float(v, &sp->presence_penalty) && isfinite(sp->presence_penalty);
    else if (!strcmp(a, "--frequency-penalty"))
        ok = parse_float(v, &sp->frequency_penalty) && isfinite(sp->frequency_penalty);
    else if (!strcmp(a, "--logit-bias")) {
        if (sp->n_logit_bias == CLI_MAX_BIAS) return bad(cmd, a, v, "too many biases");
        ok = parse_bias(v, &o->bias[sp->n_logit_bias]);
        if (!ok) return bad(cmd, a, v, "want TOKEN_ID=BIAS, BIAS a number or -inf");
        sp->n_logit_bias++;
    } else if (!strcmp(a, "--stop")) {
        if (o->gen.n_stop == CLI_MAX_STOP) return bad(cmd, a, v, "too many stop strings");
        if (!*v) return bad(cmd, a, v, "empty");
        o->stop[o->gen.n_stop++] = v;
        ok = true;
    } else
        return 0;
    return ok ? 1 : bad(cmd, a, v, NULL);
}

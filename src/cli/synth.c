/* synth.c - `kiln synth`: writes a random-weight model of a named shape or of
 * explicit dimensions (model/synth.h does the work). Exit 0 on success, 1 on a
 * runtime error, 2 on a usage error. */
#include "cli/commands.h"
#include "compute/types.h"
#include "kiln.h"
#include "model/quantize.h"
#include "model/synth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct synth_opts {
    const char *arch, *shape, *out, *vocab_from, *name, *type;
    uint32_t dims[7]; /* n_embd n_layer n_head n_head_kv n_ff ctx vocab; 0: unset */
    uint64_t seed;
    int threads;
    bool quiet;
};

static const char *const dim_flags[7] = {"--n-embd", "--n-layer", "--n-head", "--n-head-kv",
                                         "--n-ff",   "--ctx",     "--vocab"};

static void synth_usage(FILE *out) {
    fprintf(out, "usage: kiln synth (--shape NAME | --arch ARCH --n-embd N --n-layer N --n-head N\n"
                 "                  [--n-head-kv N] --n-ff N --ctx N --vocab N) [--type T]\n"
                 "                  [--vocab-from FILE.gguf] [--seed S] [--name NAME]\n"
                 "                  [--threads N] [--quiet] -o OUT.gguf\n"
                 "  ARCH: llama, qwen2, bert, nomic-bert; T: f32, f16 (default), bf16, q8_0,\n"
                 "  q4_0, q4_1, q5_0, q5_1, q2_K..q6_K (or Q4_K_M etc.), iq4_nl, iq4_xs.\n"
                 "  With --shape, the dimension options override the shape's values.\nshapes:\n");
    for (int i = 0; i < synth_shape_count(); i++) {
        const struct synth_shape *s = synth_shape_at(i);
        fprintf(out, "  %-17s %-10s n_embd %u, %u layers, %u/%u heads, n_ff %u, ctx %u, vocab %u\n",
                s->name, arch_get(s->arch)->name, s->n_embd, s->n_layer, s->n_head, s->n_head_kv,
                s->n_ff, s->n_ctx, s->n_vocab);
    }
}

static bool parse_num(const char *s, uint64_t max, uint64_t *out) {
    char *end;
    if (!*s || *s == '-') return false;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end || v > max) return false;
    *out = v;
    return true;
}

/* One option at argv[*i]; false on a usage error (already printed). */
static bool parse_synth_opt(int argc, char **argv, int *i, struct synth_opts *o) {
    const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    uint64_t n;
    if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) return o->quiet = true;
    if (!v) {
        fprintf(stderr, "kiln synth: %s needs a value\n", a);
        return false;
    }
    ++*i;
    const char **str = !strcmp(a, "--arch")         ? &o->arch
                       : !strcmp(a, "--shape")      ? &o->shape
                       : !strcmp(a, "-o")           ? &o->out
                       : !strcmp(a, "--vocab-from") ? &o->vocab_from
                       : !strcmp(a, "--name")       ? &o->name
                       : !strcmp(a, "--type")       ? &o->type
                                                    : NULL;
    if (str) return *str = v, true;
    for (int d = 0; d < 7; d++)
        if (!strcmp(a, dim_flags[d])) {
            if (parse_num(v, UINT32_MAX, &n) && n) return o->dims[d] = (uint32_t)n, true;
            fprintf(stderr, "kiln synth: bad value '%s' for %s\n", v, a);
            return false;
        }
    if (!strcmp(a, "--seed") && parse_num(v, UINT64_MAX, &n)) return o->seed = n, true;
    if (!strcmp(a, "--threads") && parse_num(v, 1024, &n)) return o->threads = (int)n, true;
    fprintf(stderr, "kiln synth: unknown option or bad value: %s %s\n", a, v);
    return false;
}

/* Hyperparameters from --shape and/or the dimension options; 2 on a usage
 * error (printed), else 0. */
static int build_hparams(const struct synth_opts *o, struct arch_hparams *hp) {
    const struct synth_shape *s = NULL;
    struct synth_shape custom = {0};
    if (o->shape && !(s = synth_shape_find(o->shape))) {
        fprintf(stderr, "kiln synth: unknown shape '%s' (kiln synth --help lists them)\n",
                o->shape);
        return 2;
    }
    const struct arch_def *a = o->arch ? arch_find(o->arch) : s ? arch_get(s->arch) : NULL;
    if (!a) {
        if (o->arch)
            fprintf(stderr, "kiln synth: unknown architecture '%s' (%s)\n", o->arch, arch_names());
        else
            fprintf(stderr, "kiln synth: give --shape or --arch\n");
        return 2;
    }
    if (s && a->id != s->arch) {
        fprintf(stderr, "kiln synth: shape %s is %s, not %s\n", s->name, arch_get(s->arch)->name,
                a->name);
        return 2;
    }
    if (s)
        custom = *s;
    else {
        custom.arch = a->id;
        custom.rope_freq_base = a->rope_freq_base_default;
        custom.norm_eps = (a->flags & ARCH_F_LAYERNORM) ? 1e-12f : 1e-5f;
        custom.pooling_type = 1;
    }
    uint32_t *dst[7] = {&custom.n_embd, &custom.n_layer, &custom.n_head, &custom.n_head_kv,
                        &custom.n_ff,   &custom.n_ctx,   &custom.n_vocab};
    for (int d = 0; d < 7; d++)
        if (o->dims[d]) *dst[d] = o->dims[d];
    if (!custom.n_head_kv) custom.n_head_kv = custom.n_head;
    if (!a->tensors[ARCH_T_ATTN_K] || !(a->flags & ARCH_F_CAUSAL)) custom.n_head_kv = custom.n_head;
    if (o->vocab_from && !custom.n_vocab) custom.n_vocab = 1; /* replaced by the file's */
    for (int d = 0; d < 7; d++)
        if (!*dst[d]) {
            fprintf(stderr, "kiln synth: %s is required without --shape\n", dim_flags[d]);
            return 2;
        }
    custom.name = o->shape ? o->shape : a->name;
    if (synth_shape_hparams(&custom, hp)) {
        fprintf(stderr, "kiln synth: %s\n", kiln_last_error());
        return 2;
    }
    return 0;
}

static void synth_progress(void *ud, int index, int count, const char *name, kiln_type type,
                           uint64_t bytes, int64_t ne0, int64_t ne1) {
    if (*(bool *)ud) return;
    char shape[48];
    if (ne1 > 1)
        snprintf(shape, sizeof shape, "%lld x %lld", (long long)ne0, (long long)ne1);
    else
        snprintf(shape, sizeof shape, "%lld", (long long)ne0);
    fprintf(stderr, "[%4d/%d] %-32s %-7s %-14s %10.2f MiB\n", index + 1, count, name,
            kiln_type_name(type), shape, (double)bytes / 1048576.0);
}

int cmd_synth(int argc, char **argv) {
    struct synth_opts o = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            synth_usage(stdout);
            return 0;
        }
        if (!parse_synth_opt(argc, argv, &i, &o)) return 2;
    }
    if (!o.out) {
        fprintf(stderr, "kiln synth: -o OUT.gguf is required\n");
        synth_usage(stderr);
        return 2;
    }
    struct synth_params p = {.vocab_from = o.vocab_from,
                             .seed = o.seed,
                             .n_threads = o.threads,
                             .progress = synth_progress,
                             .ud = &o.quiet,
                             .type = KILN_TYPE_F16};
    struct quant_ftype ft;
    if (o.type && quant_ftype_parse(o.type, &ft)) {
        fprintf(stderr, "kiln synth: %s\n", kiln_last_error());
        return 2;
    }
    if (o.type) p.type = ft.type;
    int rc = build_hparams(&o, &p.hp);
    if (rc) return rc;
    p.name = o.name ? o.name : o.shape ? o.shape : p.hp.arch->name;
    if (synth_write(&p, o.out)) {
        fprintf(stderr, "kiln synth: %s\n", kiln_last_error());
        return 1;
    }
    printf("wrote %s: %s, n_embd %u, %u layers, vocab %s, %s weights, seed %llu\n", o.out,
           p.hp.arch->name, p.hp.n_embd, p.hp.n_layer, o.vocab_from ? o.vocab_from : "generated",
           kiln_type_name(p.type), (unsigned long long)o.seed);
    return 0;
}

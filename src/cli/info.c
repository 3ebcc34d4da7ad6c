/* info.c - `kiln info FILE`: what a GGUF file holds (format, architecture and
 * hyperparameters, tokenizer, other metadata, tensors, totals by type), the
 * kernel variant each matrix type would run and why, and the
 * memory it needs at a context size and batch. Shows what it can for files it
 * cannot run (vocab-only files, unknown architectures, unsupported types) and
 * says what is unsupported; only an unreadable file is an error (exit 1). */
#include "cli/commands.h"
#include "compute/threadpool.h"
#include "compute/tune.h"
#include "compute/types.h"
#include "kiln.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/memory.h"
#include "model/quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct info_opts {
    const char *path;
    uint32_t n_ctx, n_batch, n_seq; /* 0: defaults */
    uint32_t n_threads;             /* 0: the physical cores */
    kiln_type kv_type;
};

/* 1234567 -> "1,234,567" */
static const char *fmt_count(uint64_t v, char *buf, size_t cap) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v), o = 0;
    for (int i = 0; i < n && (size_t)o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static const char *fmt_bytes(uint64_t v, char *buf, size_t cap) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)v;
    int u = 0;
    while (x >= 1024.0 && u < 4) {
        x /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%llu B", (unsigned long long)v);
    else
        snprintf(buf, cap, "%.2f %s", x, units[u]);
    return buf;
}

/* A string value, quoted, control characters escaped, cut at max bytes. */
static void print_str(gguf_str s, size_t max) {
    putchar('"');
    for (uint64_t i = 0; i < s.len && i < max; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
    if (s.len > max) printf("... (%llu bytes)", (unsigned long long)s.len);
}

static void print_value(const gguf_value *v) {
    switch (v->type) {
    case GGUF_VT_STRING:
        print_str(v->str, 60);
        break;
    case GGUF_VT_ARRAY:
        printf("[%s \xc3\x97 %llu]", gguf_vtype_name(v->arr.type), (unsigned long long)v->arr.n);
        break;
    case GGUF_VT_BOOL:
        fputs(v->u64 ? "true" : "false", stdout);
        break;
    case GGUF_VT_FLOAT32:
    case GGUF_VT_FLOAT64:
        printf("%g", v->f64);
        break;
    case GGUF_VT_INT8:
    case GGUF_VT_INT16:
    case GGUF_VT_INT32:
    case GGUF_VT_INT64:
        printf("%lld", (long long)v->i64);
        break;
    default:
        printf("%llu", (unsigned long long)v->u64);
        break;
    }
}

static void print_file(const gguf_file *f) {
    char a[32], b[32], c[32];
    printf("file: %s\n", gguf_path(f));
    printf("  GGUF version %u, %s bytes (%s), alignment %u, tensor data at byte %s\n",
           gguf_version(f), fmt_count(gguf_file_size(f), a, sizeof a),
           fmt_bytes(gguf_file_size(f), b, sizeof b), gguf_alignment(f),
           fmt_count(gguf_data_offset(f), c, sizeof c));
    printf("  %lld metadata keys, %lld tensors\n", (long long)gguf_kv_count(f),
           (long long)gguf_tensor_count(f));
}

static void print_hparams(const struct arch_hparams *hp) {
    const struct arch_def *a = hp->arch;
    unsigned fl = a->flags;
    printf("  %-24s %u\n", "embedding_length", hp->n_embd);
    printf("  %-24s %u\n", "block_count", hp->n_layer);
    printf("  %-24s %u (head dim %u)\n", "attention.head_count", hp->n_head, hp->head_dim);
    printf("  %-24s %u\n", "attention.head_count_kv", hp->n_head_kv);
    printf("  %-24s %u\n", "feed_forward_length", hp->n_ff);
    printf("  %-24s %u\n", "context_length", hp->n_ctx_train);
    printf("  %-24s %u\n", "vocab size", hp->n_vocab);
    printf("  %-24s %g (%s)\n", "norm epsilon", (double)hp->norm_eps,
           fl & ARCH_F_LAYERNORM ? "LayerNorm" : "RMSNorm");
    if (fl & ARCH_F_ROPE)
        printf("  %-24s base %g, %u dims, %s\n", "rope", (double)hp->rope_freq_base, hp->n_rot,
               fl & ARCH_F_ROPE_NEOX ? "NEOX" : "NORM");
    else
        printf("  %-24s learned position embeddings\n", "positions");
    printf("  %-24s %s, %s\n", "blocks",
           fl & ARCH_F_CAUSAL ? "causal decoder" : "bidirectional encoder",
           fl & ARCH_F_GATED_FFN ? "SwiGLU FFN" : "GELU FFN");
    if (!(fl & ARCH_F_CAUSAL)) {
        static const char *const pool[] = {"none", "mean", "cls", "last", "rank"};
        printf("  %-24s %s\n", "pooling", hp->pooling_type < 5 ? pool[hp->pooling_type] : "?");
    }
}

/* Prints the architecture section; returns true when hp is usable. */
static bool print_arch(const gguf_file *f, struct arch_hparams *hp) {
    gguf_str name = {0}, arch = {0};
    gguf_get_str(f, "general.name", &name);
    gguf_get_str(f, "general.architecture", &arch);
    printf("\narchitecture: %.*s", (int)arch.len, arch.ptr ? arch.ptr : "");
    if (name.len) printf(" (\"%.*s\")", (int)(name.len > 60 ? 60 : name.len), name.ptr);
    putchar('\n');
    kiln_status st = arch_hparams_load(f, hp);
    if (st == KILN_ERR_UNSUPPORTED) {
        printf("  unsupported: %s\n", kiln_last_error());
        return false;
    }
    if (st) {
        printf("  invalid: %s\n", kiln_last_error());
        return false;
    }
    print_hparams(hp);
    return true;
}

static uint64_t arr_len(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv && kv->value.type == GGUF_VT_ARRAY ? kv->value.arr.n : 0;
}

static void print_id(const gguf_file *f, const char *label, const char *key) {
    uint32_t v;
    if (gguf_get_u32(f, key, &v) == KILN_OK)
        printf("  %-24s %u%s\n", label, v,
               v >= arr_len(f, "tokenizer.ggml.tokens") ? " (none)" : "");
}

static void print_tokenizer(const gguf_file *f) {
    gguf_str model = {0}, pre = {0}, tmpl = {0};
    if (gguf_get_str(f, "tokenizer.ggml.model", &model)) {
        printf("\ntokenizer: none\n");
        return;
    }
    gguf_get_str(f, "tokenizer.ggml.pre", &pre);
    printf("\ntokenizer: %.*s", (int)model.len, model.ptr);
    if (pre.len) printf(" (pre-tokenizer %.*s)", (int)pre.len, pre.ptr);
    printf("\n  %-24s %llu\n", "vocab size",
           (unsigned long long)arr_len(f, "tokenizer.ggml.tokens"));
    print_id(f, "bos id", "tokenizer.ggml.bos_token_id");
    print_id(f, "eos id", "tokenizer.ggml.eos_token_id");
    print_id(f, "unk id", "tokenizer.ggml.unknown_token_id");
    print_id(f, "pad id", "tokenizer.ggml.padding_token_id");
    bool add_bos;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos) == KILN_OK)
        printf("  %-24s %s\n", "add_bos", add_bos ? "true" : "false");
    bool has_tmpl = gguf_get_str(f, "tokenizer.chat_template", &tmpl) == KILN_OK;
    printf("  %-24s %s", "chat template", has_tmpl ? "yes" : "no");
    if (has_tmpl) printf(" (%llu bytes)", (unsigned long long)tmpl.len);
    printf("\n  %-24s %llu\n", "merges", (unsigned long long)arr_len(f, "tokenizer.ggml.merges"));
}

/* Keys summarised in the sections above (suffixes after "<arch>."). */
static bool key_shown(const char *key, const struct arch_hparams *hp) {
    static const char *const tok[] = {
        "model",        "pre",          "tokens",           "merges",
        "bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id",
        "add_bos_token"};
    static const char *const hpk[] = {
        "embedding_length",        "block_count",          "attention.head_count",
        "attention.head_count_kv", "feed_forward_length",  "context_length",
        "rope.freq_base",          "rope.dimension_count", "pooling_type"};
    if (!strcmp(key, "general.architecture") || !strcmp(key, "general.name") ||
        !strcmp(key, "tokenizer.chat_template"))
        return true;
    if (!strncmp(key, "tokenizer.ggml.", 15))
        for (size_t i = 0; i < sizeof tok / sizeof tok[0]; i++)
            if (!strcmp(key + 15, tok[i])) return true;
    size_t n = hp ? strlen(hp->arch->name) : 0;
    if (!hp || strncmp(key, hp->arch->name, n) || key[n] != '.') return false;
    if (!strcmp(key + n + 1, hp->arch->eps_key)) return true;
    for (size_t i = 0; i < sizeof hpk / sizeof hpk[0]; i++)
        if (!strcmp(key + n + 1, hpk[i])) return true;
    return false;
}

static void print_metadata(const gguf_file *f, const struct arch_hparams *hp) {
    printf("\nmetadata:\n");
    for (int64_t i = 0; i < gguf_kv_count(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (key_shown(kv->key, hp)) continue;
        printf("  %-40s ", kv->key);
        print_value(&kv->value);
        if (!strcmp(kv->key, "general.file_type") && kv->value.type == GGUF_VT_UINT32)
            for (int k = 0; k < quant_ftype_count(); k++)
                if (quant_ftype_at(k)->ftype == kv->value.u64) {
                    printf(" (%s)", quant_ftype_at(k)->name);
                    break;
                }
        putchar('\n');
    }
}

static void print_tensors(const gguf_file *f) {
    int64_t n = gguf_tensor_count(f);
    if (!n) {
        printf("\ntensors: none (vocab-only file)\n");
        return;
    }
    printf("\ntensors:\n  %-34s %-8s %-22s %14s\n", "name", "type", "shape", "bytes");
    for (int64_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char shape[64], num[32];
        int o = 0;
        for (int d = 0; d < t->n_dims && o < (int)sizeof shape; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%lld", d ? " x " : "",
                          (long long)t->ne[d]);
        printf("  %-34s %-8s %-22s %14s%s\n", t->name, kiln_type_name(t->type), shape,
               fmt_count(t->size, num, sizeof num),
               kiln_type_supported(t->type) ? "" : "  (type unsupported)");
    }
}

static void print_totals(const gguf_file *f) {
    uint64_t bytes[KILN_TYPE_COUNT] = {0}, count[KILN_TYPE_COUNT] = {0}, params = 0;
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        bytes[t->type] += t->size;
        count[t->type]++;
        params += t->n_elems;
    }
    if (!gguf_tensor_count(f)) return;
    char a[32], b[32];
    printf("\ntotals by type:\n");
    for (int t = 0; t < KILN_TYPE_COUNT; t++) {
        if (!count[t]) continue;
        printf("  %-8s %5llu tensors %16s bytes %6.2f%% of file%s\n", kiln_type_name((kiln_type)t),
               (unsigned long long)count[t], fmt_count(bytes[t], a, sizeof a),
               100.0 * (double)bytes[t] / (double)gguf_file_size(f),
               kiln_type_supported((kiln_type)t) ? "" : "  (unsupported by Kiln's kernels)");
    }
    printf("  parameters: %s (%.2f M)\n", fmt_count(params, b, sizeof b), (double)params / 1e6);
}

/* Binds the tensors to the architecture's table and reports the result. */
static void print_model_check(const gguf_file *f) {
    struct arch_model m;
    if (!gguf_tensor_count(f)) return;
    if (arch_model_load(f, &m)) {
        printf("  tensors do not match the architecture: %s\n", kiln_last_error());
        return;
    }
    printf("  %-24s all present with the expected shapes%s\n", "tensors",
           m.tied_output ? "; output tied to token_embd" : "");
    arch_model_free(&m);
}

/* Which kernel variant would run each matrix type's products at the thread
 * count, and why (compute/tune.h; never measures: a load does). */
static void print_kernels(const gguf_file *f, const struct info_opts *o) {
    struct arch_model m;
    struct kiln_tune_shape sh[64];
    struct kiln_tune_choice c[KILN_TYPE_COUNT];
    struct kiln_kernels k;
    if (!gguf_tensor_count(f) || arch_model_load(f, &m)) return;
    int n = arch_model_shapes(&m, sh, 64);
    arch_model_free(&m);
    int th = o->n_threads ? (int)o->n_threads : kiln_cpu_physical_cores();
    int nt = kiln_tune_select(NULL, th, sh, n < 64 ? n : 64, KILN_TUNE_NO_MEASURE, &k, c,
                              KILN_TYPE_COUNT);
    printf("\nkernels at %d thread%s (CPU features \"%s\"):\n", th, th == 1 ? "" : "s",
           kiln_cpu_features());
    for (int i = 0; i < nt && i < KILN_TYPE_COUNT; i++) {
        char why[512];
        kiln_tune_describe(&c[i], why, sizeof why);
        printf("  %-8s matvec %-7s matmul %-7s %s\n", kiln_type_name(c[i].type),
               kiln_isa_name(c[i].mv), kiln_isa_name(c[i].mm), why);
    }
}

static void print_memory(const gguf_file *f, const struct arch_hparams *hp,
                         const struct info_opts *o) {
    struct mem_params p = {o->n_ctx ? o->n_ctx : hp->n_ctx_train, o->n_seq ? o->n_seq : 1, 0,
                           o->kv_type};
    p.n_batch = o->n_batch ? o->n_batch : (p.n_ctx < 512 ? p.n_ctx : 512);
    struct mem_estimate e;
    char a[32];
    printf("\nmemory at context %u, batch %u, %u sequence%s, KV cache %s:\n", p.n_ctx, p.n_batch,
           p.n_seq, p.n_seq == 1 ? "" : "s", kiln_type_name(p.kv_type));
    if (mem_estimate(hp, mem_weight_bytes(f), &p, &e)) {
        printf("  cannot estimate: %s\n", kiln_last_error());
        return;
    }
    printf("  %-10s %12s\n", "weights", fmt_bytes(e.weights, a, sizeof a));
    printf("  %-10s %12s%s\n", "KV cache", fmt_bytes(e.kv_cache, a, sizeof a),
           hp->arch->flags & ARCH_F_CAUSAL ? "" : " (encoder: none)");
    printf("  %-10s %12s\n", "compute", fmt_bytes(e.compute, a, sizeof a));
    printf("  %-10s %12s\n", "total", fmt_bytes(e.total, a, sizeof a));
}

static void info_usage(FILE *out) {
    fprintf(out, "usage: kiln info FILE.gguf [--ctx N] [--batch N] [--parallel N] "
                 "[--kv-type f16|f32|q8_0] [-t N]\n"
                 "  --ctx N       context length for the memory estimate (default: the model's)\n"
                 "  --batch N     tokens per forward pass (default: min(512, ctx))\n"
                 "  --parallel N  sequences served at once (default 1)\n"
                 "  --kv-type T   KV cache element type (default f16)\n"
                 "  -t N          threads the kernel choices are shown for (default: the "
                 "physical cores)\n");
}

static bool parse_u32(const char *s, uint32_t *out) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || v == 0 || v > UINT32_MAX || *s == '-') return false;
    *out = (uint32_t)v;
    return true;
}

/* Returns 0, or 2 after printing a usage error. */
static int parse_info_args(int argc, char **argv, struct info_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "--ctx") && v)
            ok = parse_u32(argv[++i], &o->n_ctx);
        else if (!strcmp(a, "--batch") && v)
            ok = parse_u32(argv[++i], &o->n_batch);
        else if (!strcmp(a, "--parallel") && v)
            ok = parse_u32(argv[++i], &o->n_seq);
        else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && v)
            ok = parse_u32(argv[++i], &o->n_threads);
        else if (!strcmp(a, "--kv-type") && v) {
            ok = kiln_type_from_name(argv[++i], &o->kv_type) == KILN_OK &&
                 (o->kv_type == KILN_TYPE_F16 || o->kv_type == KILN_TYPE_F32 ||
                  o->kv_type == KILN_TYPE_Q8_0);
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "kiln info: unknown or incomplete option '%s'\n", a);
            info_usage(stderr);
            return 2;
        } else if (!o->path)
            o->path = a;
        else
            ok = false;
        if (!ok) {
            fprintf(stderr, "kiln info: bad value for %s\n", a);
            return 2;
        }
    }
    if (!o->path) {
        info_usage(stderr);
        return 2;
    }
    return 0;
}

int cmd_info(int argc, char **argv) {
    struct info_opts o = {.kv_type = KILN_TYPE_F16};
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            info_usage(stdout);
            return 0;
        }
    int rc = parse_info_args(argc, argv, &o);
    if (rc) return rc;
    kiln_status st;
    gguf_file *f = gguf_open(o.path, &st);
    if (!f) {
        const char *msg = kiln_last_error();
        size_t n = strlen(o.path);
        if (!strncmp(msg, o.path, n) && msg[n] == ':')
            fprintf(stderr, "kiln: %s\n", msg);
        else
            fprintf(stderr, "kiln: %s: %s\n", o.path, msg);
        return 1;
    }
    struct arch_hparams hp;
    print_file(f);
    bool ok = print_arch(f, &hp);
    if (ok) print_model_check(f);
    print_tokenizer(f);
    print_metadata(f, ok ? &hp : NULL);
    print_tensors(f);
    print_totals(f);
    if (ok) print_kernels(f, &o);
    if (ok) print_memory(f, &hp, &o);
    gguf_close(f);
    return 0;
}

/* quantize.c - `kiln quantize IN OUT TYPE [--threads N]`: converts a GGUF
 * model's weight matrices to another type (model/quantize.h does the work),
 * printing one line per tensor and a size summary. Exit 0 on success, 1 on a
 * runtime error (unreadable input, unwritable output, no kernel for a type),
 * 2 on a usage error (including an unknown type). */
#include "cli/commands.h"
#include "compute/types.h"
#include "kiln.h"
#include "model/quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quantize_usage(FILE *out) {
    fprintf(out, "usage: kiln quantize IN.gguf OUT.gguf TYPE [--threads N] [--quiet]\n  TYPE:");
    for (int i = 0; i < quant_ftype_count(); i++) fprintf(out, " %s", quant_ftype_at(i)->name);
    fprintf(out, "\n  Every weight matrix becomes TYPE's base type (Q4_K_M -> q4_K); norms,\n"
                 "  biases and position/token-type embeddings keep their type. A matrix whose\n"
                 "  rows do not fit TYPE's blocks falls back to a compatible type.\n");
}

struct progress_ctx {
    bool quiet;
    kiln_type want;
};

static void quantize_progress(void *ud, const struct quant_progress *p) {
    const struct progress_ctx *c = ud;
    if (c->quiet) return;
    char shape[64];
    int o = 0;
    for (int d = 0; d < p->n_dims && o < (int)sizeof shape; d++)
        o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%lld", d ? " x " : "",
                      (long long)p->ne[d]);
    char note[96] = "";
    if (p->fell_back)
        snprintf(note, sizeof note, "  (fallback: rows of %lld do not fit %s)", (long long)p->ne[0],
                 kiln_type_name(c->want));
    else if (!p->converted)
        snprintf(note, sizeof note, "  (kept)");
    fprintf(stderr, "[%4d/%d] %-32s %-14s %7s -> %-7s %9.2f -> %9.2f MiB%s\n", p->index + 1,
            p->count, p->name, shape, kiln_type_name(p->from), kiln_type_name(p->to),
            (double)p->bytes_in / 1048576.0, (double)p->bytes_out / 1048576.0, note);
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3] = {0};
    int n_pos = 0, threads = 0;
    struct progress_ctx pc = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            quantize_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            pc.quiet = true;
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1024) {
                fprintf(stderr, "kiln quantize: bad thread count '%s'\n", argv[i]);
                return 2;
            }
            threads = (int)v;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "kiln quantize: unknown or incomplete option '%s'\n", a);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            n_pos++;
        }
    }
    if (n_pos != 3) {
        quantize_usage(stderr);
        return 2;
    }
    struct quant_params p = {.n_threads = threads, .progress = quantize_progress, .ud = &pc};
    if (quant_ftype_parse(pos[2], &p.ftype)) {
        fprintf(stderr, "kiln quantize: %s\n", kiln_last_error());
        return 2;
    }
    pc.want = p.ftype.type;
    struct quant_stats s;
    if (quant_file(pos[0], pos[1], &p, &s)) {
        fprintf(stderr, "kiln quantize: %s\n", kiln_last_error());
        return 1;
    }
    printf("wrote %s (%s, general.file_type %u): %d tensors converted, %d kept, %d fell back\n"
           "  tensor data %.2f MiB -> %.2f MiB; file %.2f MiB -> %.2f MiB (%.1f%%)\n",
           pos[1], p.ftype.name, p.ftype.ftype, s.n_converted, s.n_copied, s.n_fallback,
           (double)s.bytes_in / 1048576.0, (double)s.bytes_out / 1048576.0,
           (double)s.file_in / 1048576.0, (double)s.file_out / 1048576.0,
           s.file_in ? 100.0 * (double)s.file_out / (double)s.file_in : 0.0);
    return 0;
}

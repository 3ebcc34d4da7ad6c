/* main.c - the kiln program: dispatches to one subcommand per file in src/cli/. */
#include "cli/commands.h"
#include "kiln.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
};

static const struct command commands[] = {
    {"serve", cmd_serve, "serve models over an OpenAI-compatible HTTP API"},
    {"run", cmd_run, "generate text from a prompt, streaming, with a timing summary"},
    {"chat", cmd_chat, "chat with a model in the terminal using its chat template"},
    {"embed", cmd_embed, "embeddings for texts or a file, JSON/JSONL out, with a summary"},
    {"info", cmd_info, "show a GGUF model's metadata, tensors and memory needs"},
    {"quantize", cmd_quantize, "convert a GGUF model's weights to another type"},
    {"synth", cmd_synth, "write a random-weight model of a named architecture and shape"},
    {"perplexity", cmd_perplexity, "perplexity of a text; dump or compare top-k logits (KL)"},
    {"bench-model", cmd_bench_model, "prompt/generation tokens/s or embedding docs/s vs limits"},
    {"bench", cmd_bench, "load-test an OpenAI-compatible server: TTFT, ITL, throughput, reports"},
    {"bench-kernels", cmd_bench_kernels, "measure kernel GB/s and GFLOP/s against machine peaks"},
    {"tune", cmd_tune, "measure and cache the fastest kernel variant per weight type"},
    {"trace", cmd_trace, "summarize a trace (kiln run --trace) or compare traces of two setups"},
};

static void usage(FILE *out) {
    fprintf(out, "kiln %s - a self-hosted inference engine for GGUF models\n\n", kiln_version());
    fprintf(out, "usage: kiln <command> [options]   (kiln <command> --help for details)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-14s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\nEnvironment: KILN_ISA=scalar|avx2|avx512 forces a kernel variant;"
                 " KILN_TUNE=off keeps the ISA rank\n(no measuring); KILN_TUNE_FILE=PATH"
                 " moves the tune cache; KILN_LOG=error|warn|info|debug.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("kiln %s\n", kiln_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}

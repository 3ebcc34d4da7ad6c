/* bench_model.c - `kiln bench-model` (being written). */
#include "cli/commands.h"

#include <stdio.h>

int cmd_bench_model(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "kiln bench-model: not implemented yet\n");
    return 1;
}

/* gen_opts.h - the generation options `kiln run` and `kiln chat` share:
 * context and threads, sampling (temperature, top-k/p, min-p, penalties,
 * logit bias, seed), stop strings and the token limit. */
#ifndef KILN_CLI_GEN_OPTS_H
#define KILN_CLI_GEN_OPTS_H

#include "kiln.h"

#include <stdbool.h>
#include <stdio.h>

#define CLI_MAX_STOP 32
#define CLI_MAX_BIAS 256

struct cli_gen_opts {
    kiln_gen_params gen; /* gen.stop and gen.sampling.logit_bias point into the arrays below */
    kiln_ctx_params ctx;
    bool seed_set;
    const char *stop[CLI_MAX_STOP]; /* borrowed from argv */
    kiln_logit_bias bias[CLI_MAX_BIAS];
};

/* Defaults: kiln_gen_default_params and kiln_ctx_default_params. */
void cli_gen_opts_init(struct cli_gen_opts *o);

/* Applies option a with value v. 1: applied; 0: not a generation option;
 * -1: a bad value (a message naming it is on stderr, prefixed with cmd). */
int cli_gen_opt(struct cli_gen_opts *o, const char *cmd, const char *a, const char *v);

/* Prints the options' help lines. */
void cli_gen_usage(FILE *out);

#endif

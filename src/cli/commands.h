/* commands.h - the subcommands of the kiln program. Each takes the arguments
 * after its name (argv[0] is the subcommand name) and returns the process exit
 * status: 0 on success, 1 on a runtime error, 2 on a usage error. */
#ifndef KILN_CLI_COMMANDS_H
#define KILN_CLI_COMMANDS_H

int cmd_info(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench_kernels(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_bench_model(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_tune(int argc, char **argv);

#endif

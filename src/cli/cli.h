/* cli.h: the subcommands of the llmesh binary. Each takes the arguments after
 * its name (argv[0] is the subcommand name) and returns the process exit code.
 * Errors are printed as one line on stderr naming the flag or file at fault. */
#ifndef LLMESH_CLI_H
#define LLMESH_CLI_H

int cmd_run(int argc, char **argv);         /* cmd_run.c */
int cmd_perplexity(int argc, char **argv);  /* cmd_run.c */
int cmd_quantize(int argc, char **argv);    /* cmd_quantize.c */
int cmd_serve(int argc, char **argv);       /* cmd_serve.c */
int cmd_client(int argc, char **argv);      /* cmd_serve.c */
int cmd_tokenize(int argc, char **argv);    /* cmd_inspect.c */
int cmd_logits(int argc, char **argv);      /* cmd_inspect.c */
int cmd_bench(int argc, char **argv);       /* cmd_bench.c */
int cmd_download(int argc, char **argv);    /* cmd_models.c */
int cmd_models(int argc, char **argv);      /* cmd_models.c */

#endif

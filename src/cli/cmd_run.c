/* cmd_run.c: placeholder until the engine lands. */
#include "cli/cli.h"
#include <stdio.h>
int cmd_run(int argc, char **argv) { fprintf(stderr, "llmesh run: not built yet\n"); return 1; }
int cmd_perplexity(int argc, char **argv) { fprintf(stderr, "llmesh perplexity: not built yet\n"); return 1; }

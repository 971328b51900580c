/* cmd_serve.c: placeholder until the mesh lands (the serve layer waits in pending/). */
#include "cli/cli.h"
#include <stdio.h>
int cmd_serve(int argc, char **argv) { fprintf(stderr, "llmesh serve: not built yet\n"); return 1; }
int cmd_client(int argc, char **argv) { fprintf(stderr, "llmesh client: not built yet\n"); return 1; }

/* main.c: llmesh's entry point; dispatches to a subcommand. */
#include "cli/cli.h"
#include "lib/crash.h"

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: llmesh <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve       run a mesh node: serve models, answer the API, join peers\n"
    "  client      join a mesh with no model; answer the API by forwarding\n"
    "  run         generate text from a prompt with a local model\n"
    "  perplexity  measure a model's perplexity on a text file\n"
    "  quantize    rewrite a model's weights in another tensor type (Q4_K_M, Q8_0, ...)\n"
    "  tokenize    print the token ids of a text (for checks against other tools)\n"
    "  logits      print the raw logits of a prompt (for checks against other tools)\n"
    "  bench       measure prefill and decode speed of a local model\n"
    "  download    fetch a model by name into the cache (Hugging Face hub, URL, catalog)\n"
    "  models      list the models on this machine (--catalog: the built-in names)\n"
    "\n"
    "run 'llmesh <command> --help' for a command's options.\n";

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    crash_handlers_install();
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "client")) return cmd_client(argc - 1, argv + 1);
    if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "perplexity")) return cmd_perplexity(argc - 1, argv + 1);
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "logits")) return cmd_logits(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "download")) return cmd_download(argc - 1, argv + 1);
    if (!strcmp(cmd, "models")) return cmd_models(argc - 1, argv + 1);
    fprintf(stderr, "llmesh: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}

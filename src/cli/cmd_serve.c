/* cmd_serve.c: `llmesh serve` and `llmesh client`: flags -> node_config. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_common.h"
#include "lib/log.h"
#include "mesh/identity.h"
#include "serve/node.h"

static const char serve_usage[] =
    "usage: llmesh serve [--model PATH]... [--join TOKEN]... [options]\n"
    "       llmesh client --join TOKEN [options]\n"
    "\n"
    "  --model PATH       serve this GGUF model (repeatable; serve only)\n"
    "  --join TOKEN       join the mesh of the node that printed TOKEN (repeatable)\n"
    "  --home DIR         identity directory (default $LLMESH_HOME, else ~/.llmesh)\n"
    "  --port N           API port on 127.0.0.1 (default 9337; 0 = any free port)\n"
    "  --console N        console port on 127.0.0.1 (default 3131; 0 = any free port)\n"
    "  --listen HOST:PORT mesh UDP address (default 0.0.0.0:9337)\n"
    "  --http-host HOST   address for the API and console (default 127.0.0.1)\n"
    "  --threads N        compute threads (default: all CPUs)\n"
    "  --max-memory SIZE  memory for models: 512M, 8G (K/M/G = powers of 1024; default:\n"
    "                     what is available at start less a margin)\n"
    "  --ctx N            context served per request (default: the model's, at most 8192)\n"
    "  --parallel N       requests each model runs at once, each with its own KV cache\n"
    "                     (default 2)\n"
    "  --split [N]        split each model into N pipeline stages over the mesh even when\n"
    "                     it fits here (default N: 2)\n"
    "  --log-level L      error|warn|info|debug|trace (default info)\n"
    "  --log-format F     pretty|json (default pretty)\n";

static int parse_port(const char *flag, const char *value, int *out)
{
    char *end;
    long v = strtol(value, &end, 10);
    if (!*value || *end || v < 0 || v > 65535) {
        fprintf(stderr, "llmesh: %s wants a port number 0-65535, not '%s'\n", flag, value);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int serve_main(int argc, char **argv, int client)
{
    node_config cfg = {
        .http_host = "127.0.0.1",
        .api_port = 9337,
        .console_port = 3131,
        .client = client,
    };
    const char *home_flag = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(serve_usage, stdout); return 0; }
        if (!strcmp(a, "--split") && !client) { /* the count is optional */
            cfg.split = 2;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                long n;
                if (cli_parse_long("serve", a, argv[++i], 2, 16, &n)) return 2;
                cfg.split = (int)n;
            }
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "llmesh: %s needs a value (or is unknown)\n%s", a, serve_usage);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model") && !client) {
            if (cfg.n_models == NODE_MAX_MODELS) { fprintf(stderr, "llmesh: at most %d --model\n", NODE_MAX_MODELS); return 2; }
            cfg.models[cfg.n_models++] = v;
        } else if (!strcmp(a, "--join")) {
            if (cfg.n_joins == NODE_MAX_JOINS) { fprintf(stderr, "llmesh: at most %d --join\n", NODE_MAX_JOINS); return 2; }
            cfg.joins[cfg.n_joins++] = v;
        } else if (!strcmp(a, "--home")) {
            home_flag = v;
        } else if (!strcmp(a, "--port")) {
            if (parse_port(a, v, &cfg.api_port)) return 2;
        } else if (!strcmp(a, "--console")) {
            if (parse_port(a, v, &cfg.console_port)) return 2;
        } else if (!strcmp(a, "--listen")) {
            cfg.listen = v;
        } else if (!strcmp(a, "--http-host")) {
            cfg.http_host = v;
        } else if (!strcmp(a, "--threads")) {
            cfg.threads = atoi(v);
        } else if (!strcmp(a, "--max-memory") && !client) {
            if (cli_parse_size("serve", a, v, &cfg.max_memory)) return 2;
        } else if (!strcmp(a, "--ctx") && !client) {
            long n;
            if (cli_parse_long("serve", a, v, 16, 1 << 24, &n)) return 2;
            cfg.ctx = (int)n;
        } else if (!strcmp(a, "--parallel") && !client) {
            long n;
            if (cli_parse_long("serve", a, v, 1, 64, &n)) return 2;
            cfg.parallel = (int)n;
        } else if (!strcmp(a, "--log-level")) {
            int level = log_parse_level(v);
            if (level < 0) { fprintf(stderr, "llmesh: --log-level wants error|warn|info|debug|trace, not '%s'\n", v); return 2; }
            log_set_level((log_level)level);
        } else if (!strcmp(a, "--log-format")) {
            if (strcmp(v, "pretty") && strcmp(v, "json")) { fprintf(stderr, "llmesh: --log-format wants pretty|json\n"); return 2; }
            log_set_json(!strcmp(v, "json"));
        } else {
            fprintf(stderr, "llmesh: unknown option %s\n%s", a, serve_usage);
            return 2;
        }
    }
    if (client && cfg.n_joins == 0) {
        fprintf(stderr, "llmesh client: --join TOKEN is required (a client has no model of its own)\n");
        return 2;
    }
    char home[4096], err[256];
    if (identity_home_dir(home_flag, home, sizeof home, err, sizeof err) != 0) {
        fprintf(stderr, "llmesh: %s\n", err);
        return 2;
    }
    cfg.home = home;
    return node_run(&cfg);
}

int cmd_serve(int argc, char **argv) { return serve_main(argc, argv, 0); }
int cmd_client(int argc, char **argv) { return serve_main(argc, argv, 1); }

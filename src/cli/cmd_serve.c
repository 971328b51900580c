/* cmd_serve.c: `llmesh serve` and `llmesh client`: flags -> node_config,
 * and the API key: where it comes from, and the refusal to serve an open API
 * on a non-loopback address. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli_common.h"
#include "lib/log.h"
#include "mesh/identity.h"
#include "serve/http.h"
#include "serve/node.h"

static const char serve_usage[] =
    "usage: llmesh serve [--model REF]... [--join TOKEN]... [options]\n"
    "       llmesh client --join TOKEN [options]\n"
    "\n"
    "  --model REF        serve this model (repeatable; serve only): a GGUF path,\n"
    "                     org/repo/file.gguf[@rev], org/repo:QUANT, an https:// URL or a\n"
    "                     catalog name (llmesh models --catalog); downloaded when missing\n"
    "  --standby-for REF  a model this node takes over when it is asked for and no live\n"
    "                     node serves it (repeatable; a node without --model also takes\n"
    "                     over models whose files it holds)\n"
    "  --join TOKEN       join the mesh of the node that printed TOKEN (repeatable)\n"
    "  --home DIR         identity directory (default $LLMESH_HOME, else ~/.llmesh)\n"
    "  --port N           API port on 127.0.0.1 (default 9337; 0 = any free port)\n"
    "  --console N        console port on 127.0.0.1 (default 3131; 0 = any free port)\n"
    "  --listen HOST:PORT mesh UDP address (default 0.0.0.0:9337)\n"
    "  --http-host HOST   address for the API and console (default 127.0.0.1); any\n"
    "                     other than a loopback address needs --api-key or --no-auth\n"
    "  --api-key KEY      require \"Authorization: Bearer KEY\" on the API and the console\n"
    "                     (default: $LLMESH_API_KEY; none when unset or empty)\n"
    "  --api-key-file F   the key is F's first line; F must not be readable by group or\n"
    "                     others (chmod 600)\n"
    "  --no-auth          serve without a key even on a non-loopback --http-host\n"
    "  --threads N        compute threads (default: all CPUs)\n"
    "  --max-memory SIZE  memory for models: 512M, 8G (K/M/G = powers of 1024; default:\n"
    "                     what is available at start less a margin)\n"
    "  --ctx N            context served per request (default: the model's, at most 8192)\n"
    "  --parallel N       requests each model runs at once (1-64), each with its own KV\n"
    "                     cache, batched into one forward pass per step (default 4)\n"
    "  --kv-type T        KV cache element type: f16 (default, half the memory) or f32;\n"
    "                     a split's stages use the coordinator's\n"
    "  --queue N          requests that may wait per model when every lane is busy;\n"
    "                     past it: 429 with Retry-After (default 64)\n"
    "  --queue-timeout S  a request waiting longer for a lane gets 503 (default 120)\n"
    "  --quic-max-conns N mesh (QUIC) connections in all (default 4096)\n"
    "  --quic-max-half-open N  incoming QUIC handshakes not done yet (default 256)\n"
    "  --quic-max-conns-per-addr N  QUIC connections from one IP address (default 256)\n"
    "  --quic-max-half-open-per-addr N  QUIC handshakes not done from one IP address\n"
    "                     (default 16); over any of these bounds an Initial is dropped\n"
    "                     and counted (quic_refused)\n"
    "  --http-max-conns N HTTP connections per port (API, console; default 1024)\n"
    "  --http-max-conns-per-addr N  HTTP connections per port from one IP address\n"
    "                     (default 64); over either a new one is shut (http_refused)\n"
    "  --http-request-timeout S  a request must arrive whole within S seconds of the\n"
    "                     connection or the previous answer, else the connection is\n"
    "                     cut (default 15; http_slow_cut)\n"
    "  --max-clients N    passive client connections a member holds (default 4096)\n"
    "  --ban-bad-frames N a peer sending N malformed frames within 10 s is cut off\n"
    "                     (default 32; peers_banned)\n"
    "  --ban-seconds S    ...and refused for S seconds (default 60; banned_refused)\n"
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

/* The key is F's first line (a trailing CR is dropped). Like ssh with a
 * private key, a file group or others may read is refused: the key would
 * not be secret. */
static int read_api_key_file(const char *path, char *key, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "llmesh: --api-key-file %s: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        fprintf(stderr, S_ISREG(st.st_mode)
                ? "llmesh: --api-key-file %s may be read by group or others (mode %03o): run chmod 600 %s\n"
                : "llmesh: --api-key-file %s is not a regular file\n",
                path, (unsigned)(st.st_mode & 0777), path);
        close(fd);
        return -1;
    }
    ssize_t n = read(fd, key, cap - 1);
    close(fd);
    if (n < 0) { fprintf(stderr, "llmesh: --api-key-file %s: %s\n", path, strerror(errno)); return -1; }
    key[n] = 0;
    key[strcspn(key, "\r\n")] = 0;
    return 0;
}

/* The key from --api-key, --api-key-file or LLMESH_API_KEY, into key (NULL:
 * none); and no API without one on an address others can reach, unless
 * --no-auth says so. Returns an exit code, or 0 to go on. */
static int settle_api_key(node_config *cfg, const char *flag_key, const char *key_file, int no_auth,
                          char *key, size_t cap)
{
    if ((flag_key || key_file) && no_auth) {
        fprintf(stderr, "llmesh: --no-auth contradicts %s: give one or the other\n",
                flag_key ? "--api-key" : "--api-key-file");
        return 2;
    }
    if (flag_key && key_file) {
        fprintf(stderr, "llmesh: give --api-key or --api-key-file, not both\n");
        return 2;
    }
    const char *env = getenv("LLMESH_API_KEY");
    const char *from = flag_key ? "--api-key" : key_file ? "--api-key-file" : "LLMESH_API_KEY";
    if (key_file) {
        if (read_api_key_file(key_file, key, cap) != 0) return 2;
    } else if (flag_key || (env && *env && !no_auth)) {
        snprintf(key, cap, "%s", flag_key ? flag_key : env);
    } else {
        key[0] = 0;
        if (env && *env) log_warn("serve", "LLMESH_API_KEY is set, but --no-auth serves without a key");
    }
    if ((flag_key || key_file || key[0]) && !http_api_key_valid(key)) {
        fprintf(stderr, "llmesh: the key from %s must be 1-%d visible ASCII characters, no spaces\n",
                from, HTTP_MAX_API_KEY);
        return 2;
    }
    cfg->api_key = key[0] ? key : NULL;
    if (!cfg->api_key && !http_host_is_loopback(cfg->http_host)) {
        if (!no_auth) {
            fprintf(stderr,
                    "llmesh: --http-host %s is not a loopback address: anyone who reaches it could use "
                    "the API and the console. Require a key with --api-key KEY (or --api-key-file F, or "
                    "LLMESH_API_KEY), or pass --no-auth to serve without one\n", cfg->http_host);
            return 2;
        }
        log_warn("serve", "the API and the console on %s take requests without a key (--no-auth)",
                 cfg->http_host);
    }
    return 0;
}

static int serve_main(int argc, char **argv, int client)
{
    node_config cfg = {
        .http_host = "127.0.0.1",
        .api_port = 9337,
        .console_port = 3131,
        .queue = -1,
        .client = client,
    };
    const char *home_flag = NULL, *key_file = NULL;
    char flag_key[HTTP_MAX_API_KEY + 2] = "";
    int have_flag_key = 0, no_auth = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(serve_usage, stdout); return 0; }
        if (!strcmp(a, "--no-auth")) { no_auth = 1; continue; }
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
        } else if (!strcmp(a, "--standby-for") && !client) {
            if (cfg.n_standby_for == NODE_MAX_MODELS) { fprintf(stderr, "llmesh: at most %d --standby-for\n", NODE_MAX_MODELS); return 2; }
            cfg.standby_for[cfg.n_standby_for++] = v;
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
        } else if (!strcmp(a, "--api-key")) {
            /* Copied, then blanked in argv so that ps shows no key (it is
             * still in the shell's history: prefer the file or the env). */
            snprintf(flag_key, sizeof flag_key, "%s", v);
            memset(argv[i], 'x', strlen(argv[i]));
            have_flag_key = 1;
        } else if (!strcmp(a, "--api-key-file")) {
            key_file = v;
        } else if (!strcmp(a, "--threads")) {
            cfg.threads = atoi(v);
        } else if (!strcmp(a, "--max-memory") && !client) {
            if (cli_parse_size("serve", a, v, &cfg.max_memory)) return 2;
        } else if (!strcmp(a, "--ctx") && !client) {
            long n;
            if (cli_parse_long("serve", a, v, 16, 1 << 24, &n)) return 2;
            cfg.ctx = (int)n;
        } else if (!strcmp(a, "--kv-type") && !client) {
            if (cli_parse_kv_type("serve", a, v, &cfg.kv_type)) return 2;
        } else if (!strcmp(a, "--parallel") && !client) {
            long n;
            if (cli_parse_long("serve", a, v, 1, 64, &n)) return 2;
            cfg.parallel = (int)n;
        } else if (!strcmp(a, "--queue") && !client) {
            long n;
            if (cli_parse_long("serve", a, v, 0, 4096, &n)) return 2;
            cfg.queue = (int)n;
        } else if (!strcmp(a, "--queue-timeout") && !client) {
            long n;
            if (cli_parse_long("serve", a, v, 1, 86400, &n)) return 2;
            cfg.queue_timeout = (int)n;
        } else if (!strcmp(a, "--quic-max-conns") || !strcmp(a, "--quic-max-half-open") ||
                   !strcmp(a, "--quic-max-conns-per-addr") || !strcmp(a, "--quic-max-half-open-per-addr") ||
                   !strcmp(a, "--http-max-conns") || !strcmp(a, "--http-max-conns-per-addr")) {
            long n;
            if (cli_parse_long("serve", a, v, 1, 1 << 20, &n)) return 2;
            uint32_t *to = !strcmp(a, "--quic-max-conns") ? &cfg.quic_limits.max_conns
                         : !strcmp(a, "--quic-max-half-open") ? &cfg.quic_limits.max_half_open
                         : !strcmp(a, "--quic-max-conns-per-addr") ? &cfg.quic_limits.max_conns_per_addr
                         : !strcmp(a, "--quic-max-half-open-per-addr") ? &cfg.quic_limits.max_half_open_per_addr
                         : !strcmp(a, "--http-max-conns") ? &cfg.http_limits.max_conns
                         : &cfg.http_limits.max_per_addr;
            *to = (uint32_t)n;
        } else if (!strcmp(a, "--max-clients") || !strcmp(a, "--ban-bad-frames")) {
            long n;
            if (cli_parse_long("serve", a, v, 1, 1 << 20, &n)) return 2;
            *(!strcmp(a, "--max-clients") ? &cfg.max_clients : &cfg.ban_bad_frames) = (uint32_t)n;
        } else if (!strcmp(a, "--ban-seconds")) {
            long n;
            if (cli_parse_long("serve", a, v, 1, 86400, &n)) return 2;
            cfg.ban_ms = (uint32_t)n * 1000;
        } else if (!strcmp(a, "--http-request-timeout")) {
            long n;
            if (cli_parse_long("serve", a, v, 1, 86400, &n)) return 2;
            cfg.http_limits.request_ms = (uint32_t)n * 1000;
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
    char key[HTTP_MAX_API_KEY + 2];
    int rc = settle_api_key(&cfg, have_flag_key ? flag_key : NULL, key_file, no_auth, key, sizeof key);
    if (rc == 0) rc = node_run(&cfg);
    explicit_bzero(key, sizeof key);
    explicit_bzero(flag_key, sizeof flag_key);
    return rc;
}

int cmd_serve(int argc, char **argv) { return serve_main(argc, argv, 0); }
int cmd_client(int argc, char **argv) { return serve_main(argc, argv, 1); }

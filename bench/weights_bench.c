/* weights_bench.c: how fast model identity and tensor fetches are.
 *
 *   weights_bench [--mb N] [--runs R] [--window BYTES] [--skip-hash]
 *                 [--source-ns NETNS:IP --fetcher-ns NETNS:IP] [--sources 2 [--source2-ns NETNS:IP]]
 *
 * 1. Writes a synthetic GGUF of about N MiB (default 1024) in $TMPDIR: a
 *    head and 16 layers of F32 matrices with pseudo-random bytes.
 * 2. Hashes it R times with one thread and with one per CPU (warm page
 *    cache: the first read is not timed) and prints GB/s.
 * 3. Forks a source process (its own mesh and store holding the file) and
 *    fetches the whole model (every layer and the head) from it over QUIC on
 *    loopback R times, each into a fresh cache, and prints MB/s. While each
 *    fetch runs, a 64-byte echo on another stream of the same connection
 *    every 5 ms measures what the bulk transfer does to small frames; the
 *    same echo before the fetches is the idle baseline. With --source-ns and
 *    --fetcher-ns the two processes run in those network namespaces (made
 *    beforehand, e.g. joined by a veth pair with a tbf qdisc at 1 Gbit/s:
 *    see bench/weights_bench.sh --link) and listen on those addresses.
 *    With --sources 2 a second source process (its own home, the same file,
 *    in --source2-ns when given) joins the first's mesh, and every fetch
 *    takes chunks from both at once (fetch.c, "several sources"); each run
 *    prints how many bytes came from each.
 * Every run also prints the CPU time (user + system) of the fetching
 * process and of the source(s) per MB fetched, from /proc: on a machine
 * shared with other work that says more than the wall-clock rate.
 * Run on a release build (bench/weights_bench.sh). */
#define _GNU_SOURCE
#include <event2/event.h>
#include <fcntl.h>
#include <sched.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/gguf_write.h"
#include "lib/log.h"
#include "mesh/mesh.h"
#include "models/store_private.h"
#include "models/weights.h"
#include "models/weights_store.h"

#define ECHO_TYPE 200
#define LAYERS 16

static struct event_base *base;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fill(void *ctx, size_t index, void *dst, uint64_t nbytes, char *err, size_t errlen)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (index + 1);
    uint64_t *p = dst;
    for (uint64_t i = 0; i < nbytes / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = x;
    }
    return 0;
}

static int write_model(const char *path, uint64_t mb)
{
    char err[256];
    gguf_write *w = gguf_write_new();
    gguf_kv arch = {.key = {"general.architecture", 20}, .type = GGUF_TYPE_STRING};
    arch.v.str = (gguf_str){"llama", 5};
    if (gguf_write_copy_kv(w, &arch, err, sizeof err) < 0 ||
        gguf_write_set_u32(w, "llama.block_count", LAYERS, err, sizeof err) < 0)
        return -1;
    /* Rows of 4096 floats (16 KiB); each layer two matrices. */
    uint64_t rows = mb * 1048576 / (LAYERS * 2 + 2) / 16384;
    if (rows < 1) rows = 1;
    uint64_t ne[2] = {4096, rows};
    char name[64];
    gguf_write_add_tensor(w, (gguf_str){"token_embd.weight", 17}, 2, ne, GGML_TYPE_F32, err, sizeof err);
    for (int l = 0; l < LAYERS; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);
        gguf_write_add_tensor(w, (gguf_str){name, strlen(name)}, 2, ne, GGML_TYPE_F32, err, sizeof err);
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);
        gguf_write_add_tensor(w, (gguf_str){name, strlen(name)}, 2, ne, GGML_TYPE_F32, err, sizeof err);
    }
    gguf_write_add_tensor(w, (gguf_str){"output.weight", 13}, 2, ne, GGML_TYPE_F32, err, sizeof err);
    int rc = gguf_write_file(w, path, fill, NULL, err, sizeof err);
    if (rc < 0) fprintf(stderr, "weights_bench: %s\n", err);
    gguf_write_free(w);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- the source process --------------------------------------------------------------*/

/* Echo stream: frames come back. A frame "B" + count instead asks for count
 * frames of 1 MiB as fast as the connection takes them (the transport's own
 * ceiling, for comparison with the fetch), with at most 16 MiB unacknowledged. */
typedef struct {
    mesh_stream *s;
    int left;
    struct event *tick;
    uint8_t *mib;
} bulk_state;

static bulk_state bulk;

static void bulk_pump(evutil_socket_t fd, short what, void *arg)
{
    while (bulk.s && bulk.left > 0 && mesh_stream_unacked(bulk.s) < (16u << 20)) {
        mesh_stream_send(bulk.s, bulk.mib, 1u << 20);
        bulk.left--;
    }
    if (bulk.s && bulk.left > 0) {
        struct timeval tv = {0, 1000};
        evtimer_add(bulk.tick, &tv);
    }
}

static void echo_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    if (len == 5 && p[0] == 'B') {
        if (!bulk.mib) bulk.mib = calloc(1, 1u << 20);
        if (!bulk.tick) bulk.tick = evtimer_new(base, bulk_pump, NULL);
        bulk.s = s;
        bulk.left = (int)((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]);
        bulk_pump(-1, 0, NULL);
        return;
    }
    mesh_stream_send(s, p, len);
}
static void echo_fin(void *user, mesh_stream *s) { mesh_stream_finish(s); }
static void echo_close(void *user, mesh_stream *s, const char *error)
{
    if (bulk.s == s) bulk.s = NULL;
}
static const mesh_stream_handlers echo_handlers = {echo_frame, echo_fin, echo_close};
static void echo_accept(void *ctx, mesh_stream *s) { mesh_stream_set_handlers(s, &echo_handlers, NULL); }

static void on_term(evutil_socket_t fd, short what, void *arg) { event_base_loopbreak(base); }

/* Enters network namespace NAME of "NAME:IP" and writes "IP:0" to listen. */
static int enter_netns(const char *spec, char *listen, size_t cap)
{
    if (!spec) {
        snprintf(listen, cap, "127.0.0.1:0");
        return 0;
    }
    const char *colon = strchr(spec, ':');
    if (!colon) return -1;
    char path[300];
    snprintf(path, sizeof path, "/var/run/netns/%.*s", (int)(colon - spec), spec);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        perror(path);
        return -1;
    }
    close(fd);
    snprintf(listen, cap, "%s:0", colon + 1);
    return 0;
}

static const char *source_ns, *fetcher_ns, *source2_ns;

/* CPU seconds (user + system) of process pid so far, from /proc. */
static double cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int run_source(const char *model, const char *home, int out_fd, const char *ns, const char *join)
{
    char err[512], listen[128];
    if (enter_netns(ns, listen, sizeof listen) < 0) return 1;
    const char *joins[1] = {join};
    mesh_config cfg = {.home = home, .listen = listen, .role = "host", .join_tokens = join ? joins : NULL,
                       .n_join = join ? 1 : 0};
    mesh *m = mesh_new(base, &cfg, err, sizeof err);
    if (!m) {
        fprintf(stderr, "source: %s\n", err);
        return 1;
    }
    weights_store *ws = weights_store_new(base, m, home, err, sizeof err);
    uint8_t hash[WEIGHTS_HASH_BYTES];
    if (!ws || weights_store_add_file(ws, model, hash, err, sizeof err) < 0) {
        fprintf(stderr, "source: %s\n", err);
        return 1;
    }
    mesh_register_stream_type(m, ECHO_TYPE, echo_accept, NULL);
    char line[1024];
    char hex[WEIGHTS_HASH_HEX];
    weights_hex(hash, hex);
    char id[WEIGHTS_HASH_HEX];
    weights_hex(mesh_node_id(m), id);
    int n = snprintf(line, sizeof line, "%s %s %s\n", hex, mesh_token(m), id);
    if (write(out_fd, line, (size_t)n) != n) return 1;
    close(out_fd);
    struct event *term = evsignal_new(base, SIGTERM, on_term, NULL);
    event_add(term, NULL);
    event_base_dispatch(base);
    event_free(term);
    weights_counters c;
    weights_get_counters(ws, &c);
    weights_store_free(ws);
    mesh_free(m);
    return 0;
}

/* ---- the fetching process --------------------------------------------------------------*/

typedef struct {
    mesh_stream *s;
    double sent_at;
    int waiting;
    double rtts[20000];
    int n;
    struct event *tick;
} echo_probe;

static void probe_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    echo_probe *e = user;
    if (e->waiting && e->n < 20000) e->rtts[e->n++] = (now_s() - e->sent_at) * 1e6;
    e->waiting = 0;
}
static void probe_fin(void *user, mesh_stream *s) {}
static void probe_close(void *user, mesh_stream *s, const char *error) { ((echo_probe *)user)->s = NULL; }
static const mesh_stream_handlers probe_handlers = {probe_frame, probe_fin, probe_close};

static void probe_tick(evutil_socket_t fd, short what, void *arg)
{
    echo_probe *e = arg;
    if (!e->s || e->waiting) return; /* one in flight at a time: a late answer counts once */
    uint8_t msg[64] = {0};
    e->sent_at = now_s();
    e->waiting = 1;
    mesh_stream_send(e->s, msg, sizeof msg);
}

static void probe_report(const char *what, echo_probe *e)
{
    if (!e->n) {
        printf("  %s: no echo\n", what);
        return;
    }
    qsort(e->rtts, (size_t)e->n, sizeof e->rtts[0], cmp_double);
    printf("  %s: echo RTT median %.0f us, p90 %.0f us, max %.0f us (%d samples)\n", what, e->rtts[e->n / 2],
           e->rtts[e->n * 9 / 10], e->rtts[e->n - 1], e->n);
    e->n = 0;
}

typedef struct {
    int frames, closed;
} sink_state;

static void sink_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len) { ((sink_state *)user)->frames++; }
static void sink_fin(void *user, mesh_stream *s) {}
static void sink_close(void *user, mesh_stream *s, const char *error) { ((sink_state *)user)->closed = 1; }
static const mesh_stream_handlers sink_handlers = {sink_frame, sink_fin, sink_close};

typedef struct {
    int done;
    char error[512];
    uint64_t total;
    double last_chunk;
} fetch_result;

static void on_progress(void *user, uint64_t done, uint64_t total)
{
    fetch_result *r = user;
    r->total = total;
    if (done == total) r->last_chunk = now_s();
}
static void on_done(void *user, const char *path, const char *error)
{
    fetch_result *r = user;
    r->done = 1;
    if (error) snprintf(r->error, sizeof r->error, "%s", error);
}

static void run_for(double secs)
{
    struct timeval tv = {(long)secs, (long)((secs - (long)secs) * 1e6)};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

int main(int argc, char **argv)
{
    uint64_t mb = 1024;
    int runs = 3, skip_hash = 0;
    uint32_t window = 0;
    int n_sources = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc) mb = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--window") && i + 1 < argc) window = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--skip-hash")) skip_hash = 1;
        else if (!strcmp(argv[i], "--source-ns") && i + 1 < argc) source_ns = argv[++i];
        else if (!strcmp(argv[i], "--fetcher-ns") && i + 1 < argc) fetcher_ns = argv[++i];
        else if (!strcmp(argv[i], "--source2-ns") && i + 1 < argc) source2_ns = argv[++i];
        else if (!strcmp(argv[i], "--sources") && i + 1 < argc) n_sources = atoi(argv[++i]) == 2 ? 2 : 1;
        else {
            fprintf(stderr, "usage: weights_bench [--mb N] [--runs R] [--window BYTES] [--skip-hash] "
                            "[--source-ns NETNS:IP --fetcher-ns NETNS:IP] [--sources 2 [--source2-ns NETNS:IP]]\n");
            return 2;
        }
    }
    log_set_level(LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[512], model[600], cmd[800];
    snprintf(dir, sizeof dir, "%s/weights-bench-XXXXXX", tmp);
    if (!mkdtemp(dir)) return 1;
    snprintf(model, sizeof model, "%s/model.gguf", dir);
    if (write_model(model, mb) < 0) return 1;

    char err[512];
    if (!skip_hash) {
        weights_manifest *m = weights_manifest_compute(model, 1, NULL, NULL, err, sizeof err); /* warms the cache */
        if (!m) {
            fprintf(stderr, "weights_bench: %s\n", err);
            return 1;
        }
        double bytes = (double)m->data_bytes;
        weights_manifest_free(m);
        printf("hash: %.0f MiB of tensor data, chunks of %u KiB\n", bytes / 1048576.0, weights_chunk_bytes() >> 10);
        int threads[2] = {1, 0};
        for (int t = 0; t < 2; t++) {
            double best = 0;
            for (int r = 0; r < runs; r++) {
                double t0 = now_s();
                m = weights_manifest_compute(model, threads[t], NULL, NULL, err, sizeof err);
                double gbs = bytes / (now_s() - t0) / 1e9;
                weights_manifest_free(m);
                printf("  %s: %.2f GB/s\n", threads[t] == 1 ? "1 thread" : "all CPUs", gbs);
                if (gbs > best) best = gbs;
            }
            printf("  best %s: %.2f GB/s\n", threads[t] == 1 ? "1 thread" : "all CPUs", best);
        }
    }

    int pipefd[2];
    if (pipe(pipefd) != 0) return 1;
    pid_t child = fork();
    if (child == 0) {
        close(pipefd[0]);
        evthread_use_pthreads();
        base = event_base_new();
        char home[600];
        snprintf(home, sizeof home, "%s/source", dir);
        _exit(run_source(model, home, pipefd[1], source_ns, NULL));
    }
    close(pipefd[1]);
    char line[1024] = "";
    ssize_t got = read(pipefd[0], line, sizeof line - 1);
    close(pipefd[0]);
    char hex[WEIGHTS_HASH_HEX], token[900], first_id[WEIGHTS_HASH_HEX];
    if (got <= 0 || sscanf(line, "%64s %899s %64s", hex, token, first_id) != 3) {
        fprintf(stderr, "weights_bench: the source did not start\n");
        return 1;
    }
    uint8_t hash[WEIGHTS_HASH_BYTES];
    weights_parse_hex(hex, hash);
    pid_t child2 = 0;
    if (n_sources == 2) {
        if (pipe(pipefd) != 0) return 1;
        child2 = fork();
        if (child2 == 0) {
            close(pipefd[0]);
            evthread_use_pthreads();
            base = event_base_new();
            char home[600];
            snprintf(home, sizeof home, "%s/source2", dir);
            _exit(run_source(model, home, pipefd[1], source2_ns, token));
        }
        close(pipefd[1]);
        char line2[1024] = "";
        got = read(pipefd[0], line2, sizeof line2 - 1);
        close(pipefd[0]);
        if (got <= 0) {
            fprintf(stderr, "weights_bench: the second source did not start\n");
            return 1;
        }
    }

    evthread_use_pthreads();
    base = event_base_new();
    char home[600];
    snprintf(home, sizeof home, "%s/fetcher", dir);
    const char *joins[1] = {token};
    char listen[128];
    if (enter_netns(fetcher_ns, listen, sizeof listen) < 0) return 1;
    mesh_config cfg = {.home = home, .listen = listen, .join_tokens = joins, .n_join = 1, .role = "host"};
    mesh *m = mesh_new(base, &cfg, err, sizeof err);
    if (!m) return 1;
    uint8_t peer[MESH_ID_BYTES];
    double deadline = now_s() + 20;
    for (;;) {
        /* Every source alive, and the second's record saying it holds the model. */
        mesh_peer p[3];
        int np = mesh_peers(m, p, 3), alive = 0, held = 0;
        uint8_t ids[2][MESH_ID_BYTES], buf[MESH_MAX_HOLDINGS];
        for (int i = 0; i < np && i < 2; i++)
            if (!strcmp(p[i].state, "alive") && weights_parse_hex(p[i].id, ids[alive]) == 0) {
                held += mesh_node_holdings(m, ids[alive], buf, sizeof buf) > 0;
                alive++;
            }
        if (alive == n_sources && held == n_sources) {
            /* the source named is the first one, the other found by its record */
            memcpy(peer, ids[0], MESH_ID_BYTES);
            for (int i = 0; i < alive; i++)
                if (!strcmp(p[i].id, first_id)) memcpy(peer, ids[i], MESH_ID_BYTES);
            break;
        }
        if (now_s() > deadline) {
            fprintf(stderr, "weights_bench: no connection to the source\n");
            return 1;
        }
        run_for(0.05);
    }
    echo_probe *probe = calloc(1, sizeof *probe);
    probe->s = mesh_stream_open(m, peer, ECHO_TYPE, &probe_handlers, probe, err, sizeof err);
    if (!probe->s) {
        fprintf(stderr, "weights_bench: %s\n", err);
        return 1;
    }
    probe->tick = event_new(base, -1, EV_PERSIST, probe_tick, probe);
    struct timeval five_ms = {0, 5000};
    event_add(probe->tick, &five_ms);
    run_for(1.0);
    printf("fetch: whole model over QUIC %s, window %u KiB\n", fetcher_ns ? "between namespaces" : "on loopback",
           (window ? window : FETCH_WINDOW_BYTES) >> 10);
    probe_report("idle", probe);
    double best = 0;
    for (int r = 0; r < runs; r++) {
        char rhome[700];
        snprintf(rhome, sizeof rhome, "%s/run%d", dir, r);
        weights_store *ws = weights_store_new(base, m, rhome, err, sizeof err);
        if (!ws) return 1;
        if (window) weights_test_set_window(ws, window);
        fetch_result res = {0};
        weights_fetch_callbacks cb = {on_progress, on_done};
        run_for(0.05); /* an echo held up by the last run's clean-up is not this run's */
        probe->n = 0;
        double cpu0 = cpu_seconds(getpid()), cpu_src0 = cpu_seconds(child) + (child2 ? cpu_seconds(child2) : 0);
        double t0 = now_s();
        if (!weights_fetch_start(ws, hash, peer, 0, LAYERS, 1, &cb, &res, err, sizeof err)) {
            fprintf(stderr, "weights_bench: %s\n", err);
            return 1;
        }
        while (!res.done) run_for(0.01);
        double secs = now_s() - t0;
        if (res.error[0]) {
            fprintf(stderr, "weights_bench: %s\n", res.error);
            return 1;
        }
        double mbs = (double)res.total / secs / 1e6;
        printf("  run %d: %.0f MB in %.2f s = %.0f MB/s (%.0f%% of 1 Gbit/s), of which %.2f s to sync after the "
               "last chunk\n", r + 1, res.total / 1e6, secs, mbs, mbs / 125.0 * 100, now_s() - res.last_chunk);
        if (mbs > best) best = mbs;
        double cpu = cpu_seconds(getpid()) - cpu0;
        double cpu_src = cpu_seconds(child) + (child2 ? cpu_seconds(child2) : 0) - cpu_src0;
        printf("    CPU per MB: fetcher %.2f ms (%.0f%% of one core), source%s %.2f ms\n", cpu * 1e3 / (res.total / 1e6),
               100 * cpu / secs, child2 ? "s" : "", cpu_src * 1e3 / (res.total / 1e6));
        weights_source_bytes from[4];
        int nf = weights_store_fetched_from(ws, from, 4);
        for (int i = 0; i < nf; i++) {
            char h[WEIGHTS_HASH_HEX];
            weights_hex(from[i].peer, h);
            printf("    from %.12s%s: %.0f MB\n", h, memcmp(from[i].peer, peer, MESH_ID_BYTES) ? "" : " (named)",
                   from[i].bytes / 1e6);
        }
        probe_report("during the fetch", probe);
        weights_store_free(ws);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", rhome);
        if (system(cmd) != 0) return 1;
    }
    printf("  best: %.0f MB/s\n", best);

    /* The transport alone: the same amount as 1 MiB frames on one stream. */
    int mibs = (int)(mb > 4 ? mb : 4);
    for (int r = 0; r < runs; r++) {
        sink_state sink = {0};
        mesh_stream *s = mesh_stream_open(m, peer, ECHO_TYPE, &sink_handlers, &sink, err, sizeof err);
        if (!s) return 1;
        uint8_t req[5] = {'B', (uint8_t)(mibs >> 24), (uint8_t)(mibs >> 16), (uint8_t)(mibs >> 8), (uint8_t)mibs};
        double t0 = now_s();
        mesh_stream_send(s, req, sizeof req);
        while (sink.frames < mibs && !sink.closed) run_for(0.01);
        double secs = now_s() - t0;
        printf("  transport alone, run %d: %d MiB of 1 MiB frames in %.2f s = %.0f MB/s\n", r + 1, mibs, secs,
               mibs * 1.048576 / secs);
        if (!sink.closed) mesh_stream_abort(s);
    }
    event_free(probe->tick);
    if (probe->s) mesh_stream_abort(probe->s);
    free(probe);
    mesh_free(m);
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    if (child2) {
        kill(child2, SIGTERM);
        waitpid(child2, NULL, 0);
    }
    event_base_free(base);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) != 0;
}

/* quic_bench.c: throughput and latency of net/quic over loopback, two processes.
 *
 * For: the figures in docs/quic.md. The client re-executes itself as the
 * server (a separate process, as in production), then per run: one
 * connection (handshake time), one bulk stream of --mb megabytes (MB/s and
 * CPU seconds per GB on both sides), and --pings ping-pongs of --size bytes
 * on a fresh stream (RTT median and p99). Prints one line per run and the
 * medians. Not a test: it asserts nothing. Build and run with
 * bench/quic_bench.sh. */
#define _GNU_SOURCE
#include "lib/log.h"
#include "net/quic.h"
#include "testkeys.h" /* tests/unit: Ed25519 pairs, hex */

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct event_base *base;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n ? v[n / 2] : 0;
}

static quic_endpoint *make_endpoint(const uint8_t priv[32], const uint8_t pub[32],
                                    const quic_endpoint_callbacks *cb, void *user)
{
    quic_config cfg;
    memset(&cfg, 0, sizeof cfg);
    memcpy(cfg.private_key, priv, 32);
    memcpy(cfg.public_key, pub, 32);
    cfg.bind_host = "127.0.0.1";
    char err[256];
    quic_endpoint *ep = quic_endpoint_new(base, &cfg, cb, user, err, sizeof err);
    if (!ep) {
        fprintf(stderr, "endpoint: %s\n", err);
        exit(2);
    }
    return ep;
}

/* ---- server: 'B' streams are sunk and answered with the byte count and
 * the server's CPU seconds; 'P' streams are echoed. ------------------------ */

typedef struct {
    int kind;
    uint64_t bytes;
    double cpu0;
} srv_stream;

static void srv_on_data(void *user, quic_stream *s, const uint8_t *d, size_t len, int fin)
{
    srv_stream *x = user;
    if (!x->kind && len) {
        x->kind = d[0];
        x->cpu0 = cpu_s();
        d++;
        len--;
    }
    if (x->kind == 'P' && len) quic_stream_write(s, d, len);
    x->bytes += len;
    if (fin) {
        if (x->kind == 'B') {
            char msg[64];
            int n = snprintf(msg, sizeof msg, "%llu %.6f", (unsigned long long)x->bytes,
                             cpu_s() - x->cpu0);
            quic_stream_write(s, msg, (size_t)n);
        }
        quic_stream_finish(s);
    }
}

static void srv_on_close(void *user, quic_stream *s, const char *error) { free(user); }

static const quic_stream_callbacks srv_stream_cbs = {srv_on_data, srv_on_close};

static void srv_ready(void *user, quic_conn *c) {}
static void srv_closed(void *user, quic_conn *c, const char *reason) {}
static void srv_opened(void *user, quic_stream *s)
{
    quic_stream_set_callbacks(s, &srv_stream_cbs, calloc(1, sizeof(srv_stream)));
}

static int serve(char **argv)
{
    uint8_t priv[32], pub[32];
    testkeys_unhex(priv, argv[2], 32);
    testkeys_unhex(pub, argv[3], 32);
    static const quic_endpoint_callbacks cbs = {srv_ready, srv_closed, srv_opened};
    quic_endpoint *ep = make_endpoint(priv, pub, &cbs, NULL);
    printf("%u\n", quic_endpoint_port(ep));
    fflush(stdout);
    struct timeval limit = {600, 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    quic_endpoint_free(ep);
    return 0;
}

/* ---- client ---------------------------------------------------------------- */

static struct {
    quic_conn *conn;
    int ready, closed;
    /* bulk */
    quic_stream *bulk;
    uint64_t bulk_total, bulk_queued;
    char reply[128];
    size_t reply_len;
    int bulk_done;
    /* ping-pong */
    size_t ping_size, got;
    int ping_round;
} cl;

static uint8_t *chunk; /* 1 MiB of payload reused for every write */
#define CHUNK (1u << 20)
#define BULK_WINDOW (16u << 20) /* unacked bytes kept queued */

static void cl_ready(void *user, quic_conn *c)
{
    cl.ready = 1;
    event_base_loopbreak(base);
}

static void cl_closed(void *user, quic_conn *c, const char *reason)
{
    cl.closed = 1;
    fprintf(stderr, "connection closed: %s\n", reason);
    event_base_loopbreak(base);
}

static void cl_opened(void *user, quic_stream *s) { quic_stream_reset(s, 0); }

static void bulk_on_data(void *user, quic_stream *s, const uint8_t *d, size_t len, int fin)
{
    if (cl.reply_len + len < sizeof cl.reply) {
        memcpy(cl.reply + cl.reply_len, d, len);
        cl.reply_len += len;
        cl.reply[cl.reply_len] = 0;
    }
}

static void bulk_on_close(void *user, quic_stream *s, const char *error)
{
    cl.bulk_done = 1;
    cl.bulk = NULL;
    event_base_loopbreak(base);
}

static const quic_stream_callbacks bulk_cbs = {bulk_on_data, bulk_on_close};

/* There is no "acked" callback: keep the queue topped up from a short
 * timer, as an application doing back-pressure with unacked() would. */
static void bulk_pump(evutil_socket_t fd, short what, void *arg)
{
    while (cl.bulk && cl.bulk_queued < cl.bulk_total &&
           quic_stream_unacked(cl.bulk) < BULK_WINDOW) {
        uint64_t n = cl.bulk_total - cl.bulk_queued;
        if (n > CHUNK) n = CHUNK;
        quic_stream_write(cl.bulk, chunk, (size_t)n);
        cl.bulk_queued += n;
        if (cl.bulk_queued == cl.bulk_total) quic_stream_finish(cl.bulk);
    }
}

static void ping_on_data(void *user, quic_stream *s, const uint8_t *d, size_t len, int fin)
{
    cl.got += len;
    if (cl.got >= cl.ping_size) {
        cl.got -= cl.ping_size;
        cl.ping_round++;
        event_base_loopbreak(base);
    }
}

static void ping_on_close(void *user, quic_stream *s, const char *error) {}
static const quic_stream_callbacks ping_cbs = {ping_on_data, ping_on_close};

static void run_loop_until(int *flag, double timeout)
{
    double end = now_s() + timeout;
    while (!*flag && !cl.closed && now_s() < end) event_base_loop(base, EVLOOP_ONCE);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1); /* 50 us default slack coarsens short waits */
    if (getenv("QUIC_BENCH_LOG")) log_set_level(log_parse_level(getenv("QUIC_BENCH_LOG")));
    base = event_base_new();
    if (argc == 4 && strcmp(argv[1], "--serve") == 0) return serve(argv);

    int runs = 5, pings = 2000;
    uint64_t mb = 200;
    size_t size = 16384;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--mb")) mb = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--pings")) pings = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = strtoull(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--runs N] [--mb N] [--pings N] [--size BYTES]\n", argv[0]);
            return 2;
        }
    }
    uint8_t spriv[32], spub[32], cpriv[32], cpub[32];
    testkeys_ed25519(spriv, spub);
    testkeys_ed25519(cpriv, cpub);
    char privhex[65], pubhex[65];
    testkeys_hex(privhex, spriv, 32);
    testkeys_hex(pubhex, spub, 32);
    int p[2];
    if (pipe(p) != 0) return 2;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        char *args[] = {argv[0], "--serve", privhex, pubhex, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(p[1]);
    char line[16] = "";
    if (read(p[0], line, sizeof line - 1) <= 0) return 2;
    close(p[0]);
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)atoi(line));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    static const quic_endpoint_callbacks cbs = {cl_ready, cl_closed, cl_opened};
    quic_endpoint *ep = make_endpoint(cpriv, cpub, &cbs, NULL);
    chunk = malloc(CHUNK);
    for (size_t i = 0; i < CHUNK; i++) chunk[i] = (uint8_t)(i * 7);
    uint8_t *msg = calloc(1, size + 1);
    struct event *pump = event_new(base, -1, EV_PERSIST, bulk_pump, NULL);
    struct timeval pump_tv = {0, 200};
    double *hs = calloc((size_t)runs, sizeof *hs), *mbps = calloc((size_t)runs, sizeof *mbps);
    double *ccpu = calloc((size_t)runs, sizeof *ccpu), *scpu = calloc((size_t)runs, sizeof *scpu);
    double *rtt_med = calloc((size_t)runs, sizeof *rtt_med), *rtt_p99 = calloc((size_t)runs, sizeof *rtt_p99);
    double *rtts = calloc((size_t)pings, sizeof *rtts);
    quic_stats st0;
    quic_endpoint_stats(ep, &st0);
    printf("QUIC loopback, two processes, GSO %s, GRO %s; %llu MB bulk, %d pings of %zu bytes\n",
           st0.gso ? "on" : "off", st0.gro ? "on" : "off", (unsigned long long)mb, pings, size);

    for (int r = 0; r < runs; r++) {
        memset(&cl, 0, sizeof cl);
        char err[256];
        double t0 = now_s();
        cl.conn = quic_connect(ep, (struct sockaddr *)&to, sizeof to, spub, err, sizeof err);
        if (!cl.conn) {
            fprintf(stderr, "connect: %s\n", err);
            return 1;
        }
        run_loop_until(&cl.ready, 10);
        if (!cl.ready) return 1;
        hs[r] = (now_s() - t0) * 1e3;

        /* bulk */
        cl.bulk_total = mb << 20;
        cl.bulk = quic_stream_open(cl.conn, &bulk_cbs, NULL);
        quic_stream_write(cl.bulk, "B", 1);
        double c0 = cpu_s();
        t0 = now_s();
        event_add(pump, &pump_tv);
        bulk_pump(-1, 0, NULL);
        run_loop_until(&cl.bulk_done, 120);
        event_del(pump);
        double dt = now_s() - t0;
        unsigned long long got = 0;
        double srv_cpu = 0;
        sscanf(cl.reply, "%llu %lf", &got, &srv_cpu);
        if (got != cl.bulk_total) {
            fprintf(stderr, "bulk: server got %llu of %llu\n", got,
                    (unsigned long long)cl.bulk_total);
            return 1;
        }
        mbps[r] = (double)mb / dt;
        ccpu[r] = (cpu_s() - c0) / ((double)mb / 1024);
        scpu[r] = srv_cpu / ((double)mb / 1024);

        /* ping-pong on its own stream */
        cl.ping_size = size;
        quic_stream *ps = quic_stream_open(cl.conn, &ping_cbs, NULL);
        msg[0] = 'P';
        quic_stream_write(ps, msg, 1);
        for (int i = 0; i < pings; i++) {
            int want = cl.ping_round + 1;
            t0 = now_s();
            quic_stream_write(ps, msg + 1, size);
            while (cl.ping_round < want && !cl.closed) event_base_loop(base, EVLOOP_ONCE);
            rtts[i] = (now_s() - t0) * 1e6;
        }
        quic_stream_finish(ps);
        rtt_med[r] = median(rtts, pings);
        rtt_p99[r] = rtts[(int)(pings * 0.99)];
        printf("run %d: handshake %.2f ms, bulk %.0f MB/s (CPU s/GB client %.2f, server %.2f), "
               "ping-pong RTT median %.0f us, p99 %.0f us, srtt %llu us\n",
               r + 1, hs[r], mbps[r], ccpu[r], scpu[r], rtt_med[r], rtt_p99[r],
               (unsigned long long)quic_conn_rtt_us(cl.conn));
        fflush(stdout);
        quic_conn_close(cl.conn, "run done");
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    printf("median of %d: handshake %.2f ms, bulk %.0f MB/s, CPU s/GB client %.2f server %.2f, "
           "RTT median %.0f us, p99 %.0f us\n",
           runs, median(hs, runs), median(mbps, runs), median(ccpu, runs), median(scpu, runs),
           median(rtt_med, runs), median(rtt_p99, runs));
    quic_stats st;
    quic_endpoint_stats(ep, &st);
    printf("client endpoint: %llu datagrams out in %llu sendmsg (%.1f per call), %llu in in %llu "
           "recvmsg (%.1f per call), %llu send errors, %llu dropped\n",
           (unsigned long long)st.tx_datagrams, (unsigned long long)st.tx_calls,
           st.tx_calls ? (double)st.tx_datagrams / (double)st.tx_calls : 0.0,
           (unsigned long long)st.rx_datagrams, (unsigned long long)st.rx_calls,
           st.rx_calls ? (double)st.rx_datagrams / (double)st.rx_calls : 0.0,
           (unsigned long long)st.tx_errors, (unsigned long long)st.rx_dropped);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    event_free(pump);
    quic_endpoint_free(ep);
    event_base_free(base);
    free(chunk);
    free(msg);
    free(hs), free(mbps), free(ccpu), free(scpu), free(rtt_med), free(rtt_p99), free(rtts);
    return 0;
}

/* quic_stall.c: a QUIC client that starts handshakes and never finishes
 * them, for tests/integration/half_open.sh.
 *
 *   quic_stall HOME BIND_ADDR HOST:PORT N SECONDS
 *
 * Opens one UDP endpoint on BIND_ADDR (any port; a loopback address of its
 * own, e.g. 127.0.0.4, so the per-address bound it reaches is not the
 * members') with the identity in HOME, starts N connections to HOST:PORT
 * and sends each one's first flight: a real Initial with a real ClientHello
 * (TLS 1.3, llmesh's ALPN and raw public key), each under its own
 * connection ids. Then it reads nothing and sends nothing more for SECONDS:
 * the server holds every connection it accepted half-open (its handshake
 * never completes) until its handshake timeout. Prints "sent N Initials"
 * and exits 0 (2 on a bad argument or setup failure). */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mesh/identity.h"
#include "net/quic.h"

static void on_ready(void *user, quic_conn *c) { (void)user; (void)c; }
static void on_closed(void *user, quic_conn *c, const char *reason) { (void)user; (void)c; (void)reason; }
static void on_stream(void *user, quic_stream *s) { (void)user; quic_stream_reset(s, 0); }

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: quic_stall HOME BIND_ADDR HOST:PORT N SECONDS\n");
        return 2;
    }
    char err[512];
    identity id;
    int created;
    if (identity_load_or_create(argv[1], &id, &created, err, sizeof err) != 0) {
        fprintf(stderr, "quic_stall: %s\n", err);
        return 2;
    }
    char host[64];
    const char *colon = strrchr(argv[3], ':');
    int n = atoi(argv[4]);
    unsigned seconds = (unsigned)atoi(argv[5]);
    struct sockaddr_in to = {.sin_family = AF_INET};
    if (!colon || (size_t)(colon - argv[3]) >= sizeof host || n < 1 || n > 4096) {
        fprintf(stderr, "quic_stall: bad HOST:PORT or N\n");
        return 2;
    }
    memcpy(host, argv[3], (size_t)(colon - argv[3]));
    host[colon - argv[3]] = 0;
    to.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1) {
        fprintf(stderr, "quic_stall: %s is not an IPv4 address\n", host);
        return 2;
    }

    struct event_base *base = event_base_new();
    quic_config cfg = {.bind_host = argv[2], .port = 0};
    memcpy(cfg.private_key, id.secret, QUIC_KEY_BYTES);
    memcpy(cfg.public_key, id.public_key, QUIC_KEY_BYTES);
    quic_endpoint_callbacks cb = {on_ready, on_closed, on_stream};
    quic_endpoint *ep = quic_endpoint_new(base, &cfg, &cb, NULL, err, sizeof err);
    if (!ep) {
        fprintf(stderr, "quic_stall: %s\n", err);
        return 2;
    }
    /* The pinned key does not matter: the server's answer is never read. */
    uint8_t any_key[QUIC_KEY_BYTES] = {0};
    int sent = 0;
    for (int i = 0; i < n; i++) {
        if (!quic_connect(ep, (struct sockaddr *)&to, sizeof to, any_key, err, sizeof err)) {
            fprintf(stderr, "quic_stall: %s\n", err);
            break;
        }
        quic_endpoint_flush(ep);   /* this connection's Initial, now */
        sent++;
    }
    printf("sent %d Initials\n", sent);
    fflush(stdout);
    /* No event loop: the answers stay unread, no retransmission, no ACK. */
    sleep(seconds);
    quic_endpoint_free(ep);
    event_base_free(base);
    identity_wipe(&id);
    return 0;
}

/* fuzz_http.c: raw bytes from a TCP client into the node's two HTTP servers
 * (serve/http.c on libevent's evhttp): the connection guard
 * (serve/http_guard.c), the API-key check, the console's routes (its files,
 * /api/status, /api/events, /metrics, /v1/... on the console's origin) and
 * the API's, with a scheduler that serves no model and no mesh. The servers
 * listen on 127.0.0.1 (ephemeral ports) in this process; each input is one
 * client connection: its bytes are written, the client's side is shut for
 * writing, and the event loop runs until the server closes the connection
 * or a bounded number of rounds has passed (a keep-alive or an event
 * stream), then the client resets it. Nothing may crash, leak or read out
 * of bounds; every answer must start like an HTTP/1.x status line; and the
 * API server that requires a key never answers 2xx to bytes that do not
 * hold the key (its 401 and evhttp's own errors echo nothing of the
 * request, so a 2xx status line in the answer can only be an answer).
 *
 * Input: byte 0 picks the server (bit 0: the console, else the API) and
 * whether a key is required (bit 1: "Bearer fuzz-key"); the rest is what
 * the client sends. Seeds: tests/fuzz/corpus/http (requests to every route,
 * with and without the key, chunked and pipelined).
 *
 * libevent is the system's (not instrumented): the edges libFuzzer counts
 * are llmesh's (http.c, http_guard.c, the API and what it calls). */
#define _GNU_SOURCE  /* memmem */
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve/api.h"
#include "serve/http.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"

#define ROUNDS_MAX 400        /* event-loop rounds per input after the bytes are sent */
#define ANSWER_MAX (1u << 20) /* bytes of answer read per input */

typedef struct {
    struct event_base *base;
    http_server *api_plain, *api_keyed, *console_plain, *console_keyed;
    metrics *m;
} world;

static char *status_json(void *ctx) { (void)ctx; return strdup("{\"node\":\"fuzz\",\"peers\":[]}"); }

/* The registry's families only: what GET /metrics serves of the requests
 * counted here (the node adds the mesh's and scheduler's). */
static char *metrics_text(void *ctx) { return metrics_render(ctx, NULL); }

static world *world_get(void)
{
    static world w;
    if (w.base) return &w;
    char err[256];
    w.base = event_base_new();
    sched *sch = sched_new(w.base);
    api *a = api_new(w.base, sch, NULL);
    w.m = metrics_new();
    if (!w.base || !sch || !a || !w.m) abort();
    w.api_plain = http_api_start(w.base, "127.0.0.1", 0, a, err, sizeof err);
    w.api_keyed = http_api_start(w.base, "127.0.0.1", 0, a, err, sizeof err);
    w.console_plain = http_console_start(w.base, "127.0.0.1", 0, status_json, NULL, err, sizeof err);
    w.console_keyed = http_console_start(w.base, "127.0.0.1", 0, status_json, NULL, err, sizeof err);
    if (!w.api_plain || !w.api_keyed || !w.console_plain || !w.console_keyed) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    http_server *all[] = {w.api_plain, w.api_keyed, w.console_plain, w.console_keyed};
    for (int i = 0; i < 4; i++) http_server_set_metrics(all[i], w.m);
    for (int i = 2; i < 4; i++) {
        http_console_set_api(all[i], a);
        http_console_set_metrics(all[i], metrics_text, w.m);
    }
    if (http_server_require_key(w.api_keyed, "fuzz-key") || http_server_require_key(w.console_keyed, "fuzz-key"))
        abort();
    return &w;
}

static int client_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    world *w = world_get();
    http_server *h = data[0] & 1 ? (data[0] & 2 ? w->console_keyed : w->console_plain)
                                 : (data[0] & 2 ? w->api_keyed : w->api_plain);
    data++;
    size--;
    int keyed_api = h == w->api_keyed;
    int fd = client_connect(http_server_port(h));
    if (fd < 0) return 0;

    /* Send everything (the loop runs between writes so the server drains
     * its side), then shut the client's side for writing. */
    size_t sent = 0, got = 0;
    int closed = 0;
    static char answer[ANSWER_MAX];
    for (int round = 0; round < ROUNDS_MAX && sent < size && !closed; round++) {
        ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
        if (n > 0) sent += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINPROGRESS
                 && errno != ENOTCONN) closed = 1;
        event_base_loop(w->base, EVLOOP_NONBLOCK);
        /* Read as we go: a server answering early must not block on us. */
        ssize_t r = recv(fd, answer + (got < ANSWER_MAX ? got : 0), got < ANSWER_MAX ? ANSWER_MAX - got : ANSWER_MAX, 0);
        if (r > 0) got = got < ANSWER_MAX ? got + (size_t)r : got;
        else if (r == 0) closed = 1;
    }
    if (!closed) shutdown(fd, SHUT_WR);
    for (int round = 0; round < ROUNDS_MAX && !closed; round++) {
        event_base_loop(w->base, EVLOOP_NONBLOCK);
        ssize_t r = recv(fd, answer + (got < ANSWER_MAX ? got : 0), got < ANSWER_MAX ? ANSWER_MAX - got : ANSWER_MAX, 0);
        if (r > 0) got = got < ANSWER_MAX ? got + (size_t)r : got;
        else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) closed = 1;
    }
    /* Whatever came back is HTTP. */
    if (got >= 5 && memcmp(answer, "HTTP/", 5) != 0) abort();
    if (keyed_api && !memmem(data, size, "fuzz-key", 8) &&
        (memmem(answer, got, "HTTP/1.1 2", 10) || memmem(answer, got, "HTTP/1.0 2", 10)))
        abort();
    /* Reset rather than close politely, so no connection lingers in the
     * server (an event stream, a keep-alive) beyond the next rounds. */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    for (int round = 0; round < 4; round++) event_base_loop(w->base, EVLOOP_NONBLOCK);
    return 0;
}

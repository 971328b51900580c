/* test_console_events.c: the /api/events hub (serve/console_events.c) on a
 * real evhttp server and real sockets: the status at once and again on the
 * next tick, the subscriber bound (the next one gets 503), a closed
 * subscriber forgotten, and a subscriber that stops reading dropped, its
 * connection closed, without the loop ever waiting for it. The embedded
 * console files (console_assets.h) are checked here too. Under ASan this
 * also proves the drop path frees what it should. */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve/console_assets.h"
#include "serve/console_events.h"
#include "testlib.h"

static size_t doc_size = 64;   /* bytes of the next status document */
static int docs_made;

static char *status_doc(void *ctx)
{
    char *d = malloc(doc_size + 1);
    if (!d) return NULL;
    memset(d, 'x', doc_size);
    d[0] = '{';
    d[doc_size - 1] = '}';
    d[doc_size] = 0;
    docs_made++;
    return d;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    console_events_subscribe(arg, req);
}

typedef struct {
    struct event_base *base;
    struct evhttp *http;
    console_events *hub;
    uint16_t port;
} server;

static void server_start(server *s)
{
    s->base = event_base_new();
    REQUIRE(s->base);
    s->http = evhttp_new(s->base);
    s->hub = console_events_new(s->base, status_doc, NULL);
    REQUIRE(s->http && s->hub);
    evhttp_set_gencb(s->http, on_request, s->hub);
    struct evhttp_bound_socket *b = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    REQUIRE(b);
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    REQUIRE(getsockname(evhttp_bound_socket_get_fd(b), (struct sockaddr *)&sa, &len) == 0);
    s->port = ntohs(sa.sin_port);
}

static void server_stop(server *s)
{
    console_events_free(s->hub);   /* before evhttp, as serve/http.c does */
    evhttp_free(s->http);
    event_base_free(s->base);
}

/* Runs the loop for ms milliseconds. */
static void spin(server *s, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(s->base, &tv);
    event_base_dispatch(s->base);
}

static int subscribe(server *s, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (rcvbuf) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(s->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char req[] = "GET /api/events HTTP/1.1\r\nHost: test\r\n\r\n";
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || write(fd, req, sizeof req - 1) != sizeof req - 1) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads what is there without blocking; returns the bytes (NUL-terminated,
 * cut at cap - 1) or -1 at EOF. */
static int drain(int fd, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 0) <= 0) break;
        char tmp[4096];
        ssize_t r = read(fd, tmp, sizeof tmp);
        if (r <= 0) return r == 0 && n == 0 ? -1 : (int)n;
        size_t k = (size_t)r < cap - 1 - n ? (size_t)r : cap - 1 - n;
        memcpy(out + n, tmp, k);
        n += k;
    }
    out[n] = 0;
    return (int)n;
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

static void test_events_at_once_then_each_tick(void)
{
    server s = {0};
    server_start(&s);
    doc_size = 64;
    int fd = subscribe(&s, 0);
    REQUIRE(fd >= 0);
    spin(&s, 100);
    char buf[8192];
    REQUIRE(drain(fd, buf, sizeof buf) > 0);
    CHECK(strstr(buf, "HTTP/1.1 200") == buf);
    CHECK(strstr(buf, "Content-Type: text/event-stream") != NULL);
    CHECK(strstr(buf, "retry: 2000") != NULL);
    CHECK_EQ_INT(count(buf, "event: status\ndata: {"), 1);  /* at once */
    /* The document changes (a new size each time): one event per tick. */
    for (int i = 0; i < 3; i++) {
        doc_size += 1;
        spin(&s, CONSOLE_EVENTS_POLL_MS + 50);
    }
    REQUIRE(drain(fd, buf, sizeof buf) > 0);
    CHECK(count(buf, "event: status\n") >= 3);
    console_events_stats st;
    console_events_get_stats(s.hub, &st);
    CHECK_EQ_INT(st.subscribers, 1);
    /* Closed: forgotten at once, and no more documents are made. */
    close(fd);
    spin(&s, 100);
    console_events_get_stats(s.hub, &st);
    CHECK_EQ_INT(st.subscribers, 0);
    int made = docs_made;
    spin(&s, 2 * CONSOLE_EVENTS_POLL_MS);
    CHECK_EQ_INT(docs_made, made);
    server_stop(&s);
}

static void test_bound(void)
{
    server s = {0};
    server_start(&s);
    doc_size = 64;
    int fds[CONSOLE_EVENTS_MAX + 1];
    for (int i = 0; i <= CONSOLE_EVENTS_MAX; i++) {
        fds[i] = subscribe(&s, 0);
        REQUIRE(fds[i] >= 0);
        spin(&s, 20);
    }
    spin(&s, 100);
    char buf[8192];
    REQUIRE(drain(fds[CONSOLE_EVENTS_MAX], buf, sizeof buf) > 0);
    CHECK(strstr(buf, "HTTP/1.1 503") == buf);
    console_events_stats st;
    console_events_get_stats(s.hub, &st);
    CHECK_EQ_INT(st.subscribers, CONSOLE_EVENTS_MAX);
    CHECK_EQ_INT(st.refused, 1);
    for (int i = 0; i <= CONSOLE_EVENTS_MAX; i++) close(fds[i]);
    spin(&s, 100);
    console_events_get_stats(s.hub, &st);
    CHECK_EQ_INT(st.subscribers, 0);
    server_stop(&s);
}

static void test_slow_subscriber_dropped(void)
{
    server s = {0};
    server_start(&s);
    /* Each document alone is more than a subscriber may have queued: one
     * that does not read is over the bound by the next tick or two. */
    doc_size = CONSOLE_EVENTS_MAX_QUEUED + (64u << 10);
    int slow = subscribe(&s, 4096);
    int good = subscribe(&s, 0);
    REQUIRE(slow >= 0 && good >= 0);
    console_events_stats st = {0};
    char *buf = malloc(8u << 20);
    REQUIRE(buf);
    size_t got = 0;
    for (int i = 0; i < 40 && st.dropped == 0; i++) {
        doc_size += 1;
        spin(&s, CONSOLE_EVENTS_POLL_MS / 2);
        int n = drain(good, buf, 8u << 20);   /* the good one keeps up */
        if (n > 0) got += (size_t)n;
        console_events_get_stats(s.hub, &st);
    }
    CHECK_EQ_INT(st.dropped, 1);
    CHECK_EQ_INT(st.subscribers, 1);
    CHECK(got > 2 * CONSOLE_EVENTS_MAX_QUEUED);
    /* The slow one's connection is closed: after what was sent, EOF. */
    spin(&s, 10);
    int eof = 0;
    for (int i = 0; i < 20000 && !eof; i++) {   /* the kernel's buffers, 4 KiB at a time; bounded */
        struct pollfd p = {slow, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) break;
        ssize_t r = read(slow, buf, 1 << 20);
        eof = r <= 0;
    }
    CHECK(eof);
    free(buf);
    close(slow);
    close(good);
    server_stop(&s);   /* frees the hub with a live subscriber */
}

static void test_assets(void)
{
    const console_asset *index = console_asset_find("/", 1);
    REQUIRE(index);
    CHECK_EQ_STR(index->content_type, "text/html; charset=utf-8");
    CHECK(index->len > 0 && memmem(index->data, index->len, "console.js", 10) != NULL);
    CHECK(index->etag[0] == '"' && strlen(index->etag) == 18);
    const console_asset *js = console_asset_find("/console.js?x=1", strlen("/console.js"));
    REQUIRE(js);
    CHECK_EQ_STR(js->content_type, "text/javascript; charset=utf-8");
    CHECK(console_asset_find("/index.html", 11) == NULL);   /* the page is "/" only */
    CHECK(console_asset_find("/console.j", 10) == NULL);
    CHECK(console_asset_find("/../console.js", 14) == NULL);
    int n = 0;
    while (console_asset_at(n)) n++;
    CHECK_EQ_INT(n, 3);
}

int main(void)
{
    RUN(test_events_at_once_then_each_tick);
    RUN(test_bound);
    RUN(test_slow_subscriber_dropped);
    RUN(test_assets);
    return testlib_finish();
}

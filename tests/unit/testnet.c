/* testnet.c: see testnet.h. */
#include "testnet.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testlib.h"

static struct event_base *loop;
static struct event *slice; /* ends a turn of the loop that found nothing to do */

static void slice_over(evutil_socket_t fd, short what, void *arg) {}

struct event_base *testnet_loop(void)
{
    if (loop) return loop;
    evthread_use_pthreads();
    loop = event_base_new();
    slice = loop ? evtimer_new(loop, slice_over, NULL) : NULL;
    if (!slice) {
        fprintf(stderr, "cannot make an event loop\n");
        exit(2);
    }
    return loop;
}

void testnet_loop_free(void)
{
    if (!loop) return;
    event_free(slice);
    event_base_free(loop);
    slice = NULL;
    loop = NULL;
}

uint64_t testnet_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One turn: whatever is ready runs, or the slice passes. A callback's
 * event_base_loopbreak ends the turn early, as it ends a dispatch. */
static void turn(void)
{
    struct timeval tv = {0, TESTNET_SLICE_MS * 1000};
    evtimer_add(slice, &tv);
    event_base_loop(testnet_loop(), EVLOOP_ONCE);
}

int testnet_run_until(int (*cond)(void *), void *ctx, int limit_ms)
{
    uint64_t end = testnet_now_ms() + (uint64_t)limit_ms;
    while (!cond(ctx)) {
        if (testnet_now_ms() >= end) return 0;
        turn();
    }
    return 1;
}

void testnet_run_for(int ms)
{
    uint64_t end = testnet_now_ms() + (uint64_t)ms;
    while (testnet_now_ms() < end) turn();
}

mesh *testnet_mesh(const char *name, const char *listen, const char *role, const char *join)
{
    const char *joins[1] = {join};
    mesh_config cfg = {.home = testlib_tmp_path(name), .listen = listen ? listen : "127.0.0.1:0",
                       .join_tokens = joins, .n_join = join ? 1 : 0, .role = role};
    char err[512] = "";
    mesh *m = mesh_new(testnet_loop(), &cfg, err, sizeof err);
    if (!m) fprintf(stderr, "  mesh_new(%s): %s\n", name, err);
    return m;
}

static int sees_alive(mesh *m, const mesh *other)
{
    mesh_peer peers[16];
    int n = mesh_peers(m, peers, 16);
    for (int i = 0; i < n && i < 16; i++)
        if (!strcmp(peers[i].id, mesh_node_id_hex(other))) return !strcmp(peers[i].state, "alive");
    return 0;
}

typedef struct {
    mesh *a, *b;
} pair;

static int pair_alive(void *arg)
{
    pair *p = arg;
    return sees_alive(p->a, p->b) && sees_alive(p->b, p->a);
}

int testnet_connect(mesh *a, mesh *b, int limit_ms)
{
    pair p = {a, b};
    return testnet_run_until(pair_alive, &p, limit_ms);
}

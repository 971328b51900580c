/* mesh_flood.c: a mesh member that misbehaves, for tests/integration/abuse.sh.
 *
 *   mesh_flood HOME TOKEN SECONDS
 *
 * Joins the mesh with TOKEN (so it passes admission: it holds the secret),
 * waits until the token's node is alive, then for SECONDS opens stream after
 * stream of a type nobody registered, each with one frame of garbage, as
 * fast as the loop allows (a few hundred a second at most: each waits for a
 * loop turn). The member must count them as malformed, cut it off after
 * the ban threshold (--ban-bad-frames, default 32) and refuse it while the ban lasts. Prints one line:
 * "opened N streams, connected at end: 0|1". Exit 0, or 1 if it never got in. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mesh/mesh.h"
#include "mesh/token.h"

static mesh *m;
static uint8_t target[MESH_ID_BYTES];
static int joined;
static long opened;
static struct timespec join_start, start;
static double flood_seconds;

static int target_alive(void)
{
    mesh_peer peers[16];
    char hex[MESH_ID_HEX];
    for (int i = 0; i < MESH_ID_BYTES; i++) snprintf(hex + 2 * i, 3, "%02x", target[i]);
    int n = mesh_peers(m, peers, 16);
    for (int i = 0; i < n && i < 16; i++)
        if (!strcmp(peers[i].id, hex)) return !strcmp(peers[i].state, "alive");
    return 0;
}

static double since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct event_base *base = arg;
    if (!joined) {
        if (target_alive()) {
            joined = 1;
            clock_gettime(CLOCK_MONOTONIC, &start);
        } else if (since(&join_start) > 30) {
            event_base_loopexit(base, NULL);  /* never got in */
        }
        return;
    }
    if (since(&start) > flood_seconds) {
        event_base_loopexit(base, NULL);
        return;
    }
    for (int i = 0; i < 8; i++) {
        char err[256];
        mesh_stream *s = mesh_stream_open(m, target, 99, NULL, NULL, err, sizeof err);
        if (!s) break;
        static const char junk[] = "not a frame anyone reads";
        mesh_stream_send(s, junk, sizeof junk);
        opened++;
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: mesh_flood HOME TOKEN SECONDS\n");
        return 2;
    }
    token t;
    char err[512];
    if (token_decode(argv[2], &t, err, sizeof err) != 0) {
        fprintf(stderr, "mesh_flood: %s\n", err);
        return 2;
    }
    memcpy(target, t.id, MESH_ID_BYTES);
    struct event_base *base = event_base_new();
    const char *joins[1] = {argv[2]};
    mesh_config cfg = {.home = argv[1], .listen = "127.0.0.1:0", .join_tokens = joins, .n_join = 1,
                       .role = "standby"};
    m = mesh_new(base, &cfg, err, sizeof err);
    if (!m) {
        fprintf(stderr, "mesh_flood: %s\n", err);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &join_start);
    flood_seconds = atof(argv[3]);
    struct event *ev = event_new(base, -1, EV_PERSIST, tick, base);
    struct timeval tv = {0, 5000};
    event_add(ev, &tv);
    event_base_dispatch(base);
    printf("opened %ld streams, connected at end: %d\n", opened, target_alive());
    event_free(ev);
    mesh_free(m);
    event_base_free(base);
    return joined ? 0 : 1;
}

/* testnet.h: the event loop of a unit test that runs meshes in this process
 * over real QUIC on loopback (test_mesh.c, test_weights.c,
 * test_stage_host.c), the bounded waits on it, and meshes to run there.
 *
 * One loop per process, made on first use after evthread_use_pthreads():
 * the weights store and the stage host have worker threads that wake the
 * loop. Every wait has a deadline, and one turn of the loop lasts at most
 * TESTNET_SLICE_MS, so a condition is looked at again soon after anything
 * happens and a wait never outlives its limit by more than a slice.
 * Threading: the test's main thread only. */
#ifndef TESTNET_H
#define TESTNET_H

#include <stdint.h>

#include "mesh/mesh.h"

struct event_base;

#define TESTNET_SLICE_MS 5

/* The process's loop (made on the first call). */
struct event_base *testnet_loop(void);
/* Frees the loop; every mesh and module on it must be gone. */
void testnet_loop_free(void);

uint64_t testnet_now_ms(void);
/* Runs the loop until cond(ctx) holds or limit_ms passes: 1 when it held. */
int testnet_run_until(int (*cond)(void *), void *ctx, int limit_ms);
/* Runs the loop for ms. */
void testnet_run_for(int ms);

/* A mesh on the loop with its home under the test's temporary directory
 * (testlib_tmp_path(name)); listen NULL means "127.0.0.1:0"; joins through
 * the token join unless it is NULL. NULL with a message on stderr. */
mesh *testnet_mesh(const char *name, const char *listen, const char *role, const char *join);
/* Runs the loop until a and b each see the other alive: 1, or 0 after limit_ms. */
int testnet_connect(mesh *a, mesh *b, int limit_ms);

#endif

/* test_scheduler.c: the scheduler's hand-off of generated text from lane
 * threads to the loop thread (scheduler.c, sched_on_wake), with the demo
 * model on four lanes.
 *
 * The loop walks the list of jobs that have news while lane threads keep
 * posting. A slow output callback (it sleeps on the loop thread) makes the
 * other jobs post, and finish, while their entries wait further down that
 * list: the walk must then deliver every job's text once and free every
 * job once. (Before 917dd38 the walk cleared every entry's mark when it
 * took the list, a job posted meanwhile was pushed onto the ready list and
 * relinked, and jobs were freed while still on it: a double free or a
 * hang, which ASan reports here.) Meanwhile the held jobs make several
 * tokens each: each must still reach the loop as an output of its own (one
 * stream chunk per token; before 066feeb they came as one). */
#include "testlib.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "serve/scheduler.h"

#define MODEL_ID "kjv-llama-6.3M-q8_0"
#define JOBS 6
#define ROUNDS 40

static struct event_base *base;
static sched *sch;

typedef struct {
    int index;
    size_t text_len;
    int outputs, done, completion_tokens;
    char error[128];
} job_state;

static job_state states[JOBS];
static int n_done;

static void on_output(void *user, const char *text, size_t len, const engine_token *tokens, int n_tokens)
{
    (void)text, (void)tokens, (void)n_tokens;
    job_state *st = user;
    st->text_len += len;
    st->outputs++;
    if (st->index == 0) usleep(3000); /* hold the loop: the others post meanwhile */
}

static void on_done(void *user, const engine_result *result, const char *error, int status)
{
    (void)status;
    job_state *st = user;
    st->done++;
    if (error) snprintf(st->error, sizeof st->error, "%s", error);
    else st->completion_tokens = result->completion_tokens;
    if (++n_done == JOBS) event_base_loopbreak(base);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    event_base_loopbreak(base);
}

static void test_many_jobs_posting_while_the_loop_delivers(void)
{
    static const char *prompts[JOBS] = {"In the beginning", "And God said", "The LORD is my shepherd",
                                        "Blessed are the", "And it came to pass", "For God so loved"};
    int all_ok = 1;
    for (int round = 0; round < ROUNDS; round++) {
        memset(states, 0, sizeof states);
        n_done = 0;
        sched_callbacks cb = {.on_output = on_output, .on_done = on_done};
        for (int i = 0; i < JOBS; i++) {
            engine_request req;
            memset(&req, 0, sizeof req);
            req.prompt = prompts[i];
            req.prompt_len = strlen(prompts[i]);
            engine_sampling_defaults(&req.sampling);
            req.sampling.temperature = 0;
            req.sampling.max_tokens = 12 + 4 * i;
            states[i].index = i;
            CHECK(sched_submit(sch, MODEL_ID, &req, &cb, &states[i], NULL) != NULL);
        }
        struct timeval limit = {60, 0};
        struct event *timeout = evtimer_new(base, on_timeout, NULL);
        evtimer_add(timeout, &limit);
        event_base_dispatch(base);
        event_free(timeout);
        for (int i = 0; i < JOBS; i++) {
            int ok = states[i].done == 1 && !states[i].error[0] && states[i].completion_tokens == 12 + 4 * i &&
                     states[i].text_len > 0 && states[i].outputs == states[i].completion_tokens;
            if (!ok)
                fprintf(stderr, "round %d job %d: done %d, error '%s', tokens %d in %d outputs, text %zu bytes\n",
                        round, i, states[i].done, states[i].error, states[i].completion_tokens, states[i].outputs,
                        states[i].text_len);
            all_ok &= ok;
        }
        if (!all_ok) break;
    }
    CHECK(all_ok);
    CHECK(sched_jobs_active(sch) == 0);
}

int main(void)
{
    evthread_use_pthreads();
    base = event_base_new();
    sch = sched_new(base);
    char err[256];
    engine_load_opts o = {.n_threads = 1, .n_lanes = 4};
    engine_model *m = engine_model_load_opts(testlib_source_path("models/" MODEL_ID ".gguf"), &o, err, sizeof err);
    if (!m) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    sched_add_model(sch, m);
    RUN(test_many_jobs_posting_while_the_loop_delivers);
    sched_free(sch); /* and the model with it */
    event_base_free(base);
    return testlib_finish();
}

/* test_split.c: the engine as stage 0 of a pipeline (engine_set_split) and
 * its lanes answer exactly as solo.
 *
 * The rest of the pipeline is a fake tail in this process: a second model
 * loaded as a part (no head) with one state per lane, computing either inside
 * send (under a mutex; a send carries a batch step's pieces) or on a worker thread
 * of its own, and handing the final hidden states back. It can break the
 * pipeline at its k-th call (send or receive), and its resume moves the split
 * (other local_end values, once solo). Every request's whole output (pieces,
 * token ids, log-probabilities with alternatives, echo records, result) must
 * be byte-identical to a solo engine's, for greedy and seeded sampling, on
 * several architectures, with and without breaks, on two lanes running
 * concurrently. Also: a resume that fails ends the request with its message,
 * a cached prefix is replayed from 0 after engine_set_split, perplexity
 * through a split equals solo's, and a stage-0 file holding only the head
 * and the first layers runs with a tail.
 * Not here: the forward pieces themselves (test_stage.c). */
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "lib/threadpool.h"
#include "model_writer.h"
#include "testlib.h"

#include <pthread.h>
#include <stdlib.h>

enum { MAX_LANES = 2, MAX_BREAKS = 4 };

/* ---- the fake tail ------------------------------------------------------------ */

typedef struct tail_job {
    int lane, pos, n, rows;
    float *x; /* (n, n_embd) copy */
    struct tail_job *next;
} tail_job;

typedef struct {
    model_state *state;
    float *out;         /* (MODEL_BATCH, n_embd) rows asked since the last receive */
    int n_out;
    int submitted, done; /* jobs (threaded) */
    char error[256];
} tail_lane;

typedef struct {
    gguf_file *f;
    model *m;
    threadpool *pool;
    int n_embd, n_layer;
    int first;          /* layers [first, n_layer) run here: the split's local_end */
    int threaded;
    pthread_mutex_t mu; /* everything below, and the pool in synchronous mode */
    pthread_cond_t cond;
    tail_lane lanes[MAX_LANES];
    tail_job *head, *tail_end;
    int quit;
    pthread_t worker;
    /* breaking: the calls (sends and receives, counted from 1) that report BROKEN */
    int calls, breaks[MAX_BREAKS], n_breaks;
    /* resume: the next local_end values to move to (n_layer: solo), or fail */
    engine_model *em;
    int plan[8], n_plan, next_plan;
    int resume_fail, resumes;
    int resume_waits;   /* resume says ENGINE_TAIL_WAITING this many times first */
    /* counting */
    int positions;      /* positions computed */
    int sends_at_zero;  /* sends of position 0 */
    int first_pos_last; /* pos of the first send since reset_counts */
    int sends, pieces;  /* sends (batch steps) and the lanes' pieces in them */
    int depth;          /* engine_tail.depth: steps in flight at once (several leaders) */
} fake_tail;

/* Runs one send's hidden states through layers [first, n_layer) on the lane's
 * state and keeps the rows asked. Called with mu held. */
static void tail_compute(fake_tail *t, int lane, int pos, int n, float *x, int rows)
{
    tail_lane *tl = &t->lanes[lane];
    char err[256];
    if (pos > model_state_n_past(tl->state)) {
        snprintf(tl->error, sizeof tl->error, "lane %d: a send at %d after %d positions", lane, pos,
                 model_state_n_past(tl->state));
        return;
    }
    model_state_truncate(tl->state, pos); /* the rest forgets from pos on */
    if (model_forward_layers(t->m, tl->state, t->pool, t->first, t->n_layer, x, n, err, sizeof err) != 0) {
        snprintf(tl->error, sizeof tl->error, "%s", err);
        return;
    }
    t->positions += n;
    int keep = rows == ENGINE_ROWS_ALL ? n : rows == ENGINE_ROWS_LAST ? 1 : 0;
    const float *src = x + (size_t)(n - keep) * t->n_embd;
    if (tl->n_out + keep > MODEL_BATCH) {
        snprintf(tl->error, sizeof tl->error, "more than a batch of rows asked");
        return;
    }
    memcpy(tl->out + (size_t)tl->n_out * t->n_embd, src, sizeof(float) * (size_t)keep * t->n_embd);
    tl->n_out += keep;
}

static void *tail_worker(void *arg)
{
    fake_tail *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->head && !t->quit) pthread_cond_wait(&t->cond, &t->mu);
        if (!t->head) break;
        tail_job *j = t->head;
        t->head = j->next;
        if (!t->head) t->tail_end = NULL;
        /* computing under mu keeps the fake simple; the engine's lanes still
         * overlap with it (they only wait here in send's enqueue) */
        tail_compute(t, j->lane, j->pos, j->n, j->x, j->rows);
        t->lanes[j->lane].done++;
        free(j->x);
        free(j);
        pthread_cond_broadcast(&t->cond);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* Counts a call; 1 when it is one that breaks. Called with mu held. */
static int tail_breaks_now(fake_tail *t)
{
    t->calls++;
    for (int i = 0; i < t->n_breaks; i++)
        if (t->breaks[i] == t->calls) return 1;
    return 0;
}

/* One lane's piece of a send (t->mu held). */
static void tail_send_piece(fake_tail *t, int lane, int pos, int n, const float *x, int rows)
{
    if (pos == 0) t->sends_at_zero++;
    if (t->first_pos_last < 0) t->first_pos_last = pos;
    float *copy = malloc(sizeof(float) * (size_t)n * t->n_embd);
    memcpy(copy, x, sizeof(float) * (size_t)n * t->n_embd);
    if (t->threaded) {
        tail_job *j = calloc(1, sizeof *j);
        *j = (tail_job){lane, pos, n, rows, copy, NULL};
        if (t->tail_end) t->tail_end->next = j;
        else t->head = j;
        t->tail_end = j;
        t->lanes[lane].submitted++;
        pthread_cond_broadcast(&t->cond);
    } else {
        tail_compute(t, lane, pos, n, copy, rows);
        free(copy);
    }
}

/* A batch step: one call, every lane's piece in turn. */
static int tail_send(void *ctx, engine_tail_piece *pieces, int n_pieces, const float *x, uint64_t local_us,
                     char *err, size_t errlen)
{
    (void)local_us;
    fake_tail *t = ctx;
    pthread_mutex_lock(&t->mu);
    if (tail_breaks_now(t)) {
        pthread_mutex_unlock(&t->mu);
        snprintf(err, errlen, "stage 1 is gone");
        return ENGINE_TAIL_BROKEN;
    }
    t->sends++;
    t->pieces += n_pieces;
    for (int i = 0; i < n_pieces; i++) {
        pieces[i].broken = 0;
        tail_send_piece(t, pieces[i].lane, pieces[i].pos, pieces[i].n, x, pieces[i].rows);
        x += (size_t)pieces[i].n * t->n_embd;
    }
    pthread_mutex_unlock(&t->mu);
    return 0;
}

static int tail_receive(void *ctx, int lane, float *out, int n_rows, char *err, size_t errlen)
{
    fake_tail *t = ctx;
    tail_lane *tl = &t->lanes[lane];
    pthread_mutex_lock(&t->mu);
    if (tail_breaks_now(t)) {
        pthread_mutex_unlock(&t->mu);
        snprintf(err, errlen, "stage 1 is gone");
        return ENGINE_TAIL_BROKEN;
    }
    while (tl->done < tl->submitted) pthread_cond_wait(&t->cond, &t->mu);
    int rc = 0;
    if (tl->error[0]) {
        snprintf(err, errlen, "%s", tl->error);
        rc = -1;
    } else if (n_rows != tl->n_out) {
        snprintf(err, errlen, "receive of %d rows, %d asked", n_rows, tl->n_out);
        rc = -1;
    } else {
        memcpy(out, tl->out, sizeof(float) * (size_t)n_rows * t->n_embd);
    }
    tl->n_out = 0;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static int tail_resume(void *ctx, int lane, char *err, size_t errlen);

static engine_tail tail_of(fake_tail *t)
{
    return (engine_tail){.ctx = t, .depth = t->depth, .send = tail_send, .receive = tail_receive,
                         .resume = tail_resume};
}

/* Moves the engine (and the fake) to a split at local_end (n_layer: solo). */
static void tail_set_split(fake_tail *t, int local_end)
{
    pthread_mutex_lock(&t->mu);
    t->first = local_end;
    pthread_mutex_unlock(&t->mu);
    engine_tail et = tail_of(t);
    engine_set_split(t->em, local_end, local_end == t->n_layer ? NULL : &et);
}

static int tail_resume(void *ctx, int lane, char *err, size_t errlen)
{
    fake_tail *t = ctx;
    tail_lane *tl = &t->lanes[lane];
    pthread_mutex_lock(&t->mu);
    t->resumes++;
    if (t->resume_waits > 0) {
        t->resume_waits--;
        pthread_mutex_unlock(&t->mu);
        return ENGINE_TAIL_WAITING;
    }
    while (tl->done < tl->submitted) pthread_cond_wait(&t->cond, &t->mu); /* drop what was in flight */
    tl->n_out = 0;
    tl->error[0] = 0;
    int fail = t->resume_fail, next = t->n_plan ? t->plan[t->next_plan++ % t->n_plan] : t->first;
    pthread_mutex_unlock(&t->mu);
    if (fail) {
        snprintf(err, errlen, "no memory left in the mesh for layers %d-%d", t->first, t->n_layer - 1);
        return -1;
    }
    tail_set_split(t, next);
    return 0;
}

/* A tail running layers [lo, n_layer) at most (loaded as that part), for em. */
static fake_tail *tail_new(const char *path, engine_model *em, int lo, int threaded)
{
    char err[256];
    fake_tail *t = calloc(1, sizeof *t);
    REQUIRE(t);
    t->em = em;
    t->threaded = threaded;
    t->first_pos_last = -1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cond, NULL);
    t->f = gguf_open(path, err, sizeof err);
    REQUIRE(t->f);
    t->n_layer = engine_model_n_layer(em);
    t->n_embd = engine_model_n_embd(em);
    model_part part = {lo, t->n_layer, 0};
    t->m = model_load_part(t->f, &part, err, sizeof err);
    if (!t->m) fprintf(stderr, "  %s\n", err);
    REQUIRE(t->m);
    t->pool = threadpool_create(2, err, sizeof err);
    REQUIRE(t->pool);
    for (int i = 0; i < MAX_LANES; i++) {
        t->lanes[i].state = model_state_new(t->m, engine_model_context_length(em),
                                            (model_kv_type)engine_model_kv_type(em), err, sizeof err);
        t->lanes[i].out = malloc(sizeof(float) * MODEL_BATCH * (size_t)t->n_embd);
        REQUIRE(t->lanes[i].state && t->lanes[i].out);
    }
    if (threaded) REQUIRE(pthread_create(&t->worker, NULL, tail_worker, t) == 0);
    return t;
}

static void tail_free(fake_tail *t)
{
    if (t->threaded) {
        pthread_mutex_lock(&t->mu);
        t->quit = 1;
        pthread_cond_broadcast(&t->cond);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->worker, NULL);
    }
    for (int i = 0; i < MAX_LANES; i++) {
        model_state_free(t->lanes[i].state);
        free(t->lanes[i].out);
    }
    threadpool_free(t->pool);
    model_free(t->m);
    gguf_close(t->f);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cond);
    free(t);
}

/* ---- requests and their transcripts ---------------------------------------------- */

typedef struct {
    unsigned char *buf;
    size_t len, cap;
} transcript;

static void put(transcript *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        t->cap = (t->len + n) * 2 + 256;
        t->buf = realloc(t->buf, t->cap);
    }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
}

/* Everything a request delivers, in order: each piece and the token records
 * that come with it (unused alternatives left out). */
static int record_output(void *user, const char *text, size_t len, const engine_token *tokens, int n)
{
    transcript *t = user;
    put(t, "P", 1);
    put(t, &len, sizeof len);
    put(t, text, len);
    put(t, &n, sizeof n);
    for (int i = 0; i < n; i++) {
        const engine_token *k = &tokens[i];
        put(t, &k->id, sizeof k->id);
        put(t, &k->prompt, sizeof k->prompt);
        put(t, &k->logprob, sizeof k->logprob);
        put(t, &k->n_top, sizeof k->n_top);
        put(t, k->top, sizeof k->top[0] * (size_t)k->n_top);
    }
    return 0;
}

enum { N_REQUESTS = 6 };

/* Request i of the sequence every test runs on a lane, in order: prompts that
 * cross the 64-position piece and reuse the previous cache, greedy and seeded,
 * log-probabilities, echo scoring, a stop string, token ids. */
static void make_request(int i, engine_request *r)
{
#define P1 "The quick brown fox jumps over the lazy dog, again and again, until the sun goes " \
           "down behind the hills."
    static const char p1[] = P1, p2[] = P1 " And then"; /* constants: lanes' threads share them */
#undef P1
    static const int32_t ids[] = {299, 40, 41, 42, 10, 100, 7};
    engine_request_defaults(r);
    r->prompt = p1;
    r->prompt_len = strlen(p1);
    r->sampling.temperature = 0;
    r->sampling.max_tokens = 10;
    switch (i) {
    case 0: /* greedy, with alternatives */
        r->logprobs = 1, r->top_logprobs = 5;
        break;
    case 1: /* extends the cached prompt; seeded sampling */
        r->prompt = p2, r->prompt_len = strlen(p2);
        r->sampling.temperature = 0.9f, r->sampling.top_k = 50, r->sampling.top_p = 0.95f;
        r->sampling.seed = 1234, r->sampling.max_tokens = 12;
        r->logprobs = 1, r->top_logprobs = 2;
        break;
    case 2: /* echo scoring of a prompt over two pieces */
        r->prompt = p2, r->prompt_len = strlen(p2);
        r->logprobs = 1, r->top_logprobs = 3, r->echo_logprobs = 1;
        r->sampling.max_tokens = 3;
        break;
    case 3: /* a stop string and penalties, sampled */
        r->sampling.temperature = 1.2f, r->sampling.seed = 99, r->sampling.max_tokens = 16;
        r->sampling.repeat_penalty = 1.3f, r->sampling.n_stop = 1;
        snprintf(r->sampling.stop[0], sizeof r->sampling.stop[0], "e");
        break;
    case 4: /* token ids, short */
        r->prompt_ids = ids, r->n_prompt_ids = 7;
        r->logprobs = 1;
        break;
    default: /* the first prompt again: most of it is cached */
        r->sampling.max_tokens = 6;
        r->logprobs = 1, r->top_logprobs = 1;
        break;
    }
}

/* Runs request i on lane and appends its transcript (output, result, error). */
static void run_request(engine_model *em, int lane, int i, transcript *t)
{
    engine_request *r = malloc(sizeof *r);
    make_request(i, r);
    engine_result res;
    char err[256] = "";
    int rc = engine_run_lane(em, lane, r, record_output, t, &res, err, sizeof err);
    put(t, &rc, sizeof rc);
    if (rc != 0) {
        fprintf(stderr, "  request %d on lane %d: %s\n", i, lane, err);
        put(t, err, strlen(err));
    } else {
        put(t, &res.prompt_tokens, sizeof res.prompt_tokens);
        put(t, &res.completion_tokens, sizeof res.completion_tokens);
        put(t, res.finish_reason, strlen(res.finish_reason));
    }
    free(r);
}

static void run_all(engine_model *em, int lane, transcript *t)
{
    for (int i = 0; i < N_REQUESTS; i++) run_request(em, lane, i, t);
}

static int same(const transcript *a, const transcript *b, const char *what)
{
    if (a->len == b->len && !memcmp(a->buf, b->buf, a->len)) return 1;
    size_t at = 0;
    while (at < a->len && at < b->len && a->buf[at] == b->buf[at]) at++;
    fprintf(stderr, "  %s: transcripts differ at byte %zu (lengths %zu, %zu)\n", what, at, a->len, b->len);
    return 0;
}

/* ---- models ------------------------------------------------------------------------ */

static engine_model *load(const char *path, int n_lanes, int n_threads)
{
    char err[512];
    engine_load_opts o = {.n_threads = n_threads, .n_lanes = n_lanes};
    engine_model *em = engine_model_load_opts(path, &o, err, sizeof err);
    if (!em) fprintf(stderr, "  %s\n", err);
    REQUIRE(em);
    return em;
}

/* ---- tests ------------------------------------------------------------------------- */

/* Splits at every kind of point (no layer here, the first, the middle, all
 * but the last), with the tail computing in send or on its own thread: the
 * same transcripts as solo, on lane 0 and lane 1. */
static void test_split_matches_solo(void)
{
    const char *arches[] = {"llama", "qwen2", "gemma3", "phi3"};
    for (size_t a = 0; a < sizeof arches / sizeof arches[0]; a++) {
        model_writer_params p = model_writer_small(arches[a], a % 2 ? GGML_TYPE_Q8_0 : GGML_TYPE_F32, 20 + a);
        const char *path = testlib_tmp_path("split.gguf");
        REQUIRE(model_writer_write(path, &p) == 0);
        engine_model *solo = load(path, 1, 2);
        transcript want = {0};
        run_all(solo, 0, &want);
        engine_model_free(solo);

        int L = p.n_layer, ends[] = {0, 1, L / 2, L - 1};
        for (int threaded = 0; threaded < 2; threaded++) {
            engine_model *em = load(path, 2, 1 + threaded);
            fake_tail *t = tail_new(path, em, 0, threaded);
            for (size_t e = 0; e < sizeof ends / sizeof ends[0]; e++) {
                tail_set_split(t, ends[e]);
                for (int lane = 0; lane < 2; lane++) {
                    transcript got = {0};
                    run_all(em, lane, &got);
                    char what[96];
                    snprintf(what, sizeof what, "%s, layers [0, %d) here, %s tail, lane %d", arches[a],
                             ends[e], threaded ? "threaded" : "synchronous", lane);
                    CHECK(same(&want, &got, what));
                    free(got.buf);
                }
            }
            CHECK(t->positions > 0);
            tail_free(t);
            engine_model_free(em);
        }
        free(want.buf);
    }
}

/* The pipeline breaks at the k-th tail call (during a prompt, the echo
 * scoring, generation, or a replay), and each resume moves the split (to
 * another local_end, or solo): the transcripts stay solo's. */
static void test_breaks_replay_exactly(void)
{
    const char *arches[] = {"llama", "gemma3"};
    for (size_t a = 0; a < sizeof arches / sizeof arches[0]; a++) {
        model_writer_params p = model_writer_small(arches[a], GGML_TYPE_Q8_0, 40 + a);
        const char *path = testlib_tmp_path("break.gguf");
        REQUIRE(model_writer_write(path, &p) == 0);
        int L = p.n_layer;
        engine_model *solo = load(path, 1, 1);
        transcript want = {0};
        run_all(solo, 0, &want);
        engine_model_free(solo);

        /* how many tail calls an unbroken run makes */
        engine_model *em = load(path, 1, 1);
        fake_tail *t = tail_new(path, em, 0, 0);
        tail_set_split(t, 2);
        transcript got = {0};
        run_all(em, 0, &got);
        CHECK(same(&want, &got, "unbroken"));
        free(got.buf);
        int total = t->calls;
        CHECK(total > 60);
        tail_free(t);
        engine_model_free(em);

        int plans[4][3] = {{1, L - 1, L}, {L, 1, 2}, {3, 0, L - 2}, {2, 2, 1}};
        int cases = 0;
        for (int k = 1; k < total; k += k < 8 ? 1 : k / 3, cases++) {
            for (int threaded = 0; threaded < 2; threaded++) {
                em = load(path, 1, 1);
                t = tail_new(path, em, 0, threaded);
                tail_set_split(t, 2);
                t->n_breaks = 3; /* k, and again during or after the replay */
                t->breaks[0] = k, t->breaks[1] = k + 3, t->breaks[2] = k + 40;
                memcpy(t->plan, plans[cases % 4], sizeof plans[0]);
                t->n_plan = 3;
                memset(&got, 0, sizeof got);
                run_all(em, 0, &got);
                char what[96];
                snprintf(what, sizeof what, "%s, broken at call %d%s", arches[a], k,
                         threaded ? " (threaded tail)" : "");
                CHECK(same(&want, &got, what));
                CHECK(t->resumes >= 1);
                free(got.buf);
                tail_free(t);
                engine_model_free(em);
            }
        }
        if (getenv("LLMESH_TEST_VERBOSE"))
            fprintf(stderr, "  %s: %d tail calls unbroken, %d break points\n", arches[a], total, cases);
        CHECK(cases > 15);
        free(want.buf);
    }
}

/* A resume that finds no new pipeline ends the request with its reason; a
 * tail error ends it with the tail's message; the lane recovers after. */
static void test_tail_failures(void)
{
    model_writer_params p = model_writer_small("qwen2", GGML_TYPE_F32, 3);
    const char *path = testlib_tmp_path("fail.gguf");
    REQUIRE(model_writer_write(path, &p) == 0);
    engine_model *em = load(path, 1, 1);
    fake_tail *t = tail_new(path, em, 0, 0);
    tail_set_split(t, 2);
    t->n_breaks = 1;
    t->breaks[0] = 5;
    t->resume_fail = 1;
    engine_request *r = malloc(sizeof *r);
    make_request(0, r);
    engine_result res;
    char err[256];
    transcript got = {0};
    CHECK(engine_run(em, r, record_output, &got, &res, err, sizeof err) == -1);
    CHECK(strstr(err, "no memory left in the mesh for layers 2-3") != NULL);
    CHECK_EQ_INT(t->resumes, 1);

    /* the tail reports an error (a gap in positions it did not expect) */
    pthread_mutex_lock(&t->mu);
    snprintf(t->lanes[0].error, sizeof t->lanes[0].error, "stage 1: out of memory");
    pthread_mutex_unlock(&t->mu);
    t->n_breaks = 0;
    CHECK(engine_run(em, r, record_output, &got, &res, err, sizeof err) == -1);
    CHECK(strstr(err, "stage 1: out of memory") != NULL);

    /* the same lane then answers as solo (its caches are replayed from 0) */
    pthread_mutex_lock(&t->mu);
    t->lanes[0].error[0] = 0;
    pthread_mutex_unlock(&t->mu);
    free(got.buf);
    memset(&got, 0, sizeof got);
    run_all(em, 0, &got);
    engine_model *solo = load(path, 1, 1);
    transcript want = {0};
    run_all(solo, 0, &want);
    CHECK(same(&want, &got, "after failures"));
    free(want.buf);
    free(got.buf);
    engine_model_free(solo);
    tail_free(t);
    engine_model_free(em);
    free(r);
}

/* Output that answers the engine's "still wanted?" (an empty call while a
 * broken split is replaced): no once it has been asked cancel_after times
 * (0: always yes). Everything else is recorded. */
typedef struct {
    transcript tr;
    int probes, cancel_after;
} probed;

static int probed_output(void *user, const char *text, size_t len, const engine_token *tokens, int n)
{
    probed *p = user;
    if (len == 0 && n == 0) {
        p->probes++;
        return p->cancel_after && p->probes >= p->cancel_after;
    }
    return record_output(&p->tr, text, len, tokens, n);
}

/* While the pipeline is being replaced, the engine asks the request between
 * resume's waits whether it is still wanted: a client that left frees the
 * lane at once; one that stays gets the same answer as without the wait. */
static void test_resume_waits_and_cancel(void)
{
    model_writer_params p = model_writer_small("qwen2", GGML_TYPE_F32, 5);
    const char *path = testlib_tmp_path("wait.gguf");
    REQUIRE(model_writer_write(path, &p) == 0);
    engine_request *r = malloc(sizeof *r);
    make_request(0, r);
    engine_result res;
    char err[256];
    engine_model *solo = load(path, 1, 1);
    probed want = {0};
    CHECK(engine_run(solo, r, probed_output, &want, &res, err, sizeof err) == 0);
    CHECK_EQ_INT(want.probes, 0);

    engine_model *em = load(path, 1, 1);
    fake_tail *t = tail_new(path, em, 0, 0);
    tail_set_split(t, 2);
    t->n_breaks = 1;
    t->breaks[0] = 3;
    t->resume_waits = 1000; /* no new pipeline for a long time */
    probed gone = {.cancel_after = 3};
    CHECK(engine_run(em, r, probed_output, &gone, &res, err, sizeof err) == -1);
    CHECK(strcmp(err, "cancelled") == 0);
    CHECK_EQ_INT(gone.probes, 3);
    CHECK_EQ_INT(t->resumes, 3);
    free(gone.tr.buf);

    /* the next request on the lane waits twice, then goes on to the answer */
    t->calls = 0;
    t->resumes = 0;
    t->resume_waits = 2;
    probed stays = {0};
    CHECK(engine_run(em, r, probed_output, &stays, &res, err, sizeof err) == 0);
    CHECK_EQ_INT(stays.probes, 2);
    CHECK_EQ_INT(t->resumes, 3);
    CHECK(same(&want.tr, &stays.tr, "after waiting for a new pipeline"));
    free(stays.tr.buf);
    free(want.tr.buf);
    tail_free(t);
    engine_model_free(em);
    engine_model_free(solo);
    free(r);
}

/* After engine_set_split a prompt that extends the cached one is evaluated
 * from position 0 (the other stages' caches are new); without one, only the
 * new positions travel. */
static void test_prefix_replayed_after_set_split(void)
{
    model_writer_params p = model_writer_small("llama", GGML_TYPE_F32, 8);
    const char *path = testlib_tmp_path("prefix.gguf");
    REQUIRE(model_writer_write(path, &p) == 0);
    engine_model *em = load(path, 1, 1);
    fake_tail *t = tail_new(path, em, 0, 0);
    tail_set_split(t, 2);
    transcript got = {0};
    run_request(em, 0, 0, &got); /* p1: BOS + 103 bytes (no merges), then up to 10 tokens */
    int prompt1 = 104;
    CHECK(t->positions >= prompt1);
    CHECK_EQ_INT(t->sends_at_zero, 1);

    t->positions = 0, t->sends_at_zero = 0, t->first_pos_last = -1;
    run_request(em, 0, 1, &got); /* p2 = p1 + " And then": the p1 part is reused */
    CHECK(t->first_pos_last >= prompt1); /* and maybe a generated token that p2 repeats */
    CHECK_EQ_INT(t->sends_at_zero, 0);

    tail_set_split(t, 2); /* same place, new generation */
    t->positions = 0, t->sends_at_zero = 0, t->first_pos_last = -1;
    run_request(em, 0, 1, &got);
    CHECK_EQ_INT(t->first_pos_last, 0);
    CHECK_EQ_INT(t->sends_at_zero, 1);
    CHECK(t->positions >= prompt1 + 9);
    free(got.buf);
    tail_free(t);
    engine_model_free(em);
}

typedef struct {
    engine_model *em;
    int lane;
    transcript t;
} lane_run;

static void *lane_thread(void *arg)
{
    lane_run *lr = arg;
    for (int round = 0; round < 2; round++) run_all(lr->em, lr->lane, &lr->t);
    return NULL;
}

/* Two lanes on two threads, through a tail and solo: each lane's transcript
 * is the sequential one, and through a tail the lanes share sends (batch
 * steps carrying both lanes' pieces); with a tail of depth 2 (two leaders,
 * the generating lanes in separate steps, in flight at once) too. */
static void test_lanes_run_concurrently(void)
{
    model_writer_params p = model_writer_small("phi3", GGML_TYPE_Q8_0, 12);
    const char *path = testlib_tmp_path("lanes.gguf");
    REQUIRE(model_writer_write(path, &p) == 0);
    engine_model *solo = load(path, 1, 1);
    transcript want = {0};
    for (int round = 0; round < 2; round++) run_all(solo, 0, &want);
    engine_model_free(solo);
    for (int mode = 0; mode < 4; mode++) { /* solo, synchronous tail, threaded tail, and with depth 2 */
        engine_model *em = load(path, 2, 2);
        fake_tail *t = mode ? tail_new(path, em, 0, mode >= 2) : NULL;
        if (t) t->depth = mode == 3 ? 2 : 0;
        if (t) tail_set_split(t, 1);
        lane_run runs[2] = {{em, 0, {0}}, {em, 1, {0}}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++) REQUIRE(pthread_create(&th[i], NULL, lane_thread, &runs[i]) == 0);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < 2; i++) {
            char what[64];
            snprintf(what, sizeof what, "mode %d, lane %d", mode, i);
            CHECK(same(&want, &runs[i].t, what));
            free(runs[i].t.buf);
        }
        /* the two lanes shared steps: some sends carried both their pieces
         * (with depth 2 the generating lanes go in separate steps) */
        if (t && mode < 3) CHECK(t->pieces > t->sends);
        if (t) tail_free(t);
        engine_model_free(em);
    }
    free(want.buf);
}

/* Perplexity through a split is solo's number exactly (demo model). */
static void test_perplexity_through_split(void)
{
    char path[512]; /* testlib_source_path's buffer is reused by the next call */
    snprintf(path, sizeof path, "%s", testlib_source_path("models/kjv-llama-6.3M-q8_0.gguf"));
    FILE *fp = fopen(testlib_source_path("models/kjv-heldout.txt"), "rb");
    REQUIRE(fp);
    static char text[4096];
    size_t len = fread(text, 1, sizeof text, fp);
    fclose(fp);
    char err[256];
    engine_model *em = load(path, 1, 2);
    engine_perplexity_result want, got;
    REQUIRE(engine_perplexity(em, text, len, 0, &want, err, sizeof err) == 0);
    fake_tail *t = tail_new(path, em, 0, 1);
    tail_set_split(t, 3);
    REQUIRE(engine_perplexity(em, text, len, 0, &got, err, sizeof err) == 0);
    CHECK(want.mean_nll == got.mean_nll);
    CHECK_EQ_INT(want.scored_tokens, got.scored_tokens);
    CHECK(t->positions >= got.scored_tokens);
    tail_free(t);
    engine_model_free(em);
}

/* ---- stage 0 from a partial file ----------------------------------------------------- */

static int keep_stage0(void *ctx, const char *name)
{
    static const model_part head01 = {0, 2, 1};
    return model_part_has_tensor(&head01, *(const int *)ctx, name);
}

/* Loading options, and a stage-0 file with the head and layers 0-1 only:
 * it needs a split to run, and with one it answers as solo. */
static void test_load_opts_and_stage0_file(void)
{
    model_writer_params p = model_writer_small("qwen2", GGML_TYPE_F32, 30);
    const char *path = testlib_tmp_path("opts.gguf");
    REQUIRE(model_writer_write(path, &p) == 0);
    char err[512];
    engine_load_opts o = {.n_threads = 1, .n_ctx = 300};
    CHECK(!engine_model_load_opts(path, &o, err, sizeof err));
    CHECK(strstr(err, "exceeds the model's 256") != NULL);
    o = (engine_load_opts){.n_threads = 1, .n_ctx = 128, .n_lanes = 3};
    engine_model *em = engine_model_load_opts(path, &o, err, sizeof err);
    REQUIRE(em);
    CHECK_EQ_INT(engine_model_context_length(em), 128);
    CHECK_EQ_INT(engine_model_lanes(em), 3);
    engine_request *r = malloc(sizeof *r);
    make_request(0, r);
    engine_result res;
    transcript got = {0};
    CHECK(engine_run_lane(em, 3, r, record_output, &got, &res, err, sizeof err) == -1);
    CHECK(strstr(err, "lane 3") != NULL);
    CHECK(engine_run_lane(em, 2, r, record_output, &got, &res, err, sizeof err) == 0);
    engine_model_free(em);
    free(got.buf);

    /* the stage-0 file: metadata, the head and layers 0-1 */
    const char *part = testlib_tmp_path("stage0.gguf");
    REQUIRE(model_writer_copy(path, part, keep_stage0, &p.n_layer) == 0);
    CHECK(!engine_model_load(part, 1, err, sizeof err)); /* not a whole model */
    CHECK(strstr(err, "blk.2.") != NULL);
    o = (engine_load_opts){.n_threads = 1, .layers_end = 2};
    em = engine_model_load_opts(part, &o, err, sizeof err);
    if (!em) fprintf(stderr, "  %s\n", err);
    REQUIRE(em);
    memset(&got, 0, sizeof got);
    CHECK(engine_run(em, r, record_output, &got, &res, err, sizeof err) == -1);
    CHECK(strstr(err, "layers [2, 4) are not loaded here and no split is set") != NULL);
    fake_tail *t = tail_new(path, em, 2, 1);
    tail_set_split(t, 2);
    free(got.buf);
    memset(&got, 0, sizeof got);
    run_all(em, 0, &got);
    engine_model *solo = load(path, 1, 1);
    transcript want = {0};
    run_all(solo, 0, &want);
    CHECK(same(&want, &got, "stage-0 file"));
    tail_set_split(t, 3); /* more layers here than the file holds: an error, not a crash */
    CHECK(engine_run(em, r, record_output, &got, &res, err, sizeof err) == -1);
    CHECK(strstr(err, "only [0, 2) are loaded") != NULL);
    free(want.buf);
    free(got.buf);
    engine_model_free(solo);
    tail_free(t);
    engine_model_free(em);
    free(r);
}

int main(void)
{
    RUN(test_split_matches_solo);
    RUN(test_breaks_replay_exactly);
    RUN(test_tail_failures);
    RUN(test_resume_waits_and_cancel);
    RUN(test_prefix_replayed_after_set_split);
    RUN(test_lanes_run_concurrently);
    RUN(test_perplexity_through_split);
    RUN(test_load_opts_and_stage0_file);
    return testlib_finish();
}

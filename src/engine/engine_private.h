/* engine_private.h: the engine's inside, shared by engine.c (loading, the
 * generation loop, the split evaluation) and engine_step.c (the batch steps
 * that evaluate every solo lane's tokens in one forward pass). Not for use
 * outside src/engine. */
#ifndef LLMESH_ENGINE_PRIVATE_H
#define LLMESH_ENGINE_PRIVATE_H

#include <pthread.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/json_grammar.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "lib/threadpool.h"

/* One sequence in flight. Only the thread running a request on the lane
 * touches it, except the fields marked "step_lock", which the batch steps
 * share (engine_step.c), and state, logits and rows, which the step leader
 * uses while the lane's job is in its step. */
typedef struct {
    model_state *state;   /* layers [0, local_end) of the sequence (or all, solo) */
    int32_t *cached;      /* (n_ctx) the tokens whose keys/values are in the pipeline's caches */
    int n_cached;
    float *logits;        /* (n_vocab) of the last evaluated position */
    float *rows;          /* (MODEL_BATCH, n_embd) final hidden states received from it */
    float *hidden;        /* (MODEL_BATCH, n_embd) a split step's hidden states, while this
                             lane's thread leads it (split steps may have several leaders) */
    uint64_t generation;  /* the split generation the caches belong to; 0: none (replay) */
    engine_output_fn wanted; /* the running request's output, asked "still wanted?" while */
    void *wanted_user;       /* a broken split is replaced (NULL: nobody to ask) */
    int decoding;         /* step_lock: generating token by token, so it will be back with
                             its next token within a sampling's time (a step waits for it) */
    int queued;           /* step_lock: has a job in the step queue */
} engine_lane;

/* Where layers run: a snapshot is taken under split_lock by each evaluation. */
typedef struct {
    int local_end;        /* layers [0, local_end) here */
    int has_tail;         /* the rest through tail; 0: solo */
    engine_tail tail;
    uint64_t generation;  /* bumped by every engine_set_split */
} engine_split;

typedef struct engine_step_job engine_step_job;

struct engine_model {
    gguf_file *file;      /* the mapping the model's weights point into */
    tokenizer *tok;
    model *model;
    threadpool *pool;
    pthread_mutex_t compute;    /* one forward piece on the pool at a time */
    pthread_mutex_t split_lock; /* guards split */
    engine_split split;
    int n_ctx;            /* positions per lane */
    int n_lanes;
    model_kv_type kv_type; /* of every lane's KV cache */
    engine_lane *lanes;   /* (n_lanes) */
    char id[256];
    chat_template *chat;  /* tokenizer.chat_template, parsed; NULL: none or unusable */
    char chat_error[256]; /* why it is unusable */
    engine_tool_format tool_format; /* read from the template's text */
    char bos_text[64], eos_text[64]; /* the template's bos_token / eos_token */
    pthread_mutex_t grammar_lock; /* guards building grammar_vocab */
    json_vocab *grammar_vocab;    /* the tokens' bytes as a trie, built at the first
                                     constrained request; immutable after */

    /* Batch steps (engine_step.c), all under step_lock: */
    pthread_mutex_t step_lock;
    pthread_cond_t step_cond;   /* a job finished, a lane came back, the leader left */
    engine_step_job *step_head, *step_tail; /* jobs waiting for steps, FIFO */
    int step_leaders;           /* lanes' threads running steps: one solo, up to the
                                   tail's depth in a split */
    model_batch *step_batch;    /* the leader's scratch */
    engine_step_stats step_stats;
};

/* Evaluation of positions [start, n) of lane's record (ln->cached), solo
 * or through the split sp (the lane's snapshot), in the batch steps shared
 * by every lane: logits of the last position into ln->logits, or with all
 * those of every position of [from, n) into all (n - from, n_vocab), or (a
 * split only: the last stage returns every position's final hidden state)
 * with rows their final normed hidden states into rows (n - from, n_embd),
 * for embeddings; [start, from) is a replay whose logits nobody needs. Blocks until done; the
 * calling thread may run steps for other lanes meanwhile. 0, -1 with a
 * message, or ENGINE_TAIL_BROKEN (split: resume, then replay). */
int engine_step_eval(engine_model *m, int lane, const engine_split *sp, int start, int from, int n,
                     float *all, float *rows, char *err, size_t errlen);
/* Marks lane as generating token by token (1) or not (0): steps wait a
 * moment for a decoding lane that has not queued its next token yet. */
void engine_step_set_decoding(engine_model *m, int lane, int decoding);
int engine_step_init(engine_model *m, char *err, size_t errlen);
void engine_step_destroy(engine_model *m);

#endif

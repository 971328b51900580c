/* openai.h: the OpenAI wire dialect: request bodies in, answers out.
 *
 * Parsing validates a /v1/completions or /v1/chat/completions body and turns
 * it into an openai_request that holds the engine_request to run. Rendering
 * turns a local generation's text and tokens into OpenAI's JSON objects and
 * SSE chunks (choices, log-probabilities, usage), and errors into OpenAI's
 * error shape. Not here: which endpoint a path is (serve/api.c), where a
 * request runs, retries and aborts (serve/router.c), generation (engine via
 * serve/scheduler.c). Another wire dialect would sit beside this file and
 * map onto the same engine request.
 *
 * Dependency direction: api.c, router.c and tunnel.c call openai.c; it
 * calls nothing in serve/. It uses engine (tokenizer, chat templates), cJSON
 * and lib/log, and api.h for the sink and counter types only.
 *
 * Threading: event-loop thread only. Token names come from the model's
 * tokenizer, which is immutable and so safe to read while a worker runs. */
#ifndef LLMESH_OPENAI_H
#define LLMESH_OPENAI_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "mesh/mesh.h"   /* MESH_MAX_NAME: a model name's bound */
#include "serve/api.h"
#include "serve/tools.h"

/* ---- requests --------------------------------------------------------------*/

#define OPENAI_MAX_PROMPT_IDS (1 << 20) /* token ids in one prompt */
#define OPENAI_MAX_MESSAGES 4096        /* chat messages in one request */
#define OPENAI_MAX_CHOICES 8            /* n */

/* A parsed completion or chat request. */
typedef struct {
    char model[MESH_MAX_NAME];
    int chat;               /* /v1/chat/completions */
    engine_request *er;     /* owned; er->prompt / er->prompt_ids point at the copies below */
    char *prompt;           /* owned text prompt (or rendered chat) */
    size_t prompt_len;
    int32_t *ids;           /* owned token-id prompt (completions), or NULL */
    int n_ids;
    int stream;
    int include_usage;      /* stream_options.include_usage */
    int prompt_usage;       /* stream_options.prompt_usage (llmesh's): usage of the prompt in the
                               first chunk */
    int echo;               /* completions: the prompt comes back before the completion */
    int max_id;             /* largest token id in the prompt or logit_bias (-1: none) */
    chat_message *msgs;     /* chat: owned roles and contents, rendered by the serving node */
    int n_msgs;
    struct json_grammar *grammar; /* response_format's or a forced tool call's, or NULL; owned
                                     until the scheduler takes it (er->grammar points at it) */
    tools_request *tools;   /* chat: tools and tool_choice (serve/tools.h), or NULL; owned */
    int tool_format;        /* set by rendering: the family's call format when tools are on */
    int tool_forced;        /* required or named: the output is one call */
    int n_choices;          /* n: 1..OPENAI_MAX_CHOICES */
    int continue_final;     /* chat: continue_final_message, the last (assistant) turn left open */
} openai_request;

/* Parses a completion (chat 0) or chat request body; every bound is checked
 * here. A chat request's messages are kept, not rendered: the chat template
 * is the serving model's (openai_request_render_chat, on the node that runs
 * it). Returns 0, or -1 with a message for a 400 (then nothing is left to
 * free). */
int openai_parse_request(const char *body, size_t len, int chat, openai_request *req, char *err,
                         size_t errlen);
void openai_request_free(openai_request *r);
/* Renders a chat request's messages with em's chat template into the
 * engine request's prompt. 0, or -1 with the template's message. */
int openai_request_render_chat(openai_request *req, const engine_model *em, char *err, size_t errlen);

/* The unknown-field rule (openai_fields.c): every non-null member of obj
 * must be in known or in the list of metadata llmesh ignores on purpose;
 * otherwise -1 with a message naming the field (and where, e.g. "a
 * message", when where is not NULL). */
enum { OPENAI_FIELDS_COMPLETION, OPENAI_FIELDS_CHAT, OPENAI_FIELDS_MESSAGE };
const char *const *openai_known_fields(int kind);
int openai_check_fields(const cJSON *obj, const char *const *known, const char *where, char *err,
                        size_t errlen);

/* Field readers shared with the other endpoints (tokenize): an optional
 * boolean, -1 with a message when present but not one; an array of token
 * ids (integers in [0, 2^31), at most OPENAI_MAX_PROMPT_IDS), malloc'ed, or
 * NULL with a message, *max raised to the largest. */
int openai_read_bool(cJSON *root, const char *name, int *out, char *err, size_t errlen);
int32_t *openai_read_token_ids(cJSON *arr, const char *name, int *n_out, int *max, char *err,
                               size_t errlen);

/* ---- answers ---------------------------------------------------------------*/

/* What one choice of a local answer has accumulated. */
typedef struct {
    char *text;             /* whole completion (non-streaming; streaming with tools: held) */
    size_t text_len, text_cap;
    engine_token *toks;     /* non-streaming: every token reported */
    int n_toks, toks_cap;
    long text_offset;       /* characters of text the reported tokens covered */
    int past_prompt;        /* a completion token was reported */
    size_t released;        /* streaming with tools: bytes of text sent as content */
    int echo_sent;          /* streaming: echo_text went out */
    int begun;              /* streaming: its first chunk (role, echo) went out */
    int finished;           /* its end went out (stream) or is in done (JSON) */
    cJSON *done;            /* non-streaming: the finished choice's object */
} openai_choice_state;

/* One answer being rendered: the identity of a completion (id, model,
 * created), its shape (stream, chat) and, for a local generation, what it
 * has accumulated so far. Embedded in each in-flight call; a forwarded call
 * uses only sink, model and stream (the host renders its own answer). */
typedef struct {
    api_sink *sink;         /* where the answer goes */
    int stream;             /* SSE instead of one JSON object */
    int chat;
    char id[48];
    char model[MESH_MAX_NAME];
    long created;
    /* Local generation: log-probabilities and echo. */
    engine_model *engine;   /* the served model (its tokenizer names tokens) */
    int logprobs, top_logprobs, include_usage;
    char *echo_text;        /* echo: the prompt text, sent before the completion */
    /* Tools: the output is parsed into tool_calls at the end; a stream
     * sends content only up to where a call may begin. */
    int tool_format;        /* engine_tool_format; ENGINE_TOOLS_NONE: no tools */
    int tool_forced, tools_parallel;
    /* Several choices (n), generated at once: cur is choice `choice`'s
     * state (openai_answer_select swaps it with saved[]). */
    int choice, n_choices;  /* the choice output goes to, and how many */
    openai_choice_state cur;
    openai_choice_state saved[OPENAI_MAX_CHOICES];
    int n_finished;
    int prompt_tokens, completion_tokens; /* usage over the choices: the prompt once */
    int cached_tokens;      /* the first choice's (prompt tokens held from earlier requests) */
    int prompt_evaluated;   /* prompt positions evaluated over every choice (timings.prompt_n) */
    int prompt_usage;       /* stream_options.prompt_usage: the first chunk has the prompt's usage */
    int prompt_usage_sent;
    int prompt_known, prompt_known_cached; /* streaming: the prompt's tokens before the end (0:
                               unknown) and how many were cached */
    double prompt_ms, predicted_ms; /* timings: the first choice's prompt, every choice's output */
    int n_stages;           /* a split model's stage times, over the choices */
    engine_stage_time stages[ENGINE_MAX_STAGES];
    double hop_ms;
    const engine_result *result; /* while the last stream chunk is made: its timings */
    /* Stop strings: the one that ended a choice is its "stop_reason" (vLLM's
     * name for it; serve/anthropic.c makes it stop_sequence). */
    char stop[ENGINE_MAX_STOP][ENGINE_MAX_STOP_BYTES + 1];
    int n_stop;
    const char *stopped_by;   /* while a choice's end is made: its stop string, or NULL */
} openai_answer;

/* Fills the identity: sink, model, created (now) and an id
 * "<id_prefix>-<16 hex digits>" made from serial and the time. The rest is
 * zero (ans is expected zeroed). */
void openai_answer_init(openai_answer *ans, api_sink *sink, const char *model, const char *id_prefix,
                        uint64_t serial);
/* Frees what the answer accumulated (not ans itself, nor the sink). */
void openai_answer_free(openai_answer *ans);
/* Readies a local generation's answer for req on em: its shape (chat,
 * stream), log-probabilities, usage, and the echoed prompt text. 0, or -1
 * out of memory. */
int openai_answer_prepare(openai_answer *ans, const openai_request *req, engine_model *em);
/* Streaming: begins the SSE answer (200), sends chat's role chunk and the
 * echoed prompt when it does not wait for its tokens. */
void openai_answer_begin_stream(openai_answer *ans);
/* Makes choice i (0 <= i < n_choices) the one the next output and finish
 * are for. */
void openai_answer_select(openai_answer *ans, int i);
/* New text and tokens from the engine: a chunk when streaming, else kept
 * for the final object. */
void openai_answer_output(openai_answer *ans, const char *text, size_t len, const engine_token *toks,
                          int n_toks);
/* The generation of the selected choice succeeded: its end is sent
 * (stream) or kept (JSON). While other choices are still to finish, 1 is
 * returned. After the last one the rest of the answer goes out (the final
 * chunk with the timings, usage and [DONE]; or the whole JSON object with
 * every choice in index order), the sink ends, and 0 is returned. */
int openai_answer_finish(openai_answer *ans, const engine_result *r);

/* ---- other answers ---------------------------------------------------------*/

/* A body for an OpenAI-shaped error; caller frees. */
char *openai_error_json(const char *message, const char *type, const char *code);
/* Answers status with body as the whole JSON answer; ends the sink. */
void openai_send_json(api_sink *sink, int status, cJSON *body);
/* Answers an error (type from the status), counted in counters (bad_requests
 * below 500, else failed); ends the sink. */
void openai_send_error(api_counters *counters, api_sink *sink, int status, const char *code,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Ends a started SSE answer with an error event and [DONE] (the sink's end
 * is left to the caller). */
void openai_sse_error_and_done(api_sink *sink, const char *message);
/* GET /v1/models: the list of these model ids; ends the sink. */
void openai_send_model_list(api_sink *sink, const char *const *ids, int n);

#endif

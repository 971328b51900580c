/* anthropic.h: Anthropic's Messages API (POST /v1/messages and
 * /v1/messages/count_tokens) as a translation onto the OpenAI chat path.
 *
 * A Messages body is checked and rewritten into the OpenAI chat body that
 * asks for the same thing (system prompt, messages with tool_use and
 * tool_result blocks as tool_calls and tool messages, tools, tool_choice,
 * stop_sequences, sampling); that body then takes the chat path unchanged
 * (serve/openai.c parses it, the serving model's template renders it, the
 * router runs it here or forwards it to a host). The answer comes back in
 * OpenAI's shape into an anthropic_answer, a sink that rewrites it on the
 * fly: a chat.completion object into a message object, chat chunks into
 * Anthropic's SSE events (message_start, content_block_start/delta/stop,
 * message_delta, message_stop, ping), OpenAI errors into Anthropic's error
 * shape. Nothing in the router or the tunnel knows about this dialect, and
 * a forwarded request is an ordinary chat request on the wire.
 *
 * The trade-off: each answer is parsed once more (a chunk's JSON per token
 * when streaming), a few microseconds against a token's milliseconds; in
 * exchange one path serves both dialects, split models and forwarding
 * included.
 *
 * Dependency direction: api.c calls this; it uses openai.h (the
 * unknown-field rule), api.h (the sink), cJSON. Threading: event-loop
 * thread only. */
#ifndef LLMESH_ANTHROPIC_H
#define LLMESH_ANTHROPIC_H

#include <stddef.h>

#include "mesh/mesh.h"
#include "serve/api.h"

#define ANTHROPIC_MAX_BLOCKS 4096 /* content blocks in one message, and system blocks */

typedef struct {
    char model[MESH_MAX_NAME];
    int stream;
} anthropic_request_info;

/* Translates a Messages body (count_tokens: a count_tokens body, where
 * max_tokens is not required) into an OpenAI chat body: *chat (malloc'ed,
 * NUL-terminated, *chat_len bytes). 0, or -1 with a message for a 400 (then
 * *chat is NULL). */
int anthropic_translate_request(const char *body, size_t len, int count_tokens, char **chat, size_t *chat_len,
                                anthropic_request_info *info, char *err, size_t errlen);

/* Anthropic's error type for an HTTP status: invalid_request_error (4xx),
 * authentication_error (401), permission_error (403), not_found_error
 * (404), request_too_large (413), rate_limit_error (429), overloaded_error
 * (503, 529), api_error (other 5xx). */
const char *anthropic_error_type(int status);
/* {"type":"error","error":{"type","message"}}; caller frees. */
char *anthropic_error_json(int status, const char *message);
/* Answers status with an Anthropic error, counted in counters like
 * openai_send_error (bad_requests below 500, else failed); ends the sink. */
void anthropic_send_error(api_counters *counters, api_sink *sink, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- answers ---------------------------------------------------------------*/

/* An answer being rewritten into client. ANTHROPIC_MESSAGE: the OpenAI
 * chat answer (JSON or SSE) becomes a message; ANTHROPIC_PASS: a body that
 * is already Anthropic-shaped (a host's count_tokens) passes, and only
 * OpenAI-shaped errors (the router's 404/503) are rewritten. The answer
 * frees itself when its sink ends, or is released (the call aborted). */
enum { ANTHROPIC_MESSAGE, ANTHROPIC_PASS };
typedef struct anthropic_answer anthropic_answer;

/* A new answer for client; NULL: out of memory. */
anthropic_answer *anthropic_answer_new(api_sink *client, const char *model, int kind);
/* The sink to hand the OpenAI path. */
api_sink *anthropic_answer_sink(anthropic_answer *ans);

#endif

/* tools.h: OpenAI tool calls on top of the model's own chat template.
 *
 * Requests: `tools` (functions with JSON-schema parameters), `tool_choice`
 * (auto, none, required, or a named function) and `parallel_tool_calls`
 * are read and bounded here; assistant `tool_calls` and `tool` messages in
 * the history become the message JSON the templates read. On the serving
 * node the model's template renders the tools (engine_render_chat_tools);
 * `required` and a named function put the family's call opener at the end
 * of the prompt and constrain the rest to a call (a JSON-schema grammar of
 * the call: the function's name as a constant and its parameters), so the
 * output is always a valid call. Answers: the family's tool-call output
 * (Hermes/Qwen <tool_call>{json}</tool_call>, Llama 3.1 {"name",
 * "parameters"}, Mistral [TOOL_CALLS][{json}]) is parsed back into OpenAI's
 * tool_calls; a stream holds back text that may be the start of a call.
 *
 * Not here: the JSON grammar (engine/json_grammar.h), rendering answers
 * (openai.c uses these pieces). Threading: event-loop thread (pure
 * functions on their arguments). */
#ifndef LLMESH_TOOLS_H
#define LLMESH_TOOLS_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "engine/engine.h"

#define TOOLS_MAX 128            /* tools in one request */
#define TOOLS_MAX_NAME 64        /* bytes of a function name */
#define TOOLS_MAX_CALLS 16       /* calls parsed from one answer */

enum { TOOLS_AUTO, TOOLS_NONE, TOOLS_REQUIRED, TOOLS_NAMED };

typedef struct {
    char *tools_json;            /* the tools list, compact JSON, for the template */
    int n_tools;
    char (*names)[TOOLS_MAX_NAME + 1];
    char **params;               /* each function's parameters schema, compact JSON */
    int choice;                  /* TOOLS_* */
    int named;                   /* TOOLS_NAMED: the index of the function */
    int parallel;                /* parallel_tool_calls (default 1) */
} tools_request;

/* Reads tools, tool_choice and parallel_tool_calls from a chat request.
 * *out is NULL when the request has no tools (and no tool_choice other than
 * none/auto). 0, or -1 with a message for a 400. */
int tools_parse_request(const cJSON *root, tools_request **out, char *err, size_t errlen);
void tools_request_free(tools_request *t);

/* A chat message's members beyond role and content, as a JSON object for
 * the template: assistant tool_calls (arguments parsed from their JSON
 * string into objects, as templates expect), a tool message's tool_call_id.
 * *json is NULL when there are none. 0, or -1 with a message. */
int tools_message_json(const cJSON *msg, char **json, char *err, size_t errlen);

/* On the serving node: the prompt rendered with the tools (engine), checked
 * to show every tool (else the template does not take tools: 400); for
 * required/named, the family's opener appended and *grammar set to the
 * call's grammar. continue_final: the last (assistant) turn left open
 * (engine_render_chat_tools), refused with a forced call. 0, or -1 with a
 * message. */
int tools_render(const tools_request *t, const engine_model *em, const chat_message *msgs, int n_msgs,
                 int continue_final, char **prompt, size_t *len, int *parse_special,
                 struct json_grammar **grammar, char *err, size_t errlen);

/* ---- answers ----------------------------------------------------------------*/

typedef struct {
    char *name;
    char *arguments;             /* compact JSON text */
} tools_call;

/* Parses a model's output in format fmt (forced: the output is the call
 * itself, its opener being in the prompt). Sets *calls (malloc'ed, n) and
 * *content (malloc'ed text outside the calls, or NULL when empty or all of
 * it was calls). Output that does not parse as calls stays content.
 * 0, or -1 out of memory. */
int tools_parse_output(engine_tool_format fmt, int forced, const char *text, size_t len,
                       tools_call **calls, int *n_calls, char **content);
void tools_calls_free(tools_call *calls, int n);

/* Streaming: how many bytes of text (the whole output so far) may go out as
 * content now, given that a call may begin: text before a possible call
 * opener. Once a call has begun, the rest waits for the end. */
size_t tools_stream_release(engine_tool_format fmt, int forced, const char *text, size_t len);

#endif

/* chat_template.h: renders a conversation into a prompt with the model's own
 * chat template (GGUF key tokenizer.chat_template), a Jinja2 template.
 *
 * This is a small interpreter for the subset of Jinja2 that real chat
 * templates use (ChatML/Qwen, Llama 2/3, Mistral, Gemma, Phi-3, Zephyr,
 * DeepSeek, ...), with Hugging Face's settings: trim_blocks and lstrip_blocks
 * on, tojson without HTML escaping. docs/chat-templates.md lists what is and is
 * not supported. Templates come from downloaded files, so everything is
 * bounded: source size, nesting, work steps, memory and output size; a hostile
 * template gives an error, never a hang or a crash.
 * Not here: reading GGUF metadata, tokenizing, parsing a model's tool calls
 * (tools and messages' tool_calls reach templates as JSON values).
 * Thread-safety: a parsed template is immutable; any number of threads may
 * render it at once. */
#ifndef LLMESH_CHAT_TEMPLATE_H
#define LLMESH_CHAT_TEMPLATE_H

#include <stddef.h>

/* Limits. A template or conversation beyond them is an error. */
#define CHAT_TEMPLATE_MAX_SOURCE (1u << 20)   /* template source bytes */
#define CHAT_TEMPLATE_MAX_NESTING 64          /* nested {% if %}/{% for %} blocks */
#define CHAT_TEMPLATE_MAX_EXPR_DEPTH 128      /* depth of one expression tree */
#define CHAT_TEMPLATE_MAX_STEPS 5000000       /* statements + loop iterations + expression nodes */

typedef struct chat_template chat_template;

/* One message. role and content are NUL-terminated; content may be "" (NULL
 * is taken as ""). json, when not NULL, is a JSON object whose members join
 * the message (tool_calls, tool_call_id, name: what tool-aware templates
 * read). All are borrowed for the duration of the call. */
typedef struct {
    const char *role;
    const char *content;
    const char *json;
} chat_message;

/* An extra template variable, e.g. {"enable_thinking", NULL, 0}: a JSON
 * value when json is non-NULL (e.g. the tools list), else a string when
 * string is non-NULL, otherwise the boolean `boolean`. */
typedef struct {
    const char *name;
    const char *string;
    int boolean;
    const char *json;
} chat_template_extra;

/* Bound on JSON given to a render (messages' json, extras' json). */
#define CHAT_TEMPLATE_MAX_JSON_DEPTH 32

/* Variables besides `messages`. The whole struct may be NULL: no BOS/EOS text,
 * no generation prompt, no extras, the fixed date. */
typedef struct {
    const char *bos_token;          /* NULL = "" */
    const char *eos_token;          /* NULL = "" */
    int add_generation_prompt;
    const chat_template_extra *extra;
    int n_extra;
    /* Unix time strftime_now() formats (UTC). 0 means a fixed date,
     * 2024-07-26, so that renders are reproducible unless the caller asks
     * for the real date. */
    long long now;
} chat_template_vars;

/* Parses a template of len bytes (need not be NUL-terminated). Returns NULL
 * and a message such as "line 3: unknown filter 'foo'" in err on failure.
 * The template copies src; free with chat_template_free. */
chat_template *chat_template_parse(const char *src, size_t len, char *err, size_t errlen);
void chat_template_free(chat_template *t);

/* Renders msgs with t. On success returns 0 and sets *out to a malloc'ed,
 * NUL-terminated prompt of *out_len bytes (the caller frees it). On failure
 * returns -1, leaves *out NULL and writes a message to err; a template's
 * raise_exception('msg') gives exactly msg. */
int chat_template_render(const chat_template *t, const chat_message *msgs, int n_msgs,
                         const chat_template_vars *vars, char **out, size_t *out_len,
                         char *err, size_t errlen);

/* msgs with the last message (an assistant turn) left open, its text for
 * the answer to continue (an assistant "prefill"), as Hugging Face's
 * continue_final_message: rendered with every turn closed and no
 * generation prompt (vars' add_generation_prompt is ignored), then cut right
 * after the last occurrence of that message's content (or of it trimmed,
 * for templates that trim it). A content that is empty or white space opens
 * the turn as the generation prompt does (msgs without it). Same contract as
 * chat_template_render; -1 also when the template does not write the
 * content as given. */
int chat_template_render_continue(const chat_template *t, const chat_message *msgs, int n_msgs,
                                  const chat_template_vars *vars, char **out, size_t *out_len,
                                  char *err, size_t errlen);

/* The format used when a model has no template: ChatML, as llama.cpp and
 * Hugging Face fall back to, so a prompt looks like what users see elsewhere:
 *   <|im_start|>{role}\n{content}<|im_end|>\n   for each message, then
 *   <|im_start|>assistant\n                    when add_generation_prompt.
 * No BOS text is added (the tokenizer adds BOS itself). Same contract as
 * chat_template_render. */
int chat_template_render_default(const chat_message *msgs, int n_msgs,
                                 const chat_template_vars *vars, char **out, size_t *out_len,
                                 char *err, size_t errlen);

/* The template text of chat_template_render_default, for display. */
extern const char chat_template_default_source[];

#endif

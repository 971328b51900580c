/* openai_fields.c: which request fields llmesh reads, which it ignores on
 * purpose, and the 400 for everything else.
 *
 * The rule (README, "Unknown fields"): a field llmesh implements is read and
 * checked by openai.c; a field that is metadata about the caller or a hint
 * that cannot change the answer (user, store, metadata, ...) is ignored, and
 * is listed here by name; any other field is refused with 400 naming it, so
 * that nothing that would change the answer (tools before they existed,
 * suffix, best_of, ...) is silently dropped. A field whose value is null
 * counts as absent: clients that serialise every optional field send nulls.
 *
 * Not here: the fields' values (openai.c checks each). Threading: any. */
#include "serve/openai.h"

#include <stdio.h>
#include <string.h>

/* Metadata and hints that cannot change an answer. */
static const char *const ignored_fields[] = {
    "user",              /* the caller's end-user id (abuse tracking) */
    "store",             /* OpenAI keeps the answer for its dashboard */
    "metadata",          /* tags for that dashboard */
    "service_tier",      /* OpenAI's billing tier */
    "prompt_cache_key",  /* OpenAI's cache routing hint; our cache is per lane */
    "safety_identifier", /* the caller's end-user id */
    "cache_prompt",      /* llama.cpp's hint; the prompt's prefix is always reused */
    NULL,
};

static const char *const completion_fields[] = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "repeat_penalty", "repeat_last_n", "seed", "n",
    "stop", "logit_bias", "logprobs", "echo", "parse_special", "stream", "stream_options",
    "response_format", NULL,
};

static const char *const chat_fields[] = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "repeat_penalty",
    "repeat_last_n", "seed", "n", "stop", "logit_bias", "logprobs", "top_logprobs", "stream",
    "stream_options", "response_format", "tools", "tool_choice", "parallel_tool_calls",
    "continue_final_message", NULL,
};

/* Fields of one chat message. "name" (a participant's name) is metadata:
 * chat templates do not render it (a tool result's name reaches the
 * template with its tool_call_id). */
static const char *const message_fields[] = {"role", "content", "name", "tool_calls", "tool_call_id", NULL};

static int listed(const char *const *list, const char *name)
{
    for (; *list; list++)
        if (!strcmp(*list, name)) return 1;
    return 0;
}

int openai_check_fields(const cJSON *obj, const char *const *known, const char *where, char *err,
                        size_t errlen)
{
    const cJSON *v;
    cJSON_ArrayForEach(v, obj) {
        if (cJSON_IsNull(v) || !v->string) continue;
        if (listed(known, v->string) || listed(ignored_fields, v->string)) continue;
        snprintf(err, errlen, "'%.64s'%s%s is not supported by llmesh (a field that is neither "
                 "implemented nor known to be metadata is refused rather than ignored)",
                 v->string, where ? " in " : "", where ? where : "");
        return -1;
    }
    return 0;
}

const char *const *openai_known_fields(int kind)
{
    switch (kind) {
    case OPENAI_FIELDS_COMPLETION: return completion_fields;
    case OPENAI_FIELDS_CHAT: return chat_fields;
    default: return message_fields;
    }
}

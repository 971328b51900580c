/* test_anthropic.c: Anthropic's Messages API: the request translated into
 * the OpenAI chat body (system, text, tool_use and tool_result blocks,
 * tools, tool_choice, stop_sequences, sampling) and its refusals; answers
 * rewritten (a chat.completion into a message, chat chunks into the event
 * stream, OpenAI errors into Anthropic's shape); and, over the demo model on
 * a real scheduler, a stream aborted mid-way (ASan checks that the
 * rewriting sink is freed) and the stop string that ended an answer. */
#include "testlib.h"

#include <ctype.h>
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "serve/anthropic.h"
#include "serve/api.h"
#include "serve/scheduler.h"
#include "record_sink.h"

/* ---- requests ----------------------------------------------------------------*/

static cJSON *translate(const char *body, int count, char *err, size_t errlen)
{
    char *chat = NULL;
    size_t len = 0;
    anthropic_request_info info;
    err[0] = 0;
    if (anthropic_translate_request(body, strlen(body), count, &chat, &len, &info, err, errlen) != 0) {
        CHECK(chat == NULL);
        return NULL;
    }
    CHECK_EQ_INT(len, strlen(chat));
    cJSON *j = cJSON_Parse(chat);
    free(chat);
    return j;
}

static const char *str_at(const cJSON *o, const char *path)
{
    /* "a.b.0.c": members and array indexes */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *tok = strtok(buf, "."); tok && o; tok = strtok(NULL, "."))
        o = (*tok >= '0' && *tok <= '9') ? cJSON_GetArrayItem(o, atoi(tok)) : cJSON_GetObjectItemCaseSensitive(o, tok);
    return cJSON_GetStringValue(o);
}

static void test_translate_conversation(void)
{
    char err[512];
    cJSON *j = translate(
        "{\"model\": \"m\", \"max_tokens\": 100, \"temperature\": 0.5, \"top_p\": 0.9, \"top_k\": 40,"
        " \"stop_sequences\": [\"END\", \"STOP\"], \"stream\": true, \"metadata\": {\"user_id\": \"u\"},"
        " \"system\": [{\"type\": \"text\", \"text\": \"Be brief.\"}, {\"type\": \"text\", \"text\": \"Use tools.\","
        "  \"cache_control\": {\"type\": \"ephemeral\"}}],"
        " \"messages\": ["
        "  {\"role\": \"user\", \"content\": \"Weather in Paris?\"},"
        "  {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Checking.\"},"
        "   {\"type\": \"tool_use\", \"id\": \"toolu_abcDEF123\", \"name\": \"get_weather\", \"input\": {\"city\": \"Paris\"}}]},"
        "  {\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", \"tool_use_id\": \"toolu_abcDEF123\","
        "   \"content\": [{\"type\": \"text\", \"text\": \"21 C\"}]},"
        "   {\"type\": \"tool_result\", \"tool_use_id\": \"other\", \"content\": \"no\", \"is_error\": true},"
        "   {\"type\": \"text\", \"text\": \"And tomorrow?\"}]}],"
        " \"tools\": [{\"name\": \"get_weather\", \"description\": \"d\", \"input_schema\": {\"type\": \"object\"}}],"
        " \"tool_choice\": {\"type\": \"any\", \"disable_parallel_tool_use\": true}}",
        0, err, sizeof err);
    REQUIRE(j);
    CHECK_EQ_STR(str_at(j, "model"), "m");
    CHECK_EQ_INT(cJSON_GetObjectItem(j, "max_tokens")->valuedouble, 100);
    CHECK(cJSON_GetObjectItem(j, "temperature")->valuedouble == 0.5);
    CHECK_EQ_INT(cJSON_GetObjectItem(j, "top_k")->valuedouble, 40);
    CHECK_EQ_STR(str_at(j, "stop.1"), "STOP");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "stream")));
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "stream_options"), "include_usage")));
    CHECK(cJSON_GetObjectItem(j, "metadata") == NULL);
    /* system, user, assistant with its call, two tool results, the user's text */
    cJSON *m = cJSON_GetObjectItem(j, "messages");
    CHECK_EQ_INT(cJSON_GetArraySize(m), 6);
    CHECK_EQ_STR(str_at(m, "0.role"), "system");
    CHECK_EQ_STR(str_at(m, "0.content"), "Be brief.\nUse tools.");
    CHECK_EQ_STR(str_at(m, "1.content"), "Weather in Paris?");
    CHECK_EQ_STR(str_at(m, "2.role"), "assistant");
    CHECK_EQ_STR(str_at(m, "2.content"), "Checking.");
    CHECK_EQ_STR(str_at(m, "2.tool_calls.0.id"), "abcDEF123"); /* "toolu_" off: Mistral's ids */
    CHECK_EQ_STR(str_at(m, "2.tool_calls.0.function.name"), "get_weather");
    CHECK_EQ_STR(str_at(m, "2.tool_calls.0.function.arguments"), "{\"city\":\"Paris\"}");
    CHECK_EQ_STR(str_at(m, "3.role"), "tool");
    CHECK_EQ_STR(str_at(m, "3.tool_call_id"), "abcDEF123");
    CHECK_EQ_STR(str_at(m, "3.content"), "21 C");
    CHECK_EQ_STR(str_at(m, "4.tool_call_id"), "other");
    CHECK_EQ_STR(str_at(m, "4.content"), "Error: no");
    CHECK_EQ_STR(str_at(m, "5.role"), "user");
    CHECK_EQ_STR(str_at(m, "5.content"), "And tomorrow?");
    CHECK_EQ_STR(str_at(j, "tools.0.type"), "function");
    CHECK_EQ_STR(str_at(j, "tools.0.function.name"), "get_weather");
    CHECK_EQ_STR(str_at(j, "tools.0.function.parameters.type"), "object");
    CHECK_EQ_STR(str_at(j, "tool_choice"), "required");
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(j, "parallel_tool_calls")));
    cJSON_Delete(j);

    /* tool_choice tool and none; an assistant turn of calls alone has null content */
    j = translate("{\"model\": \"m\", \"max_tokens\": 5, \"tools\": [{\"name\": \"f\", \"input_schema\": {}}],"
                  " \"tool_choice\": {\"type\": \"tool\", \"name\": \"f\"}, \"messages\": [{\"role\": \"user\","
                  " \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": [{\"type\": \"tool_use\", \"id\": \"1\","
                  " \"name\": \"f\", \"input\": {}}]}, {\"role\": \"user\", \"content\": [{\"type\": \"tool_result\","
                  " \"tool_use_id\": \"1\"}]}]}",
                  0, err, sizeof err);
    REQUIRE(j);
    CHECK_EQ_STR(str_at(j, "tool_choice.function.name"), "f");
    m = cJSON_GetObjectItem(j, "messages");
    CHECK_EQ_INT(cJSON_GetArraySize(m), 3); /* a turn of results alone adds no user message */
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 1), "content")));
    CHECK_EQ_STR(str_at(m, "2.content"), "");
    cJSON_Delete(j);
    j = translate("{\"model\": \"m\", \"max_tokens\": 5, \"tool_choice\": {\"type\": \"none\"},"
                  " \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 0, err, sizeof err);
    REQUIRE(j);
    CHECK_EQ_STR(str_at(j, "tool_choice"), "none");
    CHECK(cJSON_GetObjectItem(j, "stream") == NULL);
    cJSON_Delete(j);

    /* count_tokens: no max_tokens; a final assistant turn is a prefill there too */
    j = translate("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"},"
                  " {\"role\": \"assistant\", \"content\": \"y\"}]}", 1, err, sizeof err);
    REQUIRE(j);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "continue_final_message")));
    cJSON_Delete(j);

    /* a prefill: the answer continues the last assistant turn's text; a
     * stream asks for the prompt's usage in its first chunk */
    j = translate("{\"model\": \"m\", \"max_tokens\": 5, \"stream\": true, \"messages\": [{\"role\": \"user\","
                  " \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"The\"}]}]}",
                  0, err, sizeof err);
    REQUIRE(j);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "continue_final_message")));
    CHECK_EQ_STR(str_at(j, "messages.1.role"), "assistant");
    CHECK_EQ_STR(str_at(j, "messages.1.content"), "The");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "stream_options"), "prompt_usage")));
    cJSON_Delete(j);
    /* no prefill: no continue_final_message */
    j = translate("{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
                  0, err, sizeof err);
    REQUIRE(j);
    CHECK(cJSON_GetObjectItem(j, "continue_final_message") == NULL);
    cJSON_Delete(j);
}

static void test_translate_refusals(void)
{
    static const struct { const char *body, *says; int count; } bad[] = {
        {"not json", "not valid JSON", 0},
        {"[1]", "JSON object", 0},
        {"{\"max_tokens\": 5, \"messages\": []}", "'model'", 0},
        {"{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "'max_tokens' is required", 0},
        {"{\"model\": \"m\", \"max_tokens\": 0, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "'max_tokens'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 1.5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "integer", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": []}", "'messages'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"temperature\": 1.5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "'temperature'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"thinking\": {}, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "'thinking'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}", "\"user\" or \"assistant\"", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\", \"name\": \"n\"}]}", "'name'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y \"}]}", "trailing whitespace", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": [{\"type\": \"tool_use\", \"id\": \"1\", \"name\": \"f\", \"input\": {}}]}]}", "prefill", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"document\"}]}]}", "'document'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\"}]}]}", "'image'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_use\", \"id\": \"1\", \"name\": \"f\", \"input\": {}}]}]}", "'tool_use'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}]}", "text blocks", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"x\", \"citations\": []}]}]}", "'citations'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", \"tool_use_id\": \"1\", \"is_error\": 1}]}]}", "is_error", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", \"tool_use_id\": \"1\", \"content\": [{\"type\": \"image\"}]}]}]}", "text blocks", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"system\": 3, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "'system'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"stop_sequences\": [\"\"], \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "stop_sequences", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"stop_sequences\": [\"a\",\"b\",\"c\",\"d\",\"e\"], \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "stop_sequences", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"stream\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "'stream'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"tools\": [{\"type\": \"web_search_20250305\", \"name\": \"w\"}], \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "server tools", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"tools\": [{\"name\": \"f\"}], \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "input_schema", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"tool_choice\": {\"type\": \"tool\"}, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "'name'", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"tool_choice\": {\"type\": \"some\"}, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "tool_choice.type", 0},
        {"{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "'max_tokens'", 1},
        {"{\"model\": \"m\", \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "'stream'", 1},
    };
    char err[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *j = translate(bad[i].body, bad[i].count, err, sizeof err);
        CHECK(j == NULL);
        cJSON_Delete(j);
        if (!strstr(err, bad[i].says)) fprintf(stderr, "  case %zu: %s\n", i, err);
        CHECK(strstr(err, bad[i].says) != NULL);
    }
}

/* ---- answers ----------------------------------------------------------------*/

/* Feeds an OpenAI answer (status, content type, body in pieces of `piece`
 * bytes) through a rewriting answer into r. */
static void rewrite(record_sink *r, int kind, int status, const char *ct, const char *body, size_t piece)
{
    memset(r, 0, sizeof *r);
    r->sink.ops = &rec_ops;
    anthropic_answer *ans = anthropic_answer_new(&r->sink, "m", kind);
    REQUIRE(ans);
    api_sink *s = anthropic_answer_sink(ans);
    s->ops->begin(s, status, ct);
    for (size_t at = 0, n = strlen(body); at < n; at += piece)
        s->ops->write(s, body + at, n - at < piece ? n - at : piece);
    s->ops->end(s); /* frees ans */
}

static void test_rewrite_json(void)
{
    record_sink r;
    rewrite(&r, ANTHROPIC_MESSAGE, 200, "application/json",
            "{\"id\":\"chatcmpl-00ff\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
            "\"assistant\",\"content\":\"Let me look.\",\"tool_calls\":[{\"id\":\"a1B2c3D4e\",\"type\":\"function\","
            "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":"
            "\"tool_calls\"}],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":9,\"prompt_tokens_details\":"
            "{\"cached_tokens\":12}}}",
            7);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.ended, 1);
    cJSON *j = cJSON_Parse(r.body);
    REQUIRE(j);
    CHECK_EQ_STR(str_at(j, "id"), "msg_00ff");
    CHECK_EQ_STR(str_at(j, "type"), "message");
    CHECK_EQ_STR(str_at(j, "role"), "assistant");
    CHECK_EQ_STR(str_at(j, "model"), "m");
    CHECK_EQ_STR(str_at(j, "content.0.type"), "text");
    CHECK_EQ_STR(str_at(j, "content.0.text"), "Let me look.");
    CHECK_EQ_STR(str_at(j, "content.1.type"), "tool_use");
    CHECK_EQ_STR(str_at(j, "content.1.id"), "toolu_a1B2c3D4e");
    CHECK_EQ_STR(str_at(j, "content.1.input.city"), "Paris");
    CHECK_EQ_STR(str_at(j, "stop_reason"), "tool_use");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "stop_sequence")));
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    CHECK_EQ_INT(cJSON_GetObjectItem(u, "input_tokens")->valuedouble, 18);
    CHECK_EQ_INT(cJSON_GetObjectItem(u, "cache_read_input_tokens")->valuedouble, 12);
    CHECK_EQ_INT(cJSON_GetObjectItem(u, "output_tokens")->valuedouble, 9);
    cJSON_Delete(j);
    free(r.body);

    /* a stop string: stop_sequence; length: max_tokens; else end_turn */
    rewrite(&r, ANTHROPIC_MESSAGE, 200, "application/json",
            "{\"id\":\"x-1\",\"choices\":[{\"message\":{\"content\":\"a\"},\"finish_reason\":\"stop\",\"stop_reason\":\"END\"}]}", 1000);
    j = cJSON_Parse(r.body);
    CHECK_EQ_STR(str_at(j, "stop_reason"), "stop_sequence");
    CHECK_EQ_STR(str_at(j, "stop_sequence"), "END");
    cJSON_Delete(j);
    free(r.body);
    rewrite(&r, ANTHROPIC_MESSAGE, 200, "application/json",
            "{\"choices\":[{\"message\":{\"content\":\"\"},\"finish_reason\":\"length\"}]}", 1000);
    j = cJSON_Parse(r.body);
    CHECK_EQ_STR(str_at(j, "stop_reason"), "max_tokens");
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "content")), 0);
    cJSON_Delete(j);
    free(r.body);

    /* errors: OpenAI's shape in, Anthropic's out, the status kept */
    static const struct { int status; const char *type; } errs[] = {
        {400, "invalid_request_error"}, {404, "not_found_error"}, {429, "rate_limit_error"},
        {503, "overloaded_error"}, {500, "api_error"}, {502, "api_error"},
    };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        rewrite(&r, i % 2 ? ANTHROPIC_PASS : ANTHROPIC_MESSAGE, errs[i].status, "application/json",
                "{\"error\":{\"message\":\"it broke\",\"type\":\"x\",\"param\":null,\"code\":null}}", 5);
        CHECK_EQ_INT(r.status, errs[i].status);
        j = cJSON_Parse(r.body);
        CHECK_EQ_STR(str_at(j, "type"), "error");
        CHECK_EQ_STR(str_at(j, "error.type"), errs[i].type);
        CHECK_EQ_STR(str_at(j, "error.message"), "it broke");
        cJSON_Delete(j);
        free(r.body);
    }
    /* an answer that is not JSON: a 502 in Anthropic's shape */
    rewrite(&r, ANTHROPIC_MESSAGE, 200, "application/json", "{\"choices\":", 3);
    CHECK_EQ_INT(r.status, 502);
    free(r.body);
    /* PASS: an Anthropic-shaped body goes through untouched */
    rewrite(&r, ANTHROPIC_PASS, 200, "application/json", "{\"input_tokens\":42}", 4);
    CHECK_EQ_STR(r.body, "{\"input_tokens\":42}");
    free(r.body);
}

/* The event names of an SSE body, space-separated, and the data's text. */
static void events_of(const char *body, char *names, size_t cap, char *text, size_t tcap, char *json, size_t jcap)
{
    names[0] = text[0] = json[0] = 0;
    const char *p = body;
    while ((p = strstr(p, "event: "))) {
        p += 7;
        size_t n = strcspn(p, "\n");
        snprintf(names + strlen(names), cap - strlen(names), "%s%.*s", names[0] ? " " : "", (int)n, p);
        const char *d = strstr(p, "\ndata: ");
        if (!d) break;
        cJSON *j = cJSON_ParseWithLength(d + 7, strcspn(d + 7, "\n"));
        CHECK(j != NULL);
        CHECK(!strncmp(str_at(j, "type") ? str_at(j, "type") : "", p, n)); /* data names its event */
        const char *t = str_at(j, "delta.text"), *pj = str_at(j, "delta.partial_json");
        if (t) snprintf(text + strlen(text), tcap - strlen(text), "%s", t);
        if (pj) snprintf(json + strlen(json), jcap - strlen(json), "%s", pj);
        cJSON_Delete(j);
        p = d + 7;
    }
}

#define CHUNK(delta, finish) "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":" delta \
                             ",\"finish_reason\":" finish "}]}\n\n"

/* The first chunk with the prompt's usage (stream_options.prompt_usage):
 * message_start carries it. */
static void test_rewrite_stream_prompt_usage(void)
{
    static const char stream[] =
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},"
        "\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":0,"
        "\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n"
        CHUNK("{\"content\":\"Hi\"}", "null")
        CHUNK("{}", "\"stop\"")
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,"
        "\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n"
        "data: [DONE]\n\n";
    record_sink r;
    rewrite(&r, ANTHROPIC_MESSAGE, 200, "text/event-stream", stream, sizeof stream);
    const char *start = strstr(r.body, "event: message_start");
    const char *delta = strstr(r.body, "event: message_delta");
    REQUIRE(start && delta);
    const char *u = strstr(start, "\"input_tokens\":7,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":3,"
                                  "\"output_tokens\":0");
    CHECK(u != NULL && u < delta);
    CHECK(strstr(delta, "\"input_tokens\":7,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":3,"
                        "\"output_tokens\":1") != NULL);
    free(r.body);
}

static void test_rewrite_stream(void)
{
    static const char stream[] =
        CHUNK("{\"role\":\"assistant\"}", "null")
        CHUNK("{\"content\":\"Hel\"}", "null")
        CHUNK("{\"content\":\"lo \\u00e9\"}", "null")
        CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}", "null")
        CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}", "null")
        CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}", "null")
        CHUNK("{}", "\"tool_calls\"")
        "data: {\"id\":\"chatcmpl-abc\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":4,"
        "\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n"
        "data: [DONE]\n\n";
    char names[1024], text[256], json[256];
    /* whole, and in pieces that cut events, lines and UTF-8 characters */
    for (size_t piece = 1; piece <= sizeof stream; piece = piece * 3 + 1) {
        record_sink r;
        rewrite(&r, ANTHROPIC_MESSAGE, 200, "text/event-stream", stream, piece);
        CHECK_EQ_INT(r.status, 200);
        CHECK_EQ_STR(r.content_type, "text/event-stream");
        CHECK_EQ_INT(r.ended, 1);
        events_of(r.body, names, sizeof names, text, sizeof text, json, sizeof json);
        CHECK_EQ_STR(names, "message_start ping content_block_start content_block_delta content_block_delta "
                            "content_block_stop content_block_start content_block_delta content_block_delta "
                            "content_block_stop message_delta message_stop");
        CHECK_EQ_STR(text, "Hello \xc3\xa9");
        CHECK_EQ_STR(json, "{\"a\":1}");
        CHECK(strstr(r.body, "\"id\":\"msg_abc\"") != NULL);
        CHECK(strstr(r.body, "\"id\":\"toolu_c1\"") != NULL);
        CHECK(strstr(r.body, "\"stop_reason\":\"tool_use\"") != NULL);
        CHECK(strstr(r.body, "\"input_tokens\":7,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":3,"
                             "\"output_tokens\":4") != NULL);
        free(r.body);
    }

    /* an error after the start: an error event, no message_stop */
    record_sink r;
    rewrite(&r, ANTHROPIC_MESSAGE, 200, "text/event-stream",
            CHUNK("{\"content\":\"a\"}", "null")
            "data: {\"error\":{\"message\":\"node shutting down\",\"type\":\"server_error\"}}\n\ndata: [DONE]\n\n", 9);
    events_of(r.body, names, sizeof names, text, sizeof text, json, sizeof json);
    CHECK_EQ_STR(names, "message_start ping content_block_start content_block_delta error");
    CHECK(strstr(r.body, "\"type\":\"api_error\",\"message\":\"node shutting down\"") != NULL);
    free(r.body);
    /* a stream cut short (no [DONE]): an error event too */
    rewrite(&r, ANTHROPIC_MESSAGE, 200, "text/event-stream", CHUNK("{\"content\":\"a\"}", "null"), 100);
    events_of(r.body, names, sizeof names, text, sizeof text, json, sizeof json);
    CHECK_EQ_STR(names, "message_start ping content_block_start content_block_delta error");
    free(r.body);
    /* a stop string */
    rewrite(&r, ANTHROPIC_MESSAGE, 200, "text/event-stream",
            "data: {\"id\":\"c-1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"stop_reason\":\"END\"}]}\n\n"
            "data: [DONE]\n\n", 100);
    CHECK(strstr(r.body, "\"delta\":{\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"END\"}") != NULL);
    free(r.body);
}

/* An answer released without an end (its call aborted): nothing reaches
 * the client, and ASan sees nothing leak. */
static void test_release(void)
{
    record_sink r;
    memset(&r, 0, sizeof r);
    r.sink.ops = &rec_ops;
    anthropic_answer *ans = anthropic_answer_new(&r.sink, "m", ANTHROPIC_MESSAGE);
    REQUIRE(ans);
    api_sink *s = anthropic_answer_sink(ans);
    s->ops->begin(s, 200, "text/event-stream");
    s->ops->write(s, CHUNK("{\"content\":\"a\"}", "null") "data: {\"id\"", 60);
    s->ops->release(s);
    CHECK_EQ_INT(r.ended, 0);
    free(r.body);
}

/* ---- over the demo model --------------------------------------------------------*/

static struct event_base *base;
static sched *sch;
static api *a;

static void setup(void)
{
    if (base) return;
    evthread_use_pthreads();
    setenv("LLMESH_DEBUG_TOKEN_DELAY_MS", "5", 1); /* the abort must catch a stream in flight */
    base = event_base_new();
    sch = sched_new(base);
    char err[256];
    engine_model *m = engine_model_load(testlib_source_path("models/kjv-llama-6.3M-q8_0.gguf"), 2, err, sizeof err);
    if (!m) { fprintf(stderr, "load: %s\n", err); exit(1); }
    sched_add_model(sch, m);
    a = api_new(base, sch, NULL);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    event_base_loopbreak(base);
}

/* Runs the loop until r ends or `seconds` pass. */
static void run_until_end(record_sink *r, int seconds)
{
    struct timeval limit = {seconds, 0};
    struct event *t = evtimer_new(base, timeout_cb, NULL);
    evtimer_add(t, &limit);
    while (!r->ended && evtimer_pending(t, NULL)) event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
}

static api_call *post(record_sink *r, const char *path, const char *body)
{
    memset(r, 0, sizeof *r);
    r->sink.ops = &rec_ops;
    r->base = base;
    return api_handle(a, "POST", path, body, strlen(body), &r->sink, 0);
}

static void test_served(void)
{
    setup();
    record_sink r;
    /* greedy, then a stop string taken from the middle of that answer */
    api_call *c = post(&r, "/v1/messages", "{\"model\": \"kjv-llama-6.3M-q8_0\", \"max_tokens\": 16, \"temperature\": 0,"
                       " \"messages\": [{\"role\": \"user\", \"content\": \"In the beginning\"}]}");
    if (c) run_until_end(&r, 30);
    REQUIRE(r.ended == 1 && r.status == 200);
    cJSON *j = cJSON_Parse(r.body);
    const char *text = str_at(j, "content.0.text");
    REQUIRE(text && strlen(text) > 8);
    /* four letters from the second half */
    const char *mid = text + strlen(text) / 2;
    while (*mid && !(isalpha((unsigned char)mid[0]) && isalpha((unsigned char)mid[1]) &&
                     isalpha((unsigned char)mid[2]) && isalpha((unsigned char)mid[3])))
        mid++;
    REQUIRE(*mid);
    char stop[8], want[64];
    snprintf(stop, sizeof stop, "%.4s", mid);
    snprintf(want, sizeof want, "%.*s", (int)(strstr(text, stop) - text), text);
    cJSON_Delete(j);
    free(r.body);
    char body[512];
    snprintf(body, sizeof body, "{\"model\": \"kjv-llama-6.3M-q8_0\", \"max_tokens\": 16, \"temperature\": 0,"
             " \"stop_sequences\": [\"%s\"], \"messages\": [{\"role\": \"user\", \"content\": \"In the beginning\"}]}",
             stop);
    if (post(&r, "/v1/messages", body)) run_until_end(&r, 30);
    j = cJSON_Parse(r.body);
    CHECK_EQ_STR(str_at(j, "stop_reason"), "stop_sequence");
    CHECK_EQ_STR(str_at(j, "stop_sequence"), stop);
    CHECK_EQ_STR(str_at(j, "content.0.text") ? str_at(j, "content.0.text") : "", want);
    cJSON_Delete(j);
    free(r.body);

    /* count_tokens on the served model */
    c = post(&r, "/v1/messages/count_tokens", "{\"model\": \"kjv-llama-6.3M-q8_0\", \"messages\": [{\"role\": \"user\","
             " \"content\": \"In the beginning\"}]}");
    CHECK(c == NULL);
    CHECK_EQ_INT(r.status, 200);
    j = cJSON_Parse(r.body);
    CHECK(cJSON_GetObjectItem(j, "input_tokens") && cJSON_GetObjectItem(j, "input_tokens")->valuedouble > 2);
    cJSON_Delete(j);
    free(r.body);

    /* an unknown model: 404 not_found_error (no mesh); GET: 405 */
    c = post(&r, "/v1/messages", "{\"model\": \"nope\", \"max_tokens\": 4, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}");
    CHECK(c == NULL);
    CHECK_EQ_INT(r.status, 404);
    CHECK(strstr(r.body, "\"type\":\"not_found_error\"") != NULL);
    free(r.body);
    memset(&r, 0, sizeof r);
    r.sink.ops = &rec_ops;
    CHECK(api_handle(a, "GET", "/v1/messages", "", 0, &r.sink, 0) == NULL);
    CHECK_EQ_INT(r.status, 405);
    CHECK(strstr(r.body, "\"type\":\"error\"") != NULL);
    free(r.body);

    /* a stream aborted in flight: the call and its rewriting sink are freed */
    c = post(&r, "/v1/messages", "{\"model\": \"kjv-llama-6.3M-q8_0\", \"max_tokens\": 200, \"stream\": true,"
             " \"messages\": [{\"role\": \"user\", \"content\": \"In the beginning\"}]}");
    REQUIRE(c);
    struct timeval tick = {0, 100000};
    struct event *t = evtimer_new(base, timeout_cb, NULL);
    evtimer_add(t, &tick);
    event_base_dispatch(base);
    event_free(t);
    CHECK_EQ_INT(r.ended, 0);
    api_call_abort(c);
    CHECK_EQ_INT(api_calls_active(a), 0);
    free(r.body);
}

int main(void)
{
    RUN(test_translate_conversation);
    RUN(test_translate_refusals);
    RUN(test_rewrite_json);
    RUN(test_rewrite_stream);
    RUN(test_rewrite_stream_prompt_usage);
    RUN(test_release);
    RUN(test_served);
    if (a) {
        api_free(a);
        sched_free(sch);
        event_base_free(base);
    }
    return testlib_finish();
}

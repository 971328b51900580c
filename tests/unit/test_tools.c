/* test_tools.c: tool calls' pure parts: requests (tools, tool_choice,
 * bounds and refusals), history messages as template JSON (rendered by the
 * real Qwen2.5 template), each family's output parsed back into calls, and
 * what a stream may release before a call. */
#include "testlib.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat_template.h"
#include "serve/tools.h"

static tools_request *parse(const char *body, char *err, size_t errlen)
{
    cJSON *root = cJSON_Parse(body);
    tools_request *t = NULL;
    int rc = tools_parse_request(root, &t, err, errlen);
    cJSON_Delete(root);
    return rc == 0 ? t : NULL;
}

#define WEATHER "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"d\"," \
                " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}}"

static void test_requests(void)
{
    char err[256];
    tools_request *t = parse("{\"tools\": [" WEATHER "], \"tool_choice\": {\"type\": \"function\", "
                             "\"function\": {\"name\": \"get_weather\"}}, \"parallel_tool_calls\": false}",
                             err, sizeof err);
    REQUIRE(t);
    CHECK_EQ_INT(t->n_tools, 1);
    CHECK_EQ_INT(t->choice, TOOLS_NAMED);
    CHECK_EQ_INT(t->named, 0);
    CHECK_EQ_INT(t->parallel, 0);
    CHECK(strstr(t->params[0], "\"city\"") != NULL);
    tools_request_free(t);
    t = parse("{\"tool_choice\": \"auto\"}", err, sizeof err);
    CHECK(t == NULL && err[0] == 0);
    static const struct { const char *body, *says; } bad[] = {
        {"{\"tool_choice\": \"required\"}", "needs 'tools'"},
        {"{\"tools\": []}", "'tools'"},
        {"{\"tools\": [{\"type\": \"retrieval\"}]}", "\"function\""},
        {"{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"a b\"}}]}", "'name'"},
        {"{\"tools\": [" WEATHER ", " WEATHER "]}", "two tools"},
        {"{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"x\": 1}}]}", "'x'"},
        {"{\"tools\": [" WEATHER "], \"tool_choice\": \"sometimes\"}", "tool_choice"},
        {"{\"tools\": [" WEATHER "], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"g\"}}}", "'g'"},
        {"{\"tools\": [" WEATHER "], \"parallel_tool_calls\": 1}", "parallel_tool_calls"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CHECK(parse(bad[i].body, err, sizeof err) == NULL);
        if (!strstr(err, bad[i].says)) fprintf(stderr, "  case %zu: %s\n", i, err);
        CHECK(strstr(err, bad[i].says) != NULL);
    }
}

static char *read_source(const char *rel)
{
    FILE *f = fopen(testlib_source_path(rel), "rb");
    if (!f) return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

/* A conversation with a call and its result renders as Qwen2.5 writes it. */
static void test_history_renders(void)
{
    char err[256];
    const char *src = read_source("tests/fuzz/corpus/chat_template/qwen2.5.jinja");
    REQUIRE(src);
    chat_template *t = chat_template_parse(src, strlen(src), err, sizeof err);
    REQUIRE(t);
    cJSON *asst = cJSON_Parse("{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call_1\","
                              " \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\":"
                              " \"{\\\"city\\\": \\\"Paris\\\"}\"}}]}");
    cJSON *tool = cJSON_Parse("{\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"18C\"}");
    char *aj, *tj;
    REQUIRE(tools_message_json(asst, &aj, err, sizeof err) == 0 && aj);
    REQUIRE(tools_message_json(tool, &tj, err, sizeof err) == 0 && tj);
    chat_message msgs[] = {{"user", "Weather in Paris?", NULL}, {"assistant", "", aj}, {"tool", "18C", tj}};
    char tools_json[] = "[" WEATHER "]";
    chat_template_extra extra = {"tools", NULL, 0, tools_json};
    chat_template_vars vars = {.add_generation_prompt = 1, .extra = &extra, .n_extra = 1};
    char *out = NULL;
    size_t len;
    REQUIRE(chat_template_render(t, msgs, 3, &vars, &out, &len, err, sizeof err) == 0);
    CHECK(strstr(out, "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"") != NULL);
    CHECK(strstr(out, "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                      "{\"city\": \"Paris\"}}\n</tool_call><|im_end|>") != NULL);
    CHECK(strstr(out, "<|im_start|>user\n<tool_response>\n18C\n</tool_response><|im_end|>") != NULL);
    free(out);
    free(aj);
    free(tj);
    cJSON_Delete(asst);
    cJSON_Delete(tool);
    chat_template_free(t);
}

static void check_calls(engine_tool_format fmt, int forced, const char *text, int want, const char *name,
                        const char *args, const char *content)
{
    tools_call *calls;
    int n;
    char *c;
    REQUIRE(tools_parse_output(fmt, forced, text, strlen(text), &calls, &n, &c) == 0);
    if (n != want) fprintf(stderr, "  '%s': %d calls\n", text, n);
    CHECK_EQ_INT(n, want);
    if (n && name) CHECK_EQ_STR(calls[0].name, name);
    if (n && args) CHECK_EQ_STR(calls[0].arguments, args);
    if (content) CHECK_EQ_STR(c, content);
    else CHECK(c == NULL);
    tools_calls_free(calls, n);
    free(c);
}

static void test_outputs(void)
{
    check_calls(ENGINE_TOOLS_HERMES, 0, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                "{\"city\": \"Paris\"}}\n</tool_call>", 1, "get_weather", "{\"city\":\"Paris\"}", "Let me look.");
    check_calls(ENGINE_TOOLS_HERMES, 0, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n<tool_call>"
                "{\"name\": \"b\", \"arguments\": {\"x\": 1}}", 2, "a", "{}", NULL);
    check_calls(ENGINE_TOOLS_HERMES, 0, "<tool_call>{\"name\": oops}</tool_call>", 0, NULL, NULL,
                "<tool_call>{\"name\": oops}</tool_call>");
    check_calls(ENGINE_TOOLS_HERMES, 0, "Just text.", 0, NULL, NULL, "Just text.");
    check_calls(ENGINE_TOOLS_HERMES, 1, "{\"name\": \"f\", \"arguments\": {\"q\": \"é\"}}", 1, "f", "{\"q\":\"é\"}", NULL);
    check_calls(ENGINE_TOOLS_LLAMA3, 0, " {\"name\": \"f\", \"parameters\": {\"a\": 1}}", 1, "f", "{\"a\":1}", NULL);
    check_calls(ENGINE_TOOLS_LLAMA3, 0, "{not json", 0, NULL, NULL, "{not json");
    check_calls(ENGINE_TOOLS_MISTRAL, 0, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", "
                "\"arguments\": {}}]", 2, "f", "{}", NULL);
    check_calls(ENGINE_TOOLS_MISTRAL, 1, "[{\"name\": \"f\", \"arguments\": {\"b\": true}}]", 1, "f", "{\"b\":true}", NULL);
}

static void test_stream_release(void)
{
    CHECK_EQ_INT(tools_stream_release(ENGINE_TOOLS_HERMES, 0, "abc<tool", 8), 3);
    CHECK_EQ_INT(tools_stream_release(ENGINE_TOOLS_HERMES, 0, "abc<tool_call>{\"x", 17), 3);
    CHECK_EQ_INT(tools_stream_release(ENGINE_TOOLS_HERMES, 0, "a < b", 5), 5);
    CHECK_EQ_INT(tools_stream_release(ENGINE_TOOLS_HERMES, 1, "{\"name", 6), 0);
    CHECK_EQ_INT(tools_stream_release(ENGINE_TOOLS_LLAMA3, 0, "  ", 2), 0);
    CHECK_EQ_INT(tools_stream_release(ENGINE_TOOLS_LLAMA3, 0, " {\"na", 5), 0);
    CHECK_EQ_INT(tools_stream_release(ENGINE_TOOLS_LLAMA3, 0, "Hi {", 4), 4);
    CHECK_EQ_INT(tools_stream_release(ENGINE_TOOLS_MISTRAL, 0, "[{", 2), 0);
}

int main(void)
{
    RUN(test_requests);
    RUN(test_history_renders);
    RUN(test_outputs);
    RUN(test_stream_release);
    return testlib_finish();
}

/* test_chat_template.c: the chat template interpreter against the real
 * templates of the common model families, plus its error reporting and its
 * bounds.
 *
 * The family templates below are the published tokenizer_config.json
 * chat_template texts (Qwen2.5-Instruct, Llama-3.2-Instruct, Llama-2-chat,
 * Mistral-7B-Instruct-v0.3, Gemma 3 it, Phi-3.5-mini-instruct, Zephyr-7b-beta),
 * the same text as the files in tests/fuzz/corpus/chat_template/. The expected
 * prompts were derived by hand from each template's logic with Hugging Face's
 * settings (trim_blocks and lstrip_blocks on): which branch each message takes,
 * which whitespace the '-' markers and trim_blocks remove, what the string
 * literals' escapes decode to. Mistral's and Llama 2's expectations agree with
 * the outputs published in llama.cpp's chat template tests for the same
 * templates. The conversation is system + user + assistant + user, rendered
 * with and without the generation prompt. */
#include <stdlib.h>
#include <string.h>

#include "engine/chat_template.h"
#include "testlib.h"

static const char QWEN25[] =
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n";

static const char LLAMA32[] =
    "{{- bos_token }}\n"
    "{%- if custom_tools is defined %}\n"
    "    {%- set tools = custom_tools %}\n"
    "{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n"
    "    {%- set tools_in_user_message = true %}\n"
    "{%- endif %}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    "        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n"
    "    {%- else %}\n"
    "        {%- set date_string = \"26 Jul 2024\" %}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if tools is not none %}\n"
    "    {{- \"Environment: ipython\\n\" }}\n"
    "{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "{%- endif %}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n"
    "    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n"
    "        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Cannot put tools in the first user message when there's no first user message!\") }}\n"
    "{%- endif %}\n"
    "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "    {{- first_user_message + \"<|eot_id|>\"}}\n"
    "{%- endif %}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n"
    "        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n"
    "        {%- endif %}\n"
    "        {%- set tool_call = message.tool_calls[0].function %}\n"
    "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "        {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n"
    "        {{- '\"parameters\": ' }}\n"
    "        {{- tool_call.arguments | tojson }}\n"
    "        {{- \"}\" }}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n"
    "        {%- else %}\n"
    "            {{- message.content }}\n"
    "        {%- endif %}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n";

static const char LLAMA2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

static const char MISTRAL03[] =
    "{%- if messages[0][\"role\"] == \"system\" %}\n"
    "    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n"
    "\n"
    "{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n"
    "{%- set ns = namespace() %}\n"
    "{%- set ns.index = 0 %}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n"
    "        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n"
    "            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "        {%- endif %}\n"
    "        {%- set ns.index = ns.index + 1 %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if tools is not none and (message == user_messages[-1]) %}\n"
    "            {{- \"[AVAILABLE_TOOLS] [\" }}\n"
    "            {%- for tool in tools %}\n"
    "                {%- set tool = tool.function %}\n"
    "                {{- '{\"type\": \"function\", \"function\": {' }}\n"
    "                {%- for key, val in tool.items() if key != \"return\" %}\n"
    "                    {%- if val is string %}\n"
    "                        {{- '\"' + key + '\": \"' + val + '\"' }}\n"
    "                    {%- else %}\n"
    "                        {{- '\"' + key + '\": ' + val|tojson }}\n"
    "                    {%- endif %}\n"
    "                    {%- if not loop.last %}\n"
    "                        {{- \", \" }}\n"
    "                    {%- endif %}\n"
    "                {%- endfor %}\n"
    "                {{- \"}}\" }}\n"
    "                {%- if not loop.last %}\n"
    "                    {{- \", \" }}\n"
    "                {%- else %}\n"
    "                    {{- \"]\" }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "            {{- \"[/AVAILABLE_TOOLS]\" }}\n"
    "            {%- endif %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- else %}\n"
    "            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n"
    "        {{- \"[TOOL_CALLS] [\" }}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- set out = tool_call.function|tojson %}\n"
    "            {{- out[:-1] }}\n"
    "            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n"
    "                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n"
    "            {%- endif %}\n"
    "            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n"
    "            {%- if not loop.last %}\n"
    "                {{- \", \" }}\n"
    "            {%- else %}\n"
    "                {{- \"]\" + eos_token }}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- \" \" + message[\"content\"]|trim + eos_token}}\n"
    "    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n"
    "        {%- if message.content is defined and message.content.content is defined %}\n"
    "            {%- set content = message.content.content %}\n"
    "        {%- else %}\n"
    "            {%- set content = message.content %}\n"
    "        {%- endif %}\n"
    "        {{- '[TOOL_RESULTS] {\"content\": ' + content|string + \", \" }}\n"
    "        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n"
    "            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n"
    "        {%- endif %}\n"
    "        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

static const char GEMMA3[] =
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n";

static const char PHI35[] =
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n"
    "' + message['content'] + '<|end|>\n"
    "'}}{% elif message['role'] == 'user' %}{{'<|user|>\n"
    "' + message['content'] + '<|end|>\n"
    "'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n"
    "' + message['content'] + '<|end|>\n"
    "'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n"
    "' }}{% else %}{{ eos_token }}{% endif %}";

static const char ZEPHYR[] =
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n"
    "' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n"
    "' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n"
    "'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}\n";

static const chat_message conv[] = {
    {"system", "You are a helpful assistant", NULL},
    {"user", "Hello", NULL},
    {"assistant", "Hi there", NULL},
    {"user", "Who are you", NULL},
};

/* Renders src over msgs; returns the prompt (caller frees) or NULL with the
 * error in err. */
static char *render_with(const char *src, const chat_message *msgs, int n,
                         const chat_template_vars *vars, char *err, size_t errlen)
{
    chat_template *t = chat_template_parse(src, strlen(src), err, errlen);
    if (!t) return NULL;
    char *out = NULL;
    size_t len = 0;
    int r = chat_template_render(t, msgs, n, vars, &out, &len, err, errlen);
    chat_template_free(t);
    if (r) return NULL;
    if (strlen(out) != len) { free(out); snprintf(err, errlen, "length mismatch"); return NULL; }
    return out;
}

static char errbuf[256];

static void check_render(const char *src, const chat_message *msgs, int n, const char *bos,
                         const char *eos, int gen, const char *expected, int line)
{
    chat_template_vars v = {bos, eos, gen, NULL, 0, 0};
    errbuf[0] = '\0';
    char *out = render_with(src, msgs, n, &v, errbuf, sizeof errbuf);
    if (!out || strcmp(out, expected) != 0) {
        fprintf(stderr, "  line %d: render mismatch (err '%s')\n  got:      \"%s\"\n  expected: \"%s\"\n",
                line, errbuf, out ? out : "(null)", expected);
        testlib_failed_checks++;
    }
    free(out);
}

#define CHECK_RENDER(src, bos, eos, gen, expected) \
    check_render(src, conv, 4, bos, eos, gen, expected, __LINE__)

/* The usual pair: body + gen_tail with the generation prompt, body +
 * plain_tail without. */
static void check_pair(const char *src, const char *bos, const char *eos, const char *body,
                       const char *gen_tail, const char *plain_tail, int line)
{
    char want[2048];
    snprintf(want, sizeof want, "%s%s", body, gen_tail);
    check_render(src, conv, 4, bos, eos, 1, want, line);
    snprintf(want, sizeof want, "%s%s", body, plain_tail);
    check_render(src, conv, 4, bos, eos, 0, want, line);
}
#define CHECK_PAIR(src, bos, eos, body, gen_tail, plain_tail) \
    check_pair(src, bos, eos, body, gen_tail, plain_tail, __LINE__)

/* Renders a small template with no messages and compares. */
static void check_expr(const char *src, const char *expected, int line)
{
    check_render(src, conv, 4, "<s>", "</s>", 1, expected, line);
}
#define CHECK_OUT(src, expected) check_expr(src, expected, __LINE__)

/* Expects parse or render to fail with an error containing want. */
static void check_error(const char *src, const chat_message *msgs, int n, const char *want, int line)
{
    chat_template_vars v = {"<s>", "</s>", 1, NULL, 0, 0};
    errbuf[0] = '\0';
    char *out = render_with(src, msgs, n, &v, errbuf, sizeof errbuf);
    if (out || !strstr(errbuf, want)) {
        fprintf(stderr, "  line %d: expected error containing '%s', got '%s' (output %s)\n", line,
                want, errbuf, out ? out : "(none)");
        testlib_failed_checks++;
    }
    free(out);
}
#define CHECK_ERROR(src, want) check_error(src, conv, 4, want, __LINE__)

/* ---- families ---- */

static void test_default_chatml(void)
{
    chat_template_vars v = {NULL, NULL, 1, NULL, 0, 0};
    char *out = NULL;
    size_t len = 0;
    const char *want =
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi there<|im_end|>\n"
        "<|im_start|>user\nWho are you<|im_end|>\n"
        "<|im_start|>assistant\n";
    REQUIRE(chat_template_render_default(conv, 4, &v, &out, &len, errbuf, sizeof errbuf) == 0);
    CHECK_EQ_STR(out, want);
    CHECK_EQ_INT(len, strlen(want));
    free(out);
    /* the displayed source renders the same through the interpreter */
    CHECK_RENDER(chat_template_default_source, NULL, NULL, 1, want);
    v.add_generation_prompt = 0;
    REQUIRE(chat_template_render_default(conv, 4, &v, &out, &len, errbuf, sizeof errbuf) == 0);
    CHECK_EQ_INT(len, strlen(want) - strlen("<|im_start|>assistant\n"));
    free(out);
    REQUIRE(chat_template_render_default(NULL, 0, NULL, &out, &len, errbuf, sizeof errbuf) == 0);
    CHECK_EQ_STR(out, "");
    free(out);
}

/* Qwen2.5: no tools, so the else branch prints the system message (or the
 * default Qwen identity); every '-' marker eats the template's indentation. */
static void test_qwen25(void)
{
    const char *body =
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi there<|im_end|>\n"
        "<|im_start|>user\nWho are you<|im_end|>\n";
    CHECK_PAIR(QWEN25, "", "<|im_end|>", body, "<|im_start|>assistant\n", "");
    /* without a system message: the default system prompt */
    check_render(QWEN25, conv + 1, 1, "", "", 1,
                 "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                 "assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
                 __LINE__);
}

/* Llama 3.2: bos, the system header with the knowledge and (fixed) date
 * lines, messages[1:] for the rest, each content trimmed. */
static void test_llama32(void)
{
    const char *body =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
        "You are a helpful assistant<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>";
    CHECK_PAIR(LLAMA32, "<|begin_of_text|>", "<|eot_id|>", body,
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "");

    /* strftime_now follows vars->now: 2025-01-01 00:00:00 UTC */
    chat_template_vars v = {"", "", 0, NULL, 0, 1735689600LL};
    char *out = render_with(LLAMA32, conv + 1, 1, &v, errbuf, sizeof errbuf);
    REQUIRE(out);
    CHECK_EQ_STR(out,
                 "<|start_header_id|>system<|end_header_id|>\n\n"
                 "Cutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\n<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>");
    free(out);
}

/* Llama 2: system folded into the first [INST] inside <<SYS>>, bos before
 * every user turn, " answer </s>" after assistant turns. The template has no
 * generation prompt, so add_generation_prompt changes nothing. */
static void test_llama2(void)
{
    const char *want =
        "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]"
        " Hi there </s><s>[INST] Who are you [/INST]";
    CHECK_RENDER(LLAMA2, "<s>", "</s>", 1, want);
    CHECK_RENDER(LLAMA2, "<s>", "</s>", 0, want);
}

/* Mistral v0.3: the system message goes into the LAST user turn. */
static void test_mistral_v03(void)
{
    const char *want =
        "<s>[INST] Hello[/INST] Hi there</s>"
        "[INST] You are a helpful assistant\n\nWho are you[/INST]";
    CHECK_RENDER(MISTRAL03, "<s>", "</s>", 1, want);
    CHECK_RENDER(MISTRAL03, "<s>", "</s>", 0, want);
    /* two user turns in a row: the template's own error message */
    static const chat_message bad[] = {{"user", "a", NULL}, {"user", "b", NULL}};
    check_error(MISTRAL03, bad, 2,
                "After the optional system message, conversation roles must alternate "
                "user/assistant/user/assistant/...", __LINE__);
}

/* An assistant prefill (continue_final_message): the conversation ends in
 * an open assistant turn holding the given text, as each template opens it. */
static void check_continue(const char *src, const char *last, const char *expected, int line)
{
    const chat_message msgs[] = {conv[0], conv[1], conv[2], conv[3], {"assistant", last, NULL}};
    chat_template_vars v = {"<s>", "</s>", 1, NULL, 0, 0};
    if (src == LLAMA32) v.bos_token = "<|begin_of_text|>", v.eos_token = "<|eot_id|>";
    if (src == QWEN25) v.bos_token = "", v.eos_token = "<|im_end|>";
    chat_template *t = chat_template_parse(src, strlen(src), errbuf, sizeof errbuf);
    char *out = NULL;
    size_t len = 0;
    int r = t ? chat_template_render_continue(t, msgs, 5, &v, &out, &len, errbuf, sizeof errbuf) : -1;
    if (r != 0 || strcmp(out, expected) != 0 || len != strlen(expected)) {
        fprintf(stderr, "  line %d: continue: expected\n%s\ngot\n%s (%s)\n", line, expected, out ? out : "(none)",
                errbuf);
        testlib_failed_checks++;
    }
    free(out);
    chat_template_free(t);
}
#define CHECK_CONTINUE(src, last, expected) check_continue(src, last, expected, __LINE__)

static void test_continue_final(void)
{
    CHECK_CONTINUE(QWEN25, "I am",
                   "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
                   "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n"
                   "<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\nI am");
    /* Llama 3.2 trims a turn's content: the text is found trimmed */
    CHECK_CONTINUE(LLAMA32, " I am",
                   "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                   "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
                   "You are a helpful assistant<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\nI am");
    /* Mistral v0.3 opens an answer with a space after [/INST], which a
     * generation prompt would not write; its system message goes into the
     * user turn only when that turn is the last message (as Hugging Face
     * renders it too) */
    CHECK_CONTINUE(MISTRAL03, "I am", "<s>[INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST] I am");
    /* the text occurs earlier too: the last occurrence is the one cut at */
    CHECK_CONTINUE(QWEN25, "Hello",
                   "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
                   "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n"
                   "<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\nHello");
    /* an empty prefill: the generation prompt */
    CHECK_CONTINUE(QWEN25, "",
                   "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
                   "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n"
                   "<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n");
    /* a template that does not write the content: an error */
    const chat_message msgs[] = {{"user", "x", NULL}, {"assistant", "hidden", NULL}};
    chat_template *t = chat_template_parse("{% for m in messages %}[{{ m.role }}]{% endfor %}", 49, errbuf,
                                           sizeof errbuf);
    REQUIRE(t);
    chat_template_vars v = {"", "", 1, NULL, 0, 0};
    char *out = NULL;
    size_t len = 0;
    CHECK_EQ_INT(chat_template_render_continue(t, msgs, 2, &v, &out, &len, errbuf, sizeof errbuf), -1);
    CHECK(out == NULL && strstr(errbuf, "cannot continue") != NULL);
    chat_template_free(t);
}

/* Gemma 3: system text + blank line prefixes the first user turn; the
 * assistant role is called model. */
static void test_gemma3(void)
{
    const char *body =
        "<bos><start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi there<end_of_turn>\n"
        "<start_of_turn>user\nWho are you<end_of_turn>\n";
    CHECK_PAIR(GEMMA3, "<bos>", "<eos>", body, "<start_of_turn>model\n", "");
    static const chat_message bad[] = {{"assistant", "a", NULL}};
    chat_template_vars v = {"<bos>", "", 1, NULL, 0, 0};
    char *out = render_with(GEMMA3, bad, 1, &v, errbuf, sizeof errbuf);
    CHECK(out == NULL);
    CHECK_EQ_STR(errbuf, "Conversation roles must alternate user/assistant/user/assistant/...");
    free(out);
}

/* Phi-3.5: <|role|>\n content <|end|>\n; eos when no generation prompt. */
static void test_phi35(void)
{
    const char *body =
        "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n"
        "<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n";
    CHECK_PAIR(PHI35, "<s>", "<|endoftext|>", body, "<|assistant|>\n", "<|endoftext|>");
}

/* Zephyr: a multi-line template, so this one exercises trim_blocks (the
 * newline after each {% %} goes) and keeps the newline after each {{ }}. */
static void test_zephyr(void)
{
    const char *body =
        "<|system|>\nYou are a helpful assistant</s>\n<|user|>\nHello</s>\n"
        "<|assistant|>\nHi there</s>\n<|user|>\nWho are you</s>\n";
    CHECK_PAIR(ZEPHYR, "<s>", "</s>", body, "<|assistant|>\n", "");
}

/* ---- language ---- */

static void test_whitespace_control(void)
{
    CHECK_OUT("a  {{- 'b' -}}  c", "abc");
    CHECK_OUT("a\n  {%- if true %}\nb{% endif %}", "ab");
    /* lstrip_blocks: indentation before a block tag on its own line goes */
    CHECK_OUT("x\n    {% if true %}\ny\n    {% endif %}\nz", "x\ny\nz");
    /* but not before {{ }} */
    CHECK_OUT("  {{ 'v' }}\n", "  v\n");
    /* {%+ keeps the indentation */
    CHECK_OUT("  {%+ if true %}k{% endif %}", "  k");
    CHECK_OUT("a{# comment #}\nb", "ab");
    CHECK_OUT("a {#- c -#} b", "ab");
}

static void test_expressions(void)
{
    CHECK_OUT("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}",
              "7 3 -4 2 3.5 1024");
    CHECK_OUT("{{ 'a' ~ 1 ~ none }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }}", "a1None ababab [1, 2, 3]");
    CHECK_OUT("{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[1:3] | length }}",
              "system Who are you 2");
    CHECK_OUT("{% for m in messages[::-1] %}{{ m.role[0] }}{% endfor %}", "uaus");
    CHECK_OUT("{{ 'hello'[1:-1] }} {{ 'hello'[::-1] }} {{ 'héllo'[1] }} {{ 'héllo' | length }}",
              "ell olleh é 5");
    CHECK_OUT("{{ 'yes' if 1 < 2 else 'no' }} {{ 'x' if false }}|", "yes |");
    CHECK_OUT("{{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 'b' > 'a' }} {{ not 0 }} {{ 0 or 'd' }} {{ 1 and 2 }}",
              "True True True True d 2");
    CHECK_OUT("{{ 'ell' in 'hello' }} {{ 3 not in [1, 2] }} {{ 'role' in messages[0] }}",
              "True True True");
    CHECK_OUT("{{ {'a': 1, 'b': [true, none, 'x\"y']} | tojson }}",
              "{\"a\": 1, \"b\": [true, null, \"x\\\"y\"]}");
    CHECK_OUT("{{ {'a': [1]} | tojson(indent=2) }}", "{\n  \"a\": [\n    1\n  ]\n}");
    CHECK_OUT("{{ 'é\n' | tojson }}", "\"é\\n\"");
    CHECK_OUT("{{ \"it's\" }} {{ 'tab\\there' }} {{ '\\u00e9' }}", "it's tab\there é");
    CHECK_OUT("{{ undefined_thing }}|{{ undefined_thing.attr }}|{{ undefined_thing | default('d') }}",
              "||d");
    CHECK_OUT("{{ x is defined }} {{ none is none }} {{ 'a' is string }} {{ 3 is number }} "
              "{{ {} is mapping }} {{ [] is iterable }} {{ 4 is even }} {{ 9 is divisibleby 3 }}",
              "False True True True True True True True");
    CHECK_OUT("{{ 1.5 }} {{ 2.0 }} {{ 1e3 }}", "1.5 2.0 1000.0");
}

static void test_statements(void)
{
    CHECK_OUT("{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}"
              "{{ loop.last }}{{ loop.length }};{% endfor %}",
              "10TrueFalse4;21FalseFalse4;32FalseFalse4;43FalseTrue4;");
    CHECK_OUT("{% for m in messages if m.role == 'user' %}{{ loop.index }}/{{ loop.length }} "
              "{% else %}none{% endfor %}", "1/2 2/2 ");
    CHECK_OUT("{% for x in [] %}x{% else %}empty{% endfor %}", "empty");
    CHECK_OUT("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},{% endfor %}", "a=1,b=2,");
    CHECK_OUT("{% for k, v in {'a': 1} | items %}{{ k }}{{ v }}{% endfor %}", "a1");
    /* set in a loop does not leak; namespace attributes do */
    CHECK_OUT("{% set x = 1 %}{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set x = 5 %}"
              "{% set ns.n = ns.n + i %}{% endfor %}{{ x }} {{ ns.n }}", "1 3");
    CHECK_OUT("{% if false %}a{% elif 0 %}b{% elif 'x' %}c{% else %}d{% endif %}", "c");
    CHECK_OUT("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
              "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}", "013");
    CHECK_OUT("{% set s %}in{{ 1 + 1 }}{% endset %}[{{ s }}]", "[in2]");
    CHECK_OUT("{% macro greet(name, p='!') %}hi {{ name }}{{ p }}{% endmacro %}"
              "{{ greet('a') }} {{ greet('b', p='?') }}", "hi a! hi b?");
}

static void test_filters_and_methods(void)
{
    CHECK_OUT("{{ '  x  ' | trim }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}|{{ 'hello world' | title }}"
              "|{{ 'hELLO' | capitalize }}", "x|ABab|Hello World|Hello");
    CHECK_OUT("{{ [1, 2, 3] | join(', ') }} {{ [1, 2] | first }}{{ [1, 2] | last }} "
              "{{ 'aXbX' | replace('X', '-') }} {{ 3 | string }}{{ [4] | length }}",
              "1, 2, 3 12 a-b- 31");
    CHECK_OUT("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') "
              "| join('+') }} {{ messages | rejectattr('role', 'equalto', 'user') | list | length }}",
              "Hello+Who are you 2");
    CHECK_OUT("{{ ' a '.strip() }}|{{ 'xxa'.lstrip('x') }}|{{ 'a\\n'.rstrip() }}|"
              "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}", "a|a|a|TrueTrue");
    CHECK_OUT("{{ 'a<t>b<t>c'.split('<t>') }} {{ ' a  b '.split() }} {{ 'x</think>y'.split('</think>')[-1] }}",
              "['a', 'b', 'c'] ['a', 'b'] y");
    CHECK_OUT("{{ {'a': 1}.get('a') }} {{ {'a': 1}.get('b', 'z') }} {{ {'a': 1}.keys() | list }} "
              "{{ {'a': 1}.values() | first }}", "1 z ['a'] 1");
}

/* ---- errors ---- */

static void test_syntax_errors(void)
{
    CHECK_ERROR("line one\n{{ messages ", "line 2: unclosed '{{'");
    CHECK_ERROR("a\nb\n{% if x %}never closed", "line 3: unclosed '{% if %}' (missing '{% endif %}')");
    CHECK_ERROR("{{ 'x' | nosuchfilter }}", "line 1: unknown filter 'nosuchfilter'");
    CHECK_ERROR("\n{% include 'x' %}", "line 2: unknown tag 'include'");
    CHECK_ERROR("{% endfor %}", "unexpected 'endfor'");
    CHECK_ERROR("{{ x is nosuchtest }}", "unknown test 'nosuchtest'");
    CHECK_ERROR("{{ 'abc }}", "unterminated string literal");
    CHECK_ERROR("{# never closed", "unclosed comment");
    CHECK_ERROR("{{ (1 + }}", "line 1:");
    CHECK_ERROR("{% break %}", "'break' outside a for loop");
    CHECK_ERROR("{{ nosuchfunction(1) }}", "unknown function 'nosuchfunction'");
    CHECK_ERROR("{{ 1 / 0 }}", "division by zero");
    CHECK_ERROR("{{ raise_exception('custom message') }}", "custom message");
    /* raise_exception gives exactly its message, without a line prefix */
    chat_template_vars v = {0};
    char *out = render_with("\n\n{{ raise_exception('Only user and assistant roles are supported!') }}",
                            conv, 4, &v, errbuf, sizeof errbuf);
    CHECK(out == NULL);
    CHECK_EQ_STR(errbuf, "Only user and assistant roles are supported!");
    free(out);
}

/* ---- bounds ---- */

static char *repeat_str(const char *a, int n, const char *mid, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), lm = strlen(mid);
    char *s = malloc(la * (size_t)n + lm + lb * (size_t)n + 1);
    size_t k = 0;
    for (int i = 0; i < n; i++) { memcpy(s + k, a, la); k += la; }
    memcpy(s + k, mid, lm);
    k += lm;
    for (int i = 0; i < n; i++) { memcpy(s + k, b, lb); k += lb; }
    s[k] = '\0';
    return s;
}

static void test_bounds(void)
{
    /* block nesting */
    char *s = repeat_str("{% if true %}", 65, "x", "{% endif %}");
    CHECK_ERROR(s, "nested too deeply");
    free(s);
    s = repeat_str("{% if true %}", 60, "x", "{% endif %}");
    CHECK_OUT(s, "x");
    free(s);
    /* expression depth, by recursion and by a long flat chain */
    s = repeat_str("(", 5000, "1", ")");
    char *wrapped = malloc(strlen(s) + 8);
    sprintf(wrapped, "{{ %s }}", s);
    CHECK_ERROR(wrapped, "too deeply nested");
    free(wrapped);
    free(s);
    size_t cap = 20000;
    char *chain = malloc(cap);
    strcpy(chain, "{{ 1");
    for (int i = 0; i < 1000; i++) strcat(chain, " + 1");
    strcat(chain, " }}");
    CHECK_ERROR(chain, "too deeply nested");
    free(chain);
    /* range is bounded, and so is total work */
    CHECK_ERROR("{% for i in range(1000000000) %}x{% endfor %}", "range too large");
    CHECK_ERROR("{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
                "too long");
    /* string doubling runs into the memory or output cap */
    CHECK_ERROR("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}"
                "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}", "too much memory");
    CHECK_ERROR("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "too much memory");
    CHECK_ERROR("{{ 'x' * 9223372036854775807 }}", "too much memory");
    CHECK_ERROR("{{ 9223372036854775807 + 1 }}", "integer overflow");
    /* runaway macro recursion */
    CHECK_ERROR("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "nested too deeply");
    /* scanning a huge string repeatedly is charged to the step budget */
    CHECK_ERROR("{% set ns = namespace(s='x') %}{% for i in range(22) %}{% set ns.s = ns.s ~ ns.s %}"
                "{% endfor %}{% for i in range(100000) %}{% if 'y' in ns.s %}{% endif %}{% endfor %}",
                "too long");
    /* source size */
    char err[128];
    CHECK(chat_template_parse("x", CHAT_TEMPLATE_MAX_SOURCE + 1, err, sizeof err) == NULL);
}

static void test_extras_and_args(void)
{
    chat_template_extra extra[] = {{"enable_thinking", NULL, 0, NULL}, {"who", "you", 0, NULL}};
    chat_template_vars v = {"", "", 1, extra, 2, 0};
    char *out = render_with("{{ enable_thinking }} {{ who }} {{ add_generation_prompt }}", conv, 4, &v,
                            errbuf, sizeof errbuf);
    REQUIRE(out);
    CHECK_EQ_STR(out, "False you True");
    free(out);
    /* NULL vars and NULL content */
    static const chat_message m[] = {{"user", NULL, NULL}};
    out = render_with("[{{ messages[0].content }}]{{ bos_token }}", m, 1, NULL, errbuf, sizeof errbuf);
    REQUIRE(out);
    CHECK_EQ_STR(out, "[]");
    free(out);
    /* a parsed template renders many times (and from many threads) */
    chat_template *t = chat_template_parse(QWEN25, strlen(QWEN25), errbuf, sizeof errbuf);
    REQUIRE(t);
    for (int i = 0; i < 3; i++) {
        size_t len;
        CHECK(chat_template_render(t, conv, 4, NULL, &out, &len, errbuf, sizeof errbuf) == 0);
        free(out);
    }
    chat_template_free(t);
}

int main(void)
{
    RUN(test_default_chatml);
    RUN(test_qwen25);
    RUN(test_llama32);
    RUN(test_llama2);
    RUN(test_mistral_v03);
    RUN(test_continue_final);
    RUN(test_gemma3);
    RUN(test_phi35);
    RUN(test_zephyr);
    RUN(test_whitespace_control);
    RUN(test_expressions);
    RUN(test_statements);
    RUN(test_filters_and_methods);
    RUN(test_syntax_errors);
    RUN(test_bounds);
    RUN(test_extras_and_args);
    return testlib_finish();
}

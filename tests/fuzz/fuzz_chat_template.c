/* fuzz_chat_template.c: libFuzzer target for the chat template interpreter.
 *
 * Parses the input as a template and, when it parses, renders it over a fixed
 * conversation (system, user, assistant, user, including non-ASCII text and
 * whitespace to trim) twice: with and without the generation prompt and with
 * an extra variable; then with an assistant prefill left open
 * (chat_template_render_continue), whose output must end with its text.
 * Errors are fine; crashes, sanitizer reports, leaks and hangs are bugs (the step, memory and output bounds must stop every input).
 * A successful render must return a NUL-terminated prompt of the stated
 * length. Without libFuzzer, tests/fuzz/replay_main.c replays the corpus in
 * tests/fuzz/corpus/chat_template (the real family templates) as a test. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat_template.h"

static const chat_message conv[] = {
    {"system", "  You are a helpful assistant.\n", NULL},
    {"user", "Hello, wörld <|im_end|> {{ not a tag }}", NULL},
    {"assistant", "<think>hmm</think>\nHi there", NULL},
    {"user", "", NULL},
    {"assistant", " The answer is", NULL}, /* a prefill: chat_template_render_continue */
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    chat_template *t = chat_template_parse((const char *)data, size, err, sizeof err);
    if (!t) return 0;
    chat_template_extra extra[] = {{"enable_thinking", NULL, 1, NULL}, {"tools", NULL, 0, NULL}};
    for (int pass = 0; pass < 2; pass++) {
        chat_template_vars vars = {"<s>", "</s>", pass, pass ? extra : NULL, pass ? 2 : 0, 0};
        char *out = NULL;
        size_t len = 0;
        if (chat_template_render(t, conv, 4, &vars, &out, &len, err, sizeof err) == 0) {
            if (!out || strlen(out) > len || out[len] != '\0') abort();
            free(out);
        } else if (out) {
            abort();   /* failure must leave *out NULL */
        }
    }
    /* the conversation with a prefill, left open: the output ends with the
     * prefill's text (trimmed or not) */
    chat_template_vars vars = {"<s>", "</s>", 1, NULL, 0, 0};
    char *out = NULL;
    size_t len = 0;
    if (chat_template_render_continue(t, conv, 5, &vars, &out, &len, err, sizeof err) == 0) {
        static const char text[] = "The answer is";
        if (!out || strlen(out) != len || len < sizeof text - 1 || strcmp(out + len - (sizeof text - 1), text) != 0)
            abort();
        free(out);
    } else if (out) {
        abort();
    }
    chat_template_free(t);
    return 0;
}

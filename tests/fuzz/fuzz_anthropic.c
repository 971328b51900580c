/* fuzz_anthropic.c: libFuzzer target for Anthropic's Messages API
 * (serve/anthropic.c): the request translator and the answer rewriter.
 *
 * The first byte picks what the rest is: bit 0 clear, a request body,
 * translated as a message (bit 1 clear) or a count_tokens body (bit 1 set),
 * and when it translates, the chat body it gives is parsed by the OpenAI
 * path it is meant for (it must parse or be refused, never crash); bit 0
 * set, an answer the rewriter takes as SSE (bit 1 clear) or JSON (bit 1
 * set), written in pieces of 1 + (first byte >> 2) bytes. Errors are fine;
 * crashes, sanitizer reports, leaks and a rewritten answer that never ends
 * are bugs. Without libFuzzer, tests/fuzz/replay_main.c replays
 * tests/fuzz/corpus/anthropic as a test. Dictionary:
 * tests/fuzz/dict/anthropic.dict. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/anthropic.h"
#include "serve/openai.h"

typedef struct {
    api_sink sink;
    int begun, ended;
} count_sink;

static void s_begin(api_sink *s, int status, const char *ct) { (void)status, (void)ct; ((count_sink *)s)->begun++; }
static void s_write(api_sink *s, const char *d, size_t n) { (void)s, (void)d, (void)n; }
static void s_end(api_sink *s) { ((count_sink *)s)->ended++; }
static const api_sink_ops ops = {s_begin, s_write, s_end, NULL, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int mode = data[0];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    if (!(mode & 1)) {
        char err[512], *chat = NULL;
        size_t chat_len = 0;
        anthropic_request_info info;
        if (anthropic_translate_request(body, len, (mode >> 1) & 1, &chat, &chat_len, &info, err, sizeof err) == 0) {
            if (!chat || strlen(chat) != chat_len) abort();
            openai_request req;
            if (openai_parse_request(chat, chat_len, 1, &req, err, sizeof err) == 0) openai_request_free(&req);
            free(chat);
        } else if (chat) {
            abort();
        }
        return 0;
    }
    count_sink cs = {{&ops}, 0, 0};
    anthropic_answer *ans = anthropic_answer_new(&cs.sink, "m", ANTHROPIC_MESSAGE);
    if (!ans) return 0;
    api_sink *s = anthropic_answer_sink(ans);
    size_t piece = 1 + (size_t)(mode >> 2);
    s->ops->begin(s, 200, (mode & 2) ? "application/json" : "text/event-stream");
    for (size_t at = 0; at < len; at += piece) s->ops->write(s, body + at, len - at < piece ? len - at : piece);
    s->ops->end(s);
    if (cs.begun != 1 || cs.ended != 1) abort();
    return 0;
}

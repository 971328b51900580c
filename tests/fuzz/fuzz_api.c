/* fuzz_api.c: arbitrary request bodies and paths (completions, chat with
 * tools and response_format, embeddings) through api_handle, with a
 * scheduler that serves no model and no mesh: every request must end in a
 * well-formed answer (an OpenAI error or a model list), never a crash. */
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/api.h"
#include "serve/scheduler.h"

typedef struct {
    api_sink sink;
    int ended;
} count_sink;

static void s_begin(api_sink *s, int status, const char *ct) { (void)s; (void)status; (void)ct; }
static void s_write(api_sink *s, const char *d, size_t n) { (void)s; (void)d; (void)n; }
static void s_end(api_sink *s) { ((count_sink *)s)->ended++; }
static const api_sink_ops ops = {s_begin, s_write, s_end, NULL, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct event_base *base;
    static sched *sch;
    static api *a;
    if (!base) {
        base = event_base_new();
        sch = sched_new(base);
        a = api_new(base, sch, NULL);
    }
    /* First byte picks the endpoint (its value mod 7) and the method (bit 7
     * set: GET); the rest is the body. The corpus files start with 0x00
     * (completions), 0x01 (chat), 0x03 (tokenize), 0x04 (detokenize) or
     * 0x68 (embeddings), so that their JSON reaches the request validation. */
    static const char *paths[] = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                  "/tokenize", "/detokenize", "/v1/x", "/v1/embeddings"};
    const char *path = paths[size ? (data[0] & 0x7f) % 7 : 0];
    const char *body = size ? (const char *)data + 1 : "";
    count_sink cs = {{&ops}, 0};
    api_call *c = api_handle(a, size && (data[0] & 0x80) ? "GET" : "POST", path, body, size ? size - 1 : 0,
                             &cs.sink, 0);
    /* With no model served and no mesh, every answer is immediate. */
    if (c || cs.ended != 1) abort();
    return 0;
}

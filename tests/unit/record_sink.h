/* record_sink.h: an api_sink that keeps what it is given (status, content
 * type, body), for the tests of the API and of answer rewriters. Its end
 * breaks `base`'s loop when one is set. Header-only: each test binary gets
 * its own static copy. */
#ifndef LLMESH_TEST_RECORD_SINK_H
#define LLMESH_TEST_RECORD_SINK_H

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "serve/api.h"

typedef struct {
    api_sink sink;
    int begun, ended, writes_after_end;
    int status;
    char content_type[64];
    char *body;
    size_t len;
    struct event_base *base; /* loop to break at the end, or NULL */
} record_sink;

static void rec_begin(api_sink *s, int status, const char *ct)
{
    record_sink *r = (record_sink *)s;
    r->begun++;
    r->status = status;
    snprintf(r->content_type, sizeof r->content_type, "%s", ct);
}

static void rec_write(api_sink *s, const char *data, size_t len)
{
    record_sink *r = (record_sink *)s;
    if (r->ended) r->writes_after_end++;
    r->body = realloc(r->body, r->len + len + 1);
    memcpy(r->body + r->len, data, len);
    r->len += len;
    r->body[r->len] = 0;
}

static void rec_end(api_sink *s)
{
    record_sink *r = (record_sink *)s;
    r->ended++;
    if (r->base) event_base_loopbreak(r->base);
}

static const api_sink_ops rec_ops = {rec_begin, rec_write, rec_end, NULL, NULL};

#endif

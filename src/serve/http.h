/* http.h: the node's two HTTP servers, on libevent's evhttp.
 *
 * The API server (default 127.0.0.1:9337) passes every request to api_handle
 * through an api_sink that writes to the evhttp request: SSE answers are sent
 * chunk by chunk as they come, other answers in one piece with a length. The
 * console server (default 127.0.0.1:3131) answers GET routes with JSON made
 * by a callback (GET /api/status for now).
 *
 * Why evhttp and not our own HTTP layer: it parses requests, bounds bodies
 * and headers, and does chunked replies and keep-alive; the tunnel needs only
 * method, path and body, so no raw-bytes proxying at the HTTP level is needed
 * (see docs/ARCHITECTURE.md).
 *
 * Threading: event-loop thread only. */
#ifndef LLMESH_HTTP_H
#define LLMESH_HTTP_H

#include <stdint.h>
#include <stddef.h>

#include "serve/api.h"

struct event_base;
typedef struct http_server http_server;

/* Returns a malloc'ed JSON document for a GET route. */
typedef char *(*http_json_fn)(void *ctx);

/* port 0 picks a free port; see http_server_port. */
http_server *http_api_start(struct event_base *base, const char *host, uint16_t port, api *a,
                            char *err, size_t errlen);
http_server *http_console_start(struct event_base *base, const char *host, uint16_t port,
                                http_json_fn status, void *ctx, char *err, size_t errlen);
uint16_t http_server_port(const http_server *h);
/* Drops every connection; in-flight API calls are aborted. */
void http_server_free(http_server *h);

#endif

/* http.h: the node's two HTTP servers, on libevent's evhttp.
 *
 * The API server (default 127.0.0.1:9337) passes every request to api_handle
 * through an api_sink that writes to the evhttp request: SSE answers are sent
 * chunk by chunk as they come, other answers in one piece with a length. The
 * console server (default 127.0.0.1:3131) serves the web console's files
 * (web/, compiled in: serve/console_assets.h) at "/" and "/NAME", GET
 * /api/status with JSON made by a callback, GET /api/events with the same
 * document as server-sent events (serve/console_events.h), and GET /metrics
 * with the Prometheus text made by another (serve/metrics.c), and, once
 * http_console_set_api is called, /v1/... as the API server does; any
 * other path is 404.
 *
 * Why evhttp and not our own HTTP layer: it parses requests, bounds bodies
 * and headers, and does chunked replies and keep-alive; the tunnel needs only
 * method, path and body, so no raw-bytes proxying at the HTTP level is needed
 * (see docs/ARCHITECTURE.md).
 *
 * API keys: http_server_require_key makes a server answer every request
 * that lacks "Authorization: Bearer KEY" with 401 in OpenAI's error shape and
 * "WWW-Authenticate: Bearer", before the request's body is looked at or any
 * route runs (one check, in front of both servers' routes). The console's
 * own files are the exception: they are served without the key (the page
 * then asks for it and sends it with every /api/ request). The key is
 * compared in constant time and never logged. Requests peers forward through
 * the mesh tunnel do not pass here: the entry node checked its own key, and
 * the host trusts the mesh (docs/ARCHITECTURE.md, "API keys").
 *
 * Threading: event-loop thread only, except the pure helpers below. */
#ifndef LLMESH_HTTP_H
#define LLMESH_HTTP_H

#include <stdint.h>
#include <stddef.h>

#include "serve/api.h"
#include "serve/console_events.h"
#include "serve/http_guard.h"
#include "serve/metrics.h"

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
/* Returns a malloc'ed text document, or NULL when out of memory. */
typedef char *(*http_text_fn)(void *ctx);
/* Console: GET /metrics answers text (Content-Type: the Prometheus text
 * format's), behind the same API key as every route. */
void http_console_set_metrics(http_server *h, http_text_fn text, void *ctx);
/* Console: also answer /v1/... with this api, as the API server does (the
 * web console's chat panel calls it on its own origin). */
void http_console_set_api(http_server *h, api *a);
/* Console: GET /api/history answers fn's JSON document (the traffic of the
 * last minutes, serve/console_history.h), behind the key like /api/status. */
void http_console_set_history(http_server *h, http_json_fn fn, void *ctx);
/* Console: the /api/events hub's figures (zeros for another server). */
void http_console_events_stats(const http_server *h, console_events_stats *out);
/* Console: POST HTTP_POST_PREFIX... (the model load API, serve/model_loader.c)
 * goes to fn with the path (no query) and the body (NUL-terminated); fn
 * returns the status and a malloc'ed JSON answer in *json (NULL: "{}"). */
#define HTTP_POST_PREFIX "/api/models/"
typedef int (*http_post_fn)(void *ctx, const char *path, const char *body, size_t len, char **json);
void http_console_set_post(http_server *h, http_post_fn fn, void *ctx);
/* Counts every answer of this server's API requests, and its 401s, in m
 * (by the model the request named and the status). m may be NULL. */
void http_server_set_metrics(http_server *h, metrics *m);

#define HTTP_MAX_API_KEY 256   /* bytes; a key is visible ASCII, no spaces */
/* From now on every request must carry "Authorization: Bearer KEY"; the key
 * is copied (and wiped at free). Returns -1 unless http_api_key_valid(key). */
int http_server_require_key(http_server *h, const char *key);
/* Requests refused for a missing or wrong key since start. */
uint64_t http_server_auth_refused(const http_server *h);
/* Connections refused (limits) and cut (request deadline), and open now:
 * serve/http_guard.h. */
void http_server_guard_stats(const http_server *h, http_guard_stats *out);
/* The guard's bounds (zeros: the defaults), for connections from now on. */
void http_server_set_limits(http_server *h, const http_guard_limits *limits);

/* ---- pure helpers (any thread; unit-tested) ------------------------------*/

/* 1 when key is acceptable: 1-HTTP_MAX_API_KEY bytes of visible ASCII. */
int http_api_key_valid(const char *key);
typedef enum { HTTP_AUTH_OK, HTTP_AUTH_MISSING, HTTP_AUTH_WRONG } http_auth_result;
/* Checks an Authorization header value (NULL: no header) against key:
 * the scheme "Bearer" in any case, one or more spaces, then the key; spaces
 * and tabs around are ignored. MISSING when there is no header or it is not
 * Bearer, WRONG when the token differs. */
http_auth_result http_auth_check(const char *key, size_t key_len, const char *authorization);
/* The same for an x-api-key header's value (Anthropic's clients send the
 * key there; taken on /v1/messages): the key, spaces and tabs around
 * ignored. Constant-time compare. */
http_auth_result http_auth_check_x_api_key(const char *key, size_t key_len, const char *x_api_key);
/* 1 when every address host resolves to is a loopback address (127.0.0.0/8,
 * ::1, ::ffff:127.0.0.0/104); 0 otherwise, also when it does not resolve. */
int http_host_is_loopback(const char *host);
/* Drops every connection; in-flight API calls are aborted. */
void http_server_free(http_server *h);

#endif

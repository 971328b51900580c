/* http.c: evhttp glue for the API and console servers. See http.h.
 *
 * One http_exchange per API request in flight. Its lifetime is the subtle
 * part: it ends either when the API calls sink->end (reply sent) or when the
 * client's connection closes first (the API call is aborted). evhttp detaches
 * a request whose connection failed before the reply was complete and leaves
 * it to us to free; a request still attached is freed by evhttp itself.
 *
 * Both servers take requests through server_request_cb, which checks the API
 * key (when one is required) and only then hands the request to the server's
 * routes (api_request_cb, console_request_cb). evhttp has read the body by
 * then (bounded by API_MAX_BODY), but a refused request's body is never
 * copied or parsed. */
#include "serve/http.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "lib/consttime.h"
#include "lib/log.h"
#include "lib/prom.h"
#include "serve/anthropic.h"
#include "serve/http_guard.h"
#include "serve/console_assets.h"
#include "serve/console_events.h"

struct http_server {
    struct evhttp *http;
    uint16_t port;
    void (*route)(struct evhttp_request *req, struct http_server *h); /* after the key check */
    char key[HTTP_MAX_API_KEY + 1]; /* required bearer key; empty: none */
    size_t key_len;
    uint64_t auth_refused;
    api *api;
    http_json_fn status;
    void *status_ctx;
    http_text_fn metrics_text;      /* console: GET /metrics; NULL: no such route */
    void *metrics_ctx;
    console_events *events;         /* console: GET /api/events */
    http_json_fn history;           /* console: GET /api/history; NULL: no such route */
    void *history_ctx;
    http_post_fn post;              /* console: POST /api/models/...; NULL: no such route */
    void *post_ctx;
    metrics *metrics;               /* API: answers counted by model and status; may be NULL */
    struct http_exchange *live;     /* in-flight API exchanges */
    http_guard *guard;              /* connection limits, request deadline */
};

typedef struct http_exchange {
    api_sink sink;                  /* first: the api calls back with &x->sink */
    http_server *server;
    struct evhttp_request *req;
    api_call *call;
    int streaming;
    int status;
    char model[128];                /* named by the request (api_sink_ops.label) */
    char content_type[128];
    struct evbuffer *body;
    struct http_exchange *next, *prev;
} http_exchange;

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 304: return "Not Modified";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static void exchange_unlink(http_exchange *x)
{
    /* Every API answer passes here once: sent (sink_end), or cut by the
     * client (counted with the status it had begun with, if any). */
    if (x->status) metrics_count_request(x->server->metrics, x->model, x->status);
    if (x->prev) x->prev->next = x->next;
    else x->server->live = x->next;
    if (x->next) x->next->prev = x->prev;
    struct evhttp_connection *conn = evhttp_request_get_connection(x->req);
    if (conn) evhttp_connection_set_closecb(conn, NULL, NULL);
    if (x->body) evbuffer_free(x->body);
}

static void sink_begin(api_sink *sink, int status, const char *content_type)
{
    http_exchange *x = (http_exchange *)sink;
    x->status = status;
    snprintf(x->content_type, sizeof x->content_type, "%s", content_type);
    struct evkeyvalq *headers = evhttp_request_get_output_headers(x->req);
    evhttp_add_header(headers, "Content-Type", x->content_type);
    /* 429: every lane of the model busy and its queue full (scheduler.h); a
     * second is about what a short answer takes, and clients (the openai
     * packages) wait as told before retrying. */
    if (status == 429) evhttp_add_header(headers, "Retry-After", "1");
    if (!strncmp(content_type, "text/event-stream", 17)) {
        x->streaming = 1;
        evhttp_add_header(headers, "Cache-Control", "no-cache");
        evhttp_send_reply_start(x->req, status, reason_phrase(status));
    }
}

static void sink_write(api_sink *sink, const char *data, size_t len)
{
    http_exchange *x = (http_exchange *)sink;
    if (x->streaming) {
        struct evbuffer *chunk = evbuffer_new();
        if (!chunk) return;
        evbuffer_add(chunk, data, len);
        evhttp_send_reply_chunk(x->req, chunk);
        evbuffer_free(chunk);
    } else {
        evbuffer_add(x->body, data, len);
    }
}

static void sink_end(api_sink *sink)
{
    http_exchange *x = (http_exchange *)sink;
    struct evbuffer *body = x->body;
    x->body = NULL;
    exchange_unlink(x);
    if (x->streaming) evhttp_send_reply_end(x->req);
    else evhttp_send_reply(x->req, x->status, reason_phrase(x->status), body);
    evbuffer_free(body);
    free(x);
}

static void sink_label(api_sink *sink, const char *model)
{
    http_exchange *x = (http_exchange *)sink;
    snprintf(x->model, sizeof x->model, "%s", model);
}

static const api_sink_ops http_sink_ops = {sink_begin, sink_write, sink_end, sink_label, NULL};

/* The client went away before the reply was complete. */
static void exchange_on_close(struct evhttp_connection *conn, void *arg)
{
    http_exchange *x = arg;
    log_debug("http", "client closed the connection mid-request");
    api_call *call = x->call;
    struct evhttp_request *req = x->req;
    exchange_unlink(x);
    if (call) api_call_abort(call); /* may release a sink wrapping x: x must live until then */
    free(x);
    /* evhttp frees attached requests itself; a detached one is ours. */
    if (evhttp_request_get_connection(req) == NULL) evhttp_request_free(req);
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OTHER";
    }
}

static void api_request_cb(struct evhttp_request *req, http_server *h)
{
    http_exchange *x = calloc(1, sizeof *x);
    struct evbuffer *body = x ? evbuffer_new() : NULL;
    if (!x || !body) {
        free(x);
        if (body) evbuffer_free(body);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    x->sink.ops = &http_sink_ops;
    x->server = h;
    x->req = req;
    x->body = body;
    x->next = h->live;
    if (h->live) h->live->prev = x;
    h->live = x;

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    /* evbuffer_pullup makes the body contiguous; NUL-terminate a copy for
     * the JSON parser's sake (it also takes a length). */
    char *data = malloc(len + 1);
    if (!data) {
        exchange_unlink(x);
        free(x);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_copyout(in, data, len);
    data[len] = 0;

    evhttp_connection_set_closecb(evhttp_request_get_connection(req), exchange_on_close, x);
    const char *uri = evhttp_request_get_uri(req);
    log_debug("http", "%s %s (%zu bytes)", method_name(evhttp_request_get_command(req)), uri, len);
    /* x may be freed inside api_handle (when the answer is immediate); the
     * call handle it returns is non-NULL only while x still lives. */
    api_call *call = api_handle(h->api, method_name(evhttp_request_get_command(req)), uri, data, len,
                                &x->sink, 0);
    if (call) x->call = call;
    free(data);
}

/* One of the web console's files (web/, compiled in). They change only with
 * the binary, so the browser may keep them but must ask again each time
 * ("no-cache"), and the ETag (a hash of the file) makes that a 304. */
static void console_send_asset(struct evhttp_request *req, const console_asset *a)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Cache-Control", "no-cache");
    evhttp_add_header(headers, "ETag", a->etag);
    evhttp_add_header(headers, "X-Content-Type-Options", "nosniff");
    const char *inm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
    if (inm && strstr(inm, a->etag)) {
        evhttp_send_reply(req, 304, reason_phrase(304), NULL);
        return;
    }
    evhttp_add_header(headers, "Content-Type", a->content_type);
    /* The page talks to this origin only: no framing by others, no scripts
     * or styles from elsewhere. */
    evhttp_add_header(headers, "Content-Security-Policy",
                      "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    struct evbuffer *body = evbuffer_new();
    if (body) evbuffer_add_reference(body, a->data, a->len, NULL, NULL);
    evhttp_send_reply(req, 200, "OK", body);
    if (body) evbuffer_free(body);
}

static int console_is_get(struct evhttp_request *req)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    return cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
}

/* 200 with a JSON document from a GET route (frees json; NULL: out of
 * memory, 500). */
static void console_send_json(struct evhttp_request *req, char *json)
{
    if (!json) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, json, strlen(json));
    evhttp_add_header(headers, "Content-Type", "application/json");
    evhttp_add_header(headers, "Cache-Control", "no-store");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
    free(json);
}

static void console_request_cb(struct evhttp_request *req, http_server *h)
{
    const char *uri = evhttp_request_get_uri(req);
    size_t n = strcspn(uri, "?");
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    const console_asset *asset = console_asset_find(uri, n);
    if (asset && console_is_get(req)) {
        console_send_asset(req, asset);
        return;
    }
    /* The API itself on the console's origin, so the page's chat panel
     * needs no cross-origin grant from the API port: the same handler,
     * the same key. */
    if (h->api && n >= 4 && !strncmp(uri, "/v1/", 4)) {
        api_request_cb(req, h);
        return;
    }
    if (h->events && n == strlen("/api/events") && !strncmp(uri, "/api/events", n) &&
        evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
        console_events_subscribe(h->events, req);
        return;
    }
    if (h->metrics_text && n == strlen("/metrics") && !strncmp(uri, "/metrics", n) &&
        evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
        char *text = h->metrics_text(h->metrics_ctx);
        if (!text) {
            evhttp_send_error(req, 500, "out of memory");
            return;
        }
        struct evbuffer *body = evbuffer_new();
        evbuffer_add(body, text, strlen(text));
        evhttp_add_header(headers, "Content-Type", PROM_CONTENT_TYPE);
        evhttp_add_header(headers, "Cache-Control", "no-store");
        evhttp_send_reply(req, 200, "OK", body);
        evbuffer_free(body);
        free(text);
        return;
    }
    if (n == strlen("/api/status") && !strncmp(uri, "/api/status", n) &&
        evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
        console_send_json(req, h->status(h->status_ctx));
        return;
    }
    if (h->history && n == strlen("/api/history") && !strncmp(uri, "/api/history", n) &&
        evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
        console_send_json(req, h->history(h->history_ctx));
        return;
    }
    if (h->post && n > strlen(HTTP_POST_PREFIX) && !strncmp(uri, HTTP_POST_PREFIX, strlen(HTTP_POST_PREFIX)) &&
        evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        char *data = malloc(len + 1), *json = NULL, path[256];
        snprintf(path, sizeof path, "%.*s", (int)(n < 255 ? n : 255), uri);
        int status = 500;
        if (data) {
            evbuffer_copyout(in, data, len);
            data[len] = 0;
            status = h->post(h->post_ctx, path, data, len, &json);
        }
        struct evbuffer *body = evbuffer_new();
        evbuffer_add(body, json ? json : "{}", json ? strlen(json) : 2);
        evhttp_add_header(headers, "Content-Type", "application/json");
        evhttp_send_reply(req, status, status < 300 ? "OK" : "Error", body);
        evbuffer_free(body);
        free(json);
        free(data);
        return;
    }
    char *err = api_error_json("no such console route", "invalid_request_error", NULL);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, err, strlen(err));
    evhttp_add_header(headers, "Content-Type", "application/json");
    evhttp_send_reply(req, 404, "Not Found", body);
    evbuffer_free(body);
    free(err);
}

/* ---- API keys ---------------------------------------------------------------*/

http_auth_result http_auth_check(const char *key, size_t key_len, const char *authorization)
{
    if (!authorization) return HTTP_AUTH_MISSING;
    const char *p = authorization;
    while (*p == ' ' || *p == '\t') p++;
    /* RFC 7235: the scheme is case-insensitive, then at least one space. */
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t')) return HTTP_AUTH_MISSING;
    p += 6;
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    if (n == 0) return HTTP_AUTH_MISSING;
    return consttime_equal(key, key_len, p, n) ? HTTP_AUTH_OK : HTTP_AUTH_WRONG;
}

http_auth_result http_auth_check_x_api_key(const char *key, size_t key_len, const char *x_api_key)
{
    if (!x_api_key) return HTTP_AUTH_MISSING;
    const char *p = x_api_key;
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    if (n == 0) return HTTP_AUTH_MISSING;
    return consttime_equal(key, key_len, p, n) ? HTTP_AUTH_OK : HTTP_AUTH_WRONG;
}

int http_host_is_loopback(const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (!host || !*host || getaddrinfo(host, NULL, &hints, &res) != 0) return 0;
    int loopback = res != NULL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            const uint8_t *b = (const uint8_t *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
            loopback &= b[0] == 127;
        } else if (ai->ai_family == AF_INET6) {
            const struct in6_addr *a = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            loopback &= IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
        } else {
            loopback = 0;
        }
    }
    freeaddrinfo(res);
    return loopback;
}

/* Answers 401 in OpenAI's shape and returns 0 unless req carries the key.
 * OpenAI's codes: none for a missing key, "invalid_api_key" for a wrong one.
 * Neither the key nor the header's value is ever logged or echoed. */
static int request_authorized(http_server *h, struct evhttp_request *req)
{
    if (h->key_len == 0) return 1;
    /* The console's own files are open: a browser cannot put a bearer key
     * on the page's first request, and they hold nothing of the node's
     * (the page asks for the key, then sends it on every /api/ call). */
    if (h->status) {
        const char *uri = evhttp_request_get_uri(req);
        if (console_asset_find(uri, strcspn(uri, "?")) && console_is_get(req)) return 1;
    }
    const char *value = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    http_auth_result r = http_auth_check(h->key, h->key_len, value);
    /* Anthropic's clients send the key as "x-api-key: KEY": taken on the
     * Messages routes (serve/anthropic.c), where the refusal is in
     * Anthropic's shape too. */
    const char *uri = evhttp_request_get_uri(req);
    int messages = h->api && !strncmp(uri, "/v1/messages", 12) && (uri[12] == 0 || uri[12] == '/' || uri[12] == '?');
    if (messages && r == HTTP_AUTH_MISSING)
        r = http_auth_check_x_api_key(h->key, h->key_len,
                                      evhttp_find_header(evhttp_request_get_input_headers(req), "x-api-key"));
    if (r == HTTP_AUTH_OK) return 1;
    h->auth_refused++;
    if (!h->status) metrics_count_request(h->metrics, NULL, 401); /* the API port's only */
    log_debug("http", "401 %s %s: %s", method_name(evhttp_request_get_command(req)),
              evhttp_request_get_uri(req), r == HTTP_AUTH_MISSING ? "no bearer key" : "wrong key");
    char *body = messages
        ? anthropic_error_json(401, r == HTTP_AUTH_MISSING
                               ? "No API key provided. This node requires one: x-api-key: KEY (or "
                                 "Authorization: Bearer KEY)."
                               : "Incorrect API key provided.")
        : r == HTTP_AUTH_MISSING
        ? api_error_json("No API key provided. This node requires one in an Authorization header: "
                         "Authorization: Bearer KEY.", "invalid_request_error", NULL)
        : api_error_json("Incorrect API key provided.", "invalid_request_error", "invalid_api_key");
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", "application/json");
    /* RFC 6750 section 3: no error attribute when no credentials were sent. */
    evhttp_add_header(headers, "WWW-Authenticate", r == HTTP_AUTH_MISSING
                      ? "Bearer realm=\"llmesh\"" : "Bearer realm=\"llmesh\", error=\"invalid_token\"");
    struct evbuffer *out = evbuffer_new();
    if (out && body) evbuffer_add(out, body, strlen(body));
    evhttp_send_reply(req, 401, reason_phrase(401), out);
    if (out) evbuffer_free(out);
    free(body);
    return 0;
}

static void server_request_cb(struct evhttp_request *req, void *arg)
{
    http_server *h = arg;
    if (h->guard) http_guard_request(h->guard, req);
    if (request_authorized(h, req)) h->route(req, h);
}

int http_api_key_valid(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > HTTP_MAX_API_KEY) return 0;
    for (size_t i = 0; i < n; i++)
        if (key[i] < 0x21 || key[i] > 0x7e) return 0;
    return 1;
}

int http_server_require_key(http_server *h, const char *key)
{
    if (!http_api_key_valid(key)) return -1;
    size_t n = strlen(key);
    memcpy(h->key, key, n + 1);
    h->key_len = n;
    return 0;
}

uint64_t http_server_auth_refused(const http_server *h) { return h->auth_refused; }

void http_server_guard_stats(const http_server *h, http_guard_stats *out)
{
    http_guard_get_stats(h->guard, out);
}

void http_server_set_limits(http_server *h, const http_guard_limits *limits)
{
    http_guard_set_limits(h->guard, limits);
}

/* ---- servers ----------------------------------------------------------------*/

static http_server *server_start(struct event_base *base, const char *host, uint16_t port,
                                 void (*route)(struct evhttp_request *, http_server *), char *err, size_t errlen)
{
    http_server *h = calloc(1, sizeof *h);
    if (!h) { snprintf(err, errlen, "out of memory"); return NULL; }
    h->http = evhttp_new(base);
    if (!h->http) { free(h); snprintf(err, errlen, "evhttp_new failed"); return NULL; }
    evhttp_set_max_body_size(h->http, API_MAX_BODY);
    evhttp_set_max_headers_size(h->http, 64 << 10);
    evhttp_set_timeout(h->http, 600);
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    h->route = route;
    h->guard = http_guard_new(base, h->http);
    if (!h->guard) { evhttp_free(h->http); free(h); snprintf(err, errlen, "out of memory"); return NULL; }
    evhttp_set_gencb(h->http, server_request_cb, h);
    struct evhttp_bound_socket *sock = evhttp_bind_socket_with_handle(h->http, host, port);
    if (!sock) {
        snprintf(err, errlen, "cannot listen on %s:%u (in use, or not an address of this host)", host, port);
        evhttp_free(h->http);
        http_guard_free(h->guard);
        free(h);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &sl) == 0)
        h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return h;
}

http_server *http_api_start(struct event_base *base, const char *host, uint16_t port, api *a,
                            char *err, size_t errlen)
{
    http_server *h = server_start(base, host, port, api_request_cb, err, errlen);
    if (h) h->api = a;
    return h;
}

http_server *http_console_start(struct event_base *base, const char *host, uint16_t port,
                                http_json_fn status, void *ctx, char *err, size_t errlen)
{
    http_server *h = server_start(base, host, port, console_request_cb, err, errlen);
    if (!h) return NULL;
    h->status = status;
    h->status_ctx = ctx;
    if (!(h->events = console_events_new(base, status, ctx))) {
        snprintf(err, errlen, "out of memory");
        http_server_free(h);
        return NULL;
    }
    return h;
}

void http_console_set_post(http_server *h, http_post_fn fn, void *ctx)
{
    h->post = fn;
    h->post_ctx = ctx;
}

void http_console_set_metrics(http_server *h, http_text_fn text, void *ctx)
{
    h->metrics_text = text;
    h->metrics_ctx = ctx;
}

void http_server_set_metrics(http_server *h, metrics *m) { h->metrics = m; }

void http_console_set_api(http_server *h, api *a) { h->api = a; }

void http_console_set_history(http_server *h, http_json_fn history, void *ctx)
{
    h->history = history;
    h->history_ctx = ctx;
}

void http_console_events_stats(const http_server *h, console_events_stats *out)
{
    console_events_get_stats(h ? h->events : NULL, out);
}

uint16_t http_server_port(const http_server *h) { return h->port; }

void http_server_free(http_server *h)
{
    if (!h) return;
    /* Abort what is in flight; evhttp_free then closes the connections and
     * frees their (still attached) requests. */
    while (h->live) {
        http_exchange *x = h->live;
        api_call *call = x->call;
        exchange_unlink(x);
        if (call) api_call_abort(call);
        free(x);
    }
    console_events_free(h->events);
    evhttp_free(h->http);
    http_guard_free(h->guard);          /* after evhttp: it drops its references */
    explicit_bzero(h->key, sizeof h->key);
    free(h);
}

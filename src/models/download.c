/* download.c: libcurl downloads of model files. See download.h.
 *
 * Why libcurl and not our own HTTP: HTTPS with certificate checks, proxies
 * (HTTPS_PROXY), redirects, HTTP/2 and every server quirk come with it, and
 * Debian's GnuTLS flavour shares the TLS library we already link.
 *
 * Resume is by size: the partial file's length is where the next Range
 * starts. Nothing else is trusted about it: the whole file is hashed at the
 * end (the part already on disk first, then the bytes as they arrive, so
 * the check costs no second read of what came over the wire). */
#include "models/download.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/hex.h"
#include "lib/log.h"

#define DL_LOG "download"
#define DL_ATTEMPTS 6
#define DL_USER_AGENT "llmesh/0.1 (+https://github.com/llmesh)"

static pthread_once_t dl_once = PTHREAD_ONCE_INIT;
static void dl_global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static _Atomic uint64_t c_requests, c_bytes, c_resumed, c_retries, c_mismatch, c_source_bytes, c_source_fail;

void dl_get_counters(dl_counters *out)
{
    out->requests = c_requests;
    out->bytes = c_bytes;
    out->resumed = c_resumed;
    out->retries = c_retries;
    out->sha_mismatches = c_mismatch;
    out->source_bytes = c_source_bytes;
    out->source_failures = c_source_fail;
}

/* A handle with what every request shares: bounded waits (a server that
 * stops sending for 30 s is a broken connection), our user agent, and the
 * token when this URL may have it. */
static CURL *easy_new(const char *url, const dl_auth *auth, struct curl_slist **headers)
{
    pthread_once(&dl_once, dl_global_init);
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_USERAGENT, DL_USER_AGENT);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    *headers = curl_slist_append(NULL, "Accept-Encoding: identity");
    if (auth && auth->token && auth->token[0] && auth->token_for &&
        !strncmp(url, auth->token_for, strlen(auth->token_for))) {
        char h[600];
        snprintf(h, sizeof h, "Authorization: Bearer %.512s", auth->token);
        *headers = curl_slist_append(*headers, h);
        explicit_bzero(h, sizeof h);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *headers);
    c_requests++;
    return c;
}

static void easy_free(CURL *c, struct curl_slist *headers)
{
    curl_easy_cleanup(c);
    curl_slist_free_all(headers);
}

/* ---- HEAD: the hub's word on a file --------------------------------------- */

static size_t head_line(char *buf, size_t size, size_t n, void *ctx)
{
    dl_meta *m = ctx;
    size_t len = size * n;
    char line[1100];
    if (len >= sizeof line) return len; /* longer than any header we read */
    memcpy(line, buf, len);
    line[len] = 0;
    line[strcspn(line, "\r\n")] = 0;
    char *colon = strchr(line, ':');
    if (!colon) {
        /* A new response (after a relative redirect): forget the last one's. */
        if (!strncmp(line, "HTTP/", 5)) m->etag[0] = 0;
        return len;
    }
    *colon = 0;
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    /* ETags come quoted, sometimes weak (W/"..."). */
    if (!strncmp(v, "W/", 2)) v += 2;
    size_t vl = strlen(v);
    if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') { v[vl - 1] = 0; v++; }
    if (!strcasecmp(line, "x-repo-commit")) snprintf(m->commit, sizeof m->commit, "%.63s", v);
    else if (!strcasecmp(line, "x-linked-etag")) snprintf(m->sha256, sizeof m->sha256, "%.64s", v);
    else if (!strcasecmp(line, "etag")) snprintf(m->etag, sizeof m->etag, "%.79s", v);
    else if (!strcasecmp(line, "x-linked-size")) m->size = strtoull(v, NULL, 10);
    return len;
}

static int is_hex64(const char *s)
{
    if (strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

static void http_error(long status, const char *url, char *err, size_t errlen)
{
    if (status == 401 || status == 403)
        snprintf(err, errlen, "%s: HTTP %ld: not allowed (a gated or private repo needs HF_TOKEN, "
                 "and its terms accepted on the hub)", url, status);
    else if (status == 404)
        snprintf(err, errlen, "%s: HTTP 404: no such repo, revision or file", url);
    else
        snprintf(err, errlen, "%s: HTTP %ld", url, status);
}

int dl_head(const char *url, const dl_auth *auth, dl_meta *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    struct curl_slist *headers = NULL;
    CURL *c = easy_new(url, auth, &headers);
    if (!c) { snprintf(err, errlen, "cannot start libcurl"); return -1; }
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, head_line);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    int rc = -1;
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", url, ebuf[0] ? ebuf : curl_easy_strerror(cc));
        rc = DL_UNREACHABLE;
    } else if (status >= 500) {
        http_error(status, url, err, errlen);
        rc = DL_UNREACHABLE;
    } else if (status >= 300 && status < 400) {
        char *loc = NULL;
        curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &loc);
        if (!loc || strlen(loc) >= sizeof out->url) {
            snprintf(err, errlen, "%s: HTTP %ld without a usable Location", url, status);
        } else {
            snprintf(out->url, sizeof out->url, "%s", loc);
            rc = 0;
        }
    } else if (status >= 200 && status < 300) {
        snprintf(out->url, sizeof out->url, "%s", url);
        if (!out->size) {
            curl_off_t cl = -1;
            curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
            if (cl > 0) out->size = (uint64_t)cl;
        }
        rc = 0;
    } else {
        http_error(status, url, err, errlen);
    }
    /* An LFS file's SHA-256 is X-Linked-Etag; a small file's ETag is a git
     * hash (40 hex) we do not check; a plain server's may be anything. */
    if (rc == 0 && !out->sha256[0] && is_hex64(out->etag)) snprintf(out->sha256, sizeof out->sha256, "%.64s", out->etag);
    if (out->sha256[0] && !is_hex64(out->sha256)) out->sha256[0] = 0;
    easy_free(c, headers);
    return rc;
}

/* ---- small bodies ---------------------------------------------------------- */

typedef struct {
    uint8_t *buf;
    size_t len, cap, max;
    int grow;   /* 1: realloc up to max; 0: a fixed buffer, cut at cap */
} membuf;

static size_t mem_write(char *data, size_t size, size_t n, void *ctx)
{
    membuf *b = ctx;
    size_t len = size * n;
    c_bytes += len;
    if (!b->grow) {
        size_t take = b->cap - b->len < len ? b->cap - b->len : len;
        memcpy(b->buf + b->len, data, take);
        b->len += take;
        return take == len ? len : 0; /* 0 stops the transfer: we have what we asked */
    }
    if (b->len + len + 1 > b->max) return 0;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len + 1) cap *= 2;
        if (cap > b->max) cap = b->max;
        uint8_t *nb = realloc(b->buf, cap);
        if (!nb) return 0;
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, len);
    b->len += len;
    b->buf[b->len] = 0;
    return len;
}

/* Runs a GET on c into b, following redirects, for timeout_s at most, and
 * frees c. The libcurl result; the HTTP status in *status, libcurl's
 * message (or "") in ebuf. */
static CURLcode perform_into(CURL *c, struct curl_slist *headers, membuf *b, long timeout_s,
                             char ebuf[CURL_ERROR_SIZE], long *status)
{
    ebuf[0] = 0;
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode cc = curl_easy_perform(c);
    *status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    easy_free(c, headers);
    return cc;
}

int dl_get_small(const char *url, const dl_auth *auth, size_t max, char **body, size_t *len,
                 char *err, size_t errlen)
{
    *body = NULL;
    struct curl_slist *headers = NULL;
    CURL *c = easy_new(url, auth, &headers);
    if (!c) { snprintf(err, errlen, "cannot start libcurl"); return -1; }
    membuf b = {.max = max + 1, .grow = 1};
    char ebuf[CURL_ERROR_SIZE];
    long status;
    CURLcode cc = perform_into(c, headers, &b, 60L, ebuf, &status);
    if (cc == CURLE_WRITE_ERROR) {
        snprintf(err, errlen, "%s: answer longer than %zu bytes", url, max);
    } else if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", url, ebuf[0] ? ebuf : curl_easy_strerror(cc));
    } else if (status < 200 || status >= 300) {
        http_error(status, url, err, errlen);
    } else {
        if (!b.buf) b.buf = calloc(1, 1);
        *body = (char *)b.buf;
        *len = b.len;
        return 0;
    }
    free(b.buf);
    return (cc != CURLE_OK && cc != CURLE_WRITE_ERROR) || status >= 500 ? DL_UNREACHABLE : -1;
}

long dl_get_head_bytes(const char *url, const dl_auth *auth, uint8_t *buf, size_t len, char *err,
                       size_t errlen)
{
    struct curl_slist *headers = NULL;
    CURL *c = easy_new(url, auth, &headers);
    if (!c) { snprintf(err, errlen, "cannot start libcurl"); return -1; }
    char range[64];
    snprintf(range, sizeof range, "0-%zu", len - 1);
    membuf b = {.buf = buf, .cap = len};
    curl_easy_setopt(c, CURLOPT_RANGE, range);
    char ebuf[CURL_ERROR_SIZE];
    long status;
    CURLcode cc = perform_into(c, headers, &b, 120L, ebuf, &status);
    /* A write error is our own cut-off of a server that ignored Range. */
    if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && b.len == len)) {
        snprintf(err, errlen, "%s: %s", url, ebuf[0] ? ebuf : curl_easy_strerror(cc));
        return -1;
    }
    if (status != 206 && status != 200) {
        http_error(status, url, err, errlen);
        return -1;
    }
    return (long)b.len;
}

/* ---- the whole file ---------------------------------------------------------- */

typedef struct {
    int fd;
    uint64_t offset;          /* where the next byte goes */
    gnutls_hash_hd_t sha;
    int write_errno;
    long status;              /* of the last response seen by the write callback */
    CURL *curl;
    int checked_status;
    const dl_job *job;
    uint64_t total;
    double started, last_report, last_log;
    uint64_t started_at;      /* offset when this attempt began */
} fetch_state;

static size_t file_write(char *data, size_t size, size_t n, void *ctx)
{
    fetch_state *st = ctx;
    size_t len = size * n;
    if (!st->checked_status) {
        curl_easy_getinfo(st->curl, CURLINFO_RESPONSE_CODE, &st->status);
        st->checked_status = 1;
        /* Asked for a Range and got the whole file: the server does not do
         * ranges. Start over from byte 0 (and the hash with it). */
        if (st->offset > 0 && st->status == 200) {
            log_info(DL_LOG, "%s: the server ignored Range: starting again from byte 0", st->job->label);
            if (ftruncate(st->fd, 0) != 0) { st->write_errno = errno; return 0; }
            gnutls_hash_deinit(st->sha, NULL);
            gnutls_hash_init(&st->sha, GNUTLS_DIG_SHA256);
            st->offset = 0;
            st->started_at = 0;
        }
        if (st->status != 200 && st->status != 206) return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(st->fd, data + done, len - done, (off_t)(st->offset + done));
        if (w < 0) {
            if (errno == EINTR) continue;
            st->write_errno = errno;
            return 0;
        }
        done += (size_t)w;
    }
    gnutls_hash(st->sha, data, len);
    st->offset += len;
    c_bytes += len;
    return len;
}

static int xfer_info(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    fetch_state *st = ctx;
    if (st->job->cancel && *st->job->cancel) return 1; /* aborts the transfer */
    double t = clock_s();
    if (t - st->last_report < 0.1) return 0;
    st->last_report = t;
    double rate = t > st->started ? (double)(st->offset - st->started_at) / (t - st->started) : 0;
    if (st->job->progress) st->job->progress(st->job->progress_ctx, st->offset, st->total, rate);
    if (t - st->last_log >= 5.0) {
        st->last_log = t;
        log_info(DL_LOG, "%s: %.1f of %.1f MB, %.1f MB/s", st->job->label, (double)st->offset / 1e6,
                 (double)st->total / 1e6, rate / 1e6);
    }
    return 0;
}

/* Hashes the first len bytes of fd into h (the part a resumed download
 * kept). 0 or -1. */
static int hash_prefix(int fd, uint64_t len, gnutls_hash_hd_t h)
{
    enum { BUF = 1 << 20 };
    uint8_t *buf = malloc(BUF);
    if (!buf) return -1;
    uint64_t off = 0;
    while (off < len) {
        size_t want = len - off < BUF ? (size_t)(len - off) : BUF;
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            free(buf);
            return -1;
        }
        gnutls_hash(h, buf, (size_t)r);
        off += (uint64_t)r;
    }
    free(buf);
    return 0;
}

int dl_sha256_file(const char *path, char hex[65], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    gnutls_hash_hd_t h;
    uint8_t d[32];
    if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0 || hash_prefix(fd, (uint64_t)sb.st_size, h) != 0) {
        snprintf(err, errlen, "%s: cannot read it to hash", path);
        close(fd);
        return -1;
    }
    gnutls_hash_deinit(h, d);
    close(fd);
    hex_encode(d, 32, hex);
    return 0;
}

static int retry_base_ms(void)
{
    const char *e = getenv("LLMESH_DOWNLOAD_RETRY_MS");
    long v = e ? strtol(e, NULL, 10) : 1000;
    return v > 0 && v <= 60000 ? (int)v : 1000;
}

/* One attempt: a GET from st->offset. 0 done, 1 transient (retry), -1 fatal. */
static int fetch_once(fetch_state *st, char *err, size_t errlen)
{
    const dl_job *j = st->job;
    struct curl_slist *headers = NULL;
    CURL *c = easy_new(j->url, j->auth, &headers);
    if (!c) { snprintf(err, errlen, "cannot start libcurl"); return -1; }
    st->curl = c;
    st->checked_status = 0;
    st->status = 0;
    st->started = st->last_report = clock_s();
    st->started_at = st->offset;
    char range[48];
    if (st->offset > 0) {
        snprintf(range, sizeof range, "%llu-", (unsigned long long)st->offset);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
        c_resumed++;
        log_info(DL_LOG, "%s: resuming at byte %llu", j->label, (unsigned long long)st->offset);
    }
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, file_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, st);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, xfer_info);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, st);
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode cc = curl_easy_perform(c);
    long status = st->status;
    if (!status) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    easy_free(c, headers);
    st->curl = NULL;
    if (st->write_errno) {
        snprintf(err, errlen, "%s: writing %s: %s", j->label, j->partial, strerror(st->write_errno));
        return -1;
    }
    if (status == 416 && st->offset > 0) {
        /* The partial is as long as the file or longer: not ours to keep. */
        snprintf(err, errlen, "%s: the server refused the range from byte %llu", j->label,
                 (unsigned long long)st->offset);
        return 2;
    }
    if (status && status != 200 && status != 206) {
        http_error(status, j->url, err, errlen);
        return status >= 500 || status == 429 || status == 408 ? 1 : -1;
    }
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s after %llu bytes", j->label, ebuf[0] ? ebuf : curl_easy_strerror(cc),
                 (unsigned long long)st->offset);
        return 1;
    }
    if (st->total && st->offset != st->total) {
        snprintf(err, errlen, "%s: the connection ended at byte %llu of %llu", j->label,
                 (unsigned long long)st->offset, (unsigned long long)st->total);
        return st->offset < st->total ? 1 : -1;
    }
    return 0;
}

/* The other source first: its bytes are written and hashed as the URL's
 * would be. 0 when the file is complete, 1 when the URL must do the rest
 * (from st->offset: what the source wrote stays), -1 fatal (the disk). */
static int fetch_from_source(fetch_state *st, char *err, size_t errlen)
{
    const dl_job *j = st->job;
    const dl_source *src = j->source;
    char inner[256] = "";
    void *h = src->open(src->ctx, st->offset, inner, sizeof inner);
    if (!h) {
        log_info(DL_LOG, "%s: not from %s (%s)", j->label, src->name, inner);
        return 1;
    }
    enum { BUF = 1 << 20 };
    uint8_t *buf = malloc(BUF);
    if (!buf) {
        src->close(h);
        return 1;
    }
    log_info(DL_LOG, "%s: from %s, from byte %llu", j->label, src->name, (unsigned long long)st->offset);
    st->started = st->last_report = st->last_log = clock_s();
    st->started_at = st->offset;
    int rc = 1;
    for (;;) {
        if (st->total && st->offset == st->total) { rc = 0; break; }
        long n = src->read(h, buf, BUF, j->cancel, inner, sizeof inner);
        if (n == 0) { rc = st->total ? 1 : 0; break; }
        if (n < 0) {
            c_source_fail++;
            log_warn(DL_LOG, "%s: %s failed after %llu bytes: %s; %s", j->label, src->name,
                     (unsigned long long)st->offset, inner, j->url ? "the rest from the URL" : "no URL to go on with");
            snprintf(err, errlen, "%s: from %s: %s", j->label, src->name, inner);
            break;
        }
        if (st->total && st->offset + (uint64_t)n > st->total) {
            snprintf(err, errlen, "%s: %s sent more than the file's %llu bytes", j->label, src->name,
                     (unsigned long long)st->total);
            c_source_fail++;
            break;
        }
        size_t done = 0;
        while (done < (size_t)n) {
            ssize_t w = pwrite(st->fd, buf + done, (size_t)n - done, (off_t)(st->offset + done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                snprintf(err, errlen, "%s: writing %s: %s", j->label, j->partial, strerror(errno));
                rc = -1;
                goto out;
            }
            done += (size_t)w;
        }
        gnutls_hash(st->sha, buf, (size_t)n);
        st->offset += (uint64_t)n;
        c_source_bytes += (uint64_t)n;
        xfer_info(st, 0, 0, 0, 0); /* progress and the log, as for the URL */
    }
out:
    free(buf);
    src->close(h);
    return rc;
}

int dl_fetch(const dl_job *job, char *err, size_t errlen)
{
    int fd = open(job->partial, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", job->partial, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "%s is being downloaded by another process (%s is locked)", job->label, job->partial);
        close(fd);
        return -1;
    }
    fetch_state st = {.fd = fd, .job = job, .total = job->size};
    struct stat sb;
    if (fstat(fd, &sb) != 0) sb.st_size = 0;
    st.offset = (uint64_t)sb.st_size;
    if (job->size && st.offset > job->size) {
        log_info(DL_LOG, "%s: partial file longer than the file: starting again", job->label);
        if (ftruncate(fd, 0) != 0) st.offset = 0;
        st.offset = 0;
    }
    if (gnutls_hash_init(&st.sha, GNUTLS_DIG_SHA256) < 0 || hash_prefix(fd, st.offset, st.sha) != 0) {
        snprintf(err, errlen, "%s: cannot read back %s", job->label, job->partial);
        close(fd);
        return -1;
    }
    int rc = -1, delay = retry_base_ms();
    int from_source = job->source ? fetch_from_source(&st, err, errlen) : 1;
    if (from_source == 0) rc = 0;
    for (int attempt = 1; from_source > 0 && job->url; attempt++) {
        if (st.total && st.offset == st.total) { rc = 0; break; }
        int r = fetch_once(&st, err, errlen);
        if (r == 0) { rc = 0; break; }
        if (r == 2) {
            /* A refused range: the partial file is dropped, once. */
            if (ftruncate(fd, 0) != 0 || attempt >= DL_ATTEMPTS) break;
            gnutls_hash_deinit(st.sha, NULL);
            gnutls_hash_init(&st.sha, GNUTLS_DIG_SHA256);
            st.offset = 0;
            continue;
        }
        if (job->cancel && *job->cancel) {
            snprintf(err, errlen, "%s: cancelled (the partial file is kept)", job->label);
            break;
        }
        if (r < 0 || attempt >= DL_ATTEMPTS) {
            if (r > 0) {
                size_t n = strlen(err);
                snprintf(err + n, errlen - n, " (gave up after %d attempts; the partial file is kept: "
                         "the next try resumes)", attempt);
            }
            break;
        }
        c_retries++;
        log_warn(DL_LOG, "%s (attempt %d of %d; again in %.1f s)", err, attempt, DL_ATTEMPTS, delay / 1000.0);
        /* Sleeps in 50 ms steps, so that a cancel is seen quickly. */
        for (int slept = 0; slept < delay && !(job->cancel && *job->cancel); slept += 50) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (delay < 16000) delay *= 2;
    }
    uint8_t digest[32];
    gnutls_hash_deinit(st.sha, digest);
    if (rc != 0) { close(fd); return -1; }
    if (job->progress) job->progress(job->progress_ctx, st.offset, st.offset, 0);
    char hex[65];
    hex_encode(digest, 32, hex);
    if (job->sha256 && job->sha256[0] && strcasecmp(hex, job->sha256)) {
        c_mismatch++;
        unlink(job->partial);
        close(fd);
        snprintf(err, errlen, "%s: SHA-256 mismatch: the hub publishes %s, the %llu bytes received hash to %s; "
                 "the partial file was deleted", job->label, job->sha256, (unsigned long long)st.offset, hex);
        return -1;
    }
    if (!(job->sha256 && job->sha256[0]))
        log_warn(DL_LOG, "%s: no SHA-256 published for it: only its size was checked", job->label);
    if (fsync(fd) != 0 || rename(job->partial, job->dest) != 0) {
        snprintf(err, errlen, "%s: cannot move it into place (%s -> %s): %s", job->label, job->partial, job->dest,
                 strerror(errno));
        close(fd);
        return -1;
    }
    close(fd); /* releases the lock, after the rename */
    log_info(DL_LOG, "%s: %.1f MB, SHA-256 %s", job->label, (double)st.offset / 1e6,
             job->sha256 && job->sha256[0] ? "verified" : "not published");
    return 0;
}

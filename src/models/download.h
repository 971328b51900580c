/* download.h: HTTP(S) downloads of model files with libcurl: what the hub
 * says about a file before any byte of it is fetched, a few bytes of its
 * head, and the whole file, resumed, retried and verified.
 *
 * dl_fetch writes to PARTIAL (flock'ed while it runs, so two processes never
 * write one file), resumes it with a Range request when it is there already
 * (a broken connection, a restart), retries transient failures with
 * exponential backoff, checks the SHA-256 the hub published when there is
 * one (a mismatch deletes the partial file: its bytes cannot be trusted
 * back to any offset), then fsyncs and renames it to DEST: a file under the
 * final name is always complete and verified.
 *
 * The bearer token goes only to URLs under the hub endpoint it was given
 * for, never to a CDN a redirect points to.
 * Threading: blocking calls, any thread (curl_global_init runs once, under
 * a pthread_once). Not here: where files go (hf.c), which files (resolve.c). */
#ifndef LLMESH_MODELS_DOWNLOAD_H
#define LLMESH_MODELS_DOWNLOAD_H

#include <stddef.h>
#include <stdint.h>

#define DL_MAX_URL 2048

typedef struct {
    char url[DL_MAX_URL];  /* where the bytes are: the redirect's target, or the URL itself */
    char commit[64];       /* X-Repo-Commit, "" when not a hub file */
    char sha256[65];       /* X-Linked-Etag (LFS), or a 64-hex ETag; "" when none published */
    char etag[80];         /* ETag as given (for the cache's blob name of non-LFS files) */
    uint64_t size;         /* X-Linked-Size or Content-Length; 0 unknown */
} dl_meta;

typedef struct {
    const char *token;     /* bearer token, or NULL */
    const char *token_for; /* URL prefix the token may go to (the hub endpoint) */
} dl_auth;

/* What dl_head and dl_get_small return when the server gave no answer (no
 * connection, a timeout) or a 5xx: the hub is down, as opposed to a refusal. */
#define DL_UNREACHABLE (-2)

/* HEAD url without following redirects to another host: a hub resolve URL
 * answers 302 with the hash headers and the CDN's Location. 0, or -1 with
 * err (an HTTP error says which status: 401/403 names HF_TOKEN, 404 the
 * file), or DL_UNREACHABLE with err. */
int dl_head(const char *url, const dl_auth *auth, dl_meta *out, char *err, size_t errlen);

/* GET url into a malloc'ed NUL-terminated buffer (at most max bytes: the
 * hub's file listing). 0, or -1 or DL_UNREACHABLE with err. The caller
 * frees *body. */
int dl_get_small(const char *url, const dl_auth *auth, size_t max, char **body, size_t *len,
                 char *err, size_t errlen);

/* Bytes [0, len) of url into buf (a Range request; a server that ignores
 * Range is cut off after len bytes). Returns the count, or -1 with err. */
long dl_get_head_bytes(const char *url, const dl_auth *auth, uint8_t *buf, size_t len, char *err,
                       size_t errlen);

typedef void (*dl_progress_fn)(void *ctx, uint64_t done, uint64_t total, double bytes_per_s);

/* Another source of the same bytes, tried before the URL (a peer that holds
 * the file: models/peer_file.h). open starts reading at offset and returns
 * a handle (NULL with err: not available); read gives the next bytes in
 * order (> 0), 0 at the end, -1 with err; close lets go. Called on the
 * downloading thread. What it gives is hashed with the rest: a source that
 * lies fails the SHA-256 check like a corrupted download. */
typedef struct {
    void *(*open)(void *ctx, uint64_t offset, char *err, size_t errlen);
    long (*read)(void *handle, uint8_t *buf, size_t cap, const _Atomic int *cancel, char *err, size_t errlen);
    void (*close)(void *handle);
    void *ctx;
    char name[80];         /* for the log: "peer 1a2b3c4d" */
} dl_source;

typedef struct {
    const char *url;       /* NULL: the source only */
    const dl_auth *auth;
    const char *partial;   /* where bytes land while they arrive */
    const char *dest;      /* final name, renamed into place after the check */
    const char *sha256;    /* expected SHA-256 as hex, or NULL/"" when none is known */
    uint64_t size;         /* expected size, 0 unknown */
    dl_progress_fn progress; /* at most ~10 times a second; may be NULL */
    void *progress_ctx;
    const char *label;     /* for the log: the file's name */
    const _Atomic int *cancel; /* set (by another thread) to stop: the partial file is kept; may be NULL */
    const dl_source *source;   /* tried first, from the partial file's end; on failure the URL
                                  resumes from what it wrote; may be NULL */
} dl_job;

/* Counters of this process's downloads, for /api/status and tests. */
typedef struct {
    uint64_t requests;       /* HTTP requests made (HEAD, GET, listing) */
    uint64_t bytes;          /* body bytes received */
    uint64_t resumed;        /* GETs that continued a partial file with Range */
    uint64_t retries;
    uint64_t sha_mismatches;
    uint64_t source_bytes;   /* bytes from a dl_source (a peer) instead of the URL */
    uint64_t source_failures;/* sources given up on (the URL took over) */
} dl_counters;
void dl_get_counters(dl_counters *out);

/* Downloads job->url to job->dest as above. 0, or -1 with err saying what
 * failed after how many attempts. Transient failures (connection refused or
 * broken, timeouts, 5xx, 429) are retried up to 6 times, after 1, 2, 4, 8,
 * 16 s (LLMESH_DOWNLOAD_RETRY_MS sets the first delay: tests shorten it);
 * others (4xx, a hash mismatch, a full disk) end it at once. */
int dl_fetch(const dl_job *job, char *err, size_t errlen);

/* SHA-256 of a whole file as 64 hex digits. 0, or -1 with err. */
int dl_sha256_file(const char *path, char hex[65], char *err, size_t errlen);

#endif

/* hf.h: the Hugging Face hub as other tools know it: its environment
 * variables, its URLs, and its cache on disk, so that a file another HF
 * tool fetched is used as it is, and ours by them.
 *
 * Environment (read by hf_env_read):
 *   HF_ENDPOINT   the hub (default https://huggingface.co), e.g. a mirror
 *   HF_TOKEN      bearer token for gated and private repos (else the file
 *                 $HF_HOME/token that `huggingface-cli login` writes)
 *   HF_HUB_CACHE  the cache (default $HF_HOME/hub)
 *   HF_HOME       default $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface
 *   HF_HUB_OFFLINE 1/on/yes/true: no request to the hub (the cache, and peers)
 *
 * Cache layout (one directory per repo, shared with huggingface_hub):
 *   CACHE/models--ORG--REPO/blobs/<sha256 or etag>     the bytes, once
 *   CACHE/models--ORG--REPO/snapshots/<commit>/<path>  relative symlink to the blob
 *   CACHE/models--ORG--REPO/refs/<revision>            the commit the revision was
 *
 * Threading: pure functions over the file system; any thread. */
#ifndef LLMESH_MODELS_HF_H
#define LLMESH_MODELS_HF_H

#include <stddef.h>
#include <stdint.h>

#define HF_MAX_PATH 4096

typedef struct {
    char endpoint[512];   /* no trailing slash */
    char token[512];      /* "" none */
    char cache[HF_MAX_PATH];
    int offline;          /* HF_HUB_OFFLINE: never ask the hub */
} hf_env;

void hf_env_read(hf_env *e);

/* CACHE/models--ORG--REPO. */
void hf_repo_dir(const hf_env *e, const char *repo, char *out, size_t cap);
/* ENDPOINT/ORG/REPO/resolve/REV/PATH. */
void hf_resolve_url(const hf_env *e, const char *repo, const char *revision, const char *path, char *out,
                    size_t cap);
/* ENDPOINT/api/models/ORG/REPO/revision/REV: the repo's files at that revision. */
void hf_listing_url(const hf_env *e, const char *repo, const char *revision, char *out, size_t cap);

/* The commit a revision names in the cache (refs/REV, or REV itself when it
 * is a 40-hex commit with a snapshot). 0 with commit, or -1. */
int hf_cached_commit(const hf_env *e, const char *repo, const char *revision, char commit[64]);
/* The snapshot path of file at commit, when it is there and its target
 * exists (a dangling link, a blob deleted by hand, is not there). 1 with
 * out, or 0. */
int hf_cached_file(const hf_env *e, const char *repo, const char *commit, const char *path, char *out,
                   size_t cap);
/* Where the bytes of a file go: blobs/NAME (NAME: the sha256, else the
 * etag made safe). The directories are created. 0, or -1 with err. */
int hf_blob_path(const hf_env *e, const char *repo, const char *blob_name, char *out, size_t cap, char *err,
                 size_t errlen);
/* Links snapshots/COMMIT/PATH to blobs/BLOB (relative, replaced
 * atomically) and, when revision is not the commit itself, writes
 * refs/REVISION = commit. The snapshot path into out. 0, or -1 with err. */
int hf_link_snapshot(const hf_env *e, const char *repo, const char *revision, const char *commit,
                     const char *path, const char *blob_name, char *out, size_t cap, char *err, size_t errlen);

/* The SHA-256 a snapshot's link names (its target, a blob named by 64 hex
 * digits), also when the blob is gone: the cache's own word on what the
 * file is. 1 with name, or 0 (no link, or a blob named otherwise). */
int hf_snapshot_blob(const hf_env *e, const char *repo, const char *commit, const char *path, char name[65]);

/* The .gguf files in a cached snapshot (recursive, at most max, paths
 * relative to the snapshot; a link whose blob is gone too: hf_cached_file
 * says which are there) into names (max x HF_NAME_CAP). The count. */
#define HF_NAME_CAP 512
int hf_cached_gguf_files(const hf_env *e, const char *repo, const char *commit, char (*names)[HF_NAME_CAP],
                         int max);

/* From the listing's JSON (hf_listing_url): the commit ("sha") and the
 * paths of its .gguf files ("siblings"[].rfilename) into names. The count,
 * or -1 with err for JSON that is not a listing. Bounded: at most max names
 * kept, paths checked like a reference's. */
int hf_parse_listing(const char *json, size_t len, char commit[64], char (*names)[HF_NAME_CAP], int max,
                     char *err, size_t errlen);

/* Chooses among names (repo paths of .gguf files) those carrying quant:
 * one whole file, or every part of one multi-part file, in part order.
 * The count chosen (into out, indexes into names), or -1 with err naming
 * what matched (nothing, or several files). */
int hf_pick_quant(char (*names)[HF_NAME_CAP], int n, const char *quant, int *out, int max, char *err,
                  size_t errlen);

/* Whole model files in the cache that peers may fetch from this node: every
 * .gguf in a snapshot whose link leads to a complete blob named by its
 * SHA-256 (64 hex digits: the hub's LFS hash; blobs named by an etag are
 * left out, they cannot be checked by a requester), once per blob, with
 * its reference org/repo/path@commit (the snapshot's: what lets a peer
 * name the file without the hub; at most WEIGHTS_HELD_REF_MAX bytes; longer
 * ones are left out). At most max entries into out_files, a
 * weights_held_file array (models/weights_store.h; void here so that this
 * header stays below the store); the count. Reads directories: a few stat
 * calls per cached file. */
int hf_cache_held(const hf_env *e, void *out_files, int max);

#endif

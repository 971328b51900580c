/* console_assets.h: the web console's files (web/), compiled into the
 * binary. The table is generated at build time by cmake/embed_web.cmake
 * (build/generated/console_assets.c), so the console works offline and
 * the files always match the binary that serves them.
 *
 * Paths: "/" is web/index.html; every other file is "/NAME". Data is
 * immutable and static; any thread may read it. */
#ifndef LLMESH_CONSOLE_ASSETS_H
#define LLMESH_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;            /* "/" or "/console.js" */
    const char *content_type;    /* with charset for text */
    const char *etag;            /* quoted: "\"0123456789abcdef\"" (SHA-256 prefix) */
    const unsigned char *data;
    size_t len;
} console_asset;

/* The file at path (len bytes, no query string), or NULL. */
const console_asset *console_asset_find(const char *path, size_t len);
/* The i-th file, or NULL past the end (for tests). */
const console_asset *console_asset_at(int i);

#endif

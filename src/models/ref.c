/* ref.c: parsing model references, and the built-in catalog. See ref.h.
 *
 * The forms cannot all be told apart by syntax: "models/x.gguf" is a local
 * path of two components and "org/repo/x.gguf" a hub file of three. The rule
 * is: an explicit path prefix (/ ./ ../ ~/) is a path; a URL scheme is a URL;
 * "org/repo:QUANT" is a quant; two or more slashes before a name ending in
 * .gguf is a hub file; a bare word is a catalog name; anything else is an
 * error. The caller looks on disk first (an existing file is always a path),
 * so "models/x.gguf" of the source tree keeps working. */
#define _GNU_SOURCE
#include "models/ref.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char ref_forms[] =
    "a model is a path, org/repo/file.gguf[@rev], org/repo:QUANT[@rev], an https:// URL, "
    "or a catalog name (llmesh models --catalog)";

const char *model_ref_kind_name(model_ref_kind k)
{
    switch (k) {
    case MODEL_REF_PATH: return "path";
    case MODEL_REF_HF_FILE: return "hf-file";
    case MODEL_REF_HF_QUANT: return "hf-quant";
    case MODEL_REF_URL: return "url";
    case MODEL_REF_CATALOG: return "catalog";
    }
    return "?";
}

/* Hub names (org, repo): letters, digits, '-', '_', '.', not starting with
 * '.' or '-', no "..": as the hub itself allows, and safe as a directory. */
static int name_ok(const char *s, size_t len)
{
    if (len == 0 || len > 96 || s[0] == '.' || s[0] == '-') return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.') return 0;
        if (c == '.' && i + 1 < len && s[i + 1] == '.') return 0;
    }
    return 1;
}

/* A path inside a repo: components of visible ASCII minus a few that would
 * need escaping in a URL or mean something to a shell or the file system;
 * no empty, "." or ".." component. */
static int repo_path_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len >= MODEL_REF_MAX_PATH) return 0;
    const char *comp = s;
    for (const char *p = s;; p++) {
        if (*p == '/' || *p == 0) {
            size_t n = (size_t)(p - comp);
            if (n == 0 || (n == 1 && comp[0] == '.') || (n == 2 && comp[0] == '.' && comp[1] == '.'))
                return 0;
            if (*p == 0) break;
            comp = p + 1;
            continue;
        }
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c >= 0x7f || strchr("\\\"'<>|?#%*:`$&;{}[]^", c)) return 0;
    }
    return 1;
}

static int revision_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len >= MODEL_REF_MAX_REV || strstr(s, "..") || s[0] == '/' || s[len - 1] == '/')
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && !strchr("-_./", c)) return 0;
    }
    return 1;
}

static int quant_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len >= MODEL_REF_MAX_QUANT) return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_') return 0;
    return 1;
}

static int ends_with_gguf(const char *s)
{
    size_t n = strlen(s);
    return n > 5 && !strcasecmp(s + n - 5, ".gguf");
}

/* "org/repo" at the start of s (up to end): checks both names into out. */
static int parse_repo(const char *s, size_t len, model_ref *out)
{
    const char *slash = memchr(s, '/', len);
    if (!slash || !name_ok(s, (size_t)(slash - s)) || !name_ok(slash + 1, len - (size_t)(slash + 1 - s)))
        return -1;
    if (len >= sizeof out->repo) return -1;
    memcpy(out->repo, s, len);
    out->repo[len] = 0;
    return 0;
}

int model_ref_parse(const char *s, model_ref *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    snprintf(out->revision, sizeof out->revision, "main");
    size_t len = s ? strnlen(s, MODEL_REF_MAX + 1) : 0;
    if (len == 0) { snprintf(err, errlen, "empty model reference: %s", ref_forms); return -1; }
    if (len > MODEL_REF_MAX) { snprintf(err, errlen, "model reference longer than %d bytes", MODEL_REF_MAX); return -1; }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < ' ' || s[i] == 0x7f) {
            snprintf(err, errlen, "model reference with a control character at byte %zu", i);
            return -1;
        }

    if (!strncasecmp(s, "https://", 8) || !strncasecmp(s, "http://", 7)) {
        const char *host = s + (s[4] == 's' || s[4] == 'S' ? 8 : 7);
        if (!*host || *host == '/' || len >= sizeof out->file || strpbrk(s, " \"<>\\^`{|}")) {
            snprintf(err, errlen, "'%.80s': not a usable URL (a host and a path, no spaces or quotes)", s);
            return -1;
        }
        const char *path = strchr(host, '/');
        if (!path || !path[1]) {
            snprintf(err, errlen, "'%.80s': the URL names no file", s);
            return -1;
        }
        out->kind = MODEL_REF_URL;
        memcpy(out->file, s, len + 1);
        return 0;
    }
    if (s[0] == '/' || !strncmp(s, "./", 2) || !strncmp(s, "../", 3) || !strncmp(s, "~/", 2)) {
        if (len >= sizeof out->file) { snprintf(err, errlen, "path longer than %d bytes", MODEL_REF_MAX_PATH - 1); return -1; }
        out->kind = MODEL_REF_PATH;
        memcpy(out->file, s, len + 1);
        return 0;
    }

    /* The revision: after the last '@' (none in hub names or paths we accept). */
    char body[MODEL_REF_MAX + 1];
    memcpy(body, s, len + 1);
    char *at = strrchr(body, '@');
    if (at) {
        *at = 0;
        if (!revision_ok(at + 1)) {
            snprintf(err, errlen, "'%.80s': bad revision '%.40s' (a branch, tag or commit: letters, digits, - _ . /)",
                     s, at + 1);
            return -1;
        }
        snprintf(out->revision, sizeof out->revision, "%s", at + 1);
    }

    char *colon = strchr(body, ':');
    if (colon) {
        *colon = 0;
        if (strchr(colon + 1, '/') || parse_repo(body, strlen(body), out) != 0 || !quant_ok(colon + 1)) {
            snprintf(err, errlen, "'%.80s': a quant reference is org/repo:QUANT (QUANT like Q4_K_M)", s);
            return -1;
        }
        out->kind = MODEL_REF_HF_QUANT;
        snprintf(out->quant, sizeof out->quant, "%s", colon + 1);
        return 0;
    }

    char *first = strchr(body, '/');
    char *second = first ? strchr(first + 1, '/') : NULL;
    if (second) {
        if (parse_repo(body, (size_t)(second - body), out) != 0) {
            snprintf(err, errlen, "'%.80s': '%.*s' is not a Hugging Face repo (org/name: letters, digits, - _ .)",
                     s, (int)(second - body) > 200 ? 200 : (int)(second - body), body);
            return -1;
        }
        if (!repo_path_ok(second + 1) || !ends_with_gguf(second + 1)) {
            snprintf(err, errlen, "'%.80s': the file in the repo must be a path ending in .gguf, "
                     "without '..', spaces or special characters", s);
            return -1;
        }
        out->kind = MODEL_REF_HF_FILE;
        snprintf(out->file, sizeof out->file, "%s", second + 1);
        return 0;
    }
    if (!first && !at) {
        const model_catalog_entry *e = model_catalog_find(body);
        if (e) {
            out->kind = MODEL_REF_CATALOG;
            snprintf(out->name, sizeof out->name, "%s", e->name);
            snprintf(out->repo, sizeof out->repo, "%s", e->repo);
            snprintf(out->file, sizeof out->file, "%s", e->file);
            return 0;
        }
        snprintf(err, errlen, "'%.80s': no such file, and not in the catalog (llmesh models --catalog); %s",
                 s, ref_forms);
        return -1;
    }
    snprintf(err, errlen, "'%.80s': no such file; %s", s, ref_forms);
    return -1;
}

int model_ref_split_name(const char *name, int *no, int *count, size_t *stem_len)
{
    /* "-00001-of-00003.gguf" is 20 characters. */
    size_t n = strlen(name);
    if (n < 21 || strcasecmp(name + n - 5, ".gguf")) return 0;
    const char *t = name + n - 20;
    if (t[0] != '-' || strncmp(t + 6, "-of-", 4)) return 0;
    int a = 0, b = 0;
    for (int i = 1; i <= 5; i++) {
        if (!isdigit((unsigned char)t[i]) || !isdigit((unsigned char)t[i + 9])) return 0;
        a = a * 10 + (t[i] - '0');
        b = b * 10 + (t[i + 9] - '0');
    }
    if (a < 1 || b < 1 || a > b) return 0;
    if (no) *no = a;
    if (count) *count = b;
    if (stem_len) *stem_len = (size_t)(t - name);
    return 1;
}

void model_ref_id_from_file(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base), stem;
    if (model_ref_split_name(base, NULL, NULL, &stem)) n = stem;
    else if (n > 5 && !strcasecmp(base + n - 5, ".gguf")) n -= 5;
    snprintf(out, cap, "%.*s", (int)n, base);
}

int model_ref_file_has_quant(const char *name, const char *q)
{
    size_t qn = strlen(q), n = strlen(name);
    if (!qn || n < 6 || strcasecmp(name + n - 5, ".gguf")) return 0;
    for (const char *p = name; (p = strcasestr(p, q)) != NULL; p++) {
        char before = p == name ? '-' : p[-1], after = p[qn];
        if (strchr("-._", before) && (after == '.' || after == '-')) return 1;
    }
    return 0;
}

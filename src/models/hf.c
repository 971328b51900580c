/* hf.c: Hugging Face environment, URLs and cache layout. See hf.h.
 *
 * The layout is huggingface_hub's, so the two share files both ways. Where
 * we differ: a partial download is blobs/NAME.incomplete as theirs is, but
 * locked with flock (they use a .lock file beside it); two tools downloading
 * the same blob at once would each write their own partial file only if
 * they disagreed on that, which they do not on the name, so a concurrent
 * huggingface_hub download of the same file is the one case to avoid. */
#include "models/hf.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/ref.h"
#include "models/weights_store.h"

static void trim_line(char *s) { s[strcspn(s, "\r\n")] = 0; }

static int isalnum_ascii(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

void hf_env_read(hf_env *e)
{
    memset(e, 0, sizeof *e);
    const char *ep = getenv("HF_ENDPOINT");
    snprintf(e->endpoint, sizeof e->endpoint, "%s", ep && *ep ? ep : "https://huggingface.co");
    size_t n = strlen(e->endpoint);
    while (n > 0 && e->endpoint[n - 1] == '/') e->endpoint[--n] = 0;

    char hf_home[HF_MAX_PATH];
    const char *h = getenv("HF_HOME"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (h && *h) snprintf(hf_home, sizeof hf_home, "%s", h);
    else if (xdg && *xdg) snprintf(hf_home, sizeof hf_home, "%s/huggingface", xdg);
    else snprintf(hf_home, sizeof hf_home, "%s/.cache/huggingface", home && *home ? home : "/tmp");
    const char *c = getenv("HF_HUB_CACHE");
    if (c && *c) snprintf(e->cache, sizeof e->cache, "%s", c);
    else snprintf(e->cache, sizeof e->cache, "%.4080s/hub", hf_home);

    const char *t = getenv("HF_TOKEN");
    if (t && *t) {
        snprintf(e->token, sizeof e->token, "%s", t);
    } else {
        char path[HF_MAX_PATH + 8];
        snprintf(path, sizeof path, "%s/token", hf_home);
        FILE *f = fopen(path, "re");
        if (f) {
            if (!fgets(e->token, sizeof e->token, f)) e->token[0] = 0;
            fclose(f);
            trim_line(e->token);
        }
    }
    /* huggingface_hub's reading: 1, ON, YES, TRUE (any case) mean no request
     * to the hub at all. */
    const char *off = getenv("HF_HUB_OFFLINE");
    e->offline = off && (!strcmp(off, "1") || !strcasecmp(off, "on") || !strcasecmp(off, "yes") ||
                         !strcasecmp(off, "true"));
}

void hf_repo_dir(const hf_env *e, const char *repo, char *out, size_t cap)
{
    char flat[MODEL_REF_MAX_REPO + 8];
    size_t j = 0;
    for (const char *p = repo; *p && j + 3 < sizeof flat; p++) {
        if (*p == '/') { flat[j++] = '-'; flat[j++] = '-'; }
        else flat[j++] = *p;
    }
    flat[j] = 0;
    snprintf(out, cap, "%s/models--%s", e->cache, flat);
}

void hf_resolve_url(const hf_env *e, const char *repo, const char *revision, const char *path, char *out,
                    size_t cap)
{
    snprintf(out, cap, "%s/%s/resolve/%s/%s", e->endpoint, repo, revision, path);
}

void hf_listing_url(const hf_env *e, const char *repo, const char *revision, char *out, size_t cap)
{
    snprintf(out, cap, "%s/api/models/%s/revision/%s", e->endpoint, repo, revision);
}

static int is_commit(const char *s)
{
    if (strlen(s) != 40) return 0;
    for (int i = 0; i < 40; i++)
        if (!strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

int hf_cached_commit(const hf_env *e, const char *repo, const char *revision, char commit[64])
{
    char dir[HF_MAX_PATH], path[HF_MAX_PATH + 256];
    hf_repo_dir(e, repo, dir, sizeof dir);
    if (is_commit(revision)) {
        snprintf(path, sizeof path, "%s/snapshots/%s", dir, revision);
        struct stat sb;
        if (stat(path, &sb) != 0) return -1;
        snprintf(commit, 64, "%s", revision);
        return 0;
    }
    snprintf(path, sizeof path, "%s/refs/%s", dir, revision);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    char line[80] = "";
    if (!fgets(line, sizeof line, f)) line[0] = 0;
    fclose(f);
    trim_line(line);
    if (!is_commit(line)) return -1;
    snprintf(commit, 64, "%s", line);
    return 0;
}

int hf_cached_file(const hf_env *e, const char *repo, const char *commit, const char *path, char *out,
                   size_t cap)
{
    char dir[HF_MAX_PATH];
    hf_repo_dir(e, repo, dir, sizeof dir);
    snprintf(out, cap, "%s/snapshots/%s/%s", dir, commit, path);
    struct stat sb;
    return stat(out, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* mkdir -p for the directories of a path under base (base exists or is made). */
static int mkdirs(const char *path, char *err, size_t errlen)
{
    char tmp[HF_MAX_PATH];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    return 0;
}

int hf_blob_path(const hf_env *e, const char *repo, const char *blob_name, char *out, size_t cap, char *err,
                 size_t errlen)
{
    char dir[HF_MAX_PATH], blobs[HF_MAX_PATH + 8];
    hf_repo_dir(e, repo, dir, sizeof dir);
    snprintf(blobs, sizeof blobs, "%.4080s/blobs", dir);
    if (mkdirs(blobs, err, errlen) != 0) return -1;
    /* An etag from a server is outside input: only [0-9A-Za-z_-] survive. */
    char safe[128];
    size_t j = 0;
    for (const char *p = blob_name; *p && j + 1 < sizeof safe; p++)
        safe[j++] = (isalnum_ascii(*p) || *p == '-' || *p == '_') ? *p : '_';
    safe[j] = 0;
    if (!j) { snprintf(err, errlen, "no name for the blob"); return -1; }
    snprintf(out, cap, "%s/%s", blobs, safe);
    return 0;
}

int hf_link_snapshot(const hf_env *e, const char *repo, const char *revision, const char *commit,
                     const char *path, const char *blob_name, char *out, size_t cap, char *err, size_t errlen)
{
    char dir[HF_MAX_PATH], blob[HF_MAX_PATH + 300];
    hf_repo_dir(e, repo, dir, sizeof dir);
    if (hf_blob_path(e, repo, blob_name, blob, sizeof blob, err, errlen) != 0) return -1;
    snprintf(out, cap, "%s/snapshots/%s/%s", dir, commit, path);
    char parent[HF_MAX_PATH];
    snprintf(parent, sizeof parent, "%s", out);
    *strrchr(parent, '/') = 0;
    if (mkdirs(parent, err, errlen) != 0) return -1;
    /* ../../blobs/NAME from snapshots/COMMIT/, one more ../ per directory in path. */
    char target[HF_MAX_PATH] = "../../";
    for (const char *p = path; *p; p++)
        if (*p == '/') strncat(target, "../", sizeof target - strlen(target) - 1);
    strncat(target, "blobs/", sizeof target - strlen(target) - 1);
    strncat(target, strrchr(blob, '/') + 1, sizeof target - strlen(target) - 1);
    char tmp[HF_MAX_PATH + 16];
    snprintf(tmp, sizeof tmp, "%s.lnk%d", out, (int)getpid());
    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, out) != 0) {
        snprintf(err, errlen, "cannot link %s: %s", out, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (strcmp(revision, commit) != 0) {
        char ref[HF_MAX_PATH + 300], reftmp[HF_MAX_PATH + 320];
        snprintf(ref, sizeof ref, "%s/refs/%s", dir, revision);
        char refdir[HF_MAX_PATH + 300];
        snprintf(refdir, sizeof refdir, "%s", ref);
        *strrchr(refdir, '/') = 0;
        if (mkdirs(refdir, err, errlen) != 0) return -1;
        snprintf(reftmp, sizeof reftmp, "%s.tmp%d", ref, (int)getpid());
        FILE *f = fopen(reftmp, "we");
        /* No newline: huggingface_hub writes the bare commit. */
        if (!f || fputs(commit, f) < 0 || fclose(f) != 0 || rename(reftmp, ref) != 0) {
            snprintf(err, errlen, "cannot write %s: %s", ref, strerror(errno));
            unlink(reftmp);
            return -1;
        }
    }
    return 0;
}

static void scan_gguf(const char *root, const char *rel, int depth, char (*names)[HF_NAME_CAP], int max, int *n)
{
    char dir[HF_MAX_PATH];
    snprintf(dir, sizeof dir, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && *n < max) {
        if (de->d_name[0] == '.') continue;
        char sub[HF_NAME_CAP];
        if (snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) >= (int)sizeof sub) continue;
        char full[HF_MAX_PATH + HF_NAME_CAP];
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat sb;
        int dangling = stat(full, &sb) != 0;
        if (dangling && !(lstat(full, &sb) == 0 && S_ISLNK(sb.st_mode))) continue;
        if (!dangling && S_ISDIR(sb.st_mode) && depth < 4)
            scan_gguf(root, sub, depth + 1, names, max, n);
        else if ((dangling || S_ISREG(sb.st_mode)) && strlen(sub) > 5 && !strcasecmp(sub + strlen(sub) - 5, ".gguf"))
            snprintf(names[(*n)++], HF_NAME_CAP, "%s", sub);
    }
    closedir(d);
}

int hf_snapshot_blob(const hf_env *e, const char *repo, const char *commit, const char *path, char name[65])
{
    char dir[HF_MAX_PATH], link[HF_MAX_PATH + 1024], target[HF_MAX_PATH];
    hf_repo_dir(e, repo, dir, sizeof dir);
    snprintf(link, sizeof link, "%.4000s/snapshots/%.64s/%.900s", dir, commit, path);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = 0;
    const char *base = strrchr(target, '/');
    base = base ? base + 1 : target;
    if (strlen(base) != 64 || strspn(base, "0123456789abcdef") != 64) return 0;
    memcpy(name, base, 65);
    return 1;
}

int hf_cached_gguf_files(const hf_env *e, const char *repo, const char *commit, char (*names)[HF_NAME_CAP],
                         int max)
{
    char dir[HF_MAX_PATH], snap[HF_MAX_PATH + 128];
    hf_repo_dir(e, repo, dir, sizeof dir);
    snprintf(snap, sizeof snap, "%.4000s/snapshots/%s", dir, commit);
    int n = 0;
    scan_gguf(snap, "", 0, names, max, &n);
    return n;
}

int hf_parse_listing(const char *json, size_t len, char commit[64], char (*names)[HF_NAME_CAP], int max,
                     char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) { snprintf(err, errlen, "the hub's file listing is not JSON"); return -1; }
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(root, "sha");
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(root, "siblings");
    if (!cJSON_IsString(sha) || !is_commit(sha->valuestring) || !cJSON_IsArray(sib)) {
        snprintf(err, errlen, "the hub's file listing has no commit (\"sha\") or no \"siblings\"");
        cJSON_Delete(root);
        return -1;
    }
    snprintf(commit, 64, "%s", sha->valuestring);
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, sib) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, "rfilename");
        if (!cJSON_IsString(f) || n >= max) continue;
        const char *p = f->valuestring;
        size_t pl = strlen(p);
        if (pl < 6 || pl >= HF_NAME_CAP || strcasecmp(p + pl - 5, ".gguf")) continue;
        /* A name we would not accept in a reference is skipped, not used. */
        char probe[MODEL_REF_MAX];
        model_ref r;
        char perr[64];
        snprintf(probe, sizeof probe, "a/b/%s", p);
        if (model_ref_parse(probe, &r, perr, sizeof perr) != 0 || r.kind != MODEL_REF_HF_FILE) continue;
        snprintf(names[n++], HF_NAME_CAP, "%s", p);
    }
    cJSON_Delete(root);
    return n;
}

static int by_name(const void *a, const void *b) { return strcmp(a, b); }

int hf_pick_quant(char (*names)[HF_NAME_CAP], int n, const char *quant, int *out, int max, char *err,
                  size_t errlen)
{
    /* Candidates: whole files, and the stems of part sets. */
    char cand[16][HF_NAME_CAP];
    int nc = 0;
    for (int i = 0; i < n; i++) {
        const char *base = strrchr(names[i], '/');
        base = base ? base + 1 : names[i];
        if (!model_ref_file_has_quant(base, quant)) continue;
        char key[HF_NAME_CAP];
        size_t stem;
        int no, count;
        if (model_ref_split_name(names[i], &no, &count, &stem))
            snprintf(key, sizeof key, "%.*s (%d parts)", (int)stem, names[i], count);
        else
            snprintf(key, sizeof key, "%s", names[i]);
        int seen = 0;
        for (int j = 0; j < nc; j++) seen |= !strcmp(cand[j], key);
        if (!seen && nc < 16) snprintf(cand[nc++], HF_NAME_CAP, "%s", key);
    }
    if (nc == 0) {
        snprintf(err, errlen, "no .gguf file in the repo carries '%s' in its name", quant);
        return -1;
    }
    if (nc > 1) {
        qsort(cand, (size_t)nc, sizeof cand[0], by_name);
        int w = snprintf(err, errlen, "'%s' matches %d files; name one (org/repo/FILE):", quant, nc);
        for (int j = 0; j < nc && j < 4 && w > 0 && (size_t)w < errlen; j++)
            w += snprintf(err + w, errlen - (size_t)w, " %s%s", cand[j], j + 1 < nc && j < 3 ? "," : "");
        return -1;
    }
    /* One candidate: the file, or every part of it in order. */
    int k = 0, want = 0;
    memset(out, 0, (size_t)max * sizeof *out);
    for (int i = 0; i < n; i++) {
        const char *base = strrchr(names[i], '/');
        base = base ? base + 1 : names[i];
        if (!model_ref_file_has_quant(base, quant)) continue;
        int no, count;
        size_t stem;
        if (!model_ref_split_name(names[i], &no, &count, &stem)) {
            out[0] = i;
            return 1;
        }
        want = count;
        if (count > max || no > max) { snprintf(err, errlen, "'%s' has %d parts (at most %d)", quant, count, max); return -1; }
        out[no - 1] = i + 1; /* +1: 0 marks a missing part */
        k++;
    }
    for (int i = 0; i < want; i++) {
        if (!out[i]) {
            snprintf(err, errlen, "'%s' is a %d-part file whose part %d is not in the repo", quant, want, i + 1);
            return -1;
        }
        out[i]--;
    }
    return k == want ? want : (snprintf(err, errlen, "'%s': parts listed twice", quant), -1);
}

int hf_cache_held(const hf_env *e, void *out_files, int max)
{
    weights_held_file *out = out_files;
    static __thread char names[64][HF_NAME_CAP];
    int n = 0;
    DIR *d = opendir(e->cache);
    if (!d) return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < max) {
        /* models--ORG--REPO: the first "--" after the prefix ends ORG. */
        if (strncmp(de->d_name, "models--", 8)) continue;
        const char *org = de->d_name + 8, *sep = strstr(org, "--");
        if (!sep || sep == org || !sep[2]) continue;
        char repo[HF_NAME_CAP], snaps[HF_MAX_PATH + 300];
        snprintf(repo, sizeof repo, "%.*s/%s", (int)(sep - org), org, sep + 2);
        snprintf(snaps, sizeof snaps, "%.4000s/%s/snapshots", e->cache, de->d_name);
        DIR *sd = opendir(snaps);
        if (!sd) continue;
        struct dirent *se;
        while ((se = readdir(sd)) != NULL && n < max) {
            if (se->d_name[0] == '.') continue;
            char snap[HF_MAX_PATH + 400];
            snprintf(snap, sizeof snap, "%.4100s/%.256s", snaps, se->d_name);
            int k = 0;
            scan_gguf(snap, "", 0, names, 64, &k);
            for (int i = 0; i < k && n < max; i++) {
                char link[HF_MAX_PATH + HF_NAME_CAP + 512], target[PATH_MAX];
                snprintf(link, sizeof link, "%.4500s/%.511s", snap, names[i]);
                if (!realpath(link, target)) continue;
                const char *base = strrchr(target, '/');
                base = base ? base + 1 : target;
                uint8_t sha[32];
                struct stat sb;
                if (strlen(base) != 64 || weights_parse_hex(base, sha) != 0 || stat(target, &sb) != 0 ||
                    !S_ISREG(sb.st_mode) || sb.st_size <= 0)
                    continue;
                int dup = 0;
                for (int j = 0; j < n && !dup; j++) dup = !memcmp(out[j].sha256, sha, 32);
                weights_held_file *f = &out[n];
                if (dup || snprintf(f->ref, sizeof f->ref, "%s/%s@%s", repo, names[i], se->d_name) >= (int)sizeof f->ref)
                    continue;
                memcpy(f->sha256, sha, 32);
                f->size = (uint64_t)sb.st_size;
                snprintf(f->path, sizeof f->path, "%s", target);
                n++;
            }
        }
        closedir(sd);
    }
    closedir(d);
    return n;
}

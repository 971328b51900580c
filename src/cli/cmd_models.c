/* cmd_models.c: `llmesh download REF` and `llmesh models [--catalog]`: the
 * model cache from the command line. The work is in models/resolve.c; this
 * file parses flags, draws the progress bar, and lists what is on disk. */
#include "cli/cli.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli_common.h"
#include "mesh/identity.h"
#include "models/download.h"
#include "models/hf.h"
#include "models/ref.h"
#include "models/resolve.h"
#include "serve/budget.h"
#include "lib/clock.h"

static const char download_usage[] =
    "usage: llmesh download REF [--max-memory SIZE] [--ctx N] [--parallel N] [--no-check] [--home DIR]\n"
    "\n"
    "  REF                a path, org/repo/file.gguf[@rev], org/repo:QUANT[@rev], an https:// URL,\n"
    "                     or a catalog name (llmesh models --catalog)\n"
    "  --max-memory SIZE  the memory the model must fit (default: what serve would use)\n"
    "  --ctx N, --parallel N  the context and lanes it will be served with (for the KV caches)\n"
    "  --no-check         download even when the model does not fit this machine\n"
    "  --home DIR         llmesh home (URL downloads go to DIR/downloads)\n"
    "\n"
    "Hub files go to the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else\n"
    "~/.cache/huggingface/hub); HF_ENDPOINT and HF_TOKEN are honoured. Prints the\n"
    "file's path (one line per part) on stdout.\n";

static const char models_usage[] =
    "usage: llmesh models [--catalog] [--home DIR] [--console URL|PORT] [--api-key KEY]\n"
    "\n"
    "Without --catalog: the GGUF models on this machine (the Hugging Face cache,\n"
    "--home's downloads/ and models/), with their sizes, whether the node running\n"
    "here serves each (asked on its console: --console, default\n"
    "http://127.0.0.1:3131; --api-key or LLMESH_API_KEY when it wants a key), and\n"
    "the reference that loads each. With --catalog: the built-in names\n"
    "`serve --model` and `download` accept.\n";

/* ---- the progress bar ------------------------------------------------------ */

typedef struct {
    int tty;
    double last;
} bar_state;

static void draw_bar(void *ctx, uint64_t done, uint64_t total, double rate)
{
    bar_state *b = ctx;
    if (!b->tty) return; /* off a terminal the download logs every 5 s */
    double t = clock_s();
    if (t - b->last < 0.2 && done < total) return;
    b->last = t;
    int width = 30, fill = total ? (int)((double)done / (double)total * width) : 0;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    char eta[32] = "--:--";
    if (rate > 0 && total > done) {
        long s = (long)((double)(total - done) / rate);
        snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    }
    fprintf(stderr, "\r[%s] %5.1f%% %8.1f / %.1f MB  %6.1f MB/s  ETA %s ", bar,
            total ? 100.0 * (double)done / (double)total : 0.0, (double)done / 1e6, (double)total / 1e6,
            rate / 1e6, eta);
    fflush(stderr);
}

int cmd_download(int argc, char **argv)
{
    const char *ref = NULL, *home_flag = NULL;
    uint64_t max_memory = 0;
    long ctx = 0, lanes = 2;
    int check = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int m;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(download_usage, stdout); return 0; }
        if (!strcmp(a, "--no-check")) { check = 0; continue; }
        if ((m = cli_flag_value("download", argc, argv, &i, "--max-memory", &v))) {
            if (m < 0 || cli_parse_size("download", "--max-memory", v, &max_memory)) return 2;
        } else if ((m = cli_flag_value("download", argc, argv, &i, "--ctx", &v))) {
            if (m < 0 || cli_parse_long("download", "--ctx", v, 16, 1 << 24, &ctx)) return 2;
        } else if ((m = cli_flag_value("download", argc, argv, &i, "--parallel", &v))) {
            if (m < 0 || cli_parse_long("download", "--parallel", v, 1, 64, &lanes)) return 2;
        } else if ((m = cli_flag_value("download", argc, argv, &i, "--home", &v))) {
            if (m < 0) return 2;
            home_flag = v;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "llmesh download: unknown option %s\n%s", a, download_usage);
            return 2;
        } else if (ref) {
            fprintf(stderr, "llmesh download: one reference at a time\n");
            return 2;
        } else {
            ref = a;
        }
    }
    if (!ref) { fputs(download_usage, stderr); return 2; }
    char home[4096], err[1024];
    if (identity_home_dir(home_flag, home, sizeof home, err, sizeof err) != 0) {
        fprintf(stderr, "llmesh download: %s\n", err);
        return 2;
    }
    bar_state bar = {.tty = isatty(2)};
    model_fetch_opts o = {.home = home, .n_ctx = (int)ctx, .n_lanes = (int)lanes,
                          .progress = draw_bar, .progress_ctx = &bar};
    if (check) {
        o.avail_bytes = max_memory ? max_memory : budget_default();
        o.avail_what = max_memory ? "--max-memory" : "this machine's free memory for models";
    }
    model_files *mf = malloc(sizeof *mf);
    if (!mf) return 1;
    int rc = model_fetch(ref, &o, mf, err, sizeof err);
    if (bar.tty && bar.last > 0) fputc('\n', stderr);
    if (rc != 0) {
        fprintf(stderr, "llmesh download: %s\n", err);
        free(mf);
        return 1;
    }
    for (int i = 0; i < mf->n_files; i++) printf("%s\n", mf->files[i]);
    fprintf(stderr, "%s: %s (model id %s)\n", ref,
            mf->from_cache ? "in the cache, nothing fetched" : "downloaded", mf->id);
    free(mf);
    return 0;
}

/* ---- llmesh models ----------------------------------------------------------- */

static void print_size(uint64_t b)
{
    if (b >= 1000000000ull) printf("%7.2f GB", (double)b / 1e9);
    else printf("%7.1f MB", (double)b / 1e6);
}

/* ---- what the running node serves -------------------------------------------- */

#define MODELS_MAX_SERVED 64
#define MODELS_STATUS_MAX (4u << 20)

typedef struct {
    char ids[MODELS_MAX_SERVED][128];  /* model ids the node serves (ready), or coordinates */
    int n;
    int asked;                         /* 1: a node answered */
} served_set;

/* GET console/api/status: the ids in "models" (served here) and "plans"
 * (coordinated here: a split). 0, or -1 with err (no node there, a key
 * wanted). */
static int ask_node(const char *console, const char *key, served_set *sv, char *err, size_t errlen)
{
    char url[600];
    snprintf(url, sizeof url, "%.500s/api/status", console);
    dl_auth auth = {key, console};
    char *body = NULL;
    size_t len = 0;
    if (dl_get_small(url, &auth, MODELS_STATUS_MAX, &body, &len, err, errlen) != 0) return -1;
    cJSON *root = cJSON_ParseWithLength(body, len);
    free(body);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        snprintf(err, errlen, "%s: not a node's status", url);
        return -1;
    }
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models"), *plans =
        cJSON_GetObjectItemCaseSensitive(root, "plans"), *it;
    cJSON_ArrayForEach(it, models)
        if (cJSON_IsString(it) && sv->n < MODELS_MAX_SERVED) snprintf(sv->ids[sv->n++], 128, "%s", it->valuestring);
    cJSON_ArrayForEach(it, plans) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(it, "model");
        if (!cJSON_IsString(m)) continue;
        int seen = 0;
        for (int i = 0; i < sv->n && !seen; i++) seen = !strcmp(sv->ids[i], m->valuestring);
        if (!seen && sv->n < MODELS_MAX_SERVED) snprintf(sv->ids[sv->n++], 128, "%s", m->valuestring);
    }
    cJSON_Delete(root);
    sv->asked = 1;
    return 0;
}

static served_set served;
static int served_matched[MODELS_MAX_SERVED];

/* One GGUF: size, model id, served or not, and the reference that loads it. */
static void list_file(const char *path, const char *ref)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return;
    char id[128];
    model_ref_id_from_file(path, id, sizeof id);
    const char *mark = served.asked ? "-" : "?";
    for (int i = 0; i < served.n; i++)
        if (!strcmp(served.ids[i], id)) {
            mark = "serving";
            served_matched[i] = 1;
        }
    print_size((uint64_t)sb.st_size);
    printf("  %-40s %-8s %s\n", id, mark, ref);
}

static void list_hf_cache(const hf_env *env)
{
    DIR *d = opendir(env->cache);
    if (!d) return;
    struct dirent *de;
    static char names[256][HF_NAME_CAP];
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "models--", 8)) continue;
        /* models--ORG--REPO: the first "--" after the prefix splits org and repo. */
        char repo[MODEL_REF_MAX_REPO];
        const char *rest = de->d_name + 8, *sep = strstr(rest, "--");
        if (!sep) continue;
        snprintf(repo, sizeof repo, "%.*s/%s", (int)(sep - rest), rest, sep + 2);
        char dir[HF_MAX_PATH], snaps[HF_MAX_PATH + 16];
        hf_repo_dir(env, repo, dir, sizeof dir);
        snprintf(snaps, sizeof snaps, "%.4080s/snapshots", dir);
        DIR *sd = opendir(snaps);
        if (!sd) continue;
        struct dirent *se;
        while ((se = readdir(sd)) != NULL) {
            if (se->d_name[0] == '.') continue;
            int n = hf_cached_gguf_files(env, repo, se->d_name, names, 256);
            for (int i = 0; i < n; i++) {
                char path[HF_MAX_PATH * 2], ref[HF_MAX_PATH];
                snprintf(path, sizeof path, "%s/%s/%.511s", snaps, se->d_name, names[i]);
                int no, count;
                if (model_ref_split_name(names[i], &no, &count, NULL) && no != 1) continue;
                /* The reference that loads this very file: @commit unless main is it. */
                char main_commit[64] = "";
                hf_cached_commit(env, repo, "main", main_commit);
                if (!strcmp(main_commit, se->d_name)) snprintf(ref, sizeof ref, "%s/%.511s", repo, names[i]);
                else snprintf(ref, sizeof ref, "%s/%.511s@%.64s", repo, names[i], se->d_name);
                list_file(path, ref);
            }
        }
        closedir(sd);
    }
    closedir(d);
}

static void list_dir(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0) continue;
        size_t n = strlen(de->d_name);
        if (S_ISDIR(sb.st_mode) && depth > 0) list_dir(path, depth - 1);
        else if (S_ISREG(sb.st_mode) && n > 5 && !strcasecmp(de->d_name + n - 5, ".gguf")) list_file(path, path);
    }
    closedir(d);
}

int cmd_models(int argc, char **argv)
{
    const char *home_flag = NULL, *console = "http://127.0.0.1:3131", *key = getenv("LLMESH_API_KEY");
    char console_url[300];
    int catalog = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int m;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(models_usage, stdout); return 0; }
        if (!strcmp(argv[i], "--catalog")) { catalog = 1; continue; }
        if ((m = cli_flag_value("models", argc, argv, &i, "--home", &v))) {
            if (m < 0) return 2;
            home_flag = v;
            continue;
        }
        if ((m = cli_flag_value("models", argc, argv, &i, "--console", &v))) {
            if (m < 0) return 2;
            /* A port alone means this machine's loopback. */
            if (v[0] && strspn(v, "0123456789") == strlen(v) && strlen(v) <= 5)
                snprintf(console_url, sizeof console_url, "http://127.0.0.1:%s", v);
            else if ((!strncmp(v, "http://", 7) || !strncmp(v, "https://", 8)) && strlen(v) < 256)
                snprintf(console_url, sizeof console_url, "%s", v);
            else {
                fprintf(stderr, "llmesh models: --console takes a port or an http:// URL, not '%s'\n", v);
                return 2;
            }
            size_t n = strlen(console_url);
            while (n > 0 && console_url[n - 1] == '/') console_url[--n] = 0;
            console = console_url;
            continue;
        }
        if ((m = cli_flag_value("models", argc, argv, &i, "--api-key", &v))) {
            if (m < 0) return 2;
            key = v;
            continue;
        }
        fprintf(stderr, "llmesh models: unknown option %s\n%s", argv[i], models_usage);
        return 2;
    }
    if (catalog) {
        printf("%-26s %-8s %10s  %s\n", "name", "family", "size", "hugging face file");
        for (int i = 0; i < model_catalog_count(); i++) {
            const model_catalog_entry *e = model_catalog_at(i);
            printf("%-26s %-8s ", e->name, e->family);
            print_size(e->size_bytes);
            printf("  %s/%s\n", e->repo, e->file);
        }
        return 0;
    }
    char home[4096], err[256];
    if (identity_home_dir(home_flag, home, sizeof home, err, sizeof err) != 0) {
        fprintf(stderr, "llmesh models: %s\n", err);
        return 2;
    }
    hf_env env;
    hf_env_read(&env);
    char inner[700];
    if (ask_node(console, key && *key ? key : NULL, &served, inner, sizeof inner) != 0)
        fprintf(stderr, "llmesh models: no node's status from %s (%s): the served column says ?\n", console, inner);
    printf("%10s  %-40s %-8s %s\n", "size", "model id", "served", "reference");
    list_hf_cache(&env);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/downloads", home);
    list_dir(dir, 1);
    snprintf(dir, sizeof dir, "%s/models", home);
    list_dir(dir, 0);
    /* What the node serves from elsewhere (a path, a joined multi-part). */
    for (int i = 0; i < served.n; i++)
        if (!served_matched[i]) printf("%10s  %-40s %-8s %s\n", "", served.ids[i], "serving", "(not among these files)");
    return 0;
}

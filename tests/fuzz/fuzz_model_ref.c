/* fuzz_model_ref.c: what comes from outside when a model is named: a
 * reference (models/ref.h, from a flag or the load API), the hub's file
 * listing (hf_parse_listing) and the quant choice over it, and file names
 * (split names, quant matching). The first input byte picks which:
 *   0: a reference; whatever parses must hold only checked characters and
 *      parse again to the same thing from its parts;
 *   1: a listing (JSON), then hf_pick_quant over its names;
 *   2: a file name through the name helpers;
 *   3: files as peers' records list them (a line each: org/repo/path@commit),
 *      matched against a few references (model_match_peer_files, the hub
 *      down): what is chosen must be a listed entry of the repo whose path
 *      is safe in the cache.
 * Seeds: tests/fuzz/corpus/model_ref. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/hf.h"
#include "models/ref.h"
#include "models/resolve.h"

static void peer_refs(char *text)
{
    static model_peer_file files[64];
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < 64; line = strtok(NULL, "\n")) {
        snprintf(files[n].ref, sizeof files[n].ref, "%.200s", line);
        memset(files[n].sha256, n % 3 ? 'a' : 'b', 64);
        files[n].sha256[64] = 0;
        files[n].size = (uint64_t)(n % 2) + 1;
        n++;
    }
    const char *refs[] = {"Org/m:Q8_0", "Org/m/m-Q8_0.gguf", "Org/m/b-00001-of-00002.gguf",
                          "Org/m:Q4_K_M@0123456789abcdef0123456789abcdef01234567"};
    for (size_t q = 0; q < sizeof refs / sizeof refs[0]; q++) {
        model_ref r;
        char err[512];
        int idx[MODEL_MAX_PARTS];
        if (model_ref_parse(refs[q], &r, err, sizeof err) != 0) abort();
        int k = model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err);
        if (k < -1 || k > MODEL_MAX_PARTS) abort();
        for (int i = 0; i < k; i++) {
            if (idx[i] < 0 || idx[i] >= n) abort();
            const char *ref = files[idx[i]].ref;
            if (strncmp(ref, "Org/m/", 6) || strstr(ref, "..") || !strchr(ref, '@')) abort();
        }
    }
}

static void one_ref(const char *s)
{
    model_ref r, again;
    char err[512];
    if (model_ref_parse(s, &r, err, sizeof err) != 0) {
        if (!err[0]) abort();
        return;
    }
    if (r.kind == MODEL_REF_HF_FILE || r.kind == MODEL_REF_HF_QUANT) {
        if (strstr(r.repo, "..") || strchr(r.repo, '\\')) abort();
        if (r.kind == MODEL_REF_HF_FILE && (strstr(r.file, "/../") || !strncmp(r.file, "../", 3))) abort();
        char back[MODEL_REF_MAX * 2];
        if (r.kind == MODEL_REF_HF_FILE) snprintf(back, sizeof back, "%s/%s@%s", r.repo, r.file, r.revision);
        else snprintf(back, sizeof back, "%s:%s@%s", r.repo, r.quant, r.revision);
        if (model_ref_parse(back, &again, err, sizeof err) != 0 || again.kind != r.kind ||
            strcmp(again.repo, r.repo) || strcmp(again.file, r.file) || strcmp(again.revision, r.revision))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    switch (data[0] % 4) {
    case 0:
        one_ref(text);
        break;
    case 1: {
        static char names[64][HF_NAME_CAP];
        char commit[64], err[512];
        int n = hf_parse_listing(text, size - 1, commit, names, 64, err, sizeof err);
        if (n > 64) abort();
        if (n > 0) {
            int out[16];
            const char *quants[] = {"Q4_K_M", "Q8_0", "F16"};
            for (int q = 0; q < 3; q++) {
                int k = hf_pick_quant(names, n, quants[q], out, 16, err, sizeof err);
                for (int i = 0; i < k; i++)
                    if (out[i] < 0 || out[i] >= n) abort();
            }
        }
        break;
    }
    case 3:
        peer_refs(text);
        break;
    default: {
        int no, count;
        size_t stem;
        if (model_ref_split_name(text, &no, &count, &stem) && (no < 1 || no > count || stem >= strlen(text))) abort();
        char id[128];
        model_ref_id_from_file(text, id, sizeof id);
        model_ref_file_has_quant(text, "Q4_K_M");
        break;
    }
    }
    free(text);
    return 0;
}

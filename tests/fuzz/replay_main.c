/* replay_main.c: runs a fuzz target over every file of a corpus directory, so
 * that fuzz targets run as ordinary tests (under ASan/UBSan) without libFuzzer.
 * With LLMESH_FUZZ=ON the targets link libFuzzer instead. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    int runs = 0;
    for (int i = 1; i < argc; i++) {
        DIR *dir = opendir(argv[i]);
        if (!dir) { fprintf(stderr, "cannot open corpus %s\n", argv[i]); return 1; }
        struct dirent *ent;
        while ((ent = readdir(dir))) {
            if (ent->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], ent->d_name);
            FILE *f = fopen(path, "rb");
            if (!f) continue;
            fseek(f, 0, SEEK_END);
            long n = ftell(f);
            fseek(f, 0, SEEK_SET);
            uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
            size_t got = fread(buf, 1, (size_t)n, f);
            fclose(f);
            LLVMFuzzerTestOneInput(buf, got);
            free(buf);
            runs++;
        }
        closedir(dir);
    }
    printf("%d passed, 0 failed\n", runs);
    return runs > 0 ? 0 : 1;
}

/* gguf_split.c: writes a GGUF model as N parts (NAME-0000k-of-0000N.gguf,
 * with split.no, split.count and split.tensors.count, the metadata in the
 * first part), as llama.cpp's gguf-split does: for the multi-part tests.
 *   gguf_split IN.gguf N OUT_DIR STEM */
#include <stdio.h>
#include <stdlib.h>

#include "models/multipart.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: gguf_split IN.gguf N OUT_DIR STEM\n");
        return 2;
    }
    char err[512];
    if (multipart_split(argv[1], atoi(argv[2]), argv[3], argv[4], err, sizeof err) != 0) {
        fprintf(stderr, "gguf_split: %s\n", err);
        return 1;
    }
    return 0;
}

/* testlib.c: see testlib.h. */
#define _GNU_SOURCE
#include "testlib.h"

#include <stdlib.h>
#include <unistd.h>

int testlib_failed_checks;
jmp_buf testlib_abort;
static int passed, failed;
static char tmpdir[256];

void testlib_run(const char *name, void (*fn)(void))
{
    int before = testlib_failed_checks;
    fprintf(stderr, "- %s\n", name);
    if (setjmp(testlib_abort) == 0)
        fn();
    if (testlib_failed_checks == before) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "  FAILED: %s\n", name);
    }
}

static void remove_tmpdir(void)
{
    char cmd[300];
    if (!tmpdir[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

const char *testlib_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/llmesh-test-XXXXXX");
        if (!mkdtemp(tmpdir)) { perror("mkdtemp"); exit(2); }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

const char *testlib_tmp_path(const char *name)
{
    static char buf[8][600];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", testlib_tmpdir(), name);
    return b;
}

const char *testlib_source_path(const char *relative)
{
    static char buf[4096];
    const char *root = getenv("LLMESH_SOURCE_DIR");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : ".", relative);
    return buf;
}

int testlib_finish(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

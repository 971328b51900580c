/* testlib.h: the smallest test harness that does the job.
 *
 * A test file defines `static void test_x(void)` functions and a main() that
 * calls RUN(test_x) for each and returns testlib_finish(). CHECK records a
 * failure with file:line and goes on; REQUIRE stops the current test. The last
 * line printed is "N passed, N failed", which CI reads. */
#ifndef TESTLIB_H
#define TESTLIB_H

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

extern int testlib_failed_checks;
extern jmp_buf testlib_abort;

void testlib_run(const char *name, void (*fn)(void));
int testlib_finish(void);
/* Path of a file in the source tree (LLMESH_SOURCE_DIR), in a static buffer. */
const char *testlib_source_path(const char *relative);
/* A fresh temporary directory (mkdtemp), removed at exit. */
const char *testlib_tmpdir(void);
/* testlib_tmpdir()/name, in one of 8 static buffers used in turn. */
const char *testlib_tmp_path(const char *name);

#define RUN(fn) testlib_run(#fn, fn)
#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    testlib_failed_checks++; } } while (0)
#define REQUIRE(cond) do { if (!(cond)) { \
    fprintf(stderr, "  %s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
    testlib_failed_checks++; longjmp(testlib_abort, 1); } } while (0)
#define CHECK_EQ_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ != b_) { fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", \
    __FILE__, __LINE__, #a, #b, a_, b_); testlib_failed_checks++; } } while (0)
#define CHECK_EQ_STR(a, b) do { const char *a_ = (a), *b_ = (b); \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) { fprintf(stderr, \
    "  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a, #b, \
    a_ ? a_ : "(null)", b_ ? b_ : "(null)"); testlib_failed_checks++; } } while (0)

#endif

/* crash.c: on a fatal signal, the stack of the thread that took it goes to
 * stderr (the node's log) before the process dies as it would have.
 *
 * Why: a node that crashes in the field, or once in ten CI runs, leaves
 * nothing to look at but "Segmentation fault". The frames printed here
 * (binary+offset, e.g. "llmesh(+0x4a2f1)") map back to source lines with
 * `addr2line -f -e build/llmesh 0x4a2f1` (the build keeps -g).
 *
 * Only async-signal-safe calls run in the handler: write(2) and glibc's
 * backtrace_symbols_fd, which writes without malloc. backtrace() itself may
 * allocate when libgcc is first loaded, so crash_handlers_install calls it
 * once beforehand. The handler runs on its own stack, so a stack overflow
 * is reported too; SA_RESETHAND restores the default action, and the signal
 * raised again then ends the process with the usual status (and core). */
#include "lib/crash.h"

#include <execinfo.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CRASH_MAX_FRAMES 64

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CRASH_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CRASH_SANITIZER 1
#endif
#endif

#ifndef CRASH_SANITIZER
static void write_str(const char *s)
{
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, s, len);
        if (n <= 0) return;
        s += n;
        len -= (size_t)n;
    }
}

static void crash_handler(int sig)
{
    char num[16];
    int i = (int)sizeof num - 1, v = sig;
    num[i] = '\0';
    do {
        num[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && i > 0);
    write_str("llmesh: fatal signal ");
    write_str(num + i);
    write_str(" (");
    write_str(sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGILL ? "SIGILL"
              : sig == SIGFPE ? "SIGFPE" : "SIGABRT");
    write_str("); stack of the thread that took it:\n");
    void *frames[CRASH_MAX_FRAMES];
    int n = backtrace(frames, CRASH_MAX_FRAMES);
    backtrace_symbols_fd(frames, n, STDERR_FILENO);
    write_str("llmesh: (map the +0x offsets with: addr2line -f -e llmesh OFFSET)\n");
    raise(sig); /* the default action again (SA_RESETHAND): core, exit status */
}
#endif

void crash_handlers_install(void)
{
#ifndef CRASH_SANITIZER /* the sanitizers' own reports say more */
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    void *warm[1];
    backtrace(warm, 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = crash_handler;
    sa.sa_flags = SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
#endif
}

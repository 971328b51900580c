/* crash.h: a fatal signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) prints
 * the stack of the thread that took it to stderr, then the process dies as
 * it would have. Not installed in sanitizer builds (their reports say more).
 * The alternate signal stack is the main thread's only: another thread's
 * stack overflow still dies without the report. */
#ifndef LLMESH_LIB_CRASH_H
#define LLMESH_LIB_CRASH_H

void crash_handlers_install(void);

#endif

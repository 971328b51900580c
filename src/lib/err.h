/* err.h: writing an error message into a caller's (err, errlen) buffer, the
 * convention of every library function that can fail. */
#ifndef LLMESH_ERR_H
#define LLMESH_ERR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Formats into err; does nothing when err is NULL or errlen is 0. */
__attribute__((format(printf, 3, 4)))
static inline void err_set(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

#endif

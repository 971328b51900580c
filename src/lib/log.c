/* log.c: see log.h. */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static log_level current_level = LOG_INFO;
static int json_format;
static const char *level_names[] = {"error", "warn", "info", "debug", "trace"};

void log_set_level(log_level level) { current_level = level; }
void log_set_json(int on) { json_format = on; }
int log_enabled(log_level level) { return level <= current_level; }

int log_parse_level(const char *name)
{
    for (int i = 0; i <= LOG_TRACE; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

/* Escapes a message for a JSON string; truncates rather than allocate. */
static void json_escape(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (; *in && o + 7 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
        else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (c < 0x20) o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        else out[o++] = (char)c;
    }
    out[o] = 0;
}

void log_write(log_level level, const char *module, const char *fmt, ...)
{
    if (!log_enabled(level)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    if (json_format) {
        char escaped[4096];
        json_escape(escaped, sizeof escaped, msg);
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"%s\"}\n",
                when, level_names[level], module, escaped);
    } else {
        fprintf(stderr, "%s %-5s %-6s %s\n", when, level_names[level], module, msg);
    }
}

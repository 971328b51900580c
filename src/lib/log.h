/* log.h: leveled logging to stderr, shared by every module.
 *
 * Thread-safe (one fprintf per line). Library code logs at debug/trace for
 * chatter and returns errors to its caller instead of logging them; the CLI
 * decides what the user sees. Levels and the JSON format are set once at
 * start-up, before other threads exist. */
#ifndef LLMESH_LOG_H
#define LLMESH_LOG_H

typedef enum {
    LOG_ERROR = 0,
    LOG_WARN,
    LOG_INFO,
    LOG_DEBUG,
    LOG_TRACE
} log_level;

void log_set_level(log_level level);
/* Parses "error|warn|info|debug|trace"; returns -1 for anything else. */
int log_parse_level(const char *name);
void log_set_json(int on);
int log_enabled(log_level level);
void log_write(log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(mod, ...) log_write(LOG_ERROR, mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_write(LOG_WARN, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_write(LOG_INFO, mod, __VA_ARGS__)
#define log_debug(mod, ...) do { if (log_enabled(LOG_DEBUG)) log_write(LOG_DEBUG, mod, __VA_ARGS__); } while (0)
#define log_trace(mod, ...) do { if (log_enabled(LOG_TRACE)) log_write(LOG_TRACE, mod, __VA_ARGS__); } while (0)

#endif

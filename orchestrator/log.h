/* Structured logging: one JSON object per line on stderr. */
#ifndef SAGAD_LOG_H
#define SAGAD_LOG_H

#include <stdarg.h>

enum log_level {
	LOG_DEBUG = 0, /* detail for developers */
	LOG_INFO,      /* normal operation */
	LOG_WARN,      /* something odd that sagad handled */
	LOG_ERROR,     /* something failed; sagad goes on */
	LOG_FATAL,     /* sagad cannot go on and exits */
};

/* Lowest level written; set once at start-up (log_set_level). */
extern enum log_level log_min_level;

/* Set the component name written in every line ("sagad", "sagactl", ...). */
void log_set_component(const char *component);

/* Set the lowest level written. */
void log_set_level(enum log_level level);

/* Parse "debug" / "info" / "warn" / "error"; returns -1 when unknown. */
int log_level_parse(const char *text);

/*
 * Write one line. saga_id and correlation_id may be NULL (then left out).
 * Thread-safe: each line is written with one write(2). Use the macros below,
 * which skip the argument evaluation when the level is off.
 */
void log_write(enum log_level level, const char *saga_id, const char *correlation_id,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Same, with a va_list. */
void log_vwrite(enum log_level level, const char *saga_id, const char *correlation_id,
                const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

#define log_at(level, saga_id, correlation_id, ...)                                                \
	do {                                                                                       \
		if ((level) >= log_min_level)                                                      \
			log_write((level), (saga_id), (correlation_id), __VA_ARGS__);              \
	} while (0)

#define log_debug(...) log_at(LOG_DEBUG, NULL, NULL, __VA_ARGS__)
#define log_info(...)  log_at(LOG_INFO, NULL, NULL, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_WARN, NULL, NULL, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, NULL, NULL, __VA_ARGS__)
#define log_fatal(...) log_at(LOG_FATAL, NULL, NULL, __VA_ARGS__)

/* Lines about one saga carry its ids. */
#define log_saga(level, saga_id, correlation_id, ...)                                              \
	log_at((level), (saga_id), (correlation_id), __VA_ARGS__)

#endif /* SAGAD_LOG_H */

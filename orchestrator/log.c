/* Structured logging: one JSON object per line on stderr. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_INFO;
static const char *log_component = "sagad";

static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};

void
log_set_component(const char *component)
{
	log_component = component;
}

void
log_set_level(enum log_level level)
{
	log_min_level = level;
}

int
log_level_parse(const char *text)
{
	for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++) {
		if (strcmp(text, level_names[i]) == 0)
			return i;
	}
	return -1;
}

/* Append s to buf at *pos as JSON string content, escaping; never overruns. */
static void
append_escaped(char *buf, size_t cap, size_t *pos, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	for (; *s != '\0' && *pos + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf[(*pos)++] = '\\';
			buf[(*pos)++] = (char)c;
		} else if (c == '\n') {
			buf[(*pos)++] = '\\';
			buf[(*pos)++] = 'n';
		} else if (c < 0x20) {
			buf[(*pos)++] = '\\';
			buf[(*pos)++] = 'u';
			buf[(*pos)++] = '0';
			buf[(*pos)++] = '0';
			buf[(*pos)++] = hex[c >> 4];
			buf[(*pos)++] = hex[c & 15];
		} else {
			buf[(*pos)++] = (char)c;
		}
	}
}

static void
append_raw(char *buf, size_t cap, size_t *pos, const char *s)
{
	size_t n = strlen(s);

	if (*pos + n >= cap)
		n = cap - *pos - 1;
	memcpy(buf + *pos, s, n);
	*pos += n;
}

static void
append_field(char *buf, size_t cap, size_t *pos, const char *key, const char *value)
{
	append_raw(buf, cap, pos, ",\"");
	append_raw(buf, cap, pos, key);
	append_raw(buf, cap, pos, "\":\"");
	append_escaped(buf, cap, pos, value);
	append_raw(buf, cap, pos, "\"");
}

void
log_vwrite(enum log_level level, const char *saga_id, const char *correlation_id, const char *fmt,
           va_list ap)
{
	char msg[2048];
	char line[4096];
	char ts[40];
	size_t pos = 0;
	struct timeval tv;
	struct tm tm;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (int)(tv.tv_usec / 1000));

	append_raw(line, sizeof(line) - 2, &pos, "{\"ts\":\"");
	append_raw(line, sizeof(line) - 2, &pos, ts);
	append_raw(line, sizeof(line) - 2, &pos, "\"");
	append_field(line, sizeof(line) - 2, &pos, "level", level_names[level]);
	append_field(line, sizeof(line) - 2, &pos, "component", log_component);
	if (saga_id != NULL && saga_id[0] != '\0')
		append_field(line, sizeof(line) - 2, &pos, "saga_id", saga_id);
	if (correlation_id != NULL && correlation_id[0] != '\0')
		append_field(line, sizeof(line) - 2, &pos, "correlation_id", correlation_id);
	append_field(line, sizeof(line) - 2, &pos, "msg", msg);
	line[pos++] = '}';
	line[pos++] = '\n';

	/* One write(2) per line keeps lines whole when several threads log. */
	ssize_t done = write(STDERR_FILENO, line, pos);
	(void)done;
}

void
log_write(enum log_level level, const char *saga_id, const char *correlation_id, const char *fmt,
          ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, saga_id, correlation_id, fmt, ap);
	va_end(ap);
}

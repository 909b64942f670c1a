/* PostgreSQL array literals built in memory: the parameters of multi-row statements. */
#include "pg_array.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Make room for need more bytes (plus the closing "}" and NUL); false marks the array failed. */
static bool
reserve(struct pg_array *a, size_t need)
{
	size_t cap = a->cap > 0 ? a->cap : 256;
	char *grown;

	if (a->failed)
		return false;
	if (a->len + need + 3 <= a->cap)
		return true;
	while (cap < a->len + need + 3)
		cap *= 2;
	grown = realloc(a->buf, cap);
	if (grown == NULL) {
		a->failed = true;
		return false;
	}
	a->buf = grown;
	a->cap = cap;
	return true;
}

/* Start the next element: '{' before the first, ',' before the others (room reserved). */
static void
separate(struct pg_array *a)
{
	a->buf[a->len++] = a->n == 0 ? '{' : ',';
	a->n++;
}

static void
append_raw(struct pg_array *a, const char *text, size_t n)
{
	if (!reserve(a, n + 1))
		return;
	separate(a);
	memcpy(a->buf + a->len, text, n);
	a->len += n;
}

void
pg_array_reset(struct pg_array *a)
{
	a->len = 0;
	a->n = 0;
	a->failed = false;
}

void
pg_array_free(struct pg_array *a)
{
	if (a == NULL)
		return;
	free(a->buf);
	memset(a, 0, sizeof(*a));
}

void
pg_array_text(struct pg_array *a, const char *text)
{
	size_t n;

	if (text == NULL) {
		append_raw(a, "NULL", 4);
		return;
	}
	n = strlen(text);
	if (!reserve(a, 2 * n + 3))
		return;
	separate(a);
	a->buf[a->len++] = '"';
	for (size_t i = 0; i < n; i++) {
		if (text[i] == '"' || text[i] == '\\')
			a->buf[a->len++] = '\\';
		a->buf[a->len++] = text[i];
	}
	a->buf[a->len++] = '"';
}

void
pg_array_bytes(struct pg_array *a, const uint8_t *data, size_t len)
{
	static const char hex[] = "0123456789abcdef";

	if (data == NULL) {
		append_raw(a, "NULL", 4);
		return;
	}
	if (!reserve(a, 2 * len + 6))
		return;
	separate(a);
	/* "\\x..." : the array literal's backslash escapes bytea's own. */
	memcpy(a->buf + a->len, "\"\\\\x", 4);
	a->len += 4;
	for (size_t i = 0; i < len; i++) {
		a->buf[a->len++] = hex[data[i] >> 4];
		a->buf[a->len++] = hex[data[i] & 0xf];
	}
	a->buf[a->len++] = '"';
}

void
pg_array_int(struct pg_array *a, int64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%" PRId64, v);

	append_raw(a, buf, (size_t)n);
}

void
pg_array_bool(struct pg_array *a, bool v)
{
	append_raw(a, v ? "t" : "f", 1);
}

const char *
pg_array_close(struct pg_array *a)
{
	if (!reserve(a, 1))
		return NULL;
	if (a->n == 0) {
		a->buf[0] = '{';
		a->buf[1] = '}';
		a->buf[2] = '\0';
		a->len = 0; /* the next element starts the literal afresh */
		return a->buf;
	}
	a->buf[a->len] = '}';
	a->buf[a->len + 1] = '\0';
	return a->buf;
}

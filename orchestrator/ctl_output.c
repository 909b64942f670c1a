/* sagactl output: aligned tables and key/value blocks for people, JSON for scripts. */
#include "ctl_output.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* A growing string. */
struct buf {
	char *data; /* NUL-terminated; NULL until the first append */
	size_t len; /* bytes used, without the NUL */
	size_t cap; /* bytes allocated */
	bool nomem; /* an allocation failed: the text is cut short */
};

static void
buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->nomem)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap == 0 ? 64 : b->cap;
		char *grown;

		while (cap < b->len + n + 1)
			cap *= 2;
		grown = realloc(b->data, cap);
		if (grown == NULL) {
			b->nomem = true;
			return;
		}
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when it is not one. */
static size_t
utf8_sequence(const uint8_t *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Printable form of raw bytes: UTF-8 kept, everything else escaped C-style. */
static void
escape_bytes(struct buf *b, const uint8_t *s, size_t n)
{
	size_t i = 0;

	buf_add(b, "", 0);
	while (i < n) {
		size_t seq = utf8_sequence(s + i, n - i);
		char esc[8];

		if (seq > 1) {
			buf_add(b, (const char *)s + i, seq);
			i += seq;
			continue;
		}
		if (seq == 1 && s[i] >= 0x20 && s[i] != 0x7f && s[i] != '\\') {
			buf_add(b, (const char *)s + i, 1);
		} else if (s[i] == '\\') {
			buf_add(b, "\\\\", 2);
		} else if (s[i] == '\n') {
			buf_add(b, "\\n", 2);
		} else if (s[i] == '\t') {
			buf_add(b, "\\t", 2);
		} else if (s[i] == '\r') {
			buf_add(b, "\\r", 2);
		} else {
			snprintf(esc, sizeof(esc), "\\x%02x", s[i]);
			buf_add(b, esc, 4);
		}
		i++;
	}
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

enum status
ctl_hex_decode(uint8_t **out, size_t *len, const char *hex)
{
	size_t n = strlen(hex);
	uint8_t *bytes;

	if (n % 2 != 0)
		return STATUS_INVALID;
	bytes = malloc(n / 2 + 1);
	if (bytes == NULL)
		return STATUS_NOMEM;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(bytes);
			return STATUS_INVALID;
		}
		bytes[i] = (uint8_t)(hi << 4 | lo);
	}
	*out = bytes;
	*len = n / 2;
	return STATUS_OK;
}

enum status
ctl_hex_to_text(char **out, const char *hex)
{
	struct buf b = {0};
	uint8_t *bytes = NULL;
	size_t len = 0;
	enum status st = ctl_hex_decode(&bytes, &len, hex);

	if (st != STATUS_OK)
		return st;
	escape_bytes(&b, bytes, len);
	free(bytes);
	if (b.nomem) {
		free(b.data);
		return STATUS_NOMEM;
	}
	*out = b.data;
	return STATUS_OK;
}

void
ctl_format_seconds(char *out, size_t outlen, int64_t s)
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(out, outlen, "%" PRId64 "s", s);
	else if (s < 3600)
		snprintf(out, outlen, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
	else if (s < 86400)
		snprintf(out, outlen, "%" PRId64 "h%02" PRId64 "m", s / 3600, s % 3600 / 60);
	else
		snprintf(out, outlen, "%" PRId64 "d%02" PRId64 "h", s / 86400, s % 86400 / 3600);
}

/* ---- JSON ---- */

void
ctl_json_init(struct ctl_json *j, FILE *out)
{
	memset(j, 0, sizeof(*j));
	j->out = out;
	j->first[0] = true;
}

static void
json_quoted(FILE *out, const char *s)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t n = strlen(s);
	size_t i = 0;

	fputc('"', out);
	while (i < n) {
		size_t seq = utf8_sequence(p + i, n - i);

		if (seq > 1) {
			fwrite(p + i, 1, seq, out);
			i += seq;
			continue;
		}
		if (seq == 0)
			fputs("\\ufffd", out); /* not UTF-8: JSON text must be */
		else if (p[i] == '"' || p[i] == '\\')
			fprintf(out, "\\%c", p[i]);
		else if (p[i] == '\n')
			fputs("\\n", out);
		else if (p[i] == '\t')
			fputs("\\t", out);
		else if (p[i] == '\r')
			fputs("\\r", out);
		else if (p[i] < 0x20 || p[i] == 0x7f)
			fprintf(out, "\\u%04x", p[i]);
		else
			fputc(p[i], out);
		i++;
	}
	fputc('"', out);
}

/* Separator, indentation and key before a value at the current level. */
static void
json_prefix(struct ctl_json *j, const char *key)
{
	if (j->depth > 0) {
		fputs(j->first[j->depth] ? "\n" : ",\n", j->out);
		for (int i = 0; i < j->depth; i++)
			fputs("  ", j->out);
	}
	j->first[j->depth] = false;
	if (key != NULL && j->depth > 0 && !j->in_array[j->depth]) {
		json_quoted(j->out, key);
		fputs(": ", j->out);
	}
}

static void
json_open(struct ctl_json *j, const char *key, char open, bool array)
{
	json_prefix(j, key);
	fputc(open, j->out);
	if (j->depth + 1 < CTL_JSON_MAX_DEPTH) {
		j->depth++;
		j->first[j->depth] = true;
		j->in_array[j->depth] = array;
	}
}

void
ctl_json_begin_object(struct ctl_json *j, const char *key)
{
	json_open(j, key, '{', false);
}

void
ctl_json_begin_array(struct ctl_json *j, const char *key)
{
	json_open(j, key, '[', true);
}

void
ctl_json_end(struct ctl_json *j)
{
	bool empty = j->first[j->depth];
	char close = j->in_array[j->depth] ? ']' : '}';

	if (j->depth == 0)
		return;
	j->depth--;
	if (!empty) {
		fputc('\n', j->out);
		for (int i = 0; i < j->depth; i++)
			fputs("  ", j->out);
	}
	fputc(close, j->out);
	if (j->depth == 0)
		fputc('\n', j->out);
}

void
ctl_json_string(struct ctl_json *j, const char *key, const char *value)
{
	json_prefix(j, key);
	if (value == NULL)
		fputs("null", j->out);
	else
		json_quoted(j->out, value);
}

void
ctl_json_int(struct ctl_json *j, const char *key, int64_t value)
{
	json_prefix(j, key);
	fprintf(j->out, "%" PRId64, value);
}

void
ctl_json_double(struct ctl_json *j, const char *key, double value)
{
	json_prefix(j, key);
	fprintf(j->out, "%.3f", value);
}

void
ctl_json_bool(struct ctl_json *j, const char *key, bool value)
{
	json_prefix(j, key);
	fputs(value ? "true" : "false", j->out);
}

void
ctl_json_null(struct ctl_json *j, const char *key)
{
	json_prefix(j, key);
	fputs("null", j->out);
}

void
ctl_json_raw(struct ctl_json *j, const char *key, const char *json)
{
	json_prefix(j, key);
	fputs(json != NULL && json[0] != '\0' ? json : "null", j->out);
}

/* ---- listings ---- */

/* A cell as people read it (malloc'd; NULL only when out of memory). */
static char *
display_cell(const struct store_rows *rows, int row, int col, enum ctl_kind kind)
{
	const char *raw = store_rows_get(rows, row, col);
	struct buf b = {0};
	char tmp[32];
	char *text = NULL;

	if (col < 0 || store_rows_is_null(rows, row, col))
		return strdup("-");
	switch (kind) {
	case CTL_BOOL:
		return strdup(raw[0] == 't' ? "yes" : "no");
	case CTL_SECONDS:
		ctl_format_seconds(tmp, sizeof(tmp), strtoll(raw, NULL, 10));
		return strdup(tmp);
	case CTL_BYTES:
		if (ctl_hex_to_text(&text, raw) != STATUS_OK)
			return strdup("(not hex)");
		return text;
	case CTL_INT:
	case CTL_TEXT:
	case CTL_JSONB:
		break;
	}
	/* Escape control characters: text from participants must not drive the terminal. */
	escape_bytes(&b, (const uint8_t *)raw, strlen(raw));
	if (b.nomem) {
		free(b.data);
		return NULL;
	}
	return b.data;
}

/* Characters (UTF-8 code points) of s. */
static size_t
text_width(const char *s)
{
	size_t w = 0;

	for (; *s != '\0'; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

/* Cut s to at most width characters, ending in "..." when cut. */
static void
cut_to_width(char *s, size_t width)
{
	size_t w = 0;

	if (width < 4 || text_width(s) <= width)
		return;
	for (char *p = s; *p != '\0'; p++) {
		if (((unsigned char)*p & 0xc0) != 0x80) {
			if (w == width - 3) {
				memcpy(p, "...", 4);
				return;
			}
			w++;
		}
	}
}

static void
print_padded(FILE *out, const char *s, size_t width, bool last)
{
	fputs(s, out);
	if (last)
		return;
	for (size_t w = text_width(s); w < width + 2; w++)
		fputc(' ', out);
}

void
ctl_rows_table(FILE *out, const struct store_rows *rows, const struct ctl_column *cols, int n_cols)
{
	int n = store_rows_count(rows);
	char **cells = NULL;
	size_t widths[32] = {0};

	if (n_cols > 32)
		n_cols = 32;
	if (n == 0) {
		fputs("(none)\n", out);
		return;
	}
	cells = calloc((size_t)n * (size_t)n_cols, sizeof(*cells));
	if (cells == NULL) {
		fputs("(out of memory)\n", out);
		return;
	}
	for (int c = 0; c < n_cols; c++)
		widths[c] = text_width(cols[c].header);
	for (int r = 0; r < n; r++) {
		for (int c = 0; c < n_cols; c++) {
			char *cell = display_cell(rows, r, store_rows_column(rows, cols[c].name),
			                          cols[c].kind);

			if (cell != NULL && cols[c].max_width > 0)
				cut_to_width(cell, (size_t)cols[c].max_width);
			cells[r * n_cols + c] = cell;
			if (cell != NULL && text_width(cell) > widths[c])
				widths[c] = text_width(cell);
		}
	}
	for (int c = 0; c < n_cols; c++)
		print_padded(out, cols[c].header, widths[c], c == n_cols - 1);
	fputc('\n', out);
	for (int r = 0; r < n; r++) {
		for (int c = 0; c < n_cols; c++) {
			const char *cell = cells[r * n_cols + c];

			print_padded(out, cell != NULL ? cell : "?", widths[c], c == n_cols - 1);
		}
		fputc('\n', out);
	}
	for (int i = 0; i < n * n_cols; i++)
		free(cells[i]);
	free(cells);
}

void
ctl_rows_record(FILE *out, const struct store_rows *rows, int row, const struct ctl_column *cols,
                int n_cols)
{
	size_t width = 0;

	for (int c = 0; c < n_cols; c++) {
		if (text_width(cols[c].header) > width)
			width = text_width(cols[c].header);
	}
	for (int c = 0; c < n_cols; c++) {
		char *cell = display_cell(rows, row, store_rows_column(rows, cols[c].name),
		                          cols[c].kind);

		print_padded(out, cols[c].header, width, false);
		fprintf(out, "%s\n", cell != NULL ? cell : "?");
		free(cell);
	}
}

static void
json_cell(struct ctl_json *j, const struct store_rows *rows, int row, const struct ctl_column *col)
{
	int c = store_rows_column(rows, col->name);
	const char *raw = store_rows_get(rows, row, c);
	char *end = NULL;
	char *text = NULL;
	long long v;

	if (c < 0 || store_rows_is_null(rows, row, c)) {
		ctl_json_null(j, col->name);
		return;
	}
	switch (col->kind) {
	case CTL_INT:
	case CTL_SECONDS:
		v = strtoll(raw, &end, 10);
		if (end != raw && *end == '\0')
			ctl_json_int(j, col->name, v);
		else
			ctl_json_string(j, col->name, raw);
		return;
	case CTL_BOOL:
		ctl_json_bool(j, col->name, raw[0] == 't');
		return;
	case CTL_BYTES:
		if (ctl_hex_to_text(&text, raw) == STATUS_OK) {
			ctl_json_string(j, col->name, text);
			free(text);
		} else {
			ctl_json_null(j, col->name);
		}
		return;
	case CTL_JSONB:
		ctl_json_raw(j, col->name, raw);
		return;
	case CTL_TEXT:
		break;
	}
	ctl_json_string(j, col->name, raw);
}

void
ctl_rows_json_object(struct ctl_json *j, const char *key, const struct store_rows *rows, int row,
                     const struct ctl_column *cols, int n_cols)
{
	ctl_json_begin_object(j, key);
	for (int c = 0; c < n_cols; c++)
		json_cell(j, rows, row, &cols[c]);
	ctl_json_end(j);
}

void
ctl_rows_json_array(struct ctl_json *j, const char *key, const struct store_rows *rows,
                    const struct ctl_column *cols, int n_cols)
{
	ctl_json_begin_array(j, key);
	for (int r = 0; r < store_rows_count(rows); r++)
		ctl_rows_json_object(j, NULL, rows, r, cols, n_cols);
	ctl_json_end(j);
}

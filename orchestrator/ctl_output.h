/* sagactl output: aligned tables and key/value blocks for people, JSON for scripts. */
#ifndef SAGAD_CTL_OUTPUT_H
#define SAGAD_CTL_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "status.h"
#include "store_rows.h"

/* How a column is shown. */
enum ctl_kind {
	CTL_TEXT = 0, /* string (JSON string) */
	CTL_INT,      /* integer (JSON number) */
	CTL_BOOL,     /* "t"/"f" from PostgreSQL (JSON true/false) */
	CTL_SECONDS,  /* a number of seconds: "3d4h", "5m03s" for people, a number in JSON */
	CTL_BYTES,    /* hex of raw bytes: shown as escaped text, JSON string of that text */
	CTL_JSONB,    /* JSON text from PostgreSQL (jsonb::text): written as is in JSON */
};

/* One column of a listing: which result column, its heading, its kind. */
struct ctl_column {
	const char *name;   /* result column (and JSON key) */
	const char *header; /* heading in tables */
	enum ctl_kind kind; /* how to show it */
	int max_width;      /* cut longer cells in tables (0 = no limit) */
};

/* ---- JSON writer (streaming, pretty enough for people, valid for parsers) ---- */

#define CTL_JSON_MAX_DEPTH 16

struct ctl_json {
	FILE *out;                         /* where to write */
	int depth;                         /* open objects and arrays */
	bool first[CTL_JSON_MAX_DEPTH];    /* nothing written at this level yet */
	bool in_array[CTL_JSON_MAX_DEPTH]; /* level is an array (values have no keys) */
};

void ctl_json_init(struct ctl_json *j, FILE *out);
/* Open an object / array; key is NULL inside an array and at the top. */
void ctl_json_begin_object(struct ctl_json *j, const char *key);
void ctl_json_begin_array(struct ctl_json *j, const char *key);
/* Close the innermost object / array (and end the line at the top). */
void ctl_json_end(struct ctl_json *j);
void ctl_json_string(struct ctl_json *j, const char *key, const char *value); /* NULL: null */
void ctl_json_int(struct ctl_json *j, const char *key, int64_t value);
void ctl_json_double(struct ctl_json *j, const char *key, double value);
void ctl_json_bool(struct ctl_json *j, const char *key, bool value);
void ctl_json_null(struct ctl_json *j, const char *key);
/* Write trusted JSON text (from PostgreSQL's jsonb output) as the value. */
void ctl_json_raw(struct ctl_json *j, const char *key, const char *json);

/* ---- listings of query results ---- */

/* Print rows as an aligned table with a heading (or "(none)" when empty). */
void ctl_rows_table(FILE *out, const struct store_rows *rows, const struct ctl_column *cols,
                    int n_cols);

/* Print one row as "key  value" lines, a heading per column. */
void ctl_rows_record(FILE *out, const struct store_rows *rows, int row,
                     const struct ctl_column *cols, int n_cols);

/* Write rows as a JSON array under key (NULL values become null). */
void ctl_rows_json_array(struct ctl_json *j, const char *key, const struct store_rows *rows,
                         const struct ctl_column *cols, int n_cols);

/* Write one row as a JSON object under key. */
void ctl_rows_json_object(struct ctl_json *j, const char *key, const struct store_rows *rows,
                          int row, const struct ctl_column *cols, int n_cols);

/* ---- text helpers ---- */

/*
 * Turn hex text ("ff07") into printable text: valid UTF-8 is kept, control
 * characters and other bytes become \n, \t, \\ or \xNN. *out is malloc'd.
 */
enum status ctl_hex_to_text(char **out, const char *hex) MUSTCHECK;

/* Decode hex text into bytes; *out is malloc'd (at least 1 byte), *len its length. */
enum status ctl_hex_decode(uint8_t **out, size_t *len, const char *hex) MUSTCHECK;

/* Seconds as a short duration ("45s", "5m03s", "2h05m", "3d04h"). */
void ctl_format_seconds(char *out, size_t outlen, int64_t seconds);

#endif /* SAGAD_CTL_OUTPUT_H */

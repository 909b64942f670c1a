/* Generic row sets of the store module: one parameterised query, its rows read as text. */
#ifndef SAGAD_STORE_ROWS_H
#define SAGAD_STORE_ROWS_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "store.h"

/* The result of one query (opaque; a PGresult underneath). */
struct store_rows;

/* Most parameters one query may take. */
#define STORE_ROWS_MAX_PARAMS 16

/*
 * Run one parameterised statement on s (in the open transaction, if any).
 * sql uses $1..$n placeholders; params[i] is the text of $i+1, NULL for SQL
 * NULL. Values are never spliced into the text. Statements that return no
 * rows (UPDATE without RETURNING) give an empty set whose store_rows_affected
 * tells how many rows they changed. On success *out is a new set the caller
 * frees with store_rows_free; on failure *out is untouched, err holds
 * PostgreSQL's message and the status is STATUS_DB, STATUS_DB_RETRY or
 * STATUS_DUPLICATE (unique violation).
 */
enum status store_rows_query(struct store_rows **out, struct store *s, const char *sql,
                             int n_params, const char *const *params, char *err,
                             size_t errlen) MUSTCHECK;

/* Free a set; NULL is a no-op. */
void store_rows_free(struct store_rows *r);

/* Rows and columns of a set. */
int store_rows_count(const struct store_rows *r);
int store_rows_columns(const struct store_rows *r);

/* Name of column col (0-based), or "" when out of range. */
const char *store_rows_column_name(const struct store_rows *r, int col);

/* Index of the column called name, or -1. */
int store_rows_column(const struct store_rows *r, const char *name);

/*
 * Text of a cell: "" for SQL NULL or an index out of range (tell them apart
 * with store_rows_is_null). Valid until store_rows_free.
 */
const char *store_rows_get(const struct store_rows *r, int row, int col);

/* Same, by column name. */
const char *store_rows_text(const struct store_rows *r, int row, const char *name);

/* True for SQL NULL (and for an index out of range). */
bool store_rows_is_null(const struct store_rows *r, int row, int col);

/* Integer value of a cell by column name (0 for NULL or not a number). */
int64_t store_rows_int(const struct store_rows *r, int row, const char *name);

/* Rows an INSERT / UPDATE / DELETE changed (or a SELECT returned). */
int64_t store_rows_affected(const struct store_rows *r);

#endif /* SAGAD_STORE_ROWS_H */

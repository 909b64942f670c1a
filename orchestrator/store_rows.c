/* Generic row sets of the store module: one parameterised query, its rows read as text. */
#include "store_rows.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

struct store_rows {
	PGresult *res;    /* the result (tuples or command status) */
	int64_t affected; /* rows changed (PQcmdTuples) */
};

enum status
store_rows_query(struct store_rows **out, struct store *s, const char *sql, int n_params,
                 const char *const *params, char *err, size_t errlen)
{
	struct store_rows *r = NULL;
	PGresult *res;
	ExecStatusType rs;
	enum status st;

	if (n_params < 0 || n_params > STORE_ROWS_MAX_PARAMS) {
		snprintf(err, errlen, "query: %d parameters (at most %d)", n_params,
		         STORE_ROWS_MAX_PARAMS);
		return STATUS_INVALID;
	}
	if (s->in_pipeline) {
		snprintf(err, errlen, "query: the connection is in pipeline mode");
		return STATUS_INVALID;
	}
	res = PQexecParams(s->conn, sql, n_params, NULL, params, NULL, NULL, 0);
	rs = PQresultStatus(res);
	if (rs != PGRES_TUPLES_OK && rs != PGRES_COMMAND_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "PostgreSQL",
		              res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(s->conn));
		PQclear(res);
		return st;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		PQclear(res);
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	r->res = res;
	r->affected = strtoll(PQcmdTuples(res), NULL, 10);
	*out = r;
	return STATUS_OK;
}

void
store_rows_free(struct store_rows *r)
{
	if (r == NULL)
		return;
	PQclear(r->res);
	free(r);
}

int
store_rows_count(const struct store_rows *r)
{
	return r != NULL ? PQntuples(r->res) : 0;
}

int
store_rows_columns(const struct store_rows *r)
{
	return r != NULL ? PQnfields(r->res) : 0;
}

const char *
store_rows_column_name(const struct store_rows *r, int col)
{
	const char *name;

	if (r == NULL || col < 0 || col >= PQnfields(r->res))
		return "";
	name = PQfname(r->res, col);
	return name != NULL ? name : "";
}

int
store_rows_column(const struct store_rows *r, const char *name)
{
	if (r == NULL)
		return -1;
	for (int c = 0; c < PQnfields(r->res); c++) {
		if (strcmp(PQfname(r->res, c), name) == 0)
			return c;
	}
	return -1;
}

static bool
in_range(const struct store_rows *r, int row, int col)
{
	return r != NULL && row >= 0 && row < PQntuples(r->res) && col >= 0 &&
	       col < PQnfields(r->res);
}

const char *
store_rows_get(const struct store_rows *r, int row, int col)
{
	if (!in_range(r, row, col) || PQgetisnull(r->res, row, col))
		return "";
	return PQgetvalue(r->res, row, col);
}

const char *
store_rows_text(const struct store_rows *r, int row, const char *name)
{
	return store_rows_get(r, row, store_rows_column(r, name));
}

bool
store_rows_is_null(const struct store_rows *r, int row, int col)
{
	return !in_range(r, row, col) || PQgetisnull(r->res, row, col);
}

int64_t
store_rows_int(const struct store_rows *r, int row, const char *name)
{
	return strtoll(store_rows_text(r, row, name), NULL, 10);
}

int64_t
store_rows_affected(const struct store_rows *r)
{
	return r != NULL ? r->affected : 0;
}

/* PostgreSQL for saga-bench: one connection, queries that return one row of numbers. */
#include "bench_db.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bench_db {
	PGconn *conn;     /* the connection */
	char schema[128]; /* search_path set on (re)connect, or "" */
};

/* libpq's message, first line only. */
static void
set_pg_err(char *err, size_t errlen, const char *what, const char *msg)
{
	size_t n = strcspn(msg, "\n");

	snprintf(err, errlen, "%s: %.*s", what, (int)n, msg);
}

/* SET search_path to the schema (after every connect: a reset session forgets it). */
static enum status
set_search_path(struct bench_db *db, char *err, size_t errlen)
{
	char *ident;
	char sql[256];
	PGresult *res;
	enum status st = STATUS_OK;

	if (db->schema[0] == '\0')
		return STATUS_OK;
	ident = PQescapeIdentifier(db->conn, db->schema, strlen(db->schema));
	if (ident == NULL) {
		set_pg_err(err, errlen, "schema", PQerrorMessage(db->conn));
		return STATUS_DB;
	}
	snprintf(sql, sizeof(sql), "SET search_path TO %s, public", ident);
	PQfreemem(ident);
	res = PQexec(db->conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		set_pg_err(err, errlen, "setting the search_path", PQresultErrorMessage(res));
		st = STATUS_DB;
	}
	PQclear(res);
	return st;
}

enum status
bench_db_connect(struct bench_db **out, const char *url, const char *schema, char *err,
                 size_t errlen)
{
	struct bench_db *db = calloc(1, sizeof(*db));
	enum status st = STATUS_OK;

	if (db == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	snprintf(db->schema, sizeof(db->schema), "%s", schema != NULL ? schema : "");
	db->conn = PQconnectdb(url);
	if (PQstatus(db->conn) != CONNECTION_OK) {
		/* PQerrorMessage names host and reason, never the password. */
		set_pg_err(err, errlen, "connecting to PostgreSQL", PQerrorMessage(db->conn));
		st = STATUS_UNAVAILABLE;
		goto cleanup;
	}
	st = set_search_path(db, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;
	*out = db;
	db = NULL;
cleanup:
	bench_db_close(db);
	return st;
}

void
bench_db_close(struct bench_db *db)
{
	if (db == NULL)
		return;
	PQfinish(db->conn);
	free(db);
}

enum status
bench_db_numbers(struct bench_db *db, const char *sql, int nparams, const char *const *params,
                 double *out, int nout, char *err, size_t errlen)
{
	PGresult *res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
	enum status st = STATUS_OK;

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQstatus(db->conn) == CONNECTION_BAD) {
		/* PostgreSQL restarted under a long run (a soak test does that): once more. */
		PQclear(res);
		PQreset(db->conn);
		if (PQstatus(db->conn) == CONNECTION_OK &&
		    set_search_path(db, err, errlen) == STATUS_OK)
			res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
		else
			res = NULL;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		set_pg_err(err, errlen, "query", PQresultErrorMessage(res));
		st = PQstatus(db->conn) == CONNECTION_OK ? STATUS_DB : STATUS_UNAVAILABLE;
		goto cleanup;
	}
	for (int i = 0; i < nout; i++) {
		if (PQntuples(res) < 1 || i >= PQnfields(res) || PQgetisnull(res, 0, i))
			out[i] = NAN;
		else
			out[i] = strtod(PQgetvalue(res, 0, i), NULL);
	}
cleanup:
	PQclear(res);
	return st;
}

/* PostgreSQL access: the only module that talks to libpq. */
#include "store.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "store_int.h"

/* Map a failed result's SQLSTATE to our status: retry, duplicate or plain error. */
enum status
store_status_from_result(const PGresult *res, PGconn *conn)
{
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(conn) == CONNECTION_BAD)
		return STATUS_DB_RETRY;
	if (state == NULL)
		return STATUS_DB;
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	    strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0)
		return STATUS_DB_RETRY;
	if (strcmp(state, "23505") == 0)
		return STATUS_DUPLICATE;
	return STATUS_DB;
}

/* Copy libpq's message, first line only, into err. */
void
store_set_err(char *err, size_t errlen, const char *what, const char *msg)
{
	size_t n = strcspn(msg, "\n");

	snprintf(err, errlen, "%s: %.*s", what, (int)n, msg);
}

static void
on_notice(void *arg, const char *message)
{
	(void)arg;
	log_debug("PostgreSQL: %.*s", (int)strcspn(message, "\n"), message);
}

static void
describe_target(const char *url, char *out, size_t outlen)
{
	PQconninfoOption *opts = PQconninfoParse(url, NULL);
	const char *host = NULL, *port = NULL, *db = NULL, *user = NULL;

	if (opts == NULL) {
		snprintf(out, outlen, "(unparsable connection string)");
		return;
	}
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL)
			continue;
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "dbname") == 0)
			db = o->val;
		else if (strcmp(o->keyword, "user") == 0)
			user = o->val;
	}
	snprintf(out, outlen, "host=%s port=%s dbname=%s user=%s", host ? host : "(default)",
	         port ? port : "5432", db ? db : "(default)", user ? user : "(default)");
	PQconninfoFree(opts);
}

enum status
store_connect(struct store **out, const char *url, const char *schema, int64_t timeout_ms,
              int create_schema, const char *app_name, char *err, size_t errlen)
{
	const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
	char timeout[32];
	char target[256];
	const char *vals[4];
	struct store *s = NULL;
	PGconn *conn;
	enum status st = STATUS_OK;

	PQconninfoOption *parsed = PQconninfoParse(url, NULL);

	if (parsed == NULL) {
		snprintf(err, errlen, "database_url: not a valid connection string");
		return STATUS_CONFIG;
	}
	PQconninfoFree(parsed);
	/* libpq's connect_timeout is in whole seconds, at least 2. */
	snprintf(timeout, sizeof(timeout), "%lld",
	         (long long)(timeout_ms < 2000 ? 2 : (timeout_ms + 999) / 1000));
	vals[0] = url;
	vals[1] = timeout;
	vals[2] = app_name;
	vals[3] = NULL;
	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL) {
		snprintf(err, errlen, "PostgreSQL: out of memory");
		return STATUS_NOMEM;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		char what[320];

		describe_target(url, target, sizeof(target));
		snprintf(what, sizeof(what), "cannot connect to PostgreSQL (%s)", target);
		store_set_err(err, errlen, what, PQerrorMessage(conn));
		PQfinish(conn);
		return STATUS_UNAVAILABLE;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		PQfinish(conn);
		snprintf(err, errlen, "PostgreSQL: out of memory");
		return STATUS_NOMEM;
	}
	s->conn = conn;
	/* Server notices ("already exists, skipping") become debug log lines, not stray stderr. */
	PQsetNoticeProcessor(conn, on_notice, NULL);
	if (schema != NULL && schema[0] != '\0') {
		char sql[256];
		char *ident = PQescapeIdentifier(conn, schema, strlen(schema));

		if (ident == NULL) {
			store_set_err(err, errlen, "db_schema", PQerrorMessage(conn));
			st = STATUS_CONFIG;
			goto cleanup;
		}
		if (create_schema) {
			/*
			 * IF NOT EXISTS races with a concurrent creator (unique
			 * violation): serialise creators with a transaction lock.
			 */
			snprintf(sql, sizeof(sql),
			         "BEGIN; SELECT pg_advisory_xact_lock(hashtext('sagad.schema')); "
			         "CREATE SCHEMA IF NOT EXISTS %s; COMMIT",
			         ident);
			st = store_exec(s, sql, err, errlen);
		}
		if (st == STATUS_OK) {
			snprintf(sql, sizeof(sql), "SET search_path TO %s", ident);
			st = store_exec(s, sql, err, errlen);
		}
		PQfreemem(ident);
	}
cleanup:
	if (st != STATUS_OK) {
		store_close(s);
		return st;
	}
	*out = s;
	return STATUS_OK;
}

void
store_close(struct store *s)
{
	if (s == NULL)
		return;
	PQfinish(s->conn);
	store_batch_free(s);
	free(s);
}

enum status
store_exec(struct store *s, const char *sql, char *err, size_t errlen)
{
	PGresult *res = PQexec(s->conn, sql);
	enum status st = STATUS_OK;
	ExecStatusType rs = PQresultStatus(res);

	if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "PostgreSQL", PQerrorMessage(s->conn));
	}
	PQclear(res);
	return st;
}

int
store_broken(const struct store *s)
{
	return s == NULL || PQstatus(s->conn) == CONNECTION_BAD;
}

enum status
store_ping(struct store *s, char *err, size_t errlen)
{
	return store_exec(s, "SELECT 1", err, errlen);
}

/* Key of the migration lock: one per schema, so schemas migrate independently. */
static const char *const migrate_lock_sql =
        "SELECT pg_advisory_lock(hashtext('sagad.migrate.' || current_schema()))";
static const char *const migrate_unlock_sql =
        "SELECT pg_advisory_unlock(hashtext('sagad.migrate.' || current_schema()))";

enum status
store_migrate_lock(struct store *s, char *err, size_t errlen)
{
	return store_exec(s, migrate_lock_sql, err, errlen);
}

enum status
store_migrate_unlock(struct store *s, char *err, size_t errlen)
{
	return store_exec(s, migrate_unlock_sql, err, errlen);
}

enum status
store_migrations_init(struct store *s, char *err, size_t errlen)
{
	return store_exec(s,
	                  "CREATE TABLE IF NOT EXISTS sagad_migrations ("
	                  " version integer PRIMARY KEY,"
	                  " name text NOT NULL,"
	                  " checksum text NOT NULL,"
	                  " applied_at timestamptz NOT NULL DEFAULT now())",
	                  err, errlen);
}

enum status
store_migrations_applied(struct store *s, struct store_migration **out, size_t *count, char *err,
                         size_t errlen)
{
	PGresult *res;
	struct store_migration *list = NULL;
	enum status st = STATUS_OK;
	int n;

	res = PQexec(s->conn, "SELECT version, name, checksum FROM sagad_migrations "
	                      "WHERE to_regclass('sagad_migrations') IS NOT NULL ORDER BY version");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (state != NULL && strcmp(state, "42P01") == 0) {
			/* undefined_table: nothing applied yet */
			*out = NULL;
			*count = 0;
			goto cleanup;
		}
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "reading sagad_migrations", PQerrorMessage(s->conn));
		goto cleanup;
	}
	n = PQntuples(res);
	if (n > 0) {
		list = calloc((size_t)n, sizeof(*list));
		if (list == NULL) {
			st = STATUS_NOMEM;
			snprintf(err, errlen, "out of memory");
			goto cleanup;
		}
	}
	for (int i = 0; i < n; i++) {
		list[i].version = atoi(PQgetvalue(res, i, 0));
		snprintf(list[i].name, sizeof(list[i].name), "%s", PQgetvalue(res, i, 1));
		snprintf(list[i].checksum, sizeof(list[i].checksum), "%s", PQgetvalue(res, i, 2));
	}
	*out = list;
	*count = (size_t)n;
cleanup:
	PQclear(res);
	return st;
}

enum status
store_migration_apply(struct store *s, const struct store_migration *m, const char *sql,
                      int *error_pos, char *err, size_t errlen)
{
	PGresult *res = NULL;
	enum status st = STATUS_OK;
	char version[16];
	const char *params[3];
	char ignored[64];

	*error_pos = 0;
	st = store_exec(s, "BEGIN", err, errlen);
	if (st != STATUS_OK)
		return st;

	res = PQexec(s->conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);

		st = store_status_from_result(res, s->conn);
		if (st == STATUS_DUPLICATE)
			st = STATUS_DB;
		*error_pos = pos != NULL ? atoi(pos) : 0;
		store_set_err(err, errlen, "PostgreSQL", PQresultErrorMessage(res));
		goto cleanup;
	}
	PQclear(res);

	snprintf(version, sizeof(version), "%d", m->version);
	params[0] = version;
	params[1] = m->name;
	params[2] = m->checksum;
	res = PQexecParams(s->conn,
	                   "INSERT INTO sagad_migrations (version, name, checksum) "
	                   "VALUES ($1, $2, $3)",
	                   3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "recording migration", PQresultErrorMessage(res));
		goto cleanup;
	}
	PQclear(res);
	res = NULL;
	st = store_exec(s, "COMMIT", err, errlen);
	return st;

cleanup:
	PQclear(res);
	if (store_exec(s, "ROLLBACK", ignored, sizeof(ignored)) != STATUS_OK) {
		/* The connection is gone; the server rolls back on its own. */
	}
	return st;
}

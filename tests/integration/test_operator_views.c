/* Integration tests of the operator views and database roles (migration 0004), one schema per test. */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flow.h"
#include "harness.h"

#define MAX_USERS 4

/* Saga ids used by the scenarios: SAGA_ID(07) is ...000000000007. */
#define SAGA_ID(n) "00000000-0000-0000-0000-0000000000" #n

static char schema[96];           /* this test's schema */
static char out[16384];           /* output of a child process */
static char users[MAX_USERS][96]; /* login roles this test created, dropped by fini */
static int n_users;               /* entries of users in use */
static struct flow fl;            /* end-to-end fixture, when a test uses one */
static int flow_used;             /* fl needs a teardown */
static char last_message[1024];   /* error text of the last try_sql */
static const char *const views[] = {"saga_stuck",      "saga_overview",
                                    "saga_step_stats", "saga_dead_letter_groups",
                                    "saga_outbox_lag", "saga_timeline"};

/* The participant library's table, created in the test schema as the demo does. */
static const char participant_ledger_sql[] =
        "CREATE TABLE participant_ledger (consumer text, idempotency_key text,"
        " outcome smallint NOT NULL, output bytea, error_code text, error_message text,"
        " created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, idempotency_key))";

/* Run one statement in the test schema (as the superuser); first cell of the result. */
static const char *q(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *
q(const char *fmt, ...)
{
	char sql[8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	return harness_sql(schema, sql);
}

/* A formatted statement (static buffer). */
static const char *sql_of(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *
sql_of(const char *fmt, ...)
{
	static char sql[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	return sql;
}

static int
migrate_with(const char *const *extra_env, char *output, size_t outlen)
{
	char env_schema[160];
	const char *argv[] = {harness_bin("SAGAD_BIN"), "migrate", NULL};
	const char *env[8] = {env_schema};
	int n = 1;

	snprintf(env_schema, sizeof(env_schema), "SAGAD_DB_SCHEMA=%s", schema);
	for (int i = 0; extra_env != NULL && extra_env[i] != NULL && n < 7; i++)
		env[n++] = extra_env[i];
	env[n] = NULL;
	return harness_run(argv, env, output, outlen, 60000);
}

static void
setup(void)
{
	harness_unique_name(schema, sizeof(schema), "t_ops");
	cr_assert_eq(migrate_with(NULL, out, sizeof(out)), 0, "sagad migrate failed:\n%s", out);
	q("INSERT INTO saga_definition (name, version, body, body_hash) VALUES"
	  " ('order', 1, '\\x00', 'h1'), ('order', 2, '\\x01', 'h2'), ('travel', 1, '\\x02', "
	  "'h3')");
}

static void
teardown(void)
{
	if (flow_used) {
		flow_used = 0;
		flow_teardown(&fl);
	}
	for (int i = 0; i < n_users; i++) {
		char sql[256];

		snprintf(sql, sizeof(sql), "DROP OWNED BY %s", users[i]);
		harness_sql(NULL, sql);
		snprintf(sql, sizeof(sql), "DROP ROLE %s", users[i]);
		harness_sql(NULL, sql);
	}
	n_users = 0;
}

TestSuite(operator_views, .init = setup, .fini = teardown, .timeout = 240);

/* A saga row: id n, correlation id corr-n, created and last changed the given intervals ago. */
static void
add_saga(const char *id, const char *def, int version, const char *state, const char *created_ago,
         const char *updated_ago)
{
	q("INSERT INTO saga_instance (id, correlation_id, definition_name, definition_version, "
	  "state,"
	  " input, created_at, updated_at) VALUES ('%s', 'corr-' || right('%s', 2), '%s', %d, '%s',"
	  " '', now() - interval '%s', now() - interval '%s')",
	  id, id, def, version, state, created_ago, updated_ago);
}

/* A new LOGIN role in group, with a password; dropped again by the suite's fini. */
static void
create_login(const char *group, char *name, size_t namelen, char *password, size_t pwlen)
{
	char sql[512];

	cr_assert_lt(n_users, MAX_USERS);
	harness_unique_name(name, namelen, "t_ops_login");
	harness_unique_name(password, pwlen, "pw");
	snprintf(users[n_users++], sizeof(users[0]), "%s", name);
	snprintf(sql, sizeof(sql), "CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE %s", name, password,
	         group);
	harness_sql(NULL, sql);
}

/*
 * The test database's connection parameters with user and password replaced
 * (NULL keeps the URL's own), plus options when not NULL; keys and vals hold
 * max entries including the terminating NULL. Returns the parsed options to
 * free with PQconninfoFree once keys and vals are no longer used.
 */
static PQconninfoOption *
conn_params(const char *user, const char *password, const char *options, const char **keys,
            const char **vals, int max)
{
	char *errmsg = NULL;
	PQconninfoOption *opts = PQconninfoParse(harness_database_url(), &errmsg);
	int n = 0;

	cr_assert_not_null(opts, "SAGAD_DATABASE_URL: %s", errmsg != NULL ? errmsg : "?");
	for (PQconninfoOption *o = opts; o->keyword != NULL && n < max - 4; o++) {
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if ((user != NULL && strcmp(o->keyword, "user") == 0) ||
		    (password != NULL && strcmp(o->keyword, "password") == 0) ||
		    (options != NULL && strcmp(o->keyword, "options") == 0))
			continue;
		keys[n] = o->keyword;
		vals[n++] = o->val;
	}
	if (user != NULL) {
		keys[n] = "user";
		vals[n++] = user;
	}
	if (password != NULL) {
		keys[n] = "password";
		vals[n++] = password;
	}
	if (options != NULL) {
		keys[n] = "options";
		vals[n++] = options;
	}
	keys[n] = NULL;
	vals[n] = NULL;
	return opts;
}

/* A libpq connection as user (NULL: the test superuser), search_path set to the test schema. */
static PGconn *
connect_as(const char *user, const char *password)
{
	const char *keys[48];
	const char *vals[48];
	PQconninfoOption *opts = conn_params(user, password, NULL, keys, vals, 48);
	PGconn *conn = PQconnectdbParams(keys, vals, 0);
	char sql[256];

	PQconninfoFree(opts);
	cr_assert_eq(PQstatus(conn), CONNECTION_OK, "connect as %s: %s", user ? user : "(url)",
	             PQerrorMessage(conn));
	snprintf(sql, sizeof(sql), "SET search_path TO %s", schema);
	PQclear(PQexec(conn, sql));
	return conn;
}

/* A key='value' connection string for a child process, as connect_as would connect. */
static void
conninfo_as(char *buf, size_t buflen, const char *user, const char *password, const char *options)
{
	const char *keys[48];
	const char *vals[48];
	PQconninfoOption *opts = conn_params(user, password, options, keys, vals, 48);
	size_t len = 0;

	buf[0] = '\0';
	for (int i = 0; keys[i] != NULL; i++) {
		len += (size_t)snprintf(buf + len, buflen - len, "%s%s='", i > 0 ? " " : "",
		                        keys[i]);
		for (const char *p = vals[i]; *p != '\0' && len + 3 < buflen; p++) {
			if (*p == '\'' || *p == '\\')
				buf[len++] = '\\';
			buf[len++] = *p;
		}
		cr_assert_lt(len + 2, buflen);
		buf[len++] = '\'';
		buf[len] = '\0';
	}
	PQconninfoFree(opts);
}

/* Run sql on conn; "00000" on success, else the SQLSTATE (message in last_message). */
static const char *
try_sql(PGconn *conn, const char *sql)
{
	static char state[6];
	PGresult *res = PQexec(conn, sql);
	ExecStatusType rs = PQresultStatus(res);

	last_message[0] = '\0';
	if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK) {
		snprintf(state, sizeof(state), "00000");
	} else {
		const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		snprintf(state, sizeof(state), "%s", s != NULL ? s : "?????");
		snprintf(last_message, sizeof(last_message), "%s", PQresultErrorMessage(res));
	}
	PQclear(res);
	return state;
}

static void
expect_ok(PGconn *conn, const char *sql)
{
	const char *st = try_sql(conn, sql);

	cr_assert_str_eq(st, "00000", "%s\nfailed: %s", sql, last_message);
}

/* The statement must be refused for lack of privilege, with the given text in the message. */
static void
expect_denied(PGconn *conn, const char *sql, const char *text)
{
	const char *st = try_sql(conn, sql);

	cr_assert_str_eq(st, "42501", "%s\nexpected insufficient_privilege, got %s: %s", sql, st,
	                 last_message);
	cr_assert(strstr(last_message, text) != NULL, "%s\nexpected \"%s\" in: %s", sql, text,
	          last_message);
}

/* Every row of a query, cells separated by '|' and rows by '\n'. */
static void
query_all(PGconn *conn, const char *sql, char *buf, size_t buflen)
{
	PGresult *res = PQexec(conn, sql);
	size_t len = 0;

	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(conn));
	buf[0] = '\0';
	for (int r = 0; r < PQntuples(res); r++) {
		for (int c = 0; c < PQnfields(res) && len + 1 < buflen; c++)
			len += (size_t)snprintf(buf + len, buflen - len, "%s%s", c > 0 ? "|" : "",
			                        PQgetvalue(res, r, c));
		if (len + 1 < buflen)
			len += (size_t)snprintf(buf + len, buflen - len, "\n");
	}
	PQclear(res);
}

/* Columns of a relation as "name type, ...", in order. */
static const char *
columns_of(const char *rel)
{
	return q("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', '"
	         " ORDER BY attnum) FROM pg_attribute WHERE attrelid = '%s'::regclass"
	         " AND attnum > 0 AND NOT attisdropped",
	         rel);
}

Test(operator_views, every_view_has_its_documented_columns_and_comments)
{
	static const char *const expected[][2] = {
	        {"saga_stuck",
	         "saga_id uuid, correlation_id text, definition_name text, definition_version "
	         "integer, state text, reason text, waiting_step text, step_state text, attempts "
	         "integer, last_error text, age interval, idle interval, next_wake_at timestamp "
	         "with time zone, phase text, uncertain boolean, step_started_at timestamp with "
	         "time zone, updated_at timestamp with time zone, created_at timestamp with time "
	         "zone"},
	        {"saga_overview",
	         "definition_name text, definition_version integer, state text, sagas bigint, "
	         "oldest_created_at timestamp with time zone, newest_created_at timestamp with "
	         "time "
	         "zone"},
	        {"saga_step_stats",
	         "definition_name text, definition_version integer, step_index smallint, step "
	         "text, "
	         "completed bigint, failed bigint, retries bigint, compensated bigint, "
	         "compensation_failed bigint, compensation_retries bigint, p50_ms numeric, p95_ms "
	         "numeric, p99_ms numeric, max_ms numeric, window_start timestamp with time zone"},
	        {"saga_dead_letter_groups",
	         "fingerprint text, definition_name text, step text, error_class text, letters "
	         "bigint, open bigint, diagnosed bigint, first_seen timestamp with time zone, "
	         "last_seen timestamp with time zone, example_id bigint, example_saga_id uuid, "
	         "example_reason text"},
	        {"saga_outbox_lag",
	         "unsent bigint, oldest_created_at timestamp with time zone, oldest_age interval"},
	        {"saga_timeline",
	         "saga_id uuid, seq integer, correlation_id text, definition_name text, "
	         "definition_version integer, at timestamp with time zone, since_start interval, "
	         "event text, outcome text, from_state text, to_state text, step text, phase text, "
	         "attempt integer, detail text"},
	};

	for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
		cr_assert_str_eq(columns_of(expected[i][0]), expected[i][1],
		                 "%s changed its columns: views are an interface (append only)",
		                 expected[i][0]);
		cr_assert_str_eq(q("SELECT obj_description('%s'::regclass, 'pg_class') IS NOT NULL",
		                   expected[i][0]),
		                 "t", "%s has no COMMENT", expected[i][0]);
		cr_assert_str_eq(
		        q("SELECT coalesce(string_agg(attname, ', '), '') FROM pg_attribute"
		          " WHERE attrelid = '%s'::regclass AND attnum > 0"
		          " AND col_description(attrelid, attnum) IS NULL",
		          expected[i][0]),
		        "", "%s has columns without COMMENT", expected[i][0]);
	}
	cr_assert_str_eq(q("SELECT value FROM sagad_setting WHERE name = 'stats_window'"),
	                 "1 hour");
	cr_assert_str_eq(q("SELECT value FROM sagad_setting WHERE name = 'stuck_after'"),
	                 "5 minutes");
}

Test(operator_views, an_idle_running_saga_is_stuck_with_the_step_it_waits_on)
{
	add_saga(SAGA_ID(01), "order", 1, "running", "12 minutes", "10 minutes");
	q("INSERT INTO saga_step (saga_id, step_index, name, state, attempt, started_at,"
	  " completed_at, completed_order, last_error) VALUES"
	  " ('" SAGA_ID(01) "', 0, 'reserve_stock', 'succeeded', 1, now() - interval '12 minutes',"
	                    "  now() - interval '11 minutes', 1, NULL),"
	                    " ('" SAGA_ID(01) "', 1, 'charge_card', 'waiting_retry', 2, now() - "
	                                      "interval '11 minutes',"
	                                      "  NULL, NULL, 'unavailable: try later'),"
	                                      " ('" SAGA_ID(01) "', 2, 'ship', 'pending', 0, NULL, "
	                                                        "NULL, NULL, NULL)");
	/* Recent activity: not stuck. */
	add_saga(SAGA_ID(02), "order", 1, "running", "1 minute", "30 seconds");

	cr_assert_str_eq(q("SELECT string_agg(saga_id::text, ',') FROM saga_stuck"), SAGA_ID(01));
	cr_assert_str_eq(
	        q("SELECT concat_ws('|', correlation_id, definition_name, definition_version,"
	          " state, reason, waiting_step, step_state, attempts, last_error, phase,"
	          " date_trunc('minute', age), date_trunc('minute', idle))"
	          " FROM saga_stuck"),
	        "corr-01|order|1|running|no progress for 00:10:00|charge_card|waiting_retry|"
	        "2|unavailable: try later|action|00:12:00|00:10:00");
}

Test(operator_views, a_smaller_stuck_after_setting_lists_sagas_idle_for_less_time)
{
	add_saga(SAGA_ID(01), "order", 1, "compensating", "40 seconds", "30 seconds");
	q("INSERT INTO saga_step (saga_id, step_index, name, state, attempt, comp_attempt,"
	  " completed_order, started_at, completed_at, last_error) VALUES"
	  " ('" SAGA_ID(01) "', 0, 'reserve_stock', 'succeeded', 1, 0, 1, now(), now(), NULL),"
	                    " ('" SAGA_ID(01) "', 1, 'charge_card', 'compensation_waiting_retry', "
	                                      "1, 3, 2, now(),"
	                                      "  now(), 'refund timed out'),"
	                                      " ('" SAGA_ID(01) "', 2, 'ship', 'failed', 1, 0, "
	                                                        "NULL, now(), NULL, 'no address')");
	cr_assert_str_eq(q("SELECT count(*) FROM saga_stuck"), "0", "default is 5 minutes");

	q("UPDATE sagad_setting SET value = '10 seconds' WHERE name = 'stuck_after'");
	/* The latest completed step is compensated first: it is the one waited on. */
	cr_assert_str_eq(
	        q("SELECT concat_ws('|', state, reason, waiting_step, step_state, attempts,"
	          " last_error, phase) FROM saga_stuck"),
	        "compensating|no progress for 00:00:30|charge_card|"
	        "compensation_waiting_retry|3|refund timed out|compensation");
}

Test(operator_views, a_step_retried_for_longer_than_stuck_after_is_stuck_though_the_saga_moves)
{
	/* A retriable step retried every few seconds: transitions, but no progress. */
	add_saga(SAGA_ID(01), "order", 1, "running", "10 minutes", "2 seconds");
	q("INSERT INTO saga_step (saga_id, step_index, name, state, attempt, started_at,"
	  " last_error) VALUES ('" SAGA_ID(01) "', 0, 'reserve_stock', 'running', 7,"
	                                       " now() - interval '10 minutes', 'unavailable')");
	/* A slow first attempt of a young saga is not. */
	add_saga(SAGA_ID(02), "order", 1, "running", "1 minute", "1 minute");
	q("INSERT INTO saga_step (saga_id, step_index, name, state, attempt, started_at)"
	  " VALUES ('" SAGA_ID(
	          02) "', 0, 'reserve_stock', 'running', 1, now() - interval '1 minute')");

	cr_assert_str_eq(q("SELECT concat_ws('|', saga_id, reason, waiting_step, attempts,"
	                   " date_trunc('minute', step_started_at) = date_trunc('minute',"
	                   " now() - interval '10 minutes'))"
	                   " FROM saga_stuck"),
	                 SAGA_ID(01) "|step reserve_stock not done after 00:10:00 (7 attempts)|"
	                             "reserve_stock|7|t");
}

Test(operator_views, a_failed_saga_is_stuck_and_finished_or_fresh_ones_are_not)
{
	add_saga(SAGA_ID(01), "order", 1, "failed", "1 minute", "20 seconds");
	q("UPDATE saga_instance SET last_error = 'compensation of reserve_stock exhausted'"
	  " WHERE id = '" SAGA_ID(01) "'");
	q("INSERT INTO saga_step (saga_id, step_index, name, state, attempt, comp_attempt,"
	  " completed_order, uncertain, last_error) VALUES"
	  " ('" SAGA_ID(
	          01) "', 0, 'reserve_stock', 'compensation_failed', 1, 10, 1, false,"
	              "  'release: stock service down'),"
	              " ('" SAGA_ID(
	                      01) "', 1, 'charge_card', 'failed', 3, 0, NULL, true, 'timed out')");
	add_saga(SAGA_ID(02), "order", 1, "completed", "2 hours", "2 hours");
	add_saga(SAGA_ID(03), "order", 1, "compensated", "2 hours", "2 hours");
	add_saga(SAGA_ID(04), "order", 1, "resolved", "2 hours", "2 hours");
	add_saga(SAGA_ID(05), "order", 1, "running", "1 second", "1 second");

	cr_assert_str_eq(q("SELECT string_agg(saga_id::text, ',') FROM saga_stuck"), SAGA_ID(01));
	cr_assert_str_eq(
	        q("SELECT concat_ws('|', state, reason, waiting_step, step_state, attempts,"
	          " last_error, phase, uncertain) FROM saga_stuck"),
	        "failed|failed: needs an operator (retry or resolve)|reserve_stock|"
	        "compensation_failed|10|release: stock service down|compensation|f");
}

Test(operator_views, overview_counts_sagas_per_definition_version_and_state)
{
	add_saga(SAGA_ID(01), "order", 1, "running", "3 hours", "1 minute");
	add_saga(SAGA_ID(02), "order", 1, "running", "2 hours", "1 minute");
	add_saga(SAGA_ID(03), "order", 1, "running", "1 hour", "1 minute");
	add_saga(SAGA_ID(04), "order", 1, "completed", "1 hour", "1 hour");
	add_saga(SAGA_ID(05), "order", 1, "completed", "1 hour", "1 hour");
	add_saga(SAGA_ID(06), "order", 2, "completed", "5 minutes", "5 minutes");
	add_saga(SAGA_ID(07), "travel", 1, "failed", "5 minutes", "5 minutes");

	cr_assert_str_eq(q("SELECT string_agg(concat_ws(':', definition_name, definition_version,"
	                   " state, sagas), ',') FROM saga_overview"),
	                 "order:1:completed:2,order:1:running:3,order:2:completed:1,"
	                 "travel:1:failed:1");
	/* Each q() is a transaction of its own: now() moves a little between them. */
	cr_assert_str_eq(q("SELECT date_trunc('second', newest_created_at - oldest_created_at)"
	                   " FROM saga_overview"
	                   " WHERE definition_name = 'order' AND definition_version = 1"
	                   " AND state = 'running'"),
	                 "02:00:00");
	cr_assert_str_eq(q("SELECT oldest_created_at = (SELECT created_at FROM saga_instance"
	                   " WHERE id = '" SAGA_ID(
	                           01) "') FROM saga_overview"
	                               " WHERE definition_name = 'order' AND state = 'running'"),
	                 "t");
}

Test(operator_views, step_stats_count_the_window_and_give_plausible_percentiles)
{
	/* 100 charge_card successes in the window taking 1..100 ms, 1 retry each for the first 10. */
	q("INSERT INTO saga_instance (id, correlation_id, definition_name, definition_version,"
	  " state, input) SELECT ('00000000-0000-0000-0001-' || lpad(g::text, 12, '0'))::uuid,"
	  " 'c' || g, 'order', 1, 'completed', '' FROM generate_series(1, 110) g");
	q("INSERT INTO saga_step (saga_id, step_index, name, state, attempt, started_at,"
	  " completed_at, completed_order) SELECT ('00000000-0000-0000-0001-' || lpad(g::text, 12,"
	  " '0'))::uuid, 1, 'charge_card', 'succeeded', CASE WHEN g <= 10 THEN 2 ELSE 1 END,"
	  " now() - g * interval '1 ms', now(), 1 FROM generate_series(1, 100) g");
	/* 4 failed for good after 3 attempts; 1 of them compensated nothing (it failed). */
	q("INSERT INTO saga_step (saga_id, step_index, name, state, attempt, started_at, "
	  "updated_at)"
	  " SELECT ('00000000-0000-0000-0001-' || lpad(g::text, 12, '0'))::uuid, 1, 'charge_card',"
	  " 'failed', 3, now() - interval '1 minute', now() FROM generate_series(101, 104) g");
	/* reserve_stock of those 4: succeeded, then compensated (2 compensation attempts). */
	q("INSERT INTO saga_step (saga_id, step_index, name, state, attempt, comp_attempt,"
	  " started_at, completed_at, completed_order, updated_at)"
	  " SELECT ('00000000-0000-0000-0001-' || lpad(g::text, 12, '0'))::uuid, 0, "
	  "'reserve_stock',"
	  " 'compensated', 1, 2, now() - interval '61 seconds', now() - interval '1 minute', 1, "
	  "now()"
	  " FROM generate_series(101, 104) g");
	/* 6 successes two hours ago, very slow: outside the default window. */
	q("INSERT INTO saga_step (saga_id, step_index, name, state, attempt, started_at,"
	  " completed_at, completed_order, updated_at) SELECT ('00000000-0000-0000-0001-' ||"
	  " lpad(g::text, 12, '0'))::uuid, 1, 'charge_card', 'succeeded', 1,"
	  " now() - interval '2 hours 1 minute', now() - interval '2 hours', 1,"
	  " now() - interval '2 hours' FROM generate_series(105, 110) g");

	cr_assert_str_eq(q("SELECT string_agg(concat_ws(':', definition_name, definition_version,"
	                   " step_index, step), ',') FROM saga_step_stats"),
	                 "order:1:0:reserve_stock,order:1:1:charge_card");
	cr_assert_str_eq(q("SELECT concat_ws('|', completed, failed, retries, compensated,"
	                   " compensation_failed, compensation_retries, p50_ms, p95_ms, p99_ms,"
	                   " max_ms) FROM saga_step_stats WHERE step = 'charge_card'"),
	                 "100|4|18|0|0|0|50.5|95.1|99.0|100.0");
	/* Succeeded a minute ago (1 s after its start), compensated since: counted in both. */
	cr_assert_str_eq(q("SELECT concat_ws('|', completed, failed, retries, compensated,"
	                   " compensation_retries, p50_ms) FROM saga_step_stats"
	                   " WHERE step = 'reserve_stock'"),
	                 "4|0|0|4|4|1000.0");
	cr_assert_str_eq(q("SELECT window_start = now() - interval '1 hour' FROM saga_step_stats"
	                   " LIMIT 1"),
	                 "t");

	/* A wider window takes in the slow old ones. */
	q("UPDATE sagad_setting SET value = '3 hours' WHERE name = 'stats_window'");
	cr_assert_str_eq(q("SELECT concat_ws('|', completed, max_ms) FROM saga_step_stats"
	                   " WHERE step = 'charge_card'"),
	                 "106|60000.0");
	cr_assert_str_eq(q("SELECT concat_ws('|', completed, p50_ms) FROM saga_step_stats"
	                   " WHERE step = 'reserve_stock'"),
	                 "4|1000.0");
}

Test(operator_views, dead_letters_group_by_fingerprint_and_skip_closed_ones)
{
	char expected[256];

	add_saga(SAGA_ID(01), "order", 1, "failed", "1 hour", "1 hour");
	add_saga(SAGA_ID(02), "order", 2, "failed", "1 hour", "1 hour");
	add_saga(SAGA_ID(03), "order", 1, "failed", "1 hour", "1 hour");
	q("INSERT INTO saga_dead_letter (id, source_subject, source_key, reason, error_class, "
	  "saga_id,"
	  " step, status, created_at) VALUES"
	  " (11, 'saga', 'k11', 'first', 'saga_failed', '" SAGA_ID(
	          01) "', 'charge_card', 'open',"
	              "  now() - interval '2 minutes'),"
	              " (12, 'saga', 'k12', 'second', 'saga_failed', '" SAGA_ID(
	                      02) "', 'charge_card',"
	                          "  'diagnosed', now() - interval '1 minute'),"
	                          " (13, 'saga', 'k13', 'closed', 'saga_failed', '" SAGA_ID(
	                                  03) "', 'charge_card',"
	                                      "  'discarded', now()),"
	                                      " (14, 'saga', 'k14', 'closed', 'saga_failed', "
	                                      "'" SAGA_ID(03) "', 'charge_card',"
	                                                      "  'replayed', now()),"
	                                                      " (15, 'saga.reply.x', 'R:1', "
	                                                      "'cannot decode', 'undecodable', "
	                                                      "NULL, NULL, 'open',"
	                                                      "  now() - interval '3 minutes'),"
	                                                      " (16, 'saga.reply.x', 'R:2', 'no "
	                                                      "such saga', 'unknown_saga',"
	                                                      "  "
	                                                      "'99999999-0000-0000-0000-"
	                                                      "000000000000', 'ship', 'open', "
	                                                      "now() - interval '4 minutes')");

	cr_assert_str_eq(q("SELECT string_agg(concat_ws(':', definition_name, coalesce(step, '-'),"
	                   " error_class, letters, open, diagnosed, example_id,"
	                   " coalesce(example_saga_id::text, '-'),"
	                   " example_reason), ',') FROM saga_dead_letter_groups"),
	                 "order:charge_card:saga_failed:2:1:1:12:" SAGA_ID(
	                         02) ":second,"
	                             "unknown:-:undecodable:1:1:0:15:-:cannot decode,"
	                             "unknown:ship:unknown_saga:1:1:0:16:"
	                             "99999999-0000-0000-0000-000000000000"
	                             ":no such saga");
	cr_assert_str_eq(q("SELECT concat_ws('|', first_seen = (SELECT created_at FROM"
	                   " saga_dead_letter WHERE id = 11), last_seen = (SELECT created_at FROM"
	                   " saga_dead_letter WHERE id = 12)) FROM saga_dead_letter_groups"
	                   " WHERE error_class = 'saga_failed'"),
	                 "t|t");
	/* The fingerprint sagactl computes (and passes back) for each letter. */
	snprintf(expected, sizeof(expected), "%s",
	         q("SELECT string_agg(left(md5(x), 12), ',') FROM (VALUES"
	           " ('order/charge_card/saga_failed'), ('//undecodable'),"
	           " ('/ship/unknown_saga')) v(x)"));
	cr_assert_str_eq(q("SELECT string_agg(fingerprint, ',') FROM saga_dead_letter_groups"),
	                 expected);
	if (strcmp(q("SELECT to_regproc('sagad_dead_letter_fingerprint') IS NOT NULL"), "t") == 0) {
		cr_assert_str_eq(
		        q("SELECT count(*) FROM saga_dead_letter d LEFT JOIN saga_instance i"
		          " ON i.id = d.saga_id WHERE d.status IN ('open', 'diagnosed') AND"
		          " sagad_dead_letter_fingerprint(coalesce(i.definition_name, ''), d.step,"
		          " d.error_class) NOT IN (SELECT fingerprint FROM "
		          "saga_dead_letter_groups)"),
		        "0", "the view's fingerprints differ from sagad_dead_letter_fingerprint()");
	}
}

Test(operator_views, outbox_lag_is_zero_when_empty_and_ages_the_oldest_row)
{
	cr_assert_str_eq(q("SELECT concat_ws('|', unsent, coalesce(oldest_created_at::text, '-'),"
	                   " coalesce(oldest_age::text, '-')) FROM saga_outbox_lag"),
	                 "0|-|-");
	q("INSERT INTO saga_outbox (subject, msg_id, content_type, payload, created_at) VALUES"
	  " ('saga.cmd.a', 'm1', 'x', '', now() - interval '10 seconds'),"
	  " ('saga.cmd.b', 'm2', 'x', '', now() - interval '30 seconds'),"
	  " ('saga.cmd.c', 'm3', 'x', '', now())");
	cr_assert_str_eq(q("SELECT concat_ws('|', unsent, date_trunc('second', oldest_age),"
	                   " oldest_created_at = (SELECT min(created_at) FROM saga_outbox))"
	                   " FROM saga_outbox_lag"),
	                 "3|00:00:30|t");
	cr_assert_str_eq(q("SELECT count(*) FROM saga_outbox_lag"), "1");
}

Test(operator_views, a_timeline_by_correlation_id_is_in_seq_order_with_its_definition)
{
	PGconn *admin;
	char plan[8192];

	add_saga(SAGA_ID(01), "order", 1, "compensated", "1 minute", "1 minute");
	add_saga(SAGA_ID(02), "order", 2, "completed", "1 minute", "1 minute");
	q("UPDATE saga_instance SET correlation_id = 'web-7' WHERE id IN ('" SAGA_ID(
	        01) "', '" SAGA_ID(02) "')");
	/* Inserted out of order, and a transition of another correlation id. */
	q("INSERT INTO saga_transition (saga_id, seq, correlation_id, event, outcome, from_state,"
	  " to_state, step, phase, attempt, detail, at) VALUES"
	  " ('" SAGA_ID(
	          01) "', 3, 'web-7', 'reply', 'applied', 'compensating', 'compensated',"
	              "  'reserve_stock', 'compensation', 1, NULL, now() - interval '57 seconds'),"
	              " ('" SAGA_ID(
	                      01) "', 1, 'web-7', 'start', 'applied', NULL, 'running', NULL, NULL, "
	                          "NULL,"
	                          "  NULL, now() - interval '60 seconds'),"
	                          " ('" SAGA_ID(
	                                  02) "', 1, 'web-7', 'start', 'applied', NULL, 'running', "
	                                      "NULL, NULL, NULL,"
	                                      "  NULL, now() - interval '50 seconds'),"
	                                      " ('" SAGA_ID(
	                                              01) "', 2, 'web-7', 'reply', 'applied', "
	                                                  "'running', 'compensating',"
	                                                  "  'charge_card', 'action', 1, "
	                                                  "'declined: card', now() - interval '58 "
	                                                  "seconds'),"
	                                                  " ('" SAGA_ID(
	                                                          03) "', 1, 'other', 'start', "
	                                                              "'applied', NULL, 'running', "
	                                                              "NULL, NULL, NULL,"
	                                                              "  NULL, now())");

	cr_assert_str_eq(
	        q("SELECT string_agg(concat_ws(':', right(saga_id::text, 2), seq,"
	          " definition_name, definition_version, event, to_state,"
	          " coalesce(step, '-'), coalesce(detail, '-')), ',') FROM (SELECT * FROM"
	          " saga_timeline WHERE correlation_id = 'web-7' ORDER BY saga_id, seq) t"),
	        "01:1:order:1:start:running:-:-,"
	        "01:2:order:1:reply:compensating:charge_card:declined: card,"
	        "01:3:order:1:reply:compensated:reserve_stock:-,"
	        "02:1:order:2:start:running:-:-");
	cr_assert_str_eq(q("SELECT string_agg(seq || ':' || date_trunc('second', since_start), ',')"
	                   " FROM (SELECT * FROM"
	                   " saga_timeline WHERE saga_id = '" SAGA_ID(01) "' ORDER BY seq) t"),
	                 "1:00:00:00,2:00:00:02,3:00:00:03");
	/* A transition whose saga row is unknown still shows, without a definition. */
	cr_assert_str_eq(q("SELECT concat_ws('|', correlation_id, coalesce(definition_name, '-'))"
	                   " FROM saga_timeline WHERE saga_id = '" SAGA_ID(03) "'"),
	                 "other|-");

	/* Both filters can use the existing indexes (forced: the tables are tiny). */
	admin = connect_as(NULL, NULL);
	expect_ok(admin, "SET enable_seqscan = off");
	query_all(admin,
	          "EXPLAIN SELECT * FROM saga_timeline WHERE correlation_id = 'web-7'"
	          " ORDER BY saga_id, seq",
	          plan, sizeof(plan));
	cr_assert(strstr(plan, "saga_transition_correlation") != NULL, "%s", plan);
	query_all(
	        admin,
	        "EXPLAIN SELECT * FROM saga_timeline WHERE saga_id = '" SAGA_ID(01) "'"
	                                                                            " ORDER BY seq",
	        plan, sizeof(plan));
	cr_assert(strstr(plan, "saga_transition_pkey") != NULL, "%s", plan);
	PQfinish(admin);
}

Test(operator_views, the_operator_reads_every_view_and_nothing_else)
{
	char user[96];
	char password[96];
	char sql[256];
	PGconn *op;

	q("%s", participant_ledger_sql);
	add_saga(SAGA_ID(01), "order", 1, "failed", "1 minute", "1 minute");
	create_login("sagad_operator", user, sizeof(user), password, sizeof(password));
	op = connect_as(user, password);

	for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
		snprintf(sql, sizeof(sql), "SELECT * FROM %s", views[i]);
		expect_ok(op, sql);
	}
	/* The views read the tables with their owner's rights: the operator sees the data. */
	query_all(op, "SELECT saga_id, reason FROM saga_stuck", out, sizeof(out));
	cr_assert_str_eq(out, SAGA_ID(01) "|failed: needs an operator (retry or resolve)\n");
	expect_ok(op, "SELECT name, value FROM sagad_setting");
	expect_ok(op, "SELECT version FROM sagad_migrations");

	expect_denied(op, "SELECT * FROM saga_instance",
	              "permission denied for table saga_instance");
	expect_denied(op, "SELECT input FROM saga_instance", "permission denied");
	expect_denied(op, "SELECT * FROM saga_step", "permission denied for table saga_step");
	expect_denied(op, "SELECT * FROM saga_transition", "permission denied");
	expect_denied(op, "SELECT payload FROM saga_dead_letter", "permission denied");
	expect_denied(op, "UPDATE saga_instance SET state = 'resolved'",
	              "permission denied for table saga_instance");
	expect_denied(op,
	              "INSERT INTO saga_dead_letter (source_subject, reason, error_class)"
	              " VALUES ('x', 'y', 'z')",
	              "permission denied for table saga_dead_letter");
	expect_denied(op, "UPDATE sagad_setting SET value = '1 year'",
	              "permission denied for table sagad_setting");
	expect_denied(op, "DELETE FROM saga_outbox", "permission denied for table saga_outbox");
	expect_denied(op, "SELECT * FROM participant_ledger",
	              "permission denied for table participant_ledger");
	expect_denied(op, "CREATE TABLE mine (x int)", "permission denied for schema");
	PQfinish(op);
}

Test(operator_views, the_service_writes_sagas_but_cannot_rewrite_history_or_run_ddl)
{
	char user[96];
	char password[96];
	char sql[256];
	PGconn *svc;

	create_login("sagad_service", user, sizeof(user), password, sizeof(password));
	svc = connect_as(user, password);

	/* What sagad does, in the forms it does it. */
	expect_ok(svc, "INSERT INTO saga_definition (name, version, body, body_hash)"
	               " VALUES ('ship', 1, '\\x00', 'h')");
	expect_ok(svc,
	          "INSERT INTO saga_instance (id, correlation_id, definition_name,"
	          " definition_version, state, input) VALUES ('" SAGA_ID(01) "', 'c1', 'ship',"
	                                                                     " 1, 'running', '')");
	expect_ok(svc, "SELECT * FROM saga_instance WHERE id = '" SAGA_ID(01) "' FOR UPDATE");
	expect_ok(svc, "UPDATE saga_instance SET state = 'completed', seq = 1, updated_at = now()"
	               " WHERE id = '" SAGA_ID(01) "'");
	expect_ok(svc,
	          "INSERT INTO saga_step (saga_id, step_index, name, state) VALUES ('" SAGA_ID(
	                  01) "', 0, 's', 'running') ON CONFLICT (saga_id, step_index) DO UPDATE"
	                      " SET state = EXCLUDED.state, started_at ="
	                      " COALESCE(saga_step.started_at, now())");
	expect_ok(svc, "INSERT INTO saga_step (saga_id, step_index, name, state) VALUES ('" SAGA_ID(
	                       01) "', 0, 's', 'succeeded') ON CONFLICT (saga_id, step_index) DO"
	                           " UPDATE SET state = EXCLUDED.state");
	expect_ok(svc, "INSERT INTO saga_transition (saga_id, seq, correlation_id, event, to_state)"
	               " VALUES ('" SAGA_ID(01) "', 1, 'c1', 'start', 'running')");
	expect_ok(svc, "INSERT INTO saga_outbox (subject, msg_id, content_type, payload)"
	               " VALUES ('s', 'm', 'x', '')");
	expect_ok(svc, "DELETE FROM saga_outbox WHERE id IN (SELECT id FROM saga_outbox ORDER BY id"
	               " LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING id");
	expect_ok(svc, "INSERT INTO saga_dead_letter (source_subject, source_key, reason,"
	               " error_class) VALUES ('s', 'k', 'r', 'c') ON CONFLICT (source_key)"
	               " WHERE source_key IS NOT NULL DO NOTHING");
	expect_ok(svc, "UPDATE saga_dead_letter SET status = 'diagnosed', updated_at = now()");
	expect_ok(svc, "SELECT * FROM sagad_migrations");
	expect_ok(svc, "SELECT * FROM sagad_setting");
	for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
		snprintf(sql, sizeof(sql), "SELECT * FROM %s", views[i]);
		expect_ok(svc, sql);
	}

	/* History stays as written: refused by privilege, before the trigger. */
	expect_denied(svc, "UPDATE saga_transition SET detail = 'rewritten'",
	              "permission denied for table saga_transition");
	expect_denied(svc, "DELETE FROM saga_transition",
	              "permission denied for table saga_transition");
	expect_denied(svc, "UPDATE saga_definition SET body = '\\x01'",
	              "permission denied for table saga_definition");
	expect_denied(svc, "DELETE FROM saga_instance",
	              "permission denied for table saga_instance");
	expect_denied(svc, "UPDATE sagad_setting SET value = '1 second'",
	              "permission denied for table sagad_setting");
	expect_denied(svc, "INSERT INTO sagad_migrations VALUES (9999, 'x', 'y')",
	              "permission denied for table sagad_migrations");
	/* No DDL. */
	expect_denied(svc, "CREATE TABLE mine (x int)", "permission denied for schema");
	expect_denied(svc, "DROP TABLE saga_outbox", "must be owner of table saga_outbox");
	expect_denied(svc, "TRUNCATE saga_transition",
	              "permission denied for table saga_transition");
	expect_denied(svc, "ALTER TABLE saga_instance ADD COLUMN x int",
	              "must be owner of table saga_instance");
	expect_denied(svc, "CREATE INDEX ON saga_instance (state)",
	              "must be owner of table saga_instance");
	expect_denied(svc, "CREATE OR REPLACE VIEW saga_outbox_lag AS SELECT 1 AS unsent",
	              "permission denied for schema");
	cr_assert_str_eq(q("SELECT count(*) FROM saga_transition"), "1");
	PQfinish(svc);
}

/* The order saga with short timeouts and few compensation attempts. */
static const char order_yaml[] =
        "name: order\n"
        "steps:\n"
        "  - name: reserve_stock\n"
        "    action: stock.reserve\n"
        "    compensation: stock.release\n"
        "    timeout: 2s\n"
        "    retry: {max_attempts: 5, initial_backoff: 20ms, max_backoff: 100ms}\n"
        "    compensation_retry: {max_attempts: 2, initial_backoff: 20ms, max_backoff: 50ms}\n"
        "  - name: charge_card\n"
        "    action: payments.charge\n"
        "    compensation: payments.refund\n"
        "    timeout: 2s\n"
        "    retry: {max_attempts: 5, initial_backoff: 20ms, max_backoff: 100ms}\n"
        "  - name: ship\n"
        "    action: shipping.ship\n"
        "    timeout: 2s\n"
        "    retry: {max_attempts: 5, initial_backoff: 20ms, max_backoff: 100ms}\n";

Test(operator_views, sagad_runs_sagas_end_to_end_as_a_service_login)
{
	char user[96];
	char password[96];
	char url_env[1200];
	const char *sagad_env[] = {url_env, NULL};
	const char *const payments[] = {"--fail-rate=0.3", "--retryable-rate=0.2", NULL};
	const char *const stock[] = {"--fail-compensation-rate=1", NULL};
	long completed, compensated, failed;

	create_login("sagad_service", user, sizeof(user), password, sizeof(password));
	snprintf(url_env, sizeof(url_env), "SAGAD_DATABASE_URL=");
	conninfo_as(url_env + strlen(url_env), sizeof(url_env) - strlen(url_env), user, password,
	            NULL);

	/* Migrations, streams and participants as the superuser; sagad as the service. */
	flow_setup(&fl, "t_ops_e2e");
	flow_used = 1;
	flow_define(&fl, order_yaml);
	flow_start_sagad(&fl, sagad_env);
	flow_start_participant(&fl, "stock", stock);
	flow_start_participant(&fl, "payments", payments);
	flow_start_participant(&fl, "shipping", NULL);
	for (int i = 0; i < 20; i++) {
		struct start_answer a;
		char input[64];

		snprintf(input, sizeof(input), "{\"order\":%d}", i);
		cr_assert_eq(flow_start_saga(&fl, "order", input, NULL, &a), STATUS_OK);
		cr_assert_eq(a.status, START_ACCEPTED, "start %d: %s", i, a.reason);
	}
	if (!flow_wait_settled(&fl, 20, 60000)) {
		flow_dump_logs(&fl);
		cr_assert_fail("sagas did not settle");
	}
	completed =
	        flow_sql_long(&fl, "SELECT count(*) FROM saga_instance WHERE state = 'completed'");
	compensated = flow_sql_long(&fl, "SELECT count(*) FROM saga_instance"
	                                 " WHERE state = 'compensated'");
	failed = flow_sql_long(&fl, "SELECT count(*) FROM saga_instance WHERE state = 'failed'");
	cr_assert_eq(completed + compensated + failed, 20);
	cr_assert_gt(completed, 0);
	/* A refund that cannot happen leaves the saga failed with a dead letter, written by sagad. */
	cr_assert_gt(failed, 0, "30%% of charges fail and every release fails");
	cr_assert_eq(flow_sql_long(&fl, "SELECT count(*) FROM saga_dead_letter"), failed);
	cr_assert_eq(flow_sql_long(&fl, "SELECT count(*) FROM saga_stuck"), failed);
	cr_assert_eq(flow_sql_long(&fl, "SELECT sum(letters) FROM saga_dead_letter_groups"),
	             failed);
	for (int i = 0; i < 50 && flow_sql_long(&fl, "SELECT unsent FROM saga_outbox_lag") > 0; i++)
		usleep(100 * 1000);
	cr_assert_eq(flow_sql_long(&fl, "SELECT unsent FROM saga_outbox_lag"), 0);
	/* And it really was the service login that did the work. */
	cr_assert_gt(flow_sql_long(&fl, sql_of("SELECT count(*) FROM pg_stat_activity"
	                                       " WHERE usename = '%s'",
	                                       user)),
	             0, "sagad is not connected as %s", user);
}

/* A copy of the migrations plus one more, as a later release would bring. */
static void
migrations_plus(char *dir, size_t dirlen, const char *name, const char *sql)
{
	char cmd[2048];
	char path[1024];
	FILE *f;

	snprintf(dir, dirlen, "/tmp/%s_migrations", schema);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s' && cp '%s'/migrations/*.sql '%s'/",
	         dir, dir, harness_bin("SAGAD_SOURCE_ROOT"), dir);
	cr_assert_eq(system(cmd), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(sql, f);
	fclose(f);
}

Test(operator_views, an_owner_login_runs_a_later_migration_that_alters_the_tables)
{
	char user[96];
	char password[96];
	char url_env[1200];
	char dir_env[600];
	char dir[512];
	const char *env[] = {url_env, dir_env, NULL};

	create_login("sagad_owner", user, sizeof(user), password, sizeof(password));
	snprintf(url_env, sizeof(url_env), "SAGAD_DATABASE_URL=");
	conninfo_as(url_env + strlen(url_env), sizeof(url_env) - strlen(url_env), user, password,
	            "-c role=sagad_owner");
	migrations_plus(dir, sizeof(dir), "9401_owner_extra.sql",
	                "ALTER TABLE saga_instance ADD COLUMN owner_test integer;\n"
	                "CREATE TABLE owner_extra (x integer);\n"
	                "CREATE OR REPLACE VIEW saga_outbox_lag AS SELECT count(*) AS unsent,"
	                " min(created_at) AS oldest_created_at, now() - min(created_at) AS"
	                " oldest_age FROM saga_outbox;\n");
	snprintf(dir_env, sizeof(dir_env), "SAGAD_MIGRATIONS_DIR=%s", dir);

	cr_assert_eq(migrate_with(env, out, sizeof(out)), 0, "migrate as an owner member:\n%s",
	             out);
	cr_assert(strstr(out, "applied migration 9401_owner_extra.sql") != NULL, "%s", out);
	cr_assert_str_eq(q("SELECT tableowner FROM pg_tables WHERE schemaname = current_schema()"
	                   " AND tablename = 'owner_extra'"),
	                 "sagad_owner");
	cr_assert_str_eq(
	        q("SELECT owner FROM sagad_migrations m, LATERAL (SELECT tableowner AS owner"
	          " FROM pg_tables WHERE schemaname = current_schema()"
	          " AND tablename = 'saga_instance') o WHERE m.version = 9401"),
	        "sagad_owner");
	/* Running it again is a no-op, also as the owner. */
	cr_assert_eq(migrate_with(env, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "0 applied") != NULL, "%s", out);
	snprintf(url_env, sizeof(url_env), "rm -rf '%s'", dir);
	cr_assert_eq(system(url_env), 0);
}

Test(operator_views, every_table_view_and_sequence_is_granted_to_its_roles)
{
	q("%s", participant_ledger_sql);
	/* sagad needs every table and sequence of its schema; participants' tables are not its. */
	cr_assert_str_eq(
	        q("SELECT coalesce(string_agg(c.relname, ', ' ORDER BY c.relname), '')"
	          " FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
	          " AND c.relkind IN ('r', 'p', 'v', 'S') AND c.relname NOT LIKE 'participant\\_%%'"
	          " AND NOT CASE WHEN c.relkind = 'S'"
	          " THEN has_sequence_privilege('sagad_service', c.oid, 'USAGE')"
	          " ELSE has_table_privilege('sagad_service', c.oid, 'SELECT') END"),
	        "",
	        "objects sagad_service may not use: every migration that adds a table or sequence "
	        "grants it (GRANT SELECT, INSERT ... TO sagad_service; GRANT USAGE ON SEQUENCE ... "
	        "TO sagad_service), see docs/operators.md");
	cr_assert_str_eq(
	        q("SELECT coalesce(string_agg(c.relname, ', ' ORDER BY c.relname), '')"
	          " FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
	          " AND c.relkind = 'v'"
	          " AND NOT has_table_privilege('sagad_operator', c.oid, 'SELECT')"),
	        "", "views sagad_operator may not read: GRANT SELECT ON <view> TO sagad_operator");
	/*
	 * The operator reads saga data only through the views: no privilege at all
	 * on a saga_* or participant_* table or sequence (sagad_* tables are
	 * sagad's own bookkeeping: settings, migrations, audit), and it may write
	 * nothing anywhere.
	 */
	cr_assert_str_eq(
	        q("SELECT coalesce(string_agg(c.relname, ', ' ORDER BY c.relname), '')"
	          " FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
	          " AND (c.relname LIKE 'saga\\_%%' OR c.relname LIKE 'participant\\_%%')"
	          " AND CASE c.relkind WHEN 'S' THEN has_sequence_privilege('sagad_operator', "
	          "c.oid,"
	          " 'USAGE, SELECT, UPDATE') WHEN 'r' THEN has_table_privilege('sagad_operator',"
	          " c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')"
	          " OR has_any_column_privilege('sagad_operator', c.oid, 'SELECT') END"),
	        "");
	cr_assert_str_eq(
	        q("SELECT coalesce(string_agg(c.relname, ', ' ORDER BY c.relname), '')"
	          " FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
	          " AND c.relkind IN ('r', 'p', 'v') AND has_table_privilege('sagad_operator',"
	          " c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')"),
	        "");
	/* Nobody but the owner may write to views, create in the schema or truncate. */
	cr_assert_str_eq(
	        q("SELECT coalesce(string_agg(r || ':' || c.relname, ', '), '') FROM pg_class c,"
	          " unnest(ARRAY['sagad_service', 'sagad_operator']) r"
	          " WHERE c.relnamespace = current_schema()::regnamespace"
	          " AND c.relname NOT LIKE 'participant\\_%%'"
	          " AND ((c.relkind = 'v' AND has_table_privilege(r, c.oid, 'INSERT, UPDATE, "
	          "DELETE'))"
	          " OR (c.relkind IN ('r', 'p') AND has_table_privilege(r, c.oid,"
	          " 'TRUNCATE, REFERENCES, TRIGGER')))"),
	        "");
	cr_assert_str_eq(q("SELECT concat_ws('|', has_schema_privilege('sagad_service',"
	                   " current_schema(), 'CREATE'), has_schema_privilege('sagad_operator',"
	                   " current_schema(), 'CREATE'), has_schema_privilege('sagad_owner',"
	                   " current_schema(), 'CREATE'))"),
	                 "f|f|t");
	cr_assert_str_eq(q("SELECT string_agg(rolname || ':' || rolcanlogin, ',' ORDER BY rolname)"
	                   " FROM pg_roles WHERE rolname IN ('sagad_owner', 'sagad_service',"
	                   " 'sagad_operator')"),
	                 "sagad_operator:false,sagad_owner:false,sagad_service:false");
}

/* PostgreSQL access for sagas: locking and loading instances, batched writes, outbox, definitions. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "store.h"
#include "store_int.h"

#define TS_MS(c) "COALESCE((extract(epoch from " c ") * 1000)::bigint, 0)"

static enum status
ensure_prepared(struct store *s, char *err, size_t errlen)
{
	if (s->prepared)
		return STATUS_OK;
	for (int i = 0; i < STORE_T_COUNT; i++) {
		const struct store_batch_statement *stmt = &store_batch_statements[i];
		PGresult *res;

		if (stmt->planned_each_time)
			continue;
		res = PQprepare(s->conn, stmt->name, stmt->sql, stmt->n_params, NULL);

		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			enum status st = store_status_from_result(res, s->conn);

			store_set_err(err, errlen, stmt->name, PQerrorMessage(s->conn));
			PQclear(res);
			return st;
		}
		PQclear(res);
	}
	s->prepared = 1;
	return STATUS_OK;
}

enum status
store_begin(struct store *s, int64_t *now_ms, char *err, size_t errlen)
{
	PGresult *res;
	enum status st = ensure_prepared(s, err, errlen);

	if (st != STATUS_OK)
		return st;
	res = PQexec(s->conn, "BEGIN; SELECT (extract(epoch from now()) * 1000)::bigint");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "BEGIN", PQerrorMessage(s->conn));
		PQclear(res);
		store_rollback(s);
		return st;
	}
	*now_ms = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	s->queue_failed = 0;
	s->in_batch = 0;
	return STATUS_OK;
}

void
store_rollback(struct store *s)
{
	PGresult *res;

	if (s->in_pipeline) {
		/* Drain whatever is pending, then leave pipeline mode. */
		PQpipelineSync(s->conn);
		while ((res = PQgetResult(s->conn)) != NULL ||
		       PQpipelineStatus(s->conn) != PQ_PIPELINE_OFF) {
			if (res == NULL) {
				if (PQexitPipelineMode(s->conn) == 1)
					break;
				continue;
			}
			PQclear(res);
		}
		s->in_pipeline = 0;
	}
	s->in_batch = 0;
	PQclear(s->held);
	s->held = NULL;
	/* What this batch would have written never happened; nothing in the cache changed either. */
	store_unstage(s, 0);
	res = PQexec(s->conn, "ROLLBACK");
	PQclear(res);
}

/* Decode a bytea text value into a new buffer (NULL/empty -> empty). */
static enum status
unescape_bytes(const PGresult *res, int row, int col, struct bytes *out)
{
	size_t len = 0;
	unsigned char *raw;
	uint8_t *copy;

	out->data = NULL;
	out->len = 0;
	if (PQgetisnull(res, row, col))
		return STATUS_OK;
	raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, col), &len);
	if (raw == NULL)
		return STATUS_NOMEM;
	if (len > 0) {
		copy = malloc(len);
		if (copy == NULL) {
			PQfreemem(raw);
			return STATUS_NOMEM;
		}
		memcpy(copy, raw, len);
		out->data = copy;
		out->len = len;
	}
	PQfreemem(raw);
	return STATUS_OK;
}

static int
cmp_loaded(const void *a, const void *b)
{
	return strcmp(((const struct store_loaded *)a)->inst.id,
	              ((const struct store_loaded *)b)->inst.id);
}

/* Build the text form of a uuid[] literal: {id,id,...}. */
static char *
uuid_array(const char *const *ids, int n)
{
	size_t cap = (size_t)n * (SAGA_ID_LEN + 1) + 3;
	char *buf = malloc(cap);
	size_t pos = 0;

	if (buf == NULL)
		return NULL;
	buf[pos++] = '{';
	for (int i = 0; i < n; i++) {
		if (i > 0)
			buf[pos++] = ',';
		memcpy(buf + pos, ids[i], SAGA_ID_LEN);
		pos += SAGA_ID_LEN;
	}
	buf[pos++] = '}';
	buf[pos] = '\0';
	return buf;
}

void
store_loaded_free(struct store_loaded *rows, int n)
{
	for (int i = 0; rows != NULL && i < n; i++)
		saga_inst_release(&rows[i].inst);
	free(rows);
}

/*
 * Steps by saga id, one index probe per id: "saga_id = ANY(...)" lets the
 * planner pick a sequential scan of saga_step for a batch of ids (saga_id
 * alone is not unique), which grows with the table; the OFFSET 0 fence keeps
 * the lateral subquery a per-id lookup.
 */
#define STEPS_SQL                                                                                  \
	"SELECT saga_id::text, step_index, state, attempt, attempt_base, comp_attempt,"            \
	" comp_attempt_base, " TS_MS(                                                              \
	        "wake_at") ", COALESCE(completed_order, 0), uncertain,"                            \
	                   " output, COALESCE(last_error, '')"                                     \
	                   " FROM unnest($1::uuid[]) AS u(id) CROSS JOIN LATERAL"                  \
	                   " (SELECT * FROM saga_step WHERE saga_id = u.id"                        \
	                   " OFFSET 0) s"

#define SAGAS_SQL                                                                                  \
	"SELECT id::text, correlation_id, definition_name, definition_version, state, seq,"        \
	" completions, " TS_MS("created_at") ", " TS_MS("deadline_at") ", " TS_MS(                 \
	        "wake_at") ", input, COALESCE(traceparent, ''), COALESCE(last_error, '')"          \
	                   " FROM saga_instance "

#define SAGAS_BY_ID_SQL SAGAS_SQL "WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"

/* Fill the steps of rows (sorted by id) from a result of STEPS_SQL. */
static enum status
parse_steps(const PGresult *res, struct store_loaded *rows, int n, char *err, size_t errlen)
{
	for (int r = 0; r < PQntuples(res); r++) {
		struct store_loaded key;
		struct store_loaded *owner;
		struct step_inst *step;
		int idx = atoi(PQgetvalue(res, r, 1));

		snprintf(key.inst.id, sizeof(key.inst.id), "%s", PQgetvalue(res, r, 0));
		owner = bsearch(&key, rows, (size_t)n, sizeof(*rows), cmp_loaded);
		if (owner == NULL || idx < 0 || idx >= SAGA_MAX_STEPS)
			continue;
		step = &owner->inst.steps[idx];
		if (!step_state_parse(PQgetvalue(res, r, 2), &step->state)) {
			snprintf(err, errlen, "saga %s step %d: unknown state %s", key.inst.id, idx,
			         PQgetvalue(res, r, 2));
			return STATUS_DB;
		}
		step->attempt = (uint32_t)strtoul(PQgetvalue(res, r, 3), NULL, 10);
		step->attempt_base = (uint32_t)strtoul(PQgetvalue(res, r, 4), NULL, 10);
		step->comp_attempt = (uint32_t)strtoul(PQgetvalue(res, r, 5), NULL, 10);
		step->comp_attempt_base = (uint32_t)strtoul(PQgetvalue(res, r, 6), NULL, 10);
		step->wake_at_ms = strtoll(PQgetvalue(res, r, 7), NULL, 10);
		step->completed_order = atoi(PQgetvalue(res, r, 8));
		step->uncertain = PQgetvalue(res, r, 9)[0] == 't';
		if (unescape_bytes(res, r, 10, &step->output) != STATUS_OK) {
			snprintf(err, errlen, "out of memory");
			return STATUS_NOMEM;
		}
		snprintf(step->last_error, sizeof(step->last_error), "%s", PQgetvalue(res, r, 11));
	}
	return STATUS_OK;
}

static enum status
load_steps(struct store *s, struct store_loaded *rows, int n, const char *array, char *err,
           size_t errlen)
{
	const char *params[1] = {array};
	PGresult *res = PQexecParams(s->conn, STEPS_SQL, 1, NULL, params, NULL, NULL, 0);
	enum status st;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "loading steps", PQerrorMessage(s->conn));
	} else {
		st = parse_steps(res, rows, n, err, errlen);
	}
	PQclear(res);
	return st;
}

/* Read the sagas of a result of SAGAS_SQL into a new array sorted by id. */
static enum status
parse_sagas(const PGresult *res, struct store_loaded **out, int *n_out, char *err, size_t errlen)
{
	struct store_loaded *rows = NULL;
	int n = PQntuples(res);

	*out = NULL;
	*n_out = 0;
	if (n == 0)
		return STATUS_OK;
	rows = calloc((size_t)n, sizeof(*rows));
	if (rows == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	for (int r = 0; r < n; r++) {
		struct store_loaded *l = &rows[r];
		struct saga_inst *inst = &l->inst;

		snprintf(inst->id, sizeof(inst->id), "%s", PQgetvalue(res, r, 0));
		snprintf(inst->correlation_id, sizeof(inst->correlation_id), "%s",
		         PQgetvalue(res, r, 1));
		snprintf(l->def_name, sizeof(l->def_name), "%s", PQgetvalue(res, r, 2));
		l->def_version = (uint32_t)strtoul(PQgetvalue(res, r, 3), NULL, 10);
		if (!saga_state_parse(PQgetvalue(res, r, 4), &inst->state)) {
			snprintf(err, errlen, "saga %s: unknown state %s", inst->id,
			         PQgetvalue(res, r, 4));
			store_loaded_free(rows, n);
			return STATUS_DB;
		}
		inst->seq = atoi(PQgetvalue(res, r, 5));
		inst->completions = atoi(PQgetvalue(res, r, 6));
		inst->created_ms = strtoll(PQgetvalue(res, r, 7), NULL, 10);
		inst->deadline_at_ms = strtoll(PQgetvalue(res, r, 8), NULL, 10);
		inst->wake_at_ms = strtoll(PQgetvalue(res, r, 9), NULL, 10);
		if (unescape_bytes(res, r, 10, &inst->input) != STATUS_OK) {
			snprintf(err, errlen, "out of memory");
			store_loaded_free(rows, n);
			return STATUS_NOMEM;
		}
		snprintf(inst->traceparent, sizeof(inst->traceparent), "%s",
		         PQgetvalue(res, r, 11));
		snprintf(inst->last_error, sizeof(inst->last_error), "%s", PQgetvalue(res, r, 12));
	}
	qsort(rows, (size_t)n, sizeof(*rows), cmp_loaded);
	*out = rows;
	*n_out = n;
	return STATUS_OK;
}

enum status
store_load_due(struct store *s, int limit, int64_t hold_back_ms, struct store_loaded **out,
               int *n_out, char *err, size_t errlen)
{
	char limit_text[16], hold_text[24];
	const char *params[2] = {limit_text, hold_text};
	char *array = NULL;
	const char **ids = NULL;
	PGresult *res;
	struct store_loaded *rows = NULL;
	enum status st;
	int n = 0;

	*out = NULL;
	*n_out = 0;
	snprintf(limit_text, sizeof(limit_text), "%d", limit);
	snprintf(hold_text, sizeof(hold_text), "%lld", (long long)hold_back_ms);
	res = PQexecParams(s->conn,
	                   SAGAS_SQL
	                   "WHERE wake_at <= now() - $2::bigint * interval '1 millisecond'"
	                   " ORDER BY wake_at LIMIT $1::int FOR UPDATE SKIP LOCKED",
	                   2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "loading due sagas", PQerrorMessage(s->conn));
		goto cleanup;
	}
	st = parse_sagas(res, &rows, &n, err, errlen);
	if (st != STATUS_OK || n == 0)
		goto cleanup;
	ids = malloc((size_t)n * sizeof(*ids));
	if (ids != NULL) {
		for (int r = 0; r < n; r++)
			ids[r] = rows[r].inst.id;
		array = uuid_array(ids, n);
	}
	if (array == NULL) {
		snprintf(err, errlen, "out of memory");
		st = STATUS_NOMEM;
		goto cleanup;
	}
	st = load_steps(s, rows, n, array, err, errlen);
cleanup:
	PQclear(res);
	free(ids);
	free(array);
	if (st != STATUS_OK) {
		store_loaded_free(rows, n);
		return st;
	}
	*out = rows;
	*n_out = n;
	return STATUS_OK;
}

/* store_begin_load without the cache: every saga read (and locked) from the database. */
static enum status
begin_load_db(struct store *s, const char *const *ids, int n_ids, int64_t *now_ms,
              struct store_loaded **out, int *n_out, char *err, size_t errlen)
{
	static const char *const sql[4] = {
	        "BEGIN",
	        "SELECT (extract(epoch from now()) * 1000)::bigint",
	        SAGAS_BY_ID_SQL,
	        STEPS_SQL,
	};
	PGresult *res[4] = {NULL, NULL, NULL, NULL};
	struct store_loaded *rows = NULL;
	const char *params[1];
	char *array;
	enum status st = ensure_prepared(s, err, errlen);
	int n = 0, got = 0;

	*out = NULL;
	*n_out = 0;
	if (st != STATUS_OK)
		return st;
	if (n_ids == 0)
		return store_begin(s, now_ms, err, errlen);
	array = uuid_array(ids, n_ids);
	if (array == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	params[0] = array;
	/* One round trip: begin, clock, lock and read the sagas, then their steps. */
	if (PQenterPipelineMode(s->conn) != 1) {
		store_set_err(err, errlen, "entering pipeline mode", PQerrorMessage(s->conn));
		free(array);
		return STATUS_DB_RETRY;
	}
	s->in_pipeline = 1;
	for (int q = 0; q < 4 && st == STATUS_OK; q++) {
		if (PQsendQueryParams(s->conn, sql[q], q >= 2 ? 1 : 0, NULL, q >= 2 ? params : NULL,
		                      NULL, NULL, 0) != 1) {
			store_set_err(err, errlen, "loading sagas", PQerrorMessage(s->conn));
			st = STATUS_DB_RETRY;
		}
	}
	if (st == STATUS_OK && PQpipelineSync(s->conn) != 1) {
		store_set_err(err, errlen, "loading sagas", PQerrorMessage(s->conn));
		st = STATUS_DB_RETRY;
	}
	while (st == STATUS_OK) {
		PGresult *r = PQgetResult(s->conn);

		if (r == NULL) {
			if (PQstatus(s->conn) == CONNECTION_BAD) {
				store_set_err(err, errlen, "loading sagas",
				              PQerrorMessage(s->conn));
				st = STATUS_DB_RETRY;
			}
			continue;
		}
		if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			break;
		}
		if (got < 4)
			res[got++] = r;
		else
			PQclear(r);
	}
	for (int q = 0; q < 4 && st == STATUS_OK; q++) {
		ExecStatusType want = q == 0 ? PGRES_COMMAND_OK : PGRES_TUPLES_OK;

		if (res[q] == NULL || PQresultStatus(res[q]) != want) {
			st = res[q] != NULL ? store_status_from_result(res[q], s->conn)
			                    : STATUS_DB_RETRY;
			store_set_err(err, errlen, "loading sagas",
			              res[q] != NULL ? PQresultErrorMessage(res[q])
			                             : PQerrorMessage(s->conn));
		}
	}
	if (st == STATUS_OK) {
		PQexitPipelineMode(s->conn);
		s->in_pipeline = 0;
		s->queue_failed = 0;
		s->in_batch = 0;
		*now_ms = strtoll(PQgetvalue(res[1], 0, 0), NULL, 10);
		st = parse_sagas(res[2], &rows, &n, err, errlen);
	}
	if (st == STATUS_OK)
		st = parse_steps(res[3], rows, n, err, errlen);
	for (int q = 0; q < 4; q++)
		PQclear(res[q]);
	free(array);
	if (st != STATUS_OK) {
		store_loaded_free(rows, n);
		store_rollback(s);
		return st;
	}
	*out = rows;
	*n_out = n;
	return STATUS_OK;
}

enum status
store_begin_load(struct store *s, const char *const *ids, int n_ids, int64_t *now_ms,
                 struct store_loaded **out, int *n_out, char *err, size_t errlen)
{
	struct store_loaded *rows = NULL, *all;
	const char **miss;
	int n_miss = 0, n = 0;
	enum status st;

	if (s->cache == NULL || sagacache_count(s->cache) == 0) {
		metrics_add(M_SAGA_CACHE_MISSES, (uint64_t)n_ids);
		return begin_load_db(s, ids, n_ids, now_ms, out, n_out, err, errlen);
	}
	*out = NULL;
	*n_out = 0;
	miss = malloc((size_t)(n_ids > 0 ? n_ids : 1) * sizeof(*miss));
	if (miss == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	for (int i = 0; i < n_ids; i++) {
		if (!sagacache_has(s->cache, ids[i]))
			miss[n_miss++] = ids[i];
	}
	st = begin_load_db(s, miss, n_miss, now_ms, &rows, &n, err, errlen);
	free(miss);
	if (st != STATUS_OK)
		return st;
	metrics_add(M_SAGA_CACHE_MISSES, (uint64_t)n_miss);
	metrics_add(M_SAGA_CACHE_HITS, (uint64_t)(n_ids - n_miss));
	all = realloc(rows, (size_t)(n_ids > 0 ? n + n_ids - n_miss : 1) * sizeof(*all));
	if (all == NULL) {
		st = STATUS_NOMEM;
		goto fail;
	}
	rows = all;
	/* The others as our last commit left them: their update checks that nobody changed them. */
	for (int i = 0; i < n_ids; i++) {
		struct store_loaded *l = &rows[n];

		if (!sagacache_has(s->cache, ids[i]))
			continue;
		memset(l, 0, sizeof(*l));
		if (!sagacache_get(s->cache, ids[i], &l->inst, l->def_name, &l->def_version,
		                   l->version)) {
			st = STATUS_NOMEM;
			goto fail;
		}
		n++;
	}
	qsort(rows, (size_t)n, sizeof(*rows), cmp_loaded);
	*out = rows;
	*n_out = n;
	return STATUS_OK;
fail:
	snprintf(err, errlen, "out of memory");
	store_loaded_free(rows, n);
	store_rollback(s);
	return st;
}

enum status
store_find_starts(struct store *s, const char *def_name, const char *const *keys, int n_keys,
                  struct store_existing_start **out, int *n_out, char *err, size_t errlen)
{
	size_t cap = 3;
	char *array;
	size_t pos = 0;
	const char *params[2];
	PGresult *res;
	struct store_existing_start *found = NULL;
	enum status st = STATUS_OK;
	int n;

	*out = NULL;
	*n_out = 0;
	if (n_keys == 0)
		return STATUS_OK;
	/* Keys are allow-listed ([A-Za-z0-9._:/+=@-]); quote each as an array element. */
	for (int i = 0; i < n_keys; i++)
		cap += strlen(keys[i]) + 3;
	array = malloc(cap);
	if (array == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	array[pos++] = '{';
	for (int i = 0; i < n_keys; i++)
		pos += (size_t)snprintf(array + pos, cap - pos, "%s\"%s\"", i > 0 ? "," : "",
		                        keys[i]);
	array[pos++] = '}';
	array[pos] = '\0';
	params[0] = def_name;
	params[1] = array;
	res = PQexecParams(
	        s->conn,
	        "SELECT idempotency_key, id::text, correlation_id, definition_version, " TS_MS(
	                "created_at") " FROM saga_instance WHERE definition_name = $1"
	                              " AND idempotency_key = ANY($2::text[])",
	        2, NULL, params, NULL, NULL, 0);
	free(array);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "finding starts", PQerrorMessage(s->conn));
		goto cleanup;
	}
	n = PQntuples(res);
	if (n > 0) {
		found = calloc((size_t)n, sizeof(*found));
		if (found == NULL) {
			snprintf(err, errlen, "out of memory");
			st = STATUS_NOMEM;
			goto cleanup;
		}
	}
	for (int r = 0; r < n; r++) {
		snprintf(found[r].key, sizeof(found[r].key), "%s", PQgetvalue(res, r, 0));
		snprintf(found[r].saga_id, sizeof(found[r].saga_id), "%s", PQgetvalue(res, r, 1));
		snprintf(found[r].correlation_id, sizeof(found[r].correlation_id), "%s",
		         PQgetvalue(res, r, 2));
		found[r].version = (uint32_t)strtoul(PQgetvalue(res, r, 3), NULL, 10);
		found[r].created_ms = strtoll(PQgetvalue(res, r, 4), NULL, 10);
	}
	*out = found;
	*n_out = n;
cleanup:
	PQclear(res);
	return st;
}

void
store_outbox_rows(const PGresult *res, struct store_outbox_row *out, int *n)
{
	/* Binary results: text columns are their raw bytes, NUL-terminated by libpq. */
	for (int r = 0; r < PQntuples(res); r++) {
		struct store_outbox_row *o = &out[(*n)++];

		o->id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
		o->subject = PQgetvalue(res, r, 1);
		o->msg_id = PQgetvalue(res, r, 2);
		o->content_type = PQgetvalue(res, r, 3);
		o->saga_id = PQgetvalue(res, r, 4);
		o->correlation_id = PQgetvalue(res, r, 5);
		o->step = PQgetvalue(res, r, 6);
		o->attempt = PQgetvalue(res, r, 7);
		o->traceparent = PQgetvalue(res, r, 8);
		o->payload.data = (uint8_t *)PQgetvalue(res, r, 9);
		o->payload.len = (size_t)PQgetlength(res, r, 9);
	}
}

enum status
store_outbox_take(struct store *s, int limit, int64_t min_age_ms, struct store_outbox_row **rows,
                  int *n_rows, char *err, size_t errlen)
{
	char limit_text[16], age_text[24];
	const char *params[2] = {limit_text, age_text};
	struct store_outbox_row *out = NULL;
	PGresult *res;
	enum status st;
	int64_t now_ms;
	int n = 0;

	*rows = NULL;
	*n_rows = 0;
	st = store_begin(s, &now_ms, err, errlen);
	if (st != STATUS_OK)
		return st;
	/* Losing this delete in a crash only re-publishes rows JetStream dedupes by id. */
	st = store_exec(s, "SET LOCAL synchronous_commit = off", err, errlen);
	if (st != STATUS_OK) {
		store_rollback(s);
		return st;
	}
	snprintf(limit_text, sizeof(limit_text), "%d", limit);
	snprintf(age_text, sizeof(age_text), "%lld", (long long)min_age_ms);
	res = PQexecParams(s->conn,
	                   "DELETE FROM saga_outbox WHERE id IN (SELECT id FROM saga_outbox"
	                   " WHERE created_at <= now() - $2::bigint * interval '1 millisecond'"
	                   " ORDER BY id LIMIT $1::int FOR UPDATE SKIP LOCKED)"
	                   " RETURNING " STORE_OUTBOX_COLUMNS,
	                   2, NULL, params, NULL, NULL, 1);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "taking outbox rows", PQerrorMessage(s->conn));
		PQclear(res);
		store_rollback(s);
		return st;
	}
	if (PQntuples(res) > 0) {
		out = calloc((size_t)PQntuples(res), sizeof(*out));
		if (out == NULL) {
			PQclear(res);
			store_rollback(s);
			snprintf(err, errlen, "out of memory");
			return STATUS_NOMEM;
		}
		store_outbox_rows(res, out, &n);
	}
	s->held = res;
	*rows = out;
	*n_rows = n;
	return STATUS_OK;
}

enum status
store_outbox_delete(struct store *s, const int64_t *ids, int n, char *err, size_t errlen)
{
	/* Ids are numbers: the list goes into the text of one simple query (one round trip). */
	static const char head[] = "BEGIN; SET LOCAL synchronous_commit = off;"
	                           " DELETE FROM saga_outbox WHERE id = ANY('{";
	static const char tail[] = "}'::bigint[]); COMMIT";
	size_t cap = sizeof(head) + sizeof(tail) + (size_t)n * 21;
	char *sql;
	size_t len;
	enum status st;

	if (n <= 0)
		return STATUS_OK;
	sql = malloc(cap);
	if (sql == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	memcpy(sql, head, sizeof(head) - 1);
	len = sizeof(head) - 1;
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(sql + len, cap - len, "%s%lld", i > 0 ? "," : "",
		                        (long long)ids[i]);
	memcpy(sql + len, tail, sizeof(tail));
	st = store_exec(s, sql, err, errlen);
	free(sql);
	if (st != STATUS_OK) {
		PGresult *res = PQexec(s->conn, "ROLLBACK");

		PQclear(res);
	}
	return st;
}

enum status
store_outbox_done(struct store *s, int publish_ok, char *err, size_t errlen)
{
	enum status st = STATUS_OK;

	if (publish_ok) {
		st = store_commit(s, err, errlen); /* with the dead letters queued, if any */
	} else {
		store_rollback(s);
	}
	PQclear(s->held);
	s->held = NULL;
	return st;
}

enum status
store_count_in_flight(struct store *s, int64_t *count, char *err, size_t errlen)
{
	PGresult *res = PQexec(s->conn, "SELECT count(*) FROM saga_instance"
	                                " WHERE state IN ('running', 'compensating')");
	enum status st = STATUS_OK;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "counting sagas in flight", PQerrorMessage(s->conn));
	} else {
		*count = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	}
	PQclear(res);
	return st;
}

enum status
store_define(struct store *s, const struct saga_def *def, struct bytes body, const char *hash,
             const char *source, uint32_t *version, int *created, char *err, size_t errlen)
{
	const char *p1[1] = {def->name};
	PGresult *res = NULL;
	enum status st;
	uint32_t latest = 0;
	char next[16];

	st = store_exec(s, "BEGIN", err, errlen);
	if (st != STATUS_OK)
		return st;
	res = PQexecParams(s->conn, "SELECT pg_advisory_xact_lock(hashtext('sagad.define.' || $1))",
	                   1, NULL, p1, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		goto db_error;
	PQclear(res);
	res = PQexecParams(s->conn,
	                   "SELECT version, body_hash FROM saga_definition WHERE name = $1"
	                   " ORDER BY version DESC LIMIT 1",
	                   1, NULL, p1, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		goto db_error;
	if (PQntuples(res) == 1) {
		latest = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
		if (strcmp(PQgetvalue(res, 0, 1), hash) == 0) {
			PQclear(res);
			*version = latest;
			*created = 0;
			return store_exec(s, "COMMIT", err, errlen);
		}
	}
	PQclear(res);
	snprintf(next, sizeof(next), "%u", latest + 1);
	{
		const char *v[5] = {def->name, next, (const char *)body.data, hash, source};
		int len[5] = {0, 0, (int)body.len, 0, 0};
		int fmt[5] = {0, 0, 1, 0, 0};

		res = PQexecParams(
		        s->conn,
		        "INSERT INTO saga_definition (name, version, body, body_hash, source)"
		        " VALUES ($1, $2::int, $3::bytea, $4, $5)",
		        5, NULL, v, len, fmt, 0);
	}
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		goto db_error;
	PQclear(res);
	st = store_exec(s, "COMMIT", err, errlen);
	if (st == STATUS_OK) {
		*version = latest + 1;
		*created = 1;
	}
	return st;
db_error:
	st = store_status_from_result(res, s->conn);
	store_set_err(err, errlen, "registering definition", PQerrorMessage(s->conn));
	PQclear(res);
	store_rollback(s);
	return st;
}

enum status
store_definition_get(struct store *s, const char *name, uint32_t version, struct bytes *body,
                     uint32_t *found_version, char *err, size_t errlen)
{
	char vtext[16];
	const char *params[2] = {name, vtext};
	PGresult *res;
	enum status st = STATUS_OK;

	snprintf(vtext, sizeof(vtext), "%u", version);
	res = PQexecParams(s->conn,
	                   "SELECT version, body FROM saga_definition WHERE name = $1"
	                   " AND ($2::int = 0 OR version = $2::int) ORDER BY version DESC LIMIT 1",
	                   2, NULL, params, NULL, NULL, 1);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "reading definition", PQerrorMessage(s->conn));
		goto cleanup;
	}
	if (PQntuples(res) == 0) {
		st = STATUS_NOT_FOUND;
		goto cleanup;
	}
	{
		/* Binary result: version is a 4-byte big-endian integer. */
		const unsigned char *v = (const unsigned char *)PQgetvalue(res, 0, 0);
		size_t len = (size_t)PQgetlength(res, 0, 1);

		*found_version = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 |
		                 (uint32_t)v[3];
		body->data = malloc(len > 0 ? len : 1);
		if (body->data == NULL) {
			snprintf(err, errlen, "out of memory");
			st = STATUS_NOMEM;
			goto cleanup;
		}
		memcpy(body->data, PQgetvalue(res, 0, 1), len);
		body->len = len;
	}
cleanup:
	PQclear(res);
	return st;
}

enum status
store_read_gauges(struct store *s, struct store_gauges *g, char *err, size_t errlen)
{
	PGresult *res = PQexec(
	        s->conn, "SELECT (SELECT count(*) FROM saga_instance WHERE state = 'running'),"
	                 " (SELECT count(*) FROM saga_instance WHERE state = 'compensating'),"
	                 " (SELECT count(*) FROM saga_instance WHERE state = 'failed'),"
	                 " (SELECT count(*) FROM saga_outbox),"
	                 " COALESCE((SELECT extract(epoch FROM now() - min(created_at)) FROM "
	                 "saga_outbox), 0)");
	enum status st = STATUS_OK;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "reading gauges", PQerrorMessage(s->conn));
	} else {
		g->running = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		g->compensating = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		g->failed = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
		g->outbox_rows = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
		g->outbox_oldest_s = strtod(PQgetvalue(res, 0, 4), NULL);
	}
	PQclear(res);
	return st;
}

enum status
store_saga_json(struct store *s, const char *saga_id, char **json, char *err, size_t errlen)
{
	const char *params[1] = {saga_id};
	PGresult *res = PQexecParams(
	        s->conn,
	        "SELECT jsonb_build_object("
	        " 'saga_id', i.id, 'correlation_id', i.correlation_id,"
	        " 'saga', i.definition_name, 'version', i.definition_version, 'state', i.state,"
	        " 'created_at', i.created_at, 'updated_at', i.updated_at, 'ended_at', i.ended_at,"
	        " 'deadline_at', i.deadline_at, 'next_wake_at', i.wake_at,"
	        " 'last_error', i.last_error, 'labels', i.labels,"
	        " 'input', encode(i.input, 'escape'),"
	        " 'steps', COALESCE((SELECT jsonb_agg(jsonb_build_object("
	        "   'index', st.step_index, 'name', st.name, 'state', st.state,"
	        "   'attempts', st.attempt, 'compensation_attempts', st.comp_attempt,"
	        "   'last_error', st.last_error, 'started_at', st.started_at,"
	        "   'completed_at', st.completed_at,"
	        "   'output', encode(st.output, 'escape')) ORDER BY st.step_index)"
	        "   FROM saga_step st WHERE st.saga_id = i.id), '[]'::jsonb),"
	        " 'timeline', COALESCE((SELECT jsonb_agg(jsonb_build_object("
	        "   'seq', t.seq, 'at', t.at, 'event', t.event, 'outcome', t.outcome,"
	        "   'from', t.from_state, 'to', t.to_state, 'step', t.step, 'phase', t.phase,"
	        "   'attempt', t.attempt, 'detail', t.detail) ORDER BY t.seq)"
	        "   FROM saga_transition t WHERE t.saga_id = i.id), '[]'::jsonb)"
	        ")::text FROM saga_instance i WHERE i.id = $1::uuid",
	        1, NULL, params, NULL, NULL, 0);
	enum status st = STATUS_OK;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "reading saga", PQerrorMessage(s->conn));
		goto cleanup;
	}
	if (PQntuples(res) == 0) {
		st = STATUS_NOT_FOUND;
		goto cleanup;
	}
	*json = strdup(PQgetvalue(res, 0, 0));
	if (*json == NULL) {
		snprintf(err, errlen, "out of memory");
		st = STATUS_NOMEM;
	}
cleanup:
	PQclear(res);
	return st;
}

/* PostgreSQL access for sagas: locking and loading instances, batched writes, outbox, definitions. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_int.h"

/* ms since the epoch -> timestamptz, 0 -> NULL (inside SQL text). */
#define MS_TS(p)                                                                                   \
	"CASE WHEN " p "::bigint = 0 THEN NULL ELSE to_timestamp(" p "::bigint / 1000.0) END"
#define TS_MS(c) "COALESCE((extract(epoch from " c ") * 1000)::bigint, 0)"

static const struct {
	const char *name; /* statement name */
	const char *sql;  /* text */
	int n_params;     /* parameter count */
} statements[] = {
        {"ins_saga",
         "INSERT INTO saga_instance (id, correlation_id, definition_name, definition_version, "
         "state,"
         " input, idempotency_key, labels, traceparent, seq, completions, wake_at, deadline_at,"
         " last_error, created_at, updated_at) VALUES ($1::uuid, $2, $3, $4::int, $5, $6::bytea,"
         " NULLIF($7, ''), COALESCE($8::jsonb, '{}'), NULLIF($9, ''), $10::int, $11::int, " MS_TS(
                 "$12") ", " MS_TS("$13") ", NULLIF($14, ''), now(), now())",
         14},
        {"upd_saga",
         "UPDATE saga_instance SET state = $2, seq = $3::int, completions = $4::int,"
         " wake_at = " MS_TS("$5") ", deadline_at = " MS_TS(
                 "$6") ","
                       " last_error = NULLIF($7, ''),"
                       /* Only progress moves updated_at: ignored replies must not hide a stuck saga. */
                       " updated_at = CASE WHEN $8::boolean THEN now() ELSE updated_at END,"
                       /* The first time a saga ends is when it ended. */
                       " ended_at = CASE WHEN $2 IN ('completed', 'compensated', 'resolved')"
                       " THEN COALESCE(ended_at, now()) END"
                       " WHERE id = $1::uuid",
         8},
        {"ups_step",
         "INSERT INTO saga_step (saga_id, step_index, name, state, attempt, attempt_base,"
         " comp_attempt, comp_attempt_base, wake_at, completed_order, uncertain, output, "
         "last_error,"
         " started_at, completed_at, updated_at) VALUES ($1::uuid, $2::smallint, $3, $4, $5::int,"
         " $6::int, $7::int, $8::int, " MS_TS(
                 "$9") ", NULLIF($10::int, 0), $11::boolean,"
                       " $12::bytea, NULLIF($13, ''),"
                       " CASE WHEN $5::int > 0 THEN now() END,"
                       " CASE WHEN $4 = 'succeeded' THEN now() END, now())"
                       " ON CONFLICT (saga_id, step_index) DO UPDATE SET"
                       " state = EXCLUDED.state, attempt = EXCLUDED.attempt,"
                       " attempt_base = EXCLUDED.attempt_base,"
                       " comp_attempt = EXCLUDED.comp_attempt,"
                       " comp_attempt_base = EXCLUDED.comp_attempt_base,"
                       " wake_at = EXCLUDED.wake_at,"
                       " completed_order = EXCLUDED.completed_order,"
                       " uncertain = EXCLUDED.uncertain,"
                       " output = COALESCE(EXCLUDED.output, saga_step.output),"
                       " last_error = EXCLUDED.last_error,"
                       " started_at = COALESCE(saga_step.started_at,"
                       " EXCLUDED.started_at),"
                       " completed_at = CASE WHEN EXCLUDED.state = 'succeeded'"
                       " AND saga_step.state <> 'succeeded' THEN now()"
                       " ELSE saga_step.completed_at END,"
                       " updated_at = now()",
         13},
        {"ins_transition",
         "INSERT INTO saga_transition (saga_id, seq, correlation_id, event, outcome, from_state,"
         " to_state, step, phase, attempt, detail) VALUES ($1::uuid, $2::int, $3, $4, $5,"
         " NULLIF($6, ''), $7, NULLIF($8, ''), NULLIF($9, ''), NULLIF($10::int, 0), NULLIF($11, "
         "''))",
         11},
        {"ins_outbox",
         "INSERT INTO saga_outbox (subject, msg_id, content_type, saga_id, correlation_id, step,"
         " attempt, traceparent, payload) VALUES ($1, $2, $3, NULLIF($4, '')::uuid, NULLIF($5, ''),"
         " NULLIF($6, ''), NULLIF($7::int, 0), NULLIF($8, ''), $9::bytea)",
         9},
        {"ins_dead_letter",
         "INSERT INTO saga_dead_letter (source_subject, source_key, headers, payload, reason,"
         " error_class, saga_id, correlation_id, step) VALUES ($1, $2, COALESCE($3::jsonb, '{}'),"
         " $4::bytea, $5, $6, NULLIF($7, '')::uuid, NULLIF($8, ''), NULLIF($9, ''))"
         " ON CONFLICT (source_key) WHERE source_key IS NOT NULL DO NOTHING",
         9},
};

#define N_STATEMENTS (sizeof(statements) / sizeof(statements[0]))

static enum status
ensure_prepared(struct store *s, char *err, size_t errlen)
{
	if (s->prepared)
		return STATUS_OK;
	for (size_t i = 0; i < N_STATEMENTS; i++) {
		PGresult *res = PQprepare(s->conn, statements[i].name, statements[i].sql,
		                          statements[i].n_params, NULL);

		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			enum status st = store_status_from_result(res, s->conn);

			store_set_err(err, errlen, statements[i].name, PQerrorMessage(s->conn));
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
	s->queued = 0;
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
	PQclear(s->held);
	s->held = NULL;
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

static enum status
load_steps(struct store *s, struct store_loaded *rows, int n, const char *array, char *err,
           size_t errlen)
{
	const char *params[1] = {array};
	PGresult *res = PQexecParams(
	        s->conn,
	        "SELECT saga_id::text, step_index, state, attempt, attempt_base, comp_attempt,"
	        " comp_attempt_base, " TS_MS(
	                "wake_at") ", COALESCE(completed_order, 0), uncertain,"
	                           " output, COALESCE(last_error, '')"
	                           " FROM saga_step WHERE saga_id = ANY($1::uuid[])",
	        1, NULL, params, NULL, NULL, 0);
	enum status st = STATUS_OK;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "loading steps", PQerrorMessage(s->conn));
		goto cleanup;
	}
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
			st = STATUS_DB;
			goto cleanup;
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
			st = STATUS_NOMEM;
			goto cleanup;
		}
		snprintf(step->last_error, sizeof(step->last_error), "%s", PQgetvalue(res, r, 11));
	}
cleanup:
	PQclear(res);
	return st;
}

enum status
store_load_sagas(struct store *s, const char *const *ids, int n_ids, int due_only, int limit,
                 struct store_loaded **out, int *n_out, char *err, size_t errlen)
{
	static const char *const columns =
	        "SELECT id::text, correlation_id, definition_name, definition_version, state, seq,"
	        " completions, " TS_MS("created_at") ", " TS_MS("deadline_at") ", " TS_MS(
	                "wake_at") ", input, COALESCE(traceparent, ''), COALESCE(last_error, '')"
	                           " FROM saga_instance ";
	char sql[1024];
	char limit_text[16];
	char *array = NULL;
	const char *params[1];
	PGresult *res = NULL;
	struct store_loaded *rows = NULL;
	enum status st = STATUS_OK;
	int n = 0;

	*out = NULL;
	*n_out = 0;
	if (due_only) {
		snprintf(limit_text, sizeof(limit_text), "%d", limit);
		snprintf(sql, sizeof(sql),
		         "%s WHERE wake_at <= now() ORDER BY wake_at LIMIT $1::int"
		         " FOR UPDATE SKIP LOCKED",
		         columns);
		params[0] = limit_text;
	} else {
		if (n_ids == 0)
			return STATUS_OK;
		array = uuid_array(ids, n_ids);
		if (array == NULL) {
			snprintf(err, errlen, "out of memory");
			return STATUS_NOMEM;
		}
		snprintf(sql, sizeof(sql), "%s WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
		         columns);
		params[0] = array;
	}
	res = PQexecParams(s->conn, sql, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "loading sagas", PQerrorMessage(s->conn));
		goto cleanup;
	}
	n = PQntuples(res);
	if (n == 0)
		goto cleanup;
	rows = calloc((size_t)n, sizeof(*rows));
	if (rows == NULL) {
		snprintf(err, errlen, "out of memory");
		st = STATUS_NOMEM;
		goto cleanup;
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
			st = STATUS_DB;
			goto cleanup;
		}
		inst->seq = atoi(PQgetvalue(res, r, 5));
		inst->completions = atoi(PQgetvalue(res, r, 6));
		inst->created_ms = strtoll(PQgetvalue(res, r, 7), NULL, 10);
		inst->deadline_at_ms = strtoll(PQgetvalue(res, r, 8), NULL, 10);
		inst->wake_at_ms = strtoll(PQgetvalue(res, r, 9), NULL, 10);
		if (unescape_bytes(res, r, 10, &inst->input) != STATUS_OK) {
			snprintf(err, errlen, "out of memory");
			st = STATUS_NOMEM;
			goto cleanup;
		}
		snprintf(inst->traceparent, sizeof(inst->traceparent), "%s",
		         PQgetvalue(res, r, 11));
		snprintf(inst->last_error, sizeof(inst->last_error), "%s", PQgetvalue(res, r, 12));
	}
	qsort(rows, (size_t)n, sizeof(*rows), cmp_loaded);
	if (array == NULL) {
		const char **loaded_ids = malloc((size_t)n * sizeof(*loaded_ids));

		if (loaded_ids == NULL) {
			snprintf(err, errlen, "out of memory");
			st = STATUS_NOMEM;
			goto cleanup;
		}
		for (int r = 0; r < n; r++)
			loaded_ids[r] = rows[r].inst.id;
		array = uuid_array(loaded_ids, n);
		free(loaded_ids);
		if (array == NULL) {
			snprintf(err, errlen, "out of memory");
			st = STATUS_NOMEM;
			goto cleanup;
		}
	}
	st = load_steps(s, rows, n, array, err, errlen);
cleanup:
	PQclear(res);
	free(array);
	if (st != STATUS_OK) {
		store_loaded_free(rows, n);
		return st;
	}
	*out = rows;
	*n_out = rows != NULL ? n : 0;
	return STATUS_OK;
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

enum status
store_pipeline_begin(struct store *s, char *err, size_t errlen)
{
	if (PQenterPipelineMode(s->conn) != 1) {
		store_set_err(err, errlen, "entering pipeline mode", PQerrorMessage(s->conn));
		return STATUS_DB;
	}
	s->in_pipeline = 1;
	s->queued = 0;
	s->queue_failed = 0;
	return STATUS_OK;
}

/* Send one prepared statement; the first failure is remembered for store_commit. */
static void
queue(struct store *s, const char *name, int n, const char *const *values, const int *lengths,
      const int *formats)
{
	if (s->queue_failed)
		return;
	if (PQsendQueryPrepared(s->conn, name, n, values, lengths, formats, 0) != 1) {
		s->queue_failed = 1;
		store_set_err(s->queue_err, sizeof(s->queue_err), name, PQerrorMessage(s->conn));
		return;
	}
	s->queued++;
}

static void
fmt_i64(char *buf, size_t cap, int64_t v)
{
	snprintf(buf, cap, "%" PRId64, v);
}

void
store_queue_insert_saga(struct store *s, const struct saga_def *def, const struct saga_inst *inst,
                        const char *idempotency_key, const char *labels_json)
{
	char version[16], seq[16], completions[16], wake[24], deadline[24];
	const char *v[14];
	int len[14] = {0};
	int fmt[14] = {0};

	snprintf(version, sizeof(version), "%u", def->version);
	snprintf(seq, sizeof(seq), "%d", inst->seq);
	snprintf(completions, sizeof(completions), "%d", inst->completions);
	fmt_i64(wake, sizeof(wake), inst->wake_at_ms);
	fmt_i64(deadline, sizeof(deadline), inst->deadline_at_ms);
	v[0] = inst->id;
	v[1] = inst->correlation_id;
	v[2] = def->name;
	v[3] = version;
	v[4] = saga_state_name(inst->state);
	v[5] = inst->input.data != NULL ? (const char *)inst->input.data : "";
	len[5] = (int)inst->input.len;
	fmt[5] = 1;
	v[6] = idempotency_key != NULL ? idempotency_key : "";
	v[7] = labels_json;
	v[8] = inst->traceparent;
	v[9] = seq;
	v[10] = completions;
	v[11] = wake;
	v[12] = deadline;
	v[13] = inst->last_error;
	queue(s, "ins_saga", 14, v, len, fmt);
}

void
store_queue_update_saga(struct store *s, const struct saga_inst *inst, int progressed)
{
	char seq[16], completions[16], wake[24], deadline[24];
	const char *v[8];

	snprintf(seq, sizeof(seq), "%d", inst->seq);
	snprintf(completions, sizeof(completions), "%d", inst->completions);
	fmt_i64(wake, sizeof(wake), inst->wake_at_ms);
	fmt_i64(deadline, sizeof(deadline), inst->deadline_at_ms);
	v[0] = inst->id;
	v[1] = saga_state_name(inst->state);
	v[2] = seq;
	v[3] = completions;
	v[4] = wake;
	v[5] = deadline;
	v[6] = inst->last_error;
	v[7] = progressed ? "true" : "false";
	queue(s, "upd_saga", 8, v, NULL, NULL);
}

void
store_queue_steps(struct store *s, const struct saga_def *def, struct saga_inst *inst)
{
	for (int i = 0; i < def->n_steps; i++) {
		struct step_inst *st = &inst->steps[i];
		char idx[8], attempt[16], base[16], comp[16], comp_base[16], wake[24], order[16];
		const char *v[13];
		int len[13] = {0};
		int fmt[13] = {0};

		if (!st->dirty)
			continue;
		snprintf(idx, sizeof(idx), "%d", i);
		snprintf(attempt, sizeof(attempt), "%u", st->attempt);
		snprintf(base, sizeof(base), "%u", st->attempt_base);
		snprintf(comp, sizeof(comp), "%u", st->comp_attempt);
		snprintf(comp_base, sizeof(comp_base), "%u", st->comp_attempt_base);
		fmt_i64(wake, sizeof(wake), st->wake_at_ms);
		snprintf(order, sizeof(order), "%d", st->completed_order);
		v[0] = inst->id;
		v[1] = idx;
		v[2] = def->steps[i].name;
		v[3] = step_state_name(st->state);
		v[4] = attempt;
		v[5] = base;
		v[6] = comp;
		v[7] = comp_base;
		v[8] = wake;
		v[9] = order;
		v[10] = st->uncertain ? "true" : "false";
		/* NULL keeps the stored output: it is written once, when the action succeeds. */
		v[11] = st->output.len > 0 ? (const char *)st->output.data : NULL;
		len[11] = (int)st->output.len;
		fmt[11] = 1;
		v[12] = st->last_error;
		queue(s, "ups_step", 13, v, len, fmt);
		st->dirty = false;
	}
}

void
store_queue_transition(struct store *s, const struct saga_def *def, const struct saga_inst *inst,
                       const struct plan *plan, const char *event_name)
{
	char seq[16], attempt[16];
	const char *v[11];

	snprintf(seq, sizeof(seq), "%d", plan->seq);
	snprintf(attempt, sizeof(attempt), "%u", plan->attempt);
	v[0] = inst->id;
	v[1] = seq;
	v[2] = inst->correlation_id;
	v[3] = event_name;
	v[4] = engine_verdict_name(plan->verdict);
	v[5] = plan->from_state != 0 ? saga_state_name((enum saga_state)plan->from_state) : "";
	v[6] = saga_state_name(plan->to_state);
	v[7] = plan->step >= 0 ? def->steps[plan->step].name : "";
	v[8] = plan->phase != 0 ? step_phase_name(plan->phase) : "";
	v[9] = attempt;
	v[10] = plan->detail;
	queue(s, "ins_transition", 11, v, NULL, NULL);
}

void
store_queue_outbox(struct store *s, const char *subject, const char *msg_id,
                   const char *content_type, const char *saga_id, const char *correlation_id,
                   const char *step, uint32_t attempt, const char *traceparent,
                   struct bytes payload)
{
	char att[16];
	const char *v[9];
	int len[9] = {0};
	int fmt[9] = {0};

	snprintf(att, sizeof(att), "%u", attempt);
	v[0] = subject;
	v[1] = msg_id;
	v[2] = content_type;
	v[3] = saga_id != NULL ? saga_id : "";
	v[4] = correlation_id != NULL ? correlation_id : "";
	v[5] = step != NULL ? step : "";
	v[6] = att;
	v[7] = traceparent != NULL ? traceparent : "";
	v[8] = payload.data != NULL ? (const char *)payload.data : "";
	len[8] = (int)payload.len;
	fmt[8] = 1;
	queue(s, "ins_outbox", 9, v, len, fmt);
}

void
store_queue_dead_letter(struct store *s, const struct store_dead_letter *dl)
{
	const char *v[9];
	int len[9] = {0};
	int fmt[9] = {0};

	v[0] = dl->source_subject;
	v[1] = dl->source_key;
	v[2] = dl->headers_json;
	v[3] = dl->payload.data != NULL ? (const char *)dl->payload.data : "";
	len[3] = (int)dl->payload.len;
	fmt[3] = 1;
	v[4] = dl->reason;
	v[5] = dl->error_class;
	v[6] = dl->saga_id != NULL ? dl->saga_id : "";
	v[7] = dl->correlation_id != NULL ? dl->correlation_id : "";
	v[8] = dl->step != NULL ? dl->step : "";
	queue(s, "ins_dead_letter", 9, v, len, fmt);
}

enum status
store_commit(struct store *s, char *err, size_t errlen)
{
	PGresult *res;
	enum status st = STATUS_OK;

	if (!s->in_pipeline) {
		st = store_exec(s, "COMMIT", err, errlen);
		return st;
	}
	if (s->queue_failed) {
		snprintf(err, errlen, "%s", s->queue_err);
		store_rollback(s);
		return STATUS_DB_RETRY;
	}
	if (PQsendQueryParams(s->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
	    PQpipelineSync(s->conn) != 1) {
		store_set_err(err, errlen, "COMMIT", PQerrorMessage(s->conn));
		store_rollback(s);
		return STATUS_DB_RETRY;
	}
	/* One result (then NULL) per statement, the COMMIT's, then the sync. */
	for (;;) {
		res = PQgetResult(s->conn);
		if (res == NULL) {
			if (PQstatus(s->conn) == CONNECTION_BAD) {
				store_set_err(err, errlen, "COMMIT", PQerrorMessage(s->conn));
				st = STATUS_DB_RETRY;
				break;
			}
			continue;
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			break;
		}
		if (PQresultStatus(res) != PGRES_COMMAND_OK &&
		    PQresultStatus(res) != PGRES_TUPLES_OK && st == STATUS_OK) {
			st = PQresultStatus(res) == PGRES_PIPELINE_ABORTED
			             ? STATUS_DB
			             : store_status_from_result(res, s->conn);
			store_set_err(err, errlen, "batch write", PQresultErrorMessage(res));
		}
		PQclear(res);
	}
	PQexitPipelineMode(s->conn);
	s->in_pipeline = 0;
	if (st != STATUS_OK) {
		/* The server aborted the transaction; make sure it is gone. */
		res = PQexec(s->conn, "ROLLBACK");
		PQclear(res);
	}
	return st;
}

enum status
store_outbox_take(struct store *s, int limit, struct store_outbox_row **rows, int *n_rows,
                  char *err, size_t errlen)
{
	char limit_text[16];
	const char *params[1] = {limit_text};
	struct store_outbox_row *out = NULL;
	PGresult *res;
	enum status st;
	int64_t now_ms;
	int n;

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
	res = PQexecParams(s->conn,
	                   "DELETE FROM saga_outbox WHERE id IN (SELECT id FROM saga_outbox"
	                   " ORDER BY id LIMIT $1::int FOR UPDATE SKIP LOCKED)"
	                   " RETURNING id::text, subject, msg_id, content_type,"
	                   " COALESCE(saga_id::text, ''), COALESCE(correlation_id, ''),"
	                   " COALESCE(step, ''), COALESCE(attempt::text, ''),"
	                   " COALESCE(traceparent, ''), payload",
	                   1, NULL, params, NULL, NULL, 1);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = store_status_from_result(res, s->conn);
		store_set_err(err, errlen, "taking outbox rows", PQerrorMessage(s->conn));
		PQclear(res);
		store_rollback(s);
		return st;
	}
	n = PQntuples(res);
	if (n > 0) {
		out = calloc((size_t)n, sizeof(*out));
		if (out == NULL) {
			PQclear(res);
			store_rollback(s);
			snprintf(err, errlen, "out of memory");
			return STATUS_NOMEM;
		}
	}
	/* Binary results: text columns are their raw bytes, NUL-terminated by libpq. */
	for (int r = 0; r < n; r++) {
		out[r].id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
		out[r].subject = PQgetvalue(res, r, 1);
		out[r].msg_id = PQgetvalue(res, r, 2);
		out[r].content_type = PQgetvalue(res, r, 3);
		out[r].saga_id = PQgetvalue(res, r, 4);
		out[r].correlation_id = PQgetvalue(res, r, 5);
		out[r].step = PQgetvalue(res, r, 6);
		out[r].attempt = PQgetvalue(res, r, 7);
		out[r].traceparent = PQgetvalue(res, r, 8);
		out[r].payload.data = (uint8_t *)PQgetvalue(res, r, 9);
		out[r].payload.len = (size_t)PQgetlength(res, r, 9);
	}
	s->held = res;
	*rows = out;
	*n_rows = n;
	return STATUS_OK;
}

enum status
store_outbox_done(struct store *s, int publish_ok, char *err, size_t errlen)
{
	enum status st = STATUS_OK;

	if (publish_ok) {
		st = store_exec(s, "COMMIT", err, errlen);
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

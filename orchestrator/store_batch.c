/*
 * Batched writes of the store module: rows queued during a batch are kept as
 * PostgreSQL array literals, one per column, and written at commit by one
 * multi-row statement per table (INSERT ... SELECT FROM unnest(...)), sent
 * together with the COMMIT in one pipeline. PostgreSQL then pays its
 * per-statement cost (executor set-up, constraint expressions) once per batch
 * and table instead of once per row.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "pg_array.h"
#include "store.h"
#include "store_int.h"

/* ms since the epoch -> timestamptz, 0 -> NULL (inside SQL text). */
#define MS_TS(c) "CASE WHEN " c " = 0 THEN NULL ELSE to_timestamp(" c " / 1000.0) END"

/* The multi-row statements, in the order store_commit sends them (steps need their saga). */
const struct store_batch_statement store_batch_statements[STORE_T_COUNT] = {
        [STORE_T_INS_SAGA] =
                {"batch_ins_saga",
                 "INSERT INTO saga_instance (id, correlation_id, definition_name,"
                 " definition_version, state, input, idempotency_key, labels, traceparent, seq,"
                 " completions, wake_at, deadline_at, last_error, created_at, updated_at)"
                 " SELECT u.id, u.corr, u.dname, u.dver, u.state, u.input, NULLIF(u.ikey, ''),"
                 " COALESCE(u.labels::jsonb, '{}'), NULLIF(u.tp, ''), u.seq, u.comp, " MS_TS(
                         "u.wake") ", " MS_TS("u.dl") ", NULLIF(u.err, ''), now(), now()"
                                                      " FROM unnest($1::uuid[], $2::text[],"
                                                      " $3::text[], $4::int[], $5::text[],"
                                                      " $6::bytea[], $7::text[], $8::text[],"
                                                      " $9::text[], $10::int[], $11::int[],"
                                                      " $12::bigint[], $13::bigint[],"
                                                      " $14::text[])"
                                                      " AS u(id, corr, dname, dver, state,"
                                                      " input, ikey, labels, tp, seq, comp,"
                                                      " wake, dl, err)"
                                                      /* The versions, for the saga cache. */
                                                      " RETURNING id::text, xmin::text",
                 14},
        /* The SQL laid out by hand (clang-format breaks strings around macros). */
        /* clang-format off */
        [STORE_T_UPD_SAGA] =
                {"batch_upd_saga",
                 "WITH upd AS ("
                 "UPDATE saga_instance AS i SET state = u.state, seq = u.seq,"
                 " completions = u.comp,"
                 /*
                  * A stored wake-up still ahead and no later than the new one
                  * stays: sagad looks at the saga then (a timer pass that finds
                  * nothing due moves it on). Unchanged, like the state while
                  * running, it lets the row be updated in place (HOT): no
                  * index gets a new entry. Earlier timers always go in.
                  */
                 " wake_at = CASE WHEN u.wake = 0 THEN NULL"
                 "   WHEN i.wake_at > now() AND i.wake_at <= " MS_TS("u.wake") " THEN i.wake_at"
                 "   ELSE " MS_TS("u.wake") " END,"
                 " deadline_at = " MS_TS("u.dl") ", last_error = NULLIF(u.err, ''),"
                 /* Only progress moves updated_at: ignored replies must not hide a stuck saga. */
                 " updated_at = CASE WHEN u.progressed THEN now() ELSE i.updated_at END,"
                 /* The first time a saga ends is when it ended. */
                 " ended_at = CASE WHEN u.state IN ('completed', 'compensated', 'resolved')"
                 "   THEN COALESCE(i.ended_at, now()) END"
                 " FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::bigint[],"
                 "   $6::bigint[], $7::text[], $8::boolean[], $9::text[])"
                 "   AS u(id, state, seq, comp, wake, dl, err, progressed, ver)"
                 /*
                  * A saga taken from the cache is written only if its row is
                  * still the version our last commit made; if any is not,
                  * saga_expect_rows fails the transaction (40001).
                  */
                 " WHERE i.id = u.id AND (u.ver = '' OR i.xmin::text = u.ver)"
                 " RETURNING i.id, i.xmin)"
                 " SELECT id::text, xmin::text FROM upd"
                 " UNION ALL SELECT NULL, NULL"
                 " WHERE saga_expect_rows((SELECT count(DISTINCT x) FROM unnest($1::uuid[]) x),"
                 "   (SELECT count(*) FROM upd))",
                 /*
                  * A join: prepared, it kept the plan made while the table was
                  * small (a hash join over a sequential scan) as the table grew,
                  * so every update read every saga row until an ANALYZE.
                  */
                 9, 1},
        /* clang-format on */
        [STORE_T_UPS_STEP] =
                {"batch_ups_step",
                 "INSERT INTO saga_step AS s (saga_id, step_index, name, state, attempt,"
                 " attempt_base, comp_attempt, comp_attempt_base, wake_at, completed_order,"
                 " uncertain, output, last_error, started_at, completed_at, updated_at)"
                 " SELECT u.id, u.idx, u.name, u.state, u.att, u.base, u.comp, u.comp_base, " MS_TS(
                         "u.wake") ", NULLIF(u.ord, 0), u.unc, u.output, NULLIF(u.err, ''),"
                                   " CASE WHEN u.att > 0 THEN now() END,"
                                   " CASE WHEN u.state = 'succeeded' THEN now() END, now()"
                                   " FROM unnest($1::uuid[], $2::smallint[], $3::text[],"
                                   " $4::text[], $5::int[], $6::int[], $7::int[], $8::int[],"
                                   " $9::bigint[], $10::int[], $11::boolean[], $12::bytea[],"
                                   " $13::text[])"
                                   " AS u(id, idx, name, state, att, base, comp, comp_base,"
                                   " wake, ord, unc, output, err)"
                                   " ON CONFLICT (saga_id, step_index) DO UPDATE SET"
                                   " state = EXCLUDED.state, attempt = EXCLUDED.attempt,"
                                   " attempt_base = EXCLUDED.attempt_base,"
                                   " comp_attempt = EXCLUDED.comp_attempt,"
                                   " comp_attempt_base = EXCLUDED.comp_attempt_base,"
                                   " wake_at = EXCLUDED.wake_at,"
                                   " completed_order = EXCLUDED.completed_order,"
                                   " uncertain = EXCLUDED.uncertain,"
                                   /* NULL keeps the output: written once, when the action succeeds. */
                                   " output = COALESCE(EXCLUDED.output, s.output),"
                                   " last_error = EXCLUDED.last_error,"
                                   " started_at = COALESCE(s.started_at, EXCLUDED.started_at),"
                                   " completed_at = CASE WHEN EXCLUDED.state = 'succeeded'"
                                   " AND s.state <> 'succeeded' THEN now()"
                                   " ELSE s.completed_at END,"
                                   " updated_at = now()",
                 13},
        [STORE_T_INS_TRANSITION] =
                {"batch_ins_transition",
                 "INSERT INTO saga_transition (saga_id, seq, correlation_id, event, outcome,"
                 " from_state, to_state, step, phase, attempt, detail)"
                 " SELECT u.id, u.seq, u.corr, u.ev, u.outcome, NULLIF(u.from_state, ''),"
                 " u.to_state, NULLIF(u.step, ''), NULLIF(u.phase, ''), NULLIF(u.att, 0),"
                 " NULLIF(u.detail, '')"
                 " FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],"
                 " $6::text[], $7::text[], $8::text[], $9::text[], $10::int[], $11::text[])"
                 " AS u(id, seq, corr, ev, outcome, from_state, to_state, step, phase, att,"
                 " detail)",
                 11},
        [STORE_T_INS_OUTBOX] =
                {"batch_ins_outbox",
                 "INSERT INTO saga_outbox (subject, msg_id, content_type, saga_id,"
                 " correlation_id, step, attempt, traceparent, payload)"
                 " SELECT u.subject, u.msg_id, u.ct, NULLIF(u.saga_id, '')::uuid,"
                 " NULLIF(u.corr, ''), NULLIF(u.step, ''), NULLIF(u.att, 0), NULLIF(u.tp, ''),"
                 " u.payload"
                 " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
                 " $6::text[], $7::int[], $8::text[], $9::bytea[])"
                 " AS u(subject, msg_id, ct, saga_id, corr, step, att, tp, payload)"
                 /* What the relay publishes right after the commit. */
                 " RETURNING " STORE_OUTBOX_COLUMNS,
                 9},
        [STORE_T_INS_DEAD_LETTER] =
                {"batch_ins_dead_letter",
                 "INSERT INTO saga_dead_letter (source_subject, source_key, headers, payload,"
                 " reason, error_class, saga_id, correlation_id, step)"
                 " SELECT u.subject, u.skey, COALESCE(u.headers::jsonb, '{}'), u.payload,"
                 " u.reason, u.class, NULLIF(u.saga_id, '')::uuid, NULLIF(u.corr, ''),"
                 " NULLIF(u.step, '')"
                 " FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[],"
                 " $6::text[], $7::text[], $8::text[], $9::text[])"
                 " AS u(subject, skey, headers, payload, reason, class, saga_id, corr, step)"
                 " ON CONFLICT (source_key) WHERE source_key IS NOT NULL DO NOTHING",
                 9},
};

/* The columns of table t, after counting one more row. */
static struct pg_array *
row(struct store *s, enum store_table t)
{
	s->batch_rows[t]++;
	return s->batch_cols[t];
}

enum status
store_batch_begin(struct store *s, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	for (int t = 0; t < STORE_T_COUNT; t++) {
		s->batch_rows[t] = 0;
		for (int c = 0; c < STORE_BATCH_MAX_COLS; c++)
			pg_array_reset(&s->batch_cols[t][c]);
	}
	store_unstage(s, 1);
	s->queue_failed = 0;
	s->in_batch = 1;
	return STATUS_OK;
}

void
store_batch_free(struct store *s)
{
	store_unstage(s, 0);
	free(s->staged);
	s->staged = NULL;
	s->cap_staged = 0;
	store_committed_clear(s);
	free(s->committed);
	s->committed = NULL;
	s->cap_committed = 0;
	for (int t = 0; t < STORE_T_COUNT; t++) {
		for (int c = 0; c < STORE_BATCH_MAX_COLS; c++)
			pg_array_free(&s->batch_cols[t][c]);
	}
}

int
store_batch_params(struct store *s, enum store_table t, const char **values)
{
	int n_cols = store_batch_statements[t].n_params;

	for (int c = 0; c < n_cols; c++) {
		values[c] = pg_array_close(&s->batch_cols[t][c]);
		if (values[c] == NULL) {
			s->queue_failed = 1;
			snprintf(s->queue_err, sizeof(s->queue_err), "batch write: out of memory");
			return 0;
		}
	}
	return 1;
}

/* Copy the saga aside for the cache; its commit gives it a version (store_commit). */
static void
stage(struct store *s, const struct saga_def *def, const struct saga_inst *inst)
{
	struct sagacache_entry *e;

	if (s->cache == NULL)
		return;
	if (s->n_staged == s->cap_staged) {
		int cap = s->cap_staged > 0 ? 2 * s->cap_staged : 64;
		struct sagacache_entry **grown = realloc(s->staged, (size_t)cap * sizeof(*grown));

		if (grown == NULL) {
			/* Out of memory: the saga is read from the database next time. */
			sagacache_drop(s->cache, inst->id);
			return;
		}
		s->staged = grown;
		s->cap_staged = cap;
	}
	e = sagacache_stage(inst, def->n_steps, def->name, def->version);
	if (e == NULL) {
		sagacache_drop(s->cache, inst->id);
		return;
	}
	s->staged[s->n_staged++] = e;
}

void
store_unstage(struct store *s, int forget)
{
	for (int i = 0; i < s->n_staged; i++) {
		if (s->staged[i] == NULL)
			continue;
		if (forget)
			sagacache_drop(s->cache, sagacache_entry_id(s->staged[i]));
		sagacache_discard(s->staged[i]);
	}
	s->n_staged = 0;
}

void
store_set_cache(struct store *s, struct sagacache *cache)
{
	store_unstage(s, 0);
	s->cache = cache;
}

void
store_queue_insert_saga(struct store *s, const struct saga_def *def, const struct saga_inst *inst,
                        const char *idempotency_key, const char *labels_json)
{
	struct pg_array *c = row(s, STORE_T_INS_SAGA);

	stage(s, def, inst);
	pg_array_text(&c[0], inst->id);
	pg_array_text(&c[1], inst->correlation_id);
	pg_array_text(&c[2], def->name);
	pg_array_int(&c[3], def->version);
	pg_array_text(&c[4], saga_state_name(inst->state));
	pg_array_bytes(&c[5], inst->input.data != NULL ? inst->input.data : (const uint8_t *)"",
	               inst->input.len);
	pg_array_text(&c[6], idempotency_key != NULL ? idempotency_key : "");
	pg_array_text(&c[7], labels_json);
	pg_array_text(&c[8], inst->traceparent);
	pg_array_int(&c[9], inst->seq);
	pg_array_int(&c[10], inst->completions);
	pg_array_int(&c[11], inst->wake_at_ms);
	pg_array_int(&c[12], inst->deadline_at_ms);
	pg_array_text(&c[13], inst->last_error);
}

void
store_queue_update_saga(struct store *s, const struct saga_def *def, const struct saga_inst *inst,
                        const char *version, int progressed)
{
	struct pg_array *c = row(s, STORE_T_UPD_SAGA);

	stage(s, def, inst);
	pg_array_text(&c[0], inst->id);
	pg_array_text(&c[1], saga_state_name(inst->state));
	pg_array_int(&c[2], inst->seq);
	pg_array_int(&c[3], inst->completions);
	pg_array_int(&c[4], inst->wake_at_ms);
	pg_array_int(&c[5], inst->deadline_at_ms);
	pg_array_text(&c[6], inst->last_error);
	pg_array_bool(&c[7], progressed);
	pg_array_text(&c[8], version != NULL ? version : "");
}

void
store_queue_steps(struct store *s, const struct saga_def *def, struct saga_inst *inst)
{
	for (int i = 0; i < def->n_steps; i++) {
		struct step_inst *st = &inst->steps[i];
		struct pg_array *c;

		if (!st->dirty)
			continue;
		c = row(s, STORE_T_UPS_STEP);
		pg_array_text(&c[0], inst->id);
		pg_array_int(&c[1], i);
		pg_array_text(&c[2], def->steps[i].name);
		pg_array_text(&c[3], step_state_name(st->state));
		pg_array_int(&c[4], st->attempt);
		pg_array_int(&c[5], st->attempt_base);
		pg_array_int(&c[6], st->comp_attempt);
		pg_array_int(&c[7], st->comp_attempt_base);
		pg_array_int(&c[8], st->wake_at_ms);
		pg_array_int(&c[9], st->completed_order);
		pg_array_bool(&c[10], st->uncertain);
		/* NULL keeps the stored output: it is written once, when the action succeeds. */
		pg_array_bytes(&c[11], st->output.len > 0 ? st->output.data : NULL, st->output.len);
		pg_array_text(&c[12], st->last_error);
		st->dirty = false;
	}
}

void
store_queue_transition(struct store *s, const struct saga_def *def, const struct saga_inst *inst,
                       const struct plan *plan, const char *event_name)
{
	struct pg_array *c = row(s, STORE_T_INS_TRANSITION);

	pg_array_text(&c[0], inst->id);
	pg_array_int(&c[1], plan->seq);
	pg_array_text(&c[2], inst->correlation_id);
	pg_array_text(&c[3], event_name);
	pg_array_text(&c[4], engine_verdict_name(plan->verdict));
	pg_array_text(&c[5], plan->from_state != 0
	                             ? saga_state_name((enum saga_state)plan->from_state)
	                             : "");
	pg_array_text(&c[6], saga_state_name(plan->to_state));
	pg_array_text(&c[7], plan->step >= 0 ? def->steps[plan->step].name : "");
	pg_array_text(&c[8], plan->phase != 0 ? step_phase_name(plan->phase) : "");
	pg_array_int(&c[9], plan->attempt);
	pg_array_text(&c[10], plan->detail);
}

void
store_queue_outbox(struct store *s, const char *subject, const char *msg_id,
                   const char *content_type, const char *saga_id, const char *correlation_id,
                   const char *step, uint32_t attempt, const char *traceparent,
                   struct bytes payload)
{
	struct pg_array *c = row(s, STORE_T_INS_OUTBOX);

	pg_array_text(&c[0], subject);
	pg_array_text(&c[1], msg_id);
	pg_array_text(&c[2], content_type);
	pg_array_text(&c[3], saga_id != NULL ? saga_id : "");
	pg_array_text(&c[4], correlation_id != NULL ? correlation_id : "");
	pg_array_text(&c[5], step != NULL ? step : "");
	pg_array_int(&c[6], attempt);
	pg_array_text(&c[7], traceparent != NULL ? traceparent : "");
	pg_array_bytes(&c[8], payload.data != NULL ? payload.data : (const uint8_t *)"",
	               payload.len);
}

void
store_queue_dead_letter(struct store *s, const struct store_dead_letter *dl)
{
	struct pg_array *c = row(s, STORE_T_INS_DEAD_LETTER);

	pg_array_text(&c[0], dl->source_subject);
	pg_array_text(&c[1], dl->source_key);
	pg_array_text(&c[2], dl->headers_json);
	pg_array_bytes(&c[3], dl->payload.data != NULL ? dl->payload.data : (const uint8_t *)"",
	               dl->payload.len);
	pg_array_text(&c[4], dl->reason);
	pg_array_text(&c[5], dl->error_class);
	pg_array_text(&c[6], dl->saga_id != NULL ? dl->saga_id : "");
	pg_array_text(&c[7], dl->correlation_id != NULL ? dl->correlation_id : "");
	pg_array_text(&c[8], dl->step != NULL ? dl->step : "");
}

/* Hold a committed outbox result for store_outbox_committed; 0 when out of memory. */
static int
keep_committed(struct store *s, PGresult *res)
{
	if (s->n_committed == s->cap_committed) {
		int cap = s->cap_committed > 0 ? 2 * s->cap_committed : 8;
		PGresult **grown = realloc(s->committed, (size_t)cap * sizeof(*grown));

		if (grown == NULL)
			return 0;
		s->committed = grown;
		s->cap_committed = cap;
	}
	s->committed[s->n_committed++] = res;
	return 1;
}

void
store_keep_committed_outbox(struct store *s, int keep)
{
	s->keep_outbox = keep;
	if (!keep)
		store_committed_clear(s);
}

void
store_committed_clear(struct store *s)
{
	for (int i = 0; i < s->n_committed; i++)
		PQclear(s->committed[i]);
	s->n_committed = 0;
}

enum status
store_outbox_committed(struct store *s, struct store_outbox_row **rows, int *n_rows)
{
	struct store_outbox_row *out;
	int total = 0, n = 0;

	*rows = NULL;
	*n_rows = 0;
	for (int i = 0; i < s->n_committed; i++)
		total += PQntuples(s->committed[i]);
	if (total == 0)
		return STATUS_OK;
	out = calloc((size_t)total, sizeof(*out));
	if (out == NULL)
		return STATUS_NOMEM;
	for (int i = 0; i < s->n_committed; i++)
		store_outbox_rows(s->committed[i], out, &n);
	*rows = out;
	*n_rows = n;
	return STATUS_OK;
}

void
store_outbox_committed_done(struct store *s)
{
	store_committed_clear(s);
}

static int
cmp_staged(const void *a, const void *b)
{
	return strcmp(sagacache_entry_id(*(struct sagacache_entry *const *)a),
	              sagacache_entry_id(*(struct sagacache_entry *const *)b));
}

/* bsearch key comparator: a saga id against a staged entry. */
static int
cmp_id_staged(const void *id, const void *e)
{
	return strcmp(id, sagacache_entry_id(*(struct sagacache_entry *const *)e));
}

/* The index of saga id among the staged (sorted by id), or -1. */
static int
find_staged(const struct store *s, const char *id)
{
	struct sagacache_entry **hit = s->n_staged > 0 ? bsearch(id, s->staged, (size_t)s->n_staged,
	                                                         sizeof(*s->staged), cmp_id_staged)
	                                               : NULL;

	return hit != NULL ? (int)(hit - s->staged) : -1;
}

/* Committed: each saga row written (id, xmin) puts its staged copy in the cache. */
static void
cache_committed(struct store *s, PGresult *const *versions, int n_versions)
{
	const char **version;

	if (s->cache == NULL || s->n_staged == 0)
		return;
	version = calloc((size_t)s->n_staged, sizeof(*version));
	if (version == NULL) {
		store_unstage(s, 1); /* out of memory: read back next time */
		return;
	}
	qsort(s->staged, (size_t)s->n_staged, sizeof(*s->staged), cmp_staged);
	for (int v = 0; v < n_versions; v++) {
		for (int r = 0; versions[v] != NULL && r < PQntuples(versions[v]); r++) {
			int i = PQgetisnull(versions[v], r, 0)
			                ? -1
			                : find_staged(s, PQgetvalue(versions[v], r, 0));

			if (i >= 0)
				version[i] = PQgetvalue(versions[v], r, 1);
		}
	}
	for (int i = 0; i < s->n_staged; i++) {
		if (version[i] == NULL)
			continue; /* its row was not written (none should be): read back next time */
		sagacache_commit(s->cache, s->staged[i], version[i]);
		s->staged[i] = NULL; /* the cache has it now */
	}
	free(version);
	store_unstage(s, 1);
}

/* Send each table's rows, the COMMIT and a sync; read every result; report the first failure. */
enum status
store_commit(struct store *s, char *err, size_t errlen)
{
	const char *values[STORE_BATCH_MAX_COLS];
	PGresult *res;
	PGresult *outbox = NULL;
	PGresult *versions[2] = {NULL, NULL}; /* (id, xmin) of the inserted and updated sagas */
	enum status st = STATUS_OK;
	int sent = 0, outbox_query = -1, results = 0;
	int version_query[2] = {-1, -1};
	int dead_query = -1;
	long dead_letters = 0; /* rows the dead-letter insert added (not the known ones) */

	if (!s->in_batch)
		return store_exec(s, "COMMIT", err, errlen);
	if (s->queue_failed) {
		snprintf(err, errlen, "%s", s->queue_err);
		store_rollback(s);
		return STATUS_NOMEM;
	}
	if (PQenterPipelineMode(s->conn) != 1) {
		store_set_err(err, errlen, "entering pipeline mode", PQerrorMessage(s->conn));
		store_rollback(s);
		return STATUS_DB_RETRY;
	}
	s->in_pipeline = 1;
	for (int t = 0; t < STORE_T_COUNT; t++) {
		const struct store_batch_statement *stmt = &store_batch_statements[t];

		if (s->batch_rows[t] == 0)
			continue;
		if (!store_batch_params(s, t, values)) {
			snprintf(err, errlen, "%s", s->queue_err);
			store_rollback(s);
			return STATUS_NOMEM;
		}
		/* Outbox rows come back in binary: text as raw bytes, the payload as it is. */
		if ((stmt->planned_each_time
		             ? PQsendQueryParams(s->conn, stmt->sql, stmt->n_params, NULL, values,
		                                 NULL, NULL, t == STORE_T_INS_OUTBOX)
		             : PQsendQueryPrepared(s->conn, stmt->name, stmt->n_params, values,
		                                   NULL, NULL, t == STORE_T_INS_OUTBOX)) != 1) {
			store_set_err(err, errlen, stmt->name, PQerrorMessage(s->conn));
			store_rollback(s);
			return STATUS_DB_RETRY;
		}
		if (t == STORE_T_INS_OUTBOX)
			outbox_query = sent;
		else if (t == STORE_T_INS_SAGA || t == STORE_T_UPD_SAGA)
			version_query[t == STORE_T_UPD_SAGA] = sent;
		else if (t == STORE_T_INS_DEAD_LETTER)
			dead_query = sent;
		sent++;
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
		if (results == dead_query && PQresultStatus(res) == PGRES_COMMAND_OK)
			dead_letters = strtol(PQcmdTuples(res), NULL, 10);
		if (results == outbox_query && s->keep_outbox &&
		    PQresultStatus(res) == PGRES_TUPLES_OK)
			outbox = res;
		else if ((results == version_query[0] || results == version_query[1]) &&
		         PQresultStatus(res) == PGRES_TUPLES_OK)
			versions[results == version_query[1]] = res;
		else
			PQclear(res);
		results++;
	}
	PQexitPipelineMode(s->conn);
	s->in_pipeline = 0;
	s->in_batch = 0;
	if (st != STATUS_OK) {
		/* The server aborted the transaction; make sure it is gone. */
		res = PQexec(s->conn, "ROLLBACK");
		PQclear(res);
		PQclear(outbox);
		PQclear(versions[0]);
		PQclear(versions[1]);
		/* A lost connection may have committed: the sagas are read back next time. */
		store_unstage(s, 1);
		return st;
	}
	metrics_add(M_DEAD_LETTERS, (uint64_t)dead_letters);
	cache_committed(s, versions, 2);
	PQclear(versions[0]);
	PQclear(versions[1]);
	if (outbox != NULL && !keep_committed(s, outbox))
		PQclear(outbox); /* out of memory: the sweep publishes these rows */
	return st;
}

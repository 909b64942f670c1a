/* Integration tests of the store's batched writes: what is queued is what PostgreSQL holds. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sagacache.h"
#include "store.h"

static char schema[96];
static struct store *db;
static struct saga_def def;

static void
setup(void)
{
	char err[512];
	char env_schema[160];
	char out[8192];
	const char *argv[] = {harness_bin("SAGAD_BIN"), "migrate", NULL};
	const char *env[] = {env_schema, NULL};

	harness_unique_name(schema, sizeof(schema), "t_batch");
	snprintf(env_schema, sizeof(env_schema), "SAGAD_DB_SCHEMA=%s", schema);
	cr_assert_eq(harness_run(argv, env, out, sizeof(out), 60000), 0, "migrate: %s", out);
	harness_sql(schema, "INSERT INTO saga_definition (name, version, body, body_hash)"
	                    " VALUES ('batch', 1, '\\x00', 'h')");
	cr_assert_eq(store_connect(&db, harness_database_url(), schema, 10000, 0, "test_batch", err,
	                           sizeof(err)),
	             STATUS_OK, "%s", err);
	memset(&def, 0, sizeof(def));
	snprintf(def.name, sizeof(def.name), "batch");
	def.version = 1;
	def.n_steps = 3;
	snprintf(def.steps[0].name, sizeof(def.steps[0].name), "reserve");
	snprintf(def.steps[1].name, sizeof(def.steps[1].name), "charge");
	snprintf(def.steps[2].name, sizeof(def.steps[2].name), "ship");
}

static void
teardown(void)
{
	store_close(db);
	db = NULL;
}

TestSuite(store_batch, .init = setup, .fini = teardown);

static void
new_inst(struct saga_inst *inst, int n)
{
	memset(inst, 0, sizeof(*inst));
	snprintf(inst->id, sizeof(inst->id), "00000000-0000-4000-8000-%012d", n);
	snprintf(inst->correlation_id, sizeof(inst->correlation_id), "corr-%d", n);
	inst->state = SAGA_RUNNING;
	inst->seq = 1;
	for (int i = 0; i < def.n_steps; i++)
		inst->steps[i].dirty = true;
}

static void
begin_batch(void)
{
	char err[512];
	int64_t now_ms = 0;

	cr_assert_eq(store_begin(db, &now_ms, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert_gt(now_ms, 0);
	cr_assert_eq(store_batch_begin(db, err, sizeof(err)), STATUS_OK, "%s", err);
}

Test(store_batch, hostile_text_and_every_byte_value_round_trip)
{
	static const char *const texts[] = {
	        "quote \" backslash \\ comma , braces {} ",
	        "NULL",
	        "\"NULL\"",
	        " leading and trailing ",
	        "line\nbreak\ttab\rcr",
	        "ünïcödé ✓",
	};
	uint8_t bytes[256];
	struct saga_inst inst;
	struct plan plan;
	struct store_dead_letter dl;
	char err[512];
	char hex[600];

	for (int i = 0; i < 256; i++)
		bytes[i] = (uint8_t)i;
	for (int i = 0; i < 256; i++)
		snprintf(hex + 2 * i, 3, "%02x", i);
	begin_batch();
	new_inst(&inst, 1);
	snprintf(inst.correlation_id, sizeof(inst.correlation_id), "%s", texts[0]);
	snprintf(inst.last_error, sizeof(inst.last_error), "%s", texts[1]);
	inst.input.data = bytes;
	inst.input.len = sizeof(bytes);
	inst.wake_at_ms = 1700000000123;
	store_queue_insert_saga(db, &def, &inst, "key \"1\"", "{\"k\": \"v \\\"q\\\" \\\\ ,{}\"}");
	snprintf(inst.steps[0].last_error, sizeof(inst.steps[0].last_error), "%s", texts[2]);
	inst.steps[1].output.data = bytes;
	inst.steps[1].output.len = sizeof(bytes);
	store_queue_steps(db, &def, &inst);
	for (int t = 0; t < (int)(sizeof(texts) / sizeof(texts[0])); t++) {
		memset(&plan, 0, sizeof(plan));
		plan.seq = t + 1;
		plan.to_state = SAGA_RUNNING;
		plan.step = t % 3;
		plan.phase = PHASE_ACTION;
		plan.attempt = (uint32_t)t;
		snprintf(plan.detail, sizeof(plan.detail), "%s", texts[t]);
		store_queue_transition(db, &def, &inst, &plan, "reply");
	}
	store_queue_outbox(db, "saga.cmd.stock.reserve", "m-1", "saga.v1.StepCommand", inst.id,
	                   texts[4], "reserve", 2, "", (struct bytes){bytes, sizeof(bytes)});
	memset(&dl, 0, sizeof(dl));
	dl.source_subject = "saga.reply.x";
	dl.source_key = "REPLY:1";
	dl.headers_json = "{\"h\": \"a\\\\b\\\"c\"}";
	dl.payload = (struct bytes){bytes, sizeof(bytes)};
	dl.reason = texts[5];
	dl.error_class = "malformed";
	store_queue_dead_letter(db, &dl);
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);

	cr_assert_str_eq(harness_sql(schema, "SELECT correlation_id FROM saga_instance"), texts[0]);
	cr_assert_str_eq(harness_sql(schema, "SELECT last_error FROM saga_instance"), texts[1]);
	cr_assert_str_eq(harness_sql(schema, "SELECT encode(input, 'hex') FROM saga_instance"),
	                 hex);
	cr_assert_str_eq(harness_sql(schema, "SELECT idempotency_key FROM saga_instance"),
	                 "key \"1\"");
	cr_assert_str_eq(harness_sql(schema, "SELECT labels->>'k' FROM saga_instance"),
	                 "v \"q\" \\ ,{}");
	cr_assert_str_eq(harness_sql(schema, "SELECT (extract(epoch FROM wake_at) * 1000)::bigint"
	                                     " FROM saga_instance"),
	                 "1700000000123");
	cr_assert_str_eq(harness_sql(schema, "SELECT deadline_at IS NULL FROM saga_instance"), "t");
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_step"), "3");
	cr_assert_str_eq(
	        harness_sql(schema, "SELECT last_error FROM saga_step WHERE step_index = 0"),
	        texts[2]);
	cr_assert_str_eq(harness_sql(schema, "SELECT last_error IS NULL FROM saga_step"
	                                     " WHERE step_index = 1"),
	                 "t");
	cr_assert_str_eq(harness_sql(schema, "SELECT encode(output, 'hex') FROM saga_step"
	                                     " WHERE step_index = 1"),
	                 hex);
	cr_assert_str_eq(harness_sql(schema, "SELECT output IS NULL FROM saga_step"
	                                     " WHERE step_index = 0"),
	                 "t");
	for (int t = 0; t < (int)(sizeof(texts) / sizeof(texts[0])); t++) {
		char sql[128];

		snprintf(sql, sizeof(sql), "SELECT detail FROM saga_transition WHERE seq = %d",
		         t + 1);
		cr_assert_str_eq(harness_sql(schema, sql), texts[t], "transition %d", t + 1);
	}
	cr_assert_str_eq(harness_sql(schema, "SELECT attempt IS NULL FROM saga_transition"
	                                     " WHERE seq = 1"),
	                 "t");
	cr_assert_str_eq(harness_sql(schema, "SELECT correlation_id FROM saga_outbox"), texts[4]);
	cr_assert_str_eq(harness_sql(schema, "SELECT encode(payload, 'hex') FROM saga_outbox"),
	                 hex);
	cr_assert_str_eq(harness_sql(schema, "SELECT traceparent IS NULL FROM saga_outbox"), "t");
	cr_assert_str_eq(harness_sql(schema, "SELECT headers->>'h' FROM saga_dead_letter"),
	                 "a\\b\"c");
	cr_assert_str_eq(harness_sql(schema, "SELECT reason FROM saga_dead_letter"), texts[5]);
	cr_assert_str_eq(harness_sql(schema, "SELECT encode(payload, 'hex') FROM saga_dead_letter"),
	                 hex);
	cr_assert_str_eq(harness_sql(schema, "SELECT step IS NULL AND saga_id IS NULL"
	                                     " FROM saga_dead_letter WHERE source_key = 'REPLY:1'"),
	                 "t");
}

Test(store_batch, many_rows_per_table_then_an_update_batch)
{
	enum { N = 700 };
	static struct saga_inst inst[N];
	uint8_t out[3] = {1, 2, 3};
	char err[512];

	begin_batch();
	for (int i = 0; i < N; i++) {
		struct plan plan;

		new_inst(&inst[i], i);
		store_queue_insert_saga(db, &def, &inst[i], NULL, NULL);
		store_queue_steps(db, &def, &inst[i]);
		memset(&plan, 0, sizeof(plan));
		plan.seq = 1;
		plan.to_state = SAGA_RUNNING;
		plan.step = -1;
		store_queue_transition(db, &def, &inst[i], &plan, "start");
	}
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_instance"), "700");
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_step"), "2100");
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_transition"), "700");
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_instance"
	                                     " WHERE idempotency_key IS NULL AND labels = '{}'"),
	                 "700");

	/* Second batch: step 0 succeeds with an output, then the output-less update keeps it. */
	begin_batch();
	for (int i = 0; i < N; i++) {
		inst[i].seq = 2;
		inst[i].completions = 1;
		inst[i].steps[0].state = STEP_SUCCEEDED;
		inst[i].steps[0].attempt = 1;
		inst[i].steps[0].completed_order = 1;
		inst[i].steps[0].output.data = out;
		inst[i].steps[0].output.len = sizeof(out);
		inst[i].steps[0].dirty = true;
		store_queue_update_saga(db, &def, &inst[i], "", 1);
		store_queue_steps(db, &def, &inst[i]);
	}
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);
	begin_batch();
	for (int i = 0; i < N; i++) {
		inst[i].seq = 3;
		inst[i].state = i % 2 == 0 ? SAGA_COMPLETED : SAGA_RUNNING;
		inst[i].steps[0].output.len = 0;
		inst[i].steps[0].output.data = NULL;
		inst[i].steps[0].dirty = true;
		store_queue_update_saga(db, &def, &inst[i], "", 0);
		store_queue_steps(db, &def, &inst[i]);
	}
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert_str_eq(harness_sql(schema,
	                             "SELECT count(*) FROM saga_step WHERE step_index = 0"
	                             " AND state = 'succeeded' AND output = '\\x010203'"
	                             " AND completed_at IS NOT NULL AND started_at IS NOT NULL"),
	                 "700");
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_instance WHERE seq = 3"),
	                 "700");
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_instance"
	                                     " WHERE ended_at IS NOT NULL"),
	                 "350");
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_instance"
	                                     " WHERE state = 'completed'"),
	                 "350");
}

Test(store_batch, a_failing_row_rolls_the_whole_batch_back)
{
	struct saga_inst inst;
	struct plan plan;
	char err[512];

	begin_batch();
	new_inst(&inst, 7);
	store_queue_insert_saga(db, &def, &inst, NULL, NULL);
	store_queue_steps(db, &def, &inst);
	memset(&plan, 0, sizeof(plan));
	plan.seq = 1;
	plan.to_state = SAGA_RUNNING;
	plan.step = -1;
	/* The same transition twice: its primary key fails the batch. */
	store_queue_transition(db, &def, &inst, &plan, "start");
	store_queue_transition(db, &def, &inst, &plan, "start");
	cr_assert_neq(store_commit(db, err, sizeof(err)), STATUS_OK);
	cr_assert(strstr(err, "saga_transition") != NULL || strstr(err, "duplicate") != NULL, "%s",
	          err);
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_instance"), "0");
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_step"), "0");

	/* The connection is usable again, and nothing of the failed batch leaks into the next. */
	begin_batch();
	new_inst(&inst, 8);
	store_queue_insert_saga(db, &def, &inst, NULL, NULL);
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_instance"), "1");
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM saga_transition"), "0");
}

/* The stored wake-up, in ms from the database's now() (rounded to 100 ms), or "" when NULL. */
static const char *
stored_wake(void)
{
	return harness_sql(schema,
	                   "SELECT round((extract(epoch FROM wake_at - now()) * 10))::bigint"
	                   " * 100 FROM saga_instance");
}

/* One update of inst with wake_at_ms = now + ahead_ms (0 = no timer). */
static void
update_wake(struct saga_inst *inst, int64_t ahead_ms)
{
	char err[512];
	int64_t now_ms = 0;

	cr_assert_eq(store_begin(db, &now_ms, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert_eq(store_batch_begin(db, err, sizeof(err)), STATUS_OK, "%s", err);
	inst->seq++;
	inst->wake_at_ms = ahead_ms > 0 ? now_ms + ahead_ms : 0;
	store_queue_update_saga(db, &def, inst, "", 1);
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);
}

Test(store_batch, a_stored_wake_up_still_ahead_and_earlier_is_kept_never_a_later_one)
{
	struct saga_inst inst;
	char err[512];
	int64_t now_ms = 0;

	new_inst(&inst, 1);
	cr_assert_eq(store_begin(db, &now_ms, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert_eq(store_batch_begin(db, err, sizeof(err)), STATUS_OK, "%s", err);
	inst.wake_at_ms = now_ms + 60000;
	store_queue_insert_saga(db, &def, &inst, NULL, NULL);
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert_str_eq(stored_wake(), "60000");

	/* A later timer: the earlier stored one stays (the row is updated in place). */
	update_wake(&inst, 120000);
	cr_assert_str_eq(stored_wake(), "60000");
	/* An earlier timer always goes in. */
	update_wake(&inst, 30000);
	cr_assert_str_eq(stored_wake(), "30000");
	/* A stored wake-up already due is replaced, whatever comes. */
	harness_sql(schema, "UPDATE saga_instance SET wake_at = now() - interval '1 second'");
	update_wake(&inst, 120000);
	cr_assert_str_eq(stored_wake(), "120000");
	/* No timer at all: none stored. */
	update_wake(&inst, 0);
	cr_assert_str_eq(stored_wake(), "");
	cr_assert_str_eq(harness_sql(schema, "SELECT seq FROM saga_instance"), "5");
}

/* Lock-free reads of the cache: load one saga in a new transaction. */
static void
load_one(const char *id, struct store_loaded **rows, int *n)
{
	char err[512];
	int64_t now_ms = 0;
	const char *ids[1] = {id};

	cr_assert_eq(store_begin_load(db, ids, 1, &now_ms, rows, n, err, sizeof(err)), STATUS_OK,
	             "%s", err);
	cr_assert_eq(*n, 1);
	cr_assert_eq(store_batch_begin(db, err, sizeof(err)), STATUS_OK, "%s", err);
}

Test(store_batch, a_cached_saga_is_used_while_its_row_is_unchanged_and_read_back_after)
{
	struct sagacache *cache;
	struct saga_inst inst;
	struct store_loaded *rows = NULL;
	uint8_t out[] = {5, 6};
	char err[512];
	int n = 0;

	cr_assert_eq(sagacache_new(16, &cache), STATUS_OK);
	store_set_cache(db, cache);
	begin_batch();
	new_inst(&inst, 21);
	inst.steps[0].state = STEP_SUCCEEDED;
	inst.steps[0].output.data = out;
	inst.steps[0].output.len = sizeof(out);
	store_queue_insert_saga(db, &def, &inst, NULL, NULL);
	store_queue_steps(db, &def, &inst);
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert(sagacache_has(cache, inst.id));

	/* Taken from the cache: the version our commit gave the row, the state as written. */
	load_one(inst.id, &rows, &n);
	cr_assert_str_eq(rows[0].version,
	                 harness_sql(schema, "SELECT xmin::text FROM saga_instance"));
	cr_assert_str_eq(rows[0].def_name, "batch");
	cr_assert_eq(rows[0].inst.seq, 1);
	cr_assert_eq(rows[0].inst.steps[0].state, STEP_SUCCEEDED);
	cr_assert_eq(rows[0].inst.steps[0].output.len, 2);
	cr_assert_eq(rows[0].inst.steps[0].output.data[1], 6);
	rows[0].inst.seq = 2;
	store_queue_update_saga(db, &def, &rows[0].inst, rows[0].version, 1);
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);
	store_loaded_free(rows, n);
	cr_assert_str_eq(harness_sql(schema, "SELECT seq FROM saga_instance"), "2");

	/* Another writer (a second sagad, an operator) changes the saga. */
	harness_sql(schema, "UPDATE saga_instance SET last_error = 'changed elsewhere', seq = 5");
	load_one(inst.id, &rows, &n);
	cr_assert_neq(rows[0].version[0], '\0', "still served from the cache");
	rows[0].inst.seq = 3;
	store_queue_update_saga(db, &def, &rows[0].inst, rows[0].version, 1);
	store_queue_steps(db, &def, &rows[0].inst);
	/* The stale copy writes nothing: the whole batch fails, to be applied again. */
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_DB_RETRY, "%s", err);
	cr_assert(strstr(err, "version conflict") != NULL, "%s", err);
	store_loaded_free(rows, n);
	cr_assert_str_eq(harness_sql(schema, "SELECT seq || ' ' || last_error FROM saga_instance"),
	                 "5 changed elsewhere");
	cr_assert_not(sagacache_has(cache, inst.id), "forgotten after the conflict");

	/* Read back under its row lock: what the other writer left, then cached again. */
	load_one(inst.id, &rows, &n);
	cr_assert_str_eq(rows[0].version, "");
	cr_assert_eq(rows[0].inst.seq, 5);
	cr_assert_str_eq(rows[0].inst.last_error, "changed elsewhere");
	cr_assert_eq(rows[0].inst.steps[0].output.len, 2);
	rows[0].inst.seq = 6;
	store_queue_update_saga(db, &def, &rows[0].inst, rows[0].version, 1);
	cr_assert_eq(store_commit(db, err, sizeof(err)), STATUS_OK, "%s", err);
	store_loaded_free(rows, n);
	cr_assert(sagacache_has(cache, inst.id));
	load_one(inst.id, &rows, &n);
	cr_assert_neq(rows[0].version[0], '\0');
	cr_assert_eq(rows[0].inst.seq, 6);
	store_loaded_free(rows, n);
	store_rollback(db);

	/* A rolled-back batch leaves the entry as it was. */
	load_one(inst.id, &rows, &n);
	rows[0].inst.seq = 7;
	store_queue_update_saga(db, &def, &rows[0].inst, rows[0].version, 1);
	store_rollback(db);
	store_loaded_free(rows, n);
	load_one(inst.id, &rows, &n);
	cr_assert_eq(rows[0].inst.seq, 6);
	store_loaded_free(rows, n);
	store_rollback(db);
	store_set_cache(db, NULL);
	sagacache_free(cache);
}

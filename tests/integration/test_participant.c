/*
 * Participant library tests, in process against real PostgreSQL and NATS:
 * one batch is one transaction, so a key delivered twice in one batch, a
 * handler whose statement fails, a compensation that arrives before its
 * action and a connection lost in the middle of a batch must each still
 * give exactly one effect per key and a reply that matches the ledger.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "engine.h"
#include "flow.h"
#include "harness.h"
#include "participant.h"

#define SUBJECT    "test.work"
#define MAX_SAGAS  16
#define WAIT_MS    15000
#define MAX_REPLYS 32

/* What the test handler saw. */
struct seen {
	char saga_id[MAX_SAGAS][SAGA_ID_LEN + 1]; /* sagas by index */
	int calls[MAX_SAGAS][2];                  /* handler calls per saga and phase */
	int killed;                               /* connections the handler cut */
};

static struct flow f;
static struct participant *part;
static struct bus_sub *replies;
static struct seen seen;
static int published;

static int
saga_index(const char *saga_id)
{
	for (int i = 0; i < MAX_SAGAS; i++)
		if (strcmp(seen.saga_id[i], saga_id) == 0)
			return i;
	return -1;
}

/*
 * The business logic under test; the saga input says what it does:
 *   ok         write an effect row, succeed
 *   nosql      succeed without any statement (no savepoint)
 *   fail-sql   write, then a statement fails: a retryable failure
 *   fail-perm  write, then decline: a permanent failure
 *   kill-conn  the first time, cut its own connection mid-batch; then as ok
 */
static enum reply_outcome
handle(void *arg, struct participant_txn *tx, const struct command_msg *cmd,
       struct participant_result *res)
{
	char input[32], err[256];
	const char *params[3] = {cmd->idempotency_key, cmd->saga_id, NULL};
	int i = saga_index(cmd->saga_id);

	(void)arg;
	snprintf(input, sizeof(input), "%.*s", (int)cmd->input.len, (const char *)cmd->input.data);
	if (i >= 0)
		seen.calls[i][cmd->phase == PHASE_ACTION ? 0 : 1]++;
	if (strcmp(input, "nosql") == 0)
		goto success;
	if (strcmp(input, "kill-conn") == 0 && seen.killed == 0) {
		seen.killed++;
		if (participant_exec(tx, "SELECT pg_terminate_backend(pg_backend_pid())", 0, NULL,
		                     err, sizeof(err)) != STATUS_OK) {
			participant_set_error(res, "db_error", "%s", err);
			return OUTCOME_RETRYABLE_FAILURE;
		}
	}
	if (participant_exec(tx,
	                     "INSERT INTO work_effects (idempotency_key, saga_id) VALUES ($1, $2)",
	                     2, params, err, sizeof(err)) != STATUS_OK) {
		participant_set_error(res, "db_error", "%s", err);
		return OUTCOME_RETRYABLE_FAILURE;
	}
	if (strcmp(input, "fail-sql") == 0) {
		if (participant_exec(tx, "SELECT 1 / 0", 0, NULL, err, sizeof(err)) != STATUS_OK) {
			participant_set_error(res, "db_error", "%s", err);
			return OUTCOME_RETRYABLE_FAILURE;
		}
		participant_set_error(res, "test_error", "SELECT 1 / 0 succeeded");
		return OUTCOME_PERMANENT_FAILURE; /* the reply check below fails */
	}
	if (strcmp(input, "fail-perm") == 0) {
		participant_set_error(res, "declined", "declined %s", cmd->saga_id);
		return OUTCOME_PERMANENT_FAILURE;
	}
success:
	if (participant_set_output(res, cmd->idempotency_key, strlen(cmd->idempotency_key)) !=
	    STATUS_OK)
		return OUTCOME_RETRYABLE_FAILURE;
	return OUTCOME_SUCCESS;
}

static void
setup(void)
{
	struct participant_config cfg;
	char subject[200], err[512];

	memset(&seen, 0, sizeof(seen));
	published = 0;
	flow_setup(&f, "participant");
	participant_config_init(&cfg);
	cfg.nats_url = harness_nats_url();
	cfg.database_url = harness_database_url();
	cfg.db_schema = f.schema;
	cfg.subject_prefix = f.prefix;
	cfg.stream_prefix = f.stream;
	cfg.subject = SUBJECT;
	cfg.nak_delay_ms = 100;
	cfg.setup_sql = "CREATE TABLE IF NOT EXISTS work_effects"
	                " (idempotency_key text NOT NULL, saga_id text NOT NULL)";
	cr_assert_eq(participant_open(&part, &cfg, handle, NULL, err, sizeof(err)), STATUS_OK, "%s",
	             err);
	snprintf(subject, sizeof(subject), "%s.reply.%s", f.prefix, SUBJECT);
	cr_assert_eq(bus_subscribe(f.bus, subject, NULL, &replies, err, sizeof(err)), STATUS_OK,
	             "%s", err);
}

static void
teardown(void)
{
	bus_unsubscribe(replies);
	participant_close(part);
	flow_teardown(&f);
}

TestSuite(participant, .init = setup, .fini = teardown);

/* Saga i's id ("00000000-0000-4000-8000-0000000000ii"), registered for the handler's counts. */
static const char *
saga(int i)
{
	snprintf(seen.saga_id[i], sizeof(seen.saga_id[i]), "00000000-0000-4000-8000-%012d", i + 1);
	return seen.saga_id[i];
}

/* Publish one command of saga i, as sagad's relay would. */
static void
send_cmd(int i, enum step_phase phase, uint32_t attempt, const char *input)
{
	static struct saga_def def;
	static struct saga_inst inst;
	struct plan_command pc = {.step = 0, .phase = phase, .attempt = attempt};
	struct bytes body = {0};
	char subject[200], reply[200], msg_id[120], err[512];
	int permanent = 0;
	int64_t now = (int64_t)time(NULL) * 1000;

	snprintf(def.name, sizeof(def.name), "work");
	def.version = 1;
	def.n_steps = 1;
	snprintf(def.steps[0].name, sizeof(def.steps[0].name), "work");
	snprintf(def.steps[0].action_subject, sizeof(def.steps[0].action_subject), SUBJECT);
	snprintf(def.steps[0].compensation_subject, sizeof(def.steps[0].compensation_subject),
	         SUBJECT);
	snprintf(inst.id, sizeof(inst.id), "%s", saga(i));
	snprintf(inst.correlation_id, sizeof(inst.correlation_id), "corr-%d", i);
	inst.state = phase == PHASE_ACTION ? SAGA_RUNNING : SAGA_COMPENSATING;
	inst.input.data = (uint8_t *)input;
	inst.input.len = strlen(input);
	pc.deadline_ms = now + 30000;
	snprintf(subject, sizeof(subject), "%s.cmd.%s", f.prefix, SUBJECT);
	snprintf(reply, sizeof(reply), "%s.reply.%s", f.prefix, SUBJECT);
	cr_assert_eq(codec_encode_command(&def, &inst, &pc, reply, now, &body), STATUS_OK);
	/* A new message id each time: JetStream must keep every delivery of a key. */
	snprintf(msg_id, sizeof(msg_id), "test:%d:%d", i, ++published);
	cr_assert_eq(bus_publish_one(f.bus, subject, msg_id, NULL, 0, body.data, body.len, 5000,
	                             &permanent, err, sizeof(err)),
	             STATUS_OK, "%s", err);
	free(body.data);
}

/* One participant batch; how many commands it took. */
static int
run_batch(void)
{
	int handled = 0;
	enum status st = participant_run_once(part, 2000, &handled);

	cr_assert(st == STATUS_OK || st == STATUS_UNAVAILABLE, "run_once: %s", status_name(st));
	return handled;
}

/* The replies that came within wait_ms, decoded into out (at most max); returns how many. */
static int
take_replies(struct reply_msg *out, int max, int want, int wait_ms)
{
	int n = 0;
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct bus_msg *m = NULL;
		char err[256];
		long left;

		clock_gettime(CLOCK_MONOTONIC, &now);
		left = wait_ms - ((now.tv_sec - start.tv_sec) * 1000 +
		                  (now.tv_nsec - start.tv_nsec) / 1000000);
		if (n >= want || left <= 0)
			break;
		if (bus_next(replies, (int)left, &m) != STATUS_OK)
			continue;
		cr_assert(n < max, "more replies than expected");
		cr_assert_eq(codec_decode_reply(bus_msg_data(m), bus_msg_len(m), CODEC_MAX_MESSAGE,
		                                &out[n], err, sizeof(err)),
		             STATUS_OK, "%s", err);
		n++;
		bus_msg_free(m);
	}
	return n;
}

static void
free_replies(struct reply_msg *r, int n)
{
	for (int i = 0; i < n; i++)
		codec_reply_free(&r[i]);
}

/* One batch that must take exactly want commands (all sent before it), and their want replies. */
static int
batch_and_replies(struct reply_msg *r, int want)
{
	int n;

	cr_assert_eq(run_batch(), want, "the commands sent before it, in one batch");
	n = take_replies(r, MAX_REPLYS, want, WAIT_MS);
	cr_assert_eq(n, want, "replies: %d of %d", n, want);
	return n;
}

/* The reply of saga i's phase among r[0..n) with the given attempt (0 = any); NULL if none. */
static const struct reply_msg *
reply_of(const struct reply_msg *r, int n, int i, enum step_phase phase, uint32_t attempt)
{
	for (int k = 0; k < n; k++)
		if (strcmp(r[k].saga_id, seen.saga_id[i]) == 0 && r[k].phase == phase &&
		    (attempt == 0 || r[k].attempt == attempt))
			return &r[k];
	return NULL;
}

/* The reply's error is "<code>: <message>". */
static bool
code_is(const struct reply_msg *r, const char *code)
{
	size_t n = strlen(code);

	return strncmp(r->error, code, n) == 0 && r->error[n] == ':';
}

static long
effects_of(int i)
{
	char sql[200];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM work_effects WHERE saga_id = '%s'",
	         seen.saga_id[i]);
	return flow_sql_long(&f, sql);
}

static long
ledger_rows(void)
{
	return flow_sql_long(&f, "SELECT count(*) FROM participant_ledger");
}

Test(participant, a_key_delivered_twice_in_one_batch_runs_its_handler_once)
{
	struct reply_msg r[MAX_REPLYS];
	const struct reply_msg *first, *second, *third;
	int n;

	send_cmd(0, PHASE_ACTION, 1, "ok");
	send_cmd(0, PHASE_ACTION, 2, "ok"); /* the same key: a resend while the first waits */
	n = batch_and_replies(r, 2);
	first = reply_of(r, n, 0, PHASE_ACTION, 1);
	second = reply_of(r, n, 0, PHASE_ACTION, 2);
	cr_assert(first != NULL && second != NULL);
	cr_assert_eq(first->outcome, OUTCOME_SUCCESS);
	cr_assert_eq(second->outcome, OUTCOME_SUCCESS);
	cr_assert_eq(first->output.len, second->output.len);
	cr_assert_arr_eq(first->output.data, second->output.data, first->output.len);
	cr_assert_eq(seen.calls[0][0], 1, "handler calls: %d", seen.calls[0][0]);
	cr_assert_eq(effects_of(0), 1);
	cr_assert_eq(ledger_rows(), 1);
	free_replies(r, n);

	/* A later batch: the recorded reply again, the handler not called. */
	send_cmd(0, PHASE_ACTION, 3, "ok");
	n = batch_and_replies(r, 1);
	third = reply_of(r, n, 0, PHASE_ACTION, 3);
	cr_assert(third != NULL);
	cr_assert_eq(third->outcome, OUTCOME_SUCCESS);
	cr_assert_eq(seen.calls[0][0], 1);
	cr_assert_eq(effects_of(0), 1);
	free_replies(r, n);
}

Test(participant, a_failing_handler_is_undone_alone_and_the_rest_of_the_batch_commits)
{
	struct reply_msg r[MAX_REPLYS];
	const struct reply_msg *ok, *sql, *perm, *nosql;
	int n;

	send_cmd(0, PHASE_ACTION, 1, "ok");
	send_cmd(1, PHASE_ACTION, 1, "fail-sql");
	send_cmd(2, PHASE_ACTION, 1, "fail-perm");
	send_cmd(3, PHASE_ACTION, 1, "nosql");
	send_cmd(4, PHASE_ACTION, 1, "ok");
	n = batch_and_replies(r, 5);
	ok = reply_of(r, n, 0, PHASE_ACTION, 1);
	sql = reply_of(r, n, 1, PHASE_ACTION, 1);
	perm = reply_of(r, n, 2, PHASE_ACTION, 1);
	nosql = reply_of(r, n, 3, PHASE_ACTION, 1);
	cr_assert(ok != NULL && sql != NULL && perm != NULL && nosql != NULL);
	cr_assert_eq(ok->outcome, OUTCOME_SUCCESS);
	cr_assert_eq(sql->outcome, OUTCOME_RETRYABLE_FAILURE);
	cr_assert(code_is(sql, "db_error"), "error: %s", (sql)->error);
	cr_assert_eq(perm->outcome, OUTCOME_PERMANENT_FAILURE);
	cr_assert(code_is(perm, "declined"), "error: %s", (perm)->error);
	cr_assert_eq(nosql->outcome, OUTCOME_SUCCESS);
	cr_assert_eq(reply_of(r, n, 4, PHASE_ACTION, 1)->outcome, OUTCOME_SUCCESS);
	/* The failed handlers' writes are gone; the others' are kept, once each. */
	cr_assert_eq(effects_of(0), 1);
	cr_assert_eq(effects_of(1), 0);
	cr_assert_eq(effects_of(2), 0);
	cr_assert_eq(effects_of(4), 1);
	/* Recorded: success, permanent failure, success without SQL; not the retryable one. */
	cr_assert_eq(ledger_rows(), 4);
	free_replies(r, n);

	/* Again: the retryable one runs its handler again, the permanent one is answered as before. */
	send_cmd(1, PHASE_ACTION, 2, "ok");
	send_cmd(2, PHASE_ACTION, 2, "fail-perm");
	n = batch_and_replies(r, 2);
	cr_assert_eq(reply_of(r, n, 1, PHASE_ACTION, 2)->outcome, OUTCOME_SUCCESS);
	cr_assert_eq(reply_of(r, n, 2, PHASE_ACTION, 2)->outcome, OUTCOME_PERMANENT_FAILURE);
	cr_assert(code_is(reply_of(r, n, 2, PHASE_ACTION, 2), "declined"), "error: %s",
	          (reply_of(r, n, 2, PHASE_ACTION, 2))->error);
	cr_assert_eq(seen.calls[1][0], 2);
	cr_assert_eq(seen.calls[2][0], 1);
	cr_assert_eq(effects_of(1), 1);
	free_replies(r, n);
}

Test(participant, an_action_after_its_compensation_never_runs_in_the_same_batch_or_later)
{
	struct reply_msg r[MAX_REPLYS];
	const struct reply_msg *comp, *act;
	int n;

	/* The same batch: the compensation first, then its (late) action. */
	send_cmd(0, PHASE_COMPENSATION, 1, "ok");
	send_cmd(0, PHASE_ACTION, 1, "ok");
	n = batch_and_replies(r, 2);
	comp = reply_of(r, n, 0, PHASE_COMPENSATION, 1);
	act = reply_of(r, n, 0, PHASE_ACTION, 1);
	cr_assert(comp != NULL && act != NULL);
	cr_assert_eq(comp->outcome, OUTCOME_SUCCESS);
	cr_assert_eq(act->outcome, OUTCOME_PERMANENT_FAILURE);
	cr_assert(code_is(act, "compensated"), "error: %s", (act)->error);
	cr_assert_eq(seen.calls[0][0], 0, "the action's handler ran");
	free_replies(r, n);

	/* Separate batches. */
	send_cmd(1, PHASE_COMPENSATION, 1, "ok");
	n = batch_and_replies(r, 1);
	free_replies(r, n);
	send_cmd(1, PHASE_ACTION, 1, "ok");
	n = batch_and_replies(r, 1);
	cr_assert_eq(r[0].outcome, OUTCOME_PERMANENT_FAILURE);
	cr_assert(code_is(&r[0], "compensated"), "error: %s", r[0].error);
	cr_assert_eq(seen.calls[1][0], 0);
	free_replies(r, n);
	/* Two compensations' effects, no action's; each compensation and tombstone recorded. */
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM work_effects"), 2);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_ledger WHERE outcome = 3"
	                               " AND error_code = 'compensated'"),
	             2);
}

Test(participant, a_connection_lost_mid_batch_sends_no_reply_and_loses_no_effect)
{
	struct reply_msg r[MAX_REPLYS];
	int n, taken = 0;

	send_cmd(0, PHASE_ACTION, 1, "ok");
	send_cmd(1, PHASE_ACTION, 1, "kill-conn");
	send_cmd(2, PHASE_ACTION, 1, "ok");
	cr_assert_eq(run_batch(), 3, "one batch");
	cr_assert_eq(seen.killed, 1);
	/* The first command's effect went with the transaction: no reply may claim it. */
	n = take_replies(r, MAX_REPLYS, 1, 500);
	cr_assert_eq(n, 0, "a reply was sent for a batch that never committed");
	cr_assert_eq(effects_of(0), 0);
	/* Reconnected, the put-back commands come again and are answered once each. */
	for (int round = 0; round < 40 && taken < 3; round++)
		taken += run_batch();
	cr_assert_geq(taken, 3);
	n = take_replies(r, MAX_REPLYS, 3, WAIT_MS);
	cr_assert_eq(n, 3);
	for (int i = 0; i < 3; i++) {
		const struct reply_msg *x = reply_of(r, n, i, PHASE_ACTION, 1);

		cr_assert(x != NULL);
		cr_assert_eq(x->outcome, OUTCOME_SUCCESS, "saga %d: outcome %d", i, x->outcome);
		cr_assert_eq(effects_of(i), 1, "saga %d: effects %ld", i, effects_of(i));
	}
	cr_assert_eq(ledger_rows(), 3);
	free_replies(r, n);
}

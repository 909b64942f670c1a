/* sagactl end to end against real sagad, participants, PostgreSQL and NATS: every command. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "flow.h"
#include "harness.h"

/* The order saga; compensations give up fast so a failing one ends `failed` quickly. */
static const char order_yaml[] =
        "name: order\n"
        "steps:\n"
        "  - name: reserve_stock\n"
        "    action: stock.reserve\n"
        "    compensation: stock.release\n"
        "    timeout: 30s\n"
        "    retry: {max_attempts: 3, initial_backoff: 20ms, max_backoff: 100ms}\n"
        "    compensation_retry: {max_attempts: 2, initial_backoff: 10ms, max_backoff: 50ms}\n"
        "  - name: charge_card\n"
        "    action: payments.charge\n"
        "    compensation: payments.refund\n"
        "    timeout: 30s\n"
        "    retry: {max_attempts: 3, initial_backoff: 20ms, max_backoff: 100ms}\n"
        "  - name: ship\n"
        "    action: shipping.ship\n"
        "    timeout: 30s\n";

/* A saga nobody serves: it stays running on its first step. */
static const char slow_yaml[] = "name: slow\n"
                                "steps:\n"
                                "  - name: wait_here\n"
                                "    action: nobody.work\n"
                                "    compensation: nobody.undo\n"
                                "    timeout: 10m\n";

static struct flow f;
static char out[256 * 1024];
static char err[64 * 1024];

static void
teardown(void)
{
	flow_teardown(&f);
}

TestSuite(sagactl, .fini = teardown, .timeout = 240);

/* ---- helpers ---- */

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Run sagactl; stdout in out, stderr in err. */
static int
ctl(const char *const *args)
{
	return flow_sagactl(&f, args, out, sizeof(out), err, sizeof(err));
}

/* A tiny JSON syntax check (RFC 8259 grammar, no semantic checks). */
static const char *json_value(const char *p, int depth);

static const char *
json_ws(const char *p)
{
	while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
		p++;
	return p;
}

static const char *
json_string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	while (*p != '"') {
		if ((unsigned char)*p < 0x20)
			return NULL;
		if (*p == '\\') {
			p++;
			if (*p == 'u') {
				for (int i = 1; i <= 4; i++) {
					if (!isxdigit((unsigned char)p[i]))
						return NULL;
				}
				p += 4;
			} else if (strchr("\"\\/bfnrt", *p) == NULL || *p == '\0') {
				return NULL;
			}
		}
		p++;
	}
	return p + 1;
}

static const char *
json_number(const char *p)
{
	const char *start;

	if (*p == '-')
		p++;
	start = p;
	while (isdigit((unsigned char)*p))
		p++;
	if (p == start)
		return NULL;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return NULL;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!isdigit((unsigned char)*p))
			return NULL;
		while (isdigit((unsigned char)*p))
			p++;
	}
	return p;
}

static const char *
json_value(const char *p, int depth)
{
	char close;

	p = json_ws(p);
	if (depth > 64)
		return NULL;
	if (*p == '"')
		return json_string(p);
	if (*p == '{' || *p == '[') {
		close = *p == '{' ? '}' : ']';
		p = json_ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				p = json_string(json_ws(p));
				if (p == NULL)
					return NULL;
				p = json_ws(p);
				if (*p++ != ':')
					return NULL;
			}
			p = json_value(p, depth + 1);
			if (p == NULL)
				return NULL;
			p = json_ws(p);
			if (*p == close)
				return p + 1;
			if (*p++ != ',')
				return NULL;
		}
	}
	if (strncmp(p, "true", 4) == 0)
		return p + 4;
	if (strncmp(p, "false", 5) == 0)
		return p + 5;
	if (strncmp(p, "null", 4) == 0)
		return p + 4;
	return json_number(p);
}

static int
json_valid(const char *text)
{
	const char *end = json_value(text, 0);

	return end != NULL && *json_ws(end) == '\0';
}

/* The integer after "key": in JSON text (first occurrence), or -1. */
static long
json_int(const char *text, const char *key)
{
	char needle[80];
	const char *p;

	snprintf(needle, sizeof(needle), "\"%s\": ", key);
	p = strstr(text, needle);
	return p != NULL ? strtol(p + strlen(needle), NULL, 10) : -1;
}

static int
count_of(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* Wait until the query returns want (or timeout); returns the last value. */
static long
wait_for(const char *sql, long want, int timeout_ms)
{
	long v = flow_sql_long(&f, sql);

	for (int waited = 0; v != want && waited < timeout_ms; waited += 100) {
		usleep(100 * 1000);
		v = flow_sql_long(&f, sql);
	}
	return v;
}

static long
audit_rows(const char *action, const char *outcome_like)
{
	char sql[512];

	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM sagad_audit WHERE action = '%s' AND outcome LIKE '%s'",
	         action, outcome_like);
	return flow_sql_long(&f, sql);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Publish n undecodable replies on <prefix>.reply.stock.reserve; each becomes a dead letter. */
static void
publish_garbage(int n, const char *tag)
{
	static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0x07, 'x'};
	struct bus_header h[1] = {{"X-Test", "hello"}};
	char subject[256], msg_id[64], e[256];
	int failed = 0;

	snprintf(subject, sizeof(subject), "%s.reply.stock.reserve", f.prefix);
	for (int i = 0; i < n; i++) {
		snprintf(msg_id, sizeof(msg_id), "garbage-%s-%d", tag, i);
		cr_assert_eq(bus_publish_async(f.bus, subject, msg_id, h, 1, garbage,
		                               sizeof(garbage), e, sizeof(e)),
		             STATUS_OK, "%s", e);
	}
	cr_assert_eq(bus_publish_wait(f.bus, 5000, &failed, e, sizeof(e)), STATUS_OK, "%s", e);
	cr_assert_eq(failed, 0);
}

/* Encode a StepReply for one step of a saga (attempt 1). */
static struct bytes
encode_reply(const char *saga_id, const char *step, enum reply_outcome outcome)
{
	struct command_msg cmd;
	struct bytes b = {0};
	static const char output[] = "{\"reservation\":\"by-test\"}";

	memset(&cmd, 0, sizeof(cmd));
	snprintf(cmd.saga_id, sizeof(cmd.saga_id), "%s", saga_id);
	snprintf(cmd.correlation_id, sizeof(cmd.correlation_id), "corr-test");
	snprintf(cmd.step, sizeof(cmd.step), "%s", step);
	cmd.phase = PHASE_ACTION;
	cmd.attempt = 1;
	snprintf(cmd.idempotency_key, sizeof(cmd.idempotency_key), "%s/%s/a", saga_id, step);
	cr_assert_eq(codec_encode_reply(&cmd, outcome,
	                                (struct bytes){(uint8_t *)output, sizeof(output) - 1}, NULL,
	                                NULL, "test", 0, &b),
	             STATUS_OK);
	return b;
}

/* Publish n well-formed replies for sagas that do not exist (unknown_saga letters). */
static void
publish_unknown_saga_replies(int n)
{
	char subject[256], msg_id[64], e[256], id[SAGA_ID_LEN + 1];
	int failed = 0;

	snprintf(subject, sizeof(subject), "%s.reply.stock.reserve", f.prefix);
	for (int i = 0; i < n; i++) {
		struct bytes b;

		cr_assert(saga_new_id(id));
		b = encode_reply(id, "reserve_stock", OUTCOME_SUCCESS);
		snprintf(msg_id, sizeof(msg_id), "unknown-%d", i);
		cr_assert_eq(bus_publish_async(f.bus, subject, msg_id, NULL, 0, b.data, b.len, e,
		                               sizeof(e)),
		             STATUS_OK);
		free(b.data);
	}
	cr_assert_eq(bus_publish_wait(f.bus, 5000, &failed, e, sizeof(e)), STATUS_OK, "%s", e);
}

static void
wait_letters(const char *where, long want)
{
	char sql[512];
	long got;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM saga_dead_letter WHERE %s", where);
	got = wait_for(sql, want, 20000);
	if (got != want)
		flow_dump_logs(&f);
	cr_assert_eq(got, want, "dead letters where %s: %ld, want %ld", where, got, want);
}

static const char *
fingerprint_of(const char *definition, const char *step, const char *error_class)
{
	static char fp[64];
	char sql[256];

	snprintf(sql, sizeof(sql), "SELECT sagad_dead_letter_fingerprint(%s, %s, '%s')", definition,
	         step, error_class);
	snprintf(fp, sizeof(fp), "%s", flow_sql(&f, sql));
	return fp;
}

/* ---- sagas ---- */

Test(sagactl, list_filters_show_and_trace_by_correlation_id)
{
	char slow_id[64], shared_id[64], sql[256];

	flow_setup(&f, "t_ctl_list");
	flow_define(&f, order_yaml);
	flow_define(&f, slow_yaml);
	flow_start_sagad(&f, NULL);
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);

	/* Starts through sagactl: two share a correlation id. */
	cr_assert_eq(ctl(ARGS("start", "order", "--input", "{\"order\":1}", "--correlation-id",
	                      "web-shared")),
	             0, "%s%s", out, err);
	cr_assert(strstr(out, "accepted saga_id=") != NULL, "%s", out);
	cr_assert_eq(ctl(ARGS("start", "order", "--input", "{\"order\":2}", "--correlation-id",
	                      "web-shared", "--json")),
	             0, "%s%s", out, err);
	cr_assert(json_valid(out), "start --json: %s", out);
	cr_assert_eq(ctl(ARGS("start", "order", "--correlation-id", "web-other")), 0, "%s", err);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(ctl(ARGS("start", "slow", "--input", "{\"waits\":true}")), 0, "%s",
		             err);
	cr_assert_eq(
	        wait_for("SELECT count(*) FROM saga_instance WHERE state = 'completed'", 3, 30000),
	        3);

	cr_assert_eq(ctl(ARGS("list")), 0, "%s", err);
	cr_assert_eq(harness_count_lines(out), 6, "header + 5 sagas:\n%s", out);
	cr_assert(strstr(out, "slow v1") != NULL && strstr(out, "order v1") != NULL, "%s", out);
	cr_assert_eq(ctl(ARGS("list", "--json")), 0);
	cr_assert(json_valid(out), "list --json: %s", out);
	cr_assert_eq(json_int(out, "count"), 5);
	cr_assert_eq(ctl(ARGS("list", "--state", "completed", "--json")), 0);
	cr_assert_eq(json_int(out, "count"), 3, "%s", out);
	cr_assert_eq(ctl(ARGS("list", "--definition", "slow", "--json")), 0);
	cr_assert_eq(json_int(out, "count"), 2, "%s", out);
	cr_assert_eq(count_of(out, "\"state\": \"running\""), 2, "%s", out);
	cr_assert_eq(ctl(ARGS("list", "--older-than", "1h", "--json")), 0);
	cr_assert_eq(json_int(out, "count"), 0, "%s", out);
	cr_assert_eq(ctl(ARGS("list", "--older-than", "1ms", "--json")), 0);
	cr_assert_eq(json_int(out, "count"), 5, "%s", out);
	cr_assert_eq(ctl(ARGS("list", "--limit", "2")), 0);
	cr_assert_eq(harness_count_lines(out), 4, "header + 2 + a hint:\n%s", out);
	cr_assert(strstr(out, "--limit") != NULL, "%s", out);
	cr_assert_eq(ctl(ARGS("list", "--stuck", "--json")), 0);
	cr_assert_eq(json_int(out, "count"), 0, "nothing is stuck for 5 minutes yet: %s", out);
	flow_sql(&f, "UPDATE sagad_setting SET value = '0 seconds' WHERE name = 'stuck_after'");
	cr_assert_eq(ctl(ARGS("list", "--stuck", "--json")), 0);
	cr_assert_eq(json_int(out, "count"), 2, "the two slow sagas wait: %s", out);

	/* show */
	snprintf(slow_id, sizeof(slow_id), "%s",
	         flow_sql(&f,
	                  "SELECT id FROM saga_instance WHERE definition_name = 'slow' LIMIT 1"));
	cr_assert_eq(ctl(ARGS("show", slow_id)), 0, "%s", err);
	cr_assert(strstr(out, "running") != NULL, "%s", out);
	cr_assert(strstr(out, "slow v1") != NULL, "%s", out);
	cr_assert(strstr(out, "{\"waits\":true}") != NULL, "the input: %s", out);
	cr_assert(strstr(out, "wait_here") != NULL, "the step: %s", out);
	cr_assert_eq(ctl(ARGS("show", slow_id, "--json")), 0);
	cr_assert(json_valid(out), "show --json: %s", out);
	cr_assert(strstr(out, "\"steps\"") != NULL && strstr(out, "\"attempts\": 1") != NULL, "%s",
	          out);
	snprintf(sql, sizeof(sql),
	         "SELECT id FROM saga_instance WHERE correlation_id = 'web-shared'"
	         " ORDER BY created_at LIMIT 1");
	snprintf(shared_id, sizeof(shared_id), "%s", flow_sql(&f, sql));
	cr_assert_eq(ctl(ARGS("show", shared_id)), 0);
	cr_assert(strstr(out, "completed") != NULL && strstr(out, "web-shared") != NULL, "%s", out);
	cr_assert(strstr(out, "{\"order\":1}") != NULL, "%s", out);
	cr_assert(strstr(out, "reservation") != NULL, "the step outputs: %s", out);

	/* trace by correlation id: both sagas, each in seq order */
	cr_assert_eq(ctl(ARGS("trace", "web-shared", "--json")), 0, "%s", err);
	cr_assert(json_valid(out), "trace --json: %s", out);
	cr_assert_eq(count_of(out, "\"event\": \"start\""), 2, "%s", out);
	cr_assert_eq(json_int(out, "count"),
	             flow_sql_long(&f, "SELECT count(*) FROM saga_transition"
	                               " WHERE correlation_id = 'web-shared'"));
	{
		/* The first row is the first saga's start; seq numbers go 1, 2, 3 ... per saga. */
		const char *p = strstr(out, "\"seq\": ");
		long prev = 0;
		int sagas = 0;

		cr_assert_not_null(p);
		for (; p != NULL; p = strstr(p + 1, "\"seq\": ")) {
			long seq = strtol(p + 7, NULL, 10);

			if (seq == 1)
				sagas++;
			else
				cr_assert_eq(seq, prev + 1, "seq order: %s", out);
			prev = seq;
		}
		cr_assert_eq(sagas, 2);
	}
	cr_assert_eq(ctl(ARGS("trace", "web-shared")), 0);
	cr_assert(strstr(out, "new -> running") != NULL, "%s", out);
	cr_assert(strstr(out, "-> completed") != NULL, "%s", out);
	cr_assert_eq(ctl(ARGS("trace", slow_id)), 0, "by saga id too: %s", err);
	cr_assert_eq(harness_count_lines(out), 2, "%s", out);

	/* Mistakes are usage errors (2), unknown things failures (1). */
	cr_assert_eq(ctl(ARGS("list", "--state", "bogus")), 2);
	cr_assert(strstr(err, "--state") != NULL, "%s", err);
	cr_assert_eq(ctl(ARGS("list", "--frobnicate")), 2);
	cr_assert_eq(ctl(ARGS("list", "extra")), 2);
	cr_assert_eq(ctl(ARGS("show", "not-a-uuid")), 2);
	cr_assert_eq(ctl(ARGS("show", "00000000-0000-4000-8000-000000000000")), 1);
	cr_assert(strstr(err, "no saga") != NULL, "%s", err);
	cr_assert_eq(ctl(ARGS("trace", "nobody-has-this")), 1);
	cr_assert_eq(ctl(ARGS("frobnicate")), 2);

	/* Every action is in the audit trail: two definitions, five starts. */
	cr_assert_eq(audit_rows("define", "registered"), 2);
	cr_assert_eq(audit_rows("start", "accepted: %"), 5);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM sagad_audit WHERE actor = ''"), 0);
}

Test(sagactl, bulk_abort_needs_a_confirmation_with_the_exact_count)
{
	char id[64];

	flow_setup(&f, "t_ctl_abort");
	flow_define(&f, slow_yaml);
	flow_start_sagad(&f, NULL);
	for (int i = 0; i < 3; i++) {
		struct start_answer a;

		cr_assert_eq(flow_start_saga(&f, "slow", "{}", NULL, &a), STATUS_OK);
		cr_assert_eq(a.status, START_ACCEPTED);
	}
#define RUNNING "SELECT count(*) FROM saga_instance WHERE state = 'running'"
	/* A bulk retry takes failed sagas unless running ones are asked for. */
	cr_assert_eq(ctl(ARGS("retry", "--all", "--definition", "slow", "--dry-run", "--json")), 5);
	cr_assert_eq(json_int(out, "count"), 0, "%s", out);
	cr_assert_eq(ctl(ARGS("retry", "--all", "--state", "running", "--dry-run", "--json")), 5);
	cr_assert_eq(json_int(out, "count"), 3, "%s", out);
	cr_assert_eq(ctl(ARGS("abort", "--all", "--definition", "slow", "--note", "bad batch",
	                      "--dry-run")),
	             5, "%s%s", out, err);
	cr_assert(strstr(out, "3 saga(s) would be aborted") != NULL, "%s", out);
	cr_assert_eq(flow_sql_long(&f, RUNNING), 3, "a dry run changes nothing");
	cr_assert_eq(ctl(ARGS("abort", "--all", "--definition", "slow", "--note", "bad batch",
	                      "--dry-run", "--json")),
	             5);
	cr_assert(json_valid(out), "%s", out);
	cr_assert_eq(json_int(out, "count"), 3);
	cr_assert_eq(ctl(ARGS("abort", "--all", "--definition", "slow", "--note", "bad batch")), 5);
	cr_assert(strstr(err, "--confirm 3") != NULL, "says what to do: %s", err);
	cr_assert_eq(ctl(ARGS("abort", "--all", "--definition", "slow", "--note", "bad batch",
	                      "--confirm", "2")),
	             5);
	cr_assert(strstr(err, "refused") != NULL, "%s", err);
	cr_assert_eq(flow_sql_long(&f, RUNNING), 3, "a wrong count changes nothing");
	cr_assert_eq(ctl(ARGS("abort", "--all", "--definition", "slow", "--confirm", "3")), 2,
	             "abort needs a note");
	cr_assert_eq(ctl(ARGS("abort", "--all", "--definition", "slow", "--note", "bad batch",
	                      "--confirm", "3", "--json")),
	             0, "%s%s", out, err);
	cr_assert(json_valid(out), "%s", out);
	cr_assert_eq(json_int(out, "applied"), 3, "%s", out);
	cr_assert_eq(count_of(out, "\"outcome\": \"applied\""), 3, "%s", out);
	cr_assert_eq(flow_sql_long(&f, RUNNING), 0);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_transition WHERE event = 'abort'"
	                               " AND outcome = 'applied' AND detail LIKE '%bad batch%'"),
	             3);

	/* A single abort of a saga that is no longer running is refused (exit 1). */
	snprintf(id, sizeof(id), "%s", flow_sql(&f, "SELECT id FROM saga_instance LIMIT 1"));
	cr_assert_eq(ctl(ARGS("abort", id, "--note", "again")), 1);
	cr_assert(strstr(err, "refused") != NULL, "%s", err);
	cr_assert_eq(ctl(ARGS("abort", "--all", "--note", "x", "--yes")), 0, "%s", err);
	cr_assert(strstr(out, "no saga matches") != NULL, "%s", out);

	cr_assert_eq(audit_rows("abort.bulk", "dry_run"), 2);
	cr_assert_eq(audit_rows("abort.bulk", "refused: confirmation needed"), 1);
	cr_assert_eq(audit_rows("abort.bulk", "refused: --confirm 2 but 3 match"), 1);
	cr_assert_eq(audit_rows("abort.bulk", "applied 3, refused 0"), 1);
	cr_assert_eq(audit_rows("abort", "applied: running -> compensating"), 3);
	cr_assert_eq(audit_rows("abort", "refused: %"), 1);
	cr_assert_eq(flow_sql_long(&f,
	                           "SELECT count(*) FROM sagad_audit WHERE action = 'abort.bulk'"
	                           " AND count = 3 AND filter = '--definition slow'"
	                           " AND note = 'bad batch'"),
	             5, "two dry runs, two refusals, one done");
}

Test(sagactl, failed_sagas_retried_in_bulk_by_letter_replay_and_resolved)
{
	const char *const no_undo[] = {"--fail-compensation-rate=1", NULL};
	const char *const decline[] = {"--fail-rate=1", NULL};
	char letter[32], again[32], saga[64], sql[512];

	flow_setup(&f, "t_ctl_failed");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, NULL);
	flow_start_participant(&f, "stock", no_undo);
	flow_start_participant(&f, "payments", decline);
	for (int i = 0; i < 3; i++) {
		struct start_answer a;

		cr_assert_eq(flow_start_saga(&f, "order", "{}", NULL, &a), STATUS_OK);
	}
#define FAILED "SELECT count(*) FROM saga_instance WHERE state = 'failed'"
	cr_assert_eq(wait_for(FAILED, 3, 30000), 3);
	wait_letters("error_class = 'compensation_exhausted' AND status = 'open'", 3);

	cr_assert_eq(ctl(ARGS("retry", "--all", "--state", "failed", "--dry-run")), 5);
	cr_assert_eq(flow_sql_long(&f, FAILED), 3);
	cr_assert_eq(ctl(ARGS("retry", "--all", "--state", "failed", "--confirm", "3", "--note",
	                      "stock fixed", "--actor", "tester")),
	             0, "%s%s", out, err);
	cr_assert_eq(count_of(out, "failed -> compensating"), 3, "%s", out);
	/* The letters that asked for an operator are closed by the retry. */
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter WHERE status ="
	                               " 'replayed' AND replayed_by = 'tester'"
	                               " AND replay_outcome LIKE 'saga retried by an operator%'"),
	             3);
	/* Compensation still fails: each saga fails again, with a letter pointing back. */
	cr_assert_eq(wait_for(FAILED, 3, 30000), 3);
	wait_letters("status = 'open' AND replay_of IS NOT NULL", 3);

	/* Replaying a saga-level letter retries its saga through the engine. */
	snprintf(letter, sizeof(letter), "%s",
	         flow_sql(&f, "SELECT min(id) FROM saga_dead_letter WHERE status = 'open'"));
	snprintf(sql, sizeof(sql), "SELECT saga_id FROM saga_dead_letter WHERE id = %s", letter);
	snprintf(saga, sizeof(saga), "%s", flow_sql(&f, sql));
	cr_assert_eq(ctl(ARGS("dlq", "replay", letter, "--actor", "tester", "--note", "once more")),
	             0, "%s%s", out, err);
	cr_assert(strstr(out, "retried saga") != NULL, "%s", out);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_dead_letter WHERE id = %s AND status = 'replayed'"
	         " AND replayed_by = 'tester' AND replayed_at IS NOT NULL"
	         " AND replay_outcome LIKE 'retried saga %% failed -> compensating'",
	         letter);
	cr_assert_eq(flow_sql_long(&f, sql), 1);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_transition WHERE saga_id = '%s' AND event = 'retry'"
	         " AND outcome = 'applied' AND detail LIKE '%%replay of dead letter %s%%'",
	         saga, letter);
	cr_assert_eq(flow_sql_long(&f, sql), 1);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_dead_letter WHERE replay_of = %s AND status = 'open'",
	         letter);
	cr_assert_eq(wait_for(sql, 1, 30000), 1, "it failed again: a new letter");
	cr_assert_eq(ctl(ARGS("dlq", "replay", letter)), 1, "replaying twice: refused");
	cr_assert(strstr(err, "already replayed") != NULL, "%s", err);

	/* Resolving a failed saga discards its open letter. */
	snprintf(again, sizeof(again), "%s",
	         flow_sql(&f, "SELECT min(id) FROM saga_dead_letter WHERE status = 'open'"));
	snprintf(sql, sizeof(sql), "SELECT saga_id FROM saga_dead_letter WHERE id = %s", again);
	snprintf(saga, sizeof(saga), "%s", flow_sql(&f, sql));
	cr_assert_eq(ctl(ARGS("resolve", saga)), 2, "resolve needs a note");
	cr_assert_eq(ctl(ARGS("resolve", saga, "--note", "refunded by hand", "--json")), 0, "%s",
	             err);
	cr_assert(json_valid(out), "%s", out);
	cr_assert(strstr(out, "\"to\": \"resolved\"") != NULL, "%s", out);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_dead_letter WHERE id = %s AND status = 'discarded'"
	         " AND note LIKE '%%saga resolved: refunded by hand%%'",
	         again);
	cr_assert_eq(flow_sql_long(&f, sql), 1);
	cr_assert_eq(ctl(ARGS("dlq", "replay", again)), 1);
	cr_assert(strstr(err, "discarded") != NULL, "%s", err);
	cr_assert_eq(ctl(ARGS("retry", saga)), 1, "a resolved saga cannot be retried");

	cr_assert_eq(audit_rows("retry.bulk", "dry_run"), 1);
	cr_assert_eq(audit_rows("retry.bulk", "applied 3, refused 0"), 1);
	cr_assert_eq(audit_rows("retry", "applied: failed -> compensating"), 3);
	cr_assert_eq(audit_rows("retry", "refused: %"), 1);
	cr_assert_eq(audit_rows("resolve", "applied: failed -> resolved"), 1);
	cr_assert_eq(audit_rows("dlq.replay", "retried saga %"), 1);
	cr_assert_eq(audit_rows("dlq.replay", "refused: %"), 2);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM sagad_audit WHERE actor = 'tester'"),
	             5);

	/* Two letters of one failed saga replayed at once: the saga is retried once. */
	{
		char copy[32], oa[160], ea[160], ob[160], eb[160], ta[2048], tb[2048];
		pid_t pa, pb;
		int ra, rb;
		long before;

		snprintf(letter, sizeof(letter), "%s",
		         flow_sql(&f,
		                  "SELECT min(d.id) FROM saga_dead_letter d JOIN saga_instance i"
		                  " ON i.id = d.saga_id WHERE d.status = 'open'"
		                  " AND i.state = 'failed'"));
		cr_assert_neq(letter[0], '\0');
		snprintf(sql, sizeof(sql),
		         "INSERT INTO saga_dead_letter (source_subject, source_key, reason,"
		         " error_class, saga_id, step) SELECT 'saga', 'test:copy', reason, "
		         "error_class,"
		         " saga_id, step FROM saga_dead_letter WHERE id = %s RETURNING id",
		         letter);
		snprintf(copy, sizeof(copy), "%s", flow_sql(&f, sql));
		snprintf(sql, sizeof(sql), "SELECT saga_id FROM saga_dead_letter WHERE id = %s",
		         letter);
		snprintf(saga, sizeof(saga), "%s", flow_sql(&f, sql));
		snprintf(oa, sizeof(oa), "/tmp/%s_a.out", f.schema);
		snprintf(ea, sizeof(ea), "/tmp/%s_a.err", f.schema);
		snprintf(ob, sizeof(ob), "/tmp/%s_b.out", f.schema);
		snprintf(eb, sizeof(eb), "/tmp/%s_b.err", f.schema);
		snprintf(sql, sizeof(sql),
		         "SELECT count(*) FROM saga_transition WHERE saga_id = '%s' AND event ="
		         " 'retry' AND detail LIKE '%%replay of dead letter%%'",
		         saga);
		before = flow_sql_long(&f, sql);
		pa = flow_sagactl_spawn(&f, ARGS("dlq", "replay", letter), oa, ea);
		pb = flow_sagactl_spawn(&f, ARGS("dlq", "replay", copy), ob, eb);
		ra = harness_wait(pa, 60000);
		rb = harness_wait(pb, 60000);
		harness_read_file(ea, ta, sizeof(ta));
		harness_read_file(eb, tb, sizeof(tb));
		unlink(oa);
		unlink(ea);
		unlink(ob);
		unlink(eb);
		cr_assert((ra == 0 && rb == 1) || (ra == 1 && rb == 0),
		          "exit codes %d, %d: %s | %s", ra, rb, ta, tb);
		cr_assert_eq(flow_sql_long(&f, sql), before + 1, "retried once: %s | %s", ta, tb);
		snprintf(sql, sizeof(sql),
		         "SELECT count(*) FROM saga_dead_letter WHERE id IN (%s, %s)"
		         " AND status = 'replayed'",
		         letter, copy);
		cr_assert_eq(flow_sql_long(&f, sql), 2, "both letters are closed");
	}
}

/* ---- dead letters ---- */

Test(sagactl, dlq_list_groups_by_fingerprint_diagnose_and_discard)
{
	char fp_garbage[64], fp_unknown[64], id[32], unknown_id[32], sql[256];

	flow_setup(&f, "t_ctl_dlq");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, NULL);
	publish_garbage(3, "g");
	publish_unknown_saga_replies(2);
	wait_letters("true", 5);
	snprintf(fp_garbage, sizeof(fp_garbage), "%s",
	         fingerprint_of("NULL", "NULL", "undecodable"));
	snprintf(fp_unknown, sizeof(fp_unknown), "%s",
	         fingerprint_of("NULL", "'reserve_stock'", "unknown_saga"));

	cr_assert_eq(ctl(ARGS("dlq", "list")), 0, "%s", err);
	cr_assert_eq(harness_count_lines(out), 3, "two groups:\n%s", out);
	cr_assert(strstr(out, fp_garbage) != NULL && strstr(out, fp_unknown) != NULL, "%s", out);
	cr_assert_eq(ctl(ARGS("dlq", "list", "--json")), 0);
	cr_assert(json_valid(out), "%s", out);
	cr_assert_eq(json_int(out, "count"), 2);
	cr_assert(strstr(out, "\"error_class\": \"undecodable\",\n      \"count\": 3") != NULL,
	          "%s", out);
	cr_assert(strstr(out, "\"error_class\": \"unknown_saga\",\n      \"count\": 2") != NULL,
	          "%s", out);
	if (flow_sql_long(&f,
	                  "SELECT count(*) FROM pg_views WHERE viewname ="
	                  " 'saga_dead_letter_groups' AND schemaname = current_schema()") == 1) {
		/* The operator view (0004) names the groups the same way. */
		snprintf(sql, sizeof(sql),
		         "SELECT letters FROM saga_dead_letter_groups WHERE fingerprint = '%s'",
		         fp_garbage);
		cr_assert_eq(flow_sql_long(&f, sql), 3);
	}
	cr_assert_eq(ctl(ARGS("dlq", "list", "--all", "--json")), 0);
	cr_assert(json_valid(out), "%s", out);
	cr_assert_eq(json_int(out, "count"), 5);
	cr_assert_eq(ctl(ARGS("dlq", "list", "--all", "--class", "unknown_saga")), 0);
	cr_assert_eq(harness_count_lines(out), 3, "%s", out);

	/* show: everything, payload as hex and as escaped text, headers. */
	snprintf(id, sizeof(id), "%s",
	         flow_sql(&f, "SELECT min(id) FROM saga_dead_letter WHERE error_class ="
	                      " 'undecodable'"));
	cr_assert_eq(ctl(ARGS("dlq", "show", id)), 0, "%s", err);
	cr_assert(strstr(out, "ffffff0778") != NULL, "%s", out);
	cr_assert(strstr(out, "\\xff\\xff\\xff\\x07x") != NULL, "%s", out);
	cr_assert(strstr(out, "X-Test") != NULL && strstr(out, "Nats-Msg-Id") != NULL, "%s", out);
	cr_assert(strstr(out, fp_garbage) != NULL, "%s", out);
	cr_assert_eq(ctl(ARGS("dlq", "show", id, "--json")), 0);
	cr_assert(json_valid(out), "%s", out);
	cr_assert(strstr(out, "\"payload_hex\": \"ffffff0778\"") != NULL, "%s", out);
	cr_assert(strstr(out, "\"X-Test\": \"hello\"") != NULL, "headers as an object: %s", out);
	cr_assert_eq(ctl(ARGS("dlq", "show", "999999")), 1);
	cr_assert_eq(ctl(ARGS("dlq", "show", "x1")), 2);

	/* diagnose */
	cr_assert_eq(ctl(ARGS("dlq", "diagnose", id)), 2, "needs a note");
	cr_assert_eq(ctl(ARGS("dlq", "diagnose", id, "--note", "bytes from a broken client",
	                      "--actor", "ann")),
	             0, "%s", err);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_dead_letter WHERE id = %s AND status = 'diagnosed'"
	         " AND note = 'bytes from a broken client' AND diagnosed_by = 'ann'"
	         " AND diagnosed_at IS NOT NULL",
	         id);
	cr_assert_eq(flow_sql_long(&f, sql), 1);
	cr_assert_eq(ctl(ARGS("dlq", "diagnose", "999999", "--note", "x")), 1);
	cr_assert_eq(ctl(ARGS("dlq", "list", "--json")), 0);
	cr_assert(strstr(out, "\"diagnosed\": 1") != NULL, "%s", out);

	/* discard a group: dry run, confirmation, then for real (open and diagnosed ones). */
	cr_assert_eq(
	        ctl(ARGS("dlq", "discard", "--group", fp_garbage, "--note", "junk", "--dry-run")),
	        5);
	cr_assert(strstr(out, "3 letter(s) would be discarded") != NULL, "%s", out);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"
	                               " WHERE status = 'discarded'"),
	             0, "a dry run changes nothing");
	cr_assert_eq(ctl(ARGS("dlq", "discard", "--group", fp_garbage, "--note", "junk")), 5);
	cr_assert(strstr(err, "--confirm 3") != NULL, "%s", err);
	cr_assert_eq(ctl(ARGS("dlq", "discard", "--group", fp_garbage, "--note", "junk",
	                      "--confirm", "4")),
	             5);
	cr_assert_eq(ctl(ARGS("dlq", "discard", "--group", fp_garbage, "--confirm", "3")), 2,
	             "needs a note");
	cr_assert_eq(ctl(ARGS("dlq", "discard", "--group", fp_garbage, "--note", "junk",
	                      "--confirm", "3")),
	             0, "%s", err);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter WHERE status ="
	                               " 'discarded' AND error_class = 'undecodable'"
	                               " AND discarded_at IS NOT NULL AND note LIKE '%junk'"),
	             3);
	/* discard one letter */
	snprintf(unknown_id, sizeof(unknown_id), "%s",
	         flow_sql(&f, "SELECT min(id) FROM saga_dead_letter WHERE error_class ="
	                      " 'unknown_saga'"));
	cr_assert_eq(ctl(ARGS("dlq", "discard", unknown_id, "--note", "test data")), 0, "%s", err);
	cr_assert_eq(ctl(ARGS("dlq", "discard", unknown_id, "--note", "again")), 1);
	cr_assert(strstr(err, "already discarded") != NULL, "%s", err);
	cr_assert_eq(ctl(ARGS("dlq", "list", "--json")), 0);
	cr_assert_eq(json_int(out, "count"), 1, "one group left: %s", out);
	cr_assert_eq(ctl(ARGS("dlq", "list", "--status", "discarded", "--json")), 0);
	cr_assert_eq(json_int(out, "count"), 2, "%s", out);
	cr_assert_eq(ctl(ARGS("dlq", "list", "--status", "bogus")), 2);
	cr_assert_eq(ctl(ARGS("dlq", "replay", id)), 1, "a discarded letter is not replayed");

	cr_assert_eq(audit_rows("dlq.diagnose", "applied"), 1);
	cr_assert_eq(audit_rows("dlq.diagnose", "refused: %"), 1);
	cr_assert_eq(audit_rows("dlq.discard", "dry_run"), 1);
	cr_assert_eq(audit_rows("dlq.discard", "refused: %"), 3);
	cr_assert_eq(audit_rows("dlq.discard", "discarded 3 of 3"), 1);
	cr_assert_eq(audit_rows("dlq.discard", "discarded 1 of 1"), 1);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM sagad_audit WHERE action = 'dlq.discard' AND target = '%s'",
	         fp_garbage);
	cr_assert_eq(flow_sql_long(&f, sql), 4);
}

Test(sagactl, a_replayed_letter_is_applied_by_sagad)
{
	char saga[64], letter[32], sql[1024], hex[1024];
	struct start_answer a;
	struct bytes reply;

	flow_setup(&f, "t_ctl_apply");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	/* No stock service: the saga waits for reserve_stock's reply. */
	cr_assert_eq(flow_start_saga(&f, "order", "{}", NULL, &a), STATUS_OK);
	snprintf(saga, sizeof(saga), "%s", a.saga_id);
	/*
	 * The stock service's reply, as if it had been dead-lettered (delivered
	 * too often while the database was away): a letter with the raw reply.
	 */
	reply = encode_reply(saga, "reserve_stock", OUTCOME_SUCCESS);
	for (size_t i = 0; i < reply.len && 2 * i + 2 < sizeof(hex); i++)
		snprintf(hex + 2 * i, 3, "%02x", reply.data[i]);
	free(reply.data);
	snprintf(sql, sizeof(sql),
	         "INSERT INTO saga_dead_letter (source_subject, source_key, headers, payload,"
	         " reason, error_class, saga_id, correlation_id, step) VALUES"
	         " ('%s.reply.stock.reserve', 'TEST:1', '{\"Content-Type\": \"%s\"}',"
	         " decode('%s', 'hex'), 'delivered too often', 'max_deliver', '%s', 'corr-test',"
	         " 'reserve_stock') RETURNING id",
	         f.prefix, CT_STEP_REPLY, hex, saga);
	snprintf(letter, sizeof(letter), "%s", flow_sql(&f, sql));

	cr_assert_eq(ctl(ARGS("dlq", "replay", letter, "--dry-run")), 5);
	cr_assert(strstr(out, "publish to") != NULL, "%s", out);
	cr_assert_eq(ctl(ARGS("dlq", "replay", letter, "--json")), 0, "%s%s", out, err);
	cr_assert(json_valid(out), "%s", out);
	cr_assert(strstr(out, "\"outcome\": \"replayed\"") != NULL, "%s", out);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_instance WHERE id = '%s'"
	         " AND state = 'completed'",
	         saga);
	if (wait_for(sql, 1, 30000) != 1)
		flow_dump_logs(&f);
	cr_assert_eq(flow_sql_long(&f, sql), 1, "the replayed reply moved the saga on");
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_transition WHERE saga_id = '%s' AND event = 'reply'"
	         " AND step = 'reserve_stock' AND outcome = 'applied'",
	         saga);
	cr_assert_eq(flow_sql_long(&f, sql), 1);
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_dead_letter WHERE id = %s AND status = 'replayed'"
	         " AND replay_count = 1 AND replay_outcome LIKE 'published to %%replay:%s'",
	         letter, letter);
	cr_assert_eq(flow_sql_long(&f, sql), 1);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"), 1,
	             "nothing dead-lettered again");
	cr_assert_eq(ctl(ARGS("dlq", "replay", letter)), 1);
	cr_assert(strstr(err, "already replayed") != NULL, "%s", err);
	cr_assert_eq(audit_rows("dlq.replay", "dry_run"), 1);
	cr_assert_eq(audit_rows("dlq.replay", "published to %"), 1);
	cr_assert_eq(audit_rows("dlq.replay", "refused: already replayed%"), 1);
}

Test(sagactl, replaying_one_letter_twice_at_once_delivers_it_once)
{
	char letter[32], sql[256], want[64];
	char out_a[160], err_a[160], out_b[160], err_b[160];
	char text_a[4096], text_b[4096];
	pid_t a, b;
	int rc_a, rc_b;

	flow_setup(&f, "t_ctl_twice");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, NULL);
	publish_garbage(1, "once");
	wait_letters("true", 1);
	snprintf(letter, sizeof(letter), "%s", flow_sql(&f, "SELECT id FROM saga_dead_letter"));
	snprintf(out_a, sizeof(out_a), "/tmp/%s_a.out", f.schema);
	snprintf(err_a, sizeof(err_a), "/tmp/%s_a.err", f.schema);
	snprintf(out_b, sizeof(out_b), "/tmp/%s_b.out", f.schema);
	snprintf(err_b, sizeof(err_b), "/tmp/%s_b.err", f.schema);

	a = flow_sagactl_spawn(&f, ARGS("dlq", "replay", letter), out_a, err_a);
	b = flow_sagactl_spawn(&f, ARGS("dlq", "replay", letter), out_b, err_b);
	rc_a = harness_wait(a, 60000);
	rc_b = harness_wait(b, 60000);
	harness_read_file(err_a, text_a, sizeof(text_a));
	harness_read_file(err_b, text_b, sizeof(text_b));
	cr_assert((rc_a == 0 && rc_b == 1) || (rc_a == 1 && rc_b == 0), "exit codes %d and %d",
	          rc_a, rc_b);
	cr_assert(strstr(rc_a == 1 ? text_a : text_b, "already replayed") != NULL, "%s | %s",
	          text_a, text_b);
	unlink(out_a);
	unlink(err_a);
	unlink(out_b);
	unlink(err_b);
	/* Delivered once: it comes back as exactly one new letter, carrying the replay id. */
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM saga_dead_letter WHERE replay_of = %s",
	         letter);
	cr_assert_eq(wait_for(sql, 1, 20000), 1);
	usleep(1500 * 1000);
	cr_assert_eq(flow_sql_long(&f, sql), 1, "and only one");
	snprintf(sql, sizeof(sql),
	         "SELECT headers ->> 'Nats-Msg-Id' FROM saga_dead_letter WHERE replay_of = %s",
	         letter);
	snprintf(want, sizeof(want), "replay:%s", letter);
	cr_assert_str_eq(flow_sql(&f, sql), want);
	snprintf(sql, sizeof(sql),
	         "SELECT headers ->> 'X-Test' FROM saga_dead_letter WHERE replay_of = %s", letter);
	cr_assert_str_eq(flow_sql(&f, sql), "hello", "the original headers went out again");
	rc_a = ctl(ARGS("dlq", "replay", letter));
	cr_assert_eq(rc_a, 1, "and later: still once (exit %d): %s%s", rc_a, out, err);
	cr_assert_eq(audit_rows("dlq.replay", "published to %"), 1);
	cr_assert_eq(audit_rows("dlq.replay", "refused: already replayed%"), 2);
}

Test(sagactl, group_replay_keeps_to_the_rate)
{
	char fp[64];
	int64_t t0, took;

	flow_setup(&f, "t_ctl_rate");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, NULL);
	publish_garbage(10, "rate");
	wait_letters("true", 10);
	snprintf(fp, sizeof(fp), "%s", fingerprint_of("NULL", "NULL", "undecodable"));
	t0 = now_ms();
	cr_assert_eq(ctl(ARGS("dlq", "replay", "--group", fp, "--rate", "5", "--yes", "--json")), 0,
	             "%s%s", out, err);
	took = now_ms() - t0;
	cr_assert(json_valid(out), "%s", out);
	cr_assert_eq(json_int(out, "replayed"), 10, "%s", out);
	cr_assert_geq(took, 1750, "10 letters at 5/s take at least 1.8 s, not %lld ms",
	              (long long)took);
	cr_assert_lt(took, 10000, "took %lld ms", (long long)took);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"
	                               " WHERE status = 'replayed'"),
	             10);
	/* The audit rows show the pace: ~200 ms apart. */
	cr_assert_geq(flow_sql_long(&f, "SELECT (extract(epoch FROM max(at) - min(at)) * 1000)"
	                                "::bigint FROM sagad_audit WHERE action = 'dlq.replay'"),
	              1750);
	wait_letters("replay_of IS NOT NULL", 10);
	cr_assert_eq(audit_rows("dlq.replay.bulk", "replayed 10, refused 0, not attempted 0"), 1);
}

Test(sagactl, a_canary_that_fails_again_stops_the_replay)
{
	flow_setup(&f, "t_ctl_canary");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, NULL);
	publish_garbage(6, "canary");
	wait_letters("true", 6);

	/* A dry run changes nothing, sends nothing. */
	cr_assert_eq(ctl(ARGS("dlq", "replay", "--all", "--dry-run", "--json")), 5);
	cr_assert(json_valid(out), "%s", out);
	cr_assert_eq(json_int(out, "count"), 6);
	cr_assert_eq(ctl(ARGS("dlq", "replay", "--all")), 5, "needs a confirmation");
	usleep(1000 * 1000);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"
	                               " WHERE status = 'open' AND replayed_at IS NULL"),
	             6);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"), 6);

	cr_assert_eq(ctl(ARGS("dlq", "replay", "--all", "--canary", "2", "--canary-wait", "5s",
	                      "--rate", "50", "--confirm", "6")),
	             1, "%s%s", out, err);
	cr_assert(strstr(out, "stopped by the canary") != NULL, "%s", out);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"
	                               " WHERE status = 'replayed'"),
	             2, "only the canary went out");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter WHERE status = 'open'"
	                               " AND replay_of IS NULL"),
	             4, "the rest stay open");
	cr_assert_eq(audit_rows("dlq.replay.bulk", "dry_run"), 1);
	cr_assert_eq(audit_rows("dlq.replay.bulk", "refused: confirmation needed"), 1);
	cr_assert_eq(audit_rows("dlq.replay.bulk", "replayed 2, refused 0, not attempted 4;"
	                                           " stopped by the canary%"),
	             1);
	cr_assert_eq(audit_rows("dlq.replay", "published to %"), 2);
}

Test(sagactl, exit_codes_say_what_went_wrong)
{
	flow_setup(&f, "t_ctl_exit");
	cr_assert_eq(ctl(ARGS("--help")), 0);
	cr_assert(strstr(out, "dlq replay") != NULL, "%s", out);
	cr_assert_eq(ctl(ARGS("dlq")), 2);
	cr_assert_eq(ctl(ARGS("dlq", "frobnicate")), 2);
	cr_assert_eq(ctl(ARGS("retry")), 2);
	cr_assert_eq(ctl(ARGS("retry", "--all", "00000000-0000-4000-8000-000000000000")), 2);
	cr_assert_eq(ctl(ARGS("retry", "--state", "failed")), 2, "filters go with --all");
	cr_assert_eq(ctl(ARGS("dlq", "replay", "1", "--rate", "0")), 2);
	cr_assert_eq(ctl(ARGS("dlq", "replay", "--group", "NOT-HEX", "--yes")), 2);
	cr_assert_eq(ctl(ARGS("list", "--actor", "")), 2);
	/* PostgreSQL unreachable or schema not migrated: 3. */
	cr_assert_eq(ctl(ARGS("--database-url=postgresql://nobody@127.0.0.1:1/none",
	                      "--connect-timeout=1s", "list")),
	             3);
	cr_assert(strstr(err, "cannot connect to PostgreSQL") != NULL, "%s", err);
	cr_assert_eq(ctl(ARGS("--db-schema=t_ctl_no_such_schema", "list")), 3);
	cr_assert(strstr(err, "sagad migrate") != NULL, "says what to do: %s", err);
	/* NATS unreachable: 4 (and nothing is claimed). */
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, NULL);
	publish_garbage(1, "exit");
	wait_letters("true", 1);
	cr_assert_eq(ctl(ARGS("--nats-url=nats://127.0.0.1:1", "--connect-timeout=1s", "dlq",
	                      "replay", "--all", "--yes")),
	             4, "%s", err);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter WHERE status = 'open'"),
	        1);
	cr_assert_eq(ctl(ARGS("--nats-url=nats://127.0.0.1:1", "--connect-timeout=1s", "start",
	                      "order")),
	             4);
}

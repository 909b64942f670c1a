/*
 * End-to-end tests of the engine: real PostgreSQL, nats-server, sagad and the
 * example participants, one schema and subject prefix per test.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "definition.h"
#include "flow.h"
#include "harness.h"

/* The order saga with short timeouts so failures show quickly. */
static const char order_yaml[] =
        "name: order\n"
        "steps:\n"
        "  - name: reserve_stock\n"
        "    action: stock.reserve\n"
        "    compensation: stock.release\n"
        "    timeout: 2s\n"
        "    retry: {max_attempts: 5, initial_backoff: 20ms, max_backoff: 200ms}\n"
        "  - name: charge_card\n"
        "    action: payments.charge\n"
        "    compensation: payments.refund\n"
        "    timeout: 2s\n"
        "    retry: {max_attempts: 5, initial_backoff: 20ms, max_backoff: 200ms}\n"
        "  - name: ship\n"
        "    action: shipping.ship\n"
        "    timeout: 2s\n"
        "    retry: {max_attempts: 5, initial_backoff: 20ms, max_backoff: 200ms}\n";

static struct flow f;

static void
teardown(void)
{
	flow_teardown(&f);
}

static void
start_all(const char *const *stock, const char *const *payments, const char *const *shipping)
{
	flow_start_sagad(&f, NULL);
	flow_start_participant(&f, "stock", stock);
	flow_start_participant(&f, "payments", payments);
	flow_start_participant(&f, "shipping", shipping);
}

static void
start_many(const char *saga, int n)
{
	for (int i = 0; i < n; i++) {
		struct start_answer a;
		char input[64];

		snprintf(input, sizeof(input), "{\"order\":%d}", i);
		cr_assert_eq(flow_start_saga(&f, saga, input, NULL, &a), STATUS_OK);
		cr_assert_eq(a.status, START_ACCEPTED, "start %d: %s", i, a.reason);
	}
}

static void
settle(int n, int timeout_ms)
{
	if (!flow_wait_settled(&f, n, timeout_ms)) {
		flow_dump_logs(&f);
		cr_assert_fail("sagas did not settle: %s running",
		               flow_sql(&f, "SELECT count(*) FROM saga_instance WHERE state IN "
		                            "('running','compensating')"));
	}
}

/* The guarantees every test checks at the end. */
static void
check_invariants(void)
{
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) - count(DISTINCT idempotency_key)"
	                               " FROM participant_effects"),
	             0, "duplicate side effects at a participant");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_transition"
	                               " WHERE correlation_id IS NULL OR correlation_id = ''"),
	             0, "a transition without correlation id");
	/* I5: when idle the outbox drains. */
	for (int i = 0; i < 50 && flow_sql_long(&f, "SELECT count(*) FROM saga_outbox") > 0; i++)
		usleep(100 * 1000);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_outbox"), 0, "outbox not empty");
	/* I4: per saga, transition sequence numbers are 1..n without gaps. */
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM (SELECT saga_id FROM saga_transition"
	                               " GROUP BY saga_id HAVING max(seq) <> count(*)) g"),
	             0, "a gap in a saga's transitions");
}

TestSuite(saga_flow, .fini = teardown, .timeout = 240);

Test(saga_flow, happy_path_completes_every_saga_once)
{
	flow_setup(&f, "t_happy");
	flow_define(&f, order_yaml);
	start_all(NULL, NULL, NULL);
	start_many("order", 30);
	settle(30, 60000);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        30);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"), 90,
	             "three side effects per saga");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_step WHERE state <> 'succeeded'"),
	             0);
	/* The ship step received the outputs of the two steps before it. */
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_step WHERE output IS NULL"), 0);
	check_invariants();
}

Test(saga_flow, permanent_failure_compensates_in_reverse_order)
{
	const char *const fail_ship[] = {"--fail-rate=1", NULL};

	flow_setup(&f, "t_comp");
	flow_define(&f, order_yaml);
	start_all(NULL, NULL, fail_ship);
	start_many("order", 10);
	settle(10, 60000);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"
	                               " WHERE state = 'compensated'"),
	             10);
	/* refund (compensation of the later step) comes before release, in every saga. */
	cr_assert_eq(
	        flow_sql_long(&f,
	                      "SELECT count(*) FROM participant_effects r"
	                      " JOIN participant_effects s ON s.saga_id = r.saga_id"
	                      " WHERE r.subject = 'payments.refund'"
	                      " AND s.subject = 'stock.release' AND s.created_at >= r.created_at"),
	        10);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"
	                               " WHERE subject = 'shipping.ship'"),
	             0, "a failed action leaves no effect");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_transition t1"
	                               " JOIN saga_transition t2 USING (saga_id)"
	                               " WHERE t1.phase = 'compensation' AND t2.phase = 'action'"
	                               " AND t2.seq > t1.seq AND t2.outcome = 'applied'"),
	             0, "nothing moves forward after compensation began");
	check_invariants();
}

Test(saga_flow, retryable_failures_then_success)
{
	/* 30% of attempts fail; with 10 attempts a saga compensates with odds of 6e-6. */
	static const char yaml[] =
	        "name: order\n"
	        "steps:\n"
	        "  - name: reserve_stock\n"
	        "    action: stock.reserve\n"
	        "    compensation: stock.release\n"
	        "  - name: charge_card\n"
	        "    action: payments.charge\n"
	        "    compensation: payments.refund\n"
	        "    retry: {max_attempts: 10, initial_backoff: 10ms, max_backoff: 50ms}\n"
	        "  - name: ship\n"
	        "    action: shipping.ship\n";
	const char *const flaky[] = {"--retryable-rate=0.3", NULL};

	flow_setup(&f, "t_retry");
	flow_define(&f, yaml);
	start_all(NULL, flaky, NULL);
	start_many("order", 20);
	settle(20, 60000);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        20, "%s",
	        flow_sql(&f, "SELECT string_agg(state || ': ' || coalesce(last_error,''), ', ') "
	                     "FROM saga_instance WHERE state <> 'completed'"));
	cr_assert_gt(flow_sql_long(&f, "SELECT count(*) FROM saga_step WHERE name = 'charge_card'"
	                               " AND attempt > 1"),
	             0, "some charges needed a retry");
	check_invariants();
}

Test(saga_flow, a_timed_out_attempt_is_resent_and_deduplicated)
{
	static const char slow_yaml[] = "name: order\n"
	                                "steps:\n"
	                                "  - name: reserve_stock\n"
	                                "    action: stock.reserve\n"
	                                "    compensation: stock.release\n"
	                                "    timeout: 300ms\n"
	                                "    retry: {max_attempts: 12, initial_backoff: 50ms}\n";
	const char *const slow[] = {"--latency-ms=600", NULL};

	flow_setup(&f, "t_timeout");
	flow_define(&f, slow_yaml);
	flow_start_sagad(&f, NULL);
	flow_start_participant(&f, "stock", slow);
	start_many("order", 3);
	settle(3, 60000);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        3);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_step WHERE attempt >= 2"), 3,
	             "every saga needed a re-send");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"), 3,
	             "the re-send did not run the handler twice");
	cr_assert_gt(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_transition WHERE event = 'timeout'"),
	        0);
	check_invariants();
}

/*
 * The stored wake-up of a running saga stays at the first step's timeout
 * while that is earlier than the next one's (the row is updated in place);
 * the pass that finds nothing due moves it on, and the second step still
 * times out on time.
 */
Test(saga_flow, a_later_steps_timeout_fires_on_time_after_an_earlier_wake_up)
{
	static const char two_yaml[] = "name: order\n"
	                               "steps:\n"
	                               "  - name: reserve_stock\n"
	                               "    action: stock.reserve\n"
	                               "    compensation: stock.release\n"
	                               "    timeout: 1s\n"
	                               "  - name: charge_card\n"
	                               "    action: payments.charge\n"
	                               "    timeout: 3s\n"
	                               "    retry: {max_attempts: 1}\n";
	long gap_ms;

	flow_setup(&f, "t_wake");
	flow_define(&f, two_yaml);
	flow_start_sagad(&f, NULL);
	/* Nobody serves payments.charge: its attempts time out. */
	flow_start_participant(&f, "stock", NULL);
	start_many("order", 5);
	/* Past the first step's timeout, the charge still pending: no wake-up left behind. */
	usleep(2000 * 1000);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'running'"), 5);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"
	                               " WHERE wake_at < now() - interval '500 ms'"),
	             0, "a wake-up stayed in the past");
	settle(5, 60000);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"
	                               " WHERE state = 'compensated'"),
	             5);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_transition"
	                               " WHERE event = 'timeout' AND step = 'charge_card'"),
	             5, "one timed-out attempt per saga");
	/* From the stock reply to the first charge timeout: one timeout, not more. */
	gap_ms = flow_sql_long(&f, "SELECT max(extract(epoch FROM t.at - r.at) * 1000)::bigint"
	                           " FROM saga_transition r JOIN saga_transition t USING (saga_id)"
	                           " WHERE r.event = 'reply' AND r.step = 'reserve_stock'"
	                           " AND r.outcome = 'applied' AND t.event = 'timeout'"
	                           " AND t.step = 'charge_card' AND t.attempt = 1");
	cr_assert(gap_ms >= 2950 && gap_ms < 3600, "charge timed out %ld ms after the stock reply",
	          gap_ms);
	check_invariants();
}

Test(saga_flow, duplicate_stale_and_late_replies_change_nothing)
{
	flow_setup(&f, "t_dup");
	flow_define(&f, order_yaml);
	start_all(NULL, NULL, NULL);
	start_many("order", 5);
	settle(5, 60000);
	{
		/* Replay every completed command's reply (late), plus a stale attempt. */
		char ids[5][64];
		struct bytes out = {0};
		char err[256];

		for (int i = 0; i < 5; i++) {
			char sql[128];

			snprintf(sql, sizeof(sql),
			         "SELECT id FROM saga_instance ORDER BY id OFFSET %d LIMIT 1", i);
			snprintf(ids[i], sizeof(ids[i]), "%s", flow_sql(&f, sql));
		}
		for (int i = 0; i < 5; i++) {
			struct command_msg cmd;
			char subject[256], msg_id[128];

			memset(&cmd, 0, sizeof(cmd));
			snprintf(cmd.saga_id, sizeof(cmd.saga_id), "%s", ids[i]);
			snprintf(cmd.correlation_id, sizeof(cmd.correlation_id), "%s", ids[i]);
			snprintf(cmd.step, sizeof(cmd.step), "charge_card");
			cmd.phase = PHASE_ACTION;
			cmd.attempt = (uint32_t)(i % 2 == 0 ? 1 : 9);
			snprintf(cmd.idempotency_key, sizeof(cmd.idempotency_key),
			         "%s/charge_card/a", ids[i]);
			cr_assert_eq(codec_encode_reply(&cmd, OUTCOME_PERMANENT_FAILURE,
			                                (struct bytes){0}, "late", "too late",
			                                "test", 0, &out),
			             STATUS_OK);
			snprintf(subject, sizeof(subject), "%s.reply.payments.charge", f.prefix);
			snprintf(msg_id, sizeof(msg_id), "test-late-%d", i);
			cr_assert_eq(bus_publish_async(f.bus, subject, msg_id, NULL, 0, out.data,
			                               out.len, err, sizeof(err)),
			             STATUS_OK, "%s", err);
			free(out.data);
		}
		{
			int failed = 0;

			cr_assert_eq(bus_publish_wait(f.bus, 5000, &failed, err, sizeof(err)),
			             STATUS_OK);
			cr_assert_eq(failed, 0);
		}
	}
	for (int i = 0; i < 100 && flow_sql_long(&f, "SELECT count(*) FROM saga_transition"
	                                             " WHERE outcome = 'late'") < 5;
	     i++)
		usleep(100 * 1000);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_transition WHERE outcome = 'late'"), 5,
	        "every late reply is recorded");
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        5, "and changes nothing");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"), 0);
	check_invariants();
}

Test(saga_flow, idempotent_start_returns_the_first_sagas_ids)
{
	struct start_answer a1, a2;

	flow_setup(&f, "t_idem");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, NULL);
	cr_assert_eq(flow_start_saga(&f, "order", "{}", "order-42", &a1), STATUS_OK);
	cr_assert_eq(a1.status, START_ACCEPTED, "%s", a1.reason);
	cr_assert_eq(flow_start_saga(&f, "order", "{\"other\":1}", "order-42", &a2), STATUS_OK);
	cr_assert_eq(a2.status, START_DUPLICATE);
	cr_assert_str_eq(a2.saga_id, a1.saga_id);
	cr_assert_str_eq(a2.correlation_id, a1.correlation_id);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), 1);
	/* Unknown saga and bad input are rejected with a reason. */
	cr_assert_eq(flow_start_saga(&f, "nope", "{}", NULL, &a2), STATUS_OK);
	cr_assert_eq(a2.status, START_REJECTED);
	cr_assert_eq(a2.reject, REJECT_UNKNOWN_SAGA);
	cr_assert_eq(flow_start_saga(&f, "order", "{}", "bad key with spaces", &a2), STATUS_OK);
	cr_assert_eq(a2.status, START_REJECTED);
	cr_assert_eq(a2.reject, REJECT_INVALID);
	cr_assert(strstr(a2.reason, "idempotency_key") != NULL, "%s", a2.reason);
}

Test(saga_flow, admission_limit_rejects_with_retry_after)
{
	const char *const limit[] = {"SAGAD_MAX_IN_FLIGHT=5", NULL};
	int accepted = 0, rejected = 0;

	flow_setup(&f, "t_admit");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, limit); /* no participants: every saga stays in flight */
	for (int i = 0; i < 8; i++) {
		struct start_answer a;

		cr_assert_eq(flow_start_saga(&f, "order", "{}", NULL, &a), STATUS_OK);
		if (a.status == START_ACCEPTED) {
			accepted++;
		} else {
			cr_assert_eq(a.reject, REJECT_OVERLOADED, "%s", a.reason);
			cr_assert_gt(a.retry_after_ms, 0);
			rejected++;
		}
	}
	cr_assert_eq(accepted, 5);
	cr_assert_eq(rejected, 3);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), 5,
	             "a rejected start leaves nothing behind");
}

Test(saga_flow, parallel_group_and_pivot)
{
	static const char yaml[] =
	        "name: order\n"
	        "steps:\n"
	        "  - name: reserve_stock\n"
	        "    action: stock.reserve\n"
	        "    compensation: stock.release\n"
	        "    group: prepare\n"
	        "    timeout: 2s\n"
	        "  - name: charge_card\n"
	        "    action: payments.charge\n"
	        "    compensation: payments.refund\n"
	        "    group: prepare\n"
	        "    timeout: 2s\n"
	        "  - name: ship\n"
	        "    action: shipping.ship\n"
	        "    kind: pivot\n"
	        "    timeout: 2s\n"
	        "    retry: {max_attempts: 10, initial_backoff: 10ms, max_backoff: 50ms}\n";
	const char *const flaky[] = {"--retryable-rate=0.3", NULL};

	flow_setup(&f, "t_group");
	flow_define(&f, yaml);
	start_all(NULL, NULL, flaky);
	start_many("order", 10);
	settle(10, 60000);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        10);
	/* Both group members were dispatched by the start transition itself. */
	cr_assert_eq(
	        flow_sql_long(&f,
	                      "SELECT count(*) FROM saga_step s JOIN saga_step t"
	                      " USING (saga_id) WHERE s.name = 'reserve_stock'"
	                      " AND t.name = 'charge_card'"
	                      " AND abs(extract(epoch from s.started_at - t.started_at)) < 0.001"),
	        10, "the group's steps start together");
	check_invariants();
}

Test(saga_flow, a_definition_changed_while_sagas_run)
{
	static const char v2_yaml[] = "name: order\n"
	                              "steps:\n"
	                              "  - name: reserve_stock\n"
	                              "    action: stock.reserve\n"
	                              "    compensation: stock.release\n"
	                              "  - name: charge_card\n"
	                              "    action: payments.charge\n";

	flow_setup(&f, "t_version");
	cr_assert_eq(flow_define(&f, order_yaml), 1);
	cr_assert_eq(flow_define(&f, order_yaml), 1, "an identical body is not a new version");
	flow_start_sagad(&f, NULL);
	start_many("order", 5); /* v1, waiting: no participant yet */
	cr_assert_eq(flow_define(&f, v2_yaml), 2);
	usleep(1100 * 1000);    /* the latest-version cache lives one second */
	start_many("order", 5); /* v2 */
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	settle(10, 60000);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"
	                               " WHERE definition_version = 1 AND state = 'completed'"),
	             5);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"
	                               " WHERE definition_version = 2 AND state = 'completed'"),
	             5);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"
	                               " WHERE subject = 'shipping.ship'"),
	             5, "old sagas finish under their own version (with ship), new ones without");
	check_invariants();
}

Test(saga_flow, an_undecodable_reply_becomes_a_dead_letter)
{
	char subject[256], err[256];
	int failed = 0;
	static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0x07, 'x'};

	flow_setup(&f, "t_dlq");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, NULL);
	snprintf(subject, sizeof(subject), "%s.reply.stock.reserve", f.prefix);
	cr_assert_eq(bus_publish_async(f.bus, subject, "garbage-1", NULL, 0, garbage,
	                               sizeof(garbage), err, sizeof(err)),
	             STATUS_OK);
	cr_assert_eq(bus_publish_wait(f.bus, 5000, &failed, err, sizeof(err)), STATUS_OK);
	for (int i = 0; i < 100 && flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter") == 0;
	     i++)
		usleep(100 * 1000);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"
	                               " WHERE error_class = 'undecodable' AND status = 'open'"),
	             1);
	cr_assert_str_eq(flow_sql(&f, "SELECT encode(payload, 'hex') FROM saga_dead_letter"),
	                 "ffffff0778", "the raw bytes are kept");
	cr_assert(strstr(flow_sql(&f, "SELECT source_subject FROM saga_dead_letter"), "reply") !=
	          NULL);
	{
		/* It reached the DLQ stream and left the reply stream (terminated, not redelivered). */
		struct bus_stream_stats ss;
		struct bus_consumer_stats cs;

		for (int i = 0; i < 50; i++) {
			cr_assert_eq(bus_stream_stats(f.bus, BUS_STREAM_DLQ, &ss, err, sizeof(err)),
			             STATUS_OK);
			if (ss.msgs == 1)
				break;
			usleep(100 * 1000);
		}
		cr_assert_eq(ss.msgs, 1);
		cr_assert_eq(bus_consumer_stats(f.bus, BUS_STREAM_REPLY, &cs, err, sizeof(err)),
		             STATUS_OK);
		cr_assert_eq(cs.num_ack_pending, 0);
		cr_assert_eq(cs.num_pending, 0);
	}
}

Test(saga_flow, kill_9_of_sagad_mid_run_loses_and_doubles_nothing, .timeout = 300)
{
	const char *const slow[] = {"--latency-ms=5", NULL};
	int sagad;

	flow_setup(&f, "t_kill");
	flow_define(&f, order_yaml);
	sagad = flow_start_sagad(&f, NULL);
	flow_start_participant(&f, "stock", slow);
	flow_start_participant(&f, "payments", slow);
	flow_start_participant(&f, "shipping", slow);
	start_many("order", 200);
	/* Kill it while sagas are in every stage. */
	for (int i = 0; i < 100 && flow_sql_long(&f, "SELECT count(*) FROM saga_instance"
	                                             " WHERE state = 'completed'") < 20;
	     i++)
		usleep(20 * 1000);
	flow_signal(&f, sagad, SIGKILL);
	cr_assert_gt(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'running'"), 0,
	        "the kill should land mid-run");
	usleep(500 * 1000);
	flow_start_sagad(&f, NULL);
	settle(200, 120000);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        200, "every saga ends exactly once");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"), 600);
	check_invariants();
}

Test(saga_flow, buffered_submits_and_wire_definitions_work_and_messages_carry_ids)
{
	struct bus_sub *cmds = NULL, *events = NULL;
	struct bytes body = {0};
	struct bus_msg *reply = NULL;
	struct define_answer da;
	struct saga_def def;
	char subject[256], err[512];
	int failed = 0;

	flow_setup(&f, "t_submit");
	/* Register over NATS (saga.define) instead of sagactl. */
	flow_start_sagad(&f, NULL);
	cr_assert_eq(definition_parse_yaml(&def, order_yaml, strlen(order_yaml), err, sizeof(err)),
	             STATUS_OK, "%s", err);
	cr_assert_eq(codec_encode_define_request(&def, &body), STATUS_OK);
	snprintf(subject, sizeof(subject), "%s.define", f.prefix);
	cr_assert_eq(bus_request(f.bus, subject, NULL, 0, body.data, body.len, 5000, &reply, err,
	                         sizeof(err)),
	             STATUS_OK, "%s", err);
	free(body.data);
	cr_assert_eq(codec_decode_define_answer(bus_msg_data(reply), bus_msg_len(reply), &da, err,
	                                        sizeof(err)),
	             STATUS_OK);
	bus_msg_free(reply);
	cr_assert_eq(da.status, 1, "created: %s %s", da.field, da.error);
	cr_assert_eq(da.version, 1);
	/* An invalid definition is refused with the field that is wrong. */
	snprintf(def.steps[1].action_subject, sizeof(def.steps[1].action_subject), "bad.*");
	cr_assert_eq(codec_encode_define_request(&def, &body), STATUS_OK);
	cr_assert_eq(bus_request(f.bus, subject, NULL, 0, body.data, body.len, 5000, &reply, err,
	                         sizeof(err)),
	             STATUS_OK);
	free(body.data);
	cr_assert_eq(codec_decode_define_answer(bus_msg_data(reply), bus_msg_len(reply), &da, err,
	                                        sizeof(err)),
	             STATUS_OK);
	bus_msg_free(reply);
	cr_assert_eq(da.status, 3);
	cr_assert_str_eq(da.field, "steps[1].action");

	/* Watch commands and events (core subscriptions see stream traffic too). */
	snprintf(subject, sizeof(subject), "%s.cmd.>", f.prefix);
	cr_assert_eq(bus_subscribe(f.bus, subject, NULL, &cmds, err, sizeof(err)), STATUS_OK);
	snprintf(subject, sizeof(subject), "%s.event.>", f.prefix);
	cr_assert_eq(bus_subscribe(f.bus, subject, NULL, &events, err, sizeof(err)), STATUS_OK);

	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	snprintf(subject, sizeof(subject), "%s.submit.order", f.prefix);
	for (int i = 0; i < 5; i++) {
		char key[32], msg_id[32];

		snprintf(key, sizeof(key), "submit-%d", i % 4); /* one duplicate */
		cr_assert_eq(codec_encode_start_request("", 0, (struct bytes){(uint8_t *)"{}", 2},
		                                        key, "corr-from-caller", &body),
		             STATUS_OK);
		snprintf(msg_id, sizeof(msg_id), "submit-msg-%d",
		         i); /* reaches sagad: no stream dedupe */
		cr_assert_eq(bus_publish_async(f.bus, subject, msg_id, NULL, 0, body.data, body.len,
		                               err, sizeof(err)),
		             STATUS_OK);
		free(body.data);
	}
	/* A submit for an unknown saga is rejected as a lifecycle event. */
	snprintf(subject, sizeof(subject), "%s.submit.nope", f.prefix);
	cr_assert_eq(codec_encode_start_request("", 0, (struct bytes){(uint8_t *)"{}", 2}, NULL,
	                                        NULL, &body),
	             STATUS_OK);
	cr_assert_eq(bus_publish_async(f.bus, subject, "nope-1", NULL, 0, body.data, body.len, err,
	                               sizeof(err)),
	             STATUS_OK);
	free(body.data);
	cr_assert_eq(bus_publish_wait(f.bus, 5000, &failed, err, sizeof(err)), STATUS_OK);
	settle(4, 60000);
	cr_assert_eq(flow_sql_long(&f,
	                           "SELECT count(*) FROM saga_instance WHERE state = 'completed'"
	                           " AND correlation_id = 'corr-from-caller'"),
	             4, "the caller's correlation id is kept; the duplicate made no saga");

	/* Every command and event carried the ids in its headers. */
	{
		int n_cmd = 0, n_evt = 0, rejected = 0;
		struct bus_msg *m = NULL;

		while (bus_next(cmds, 200, &m) == STATUS_OK) {
			cr_assert_str_eq(bus_msg_header(m, HDR_CORRELATION_ID), "corr-from-caller");
			cr_assert_not_null(bus_msg_header(m, HDR_SAGA_ID));
			cr_assert_not_null(bus_msg_header(m, HDR_STEP));
			cr_assert_not_null(bus_msg_header(m, HDR_ATTEMPT));
			cr_assert_not_null(bus_msg_header(m, "Nats-Msg-Id"));
			cr_assert_str_eq(bus_msg_header(m, HDR_CONTENT_TYPE), CT_STEP_COMMAND);
			n_cmd++;
			bus_msg_free(m);
		}
		while (bus_next(events, 200, &m) == STATUS_OK) {
			if (strstr(bus_msg_subject(m), ".rejected") != NULL) {
				rejected++;
			} else {
				cr_assert_str_eq(bus_msg_header(m, HDR_CORRELATION_ID),
				                 "corr-from-caller");
				cr_assert_not_null(bus_msg_header(m, HDR_SAGA_ID));
			}
			n_evt++;
			bus_msg_free(m);
		}
		cr_assert_eq(n_cmd, 12, "4 sagas x 3 commands");
		/* started + 3 step_succeeded + completed per saga, plus one rejection. */
		cr_assert_eq(n_evt, 4 * 5 + 1);
		cr_assert_eq(rejected, 1);
	}
	bus_unsubscribe(cmds);
	bus_unsubscribe(events);
	check_invariants();
}

Test(saga_flow, a_reply_on_another_steps_subject_is_a_dead_letter)
{
	char ids[3][64];
	char err[256];
	int failed = 0;

	flow_setup(&f, "t_forge");
	flow_define(&f, order_yaml);
	/* No payments participant yet: charge_card waits for its reply. */
	flow_start_sagad(&f, NULL);
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "shipping", NULL);
	start_many("order", 3);
	for (int i = 0; i < 100 && flow_sql_long(&f, "SELECT count(*) FROM saga_step"
	                                             " WHERE name = 'charge_card'"
	                                             " AND state = 'running'") < 3;
	     i++)
		usleep(50 * 1000);
	for (int i = 0; i < 3; i++) {
		struct command_msg cmd;
		struct bytes out = {0};
		char sql[128], subject[256], msg_id[64];

		snprintf(sql, sizeof(sql),
		         "SELECT id FROM saga_instance ORDER BY id OFFSET %d LIMIT 1", i);
		snprintf(ids[i], sizeof(ids[i]), "%s", flow_sql(&f, sql));
		memset(&cmd, 0, sizeof(cmd));
		snprintf(cmd.saga_id, sizeof(cmd.saga_id), "%s", ids[i]);
		snprintf(cmd.correlation_id, sizeof(cmd.correlation_id), "%s", ids[i]);
		snprintf(cmd.step, sizeof(cmd.step), "charge_card");
		cmd.phase = PHASE_ACTION;
		cmd.attempt = 1;
		snprintf(cmd.idempotency_key, sizeof(cmd.idempotency_key), "%s/charge_card/a",
		         ids[i]);
		cr_assert_eq(codec_encode_reply(&cmd, OUTCOME_SUCCESS, (struct bytes){0}, "", "",
		                                "forger", 0, &out),
		             STATUS_OK);
		/* The stock service answering for payments, on its own reply subject. */
		snprintf(subject, sizeof(subject), "%s.reply.stock.reserve", f.prefix);
		snprintf(msg_id, sizeof(msg_id), "forged-%d", i);
		cr_assert_eq(bus_publish_async(f.bus, subject, msg_id, NULL, 0, out.data, out.len,
		                               err, sizeof(err)),
		             STATUS_OK, "%s", err);
		free(out.data);
	}
	cr_assert_eq(bus_publish_wait(f.bus, 5000, &failed, err, sizeof(err)), STATUS_OK);
	cr_assert_eq(failed, 0);
	for (int i = 0; i < 100 && flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter") < 3;
	     i++)
		usleep(50 * 1000);
	cr_assert_eq(flow_sql_long(&f,
	                           "SELECT count(*) FROM saga_dead_letter"
	                           " WHERE error_class = 'wrong_subject' AND step = 'charge_card'"
	                           " AND reason LIKE '%.reply.payments.charge'"),
	             3, "each forged reply is a dead letter naming the subject it must come on");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_step WHERE name = 'charge_card'"
	                               " AND state = 'succeeded'"),
	             0, "and moves nothing");
	/* The real service answers: every saga completes with its own charge. */
	flow_start_participant(&f, "payments", NULL);
	settle(3, 60000);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        3);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"
	                               " WHERE step = 'charge_card'"),
	             3);
	check_invariants();
}

Test(saga_flow, replies_waiting_in_the_stream_hold_step_timeouts_back)
{
	const char *const small_batches[] = {"SAGAD_REPLY_BATCH=2", NULL};

	flow_setup(&f, "t_lag");
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, small_batches);
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	/* Every reserve_stock command waits at a paused stock service... */
	flow_signal(&f, 1, SIGSTOP);
	start_many("order", 40);
	usleep(300 * 1000);
	/* ...then sagad stops while stock answers them all, past their 2 s timeouts. */
	flow_signal(&f, 0, SIGSTOP);
	flow_signal(&f, 1, SIGCONT);
	sleep(3);
	flow_signal(&f, 0, SIGCONT);
	/*
	 * sagad reads the 40 answers 2 at a time; had it fired the timeouts due
	 * meanwhile, steps that answered in time would be re-sent.
	 */
	settle(40, 60000);
	if (flow_sql_long(&f, "SELECT count(*) FROM saga_transition WHERE event = 'timeout'") != 0)
		flow_dump_logs(&f);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        40);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_transition WHERE event = 'timeout'"),
	        0, "no step timed out while its answer waited in sagad's reply stream");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_step WHERE attempt > 1"), 0);
	check_invariants();
}

/* Publish a SUCCESS reply for (saga, step, attempt 1) with Nats-Msg-Id msg_id. */
static void
publish_success(const char *saga_id, const char *step, const char *action, const char *msg_id)
{
	struct command_msg cmd;
	struct bytes out = {0};
	char subject[256], err[256];
	int failed = 0;

	memset(&cmd, 0, sizeof(cmd));
	snprintf(cmd.saga_id, sizeof(cmd.saga_id), "%s", saga_id);
	snprintf(cmd.correlation_id, sizeof(cmd.correlation_id), "%s", saga_id);
	snprintf(cmd.step, sizeof(cmd.step), "%s", step);
	cmd.phase = PHASE_ACTION;
	cmd.attempt = 1;
	snprintf(cmd.idempotency_key, sizeof(cmd.idempotency_key), "%s/%s/a", saga_id, step);
	cr_assert_eq(codec_encode_reply(&cmd, OUTCOME_SUCCESS, (struct bytes){(uint8_t *)"{}", 2},
	                                NULL, NULL, "test", 0, &out),
	             STATUS_OK);
	snprintf(subject, sizeof(subject), "%s.reply.%s", f.prefix, action);
	cr_assert_eq(bus_publish_async(f.bus, subject, msg_id, NULL, 0, out.data, out.len, err,
	                               sizeof(err)),
	             STATUS_OK, "%s", err);
	cr_assert_eq(bus_publish_wait(f.bus, 5000, &failed, err, sizeof(err)), STATUS_OK, "%s",
	             err);
	cr_assert_eq(failed, 0);
	free(out.data);
}

/* Wait until the saga has n reply transitions (any outcome). */
static void
wait_replies(const char *saga_id, long n)
{
	char sql[160];

	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_transition WHERE saga_id = '%s' AND event = 'reply'",
	         saga_id);
	for (int i = 0; i < 100 && flow_sql_long(&f, sql) < n; i++)
		usleep(50 * 1000);
	cr_assert_eq(flow_sql_long(&f, sql), n, "reply transitions of %s", saga_id);
}

Test(saga_flow, duplicate_and_out_of_order_replies_while_running_are_applied_once)
{
	/* A parallel group, so its second step's reply can come first. */
	static const char yaml[] = "name: order\n"
	                           "steps:\n"
	                           "  - name: reserve_stock\n"
	                           "    action: stock.reserve\n"
	                           "    compensation: stock.release\n"
	                           "    group: prepare\n"
	                           "    timeout: 60s\n"
	                           "  - name: charge_card\n"
	                           "    action: payments.charge\n"
	                           "    compensation: payments.refund\n"
	                           "    group: prepare\n"
	                           "    timeout: 60s\n"
	                           "  - name: ship\n"
	                           "    action: shipping.ship\n"
	                           "    timeout: 60s\n";
	struct start_answer a;
	char sql[256];

	flow_setup(&f, "t_reorder");
	flow_define(&f, yaml);
	flow_start_sagad(&f, NULL); /* no participants: the test answers the commands itself */
	cr_assert_eq(flow_start_saga(&f, "order", "{}", NULL, &a), STATUS_OK);
	cr_assert_eq(a.status, START_ACCEPTED);

	/* Out of order: the group's second step answers first. */
	publish_success(a.saga_id, "charge_card", "payments.charge", "r-charge");
	wait_replies(a.saga_id, 1);
	/* The same message again (same Nats-Msg-Id): the stream drops it, sagad never sees it. */
	publish_success(a.saga_id, "charge_card", "payments.charge", "r-charge");
	/* The same reply as a new message (a participant re-publishing): seen, changes nothing. */
	publish_success(a.saga_id, "charge_card", "payments.charge", "r-charge-again");
	wait_replies(a.saga_id, 2);
	snprintf(sql, sizeof(sql),
	         "SELECT state FROM saga_step WHERE saga_id = '%s' AND name = 'ship'", a.saga_id);
	cr_assert_str_eq(flow_sql(&f, sql), "pending", "ship waits for the whole group");
	publish_success(a.saga_id, "reserve_stock", "stock.reserve", "r-reserve");
	publish_success(a.saga_id, "ship", "shipping.ship", "r-ship");
	wait_replies(a.saga_id, 4);
	/* Once more after the end. */
	publish_success(a.saga_id, "ship", "shipping.ship", "r-ship-again");
	wait_replies(a.saga_id, 5);
	snprintf(sql, sizeof(sql),
	         "SELECT string_agg(step || ':' || outcome, ',' ORDER BY seq) FROM saga_transition"
	         " WHERE saga_id = '%s' AND event = 'reply'",
	         a.saga_id);
	cr_assert_str_eq(flow_sql(&f, sql),
	                 "charge_card:applied,charge_card:duplicate,reserve_stock:applied,"
	                 "ship:applied,ship:late");
	snprintf(sql, sizeof(sql), "SELECT state FROM saga_instance WHERE id = '%s'", a.saga_id);
	cr_assert_str_eq(flow_sql(&f, sql), "completed");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"), 0);
	flow_assert_invariants(&f, NULL, 0);
}

Test(saga_flow, an_unpublishable_command_is_a_dead_letter_and_blocks_nothing)
{
	static const char yaml[] = "name: order\n"
	                           "steps:\n"
	                           "  - name: reserve_stock\n"
	                           "    action: stock.reserve\n"
	                           "    timeout: 1s\n"
	                           "    retry: {max_attempts: 2, initial_backoff: 20ms}\n"
	                           "  - name: charge_card\n"
	                           "    action: payments.charge\n"
	                           "  - name: ship\n"
	                           "    action: shipping.ship\n";
	const char *const small_messages[] = {"SAGAD_STREAM_MAX_MSG_SIZE=4KiB", NULL};
	static char big[6000];
	struct start_answer a;

	flow_setup(&f, "t_unpub");
	flow_define(&f, yaml);
	flow_start_sagad(&f, small_messages);
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	/* Its input makes every command of this saga larger than the streams take. */
	memset(big, 'x', sizeof(big) - 16);
	memcpy(big, "{\"pad\":\"", 8);
	memcpy(big + sizeof(big) - 16, "\"}", 3);
	cr_assert_eq(flow_start_saga(&f, "order", big, NULL, &a), STATUS_OK);
	cr_assert_eq(a.status, START_ACCEPTED, "%s", a.reason);
	start_many("order", 20);
	settle(21, 90000);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        20, "the other sagas' commands went out");
	for (int i = 0; i < 50 && flow_sql_long(&f, "SELECT count(*) FROM saga_outbox") > 0; i++)
		usleep(100 * 1000);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_outbox"), 0,
	             "nothing stays in the outbox");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"
	                               " WHERE error_class = 'unpublishable'"
	                               " AND step = 'reserve_stock'"
	                               " AND reason LIKE '%cannot be published%'"),
	             2, "each attempt's large command is a dead letter with its reason");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"
	                               " WHERE step = 'reserve_stock'"),
	             20);
}

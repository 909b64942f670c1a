/*
 * Fault tests: sagad killed (SIGKILL from its own fail points) at each crash
 * point of RELIABILITY.md's matrix, forward and during compensation, with a
 * few hundred sagas in flight; after a restart every saga ends exactly once
 * and the invariant checker finds nothing.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flow.h"
#include "harness.h"

#define N_SAGAS 200

static const char order_yaml[] = "name: order\n"
                                 "steps:\n"
                                 "  - name: reserve_stock\n"
                                 "    action: stock.reserve\n"
                                 "    compensation: stock.release\n"
                                 "    timeout: 5s\n"
                                 "    retry: {max_attempts: 5}\n"
                                 "  - name: charge_card\n"
                                 "    action: payments.charge\n"
                                 "    compensation: payments.refund\n"
                                 "    timeout: 5s\n"
                                 "    retry: {max_attempts: 5}\n"
                                 "  - name: ship\n"
                                 "    action: shipping.ship\n"
                                 "    timeout: 5s\n"
                                 "    retry: {max_attempts: 5}\n";

/* One row of the matrix. */
struct crash_case {
	char point[40]; /* fail point name */
	int compensate; /* every charge fails: the crash lands during compensation */
	int after;      /* passes of the point before the kill */
};

static struct flow f;
static char ids[N_SAGAS][SAGA_ID_LEN + 1];

static void
teardown(void)
{
	flow_teardown(&f);
}

ParameterizedTestParameters(faults, sagad_killed_at_a_crash_point_loses_and_doubles_nothing)
{
	static struct crash_case cases[] = {
	        {"after_commit_before_publish", 0, 40}, {"after_publish_before_delete", 0, 15},
	        {"after_fetch_before_commit", 0, 10},   {"after_commit_before_ack", 0, 10},
	        {"after_commit_before_publish", 1, 60}, {"after_publish_before_delete", 1, 25},
	        {"after_fetch_before_commit", 1, 20},   {"after_commit_before_ack", 1, 20},
	};

	return cr_make_param_array(struct crash_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct crash_case *c, faults,
                  sagad_killed_at_a_crash_point_loses_and_doubles_nothing, .fini = teardown,
                  .timeout = 300)
{
	char fp[80], fp_after[64];
	const char *const armed[] = {fp, fp_after, NULL};
	const char *const fail_all[] = {"--fail-rate=1", NULL};
	int sagad, restarted = 0, status;
	long expect_effects;

	snprintf(fp, sizeof(fp), "SAGAD_FAIL_POINT=%s", c->point);
	snprintf(fp_after, sizeof(fp_after), "SAGAD_FAIL_POINT_AFTER=%d", c->after);
	flow_setup(&f, "t_fault");
	flow_define(&f, order_yaml);
	sagad = flow_start_sagad(&f, armed);
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", c->compensate ? fail_all : NULL);
	flow_start_participant(&f, "shipping", NULL);

	/* A careful client: on no answer it retries the same idempotency key. */
	for (int i = 0; i < N_SAGAS; i++) {
		char key[32];
		struct start_answer a;

		snprintf(key, sizeof(key), "order-%d", i);
		for (int tries = 0;; tries++) {
			cr_assert_lt(tries, 100, "start %d never accepted", i);
			if (flow_start_saga(&f, "order", "{}", key, &a) == STATUS_OK &&
			    (a.status == START_ACCEPTED || a.status == START_DUPLICATE))
				break;
			if (!restarted && harness_wait(f.procs[sagad], 0) != -1) {
				f.procs[sagad] = 0;
				sagad = flow_start_sagad(&f, NULL);
				restarted = 1;
			}
			usleep(50 * 1000);
		}
		snprintf(ids[i], sizeof(ids[i]), "%s", a.saga_id);
	}
	if (!restarted) {
		status = harness_wait(f.procs[sagad], 60000);
		cr_assert_eq(status, 128 + SIGKILL, "sagad should have died at %s (status %d)",
		             c->point, status);
		f.procs[sagad] = 0;
		flow_start_sagad(&f, NULL);
	}
	if (!flow_wait_settled(&f, N_SAGAS, 120000)) {
		flow_dump_logs(&f);
		cr_assert_fail("sagas did not settle after the restart");
	}
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), N_SAGAS,
	             "one saga per idempotency key");
	cr_assert_eq(
	        flow_sql_long(
	                &f,
	                c->compensate
	                        ? "SELECT count(*) FROM saga_instance WHERE state = 'compensated'"
	                        : "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        N_SAGAS);
	/* Forward: reserve + charge + ship; compensating: reserve + release (charge fails). */
	expect_effects = (c->compensate ? 2L : 3L) * N_SAGAS;
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"), expect_effects);
	flow_assert_invariants(&f, ids, N_SAGAS);
}

Test(faults, a_participant_failing_every_command_meets_a_circuit_breaker_not_a_retry_storm,
     .fini = teardown, .timeout = 240)
{
	static const char yaml[] =
	        "name: order\n"
	        "steps:\n"
	        "  - name: reserve_stock\n"
	        "    action: stock.reserve\n"
	        "    compensation: stock.release\n"
	        "  - name: charge_card\n"
	        "    action: payments.charge\n"
	        "    compensation: payments.refund\n"
	        "    retry: {max_attempts: 60, initial_backoff: 20ms, max_backoff: 100ms}\n"
	        "  - name: ship\n"
	        "    action: shipping.ship\n";
	const char *const breaker[] = {"SAGAD_BREAKER_FAILURES=5", "SAGAD_BREAKER_COOLDOWN=1s",
	                               NULL};
	const char *const broken[] = {"--retryable-rate=1", NULL};
	char out[65536];
	int sagad, payments, port;
	long attempts;

	flow_setup(&f, "t_storm");
	flow_define(&f, yaml);
	sagad = flow_start_sagad(&f, breaker);
	port = flow_http_port(&f, sagad);
	flow_start_participant(&f, "stock", NULL);
	payments = flow_start_participant(&f, "payments", broken);
	flow_start_participant(&f, "shipping", NULL);
	for (int i = 0; i < 20; i++) {
		struct start_answer a;

		cr_assert_eq(flow_start_saga(&f, "order", "{}", NULL, &a), STATUS_OK);
		cr_assert_eq(a.status, START_ACCEPTED);
	}
	sleep(4);
	/*
	 * Unchecked, 20 sagas retrying every ~20-100 ms for 4 s would send about a
	 * thousand charges. The circuit opens after 5 failures and lets one probe
	 * through per second.
	 */
	attempts = flow_sql_long(&f, "SELECT COALESCE(sum(attempt), 0) FROM saga_step"
	                             " WHERE name = 'charge_card'");
	cr_assert_lt(attempts, 120, "%ld charge attempts: the breaker did not hold retries",
	             attempts);
	cr_assert_eq(flow_http(port, "GET", "/metrics", NULL, NULL, out, sizeof(out)), 200);
	cr_assert(strstr(out, "sagad_breakers_open 1") != NULL, "%s", out);
	cr_assert(strstr(out, "sagad_breaker_opened_total 0") == NULL, "%s", out);
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state <> 'running'"), 0,
	        "sagas wait, they do not give up");

	/* The service heals: the next probe succeeds and the held retries go out. */
	flow_signal(&f, payments, SIGTERM);
	flow_start_participant(&f, "payments", NULL);
	if (!flow_wait_settled(&f, 20, 60000)) {
		flow_dump_logs(&f);
		cr_assert_fail("sagas did not recover after the participant healed");
	}
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        20);
	cr_assert_eq(flow_http(port, "GET", "/metrics", NULL, NULL, out, sizeof(out)), 200);
	cr_assert(strstr(out, "sagad_breakers_open 0") != NULL, "%s", out);
	flow_assert_invariants(&f, NULL, 0);
}

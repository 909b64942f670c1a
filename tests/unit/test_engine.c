/* Table-driven unit tests of the saga state machine (pure: no I/O, no clock). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "definition.h"
#include "engine.h"

#define T0 INT64_C(1764300000000)

static const char order_yaml[] =
        "name: order\n"
        "deadline: 5m\n"
        "steps:\n"
        "  - name: reserve\n"
        "    action: stock.reserve\n"
        "    compensation: stock.release\n"
        "    timeout: 5s\n"
        "    retry: {max_attempts: 3, initial_backoff: 100ms, max_backoff: 2s}\n"
        "    compensation_retry: {max_attempts: 2}\n"
        "  - name: charge\n"
        "    action: payments.charge\n"
        "    compensation: payments.refund\n"
        "    timeout: 5s\n"
        "    compensation_retry: {max_attempts: 2}\n"
        "  - name: ship\n"
        "    action: shipping.ship\n"
        "    timeout: 5s\n";

static const char travel_yaml[] =
        "name: travel\n"
        "steps:\n"
        "  - name: flight\n"
        "    action: flights.book\n"
        "    compensation: flights.cancel\n"
        "    group: bookings\n"
        "  - name: hotel\n"
        "    action: hotels.book\n"
        "    compensation: hotels.cancel\n"
        "    group: bookings\n"
        "  - name: pay\n"
        "    action: payments.capture\n"
        "    kind: pivot\n"
        "  - name: notify\n"
        "    action: mail.send\n"
        "    kind: retriable\n"
        "    retry: {max_attempts: 0, initial_backoff: 1s, max_backoff: 10s}\n";

static struct saga_def def;
static struct saga_inst inst;
static struct plan plan;

static void
load(const char *yaml)
{
	char err[512];

	memset(&def, 0, sizeof(def));
	cr_assert_eq(definition_parse_yaml(&def, yaml, strlen(yaml), err, sizeof(err)), STATUS_OK,
	             "%s", err);
	def.version = 1;
	memset(&inst, 0, sizeof(inst));
	snprintf(inst.id, sizeof(inst.id), "00000000-0000-4000-8000-000000000001");
	snprintf(inst.correlation_id, sizeof(inst.correlation_id), "corr-1");
}

static void
teardown(void)
{
	saga_inst_release(&inst);
}

static void
step_event(enum engine_event_type type, int step, enum step_phase phase, uint32_t attempt,
           enum reply_outcome outcome, int64_t now, const char *text)
{
	struct engine_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	ev.now_ms = now;
	ev.step = step;
	ev.phase = phase;
	ev.attempt = attempt;
	ev.outcome = outcome;
	ev.text = text;
	if (outcome == OUTCOME_SUCCESS) {
		static uint8_t out[] = "{\"ok\":true}";

		ev.output.data = out;
		ev.output.len = sizeof(out) - 1;
	}
	cr_assert_eq(engine_step(&def, &inst, &ev, &plan), STATUS_OK);
}

static void
start(int64_t now)
{
	step_event(EV_START, -1, 0, 0, 0, now, NULL);
}

static void
reply(int step, enum step_phase phase, uint32_t attempt, enum reply_outcome outcome, int64_t now)
{
	step_event(EV_REPLY, step, phase, attempt, outcome, now,
	           outcome == OUTCOME_SUCCESS ? NULL : "participant said no");
}

static void
op(enum engine_event_type type, int64_t now, const char *note)
{
	step_event(type, -1, 0, 0, 0, now, note);
}

/* Fire every due timer at now; returns how many applied. */
static int
tick(int64_t now)
{
	struct engine_event due[16];
	int n = engine_due_events(&def, &inst, now, due, 16);
	int applied = 0;

	for (int i = 0; i < n; i++) {
		cr_assert_eq(engine_step(&def, &inst, &due[i], &plan), STATUS_OK);
		applied += plan.verdict == VERDICT_APPLIED;
	}
	return applied;
}

static int
has_event(enum lifecycle_type type)
{
	for (int i = 0; i < plan.n_events; i++) {
		if (plan.events[i].type == type)
			return 1;
	}
	return 0;
}

TestSuite(engine, .fini = teardown);

Test(engine, start_dispatches_the_first_step_and_arms_its_timeout)
{
	load(order_yaml);
	start(T0);
	cr_assert_eq(plan.verdict, VERDICT_APPLIED);
	cr_assert_eq(inst.state, SAGA_RUNNING);
	cr_assert_eq(plan.n_commands, 1);
	cr_assert_eq(plan.commands[0].step, 0);
	cr_assert_eq(plan.commands[0].phase, PHASE_ACTION);
	cr_assert_eq(plan.commands[0].attempt, 1);
	cr_assert_eq(plan.commands[0].deadline_ms, T0 + 5000);
	cr_assert(has_event(LC_STARTED));
	cr_assert_eq(inst.steps[0].state, STEP_RUNNING);
	cr_assert_eq(inst.wake_at_ms, T0 + 5000, "the step timeout comes before the deadline");
	cr_assert_eq(inst.deadline_at_ms, T0 + 5 * 60 * 1000);
	cr_assert_eq(plan.seq, 1);
}

Test(engine, successes_run_the_steps_in_order_and_complete)
{
	load(order_yaml);
	start(T0);
	for (int i = 0; i < 3; i++) {
		reply(i, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 10 * (i + 1));
		cr_assert_eq(plan.verdict, VERDICT_APPLIED);
		cr_assert(has_event(LC_STEP_SUCCEEDED));
		if (i < 2) {
			cr_assert_eq(plan.n_commands, 1);
			cr_assert_eq(plan.commands[0].step, i + 1);
		}
	}
	cr_assert_eq(inst.state, SAGA_COMPLETED);
	cr_assert(has_event(LC_COMPLETED));
	cr_assert_eq(inst.wake_at_ms, 0, "a finished saga has no timer");
	cr_assert_eq(inst.steps[1].completed_order, 2);
	cr_assert_eq(inst.steps[2].output.len, strlen("{\"ok\":true}"));
}

Test(engine, permanent_failure_compensates_completed_steps_in_reverse)
{
	load(order_yaml);
	start(T0);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 1);
	reply(1, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 2);
	reply(2, PHASE_ACTION, 1, OUTCOME_PERMANENT_FAILURE, T0 + 3);
	cr_assert_eq(inst.state, SAGA_COMPENSATING);
	cr_assert(has_event(LC_STEP_FAILED));
	cr_assert(has_event(LC_COMPENSATING));
	cr_assert_eq(plan.n_commands, 1);
	cr_assert_eq(plan.commands[0].step, 1, "the newest completed step is undone first");
	cr_assert_eq(plan.commands[0].phase, PHASE_COMPENSATION);
	reply(1, PHASE_COMPENSATION, 1, OUTCOME_SUCCESS, T0 + 4);
	cr_assert_eq(plan.n_commands, 1);
	cr_assert_eq(plan.commands[0].step, 0);
	reply(0, PHASE_COMPENSATION, 1, OUTCOME_SUCCESS, T0 + 5);
	cr_assert_eq(inst.state, SAGA_COMPENSATED);
	cr_assert(has_event(LC_COMPENSATED));
	cr_assert_eq(inst.steps[2].state, STEP_FAILED, "the failed step is not compensated");
	cr_assert_eq(inst.wake_at_ms, 0);
}

Test(engine, retryable_failure_backs_off_with_jitter_then_resends)
{
	load(order_yaml);
	start(T0);
	reply(0, PHASE_ACTION, 1, OUTCOME_RETRYABLE_FAILURE, T0 + 10);
	cr_assert_eq(inst.steps[0].state, STEP_WAITING_RETRY);
	cr_assert(has_event(LC_STEP_RETRYING));
	cr_assert_eq(plan.n_commands, 0);
	cr_assert_geq(inst.steps[0].wake_at_ms, T0 + 10);
	cr_assert_leq(inst.steps[0].wake_at_ms, T0 + 10 + 100, "first delay is at most 100ms");
	cr_assert_eq(inst.steps[0].wake_at_ms,
	             T0 + 10 + backoff_delay_ms(&def.steps[0].retry, inst.id, 0, PHASE_ACTION, 1),
	             "the delay is reproducible from the seed");
	cr_assert_eq(tick(inst.steps[0].wake_at_ms), 1);
	cr_assert_eq(plan.n_commands, 1);
	cr_assert_eq(plan.commands[0].attempt, 2);
	reply(0, PHASE_ACTION, 2, OUTCOME_SUCCESS, inst.steps[0].wake_at_ms - 1);
	cr_assert_eq(inst.steps[0].state, STEP_SUCCEEDED);
}

Test(engine, exhausted_retries_start_compensation)
{
	int64_t now = T0;

	load(order_yaml);
	start(now);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	reply(1, PHASE_ACTION, 1, OUTCOME_RETRYABLE_FAILURE, ++now);
	for (uint32_t a = 2; a <= 3; a++) {
		now = inst.steps[1].wake_at_ms;
		tick(now);
		cr_assert_eq(plan.commands[0].attempt, a);
		reply(1, PHASE_ACTION, a, OUTCOME_RETRYABLE_FAILURE, ++now);
	}
	cr_assert_eq(inst.steps[1].state, STEP_FAILED, "3 attempts were the budget");
	cr_assert_eq(inst.state, SAGA_COMPENSATING);
	cr_assert_eq(plan.commands[0].step, 0);
}

Test(engine, timeout_resends_and_a_reply_to_the_old_attempt_is_stale)
{
	load(order_yaml);
	start(T0);
	cr_assert_eq(tick(T0 + 5000), 1);
	cr_assert_eq(inst.steps[0].state, STEP_WAITING_RETRY);
	cr_assert(inst.steps[0].uncertain, "a timed-out attempt may have had its effect");
	tick(inst.steps[0].wake_at_ms);
	cr_assert_eq(plan.commands[0].attempt, 2);

	/* The first attempt's reply arrives late: nothing changes. */
	struct saga_inst before = inst;
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 6000);
	cr_assert_eq(plan.verdict, VERDICT_STALE);
	cr_assert_eq(plan.n_commands + plan.n_events, 0);
	cr_assert_eq(inst.steps[0].state, before.steps[0].state);
	cr_assert_eq(inst.seq, before.seq + 1, "the stale reply is still recorded");

	reply(0, PHASE_ACTION, 2, OUTCOME_SUCCESS, T0 + 6001);
	cr_assert_eq(plan.verdict, VERDICT_APPLIED);
	cr_assert_eq(inst.steps[1].state, STEP_RUNNING);
}

Test(engine, duplicate_and_late_replies_change_nothing)
{
	load(order_yaml);
	start(T0);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 1);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 2);
	cr_assert_eq(plan.verdict, VERDICT_DUPLICATE);
	cr_assert_eq(inst.steps[0].completed_order, 1, "not completed twice");
	cr_assert_eq(plan.n_commands, 0);
	reply(1, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 3);
	reply(2, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 4);
	cr_assert_eq(inst.state, SAGA_COMPLETED);
	reply(2, PHASE_ACTION, 1, OUTCOME_PERMANENT_FAILURE, T0 + 5);
	cr_assert_eq(plan.verdict, VERDICT_LATE);
	cr_assert_eq(inst.state, SAGA_COMPLETED);
	reply(0, PHASE_COMPENSATION, 1, OUTCOME_SUCCESS, T0 + 6);
	cr_assert_eq(plan.verdict, VERDICT_LATE);
	cr_assert_eq(tick(T0 + 10 * 60 * 1000), 0, "no timer fires on a finished saga");
}

Test(engine, a_reply_for_an_attempt_never_sent_is_stale)
{
	load(order_yaml);
	start(T0);
	reply(0, PHASE_ACTION, 7, OUTCOME_SUCCESS, T0 + 1);
	cr_assert_eq(plan.verdict, VERDICT_STALE);
	reply(0, PHASE_COMPENSATION, 1, OUTCOME_SUCCESS, T0 + 1);
	cr_assert_eq(plan.verdict, VERDICT_STALE);
	cr_assert_eq(inst.steps[0].state, STEP_RUNNING);
}

Test(engine, parallel_group_is_dispatched_together_and_joined)
{
	load(travel_yaml);
	start(T0);
	cr_assert_eq(plan.n_commands, 2, "flight and hotel leave together");
	reply(1, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 1);
	cr_assert_eq(plan.n_commands, 0, "the group is not done yet");
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 2);
	cr_assert_eq(plan.n_commands, 1);
	cr_assert_eq(plan.commands[0].step, 2);
}

Test(engine, a_failing_group_member_waits_for_its_sibling_then_compensates_it)
{
	load(travel_yaml);
	start(T0);
	reply(0, PHASE_ACTION, 1, OUTCOME_PERMANENT_FAILURE, T0 + 1);
	cr_assert_eq(inst.state, SAGA_COMPENSATING);
	cr_assert_eq(plan.n_commands, 0, "hotel is still running: wait for it");
	reply(1, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 2);
	cr_assert_eq(plan.n_commands, 1);
	cr_assert_eq(plan.commands[0].step, 1);
	cr_assert_eq(plan.commands[0].phase, PHASE_COMPENSATION);
	reply(1, PHASE_COMPENSATION, 1, OUTCOME_SUCCESS, T0 + 3);
	cr_assert_eq(inst.state, SAGA_COMPENSATED);
}

Test(engine, past_the_pivot_failures_retry_forward_and_never_compensate)
{
	int64_t now = T0;

	load(travel_yaml);
	start(now);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	reply(1, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	reply(2, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	cr_assert(engine_past_point_of_no_return(&def, &inst));
	op(EV_ABORT, ++now, "customer changed their mind");
	cr_assert_eq(plan.verdict, VERDICT_REFUSED);
	cr_assert_eq(inst.state, SAGA_RUNNING);
	for (uint32_t a = 1; a <= 20; a++) {
		reply(3, PHASE_ACTION, a, OUTCOME_RETRYABLE_FAILURE, ++now);
		cr_assert_eq(inst.state, SAGA_RUNNING, "attempt %u must not compensate", a);
		cr_assert_leq(inst.steps[3].wake_at_ms - now, 10000, "max_backoff caps the delay");
		now = inst.steps[3].wake_at_ms;
		tick(now);
		cr_assert_eq(plan.commands[0].phase, PHASE_ACTION);
	}
	reply(3, PHASE_ACTION, 21, OUTCOME_SUCCESS, ++now);
	cr_assert_eq(inst.state, SAGA_COMPLETED);
}

Test(engine, a_permanent_failure_past_the_pivot_fails_the_saga_for_an_operator)
{
	int64_t now = T0;

	load(travel_yaml);
	start(now);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	reply(1, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	reply(2, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	reply(3, PHASE_ACTION, 1, OUTCOME_PERMANENT_FAILURE, ++now);
	cr_assert_eq(inst.state, SAGA_FAILED);
	cr_assert(plan.dead_letter);
	cr_assert_eq(plan.n_commands, 0, "nothing is compensated past the pivot");
	op(EV_RETRY, ++now, "mail server fixed");
	cr_assert_eq(inst.state, SAGA_RUNNING);
	cr_assert_eq(plan.commands[0].step, 3);
	cr_assert_eq(plan.commands[0].attempt, 2);
	reply(3, PHASE_ACTION, 2, OUTCOME_SUCCESS, ++now);
	cr_assert_eq(inst.state, SAGA_COMPLETED);
}

Test(engine, a_timed_out_pivot_fails_the_saga_instead_of_guessing)
{
	int64_t now = T0;

	load(travel_yaml);
	start(now);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	reply(1, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	for (int i = 0; i < 20 && inst.steps[2].state != STEP_FAILED; i++) {
		now = inst.steps[2].wake_at_ms;
		tick(now);
	}
	cr_assert_eq(inst.steps[2].state, STEP_FAILED);
	cr_assert_eq(inst.state, SAGA_FAILED, "the pivot may have happened: ask an operator");
}

Test(engine, deadline_compensates_before_the_pivot)
{
	load(order_yaml);
	start(T0);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 1);
	/* charge never answers; the clock jumps past the saga deadline. */
	tick(T0 + 5 * 60 * 1000 + 1);
	cr_assert_eq(inst.state, SAGA_COMPENSATING);
	cr_assert_str_eq(inst.last_error, "saga deadline exceeded");
	cr_assert_eq(inst.deadline_at_ms, 0, "the deadline fires once");
	cr_assert_eq(plan.n_commands, 1);
	cr_assert_eq(plan.commands[0].step, 1,
	             "charge timed out: it may have happened, undo it first");
	cr_assert_eq(plan.commands[0].phase, PHASE_COMPENSATION);
}

Test(engine, abort_compensates_a_running_saga)
{
	load(order_yaml);
	start(T0);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 1);
	op(EV_ABORT, T0 + 2, "fraud suspected");
	cr_assert_eq(plan.verdict, VERDICT_APPLIED);
	cr_assert_eq(inst.state, SAGA_COMPENSATING);
	cr_assert(strstr(inst.last_error, "fraud suspected") != NULL);
	/* charge is still out: its reply is awaited before undoing reserve. */
	cr_assert_eq(plan.n_commands, 0);
	reply(1, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 3);
	cr_assert_eq(plan.commands[0].step, 1, "charge is refunded first");
	cr_assert_eq(plan.commands[0].phase, PHASE_COMPENSATION);
}

Test(engine, exhausted_compensation_fails_with_a_dead_letter_then_retry_and_resolve)
{
	int64_t now = T0;

	load(order_yaml);
	start(now);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	reply(1, PHASE_ACTION, 1, OUTCOME_PERMANENT_FAILURE, ++now);
	cr_assert_eq(plan.commands[0].step, 0);
	reply(0, PHASE_COMPENSATION, 1, OUTCOME_RETRYABLE_FAILURE, ++now);
	now = inst.steps[0].wake_at_ms;
	tick(now);
	reply(0, PHASE_COMPENSATION, 2, OUTCOME_RETRYABLE_FAILURE, ++now);
	cr_assert_eq(inst.state, SAGA_FAILED);
	cr_assert_eq(inst.steps[0].state, STEP_COMPENSATION_FAILED);
	cr_assert(plan.dead_letter);
	cr_assert_eq(plan.dead_letter_step, 0);
	cr_assert(has_event(LC_FAILED));
	cr_assert_eq(inst.wake_at_ms, 0, "a failed saga waits for an operator, not a timer");

	op(EV_RETRY, ++now, "inventory service fixed");
	cr_assert_eq(inst.state, SAGA_COMPENSATING);
	cr_assert_eq(plan.commands[0].phase, PHASE_COMPENSATION);
	cr_assert_eq(plan.commands[0].attempt, 3);
	reply(0, PHASE_COMPENSATION, 3, OUTCOME_RETRYABLE_FAILURE, ++now);
	cr_assert_eq(inst.state, SAGA_COMPENSATING);
	cr_assert_eq(inst.steps[0].state, STEP_COMPENSATION_WAITING_RETRY,
	             "the retry gave a fresh budget of 2");
	now = inst.steps[0].wake_at_ms;
	tick(now);
	reply(0, PHASE_COMPENSATION, 4, OUTCOME_PERMANENT_FAILURE, ++now);
	cr_assert_eq(inst.state, SAGA_FAILED);
	op(EV_RESOLVE, ++now, "released by hand in the warehouse");
	cr_assert_eq(inst.state, SAGA_RESOLVED);
	cr_assert(has_event(LC_RESOLVED));
}

/* Drive the order saga into each state; returns the state reached. */
static enum saga_state
drive_to(enum saga_state want)
{
	load(order_yaml);
	start(T0);
	switch (want) {
	case SAGA_RUNNING:
		break;
	case SAGA_COMPLETED:
		for (int i = 0; i < 3; i++)
			reply(i, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + i + 1);
		break;
	case SAGA_COMPENSATING:
		reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 1);
		reply(1, PHASE_ACTION, 1, OUTCOME_PERMANENT_FAILURE, T0 + 2);
		break;
	case SAGA_COMPENSATED:
		reply(0, PHASE_ACTION, 1, OUTCOME_PERMANENT_FAILURE, T0 + 1);
		break;
	case SAGA_FAILED:
	case SAGA_RESOLVED:
		reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, T0 + 1);
		reply(1, PHASE_ACTION, 1, OUTCOME_PERMANENT_FAILURE, T0 + 2);
		reply(0, PHASE_COMPENSATION, 1, OUTCOME_PERMANENT_FAILURE, T0 + 3);
		if (want == SAGA_RESOLVED)
			op(EV_RESOLVE, T0 + 4, "by hand");
		break;
	}
	cr_assert_eq(inst.state, want, "could not drive the saga to %s", saga_state_name(want));
	return inst.state;
}

Test(engine, every_operator_command_in_every_state_is_applied_or_refused)
{
	/* expected[state][command]: 1 = applied, 0 = refused. */
	static const struct {
		enum saga_state state;
		int abort, retry, resolve;
	} table[] = {
	        {SAGA_RUNNING, 1, 1, 0},   {SAGA_COMPENSATING, 0, 1, 0},
	        {SAGA_COMPLETED, 0, 0, 0}, {SAGA_COMPENSATED, 0, 0, 0},
	        {SAGA_FAILED, 0, 1, 1},    {SAGA_RESOLVED, 0, 0, 0},
	};
	const enum engine_event_type cmds[3] = {EV_ABORT, EV_RETRY, EV_RESOLVE};

	for (size_t r = 0; r < sizeof(table) / sizeof(table[0]); r++) {
		const int expect[3] = {table[r].abort, table[r].retry, table[r].resolve};

		for (int c = 0; c < 3; c++) {
			int32_t seq;

			drive_to(table[r].state);
			seq = inst.seq;
			op(cmds[c], T0 + 100, "note");
			cr_assert_eq(plan.verdict == VERDICT_APPLIED, expect[c],
			             "%s in state %s: got %s (%s)", engine_event_name(cmds[c]),
			             saga_state_name(table[r].state),
			             engine_verdict_name(plan.verdict), plan.detail);
			cr_assert_eq(inst.seq, seq + 1, "every event is recorded");
			if (!expect[c]) {
				cr_assert_eq(inst.state, table[r].state,
				             "a refusal changes nothing");
				cr_assert_eq(plan.n_commands, 0);
			}
			saga_inst_release(&inst);
		}
	}
}

Test(engine, replies_and_timers_on_terminal_sagas_are_late_or_stale)
{
	const enum saga_state terminal[] = {SAGA_COMPLETED, SAGA_COMPENSATED, SAGA_RESOLVED};

	for (size_t i = 0; i < 3; i++) {
		drive_to(terminal[i]);
		for (int step = 0; step < 3; step++) {
			for (int phase = PHASE_ACTION; phase <= PHASE_COMPENSATION; phase++) {
				reply(step, (enum step_phase)phase, 1, OUTCOME_SUCCESS, T0 + 50);
				cr_assert_eq(plan.verdict, VERDICT_LATE);
				cr_assert_eq(inst.state, terminal[i]);
			}
		}
		step_event(EV_STEP_TIMEOUT, 0, PHASE_ACTION, 1, 0, T0 + 999999, NULL);
		cr_assert_neq(plan.verdict, VERDICT_APPLIED);
		step_event(EV_DEADLINE, -1, 0, 0, 0, T0 + 999999, NULL);
		cr_assert_neq(plan.verdict, VERDICT_APPLIED);
		cr_assert_eq(inst.state, terminal[i]);
		saga_inst_release(&inst);
	}
}

Test(engine, a_second_start_is_refused)
{
	load(order_yaml);
	start(T0);
	start(T0 + 1);
	cr_assert_eq(plan.verdict, VERDICT_REFUSED);
	cr_assert_eq(plan.n_commands, 0);
}

Test(engine, a_pivot_succeeding_after_an_abort_fails_the_saga_instead_of_compensating)
{
	int64_t now = T0;

	load(travel_yaml);
	start(now);
	reply(0, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	reply(1, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	cr_assert_eq(inst.steps[2].state, STEP_RUNNING, "the pivot is out");
	op(EV_ABORT, ++now, "too late?");
	cr_assert_eq(inst.state, SAGA_COMPENSATING);
	cr_assert_eq(plan.n_commands, 0, "wait for the pivot's answer first");
	reply(2, PHASE_ACTION, 1, OUTCOME_SUCCESS, ++now);
	cr_assert_eq(inst.state, SAGA_FAILED, "the pivot happened: nothing may be undone");
	cr_assert_eq(plan.n_commands, 0);
	cr_assert(plan.dead_letter);
	op(EV_RETRY, ++now, "go forward");
	cr_assert_eq(inst.state, SAGA_RUNNING);
	cr_assert_eq(plan.commands[0].step, 3, "retry continues after the pivot");
}

/*
 * The saga state machine: pure and deterministic, no I/O. Given a definition,
 * an instance and one event, it changes the instance and returns a plan of
 * what to persist and send; the store commits the plan in one transaction.
 */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "definition.h"

/* An impossible (state, event) pair means a bug: stop rather than corrupt sagas. */
#define ENGINE_BUG(...)                                                                            \
	do {                                                                                       \
		fprintf(stderr, "sagad engine bug: " __VA_ARGS__);                                 \
		fputc('\n', stderr);                                                               \
		abort();                                                                           \
	} while (0)

bool
engine_is_terminal(enum saga_state s)
{
	return s == SAGA_COMPLETED || s == SAGA_COMPENSATED || s == SAGA_RESOLVED;
}

const char *
engine_event_name(enum engine_event_type t)
{
	switch (t) {
	case EV_START:
		return "start";
	case EV_REPLY:
		return "reply";
	case EV_STEP_TIMEOUT:
		return "timeout";
	case EV_RETRY_DUE:
		return "retry_due";
	case EV_DEADLINE:
		return "deadline";
	case EV_ABORT:
		return "abort";
	case EV_RETRY:
		return "retry";
	case EV_RESOLVE:
		return "resolve";
	case EV_TYPE_COUNT:
		break;
	}
	return "unknown";
}

const char *
engine_verdict_name(enum engine_verdict v)
{
	switch (v) {
	case VERDICT_APPLIED:
		return "applied";
	case VERDICT_DUPLICATE:
		return "duplicate";
	case VERDICT_STALE:
		return "stale";
	case VERDICT_LATE:
		return "late";
	case VERDICT_REFUSED:
		return "refused";
	}
	return "unknown";
}

/*
 * The one place a saga's state changes. Legal moves only; anything else is a
 * bug in this file and stops the process.
 */
static void
change_saga_state(struct saga_inst *inst, struct plan *plan, enum saga_state to)
{
	int from = inst->state;
	bool legal = false;

	switch (from) {
	case 0:
		legal = to == SAGA_RUNNING;
		break;
	case SAGA_RUNNING:
		legal = to == SAGA_COMPLETED || to == SAGA_COMPENSATING || to == SAGA_FAILED;
		break;
	case SAGA_COMPENSATING:
		legal = to == SAGA_COMPENSATED || to == SAGA_FAILED;
		break;
	case SAGA_FAILED:
		legal = to == SAGA_RUNNING || to == SAGA_COMPENSATING || to == SAGA_RESOLVED;
		break;
	case SAGA_COMPLETED:
	case SAGA_COMPENSATED:
	case SAGA_RESOLVED:
		legal = false;
		break;
	default:
		ENGINE_BUG("saga %s in unknown state %d", inst->id, from);
	}
	if (!legal)
		ENGINE_BUG("saga %s: illegal move %s -> %s", inst->id,
		           saga_state_name((enum saga_state)from), saga_state_name(to));
	inst->state = to;
	plan->to_state = to;
}

static void
set_text(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static void
add_event(struct plan *plan, enum lifecycle_type type, int step, uint32_t attempt,
          const char *reason)
{
	struct plan_event *e;

	if (plan->n_events >= PLAN_MAX_EVENTS)
		ENGINE_BUG("too many lifecycle events in one plan");
	e = &plan->events[plan->n_events++];
	e->type = type;
	e->step = step;
	e->attempt = attempt;
	set_text(e->reason, sizeof(e->reason), reason);
}

static void
add_command(struct plan *plan, int step, enum step_phase phase, uint32_t attempt,
            int64_t deadline_ms)
{
	struct plan_command *c;

	if (plan->n_commands >= PLAN_MAX_COMMANDS)
		ENGINE_BUG("too many commands in one plan");
	c = &plan->commands[plan->n_commands++];
	c->step = step;
	c->phase = phase;
	c->attempt = attempt;
	c->deadline_ms = deadline_ms;
}

static bool
budget_left(const struct retry_policy *p, uint32_t attempts, uint32_t base)
{
	return p->max_attempts == 0 || attempts - base < p->max_attempts;
}

bool
engine_past_point_of_no_return(const struct saga_def *def, const struct saga_inst *inst)
{
	for (int i = 0; i < def->n_steps; i++) {
		if (def->steps[i].kind == STEP_KIND_PIVOT && inst->steps[i].state == STEP_SUCCEEDED)
			return true;
		if (def->steps[i].kind == STEP_KIND_RETRIABLE && inst->steps[i].attempt > 0)
			return true;
	}
	return false;
}

static void
dispatch_action(const struct saga_def *def, struct saga_inst *inst, int i, int64_t now,
                struct plan *plan)
{
	struct step_inst *s = &inst->steps[i];

	s->state = STEP_RUNNING;
	s->attempt++;
	s->wake_at_ms = now + def->steps[i].timeout_ms;
	s->dirty = true;
	add_command(plan, i, PHASE_ACTION, s->attempt, s->wake_at_ms);
}

static void
dispatch_compensation(const struct saga_def *def, struct saga_inst *inst, int i, int64_t now,
                      struct plan *plan)
{
	struct step_inst *s = &inst->steps[i];

	s->state = STEP_COMPENSATING;
	s->comp_attempt++;
	s->wake_at_ms = now + def->steps[i].timeout_ms;
	s->dirty = true;
	add_command(plan, i, PHASE_COMPENSATION, s->comp_attempt, s->wake_at_ms);
}

/* Dispatch every step of the group starting at first. */
static void
dispatch_group(const struct saga_def *def, struct saga_inst *inst, int first, int64_t now,
               struct plan *plan)
{
	int end = definition_group_end(def, first);

	for (int i = first; i < end; i++)
		dispatch_action(def, inst, i, now, plan);
}

/* Running saga: when the current group has all succeeded, start the next or complete. */
static void
advance_forward(const struct saga_def *def, struct saga_inst *inst, int64_t now, struct plan *plan)
{
	int i = 0;

	while (i < def->n_steps && inst->steps[i].state == STEP_SUCCEEDED)
		i++;
	if (i == def->n_steps) {
		change_saga_state(inst, plan, SAGA_COMPLETED);
		add_event(plan, LC_COMPLETED, -1, 0, NULL);
		return;
	}
	if (inst->steps[i].state != STEP_PENDING)
		return; /* the current group is still in progress */
	/* Groups are joined: start the next only when the one before is done. */
	if (i > 0 && definition_group_start(def, i) != i)
		ENGINE_BUG("saga %s: step %d pending inside a started group", inst->id, i);
	dispatch_group(def, inst, i, now, plan);
}

/* Which step to compensate next: uncertain ones first (latest), then reverse completion. */
static int
next_to_compensate(const struct saga_def *def, const struct saga_inst *inst)
{
	int best = -1;
	int32_t best_order = -1;

	for (int i = def->n_steps - 1; i >= 0; i--) {
		const struct step_inst *s = &inst->steps[i];

		if (s->state == STEP_FAILED && s->uncertain)
			return i;
		if (s->state == STEP_SUCCEEDED && s->completed_order > best_order) {
			best = i;
			best_order = s->completed_order;
		}
	}
	return best;
}

static void fail_saga(struct saga_inst *inst, struct plan *plan, int step, const char *reason);

/*
 * Compensation was asked for (abort, deadline) while the pivot was still out.
 * If it then succeeded, or timed out with its outcome unknown, the saga can no
 * longer be undone safely: it fails for an operator (retry goes forward).
 */
static bool
pivot_blocks_compensation(const struct saga_def *def, struct saga_inst *inst, struct plan *plan)
{
	int pivot = definition_pivot_index(def);
	const struct step_inst *p;

	if (pivot < 0)
		return false;
	p = &inst->steps[pivot];
	if (p->state == STEP_SUCCEEDED) {
		fail_saga(inst, plan, pivot,
		          "the pivot succeeded while compensation was pending: past the point of "
		          "no return; retry to go forward or resolve");
		return true;
	}
	if (p->state == STEP_FAILED && p->uncertain) {
		fail_saga(inst, plan, pivot, "pivot outcome unknown (timed out): retry or resolve");
		return true;
	}
	return false;
}

/* Compensating saga: drain running actions, then undo one step at a time, newest first. */
static void
advance_compensation(const struct saga_def *def, struct saga_inst *inst, int64_t now,
                     struct plan *plan)
{
	for (;;) {
		int next;

		for (int i = 0; i < def->n_steps; i++) {
			enum step_state st = inst->steps[i].state;

			if (st == STEP_RUNNING || st == STEP_COMPENSATING ||
			    st == STEP_COMPENSATION_WAITING_RETRY)
				return; /* wait for it */
		}
		if (pivot_blocks_compensation(def, inst, plan))
			return;
		next = next_to_compensate(def, inst);
		if (next < 0) {
			change_saga_state(inst, plan, SAGA_COMPENSATED);
			add_event(plan, LC_COMPENSATED, -1, 0, inst->last_error);
			return;
		}
		if (def->steps[next].compensation_subject[0] == '\0') {
			/* Nothing to undo for this step: done with it at once. */
			inst->steps[next].state = STEP_COMPENSATED;
			inst->steps[next].wake_at_ms = 0;
			inst->steps[next].dirty = true;
			add_event(plan, LC_COMPENSATION_SUCCEEDED, next, 0, "nothing to undo");
			continue;
		}
		dispatch_compensation(def, inst, next, now, plan);
		return;
	}
}

/* The saga cannot go on by itself: FAILED, with a dead letter for the operator. */
static void
fail_saga(struct saga_inst *inst, struct plan *plan, int step, const char *reason)
{
	set_text(inst->last_error, sizeof(inst->last_error), reason);
	inst->deadline_at_ms = 0;
	change_saga_state(inst, plan, SAGA_FAILED);
	add_event(plan, LC_FAILED, step, 0, reason);
	plan->dead_letter = true;
	plan->dead_letter_step = step;
}

/* Forward steps waiting for a retry will not get one: they stop here. */
static void
cancel_waiting_retries(const struct saga_def *def, struct saga_inst *inst)
{
	for (int i = 0; i < def->n_steps; i++) {
		struct step_inst *s = &inst->steps[i];

		if (s->state == STEP_WAITING_RETRY) {
			s->state = STEP_FAILED;
			s->wake_at_ms = 0;
			s->dirty = true;
		}
	}
}

static void
begin_compensation(const struct saga_def *def, struct saga_inst *inst, int64_t now,
                   struct plan *plan, const char *reason)
{
	set_text(inst->last_error, sizeof(inst->last_error), reason);
	inst->deadline_at_ms = 0;
	change_saga_state(inst, plan, SAGA_COMPENSATING);
	add_event(plan, LC_COMPENSATING, -1, 0, reason);
	cancel_waiting_retries(def, inst);
	advance_compensation(def, inst, now, plan);
}

/* A forward step failed for good: compensate, or fail the saga past the point of no return. */
static void
step_failed(const struct saga_def *def, struct saga_inst *inst, int i, int64_t now,
            struct plan *plan, const char *reason)
{
	struct step_inst *s = &inst->steps[i];
	char why[SAGA_ERROR_MAX + 1];

	s->state = STEP_FAILED;
	s->wake_at_ms = 0;
	s->dirty = true;
	add_event(plan, LC_STEP_FAILED, i, s->attempt, reason);
	snprintf(why, sizeof(why), "step %s failed: %s", def->steps[i].name, reason);

	switch (inst->state) {
	case SAGA_RUNNING:
		if (engine_past_point_of_no_return(def, inst) ||
		    def->steps[i].kind == STEP_KIND_RETRIABLE) {
			cancel_waiting_retries(def, inst);
			fail_saga(inst, plan, i, why);
		} else if (def->steps[i].kind == STEP_KIND_PIVOT && s->uncertain) {
			/* The pivot may have happened: undoing what came before could be wrong. */
			cancel_waiting_retries(def, inst);
			fail_saga(inst, plan, i,
			          "pivot outcome unknown (timed out): retry or resolve");
		} else {
			begin_compensation(def, inst, now, plan, why);
		}
		break;
	case SAGA_COMPENSATING:
		advance_compensation(def, inst, now, plan);
		break;
	case SAGA_FAILED:
		break; /* an operator decides */
	default:
		ENGINE_BUG("saga %s: step failed in state %s", inst->id,
		           saga_state_name(inst->state));
	}
}

/* An action attempt failed (reply or timeout): retry if allowed, else fail the step. */
static void
action_attempt_failed(const struct saga_def *def, struct saga_inst *inst, int i, int64_t now,
                      struct plan *plan, bool retryable, const char *reason)
{
	struct step_inst *s = &inst->steps[i];
	const struct retry_policy *p = &def->steps[i].retry;

	set_text(s->last_error, sizeof(s->last_error), reason);
	s->dirty = true;
	if (retryable && inst->state == SAGA_RUNNING &&
	    budget_left(p, s->attempt, s->attempt_base)) {
		s->state = STEP_WAITING_RETRY;
		s->wake_at_ms = now + backoff_delay_ms(p, inst->id, i, PHASE_ACTION, s->attempt);
		add_event(plan, LC_STEP_RETRYING, i, s->attempt, reason);
		return;
	}
	step_failed(def, inst, i, now, plan, reason);
}

/* A compensation attempt failed: retry under its own policy, else the saga fails. */
static void
compensation_attempt_failed(const struct saga_def *def, struct saga_inst *inst, int i, int64_t now,
                            struct plan *plan, bool retryable, const char *reason)
{
	struct step_inst *s = &inst->steps[i];
	const struct retry_policy *p = &def->steps[i].compensation_retry;
	char why[SAGA_ERROR_MAX + 1];

	set_text(s->last_error, sizeof(s->last_error), reason);
	s->dirty = true;
	if (retryable && budget_left(p, s->comp_attempt, s->comp_attempt_base)) {
		s->state = STEP_COMPENSATION_WAITING_RETRY;
		s->wake_at_ms =
		        now + backoff_delay_ms(p, inst->id, i, PHASE_COMPENSATION, s->comp_attempt);
		add_event(plan, LC_STEP_RETRYING, i, s->comp_attempt, reason);
		return;
	}
	s->state = STEP_COMPENSATION_FAILED;
	s->wake_at_ms = 0;
	snprintf(why, sizeof(why), "compensation of %s failed: %s", def->steps[i].name, reason);
	fail_saga(inst, plan, i, why);
}

static void
on_start(const struct saga_def *def, struct saga_inst *inst, const struct engine_event *ev,
         struct plan *plan)
{
	if (inst->state != 0) {
		plan->verdict = VERDICT_REFUSED;
		set_text(plan->detail, sizeof(plan->detail), "saga already started");
		return;
	}
	inst->created_ms = ev->now_ms;
	if (inst->deadline_at_ms == 0 && def->deadline_ms > 0)
		inst->deadline_at_ms = ev->now_ms + def->deadline_ms;
	for (int i = 0; i < def->n_steps; i++) {
		memset(&inst->steps[i], 0, sizeof(inst->steps[i]));
		inst->steps[i].state = STEP_PENDING;
		inst->steps[i].dirty = true;
	}
	change_saga_state(inst, plan, SAGA_RUNNING);
	add_event(plan, LC_STARTED, -1, 0, NULL);
	dispatch_group(def, inst, 0, ev->now_ms, plan);
}

/* Classify a reply that does not match what the step waits for. */
static void
mismatch(struct plan *plan, const struct step_inst *s, enum step_phase phase, uint32_t attempt)
{
	uint32_t current = phase == PHASE_ACTION ? s->attempt : s->comp_attempt;
	bool same_attempt_done = attempt == current &&
	                         ((phase == PHASE_ACTION &&
	                           (s->state == STEP_SUCCEEDED || s->state == STEP_FAILED ||
	                            s->state >= STEP_COMPENSATING) &&
	                           !s->uncertain) ||
	                          (phase == PHASE_COMPENSATION && s->state == STEP_COMPENSATED));

	plan->verdict = same_attempt_done ? VERDICT_DUPLICATE : VERDICT_STALE;
	snprintf(plan->detail, sizeof(plan->detail),
	         "%s reply for %s attempt %u; step is %s at attempt %u",
	         same_attempt_done ? "duplicate" : "stale", step_phase_name(phase), attempt,
	         step_state_name(s->state), current);
}

static void
on_reply(const struct saga_def *def, struct saga_inst *inst, const struct engine_event *ev,
         struct plan *plan, uint8_t *output_copy)
{
	struct step_inst *s = &inst->steps[ev->step];
	const char *error = ev->text != NULL && ev->text[0] != '\0' ? ev->text : "no error text";
	bool retryable = ev->outcome == OUTCOME_RETRYABLE_FAILURE;

	if (engine_is_terminal(inst->state)) {
		plan->verdict = VERDICT_LATE;
		snprintf(plan->detail, sizeof(plan->detail), "saga already %s",
		         saga_state_name(inst->state));
		free(output_copy);
		return;
	}
	if (ev->phase == PHASE_ACTION) {
		if (s->state != STEP_RUNNING || s->attempt != ev->attempt) {
			mismatch(plan, s, ev->phase, ev->attempt);
			free(output_copy);
			return;
		}
		if (ev->outcome == OUTCOME_SUCCESS) {
			s->state = STEP_SUCCEEDED;
			s->completed_order = ++inst->completions;
			s->wake_at_ms = 0;
			s->uncertain = false;
			s->last_error[0] = '\0';
			free(s->output.data);
			s->output.data = output_copy;
			s->output.len = ev->output.len;
			s->dirty = true;
			add_event(plan, LC_STEP_SUCCEEDED, ev->step, ev->attempt, NULL);
			if (inst->state == SAGA_RUNNING)
				advance_forward(def, inst, ev->now_ms, plan);
			else if (inst->state == SAGA_COMPENSATING)
				advance_compensation(def, inst, ev->now_ms, plan);
			return;
		}
		free(output_copy);
		s->uncertain = false;
		action_attempt_failed(def, inst, ev->step, ev->now_ms, plan, retryable, error);
		return;
	}
	free(output_copy);
	if (s->state != STEP_COMPENSATING || s->comp_attempt != ev->attempt) {
		mismatch(plan, s, ev->phase, ev->attempt);
		return;
	}
	if (ev->outcome == OUTCOME_SUCCESS) {
		s->state = STEP_COMPENSATED;
		s->wake_at_ms = 0;
		s->last_error[0] = '\0';
		s->dirty = true;
		add_event(plan, LC_COMPENSATION_SUCCEEDED, ev->step, ev->attempt, NULL);
		advance_compensation(def, inst, ev->now_ms, plan);
		return;
	}
	compensation_attempt_failed(def, inst, ev->step, ev->now_ms, plan, retryable, error);
}

static void
on_timeout(const struct saga_def *def, struct saga_inst *inst, const struct engine_event *ev,
           struct plan *plan)
{
	struct step_inst *s = &inst->steps[ev->step];
	char why[SAGA_ERROR_MAX + 1];
	bool action = ev->phase == PHASE_ACTION;
	bool waiting = action ? s->state == STEP_RUNNING && s->attempt == ev->attempt
	                      : s->state == STEP_COMPENSATING && s->comp_attempt == ev->attempt;

	if (engine_is_terminal(inst->state) || !waiting || s->wake_at_ms > ev->now_ms) {
		plan->verdict = VERDICT_STALE;
		set_text(plan->detail, sizeof(plan->detail), "timer no longer armed");
		return;
	}
	snprintf(why, sizeof(why), "timed out after %lld ms (%s attempt %u)",
	         (long long)def->steps[ev->step].timeout_ms, step_phase_name(ev->phase),
	         ev->attempt);
	set_text(plan->detail, sizeof(plan->detail), why);
	if (action) {
		s->uncertain = true;
		action_attempt_failed(def, inst, ev->step, ev->now_ms, plan, true, why);
	} else {
		compensation_attempt_failed(def, inst, ev->step, ev->now_ms, plan, true, why);
	}
}

static void
on_retry_due(const struct saga_def *def, struct saga_inst *inst, const struct engine_event *ev,
             struct plan *plan)
{
	struct step_inst *s = &inst->steps[ev->step];

	if (s->wake_at_ms > ev->now_ms || s->wake_at_ms == 0) {
		plan->verdict = VERDICT_STALE;
		set_text(plan->detail, sizeof(plan->detail), "retry not due");
		return;
	}
	if (s->state == STEP_WAITING_RETRY && inst->state == SAGA_RUNNING) {
		dispatch_action(def, inst, ev->step, ev->now_ms, plan);
		plan->attempt = s->attempt;
		return;
	}
	if (s->state == STEP_COMPENSATION_WAITING_RETRY && inst->state == SAGA_COMPENSATING) {
		dispatch_compensation(def, inst, ev->step, ev->now_ms, plan);
		plan->attempt = s->comp_attempt;
		return;
	}
	plan->verdict = VERDICT_STALE;
	set_text(plan->detail, sizeof(plan->detail), "no retry waiting");
}

static void
on_deadline(const struct saga_def *def, struct saga_inst *inst, const struct engine_event *ev,
            struct plan *plan)
{
	if (inst->state != SAGA_RUNNING || inst->deadline_at_ms == 0 ||
	    inst->deadline_at_ms > ev->now_ms) {
		plan->verdict = VERDICT_STALE;
		set_text(plan->detail, sizeof(plan->detail), "deadline not armed");
		return;
	}
	inst->deadline_at_ms = 0;
	if (engine_past_point_of_no_return(def, inst)) {
		set_text(plan->detail, sizeof(plan->detail),
		         "deadline passed after the point of no return: carrying on forward");
		return;
	}
	set_text(plan->detail, sizeof(plan->detail), "saga deadline exceeded");
	begin_compensation(def, inst, ev->now_ms, plan, "saga deadline exceeded");
}

static void
on_abort(const struct saga_def *def, struct saga_inst *inst, const struct engine_event *ev,
         struct plan *plan)
{
	char why[SAGA_ERROR_MAX + 1];

	if (inst->state != SAGA_RUNNING) {
		plan->verdict = VERDICT_REFUSED;
		snprintf(plan->detail, sizeof(plan->detail), "cannot abort a %s saga",
		         saga_state_name(inst->state));
		return;
	}
	if (engine_past_point_of_no_return(def, inst)) {
		plan->verdict = VERDICT_REFUSED;
		set_text(plan->detail, sizeof(plan->detail),
		         "cannot abort: past the point of no return (pivot succeeded)");
		return;
	}
	snprintf(why, sizeof(why), "aborted by operator: %s",
	         ev->text != NULL && ev->text[0] != '\0' ? ev->text : "no note");
	set_text(plan->detail, sizeof(plan->detail), why);
	begin_compensation(def, inst, ev->now_ms, plan, why);
}

static void
on_operator_retry(const struct saga_def *def, struct saga_inst *inst, const struct engine_event *ev,
                  struct plan *plan)
{
	int64_t now = ev->now_ms;
	bool comp_failed = false;
	int rearmed = 0;

	if (engine_is_terminal(inst->state)) {
		plan->verdict = VERDICT_REFUSED;
		snprintf(plan->detail, sizeof(plan->detail), "cannot retry a %s saga",
		         saga_state_name(inst->state));
		return;
	}
	for (int i = 0; i < def->n_steps; i++)
		comp_failed |= inst->steps[i].state == STEP_COMPENSATION_FAILED;

	if (inst->state == SAGA_FAILED)
		change_saga_state(inst, plan, comp_failed ? SAGA_COMPENSATING : SAGA_RUNNING);
	inst->last_error[0] = '\0';
	for (int i = 0; i < def->n_steps; i++) {
		struct step_inst *s = &inst->steps[i];

		switch (s->state) {
		case STEP_COMPENSATION_FAILED:
		case STEP_COMPENSATING:
		case STEP_COMPENSATION_WAITING_RETRY:
			if (inst->state != SAGA_COMPENSATING)
				break;
			s->comp_attempt_base = s->comp_attempt; /* a fresh budget */
			dispatch_compensation(def, inst, i, now, plan);
			rearmed++;
			break;
		case STEP_FAILED:
		case STEP_RUNNING:
		case STEP_WAITING_RETRY:
			if (inst->state != SAGA_RUNNING)
				break;
			s->attempt_base = s->attempt;
			dispatch_action(def, inst, i, now, plan);
			rearmed++;
			break;
		default:
			break;
		}
	}
	snprintf(plan->detail, sizeof(plan->detail), "operator retry re-armed %d step(s)%s%s",
	         rearmed, ev->text != NULL && ev->text[0] != '\0' ? ": " : "",
	         ev->text != NULL ? ev->text : "");
	add_event(plan, LC_RETRIED, -1, 0, plan->detail);
	if (rearmed == 0 && inst->state == SAGA_RUNNING)
		advance_forward(def, inst, now, plan);
	else if (rearmed == 0 && inst->state == SAGA_COMPENSATING)
		advance_compensation(def, inst, now, plan);
}

static void
on_resolve(struct saga_inst *inst, const struct engine_event *ev, struct plan *plan)
{
	char why[SAGA_ERROR_MAX + 1];

	if (inst->state != SAGA_FAILED) {
		plan->verdict = VERDICT_REFUSED;
		snprintf(plan->detail, sizeof(plan->detail),
		         "only a failed saga can be resolved (this one is %s)",
		         saga_state_name(inst->state));
		return;
	}
	snprintf(why, sizeof(why), "resolved by operator: %s",
	         ev->text != NULL && ev->text[0] != '\0' ? ev->text : "no note");
	set_text(plan->detail, sizeof(plan->detail), why);
	change_saga_state(inst, plan, SAGA_RESOLVED);
	add_event(plan, LC_RESOLVED, -1, 0, why);
}

void
engine_recompute_wake(const struct saga_def *def, struct saga_inst *inst)
{
	int64_t wake = 0;

	for (int i = 0; i < def->n_steps; i++) {
		const struct step_inst *s = &inst->steps[i];
		bool armed = s->state == STEP_RUNNING || s->state == STEP_COMPENSATING ||
		             (s->state == STEP_WAITING_RETRY && inst->state == SAGA_RUNNING) ||
		             (s->state == STEP_COMPENSATION_WAITING_RETRY &&
		              inst->state == SAGA_COMPENSATING);

		if (armed && s->wake_at_ms > 0 && (wake == 0 || s->wake_at_ms < wake))
			wake = s->wake_at_ms;
	}
	if (inst->state == SAGA_RUNNING && inst->deadline_at_ms > 0 &&
	    (wake == 0 || inst->deadline_at_ms < wake))
		wake = inst->deadline_at_ms;
	if (engine_is_terminal(inst->state))
		wake = 0;
	inst->wake_at_ms = wake;
}

enum status
engine_step(const struct saga_def *def, struct saga_inst *inst, const struct engine_event *ev,
            struct plan *plan)
{
	uint8_t *output_copy = NULL;

	memset(plan, 0, sizeof(*plan));
	plan->event = ev->type;
	plan->from_state = inst->state;
	plan->to_state = inst->state;
	plan->step = -1;
	plan->dead_letter_step = -1;

	if (ev->type == EV_REPLY || ev->type == EV_STEP_TIMEOUT || ev->type == EV_RETRY_DUE) {
		if (ev->step < 0 || ev->step >= def->n_steps)
			ENGINE_BUG("saga %s: event %s for step %d of %d", inst->id,
			           engine_event_name(ev->type), ev->step, def->n_steps);
		plan->step = ev->step;
		plan->phase = ev->phase;
		plan->attempt = ev->attempt;
	}
	if (ev->type == EV_REPLY && ev->outcome == OUTCOME_SUCCESS && ev->output.len > 0) {
		/* Copy first: running out of memory must leave the saga untouched. */
		output_copy = malloc(ev->output.len);
		if (output_copy == NULL)
			return STATUS_NOMEM;
		memcpy(output_copy, ev->output.data, ev->output.len);
	}
	if (ev->type == EV_REPLY && ev->outcome != OUTCOME_SUCCESS &&
	    ev->outcome != OUTCOME_RETRYABLE_FAILURE && ev->outcome != OUTCOME_PERMANENT_FAILURE)
		ENGINE_BUG("saga %s: reply with outcome %d reached the engine", inst->id,
		           (int)ev->outcome);
	if (ev->type == EV_REPLY && ev->phase != PHASE_ACTION && ev->phase != PHASE_COMPENSATION)
		ENGINE_BUG("saga %s: reply with phase %d reached the engine", inst->id,
		           (int)ev->phase);

	switch (ev->type) {
	case EV_START:
		on_start(def, inst, ev, plan);
		break;
	case EV_REPLY:
		on_reply(def, inst, ev, plan, output_copy);
		if (ev->outcome != OUTCOME_SUCCESS && ev->text != NULL && plan->detail[0] == '\0')
			set_text(plan->detail, sizeof(plan->detail), ev->text);
		break;
	case EV_STEP_TIMEOUT:
		on_timeout(def, inst, ev, plan);
		break;
	case EV_RETRY_DUE:
		on_retry_due(def, inst, ev, plan);
		break;
	case EV_DEADLINE:
		on_deadline(def, inst, ev, plan);
		break;
	case EV_ABORT:
		on_abort(def, inst, ev, plan);
		break;
	case EV_RETRY:
		on_operator_retry(def, inst, ev, plan);
		break;
	case EV_RESOLVE:
		on_resolve(inst, ev, plan);
		break;
	default:
		ENGINE_BUG("saga %s: unknown event type %d", inst->id, (int)ev->type);
	}
	plan->seq = ++inst->seq;
	plan->to_state = inst->state;
	engine_recompute_wake(def, inst);
	return STATUS_OK;
}

bool
engine_hold_retry(const struct saga_def *def, struct saga_inst *inst, int step, int64_t until_ms)
{
	struct step_inst *s = &inst->steps[step];

	if (s->state != STEP_WAITING_RETRY && s->state != STEP_COMPENSATION_WAITING_RETRY)
		return false;
	if (s->wake_at_ms < until_ms) {
		s->wake_at_ms = until_ms;
		s->dirty = true;
	}
	engine_recompute_wake(def, inst);
	return true;
}

int
engine_due_events(const struct saga_def *def, const struct saga_inst *inst, int64_t now_ms,
                  struct engine_event *out, int max)
{
	int n = 0;

	if (engine_is_terminal(inst->state))
		return 0;
	for (int i = 0; i < def->n_steps && n < max; i++) {
		const struct step_inst *s = &inst->steps[i];
		struct engine_event *e = &out[n];

		if (s->wake_at_ms == 0 || s->wake_at_ms > now_ms)
			continue;
		memset(e, 0, sizeof(*e));
		e->now_ms = now_ms;
		e->step = i;
		switch (s->state) {
		case STEP_RUNNING:
			e->type = EV_STEP_TIMEOUT;
			e->phase = PHASE_ACTION;
			e->attempt = s->attempt;
			n++;
			break;
		case STEP_COMPENSATING:
			e->type = EV_STEP_TIMEOUT;
			e->phase = PHASE_COMPENSATION;
			e->attempt = s->comp_attempt;
			n++;
			break;
		case STEP_WAITING_RETRY:
			e->type = EV_RETRY_DUE;
			e->phase = PHASE_ACTION;
			e->attempt = s->attempt;
			n += inst->state == SAGA_RUNNING;
			break;
		case STEP_COMPENSATION_WAITING_RETRY:
			e->type = EV_RETRY_DUE;
			e->phase = PHASE_COMPENSATION;
			e->attempt = s->comp_attempt;
			n += inst->state == SAGA_COMPENSATING;
			break;
		default:
			break;
		}
	}
	if (n < max && inst->state == SAGA_RUNNING && inst->deadline_at_ms > 0 &&
	    inst->deadline_at_ms <= now_ms) {
		memset(&out[n], 0, sizeof(out[n]));
		out[n].type = EV_DEADLINE;
		out[n].now_ms = now_ms;
		out[n].step = -1;
		n++;
	}
	return n;
}

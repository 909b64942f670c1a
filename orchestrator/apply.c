/*
 * Applying engine plans to the database: the writes one plan needs (transition,
 * commands, lifecycle events, dead letters through the outbox), the timer
 * pass, and operator commands. Every change to a saga goes through here.
 */
#include "apply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "definition.h"
#include "log.h"
#include "metrics.h"

#define MAX_DUE_PER_SAGA (2 * SAGA_MAX_STEPS + 1)

const char *
apply_target(const struct saga_def *def, int step, enum step_phase phase)
{
	return phase == PHASE_ACTION ? def->steps[step].action_subject
	                             : def->steps[step].compensation_subject;
}

static enum status
queue_command(const struct apply_env *env, const struct saga_def *def, const struct saga_inst *inst,
              const struct plan_command *cmd, int64_t now_ms)
{
	const struct step_def *sd = &def->steps[cmd->step];
	const char *target =
	        cmd->phase == PHASE_ACTION ? sd->action_subject : sd->compensation_subject;
	char subject[320], reply[320], msg_id[160];
	struct bytes payload = {0};
	enum status st;

	snprintf(subject, sizeof(subject), "%s.cmd.%s", env->cfg->subject_prefix, target);
	snprintf(reply, sizeof(reply), "%s.reply.%s", env->cfg->subject_prefix, target);
	/* Deterministic: a re-send of the same attempt is dropped by the stream's dedupe. */
	snprintf(msg_id, sizeof(msg_id), "cmd:%s:%d:%c:%u", inst->id, cmd->step,
	         cmd->phase == PHASE_ACTION ? 'a' : 'c', cmd->attempt);
	st = codec_encode_command(def, inst, cmd, reply, now_ms, &payload);
	if (st != STATUS_OK)
		return st;
	store_queue_outbox(env->db, subject, msg_id, CT_STEP_COMMAND, inst->id,
	                   inst->correlation_id, sd->name, cmd->attempt, inst->traceparent,
	                   payload);
	free(payload.data);
	return STATUS_OK;
}

static enum status
queue_event(const struct apply_env *env, const struct saga_def *def, const struct saga_inst *inst,
            const struct plan *plan, int index, int64_t now_ms)
{
	const struct plan_event *ev = &plan->events[index];
	char subject[320], msg_id[160];
	struct bytes payload = {0};
	enum status st;

	snprintf(subject, sizeof(subject), "%s.event.%s.%s", env->cfg->subject_prefix, def->name,
	         codec_event_token(ev->type));
	snprintf(msg_id, sizeof(msg_id), "evt:%s:%d:%d", inst->id, plan->seq, index);
	st = codec_encode_event(def, inst, ev, plan->seq, now_ms, &payload);
	if (st != STATUS_OK)
		return st;
	store_queue_outbox(env->db, subject, msg_id, CT_EVENT, inst->id, inst->correlation_id,
	                   ev->step >= 0 ? def->steps[ev->step].name : NULL, ev->attempt,
	                   inst->traceparent, payload);
	free(payload.data);
	return STATUS_OK;
}

enum status
apply_queue_dead_letter(const struct apply_env *env, const struct store_dead_letter *dl,
                        int64_t now_ms)
{
	struct dead_letter_msg m;
	struct bytes payload = {0};
	char subject[320], msg_id[320];
	enum status st;

	store_queue_dead_letter(env->db, dl);
	memset(&m, 0, sizeof(m));
	m.source_subject = dl->source_subject;
	m.payload = dl->payload;
	m.reason = dl->reason;
	m.error_class = dl->error_class;
	m.saga_id = dl->saga_id;
	m.correlation_id = dl->correlation_id;
	m.step = dl->step;
	m.created_unix_ms = now_ms;
	m.stream_sequence = dl->source_key;
	st = codec_encode_dead_letter(&m, &payload);
	if (st != STATUS_OK)
		return st;
	snprintf(subject, sizeof(subject), "%s.dlq.%s", env->cfg->subject_prefix, dl->error_class);
	snprintf(msg_id, sizeof(msg_id), "dlq:%s", dl->source_key);
	store_queue_outbox(env->db, subject, msg_id, CT_DEAD_LETTER, dl->saga_id,
	                   dl->correlation_id, dl->step, 0, NULL, payload);
	free(payload.data);
	return STATUS_OK;
}

enum status
apply_queue_plan(const struct apply_env *env, const struct saga_def *def,
                 const struct saga_inst *inst, const struct plan *plan, int64_t now_ms)
{
	enum status st = STATUS_OK;

	store_queue_transition(env->db, def, inst, plan, engine_event_name(plan->event));
	for (int i = 0; i < plan->n_commands && st == STATUS_OK; i++)
		st = queue_command(env, def, inst, &plan->commands[i], now_ms);
	for (int i = 0; i < plan->n_events && st == STATUS_OK; i++)
		st = queue_event(env, def, inst, plan, i, now_ms);
	if (st == STATUS_OK && plan->dead_letter) {
		struct store_dead_letter dl;
		char key[96];

		snprintf(key, sizeof(key), "saga:%s:%d", inst->id, plan->seq);
		memset(&dl, 0, sizeof(dl));
		dl.source_subject = "saga";
		dl.source_key = key;
		dl.reason = inst->last_error;
		dl.error_class = inst->state == SAGA_FAILED && plan->dead_letter_step >= 0 &&
		                                 inst->steps[plan->dead_letter_step].state ==
		                                         STEP_COMPENSATION_FAILED
		                         ? "compensation_exhausted"
		                         : "saga_failed";
		dl.saga_id = inst->id;
		dl.correlation_id = inst->correlation_id;
		dl.step = plan->dead_letter_step >= 0 ? def->steps[plan->dead_letter_step].name
		                                      : NULL;
		st = apply_queue_dead_letter(env, &dl, now_ms);
	}
	return st;
}

void
apply_log_plan(const struct saga_def *def, const struct saga_inst *inst, const struct plan *plan,
               int64_t now_ms)
{
	const char *step = plan->step >= 0 ? def->steps[plan->step].name : "-";

	metrics_observe_plan(inst, plan, now_ms);
	if (plan->verdict != VERDICT_APPLIED) {
		log_saga(LOG_INFO, inst->id, inst->correlation_id, "%s %s ignored (%s): %s",
		         engine_event_name(plan->event), step, engine_verdict_name(plan->verdict),
		         plan->detail);
		return;
	}
	if ((int)plan->to_state != plan->from_state) {
		log_saga(plan->to_state == SAGA_FAILED ? LOG_WARN : LOG_DEBUG, inst->id,
		         inst->correlation_id, "saga %s v%u: %s -> %s on %s %s%s%s", def->name,
		         def->version,
		         plan->from_state ? saga_state_name((enum saga_state)plan->from_state)
		                          : "new",
		         saga_state_name(plan->to_state), engine_event_name(plan->event), step,
		         inst->last_error[0] != '\0' ? ": " : "", inst->last_error);
		return;
	}
	log_saga(LOG_DEBUG, inst->id, inst->correlation_id, "%s %s attempt %u applied%s%s",
	         engine_event_name(plan->event), step, plan->attempt,
	         plan->detail[0] != '\0' ? ": " : "", plan->detail);
}

/* Definitions of every loaded saga, resolved before the pipeline starts (they may query). */
static enum status
resolve_defs(const struct apply_env *env, struct store_loaded *rows, int n, int64_t now_ms,
             const struct saga_def **defs, char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		enum status st = defcache_get(env->defs, env->db, rows[i].def_name,
		                              rows[i].def_version, now_ms, &defs[i], err, errlen);

		if (st != STATUS_OK)
			return st == STATUS_NOT_FOUND ? STATUS_DB : st;
	}
	return STATUS_OK;
}

enum status
apply_due_timers(const struct apply_env *env, int limit, int64_t hold_back_ms, int *n_sagas,
                 int *n_events, char *err, size_t errlen)
{
	struct store_loaded *rows = NULL;
	const struct saga_def **defs = NULL;
	int n = 0;
	int events = 0;
	int64_t now_ms = 0;
	enum status st;

	*n_sagas = 0;
	*n_events = 0;
	st = store_begin(env->db, &now_ms, err, errlen);
	if (st != STATUS_OK)
		return st;
	st = store_load_due(env->db, limit, hold_back_ms, &rows, &n, err, errlen);
	if (st != STATUS_OK || n == 0)
		goto done;
	defs = calloc((size_t)n, sizeof(*defs));
	if (defs == NULL) {
		st = STATUS_NOMEM;
		goto done;
	}
	st = resolve_defs(env, rows, n, now_ms, defs, err, errlen);
	if (st != STATUS_OK)
		goto done;
	st = store_batch_begin(env->db, err, errlen);
	if (st != STATUS_OK)
		goto done;
	for (int i = 0; i < n && st == STATUS_OK; i++) {
		struct engine_event due[MAX_DUE_PER_SAGA];
		struct saga_inst *inst = &rows[i].inst;
		/*
		 * Only what came due before the hold-back horizon: a saga loaded for
		 * an earlier stored wake-up must not time out a step whose answer may
		 * be waiting unread. The events themselves happen now.
		 */
		int k = engine_due_events(defs[i], inst, now_ms - hold_back_ms, due,
		                          MAX_DUE_PER_SAGA);
		int before = events;

		for (int e = 0; e < k; e++)
			due[e].now_ms = now_ms;

		for (int e = 0; e < k && st == STATUS_OK; e++) {
			struct plan plan;

			if (due[e].type == EV_RETRY_DUE) {
				const char *target =
				        apply_target(defs[i], due[e].step, due[e].phase);
				int64_t until = 0;

				if (!breaker_allow(env->breakers, target, now_ms, &until)) {
					engine_hold_retry(defs[i], inst, due[e].step, until);
					metrics_add(M_RETRIES_HELD, 1);
					continue;
				}
			}
			st = engine_step(defs[i], inst, &due[e], &plan);
			if (st != STATUS_OK)
				break;
			if (plan.event == EV_STEP_TIMEOUT && plan.verdict == VERDICT_APPLIED)
				breaker_record(env->breakers,
				               apply_target(defs[i], plan.step, plan.phase), false,
				               now_ms);
			/* An earlier event of this pass may have disarmed a later one. */
			if (plan.verdict != VERDICT_APPLIED) {
				inst->seq--;
				continue;
			}
			apply_log_plan(defs[i], inst, &plan, now_ms);
			st = apply_queue_plan(env, defs[i], inst, &plan, now_ms);
			events++;
		}
		/* A wake-up that found nothing due moves on to the real next timer. */
		engine_recompute_wake(defs[i], inst);
		store_queue_update_saga(env->db, defs[i], inst, rows[i].version, events > before);
		store_queue_steps(env->db, defs[i], inst);
	}
	if (st != STATUS_OK) {
		store_rollback(env->db);
		goto out;
	}
	st = store_commit(env->db, err, errlen);
	if (st == STATUS_OK) {
		*n_sagas = n;
		*n_events = events;
	}
	goto out;
done:
	if (st == STATUS_OK)
		st = store_commit(env->db, err, errlen);
	else
		store_rollback(env->db);
out:
	if (st == STATUS_NOMEM)
		snprintf(err, errlen, "out of memory");
	free(defs);
	store_loaded_free(rows, n);
	return st;
}

enum status
apply_operator(const struct apply_env *env, const char *saga_id, enum engine_event_type type,
               const char *note, struct plan *plan, char *err, size_t errlen)
{
	struct store_loaded *rows = NULL;
	const struct saga_def *def = NULL;
	struct engine_event ev;
	int n = 0;
	int64_t now_ms = 0;
	enum status st;

	st = store_begin_load(env->db, &saga_id, 1, &now_ms, &rows, &n, err, errlen);
	if (st != STATUS_OK)
		return st;
	if (n == 0) {
		st = STATUS_NOT_FOUND;
		snprintf(err, errlen, "no saga %s", saga_id);
		goto fail;
	}
	st = resolve_defs(env, rows, 1, now_ms, &def, err, errlen);
	if (st != STATUS_OK)
		goto fail;
	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	ev.now_ms = now_ms;
	ev.step = -1;
	ev.text = note;
	st = engine_step(def, &rows[0].inst, &ev, plan);
	if (st != STATUS_OK)
		goto fail;
	apply_log_plan(def, &rows[0].inst, plan, now_ms);
	st = store_batch_begin(env->db, err, errlen);
	if (st != STATUS_OK)
		goto fail;
	st = apply_queue_plan(env, def, &rows[0].inst, plan, now_ms);
	if (st != STATUS_OK)
		goto fail;
	store_queue_update_saga(env->db, def, &rows[0].inst, rows[0].version,
	                        plan->verdict == VERDICT_APPLIED);
	store_queue_steps(env->db, def, &rows[0].inst);
	st = store_commit(env->db, err, errlen);
	store_loaded_free(rows, n);
	return st;
fail:
	store_rollback(env->db);
	store_loaded_free(rows, n);
	return st;
}

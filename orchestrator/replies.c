/* The reply consumer: step replies from JetStream, applied in batches, acked after commit. */
#include "replies.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "definition.h"
#include "failpoint.h"
#include "log.h"
#include "metrics.h"

/* One fetched message and what became of it. */
struct reply_item {
	struct bus_msg *msg;              /* the message (owned until acked/freed) */
	struct reply_msg reply;           /* decoded, when decoded */
	int decoded;                      /* reply is valid */
	int dead;                         /* becomes a dead letter */
	const char *error_class;          /* dead letter class */
	char reason[SAGA_ERROR_MAX + 64]; /* dead letter reason */
};

static void
mark_dead(struct reply_item *it, const char *error_class, const char *reason)
{
	it->dead = 1;
	it->error_class = error_class;
	snprintf(it->reason, sizeof(it->reason), "%s", reason);
}

/*
 * Message age (participant's completion -> now) and, for a successful reply
 * the step waits for, the attempt's latency: the attempt was dispatched at
 * wake_at - timeout.
 */
static void
observe_reply(const struct saga_def *def, const struct saga_inst *inst, const struct reply_msg *r,
              int step, int64_t now_ms)
{
	const struct step_inst *s = &inst->steps[step];
	if (r->completed_unix_ms > 0)
		metrics_observe(H_MESSAGE_AGE, (double)(now_ms - r->completed_unix_ms));
	if (r->outcome == OUTCOME_SUCCESS && s->wake_at_ms > 0 &&
	    ((r->phase == PHASE_ACTION && s->state == STEP_RUNNING && s->attempt == r->attempt) ||
	     (r->phase == PHASE_COMPENSATION && s->state == STEP_COMPENSATING &&
	      s->comp_attempt == r->attempt)))
		metrics_observe(H_STEP_LATENCY,
		                (double)(now_ms - (s->wake_at_ms - def->steps[step].timeout_ms)));
}

static int
cmp_id(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* bsearch key comparator: a saga id against a loaded saga. */
static int
cmp_id_loaded(const void *id, const void *row)
{
	return strcmp(id, ((const struct store_loaded *)row)->inst.id);
}

/* The loaded saga id (rows are sorted by id: store_begin_load), or NULL. */
static struct store_loaded *
find_loaded(struct store_loaded *rows, int n, const char *id)
{
	/* No rows: rows may be NULL, which bsearch must not be given. */
	return n > 0 ? bsearch(id, rows, (size_t)n, sizeof(*rows), cmp_id_loaded) : NULL;
}

/*
 * A reply counts only on <prefix>.reply.<target> of the step and phase it
 * names: NATS permissions let each participant publish on its own reply
 * subjects only, so this is what stops one service from answering for
 * another's step.
 */
static bool
from_its_target(const struct apply_env *env, const struct saga_def *def, int step,
                const struct reply_item *it)
{
	const char *subject = bus_msg_subject(it->msg);
	const char *target;
	size_t n = strlen(env->cfg->subject_prefix);

	if (it->reply.phase != PHASE_ACTION && it->reply.phase != PHASE_COMPENSATION)
		return true; /* the engine records it as invalid */
	target = apply_target(def, step, it->reply.phase);
	return strncmp(subject, env->cfg->subject_prefix, n) == 0 &&
	       strncmp(subject + n, ".reply.", 7) == 0 && strcmp(subject + n + 7, target) == 0;
}

static enum status
queue_dead(const struct apply_env *env, struct reply_item *it, int64_t now_ms)
{
	size_t keep = (size_t)env->cfg->max_payload + CODEC_ENVELOPE_MAX;
	struct store_dead_letter dl;
	char headers[2048];
	char subject[4096];
	char key[128];

	/*
	 * Subject and headers are whatever the sender put there: as text they
	 * must be UTF-8, or PostgreSQL refuses the whole batch again and again.
	 */
	bus_msg_headers_json(it->msg, headers, sizeof(headers));
	saga_utf8_scrub(headers);
	snprintf(subject, sizeof(subject), "%s", bus_msg_subject(it->msg));
	saga_utf8_scrub(subject);
	bus_msg_stream_seq(it->msg, key, sizeof(key));
	memset(&dl, 0, sizeof(dl));
	dl.source_subject = subject;
	dl.source_key = key[0] != '\0' ? key : NULL;
	dl.headers_json = headers;
	dl.payload.data = (uint8_t *)bus_msg_data(it->msg);
	dl.payload.len = bus_msg_len(it->msg);
	if (dl.payload.len > keep) {
		/*
		 * Its copy on the DLQ stream (bytes plus headers and reason) must
		 * still fit a message, or the outbox relay stalls on it for good.
		 */
		dl.payload.len = keep;
		snprintf(it->reason + strlen(it->reason), sizeof(it->reason) - strlen(it->reason),
		         " (first %zu bytes kept)", keep);
	}
	dl.reason = it->reason;
	dl.error_class = it->error_class;
	dl.saga_id = it->decoded ? it->reply.saga_id : NULL;
	dl.correlation_id = it->decoded ? it->reply.correlation_id : NULL;
	dl.step = it->decoded ? it->reply.step : NULL;
	log_saga(LOG_WARN, dl.saga_id, dl.correlation_id, "dead letter (%s) from %s: %s",
	         it->error_class, dl.source_subject, it->reason);
	return apply_queue_dead_letter(env, &dl, now_ms);
}

enum status
replies_apply(const struct apply_env *env, struct bus_msg **msgs, int n, int *applied, char *err,
              size_t errlen)
{
	struct reply_item *items = calloc((size_t)(n > 0 ? n : 1), sizeof(*items));
	const char **ids = calloc((size_t)(n > 0 ? n : 1), sizeof(*ids));
	struct store_loaded *rows = NULL;
	const struct saga_def **defs = NULL;
	char *touched = NULL;
	int n_ids = 0, n_rows = 0, count = 0;
	int64_t now_ms = 0;
	enum status st = STATUS_OK;

	*applied = 0;
	if (items == NULL || ids == NULL) {
		st = STATUS_NOMEM;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		struct reply_item *it = &items[i];
		char why[SAGA_ERROR_MAX];
		enum status d;

		it->msg = msgs[i];
		d = codec_decode_reply(bus_msg_data(it->msg), bus_msg_len(it->msg),
		                       (size_t)env->cfg->max_payload + CODEC_ENVELOPE_MAX,
		                       &it->reply, why, sizeof(why));
		if (d != STATUS_OK) {
			mark_dead(it, d == STATUS_TOO_LARGE ? "oversized" : "undecodable", why);
			continue;
		}
		it->decoded = 1;
		if (it->reply.output.len > (size_t)env->cfg->max_payload) {
			/* Outputs travel in every later command: the limit holds for them too. */
			snprintf(why, sizeof(why),
			         "StepReply.output: %zu bytes, over the %lld byte limit",
			         it->reply.output.len, (long long)env->cfg->max_payload);
			mark_dead(it, "oversized", why);
			continue;
		}
		if (bus_msg_delivered(it->msg) >= (uint64_t)env->cfg->consumer_max_deliver) {
			mark_dead(it, "max_deliver", "delivered too often without being applied");
			continue;
		}
		ids[n_ids++] = it->reply.saga_id;
	}
	qsort(ids, (size_t)n_ids, sizeof(*ids), cmp_id);
	{
		/* Unique ids only. */
		int u = 0;

		for (int i = 0; i < n_ids; i++) {
			if (u == 0 || strcmp(ids[u - 1], ids[i]) != 0)
				ids[u++] = ids[i];
		}
		n_ids = u;
	}
	st = store_begin_load(env->db, ids, n_ids, &now_ms, &rows, &n_rows, err, errlen);
	if (st != STATUS_OK)
		goto nak; /* nothing fetched may wait for the ack timeout */
	defs = calloc((size_t)(n_rows > 0 ? n_rows : 1), sizeof(*defs));
	touched = calloc((size_t)(n_rows > 0 ? n_rows : 1), 1);
	if (defs == NULL || touched == NULL) {
		st = STATUS_NOMEM;
		goto fail;
	}
	for (int i = 0; i < n_rows; i++) {
		st = defcache_get(env->defs, env->db, rows[i].def_name, rows[i].def_version, now_ms,
		                  &defs[i], err, errlen);
		if (st != STATUS_OK) {
			st = st == STATUS_NOT_FOUND ? STATUS_DB : st;
			goto fail;
		}
	}
	st = store_batch_begin(env->db, err, errlen);
	if (st != STATUS_OK)
		goto fail;
	for (int i = 0; i < n && st == STATUS_OK; i++) {
		struct reply_item *it = &items[i];
		struct store_loaded *l;
		const struct saga_def *def;
		struct engine_event ev;
		struct plan plan;
		int step;

		if (!it->dead) {
			l = find_loaded(rows, n_rows, it->reply.saga_id);
			if (l == NULL) {
				mark_dead(it, "unknown_saga", "no saga with this id");
			} else {
				def = defs[l - rows];
				step = definition_step_index(def, it->reply.step);
				if (step < 0) {
					mark_dead(it, "unknown_step",
					          "the saga's definition has no such step");
				} else if (!from_its_target(env, def, step, it)) {
					char why[SAGA_ERROR_MAX];

					snprintf(why, sizeof(why),
					         "a reply for step %s must come on %s.reply.%s",
					         it->reply.step, env->cfg->subject_prefix,
					         apply_target(def, step, it->reply.phase));
					mark_dead(it, "wrong_subject", why);
				} else {
					memset(&ev, 0, sizeof(ev));
					ev.type = EV_REPLY;
					ev.now_ms = now_ms;
					ev.step = step;
					ev.phase = it->reply.phase;
					ev.attempt = it->reply.attempt;
					ev.outcome = it->reply.outcome;
					ev.output = it->reply.output;
					ev.text = it->reply.error;
					observe_reply(def, &l->inst, &it->reply, step, now_ms);
					st = engine_step(def, &l->inst, &ev, &plan);
					if (st != STATUS_OK)
						break;
					apply_log_plan(def, &l->inst, &plan, now_ms);
					/*
					 * Any answer but a retryable failure shows the target is
					 * up: a permanent failure is a business answer.
					 */
					if (plan.verdict == VERDICT_APPLIED)
						breaker_record(
						        env->breakers,
						        apply_target(def, step, it->reply.phase),
						        it->reply.outcome !=
						                OUTCOME_RETRYABLE_FAILURE,
						        now_ms);
					st = apply_queue_plan(env, def, &l->inst, &plan, now_ms);
					/* 2: some event changed it; 1: only ignored events. */
					if (plan.verdict == VERDICT_APPLIED)
						touched[l - rows] = 2;
					else if (touched[l - rows] == 0)
						touched[l - rows] = 1;
					count++;
					continue;
				}
			}
		}
		st = queue_dead(env, it, now_ms);
	}
	for (int i = 0; i < n_rows && st == STATUS_OK; i++) {
		if (!touched[i])
			continue;
		store_queue_update_saga(env->db, defs[i], &rows[i].inst, rows[i].version,
		                        touched[i] == 2);
		store_queue_steps(env->db, defs[i], &rows[i].inst);
	}
	if (st != STATUS_OK)
		goto fail;
	failpoint_pass(FP_AFTER_FETCH_BEFORE_COMMIT);
	st = store_commit(env->db, err, errlen);
	if (st != STATUS_OK)
		goto nak;
	failpoint_pass(FP_AFTER_COMMIT_BEFORE_ACK);
	for (int i = 0; i < n; i++) {
		if (items[i].dead)
			bus_term(items[i].msg);
		else
			bus_ack(items[i].msg);
	}
	*applied = count;
	goto out;
fail:
	store_rollback(env->db);
nak:
	/* Nothing was committed: every message comes again after a short pause. */
	for (int i = 0; i < n; i++)
		bus_nak(items[i].msg, 500);
out:
	if (st == STATUS_NOMEM)
		snprintf(err, errlen, "out of memory");
	for (int i = 0; items != NULL && i < n; i++) {
		if (items[i].decoded)
			codec_reply_free(&items[i].reply);
		bus_msg_free(items[i].msg);
	}
	free(items);
	free(ids);
	free(defs);
	free(touched);
	store_loaded_free(rows, n_rows);
	return st;
}

/*
 * Intake: starting sagas (request/reply on <prefix>.start.<saga>, buffered on
 * <prefix>.submit.<saga>) and registering definitions (<prefix>.define).
 */
#include "intake.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "definition.h"
#include "log.h"

#define ADMISSION_RECOUNT_MS 1000

static void __attribute__((format(printf, 3, 4)))
reject(struct start_answer *a, enum start_reject code, const char *fmt, ...)
{
	va_list ap;

	a->status = START_REJECTED;
	a->reject = code;
	va_start(ap, fmt);
	vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
	va_end(ap);
}

void
intake_prepare(struct intake_start *s, struct bus_msg *msg, size_t max_payload)
{
	const char *subject = bus_msg_subject(msg);
	const char *token = strrchr(subject, '.');
	char why[SAGA_ERROR_MAX];
	enum status st;

	memset(s, 0, sizeof(*s));
	s->msg = msg;
	st = codec_decode_start(bus_msg_data(msg), bus_msg_len(msg), max_payload, &s->req, why,
	                        sizeof(why));
	if (st != STATUS_OK) {
		reject(&s->answer, REJECT_INVALID, "%s", why);
		s->dead_class = st == STATUS_TOO_LARGE ? "oversized" : "undecodable";
		return;
	}
	s->decoded = 1;
	snprintf(s->answer.correlation_id, sizeof(s->answer.correlation_id), "%s",
	         s->req.correlation_id);
	token = token != NULL ? token + 1 : "";
	if (s->req.saga_name[0] == '\0') {
		if (!saga_valid_name(token)) {
			reject(&s->answer, REJECT_INVALID, "no saga name in request or subject%s",
			       "");
			s->dead_class = "undecodable";
			return;
		}
		snprintf(s->saga_name, sizeof(s->saga_name), "%s", token);
	} else {
		snprintf(s->saga_name, sizeof(s->saga_name), "%s", s->req.saga_name);
		if (strcmp(token, s->saga_name) != 0) {
			/* The token is the sender's bytes: shown cut to a name's length, as UTF-8. */
			char shown[SAGA_NAME_MAX + 1];

			snprintf(shown, sizeof(shown), "%s", token);
			saga_utf8_scrub(shown);
			reject(&s->answer, REJECT_INVALID,
			       "saga_name does not match the subject's saga (%s)", shown);
			s->dead_class = "undecodable";
			return;
		}
	}
	snprintf(s->answer.saga_name, sizeof(s->answer.saga_name), "%s", s->saga_name);
}

void
intake_release(struct intake_start *s)
{
	if (s->decoded)
		codec_start_free(&s->req);
	s->decoded = 0;
}

/* Build and queue one accepted start. */
static enum status
accept_one(const struct apply_env *env, const struct saga_def *def, struct intake_start *s,
           int64_t now_ms)
{
	struct saga_inst *inst = calloc(1, sizeof(*inst));
	struct engine_event ev;
	struct plan plan;
	enum status st;

	if (inst == NULL)
		return STATUS_NOMEM;
	if (!saga_new_id(inst->id)) {
		free(inst);
		return STATUS_IO;
	}
	if (s->req.correlation_id[0] != '\0')
		snprintf(inst->correlation_id, sizeof(inst->correlation_id), "%s",
		         s->req.correlation_id);
	else
		snprintf(inst->correlation_id, sizeof(inst->correlation_id), "%s", inst->id);
	snprintf(inst->traceparent, sizeof(inst->traceparent), "%s", s->req.traceparent);
	/* Borrowed for the duration of the call: the instance never frees it. */
	inst->input = s->req.input;
	inst->deadline_at_ms = s->req.deadline_unix_ms;
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_START;
	ev.now_ms = now_ms;
	ev.step = -1;
	st = engine_step(def, inst, &ev, &plan);
	if (st == STATUS_OK) {
		store_queue_insert_saga(env->db, def, inst,
		                        s->req.idempotency_key[0] != '\0' ? s->req.idempotency_key
		                                                          : NULL,
		                        s->req.labels_json);
		store_queue_steps(env->db, def, inst);
		st = apply_queue_plan(env, def, inst, &plan, now_ms);
		apply_log_plan(def, inst, &plan, now_ms);
	}
	if (st == STATUS_OK) {
		s->answer.status = START_ACCEPTED;
		snprintf(s->answer.saga_id, sizeof(s->answer.saga_id), "%s", inst->id);
		snprintf(s->answer.correlation_id, sizeof(s->answer.correlation_id), "%s",
		         inst->correlation_id);
		s->answer.version = def->version;
		s->answer.accepted_unix_ms = now_ms;
	}
	free(inst); /* input is borrowed and outputs are empty: nothing else to release */
	return st;
}

/* True when subject is <prefix>.start.<token> or <prefix>.submit.<token>: one token, no more. */
static bool
one_saga_token(const char *prefix, const char *subject)
{
	size_t n = strlen(prefix);
	const char *rest;

	if (strncmp(subject, prefix, n) != 0 || subject[n] != '.')
		return false;
	rest = subject + n + 1;
	if (strncmp(rest, "start.", 6) == 0)
		rest += 6;
	else if (strncmp(rest, "submit.", 7) == 0)
		rest += 7;
	else
		return false;
	return rest[0] != '\0' && strchr(rest, '.') == NULL;
}

/*
 * Keep a submit that cannot be processed as sent as a dead letter, with its
 * raw bytes (I6): the source key (stream and sequence) records it once even
 * when the batch is redelivered. Subject and headers are the sender's bytes:
 * stored as UTF-8 text, or PostgreSQL refuses the batch.
 */
static enum status
queue_dead_submit(const struct apply_env *env, const struct intake_start *s, int64_t now_ms)
{
	size_t keep = (size_t)env->cfg->max_payload + CODEC_ENVELOPE_MAX;
	struct store_dead_letter dl;
	char reason[SAGA_ERROR_MAX + 64];
	char headers[2048];
	char subject[4096];
	char key[128];

	bus_msg_headers_json(s->msg, headers, sizeof(headers));
	saga_utf8_scrub(headers);
	snprintf(subject, sizeof(subject), "%s", bus_msg_subject(s->msg));
	saga_utf8_scrub(subject);
	bus_msg_stream_seq(s->msg, key, sizeof(key));
	memset(&dl, 0, sizeof(dl));
	dl.source_subject = subject;
	dl.source_key = key[0] != '\0' ? key : NULL;
	dl.headers_json = headers;
	dl.payload.data = (uint8_t *)bus_msg_data(s->msg);
	dl.payload.len = bus_msg_len(s->msg);
	snprintf(reason, sizeof(reason), "%s", s->answer.reason);
	if (dl.payload.len > keep) {
		/* Its copy on the DLQ stream must still fit a message (see replies.c). */
		dl.payload.len = keep;
		snprintf(reason, sizeof(reason), "%s (first %zu bytes kept)", s->answer.reason,
		         keep);
	}
	dl.reason = reason;
	dl.error_class = s->dead_class;
	dl.correlation_id =
	        s->decoded && s->req.correlation_id[0] != '\0' ? s->req.correlation_id : NULL;
	return apply_queue_dead_letter(env, &dl, now_ms);
}

static enum status
queue_rejected_event(const struct apply_env *env, const struct intake_start *s, int64_t now_ms,
                     int index)
{
	struct bytes payload = {0};
	char subject[320], msg_id[200];
	enum status st = codec_encode_rejected_event(s->saga_name, &s->answer,
	                                             s->decoded ? s->req.idempotency_key : "",
	                                             now_ms, &payload);

	if (st != STATUS_OK)
		return st;
	snprintf(subject, sizeof(subject), "%s.event.%s.rejected", env->cfg->subject_prefix,
	         saga_valid_name(s->saga_name) ? s->saga_name : "unknown");
	snprintf(msg_id, sizeof(msg_id), "rej:%lld:%d", (long long)now_ms, index);
	store_queue_outbox(env->db, subject, msg_id, CT_EVENT, NULL, s->answer.correlation_id, NULL,
	                   0, NULL, payload);
	free(payload.data);
	return STATUS_OK;
}

/*
 * Look up the idempotency keys of the starts at idx[0..n) (distinct within
 * the batch): one query per saga name, not one per start. Those recorded
 * before become duplicates answering with the first saga's ids.
 */
static enum status
find_recorded(const struct apply_env *env, struct intake_start *starts, const int *idx, int n,
              char *err, size_t errlen)
{
	const char **keys = calloc((size_t)(n > 0 ? n : 1), sizeof(*keys));
	char *asked = calloc((size_t)(n > 0 ? n : 1), 1);
	enum status st = STATUS_OK;

	if (keys == NULL || asked == NULL) {
		snprintf(err, errlen, "out of memory");
		st = STATUS_NOMEM;
		goto cleanup;
	}
	for (int a = 0; a < n && st == STATUS_OK; a++) {
		const char *name = starts[idx[a]].saga_name;
		struct store_existing_start *found = NULL;
		int n_keys = 0, n_found = 0;

		if (asked[a])
			continue;
		for (int b = a; b < n; b++) {
			if (!asked[b] && strcmp(starts[idx[b]].saga_name, name) == 0) {
				keys[n_keys++] = starts[idx[b]].req.idempotency_key;
				asked[b] = 1;
			}
		}
		st = store_find_starts(env->db, name, keys, n_keys, &found, &n_found, err, errlen);
		for (int f = 0; f < n_found; f++) {
			for (int b = a; b < n; b++) {
				struct start_answer *ans = &starts[idx[b]].answer;

				if (strcmp(starts[idx[b]].saga_name, name) != 0 ||
				    strcmp(starts[idx[b]].req.idempotency_key, found[f].key) != 0)
					continue;
				ans->status = START_DUPLICATE;
				snprintf(ans->saga_id, sizeof(ans->saga_id), "%s",
				         found[f].saga_id);
				snprintf(ans->correlation_id, sizeof(ans->correlation_id), "%s",
				         found[f].correlation_id);
				ans->version = found[f].version;
				ans->accepted_unix_ms = found[f].created_ms;
			}
		}
		free(found);
	}
cleanup:
	free(keys);
	free(asked);
	return st;
}

enum status
intake_starts(const struct apply_env *env, struct intake_admission *adm,
              struct intake_start *starts, int n, int from_submit, char *err, size_t errlen)
{
	const struct saga_def **defs = calloc((size_t)(n > 0 ? n : 1), sizeof(*defs));
	int *keyed = calloc((size_t)(n > 0 ? n : 1), sizeof(*keyed));
	int n_keyed = 0;
	int64_t now_ms = 0;
	enum status st;
	int queued_rejects = 0;

	if (defs == NULL || keyed == NULL) {
		free(defs);
		free(keyed);
		return STATUS_NOMEM;
	}
	st = store_begin(env->db, &now_ms, err, errlen);
	if (st != STATUS_OK)
		goto unavailable;
	if (now_ms - adm->counted_ms >= ADMISSION_RECOUNT_MS) {
		st = store_count_in_flight(env->db, &adm->in_flight, err, errlen);
		if (st != STATUS_OK)
			goto fail;
		adm->counted_ms = now_ms;
	}
	/* Definitions, then idempotency keys already recorded, before the pipeline. */
	for (int i = 0; i < n; i++) {
		struct intake_start *s = &starts[i];
		char why[256];

		if (s->answer.status != 0)
			continue;
		if (!one_saga_token(env->cfg->subject_prefix, bus_msg_subject(s->msg))) {
			/* <prefix>.submit.> also delivers <prefix>.submit.x.order: not "order". */
			reject(&s->answer, REJECT_INVALID,
			       "subject: one saga name token after %s.start. or %s.submit.",
			       env->cfg->subject_prefix, env->cfg->subject_prefix);
			s->dead_class = "undecodable";
			s->saga_name[0] = '\0'; /* the subject named no saga */
			s->answer.saga_name[0] = '\0';
			continue;
		}
		st = defcache_get(env->defs, env->db, s->saga_name, s->req.version, now_ms,
		                  &defs[i], why, sizeof(why));
		if (st == STATUS_NOT_FOUND) {
			s->dead_class = "unknown_saga";
			if (s->req.version != 0) {
				char what[96];

				snprintf(what, sizeof(what), "%s version %u", s->saga_name,
				         s->req.version);
				reject(&s->answer, REJECT_UNKNOWN_SAGA, "no saga definition %s",
				       what);
			} else {
				reject(&s->answer, REJECT_UNKNOWN_SAGA, "no saga definition %s",
				       s->saga_name);
			}
			st = STATUS_OK;
			continue;
		}
		if (st != STATUS_OK) {
			snprintf(err, errlen, "%s", why);
			goto fail;
		}
		if (s->req.idempotency_key[0] != '\0') {
			const char *key = s->req.idempotency_key;

			/* Seen earlier in this batch? */
			for (int j = 0; j < i; j++) {
				struct intake_start *o = &starts[j];

				if (o->decoded && strcmp(o->saga_name, s->saga_name) == 0 &&
				    strcmp(o->req.idempotency_key, key) == 0 &&
				    (o->answer.status == 0 ||
				     o->answer.status == START_DUPLICATE)) {
					s->answer.status = START_DUPLICATE;
					break;
				}
			}
			if (s->answer.status == START_DUPLICATE)
				continue; /* filled after the first one is decided */
			keyed[n_keyed++] = i;
		}
	}
	st = find_recorded(env, starts, keyed, n_keyed, err, errlen);
	if (st != STATUS_OK)
		goto fail;
	st = store_batch_begin(env->db, err, errlen);
	if (st != STATUS_OK)
		goto fail;
	for (int i = 0; i < n && st == STATUS_OK; i++) {
		struct intake_start *s = &starts[i];

		if (s->answer.status != 0)
			continue;
		if (adm->in_flight >= adm->max) {
			char limit[32];

			snprintf(limit, sizeof(limit), "%lld", (long long)adm->max);
			reject(&s->answer, REJECT_OVERLOADED,
			       "admission limit of %s sagas in flight reached: retry later", limit);
			s->answer.retry_after_ms = adm->retry_after_ms;
			continue;
		}
		st = accept_one(env, defs[i], s, now_ms);
		if (st == STATUS_OK)
			adm->in_flight++;
	}
	for (int i = 0; i < n && st == STATUS_OK && from_submit; i++) {
		if (starts[i].answer.status == START_REJECTED) {
			st = queue_rejected_event(env, &starts[i], now_ms, queued_rejects++);
			if (st == STATUS_OK && starts[i].dead_class != NULL)
				st = queue_dead_submit(env, &starts[i], now_ms);
		}
	}
	if (st != STATUS_OK)
		goto fail;
	st = store_commit(env->db, err, errlen);
	if (st != STATUS_OK)
		goto unavailable;
	/* Duplicates inside the batch answer with their first twin's ids. */
	for (int i = 0; i < n; i++) {
		struct intake_start *s = &starts[i];

		if (s->answer.status != START_DUPLICATE || s->answer.saga_id[0] != '\0')
			continue;
		for (int j = 0; j < i; j++) {
			struct intake_start *o = &starts[j];

			if (o->decoded && o->answer.saga_id[0] != '\0' &&
			    strcmp(o->saga_name, s->saga_name) == 0 &&
			    strcmp(o->req.idempotency_key, s->req.idempotency_key) == 0) {
				/* The first twin's answer, as a duplicate. */
				struct start_answer first = o->answer;

				first.status = START_DUPLICATE;
				s->answer = first;
				break;
			}
		}
	}
	free(defs);
	free(keyed);
	return STATUS_OK;
fail:
	store_rollback(env->db);
unavailable:
	/* Nothing of this batch is known to be committed: tell every caller to retry. */
	for (int i = 0; i < n; i++) {
		struct intake_start *s = &starts[i];

		if (s->answer.status == START_REJECTED ||
		    (s->answer.status == START_DUPLICATE && s->answer.saga_id[0] != '\0'))
			continue; /* decided without this transaction: still true */
		memset(s->answer.saga_id, 0, sizeof(s->answer.saga_id));
		reject(&s->answer, REJECT_UNAVAILABLE,
		       "database unavailable (%s): retry, with an idempotency key to be safe",
		       status_name(st));
		s->answer.retry_after_ms = 1000;
	}
	free(defs);
	free(keyed);
	return st;
}

void
intake_define(const struct apply_env *env, struct bus *bus, struct bus_msg *msg)
{
	struct saga_def *def = calloc(1, sizeof(*def));
	struct define_answer a;
	struct bytes out = {0};
	uint32_t version = 0;
	int created = 0;
	enum status st;

	memset(&a, 0, sizeof(a));
	if (def == NULL) {
		a.status = 3;
		snprintf(a.error, sizeof(a.error), "out of memory");
		goto answer;
	}
	st = codec_decode_define_request(bus_msg_data(msg), bus_msg_len(msg), def, a.error,
	                                 sizeof(a.error));
	if (st == STATUS_OK)
		st = defcache_register(env->db, def, NULL, &version, &created, a.field,
		                       sizeof(a.field), a.error, sizeof(a.error));
	snprintf(a.name, sizeof(a.name), "%s", def->name);
	saga_utf8_scrub(a.name); /* a rejected name is the sender's bytes: answered as UTF-8 */
	if (st == STATUS_OK) {
		a.status = created ? 1 : 2;
		a.version = version;
		log_info("definition %s v%u %s", def->name, version,
		         created ? "registered" : "unchanged");
	} else {
		a.status = 3;
		log_warn("definition %s rejected: %s%s%s", a.name, a.field,
		         a.field[0] != '\0' ? ": " : "", a.error);
	}
answer:
	if (codec_encode_define_answer(&a, &out) == STATUS_OK) {
		struct bus_header h[1] = {{HDR_CONTENT_TYPE, CT_DEFINE_RESPONSE}};

		if (bus_respond(bus, msg, h, 1, out.data, out.len) != STATUS_OK)
			log_warn("could not answer a define request");
	}
	free(out.data);
	free(def);
}

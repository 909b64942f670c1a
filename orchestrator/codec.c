/*
 * Wire codec: the only module that uses the generated saga.v1 protobuf code.
 * Decoders check sizes before unpacking and validate every field that later
 * becomes part of a subject, a header, a log line or SQL.
 */
#include "codec.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "dead_letter.pb-c.h"
#include "definition.pb-c.h"
#include "event.pb-c.h"
#include "start.pb-c.h"
#include "step.pb-c.h"

/* Pack any message into a new buffer. */
static enum status
pack(const ProtobufCMessage *m, struct bytes *out)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(n > 0 ? n : 1);

	if (buf == NULL)
		return STATUS_NOMEM;
	protobuf_c_message_pack(m, buf);
	out->data = buf;
	out->len = n;
	return STATUS_OK;
}

bool
codec_valid_uuid(const char *s)
{
	for (int i = 0; i < SAGA_ID_LEN; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!isdigit(c) && !(c >= 'a' && c <= 'f')) {
			return false;
		}
	}
	return s[SAGA_ID_LEN] == '\0';
}

/* Copy a decoded string into a fixed buffer, refusing what does not fit. */
static bool
copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = src != NULL ? strlen(src) : 0;

	if (n >= cap)
		return false;
	memcpy(dst, src != NULL ? src : "", n + 1);
	return true;
}

/* A printable, single-line text; control characters become spaces (for logs and SQL). */
/*
 * A printable, single-line text for logs, SQL and other programs: control
 * characters become spaces, bytes that are not UTF-8 become '?', and a cut
 * never splits a character (PostgreSQL refuses text that is not UTF-8).
 */
static void
copy_text(char *dst, size_t cap, const char *src)
{
	size_t o = 0;
	size_t len = src != NULL ? strlen(src) : 0;

	for (size_t i = 0; i < len && o + 1 < cap;) {
		unsigned char c = (unsigned char)src[i];
		size_t n = saga_utf8_len(src + i, len - i);

		if (n == 0) {
			dst[o++] = '?';
			i++;
		} else if (n == 1) {
			dst[o++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
			i++;
		} else {
			if (o + n + 1 > cap)
				break;
			memcpy(dst + o, src + i, n);
			o += n;
			i += n;
		}
	}
	dst[o] = '\0';
}

static void
idempotency_key(char *out, size_t cap, const char *saga_id, const char *step, enum step_phase phase)
{
	snprintf(out, cap, "%s/%s/%c", saga_id, step, phase == PHASE_ACTION ? 'a' : 'c');
}

enum status
codec_encode_command(const struct saga_def *def, const struct saga_inst *inst,
                     const struct plan_command *cmd, const char *reply_subject, int64_t now_ms,
                     struct bytes *out)
{
	Saga__V1__StepCommand m = SAGA__V1__STEP_COMMAND__INIT;
	Saga__V1__StepOutput outs[SAGA_MAX_STEPS];
	Saga__V1__StepOutput *outp[SAGA_MAX_STEPS];
	char key[SAGA_KEY_MAX + 1];
	size_t n = 0;

	idempotency_key(key, sizeof(key), inst->id, def->steps[cmd->step].name, cmd->phase);
	m.saga_id = (char *)inst->id;
	m.correlation_id = (char *)inst->correlation_id;
	m.saga_name = (char *)def->name;
	m.saga_version = def->version;
	m.step = (char *)def->steps[cmd->step].name;
	m.phase = (Saga__V1__StepPhase)cmd->phase;
	m.attempt = cmd->attempt;
	m.idempotency_key = key;
	m.deadline_unix_ms = cmd->deadline_ms;
	m.input.data = inst->input.data;
	m.input.len = inst->input.len;
	m.reply_subject = (char *)reply_subject;
	m.sent_unix_ms = now_ms;
	m.traceparent = (char *)inst->traceparent;
	/* Outputs of completed steps, in completion order. */
	for (int32_t order = 1; order <= inst->completions; order++) {
		for (int i = 0; i < def->n_steps; i++) {
			const struct step_inst *s = &inst->steps[i];

			if (s->completed_order != order)
				continue;
			saga__v1__step_output__init(&outs[n]);
			outs[n].step = (char *)def->steps[i].name;
			outs[n].output.data = s->output.data;
			outs[n].output.len = s->output.len;
			outp[n] = &outs[n];
			n++;
		}
	}
	m.n_outputs = n;
	m.outputs = outp;
	return pack(&m.base, out);
}

const char *
codec_event_token(enum lifecycle_type t)
{
	switch (t) {
	case LC_STARTED:
		return "started";
	case LC_STEP_SUCCEEDED:
		return "step_succeeded";
	case LC_STEP_FAILED:
		return "step_failed";
	case LC_STEP_RETRYING:
		return "step_retrying";
	case LC_COMPENSATING:
		return "compensating";
	case LC_COMPENSATION_SUCCEEDED:
		return "compensation_succeeded";
	case LC_COMPLETED:
		return "completed";
	case LC_COMPENSATED:
		return "compensated";
	case LC_FAILED:
		return "failed";
	case LC_RESOLVED:
		return "resolved";
	case LC_RETRIED:
		return "retried";
	}
	return "unknown";
}

enum status
codec_encode_event(const struct saga_def *def, const struct saga_inst *inst,
                   const struct plan_event *ev, int32_t seq, int64_t now_ms, struct bytes *out)
{
	Saga__V1__LifecycleEvent m = SAGA__V1__LIFECYCLE_EVENT__INIT;

	m.saga_id = (char *)inst->id;
	m.correlation_id = (char *)inst->correlation_id;
	m.saga_name = (char *)def->name;
	m.saga_version = def->version;
	m.type = (Saga__V1__EventType)ev->type;
	m.state = (Saga__V1__SagaState)inst->state;
	m.step = ev->step >= 0 ? (char *)def->steps[ev->step].name : (char *)"";
	m.attempt = ev->attempt;
	m.reason = (char *)ev->reason;
	m.at_unix_ms = now_ms;
	m.sequence = seq;
	m.traceparent = (char *)inst->traceparent;
	return pack(&m.base, out);
}

enum status
codec_encode_reply(const struct command_msg *cmd, enum reply_outcome outcome, struct bytes output,
                   const char *error_code, const char *error_message, const char *participant,
                   int64_t now_ms, struct bytes *out)
{
	Saga__V1__StepReply m = SAGA__V1__STEP_REPLY__INIT;

	m.saga_id = (char *)cmd->saga_id;
	m.correlation_id = (char *)cmd->correlation_id;
	m.step = (char *)cmd->step;
	m.phase = (Saga__V1__StepPhase)cmd->phase;
	m.attempt = cmd->attempt;
	m.idempotency_key = (char *)cmd->idempotency_key;
	m.outcome = (Saga__V1__Outcome)outcome;
	m.output.data = output.data;
	m.output.len = output.len;
	m.error_code = (char *)(error_code != NULL ? error_code : "");
	m.error_message = (char *)(error_message != NULL ? error_message : "");
	m.participant = (char *)(participant != NULL ? participant : "");
	m.completed_unix_ms = now_ms;
	return pack(&m.base, out);
}

enum status
codec_encode_start_answer(const struct start_answer *a, struct bytes *out)
{
	Saga__V1__StartSagaResponse m = SAGA__V1__START_SAGA_RESPONSE__INIT;

	m.status = (Saga__V1__StartSagaResponse__Status)a->status;
	m.saga_id = (char *)a->saga_id;
	m.correlation_id = (char *)a->correlation_id;
	m.saga_name = (char *)a->saga_name;
	m.version = a->version;
	m.reject_code = (Saga__V1__StartSagaResponse__RejectCode)a->reject;
	m.reason = (char *)a->reason;
	m.retry_after_ms = a->retry_after_ms;
	m.accepted_unix_ms = a->accepted_unix_ms;
	return pack(&m.base, out);
}

enum status
codec_encode_start_request(const char *saga_name, uint32_t version, struct bytes input,
                           const char *idempotency_key, const char *correlation_id,
                           struct bytes *out)
{
	return codec_encode_start_request_traced(saga_name, version, input, idempotency_key,
	                                         correlation_id, NULL, out);
}

enum status
codec_encode_start_request_traced(const char *saga_name, uint32_t version, struct bytes input,
                                  const char *idempotency_key, const char *correlation_id,
                                  const char *traceparent, struct bytes *out)
{
	Saga__V1__StartSagaRequest m = SAGA__V1__START_SAGA_REQUEST__INIT;

	m.saga_name = (char *)(saga_name != NULL ? saga_name : "");
	m.version = version;
	m.input.data = input.data;
	m.input.len = input.len;
	m.idempotency_key = (char *)(idempotency_key != NULL ? idempotency_key : "");
	m.correlation_id = (char *)(correlation_id != NULL ? correlation_id : "");
	m.traceparent = (char *)(traceparent != NULL ? traceparent : "");
	return pack(&m.base, out);
}

enum status
codec_encode_rejected_event(const char *saga_name, const struct start_answer *a,
                            const char *idempotency_key, int64_t now_ms, struct bytes *out)
{
	Saga__V1__LifecycleEvent m = SAGA__V1__LIFECYCLE_EVENT__INIT;

	m.correlation_id = (char *)a->correlation_id;
	m.saga_name = (char *)saga_name;
	m.type = SAGA__V1__EVENT_TYPE__EVENT_TYPE_REJECTED;
	m.reason = (char *)a->reason;
	m.at_unix_ms = now_ms;
	m.idempotency_key = (char *)(idempotency_key != NULL ? idempotency_key : "");
	return pack(&m.base, out);
}

enum status
codec_encode_dead_letter(const struct dead_letter_msg *d, struct bytes *out)
{
	Saga__V1__DeadLetter m = SAGA__V1__DEAD_LETTER__INIT;
	Saga__V1__Header *hp[64];
	Saga__V1__Header hs[64];
	char id[32];
	int n = d->n_headers < 64 ? d->n_headers : 64;

	snprintf(id, sizeof(id), "%lld", (long long)d->id);
	for (int i = 0; i < n; i++) {
		saga__v1__header__init(&hs[i]);
		hs[i].name = (char *)d->header_names[i];
		hs[i].value = (char *)d->header_values[i];
		hp[i] = &hs[i];
	}
	m.id = id;
	m.source_subject = (char *)d->source_subject;
	m.n_headers = (size_t)n;
	m.headers = hp;
	m.payload.data = d->payload.data;
	m.payload.len = d->payload.len;
	m.reason = (char *)d->reason;
	m.error_class = (char *)d->error_class;
	m.saga_id = (char *)(d->saga_id != NULL ? d->saga_id : "");
	m.correlation_id = (char *)(d->correlation_id != NULL ? d->correlation_id : "");
	m.step = (char *)(d->step != NULL ? d->step : "");
	m.created_unix_ms = d->created_unix_ms;
	m.stream_sequence = (char *)(d->stream_sequence != NULL ? d->stream_sequence : "");
	return pack(&m.base, out);
}

/* ---- definitions ---- */

static void
policy_to_pb(const struct retry_policy *p, Saga__V1__RetryPolicy *m)
{
	saga__v1__retry_policy__init(m);
	m->max_attempts = p->max_attempts;
	m->initial_backoff_ms = p->initial_backoff_ms;
	m->max_backoff_ms = p->max_backoff_ms;
	m->multiplier = p->multiplier;
}

static void
policy_from_pb(const Saga__V1__RetryPolicy *m, struct retry_policy *p)
{
	memset(p, 0, sizeof(*p));
	if (m == NULL)
		return;
	p->max_attempts = m->max_attempts;
	p->initial_backoff_ms = m->initial_backoff_ms;
	p->max_backoff_ms = m->max_backoff_ms;
	p->multiplier = m->multiplier;
}

/* Fill m (with storage in the arrays given) from def. */
static void
definition_to_pb(const struct saga_def *def, Saga__V1__SagaDefinition *m,
                 Saga__V1__StepDefinition *steps, Saga__V1__StepDefinition **stepp,
                 Saga__V1__RetryPolicy *policies)
{
	saga__v1__saga_definition__init(m);
	m->name = (char *)def->name;
	m->version = def->version;
	m->description = (char *)def->description;
	m->deadline_ms = def->deadline_ms;
	for (int i = 0; i < def->n_steps; i++) {
		const struct step_def *s = &def->steps[i];
		Saga__V1__StepDefinition *p = &steps[i];

		saga__v1__step_definition__init(p);
		p->name = (char *)s->name;
		p->action_subject = (char *)s->action_subject;
		p->compensation_subject = (char *)s->compensation_subject;
		p->kind = (Saga__V1__StepKind)s->kind;
		p->timeout_ms = s->timeout_ms;
		policy_to_pb(&s->retry, &policies[2 * i]);
		policy_to_pb(&s->compensation_retry, &policies[2 * i + 1]);
		p->retry = &policies[2 * i];
		p->compensation_retry = &policies[2 * i + 1];
		p->group = (char *)s->group;
		stepp[i] = p;
	}
	m->n_steps = (size_t)def->n_steps;
	m->steps = stepp;
}

static enum status
definition_from_pb(const Saga__V1__SagaDefinition *m, struct saga_def *def, char *err,
                   size_t errlen)
{
	memset(def, 0, sizeof(*def));
	if (m == NULL) {
		snprintf(err, errlen, "definition: missing");
		return STATUS_INVALID;
	}
	if (!copy_str(def->name, sizeof(def->name), m->name)) {
		snprintf(err, errlen, "name: longer than %d characters", SAGA_NAME_MAX);
		return STATUS_INVALID;
	}
	def->version = m->version;
	if (!copy_str(def->description, sizeof(def->description), m->description)) {
		snprintf(err, errlen, "description: longer than %d characters",
		         SAGA_DESCRIPTION_MAX);
		return STATUS_INVALID;
	}
	def->deadline_ms = m->deadline_ms;
	if (m->n_steps > SAGA_MAX_STEPS) {
		snprintf(err, errlen, "steps: %zu steps, at most %d allowed", m->n_steps,
		         SAGA_MAX_STEPS);
		return STATUS_INVALID;
	}
	def->n_steps = (int)m->n_steps;
	for (size_t i = 0; i < m->n_steps; i++) {
		const Saga__V1__StepDefinition *p = m->steps[i];
		struct step_def *s = &def->steps[i];

		if (!copy_str(s->name, sizeof(s->name), p->name) ||
		    !copy_str(s->action_subject, sizeof(s->action_subject), p->action_subject) ||
		    !copy_str(s->compensation_subject, sizeof(s->compensation_subject),
		              p->compensation_subject) ||
		    !copy_str(s->group, sizeof(s->group), p->group)) {
			snprintf(err, errlen, "steps[%zu]: a name, subject or group is too long",
			         i);
			return STATUS_INVALID;
		}
		s->kind = p->kind == 0 ? STEP_KIND_COMPENSATABLE : (enum step_kind)p->kind;
		if ((int)p->kind < 0 || (int)p->kind > (int)STEP_KIND_RETRIABLE) {
			snprintf(err, errlen, "steps[%zu].kind: unknown kind %d", i, (int)p->kind);
			return STATUS_INVALID;
		}
		s->timeout_ms = p->timeout_ms;
		policy_from_pb(p->retry, &s->retry);
		policy_from_pb(p->compensation_retry, &s->compensation_retry);
	}
	return STATUS_OK;
}

enum status
codec_encode_definition(const struct saga_def *def, struct bytes *out)
{
	Saga__V1__SagaDefinition m;
	Saga__V1__StepDefinition steps[SAGA_MAX_STEPS];
	Saga__V1__StepDefinition *stepp[SAGA_MAX_STEPS];
	Saga__V1__RetryPolicy policies[2 * SAGA_MAX_STEPS];

	definition_to_pb(def, &m, steps, stepp, policies);
	m.version = 0; /* canonical: the body does not depend on the version it gets */
	return pack(&m.base, out);
}

enum status
codec_definition_hash(const struct saga_def *def, char hex[17])
{
	struct bytes b = {0};
	enum status st = codec_encode_definition(def, &b);

	if (st != STATUS_OK)
		return st;
	snprintf(hex, 17, "%016llx",
	         (unsigned long long)backoff_hash(BACKOFF_FNV_SEED, b.data, b.len));
	free(b.data);
	return STATUS_OK;
}

enum status
codec_encode_define_request(const struct saga_def *def, struct bytes *out)
{
	Saga__V1__DefineRequest r = SAGA__V1__DEFINE_REQUEST__INIT;
	Saga__V1__SagaDefinition m;
	Saga__V1__StepDefinition steps[SAGA_MAX_STEPS];
	Saga__V1__StepDefinition *stepp[SAGA_MAX_STEPS];
	Saga__V1__RetryPolicy policies[2 * SAGA_MAX_STEPS];

	definition_to_pb(def, &m, steps, stepp, policies);
	r.definition = &m;
	return pack(&r.base, out);
}

enum status
codec_encode_define_answer(const struct define_answer *a, struct bytes *out)
{
	Saga__V1__DefineResponse m = SAGA__V1__DEFINE_RESPONSE__INIT;

	m.status = (Saga__V1__DefineResponse__Status)a->status;
	m.name = (char *)a->name;
	m.version = a->version;
	m.error = (char *)a->error;
	m.field = (char *)a->field;
	return pack(&m.base, out);
}

/* ---- decoders ---- */

static enum status
check_size(size_t len, size_t max_len, const char *what, char *err, size_t errlen)
{
	if (len > max_len || len > CODEC_MAX_MESSAGE) {
		snprintf(err, errlen, "%s: %zu bytes, over the %zu byte limit", what, len,
		         max_len < CODEC_MAX_MESSAGE ? max_len : (size_t)CODEC_MAX_MESSAGE);
		return STATUS_TOO_LARGE;
	}
	return STATUS_OK;
}

enum status
codec_decode_reply(const uint8_t *data, size_t len, size_t max_len, struct reply_msg *out,
                   char *err, size_t errlen)
{
	Saga__V1__StepReply *m;
	enum status st = check_size(len, max_len, "StepReply", err, errlen);

	memset(out, 0, sizeof(*out));
	if (st != STATUS_OK)
		return st;
	m = saga__v1__step_reply__unpack(NULL, len, data);
	if (m == NULL) {
		snprintf(err, errlen, "StepReply: not a valid protobuf encoding");
		return STATUS_DECODE;
	}
	out->pb = m;
	if (!copy_str(out->saga_id, sizeof(out->saga_id), m->saga_id) ||
	    !codec_valid_uuid(out->saga_id)) {
		snprintf(err, errlen, "StepReply.saga_id: not a saga id");
		goto invalid;
	}
	if (!copy_str(out->correlation_id, sizeof(out->correlation_id), m->correlation_id) ||
	    (out->correlation_id[0] != '\0' &&
	     !saga_valid_key(out->correlation_id, SAGA_CORRELATION_MAX))) {
		snprintf(err, errlen, "StepReply.correlation_id: invalid characters or length");
		goto invalid;
	}
	if (!copy_str(out->step, sizeof(out->step), m->step) || !saga_valid_name(out->step)) {
		snprintf(err, errlen, "StepReply.step: not a valid step name");
		goto invalid;
	}
	if (m->phase != SAGA__V1__STEP_PHASE__STEP_PHASE_ACTION &&
	    m->phase != SAGA__V1__STEP_PHASE__STEP_PHASE_COMPENSATION) {
		snprintf(err, errlen, "StepReply.phase: unknown phase %d", (int)m->phase);
		goto invalid;
	}
	if (m->outcome < SAGA__V1__OUTCOME__OUTCOME_SUCCESS ||
	    m->outcome > SAGA__V1__OUTCOME__OUTCOME_PERMANENT_FAILURE) {
		snprintf(err, errlen, "StepReply.outcome: unknown outcome %d", (int)m->outcome);
		goto invalid;
	}
	if (m->attempt == 0) {
		snprintf(err, errlen, "StepReply.attempt: must be at least 1");
		goto invalid;
	}
	out->phase = (enum step_phase)m->phase;
	out->outcome = (enum reply_outcome)m->outcome;
	out->attempt = m->attempt;
	out->output.data = m->output.data;
	out->output.len = m->output.len;
	out->completed_unix_ms = m->completed_unix_ms;
	if (m->error_code[0] != '\0' || m->error_message[0] != '\0') {
		char joined[SAGA_ERROR_MAX * 2];

		snprintf(joined, sizeof(joined), "%s%s%s", m->error_code,
		         m->error_code[0] != '\0' && m->error_message[0] != '\0' ? ": " : "",
		         m->error_message);
		copy_text(out->error, sizeof(out->error), joined);
	}
	return STATUS_OK;
invalid:
	codec_reply_free(out);
	return STATUS_INVALID;
}

void
codec_reply_free(struct reply_msg *m)
{
	if (m->pb != NULL)
		saga__v1__step_reply__free_unpacked(m->pb, NULL);
	m->pb = NULL;
}

enum status
codec_decode_command(const uint8_t *data, size_t len, size_t max_len, struct command_msg *out,
                     char *err, size_t errlen)
{
	Saga__V1__StepCommand *m;
	enum status st = check_size(len, max_len, "StepCommand", err, errlen);

	memset(out, 0, sizeof(*out));
	if (st != STATUS_OK)
		return st;
	m = saga__v1__step_command__unpack(NULL, len, data);
	if (m == NULL) {
		snprintf(err, errlen, "StepCommand: not a valid protobuf encoding");
		return STATUS_DECODE;
	}
	out->pb = m;
	if (!copy_str(out->saga_id, sizeof(out->saga_id), m->saga_id) ||
	    !codec_valid_uuid(out->saga_id) ||
	    !copy_str(out->correlation_id, sizeof(out->correlation_id), m->correlation_id) ||
	    !copy_str(out->saga_name, sizeof(out->saga_name), m->saga_name) ||
	    !copy_str(out->step, sizeof(out->step), m->step) || !saga_valid_name(out->step) ||
	    !copy_str(out->idempotency_key, sizeof(out->idempotency_key), m->idempotency_key) ||
	    !saga_valid_key(out->idempotency_key, SAGA_KEY_MAX) ||
	    !copy_str(out->reply_subject, sizeof(out->reply_subject), m->reply_subject) ||
	    out->reply_subject[0] == '\0' || (int)m->n_outputs > SAGA_MAX_STEPS ||
	    m->attempt == 0 ||
	    (m->phase != SAGA__V1__STEP_PHASE__STEP_PHASE_ACTION &&
	     m->phase != SAGA__V1__STEP_PHASE__STEP_PHASE_COMPENSATION)) {
		snprintf(err, errlen, "StepCommand: a required field is missing or invalid");
		codec_command_free(out);
		return STATUS_INVALID;
	}
	out->saga_version = m->saga_version;
	out->phase = (enum step_phase)m->phase;
	out->attempt = m->attempt;
	out->deadline_unix_ms = m->deadline_unix_ms;
	out->sent_unix_ms = m->sent_unix_ms;
	out->input.data = m->input.data;
	out->input.len = m->input.len;
	out->n_outputs = (int)m->n_outputs;
	for (size_t i = 0; i < m->n_outputs; i++) {
		out->output_steps[i] = m->outputs[i]->step;
		out->outputs[i].data = m->outputs[i]->output.data;
		out->outputs[i].len = m->outputs[i]->output.len;
	}
	return STATUS_OK;
}

void
codec_command_free(struct command_msg *m)
{
	if (m->pb != NULL)
		saga__v1__step_command__free_unpacked(m->pb, NULL);
	m->pb = NULL;
}

/* Labels as a JSON object, every string escaped. */
static char *
labels_to_json(const Saga__V1__StartSagaRequest *m)
{
	size_t cap = 3;
	char *buf;
	size_t pos = 0;

	for (size_t i = 0; i < m->n_labels; i++)
		cap += 6 * (strlen(m->labels[i]->key) + strlen(m->labels[i]->value)) + 8;
	buf = malloc(cap);
	if (buf == NULL)
		return NULL;
	buf[pos++] = '{';
	for (size_t i = 0; i < m->n_labels; i++) {
		const char *parts[2] = {m->labels[i]->key, m->labels[i]->value};

		if (i > 0)
			buf[pos++] = ',';
		for (int k = 0; k < 2; k++) {
			buf[pos++] = '"';
			for (const unsigned char *p = (const unsigned char *)parts[k]; *p; p++) {
				if (*p == '"' || *p == '\\') {
					buf[pos++] = '\\';
					buf[pos++] = (char)*p;
				} else if (*p < 0x20) {
					pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x",
					                        *p);
				} else {
					buf[pos++] = (char)*p;
				}
			}
			buf[pos++] = '"';
			if (k == 0)
				buf[pos++] = ':';
		}
	}
	buf[pos++] = '}';
	buf[pos] = '\0';
	return buf;
}

/* W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>. */
static bool
valid_traceparent(const char *s)
{
	static const char shape[] = "xx-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-xxxxxxxxxxxxxxxx-xx";

	if (strlen(s) != sizeof(shape) - 1)
		return false;
	for (size_t i = 0; shape[i] != '\0'; i++) {
		if (shape[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

enum status
codec_decode_start(const uint8_t *data, size_t len, size_t max_len, struct start_msg *out,
                   char *err, size_t errlen)
{
	Saga__V1__StartSagaRequest *m;
	enum status st =
	        check_size(len, max_len + CODEC_ENVELOPE_MAX, "StartSagaRequest", err, errlen);

	memset(out, 0, sizeof(*out));
	if (st != STATUS_OK)
		return st;
	m = saga__v1__start_saga_request__unpack(NULL, len, data);
	if (m == NULL) {
		snprintf(err, errlen, "StartSagaRequest: not a valid protobuf encoding");
		return STATUS_DECODE;
	}
	out->pb = m;
	if (!copy_str(out->saga_name, sizeof(out->saga_name), m->saga_name) ||
	    (out->saga_name[0] != '\0' && !saga_valid_name(out->saga_name))) {
		snprintf(err, errlen, "saga_name: use 1-%d of [A-Za-z0-9_-]", SAGA_NAME_MAX);
		goto invalid;
	}
	if (!copy_str(out->idempotency_key, sizeof(out->idempotency_key), m->idempotency_key) ||
	    (out->idempotency_key[0] != '\0' &&
	     !saga_valid_key(out->idempotency_key, SAGA_KEY_MAX))) {
		snprintf(err, errlen, "idempotency_key: use 1-%d of [A-Za-z0-9._:/+=@-]",
		         SAGA_KEY_MAX);
		goto invalid;
	}
	if (!copy_str(out->correlation_id, sizeof(out->correlation_id), m->correlation_id) ||
	    (out->correlation_id[0] != '\0' &&
	     !saga_valid_key(out->correlation_id, SAGA_CORRELATION_MAX))) {
		snprintf(err, errlen, "correlation_id: use 1-%d of [A-Za-z0-9._:/+=@-]",
		         SAGA_CORRELATION_MAX);
		goto invalid;
	}
	if (m->traceparent[0] != '\0') {
		if (!valid_traceparent(m->traceparent)) {
			snprintf(err, errlen, "traceparent: not a W3C traceparent");
			goto invalid;
		}
		copy_str(out->traceparent, sizeof(out->traceparent), m->traceparent);
	}
	if (m->input.len > max_len) {
		snprintf(err, errlen, "input: %zu bytes, over the %zu byte limit", m->input.len,
		         max_len);
		st = STATUS_TOO_LARGE;
		goto fail;
	}
	if (m->deadline_unix_ms < 0) {
		snprintf(err, errlen, "deadline_unix_ms: negative");
		goto invalid;
	}
	out->version = m->version;
	out->input.data = m->input.data;
	out->input.len = m->input.len;
	out->deadline_unix_ms = m->deadline_unix_ms;
	for (size_t i = 0; i < m->n_labels; i++) {
		if (!saga_utf8_valid(m->labels[i]->key, strlen(m->labels[i]->key)) ||
		    !saga_utf8_valid(m->labels[i]->value, strlen(m->labels[i]->value))) {
			snprintf(err, errlen, "labels: keys and values must be UTF-8 text");
			goto invalid;
		}
	}
	out->labels_json = labels_to_json(m);
	if (out->labels_json == NULL) {
		snprintf(err, errlen, "out of memory");
		st = STATUS_NOMEM;
		goto fail;
	}
	return STATUS_OK;
invalid:
	st = STATUS_INVALID;
fail:
	codec_start_free(out);
	return st;
}

void
codec_start_free(struct start_msg *m)
{
	if (m->pb != NULL)
		saga__v1__start_saga_request__free_unpacked(m->pb, NULL);
	m->pb = NULL;
	free(m->labels_json);
	m->labels_json = NULL;
}

enum status
codec_decode_start_answer(const uint8_t *data, size_t len, struct start_answer *out, char *err,
                          size_t errlen)
{
	Saga__V1__StartSagaResponse *m;

	memset(out, 0, sizeof(*out));
	if (check_size(len, 64 * 1024, "StartSagaResponse", err, errlen) != STATUS_OK)
		return STATUS_TOO_LARGE;
	m = saga__v1__start_saga_response__unpack(NULL, len, data);
	if (m == NULL) {
		snprintf(err, errlen, "StartSagaResponse: not a valid protobuf encoding");
		return STATUS_DECODE;
	}
	out->status = (enum start_status)m->status;
	copy_str(out->saga_id, sizeof(out->saga_id), m->saga_id);
	copy_str(out->correlation_id, sizeof(out->correlation_id), m->correlation_id);
	copy_str(out->saga_name, sizeof(out->saga_name), m->saga_name);
	out->version = m->version;
	out->reject = (enum start_reject)m->reject_code;
	copy_text(out->reason, sizeof(out->reason), m->reason);
	out->retry_after_ms = m->retry_after_ms;
	out->accepted_unix_ms = m->accepted_unix_ms;
	saga__v1__start_saga_response__free_unpacked(m, NULL);
	return STATUS_OK;
}

enum status
codec_decode_define_request(const uint8_t *data, size_t len, struct saga_def *out, char *err,
                            size_t errlen)
{
	Saga__V1__DefineRequest *m;
	enum status st = check_size(len, 1024 * 1024, "DefineRequest", err, errlen);

	if (st != STATUS_OK)
		return st;
	m = saga__v1__define_request__unpack(NULL, len, data);
	if (m == NULL) {
		snprintf(err, errlen, "DefineRequest: not a valid protobuf encoding");
		return STATUS_DECODE;
	}
	st = definition_from_pb(m->definition, out, err, errlen);
	saga__v1__define_request__free_unpacked(m, NULL);
	return st;
}

enum status
codec_decode_definition(const uint8_t *data, size_t len, struct saga_def *out, char *err,
                        size_t errlen)
{
	Saga__V1__SagaDefinition *m;
	enum status st = check_size(len, 1024 * 1024, "SagaDefinition", err, errlen);

	if (st != STATUS_OK)
		return st;
	m = saga__v1__saga_definition__unpack(NULL, len, data);
	if (m == NULL) {
		snprintf(err, errlen, "SagaDefinition: not a valid protobuf encoding");
		return STATUS_DECODE;
	}
	st = definition_from_pb(m, out, err, errlen);
	saga__v1__saga_definition__free_unpacked(m, NULL);
	return st;
}

enum status
codec_decode_define_answer(const uint8_t *data, size_t len, struct define_answer *out, char *err,
                           size_t errlen)
{
	Saga__V1__DefineResponse *m;

	memset(out, 0, sizeof(*out));
	if (check_size(len, 64 * 1024, "DefineResponse", err, errlen) != STATUS_OK)
		return STATUS_TOO_LARGE;
	m = saga__v1__define_response__unpack(NULL, len, data);
	if (m == NULL) {
		snprintf(err, errlen, "DefineResponse: not a valid protobuf encoding");
		return STATUS_DECODE;
	}
	out->status = (int)m->status;
	copy_str(out->name, sizeof(out->name), m->name);
	out->version = m->version;
	copy_text(out->error, sizeof(out->error), m->error);
	copy_text(out->field, sizeof(out->field), m->field);
	saga__v1__define_response__free_unpacked(m, NULL);
	return STATUS_OK;
}

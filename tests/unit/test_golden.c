/*
 * Unit tests of the committed golden vectors (tests/data/golden): encodings
 * written by earlier versions must keep decoding, field by field, to the
 * values they were written with, and re-encode to the same bytes. Expected
 * values are literals (enum values as numbers), so a renumbered, retyped or
 * renamed field fails here even when the schema still compiles.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dead_letter.pb-c.h"
#include "definition.pb-c.h"
#include "event.pb-c.h"
#include "start.pb-c.h"
#include "step.pb-c.h"

#define SAGA_ID    "0193a5b2-7c1d-7e3f-9a00-00000000002a"
#define CORR_ID    "corr-7f3a-0001"
#define TRACEPAREN "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

/* A bytes field equals a string literal (without its terminating NUL). */
#define assert_bytes(field, lit)                                                                   \
	do {                                                                                       \
		cr_assert_eq((field).len, sizeof(lit) - 1, #field " has the wrong length");        \
		cr_assert_eq(memcmp((field).data, (lit), sizeof(lit) - 1), 0,                      \
		             #field " has the wrong bytes");                                       \
	} while (0)

/* Read tests/data/golden/<name> from the source tree, wherever the test runs. Caller frees. */
static uint8_t *
read_vector(const char *name, size_t *len)
{
	const char *env = getenv("SAGAD_SOURCE_ROOT");
	const char *self = __FILE__;
	const char *suffix = "tests/unit/test_golden.c";
	char roots[4][512];
	int n_roots = 0;
	size_t self_len = strlen(self);
	size_t suffix_len = strlen(suffix);

	if (env != NULL)
		snprintf(roots[n_roots++], sizeof(roots[0]), "%s", env);
	if (self_len >= suffix_len && strcmp(self + self_len - suffix_len, suffix) == 0)
		snprintf(roots[n_roots++], sizeof(roots[0]), "%.*s.", (int)(self_len - suffix_len),
		         self);
	snprintf(roots[n_roots++], sizeof(roots[0]), ".");
	snprintf(roots[n_roots++], sizeof(roots[0]), "..");
	for (int i = 0; i < n_roots; i++) {
		char path[1100];
		FILE *f;
		uint8_t *buf;
		long size;

		snprintf(path, sizeof(path), "%s/tests/data/golden/%s", roots[i], name);
		f = fopen(path, "rb");
		if (f == NULL)
			continue;
		cr_assert_eq(fseek(f, 0, SEEK_END), 0);
		size = ftell(f);
		cr_assert_gt(size, 0, "%s is empty", path);
		rewind(f);
		buf = malloc((size_t)size);
		cr_assert_not_null(buf);
		cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
		fclose(f);
		*len = (size_t)size;
		return buf;
	}
	cr_assert_fail("tests/data/golden/%s not found (set SAGAD_SOURCE_ROOT)", name);
	return NULL;
}

/*
 * Decode vector `name` as type d, let `check` assert every field, then
 * re-encode and compare with the committed bytes. `n_unknown` is the number of
 * fields a newer writer added that this reader does not know.
 */
static void
check_vector(const char *name, const ProtobufCMessageDescriptor *d, unsigned n_unknown,
             void (*check)(const ProtobufCMessage *m))
{
	size_t len = 0;
	uint8_t *bytes = read_vector(name, &len);
	ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, bytes);
	uint8_t *again;

	cr_assert_not_null(m, "%s does not decode as %s", name, d->name);
	cr_assert(protobuf_c_message_check(m), "%s fails protobuf_c_message_check", name);
	cr_assert_eq(m->n_unknown_fields, n_unknown,
	             "%s: %u unknown fields, expected %u (renumbered field?)", name,
	             m->n_unknown_fields, n_unknown);
	check(m);
	cr_assert_eq(protobuf_c_message_get_packed_size(m), len, "%s re-encodes to another size",
	             name);
	again = malloc(len);
	cr_assert_not_null(again);
	cr_assert_eq(protobuf_c_message_pack(m, again), len);
	cr_assert_eq(memcmp(again, bytes, len), 0, "%s re-encodes to other bytes", name);
	free(again);
	protobuf_c_message_free_unpacked(m, NULL);
	free(bytes);
}

static void
check_start_saga_request(const ProtobufCMessage *m)
{
	const Saga__V1__StartSagaRequest *r = (const Saga__V1__StartSagaRequest *)m;

	cr_assert_str_eq(r->saga_name, "order-checkout");
	cr_assert_eq(r->version, 7);
	assert_bytes(r->input, "{\"order\":\"A-1001\",\"sku\":\"K\xc3\xa4se\",\"qty\":3}");
	cr_assert_str_eq(r->idempotency_key, "checkout-A-1001");
	cr_assert_str_eq(r->correlation_id, CORR_ID);
	cr_assert_eq(r->deadline_unix_ms, INT64_C(1764303600000));
	cr_assert_eq(r->n_labels, 2);
	cr_assert_str_eq(r->labels[0]->key, "tenant");
	cr_assert_str_eq(r->labels[0]->value, "acme");
	cr_assert_str_eq(r->labels[1]->key, "region");
	cr_assert_str_eq(r->labels[1]->value, "eu-west-1");
	cr_assert_str_eq(r->traceparent, TRACEPAREN);
}

static void
check_start_saga_response(const ProtobufCMessage *m)
{
	const Saga__V1__StartSagaResponse *r = (const Saga__V1__StartSagaResponse *)m;

	cr_assert_eq((int)r->status, 2, "STATUS_DUPLICATE");
	cr_assert_str_eq(r->saga_id, SAGA_ID);
	cr_assert_str_eq(r->correlation_id, CORR_ID);
	cr_assert_str_eq(r->saga_name, "order-checkout");
	cr_assert_eq(r->version, 7);
	cr_assert_eq((int)r->reject_code, 3, "REJECT_CODE_OVERLOADED");
	cr_assert_str_eq(r->reason, "2000 sagas in flight");
	cr_assert_eq(r->retry_after_ms, 1500);
	cr_assert_eq(r->accepted_unix_ms, INT64_C(1764300000123));
}

static void
check_step_output(const ProtobufCMessage *m)
{
	const Saga__V1__StepOutput *o = (const Saga__V1__StepOutput *)m;

	cr_assert_str_eq(o->step, "reserve-stock");
	assert_bytes(o->output, "{\"reservation\":\"R-77\"}");
}

static void
check_step_command(const ProtobufCMessage *m)
{
	const Saga__V1__StepCommand *c = (const Saga__V1__StepCommand *)m;

	cr_assert_str_eq(c->saga_id, SAGA_ID);
	cr_assert_str_eq(c->correlation_id, CORR_ID);
	cr_assert_str_eq(c->saga_name, "order-checkout");
	cr_assert_eq(c->saga_version, 7);
	cr_assert_str_eq(c->step, "charge-card");
	cr_assert_eq((int)c->phase, 2, "STEP_PHASE_COMPENSATION");
	cr_assert_eq(c->attempt, 3);
	cr_assert_str_eq(c->idempotency_key, SAGA_ID "/charge-card/c");
	cr_assert_eq(c->deadline_unix_ms, INT64_C(1764300030000));
	assert_bytes(c->input, "{\"order\":\"A-1001\"}");
	cr_assert_eq(c->n_outputs, 2);
	check_step_output(&c->outputs[0]->base);
	cr_assert_str_eq(c->outputs[1]->step, "charge-card");
	assert_bytes(c->outputs[1]->output, "\x00\xff\x01"
	                                    "binary");
	cr_assert_str_eq(c->reply_subject, "saga.reply.payments.refund");
	cr_assert_eq(c->sent_unix_ms, INT64_C(1764300000456));
	cr_assert_str_eq(c->traceparent, TRACEPAREN);
}

static void
check_step_reply(const ProtobufCMessage *m)
{
	const Saga__V1__StepReply *r = (const Saga__V1__StepReply *)m;

	cr_assert_str_eq(r->saga_id, SAGA_ID);
	cr_assert_str_eq(r->correlation_id, CORR_ID);
	cr_assert_str_eq(r->step, "charge-card");
	cr_assert_eq((int)r->phase, 1, "STEP_PHASE_ACTION");
	cr_assert_eq(r->attempt, 2);
	cr_assert_str_eq(r->idempotency_key, SAGA_ID "/charge-card/a");
	cr_assert_eq((int)r->outcome, 2, "OUTCOME_RETRYABLE_FAILURE");
	assert_bytes(r->output, "{\"auth\":\"pending\"}");
	cr_assert_str_eq(r->error_code, "card_declined");
	cr_assert_str_eq(r->error_message, "Karte abgelehnt \xe2\x80\x93 bitte sp\xc3\xa4ter");
	cr_assert_str_eq(r->participant, "payments-7f9c");
	cr_assert_eq(r->completed_unix_ms, INT64_C(1764300001789));
}

static void
check_lifecycle_event(const ProtobufCMessage *m)
{
	const Saga__V1__LifecycleEvent *e = (const Saga__V1__LifecycleEvent *)m;

	cr_assert_str_eq(e->saga_id, SAGA_ID);
	cr_assert_str_eq(e->correlation_id, CORR_ID);
	cr_assert_str_eq(e->saga_name, "order-checkout");
	cr_assert_eq(e->saga_version, 7);
	cr_assert_eq((int)e->type, 4, "EVENT_TYPE_STEP_RETRYING");
	cr_assert_eq((int)e->state, 2, "SAGA_STATE_COMPENSATING");
	cr_assert_str_eq(e->step, "charge-card");
	cr_assert_eq(e->attempt, 2);
	cr_assert_str_eq(e->reason, "timeout after 30000 ms");
	cr_assert_eq(e->at_unix_ms, INT64_C(1764300031000));
	cr_assert_eq(e->sequence, 42);
	cr_assert_str_eq(e->traceparent, TRACEPAREN);
	cr_assert_str_eq(e->idempotency_key, "checkout-A-1001");
}

static void
assert_retry(const Saga__V1__RetryPolicy *p, uint32_t max_attempts, int64_t initial, int64_t max,
             double multiplier)
{
	cr_assert_not_null(p, "retry policy missing");
	cr_assert_eq(p->max_attempts, max_attempts);
	cr_assert_eq(p->initial_backoff_ms, initial);
	cr_assert_eq(p->max_backoff_ms, max);
	cr_assert_eq(p->multiplier, multiplier);
}

static void
check_retry_policy(const ProtobufCMessage *m)
{
	assert_retry((const Saga__V1__RetryPolicy *)m, 5, 250, 60000, 1.5);
}

/* The first step of the golden definition; also the StepDefinition vector. */
static void
check_step_definition(const ProtobufCMessage *m)
{
	const Saga__V1__StepDefinition *s = (const Saga__V1__StepDefinition *)m;

	cr_assert_str_eq(s->name, "charge-card");
	cr_assert_str_eq(s->action_subject, "payments.charge");
	cr_assert_str_eq(s->compensation_subject, "payments.refund");
	cr_assert_eq((int)s->kind, 2, "STEP_KIND_PIVOT");
	cr_assert_eq(s->timeout_ms, 45000);
	assert_retry(s->retry, 3, 200, 30000, 2.0);
	assert_retry(s->compensation_retry, 10, 500, 120000, 3.0);
	cr_assert_str_eq(s->group, "pay");
}

static void
check_saga_definition(const ProtobufCMessage *m)
{
	const Saga__V1__SagaDefinition *d = (const Saga__V1__SagaDefinition *)m;
	const Saga__V1__StepDefinition *ship;

	cr_assert_str_eq(d->name, "order-checkout");
	cr_assert_eq(d->version, 7);
	cr_assert_str_eq(d->description, "Checkout: charge the card, then ship");
	cr_assert_eq(d->n_steps, 2);
	check_step_definition(&d->steps[0]->base);
	ship = d->steps[1];
	cr_assert_str_eq(ship->name, "ship-order");
	cr_assert_str_eq(ship->action_subject, "shipping.create");
	cr_assert_str_eq(ship->compensation_subject, "shipping.cancel");
	cr_assert_eq((int)ship->kind, 3, "STEP_KIND_RETRIABLE");
	cr_assert_eq(ship->timeout_ms, 120000);
	assert_retry(ship->retry, 8, 1000, 300000, 1.25);
	assert_retry(ship->compensation_retry, 2, 50, 5000, 4.0);
	cr_assert_str_eq(ship->group, "fulfil");
	cr_assert_eq(d->deadline_ms, 86400000);
}

static void
check_define_request(const ProtobufCMessage *m)
{
	const Saga__V1__DefineRequest *r = (const Saga__V1__DefineRequest *)m;

	cr_assert_not_null(r->definition);
	check_saga_definition(&r->definition->base);
}

static void
check_define_response(const ProtobufCMessage *m)
{
	const Saga__V1__DefineResponse *r = (const Saga__V1__DefineResponse *)m;

	cr_assert_eq((int)r->status, 3, "STATUS_REJECTED");
	cr_assert_str_eq(r->name, "order-checkout");
	cr_assert_eq(r->version, 7);
	cr_assert_str_eq(r->error, "timeout_ms must be positive");
	cr_assert_str_eq(r->field, "steps[1].timeout_ms");
}

static void
check_header(const ProtobufCMessage *m)
{
	const Saga__V1__Header *h = (const Saga__V1__Header *)m;

	cr_assert_str_eq(h->name, "Nats-Msg-Id");
	cr_assert_str_eq(h->value, CORR_ID "/start");
}

static void
check_dead_letter(const ProtobufCMessage *m)
{
	const Saga__V1__DeadLetter *d = (const Saga__V1__DeadLetter *)m;

	cr_assert_str_eq(d->id, "dl-000042");
	cr_assert_str_eq(d->source_subject, "saga.reply.payments.charge");
	cr_assert_eq(d->n_headers, 2);
	cr_assert_str_eq(d->headers[0]->name, "Content-Type");
	cr_assert_str_eq(d->headers[0]->value, "application/x-protobuf; proto=saga.v1.StepReply");
	cr_assert_str_eq(d->headers[1]->name, "Nats-Msg-Id");
	cr_assert_str_eq(d->headers[1]->value, CORR_ID "/reply");
	assert_bytes(d->payload, "\x0a\xff\xfe\x00garbage");
	cr_assert_str_eq(d->reason, "StepReply does not decode: truncated field 1");
	cr_assert_str_eq(d->error_class, "decode");
	cr_assert_str_eq(d->saga_id, SAGA_ID);
	cr_assert_str_eq(d->correlation_id, CORR_ID);
	cr_assert_str_eq(d->step, "charge-card");
	cr_assert_eq(d->created_unix_ms, INT64_C(1764300002000));
	cr_assert_str_eq(d->stream_sequence, "SAGA_REPLIES:1042");
}

Test(golden, start_saga_request_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("start_saga_request.v1.bin", &saga__v1__start_saga_request__descriptor, 0,
	             check_start_saga_request);
}

Test(golden, start_saga_response_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("start_saga_response.v1.bin", &saga__v1__start_saga_response__descriptor, 0,
	             check_start_saga_response);
}

Test(golden, step_output_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("step_output.v1.bin", &saga__v1__step_output__descriptor, 0,
	             check_step_output);
}

Test(golden, step_command_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("step_command.v1.bin", &saga__v1__step_command__descriptor, 0,
	             check_step_command);
}

Test(golden, step_reply_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("step_reply.v1.bin", &saga__v1__step_reply__descriptor, 0, check_step_reply);
}

Test(golden, lifecycle_event_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("lifecycle_event.v1.bin", &saga__v1__lifecycle_event__descriptor, 0,
	             check_lifecycle_event);
}

Test(golden, retry_policy_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("retry_policy.v1.bin", &saga__v1__retry_policy__descriptor, 0,
	             check_retry_policy);
}

Test(golden, step_definition_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("step_definition.v1.bin", &saga__v1__step_definition__descriptor, 0,
	             check_step_definition);
}

Test(golden, saga_definition_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("saga_definition.v1.bin", &saga__v1__saga_definition__descriptor, 0,
	             check_saga_definition);
}

Test(golden, define_request_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("define_request.v1.bin", &saga__v1__define_request__descriptor, 0,
	             check_define_request);
}

Test(golden, define_response_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("define_response.v1.bin", &saga__v1__define_response__descriptor, 0,
	             check_define_response);
}

Test(golden, header_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("header.v1.bin", &saga__v1__header__descriptor, 0, check_header);
}

Test(golden, dead_letter_v1_decodes_to_its_values_and_reencodes_identically)
{
	check_vector("dead_letter.v1.bin", &saga__v1__dead_letter__descriptor, 0,
	             check_dead_letter);
}

/* The unknown fields of start_saga_request.future.bin, as the newer writer encoded them. */
static void
check_start_saga_request_future(const ProtobufCMessage *m)
{
	const ProtobufCMessageUnknownField *u = m->unknown_fields;

	check_start_saga_request(m);
	cr_assert_eq(u[0].tag, 99);
	cr_assert_eq(u[0].wire_type, PROTOBUF_C_WIRE_TYPE_VARINT);
	cr_assert_eq(u[0].len, 2);
	cr_assert_eq(memcmp(u[0].data, "\xac\x02", 2), 0, "field 99 is varint 300");
	cr_assert_eq(u[1].tag, 100);
	cr_assert_eq(u[1].wire_type, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);
	cr_assert_eq(u[1].len, 12, "length prefix and 11 bytes");
	cr_assert_eq(memcmp(u[1].data,
	                    "\x0b"
	                    "added in v2",
	                    12),
	             0);
}

Test(golden, a_newer_writers_start_request_keeps_its_unknown_fields_byte_for_byte)
{
	check_vector("start_saga_request.future.bin", &saga__v1__start_saga_request__descriptor, 2,
	             check_start_saga_request_future);
}

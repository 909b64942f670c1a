/*
 * Writes the golden vectors of tests/data/golden: one encoding of every saga.v1
 * message type with every field set, plus one message as a newer writer would
 * send it. Run by hand when a vector is added, never by the tests:
 *
 *     ninja -C build make-golden && ./build/tests/make-golden tests/data/golden
 *
 * A vector that exists already is compared, never rewritten: committed vectors
 * are what old writers sent, so they never change (see proto/README.md). The
 * values below are repeated as literals in tests/unit/test_golden.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dead_letter.pb-c.h"
#include "definition.pb-c.h"
#include "event.pb-c.h"
#include "start.pb-c.h"
#include "step.pb-c.h"

/* A bytes field from a string literal (without its terminating NUL). */
#define BYTES(lit) ((ProtobufCBinaryData){sizeof(lit) - 1, (uint8_t *)(lit)})

#define SAGA_ID    "0193a5b2-7c1d-7e3f-9a00-00000000002a"
#define CORR_ID    "corr-7f3a-0001"
#define TRACEPAREN "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

/* One encoded vector, owned by the caller. */
struct vector {
	uint8_t *data; /* encoded bytes (malloc) */
	size_t len;    /* number of bytes */
};

static struct vector
pack(const ProtobufCMessage *m)
{
	struct vector v = {NULL, protobuf_c_message_get_packed_size(m)};

	v.data = malloc(v.len + 1);
	if (v.data == NULL) {
		perror("make-golden");
		exit(1);
	}
	if (protobuf_c_message_pack(m, v.data) != v.len) {
		fprintf(stderr, "make-golden: %s packs to an unexpected size\n",
		        m->descriptor->name);
		exit(1);
	}
	return v;
}

static struct vector
start_saga_request_v1(void)
{
	Saga__V1__StartSagaRequest r = SAGA__V1__START_SAGA_REQUEST__INIT;
	Saga__V1__StartSagaRequest__LabelsEntry tenant =
	        SAGA__V1__START_SAGA_REQUEST__LABELS_ENTRY__INIT;
	Saga__V1__StartSagaRequest__LabelsEntry region =
	        SAGA__V1__START_SAGA_REQUEST__LABELS_ENTRY__INIT;
	Saga__V1__StartSagaRequest__LabelsEntry *labels[] = {&tenant, &region};

	tenant.key = "tenant";
	tenant.value = "acme";
	region.key = "region";
	region.value = "eu-west-1";
	r.saga_name = "order-checkout";
	r.version = 7;
	r.input = BYTES("{\"order\":\"A-1001\",\"sku\":\"K\xc3\xa4se\",\"qty\":3}");
	r.idempotency_key = "checkout-A-1001";
	r.correlation_id = CORR_ID;
	r.deadline_unix_ms = INT64_C(1764303600000);
	r.n_labels = 2;
	r.labels = labels;
	r.traceparent = TRACEPAREN;
	return pack(&r.base);
}

/*
 * The v1 request as a newer writer sends it: that writer knows two more
 * fields, 99 (varint 300) and 100 (bytes "added in v2"), which it encodes
 * after the known ones, in field-number order.
 */
static struct vector
start_saga_request_future(void)
{
	static const uint8_t extra[] = {
	        0x98, 0x06, 0xac, 0x02, /* field 99, varint: 300 */
	        0xa2, 0x06, 0x0b,       /* field 100, length-prefixed: 11 bytes */
	        'a',  'd',  'd',  'e',  'd', ' ', 'i', 'n', ' ', 'v', '2',
	};
	struct vector v = start_saga_request_v1();
	uint8_t *data = realloc(v.data, v.len + sizeof(extra));

	if (data == NULL) {
		perror("make-golden");
		exit(1);
	}
	memcpy(data + v.len, extra, sizeof(extra));
	v.data = data;
	v.len += sizeof(extra);
	return v;
}

static struct vector
start_saga_response_v1(void)
{
	Saga__V1__StartSagaResponse r = SAGA__V1__START_SAGA_RESPONSE__INIT;

	r.status = SAGA__V1__START_SAGA_RESPONSE__STATUS__STATUS_DUPLICATE;
	r.saga_id = SAGA_ID;
	r.correlation_id = CORR_ID;
	r.saga_name = "order-checkout";
	r.version = 7;
	r.reject_code = SAGA__V1__START_SAGA_RESPONSE__REJECT_CODE__REJECT_CODE_OVERLOADED;
	r.reason = "2000 sagas in flight";
	r.retry_after_ms = 1500;
	r.accepted_unix_ms = INT64_C(1764300000123);
	return pack(&r.base);
}

static struct vector
step_output_v1(void)
{
	Saga__V1__StepOutput o = SAGA__V1__STEP_OUTPUT__INIT;

	o.step = "reserve-stock";
	o.output = BYTES("{\"reservation\":\"R-77\"}");
	return pack(&o.base);
}

static struct vector
step_command_v1(void)
{
	Saga__V1__StepCommand c = SAGA__V1__STEP_COMMAND__INIT;
	Saga__V1__StepOutput reserve = SAGA__V1__STEP_OUTPUT__INIT;
	Saga__V1__StepOutput charge = SAGA__V1__STEP_OUTPUT__INIT;
	Saga__V1__StepOutput *outputs[] = {&reserve, &charge};

	reserve.step = "reserve-stock";
	reserve.output = BYTES("{\"reservation\":\"R-77\"}");
	charge.step = "charge-card";
	charge.output = BYTES("\x00\xff\x01"
	                      "binary");
	c.saga_id = SAGA_ID;
	c.correlation_id = CORR_ID;
	c.saga_name = "order-checkout";
	c.saga_version = 7;
	c.step = "charge-card";
	c.phase = SAGA__V1__STEP_PHASE__STEP_PHASE_COMPENSATION;
	c.attempt = 3;
	c.idempotency_key = SAGA_ID "/charge-card/c";
	c.deadline_unix_ms = INT64_C(1764300030000);
	c.input = BYTES("{\"order\":\"A-1001\"}");
	c.n_outputs = 2;
	c.outputs = outputs;
	c.reply_subject = "saga.reply.payments.refund";
	c.sent_unix_ms = INT64_C(1764300000456);
	c.traceparent = TRACEPAREN;
	return pack(&c.base);
}

static struct vector
step_reply_v1(void)
{
	Saga__V1__StepReply r = SAGA__V1__STEP_REPLY__INIT;

	r.saga_id = SAGA_ID;
	r.correlation_id = CORR_ID;
	r.step = "charge-card";
	r.phase = SAGA__V1__STEP_PHASE__STEP_PHASE_ACTION;
	r.attempt = 2;
	r.idempotency_key = SAGA_ID "/charge-card/a";
	r.outcome = SAGA__V1__OUTCOME__OUTCOME_RETRYABLE_FAILURE;
	r.output = BYTES("{\"auth\":\"pending\"}");
	r.error_code = "card_declined";
	r.error_message = "Karte abgelehnt \xe2\x80\x93 bitte sp\xc3\xa4ter";
	r.participant = "payments-7f9c";
	r.completed_unix_ms = INT64_C(1764300001789);
	return pack(&r.base);
}

static struct vector
lifecycle_event_v1(void)
{
	Saga__V1__LifecycleEvent e = SAGA__V1__LIFECYCLE_EVENT__INIT;

	e.saga_id = SAGA_ID;
	e.correlation_id = CORR_ID;
	e.saga_name = "order-checkout";
	e.saga_version = 7;
	e.type = SAGA__V1__EVENT_TYPE__EVENT_TYPE_STEP_RETRYING;
	e.state = SAGA__V1__SAGA_STATE__SAGA_STATE_COMPENSATING;
	e.step = "charge-card";
	e.attempt = 2;
	e.reason = "timeout after 30000 ms";
	e.at_unix_ms = INT64_C(1764300031000);
	e.sequence = 42;
	e.traceparent = TRACEPAREN;
	e.idempotency_key = "checkout-A-1001";
	return pack(&e.base);
}

static struct vector
retry_policy_v1(void)
{
	Saga__V1__RetryPolicy p = SAGA__V1__RETRY_POLICY__INIT;

	p.max_attempts = 5;
	p.initial_backoff_ms = 250;
	p.max_backoff_ms = 60000;
	p.multiplier = 1.5;
	return pack(&p.base);
}

/* The two steps of the golden saga definition; retry policies from the caller. */
static void
fill_steps(Saga__V1__StepDefinition *charge, Saga__V1__StepDefinition *ship,
           Saga__V1__RetryPolicy *charge_retry, Saga__V1__RetryPolicy *charge_comp_retry,
           Saga__V1__RetryPolicy *ship_retry, Saga__V1__RetryPolicy *ship_comp_retry)
{
	charge_retry->max_attempts = 3;
	charge_retry->initial_backoff_ms = 200;
	charge_retry->max_backoff_ms = 30000;
	charge_retry->multiplier = 2.0;
	charge_comp_retry->max_attempts = 10;
	charge_comp_retry->initial_backoff_ms = 500;
	charge_comp_retry->max_backoff_ms = 120000;
	charge_comp_retry->multiplier = 3.0;
	ship_retry->max_attempts = 8;
	ship_retry->initial_backoff_ms = 1000;
	ship_retry->max_backoff_ms = 300000;
	ship_retry->multiplier = 1.25;
	ship_comp_retry->max_attempts = 2;
	ship_comp_retry->initial_backoff_ms = 50;
	ship_comp_retry->max_backoff_ms = 5000;
	ship_comp_retry->multiplier = 4.0;

	charge->name = "charge-card";
	charge->action_subject = "payments.charge";
	charge->compensation_subject = "payments.refund";
	charge->kind = SAGA__V1__STEP_KIND__STEP_KIND_PIVOT;
	charge->timeout_ms = 45000;
	charge->retry = charge_retry;
	charge->compensation_retry = charge_comp_retry;
	charge->group = "pay";

	ship->name = "ship-order";
	ship->action_subject = "shipping.create";
	ship->compensation_subject = "shipping.cancel";
	ship->kind = SAGA__V1__STEP_KIND__STEP_KIND_RETRIABLE;
	ship->timeout_ms = 120000;
	ship->retry = ship_retry;
	ship->compensation_retry = ship_comp_retry;
	ship->group = "fulfil";
}

static struct vector
step_definition_v1(void)
{
	Saga__V1__StepDefinition charge = SAGA__V1__STEP_DEFINITION__INIT;
	Saga__V1__StepDefinition ship = SAGA__V1__STEP_DEFINITION__INIT;
	Saga__V1__RetryPolicy p[4] = {SAGA__V1__RETRY_POLICY__INIT, SAGA__V1__RETRY_POLICY__INIT,
	                              SAGA__V1__RETRY_POLICY__INIT, SAGA__V1__RETRY_POLICY__INIT};

	fill_steps(&charge, &ship, &p[0], &p[1], &p[2], &p[3]);
	return pack(&charge.base);
}

/* The golden saga definition, shared by its own vector and DefineRequest's. */
static struct vector
pack_saga_definition(int wrapped)
{
	Saga__V1__SagaDefinition d = SAGA__V1__SAGA_DEFINITION__INIT;
	Saga__V1__DefineRequest req = SAGA__V1__DEFINE_REQUEST__INIT;
	Saga__V1__StepDefinition charge = SAGA__V1__STEP_DEFINITION__INIT;
	Saga__V1__StepDefinition ship = SAGA__V1__STEP_DEFINITION__INIT;
	Saga__V1__StepDefinition *steps[] = {&charge, &ship};
	Saga__V1__RetryPolicy p[4] = {SAGA__V1__RETRY_POLICY__INIT, SAGA__V1__RETRY_POLICY__INIT,
	                              SAGA__V1__RETRY_POLICY__INIT, SAGA__V1__RETRY_POLICY__INIT};

	fill_steps(&charge, &ship, &p[0], &p[1], &p[2], &p[3]);
	d.name = "order-checkout";
	d.version = 7;
	d.description = "Checkout: charge the card, then ship";
	d.n_steps = 2;
	d.steps = steps;
	d.deadline_ms = 86400000;
	req.definition = &d;
	return wrapped ? pack(&req.base) : pack(&d.base);
}

static struct vector
saga_definition_v1(void)
{
	return pack_saga_definition(0);
}

static struct vector
define_request_v1(void)
{
	return pack_saga_definition(1);
}

static struct vector
define_response_v1(void)
{
	Saga__V1__DefineResponse r = SAGA__V1__DEFINE_RESPONSE__INIT;

	r.status = SAGA__V1__DEFINE_RESPONSE__STATUS__STATUS_REJECTED;
	r.name = "order-checkout";
	r.version = 7;
	r.error = "timeout_ms must be positive";
	r.field = "steps[1].timeout_ms";
	return pack(&r.base);
}

static struct vector
header_v1(void)
{
	Saga__V1__Header h = SAGA__V1__HEADER__INIT;

	h.name = "Nats-Msg-Id";
	h.value = CORR_ID "/start";
	return pack(&h.base);
}

static struct vector
dead_letter_v1(void)
{
	Saga__V1__DeadLetter d = SAGA__V1__DEAD_LETTER__INIT;
	Saga__V1__Header type = SAGA__V1__HEADER__INIT;
	Saga__V1__Header id = SAGA__V1__HEADER__INIT;
	Saga__V1__Header *headers[] = {&type, &id};

	type.name = "Content-Type";
	type.value = "application/x-protobuf; proto=saga.v1.StepReply";
	id.name = "Nats-Msg-Id";
	id.value = CORR_ID "/reply";
	d.id = "dl-000042";
	d.source_subject = "saga.reply.payments.charge";
	d.n_headers = 2;
	d.headers = headers;
	d.payload = BYTES("\x0a\xff\xfe\x00garbage");
	d.reason = "StepReply does not decode: truncated field 1";
	d.error_class = "decode";
	d.saga_id = SAGA_ID;
	d.correlation_id = CORR_ID;
	d.step = "charge-card";
	d.created_unix_ms = INT64_C(1764300002000);
	d.stream_sequence = "SAGA_REPLIES:1042";
	return pack(&d.base);
}

static const struct {
	const char *file;            /* name under the output folder */
	struct vector (*make)(void); /* builds the encoding */
} vectors[] = {
        {"start_saga_request.v1.bin", start_saga_request_v1},
        {"start_saga_request.future.bin", start_saga_request_future},
        {"start_saga_response.v1.bin", start_saga_response_v1},
        {"step_output.v1.bin", step_output_v1},
        {"step_command.v1.bin", step_command_v1},
        {"step_reply.v1.bin", step_reply_v1},
        {"lifecycle_event.v1.bin", lifecycle_event_v1},
        {"retry_policy.v1.bin", retry_policy_v1},
        {"step_definition.v1.bin", step_definition_v1},
        {"saga_definition.v1.bin", saga_definition_v1},
        {"define_request.v1.bin", define_request_v1},
        {"define_response.v1.bin", define_response_v1},
        {"header.v1.bin", header_v1},
        {"dead_letter.v1.bin", dead_letter_v1},
};

/* 0: written, 1: already there with the same bytes, -1: error (reported). */
static int
write_or_compare(const char *path, const struct vector *v)
{
	FILE *f = fopen(path, "rb");
	int rc = -1;

	if (f != NULL) {
		uint8_t *old = malloc(v->len + 1);
		size_t n = old != NULL ? fread(old, 1, v->len + 1, f) : 0;

		if (old != NULL && n == v->len && memcmp(old, v->data, n) == 0)
			rc = 1;
		else
			fprintf(stderr,
			        "make-golden: %s exists with other bytes: committed vectors never "
			        "change; add a new vector instead (proto/README.md)\n",
			        path);
		free(old);
		fclose(f);
		return rc;
	}
	if (errno != ENOENT) {
		fprintf(stderr, "make-golden: %s: %s\n", path, strerror(errno));
		return -1;
	}
	f = fopen(path, "wb");
	if (f == NULL) {
		fprintf(stderr, "make-golden: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fwrite(v->data, 1, v->len, f) == v->len)
		rc = 0;
	if (fclose(f) != 0)
		rc = -1;
	if (rc != 0)
		fprintf(stderr, "make-golden: cannot write %s\n", path);
	return rc;
}

int
main(int argc, char **argv)
{
	int failed = 0;

	if (argc != 2) {
		fprintf(stderr,
		        "usage: %s DIR   (writes missing vectors, e.g. tests/data/golden)\n",
		        argv[0]);
		return 2;
	}
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		char path[4096];
		struct vector v = vectors[i].make();
		int rc;

		snprintf(path, sizeof(path), "%s/%s", argv[1], vectors[i].file);
		rc = write_or_compare(path, &v);
		if (rc < 0)
			failed = 1;
		else
			printf("%-32s %4zu bytes  %s\n", vectors[i].file, v.len,
			       rc == 0 ? "written" : "unchanged");
		free(v.data);
	}
	return failed;
}

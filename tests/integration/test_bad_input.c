/*
 * Bad input on every subject sagad reads: the "unknown saga, unknown
 * definition, malformed protobuf, truncated message, oversized payload,
 * hostile ids" row of RELIABILITY.md's fault matrix, one table per input
 * (saga.start request/reply, saga.submit over JetStream, saga.define,
 * saga.reply over JetStream, HTTP POST /v1/sagas/{name}). Every case must end
 * in a clear error answer (code and text checked) or a dead letter with its
 * reason (I6); no message may appear on a subject built from a hostile value
 * (a core subscription to ">" sees every message the server routes); every
 * text sagad answers with is UTF-8 (strict protobuf readers refuse anything
 * else); and sagad must stay up and run a normal saga afterwards.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "definition.pb-c.h"
#include "event.pb-c.h"
#include "flow.h"
#include "harness.h"
#include "start.pb-c.h"
#include "step.pb-c.h"

/* sagad's max_payload in these tests, and the sizes just over its two limits. */
#define MAX_PAYLOAD    8192
#define OVER_INPUT     (MAX_PAYLOAD + 800)  /* input over max_payload, message under +4096 */
#define OVER_MESSAGE   (MAX_PAYLOAD + 8192) /* the whole message over max_payload + 4096 */
#define KEPT           (MAX_PAYLOAD + 4096) /* bytes a dead letter keeps of a larger message */
#define NATS_MAX       (1024 * 1024 - 160)  /* a body as large as nats-server carries (1 MiB) */
#define LONG_LEN       10240                /* a 10 KB id */
#define MAX_SEEN       8192                 /* subjects remembered */
#define MAX_MINE       1024                 /* subjects the test published on */
#define CASE_WAIT_MS   10000                /* how long one case may take to show its outcome */
#define HTTP_OUT       (64 * 1024)          /* largest HTTP answer read */
#define HTTP_REQ_MAX   (96 * 1024)          /* largest HTTP request built */
#define DL_CLASS_COUNT 5                    /* dead-letter classes known to the test */

static const char order_yaml[] = "name: order\n"
                                 "steps:\n"
                                 "  - name: reserve_stock\n"
                                 "    action: stock.reserve\n"
                                 "    compensation: stock.release\n"
                                 "    timeout: 30s\n"
                                 "  - name: charge_card\n"
                                 "    action: payments.charge\n"
                                 "    compensation: payments.refund\n"
                                 "    timeout: 30s\n"
                                 "  - name: ship\n"
                                 "    action: shipping.ship\n"
                                 "    timeout: 30s\n";

/* A hostile value for a text field, and which rules let it through. */
struct hostile {
	const char *label; /* for failure messages */
	const char *value; /* NULL: the 10 KB value */
	int key_ok;        /* an allowed idempotency key / correlation id ([A-Za-z0-9._:/+=@-]) */
	int subject_ok;    /* an allowed action subject (dot-separated names) */
};

static const struct hostile hostile[] = {
        {"a dot", "evil.x", 1, 1},
        {"a lone *", "*", 0, 0},
        {"a * inside", "evil*x", 0, 0},
        {"a lone >", ">", 0, 0},
        {"a > token", "evil.>", 0, 0},
        {"a space", "evil x", 0, 0},
        {"a CR", "evil\rx", 0, 0},
        {"a LF", "evil\nx", 0, 0},
        {"a NATS command after CR LF", "evil\r\nPUB evil.injected 2\r\nhi", 0, 0},
        {"a tab", "evil\tx", 0, 0},
        {"control characters", "evil\x01\x1b[2J\x7f", 0, 0},
        {"bytes that are not UTF-8", "evil\xff\xfe", 0, 0},
        {"10 KB", NULL, 0, 0},
};
#define N_HOSTILE ((int)(sizeof(hostile) / sizeof(hostile[0])))

/*
 * Subject tokens a NATS client can deliver to sagad at all. A space splits
 * the subject (the rest becomes the reply subject), CR or LF ends the
 * protocol line (the server drops the connection), and a 10 KB subject is
 * over the server's control-line limit: those never reach sagad by NATS, and
 * reach it through HTTP names and message fields instead (covered there).
 */
static const char *const hostile_tokens[] = {"*", ">", "evil*x", "evil\x01\x7f", "evil\xff"};
#define N_TOKENS ((int)(sizeof(hostile_tokens) / sizeof(hostile_tokens[0])))

static const char *const dl_classes[DL_CLASS_COUNT] = {"undecodable", "oversized", "unknown_saga",
                                                       "unknown_step", "max_deliver"};

static struct flow f;
static struct bus_sub *all;           /* core subscription to ">" */
static char *seen[MAX_SEEN];          /* subjects of the messages seen (not $JS / _INBOX) */
static int n_seen;                    /* how many */
static char *mine[MAX_MINE];          /* subjects the test itself published on */
static int n_mine;                    /* how many */
static char long_value[LONG_LEN + 1]; /* "evilevil..." */
static int sagad;                     /* child index of sagad */
static int cases;                     /* cases checked by the current test */

static const char *
hv(const struct hostile *h)
{
	return h->value != NULL ? h->value : long_value;
}

/* Printable form of a value for failure messages (first 40 bytes, escaped). */
static const char *
shown(const char *s)
{
	static char out[4][200];
	static int next;
	char *o = out[next++ % 4];
	size_t n = 0;

	for (size_t i = 0; s[i] != '\0' && i < 40 && n + 5 < sizeof(out[0]); i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c >= 0x7f)
			n += (size_t)snprintf(o + n, sizeof(out[0]) - n, "\\x%02x", c);
		else
			o[n++] = (char)c;
	}
	o[n] = '\0';
	return o;
}

static void
teardown(void)
{
	bus_unsubscribe(all);
	all = NULL;
	flow_teardown(&f);
	for (int i = 0; i < n_seen; i++)
		free(seen[i]);
	for (int i = 0; i < n_mine; i++)
		free(mine[i]);
	n_seen = n_mine = 0;
}

/* Remember one message's subject; system traffic is only checked for the marker. */
static void
record(const char *subject)
{
	if (strncmp(subject, "$JS.", 4) == 0 || strncmp(subject, "_INBOX.", 7) == 0) {
		cr_expect(strstr(subject, "injected") == NULL,
		          "system subject built from a hostile value: %s", shown(subject));
		return;
	}
	cr_assert_lt(n_seen, MAX_SEEN, "too many subjects seen");
	seen[n_seen++] = strdup(subject);
}

static void
note_mine(const char *subject)
{
	cr_assert_lt(n_mine, MAX_MINE);
	mine[n_mine++] = strdup(subject);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Next message whose subject starts with prefix within timeout_ms, or NULL; records all. */
static struct bus_msg *
watch_for(const char *prefix, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	struct bus_msg *m = NULL;

	/* Past the deadline, what is already queued is still read (without waiting). */
	for (int late = 0; late < 100000; late += now_ms() >= deadline) {
		int64_t left = deadline - now_ms();

		if (bus_next(all, left > 0 ? (int)left : 0, &m) != STATUS_OK)
			return NULL;
		record(bus_msg_subject(m));
		if (prefix != NULL && strncmp(bus_msg_subject(m), prefix, strlen(prefix)) == 0)
			return m;
		bus_msg_free(m);
	}
	return NULL;
}

/* The part of subject after "<prefix>.", or NULL when it is not one of the test's. */
static const char *
own_rest(const char *subject)
{
	size_t n = strlen(f.prefix);

	if (strncmp(subject, f.prefix, n) != 0 || subject[n] != '.')
		return NULL;
	return subject + n + 1;
}

static int
is_event_token(const char *t)
{
	static const char *const tokens[] = {
	        "started",       "step_succeeded", "step_failed",
	        "step_retrying", "compensating",   "compensation_succeeded",
	        "completed",     "compensated",    "failed",
	        "resolved",      "retried",        "rejected"};

	for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
		if (strcmp(t, tokens[i]) == 0)
			return 1;
	}
	return 0;
}

/*
 * Every subject sagad published on is one it builds from allow-listed parts:
 * a start it forwards from HTTP names a valid saga, commands go to the
 * definition's action subjects, events to <valid name>.<event>, dead letters
 * to a known class. Subjects the test sent itself are exempt; outside the
 * test's prefix, nothing may carry the hostile marker.
 */
static void
assert_no_injection(void)
{
	static const char *const commands[] = {"stock.reserve", "stock.release", "payments.charge",
	                                       "payments.refund", "shipping.ship"};

	watch_for(NULL, 300);
	for (int i = 0; i < n_seen; i++) {
		const char *s = seen[i];
		const char *rest = own_rest(s);
		int ours = 0, ok = 0;

		for (int k = 0; k < n_mine && !ours; k++)
			ours = strcmp(mine[k], s) == 0;
		if (ours)
			continue;
		if (rest == NULL) {
			/*
			 * Another test's (they run side by side), or one that escaped
			 * the prefix: a smuggled "PUB evil.injected", a hostile value
			 * as the first token, or this test's prefix further in.
			 */
			cr_expect(strstr(s, "injected") == NULL && strncmp(s, "evil", 4) != 0 &&
			                  strstr(s, f.prefix) == NULL,
			          "a subject built from a hostile value: %s", shown(s));
			continue;
		}
		if (strncmp(rest, "start.", 6) == 0) {
			ok = saga_valid_name(rest + 6); /* HTTP starts forwarded by sagad */
		} else if (strncmp(rest, "cmd.", 4) == 0) {
			for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
				ok |= strcmp(rest + 4, commands[k]) == 0;
		} else if (strncmp(rest, "event.", 6) == 0) {
			char name[SAGA_NAME_MAX + 2];
			const char *dot = strchr(rest + 6, '.');
			size_t n = dot != NULL ? (size_t)(dot - rest - 6) : 0;

			if (dot != NULL && n < sizeof(name)) {
				memcpy(name, rest + 6, n);
				name[n] = '\0';
				ok = saga_valid_name(name) && is_event_token(dot + 1);
			}
		} else if (strncmp(rest, "dlq.", 4) == 0) {
			for (int k = 0; k < DL_CLASS_COUNT; k++)
				ok |= strcmp(rest + 4, dl_classes[k]) == 0;
		} else if (strncmp(rest, "reply.", 6) == 0) {
			ok = saga_valid_subject(rest + 6); /* participants answering commands */
		}
		cr_expect(ok, "sagad published on a subject it must not build: %s", shown(s));
	}
}

/* The test's sagad with a small max_payload, a ">" watch, and the order saga. */
static void
setup(const char *tag)
{
	static const char *const small[] = {"SAGAD_MAX_PAYLOAD=8KiB", NULL};
	char err[256];

	if (long_value[0] == '\0') {
		for (int i = 0; i < LONG_LEN; i++)
			long_value[i] = "evil"[i % 4];
	}
	cases = 0;
	flow_setup(&f, tag);
	cr_assert_eq(bus_subscribe(f.bus, ">", NULL, &all, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert_eq(flow_define(&f, order_yaml), 1);
	sagad = flow_start_sagad(&f, small);
}

/* sagad is still the same process, answers, and runs a normal saga to the end. */
static void
assert_still_serving(void)
{
	struct start_answer a;
	char sql[160];

	cr_assert_eq(harness_wait(f.procs[sagad], 0), -1, "sagad died");
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	cr_assert_eq(
	        flow_start_saga(&f, "order", "{\"after\":\"bad input\"}", "after-bad-input", &a),
	        STATUS_OK);
	cr_assert_eq(a.status, START_ACCEPTED, "%s", a.reason);
	snprintf(sql, sizeof(sql), "SELECT state FROM saga_instance WHERE id = '%s'", a.saga_id);
	for (int i = 0; i < 300 && strcmp(flow_sql(&f, sql), "completed") != 0; i++)
		usleep(100 * 1000);
	cr_assert_str_eq(flow_sql(&f, sql), "completed", "a normal saga after the bad input");
	cr_assert_eq(harness_wait(f.procs[sagad], 0), -1, "sagad died");
}

/* ---- message builders ---- */

static struct bytes
copy_bytes(const void *data, size_t len)
{
	struct bytes b = {malloc(len > 0 ? len : 1), len};

	cr_assert_not_null(b.data);
	if (len > 0)
		memcpy(b.data, data, len);
	return b;
}

/* An input of n bytes that is valid JSON: {"pad":"xxxx..."}. */
static struct bytes
json_input(size_t n)
{
	struct bytes b = {malloc(n + 1), n};

	cr_assert(n >= 12);
	memset(b.data, 'x', n);
	memcpy(b.data, "{\"pad\":\"", 8);
	memcpy(b.data + n - 2, "\"}", 2);
	b.data[n] = '\0';
	return b;
}

static struct bytes
start_body(const char *saga_name, uint32_t version, const char *key, const char *corr,
           size_t input_len)
{
	struct bytes input = input_len > 0 ? json_input(input_len) : (struct bytes){NULL, 0};
	struct bytes out = {0};

	cr_assert_eq(codec_encode_start_request(saga_name, version, input, key, corr, &out),
	             STATUS_OK);
	free(input.data);
	return out;
}

/* A StepReply with any field values (the codec's encoder takes fixed-size ids). */
static struct bytes
reply_body(const char *saga_id, const char *corr, const char *step, const char *key,
           size_t output_len)
{
	Saga__V1__StepReply m = SAGA__V1__STEP_REPLY__INIT;
	struct bytes output = output_len > 0 ? json_input(output_len) : (struct bytes){NULL, 0};
	struct bytes out;

	m.saga_id = (char *)saga_id;
	m.correlation_id = (char *)corr;
	m.step = (char *)step;
	m.phase = SAGA__V1__STEP_PHASE__STEP_PHASE_ACTION;
	m.attempt = 1;
	m.idempotency_key = (char *)key;
	m.outcome = SAGA__V1__OUTCOME__OUTCOME_SUCCESS;
	m.output.data = output.data;
	m.output.len = output.len;
	m.participant = (char *)"test_bad_input";
	out.len = protobuf_c_message_get_packed_size(&m.base);
	out.data = malloc(out.len + 1);
	protobuf_c_message_pack(&m.base, out.data);
	free(output.data);
	return out;
}

/* A DefineRequest of one step whose fields are given as they are. */
static struct bytes
define_body(const char *name, const char *description, const char *step, const char *action,
            const char *compensation, const char *group, int kind, int n_steps)
{
	Saga__V1__DefineRequest r = SAGA__V1__DEFINE_REQUEST__INIT;
	Saga__V1__SagaDefinition d = SAGA__V1__SAGA_DEFINITION__INIT;
	Saga__V1__StepDefinition s = SAGA__V1__STEP_DEFINITION__INIT;
	Saga__V1__StepDefinition *steps[40];
	struct bytes out;

	cr_assert_leq(n_steps, 40);
	s.name = (char *)step;
	s.action_subject = (char *)action;
	s.compensation_subject = (char *)compensation;
	s.group = (char *)group;
	s.kind = (Saga__V1__StepKind)kind;
	for (int i = 0; i < n_steps; i++)
		steps[i] = &s;
	d.name = (char *)name;
	d.description = (char *)description;
	d.n_steps = (size_t)n_steps;
	d.steps = steps;
	r.definition = &d;
	out.len = protobuf_c_message_get_packed_size(&r.base);
	out.data = malloc(out.len + 1);
	protobuf_c_message_pack(&r.base, out.data);
	return out;
}

/* b without its last byte: the last (length-delimited) field now claims more than is left. */
static struct bytes
truncated(struct bytes b)
{
	cr_assert_gt(b.len, 2);
	b.len--;
	return b;
}

static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0x07, 'x'};
static const char not_protobuf[] = "this is not a protobuf message at all";

/* ---- saga.start (request/reply) ---- */

/* Every string of a StartSagaResponse must be UTF-8 (a Go or Java client refuses it otherwise). */
static void
expect_utf8_start_answer(const char *label, const uint8_t *data, size_t len)
{
	Saga__V1__StartSagaResponse *m = saga__v1__start_saga_response__unpack(NULL, len, data);
	const char *texts[4];

	cr_assert_not_null(m, "%s: the answer is not a StartSagaResponse", label);
	texts[0] = m->saga_id;
	texts[1] = m->correlation_id;
	texts[2] = m->saga_name;
	texts[3] = m->reason;
	for (int i = 0; i < 4; i++)
		cr_expect(saga_utf8_valid(texts[i], strlen(texts[i])),
		          "%s: answer text is not UTF-8: %s", label, shown(texts[i]));
	saga__v1__start_saga_response__free_unpacked(m, NULL);
}

/*
 * Send body as a start request on <prefix>.start.<token>; the answer must be
 * want (and for a rejection: code and a reason containing text). Takes body.
 */
static void
expect_start(const char *label, const char *token, struct bytes body, enum start_status want,
             enum start_reject want_reject, const char *text, const char *want_corr)
{
	struct bus_msg *reply = NULL;
	struct start_answer a;
	char subject[512], err[512];
	enum status st;

	cases++;
	snprintf(subject, sizeof(subject), "%s.start.%s", f.prefix, token);
	note_mine(subject);
	st = bus_request(f.bus, subject, NULL, 0, body.data, body.len, 10000, &reply, err,
	                 sizeof(err));
	free(body.data);
	cr_expect_eq(st, STATUS_OK, "%s: no answer (%s: %s)", label, status_name(st), err);
	if (st != STATUS_OK)
		return;
	expect_utf8_start_answer(label, bus_msg_data(reply), bus_msg_len(reply));
	st = codec_decode_start_answer(bus_msg_data(reply), bus_msg_len(reply), &a, err,
	                               sizeof(err));
	bus_msg_free(reply);
	cr_assert_eq(st, STATUS_OK, "%s: %s", label, err);
	cr_expect_eq(a.status, want, "%s: status %d, want %d (reason: %s)", label, a.status, want,
	             a.reason);
	if (want == START_REJECTED) {
		cr_expect_eq(a.reject, want_reject, "%s: reject code %d, want %d (%s)", label,
		             a.reject, want_reject, a.reason);
		cr_expect(strstr(a.reason, text) != NULL, "%s: reason \"%s\" does not say \"%s\"",
		          label, a.reason, text);
		cr_expect_str_empty(a.saga_id, "%s: a rejected start has no saga id", label);
	} else {
		cr_expect(codec_valid_uuid(a.saga_id), "%s: accepted without a saga id", label);
		if (want_corr != NULL)
			cr_expect_str_eq(a.correlation_id, want_corr, "%s", label);
	}
}

TestSuite(bad_input, .fini = teardown, .timeout = 180);

Test(bad_input, every_bad_start_request_gets_a_clear_rejection)
{
	int accepted = 0;

	setup("t_bad_start");
	expect_start("garbage bytes", "order", copy_bytes(garbage, sizeof(garbage)), START_REJECTED,
	             REJECT_INVALID, "not a valid protobuf encoding", NULL);
	expect_start("text instead of protobuf", "order",
	             copy_bytes(not_protobuf, strlen(not_protobuf)), START_REJECTED, REJECT_INVALID,
	             "not a valid protobuf encoding", NULL);
	{
		struct bytes whole = start_body("order", 0, "trunc-key", "trunc-correlation", 64);
		struct start_msg probe;
		char err[256];

		/* The precondition: cut by one byte, it no longer decodes. */
		cr_assert_neq(codec_decode_start(whole.data, whole.len - 1, 1 << 20, &probe, err,
		                                 sizeof(err)),
		              STATUS_OK);
		expect_start("a truncated request", "order", truncated(whole), START_REJECTED,
		             REJECT_INVALID, "not a valid protobuf encoding", NULL);
	}
	expect_start("an input over max_payload", "order",
	             start_body("", 0, NULL, NULL, OVER_INPUT), START_REJECTED, REJECT_INVALID,
	             "over the 8192 byte limit", NULL);
	expect_start("a message over max_payload + 4 KiB", "order",
	             start_body("", 0, NULL, NULL, OVER_MESSAGE), START_REJECTED, REJECT_INVALID,
	             "over the 12288 byte limit", NULL);
	/* An empty body is the empty StartSagaRequest: the subject names the saga, no input. */
	expect_start("an empty body", "order", (struct bytes){NULL, 0}, START_ACCEPTED, REJECT_NONE,
	             NULL, NULL);
	accepted++;
	expect_start("an unknown saga", "nope", start_body("", 0, NULL, NULL, 0), START_REJECTED,
	             REJECT_UNKNOWN_SAGA, "no saga definition nope", NULL);
	expect_start("an unknown definition version", "order",
	             start_body("order", 99, NULL, NULL, 0), START_REJECTED, REJECT_UNKNOWN_SAGA,
	             "no saga definition order version 99", NULL);
	expect_start("a body naming another saga than the subject", "order",
	             start_body("nope", 0, NULL, NULL, 0), START_REJECTED, REJECT_INVALID,
	             "does not match the subject's saga", NULL);
	for (int i = 0; i < N_HOSTILE; i++) {
		const struct hostile *h = &hostile[i];
		char label[128], key[64];

		snprintf(label, sizeof(label), "saga_name with %s", h->label);
		expect_start(label, "order", start_body(hv(h), 0, NULL, NULL, 0), START_REJECTED,
		             REJECT_INVALID, "saga_name: use 1-64 of [A-Za-z0-9_-]", NULL);
		snprintf(label, sizeof(label), "idempotency_key with %s", h->label);
		expect_start(label, "order", start_body("", 0, hv(h), NULL, 0),
		             h->key_ok ? START_ACCEPTED : START_REJECTED, REJECT_INVALID,
		             "idempotency_key: use 1-128 of", NULL);
		accepted += h->key_ok;
		snprintf(label, sizeof(label), "correlation_id with %s", h->label);
		snprintf(key, sizeof(key), "corr-case-%d", i);
		expect_start(label, "order", start_body("", 0, key, hv(h), 0),
		             h->key_ok ? START_ACCEPTED : START_REJECTED, REJECT_INVALID,
		             "correlation_id: use 1-128 of", hv(h));
		accepted += h->key_ok;
	}
	for (int i = 0; i < N_TOKENS; i++) {
		char label[128];

		snprintf(label, sizeof(label), "subject token %s", shown(hostile_tokens[i]));
		expect_start(label, hostile_tokens[i], start_body("", 0, NULL, NULL, 0),
		             START_REJECTED, REJECT_INVALID, "no saga name in request or subject",
		             NULL);
		snprintf(label, sizeof(label), "subject token %s, body naming order",
		         shown(hostile_tokens[i]));
		expect_start(label, hostile_tokens[i], start_body("order", 0, NULL, NULL, 0),
		             START_REJECTED, REJECT_INVALID, "does not match the subject's saga",
		             NULL);
	}
	cr_expect_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), accepted,
	             "a rejected start leaves nothing behind");
	cr_expect_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"), 0,
	             "a request/reply start is answered, not dead-lettered");
	assert_still_serving();
	assert_no_injection();
	cr_log_info("%d start cases", cases);
}

/* ---- JetStream inputs: saga.submit and saga.reply ---- */

static int n_published; /* Nats-Msg-Id counter: every case is a new message */

static void
js_publish(const char *subject, const struct bus_header *h, int nh, struct bytes body)
{
	char err[512], msg_id[64];
	int failed = 0;

	snprintf(msg_id, sizeof(msg_id), "bad-input-%d", ++n_published);
	note_mine(subject);
	cr_assert_eq(bus_publish_async(f.bus, subject, msg_id, h, nh, body.data, body.len, err,
	                               sizeof(err)),
	             STATUS_OK, "%s", err);
	cr_assert_eq(bus_publish_wait(f.bus, 10000, &failed, err, sizeof(err)), STATUS_OK, "%s",
	             err);
	cr_assert_eq(failed, 0, "JetStream refused the publish on %s", shown(subject));
}

/* Hex of b (malloc'd), for matching a dead letter's payload in SQL. */
static char *
hex_of(struct bytes b)
{
	char *h = malloc(2 * b.len + 1);

	cr_assert_not_null(h);
	for (size_t i = 0; i < b.len; i++)
		snprintf(h + 2 * i, 3, "%02x", b.data[i]);
	h[2 * b.len] = '\0';
	return h;
}

/*
 * The one dead letter holding exactly body's bytes (the first KEPT of a
 * larger body, saying so): it must exist once, open, with class, a reason
 * containing text and the subject it came from (source: its first
 * characters), and its copy must appear on <prefix>.dlq.<class>.
 */
static void
expect_dead_letter(const char *label, struct bytes body, const char *class, const char *text,
                   const char *source)
{
	struct bytes kept = {body.data, body.len < KEPT ? body.len : KEPT};
	char *hex = hex_of(kept);
	size_t len = strlen(hex) + 512;
	char *sql = malloc(len);
	char want[256];
	struct bus_msg *m;
	long n = 0;

	cr_assert_not_null(sql);
	snprintf(sql, len, "SELECT count(*) FROM saga_dead_letter WHERE payload = '\\x%s'", hex);
	for (int waited = 0; waited < CASE_WAIT_MS && n == 0; waited += 20) {
		n = flow_sql_long(&f, sql);
		if (n == 0)
			usleep(20 * 1000);
	}
	cr_expect_eq(n, 1, "%s: %ld dead letters for the message, want exactly 1", label, n);
	if (n == 1) {
		snprintf(sql, len,
		         "SELECT error_class || '|' || reason || '|' || status || '|'"
		         " || (left(source_subject, %zu) = '%s') FROM saga_dead_letter"
		         " WHERE payload = '\\x%s'",
		         strlen(source), source, hex);
		snprintf(want, sizeof(want), "%s|", class);
		{
			const char *row = flow_sql(&f, sql);

			cr_expect(strncmp(row, want, strlen(want)) == 0 &&
			                  strstr(row, text) != NULL &&
			                  strstr(row, "|open|t") != NULL &&
			                  (body.len <= KEPT ||
			                   strstr(row, "(first 12288 bytes kept)") != NULL),
			          "%s: dead letter \"%s\", want class %s, \"%s\", open, from %s",
			          label, row, class, text, source);
		}
		snprintf(want, sizeof(want), "%s.dlq.", f.prefix);
		m = watch_for(want, CASE_WAIT_MS);
		cr_expect_not_null(m, "%s: nothing on %s", label, want);
		if (m != NULL) {
			snprintf(want, sizeof(want), "%s.dlq.%s", f.prefix, class);
			cr_expect_str_eq(bus_msg_subject(m), want, "%s", label);
			bus_msg_free(m);
		}
	}
	free(sql);
	free(hex);
}

/* I6: one dead letter per message (source key = stream and sequence), never two. */
static void
expect_each_dead_letter_once(void)
{
	cr_expect_eq(flow_sql_long(&f, "SELECT count(*) - count(DISTINCT source_key)"
	                               " FROM saga_dead_letter"),
	             0, "a message dead-lettered twice (I6)");
	cr_expect_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"
	                               " WHERE source_key IS NULL"),
	             0, "a message dead letter without its stream sequence");
}

static void
expect_reply_dead(const char *label, const char *token, const struct bus_header *h, int nh,
                  struct bytes body, const char *class, const char *text)
{
	char subject[512];

	cases++;
	snprintf(subject, sizeof(subject), "%s.reply.%s", f.prefix, token);
	js_publish(subject, h, nh, body);
	snprintf(subject, sizeof(subject), "%s.reply.", f.prefix);
	expect_dead_letter(label, body, class, text, subject);
	free(body.data);
}

Test(bad_input, every_bad_reply_becomes_one_dead_letter_with_its_reason)
{
	static const char unknown_id[] = "00000000-0000-4000-8000-00000000dead";
	struct start_answer waiting;
	struct bus_consumer_stats cs;
	char sql[256], err[256];

	setup("t_bad_reply");
	/* A saga waiting for its first reply: no participant runs yet. */
	cr_assert_eq(flow_start_saga(&f, "order", "{}", "waiting", &waiting), STATUS_OK);
	cr_assert_eq(waiting.status, START_ACCEPTED);

	expect_reply_dead("garbage bytes", "stock.reserve", NULL, 0,
	                  copy_bytes(garbage, sizeof(garbage)), "undecodable",
	                  "StepReply: not a valid protobuf encoding");
	expect_reply_dead("text instead of protobuf", "stock.reserve", NULL, 0,
	                  copy_bytes(not_protobuf, strlen(not_protobuf)), "undecodable",
	                  "StepReply: not a valid protobuf encoding");
	{
		struct bytes whole = reply_body(waiting.saga_id, "", "reserve_stock", "k", 0);
		struct reply_msg probe;

		cr_assert_neq(codec_decode_reply(whole.data, whole.len - 1, 1 << 20, &probe, err,
		                                 sizeof(err)),
		              STATUS_OK);
		expect_reply_dead("a truncated reply", "stock.reserve", NULL, 0, truncated(whole),
		                  "undecodable", "StepReply: not a valid protobuf encoding");
	}
	expect_reply_dead("an output over max_payload", "stock.reserve", NULL, 0,
	                  reply_body(waiting.saga_id, "", "reserve_stock", "", OVER_INPUT),
	                  "oversized", "over the 8192 byte limit");
	expect_reply_dead("a reply over max_payload + 4 KiB", "stock.reserve", NULL, 0,
	                  reply_body(waiting.saga_id, "", "reserve_stock", "", OVER_MESSAGE),
	                  "oversized", "over the 12288 byte limit");
	expect_reply_dead("an empty body", "stock.reserve", NULL, 0, (struct bytes){NULL, 0},
	                  "undecodable", "StepReply.saga_id: not a saga id");
	expect_reply_dead("an unknown saga", "stock.reserve", NULL, 0,
	                  reply_body(unknown_id, "", "reserve_stock", "", 0), "unknown_saga",
	                  "no saga with this id");
	expect_reply_dead("an unknown step", "stock.reserve", NULL, 0,
	                  reply_body(waiting.saga_id, "", "no_such_step", "", 0), "unknown_step",
	                  "the saga's definition has no such step");
	for (int i = 0; i < N_HOSTILE; i++) {
		const struct hostile *h = &hostile[i];
		char label[128];

		snprintf(label, sizeof(label), "saga_id with %s", h->label);
		expect_reply_dead(label, "stock.reserve", NULL, 0,
		                  reply_body(hv(h), "", "reserve_stock", "", 0), "undecodable",
		                  "StepReply.saga_id: not a saga id");
		snprintf(label, sizeof(label), "step with %s", h->label);
		expect_reply_dead(label, "stock.reserve", NULL, 0,
		                  reply_body(waiting.saga_id, "", hv(h), "", 0), "undecodable",
		                  "StepReply.step: not a valid step name");
		snprintf(label, sizeof(label), "correlation_id with %s", h->label);
		expect_reply_dead(label, "stock.reserve", NULL, 0,
		                  reply_body(unknown_id, hv(h), "reserve_stock", "", 0),
		                  h->key_ok ? "unknown_saga" : "undecodable",
		                  h->key_ok ? "no saga with this id"
		                            : "StepReply.correlation_id: invalid characters");
		/* sagad dedupes replies by state, never by the key: it is not read at all. */
		snprintf(label, sizeof(label), "idempotency_key with %s", h->label);
		expect_reply_dead(label, "stock.reserve", NULL, 0,
		                  reply_body(unknown_id, "", "reserve_stock", hv(h), 0),
		                  "unknown_saga", "no saga with this id");
	}
	for (int i = 0; i < N_TOKENS; i++) {
		char label[128], corr[32];

		snprintf(label, sizeof(label), "subject token %s", shown(hostile_tokens[i]));
		snprintf(corr, sizeof(corr), "token-%d", i);
		expect_reply_dead(label, hostile_tokens[i], NULL, 0,
		                  reply_body(unknown_id, corr, "reserve_stock", "", 0),
		                  "unknown_saga", "no saga with this id");
	}
	/*
	 * As large as NATS carries: whole, its dead letter (bytes, headers, reason)
	 * would not fit a message, and the outbox relay would retry it for good,
	 * holding up every command behind it.
	 */
	expect_reply_dead("a reply as large as NATS carries", "stock.reserve", NULL, 0,
	                  reply_body(waiting.saga_id, "", "reserve_stock", "", NATS_MAX),
	                  "oversized", "over the 12288 byte limit");
	{
		/* Headers end up in the dead letter's jsonb: bytes that are not UTF-8, cut ones too. */
		static char wide[6001];
		struct bus_header bad_utf8[1] = {{"X-Evil", "evil\xff\xfe"}};
		struct bus_header cut[1] = {{"X-Wide", wide}};

		for (int i = 0; i + 2 <= 6000; i += 2)
			memcpy(wide + i, "\xc3\xa9", 2); /* é: a 2-byte character */
		expect_reply_dead("a header value that is not UTF-8", "stock.reserve", bad_utf8, 1,
		                  copy_bytes("evil-header", 11), "undecodable",
		                  "StepReply: not a valid protobuf encoding");
		expect_reply_dead("a 6 KB header of 2-byte characters", "stock.reserve", cut, 1,
		                  copy_bytes("wide-header", 11), "undecodable",
		                  "StepReply: not a valid protobuf encoding");
	}
	expect_each_dead_letter_once();
	cr_expect_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"), cases,
	             "one dead letter per bad reply");
	{
		/* Counted once each where operators alert: sagad_dead_letters_total. */
		static char metrics[1 << 16];
		char want[96];

		cr_assert_eq(flow_http(flow_http_port(&f, sagad), "GET", "/metrics", NULL, NULL,
		                       metrics, sizeof(metrics)),
		             200);
		snprintf(want, sizeof(want), "\nsagad_dead_letters_total %d\n", cases);
		cr_expect(strstr(metrics, want) != NULL, "no \"%s\" in\n%s", want + 1, metrics);
	}
	/* Each one was terminated in its stream: nothing waits for a redelivery. */
	cr_assert_eq(bus_consumer_stats(f.bus, BUS_STREAM_REPLY, &cs, err, sizeof(err)), STATUS_OK);
	cr_expect_eq(cs.num_pending, 0);
	cr_expect_eq(cs.num_ack_pending, 0);
	/* And none of it moved the saga that waits. */
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM saga_transition WHERE saga_id = '%s' AND event = 'reply'",
	         waiting.saga_id);
	cr_expect_eq(flow_sql_long(&f, sql), 0, "a bad reply reached the waiting saga");
	snprintf(sql, sizeof(sql),
	         "SELECT i.state || '/' || s.state FROM saga_instance i JOIN saga_step s"
	         " ON s.saga_id = i.id WHERE i.id = '%s' AND s.name = 'reserve_stock'",
	         waiting.saga_id);
	cr_expect_str_eq(flow_sql(&f, sql), "running/running");
	assert_still_serving();
	snprintf(sql, sizeof(sql), "SELECT state FROM saga_instance WHERE id = '%s'",
	         waiting.saga_id);
	for (int i = 0; i < 100 && strcmp(flow_sql(&f, sql), "completed") != 0; i++)
		usleep(100 * 1000);
	cr_expect_str_eq(flow_sql(&f, sql), "completed", "the waiting saga goes on");
	flow_assert_invariants(&f, NULL, 0);
	assert_no_injection();
	cr_log_info("%d reply cases", cases);
}

/*
 * Publish body on <prefix>.submit.<token>; the outcome is a lifecycle event on
 * <prefix>.event.<name>.<event> (with a reason containing text when
 * rejected) and, when class is given, one dead letter with the raw message.
 */
static void
expect_submit(const char *label, const char *token, struct bytes body, const char *name,
              const char *event, const char *text, const char *class)
{
	char subject[512], want[512];
	struct bus_msg *m;

	cases++;
	snprintf(subject, sizeof(subject), "%s.submit.%s", f.prefix, token);
	js_publish(subject, NULL, 0, body);
	/* Its answer is a rejected or a started event; sagas started earlier move on meanwhile. */
	snprintf(want, sizeof(want), "%s.event.", f.prefix);
	for (int64_t deadline = now_ms() + CASE_WAIT_MS;; bus_msg_free(m)) {
		const char *dot;

		m = watch_for(want, (int)(deadline - now_ms()));
		dot = m != NULL ? strrchr(bus_msg_subject(m), '.') : NULL;
		if (m == NULL || strcmp(dot, ".rejected") == 0 || strcmp(dot, ".started") == 0)
			break;
	}
	cr_expect_not_null(m, "%s: no lifecycle event", label);
	if (m != NULL) {
		Saga__V1__LifecycleEvent *e =
		        saga__v1__lifecycle_event__unpack(NULL, bus_msg_len(m), bus_msg_data(m));

		snprintf(want, sizeof(want), "%s.event.%s.%s", f.prefix, name, event);
		cr_expect_str_eq(bus_msg_subject(m), want, "%s", label);
		cr_assert_not_null(e, "%s: not a LifecycleEvent", label);
		cr_expect(saga_utf8_valid(e->reason, strlen(e->reason)) &&
		                  saga_utf8_valid(e->saga_name, strlen(e->saga_name)) &&
		                  saga_utf8_valid(e->idempotency_key, strlen(e->idempotency_key)),
		          "%s: event text is not UTF-8", label);
		if (strcmp(event, "rejected") == 0) {
			cr_expect_eq(e->type, SAGA__V1__EVENT_TYPE__EVENT_TYPE_REJECTED, "%s",
			             label);
			cr_expect(strstr(e->reason, text) != NULL,
			          "%s: reason \"%s\" does not say \"%s\"", label, e->reason, text);
			cr_expect_str_empty(e->saga_id, "%s", label);
		} else {
			cr_expect(codec_valid_uuid(e->saga_id), "%s", label);
		}
		saga__v1__lifecycle_event__free_unpacked(e, NULL);
		bus_msg_free(m);
	}
	if (class != NULL) {
		snprintf(want, sizeof(want), "%s.submit.", f.prefix);
		expect_dead_letter(label, body, class, text, want);
	}
	free(body.data);
}

Test(bad_input, every_bad_submit_is_rejected_with_an_event_and_kept_as_a_dead_letter)
{
	struct bus_consumer_stats cs;
	char err[256];
	int accepted = 0, dead = 0;

	setup("t_bad_submit");
	expect_submit("garbage bytes", "order", copy_bytes(garbage, sizeof(garbage)), "unknown",
	              "rejected", "not a valid protobuf encoding", "undecodable");
	dead++;
	{
		struct bytes whole = start_body("order", 0, "trunc-key", "trunc-correlation", 64);

		expect_submit("a truncated submit", "order", truncated(whole), "unknown",
		              "rejected", "not a valid protobuf encoding", "undecodable");
		dead++;
	}
	expect_submit("an input over max_payload", "order",
	              start_body("", 0, NULL, NULL, OVER_INPUT), "unknown", "rejected",
	              "over the 8192 byte limit", "oversized");
	expect_submit("a message over max_payload + 4 KiB", "order",
	              start_body("", 0, NULL, NULL, OVER_MESSAGE), "unknown", "rejected",
	              "over the 12288 byte limit", "oversized");
	expect_submit("a message as large as NATS carries", "order",
	              start_body("", 0, NULL, NULL, NATS_MAX), "unknown", "rejected",
	              "over the 12288 byte limit", "oversized");
	dead += 3;
	expect_submit("an empty body", "order", (struct bytes){NULL, 0}, "order", "started", NULL,
	              NULL);
	accepted++;
	/* Unknown sagas are kept too: after the definition is registered, a replay starts them. */
	expect_submit("an unknown saga", "nope", start_body("", 0, NULL, "unknown-saga", 0), "nope",
	              "rejected", "no saga definition nope", "unknown_saga");
	expect_submit("an unknown definition version", "order",
	              start_body("order", 99, NULL, "unknown-version", 0), "order", "rejected",
	              "no saga definition order version 99", "unknown_saga");
	dead += 2;
	expect_submit("a body naming another saga than the subject", "order",
	              start_body("nope", 0, NULL, "other-saga", 0), "nope", "rejected",
	              "does not match the subject's saga", "undecodable");
	expect_submit("a subject with two tokens after submit", "evil.order",
	              start_body("", 0, NULL, "two-tokens", 0), "unknown", "rejected",
	              "one saga name token after", "undecodable");
	dead += 2;
	for (int i = 0; i < N_HOSTILE; i++) {
		const struct hostile *h = &hostile[i];
		char label[128], key[64];

		snprintf(label, sizeof(label), "saga_name with %s", h->label);
		expect_submit(label, "order", start_body(hv(h), 0, NULL, NULL, 0), "unknown",
		              "rejected", "saga_name: use 1-64 of [A-Za-z0-9_-]", "undecodable");
		dead++;
		snprintf(label, sizeof(label), "idempotency_key with %s", h->label);
		expect_submit(label, "order", start_body("", 0, hv(h), NULL, 0),
		              h->key_ok ? "order" : "unknown", h->key_ok ? "started" : "rejected",
		              "idempotency_key: use 1-128 of", h->key_ok ? NULL : "undecodable");
		snprintf(label, sizeof(label), "correlation_id with %s", h->label);
		snprintf(key, sizeof(key), "submit-corr-%d", i);
		expect_submit(label, "order", start_body("", 0, key, hv(h), 0),
		              h->key_ok ? "order" : "unknown", h->key_ok ? "started" : "rejected",
		              "correlation_id: use 1-128 of", h->key_ok ? NULL : "undecodable");
		accepted += 2 * h->key_ok;
		dead += 2 * !h->key_ok;
	}
	for (int i = 0; i < N_TOKENS; i++) {
		char label[128], corr[32];

		snprintf(label, sizeof(label), "subject token %s", shown(hostile_tokens[i]));
		snprintf(corr, sizeof(corr), "token-%d", i);
		expect_submit(label, hostile_tokens[i], start_body("", 0, NULL, corr, 0), "unknown",
		              "rejected", "no saga name in request or subject", "undecodable");
		dead++;
	}
	expect_each_dead_letter_once();
	cr_expect_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_dead_letter"), dead);
	cr_expect_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), accepted,
	             "a rejected submit leaves no saga");
	cr_assert_eq(bus_consumer_stats(f.bus, BUS_STREAM_SUBMIT, &cs, err, sizeof(err)),
	             STATUS_OK);
	cr_expect_eq(cs.num_pending, 0);
	cr_expect_eq(cs.num_ack_pending, 0, "every submit was acked");
	assert_still_serving();
	cr_expect(flow_wait_settled(&f, accepted + 1, 30000), "the accepted submits finish");
	flow_assert_invariants(&f, NULL, 0);
	assert_no_injection();
	cr_log_info("%d submit cases", cases);
}

/* ---- saga.define (request/reply) ---- */

static void
expect_define(const char *label, struct bytes body, int want, const char *field, const char *text)
{
	Saga__V1__DefineResponse *m;
	struct bus_msg *reply = NULL;
	char subject[256], err[512];
	enum status st;

	cases++;
	snprintf(subject, sizeof(subject), "%s.define", f.prefix);
	note_mine(subject);
	st = bus_request(f.bus, subject, NULL, 0, body.data, body.len, 10000, &reply, err,
	                 sizeof(err));
	free(body.data);
	cr_expect_eq(st, STATUS_OK, "%s: no answer (%s)", label, err);
	if (st != STATUS_OK)
		return;
	m = saga__v1__define_response__unpack(NULL, bus_msg_len(reply), bus_msg_data(reply));
	bus_msg_free(reply);
	cr_assert_not_null(m, "%s: not a DefineResponse", label);
	cr_expect(saga_utf8_valid(m->name, strlen(m->name)) &&
	                  saga_utf8_valid(m->error, strlen(m->error)) &&
	                  saga_utf8_valid(m->field, strlen(m->field)),
	          "%s: answer text is not UTF-8 (name %s)", label, shown(m->name));
	cr_expect_eq((int)m->status, want, "%s: status %d, want %d (%s: %s)", label, (int)m->status,
	             want, m->field, m->error);
	if (field != NULL)
		cr_expect_str_eq(m->field, field, "%s (%s)", label, m->error);
	if (text != NULL)
		cr_expect(strstr(m->error, text) != NULL, "%s: error \"%s\" does not say \"%s\"",
		          label, m->error, text);
	saga__v1__define_response__free_unpacked(m, NULL);
}

Test(bad_input, every_bad_definition_is_refused_naming_the_field)
{
	static char big_description[600 * 1024 + 1];
	int created = 0;

	setup("t_bad_define");
	expect_define("garbage bytes", copy_bytes(garbage, sizeof(garbage)), 3, "",
	              "DefineRequest: not a valid protobuf encoding");
	expect_define("text instead of protobuf", copy_bytes(not_protobuf, strlen(not_protobuf)), 3,
	              "", "DefineRequest: not a valid protobuf encoding");
	{
		struct bytes whole = define_body("trunc", "", "s", "a.b", "", "", 0, 1);
		struct saga_def probe;
		char err[256];

		cr_assert_neq(codec_decode_define_request(whole.data, whole.len - 1, &probe, err,
		                                          sizeof(err)),
		              STATUS_OK);
		expect_define("a truncated request", truncated(whole), 3, "",
		              "DefineRequest: not a valid protobuf encoding");
	}
	expect_define("an empty body", (struct bytes){NULL, 0}, 3, "", "definition: missing");
	memset(big_description, 'd', sizeof(big_description) - 1);
	expect_define("a 600 KB description",
	              define_body("big", big_description, "s", "a.b", "", "", 0, 1), 3, "",
	              "description: longer than 512 characters");
	expect_define("33 steps", define_body("many", "", "s", "a.b", "", "", 0, 33), 3, "",
	              "steps: 33 steps, at most 32 allowed");
	expect_define("an unknown step kind", define_body("kind", "", "s", "a.b", "", "", 7, 1), 3,
	              "", "steps[0].kind: unknown kind 7");
	expect_define("no steps", define_body("empty", "", "s", "a.b", "", "", 0, 0), 3, "steps",
	              "at least one step is required");
	for (int i = 0; i < N_HOSTILE; i++) {
		const struct hostile *h = &hostile[i];
		int is_long = h->value == NULL;
		char label[128], name[32];

		snprintf(label, sizeof(label), "saga name with %s", h->label);
		expect_define(label, define_body(hv(h), "", "s", "a.b", "", "", 0, 1), 3,
		              is_long ? "" : "name",
		              is_long ? "name: longer than 64 characters" : "is not a valid name");
		snprintf(label, sizeof(label), "step name with %s", h->label);
		expect_define(label, define_body("hostile", "", hv(h), "a.b", "", "", 0, 1), 3,
		              is_long ? "" : "steps[0].name",
		              is_long ? "a name, subject or group is too long"
		                      : "is not a valid name");
		snprintf(label, sizeof(label), "action subject with %s", h->label);
		snprintf(name, sizeof(name), "hostile_action_%d", i);
		expect_define(label, define_body(name, "", "s", hv(h), "", "", 0, 1),
		              h->subject_ok ? 1 : 3,
		              is_long         ? ""
		              : h->subject_ok ? ""
		                              : "steps[0].action",
		              is_long         ? "a name, subject or group is too long"
		              : h->subject_ok ? ""
		                              : "is not a valid subject");
		created += h->subject_ok;
		snprintf(label, sizeof(label), "compensation subject with %s", h->label);
		snprintf(name, sizeof(name), "hostile_comp_%d", i);
		expect_define(label, define_body(name, "", "s", "a.b", hv(h), "", 0, 1),
		              h->subject_ok ? 1 : 3,
		              is_long         ? ""
		              : h->subject_ok ? ""
		                              : "steps[0].compensation",
		              is_long         ? "a name, subject or group is too long"
		              : h->subject_ok ? ""
		                              : "is not a valid subject");
		created += h->subject_ok;
		snprintf(label, sizeof(label), "group with %s", h->label);
		expect_define(label, define_body("hostile", "", "s", "a.b", "", hv(h), 0, 1), 3,
		              is_long ? "" : "steps[0].group",
		              is_long ? "a name, subject or group is too long"
		                      : "is not a valid name");
	}
	cr_expect_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_definition"), 1 + created,
	             "only the valid definitions were registered");
	cr_expect_eq(flow_sql_long(&f, "SELECT max(version) FROM saga_definition"
	                               " WHERE name = 'order'"),
	             1, "order is untouched");
	assert_still_serving();
	assert_no_injection();
	cr_log_info("%d define cases", cases);
}

/* ---- HTTP POST /v1/sagas/{name} ---- */

/* One raw HTTP/1.0 exchange: returns the status code and the whole answer in out. */
static int
http_raw(int port, const char *req, size_t len, char *out, size_t outlen)
{
	struct sockaddr_in addr;
	size_t got = 0, sent = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	while (sent < len) {
		ssize_t w = write(fd, req + sent, len - sent);

		if (w <= 0)
			break; /* the server may answer and close before reading it all */
		sent += (size_t)w;
	}
	while (got + 1 < outlen) {
		ssize_t r = read(fd, out + got, outlen - 1 - got);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	out[got] = '\0';
	close(fd);
	if (strncmp(out, "HTTP/1.", 7) != 0)
		return -1;
	return atoi(out + 9);
}

/* s with every byte outside [A-Za-z0-9_-] as %XX. */
static void
url_escape(char *out, size_t outlen, const char *s)
{
	size_t o = 0;

	for (; *s != '\0' && o + 4 < outlen; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '_' || c == '-')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "%%%02X", c);
	}
	out[o] = '\0';
}

/*
 * POST path with extra header lines and body; the answer must have status
 * want and (when text is given) contain text. Returns the answer.
 */
static const char *
expect_http(int port, const char *label, const char *method, const char *path, const char *headers,
            struct bytes body, int want, const char *text)
{
	static char req[HTTP_REQ_MAX];
	static char out[HTTP_OUT];
	int n, code;

	cases++;
	n = snprintf(req, sizeof(req),
	             "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n\r\n", method,
	             path, headers != NULL ? headers : "", body.len);
	cr_assert(n > 0 && (size_t)n + body.len < sizeof(req), "%s: request too long", label);
	if (body.len > 0)
		memcpy(req + n, body.data, body.len);
	code = http_raw(port, req, (size_t)n + body.len, out, sizeof(out));
	cr_expect_eq(code, want, "%s: HTTP %d, want %d: %.300s", label, code, want, out);
	if (text != NULL)
		cr_expect(strstr(out, text) != NULL, "%s: answer does not say \"%s\": %.300s",
		          label, text, out);
	return out;
}

Test(bad_input, every_bad_http_start_gets_a_clear_4xx)
{
	static char path[4 * LONG_LEN];
	static char headers[2 * LONG_LEN];
	static const struct bytes empty_json = {(uint8_t *)"{}", 2};
	int port, accepted = 0;

	setup("t_bad_http");
	port = flow_http_port(&f, sagad);
	for (int i = 0; i < N_HOSTILE; i++) {
		const struct hostile *h = &hostile[i];
		char label[128], escaped[4 * LONG_LEN];

		url_escape(escaped, sizeof(escaped), hv(h));
		snprintf(label, sizeof(label), "saga name with %s", h->label);
		snprintf(path, sizeof(path), "/v1/sagas/%s", escaped);
		expect_http(port, label, "POST", path, NULL, empty_json, 400,
		            "saga name: use 1-64 of [A-Za-z0-9_-]");
		snprintf(label, sizeof(label), "saga id with %s", h->label);
		expect_http(port, label, "GET", path, NULL, (struct bytes){NULL, 0}, 400,
		            "saga id: not a UUID");
		if (strpbrk(hv(h), "\r\n") != NULL)
			continue; /* a header value cannot hold CR or LF: it would end the header */
		snprintf(label, sizeof(label), "Idempotency-Key with %s", h->label);
		snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\n", hv(h));
		expect_http(port, label, "POST", "/v1/sagas/order", headers, empty_json,
		            h->key_ok ? 202 : 400, h->key_ok ? "\"accepted\"" : "idempotency_key");
		snprintf(label, sizeof(label), "X-Correlation-Id with %s", h->label);
		snprintf(headers, sizeof(headers), "X-Correlation-Id: %s\r\n", hv(h));
		expect_http(port, label, "POST", "/v1/sagas/order", headers, empty_json,
		            h->key_ok ? 202 : 400, h->key_ok ? "\"accepted\"" : "correlation_id");
		accepted += 2 * h->key_ok;
	}
	/* CR LF inside a header value starts a new (bogus) header line: never a NATS command. */
	expect_http(port, "a header smuggling a NATS command", "POST", "/v1/sagas/order",
	            "Idempotency-Key: evil\r\nPUB evil.injected 2\r\n", empty_json, 400, NULL);
	expect_http(port, "an unknown saga", "POST", "/v1/sagas/nope", NULL, empty_json, 404,
	            "no saga definition nope");
	expect_http(port, "an unknown definition version", "POST", "/v1/sagas/order?version=99",
	            NULL, empty_json, 404, "no saga definition order version 99");
	expect_http(port, "a version that is no number", "POST", "/v1/sagas/order?version=9x", NULL,
	            empty_json, 400, "version: not a number");
	expect_http(port, "garbage JSON", "POST", "/v1/sagas/order", NULL,
	            (struct bytes){(uint8_t *)"{\"a\":", 5}, 400, "body is not JSON");
	expect_http(port, "an empty body", "POST", "/v1/sagas/order", NULL, (struct bytes){NULL, 0},
	            400, "body is not JSON");
	{
		struct bytes over_input = json_input(OVER_INPUT);
		struct bytes over_message = json_input(OVER_MESSAGE);

		expect_http(port, "a JSON body over max_payload", "POST", "/v1/sagas/order", NULL,
		            over_input, 413, "max_payload");
		expect_http(port, "a JSON body over max_payload + 4 KiB", "POST", "/v1/sagas/order",
		            NULL, over_message, 413, "max_payload");
		free(over_input.data);
		free(over_message.data);
	}
	{
		static const char pb[] = "Content-Type: application/x-protobuf\r\n";
		struct bytes whole = start_body("order", 0, "http-trunc", "http-trunc-corr", 64);
		struct bytes over_input = start_body("", 0, NULL, NULL, OVER_INPUT);
		struct bytes over_message = start_body("", 0, NULL, NULL, OVER_MESSAGE);

		expect_http(port, "protobuf garbage", "POST", "/v1/sagas/order", pb,
		            (struct bytes){(uint8_t *)garbage, sizeof(garbage)}, 400,
		            "not a valid protobuf encoding");
		expect_http(port, "a truncated protobuf request", "POST", "/v1/sagas/order", pb,
		            truncated(whole), 400, "not a valid protobuf encoding");
		expect_http(port, "a protobuf input over max_payload", "POST", "/v1/sagas/order",
		            pb, over_input, 400, "over the 8192 byte limit");
		expect_http(port, "a protobuf body over max_payload + 4 KiB", "POST",
		            "/v1/sagas/order", pb, over_message, 413, "max_payload");
		/* The empty StartSagaRequest is valid: the path names the saga, no input. */
		expect_http(port, "an empty protobuf body", "POST", "/v1/sagas/order", pb,
		            (struct bytes){NULL, 0}, 202, "\"accepted\"");
		accepted++;
		free(whole.data);
		free(over_input.data);
		free(over_message.data);
	}
	cr_expect_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), accepted,
	             "only the accepted starts made sagas");
	cr_assert_eq(flow_http(port, "GET", "/healthz", NULL, NULL, path, sizeof(path)), 200);
	assert_still_serving();
	assert_no_injection();
	cr_log_info("%d HTTP cases", cases);
}

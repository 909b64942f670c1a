/* saga-send-command: publish one StepCommand (or garbage) and print the reply; for smoke checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "codec.h"
#include "engine.h"
#include "saga.h"

/* Command-line options. */
struct options {
	const char *nats_url;       /* NATS server */
	const char *prefix;         /* subject prefix */
	const char *subject;        /* step subject, e.g. stock.reserve */
	const char *saga_id;        /* UUID */
	const char *correlation_id; /* correlation id */
	const char *step;           /* step name */
	const char *phase;          /* action | compensation */
	const char *reply_subject;  /* "" = <prefix>.reply.<subject> */
	const char *msg_id;         /* Nats-Msg-Id of the command, or NULL */
	const char *input;          /* saga input */
	unsigned attempt;           /* attempt number */
	long timeout_ms;            /* wait for the reply */
	int garbage;                /* publish bytes that are not a StepCommand */
	int no_wait;                /* do not wait for a reply */
};

static void
usage(void)
{
	fprintf(stderr,
	        "usage: saga-send-command --subject SUBJECT --saga-id UUID [options]\n"
	        "  --nats-url URL          (env SAGAD_NATS_URL, default nats://127.0.0.1:4222)\n"
	        "  --prefix P              subject prefix (env SAGAD_SUBJECT_PREFIX, default "
	        "saga)\n"
	        "  --step NAME             step name (default reserve_stock)\n"
	        "  --phase action|compensation (default action)\n"
	        "  --attempt N             (default 1)\n"
	        "  --correlation-id ID     (default corr-<saga id>)\n"
	        "  --reply-subject S       (default <prefix>.reply.<subject>)\n"
	        "  --msg-id ID             Nats-Msg-Id of the command (default none)\n"
	        "  --input TEXT            saga input (default {\"order\":1})\n"
	        "  --timeout-ms N          wait for the reply (default 5000)\n"
	        "  --garbage               publish bytes that are not a StepCommand\n"
	        "  --no-wait               do not wait for a reply\n"
	        "Prints the reply as one JSON line; exit 0 when a reply came, 1 when none, 2 "
	        "usage.\n");
}

/* JSON string content of bytes, escaped. */
static void
print_json_text(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '"' || p[i] == '\\')
			printf("\\%c", p[i]);
		else if (p[i] < 0x20 || p[i] >= 0x7f)
			printf("\\u%04x", p[i]);
		else
			putchar(p[i]);
	}
}

static const char *
header(natsMsg *m, const char *name)
{
	const char *v = NULL;

	if (natsMsgHeader_Get(m, name, &v) != NATS_OK || v == NULL)
		return "";
	return v;
}

static int
parse(struct options *o, int argc, char **argv)
{
	const char *env_url = getenv("SAGAD_NATS_URL");
	const char *env_prefix = getenv("SAGAD_SUBJECT_PREFIX");

	memset(o, 0, sizeof(*o));
	o->nats_url = env_url != NULL && env_url[0] != '\0' ? env_url : "nats://127.0.0.1:4222";
	o->prefix = env_prefix != NULL && env_prefix[0] != '\0' ? env_prefix : "saga";
	o->step = "reserve_stock";
	o->phase = "action";
	o->reply_subject = "";
	o->input = "{\"order\":1}";
	o->attempt = 1;
	o->timeout_ms = 5000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--garbage") == 0) {
			o->garbage = 1;
			continue;
		}
		if (strcmp(a, "--no-wait") == 0) {
			o->no_wait = 1;
			continue;
		}
		if (v == NULL)
			return -1;
		i++;
		if (strcmp(a, "--nats-url") == 0)
			o->nats_url = v;
		else if (strcmp(a, "--prefix") == 0)
			o->prefix = v;
		else if (strcmp(a, "--subject") == 0)
			o->subject = v;
		else if (strcmp(a, "--saga-id") == 0)
			o->saga_id = v;
		else if (strcmp(a, "--correlation-id") == 0)
			o->correlation_id = v;
		else if (strcmp(a, "--step") == 0)
			o->step = v;
		else if (strcmp(a, "--phase") == 0)
			o->phase = v;
		else if (strcmp(a, "--attempt") == 0)
			o->attempt = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(a, "--reply-subject") == 0)
			o->reply_subject = v;
		else if (strcmp(a, "--msg-id") == 0)
			o->msg_id = v;
		else if (strcmp(a, "--input") == 0)
			o->input = v;
		else if (strcmp(a, "--timeout-ms") == 0)
			o->timeout_ms = strtol(v, NULL, 10);
		else
			return -1;
	}
	if (o->subject == NULL || (!o->garbage && o->saga_id == NULL) || o->attempt == 0 ||
	    (strcmp(o->phase, "action") != 0 && strcmp(o->phase, "compensation") != 0))
		return -1;
	return 0;
}

/* Encode the command through the codec, as sagad's relay would. */
static enum status
encode(const struct options *o, const char *reply_subject, struct bytes *out)
{
	static struct saga_def def;
	static struct saga_inst inst;
	struct plan_command pc = {0};
	struct timespec ts;
	int64_t now;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	snprintf(def.name, sizeof(def.name), "order");
	def.version = 1;
	def.n_steps = 1;
	snprintf(def.steps[0].name, sizeof(def.steps[0].name), "%s", o->step);
	snprintf(def.steps[0].action_subject, sizeof(def.steps[0].action_subject), "%s",
	         o->subject);
	snprintf(inst.id, sizeof(inst.id), "%s", o->saga_id);
	if (o->correlation_id != NULL)
		snprintf(inst.correlation_id, sizeof(inst.correlation_id), "%s", o->correlation_id);
	else
		snprintf(inst.correlation_id, sizeof(inst.correlation_id), "corr-%s", o->saga_id);
	inst.state = SAGA_RUNNING;
	inst.input.data = (uint8_t *)o->input;
	inst.input.len = strlen(o->input);
	pc.step = 0;
	pc.phase = strcmp(o->phase, "action") == 0 ? PHASE_ACTION : PHASE_COMPENSATION;
	pc.attempt = o->attempt;
	pc.deadline_ms = now + 30000;
	return codec_encode_command(&def, &inst, &pc, reply_subject, now, out);
}

int
main(int argc, char **argv)
{
	struct options o;
	natsConnection *nc = NULL;
	natsSubscription *sub = NULL;
	jsCtx *js = NULL;
	natsMsg *cmd = NULL;
	natsMsg *reply = NULL;
	struct bytes body = {0};
	char subject[300];
	char reply_subject[300];
	char attempt[16];
	char err[512];
	natsStatus s;
	jsErrCode jerr = 0;
	int64_t deadline;
	int rc = 1;

	if (parse(&o, argc, argv) != 0) {
		usage();
		return 2;
	}
	snprintf(subject, sizeof(subject), "%s.cmd.%s", o.prefix, o.subject);
	if (o.reply_subject[0] != '\0')
		snprintf(reply_subject, sizeof(reply_subject), "%s", o.reply_subject);
	else
		snprintf(reply_subject, sizeof(reply_subject), "%s.reply.%s", o.prefix, o.subject);

	s = natsConnection_ConnectTo(&nc, o.nats_url);
	if (s == NATS_OK)
		s = natsConnection_JetStream(&js, nc, NULL);
	/* A core subscription sees the reply as the reply stream stores it. */
	if (s == NATS_OK && !o.no_wait && !o.garbage)
		s = natsConnection_SubscribeSync(&sub, nc, reply_subject);
	if (s == NATS_OK)
		s = natsConnection_Flush(nc);
	if (s != NATS_OK) {
		fprintf(stderr, "saga-send-command: NATS: %s\n", natsStatus_GetText(s));
		goto cleanup;
	}
	if (o.garbage) {
		static const char junk[] = "\xff\xff\xff this is not a StepCommand";

		s = natsMsg_Create(&cmd, subject, NULL, junk, (int)sizeof(junk) - 1);
	} else {
		if (encode(&o, reply_subject, &body) != STATUS_OK) {
			fprintf(stderr, "saga-send-command: encoding failed\n");
			goto cleanup;
		}
		s = natsMsg_Create(&cmd, subject, NULL, (const char *)body.data, (int)body.len);
		snprintf(attempt, sizeof(attempt), "%u", o.attempt);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(cmd, HDR_SAGA_ID, o.saga_id);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(cmd, HDR_STEP, o.step);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(cmd, HDR_PHASE, o.phase);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(cmd, HDR_ATTEMPT, attempt);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(cmd, HDR_CONTENT_TYPE, CT_STEP_COMMAND);
	}
	if (s == NATS_OK && o.msg_id != NULL)
		s = natsMsgHeader_Set(cmd, HDR_MSG_ID, o.msg_id);
	if (s == NATS_OK)
		s = js_PublishMsg(NULL, js, cmd, NULL, &jerr);
	if (s != NATS_OK) {
		fprintf(stderr, "saga-send-command: publishing to %s: %s (JetStream error %d)\n",
		        subject, natsStatus_GetText(s), (int)jerr);
		goto cleanup;
	}
	if (o.no_wait || o.garbage) {
		printf("{\"published\":\"%s\"}\n", subject);
		rc = 0;
		goto cleanup;
	}
	deadline = nats_Now() + o.timeout_ms;
	for (;;) {
		struct reply_msg r;
		int64_t left = deadline - nats_Now();
		char want_attempt[16];

		if (left <= 0) {
			fprintf(stderr, "saga-send-command: no reply on %s within %ld ms\n",
			        reply_subject, o.timeout_ms);
			goto cleanup;
		}
		natsMsg_Destroy(reply);
		reply = NULL;
		s = natsSubscription_NextMsg(&reply, sub, left);
		if (s == NATS_TIMEOUT)
			continue;
		if (s != NATS_OK) {
			fprintf(stderr, "saga-send-command: %s\n", natsStatus_GetText(s));
			goto cleanup;
		}
		/* Only the reply to this command: same saga, phase and attempt. */
		snprintf(want_attempt, sizeof(want_attempt), "%u", o.attempt);
		if (strcmp(header(reply, HDR_SAGA_ID), o.saga_id) != 0 ||
		    strcmp(header(reply, HDR_PHASE), o.phase) != 0 ||
		    strcmp(header(reply, HDR_ATTEMPT), want_attempt) != 0)
			continue;
		if (codec_decode_reply((const uint8_t *)natsMsg_GetData(reply),
		                       (size_t)natsMsg_GetDataLength(reply), CODEC_MAX_MESSAGE, &r,
		                       err, sizeof(err)) != STATUS_OK) {
			fprintf(stderr, "saga-send-command: undecodable reply: %s\n", err);
			goto cleanup;
		}
		printf("{\"outcome\":\"%s\",\"attempt\":%u,\"phase\":\"%s\",\"error\":\"",
		       reply_outcome_name(r.outcome), (unsigned)r.attempt,
		       step_phase_name(r.phase));
		print_json_text((const uint8_t *)r.error, strlen(r.error));
		printf("\",\"output\":\"");
		print_json_text(r.output.data, r.output.len);
		printf("\",\"msg_id\":\"%s\",\"correlation_id\":\"%s\",\"step\":\"%s\","
		       "\"content_type\":\"%s\"}\n",
		       header(reply, HDR_MSG_ID), header(reply, HDR_CORRELATION_ID),
		       header(reply, HDR_STEP), header(reply, HDR_CONTENT_TYPE));
		codec_reply_free(&r);
		rc = 0;
		break;
	}
cleanup:
	free(body.data);
	natsMsg_Destroy(reply);
	natsMsg_Destroy(cmd);
	natsSubscription_Destroy(sub);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	nats_Close();
	return rc;
}

/* NATS for saga-bench: its own connection, open-loop publishing, callback and sync subscriptions. */
#include "bench_nats.h"

#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECONNECT_BUF (64 * 1024 * 1024) /* publishes kept while reconnecting */
#define DRAIN_WAIT_MS 10000              /* bound on waiting for a handler to finish */

struct bench_nats {
	natsConnection *nc; /* the connection */
	jsCtx *js;          /* JetStream context (sync publishes) */
};

struct bench_sub {
	natsSubscription *sub;     /* the subscription */
	bench_msg_handler handler; /* NULL for a synchronous subscription */
	void *arg;                 /* the handler's argument */
};

/* nats.c's status and last error text, for err. */
static void
set_err(char *err, size_t errlen, const char *what, natsStatus s, jsErrCode jerr)
{
	const char *detail = nats_GetLastError(NULL);
	const char *text = natsStatus_GetText(s);

	/* nats.c prefixes its detail with "(file.c:line): ": keep only the words. */
	if (detail != NULL && detail[0] == '(' && strstr(detail, "): ") != NULL)
		detail = strstr(detail, "): ") + 3;
	if (detail == NULL || strcmp(detail, text) == 0)
		detail = "";
	if (jerr != 0)
		snprintf(err, errlen, "%s: %s (JetStream error %d)%s%s", what, text, (int)jerr,
		         detail[0] != '\0' ? ": " : "", detail);
	else
		snprintf(err, errlen, "%s: %s%s%s", what, text, detail[0] != '\0' ? ": " : "",
		         detail);
}

enum status
bench_nats_connect(struct bench_nats **out, const char *url, const char *name, int64_t timeout_ms,
                   char *err, size_t errlen)
{
	struct bench_nats *n = calloc(1, sizeof(*n));
	natsOptions *opts = NULL;
	natsStatus s;
	enum status st = STATUS_OK;

	if (n == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetURL(opts, url); /* a comma-separated list is fine */
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, name);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, timeout_ms);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, 250);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectBufSize(opts, RECONNECT_BUF);
	if (s != NATS_OK) {
		set_err(err, errlen, "NATS options", s, 0);
		st = STATUS_NATS;
		goto cleanup;
	}
	s = natsConnection_Connect(&n->nc, opts);
	if (s != NATS_OK) {
		set_err(err, errlen, "connecting to NATS", s, 0);
		st = s == NATS_NO_SERVER ? STATUS_UNAVAILABLE : STATUS_NATS;
		goto cleanup;
	}
	s = natsConnection_JetStream(&n->js, n->nc, NULL);
	if (s != NATS_OK) {
		set_err(err, errlen, "JetStream context", s, 0);
		st = STATUS_NATS;
		goto cleanup;
	}
	*out = n;
	n = NULL;
cleanup:
	natsOptions_Destroy(opts);
	bench_nats_close(n);
	return st;
}

void
bench_nats_close(struct bench_nats *n)
{
	if (n == NULL)
		return;
	if (n->nc != NULL)
		(void)natsConnection_FlushTimeout(n->nc, 2000);
	jsCtx_Destroy(n->js);
	natsConnection_Destroy(n->nc);
	free(n);
}

void
bench_nats_library_close(void)
{
	nats_Close();
}

enum status
bench_nats_inbox(char *out, size_t outlen)
{
	natsInbox *inbox = NULL;
	enum status st = STATUS_OK;

	if (natsInbox_Create(&inbox) != NATS_OK)
		return STATUS_NOMEM;
	if ((size_t)snprintf(out, outlen, "%s", (const char *)inbox) >= outlen)
		st = STATUS_INVALID;
	natsInbox_Destroy(inbox);
	return st;
}

enum status
bench_nats_flush(struct bench_nats *n, int64_t timeout_ms, char *err, size_t errlen)
{
	natsStatus s = natsConnection_FlushTimeout(n->nc, timeout_ms);

	if (s != NATS_OK) {
		set_err(err, errlen, "flush", s, 0);
		return s == NATS_TIMEOUT ? STATUS_TIMEOUT : STATUS_NATS;
	}
	return STATUS_OK;
}

/* A message with headers; *out is ours until published. */
static natsStatus
build_msg(natsMsg **out, const char *subject, const char *reply, const char *msg_id,
          const struct bench_header *headers, int n_headers, const uint8_t *data, size_t len)
{
	natsMsg *m = NULL;
	natsStatus s = natsMsg_Create(&m, subject, reply, (const char *)data, (int)len);

	if (s == NATS_OK && msg_id != NULL && msg_id[0] != '\0')
		s = natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id);
	for (int i = 0; s == NATS_OK && i < n_headers; i++) {
		if (headers[i].value != NULL && headers[i].value[0] != '\0')
			s = natsMsgHeader_Set(m, headers[i].name, headers[i].value);
	}
	if (s != NATS_OK) {
		natsMsg_Destroy(m);
		return s;
	}
	*out = m;
	return NATS_OK;
}

enum status
bench_nats_publish(struct bench_nats *n, const char *subject, const char *reply,
                   const struct bench_header *headers, int n_headers, const uint8_t *data,
                   size_t len, char *err, size_t errlen)
{
	natsMsg *m = NULL;
	natsStatus s;

	if (n_headers == 0) {
		/* The common case: no message object at all. */
		s = natsConnection_PublishRequest(n->nc, subject, reply, data, (int)len);
	} else {
		s = build_msg(&m, subject, reply, NULL, headers, n_headers, data, len);
		if (s == NATS_OK)
			s = natsConnection_PublishMsg(n->nc, m);
		natsMsg_Destroy(m);
	}
	if (s != NATS_OK) {
		set_err(err, errlen, subject, s, 0);
		return STATUS_NATS;
	}
	return STATUS_OK;
}

enum status
bench_nats_js_publish(struct bench_nats *n, const char *subject, const char *msg_id,
                      const struct bench_header *headers, int n_headers, const uint8_t *data,
                      size_t len, int64_t timeout_ms, char *err, size_t errlen)
{
	natsMsg *m = NULL;
	jsPubOptions po;
	jsErrCode jerr = 0;
	natsStatus s;

	s = build_msg(&m, subject, NULL, msg_id, headers, n_headers, data, len);
	if (s == NATS_OK) {
		jsPubOptions_Init(&po);
		po.MaxWait = timeout_ms;
		s = js_PublishMsg(NULL, n->js, m, &po, &jerr);
	}
	natsMsg_Destroy(m);
	if (s != NATS_OK) {
		set_err(err, errlen, subject, s, jerr);
		return s == NATS_TIMEOUT ? STATUS_TIMEOUT : STATUS_NATS;
	}
	return STATUS_OK;
}

static void
on_message(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	struct bench_sub *bs = closure;

	(void)nc;
	(void)sub;
	bs->handler(bs->arg, (struct bench_msg *)msg);
	natsMsg_Destroy(msg);
}

enum status
bench_nats_subscribe(struct bench_nats *n, const char *subject, bench_msg_handler handler,
                     void *arg, struct bench_sub **out, char *err, size_t errlen)
{
	struct bench_sub *bs = calloc(1, sizeof(*bs));
	natsStatus s;

	if (bs == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	bs->handler = handler;
	bs->arg = arg;
	s = natsConnection_Subscribe(&bs->sub, n->nc, subject, on_message, bs);
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(bs->sub, -1, -1);
	if (s != NATS_OK) {
		set_err(err, errlen, subject, s, 0);
		natsSubscription_Destroy(bs->sub);
		free(bs);
		return STATUS_NATS;
	}
	*out = bs;
	return STATUS_OK;
}

enum status
bench_nats_subscribe_sync(struct bench_nats *n, const char *subject, struct bench_sub **out,
                          char *err, size_t errlen)
{
	struct bench_sub *bs = calloc(1, sizeof(*bs));
	natsStatus s;

	if (bs == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	s = natsConnection_SubscribeSync(&bs->sub, n->nc, subject);
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(bs->sub, -1, -1);
	if (s != NATS_OK) {
		set_err(err, errlen, subject, s, 0);
		natsSubscription_Destroy(bs->sub);
		free(bs);
		return STATUS_NATS;
	}
	*out = bs;
	return STATUS_OK;
}

enum status
bench_nats_next(struct bench_sub *sub, int64_t timeout_ms, struct bench_msg **msg)
{
	natsMsg *m = NULL;
	natsStatus s = natsSubscription_NextMsg(&m, sub->sub, timeout_ms > 0 ? timeout_ms : 1);

	if (s == NATS_TIMEOUT)
		return STATUS_TIMEOUT;
	if (s != NATS_OK)
		return STATUS_NATS;
	*msg = (struct bench_msg *)m;
	return STATUS_OK;
}

void
bench_nats_unsubscribe(struct bench_sub *sub)
{
	if (sub == NULL)
		return;
	if (sub->handler != NULL) {
		/* After the drain no handler of it runs any more: its argument may go. */
		if (natsSubscription_Drain(sub->sub) == NATS_OK)
			(void)natsSubscription_WaitForDrainCompletion(sub->sub, DRAIN_WAIT_MS);
	} else {
		(void)natsSubscription_Unsubscribe(sub->sub);
	}
	natsSubscription_Destroy(sub->sub);
	free(sub);
}

int
bench_nats_pending(struct bench_sub *sub)
{
	int msgs = 0, bytes = 0;

	if (natsSubscription_GetPending(sub->sub, &msgs, &bytes) != NATS_OK)
		return 0;
	return msgs;
}

const char *
bench_msg_subject(const struct bench_msg *m)
{
	return natsMsg_GetSubject((natsMsg *)m);
}

const uint8_t *
bench_msg_data(const struct bench_msg *m)
{
	return (const uint8_t *)natsMsg_GetData((natsMsg *)m);
}

size_t
bench_msg_len(const struct bench_msg *m)
{
	return (size_t)natsMsg_GetDataLength((natsMsg *)m);
}

const char *
bench_msg_header(struct bench_msg *m, const char *name)
{
	const char *v = NULL;

	if (natsMsgHeader_Get((natsMsg *)m, name, &v) != NATS_OK)
		return NULL;
	return v;
}

void
bench_msg_free(struct bench_msg *m)
{
	natsMsg_Destroy((natsMsg *)m);
}

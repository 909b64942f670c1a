/* NATS and JetStream: the only module that talks to nats.c. */
#include "bus.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define NS_PER_MS INT64_C(1000000)

struct bus {
	const struct config *cfg; /* settings (not owned) */
	natsConnection *nc;       /* the connection */
	jsCtx *js;                /* JetStream context on nc */
	int publish_failed;       /* async publishes nats.c reported failed (its thread) */
	char publish_err[256];    /* text of the last failure */
	time_t async_err_at;      /* when an asynchronous error was last logged */
	int async_err_quiet;      /* asynchronous errors not logged since then */
	pthread_mutex_t lock;     /* guards publish_failed, publish_err, async_err_* */
};

struct bus_sub {
	natsSubscription *sub; /* the subscription */
	int pull;              /* JetStream pull consumer */
};

/* Per stream: name suffix, subject token, work queue or not, durable consumer name. */
static const struct {
	const char *suffix;   /* stream name suffix */
	const char *token;    /* subject token after the prefix */
	int work_queue;       /* work-queue retention (deleted once acked) */
	const char *consumer; /* sagad's durable consumer on it, or NULL */
} streams[BUS_STREAM_COUNT] = {
        [BUS_STREAM_CMD] = {"CMD", "cmd", 1, NULL},
        [BUS_STREAM_REPLY] = {"REPLY", "reply", 1, "sagad_replies"},
        [BUS_STREAM_SUBMIT] = {"SUBMIT", "submit", 1, "sagad_submits"},
        [BUS_STREAM_EVENT] = {"EVENT", "event", 0, NULL},
        [BUS_STREAM_DLQ] = {"DLQ", "dlq", 0, NULL},
};

/* A comma-separated list of URLs (a cluster) goes to natsOptions_SetServers. */
static natsStatus
set_urls(natsOptions *opts, const char *url)
{
	char *copy = strdup(url);
	const char *list[16];
	int n = 0;
	natsStatus s;

	if (copy == NULL)
		return NATS_NO_MEMORY;
	for (char *save = NULL, *t = strtok_r(copy, ",", &save); t != NULL && n < 16;
	     t = strtok_r(NULL, ",", &save))
		list[n++] = t;
	s = n <= 1 ? natsOptions_SetURL(opts, url) : natsOptions_SetServers(opts, list, n);
	free(copy);
	return s;
}

/* Write nats.c's status and last error text into err. */
static void
set_nats_err(char *err, size_t errlen, const char *what, natsStatus s, jsErrCode jerr)
{
	const char *detail = nats_GetLastError(NULL);

	if (jerr != 0)
		snprintf(err, errlen, "%s: %s (JetStream error %d%s%s)", what,
		         natsStatus_GetText(s), (int)jerr, detail != NULL ? ": " : "",
		         detail != NULL ? detail : "");
	else
		snprintf(err, errlen, "%s: %s%s%s", what, natsStatus_GetText(s),
		         detail != NULL && strcmp(detail, natsStatus_GetText(s)) != 0 ? ": " : "",
		         detail != NULL && strcmp(detail, natsStatus_GetText(s)) != 0 ? detail
		                                                                      : "");
}

/* nats.c calls this on its own thread when a JetStream publish was refused or lost. */
static void
on_publish_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
	struct bus *b = closure;

	(void)js;
	pthread_mutex_lock(&b->lock);
	b->publish_failed++;
	snprintf(b->publish_err, sizeof(b->publish_err), "%s (JetStream error %d)",
	         pae->ErrText != NULL ? pae->ErrText : natsStatus_GetText(pae->Err),
	         (int)pae->ErrCode);
	pthread_mutex_unlock(&b->lock);
}

/*
 * nats.c calls this on its own thread for errors no call returns: above all a
 * permission violation (the server refused a publish or subscription and
 * dropped it), and slow consumers. At most one line a second, with a count of
 * the ones left out, so a refused subject polled in a loop cannot flood the log.
 */
static void
on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	struct bus *b = closure;
	const char *text = NULL;
	time_t now = time(NULL);
	int quiet = -1;

	(void)sub;
	pthread_mutex_lock(&b->lock);
	if (now != b->async_err_at) {
		quiet = b->async_err_quiet;
		b->async_err_at = now;
		b->async_err_quiet = 0;
	} else {
		b->async_err_quiet++;
	}
	pthread_mutex_unlock(&b->lock);
	if (quiet < 0)
		return;
	if (natsConnection_GetLastError(nc, &text) == NATS_OK || text == NULL || text[0] == '\0')
		text = natsStatus_GetText(err);
	if (err == NATS_NOT_PERMITTED)
		log_error("NATS refused an operation: %s (this user lacks the permission; see "
		          "docs/security.md)%s",
		          text, quiet > 0 ? " (and earlier errors not logged)" : "");
	else
		log_warn("NATS asynchronous error: %s%s", text,
		         quiet > 0 ? " (and earlier errors not logged)" : "");
}

enum status
bus_connect(struct bus **out, const struct config *cfg, char *err, size_t errlen)
{
	natsOptions *opts = NULL;
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	struct bus *b = calloc(1, sizeof(*b));
	natsStatus s;
	enum status st = STATUS_OK;
	char target[512];
	char inbox[160];

	if (b == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	pthread_mutex_init(&b->lock, NULL);
	config_redact_url(cfg->nats_url, target, sizeof(target));
	config_nats_inbox_prefix(cfg->nats_url, cfg->nats_inbox_prefix, inbox, sizeof(inbox));
	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = set_urls(opts, cfg->nats_url);
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, cfg->nats_name);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, cfg->connect_timeout_ms);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1); /* once up, never give up */
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, 250);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectBufSize(opts, 64 * 1024 * 1024);
	/* Replies to our requests and fetches come to inboxes only this user may read. */
	if (s == NATS_OK)
		s = natsOptions_SetCustomInboxPrefix(opts, inbox);
	if (s == NATS_OK)
		s = natsOptions_SetErrorHandler(opts, on_async_error, b);
	if (s != NATS_OK) {
		char what[600];

		snprintf(what, sizeof(what), "nats_url %s (inbox prefix %s)", target, inbox);
		set_nats_err(err, errlen, what, s, 0);
		st = STATUS_CONFIG;
		goto cleanup;
	}
	s = natsConnection_Connect(&nc, opts);
	if (s != NATS_OK) {
		char what[600];

		snprintf(what, sizeof(what), "cannot connect to NATS at %s", target);
		set_nats_err(err, errlen, what, s, 0);
		st = s == NATS_NO_SERVER || s == NATS_TIMEOUT ? STATUS_UNAVAILABLE : STATUS_NATS;
		goto cleanup;
	}
	{
		jsOptions jo;

		jsOptions_Init(&jo);
		jo.PublishAsync.ErrHandler = on_publish_error;
		jo.PublishAsync.ErrHandlerClosure = b;
		jo.PublishAsync.MaxPending = 65536;
		s = natsConnection_JetStream(&js, nc, &jo);
	}
	if (s != NATS_OK) {
		set_nats_err(err, errlen, "JetStream context", s, 0);
		st = STATUS_NATS;
		goto cleanup;
	}
	b->cfg = cfg;
	b->nc = nc;
	b->js = js;
	*out = b;
	b = NULL;
	nc = NULL;
	js = NULL;
cleanup:
	jsCtx_Destroy(js);
	/* Closed and destroyed before b is freed: no callback can reach it afterwards. */
	natsConnection_Destroy(nc);
	natsOptions_Destroy(opts);
	if (b != NULL) {
		pthread_mutex_destroy(&b->lock);
		free(b);
	}
	return st;
}

void
bus_close(struct bus *b)
{
	if (b == NULL)
		return;
	jsCtx_Destroy(b->js);
	natsConnection_Close(b->nc);
	natsConnection_Destroy(b->nc);
	pthread_mutex_destroy(&b->lock);
	free(b);
}

void
bus_stream_name(const struct bus *b, enum bus_stream which, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s_%s", b->cfg->stream_prefix, streams[which].suffix);
}

static void
fill_stream_config(const struct bus *b, enum bus_stream which, jsStreamConfig *sc, char *name,
                   size_t namelen, char *subject, size_t subjectlen)
{
	const struct config *cfg = b->cfg;

	bus_stream_name(b, which, name, namelen);
	snprintf(subject, subjectlen, "%s.%s.>", cfg->subject_prefix, streams[which].token);
	jsStreamConfig_Init(sc);
	sc->Name = name;
	sc->Storage = js_FileStorage;
	sc->Replicas = cfg->stream_replicas;
	sc->MaxBytes = cfg->stream_max_bytes;
	sc->MaxMsgSize = (int32_t)cfg->stream_max_msg_size;
	sc->Duplicates = cfg->stream_dup_window_ms * NS_PER_MS;
	if (streams[which].work_queue) {
		sc->Retention = js_WorkQueuePolicy;
		/* Backpressure by default: a full work stream refuses, never drops, work. */
		sc->Discard = cfg->stream_discard == 0 ? js_DiscardNew : js_DiscardOld;
	} else {
		/* Fan-out history: bounded by age and size; oldest goes first. */
		sc->Retention = js_LimitsPolicy;
		sc->Discard = js_DiscardOld;
		sc->MaxAge =
		        (which == BUS_STREAM_DLQ ? cfg->dlq_max_age_ms : cfg->event_max_age_ms) *
		        NS_PER_MS;
	}
}

static enum status
ensure_stream(struct bus *b, enum bus_stream which, int *created, char *err, size_t errlen)
{
	jsStreamConfig sc;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	char name[96];
	char subject[160];
	const char *subjects[1];
	natsStatus s;

	fill_stream_config(b, which, &sc, name, sizeof(name), subject, sizeof(subject));
	subjects[0] = subject;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;

	/*
	 * Look first: the server answers an AddStream with an identical config as
	 * a success, which would hide whether the stream was new.
	 */
	s = js_GetStreamInfo(&si, b->js, name, NULL, &jerr);
	if (s != NATS_OK && jerr != JSStreamNotFoundErr && s != NATS_NOT_FOUND) {
		char what[160];

		snprintf(what, sizeof(what), "looking up stream %s", name);
		set_nats_err(err, errlen, what, s, jerr);
		return STATUS_NATS;
	}
	jsStreamInfo_Destroy(si);
	si = NULL;
	if (s != NATS_OK) {
		jerr = 0;
		s = js_AddStream(&si, b->js, &sc, NULL, &jerr);
		if (s == NATS_OK) {
			log_info("stream %s created (subjects %s)", name, subject);
			(*created)++;
			jsStreamInfo_Destroy(si);
			return STATUS_OK;
		}
		if (jerr != JSStreamNameExistErr) {
			char what[160];

			snprintf(what, sizeof(what), "creating stream %s", name);
			set_nats_err(err, errlen, what, s, jerr);
			return STATUS_NATS;
		}
		/* Another sagad created it a moment ago: fall through to update. */
	}
	/* It exists: bring its limits in line with the settings (a no-op when equal). */
	jerr = 0;
	s = js_UpdateStream(&si, b->js, &sc, NULL, &jerr);
	if (s != NATS_OK) {
		char what[160];

		snprintf(what, sizeof(what), "updating stream %s", name);
		set_nats_err(err, errlen, what, s, jerr);
		return STATUS_NATS;
	}
	log_info("stream %s found (%llu messages)", name, (unsigned long long)si->State.Msgs);
	jsStreamInfo_Destroy(si);
	return STATUS_OK;
}

static void
fill_consumer_config(const struct bus *b, enum bus_stream which, jsConsumerConfig *cc)
{
	const struct config *cfg = b->cfg;

	jsConsumerConfig_Init(cc);
	cc->Durable = streams[which].consumer;
	cc->AckPolicy = js_AckExplicit;
	cc->DeliverPolicy = js_DeliverAll;
	cc->AckWait = cfg->consumer_ack_wait_ms * NS_PER_MS;
	cc->MaxDeliver = cfg->consumer_max_deliver;
	cc->MaxAckPending = cfg->consumer_max_pending;
}

static enum status
ensure_consumer(struct bus *b, enum bus_stream which, int *created, char *err, size_t errlen)
{
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	char stream[96];
	char what[200];
	natsStatus s;

	bus_stream_name(b, which, stream, sizeof(stream));
	fill_consumer_config(b, which, &cc);
	s = js_GetConsumerInfo(&ci, b->js, stream, cc.Durable, NULL, &jerr);
	if (s == NATS_OK) {
		const jsConsumerConfig *have = ci->Config;
		int same = have->AckWait == cc.AckWait && have->MaxDeliver == cc.MaxDeliver &&
		           have->MaxAckPending == cc.MaxAckPending;

		jsConsumerInfo_Destroy(ci);
		ci = NULL;
		if (same) {
			log_info("consumer %s on %s found", cc.Durable, stream);
			return STATUS_OK;
		}
		jerr = 0;
		s = js_UpdateConsumer(&ci, b->js, stream, &cc, NULL, &jerr);
		if (s != NATS_OK) {
			snprintf(what, sizeof(what), "updating consumer %s on %s", cc.Durable,
			         stream);
			set_nats_err(err, errlen, what, s, jerr);
			return STATUS_NATS;
		}
		log_info("consumer %s on %s updated", cc.Durable, stream);
		jsConsumerInfo_Destroy(ci);
		return STATUS_OK;
	}
	if (jerr != JSConsumerNotFoundErr) {
		snprintf(what, sizeof(what), "looking up consumer %s on %s", cc.Durable, stream);
		set_nats_err(err, errlen, what, s, jerr);
		return STATUS_NATS;
	}
	jerr = 0;
	s = js_AddConsumer(&ci, b->js, stream, &cc, NULL, &jerr);
	if (s != NATS_OK) {
		snprintf(what, sizeof(what), "creating consumer %s on %s", cc.Durable, stream);
		set_nats_err(err, errlen, what, s, jerr);
		return STATUS_NATS;
	}
	log_info("consumer %s on %s created", cc.Durable, stream);
	(*created)++;
	jsConsumerInfo_Destroy(ci);
	return STATUS_OK;
}

enum status
bus_ensure_topology(struct bus *b, int *created, char *err, size_t errlen)
{
	int n = 0;

	for (int i = 0; i < BUS_STREAM_COUNT; i++) {
		enum status st = ensure_stream(b, (enum bus_stream)i, &n, err, errlen);

		if (st != STATUS_OK)
			return st;
		if (streams[i].consumer != NULL) {
			st = ensure_consumer(b, (enum bus_stream)i, &n, err, errlen);
			if (st != STATUS_OK)
				return st;
		}
	}
	*created = n;
	return STATUS_OK;
}

enum status
bus_stream_stats(struct bus *b, enum bus_stream which, struct bus_stream_stats *out, char *err,
                 size_t errlen)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	char name[96];
	natsStatus s;

	bus_stream_name(b, which, name, sizeof(name));
	s = js_GetStreamInfo(&si, b->js, name, NULL, &jerr);
	if (s != NATS_OK) {
		if (jerr == JSStreamNotFoundErr || s == NATS_NOT_FOUND)
			return STATUS_NOT_FOUND;
		set_nats_err(err, errlen, name, s, jerr);
		return STATUS_NATS;
	}
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->msgs = si->State.Msgs;
	out->bytes = si->State.Bytes;
	out->created_ns = si->Created;
	out->max_bytes = si->Config->MaxBytes;
	out->dup_window_ns = si->Config->Duplicates;
	jsStreamInfo_Destroy(si);
	return STATUS_OK;
}

enum status
bus_consumer_stats(struct bus *b, enum bus_stream which, struct bus_consumer_stats *out, char *err,
                   size_t errlen)
{
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	char stream[96];
	natsStatus s;

	if (streams[which].consumer == NULL) {
		snprintf(err, errlen, "stream %s has no sagad consumer", streams[which].suffix);
		return STATUS_INVALID;
	}
	bus_stream_name(b, which, stream, sizeof(stream));
	s = js_GetConsumerInfo(&ci, b->js, stream, streams[which].consumer, NULL, &jerr);
	if (s != NATS_OK) {
		if (jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr ||
		    s == NATS_NOT_FOUND)
			return STATUS_NOT_FOUND;
		set_nats_err(err, errlen, streams[which].consumer, s, jerr);
		return STATUS_NATS;
	}
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", ci->Name);
	out->created_ns = ci->Created;
	out->num_pending = ci->NumPending;
	out->num_ack_pending = ci->NumAckPending;
	out->num_redelivered = ci->NumRedelivered;
	jsConsumerInfo_Destroy(ci);
	return STATUS_OK;
}

enum status
bus_ping(struct bus *b, char *err, size_t errlen)
{
	natsStatus s = natsConnection_FlushTimeout(b->nc, 2000);

	if (s != NATS_OK) {
		set_nats_err(err, errlen, "NATS", s, 0);
		return STATUS_UNAVAILABLE;
	}
	return STATUS_OK;
}

/* ---- messages ---- */

static natsMsg *
nm(const struct bus_msg *m)
{
	return (natsMsg *)m;
}

enum status
bus_subscribe(struct bus *b, const char *subject, const char *queue, struct bus_sub **out,
              char *err, size_t errlen)
{
	struct bus_sub *sub = calloc(1, sizeof(*sub));
	natsStatus s;

	if (sub == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	if (queue != NULL)
		s = natsConnection_QueueSubscribeSync(&sub->sub, b->nc, subject, queue);
	else
		s = natsConnection_SubscribeSync(&sub->sub, b->nc, subject);
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(sub->sub, 1000000, 1024 * 1024 * 1024);
	if (s != NATS_OK) {
		char what[300];

		snprintf(what, sizeof(what), "subscribing to %s", subject);
		set_nats_err(err, errlen, what, s, 0);
		natsSubscription_Destroy(sub->sub);
		free(sub);
		return STATUS_NATS;
	}
	*out = sub;
	return STATUS_OK;
}

enum status
bus_pull_subscribe(struct bus *b, enum bus_stream which, struct bus_sub **out, char *err,
                   size_t errlen)
{
	struct bus_sub *sub;
	jsSubOptions so;
	jsErrCode jerr = 0;
	char stream[96];
	char subject[160];
	natsStatus s;

	if (streams[which].consumer == NULL) {
		snprintf(err, errlen, "stream %s has no sagad consumer", streams[which].suffix);
		return STATUS_INVALID;
	}
	sub = calloc(1, sizeof(*sub));
	if (sub == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	bus_stream_name(b, which, stream, sizeof(stream));
	snprintf(subject, sizeof(subject), "%s.%s.>", b->cfg->subject_prefix, streams[which].token);
	jsSubOptions_Init(&so);
	so.Stream = stream;
	so.Consumer = streams[which].consumer;
	s = js_PullSubscribe(&sub->sub, b->js, subject, streams[which].consumer, NULL, &so, &jerr);
	if (s != NATS_OK) {
		char what[200];

		snprintf(what, sizeof(what), "binding to consumer %s on %s",
		         streams[which].consumer, stream);
		set_nats_err(err, errlen, what, s, jerr);
		free(sub);
		return STATUS_NATS;
	}
	sub->pull = 1;
	*out = sub;
	return STATUS_OK;
}

void
bus_unsubscribe(struct bus_sub *sub)
{
	if (sub == NULL)
		return;
	if (!sub->pull)
		natsSubscription_Unsubscribe(sub->sub);
	natsSubscription_Destroy(sub->sub);
	free(sub);
}

void
bus_drain(struct bus_sub *sub)
{
	if (sub == NULL || sub->pull)
		return;
	if (natsSubscription_Drain(sub->sub) != NATS_OK)
		natsSubscription_Unsubscribe(sub->sub);
}

enum status
bus_next(struct bus_sub *sub, int timeout_ms, struct bus_msg **msg)
{
	natsMsg *m = NULL;
	natsStatus s = natsSubscription_NextMsg(&m, sub->sub, timeout_ms);

	if (s == NATS_TIMEOUT)
		return STATUS_TIMEOUT;
	if (s != NATS_OK)
		return STATUS_NATS;
	*msg = (struct bus_msg *)m;
	return STATUS_OK;
}

enum status
bus_fetch(struct bus_sub *sub, int max, int timeout_ms, struct bus_msg **msgs, int *n, char *err,
          size_t errlen)
{
	natsMsgList list = {0};
	jsFetchRequest req;
	jsErrCode jerr = 0;
	natsStatus s;

	*n = 0;
	jsFetchRequest_Init(&req);
	req.Batch = max;
	if (timeout_ms <= 0) {
		req.NoWait = true;
		req.Expires = 0;
	} else {
		req.Expires = (int64_t)timeout_ms * NS_PER_MS;
	}
	s = natsSubscription_FetchRequest(&list, sub->sub, &req);
	if (s == NATS_TIMEOUT || s == NATS_NOT_FOUND ||
	    (s != NATS_OK && list.Count == 0 && (jerr == 0 || jerr == 404))) {
		natsMsgList_Destroy(&list);
		if (s == NATS_TIMEOUT || s == NATS_NOT_FOUND)
			return STATUS_OK;
		set_nats_err(err, errlen, "fetching", s, jerr);
		return s == NATS_CONNECTION_CLOSED || s == NATS_CONNECTION_DISCONNECTED
		               ? STATUS_UNAVAILABLE
		               : STATUS_NATS;
	}
	if (list.Count > max) {
		/*
		 * nats.c 3.4.1 wrote past its own array: called with more than half
		 * a batch already queued from an earlier fetch that returned early,
		 * its fetch loop misses its end. The heap is no longer trustworthy:
		 * stop here (state is in PostgreSQL; a restart loses nothing)
		 * rather than crash later somewhere unrelated.
		 */
		log_error("nats.c returned %d messages for a fetch of %d: its heap is corrupt; "
		          "stopping",
		          list.Count, max);
		abort();
	}
	for (int i = 0; i < list.Count; i++) {
		msgs[(*n)++] = (struct bus_msg *)list.Msgs[i];
		list.Msgs[i] = NULL; /* ownership moves to the caller */
	}
	natsMsgList_Destroy(&list);
	return STATUS_OK;
}

const uint8_t *
bus_msg_data(const struct bus_msg *m)
{
	return (const uint8_t *)natsMsg_GetData(nm(m));
}

size_t
bus_msg_len(const struct bus_msg *m)
{
	return (size_t)natsMsg_GetDataLength(nm(m));
}

const char *
bus_msg_subject(const struct bus_msg *m)
{
	return natsMsg_GetSubject(nm(m));
}

const char *
bus_msg_reply(const struct bus_msg *m)
{
	return natsMsg_GetReply(nm(m));
}

const char *
bus_msg_header(struct bus_msg *m, const char *name)
{
	const char *v = NULL;

	if (natsMsgHeader_Get(nm(m), name, &v) != NATS_OK)
		return NULL;
	return v;
}

/* Append s as a JSON string (escaped) at *pos; stops short of the end. */
static void
json_string(char *out, size_t outlen, size_t *pos, const char *s)
{
	if (*pos + 2 >= outlen)
		return;
	out[(*pos)++] = '"';
	for (; *s != '\0' && *pos + 8 < outlen; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[(*pos)++] = '\\';
			out[(*pos)++] = (char)c;
		} else if (c < 0x20) {
			*pos += (size_t)snprintf(out + *pos, outlen - *pos, "\\u%04x", c);
		} else {
			out[(*pos)++] = (char)c;
		}
	}
	out[(*pos)++] = '"';
}

void
bus_msg_headers_json(struct bus_msg *m, char *out, size_t outlen)
{
	const char **keys = NULL;
	int count = 0;
	size_t pos = 0;

	out[pos++] = '{';
	if (natsMsgHeader_Keys(nm(m), &keys, &count) == NATS_OK) {
		for (int i = 0; i < count && pos + 16 < outlen; i++) {
			const char *v = NULL;

			if (natsMsgHeader_Get(nm(m), keys[i], &v) != NATS_OK || v == NULL)
				v = "";
			if (i > 0)
				out[pos++] = ',';
			json_string(out, outlen - 2, &pos, keys[i]);
			out[pos++] = ':';
			json_string(out, outlen - 2, &pos, v);
		}
		free((void *)keys);
	}
	out[pos++] = '}';
	out[pos] = '\0';
}

void
bus_msg_stream_seq(struct bus_msg *m, char *out, size_t outlen)
{
	jsMsgMetaData *meta = NULL;

	out[0] = '\0';
	if (natsMsg_GetMetaData(&meta, nm(m)) != NATS_OK)
		return;
	snprintf(out, outlen, "%s:%llu", meta->Stream, (unsigned long long)meta->Sequence.Stream);
	jsMsgMetaData_Destroy(meta);
}

uint64_t
bus_msg_delivered(struct bus_msg *m)
{
	jsMsgMetaData *meta = NULL;
	uint64_t n;

	if (natsMsg_GetMetaData(&meta, nm(m)) != NATS_OK)
		return 0;
	n = meta->NumDelivered;
	jsMsgMetaData_Destroy(meta);
	return n;
}

uint64_t
bus_msg_pending(struct bus_msg *m)
{
	jsMsgMetaData *meta = NULL;
	uint64_t n;

	if (natsMsg_GetMetaData(&meta, nm(m)) != NATS_OK)
		return 0;
	n = meta->NumPending;
	jsMsgMetaData_Destroy(meta);
	return n;
}

void
bus_ack(struct bus_msg *m)
{
	natsMsg_Ack(nm(m), NULL);
}

void
bus_term(struct bus_msg *m)
{
	natsMsg_Term(nm(m), NULL);
}

void
bus_nak(struct bus_msg *m, int64_t delay_ms)
{
	natsMsg_NakWithDelay(nm(m), delay_ms, NULL);
}

void
bus_msg_free(struct bus_msg *m)
{
	natsMsg_Destroy(nm(m));
}

static natsStatus
build_msg(natsMsg **out, const char *subject, const char *reply, const struct bus_header *headers,
          int n_headers, const uint8_t *data, size_t len)
{
	natsStatus s = natsMsg_Create(out, subject, reply, (const char *)data, (int)len);

	for (int i = 0; s == NATS_OK && i < n_headers; i++) {
		if (headers[i].value != NULL && headers[i].value[0] != '\0')
			s = natsMsgHeader_Set(*out, headers[i].name, headers[i].value);
	}
	if (s != NATS_OK) {
		natsMsg_Destroy(*out);
		*out = NULL;
	}
	return s;
}

enum status
bus_respond(struct bus *b, struct bus_msg *request, const struct bus_header *headers, int n_headers,
            const uint8_t *data, size_t len)
{
	const char *reply = bus_msg_reply(request);
	natsMsg *m = NULL;
	natsStatus s;

	if (reply == NULL || reply[0] == '\0')
		return STATUS_INVALID; /* fire-and-forget request: nobody to answer */
	s = build_msg(&m, reply, NULL, headers, n_headers, data, len);
	if (s == NATS_OK)
		s = natsConnection_PublishMsg(b->nc, m);
	natsMsg_Destroy(m);
	return s == NATS_OK ? STATUS_OK : STATUS_NATS;
}

enum status
bus_publish_async(struct bus *b, const char *subject, const char *msg_id,
                  const struct bus_header *headers, int n_headers, const uint8_t *data, size_t len,
                  char *err, size_t errlen)
{
	natsMsg *m = NULL;
	natsStatus s = build_msg(&m, subject, NULL, headers, n_headers, data, len);

	if (s == NATS_OK && msg_id != NULL && msg_id[0] != '\0')
		s = natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id);
	if (s == NATS_OK)
		s = js_PublishMsgAsync(b->js, &m, NULL);
	natsMsg_Destroy(m); /* NULL when the library took it */
	if (s != NATS_OK) {
		char what[300];

		snprintf(what, sizeof(what), "publishing to %s", subject);
		set_nats_err(err, errlen, what, s, 0);
		return STATUS_NATS;
	}
	return STATUS_OK;
}

enum status
bus_publish_one(struct bus *b, const char *subject, const char *msg_id,
                const struct bus_header *headers, int n_headers, const uint8_t *data, size_t len,
                int timeout_ms, int *permanent, char *err, size_t errlen)
{
	natsMsg *m = NULL;
	jsPubAck *ack = NULL;
	jsPubOptions po;
	jsErrCode jerr = 0;
	natsStatus s = build_msg(&m, subject, NULL, headers, n_headers, data, len);

	*permanent = 0;
	jsPubOptions_Init(&po);
	po.MaxWait = timeout_ms;
	if (s == NATS_OK && msg_id != NULL && msg_id[0] != '\0')
		s = natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id);
	if (s == NATS_OK)
		s = js_PublishMsg(&ack, b->js, m, &po, &jerr);
	natsMsg_Destroy(m);
	jsPubAck_Destroy(ack);
	if (s != NATS_OK) {
		char what[300];

		*permanent = s == NATS_MAX_PAYLOAD || jerr == JSStreamMessageExceedsMaximumErr;
		snprintf(what, sizeof(what), "publishing to %s", subject);
		set_nats_err(err, errlen, what, s, jerr);
		return STATUS_NATS;
	}
	return STATUS_OK;
}

enum status
bus_publish_wait(struct bus *b, int timeout_ms, int *failed, char *err, size_t errlen)
{
	jsPubOptions po;
	natsStatus s;

	jsPubOptions_Init(&po);
	po.MaxWait = timeout_ms;
	s = js_PublishAsyncComplete(b->js, &po);
	if (s == NATS_TIMEOUT) {
		/* Acks lost with a dead server never come: forget them (the outbox re-sends
		 * with the same Nats-Msg-Id, and the stream drops copies). */
		natsMsgList pending = {0};

		if (js_PublishAsyncGetPendingList(&pending, b->js) == NATS_OK)
			natsMsgList_Destroy(&pending);
	}
	pthread_mutex_lock(&b->lock);
	*failed = b->publish_failed;
	b->publish_failed = 0;
	if (*failed > 0)
		snprintf(err, errlen, "%d publish(es) failed: %s", *failed, b->publish_err);
	pthread_mutex_unlock(&b->lock);
	if (s != NATS_OK) {
		set_nats_err(err, errlen, "waiting for JetStream acks", s, 0);
		return s == NATS_TIMEOUT ? STATUS_TIMEOUT : STATUS_NATS;
	}
	return STATUS_OK;
}

enum status
bus_request(struct bus *b, const char *subject, const struct bus_header *headers, int n_headers,
            const uint8_t *data, size_t len, int timeout_ms, struct bus_msg **reply, char *err,
            size_t errlen)
{
	natsMsg *req = NULL;
	natsMsg *rep = NULL;
	natsStatus s = build_msg(&req, subject, NULL, headers, n_headers, data, len);

	if (s == NATS_OK)
		s = natsConnection_RequestMsg(&rep, b->nc, req, timeout_ms);
	natsMsg_Destroy(req);
	if (s != NATS_OK) {
		char what[300];

		snprintf(what, sizeof(what), "request to %s", subject);
		set_nats_err(err, errlen, what, s, 0);
		return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS ? STATUS_UNAVAILABLE
		                                                    : STATUS_NATS;
	}
	*reply = (struct bus_msg *)rep;
	return STATUS_OK;
}

enum status
bus_publish_core(struct bus *b, const char *subject, const uint8_t *data, size_t len, char *err,
                 size_t errlen)
{
	natsStatus s = natsConnection_Publish(b->nc, subject, data, (int)len);

	if (s != NATS_OK) {
		set_nats_err(err, errlen, subject, s, 0);
		return STATUS_NATS;
	}
	return STATUS_OK;
}

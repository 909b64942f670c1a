/* NATS and JetStream: the only module that talks to nats.c. */
#include "bus.h"

#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define NS_PER_MS INT64_C(1000000)

struct bus {
	const struct config *cfg; /* settings (not owned) */
	natsConnection *nc;       /* the connection */
	jsCtx *js;                /* JetStream context on nc */
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

enum status
bus_connect(struct bus **out, const struct config *cfg, char *err, size_t errlen)
{
	natsOptions *opts = NULL;
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	struct bus *b = NULL;
	natsStatus s;
	enum status st = STATUS_OK;
	char target[512];

	config_redact_url(cfg->nats_url, target, sizeof(target));
	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetURL(opts, cfg->nats_url);
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
	if (s != NATS_OK) {
		char what[600];

		snprintf(what, sizeof(what), "nats_url %s", target);
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
	s = natsConnection_JetStream(&js, nc, NULL);
	if (s != NATS_OK) {
		set_nats_err(err, errlen, "JetStream context", s, 0);
		st = STATUS_NATS;
		goto cleanup;
	}
	b = calloc(1, sizeof(*b));
	if (b == NULL) {
		snprintf(err, errlen, "out of memory");
		st = STATUS_NOMEM;
		goto cleanup;
	}
	b->cfg = cfg;
	b->nc = nc;
	b->js = js;
	*out = b;
	nc = NULL;
	js = NULL;
cleanup:
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	natsOptions_Destroy(opts);
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

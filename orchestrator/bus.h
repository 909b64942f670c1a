/* NATS and JetStream: the only module that talks to nats.c. */
#ifndef SAGAD_BUS_H
#define SAGAD_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "status.h"

struct bus;

/* The JetStream streams sagad owns; names are "<stream_prefix>_<suffix>". */
enum bus_stream {
	BUS_STREAM_CMD = 0, /* step commands: <prefix>.cmd.>, work queue */
	BUS_STREAM_REPLY,   /* step replies: <prefix>.reply.>, work queue */
	BUS_STREAM_SUBMIT,  /* buffered starts: <prefix>.submit.>, work queue */
	BUS_STREAM_EVENT,   /* lifecycle events: <prefix>.event.>, limits + max age */
	BUS_STREAM_DLQ,     /* dead letters: <prefix>.dlq.>, limits + max age */
	BUS_STREAM_COUNT,   /* number of streams */
};

/* What a stream holds now (for sagactl status, metrics and tests). */
struct bus_stream_stats {
	char name[96];         /* stream name */
	uint64_t msgs;         /* messages stored */
	uint64_t bytes;        /* bytes stored */
	int64_t created_ns;    /* creation time, ns since the epoch (tells re-creation apart) */
	int64_t max_bytes;     /* configured byte limit */
	int64_t dup_window_ns; /* configured duplicate window */
};

/* What a durable consumer has in hand. */
struct bus_consumer_stats {
	char name[96];           /* durable name */
	int64_t created_ns;      /* creation time, ns since the epoch */
	uint64_t num_pending;    /* messages not yet delivered */
	int64_t num_ack_pending; /* delivered, not yet acked */
	int64_t num_redelivered; /* redelivered at least once */
};

/*
 * Connect to cfg->nats_url (bounded by cfg->connect_timeout_ms; reconnects for
 * ever afterwards). On failure *out is untouched and err names the server
 * (credentials redacted) and the reason: STATUS_UNAVAILABLE when no server
 * answers, STATUS_NATS otherwise. cfg must outlive the bus.
 */
enum status bus_connect(struct bus **out, const struct config *cfg, char *err,
                        size_t errlen) MUSTCHECK;

/* Drain nothing, close, free; NULL is a no-op. */
void bus_close(struct bus *b);

/*
 * Create sagad's streams and durable consumers if missing, or bring their
 * limits in line with cfg if they exist (idempotent; safe from several sagad
 * processes at once). *created receives how many streams and consumers were
 * new. Logs one line per stream saying created or found.
 */
enum status bus_ensure_topology(struct bus *b, int *created, char *err, size_t errlen) MUSTCHECK;

/* Name of stream which ("SAGA_CMD"), written to out. */
void bus_stream_name(const struct bus *b, enum bus_stream which, char *out, size_t outlen);

/* Read one stream's state. STATUS_NOT_FOUND when it does not exist. */
enum status bus_stream_stats(struct bus *b, enum bus_stream which, struct bus_stream_stats *out,
                             char *err, size_t errlen) MUSTCHECK;

/* Read one of sagad's consumers: which is BUS_STREAM_REPLY or BUS_STREAM_SUBMIT. */
enum status bus_consumer_stats(struct bus *b, enum bus_stream which, struct bus_consumer_stats *out,
                               char *err, size_t errlen) MUSTCHECK;

/* Round trip to the server: is NATS answering? */
enum status bus_ping(struct bus *b, char *err, size_t errlen) MUSTCHECK;

/* ---- messages ---- */

/* A received message (opaque; a natsMsg underneath). */
struct bus_msg;

/* A subscription: core request/reply (queue group) or a JetStream pull consumer. */
struct bus_sub;

/* One header to send. */
struct bus_header {
	const char *name;  /* header name */
	const char *value; /* value; NULL or "" = not sent */
};

/*
 * Subscribe to core NATS subject (wildcards allowed) in queue group queue (NULL: none),
 * synchronously: messages wait until bus_next pulls them.
 */
enum status bus_subscribe(struct bus *b, const char *subject, const char *queue,
                          struct bus_sub **out, char *err, size_t errlen) MUSTCHECK;

/* Bind to sagad's durable pull consumer on stream which (REPLY or SUBMIT). */
enum status bus_pull_subscribe(struct bus *b, enum bus_stream which, struct bus_sub **out,
                               char *err, size_t errlen) MUSTCHECK;

/* Unsubscribe and free; NULL is a no-op. */
void bus_unsubscribe(struct bus_sub *sub);

/*
 * Remove interest in a core subscription but keep the messages already
 * received: bus_next returns them, then fails. NULL is a no-op.
 */
void bus_drain(struct bus_sub *sub);

/*
 * Next message of a core subscription, waiting at most timeout_ms (0 = do not
 * wait). STATUS_TIMEOUT when none came. The caller frees *msg (bus_msg_free).
 */
enum status bus_next(struct bus_sub *sub, int timeout_ms, struct bus_msg **msg) MUSTCHECK;

/*
 * Fetch up to max messages from a pull subscription, waiting at most
 * timeout_ms for the first (0 = only what is there now). msgs receives them
 * (free each with bus_msg_free); *n how many. No message is not an error.
 */
enum status bus_fetch(struct bus_sub *sub, int max, int timeout_ms, struct bus_msg **msgs, int *n,
                      char *err, size_t errlen) MUSTCHECK;

/* Accessors. */
const uint8_t *bus_msg_data(const struct bus_msg *m);
size_t bus_msg_len(const struct bus_msg *m);
const char *bus_msg_subject(const struct bus_msg *m);
const char *bus_msg_reply(const struct bus_msg *m);
/* Value of header name, or NULL. */
const char *bus_msg_header(struct bus_msg *m, const char *name);
/* Headers as a JSON object into out (truncated safely). */
void bus_msg_headers_json(struct bus_msg *m, char *out, size_t outlen);
/* "STREAM:SEQ" of a JetStream message into out, or "" for a core message. */
void bus_msg_stream_seq(struct bus_msg *m, char *out, size_t outlen);
/* Times this JetStream message was delivered (1 the first time; 0 for core messages). */
uint64_t bus_msg_delivered(struct bus_msg *m);
/* Messages still waiting for the consumer after this one (0 for core messages or unknown). */
uint64_t bus_msg_pending(struct bus_msg *m);

/* Acknowledge (done), terminate (never redeliver), or nak (redeliver after delay_ms). */
void bus_ack(struct bus_msg *m);
void bus_term(struct bus_msg *m);
void bus_nak(struct bus_msg *m, int64_t delay_ms);
void bus_msg_free(struct bus_msg *m);

/* Answer a request message on its reply subject (core NATS). */
enum status bus_respond(struct bus *b, struct bus_msg *request, const struct bus_header *headers,
                        int n_headers, const uint8_t *data, size_t len) MUSTCHECK;

/*
 * Publish to JetStream without waiting for the ack; msg_id becomes
 * Nats-Msg-Id (dedupe). bus_publish_wait waits for all outstanding acks and
 * reports how many publishes failed since the last wait.
 */
enum status bus_publish_async(struct bus *b, const char *subject, const char *msg_id,
                              const struct bus_header *headers, int n_headers, const uint8_t *data,
                              size_t len, char *err, size_t errlen) MUSTCHECK;
enum status bus_publish_wait(struct bus *b, int timeout_ms, int *failed, char *err,
                             size_t errlen) MUSTCHECK;

/*
 * Publish one message to JetStream and wait for its ack (timeout_ms). On
 * failure *permanent is 1 when the message itself can never be stored (too
 * large for the connection or the stream), 0 when trying again may work.
 */
enum status bus_publish_one(struct bus *b, const char *subject, const char *msg_id,
                            const struct bus_header *headers, int n_headers, const uint8_t *data,
                            size_t len, int timeout_ms, int *permanent, char *err,
                            size_t errlen) MUSTCHECK;

/* Core NATS request/reply (for clients: sagactl, tests, benchmarks). *reply is freed by the caller. */
enum status bus_request(struct bus *b, const char *subject, const struct bus_header *headers,
                        int n_headers, const uint8_t *data, size_t len, int timeout_ms,
                        struct bus_msg **reply, char *err, size_t errlen) MUSTCHECK;

/* Publish on core NATS (no JetStream ack); for clients. */
enum status bus_publish_core(struct bus *b, const char *subject, const uint8_t *data, size_t len,
                             char *err, size_t errlen) MUSTCHECK;

#endif /* SAGAD_BUS_H */

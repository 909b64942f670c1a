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

#endif /* SAGAD_BUS_H */

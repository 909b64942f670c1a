/* Settings of sagad and sagactl: one table, defaults, environment, command line. */
#ifndef SAGAD_CONFIG_H
#define SAGAD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "status.h"

enum setting_type {
	SETTING_STRING,   /* free text (checked by an optional validator) */
	SETTING_SECRET,   /* text holding a credential: never printed as is */
	SETTING_INT,      /* integer within [min, max] */
	SETTING_DURATION, /* milliseconds; accepts "250ms", "30s", "2m", "1h", "1d" or plain ms */
	SETTING_BYTES,    /* bytes; accepts "512", "64KiB", "1MiB", "2GiB" (K/M/G also binary) */
	SETTING_BOOL,     /* true/false, on/off, yes/no, 1/0 */
	SETTING_ENUM,     /* one of a fixed list of words */
};

/* Everything sagad can be told. Strings are owned (config_free releases them). */
struct config {
	char *database_url;       /* libpq URL or key=value DSN of the saga database */
	char *db_schema;          /* schema holding sagad's tables; empty = the DSN's search_path */
	char *nats_url;           /* NATS server URL(s), comma-separated */
	char *nats_name;          /* connection name shown by the NATS server */
	char *nats_inbox_prefix;  /* reply inboxes; empty = _INBOX_<user> */
	char *subject_prefix;     /* first token(s) of every subject ("saga") */
	char *stream_prefix;      /* prefix of every JetStream stream name ("SAGA") */
	int64_t stream_replicas;  /* replicas of every stream (1 on a single server) */
	int64_t stream_max_bytes; /* byte limit of each work stream */
	int64_t stream_max_msg_size;  /* largest message a stream accepts */
	int64_t stream_dup_window_ms; /* JetStream duplicate window (Nats-Msg-Id dedupe) */
	int stream_discard;           /* 0 = "new" (refuse new messages when full), 1 = "old" */
	int64_t event_max_age_ms;     /* how long lifecycle events are kept */
	int64_t dlq_max_age_ms;       /* how long dead-letter messages are kept in their stream */
	int64_t consumer_ack_wait_ms; /* redelivery delay of unacked replies and submits */
	int64_t consumer_max_deliver; /* deliveries before JetStream gives up on a message */
	int64_t consumer_max_pending; /* MaxAckPending of sagad's consumers */
	int64_t max_payload;          /* largest saga input / step output sagad accepts */
	char *migrations_dir;         /* folder of NNNN_name.sql migrations */
	int64_t connect_timeout_ms;   /* how long to wait for PostgreSQL and NATS at start-up */
	int64_t shutdown_timeout_ms;  /* how long a SIGTERM may take before sagad exits */
	int64_t max_in_flight;        /* admission limit: sagas running or compensating */
	int64_t start_batch;          /* starts decided per transaction */
	int64_t reply_batch;          /* replies applied per transaction */
	int64_t saga_cache;           /* sagas kept in memory between events; 0 = off */
	int64_t timer_batch;          /* sagas woken per timer transaction */
	int64_t relay_batch;          /* outbox rows published per relay pass */
	int64_t timer_interval_ms;    /* how often due timers are polled when idle */
	char *http_listen;            /* HTTP API address "HOST:PORT" or "off" */
	char *http_token_file;        /* file with the HTTP API's bearer token; "" = none */
	int64_t breaker_failures;     /* consecutive failures that open a circuit; 0 = off */
	int64_t breaker_cooldown_ms;  /* how long an open circuit holds retries */
	char *fail_point;             /* fault injection: crash point name, or "off" */
	int64_t fail_point_after;     /* ... fires on this pass of the point */
	int log_level;                /* enum log_level */
};

/* One row of the settings table. */
struct setting {
	const char *name;                 /* setting name, as on the command line (--name=value) */
	enum setting_type type;           /* how the value is parsed */
	size_t offset;                    /* offset of the field in struct config */
	const char *def;                  /* default, as text */
	int64_t min;                      /* lower bound (INT, DURATION, BYTES) */
	int64_t max;                      /* upper bound (INT, DURATION, BYTES) */
	const char *const *words;         /* allowed words (ENUM), NULL-terminated */
	bool (*valid)(const char *value); /* extra check for STRING, or NULL */
	bool runtime;     /* may change while running (none yet: all need a restart) */
	const char *env;  /* environment variable overriding the default */
	const char *help; /* one line for --help */
};

/* The table, and its length in *count. */
const struct setting *config_settings(size_t *count);

/* Fill cfg with every default. Returns STATUS_NOMEM or STATUS_OK. */
enum status config_init(struct config *cfg) MUSTCHECK;

/* Release the strings of cfg; cfg may be half-filled; safe twice. */
void config_free(struct config *cfg);

/*
 * Set one setting from text. On a bad name or value returns STATUS_CONFIG and
 * writes "name: why" to err (never the value of a secret).
 */
enum status config_set(struct config *cfg, const char *name, const char *value, char *err,
                       size_t errlen) MUSTCHECK;

/* Apply every environment override that is set. Errors as config_set. */
enum status config_load_env(struct config *cfg, char *err, size_t errlen) MUSTCHECK;

/*
 * Apply leading "--name=value" / "--name value" options from argv[1..]; stops
 * at the first argument that is not an option (or after "--"), and stores its
 * index in *next. Errors as config_set; "--help" is not handled here.
 */
enum status config_parse_args(struct config *cfg, int argc, char **argv, int *next, char *err,
                              size_t errlen) MUSTCHECK;

/* Print the settings table (name, type, default, bounds, env, help). */
void config_print_help(FILE *out);

/* Parse helpers, exposed for tests and other modules. */
enum status config_parse_duration(const char *text, int64_t *out_ms) MUSTCHECK;
enum status config_parse_bytes(const char *text, int64_t *out) MUSTCHECK;

/*
 * Write a printable form of a database or NATS URL with any password replaced
 * by "***" (user names and hosts stay, for diagnosis).
 */
void config_redact_url(const char *url, char *out, size_t outlen);

/*
 * The reply-inbox prefix a NATS client should use: setting when not empty;
 * else "_INBOX_<user>" for the first URL of nats_url that carries
 * user:password@, when the user is a token ([A-Za-z0-9_-]{1,64}); else
 * "_INBOX". A per-user prefix lets the server grant each user subscribe on
 * its own inboxes only (docs/security.md). A lone "user@" is a NATS token:
 * it never ends up in a subject.
 */
void config_nats_inbox_prefix(const char *nats_url, const char *setting, char *out, size_t outlen);

/* True when s is a valid identifier token: [A-Za-z0-9_-]{1,64}. */
bool config_valid_token(const char *s);

#endif /* SAGAD_CONFIG_H */

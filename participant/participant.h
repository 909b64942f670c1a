/* Participant library; its own module boundary (it includes nats.h and libpq-fe.h itself). */
#ifndef SAGAD_PARTICIPANT_H
#define SAGAD_PARTICIPANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "saga.h"
#include "status.h"

/*
 * How it works, per batch of fetched commands (see participant_run_once):
 *
 *   decode every command, then one round trip: BEGIN, lock every key of the
 *   batch (in one order, so batches sharing keys never deadlock), look every
 *   key up in participant_ledger; then per command:
 *     found (or answered earlier in this batch): reuse the stored
 *                outcome/output/error (the handler is not called)
 *     not found: handler, whose first statement sets SAVEPOINT h in the same
 *                round trip; a failure rolls back to h, undoing its writes;
 *                SUCCESS and PERMANENT_FAILURE are recorded, a
 *                RETRYABLE_FAILURE is not
 *     compensation: also record a tombstone for the action's key (whatever the
 *                compensation's outcome), so an action that arrives after its
 *                compensation never runs; the tombstone is written under the
 *                action participant's consumer (action_subject / action_durable)
 *   -> one round trip: the batch's ledger rows and tombstones (one multi-row
 *      INSERT each), COMMIT -> publish the StepReplies (JetStream, async, the
 *      batch at once) -> ack each command once JetStream acked its reply.
 *   If the batch's transaction is lost (connection gone, a statement outside
 *   a handler failed), no reply goes out and every command is put back.
 *
 * The ledger table, created if missing:
 *   participant_ledger (consumer text, idempotency_key text, outcome smallint,
 *                       output bytea, error_code text, error_message text,
 *                       created_at timestamptz, PRIMARY KEY (consumer, idempotency_key))
 * where consumer is the durable consumer name of the participant.
 *
 * A participant is single-threaded: call its functions from one thread.
 * Several processes may serve the same subject (they share the durable
 * consumer and compete for commands); the ledger keeps them consistent.
 */

#define PARTICIPANT_NAME_MAX       64 /* durable and participant names */
#define PARTICIPANT_ERROR_CODE_MAX 64 /* StepReply.error_code kept in the ledger */

/* Settings of one participant. Zero / NULL fields take the default shown. */
struct participant_config {
	const char *nats_url;     /* required: NATS server URL(s), comma-separated */
	const char *inbox_prefix; /* NULL/"" = _INBOX_<user> of nats_url, else _INBOX */
	const char *database_url; /* required: libpq URL or key=value string */
	const char *db_schema;    /* NULL/"" = the search_path; else created if missing and used */
	const char *subject_prefix; /* NULL = "saga": commands on <prefix>.cmd.<subject> */
	const char *stream_prefix;  /* NULL = "SAGA": commands in stream <prefix>_CMD (sagad's) */
	const char *subject; /* required: action or compensation subject, e.g. "stock.reserve" */
	const char *durable; /* NULL = "p_" + subject with '.' -> '_' (also the ledger consumer) */
	const char *action_subject; /* compensation participants: the action subject they undo */
	const char *action_durable; /* its durable if not the default one; NULL = derived */
	const char *name;      /* StepReply.participant and NATS connection name; NULL = durable */
	const char *setup_sql; /* optional DDL run once by participant_open (e.g. CREATE TABLE) */
	int batch;             /* 0 = 64: commands fetched at once (1..1024) */
	int64_t ack_wait_ms;   /* 0 = 30000: redelivery delay of an unacked command */
	size_t max_payload;    /* 0 = 256 KiB: largest saga input / step output (as sagad's) */
	int64_t connect_timeout_ms; /* 0 = 5000: bound on connecting at start-up */
	int64_t nak_delay_ms; /* 0 = 1000: redelivery delay after a database or publish failure */
};

/* An open participant (opaque). */
struct participant;

/* The open transaction of one command, handed to the handler (opaque). */
struct participant_txn;

/*
 * What the handler answers besides the outcome. output is library-owned: set
 * it with participant_set_output (kept on SUCCESS only); the error fields
 * matter on failures (StepReply.error_code / error_message).
 */
struct participant_result {
	struct bytes output;                             /* the step output */
	char error_code[PARTICIPANT_ERROR_CODE_MAX + 1]; /* short machine-readable class */
	char error_message[SAGA_ERROR_MAX + 1];          /* for humans */
	size_t max_output;                               /* set by the library: output limit */
};

/*
 * The business logic of one subject. Runs inside the command's transaction,
 * after SAVEPOINT h; it may write through participant_exec / participant_query
 * (same transaction: committed together with the ledger row, or rolled back).
 * It must not end the transaction (no COMMIT, ROLLBACK or savepoint release).
 * arg is the pointer given to participant_open; cmd and everything it points
 * to are valid only during the call. Return:
 *   OUTCOME_SUCCESS           the effect happened; res->output is the step output
 *   OUTCOME_PERMANENT_FAILURE the step can never succeed; the handler's writes
 *                             are rolled back, the failure is recorded and
 *                             returned to every later delivery of the key
 *   OUTCOME_RETRYABLE_FAILURE transient; writes rolled back, nothing recorded
 *                             (the next attempt calls the handler again)
 * Any other value is treated as a retryable failure (and logged).
 */
typedef enum reply_outcome (*participant_handler)(void *arg, struct participant_txn *tx,
                                                  const struct command_msg *cmd,
                                                  struct participant_result *res);

/* Set every field of cfg to its default (zero / NULL). */
void participant_config_init(struct participant_config *cfg);

/*
 * The default durable name of a subject: "p_" + subject with '.' -> '_'
 * ("stock.reserve" -> "p_stock_reserve"). STATUS_INVALID when subject is not
 * a valid subject suffix or the name does not fit in outlen.
 */
enum status participant_default_durable(const char *subject, char *out, size_t outlen) MUSTCHECK;

/*
 * Open a participant: check cfg, connect to PostgreSQL (schema created if
 * missing, search_path set), create participant_ledger if missing and run
 * cfg->setup_sql (serialised by an advisory lock, so several participants may
 * start at once), connect to NATS (replies to its requests on inboxes
 * <inbox_prefix>.>), create or update the durable pull consumer on
 * <stream_prefix>_CMD (filter <subject_prefix>.cmd.<subject>, explicit ack,
 * ack wait, unlimited deliveries) and subscribe to it. The consumer is made
 * through $JS.API.CONSUMER.CREATE.<stream>.<durable>.<filter> (nats-server
 * 2.9+), whose subject names the filter, so the server can allow this
 * participant's user exactly its own consumers (docs/security.md). The stream
 * itself is sagad's: it is never created here.
 *
 * handler and arg are kept for participant_run_once; cfg's strings are copied
 * (cfg need not outlive the call).
 *
 * On success *out is a new participant (free with participant_close). On
 * failure *out is untouched and err holds one line naming the server (never a
 * password) and the reason:
 *   STATUS_CONFIG       a setting is missing or invalid
 *   STATUS_UNAVAILABLE  PostgreSQL or NATS cannot be reached
 *   STATUS_NOT_FOUND    the command stream does not exist (run `sagad check`)
 *   STATUS_DB           the ledger / setup SQL failed
 *   STATUS_NATS         the consumer or subscription could not be set up
 *   STATUS_NOMEM        out of memory
 */
enum status participant_open(struct participant **out, const struct participant_config *cfg,
                             participant_handler handler, void *arg, char *err,
                             size_t errlen) MUSTCHECK;

/*
 * Fetch up to batch commands, waiting at most timeout_ms (> 0) for the first,
 * and deal with each: run it (or reuse its recorded reply) in the batch's
 * transaction (its handler under its own savepoint), publish the replies,
 * then ack the commands whose replies JetStream acknowledged. A command that
 * cannot be decoded or breaks a rule
 * (larger than max_payload * (SAGA_MAX_STEPS + 1) + 64 KiB, a reply subject
 * outside <subject_prefix>.reply., a correlation id unfit for a header) is
 * logged and terminated (never redelivered). A command whose batch
 * transaction or reply failed is put back (nak with delay) and redelivered
 * later. Every
 * log line about a command carries its saga id and correlation id.
 *
 * While a batch is being worked through, the commands still waiting are
 * marked in progress so the server does not redeliver them; one handler call
 * should still stay well under ack_wait_ms (a redelivery it causes is
 * harmless: the second delivery waits for the first and reuses its reply).
 *
 * *handled receives the number of commands taken from the stream (answered,
 * terminated or put back); 0 when none arrived in time, which is STATUS_OK.
 * Returns STATUS_OK when the batch was dealt with (individual problems are
 * logged here, not returned), STATUS_UNAVAILABLE when PostgreSQL or NATS is
 * down (then it has waited about timeout_ms; call again to retry: it
 * reconnects by itself), STATUS_NATS on another fetch error.
 */
enum status participant_run_once(struct participant *p, int64_t timeout_ms, int *handled) MUSTCHECK;

/* Unsubscribe (the durable consumer stays), disconnect, free. NULL is a no-op. */
void participant_close(struct participant *p);

/*
 * Release nats.c's process-wide resources (threads, caches). Call once, at
 * exit, after every participant is closed; the library cannot be used again.
 */
void participant_library_close(void);

/* The durable consumer name (= the ledger's consumer column); owned by p. */
const char *participant_durable(const struct participant *p);

/* The subject served (without prefix); owned by p. */
const char *participant_subject(const struct participant *p);

/*
 * Handler helper: run one parameterised statement in the command's
 * transaction. params are nparams NUL-terminated text values (NULL entry =
 * SQL NULL). STATUS_DUPLICATE on a unique violation, STATUS_DB_RETRY on a
 * transient error (serialisation, lost connection), STATUS_DB otherwise; err
 * then holds PostgreSQL's message. After a failure the transaction accepts no more
 * statements until the handler returns (the library rolls back to the
 * savepoint); a handler returning SUCCESS after a failed statement is turned
 * into a retryable failure, and a lost connection puts the command back.
 */
enum status participant_exec(struct participant_txn *tx, const char *sql, int nparams,
                             const char *const *params, char *err, size_t errlen) MUSTCHECK;

/*
 * Handler helper: like participant_exec for a query; copies the first column
 * of the first row as text into out (truncated to outlen - 1 bytes; "" for
 * NULL). STATUS_NOT_FOUND when there is no row.
 */
enum status participant_query(struct participant_txn *tx, const char *sql, int nparams,
                              const char *const *params, char *out, size_t outlen, char *err,
                              size_t errlen) MUSTCHECK;

/*
 * Handler helper: copy len bytes of output into res (replacing any earlier
 * output). STATUS_TOO_LARGE when len exceeds the participant's max_payload,
 * STATUS_NOMEM when out of memory; res is unchanged then.
 */
enum status participant_set_output(struct participant_result *res, const void *data,
                                   size_t len) MUSTCHECK;

/* Handler helper: set error_code (truncated) and a printf-formatted error_message. */
void participant_set_error(struct participant_result *res, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

#endif /* SAGAD_PARTICIPANT_H */

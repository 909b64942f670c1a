/* Participant library: commands in, deduplicated in the participant's transaction, replies out. */
#include "participant.h"

#include <libpq-fe.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"

#define NS_PER_MS                  INT64_C(1000000)
#define DEFAULT_SUBJECT_PREFIX     "saga"
#define DEFAULT_STREAM_PREFIX      "SAGA"
#define DEFAULT_BATCH              64
#define MAX_BATCH                  1024
#define DEFAULT_ACK_WAIT_MS        30000
#define DEFAULT_MAX_PAYLOAD        (256 * 1024)
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_NAK_DELAY_MS       1000
#define PREFIX_MAX                 64                  /* subject and stream prefixes */
#define MSG_ID_MAX                 (SAGA_KEY_MAX + 32) /* "reply:<key>:<attempt>" */
#define LOCK_KEY_MAX               (PARTICIPANT_NAME_MAX + SAGA_KEY_MAX + 2)

/* What becomes of one fetched command. */
enum fate {
	FATE_REPLY = 0, /* publish the reply; ack the command once JetStream acked the reply */
	FATE_TERM,      /* undecodable or invalid: terminate, never redeliver */
	FATE_NAK,       /* database trouble: put back for a later redelivery */
};

/* One fetched command of the batch in hand. */
struct slot {
	natsMsg *cmd;                  /* the command (owned by the fetched list) */
	natsMsg *reply;                /* reply to publish (ours until nats.c takes it) */
	enum fate fate;                /* see enum fate */
	bool publish_failed;           /* the reply was refused or not acked in time */
	char msg_id[MSG_ID_MAX];       /* Nats-Msg-Id of the reply */
	char saga_id[SAGA_ID_LEN + 1]; /* for log lines */
	char correlation_id[SAGA_CORRELATION_MAX + 1]; /* for log lines */
	char publish_error[192];                       /* why the publish failed */
};

struct participant {
	char subject_prefix[PREFIX_MAX + 1];            /* "saga" */
	char stream[PREFIX_MAX + 8];                    /* "<stream_prefix>_CMD" */
	char subject[SAGA_SUBJECT_MAX + 1];             /* served subject suffix */
	char filter[PREFIX_MAX + SAGA_SUBJECT_MAX + 8]; /* "<prefix>.cmd.<subject>" */
	char reply_prefix[PREFIX_MAX + 8];              /* "<prefix>.reply." */
	char durable[PARTICIPANT_NAME_MAX + 1];         /* consumer name = ledger consumer */
	char tomb_consumer[PARTICIPANT_NAME_MAX + 1];   /* ledger consumer of the undone action */
	bool tomb_configured;                /* action_subject or action_durable was given */
	bool tomb_warned;                    /* the "no action configured" warning was logged */
	char name[SAGA_CORRELATION_MAX + 1]; /* StepReply.participant */
	char inbox_prefix[PREFIX_MAX + 1];   /* reply inboxes: <inbox_prefix>.> */
	char *search_path_sql;               /* "SET search_path TO ..." or NULL */
	int batch;                           /* commands per fetch */
	int64_t ack_wait_ms;                 /* consumer ack wait */
	size_t max_payload;                  /* command / output size limit */
	int64_t connect_timeout_ms;          /* start-up connection bound */
	int64_t nak_delay_ms;                /* redelivery delay after a failure */
	participant_handler handler;         /* business logic */
	void *arg;                           /* its argument */
	PGconn *pg;                          /* PostgreSQL connection */
	bool db_down;                        /* the connection was lost; logged once */
	int64_t next_reset_ms;               /* earliest next reconnection attempt */
	int db_naks;                         /* commands put back in this batch because of it */
	natsConnection *nc;                  /* NATS connection */
	jsCtx *js;             /* JetStream context (publish error handler: on_publish_error) */
	natsSubscription *sub; /* pull subscription on the durable consumer */
	time_t async_err_at;   /* when an asynchronous NATS error was last logged */
	int async_err_quiet;   /* asynchronous NATS errors not logged since then */
	pthread_mutex_t mu;    /* guards collecting, slots[].publish_failed, async_err_* */
	bool mu_ready;         /* mu was initialised */
	bool collecting;       /* a batch's replies are in flight */
	struct slot *slots;    /* batch entries */
	int n_slots;           /* entries in use */
};

struct participant_txn {
	struct participant *p;   /* the participant */
	bool failed;             /* a handler statement failed: the transaction is aborted */
	enum status fail_status; /* how */
	char fail_error[256];    /* PostgreSQL's message */
};

/* ---- small helpers ---- */

static int64_t
now_unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Copy src into a fixed buffer; false when it does not fit. */
static bool
copy_to(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);

	if (n >= cap)
		return false;
	memcpy(dst, src, n + 1);
	return true;
}

/* nats.c's status and last error text, for err. */
static void
set_nats_err(char *err, size_t errlen, const char *what, natsStatus s, jsErrCode jerr)
{
	const char *detail = nats_GetLastError(NULL);
	const char *text = natsStatus_GetText(s);
	bool extra;

	/* nats.c prefixes its detail with "(file.c:line): ": keep only the words. */
	if (detail != NULL && detail[0] == '(' && strstr(detail, "): ") != NULL)
		detail = strstr(detail, "): ") + 3;
	extra = detail != NULL && detail[0] != '\0' && strcmp(detail, text) != 0;

	if (jerr != 0)
		snprintf(err, errlen, "%s: %s (JetStream error %d)%s%s", what, text, (int)jerr,
		         extra ? ": " : "", extra ? detail : "");
	else
		snprintf(err, errlen, "%s: %s%s%s", what, text, extra ? ": " : "",
		         extra ? detail : "");
}

/* libpq's message, first line only. */
static void
set_pg_err(char *err, size_t errlen, const char *what, const char *msg)
{
	size_t n = strcspn(msg, "\n");

	snprintf(err, errlen, "%s: %.*s", what, (int)n, msg);
}

/* SQLSTATE of a failed result -> our status (same mapping as the store). */
static enum status
pg_status(const PGresult *res, PGconn *conn)
{
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(conn) == CONNECTION_BAD)
		return STATUS_DB_RETRY;
	if (state == NULL)
		return STATUS_DB;
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	    strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0)
		return STATUS_DB_RETRY;
	if (strcmp(state, "23505") == 0)
		return STATUS_DUPLICATE;
	return STATUS_DB;
}

/* host, port, database and user of a connection string: never the password. */
static void
describe_target(const char *url, char *out, size_t outlen)
{
	PQconninfoOption *opts = PQconninfoParse(url, NULL);
	const char *host = NULL, *port = NULL, *db = NULL, *user = NULL;

	if (opts == NULL) {
		snprintf(out, outlen, "(unparsable connection string)");
		return;
	}
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL)
			continue;
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "dbname") == 0)
			db = o->val;
		else if (strcmp(o->keyword, "user") == 0)
			user = o->val;
	}
	snprintf(out, outlen, "host=%s port=%s dbname=%s user=%s", host ? host : "(default)",
	         port ? port : "5432", db ? db : "(default)", user ? user : "(default)");
	PQconninfoFree(opts);
}

/* Run one statement without parameters; COMMAND_OK or TUPLES_OK is success. */
static enum status
pg_exec(PGconn *conn, const char *sql, char *err, size_t errlen)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType rs = PQresultStatus(res);
	enum status st = STATUS_OK;

	if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
		st = pg_status(res, conn);
		set_pg_err(err, errlen, "PostgreSQL", PQerrorMessage(conn));
	}
	PQclear(res);
	return st;
}

/* ---- public helpers ---- */

void
participant_config_init(struct participant_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
}

enum status
participant_default_durable(const char *subject, char *out, size_t outlen)
{
	size_t n;

	if (subject == NULL || !saga_valid_subject(subject))
		return STATUS_INVALID;
	n = strlen(subject);
	if (n + 3 > outlen || n + 2 > PARTICIPANT_NAME_MAX)
		return STATUS_INVALID;
	out[0] = 'p';
	out[1] = '_';
	for (size_t i = 0; i <= n; i++)
		out[i + 2] = subject[i] == '.' ? '_' : subject[i];
	return STATUS_OK;
}

const char *
participant_durable(const struct participant *p)
{
	return p->durable;
}

const char *
participant_subject(const struct participant *p)
{
	return p->subject;
}

/* Replace res's output with a copy of data, whatever its size. */
static enum status
result_copy_output(struct participant_result *res, const void *data, size_t len)
{
	uint8_t *copy = malloc(len > 0 ? len : 1);

	if (copy == NULL)
		return STATUS_NOMEM;
	if (len > 0)
		memcpy(copy, data, len);
	free(res->output.data);
	res->output.data = copy;
	res->output.len = len;
	return STATUS_OK;
}

enum status
participant_set_output(struct participant_result *res, const void *data, size_t len)
{
	if (len > res->max_output)
		return STATUS_TOO_LARGE;
	return result_copy_output(res, data, len);
}

void
participant_set_error(struct participant_result *res, const char *code, const char *fmt, ...)
{
	va_list ap;

	snprintf(res->error_code, sizeof(res->error_code), "%s", code != NULL ? code : "");
	va_start(ap, fmt);
	vsnprintf(res->error_message, sizeof(res->error_message), fmt, ap);
	va_end(ap);
}

/* ---- handler SQL ---- */

/* Shared part of participant_exec / participant_query: NULL result when refused. */
static enum status
txn_run(struct participant_txn *tx, const char *sql, int nparams, const char *const *params,
        PGresult **out, char *err, size_t errlen)
{
	PGconn *conn = tx->p->pg;
	PGresult *res;
	ExecStatusType rs;
	enum status st;

	*out = NULL;
	if (tx->failed) {
		snprintf(err, errlen, "an earlier statement of this command failed: %s",
		         tx->fail_error);
		return tx->fail_status;
	}
	if (sql == NULL || nparams < 0 || (nparams > 0 && params == NULL)) {
		snprintf(err, errlen, "participant_exec: invalid arguments");
		return STATUS_INVALID;
	}
	res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	rs = PQresultStatus(res);
	if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK) {
		*out = res;
		return STATUS_OK;
	}
	st = pg_status(res, conn);
	set_pg_err(err, errlen, "PostgreSQL", PQresultErrorMessage(res));
	PQclear(res);
	tx->failed = true;
	tx->fail_status = st;
	snprintf(tx->fail_error, sizeof(tx->fail_error), "%s", err);
	return st;
}

enum status
participant_exec(struct participant_txn *tx, const char *sql, int nparams,
                 const char *const *params, char *err, size_t errlen)
{
	PGresult *res = NULL;
	enum status st = txn_run(tx, sql, nparams, params, &res, err, errlen);

	PQclear(res);
	return st;
}

enum status
participant_query(struct participant_txn *tx, const char *sql, int nparams,
                  const char *const *params, char *out, size_t outlen, char *err, size_t errlen)
{
	PGresult *res = NULL;
	enum status st = txn_run(tx, sql, nparams, params, &res, err, errlen);

	if (st != STATUS_OK)
		return st;
	if (PQntuples(res) == 0 || PQnfields(res) == 0) {
		st = STATUS_NOT_FOUND;
	} else if (outlen > 0) {
		snprintf(out, outlen, "%s", PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
	}
	PQclear(res);
	return st;
}

/* ---- opening ---- */

static enum status
apply_config(struct participant *p, const struct participant_config *cfg, char *err, size_t errlen)
{
	const char *sp = cfg->subject_prefix != NULL && cfg->subject_prefix[0] != '\0'
	                         ? cfg->subject_prefix
	                         : DEFAULT_SUBJECT_PREFIX;
	const char *tp = cfg->stream_prefix != NULL && cfg->stream_prefix[0] != '\0'
	                         ? cfg->stream_prefix
	                         : DEFAULT_STREAM_PREFIX;

	if (cfg->nats_url == NULL || cfg->nats_url[0] == '\0') {
		snprintf(err, errlen, "nats_url: required");
		return STATUS_CONFIG;
	}
	if (cfg->database_url == NULL || cfg->database_url[0] == '\0') {
		snprintf(err, errlen, "database_url: required");
		return STATUS_CONFIG;
	}
	if (cfg->subject == NULL || !saga_valid_subject(cfg->subject) ||
	    !copy_to(p->subject, sizeof(p->subject), cfg->subject)) {
		snprintf(
		        err, errlen,
		        "subject: use dot-separated tokens of [A-Za-z0-9_-], at most %d characters",
		        SAGA_SUBJECT_MAX);
		return STATUS_CONFIG;
	}
	if (!saga_valid_subject(sp) || strlen(sp) > PREFIX_MAX) {
		snprintf(err, errlen,
		         "subject_prefix: use dot-separated tokens of [A-Za-z0-9_-], at most %d "
		         "characters",
		         PREFIX_MAX);
		return STATUS_CONFIG;
	}
	if (!config_valid_token(tp) || strlen(tp) > PREFIX_MAX) {
		snprintf(err, errlen, "stream_prefix: use 1-%d of [A-Za-z0-9_-]", PREFIX_MAX);
		return STATUS_CONFIG;
	}
	copy_to(p->subject_prefix, sizeof(p->subject_prefix), sp);
	snprintf(p->stream, sizeof(p->stream), "%s_CMD", tp);
	snprintf(p->filter, sizeof(p->filter), "%s.cmd.%s", sp, p->subject);
	snprintf(p->reply_prefix, sizeof(p->reply_prefix), "%s.reply.", sp);

	if (cfg->durable != NULL && cfg->durable[0] != '\0') {
		if (!config_valid_token(cfg->durable) ||
		    !copy_to(p->durable, sizeof(p->durable), cfg->durable)) {
			snprintf(err, errlen, "durable: use 1-%d of [A-Za-z0-9_-]",
			         PARTICIPANT_NAME_MAX);
			return STATUS_CONFIG;
		}
	} else if (participant_default_durable(p->subject, p->durable, sizeof(p->durable)) !=
	           STATUS_OK) {
		snprintf(err, errlen, "subject: too long to derive a durable name; set durable");
		return STATUS_CONFIG;
	}

	/* Where compensations write the tombstone of the action they undo. */
	if (cfg->action_durable != NULL && cfg->action_durable[0] != '\0') {
		if (!config_valid_token(cfg->action_durable) ||
		    !copy_to(p->tomb_consumer, sizeof(p->tomb_consumer), cfg->action_durable)) {
			snprintf(err, errlen, "action_durable: use 1-%d of [A-Za-z0-9_-]",
			         PARTICIPANT_NAME_MAX);
			return STATUS_CONFIG;
		}
		p->tomb_configured = true;
	} else if (cfg->action_subject != NULL && cfg->action_subject[0] != '\0') {
		if (participant_default_durable(cfg->action_subject, p->tomb_consumer,
		                                sizeof(p->tomb_consumer)) != STATUS_OK) {
			snprintf(err, errlen, "action_subject: not a valid subject");
			return STATUS_CONFIG;
		}
		p->tomb_configured = true;
	} else {
		copy_to(p->tomb_consumer, sizeof(p->tomb_consumer), p->durable);
	}

	if (cfg->name != NULL && cfg->name[0] != '\0') {
		if (!saga_valid_key(cfg->name, SAGA_CORRELATION_MAX) ||
		    !copy_to(p->name, sizeof(p->name), cfg->name)) {
			snprintf(err, errlen, "name: use 1-%d of [A-Za-z0-9._:/+=@-]",
			         SAGA_CORRELATION_MAX);
			return STATUS_CONFIG;
		}
	} else {
		copy_to(p->name, sizeof(p->name), p->durable);
	}

	if (cfg->inbox_prefix != NULL && cfg->inbox_prefix[0] != '\0' &&
	    (!saga_valid_subject(cfg->inbox_prefix) || strlen(cfg->inbox_prefix) > PREFIX_MAX)) {
		snprintf(err, errlen,
		         "inbox_prefix: use dot-separated tokens of [A-Za-z0-9_-], at most %d "
		         "characters",
		         PREFIX_MAX);
		return STATUS_CONFIG;
	}
	config_nats_inbox_prefix(cfg->nats_url, cfg->inbox_prefix, p->inbox_prefix,
	                         sizeof(p->inbox_prefix));

	if (cfg->db_schema != NULL && strlen(cfg->db_schema) > 63) {
		snprintf(err, errlen, "db_schema: at most 63 characters (PostgreSQL's limit)");
		return STATUS_CONFIG;
	}
	p->batch = cfg->batch > 0 ? cfg->batch : DEFAULT_BATCH;
	p->ack_wait_ms = cfg->ack_wait_ms > 0 ? cfg->ack_wait_ms : DEFAULT_ACK_WAIT_MS;
	p->max_payload = cfg->max_payload > 0 ? cfg->max_payload : DEFAULT_MAX_PAYLOAD;
	p->connect_timeout_ms =
	        cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
	p->nak_delay_ms = cfg->nak_delay_ms > 0 ? cfg->nak_delay_ms : DEFAULT_NAK_DELAY_MS;
	if (p->batch > MAX_BATCH || cfg->batch < 0) {
		snprintf(err, errlen, "batch: must be 1-%d", MAX_BATCH);
		return STATUS_CONFIG;
	}
	if (cfg->ack_wait_ms < 0 || cfg->connect_timeout_ms < 0 || cfg->nak_delay_ms < 0) {
		snprintf(err, errlen,
		         "ack_wait_ms, connect_timeout_ms, nak_delay_ms: must not be negative");
		return STATUS_CONFIG;
	}
	if (p->max_payload > CODEC_MAX_MESSAGE) {
		snprintf(err, errlen, "max_payload: at most %d bytes", CODEC_MAX_MESSAGE);
		return STATUS_CONFIG;
	}
	p->slots = calloc((size_t)p->batch, sizeof(*p->slots));
	if (p->slots == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	return STATUS_OK;
}

/* PostgreSQL's notices ("already exists, skipping") go to the debug log, not raw to stderr. */
static void
on_pg_notice(void *arg, const char *message)
{
	(void)arg;
	log_debug("PostgreSQL: %.*s", (int)strcspn(message, "\n"), message);
}

static enum status
db_connect(struct participant *p, const char *url, const char *schema, char *err, size_t errlen)
{
	const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
	const char *vals[4];
	char timeout[32];
	char target[256];
	PQconninfoOption *parsed = PQconninfoParse(url, NULL);

	if (parsed == NULL) {
		snprintf(err, errlen, "database_url: not a valid connection string");
		return STATUS_CONFIG;
	}
	PQconninfoFree(parsed);
	/* libpq's connect_timeout is in whole seconds, at least 2. */
	snprintf(timeout, sizeof(timeout), "%lld",
	         (long long)(p->connect_timeout_ms < 2000 ? 2
	                                                  : (p->connect_timeout_ms + 999) / 1000));
	vals[0] = url;
	vals[1] = timeout;
	vals[2] = p->name;
	vals[3] = NULL;
	p->pg = PQconnectdbParams(keys, vals, 1);
	if (p->pg == NULL) {
		snprintf(err, errlen, "PostgreSQL: out of memory");
		return STATUS_NOMEM;
	}
	PQsetNoticeProcessor(p->pg, on_pg_notice, NULL);
	if (PQstatus(p->pg) != CONNECTION_OK) {
		char what[320];

		describe_target(url, target, sizeof(target));
		snprintf(what, sizeof(what), "cannot connect to PostgreSQL (%s)", target);
		set_pg_err(err, errlen, what, PQerrorMessage(p->pg));
		return STATUS_UNAVAILABLE;
	}
	if (schema != NULL && schema[0] != '\0') {
		char *ident = PQescapeIdentifier(p->pg, schema, strlen(schema));
		size_t n;

		if (ident == NULL) {
			set_pg_err(err, errlen, "db_schema", PQerrorMessage(p->pg));
			return STATUS_CONFIG;
		}
		n = strlen(ident) + 32;
		p->search_path_sql = malloc(n);
		if (p->search_path_sql == NULL) {
			PQfreemem(ident);
			snprintf(err, errlen, "out of memory");
			return STATUS_NOMEM;
		}
		snprintf(p->search_path_sql, n, "SET search_path TO %s", ident);
		PQfreemem(ident);
		if (pg_exec(p->pg, p->search_path_sql, err, errlen) != STATUS_OK)
			return STATUS_DB;
	}
	return STATUS_OK;
}

/* Schema, ledger and the caller's DDL, under a lock so that participants may start together. */
static enum status
db_setup(struct participant *p, const char *schema, const char *setup_sql, char *err, size_t errlen)
{
	enum status st;
	char ignored[64];

	st = pg_exec(p->pg, "BEGIN", err, errlen);
	if (st == STATUS_OK)
		st = pg_exec(p->pg,
		             "SELECT pg_advisory_xact_lock(hashtext('saga.participant.setup'))",
		             err, errlen);
	if (st == STATUS_OK && schema != NULL && schema[0] != '\0') {
		char *ident = PQescapeIdentifier(p->pg, schema, strlen(schema));
		char sql[256];

		if (ident == NULL) {
			set_pg_err(err, errlen, "db_schema", PQerrorMessage(p->pg));
			st = STATUS_CONFIG;
		} else {
			snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS %s", ident);
			PQfreemem(ident);
			st = pg_exec(p->pg, sql, err, errlen);
		}
	}
	if (st == STATUS_OK)
		st = pg_exec(p->pg,
		             "CREATE TABLE IF NOT EXISTS participant_ledger ("
		             " consumer text,"
		             " idempotency_key text,"
		             " outcome smallint NOT NULL,"
		             " output bytea,"
		             " error_code text,"
		             " error_message text,"
		             " created_at timestamptz NOT NULL DEFAULT now(),"
		             " PRIMARY KEY (consumer, idempotency_key))",
		             err, errlen);
	if (st == STATUS_OK && setup_sql != NULL && setup_sql[0] != '\0') {
		st = pg_exec(p->pg, setup_sql, err, errlen);
		if (st != STATUS_OK) {
			char inner[400];

			snprintf(inner, sizeof(inner), "%s", err);
			snprintf(err, errlen, "setup_sql: %s", inner);
		}
	}
	if (st == STATUS_OK)
		st = pg_exec(p->pg, "COMMIT", err, errlen);
	if (st != STATUS_OK) {
		if (pg_exec(p->pg, "ROLLBACK", ignored, sizeof(ignored)) != STATUS_OK) {
			/* The connection is gone; the server rolls back on its own. */
		}
		return st == STATUS_CONFIG ? st : STATUS_DB;
	}
	return STATUS_OK;
}

/* Marks the replies whose Nats-Msg-Id is msg_id as failed, while a batch is in flight. */
static void
mark_publish_failed(struct participant *p, const char *msg_id, const char *why)
{
	pthread_mutex_lock(&p->mu);
	if (p->collecting) {
		for (int i = 0; i < p->n_slots; i++) {
			struct slot *sl = &p->slots[i];

			if (sl->fate != FATE_REPLY || strcmp(sl->msg_id, msg_id) != 0)
				continue;
			sl->publish_failed = true;
			snprintf(sl->publish_error, sizeof(sl->publish_error), "%s", why);
		}
	}
	pthread_mutex_unlock(&p->mu);
}

/* nats.c calls this on its own thread when JetStream refuses an async publish. */
static void
on_publish_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
	struct participant *p = closure;
	const char *id = NULL;
	char why[192];

	(void)js;
	if (pae->Msg == NULL || natsMsgHeader_Get(pae->Msg, HDR_MSG_ID, &id) != NATS_OK ||
	    id == NULL)
		return;
	if (pae->ErrCode != 0)
		snprintf(why, sizeof(why), "%s (JetStream error %d)",
		         pae->ErrText != NULL ? pae->ErrText : natsStatus_GetText(pae->Err),
		         (int)pae->ErrCode);
	else
		snprintf(why, sizeof(why), "%s",
		         pae->ErrText != NULL ? pae->ErrText : natsStatus_GetText(pae->Err));
	mark_publish_failed(p, id, why);
}

/*
 * nats.c calls this on its own thread for errors no call returns: above all a
 * permission violation (the server refused a publish or subscription). At most
 * one line a second, so a refused subject polled in a loop cannot flood the log.
 */
static void
on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	struct participant *p = closure;
	const char *text = NULL;
	time_t now = time(NULL);
	int quiet = -1;

	(void)sub;
	pthread_mutex_lock(&p->mu);
	if (now != p->async_err_at) {
		quiet = p->async_err_quiet;
		p->async_err_at = now;
		p->async_err_quiet = 0;
	} else {
		p->async_err_quiet++;
	}
	pthread_mutex_unlock(&p->mu);
	if (quiet < 0)
		return;
	if (natsConnection_GetLastError(nc, &text) == NATS_OK || text == NULL || text[0] == '\0')
		text = natsStatus_GetText(err);
	if (err == NATS_NOT_PERMITTED)
		log_error("participant %s: NATS refused an operation: %s (this user lacks the "
		          "permission)%s",
		          p->durable, text, quiet > 0 ? " (and earlier errors not logged)" : "");
	else
		log_warn("participant %s: NATS asynchronous error: %s%s", p->durable, text,
		         quiet > 0 ? " (and earlier errors not logged)" : "");
}

static void
on_disconnected(natsConnection *nc, void *closure)
{
	struct participant *p = closure;

	if (natsConnection_IsClosed(nc))
		return; /* participant_close: nothing to report */
	log_warn("participant %s: disconnected from NATS, reconnecting", p->durable);
}

static void
on_reconnected(natsConnection *nc, void *closure)
{
	struct participant *p = closure;

	(void)nc;
	log_info("participant %s: reconnected to NATS", p->durable);
}

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

static enum status
nats_connect(struct participant *p, const char *url, char *err, size_t errlen)
{
	natsOptions *opts = NULL;
	jsOptions jo;
	natsStatus s;
	enum status st = STATUS_OK;
	char target[512];
	char what[600];

	config_redact_url(url, target, sizeof(target));
	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = set_urls(opts, url);
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, p->name);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, p->connect_timeout_ms);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1); /* once up, never give up */
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, 250);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(opts, on_disconnected, p);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(opts, on_reconnected, p);
	/* Deliveries and API answers come to inboxes only this user may read. */
	if (s == NATS_OK)
		s = natsOptions_SetCustomInboxPrefix(opts, p->inbox_prefix);
	if (s == NATS_OK)
		s = natsOptions_SetErrorHandler(opts, on_async_error, p);
	if (s != NATS_OK) {
		snprintf(what, sizeof(what), "nats_url %s (inbox prefix %s)", target,
		         p->inbox_prefix);
		set_nats_err(err, errlen, what, s, 0);
		st = STATUS_CONFIG;
		goto cleanup;
	}
	s = natsConnection_Connect(&p->nc, opts);
	if (s != NATS_OK) {
		snprintf(what, sizeof(what), "cannot connect to NATS at %s", target);
		set_nats_err(err, errlen, what, s, 0);
		st = s == NATS_NO_SERVER || s == NATS_TIMEOUT ? STATUS_UNAVAILABLE : STATUS_NATS;
		goto cleanup;
	}
	jsOptions_Init(&jo);
	jo.PublishAsync.ErrHandler = on_publish_error;
	jo.PublishAsync.ErrHandlerClosure = p;
	s = natsConnection_JetStream(&p->js, p->nc, &jo);
	if (s != NATS_OK) {
		set_nats_err(err, errlen, "JetStream context", s, 0);
		st = STATUS_NATS;
	}
cleanup:
	natsOptions_Destroy(opts);
	return st;
}

/* Create the durable pull consumer, or bring an existing one in line with the settings. */
static enum status
ensure_consumer(struct participant *p, char *err, size_t errlen)
{
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	char what[256];
	natsStatus s;

	jsConsumerConfig_Init(&cc);
	/*
	 * Name as well as Durable: nats.c then creates and updates through
	 * $JS.API.CONSUMER.CREATE.<stream>.<durable>.<filter>, whose subject
	 * carries the filter, so the server can allow this user its own
	 * consumer with its own filter and nothing else (docs/security.md).
	 */
	cc.Name = p->durable;
	cc.Durable = p->durable;
	cc.FilterSubject = p->filter;
	cc.AckPolicy = js_AckExplicit;
	cc.DeliverPolicy = js_DeliverAll;
	cc.AckWait = p->ack_wait_ms * NS_PER_MS;
	cc.MaxDeliver = -1; /* the ledger makes redelivery harmless; bad commands are terminated */

	s = js_GetConsumerInfo(&ci, p->js, p->stream, p->durable, NULL, &jerr);
	if (s == NATS_OK) {
		const jsConsumerConfig *have = ci->Config;
		bool same = have != NULL && have->AckWait == cc.AckWait && have->MaxDeliver <= 0 &&
		            have->AckPolicy == js_AckExplicit && have->FilterSubject != NULL &&
		            strcmp(have->FilterSubject, p->filter) == 0;

		jsConsumerInfo_Destroy(ci);
		ci = NULL;
		if (same)
			return STATUS_OK;
		jerr = 0;
		s = js_UpdateConsumer(&ci, p->js, p->stream, &cc, NULL, &jerr);
		if (s != NATS_OK) {
			snprintf(what, sizeof(what), "updating consumer %s on %s", p->durable,
			         p->stream);
			set_nats_err(err, errlen, what, s, jerr);
			return STATUS_NATS;
		}
		log_info("consumer %s on %s updated (filter %s)", p->durable, p->stream, p->filter);
		jsConsumerInfo_Destroy(ci);
		return STATUS_OK;
	}
	if (jerr == JSStreamNotFoundErr) {
		snprintf(err, errlen,
		         "stream %s not found: sagad creates it (run `sagad check` or `sagad run` "
		         "first)",
		         p->stream);
		return STATUS_NOT_FOUND;
	}
	if (jerr != JSConsumerNotFoundErr) {
		snprintf(what, sizeof(what), "looking up consumer %s on %s", p->durable, p->stream);
		set_nats_err(err, errlen, what, s, jerr);
		return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS ? STATUS_UNAVAILABLE
		                                                    : STATUS_NATS;
	}
	jerr = 0;
	s = js_AddConsumer(&ci, p->js, p->stream, &cc, NULL, &jerr);
	if (s != NATS_OK) {
		snprintf(what, sizeof(what), "creating consumer %s on %s", p->durable, p->stream);
		set_nats_err(err, errlen, what, s, jerr);
		return STATUS_NATS;
	}
	log_info("consumer %s on %s created (filter %s)", p->durable, p->stream, p->filter);
	jsConsumerInfo_Destroy(ci);
	return STATUS_OK;
}

static enum status
subscribe(struct participant *p, char *err, size_t errlen)
{
	jsSubOptions so;
	jsErrCode jerr = 0;
	natsStatus s;
	char what[256];

	jsSubOptions_Init(&so);
	so.Stream = p->stream;
	so.Consumer = p->durable; /* bind: the consumer exists (ensure_consumer) */
	s = js_PullSubscribe(&p->sub, p->js, p->filter, p->durable, NULL, &so, &jerr);
	if (s != NATS_OK) {
		snprintf(what, sizeof(what), "subscribing to consumer %s on %s", p->durable,
		         p->stream);
		set_nats_err(err, errlen, what, s, jerr);
		return STATUS_NATS;
	}
	return STATUS_OK;
}

enum status
participant_open(struct participant **out, const struct participant_config *cfg,
                 participant_handler handler, void *arg, char *err, size_t errlen)
{
	struct participant *p;
	enum status st;

	if (cfg == NULL || handler == NULL) {
		snprintf(err, errlen,
		         "participant_open: a configuration and a handler are required");
		return STATUS_CONFIG;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	if (pthread_mutex_init(&p->mu, NULL) != 0) {
		free(p);
		snprintf(err, errlen, "cannot create a mutex");
		return STATUS_NOMEM;
	}
	p->mu_ready = true;
	p->handler = handler;
	p->arg = arg;
	st = apply_config(p, cfg, err, errlen);
	if (st == STATUS_OK)
		st = db_connect(p, cfg->database_url, cfg->db_schema, err, errlen);
	if (st == STATUS_OK)
		st = db_setup(p, cfg->db_schema, cfg->setup_sql, err, errlen);
	if (st == STATUS_OK)
		st = nats_connect(p, cfg->nats_url, err, errlen);
	if (st == STATUS_OK)
		st = ensure_consumer(p, err, errlen);
	if (st == STATUS_OK)
		st = subscribe(p, err, errlen);
	if (st != STATUS_OK) {
		participant_close(p);
		return st;
	}
	log_info("participant %s: serving %s (stream %s, consumer %s)", p->name, p->filter,
	         p->stream, p->durable);
	*out = p;
	return STATUS_OK;
}

void
participant_close(struct participant *p)
{
	if (p == NULL)
		return;
	/* The durable consumer stays: it is bound, not created for this subscription. */
	natsSubscription_Destroy(p->sub);
	if (p->js != NULL) {
		jsPubOptions po;

		/* A publish error callback may still be running on nats.c's thread: let it end. */
		jsPubOptions_Init(&po);
		po.MaxWait = 1000;
		if (js_PublishAsyncComplete(p->js, &po) != NATS_OK) {
			/* Nothing is waiting on those replies any more. */
		}
		jsCtx_Destroy(p->js);
	}
	if (p->nc != NULL) {
		/* Push out the last acks before closing (no point while disconnected). */
		if (natsConnection_Status(p->nc) == NATS_CONN_STATUS_CONNECTED &&
		    natsConnection_FlushTimeout(p->nc, 1000) != NATS_OK) {
			/* Unacked commands are redelivered; their recorded replies are re-sent. */
		}
		natsConnection_Close(p->nc);
		natsConnection_Destroy(p->nc);
	}
	PQfinish(p->pg);
	free(p->search_path_sql);
	free(p->slots);
	if (p->mu_ready)
		pthread_mutex_destroy(&p->mu);
	free(p);
}

void
participant_library_close(void)
{
	nats_Close();
}

/* ---- one command ---- */

/* Database usable? Reconnects a lost connection; logs only the transitions. */
static bool
db_ready(struct participant *p)
{
	char err[512];

	if (!p->db_down && PQstatus(p->pg) == CONNECTION_OK)
		return true;
	if (!p->db_down) {
		p->db_down = true;
		set_pg_err(err, sizeof(err), "PostgreSQL connection lost", PQerrorMessage(p->pg));
		log_error("participant %s: %s; commands wait until it is back", p->durable, err);
	}
	/* At most one reconnection attempt a second, however often we are called. */
	if (now_unix_ms() < p->next_reset_ms)
		return false;
	p->next_reset_ms = now_unix_ms() + 1000;
	PQreset(p->pg);
	if (PQstatus(p->pg) != CONNECTION_OK)
		return false;
	if (p->search_path_sql != NULL &&
	    pg_exec(p->pg, p->search_path_sql, err, sizeof(err)) != STATUS_OK)
		return false;
	p->db_down = false;
	log_info("participant %s: reconnected to PostgreSQL", p->durable);
	return true;
}

/* A database failure: note whether the connection itself is gone (then logged once). */
static void
db_failed(struct participant *p, const char *err)
{
	if (PQstatus(p->pg) == CONNECTION_OK || p->db_down)
		return;
	p->db_down = true;
	log_error("participant %s: PostgreSQL connection lost (%s); commands are put back until it "
	          "is back",
	          p->durable, err);
}

/* The action key a compensation key undoes: ".../c" -> ".../a". */
static bool
action_key_of(const char *key, char *out, size_t outlen)
{
	size_t n = strlen(key);

	if (n < 2 || strcmp(key + n - 2, "/c") != 0 || n >= outlen)
		return false;
	memcpy(out, key, n + 1);
	out[n - 1] = 'a';
	return true;
}

/* Transaction-scoped lock on one ledger key: deliveries of one key run one after the other. */
static enum status
lock_key(struct participant *p, const char *consumer, const char *key, char *err, size_t errlen)
{
	char lock[LOCK_KEY_MAX + 1];
	const char *params[1] = {lock};
	PGresult *res;
	enum status st = STATUS_OK;

	snprintf(lock, sizeof(lock), "%s %s", consumer, key);
	res = PQexecParams(p->pg, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", 1, NULL,
	                   params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		st = pg_status(res, p->pg);
		set_pg_err(err, errlen, "locking the idempotency key", PQresultErrorMessage(res));
	}
	PQclear(res);
	return st;
}

/*
 * Look the key up. STATUS_OK with the stored outcome, output and error in
 * *outcome / res; STATUS_NOT_FOUND when the key is new.
 */
static enum status
ledger_lookup(struct participant *p, const char *key, enum reply_outcome *outcome,
              struct participant_result *res, char *err, size_t errlen)
{
	const char *params[2] = {p->durable, key};
	PGresult *r;
	enum status st = STATUS_OK;
	const unsigned char *v;
	int out;

	r = PQexecParams(p->pg,
	                 "SELECT outcome, output, error_code, error_message FROM participant_ledger"
	                 " WHERE consumer = $1 AND idempotency_key = $2 FOR UPDATE",
	                 2, NULL, params, NULL, NULL, 1 /* binary results: bytea as is */);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		st = pg_status(r, p->pg);
		set_pg_err(err, errlen, "reading participant_ledger", PQresultErrorMessage(r));
		goto cleanup;
	}
	if (PQntuples(r) == 0) {
		st = STATUS_NOT_FOUND;
		goto cleanup;
	}
	v = (const unsigned char *)PQgetvalue(r, 0, 0);
	out = PQgetlength(r, 0, 0) == 2 ? (int)(int16_t)(uint16_t)((v[0] << 8) | v[1]) : 0;
	if (out != OUTCOME_SUCCESS && out != OUTCOME_PERMANENT_FAILURE) {
		snprintf(err, errlen, "participant_ledger: stored outcome %d is not a final one",
		         out);
		st = STATUS_DB;
		goto cleanup;
	}
	*outcome = (enum reply_outcome)out;
	if (out == OUTCOME_SUCCESS && !PQgetisnull(r, 0, 1)) {
		/* Recorded earlier: sent as it is, even if max_payload was lowered since. */
		st = result_copy_output(res, PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1));
		if (st != STATUS_OK) {
			snprintf(err, errlen, "participant_ledger: stored output: %s",
			         status_name(st));
			goto cleanup;
		}
	}
	if (!PQgetisnull(r, 0, 2))
		snprintf(res->error_code, sizeof(res->error_code), "%.*s", PQgetlength(r, 0, 2),
		         PQgetvalue(r, 0, 2));
	if (!PQgetisnull(r, 0, 3))
		snprintf(res->error_message, sizeof(res->error_message), "%.*s",
		         PQgetlength(r, 0, 3), PQgetvalue(r, 0, 3));
cleanup:
	PQclear(r);
	return st;
}

static enum status
ledger_insert(struct participant *p, const char *key, enum reply_outcome outcome,
              const struct participant_result *res, char *err, size_t errlen)
{
	char oc[8];
	const char *params[6];
	int lengths[6] = {0};
	int formats[6] = {0};
	PGresult *r;
	enum status st = STATUS_OK;

	snprintf(oc, sizeof(oc), "%d", (int)outcome);
	params[0] = p->durable;
	params[1] = key;
	params[2] = oc;
	params[3] = outcome == OUTCOME_SUCCESS && res->output.len > 0
	                    ? (const char *)res->output.data
	                    : NULL;
	lengths[3] = (int)res->output.len;
	formats[3] = 1; /* binary bytea */
	params[4] = res->error_code[0] != '\0' ? res->error_code : NULL;
	params[5] = res->error_message[0] != '\0' ? res->error_message : NULL;
	r = PQexecParams(p->pg,
	                 "INSERT INTO participant_ledger"
	                 " (consumer, idempotency_key, outcome, output, error_code, error_message)"
	                 " VALUES ($1, $2, $3, $4, $5, $6)",
	                 6, NULL, params, lengths, formats, 0);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		st = pg_status(r, p->pg);
		set_pg_err(err, errlen, "recording the outcome", PQresultErrorMessage(r));
	}
	PQclear(r);
	return st;
}

/* Compensation seen: the action of the same step must never run after it. */
static enum status
ledger_tombstone(struct participant *p, const char *action_key, char *err, size_t errlen)
{
	const char *params[2] = {p->tomb_consumer, action_key};
	PGresult *r;
	enum status st = STATUS_OK;

	r = PQexecParams(p->pg,
	                 "INSERT INTO participant_ledger"
	                 " (consumer, idempotency_key, outcome, error_code, error_message)"
	                 " VALUES ($1, $2, 3, 'compensated',"
	                 " 'the step was compensated; its action must not run any more')"
	                 " ON CONFLICT DO NOTHING",
	                 2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		st = pg_status(r, p->pg);
		set_pg_err(err, errlen, "recording the tombstone", PQresultErrorMessage(r));
	}
	PQclear(r);
	return st;
}

/* How the command's transaction ended, for the log line. */
enum txn_path {
	PATH_HANDLED = 0, /* the handler ran */
	PATH_STORED,      /* the recorded reply was reused */
};

/*
 * One command inside the batch's transaction, under its own savepoint: lock,
 * look up, run the handler or reuse the stored reply, record. On failure the
 * command's work is rolled back to its savepoint and err says why (the caller
 * puts the command back); the rest of the batch goes on. The batch commits
 * once (participant_run_once), so a batch costs one WAL flush, not one each.
 */
static enum status
run_transaction(struct participant *p, const struct command_msg *cmd,
                struct participant_result *res, enum reply_outcome *outcome, enum txn_path *path,
                char *err, size_t errlen)
{
	struct participant_txn tx = {.p = p};
	char action_key[SAGA_KEY_MAX + 1];
	bool tomb = false;
	enum reply_outcome out;
	enum status st;
	char ignored[64];

	if (cmd->phase == PHASE_COMPENSATION) {
		tomb = action_key_of(cmd->idempotency_key, action_key, sizeof(action_key));
		if (tomb && !p->tomb_configured && !p->tomb_warned) {
			p->tomb_warned = true;
			log_saga(LOG_WARN, cmd->saga_id, cmd->correlation_id,
			         "participant %s: compensation received but no action_subject is "
			         "configured: the tombstone is written under %s",
			         p->durable, p->tomb_consumer);
		}
	}
	st = pg_exec(p->pg, "SAVEPOINT c", err, errlen);
	if (st != STATUS_OK)
		return st;
	/* Always the action's key first, then our own: the same order everywhere. */
	if (tomb) {
		st = lock_key(p, p->tomb_consumer, action_key, err, errlen);
		if (st != STATUS_OK)
			goto rollback;
	}
	st = lock_key(p, p->durable, cmd->idempotency_key, err, errlen);
	if (st != STATUS_OK)
		goto rollback;
	st = ledger_lookup(p, cmd->idempotency_key, outcome, res, err, errlen);
	if (st == STATUS_OK) {
		*path = PATH_STORED;
		goto commit;
	}
	if (st != STATUS_NOT_FOUND)
		goto rollback;
	*path = PATH_HANDLED;
	if (tomb) {
		st = ledger_tombstone(p, action_key, err, errlen);
		if (st != STATUS_OK)
			goto rollback;
	}
	st = pg_exec(p->pg, "SAVEPOINT h", err, errlen);
	if (st != STATUS_OK)
		goto rollback;

	out = p->handler(p->arg, &tx, cmd, res);

	if (tx.failed && PQstatus(p->pg) != CONNECTION_OK) {
		snprintf(err, errlen, "%s", tx.fail_error);
		st = STATUS_DB_RETRY;
		goto rollback;
	}
	if (out != OUTCOME_SUCCESS && out != OUTCOME_RETRYABLE_FAILURE &&
	    out != OUTCOME_PERMANENT_FAILURE) {
		log_saga(LOG_ERROR, cmd->saga_id, cmd->correlation_id,
		         "participant %s: handler returned %d, not an outcome: treated as a "
		         "retryable failure",
		         p->durable, (int)out);
		participant_set_error(res, "handler_error",
		                      "the handler returned no valid outcome");
		out = OUTCOME_RETRYABLE_FAILURE;
	}
	if (out == OUTCOME_SUCCESS && tx.failed) {
		log_saga(LOG_WARN, cmd->saga_id, cmd->correlation_id,
		         "participant %s: handler reported success after a failed statement (%s): "
		         "treated as a retryable failure",
		         p->durable, tx.fail_error);
		participant_set_error(res, "db_error", "%s", tx.fail_error);
		out = OUTCOME_RETRYABLE_FAILURE;
	}
	if (out != OUTCOME_SUCCESS) {
		/* Undo whatever the handler wrote; a failure carries no output. */
		st = pg_exec(p->pg, "ROLLBACK TO SAVEPOINT h", err, errlen);
		if (st != STATUS_OK)
			goto rollback;
		free(res->output.data);
		res->output.data = NULL;
		res->output.len = 0;
	}
	if (out != OUTCOME_RETRYABLE_FAILURE) {
		st = ledger_insert(p, cmd->idempotency_key, out, res, err, errlen);
		if (st != STATUS_OK)
			goto rollback;
	}
	*outcome = out;
commit:
	st = pg_exec(p->pg, "RELEASE SAVEPOINT c", err, errlen);
	if (st != STATUS_OK)
		goto rollback;
	return STATUS_OK;
rollback:
	if (PQstatus(p->pg) == CONNECTION_OK &&
	    pg_exec(p->pg, "ROLLBACK TO SAVEPOINT c", ignored, sizeof(ignored)) != STATUS_OK) {
		/* The batch's COMMIT fails too, and puts every command back. */
	}
	return st;
}

/* Rules beyond the codec's: values that become headers and the subject we publish on. */
static bool
command_usable(const struct participant *p, const struct command_msg *cmd, char *err, size_t errlen)
{
	size_t n = strlen(p->reply_prefix);

	if (cmd->correlation_id[0] != '\0' &&
	    !saga_valid_key(cmd->correlation_id, SAGA_CORRELATION_MAX)) {
		snprintf(err, errlen, "correlation_id: invalid characters");
		return false;
	}
	if (strncmp(cmd->reply_subject, p->reply_prefix, n) != 0 ||
	    !saga_valid_subject(cmd->reply_subject + n)) {
		snprintf(err, errlen, "reply_subject: not under %s", p->reply_prefix);
		return false;
	}
	return true;
}

/* The reply message with its headers, ready to publish. */
static enum status
build_reply(struct participant *p, struct slot *sl, const struct command_msg *cmd,
            enum reply_outcome outcome, const struct participant_result *res, char *err,
            size_t errlen)
{
	struct bytes body = {0};
	natsMsg *m = NULL;
	char attempt[16];
	natsStatus s;
	enum status st;

	st = codec_encode_reply(cmd, outcome, res->output, res->error_code, res->error_message,
	                        p->name, now_unix_ms(), &body);
	if (st != STATUS_OK) {
		snprintf(err, errlen, "encoding the reply: %s", status_name(st));
		return st;
	}
	snprintf(attempt, sizeof(attempt), "%u", (unsigned)cmd->attempt);
	snprintf(sl->msg_id, sizeof(sl->msg_id), "reply:%s:%u", cmd->idempotency_key,
	         (unsigned)cmd->attempt);
	s = natsMsg_Create(&m, cmd->reply_subject, NULL, (const char *)body.data, (int)body.len);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, HDR_MSG_ID, sl->msg_id);
	if (s == NATS_OK && cmd->correlation_id[0] != '\0')
		s = natsMsgHeader_Set(m, HDR_CORRELATION_ID, cmd->correlation_id);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, HDR_SAGA_ID, cmd->saga_id);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, HDR_STEP, cmd->step);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, HDR_PHASE, step_phase_name(cmd->phase));
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, HDR_ATTEMPT, attempt);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, HDR_IDEMPOTENCY_KEY, cmd->idempotency_key);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, HDR_CONTENT_TYPE, CT_STEP_REPLY);
	free(body.data);
	if (s != NATS_OK) {
		set_nats_err(err, errlen, "building the reply", s, 0);
		natsMsg_Destroy(m);
		return STATUS_NOMEM;
	}
	sl->reply = m;
	return STATUS_OK;
}

/* Where a message sits in its stream and how often it came, for log lines. */
static void
describe_msg(natsMsg *msg, char *out, size_t outlen)
{
	jsMsgMetaData *meta = NULL;

	if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
		snprintf(out, outlen, "stream %s seq %llu, delivery %llu", meta->Stream,
		         (unsigned long long)meta->Sequence.Stream,
		         (unsigned long long)meta->NumDelivered);
		jsMsgMetaData_Destroy(meta);
	} else {
		snprintf(out, outlen, "subject %s", natsMsg_GetSubject(msg));
	}
}

/*
 * Largest command accepted: one saga input and up to SAGA_MAX_STEPS earlier
 * outputs, each up to max_payload, plus the envelope. Refusing less would
 * terminate valid commands of long sagas for good.
 */
static size_t
command_limit(const struct participant *p)
{
	size_t limit = p->max_payload * (SAGA_MAX_STEPS + 1) + 64 * 1024;

	return limit < CODEC_MAX_MESSAGE ? limit : CODEC_MAX_MESSAGE;
}

/* Decode, run and prepare the reply of one command; sets sl->fate. */
static void
process_command(struct participant *p, struct slot *sl, natsMsg *msg)
{
	struct command_msg cmd;
	struct participant_result res;
	enum reply_outcome outcome = OUTCOME_RETRYABLE_FAILURE;
	enum txn_path path = PATH_HANDLED;
	char err[512];
	char where[160];
	enum status st;

	memset(sl, 0, sizeof(*sl));
	memset(&res, 0, sizeof(res));
	res.max_output = p->max_payload;
	sl->cmd = msg;
	sl->fate = FATE_TERM;
	st = codec_decode_command((const uint8_t *)natsMsg_GetData(msg),
	                          (size_t)natsMsg_GetDataLength(msg), command_limit(p), &cmd, err,
	                          sizeof(err));
	if (st != STATUS_OK) {
		describe_msg(msg, where, sizeof(where));
		log_error("participant %s: command (%s) terminated, it can never be read: %s",
		          p->durable, where, err);
		return;
	}
	snprintf(sl->saga_id, sizeof(sl->saga_id), "%s", cmd.saga_id);
	if (saga_valid_key(cmd.correlation_id, SAGA_CORRELATION_MAX))
		snprintf(sl->correlation_id, sizeof(sl->correlation_id), "%s", cmd.correlation_id);
	if (!command_usable(p, &cmd, err, sizeof(err))) {
		describe_msg(msg, where, sizeof(where));
		log_saga(LOG_ERROR, sl->saga_id, sl->correlation_id,
		         "participant %s: command (%s) terminated, it breaks a rule: %s",
		         p->durable, where, err);
		goto cleanup;
	}
	if (p->db_down) {
		/* One line for the batch (settle), not one per command. */
		sl->fate = FATE_NAK;
		p->db_naks++;
		goto cleanup;
	}
	st = run_transaction(p, &cmd, &res, &outcome, &path, err, sizeof(err));
	if (st != STATUS_OK) {
		sl->fate = FATE_NAK;
		db_failed(p, err);
		if (p->db_down)
			p->db_naks++;
		else
			log_saga(LOG_ERROR, sl->saga_id, sl->correlation_id,
			         "participant %s: %s step %s attempt %u put back: %s", p->durable,
			         step_phase_name(cmd.phase), cmd.step, (unsigned)cmd.attempt, err);
		goto cleanup;
	}
	st = build_reply(p, sl, &cmd, outcome, &res, err, sizeof(err));
	if (st != STATUS_OK) {
		sl->fate = FATE_NAK;
		log_saga(LOG_ERROR, sl->saga_id, sl->correlation_id,
		         "participant %s: command put back: %s", p->durable, err);
		goto cleanup;
	}
	sl->fate = FATE_REPLY;
	if (path == PATH_STORED) {
		describe_msg(msg, where, sizeof(where));
		log_saga(LOG_INFO, sl->saga_id, sl->correlation_id,
		         "participant %s: %s step %s attempt %u (%s) already answered: %s%s%s "
		         "(recorded reply sent again, handler not run)",
		         p->durable, step_phase_name(cmd.phase), cmd.step, (unsigned)cmd.attempt,
		         where, reply_outcome_name(outcome), res.error_code[0] != '\0' ? " " : "",
		         res.error_code);
	} else if (outcome == OUTCOME_SUCCESS)
		log_saga(LOG_DEBUG, sl->saga_id, sl->correlation_id,
		         "participant %s: %s step %s attempt %u: success", p->durable,
		         step_phase_name(cmd.phase), cmd.step, (unsigned)cmd.attempt);
	else
		log_saga(LOG_INFO, sl->saga_id, sl->correlation_id,
		         "participant %s: %s step %s attempt %u: %s %s: %s", p->durable,
		         step_phase_name(cmd.phase), cmd.step, (unsigned)cmd.attempt,
		         reply_outcome_name(outcome), res.error_code, res.error_message);
cleanup:
	free(res.output.data);
	codec_command_free(&cmd);
}

/* Publish the batch's replies asynchronously and wait for JetStream's acks. */
static void
publish_replies(struct participant *p, int n)
{
	jsPubOptions po;
	natsStatus s;
	int sent = 0;

	pthread_mutex_lock(&p->mu);
	p->n_slots = n;
	p->collecting = true;
	pthread_mutex_unlock(&p->mu);

	for (int i = 0; i < n; i++) {
		struct slot *sl = &p->slots[i];

		if (sl->fate != FATE_REPLY)
			continue;
		s = js_PublishMsgAsync(p->js, &sl->reply, NULL);
		if (s != NATS_OK) {
			char why[192];

			set_nats_err(why, sizeof(why), "publish", s, 0);
			natsMsg_Destroy(sl->reply); /* still ours when the call failed */
			mark_publish_failed(p, sl->msg_id, why);
		} else {
			sent++;
		}
		sl->reply = NULL;
	}
	if (sent > 0) {
		jsPubOptions_Init(&po);
		/* Well inside the ack wait, so commands are not redelivered meanwhile. */
		po.MaxWait = p->ack_wait_ms / 2 < 5000 ? p->ack_wait_ms / 2 : 5000;
		if (po.MaxWait < 1)
			po.MaxWait = 1;
		s = js_PublishAsyncComplete(p->js, &po);
		if (s != NATS_OK) {
			natsMsgList pending = {0};

			/* Take back what is still unacknowledged: those commands are put back. */
			if (js_PublishAsyncGetPendingList(&pending, p->js) == NATS_OK) {
				for (int i = 0; i < pending.Count; i++) {
					const char *id = NULL;

					if (natsMsgHeader_Get(pending.Msgs[i], HDR_MSG_ID, &id) ==
					            NATS_OK &&
					    id != NULL)
						mark_publish_failed(
						        p, id,
						        "no acknowledgment from JetStream in time");
				}
				natsMsgList_Destroy(&pending);
			}
		}
	}
	pthread_mutex_lock(&p->mu);
	p->collecting = false;
	pthread_mutex_unlock(&p->mu);
}

/* Ack, terminate or put back every command of the batch. */
static void
settle(struct participant *p, int n)
{
	char why[192];
	natsStatus s;

	for (int i = 0; i < n; i++) {
		struct slot *sl = &p->slots[i];
		bool failed;

		pthread_mutex_lock(&p->mu);
		failed = sl->publish_failed;
		snprintf(why, sizeof(why), "%s", sl->publish_error);
		pthread_mutex_unlock(&p->mu);
		switch (sl->fate) {
		case FATE_REPLY:
			if (failed) {
				log_saga(LOG_WARN, sl->saga_id, sl->correlation_id,
				         "participant %s: reply %s not published (%s): command put "
				         "back",
				         p->durable, sl->msg_id, why);
				s = natsMsg_NakWithDelay(sl->cmd, p->nak_delay_ms, NULL);
			} else {
				s = natsMsg_Ack(sl->cmd, NULL);
			}
			break;
		case FATE_TERM:
			s = natsMsg_Term(sl->cmd, NULL);
			break;
		case FATE_NAK:
		default:
			s = natsMsg_NakWithDelay(sl->cmd, p->nak_delay_ms, NULL);
			break;
		}
		if (s != NATS_OK)
			log_saga(
			        LOG_WARN, sl->saga_id, sl->correlation_id,
			        "participant %s: acknowledging the command failed (%s): it will be "
			        "redelivered",
			        p->durable, natsStatus_GetText(s));
	}
	if (p->db_naks > 0) {
		log_warn("participant %s: PostgreSQL unavailable: %d command(s) put back",
		         p->durable, p->db_naks);
		p->db_naks = 0;
	}
}

enum status
participant_run_once(struct participant *p, int64_t timeout_ms, int *handled)
{
	natsMsgList list = {0};
	jsErrCode jerr = 0;
	natsStatus s;
	char err[512] = "";
	int64_t last_progress;

	*handled = 0;
	if (timeout_ms <= 0)
		timeout_ms = 1;
	if (!db_ready(p)) {
		/* Take no command we cannot run; wait as a fetch would have. */
		sleep_ms(timeout_ms);
		return STATUS_UNAVAILABLE;
	}
	s = natsSubscription_Fetch(&list, p->sub, p->batch, timeout_ms, &jerr);
	if (s == NATS_TIMEOUT)
		return STATUS_OK; /* nothing arrived */
	if (s != NATS_OK) {
		bool down = natsConnection_Status(p->nc) != NATS_CONN_STATUS_CONNECTED;

		set_nats_err(err, sizeof(err), "fetching commands", s, jerr);
		if (!down)
			log_warn("participant %s: %s", p->durable, err);
		sleep_ms(timeout_ms);
		return down ? STATUS_UNAVAILABLE : STATUS_NATS;
	}
	last_progress = now_unix_ms();
	/* One transaction for the batch: every command under its own savepoint. */
	if (pg_exec(p->pg, "BEGIN", err, sizeof(err)) != STATUS_OK)
		db_failed(p, err);
	for (int i = 0; i < list.Count; i++) {
		/* A long batch: tell the server the rest is in hand, before its ack wait ends. */
		if (now_unix_ms() - last_progress > p->ack_wait_ms / 3) {
			for (int k = i; k < list.Count; k++)
				(void)natsMsg_InProgress(list.Msgs[k], NULL);
			last_progress = now_unix_ms();
		}
		process_command(p, &p->slots[i], list.Msgs[i]);
	}
	/*
	 * With the database gone mid-batch there is no COMMIT to send: the
	 * transaction is lost, and so are the effects of the commands handled
	 * before it went; their replies must not go out either.
	 */
	if (p->db_down || pg_exec(p->pg, "COMMIT", err, sizeof(err)) != STATUS_OK) {
		/* Nothing of the batch is known to be recorded: every command comes again. */
		char ignored[64];

		if (!p->db_down && PQstatus(p->pg) == CONNECTION_OK &&
		    pg_exec(p->pg, "ROLLBACK", ignored, sizeof(ignored)) != STATUS_OK)
			db_failed(p, ignored);
		if (p->db_down && err[0] == '\0')
			snprintf(err, sizeof(err), "the database went away during the batch");
		log_warn("participant %s: committing a batch of %d failed (%s): put back",
		         p->durable, list.Count, err);
		for (int i = 0; i < list.Count; i++) {
			struct slot *sl = &p->slots[i];

			if (sl->fate == FATE_REPLY) {
				natsMsg_Destroy(sl->reply);
				sl->reply = NULL;
				sl->fate = FATE_NAK;
			}
		}
		db_failed(p, err);
	}
	publish_replies(p, list.Count);
	settle(p, list.Count);
	*handled = list.Count;
	natsMsgList_Destroy(&list);
	return p->db_down ? STATUS_UNAVAILABLE : STATUS_OK;
}

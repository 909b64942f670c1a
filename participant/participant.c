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
#include "pg_array.h"

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
	bool decoded;                  /* msg holds the decoded command (slot_release frees it) */
	bool tomb;                     /* a compensation: action_key is the action it undoes */
	bool tomb_written;             /* its handler ran: the tombstone goes in at commit */
	bool record;                   /* outcome and res go into the ledger at commit */
	int stored_row;                /* its row in the batch's ledger lookup, or -1 */
	enum reply_outcome outcome;    /* the answer */
	struct command_msg msg;        /* the decoded command */
	struct participant_result res; /* the handler's (or the ledger's) answer */
	char action_key[SAGA_KEY_MAX + 1];             /* the undone action's ledger key (tomb) */
	char msg_id[MSG_ID_MAX];                       /* Nats-Msg-Id of the reply */
	char saga_id[SAGA_ID_LEN + 1];                 /* for log lines */
	char correlation_id[SAGA_CORRELATION_MAX + 1]; /* for log lines */
	char publish_error[192];                       /* why the publish failed */
};

/* The array parameters of the batch's statements (participant.arrays). */
enum batch_array {
	ARR_LOCKS = 0,   /* lock values of every key of the batch */
	ARR_KEYS,        /* the batch's own keys, looked up in the ledger */
	ARR_REC_KEY,     /* answers recorded at commit: keys */
	ARR_REC_OUTCOME, /* their outcomes */
	ARR_REC_OUTPUT,  /* their outputs */
	ARR_REC_CODE,    /* their error codes */
	ARR_REC_MESSAGE, /* their error messages */
	ARR_TOMB_KEY,    /* tombstones written at commit: the undone actions' keys */
	ARR_COUNT
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
	struct pg_array arrays[ARR_COUNT]; /* the batch's array parameters (buffers kept) */
};

struct participant_txn {
	struct participant *p;   /* the participant */
	bool failed;             /* a handler statement failed: the transaction is aborted */
	bool savepoint;          /* SAVEPOINT h is set: the handler's writes can be undone */
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

/* ---- pipelines ---- */

/* One statement of a pipeline. */
struct pipe_stmt {
	const char *sql;           /* statement text */
	int n_params;              /* parameters */
	const char *const *values; /* their values */
	const int *lengths;        /* binary parameters' lengths, or NULL */
	const int *formats;        /* 1 = binary parameter, or NULL (all text) */
	int binary;                /* results in binary */
	bool keep;                 /* hand the result to the caller (res) */
	PGresult *res;             /* out: the result when keep and it succeeded */
};

/*
 * Send n statements and one sync, then read every result: one round trip.
 * STATUS_OK when all succeeded; otherwise the first failure's status and
 * message in err, *failed_at its index (the server skips the rest). Kept
 * results are the caller's to PQclear, also on failure.
 */
static enum status
pg_pipeline(PGconn *conn, struct pipe_stmt *stmts, int n, int *failed_at, char *err, size_t errlen)
{
	enum status st = STATUS_OK;
	PGresult *res;
	int idx = 0;

	*failed_at = -1;
	if (PQenterPipelineMode(conn) != 1) {
		set_pg_err(err, errlen, "entering pipeline mode", PQerrorMessage(conn));
		return PQstatus(conn) == CONNECTION_OK ? STATUS_DB : STATUS_DB_RETRY;
	}
	for (int i = 0; i < n; i++) {
		stmts[i].res = NULL;
		if (PQsendQueryParams(conn, stmts[i].sql, stmts[i].n_params, NULL, stmts[i].values,
		                      stmts[i].lengths, stmts[i].formats, stmts[i].binary) != 1) {
			set_pg_err(err, errlen, "sending a statement", PQerrorMessage(conn));
			*failed_at = i;
			st = STATUS_DB_RETRY;
			break;
		}
	}
	if (PQpipelineSync(conn) != 1 && st == STATUS_OK) {
		set_pg_err(err, errlen, "sending a statement", PQerrorMessage(conn));
		st = STATUS_DB_RETRY;
	}
	/* Each statement's result, then NULL; PGRES_PIPELINE_SYNC after the last. */
	for (;;) {
		res = PQgetResult(conn);
		if (res == NULL) {
			if (PQstatus(conn) == CONNECTION_BAD) {
				if (st == STATUS_OK)
					set_pg_err(err, errlen, "PostgreSQL", PQerrorMessage(conn));
				st = STATUS_DB_RETRY;
				break;
			}
			idx++;
			continue;
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			break;
		}
		if (PQresultStatus(res) != PGRES_COMMAND_OK &&
		    PQresultStatus(res) != PGRES_TUPLES_OK) {
			if (st == STATUS_OK) {
				st = pg_status(res, conn);
				set_pg_err(err, errlen, "PostgreSQL", PQresultErrorMessage(res));
				*failed_at = idx;
			}
			PQclear(res);
			continue;
		}
		if (idx < n && stmts[idx].keep && stmts[idx].res == NULL)
			stmts[idx].res = res;
		else
			PQclear(res);
	}
	if (PQexitPipelineMode(conn) != 1 && st == STATUS_OK) {
		set_pg_err(err, errlen, "leaving pipeline mode", PQerrorMessage(conn));
		st = STATUS_DB_RETRY;
	}
	return st;
}

/* ---- handler SQL ---- */

/*
 * Shared part of participant_exec / participant_query: NULL result when
 * refused. The command's SAVEPOINT h is set by its first statement, in the
 * same round trip, so a handler without SQL costs no savepoint at all.
 */
static enum status
txn_run(struct participant_txn *tx, const char *sql, int nparams, const char *const *params,
        PGresult **out, char *err, size_t errlen)
{
	PGconn *conn = tx->p->pg;
	struct pipe_stmt stmts[2] = {
	        {.sql = "SAVEPOINT h"},
	        {.sql = sql, .n_params = nparams, .values = params, .keep = true},
	};
	int first = tx->savepoint ? 1 : 0;
	int failed_at;
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
	st = pg_pipeline(conn, stmts + first, 2 - first, &failed_at, err, errlen);
	if (first == 0 && (st == STATUS_OK || failed_at > 0))
		tx->savepoint = true;
	if (st == STATUS_OK) {
		*out = stmts[1].res;
		return STATUS_OK;
	}
	PQclear(stmts[1].res);
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
	for (int k = 0; k < ARR_COUNT; k++)
		pg_array_free(&p->arrays[k]);
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

/* The ledger row of a compensated action: its action must never run after it. */
#define TOMB_CODE    "compensated"
#define TOMB_MESSAGE "the step was compensated; its action must not run any more"

/*
 * Every lock of the batch, in one order for every participant (by lock
 * value), so two batches sharing keys wait for each other instead of
 * deadlocking. Transaction-scoped: released by the COMMIT.
 */
#define LOCK_SQL                                                                                   \
	"SELECT count(pg_advisory_xact_lock(s.h)) FROM (SELECT DISTINCT"                           \
	" hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY 1) AS s"

/* The recorded answers of the batch's keys (binary results: bytea as is). */
#define LOOKUP_SQL                                                                                 \
	"SELECT idempotency_key, outcome, output, error_code, error_message"                       \
	" FROM participant_ledger WHERE consumer = $1 AND idempotency_key = ANY($2::text[])"

#define RECORD_SQL                                                                                 \
	"INSERT INTO participant_ledger"                                                           \
	" (consumer, idempotency_key, outcome, output, error_code, error_message)"                 \
	" SELECT $1, u.k, u.o, u.out, u.code, u.msg FROM unnest($2::text[], $3::smallint[],"       \
	" $4::bytea[], $5::text[], $6::text[]) AS u(k, o, out, code, msg)"

#define TOMB_SQL                                                                                   \
	"INSERT INTO participant_ledger"                                                           \
	" (consumer, idempotency_key, outcome, error_code, error_message)"                         \
	" SELECT $1, k, 3, $3, $4 FROM unnest($2::text[]) AS k ON CONFLICT DO NOTHING"

/* The lock value of one ledger key: "<consumer> <key>". */
static void
add_lock(struct pg_array *locks, const char *consumer, const char *key)
{
	char lock[LOCK_KEY_MAX + 1];

	snprintf(lock, sizeof(lock), "%s %s", consumer, key);
	pg_array_text(locks, lock);
}

/*
 * One round trip opens the batch: BEGIN, the lock of every key (and of the
 * action each compensation undoes), the recorded answers of the batch's keys.
 * *lookup gets the answers (each slot's stored_row points into it; NULL when
 * no command was decoded).
 */
static enum status
batch_begin(struct participant *p, int n, PGresult **lookup, char *err, size_t errlen)
{
	struct pg_array *locks = &p->arrays[ARR_LOCKS], *keys = &p->arrays[ARR_KEYS];
	const char *lock_param[1], *lookup_params[2];
	struct pipe_stmt stmts[3] = {
	        {.sql = "BEGIN"},
	        {.sql = LOCK_SQL, .n_params = 1, .values = lock_param},
	        {.sql = LOOKUP_SQL,
	         .n_params = 2,
	         .values = lookup_params,
	         .binary = 1,
	         .keep = true},
	};
	int failed_at, used = 0;
	enum status st;

	*lookup = NULL;
	pg_array_reset(locks);
	pg_array_reset(keys);
	for (int i = 0; i < n; i++) {
		struct slot *sl = &p->slots[i];

		if (!sl->decoded)
			continue;
		used++;
		add_lock(locks, p->durable, sl->msg.idempotency_key);
		if (sl->tomb)
			add_lock(locks, p->tomb_consumer, sl->action_key);
		pg_array_text(keys, sl->msg.idempotency_key);
	}
	if (used == 0)
		return STATUS_OK;
	lock_param[0] = pg_array_close(locks);
	lookup_params[0] = p->durable;
	lookup_params[1] = pg_array_close(keys);
	if (lock_param[0] == NULL || lookup_params[1] == NULL) {
		snprintf(err, errlen, "opening the batch: out of memory");
		return STATUS_NOMEM;
	}
	st = pg_pipeline(p->pg, stmts, 3, &failed_at, err, errlen);
	if (st != STATUS_OK) {
		PQclear(stmts[2].res);
		return st;
	}
	*lookup = stmts[2].res;
	for (int r = 0; r < PQntuples(*lookup); r++) {
		const char *key = PQgetvalue(*lookup, r, 0);

		for (int i = 0; i < n; i++) {
			struct slot *sl = &p->slots[i];

			if (sl->decoded && strcmp(sl->msg.idempotency_key, key) == 0)
				sl->stored_row = r;
		}
	}
	return STATUS_OK;
}

/* A recorded answer (row r of the batch's lookup) into sl. */
static enum status
read_stored(const PGresult *lookup, int r, struct slot *sl, char *err, size_t errlen)
{
	const unsigned char *v = (const unsigned char *)PQgetvalue(lookup, r, 1);
	int out = PQgetlength(lookup, r, 1) == 2 ? (int)(int16_t)(uint16_t)((v[0] << 8) | v[1]) : 0;
	enum status st;

	if (out != OUTCOME_SUCCESS && out != OUTCOME_PERMANENT_FAILURE) {
		snprintf(err, errlen, "participant_ledger: stored outcome %d is not a final one",
		         out);
		return STATUS_DB;
	}
	sl->outcome = (enum reply_outcome)out;
	if (out == OUTCOME_SUCCESS && !PQgetisnull(lookup, r, 2)) {
		/* Recorded earlier: sent as it is, even if max_payload was lowered since. */
		st = result_copy_output(&sl->res, PQgetvalue(lookup, r, 2),
		                        (size_t)PQgetlength(lookup, r, 2));
		if (st != STATUS_OK) {
			snprintf(err, errlen, "participant_ledger: stored output: %s",
			         status_name(st));
			return st;
		}
	}
	if (!PQgetisnull(lookup, r, 3))
		snprintf(sl->res.error_code, sizeof(sl->res.error_code), "%.*s",
		         PQgetlength(lookup, r, 3), PQgetvalue(lookup, r, 3));
	if (!PQgetisnull(lookup, r, 4))
		snprintf(sl->res.error_message, sizeof(sl->res.error_message), "%.*s",
		         PQgetlength(lookup, r, 4), PQgetvalue(lookup, r, 4));
	return STATUS_OK;
}

/*
 * The answer an earlier command of this batch recorded for slot i's key (a
 * redelivery in the same batch), or a tombstone one wrote for it: true and
 * copied into the slot, as if read from the ledger.
 */
static bool
recorded_in_batch(struct participant *p, int i)
{
	struct slot *sl = &p->slots[i];
	const char *key = sl->msg.idempotency_key;

	for (int j = i - 1; j >= 0; j--) {
		const struct slot *e = &p->slots[j];

		if (!e->decoded)
			continue;
		if (e->record && strcmp(e->msg.idempotency_key, key) == 0) {
			sl->outcome = e->outcome;
			if (e->outcome == OUTCOME_SUCCESS && e->res.output.len > 0 &&
			    result_copy_output(&sl->res, e->res.output.data, e->res.output.len) !=
			            STATUS_OK)
				return false; /* out of memory: the handler decides again */
			memcpy(sl->res.error_code, e->res.error_code, sizeof(sl->res.error_code));
			memcpy(sl->res.error_message, e->res.error_message,
			       sizeof(sl->res.error_message));
			return true;
		}
		if (e->tomb_written && strcmp(p->tomb_consumer, p->durable) == 0 &&
		    strcmp(e->action_key, key) == 0) {
			sl->outcome = OUTCOME_PERMANENT_FAILURE;
			participant_set_error(&sl->res, TOMB_CODE, "%s", TOMB_MESSAGE);
			return true;
		}
	}
	return false;
}

/*
 * Run the handler of a new key inside the batch's transaction; its writes are
 * under SAVEPOINT h (set by its first statement) and rolled back when it does
 * not succeed. STATUS_OK with sl->outcome; otherwise the batch's transaction
 * is unusable and err says why.
 */
static enum status
run_handler(struct participant *p, struct slot *sl, char *err, size_t errlen)
{
	struct participant_txn tx = {.p = p};
	const struct command_msg *cmd = &sl->msg;
	enum reply_outcome out;
	enum status st;

	out = p->handler(p->arg, &tx, cmd, &sl->res);
	if (tx.failed && (PQstatus(p->pg) != CONNECTION_OK || !tx.savepoint)) {
		/* No savepoint to go back to: the batch's transaction is lost. */
		snprintf(err, errlen, "%s", tx.fail_error);
		return tx.fail_status == STATUS_OK ? STATUS_DB : tx.fail_status;
	}
	if (out != OUTCOME_SUCCESS && out != OUTCOME_RETRYABLE_FAILURE &&
	    out != OUTCOME_PERMANENT_FAILURE) {
		log_saga(LOG_ERROR, cmd->saga_id, cmd->correlation_id,
		         "participant %s: handler returned %d, not an outcome: treated as a "
		         "retryable failure",
		         p->durable, (int)out);
		participant_set_error(&sl->res, "handler_error",
		                      "the handler returned no valid outcome");
		out = OUTCOME_RETRYABLE_FAILURE;
	}
	if (out == OUTCOME_SUCCESS && tx.failed) {
		log_saga(LOG_WARN, cmd->saga_id, cmd->correlation_id,
		         "participant %s: handler reported success after a failed statement (%s): "
		         "treated as a retryable failure",
		         p->durable, tx.fail_error);
		participant_set_error(&sl->res, "db_error", "%s", tx.fail_error);
		out = OUTCOME_RETRYABLE_FAILURE;
	}
	if (out != OUTCOME_SUCCESS) {
		/* Undo whatever the handler wrote; a failure carries no output. */
		if (tx.savepoint) {
			st = pg_exec(p->pg, "ROLLBACK TO SAVEPOINT h", err, errlen);
			if (st != STATUS_OK)
				return st;
		}
		free(sl->res.output.data);
		sl->res.output.data = NULL;
		sl->res.output.len = 0;
	}
	sl->outcome = out;
	sl->record = out != OUTCOME_RETRYABLE_FAILURE;
	return STATUS_OK;
}

/*
 * One round trip closes the batch: the answers recorded, the tombstones
 * written, COMMIT.
 */
static enum status
batch_commit(struct participant *p, int n, char *err, size_t errlen)
{
	struct pg_array *a = p->arrays;
	const char *rec[6], *tomb[4];
	struct pipe_stmt stmts[3];
	int n_stmts = 0, n_rec = 0, n_tomb = 0, failed_at;

	for (int k = ARR_REC_KEY; k <= ARR_TOMB_KEY; k++)
		pg_array_reset(&a[k]);
	for (int i = 0; i < n; i++) {
		const struct slot *sl = &p->slots[i];

		if (sl->record) {
			const struct participant_result *res = &sl->res;

			n_rec++;
			pg_array_text(&a[ARR_REC_KEY], sl->msg.idempotency_key);
			pg_array_int(&a[ARR_REC_OUTCOME], (int64_t)sl->outcome);
			pg_array_bytes(&a[ARR_REC_OUTPUT],
			               sl->outcome == OUTCOME_SUCCESS && res->output.len > 0
			                       ? res->output.data
			                       : NULL,
			               res->output.len);
			pg_array_text(&a[ARR_REC_CODE],
			              res->error_code[0] != '\0' ? res->error_code : NULL);
			pg_array_text(&a[ARR_REC_MESSAGE],
			              res->error_message[0] != '\0' ? res->error_message : NULL);
		}
		if (sl->tomb_written) {
			n_tomb++;
			pg_array_text(&a[ARR_TOMB_KEY], sl->action_key);
		}
	}
	if (n_rec > 0) {
		rec[0] = p->durable;
		for (int k = 0; k < 5; k++)
			rec[k + 1] = pg_array_close(&a[ARR_REC_KEY + k]);
		stmts[n_stmts++] =
		        (struct pipe_stmt){.sql = RECORD_SQL, .n_params = 6, .values = rec};
	}
	if (n_tomb > 0) {
		tomb[0] = p->tomb_consumer;
		tomb[1] = pg_array_close(&a[ARR_TOMB_KEY]);
		tomb[2] = TOMB_CODE;
		tomb[3] = TOMB_MESSAGE;
		stmts[n_stmts++] =
		        (struct pipe_stmt){.sql = TOMB_SQL, .n_params = 4, .values = tomb};
	}
	for (int k = 0; k < n_stmts; k++) {
		for (int v = 0; v < stmts[k].n_params; v++) {
			if (stmts[k].values[v] == NULL) {
				snprintf(err, errlen, "recording the batch: out of memory");
				return STATUS_NOMEM;
			}
		}
	}
	stmts[n_stmts++] = (struct pipe_stmt){.sql = "COMMIT"};
	return pg_pipeline(p->pg, stmts, n_stmts, &failed_at, err, errlen);
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

static void slot_release(struct slot *sl);

/* Decode one fetched command into its slot; undecodable or rule-breaking ones are terminated. */
static void
decode_slot(struct participant *p, struct slot *sl, natsMsg *msg)
{
	char err[512];
	char where[160];
	enum status st;

	memset(sl, 0, sizeof(*sl));
	sl->res.max_output = p->max_payload;
	sl->cmd = msg;
	sl->fate = FATE_TERM;
	sl->stored_row = -1;
	st = codec_decode_command((const uint8_t *)natsMsg_GetData(msg),
	                          (size_t)natsMsg_GetDataLength(msg), command_limit(p), &sl->msg,
	                          err, sizeof(err));
	if (st != STATUS_OK) {
		describe_msg(msg, where, sizeof(where));
		log_error("participant %s: command (%s) terminated, it can never be read: %s",
		          p->durable, where, err);
		return;
	}
	sl->decoded = true;
	snprintf(sl->saga_id, sizeof(sl->saga_id), "%s", sl->msg.saga_id);
	if (saga_valid_key(sl->msg.correlation_id, SAGA_CORRELATION_MAX))
		snprintf(sl->correlation_id, sizeof(sl->correlation_id), "%s",
		         sl->msg.correlation_id);
	if (!command_usable(p, &sl->msg, err, sizeof(err))) {
		describe_msg(msg, where, sizeof(where));
		log_saga(LOG_ERROR, sl->saga_id, sl->correlation_id,
		         "participant %s: command (%s) terminated, it breaks a rule: %s",
		         p->durable, where, err);
		slot_release(sl);
		return;
	}
	if (sl->msg.phase == PHASE_COMPENSATION) {
		sl->tomb = action_key_of(sl->msg.idempotency_key, sl->action_key,
		                         sizeof(sl->action_key));
		if (sl->tomb && !p->tomb_configured && !p->tomb_warned) {
			p->tomb_warned = true;
			log_saga(LOG_WARN, sl->saga_id, sl->correlation_id,
			         "participant %s: compensation received but no action_subject is "
			         "configured: the tombstone is written under %s",
			         p->durable, p->tomb_consumer);
		}
	}
	sl->fate = FATE_NAK; /* until it is answered */
}

/*
 * Answer slot i inside the batch's transaction: the recorded answer, or the
 * handler's; then build the reply. STATUS_OK unless the batch's transaction
 * is lost (err says why); a slot that cannot be answered stays FATE_NAK.
 */
static enum status
handle_slot(struct participant *p, int i, const PGresult *lookup, char *err, size_t errlen)
{
	struct slot *sl = &p->slots[i];
	const struct command_msg *cmd = &sl->msg;
	bool stored = true;
	char where[160];
	enum status st;

	if (sl->stored_row >= 0) {
		st = read_stored(lookup, sl->stored_row, sl, err, errlen);
		if (st != STATUS_OK) {
			log_saga(LOG_ERROR, sl->saga_id, sl->correlation_id,
			         "participant %s: %s step %s attempt %u put back: %s", p->durable,
			         step_phase_name(cmd->phase), cmd->step, (unsigned)cmd->attempt,
			         err);
			return STATUS_OK;
		}
	} else if (!recorded_in_batch(p, i)) {
		stored = false;
		sl->tomb_written = sl->tomb;
		st = run_handler(p, sl, err, errlen);
		if (st != STATUS_OK)
			return st;
	}
	st = build_reply(p, sl, cmd, sl->outcome, &sl->res, err, errlen);
	if (st != STATUS_OK) {
		/* Its answer is still recorded: the redelivery sends it without the handler. */
		log_saga(LOG_ERROR, sl->saga_id, sl->correlation_id,
		         "participant %s: command put back: %s", p->durable, err);
		return STATUS_OK;
	}
	sl->fate = FATE_REPLY;
	if (stored) {
		describe_msg(sl->cmd, where, sizeof(where));
		log_saga(LOG_INFO, sl->saga_id, sl->correlation_id,
		         "participant %s: %s step %s attempt %u (%s) already answered: %s%s%s "
		         "(recorded reply sent again, handler not run)",
		         p->durable, step_phase_name(cmd->phase), cmd->step, (unsigned)cmd->attempt,
		         where, reply_outcome_name(sl->outcome),
		         sl->res.error_code[0] != '\0' ? " " : "", sl->res.error_code);
	} else if (sl->outcome == OUTCOME_SUCCESS)
		log_saga(LOG_DEBUG, sl->saga_id, sl->correlation_id,
		         "participant %s: %s step %s attempt %u: success", p->durable,
		         step_phase_name(cmd->phase), cmd->step, (unsigned)cmd->attempt);
	else
		log_saga(LOG_INFO, sl->saga_id, sl->correlation_id,
		         "participant %s: %s step %s attempt %u: %s %s: %s", p->durable,
		         step_phase_name(cmd->phase), cmd->step, (unsigned)cmd->attempt,
		         reply_outcome_name(sl->outcome), sl->res.error_code,
		         sl->res.error_message);
	return STATUS_OK;
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

/* Free what a slot's command and answer hold; safe to call twice. */
static void
slot_release(struct slot *sl)
{
	if (sl->decoded)
		codec_command_free(&sl->msg);
	sl->decoded = false;
	free(sl->res.output.data);
	sl->res.output.data = NULL;
	sl->res.output.len = 0;
}

/*
 * The batch's database work: one transaction, opened and closed in one round
 * trip each, with the handlers of new keys in between. On failure nothing of
 * the batch is recorded: every answer is dropped and every command put back.
 */
static void
run_batch(struct participant *p, natsMsgList *list)
{
	PGresult *lookup = NULL;
	char err[512] = "";
	int64_t last_progress = now_unix_ms();
	enum status st;
	int decoded = 0;

	for (int i = 0; i < list->Count; i++)
		if (p->slots[i].decoded)
			decoded++;
	if (decoded == 0)
		return;
	if (p->db_down) {
		/* One line for the batch (settle), not one per command. */
		p->db_naks += decoded;
		return;
	}
	st = batch_begin(p, list->Count, &lookup, err, sizeof(err));
	for (int i = 0; i < list->Count && st == STATUS_OK; i++) {
		/* A long batch: tell the server the rest is in hand, before its ack wait ends. */
		if (now_unix_ms() - last_progress > p->ack_wait_ms / 3) {
			for (int k = i; k < list->Count; k++)
				(void)natsMsg_InProgress(list->Msgs[k], NULL);
			last_progress = now_unix_ms();
		}
		if (p->slots[i].decoded)
			st = handle_slot(p, i, lookup, err, sizeof(err));
	}
	PQclear(lookup);
	if (st == STATUS_OK)
		st = batch_commit(p, list->Count, err, sizeof(err));
	if (st == STATUS_OK)
		return;
	/*
	 * The transaction is lost, and so are the effects of the commands handled
	 * in it: their replies must not go out either.
	 */
	db_failed(p, err);
	if (!p->db_down && PQstatus(p->pg) == CONNECTION_OK) {
		char ignored[64];

		if (pg_exec(p->pg, "ROLLBACK", ignored, sizeof(ignored)) != STATUS_OK)
			db_failed(p, ignored);
	}
	log_warn("participant %s: a batch of %d failed in the database (%s): put back", p->durable,
	         list->Count, err);
	for (int i = 0; i < list->Count; i++) {
		struct slot *sl = &p->slots[i];

		if (sl->fate == FATE_REPLY) {
			natsMsg_Destroy(sl->reply);
			sl->reply = NULL;
		}
		if (sl->decoded)
			sl->fate = FATE_NAK;
	}
}

enum status
participant_run_once(struct participant *p, int64_t timeout_ms, int *handled)
{
	natsMsgList list = {0};
	jsErrCode jerr = 0;
	natsStatus s;
	char err[512] = "";

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
	if (list.Count > p->batch) {
		/*
		 * nats.c 3.4.1 wrote past its own array (a fetch that found more
		 * than half a batch already queued; docs/benchmarks.md): the heap
		 * is corrupt. Nothing of this batch is done yet; stop here.
		 */
		log_error("participant %s: nats.c returned %d commands for a fetch of %d: its heap "
		          "is corrupt; stopping",
		          p->durable, list.Count, p->batch);
		abort();
	}
	for (int i = 0; i < list.Count; i++)
		decode_slot(p, &p->slots[i], list.Msgs[i]);
	run_batch(p, &list);
	for (int i = 0; i < list.Count; i++)
		slot_release(&p->slots[i]);
	publish_replies(p, list.Count);
	settle(p, list.Count);
	*handled = list.Count;
	natsMsgList_Destroy(&list);
	return p->db_down ? STATUS_UNAVAILABLE : STATUS_OK;
}

/* saga-participant: demo services of the order saga (stock, payments, shipping). */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "participant.h"

#define MAX_SUBJECTS  2  /* subjects one service serves */
#define POLL_SLICE_MS 50 /* fetch wait per participant and round */

/* Exit codes (same meaning as sagad's). */
enum exit_code {
	EXIT_OK = 0,       /* stopped by a signal */
	EXIT_RUN = 1,      /* failed while running */
	EXIT_USAGE = 2,    /* bad command line or setting */
	EXIT_DATABASE = 3, /* PostgreSQL unreachable or unusable */
	EXIT_NATS = 4,     /* NATS unreachable or JetStream set-up failed */
};

/* One subject of a service. */
struct service_subject {
	const char *subject; /* e.g. "stock.reserve" */
	const char *undoes;  /* for a compensation subject: the action subject it undoes */
};

/* A demo service and the subjects it serves. */
struct service {
	const char *name;                              /* --service value */
	const char *noun;                              /* key of the action output */
	struct service_subject subjects[MAX_SUBJECTS]; /* action first */
	int n_subjects;                                /* 1..MAX_SUBJECTS */
};

static const struct service services[] = {
        {"stock", "reservation", {{"stock.reserve", NULL}, {"stock.release", "stock.reserve"}}, 2},
        {"payments",
         "charge",
         {{"payments.charge", NULL}, {"payments.refund", "payments.charge"}},
         2},
        {"shipping", "shipment", {{"shipping.ship", NULL}, {NULL, NULL}}, 1},
};

/* The settings of the program. */
struct settings {
	const char *service;           /* stock | payments | shipping */
	const char *name;              /* participant name in replies */
	const char *database_url;      /* PostgreSQL */
	const char *nats_url;          /* NATS */
	const char *nats_inbox_prefix; /* reply inboxes; NULL = derived from the URL's user */
	const char *db_schema;         /* schema of the ledger and effects tables */
	const char *subject_prefix;    /* subject prefix */
	const char *stream_prefix;     /* stream prefix */
	const char *fail_step;         /* subject the fail rate applies to */
	const char *log_level;         /* debug | info | warn | error */
	double fail_rate;              /* sagas whose action on fail_step fails for good */
	double retryable_rate;         /* action attempts that fail retryably */
	double fail_compensation_rate; /* compensation attempts that fail retryably */
	double latency_ms;             /* sleep per command */
	double batch;                  /* commands per fetch */
	double ack_wait_ms;            /* redelivery delay of an unacked command */
};

enum setting_kind {
	SET_TEXT,   /* a string */
	SET_NUMBER, /* a number within [min, max] */
};

/* The settings table: name, environment override, type, storage, default, bounds, help. */
static const struct setting_def {
	const char *name;       /* --name (dashes or underscores) */
	const char *env;        /* environment variable, or NULL */
	enum setting_kind kind; /* text or number */
	size_t offset;          /* in struct settings */
	const char *def;        /* default as text, or NULL */
	double min, max;        /* bounds of numbers */
	const char *help;       /* one line */
} setting_defs[] = {
        {"service", NULL, SET_TEXT, offsetof(struct settings, service), NULL, 0, 0,
         "stock | payments | shipping (required)"},
        {"name", NULL, SET_TEXT, offsetof(struct settings, name), NULL, 0, 0,
         "participant name in replies (default: the service name)"},
        {"database_url", "SAGAD_DATABASE_URL", SET_TEXT, offsetof(struct settings, database_url),
         "postgresql://127.0.0.1:5432/sagad", 0, 0, "PostgreSQL connection (URL or key=value)"},
        {"nats_url", "SAGAD_NATS_URL", SET_TEXT, offsetof(struct settings, nats_url),
         "nats://127.0.0.1:4222", 0, 0, "NATS server URL(s)"},
        {"nats_inbox_prefix", "SAGAD_NATS_INBOX_PREFIX", SET_TEXT,
         offsetof(struct settings, nats_inbox_prefix), NULL, 0, 0,
         "reply inbox prefix (default: _INBOX_<user> when nats_url has user:password@)"},
        {"db_schema", "SAGAD_DB_SCHEMA", SET_TEXT, offsetof(struct settings, db_schema), NULL, 0, 0,
         "schema of participant_ledger and participant_effects (created if missing)"},
        {"subject_prefix", "SAGAD_SUBJECT_PREFIX", SET_TEXT,
         offsetof(struct settings, subject_prefix), "saga", 0, 0,
         "first token(s) of every subject"},
        {"stream_prefix", "SAGAD_STREAM_PREFIX", SET_TEXT, offsetof(struct settings, stream_prefix),
         "SAGA", 0, 0, "prefix of stream names (commands in <prefix>_CMD)"},
        {"fail_rate", NULL, SET_NUMBER, offsetof(struct settings, fail_rate), "0", 0, 1,
         "fraction of sagas whose action on --fail-step fails permanently (by saga id)"},
        {"fail_step", NULL, SET_TEXT, offsetof(struct settings, fail_step), NULL, 0, 0,
         "subject --fail-rate applies to (default: the service's action subject)"},
        {"retryable_rate", NULL, SET_NUMBER, offsetof(struct settings, retryable_rate), "0", 0, 1,
         "fraction of action attempts that fail retryably (by saga id + attempt)"},
        {"fail_compensation_rate", NULL, SET_NUMBER,
         offsetof(struct settings, fail_compensation_rate), "0", 0, 1,
         "fraction of compensation attempts that fail retryably (by saga id + attempt)"},
        {"latency_ms", NULL, SET_NUMBER, offsetof(struct settings, latency_ms), "0", 0, 600000,
         "sleep per command, in milliseconds"},
        {"batch", NULL, SET_NUMBER, offsetof(struct settings, batch), "64", 1, 1024,
         "commands fetched at once per subject"},
        {"ack_wait_ms", NULL, SET_NUMBER, offsetof(struct settings, ack_wait_ms), "30000", 100,
         86400000, "redelivery delay of an unanswered command, in milliseconds"},
        {"log_level", "SAGAD_LOG_LEVEL", SET_TEXT, offsetof(struct settings, log_level), "info", 0,
         0, "debug | info | warn | error"},
};

#define N_SETTINGS (sizeof(setting_defs) / sizeof(setting_defs[0]))

/* What the handler of one subject needs. */
struct subject_ctx {
	const struct settings *set; /* program settings */
	const struct service *svc;  /* the service */
	const char *subject;        /* the subject served */
	bool fail_here;             /* --fail-rate applies to this subject */
};

static volatile sig_atomic_t stop_requested;

static void
on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void
install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* ---- settings ---- */

/* "fail-rate" and "fail_rate" name the same setting. */
static bool
same_name(const char *given, size_t len, const char *name)
{
	if (strlen(name) != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = given[i] == '-' ? '_' : given[i];

		if (c != name[i])
			return false;
	}
	return true;
}

static bool
set_value(struct settings *s, const struct setting_def *d, const char *value, char *err,
          size_t errlen)
{
	char *end = NULL;
	double v;

	if (d->kind == SET_TEXT) {
		*(const char **)((char *)s + d->offset) = value;
		return true;
	}
	v = strtod(value, &end);
	if (end == value || *end != '\0' || !(v >= d->min && v <= d->max)) {
		snprintf(err, errlen, "%s: \"%s\" is not a number from %g to %g", d->name, value,
		         d->min, d->max);
		return false;
	}
	*(double *)((char *)s + d->offset) = v;
	return true;
}

static void
print_help(FILE *out)
{
	fprintf(out, "usage: saga-participant --service SERVICE [--setting=value ...]\n\n"
	             "Serves the order saga's steps: stock (stock.reserve, stock.release),\n"
	             "payments (payments.charge, payments.refund), shipping (shipping.ship).\n"
	             "SIGTERM or SIGINT stops it (exit 0).\n\n"
	             "setting                  env                    default\n");
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting_def *d = &setting_defs[i];
		char flag[64]; /* the name as typed: dashes */

		for (size_t k = 0; k < sizeof(flag); k++) {
			flag[k] = d->name[k] == '_' ? '-' : d->name[k];
			if (flag[k] == '\0')
				break;
		}
		fprintf(out, "  --%-22s %-22s %s\n      %s\n", flag, d->env != NULL ? d->env : "-",
		        d->def != NULL ? d->def : "-", d->help);
	}
}

/* Defaults, then the environment, then the command line. Returns -1 for --help. */
static int
load_settings(struct settings *s, int argc, char **argv, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting_def *d = &setting_defs[i];
		const char *env = d->env != NULL ? getenv(d->env) : NULL;

		if (d->def != NULL && !set_value(s, d, d->def, err, errlen))
			return 1;
		if (env != NULL && env[0] != '\0' && !set_value(s, d, env, err, errlen))
			return 1;
	}
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *eq;
		const char *value;
		size_t len;
		const struct setting_def *d = NULL;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
			return -1;
		if (strncmp(arg, "--", 2) != 0) {
			snprintf(err, errlen, "unexpected argument \"%s\"", arg);
			return 1;
		}
		arg += 2;
		eq = strchr(arg, '=');
		len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
		for (size_t k = 0; k < N_SETTINGS && d == NULL; k++) {
			if (same_name(arg, len, setting_defs[k].name))
				d = &setting_defs[k];
		}
		if (d == NULL) {
			snprintf(err, errlen, "unknown setting --%.*s (see --help)", (int)len, arg);
			return 1;
		}
		if (eq != NULL) {
			value = eq + 1;
		} else if (i + 1 < argc) {
			value = argv[++i];
		} else {
			snprintf(err, errlen, "--%s needs a value", d->name);
			return 1;
		}
		if (!set_value(s, d, value, err, errlen))
			return 1;
	}
	return 0;
}

/* ---- the business logic ---- */

static int64_t
now_unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 64-bit FNV-1a. */
static uint64_t
fnv1a(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

/* A fraction in [0, 1) fixed by (salt, saga id, attempt): same inputs, same decision. */
static bool
decided(double rate, const char *salt, const char *saga_id, uint32_t attempt)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	unsigned char a[4] = {(unsigned char)(attempt >> 24), (unsigned char)(attempt >> 16),
	                      (unsigned char)(attempt >> 8), (unsigned char)attempt};

	if (rate <= 0)
		return false;
	h = fnv1a(h, salt, strlen(salt) + 1);
	h = fnv1a(h, saga_id, strlen(saga_id));
	h = fnv1a(h, a, sizeof(a));
	/* Mix the low-entropy tail, then take 53 bits as a double in [0, 1). */
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	h ^= h >> 33;
	return (double)(h >> 11) * (1.0 / 9007199254740992.0) < rate;
}

static enum reply_outcome
handle_command(void *arg, struct participant_txn *tx, const struct command_msg *cmd,
               struct participant_result *res)
{
	const struct subject_ctx *c = arg;
	const struct settings *s = c->set;
	bool action = cmd->phase == PHASE_ACTION;
	char attempt[16];
	char sent[24], received[24];
	char output[256];
	char err[512];
	const char *params[10];
	enum status st;
	int n;

	/* Before the simulated work: message age is command created -> participant received. */
	snprintf(received, sizeof(received), "%lld", (long long)now_unix_ms());
	snprintf(sent, sizeof(sent), "%lld", (long long)cmd->sent_unix_ms);
	if (s->latency_ms > 0) {
		int64_t ms = (int64_t)s->latency_ms;
		struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

		nanosleep(&ts, NULL);
	}
	/* The side effect, in the command's transaction: undone if the step fails. */
	snprintf(attempt, sizeof(attempt), "%u", (unsigned)cmd->attempt);
	params[0] = c->svc->name;
	params[1] = c->subject;
	params[2] = cmd->idempotency_key;
	params[3] = cmd->saga_id;
	params[4] = cmd->correlation_id;
	params[5] = cmd->step;
	params[6] = step_phase_name(cmd->phase);
	params[7] = attempt;
	params[8] = cmd->sent_unix_ms > 0 ? sent : NULL;
	params[9] = received;
	st = participant_exec(tx,
	                      "INSERT INTO participant_effects (service, subject, idempotency_key,"
	                      " saga_id, correlation_id, step, phase, attempt, sent_unix_ms,"
	                      " received_unix_ms)"
	                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
	                      10, params, err, sizeof(err));
	if (st != STATUS_OK) {
		participant_set_error(res, "db_error", "%s", err);
		return OUTCOME_RETRYABLE_FAILURE;
	}
	if (action && c->fail_here && decided(s->fail_rate, c->subject, cmd->saga_id, 0)) {
		participant_set_error(res, "declined", "%s declined saga %s (--fail-rate)",
		                      c->svc->name, cmd->saga_id);
		return OUTCOME_PERMANENT_FAILURE;
	}
	if (action && decided(s->retryable_rate, "retry", cmd->saga_id, cmd->attempt)) {
		participant_set_error(res, "unavailable",
		                      "%s temporarily unavailable (--retryable-rate), attempt %u",
		                      c->svc->name, (unsigned)cmd->attempt);
		return OUTCOME_RETRYABLE_FAILURE;
	}
	if (!action &&
	    decided(s->fail_compensation_rate, "compensate", cmd->saga_id, cmd->attempt)) {
		participant_set_error(res, "unavailable",
		                      "%s cannot undo yet (--fail-compensation-rate), attempt %u",
		                      c->svc->name, (unsigned)cmd->attempt);
		return OUTCOME_RETRYABLE_FAILURE;
	}
	n = snprintf(output, sizeof(output), "{\"service\":\"%s\",\"%s\":\"%.8s\"}", c->svc->name,
	             action ? c->svc->noun : "undone", cmd->saga_id);
	if (participant_set_output(res, output, (size_t)n) != STATUS_OK) {
		participant_set_error(res, "no_memory", "cannot keep the output");
		return OUTCOME_RETRYABLE_FAILURE;
	}
	return OUTCOME_SUCCESS;
}

/* ---- program ---- */

/* The start line, with the subjects served (extra fields the log module does not carry). */
static void
print_ready(const struct settings *s, const struct service *svc)
{
	char line[1024];
	char ts[40];
	struct timeval tv;
	struct tm tm;
	size_t pos;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (int)(tv.tv_usec / 1000));
	/* Every value here was validated as a name or subject: no escaping needed. */
	pos = (size_t)snprintf(
	        line, sizeof(line),
	        "{\"ts\":\"%s\",\"level\":\"info\",\"component\":\"saga-participant\","
	        "\"msg\":\"ready\",\"service\":\"%s\",\"name\":\"%s\",\"pid\":%ld,"
	        "\"subjects\":[",
	        ts, svc->name, s->name, (long)getpid());
	for (int i = 0; i < svc->n_subjects && pos < sizeof(line); i++)
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "%s\"%s\"", i ? "," : "",
		                        svc->subjects[i].subject);
	if (pos < sizeof(line))
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "]}\n");
	if (pos >= sizeof(line))
		pos = sizeof(line) - 1;
	if (write(STDERR_FILENO, line, pos) < 0) {
		/* stderr is gone: nothing else to tell */
	}
}

static int
exit_code_for(enum status st)
{
	switch (st) {
	case STATUS_CONFIG:
	case STATUS_INVALID:
		return EXIT_USAGE;
	case STATUS_DB:
	case STATUS_DB_RETRY:
		return EXIT_DATABASE;
	case STATUS_NATS:
	case STATUS_NOT_FOUND:
		return EXIT_NATS;
	default:
		return EXIT_RUN;
	}
}

/* Open one participant; waits while the command stream does not exist yet (sagad creates it). */
static enum status
open_subject(struct participant **out, const struct settings *s, const struct service_subject *ss,
             struct subject_ctx *ctx, char *err, size_t errlen)
{
	struct participant_config cfg;
	bool waiting = false;
	enum status st;

	participant_config_init(&cfg);
	cfg.nats_url = s->nats_url;
	cfg.inbox_prefix = s->nats_inbox_prefix;
	cfg.database_url = s->database_url;
	cfg.db_schema = s->db_schema;
	cfg.subject_prefix = s->subject_prefix;
	cfg.stream_prefix = s->stream_prefix;
	cfg.subject = ss->subject;
	cfg.action_subject = ss->undoes;
	cfg.name = s->name;
	cfg.batch = (int)s->batch;
	cfg.ack_wait_ms = (int64_t)s->ack_wait_ms;
	cfg.setup_sql = "CREATE TABLE IF NOT EXISTS participant_effects ("
	                " service text NOT NULL,"
	                " subject text NOT NULL,"
	                " idempotency_key text NOT NULL,"
	                " saga_id text NOT NULL,"
	                " correlation_id text,"
	                " step text NOT NULL,"
	                " phase text NOT NULL,"
	                " attempt integer NOT NULL,"
	                " created_at timestamptz NOT NULL DEFAULT now());"
	                /* Message age (saga-bench): the command's sent_unix_ms, and when the
	                 * handler got it; added to tables made before these columns existed. */
	                "ALTER TABLE participant_effects"
	                " ADD COLUMN IF NOT EXISTS sent_unix_ms bigint,"
	                " ADD COLUMN IF NOT EXISTS received_unix_ms bigint;"
	                "CREATE INDEX IF NOT EXISTS participant_effects_received"
	                " ON participant_effects (received_unix_ms)";
	for (;;) {
		st = participant_open(out, &cfg, handle_command, ctx, err, errlen);
		if (st != STATUS_NOT_FOUND || stop_requested)
			return st;
		if (!waiting)
			log_warn("%s; waiting for it", err);
		waiting = true;
		usleep(500 * 1000);
	}
}

int
main(int argc, char **argv)
{
	static struct settings set;
	struct participant *parts[MAX_SUBJECTS] = {NULL};
	struct subject_ctx ctx[MAX_SUBJECTS];
	const struct service *svc = NULL;
	char err[1024];
	int n = 0;
	int rc = EXIT_OK;
	int level;
	int r;

	log_set_component("saga-participant");
	r = load_settings(&set, argc, argv, err, sizeof(err));
	if (r < 0) {
		print_help(stdout);
		return EXIT_OK;
	}
	if (r > 0) {
		log_fatal("%s", err);
		return EXIT_USAGE;
	}
	level = log_level_parse(set.log_level);
	if (level < 0) {
		log_fatal("log_level: \"%s\" is not debug, info, warn or error", set.log_level);
		return EXIT_USAGE;
	}
	log_set_level((enum log_level)level);
	for (size_t i = 0; set.service != NULL && i < sizeof(services) / sizeof(services[0]); i++) {
		if (strcmp(set.service, services[i].name) == 0)
			svc = &services[i];
	}
	if (svc == NULL) {
		log_fatal("service: give --service stock, payments or shipping");
		return EXIT_USAGE;
	}
	if (set.name == NULL || set.name[0] == '\0')
		set.name = svc->name;
	if (set.fail_step == NULL || set.fail_step[0] == '\0')
		set.fail_step = svc->subjects[0].subject;
	if (set.fail_rate > 0) {
		bool served = false;

		for (int i = 0; i < svc->n_subjects; i++)
			served = served || strcmp(set.fail_step, svc->subjects[i].subject) == 0;
		if (!served) {
			log_fatal("fail_step: %s is not served by %s", set.fail_step, svc->name);
			return EXIT_USAGE;
		}
	}
	install_signals();

	for (int i = 0; i < svc->n_subjects; i++) {
		enum status st;

		ctx[i].set = &set;
		ctx[i].svc = svc;
		ctx[i].subject = svc->subjects[i].subject;
		ctx[i].fail_here = strcmp(set.fail_step, ctx[i].subject) == 0;
		st = open_subject(&parts[i], &set, &svc->subjects[i], &ctx[i], err, sizeof(err));
		if (st != STATUS_OK) {
			if (stop_requested)
				goto cleanup;
			log_fatal("%s", err);
			rc = st == STATUS_UNAVAILABLE
			             ? (strstr(err, "NATS") != NULL ? EXIT_NATS : EXIT_DATABASE)
			             : exit_code_for(st);
			goto cleanup;
		}
		n++;
	}
	print_ready(&set, svc);

	/* One participant per subject, polled in turn with a short wait each. */
	while (!stop_requested) {
		for (int i = 0; i < n && !stop_requested; i++) {
			int handled = 0;

			/* Failures are logged by the library, which also reconnects and waits. */
			if (participant_run_once(parts[i], POLL_SLICE_MS, &handled) != STATUS_OK)
				continue;
		}
	}
	log_info("stopping");
cleanup:
	for (int i = 0; i < MAX_SUBJECTS; i++)
		participant_close(parts[i]);
	participant_library_close();
	return rc;
}

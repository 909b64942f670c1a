/* saga-bench: open-loop load for sagad, or the same steps as a synchronous chain; JSON + a table. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "bench_db.h"
#include "bench_nats.h"
#include "bench_stats.h"
#include "bus.h"
#include "codec.h"
#include "config.h"
#include "definition.h"
#include "log.h"
#include "saga.h"

#define MAX_WATCH          8       /* processes whose CPU is reported besides sagad */
#define MAX_PAUSE          64      /* processes an outage stops */
#define MAX_GROUP          65      /* pids under one watched name, plus a 0 */
#define MAX_CALLERS        1024    /* synchronous callers */
#define LATE_US            5000    /* a start sent this late counts as late */
#define DRAIN_SETTLE_S     2       /* seconds in a row below the threshold = drained */
#define MAX_RECORDS        4000000 /* starts one run can track */
#define CHAIN_MAX_ATTEMPTS 100     /* bound on "unlimited" attempts in a synchronous chain */

/* Exit codes (same meaning as sagad's). */
enum exit_code {
	EXIT_OK = 0,       /* figures printed */
	EXIT_RUN = 1,      /* failed while running */
	EXIT_USAGE = 2,    /* bad command line or setting */
	EXIT_DATABASE = 3, /* PostgreSQL unreachable or unusable */
	EXIT_NATS = 4,     /* NATS unreachable or JetStream set-up failed */
};

/* ---- settings ---- */

/* Everything saga-bench can be told. */
struct settings {
	const char *mode;           /* open | sync | setup */
	const char *database_url;   /* PostgreSQL */
	const char *nats_url;       /* NATS */
	const char *subject_prefix; /* first token(s) of every subject */
	const char *stream_prefix;  /* prefix of stream names */
	const char *db_schema;      /* schema of sagad's tables and participant_effects */
	const char *saga;           /* definition started (open mode) */
	const char *definition;     /* YAML of the chain (sync mode) */
	const char *tag;            /* run label: correlation ids are <tag>:<n> */
	const char *csv;            /* per-second CSV path, or "" */
	const char *json;           /* JSON output path, or "" */
	const char *watch;          /* name=pid,... process trees whose CPU is reported */
	const char *pause_pids;     /* pid,... stopped during the outage */
	const char *accepted_file;  /* write the keys of the accepted starts here, or "" */
	double rate;                /* starts per second offered (sync: 0 = closed loop) */
	double warmup;              /* seconds before the steady phase */
	double duration;            /* seconds of the steady phase */
	double drain;               /* seconds to wait for in-flight sagas at the end */
	double payload_bytes;       /* size of the saga input */
	double sagad_pid;           /* sagad's pid, for CPU and memory; 0 = none */
	double pause_for;           /* outage length in seconds; 0 = no outage */
	double recover_max;         /* seconds after the outage the producer goes on at most */
	double after_drain;         /* seconds the producer goes on once the backlog drained */
	double callers;             /* synchronous callers */
	double max_ack_p95_ms;      /* sustained only below this start-ack p95 */
	double max_done_p95_ms;     /* sustained only below this completion p95 */
	double progress;            /* 1 = live progress line on stderr */
	double part_fail_rate;      /* what the runner gave the participants (reported only) */
	double part_latency_ms;     /* same */
	double part_instances;      /* same */
	double hold_at;             /* second of the run a long query starts (with hold_for) */
	double hold_for;            /* its length in seconds; 0 = none */
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
	const char *def;        /* default as text */
	double min, max;        /* bounds of numbers */
	const char *help;       /* one line */
} setting_defs[] = {
        {"mode", NULL, SET_TEXT, offsetof(struct settings, mode), "open", 0, 0,
         "open: open-loop starts through sagad | sync: the steps as a synchronous chain | "
         "setup: create the streams of --subject-prefix/--stream-prefix and exit"},
        {"database_url", "SAGAD_DATABASE_URL", SET_TEXT, offsetof(struct settings, database_url),
         "postgresql://127.0.0.1:5432/sagad", 0, 0, "PostgreSQL connection (URL or key=value)"},
        {"nats_url", "SAGAD_NATS_URL", SET_TEXT, offsetof(struct settings, nats_url),
         "nats://127.0.0.1:4222", 0, 0, "NATS server URL(s)"},
        {"subject_prefix", "SAGAD_SUBJECT_PREFIX", SET_TEXT,
         offsetof(struct settings, subject_prefix), "saga", 0, 0,
         "first token(s) of every subject"},
        {"stream_prefix", "SAGAD_STREAM_PREFIX", SET_TEXT, offsetof(struct settings, stream_prefix),
         "SAGA", 0, 0, "prefix of stream names"},
        {"db_schema", "SAGAD_DB_SCHEMA", SET_TEXT, offsetof(struct settings, db_schema), "", 0, 0,
         "schema of sagad's tables and participant_effects (empty: the search_path)"},
        {"saga", NULL, SET_TEXT, offsetof(struct settings, saga), "order", 0, 0,
         "definition to start (open mode); must be registered"},
        {"definition", NULL, SET_TEXT, offsetof(struct settings, definition), "sagas/order.yaml", 0,
         0, "YAML definition whose steps the synchronous chain runs (sync mode)"},
        {"tag", NULL, SET_TEXT, offsetof(struct settings, tag), "bench", 0, 0,
         "run label; correlation ids and idempotency keys are <tag>:<n> (unique per run)"},
        {"csv", NULL, SET_TEXT, offsetof(struct settings, csv), "", 0, 0,
         "write one row per second here (offered, completed, in flight, backlog, p95s)"},
        {"json", NULL, SET_TEXT, offsetof(struct settings, json), "", 0, 0,
         "also write the JSON object here"},
        {"watch", NULL, SET_TEXT, offsetof(struct settings, watch), "", 0, 0,
         "name=pid,... : report the CPU seconds of these processes and their children"},
        {"pause_pids", NULL, SET_TEXT, offsetof(struct settings, pause_pids), "", 0, 0,
         "pid,... : SIGSTOP these after the steady phase, SIGCONT after --pause-for"},
        {"accepted_file", NULL, SET_TEXT, offsetof(struct settings, accepted_file), "", 0, 0,
         "write the idempotency key (= correlation id) of every start answered accepted or "
         "duplicate here, one per line, for an exact I1 check (every accepted start has a saga)"},
        {"rate", NULL, SET_NUMBER, offsetof(struct settings, rate), "100", 0, 100000,
         "starts offered per second (open loop); sync mode: 0 = as fast as the callers go"},
        {"warmup", NULL, SET_NUMBER, offsetof(struct settings, warmup), "5", 0, 3600,
         "seconds of load before the steady phase (not counted)"},
        {"duration", NULL, SET_NUMBER, offsetof(struct settings, duration), "20", 1, 86400,
         "seconds of the steady phase the figures are taken from"},
        {"drain", NULL, SET_NUMBER, offsetof(struct settings, drain), "60", 0, 86400,
         "seconds to wait at the end for sagas still in flight"},
        {"payload_bytes", NULL, SET_NUMBER, offsetof(struct settings, payload_bytes), "256", 64,
         65536, "size of each saga input (JSON)"},
        {"sagad_pid", NULL, SET_NUMBER, offsetof(struct settings, sagad_pid), "0", 0, 4194304,
         "sagad's pid: CPU seconds and peak RSS are read from /proc"},
        {"pause_for", NULL, SET_NUMBER, offsetof(struct settings, pause_for), "0", 0, 86400,
         "consumer outage: seconds the --pause-pids stay stopped (0 = no outage)"},
        {"recover_max", NULL, SET_NUMBER, offsetof(struct settings, recover_max), "900", 1, 86400,
         "seconds after the outage the producer goes on while the backlog drains"},
        {"after_drain", NULL, SET_NUMBER, offsetof(struct settings, after_drain), "5", 0, 3600,
         "seconds the producer goes on once the backlog drained"},
        {"callers", NULL, SET_NUMBER, offsetof(struct settings, callers), "16", 1, MAX_CALLERS,
         "sync mode: concurrent callers, each waiting for its chain"},
        {"max_ack_p95_ms", NULL, SET_NUMBER, offsetof(struct settings, max_ack_p95_ms), "250", 0,
         3600000, "a rate is sustained only with a start-ack p95 below this (the seed's 250 ms)"},
        {"max_completion_p95_ms", NULL, SET_NUMBER, offsetof(struct settings, max_done_p95_ms),
         "1000", 0, 3600000,
         "a rate is sustained only with a saga completion p95 below this (queues hide here)"},
        {"progress", NULL, SET_NUMBER, offsetof(struct settings, progress), "1", 0, 1,
         "1 = a live progress line on stderr"},
        {"participant_fail_rate", NULL, SET_NUMBER, offsetof(struct settings, part_fail_rate), "0",
         0, 1, "reported only: the --fail-rate the participants were given"},
        {"participant_latency_ms", NULL, SET_NUMBER, offsetof(struct settings, part_latency_ms),
         "0", 0, 600000, "reported only: the --latency-ms the participants were given"},
        {"hold_snapshot_at", NULL, SET_NUMBER, offsetof(struct settings, hold_at), "10", 0, 86400,
         "second of the run at which --hold-snapshot-for starts"},
        {"hold_snapshot_for", NULL, SET_NUMBER, offsetof(struct settings, hold_for), "0", 0, 86400,
         "run one long query (SELECT pg_sleep) this many seconds: its snapshot keeps vacuum "
         "from removing dead rows, as an operator's report or a pg_dump would (0 = none)"},
        {"participant_instances", NULL, SET_NUMBER, offsetof(struct settings, part_instances), "1",
         0, 1000, "reported only: processes per participant service"},
};

#define N_SETTINGS (sizeof(setting_defs) / sizeof(setting_defs[0]))

/* "pause-for" and "pause_for" name the same setting. */
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
	fprintf(out,
	        "usage: saga-bench [--setting=value ...]\n\n"
	        "Offers starts of a saga to sagad at a fixed rate whether or not earlier ones\n"
	        "were answered (open loop), warms up, measures a steady phase, waits for the\n"
	        "sagas in flight, and prints a table and one JSON object with the figures of\n"
	        "shared/design/BENCHMARKS.md. With --pause-for it stops --pause-pids after\n"
	        "the steady phase (a consumer outage) and measures how the backlog drains.\n"
	        "--mode sync runs the definition's steps as a synchronous chain instead\n"
	        "(each caller waits for every participant's reply before the next step).\n\n"
	        "setting                    env                    default\n");
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting_def *d = &setting_defs[i];
		char flag[64]; /* the name as typed: dashes */

		for (size_t k = 0; k < sizeof(flag); k++) {
			flag[k] = d->name[k] == '_' ? '-' : d->name[k];
			if (flag[k] == '\0')
				break;
		}
		fprintf(out, "  --%-24s %-22s %s\n      %s\n", flag, d->env != NULL ? d->env : "-",
		        d->def[0] != '\0' ? d->def : "\"\"", d->help);
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

		if (!set_value(s, d, d->def, err, errlen))
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
	if (strcmp(s->mode, "open") != 0 && strcmp(s->mode, "sync") != 0 &&
	    strcmp(s->mode, "setup") != 0) {
		snprintf(err, errlen, "mode: \"%s\" is not open, sync or setup", s->mode);
		return 1;
	}
	/* ':' ends the tag in ids, so no tag is the prefix of another's ids; no LIKE wildcards. */
	if (!saga_valid_key(s->tag, 40) || strpbrk(s->tag, "%_:") != NULL) {
		snprintf(err, errlen, "tag: use 1-40 of [A-Za-z0-9./+=@-]");
		return 1;
	}
	if (!saga_valid_name(s->saga)) {
		snprintf(err, errlen, "saga: not a saga name");
		return 1;
	}
	if (strcmp(s->mode, "open") == 0 && s->rate <= 0) {
		snprintf(err, errlen, "rate: must be above 0 in open mode");
		return 1;
	}
	return 0;
}

/* ---- small helpers ---- */

static volatile sig_atomic_t interrupted;

static void
on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep until monotonic time due_us (returns at once when it has passed). */
static void
sleep_until_us(int64_t due_us)
{
	struct timespec ts = {.tv_sec = (time_t)(due_us / 1000000),
	                      .tv_nsec = (long)(due_us % 1000000) * 1000};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
		if (interrupted)
			return;
	}
}

static void
sleep_us(int64_t us)
{
	if (us > 0)
		sleep_until_us(mono_us() + us);
}

/* The number after the last '.' of subject, or -1. */
static long long
subject_index(const char *subject)
{
	const char *dot = strrchr(subject, '.');
	char *end = NULL;
	long long v;

	if (dot == NULL || dot[1] == '\0')
		return -1;
	v = strtoll(dot + 1, &end, 10);
	return *end == '\0' ? v : -1;
}

/* The saga input: ~bytes of JSON, the same shape for every start. */
static size_t
make_input(char *out, size_t cap, size_t bytes, long long i)
{
	int n = snprintf(out, cap,
	                 "{\"order_id\":%lld,\"sku\":\"SKU-%03lld\",\"qty\":%lld,"
	                 "\"amount_cents\":%lld,\"currency\":\"EUR\",\"note\":\"",
	                 i, i % 997, 1 + i % 5, 1000 + 37 * (i % 10000));
	size_t len = (size_t)n;

	if (bytes >= cap)
		bytes = cap - 1;
	for (; len + 2 < bytes; len++)
		out[len] = (char)('a' + (len % 26));
	out[len++] = '"';
	out[len++] = '}';
	out[len] = '\0';
	return len;
}

static double
ms(double us)
{
	return us / 1000.0;
}

/*
 * Process list "name=pid+pid,name=pid" into names / pid groups (each pid
 * with its children); returns how many names, -1 on a bad entry.
 */
static int
parse_watch(const char *text, char names[][32], int pids[][MAX_GROUP], int max)
{
	int n = 0;
	const char *p = text;

	while (*p != '\0') {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		const char *eq = memchr(p, '=', len);

		if (len > 0) {
			const char *q;
			int k = 0;

			if (eq == NULL || n >= max || (size_t)(eq - p) >= 32 || eq == p)
				return -1;
			memcpy(names[n], p, (size_t)(eq - p));
			names[n][eq - p] = '\0';
			for (q = eq + 1; q < p + len;) {
				char *end = NULL;
				long pid = strtol(q, &end, 10);

				if (end == q || pid <= 0 || k >= MAX_GROUP - 1)
					return -1;
				pids[n][k++] = (int)pid;
				q = *end == '+' ? end + 1 : end;
				if (q > p + len || (*end != '+' && end != p + len))
					return -1;
			}
			pids[n][k] = 0;
			if (k == 0)
				return -1;
			n++;
		}
		p += len;
		if (*p == ',')
			p++;
	}
	return n;
}

/* pid list "1,2,3" into pids; returns how many, -1 on a bad entry. */
static int
parse_pids(const char *text, int *pids, int max)
{
	int n = 0;
	const char *p = text;

	while (*p != '\0') {
		char *end = NULL;
		long pid = strtol(p, &end, 10);

		if (end == p || pid <= 0 || n >= max)
			return -1;
		pids[n++] = (int)pid;
		p = end;
		while (*p == ',' || *p == ' ')
			p++;
	}
	return n;
}

/* ---- JSON writer ---- */

/* A JSON object being written to a stream. */
struct json {
	FILE *f;         /* where it goes */
	int depth;       /* open objects */
	bool first[16];  /* no member yet at this depth */
	bool want_comma; /* a value was written at the current depth */
};

static void
json_key(struct json *j, const char *key)
{
	if (!j->first[j->depth])
		fputc(',', j->f);
	j->first[j->depth] = false;
	if (key != NULL)
		fprintf(j->f, "\"%s\":", key);
}

static void
json_open(struct json *j, const char *key)
{
	if (j->depth > 0 || key != NULL)
		json_key(j, key);
	fputc('{', j->f);
	j->depth++;
	j->first[j->depth] = true;
}

static void
json_close(struct json *j)
{
	fputc('}', j->f);
	j->depth--;
}

static void
json_num(struct json *j, const char *key, double v)
{
	json_key(j, key);
	if (!isfinite(v))
		fputs("null", j->f);
	else if (v == floor(v) && fabs(v) < 1e15)
		fprintf(j->f, "%.0f", v);
	else
		fprintf(j->f, "%.4g", v);
}

/* Numbers with a fixed number of decimals (latencies in ms). */
static void
json_fixed(struct json *j, const char *key, double v, int decimals)
{
	json_key(j, key);
	if (!isfinite(v))
		fputs("null", j->f);
	else
		fprintf(j->f, "%.*f", decimals, v);
}

static void
json_bool(struct json *j, const char *key, bool v)
{
	json_key(j, key);
	fputs(v ? "true" : "false", j->f);
}

static void
json_str(struct json *j, const char *key, const char *s)
{
	json_key(j, key);
	fputc('"', j->f);
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(j->f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(j->f, "\\u%04x", *p);
		else
			fputc(*p, j->f);
	}
	fputc('"', j->f);
}

/* p50 / p95 / p99 / max (ms) and the count of a sorted latency sample (us). */
static void
json_latency(struct json *j, const char *key, const int64_t *sorted, size_t n)
{
	json_open(j, key);
	json_fixed(j, "p50", ms(bench_pct_sorted(sorted, n, 0.50)), 2);
	json_fixed(j, "p95", ms(bench_pct_sorted(sorted, n, 0.95)), 2);
	json_fixed(j, "p99", ms(bench_pct_sorted(sorted, n, 0.99)), 2);
	json_fixed(j, "max", n > 0 ? ms((double)sorted[n - 1]) : NAN, 2);
	json_num(j, "n", (double)n);
	json_close(j);
}

/* Print the JSON (one line) to stdout and to path if given. */
static void
emit_json(char *buf, const char *path)
{
	printf("%s\n", buf);
	fflush(stdout);
	if (path != NULL && path[0] != '\0') {
		FILE *f = fopen(path, "w");

		if (f == NULL) {
			log_error("cannot write %s: %s", path, strerror(errno));
			return;
		}
		fprintf(f, "%s\n", buf);
		fclose(f);
	}
}

/* ---- processes ---- */

/* The processes whose CPU is read at phase boundaries. */
struct procs {
	int n;                          /* watched processes */
	char names[MAX_WATCH][32];      /* their names */
	int pids[MAX_WATCH][MAX_GROUP]; /* their pids (trees), 0-terminated */
	double cpu_a[MAX_WATCH];        /* CPU seconds at the start of the window */
	double cpu_b[MAX_WATCH];        /* CPU seconds at its end */
	int sagad_pid;                  /* 0 = none */
	double sagad_a, sagad_b;        /* sagad's CPU seconds at the window's ends */
	double sagad_run_a;             /* at the start of the whole run */
};

static void
procs_sample(struct procs *p, double *sagad, double *cpu)
{
	if (p->sagad_pid > 0)
		*sagad = bench_proc_cpu_seconds(p->sagad_pid, false);
	for (int i = 0; i < p->n; i++) {
		cpu[i] = 0;
		for (int k = 0; p->pids[i][k] > 0; k++)
			cpu[i] += bench_proc_cpu_seconds(p->pids[i][k], true);
	}
}

/* ---- open mode ---- */

/* What became of one start. */
enum rec_flag {
	REC_ACKED = 1,        /* an answer came */
	REC_ACCEPTED = 2,     /* it was ACCEPTED (or DUPLICATE) */
	REC_REJECTED = 4,     /* it was REJECTED */
	REC_TERMINAL = 8,     /* a completed / compensated / resolved event came */
	REC_COMPENSATED = 16, /* that event was compensated */
	REC_FAILED = 32,      /* a failed event came (operator needed) */
	REC_CLAIMED = 64,     /* the first terminal event is being recorded */
};

/* One start sent. */
struct start_rec {
	_Atomic int64_t sent_us; /* monotonic us of the publish; 0 = not sent */
	int64_t ack_us;          /* start-ack latency (with REC_ACKED) */
	int64_t done_us;         /* publish -> terminal event (with REC_TERMINAL) */
	_Atomic unsigned flags;  /* enum rec_flag */
};

/* Phases of an open-loop run. */
enum phase {
	PHASE_WARMUP = 0, /* load, not counted */
	PHASE_STEADY,     /* the figures' window */
	PHASE_PAUSED,     /* outage: consumers stopped */
	PHASE_RECOVER,    /* outage over, backlog draining, load goes on */
	PHASE_DRAIN,      /* no more starts: waiting for sagas in flight */
};

static const char *const phase_names[] = {"warmup", "steady", "paused", "recover", "drain"};

/* One second of the run. */
struct second_row {
	enum phase phase;      /* phase during the second */
	uint64_t offered;      /* starts sent */
	uint64_t acked;        /* answers received */
	uint64_t completed;    /* terminal events received */
	uint64_t events;       /* lifecycle events received */
	int64_t in_flight;     /* accepted, not terminal, at the end of the second */
	int64_t unanswered;    /* sent, not answered, at the end */
	int64_t cmd_msgs;      /* messages in the command stream (-1 unknown) */
	int64_t reply_msgs;    /* messages in the reply stream (-1 unknown) */
	double ack_p50;        /* start-ack latency of answers in the second, ms */
	double ack_p95;        /* same */
	double ack_p99;        /* same */
	double done_p95;       /* completion latency of sagas ending in the second, ms */
	double age_p95;        /* message age of commands received in the second, ms */
	double age_max;        /* same, largest */
	double age_n;          /* commands received (effects written) in the second */
	double sagad_cores;    /* sagad's CPU over the second, in cores */
	double sagad_rss_mb;   /* sagad's RSS at the end */
	double outbox_live;    /* saga_outbox rows (PostgreSQL's statistics) */
	double outbox_dead;    /* dead saga_outbox rows not yet vacuumed */
	double outbox_vacuums; /* (auto)vacuums of saga_outbox so far */
};

/* An open-loop run. */
struct bench {
	const struct settings *set;      /* settings */
	struct bench_nats *nats;         /* our connection */
	struct bus *bus;                 /* stream statistics */
	struct bench_db *db;             /* figures from the database */
	struct start_rec *recs;          /* one per start that may be sent */
	size_t cap;                      /* records */
	char inbox[96];                  /* answers come on <inbox>.<index> */
	char start_subject[256];         /* <prefix>.start.<saga> */
	char tag_prefix[48];             /* "<tag>:" */
	size_t tag_len;                  /* its length */
	int64_t t0_us;                   /* monotonic start of sending */
	int64_t t0_unix_ms;              /* the same moment, wall clock */
	_Atomic size_t sent;             /* starts published */
	_Atomic bool stop_sending;       /* the sender stops */
	_Atomic uint64_t acked;          /* answers */
	_Atomic uint64_t accepted;       /* ACCEPTED / DUPLICATE answers */
	_Atomic uint64_t rejected;       /* REJECTED answers */
	_Atomic uint64_t bad_answers;    /* answers that did not decode or match */
	_Atomic uint64_t terminal;       /* sagas that reached completed / compensated */
	_Atomic uint64_t completed;      /* ... completed */
	_Atomic uint64_t compensated;    /* ... compensated */
	_Atomic uint64_t failed;         /* failed events */
	_Atomic uint64_t events;         /* lifecycle events of our saga name */
	_Atomic uint64_t events_corr;    /* ... carrying our correlation id */
	_Atomic uint64_t events_nocorr;  /* ... without a correlation id header */
	_Atomic uint64_t publish_errors; /* starts the client library refused */
	_Atomic int64_t max_lag_us;      /* worst lateness of a start against its schedule */
	_Atomic uint64_t late_sends;     /* starts sent more than LATE_US late */
	struct bench_hist ack_hist;      /* start-ack latencies of the current second */
	struct bench_hist done_hist;     /* completion latencies of the current second */
};

static void
count_max(_Atomic int64_t *max, int64_t v)
{
	int64_t cur = atomic_load_explicit(max, memory_order_relaxed);

	while (v > cur && !atomic_compare_exchange_weak(max, &cur, v)) {
	}
}

/* The start answers: on the subscription's delivery thread. */
static void
on_answer(void *arg, struct bench_msg *m)
{
	struct bench *b = arg;
	int64_t now = mono_us();
	long long i = subject_index(bench_msg_subject(m));
	struct start_answer a;
	struct start_rec *r;
	int64_t sent;
	char err[256];

	if (i < 0 || (size_t)i >= b->cap) {
		atomic_fetch_add(&b->bad_answers, 1);
		return;
	}
	r = &b->recs[i];
	sent = atomic_load_explicit(&r->sent_us, memory_order_acquire);
	if (sent == 0 || codec_decode_start_answer(bench_msg_data(m), bench_msg_len(m), &a, err,
	                                           sizeof(err)) != STATUS_OK) {
		atomic_fetch_add(&b->bad_answers, 1);
		return;
	}
	r->ack_us = now - sent;
	bench_hist_add(&b->ack_hist, r->ack_us);
	if (a.status == START_ACCEPTED || a.status == START_DUPLICATE) {
		atomic_fetch_or_explicit(&r->flags, REC_ACKED | REC_ACCEPTED, memory_order_release);
		atomic_fetch_add(&b->accepted, 1);
	} else {
		atomic_fetch_or_explicit(&r->flags, REC_ACKED | REC_REJECTED, memory_order_release);
		atomic_fetch_add(&b->rejected, 1);
	}
	atomic_fetch_add(&b->acked, 1);
}

/* Lifecycle events of our saga name: on the subscription's delivery thread. */
static void
on_event(void *arg, struct bench_msg *m)
{
	struct bench *b = arg;
	int64_t now = mono_us();
	const char *corr = bench_msg_header(m, HDR_CORRELATION_ID);
	const char *subject = bench_msg_subject(m);
	const char *token = strrchr(subject, '.');
	struct start_rec *r;
	unsigned add = 0, old;
	char *end = NULL;
	long long i;
	int64_t sent;

	atomic_fetch_add(&b->events, 1);
	if (corr == NULL || corr[0] == '\0') {
		atomic_fetch_add(&b->events_nocorr, 1);
		return;
	}
	if (strncmp(corr, b->tag_prefix, b->tag_len) != 0)
		return; /* another run's saga */
	i = strtoll(corr + b->tag_len, &end, 10);
	if (*end != '\0' || i < 0 || (size_t)i >= b->cap)
		return;
	atomic_fetch_add(&b->events_corr, 1);
	token = token != NULL ? token + 1 : "";
	if (strcmp(token, "completed") == 0 || strcmp(token, "resolved") == 0)
		add = REC_TERMINAL;
	else if (strcmp(token, "compensated") == 0)
		add = REC_TERMINAL | REC_COMPENSATED;
	else if (strcmp(token, "failed") == 0)
		add = REC_FAILED;
	if (add == 0)
		return;
	r = &b->recs[i];
	if (add == REC_FAILED) {
		atomic_fetch_or(&r->flags, REC_FAILED);
		atomic_fetch_add(&b->failed, 1);
		return;
	}
	old = atomic_fetch_or(&r->flags, REC_CLAIMED);
	if (old & REC_CLAIMED)
		return; /* a re-published event: counted once */
	sent = atomic_load_explicit(&r->sent_us, memory_order_acquire);
	r->done_us = sent > 0 ? now - sent : 0;
	atomic_fetch_or_explicit(&r->flags, add, memory_order_release);
	bench_hist_add(&b->done_hist, r->done_us);
	atomic_fetch_add(&b->terminal, 1);
	if (add & REC_COMPENSATED)
		atomic_fetch_add(&b->compensated, 1);
	else
		atomic_fetch_add(&b->completed, 1);
}

/* The sender: starts on schedule, never waiting for answers. */
static void *
sender_main(void *arg)
{
	struct bench *b = arg;
	const struct settings *s = b->set;
	size_t cap_input = (size_t)s->payload_bytes + 64;
	char *input = malloc(cap_input);
	char key[64], reply[160], err[256];

	if (input == NULL)
		return NULL;
	for (size_t i = 0; i < b->cap; i++) {
		int64_t due = b->t0_us + (int64_t)((double)i * 1e6 / s->rate);
		struct bytes req = {0};
		size_t len;
		int64_t now, lag;

		if (atomic_load(&b->stop_sending) || interrupted)
			break;
		sleep_until_us(due);
		if (atomic_load(&b->stop_sending) || interrupted)
			break;
		now = mono_us();
		lag = now - due;
		count_max(&b->max_lag_us, lag);
		if (lag > LATE_US)
			atomic_fetch_add(&b->late_sends, 1);
		len = make_input(input, cap_input, (size_t)s->payload_bytes, (long long)i);
		snprintf(key, sizeof(key), "%s%zu", b->tag_prefix, i);
		snprintf(reply, sizeof(reply), "%s.%zu", b->inbox, i);
		if (codec_encode_start_request(s->saga, 0, (struct bytes){(uint8_t *)input, len},
		                               key, key, &req) != STATUS_OK) {
			atomic_fetch_add(&b->publish_errors, 1);
			continue;
		}
		atomic_store_explicit(&b->recs[i].sent_us, mono_us(), memory_order_release);
		if (bench_nats_publish(b->nats, b->start_subject, reply, NULL, 0, req.data, req.len,
		                       err, sizeof(err)) != STATUS_OK)
			atomic_fetch_add(&b->publish_errors, 1);
		atomic_store(&b->sent, i + 1);
		free(req.data);
	}
	free(input);
	return NULL;
}

/* A long query on a connection of its own: holds one snapshot for hold_for seconds. */
static void *
holder_main(void *arg)
{
	struct bench *b = arg;
	const struct settings *s = b->set;
	struct bench_db *db = NULL;
	char secs[32], err[256];
	const char *p[1] = {secs};
	double v[1];

	sleep_until_us(b->t0_us + (int64_t)(s->hold_at * 1e6));
	if (interrupted || atomic_load(&b->stop_sending))
		return NULL;
	if (bench_db_connect(&db, s->database_url, s->db_schema, err, sizeof(err)) != STATUS_OK) {
		log_warn("hold_snapshot: %s", err);
		return NULL;
	}
	snprintf(secs, sizeof(secs), "%.3f", s->hold_for);
	if (bench_db_numbers(db, "SELECT count(*) FROM (SELECT pg_sleep($1::float8)) x", 1, p, v, 1,
	                     err, sizeof(err)) != STATUS_OK)
		log_warn("hold_snapshot: %s", err);
	bench_db_close(db);
	return NULL;
}

/* Stream backlog; -1 when unknown. */
static int64_t
stream_msgs(struct bench *b, enum bus_stream which)
{
	struct bus_stream_stats st;
	char err[256];

	if (b->bus == NULL || bus_stream_stats(b->bus, which, &st, err, sizeof(err)) != STATUS_OK)
		return -1;
	return (int64_t)st.msgs;
}

/*
 * sagad's outbox as PostgreSQL's statistics see it: a queue table whose dead
 * rows slow the relay's "oldest rows first" scan until they are vacuumed.
 */
static void
query_outbox(struct bench *b, struct second_row *row)
{
	char err[256];
	double v[3];

	if (bench_db_numbers(b->db,
	                     "SELECT n_live_tup, n_dead_tup, vacuum_count + autovacuum_count"
	                     " FROM pg_stat_user_tables WHERE relname = 'saga_outbox'"
	                     " AND schemaname = current_schema()",
	                     0, NULL, v, 3, err, sizeof(err)) != STATUS_OK)
		v[0] = v[1] = v[2] = NAN;
	row->outbox_live = v[0];
	row->outbox_dead = v[1];
	row->outbox_vacuums = v[2];
}

/* Message age of the commands received in [from_ms, to_ms): p95, max, count into row. */
static void
query_age(struct bench *b, int64_t from_ms, int64_t to_ms, struct second_row *row)
{
	char a[24], z[24], err[256];
	const char *params[2] = {a, z};
	double v[3];

	snprintf(a, sizeof(a), "%lld", (long long)from_ms);
	snprintf(z, sizeof(z), "%lld", (long long)to_ms);
	if (bench_db_numbers(b->db,
	                     "SELECT percentile_disc(0.95) WITHIN GROUP"
	                     " (ORDER BY received_unix_ms - sent_unix_ms),"
	                     " max(received_unix_ms - sent_unix_ms), count(*)"
	                     " FROM participant_effects"
	                     " WHERE received_unix_ms >= $1 AND received_unix_ms < $2"
	                     " AND sent_unix_ms IS NOT NULL",
	                     2, params, v, 3, err, sizeof(err)) != STATUS_OK) {
		v[0] = v[1] = v[2] = NAN;
	}
	row->age_p95 = v[0];
	row->age_max = v[1];
	row->age_n = v[2];
}

static void
csv_header(FILE *f)
{
	fprintf(f, "second,phase,offered,acked,completed,lifecycle_events,in_flight,unanswered,"
	           "backlog_cmd_msgs,backlog_reply_msgs,start_ack_p50_ms,start_ack_p95_ms,"
	           "start_ack_p99_ms,completion_p95_ms,message_age_p95_ms,message_age_max_ms,"
	           "commands_received,sagad_cores,sagad_rss_mb,outbox_rows,outbox_dead_rows,"
	           "outbox_vacuums\n");
}

static void
csv_num(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, ",%.3f", v);
	else
		fputs(",", f);
}

static void
csv_row(FILE *f, int sec, const struct second_row *r)
{
	fprintf(f, "%d,%s,%llu,%llu,%llu,%llu,%lld,%lld,%lld,%lld", sec + 1, phase_names[r->phase],
	        (unsigned long long)r->offered, (unsigned long long)r->acked,
	        (unsigned long long)r->completed, (unsigned long long)r->events,
	        (long long)r->in_flight, (long long)r->unanswered, (long long)r->cmd_msgs,
	        (long long)r->reply_msgs);
	csv_num(f, r->ack_p50);
	csv_num(f, r->ack_p95);
	csv_num(f, r->ack_p99);
	csv_num(f, r->done_p95);
	csv_num(f, r->age_p95);
	csv_num(f, r->age_max);
	csv_num(f, r->age_n);
	csv_num(f, r->sagad_cores);
	csv_num(f, r->sagad_rss_mb);
	csv_num(f, r->outbox_live);
	csv_num(f, r->outbox_dead);
	csv_num(f, r->outbox_vacuums);
	fputc('\n', f);
	fflush(f);
}

/* The live line: overwritten on a terminal, one line every 5 s otherwise. */
static void
progress_line(int sec, const struct second_row *r, const struct second_row *prev)
{
	static int tty = -1;
	char line[320];

	if (tty < 0)
		tty = isatty(STDERR_FILENO);
	if (!tty && sec % 5 != 0)
		return;
	snprintf(line, sizeof(line),
	         "[%s %4ds] offered %5llu/s  completed %5llu/s  in flight %6lld  backlog %6lld msgs"
	         "  ack p95 %7.2f ms  done p95 %8.1f ms  age p95 %7.1f ms  sagad %.2f cores",
	         phase_names[r->phase], sec + 1, (unsigned long long)r->offered,
	         (unsigned long long)r->completed, (long long)r->in_flight,
	         (long long)(r->cmd_msgs > 0 ? r->cmd_msgs : 0) +
	                 (r->reply_msgs > 0 ? r->reply_msgs : 0),
	         r->ack_p95, r->done_p95, prev != NULL ? prev->age_p95 : NAN, r->sagad_cores);
	if (tty)
		fprintf(stderr, "\r%s\033[K", line);
	else
		fprintf(stderr, "%s\n", line);
}

/* Figures of the outage, from the per-second rows. */
struct outage {
	bool happened;          /* the consumers were stopped */
	int pause_sec;          /* second the pause began */
	int resume_sec;         /* second they were resumed */
	int drained_sec;        /* second the backlog was back to normal; -1 never */
	double threshold;       /* in-flight level counted as drained */
	int64_t backlog_peak;   /* most sagas in flight */
	int64_t cmd_peak;       /* most command messages waiting */
	int64_t backlog_resume; /* sagas in flight at the resume */
	double age_peak_p95;    /* highest per-second message age p95, ms */
	double age_peak_max;    /* highest message age seen, ms */
	double drain_s;         /* resume -> drained, seconds */
	double drain_rate;      /* sagas completed per second while draining */
	double recovery_x;      /* drain_rate / producer rate */
	double implied_x;       /* 1 + pause / drain time: the seed's way to the 1.7x */
};

/* Everything the run measured, for the JSON and the table. */
struct results {
	double offered_per_s;       /* steady window */
	double completed_per_s;     /* steady window */
	double events_per_s;        /* lifecycle events in the steady window */
	double transitions_per_s;   /* saga_transition rows in the steady window */
	double steps_per_s;         /* replies applied in the steady window */
	int64_t inflight_start;     /* sagas in flight when the window began */
	int64_t inflight_end;       /* when it ended */
	int64_t backlog_growth;     /* the difference */
	int64_t final_inflight;     /* after the drain */
	int64_t final_cmd_msgs;     /* command stream after the drain */
	int64_t final_reply_msgs;   /* reply stream after the drain */
	int64_t *ack;               /* sorted start-ack latencies of the window, us */
	size_t n_ack;               /* count */
	int64_t *done;              /* sorted completion latencies of the window, us */
	size_t n_done;              /* count */
	size_t window_sent;         /* starts sent in the window */
	size_t window_unanswered;   /* ... never answered */
	size_t window_rejected;     /* ... rejected */
	size_t window_not_terminal; /* ... accepted without a terminal event */
	double age[5];              /* message age in the window: p50, p95, p99, max, n */
	double db_sagas[8];         /* total, completed, compensated, failed, running,
	                               compensating, resolved, with our correlation id */
	double effects[4];          /* effects, distinct keys, with the saga's correlation id,
	                               with any correlation id */
	double replies[1];          /* replies applied (saga_transition event 'reply') */
	double dead_letters[2];     /* since the start, of which with our correlation id */
	double lost;                /* accepted but not terminal after the drain */
	double sagad_cpu_s;         /* steady window */
	double sagad_cpu_run_s;     /* whole run */
	double sagad_peak_rss_mb;   /* VmHWM */
	double sagad_rss_mb;        /* VmRSS at the end */
	bool sustained;             /* see verdict */
	bool on_schedule;           /* the generator kept to its schedule (else: CPU-starved) */
	double outbox_dead_max;     /* most dead saga_outbox rows seen in the window */
	double outbox_vacuums;      /* vacuums of saga_outbox during the run */
	char verdict[256];          /* why not sustained, or "ok" */
	struct outage out;          /* outage figures */
};

/* Database figures after the drain. */
static void
query_final(struct bench *b, struct results *res, int64_t win_a_ms, int64_t win_b_ms)
{
	char like[64], a[24], z[24], t0[24], err[256];
	const char *p1[1] = {like};
	const char *p2[2] = {a, z};
	const char *p3[2] = {t0, like};
	double v[2];

	snprintf(like, sizeof(like), "%s%%", b->tag_prefix);
	snprintf(a, sizeof(a), "%lld", (long long)win_a_ms);
	snprintf(z, sizeof(z), "%lld", (long long)win_b_ms);
	snprintf(t0, sizeof(t0), "%lld", (long long)b->t0_unix_ms);
	if (bench_db_numbers(b->db,
	                     "SELECT count(*), count(*) FILTER (WHERE state = 'completed'),"
	                     " count(*) FILTER (WHERE state = 'compensated'),"
	                     " count(*) FILTER (WHERE state = 'failed'),"
	                     " count(*) FILTER (WHERE state = 'running'),"
	                     " count(*) FILTER (WHERE state = 'compensating'),"
	                     " count(*) FILTER (WHERE state = 'resolved'), count(*)"
	                     " FROM saga_instance WHERE correlation_id LIKE $1",
	                     1, p1, res->db_sagas, 8, err, sizeof(err)) != STATUS_OK)
		log_warn("saga states: %s", err);
	if (bench_db_numbers(b->db,
	                     "SELECT count(*), count(DISTINCT e.idempotency_key),"
	                     " count(*) FILTER (WHERE e.correlation_id = i.correlation_id),"
	                     " count(*) FILTER (WHERE coalesce(e.correlation_id, '') <> '')"
	                     " FROM participant_effects e"
	                     " JOIN saga_instance i ON i.id::text = e.saga_id"
	                     " WHERE i.correlation_id LIKE $1",
	                     1, p1, res->effects, 4, err, sizeof(err)) != STATUS_OK)
		log_warn("side effects: %s", err);
	if (bench_db_numbers(b->db,
	                     "SELECT count(*) FROM saga_transition"
	                     " WHERE correlation_id LIKE $1 AND event = 'reply'",
	                     1, p1, res->replies, 1, err, sizeof(err)) != STATUS_OK)
		log_warn("replies: %s", err);
	if (bench_db_numbers(b->db,
	                     "SELECT count(*), count(*) FILTER (WHERE event = 'reply')"
	                     " FROM saga_transition"
	                     " WHERE at >= to_timestamp($1::bigint / 1000.0)"
	                     " AND at < to_timestamp($2::bigint / 1000.0)",
	                     2, p2, v, 2, err, sizeof(err)) != STATUS_OK) {
		log_warn("transitions: %s", err);
		v[0] = v[1] = NAN;
	}
	res->transitions_per_s = v[0] / b->set->duration;
	res->steps_per_s = v[1] / b->set->duration;
	if (bench_db_numbers(b->db,
	                     "SELECT count(*), count(*) FILTER (WHERE correlation_id LIKE $2)"
	                     " FROM saga_dead_letter"
	                     " WHERE created_at >= to_timestamp($1::bigint / 1000.0)",
	                     2, p3, res->dead_letters, 2, err, sizeof(err)) != STATUS_OK)
		log_warn("dead letters: %s", err);
	if (bench_db_numbers(b->db,
	                     "SELECT percentile_disc(0.50) WITHIN GROUP (ORDER BY d),"
	                     " percentile_disc(0.95) WITHIN GROUP (ORDER BY d),"
	                     " percentile_disc(0.99) WITHIN GROUP (ORDER BY d), max(d), count(*)"
	                     " FROM (SELECT received_unix_ms - sent_unix_ms AS d"
	                     " FROM participant_effects"
	                     " WHERE received_unix_ms >= $1 AND received_unix_ms < $2"
	                     " AND sent_unix_ms IS NOT NULL) x",
	                     2, p2, res->age, 5, err, sizeof(err)) != STATUS_OK)
		log_warn("message age: %s", err);
}

/* Latencies of the starts sent in the window [a_us, b_us). */
static void
collect_window(struct bench *b, struct results *res, int64_t a_us, int64_t b_us)
{
	size_t sent = atomic_load(&b->sent);

	res->ack = calloc(sent + 1, sizeof(*res->ack));
	res->done = calloc(sent + 1, sizeof(*res->done));
	if (res->ack == NULL || res->done == NULL)
		return;
	for (size_t i = 0; i < sent; i++) {
		struct start_rec *r = &b->recs[i];
		int64_t t = atomic_load(&r->sent_us);
		unsigned f = atomic_load(&r->flags);

		if (t < a_us || t >= b_us)
			continue;
		res->window_sent++;
		if (!(f & REC_ACKED))
			res->window_unanswered++;
		else
			res->ack[res->n_ack++] = r->ack_us;
		if (f & REC_REJECTED)
			res->window_rejected++;
		if (f & REC_TERMINAL)
			res->done[res->n_done++] = r->done_us;
		else if (f & REC_ACCEPTED)
			res->window_not_terminal++;
	}
	bench_sort(res->ack, res->n_ack);
	bench_sort(res->done, res->n_done);
}

/* Outage figures from the rows. */
static void
compute_outage(const struct bench *b, const struct second_row *rows, int n_rows, int w_a, int w_b,
               struct outage *o)
{
	double avg = 0;
	int settled = 0;

	for (int i = w_a; i < w_b; i++)
		avg += (double)rows[i].in_flight;
	avg = w_b > w_a ? avg / (w_b - w_a) : 0;
	/* Back to normal: in flight no more than twice the steady level plus 0.2 s of load. */
	o->threshold = 2 * avg + 0.2 * b->set->rate + 1;
	o->drained_sec = -1;
	o->age_peak_p95 = 0;
	o->age_peak_max = 0;
	for (int i = o->pause_sec; i < n_rows; i++) {
		if (rows[i].in_flight > o->backlog_peak)
			o->backlog_peak = rows[i].in_flight;
		if (rows[i].cmd_msgs > o->cmd_peak)
			o->cmd_peak = rows[i].cmd_msgs;
		if (isfinite(rows[i].age_p95) && rows[i].age_p95 > o->age_peak_p95)
			o->age_peak_p95 = rows[i].age_p95;
		if (isfinite(rows[i].age_max) && rows[i].age_max > o->age_peak_max)
			o->age_peak_max = rows[i].age_max;
		if (i == o->resume_sec - 1 || (i == 0 && o->resume_sec == 0))
			o->backlog_resume = rows[i].in_flight;
		if (i >= o->resume_sec && o->drained_sec < 0) {
			settled = (double)rows[i].in_flight <= o->threshold ? settled + 1 : 0;
			if (settled >= DRAIN_SETTLE_S)
				o->drained_sec = i - DRAIN_SETTLE_S + 1;
		}
	}
	if (o->drained_sec >= 0) {
		double done = 0;

		/* Row i covers second [i, i+1) and its in-flight count is taken at its end. */
		o->drain_s = o->drained_sec + 1 - o->resume_sec;
		for (int i = o->resume_sec; i <= o->drained_sec; i++)
			done += (double)rows[i].completed;
		o->drain_rate = o->drain_s > 0 ? done / o->drain_s : NAN;
		o->recovery_x = o->drain_rate / b->set->rate;
		o->implied_x = 1 + (double)(o->resume_sec - o->pause_sec) / o->drain_s;
	} else {
		o->drain_s = NAN;
		o->drain_rate = NAN;
		o->recovery_x = NAN;
		o->implied_x = NAN;
	}
}

static void
print_table_open(const struct bench *b, const struct results *r, const struct procs *pr)
{
	const struct settings *s = b->set;
	double dup = r->effects[0] - r->effects[1];

	printf("\nsaga-bench %s: saga %s at %.0f/s offered, warm-up %.0f s, steady %.0f s\n",
	       s->tag, s->saga, s->rate, s->warmup, s->duration);
	printf("  %-44s %12.1f /s\n", "offered sagas", r->offered_per_s);
	printf("  %-44s %12.1f /s\n", "completed sagas (terminal events)", r->completed_per_s);
	printf("  %-44s %12.1f /s\n", "step replies applied (saga_transition)", r->steps_per_s);
	printf("  %-44s %12.1f /s\n", "transitions (saga_transition rows)", r->transitions_per_s);
	printf("  %-44s %12lld -> %lld (growth %lld)\n", "in flight at start -> end of window",
	       (long long)r->inflight_start, (long long)r->inflight_end,
	       (long long)r->backlog_growth);
	printf("  %-44s %12lld sagas, %lld cmd + %lld reply msgs\n", "backlog after the drain",
	       (long long)r->final_inflight, (long long)r->final_cmd_msgs,
	       (long long)r->final_reply_msgs);
	printf("  %-44s %8.2f / %8.2f / %8.2f ms\n", "start ack p50 / p95 / p99",
	       ms(bench_pct_sorted(r->ack, r->n_ack, 0.5)),
	       ms(bench_pct_sorted(r->ack, r->n_ack, 0.95)),
	       ms(bench_pct_sorted(r->ack, r->n_ack, 0.99)));
	printf("  %-44s %8.1f / %8.1f / %8.1f ms\n", "saga completion p50 / p95 / p99",
	       ms(bench_pct_sorted(r->done, r->n_done, 0.5)),
	       ms(bench_pct_sorted(r->done, r->n_done, 0.95)),
	       ms(bench_pct_sorted(r->done, r->n_done, 0.99)));
	printf("  %-44s %8.1f ms (max %.0f ms, %.0f commands)\n", "message age p95", r->age[1],
	       r->age[3], r->age[4]);
	printf("  %-44s %12.4f %% (%.0f of %.0f replies)\n", "dead-letter ratio",
	       r->replies[0] > 0 ? 100.0 * r->dead_letters[0] / r->replies[0] : NAN,
	       r->dead_letters[0], r->replies[0]);
	printf("  %-44s %12.4f %% (%.0f of %.0f effects)\n", "duplicate side effects",
	       r->effects[1] > 0 ? 100.0 * dup / r->effects[1] : NAN, dup, r->effects[0]);
	printf("  %-44s %12.2f %% (events %.2f %%)\n", "effects carrying the saga's correlation id",
	       r->effects[0] > 0 ? 100.0 * r->effects[2] / r->effects[0] : NAN,
	       atomic_load(&b->events) > 0 ? 100.0 *
	                                             (double)(atomic_load(&b->events) -
	                                                      atomic_load(&b->events_nocorr)) /
	                                             (double)atomic_load(&b->events)
	                                   : NAN);
	printf("  %-44s %12.0f (accepted %llu, completed %.0f, compensated %.0f, failed %.0f)\n",
	       "sagas lost (accepted, not terminal)", r->lost,
	       (unsigned long long)atomic_load(&b->accepted), r->db_sagas[1], r->db_sagas[2],
	       r->db_sagas[3]);
	if (pr->sagad_pid > 0)
		printf("  %-44s %12.2f s (%.2f cores; whole run %.1f s), peak RSS %.1f MB\n",
		       "sagad CPU in the window", r->sagad_cpu_s, r->sagad_cpu_s / s->duration,
		       r->sagad_cpu_run_s, r->sagad_peak_rss_mb);
	for (int i = 0; i < pr->n; i++)
		printf("  %-44s %12.2f s (%.2f cores)\n", pr->names[i], pr->cpu_b[i] - pr->cpu_a[i],
		       (pr->cpu_b[i] - pr->cpu_a[i]) / s->duration);
	printf("  %-44s %12.0f (vacuumed %.0f times in the run)\n",
	       "most dead saga_outbox rows in the window", r->outbox_dead_max, r->outbox_vacuums);
	printf("  %-44s %12.1f ms (%llu starts > %d ms late)\n", "generator: worst lateness",
	       ms((double)atomic_load(&b->max_lag_us)),
	       (unsigned long long)atomic_load(&b->late_sends), LATE_US / 1000);
	if (r->out.happened) {
		const struct outage *o = &r->out;

		printf("  outage: consumers stopped %.0f s at second %d, resumed at %d\n",
		       s->pause_for, o->pause_sec, o->resume_sec);
		printf("  %-44s %12lld sagas, %lld command msgs\n", "backlog peak",
		       (long long)o->backlog_peak, (long long)o->cmd_peak);
		printf("  %-44s %12.0f s (%.0f sagas/s while draining)\n", "drain time", o->drain_s,
		       o->drain_rate);
		printf("  %-44s %12.2f x producer rate (1 + pause/drain: %.2f x)\n",
		       "recovery capacity", o->recovery_x, o->implied_x);
		printf("  %-44s %12.1f s p95 (max %.1f s)\n", "message age peak",
		       o->age_peak_p95 / 1000, o->age_peak_max / 1000);
	}
	if (!r->on_schedule)
		printf("  %-44s %s\n", "warning",
		       "the generator fell behind its schedule: the machine is CPU-starved");
	printf("  %-44s %s\n", "verdict", r->sustained ? "sustained" : r->verdict);
}

static void
write_json_open(const struct bench *b, const struct results *r, const struct procs *pr,
                const char *started)
{
	const struct settings *s = b->set;
	char *buf = NULL;
	size_t len = 0;
	struct json j = {0};
	double dup = r->effects[0] - r->effects[1];
	uint64_t ev = atomic_load(&b->events);

	j.f = open_memstream(&buf, &len);
	if (j.f == NULL)
		return;
	json_open(&j, NULL);
	json_str(&j, "tool", "saga-bench");
	json_str(&j, "mode", "open");
	json_str(&j, "tag", s->tag);
	json_str(&j, "saga", s->saga);
	json_str(&j, "started_at", started);
	json_open(&j, "config");
	json_num(&j, "rate", s->rate);
	json_num(&j, "warmup_s", s->warmup);
	json_num(&j, "duration_s", s->duration);
	json_num(&j, "payload_bytes", s->payload_bytes);
	json_num(&j, "pause_s", s->pause_for);
	json_num(&j, "hold_snapshot_at_s", s->hold_for > 0 ? s->hold_at : NAN);
	json_num(&j, "hold_snapshot_s", s->hold_for);
	json_num(&j, "participant_fail_rate", s->part_fail_rate);
	json_num(&j, "participant_latency_ms", s->part_latency_ms);
	json_num(&j, "participant_instances", s->part_instances);
	json_close(&j);
	json_num(&j, "offered_per_s", r->offered_per_s);
	json_num(&j, "completed_per_s", r->completed_per_s);
	json_num(&j, "step_replies_per_s", r->steps_per_s);
	json_num(&j, "transitions_per_s", r->transitions_per_s);
	json_num(&j, "lifecycle_events_per_s", r->events_per_s);
	json_open(&j, "backlog");
	json_num(&j, "in_flight_window_start", (double)r->inflight_start);
	json_num(&j, "in_flight_window_end", (double)r->inflight_end);
	json_num(&j, "growth", (double)r->backlog_growth);
	json_num(&j, "in_flight_end", (double)r->final_inflight);
	json_num(&j, "cmd_msgs_end", (double)r->final_cmd_msgs);
	json_num(&j, "reply_msgs_end", (double)r->final_reply_msgs);
	json_close(&j);
	json_latency(&j, "start_ack_ms", r->ack, r->n_ack);
	json_latency(&j, "completion_ms", r->done, r->n_done);
	json_open(&j, "message_age_ms");
	json_fixed(&j, "p50", r->age[0], 1);
	json_fixed(&j, "p95", r->age[1], 1);
	json_fixed(&j, "p99", r->age[2], 1);
	json_fixed(&j, "max", r->age[3], 1);
	json_num(&j, "n", r->age[4]);
	json_close(&j);
	json_open(&j, "starts");
	json_num(&j, "sent", (double)atomic_load(&b->sent));
	json_num(&j, "accepted", (double)atomic_load(&b->accepted));
	json_num(&j, "rejected", (double)atomic_load(&b->rejected));
	json_num(&j, "unanswered", (double)(atomic_load(&b->sent) - atomic_load(&b->acked)));
	json_num(&j, "window_sent", (double)r->window_sent);
	json_num(&j, "window_unanswered", (double)r->window_unanswered);
	json_num(&j, "window_rejected", (double)r->window_rejected);
	json_num(&j, "publish_errors", (double)atomic_load(&b->publish_errors));
	json_close(&j);
	json_open(&j, "sagas");
	json_num(&j, "in_db", r->db_sagas[0]);
	json_num(&j, "completed", r->db_sagas[1]);
	json_num(&j, "compensated", r->db_sagas[2]);
	json_num(&j, "failed", r->db_sagas[3]);
	json_num(&j, "running", r->db_sagas[4]);
	json_num(&j, "compensating", r->db_sagas[5]);
	json_num(&j, "lost", r->lost);
	json_close(&j);
	json_num(&j, "replies_applied", r->replies[0]);
	json_num(&j, "dead_letters", r->dead_letters[0]);
	json_num(&j, "dead_letter_ratio",
	         r->replies[0] > 0 ? r->dead_letters[0] / r->replies[0] : NAN);
	json_num(&j, "side_effects", r->effects[0]);
	json_num(&j, "duplicate_side_effects", dup);
	json_num(&j, "duplicate_rate", r->effects[1] > 0 ? dup / r->effects[1] : NAN);
	json_open(&j, "correlation");
	json_num(&j, "effects_with_saga_id", r->effects[2]);
	json_num(&j, "effects_share", r->effects[0] > 0 ? r->effects[2] / r->effects[0] : NAN);
	json_num(&j, "events", (double)ev);
	json_num(&j, "events_share",
	         ev > 0 ? (double)(ev - atomic_load(&b->events_nocorr)) / (double)ev : NAN);
	json_close(&j);
	json_open(&j, "sagad");
	json_num(&j, "pid", pr->sagad_pid);
	json_fixed(&j, "cpu_s", r->sagad_cpu_s, 2);
	json_fixed(&j, "cpu_cores", r->sagad_cpu_s / s->duration, 3);
	json_fixed(&j, "cpu_s_run", r->sagad_cpu_run_s, 2);
	json_fixed(&j, "cpu_ms_per_saga",
	           r->completed_per_s > 0 ? 1000 * r->sagad_cpu_s / s->duration / r->completed_per_s
	                                  : NAN,
	           3);
	json_fixed(&j, "peak_rss_mb", r->sagad_peak_rss_mb, 1);
	json_fixed(&j, "rss_mb", r->sagad_rss_mb, 1);
	json_close(&j);
	json_open(&j, "processes");
	for (int i = 0; i < pr->n; i++) {
		json_open(&j, pr->names[i]);
		json_fixed(&j, "cpu_s", pr->cpu_b[i] - pr->cpu_a[i], 2);
		json_fixed(&j, "cpu_cores", (pr->cpu_b[i] - pr->cpu_a[i]) / s->duration, 3);
		json_close(&j);
	}
	json_close(&j);
	json_open(&j, "outbox");
	json_num(&j, "dead_rows_max", r->outbox_dead_max);
	json_num(&j, "vacuums", r->outbox_vacuums);
	json_close(&j);
	json_open(&j, "generator");
	json_fixed(&j, "max_lag_ms", ms((double)atomic_load(&b->max_lag_us)), 2);
	json_num(&j, "late_sends", (double)atomic_load(&b->late_sends));
	json_num(&j, "bad_answers", (double)atomic_load(&b->bad_answers));
	json_bool(&j, "on_schedule", r->on_schedule);
	json_close(&j);
	if (r->out.happened) {
		const struct outage *o = &r->out;

		json_open(&j, "outage");
		json_num(&j, "pause_s", s->pause_for);
		json_num(&j, "pause_at_s", o->pause_sec);
		json_num(&j, "resume_at_s", o->resume_sec);
		json_num(&j, "backlog_peak_sagas", (double)o->backlog_peak);
		json_num(&j, "backlog_peak_cmd_msgs", (double)o->cmd_peak);
		json_num(&j, "backlog_at_resume", (double)o->backlog_resume);
		json_num(&j, "drained", o->drained_sec >= 0);
		json_num(&j, "drain_s", o->drain_s);
		json_fixed(&j, "drain_sagas_per_s", o->drain_rate, 1);
		json_fixed(&j, "recovery_x", o->recovery_x, 2);
		json_fixed(&j, "implied_x", o->implied_x, 2);
		json_fixed(&j, "message_age_peak_p95_ms", o->age_peak_p95, 0);
		json_fixed(&j, "message_age_peak_max_ms", o->age_peak_max, 0);
		json_num(&j, "threshold_in_flight", o->threshold);
		json_close(&j);
	}
	json_bool(&j, "sustained", r->sustained);
	json_str(&j, "verdict", r->sustained ? "ok" : r->verdict);
	json_close(&j);
	fclose(j.f);
	emit_json(buf, s->json);
	free(buf);
}

/* Why a rate is not sustained; "" when it is. */
static void
judge(const struct bench *b, struct results *r)
{
	const struct settings *s = b->set;
	double allowed = fmax(20, 0.25 * s->rate);
	double ack_p95 = ms(bench_pct_sorted(r->ack, r->n_ack, 0.95));
	double done_p95 = ms(bench_pct_sorted(r->done, r->n_done, 0.95));
	char *v = r->verdict;
	size_t cap = sizeof(r->verdict), len = 0;

	v[0] = '\0';
#define WHY(...)                                                                                   \
	do {                                                                                       \
		if (len < cap)                                                                     \
			len += (size_t)snprintf(v + len, cap - len, __VA_ARGS__);                  \
	} while (0)
	if (r->window_unanswered > 0 || r->window_rejected > 0)
		WHY("%zu starts unanswered, %zu rejected; ", r->window_unanswered,
		    r->window_rejected);
	if (r->completed_per_s < 0.97 * r->offered_per_s)
		WHY("completed %.0f/s < 97%% of offered %.0f/s; ", r->completed_per_s,
		    r->offered_per_s);
	if ((double)r->backlog_growth > allowed)
		WHY("backlog grew by %lld sagas; ", (long long)r->backlog_growth);
	if (!(ack_p95 < s->max_ack_p95_ms))
		WHY("start-ack p95 %.0f ms >= %.0f ms; ", ack_p95, s->max_ack_p95_ms);
	if (!(done_p95 < s->max_done_p95_ms))
		WHY("completion p95 %.0f ms >= %.0f ms; ", done_p95, s->max_done_p95_ms);
	if (r->lost > 0)
		WHY("%.0f sagas not terminal after the drain; ", r->lost);
#undef WHY
	r->sustained = v[0] == '\0';
	if (len >= 2 && len < cap)
		v[len - 2] = '\0';
	/* A few late starts on a busy machine are noise; many mean the load was not open loop. */
	r->on_schedule =
	        (double)atomic_load(&b->late_sends) <= 0.01 * (double)atomic_load(&b->sent) &&
	        ms((double)atomic_load(&b->max_lag_us)) <= 1000;
}

static void
resume_all(const int *pids, int n)
{
	for (int i = 0; i < n; i++)
		kill(pids[i], SIGCONT);
}

/* The keys of the starts answered accepted or duplicate, one per line; 0 when written. */
static int
write_accepted(struct bench *b, const char *path)
{
	FILE *f = fopen(path, "w");
	size_t sent = atomic_load(&b->sent);

	if (f == NULL) {
		log_error("%s: %s", path, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < sent && i < b->cap; i++) {
		if (atomic_load(&b->recs[i].flags) & REC_ACCEPTED)
			fprintf(f, "%s%zu\n", b->tag_prefix, i);
	}
	if (fclose(f) != 0) {
		log_error("%s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int
run_open(const struct settings *s, struct config *cfg)
{
	struct bench *b = calloc(1, sizeof(*b));
	struct second_row *rows = NULL;
	struct results res;
	struct procs pr;
	struct bench_sub *answers = NULL, *events = NULL;
	pthread_t sender, holder;
	bool sender_started = false, holder_started = false;
	int pause_pids[MAX_PAUSE];
	int n_pause = 0;
	bool paused = false;
	char err[512], subject[320], started[40];
	int W = (int)ceil(s->warmup), D = (int)ceil(s->duration);
	int max_rows;
	int n_rows = 0;
	int rc = EXIT_RUN;
	int drain_start = -1, drained_at = -1, settled = 0;
	uint64_t p_sent = 0, p_acked = 0, p_terminal = 0, p_events = 0;
	bool finished = false;
	double steady_avg_inflight = 0;
	FILE *csv = NULL;
	struct bench_hist_snap *snap = NULL;
	double prev_cpu = NAN;
	time_t now_t = time(NULL);
	struct tm tm;
	enum phase phase = PHASE_WARMUP;

	memset(&res, 0, sizeof(res));
	memset(&pr, 0, sizeof(pr));
	gmtime_r(&now_t, &tm);
	strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (b == NULL)
		return EXIT_RUN;
	b->set = s;
	max_rows =
	        W + D + (int)ceil(s->drain) + 16 +
	        (s->pause_for > 0 ? (int)ceil(s->pause_for + s->recover_max + s->after_drain) : 0);
	b->cap = (size_t)ceil(s->rate * (max_rows + 1));
	if (b->cap > MAX_RECORDS)
		b->cap = MAX_RECORDS;
	b->recs = calloc(b->cap, sizeof(*b->recs));
	rows = calloc((size_t)max_rows + 1, sizeof(*rows));
	snap = malloc(sizeof(*snap));
	if (b->recs == NULL || rows == NULL || snap == NULL) {
		log_fatal("out of memory");
		goto cleanup;
	}
	n_pause = parse_pids(s->pause_pids, pause_pids, MAX_PAUSE);
	pr.n = parse_watch(s->watch, pr.names, pr.pids, MAX_WATCH);
	if (n_pause < 0 || pr.n < 0) {
		log_fatal("pause_pids / watch: give pid,pid,... and name=pid,...");
		rc = EXIT_USAGE;
		goto cleanup;
	}
	if (s->pause_for > 0 && n_pause == 0) {
		log_fatal("pause_for needs --pause-pids");
		rc = EXIT_USAGE;
		goto cleanup;
	}
	pr.sagad_pid = (int)s->sagad_pid;
	snprintf(b->tag_prefix, sizeof(b->tag_prefix), "%s:", s->tag);
	b->tag_len = strlen(b->tag_prefix);
	snprintf(b->start_subject, sizeof(b->start_subject), "%s.start.%s", s->subject_prefix,
	         s->saga);

	if (bench_db_connect(&b->db, s->database_url, s->db_schema, err, sizeof(err)) !=
	    STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_DATABASE;
		goto cleanup;
	}
	{
		const char *p[1] = {s->saga};
		double v[2];

		if (bench_db_numbers(b->db, "SELECT count(*) FROM saga_definition WHERE name = $1",
		                     1, p, v, 1, err, sizeof(err)) != STATUS_OK) {
			log_fatal("reading saga_definition: %s (sagad migrated?)", err);
			rc = EXIT_DATABASE;
			goto cleanup;
		}
		if (!(v[0] > 0)) {
			log_fatal("saga %s is not registered (sagactl define FILE)", s->saga);
			rc = EXIT_USAGE;
			goto cleanup;
		}
	}
	{
		const char *p[1] = {b->tag_prefix};
		double v[1];

		if (bench_db_numbers(b->db,
		                     "SELECT count(*) FROM saga_instance"
		                     " WHERE correlation_id LIKE $1 || '%'",
		                     1, p, v, 1, err, sizeof(err)) == STATUS_OK &&
		    v[0] > 0) {
			log_fatal("tag %s was used before (%.0f sagas): give a new --tag", s->tag,
			          v[0]);
			rc = EXIT_USAGE;
			goto cleanup;
		}
	}
	if (bench_nats_connect(&b->nats, s->nats_url, "saga-bench", 5000, err, sizeof(err)) !=
	            STATUS_OK ||
	    bench_nats_inbox(b->inbox, sizeof(b->inbox)) != STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_NATS;
		goto cleanup;
	}
	if (bus_connect(&b->bus, cfg, err, sizeof(err)) != STATUS_OK) {
		log_warn("stream statistics unavailable: %s", err);
		b->bus = NULL;
	}
	snprintf(subject, sizeof(subject), "%s.*", b->inbox);
	if (bench_nats_subscribe(b->nats, subject, on_answer, b, &answers, err, sizeof(err)) !=
	    STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_NATS;
		goto cleanup;
	}
	snprintf(subject, sizeof(subject), "%s.event.%s.>", s->subject_prefix, s->saga);
	if (bench_nats_subscribe(b->nats, subject, on_event, b, &events, err, sizeof(err)) !=
	            STATUS_OK ||
	    bench_nats_flush(b->nats, 5000, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_NATS;
		goto cleanup;
	}
	if (s->csv[0] != '\0') {
		csv = fopen(s->csv, "w");
		if (csv == NULL) {
			log_fatal("cannot write %s: %s", s->csv, strerror(errno));
			rc = EXIT_USAGE;
			goto cleanup;
		}
		csv_header(csv);
	}

	procs_sample(&pr, &pr.sagad_run_a, pr.cpu_a);
	prev_cpu = pr.sagad_run_a;
	b->t0_us = mono_us() + 20000;
	b->t0_unix_ms = unix_ms() + 20;
	if (pthread_create(&sender, NULL, sender_main, b) != 0) {
		log_fatal("cannot start the sender thread");
		goto cleanup;
	}
	sender_started = true;
	if (s->hold_for > 0) {
		if (pthread_create(&holder, NULL, holder_main, b) != 0)
			log_warn("hold_snapshot: cannot start its thread");
		else
			holder_started = true;
	}

	for (int sec = 0; sec < max_rows && !finished; sec++) {
		struct second_row *r = &rows[sec];
		uint64_t sent, acked, terminal, events_now;

		sleep_until_us(b->t0_us + (int64_t)(sec + 1) * 1000000);
		n_rows = sec + 1;
		r->phase = phase;
		sent = atomic_load(&b->sent);
		acked = atomic_load(&b->acked);
		terminal = atomic_load(&b->terminal);
		events_now = atomic_load(&b->events);
		r->offered = sent - p_sent;
		r->acked = acked - p_acked;
		r->completed = terminal - p_terminal;
		r->events = events_now - p_events;
		p_sent = sent;
		p_acked = acked;
		p_terminal = terminal;
		p_events = events_now;
		r->in_flight = (int64_t)atomic_load(&b->accepted) - (int64_t)terminal;
		if (r->in_flight < 0)
			r->in_flight = 0;
		r->unanswered = (int64_t)sent - (int64_t)acked;
		r->cmd_msgs = stream_msgs(b, BUS_STREAM_CMD);
		r->reply_msgs = stream_msgs(b, BUS_STREAM_REPLY);
		bench_hist_take(&b->ack_hist, snap);
		r->ack_p50 = ms(bench_hist_pct(snap, 0.50));
		r->ack_p95 = ms(bench_hist_pct(snap, 0.95));
		r->ack_p99 = ms(bench_hist_pct(snap, 0.99));
		bench_hist_take(&b->done_hist, snap);
		r->done_p95 = ms(bench_hist_pct(snap, 0.95));
		r->age_p95 = r->age_max = r->age_n = NAN;
		query_outbox(b, r);
		if (pr.sagad_pid > 0) {
			double cpu = bench_proc_cpu_seconds(pr.sagad_pid, false);

			r->sagad_cores = cpu - prev_cpu;
			prev_cpu = cpu;
			r->sagad_rss_mb =
			        (double)bench_proc_status_kb(pr.sagad_pid, "VmRSS", false) / 1024.0;
		} else {
			r->sagad_cores = r->sagad_rss_mb = NAN;
		}
		/* Effects commit a little after they are received: the age of second
		 * sec-1 is read now, and its CSV row written. */
		if (sec >= 1) {
			query_age(b, b->t0_unix_ms + (int64_t)(sec - 1) * 1000,
			          b->t0_unix_ms + (int64_t)sec * 1000, &rows[sec - 1]);
			if (csv != NULL)
				csv_row(csv, sec - 1, &rows[sec - 1]);
		}
		if (s->progress > 0)
			progress_line(sec, r, sec >= 1 ? &rows[sec - 1] : NULL);

		/* Phase changes happen at whole seconds. */
		if (interrupted) {
			if (paused)
				resume_all(pause_pids, n_pause);
			paused = false;
			atomic_store(&b->stop_sending, true);
			break;
		}
		if (sec + 1 == W)
			procs_sample(&pr, &pr.sagad_a, pr.cpu_a);
		if (W == 0 && sec == 0)
			pr.sagad_a = pr.sagad_run_a;
		switch (phase) {
		case PHASE_WARMUP:
			if (sec + 1 >= W)
				phase = PHASE_STEADY;
			break;
		case PHASE_STEADY:
			if (sec + 1 < W + D)
				break;
			procs_sample(&pr, &pr.sagad_b, pr.cpu_b);
			for (int i = W; i < W + D; i++)
				steady_avg_inflight += (double)rows[i].in_flight;
			steady_avg_inflight /= D;
			if (s->pause_for > 0) {
				for (int i = 0; i < n_pause; i++) {
					if (kill(pause_pids[i], SIGSTOP) != 0)
						log_warn("SIGSTOP %d: %s", pause_pids[i],
						         strerror(errno));
				}
				paused = true;
				res.out.happened = true;
				res.out.pause_sec = sec + 1;
				phase = PHASE_PAUSED;
			} else {
				atomic_store(&b->stop_sending, true);
				drain_start = sec + 1;
				phase = PHASE_DRAIN;
			}
			break;
		case PHASE_PAUSED:
			if (sec + 1 < res.out.pause_sec + (int)ceil(s->pause_for))
				break;
			resume_all(pause_pids, n_pause);
			paused = false;
			res.out.resume_sec = sec + 1;
			phase = PHASE_RECOVER;
			break;
		case PHASE_RECOVER: {
			double threshold = 2 * steady_avg_inflight + 0.2 * s->rate + 1;

			if (drained_at < 0) {
				settled = (double)r->in_flight <= threshold ? settled + 1 : 0;
				if (settled >= DRAIN_SETTLE_S)
					drained_at = sec + 1;
			}
			if ((drained_at >= 0 && sec + 1 >= drained_at + (int)s->after_drain) ||
			    sec + 1 >= res.out.resume_sec + (int)s->recover_max) {
				atomic_store(&b->stop_sending, true);
				drain_start = sec + 1;
				phase = PHASE_DRAIN;
			}
			break;
		}
		case PHASE_DRAIN:
			if ((r->in_flight <= 0 && r->unanswered <= 0) ||
			    sec + 1 >= drain_start + (int)ceil(s->drain))
				finished = true;
			break;
		}
	}
	if (paused)
		resume_all(pause_pids, n_pause);
	atomic_store(&b->stop_sending, true);
	if (s->progress > 0 && isatty(STDERR_FILENO))
		fputc('\n', stderr);
	pthread_join(sender, NULL);
	sender_started = false;
	if (holder_started)
		pthread_join(holder, NULL);
	holder_started = false;
	/* The last second's message age, and its CSV row. */
	if (n_rows >= 1) {
		sleep_us(300000);
		query_age(b, b->t0_unix_ms + (int64_t)(n_rows - 1) * 1000,
		          b->t0_unix_ms + (int64_t)n_rows * 1000, &rows[n_rows - 1]);
		if (csv != NULL)
			csv_row(csv, n_rows - 1, &rows[n_rows - 1]);
	}
	if (pr.sagad_b == 0 && pr.sagad_pid > 0)
		procs_sample(&pr, &pr.sagad_b, pr.cpu_b);

	/* Figures of the steady window. */
	{
		int a = W < n_rows ? W : n_rows, z = W + D < n_rows ? W + D : n_rows;
		double offered = 0, completed = 0, evs = 0;

		res.outbox_dead_max = NAN;
		for (int i = a; i < z; i++) {
			offered += (double)rows[i].offered;
			completed += (double)rows[i].completed;
			evs += (double)rows[i].events;
			if (isfinite(rows[i].outbox_dead) &&
			    !(rows[i].outbox_dead <= res.outbox_dead_max))
				res.outbox_dead_max = rows[i].outbox_dead;
		}
		res.outbox_vacuums =
		        n_rows >= 1 ? rows[n_rows - 1].outbox_vacuums - rows[0].outbox_vacuums
		                    : NAN;
		res.offered_per_s = offered / D;
		res.completed_per_s = completed / D;
		res.events_per_s = evs / D;
		res.inflight_start = a >= 1 ? rows[a - 1].in_flight : 0;
		res.inflight_end = z >= 1 ? rows[z - 1].in_flight : 0;
		res.backlog_growth = res.inflight_end - res.inflight_start;
		res.final_inflight = n_rows >= 1 ? rows[n_rows - 1].in_flight : 0;
		res.final_cmd_msgs = stream_msgs(b, BUS_STREAM_CMD);
		res.final_reply_msgs = stream_msgs(b, BUS_STREAM_REPLY);
		collect_window(b, &res, b->t0_us + (int64_t)W * 1000000,
		               b->t0_us + (int64_t)(W + D) * 1000000);
		query_final(b, &res, b->t0_unix_ms + (int64_t)W * 1000,
		            b->t0_unix_ms + (int64_t)(W + D) * 1000);
		if (res.out.happened)
			compute_outage(b, rows, n_rows, a, z, &res.out);
	}
	/* Accepted but not terminal in the database (failed counts: it waits for an operator). */
	{
		double terminal_db = res.db_sagas[1] + res.db_sagas[2] + res.db_sagas[6];
		double acc = (double)atomic_load(&b->accepted);

		res.lost = fmax(res.db_sagas[0], acc) - terminal_db;
		if (!isfinite(res.lost) || res.lost < 0)
			res.lost = isfinite(res.lost) ? 0 : NAN;
	}
	if (pr.sagad_pid > 0) {
		res.sagad_cpu_s = pr.sagad_b - pr.sagad_a;
		res.sagad_cpu_run_s = bench_proc_cpu_seconds(pr.sagad_pid, false) - pr.sagad_run_a;
		res.sagad_peak_rss_mb =
		        (double)bench_proc_status_kb(pr.sagad_pid, "VmHWM", false) / 1024.0;
		res.sagad_rss_mb =
		        (double)bench_proc_status_kb(pr.sagad_pid, "VmRSS", false) / 1024.0;
	} else {
		res.sagad_cpu_s = res.sagad_cpu_run_s = res.sagad_peak_rss_mb = res.sagad_rss_mb =
		        NAN;
	}
	if (s->accepted_file[0] != '\0' && write_accepted(b, s->accepted_file) != 0)
		goto cleanup;
	judge(b, &res);
	print_table_open(b, &res, &pr);
	write_json_open(b, &res, &pr, started);
	rc = EXIT_OK;
cleanup:
	if (paused)
		resume_all(pause_pids, n_pause);
	if (sender_started) {
		atomic_store(&b->stop_sending, true);
		pthread_join(sender, NULL);
	}
	if (holder_started)
		pthread_join(holder, NULL);
	bench_nats_unsubscribe(answers);
	bench_nats_unsubscribe(events);
	if (csv != NULL)
		fclose(csv);
	bus_close(b->bus);
	bench_nats_close(b->nats);
	bench_db_close(b->db);
	free(res.ack);
	free(res.done);
	free(snap);
	free(rows);
	free(b->recs);
	free(b);
	return rc;
}

/* ---- sync mode: the same steps as a synchronous chain ---- */

/* How one chain ended. */
enum chain_end {
	CHAIN_NONE = 0,    /* not run */
	CHAIN_COMPLETED,   /* every step succeeded */
	CHAIN_COMPENSATED, /* a step failed; the earlier ones were undone */
	CHAIN_FAILED,      /* a compensation failed too */
};

/* One chain. */
struct chain_rec {
	int64_t start_us;   /* scheduled (paced) or actual start, monotonic */
	int64_t end_us;     /* when its last reply came; 0 = unfinished */
	enum chain_end end; /* outcome */
};

/* A synchronous run. */
struct sync_run {
	const struct settings *set;  /* settings */
	struct saga_def def;         /* the steps */
	struct bench_nats *nats;     /* our connection */
	struct chain_rec *recs;      /* one per chain that may run */
	size_t cap;                  /* records */
	_Atomic size_t next;         /* next chain index */
	_Atomic bool stop;           /* callers stop after their chain */
	int64_t t0_us;               /* monotonic start */
	_Atomic uint64_t done;       /* chains finished */
	_Atomic uint64_t timeouts;   /* step attempts without a reply in time */
	_Atomic uint64_t retries;    /* attempts after a retryable failure or timeout */
	_Atomic uint64_t errors;     /* publish failures */
	struct bench_hist step_hist; /* one step: publish -> reply, us (whole run) */
};

/* One synchronous caller. */
struct sync_caller {
	struct sync_run *run;    /* the run */
	int id;                  /* 0..callers-1 */
	struct bench_sub *sub;   /* its reply subject */
	char reply_subject[128]; /* <prefix>.reply.bench.c<id>.<nuid> */
	struct saga_inst *inst;  /* the chain's saga */
	unsigned rng;            /* backoff jitter */
	pthread_t thread;        /* the thread */
	bool started;            /* the thread runs */
};

/* Backoff before attempt+1: uniform in [0, min(max, initial * multiplier^(attempt-1))]. */
static int64_t
chain_backoff_ms(struct sync_caller *c, const struct retry_policy *p, uint32_t attempt)
{
	double cap = (double)p->initial_backoff_ms * pow(p->multiplier, (double)attempt - 1);

	if (cap > (double)p->max_backoff_ms)
		cap = (double)p->max_backoff_ms;
	return (int64_t)(cap * (double)rand_r(&c->rng) / ((double)RAND_MAX + 1.0));
}

/* Run one phase of one step with its retry policy; the reply's outcome (timeouts: retryable). */
static enum reply_outcome
chain_step(struct sync_caller *c, int step, enum step_phase phase)
{
	struct sync_run *run = c->run;
	const struct settings *s = run->set;
	const struct step_def *sd = &run->def.steps[step];
	const struct retry_policy *pol =
	        phase == PHASE_ACTION ? &sd->retry : &sd->compensation_retry;
	uint32_t max = pol->max_attempts == 0 ? CHAIN_MAX_ATTEMPTS : pol->max_attempts;
	const char *target = phase == PHASE_ACTION ? sd->action_subject : sd->compensation_subject;
	char subject[320], msg_id[200], attempt_txt[16], err[256];
	enum reply_outcome last = OUTCOME_RETRYABLE_FAILURE;

	snprintf(subject, sizeof(subject), "%s.cmd.%s", s->subject_prefix, target);
	for (uint32_t attempt = 1; attempt <= max && !interrupted; attempt++) {
		struct plan_command pc = {.step = step, .phase = phase, .attempt = attempt};
		struct bytes body = {0};
		int64_t now = unix_ms(), sent_us, deadline_us;
		bool answered = false;
		struct bench_header h[5] = {
		        {HDR_CONTENT_TYPE, CT_STEP_COMMAND},
		        {HDR_CORRELATION_ID, c->inst->correlation_id},
		        {HDR_SAGA_ID, c->inst->id},
		        {HDR_STEP, sd->name},
		        {HDR_ATTEMPT, attempt_txt},
		};

		pc.deadline_ms = now + sd->timeout_ms;
		snprintf(attempt_txt, sizeof(attempt_txt), "%u", (unsigned)attempt);
		snprintf(msg_id, sizeof(msg_id), "cmd:%s:%d:%c:%u", c->inst->id, step,
		         phase == PHASE_ACTION ? 'a' : 'c', (unsigned)attempt);
		if (attempt > 1)
			atomic_fetch_add(&run->retries, 1);
		if (codec_encode_command(&run->def, c->inst, &pc, c->reply_subject, now, &body) !=
		    STATUS_OK) {
			atomic_fetch_add(&run->errors, 1);
			return OUTCOME_PERMANENT_FAILURE;
		}
		sent_us = mono_us();
		deadline_us = sent_us + sd->timeout_ms * 1000;
		if (bench_nats_js_publish(run->nats, subject, msg_id, h, 5, body.data, body.len,
		                          5000, err, sizeof(err)) != STATUS_OK) {
			free(body.data);
			atomic_fetch_add(&run->errors, 1);
			log_warn("chain: %s", err);
			sleep_us(100000);
			continue;
		}
		free(body.data);
		while (!answered && !interrupted) {
			struct bench_msg *m = NULL;
			struct reply_msg r;
			int64_t left = deadline_us - mono_us();

			if (left <= 0)
				break;
			if (bench_nats_next(c->sub, (left + 999) / 1000, &m) != STATUS_OK)
				continue;
			if (codec_decode_reply(bench_msg_data(m), bench_msg_len(m),
			                       CODEC_MAX_MESSAGE, &r, err,
			                       sizeof(err)) != STATUS_OK) {
				bench_msg_free(m);
				continue;
			}
			/* Only the answer to this attempt: a late one of an earlier attempt is dropped. */
			if (strcmp(r.saga_id, c->inst->id) == 0 && strcmp(r.step, sd->name) == 0 &&
			    r.phase == phase && r.attempt == attempt) {
				answered = true;
				last = r.outcome;
				bench_hist_add(&run->step_hist, mono_us() - sent_us);
				if (r.outcome == OUTCOME_SUCCESS && phase == PHASE_ACTION) {
					struct step_inst *si = &c->inst->steps[step];
					uint8_t *copy = malloc(r.output.len > 0 ? r.output.len : 1);

					if (copy != NULL) {
						if (r.output.len > 0)
							memcpy(copy, r.output.data, r.output.len);
						free(si->output.data);
						si->output.data = copy;
						si->output.len = r.output.len;
						si->completed_order = ++c->inst->completions;
					}
				}
			}
			codec_reply_free(&r);
			bench_msg_free(m);
		}
		if (!answered) {
			atomic_fetch_add(&run->timeouts, 1);
			last = OUTCOME_RETRYABLE_FAILURE;
		}
		if (last != OUTCOME_RETRYABLE_FAILURE)
			return last;
		if (attempt < max)
			sleep_us(chain_backoff_ms(c, pol, attempt) * 1000);
	}
	return last == OUTCOME_SUCCESS ? last : OUTCOME_PERMANENT_FAILURE;
}

/* One whole chain: steps in order, and on a failure the done ones undone in reverse. */
static enum chain_end
chain_run(struct sync_caller *c, size_t index)
{
	struct sync_run *run = c->run;
	const struct settings *s = run->set;
	size_t cap_input = (size_t)s->payload_bytes + 64;
	char *input = malloc(cap_input);
	enum chain_end end = CHAIN_COMPLETED;
	int failed_at = -1;

	if (input == NULL)
		return CHAIN_FAILED;
	for (int i = 0; i < SAGA_MAX_STEPS; i++)
		free(c->inst->steps[i].output.data);
	memset(c->inst, 0, sizeof(*c->inst));
	if (!saga_new_id(c->inst->id)) {
		free(input);
		return CHAIN_FAILED;
	}
	snprintf(c->inst->correlation_id, sizeof(c->inst->correlation_id), "%s:%zu", s->tag, index);
	c->inst->state = SAGA_RUNNING;
	c->inst->input.len =
	        make_input(input, cap_input, (size_t)s->payload_bytes, (long long)index);
	c->inst->input.data = (uint8_t *)input;
	for (int k = 0; k < run->def.n_steps && failed_at < 0; k++) {
		if (chain_step(c, k, PHASE_ACTION) != OUTCOME_SUCCESS)
			failed_at = k;
	}
	if (failed_at >= 0) {
		end = CHAIN_COMPENSATED;
		for (int k = failed_at - 1; k >= 0; k--) {
			if (run->def.steps[k].compensation_subject[0] == '\0')
				continue;
			if (chain_step(c, k, PHASE_COMPENSATION) != OUTCOME_SUCCESS)
				end = CHAIN_FAILED;
		}
	}
	c->inst->input.data = NULL;
	free(input);
	return end;
}

static void *
caller_main(void *arg)
{
	struct sync_caller *c = arg;
	struct sync_run *run = c->run;
	const struct settings *s = run->set;

	while (!atomic_load(&run->stop) && !interrupted) {
		size_t i = atomic_fetch_add(&run->next, 1);
		struct chain_rec *r;

		if (i >= run->cap)
			break;
		r = &run->recs[i];
		if (s->rate > 0) {
			/* Paced: a chain waits for a free caller, as a request for a free thread. */
			r->start_us = run->t0_us + (int64_t)((double)i * 1e6 / s->rate);
			sleep_until_us(r->start_us);
			if (atomic_load(&run->stop))
				break;
		} else {
			r->start_us = mono_us();
		}
		r->end = chain_run(c, i);
		r->end_us = mono_us();
		atomic_fetch_add(&run->done, 1);
	}
	for (int k = 0; k < SAGA_MAX_STEPS; k++) {
		free(c->inst->steps[k].output.data);
		c->inst->steps[k].output.data = NULL;
	}
	return NULL;
}

/* Read and validate the definition whose steps the chain runs. */
static enum status
load_definition(const char *path, struct saga_def *def, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *text = NULL;
	long len;
	enum status st = STATUS_IO;
	char field[128];

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return STATUS_IO;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
		goto cleanup;
	text = malloc((size_t)len + 1);
	if (text == NULL || fread(text, 1, (size_t)len, f) != (size_t)len)
		goto cleanup;
	text[len] = '\0';
	st = definition_parse_yaml(def, text, (size_t)len, err, errlen);
	if (st == STATUS_OK)
		st = definition_validate(def, field, sizeof(field), err, errlen);
cleanup:
	if (st == STATUS_IO)
		snprintf(err, errlen, "%s: cannot read", path);
	free(text);
	fclose(f);
	return st;
}

static int
run_sync(const struct settings *s)
{
	struct sync_run *run = calloc(1, sizeof(*run));
	struct sync_caller *callers = NULL;
	struct bench_db *db = NULL;
	int n_callers = (int)s->callers;
	int W = (int)ceil(s->warmup), D = (int)ceil(s->duration);
	char err[512], inbox[96], started[40];
	int rc = EXIT_RUN;
	struct procs pr;
	time_t now_t = time(NULL);
	struct tm tm;
	int64_t *lat = NULL;
	uint64_t prev = 0;
	size_t n_lat = 0, in_window = 0, unfinished = 0;
	uint64_t ends[4] = {0};
	double effects[4] = {NAN, NAN, NAN, NAN};

	memset(&pr, 0, sizeof(pr));
	gmtime_r(&now_t, &tm);
	strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (run == NULL)
		return EXIT_RUN;
	run->set = s;
	pr.n = parse_watch(s->watch, pr.names, pr.pids, MAX_WATCH);
	if (pr.n < 0) {
		log_fatal("watch: give name=pid,...");
		rc = EXIT_USAGE;
		goto cleanup;
	}
	if (load_definition(s->definition, &run->def, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_USAGE;
		goto cleanup;
	}
	run->cap = s->rate > 0 ? (size_t)ceil(s->rate * (W + D + 5)) : (size_t)MAX_RECORDS / 4;
	run->recs = calloc(run->cap, sizeof(*run->recs));
	callers = calloc((size_t)n_callers, sizeof(*callers));
	if (run->recs == NULL || callers == NULL) {
		log_fatal("out of memory");
		goto cleanup;
	}
	if (bench_db_connect(&db, s->database_url, s->db_schema, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_DATABASE;
		goto cleanup;
	}
	if (bench_nats_connect(&run->nats, s->nats_url, "saga-bench-sync", 5000, err,
	                       sizeof(err)) != STATUS_OK ||
	    bench_nats_inbox(inbox, sizeof(inbox)) != STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_NATS;
		goto cleanup;
	}
	for (int i = 0; i < n_callers; i++) {
		struct sync_caller *c = &callers[i];

		c->run = run;
		c->id = i;
		c->rng = (unsigned)(i * 2654435761u) ^ (unsigned)getpid();
		c->inst = calloc(1, sizeof(*c->inst));
		/* Under <prefix>.reply. (participants refuse anything else); the inbox's
		 * unique token keeps two runs apart. */
		snprintf(c->reply_subject, sizeof(c->reply_subject), "%s.reply.bench.%s.c%d",
		         s->subject_prefix, strchr(inbox, '.') + 1, i);
		if (c->inst == NULL ||
		    bench_nats_subscribe_sync(run->nats, c->reply_subject, &c->sub, err,
		                              sizeof(err)) != STATUS_OK) {
			log_fatal("caller %d: %s", i, c->inst == NULL ? "out of memory" : err);
			goto cleanup;
		}
	}
	if (bench_nats_flush(run->nats, 5000, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_NATS;
		goto cleanup;
	}
	procs_sample(&pr, &pr.sagad_run_a, pr.cpu_a);
	run->t0_us = mono_us() + 20000;
	for (int i = 0; i < n_callers; i++) {
		if (pthread_create(&callers[i].thread, NULL, caller_main, &callers[i]) != 0) {
			log_fatal("cannot start caller %d", i);
			atomic_store(&run->stop, true);
			break;
		}
		callers[i].started = true;
	}
	for (int sec = 0; sec < W + D && !interrupted; sec++) {
		uint64_t done;

		sleep_until_us(run->t0_us + (int64_t)(sec + 1) * 1000000);
		if (sec + 1 == W)
			procs_sample(&pr, &pr.sagad_a, pr.cpu_a);
		done = atomic_load(&run->done);
		if (s->progress > 0 && (isatty(STDERR_FILENO) || sec % 5 == 4)) {
			fprintf(stderr,
			        "%s[sync %s %4ds] chains %5llu/s  callers %d  timeouts %llu%s",
			        isatty(STDERR_FILENO) ? "\r" : "", sec < W ? "warmup" : "steady",
			        sec + 1, (unsigned long long)(done - prev), n_callers,
			        (unsigned long long)atomic_load(&run->timeouts),
			        isatty(STDERR_FILENO) ? "\033[K" : "\n");
		}
		prev = done;
	}
	procs_sample(&pr, &pr.sagad_b, pr.cpu_b);
	atomic_store(&run->stop, true);
	for (int i = 0; i < n_callers; i++) {
		if (callers[i].started)
			pthread_join(callers[i].thread, NULL);
		callers[i].started = false;
	}
	if (s->progress > 0 && isatty(STDERR_FILENO))
		fputc('\n', stderr);

	/* Chains started in the window: latency; chains ended in it: throughput. */
	{
		int64_t a = run->t0_us + (int64_t)W * 1000000,
		        z = run->t0_us + (int64_t)(W + D) * 1000000;
		size_t n = atomic_load(&run->next);

		if (n > run->cap)
			n = run->cap;
		lat = calloc(n + 1, sizeof(*lat));
		if (lat == NULL)
			goto cleanup;
		for (size_t i = 0; i < n; i++) {
			const struct chain_rec *r = &run->recs[i];

			if (r->end_us >= a && r->end_us < z) {
				in_window++;
				ends[r->end]++;
			}
			if (r->start_us >= a && r->start_us < z) {
				if (r->end_us > 0)
					lat[n_lat++] = r->end_us - r->start_us;
				else
					unfinished++;
			}
		}
		bench_sort(lat, n_lat);
	}
	{
		char like[64];
		const char *p[1] = {like};

		snprintf(like, sizeof(like), "%s:%%", s->tag);
		if (bench_db_numbers(db,
		                     "SELECT count(*), count(DISTINCT idempotency_key),"
		                     " count(*) FILTER (WHERE correlation_id LIKE $1),"
		                     " count(*) FILTER (WHERE coalesce(correlation_id, '') <> '')"
		                     " FROM participant_effects WHERE correlation_id LIKE $1"
		                     " OR correlation_id IS NULL OR correlation_id = ''",
		                     1, p, effects, 4, err, sizeof(err)) != STATUS_OK)
			log_warn("side effects: %s", err);
	}
	{
		char *buf = NULL;
		size_t len = 0;
		struct json j = {0};
		struct bench_hist_snap *snap = malloc(sizeof(*snap));
		double tput = (double)in_window / D;

		j.f = open_memstream(&buf, &len);
		if (j.f == NULL || snap == NULL) {
			free(snap);
			goto cleanup;
		}
		bench_hist_take(&run->step_hist, snap);
		printf("\nsaga-bench %s: synchronous chain of %s (%d steps), %d callers, %s\n",
		       s->tag, run->def.name, run->def.n_steps, n_callers,
		       s->rate > 0 ? "paced" : "closed loop");
		if (s->rate > 0)
			printf("  %-44s %12.1f /s\n", "offered chains", s->rate);
		printf("  %-44s %12.1f /s (completed %llu, compensated %llu, failed %llu)\n",
		       "chains finished", tput, (unsigned long long)ends[CHAIN_COMPLETED],
		       (unsigned long long)ends[CHAIN_COMPENSATED],
		       (unsigned long long)ends[CHAIN_FAILED]);
		printf("  %-44s %8.1f / %8.1f / %8.1f ms\n", "caller-visible latency p50/p95/p99",
		       ms(bench_pct_sorted(lat, n_lat, 0.5)),
		       ms(bench_pct_sorted(lat, n_lat, 0.95)),
		       ms(bench_pct_sorted(lat, n_lat, 0.99)));
		printf("  %-44s %8.2f / %8.2f / %8.2f ms\n", "one step round trip p50/p95/p99",
		       ms(bench_hist_pct(snap, 0.5)), ms(bench_hist_pct(snap, 0.95)),
		       ms(bench_hist_pct(snap, 0.99)));
		printf("  %-44s %12.0f (duplicates %.0f)\n", "side effects", effects[0],
		       effects[0] - effects[1]);
		printf("  %-44s %12llu timeouts, %llu retries\n", "step attempts",
		       (unsigned long long)atomic_load(&run->timeouts),
		       (unsigned long long)atomic_load(&run->retries));
		for (int i = 0; i < pr.n; i++)
			printf("  %-44s %12.2f s (%.2f cores)\n", pr.names[i],
			       pr.cpu_b[i] - pr.cpu_a[i], (pr.cpu_b[i] - pr.cpu_a[i]) / D);
		json_open(&j, NULL);
		json_str(&j, "tool", "saga-bench");
		json_str(&j, "mode", "sync");
		json_str(&j, "tag", s->tag);
		json_str(&j, "saga", run->def.name);
		json_str(&j, "started_at", started);
		json_open(&j, "config");
		json_num(&j, "callers", n_callers);
		json_num(&j, "rate", s->rate);
		json_num(&j, "warmup_s", s->warmup);
		json_num(&j, "duration_s", s->duration);
		json_num(&j, "payload_bytes", s->payload_bytes);
		json_num(&j, "participant_fail_rate", s->part_fail_rate);
		json_num(&j, "participant_latency_ms", s->part_latency_ms);
		json_num(&j, "participant_instances", s->part_instances);
		json_close(&j);
		json_num(&j, "completed_per_s", tput);
		json_open(&j, "chains");
		json_num(&j, "completed", (double)ends[CHAIN_COMPLETED]);
		json_num(&j, "compensated", (double)ends[CHAIN_COMPENSATED]);
		json_num(&j, "failed", (double)ends[CHAIN_FAILED]);
		json_num(&j, "unfinished_in_window", (double)unfinished);
		json_close(&j);
		json_latency(&j, "latency_ms", lat, n_lat);
		json_open(&j, "step_round_trip_ms");
		json_fixed(&j, "p50", ms(bench_hist_pct(snap, 0.5)), 2);
		json_fixed(&j, "p95", ms(bench_hist_pct(snap, 0.95)), 2);
		json_fixed(&j, "p99", ms(bench_hist_pct(snap, 0.99)), 2);
		json_num(&j, "n", (double)snap->n);
		json_close(&j);
		json_num(&j, "timeouts", (double)atomic_load(&run->timeouts));
		json_num(&j, "retries", (double)atomic_load(&run->retries));
		json_num(&j, "side_effects", effects[0]);
		json_num(&j, "duplicate_side_effects", effects[0] - effects[1]);
		json_num(&j, "correlation_share", effects[0] > 0 ? effects[2] / effects[0] : NAN);
		json_open(&j, "processes");
		for (int i = 0; i < pr.n; i++) {
			json_open(&j, pr.names[i]);
			json_fixed(&j, "cpu_s", pr.cpu_b[i] - pr.cpu_a[i], 2);
			json_fixed(&j, "cpu_cores", (pr.cpu_b[i] - pr.cpu_a[i]) / D, 3);
			json_close(&j);
		}
		json_close(&j);
		json_close(&j);
		fclose(j.f);
		emit_json(buf, s->json);
		free(buf);
		free(snap);
	}
	rc = EXIT_OK;
cleanup:
	atomic_store(&run->stop, true);
	for (int i = 0; callers != NULL && i < n_callers; i++) {
		if (callers[i].started)
			pthread_join(callers[i].thread, NULL);
		bench_nats_unsubscribe(callers[i].sub);
		if (callers[i].inst != NULL) {
			for (int k = 0; k < SAGA_MAX_STEPS; k++)
				free(callers[i].inst->steps[k].output.data);
		}
		free(callers[i].inst);
	}
	free(callers);
	bench_nats_close(run->nats);
	bench_db_close(db);
	free(lat);
	free(run->recs);
	free(run);
	return rc;
}

/* ---- setup mode ---- */

static int
run_setup(struct config *cfg)
{
	struct bus *bus = NULL;
	char err[512];
	int created = 0;
	int rc = EXIT_OK;

	if (bus_connect(&bus, cfg, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		return EXIT_NATS;
	}
	if (bus_ensure_topology(bus, &created, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_NATS;
	}
	bus_close(bus);
	return rc;
}

int
main(int argc, char **argv)
{
	static struct settings set;
	struct config cfg;
	struct sigaction sa;
	char err[512];
	int r, rc;

	log_set_component("saga-bench");
	r = load_settings(&set, argc, argv, err, sizeof(err));
	if (r < 0) {
		print_help(stdout);
		return EXIT_OK;
	}
	if (r > 0) {
		log_fatal("%s", err);
		return EXIT_USAGE;
	}
	/* The core modules (bus) read their settings from a struct config. */
	if (config_init(&cfg) != STATUS_OK ||
	    config_set(&cfg, "nats_url", set.nats_url, err, sizeof(err)) != STATUS_OK ||
	    config_set(&cfg, "subject_prefix", set.subject_prefix, err, sizeof(err)) != STATUS_OK ||
	    config_set(&cfg, "stream_prefix", set.stream_prefix, err, sizeof(err)) != STATUS_OK ||
	    config_set(&cfg, "nats_name", "saga-bench-stats", err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		config_free(&cfg);
		return EXIT_USAGE;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (strcmp(set.mode, "setup") == 0)
		rc = run_setup(&cfg);
	else if (strcmp(set.mode, "sync") == 0)
		rc = run_sync(&set);
	else
		rc = run_open(&set, &cfg);
	config_free(&cfg);
	bench_nats_library_close();
	return rc;
}

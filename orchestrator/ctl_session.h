/* One sagactl command's session: options, actor, connections, audit trail and exit codes. */
#ifndef SAGAD_CTL_SESSION_H
#define SAGAD_CTL_SESSION_H

#include <stdint.h>

#include "bus.h"
#include "config.h"
#include "ctl_args.h"
#include "ctl_output.h"
#include "defcache.h"
#include "status.h"
#include "store.h"
#include "store_rows.h"

/* Exit codes scripts can rely on (0-4 mean the same as sagad's). */
enum ctl_exit {
	CTL_OK = 0,       /* done */
	CTL_FAILED = 1,   /* the operation failed or was refused */
	CTL_USAGE = 2,    /* bad command line or settings */
	CTL_DATABASE = 3, /* PostgreSQL unreachable, schema not migrated, or a query failed */
	CTL_NATS = 4,     /* NATS unreachable or a publish failed */
	CTL_CONFIRM = 5,  /* dry run, or a bulk action waiting for --yes / --confirm N */
};

/* What one command works with. */
struct ctl {
	const struct config *cfg; /* settings */
	const char *command;      /* command words, for messages ("dlq replay") */
	struct ctl_args args;     /* parsed options */
	int json;                 /* --json given */
	char actor[128];          /* --actor, $USER, $LOGNAME or the uid */
	struct store *db;         /* NULL until ctl_open_db */
	struct bus *bus;          /* NULL until ctl_open_bus */
	struct store *engine_db;  /* second connection for apply_operator (ctl_open_engine) */
	struct defcache *defs;    /* definitions for apply_operator */
};

/*
 * Parse a command's options (allowed: CTL_OPT mask; --json and --actor are
 * always accepted) into c. Prints the problem and returns CTL_USAGE on a bad
 * line, CTL_OK otherwise.
 */
int ctl_begin(struct ctl *c, const struct config *cfg, const char *command, uint32_t allowed,
              int argc, char **argv) MUSTCHECK;

/* Close whatever the session opened. */
void ctl_end(struct ctl *c);

/* Connect to PostgreSQL and check the schema is migrated: CTL_OK or CTL_DATABASE (printed). */
int ctl_open_db(struct ctl *c) MUSTCHECK;

/* Connect to NATS: CTL_OK or CTL_NATS (printed). */
int ctl_open_bus(struct ctl *c) MUSTCHECK;

/* Open the connection and definition cache apply_operator needs: CTL_OK or CTL_DATABASE. */
int ctl_open_engine(struct ctl *c) MUSTCHECK;

/* Print "sagactl <command>: <message>" on stderr and return code. */
int ctl_fail(struct ctl *c, int code, const char *fmt, ...) MUSTCHECK
        __attribute__((format(printf, 3, 4)));

/* Run a parameterised query on c->db; on failure print it and return CTL_DATABASE. */
int ctl_query(struct ctl *c, struct store_rows **out, const char *sql, int n_params,
              const char *const *params) MUSTCHECK;

/*
 * Append one row to sagad_audit: action, target, filter, count (< 0: none),
 * note and outcome (NULLs allowed except action and outcome). Prints a
 * warning when it cannot and returns CTL_DATABASE; CTL_OK otherwise.
 */
int ctl_audit(struct ctl *c, const char *action, const char *target, const char *filter,
              int64_t count, const char *note, const char *outcome) MUSTCHECK;

/* The given options of mask as text ("--state failed --stuck") for audit rows. */
void ctl_filter_text(const struct ctl *c, uint32_t mask, char *out, size_t outlen);

/*
 * May a bulk action on count items go ahead? CTL_OK with --yes or with
 * --confirm equal to count; otherwise prints what to do and returns
 * CTL_CONFIRM. *why receives the audit outcome of a refusal.
 */
int ctl_confirm(struct ctl *c, int64_t count, const char *what, char *why, size_t whylen) MUSTCHECK;

/* Keep the worse of two exit codes (a failure beats a success; the first failure is kept). */
int ctl_worse(int rc, int other);

/* Timestamp column in UTC, ISO 8601 with milliseconds (SQL text). */
#define CTL_TS(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#endif /* SAGAD_CTL_SESSION_H */

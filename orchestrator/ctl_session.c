/* One sagactl command's session: options, actor, connections, audit trail and exit codes. */
#include "ctl_session.h"

#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate.h"

int
ctl_fail(struct ctl *c, int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sagactl %s: ", c->command);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* Printable, short, no control characters: fit for the audit trail. */
static int
valid_actor(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return 0;
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	}
	return 1;
}

int
ctl_begin(struct ctl *c, const struct config *cfg, const char *command, uint32_t allowed, int argc,
          char **argv)
{
	char err[256];
	const char *actor;

	memset(c, 0, sizeof(*c));
	c->cfg = cfg;
	c->command = command;
	allowed |= CTL_OPT(OPT_JSON) | CTL_OPT(OPT_ACTOR);
	if (ctl_args_parse(&c->args, allowed, argc, argv, err, sizeof(err)) != STATUS_OK)
		return ctl_fail(c, CTL_USAGE, "%s (see sagactl --help)", err);
	c->json = ctl_args_has(&c->args, OPT_JSON);
	actor = c->args.opt[OPT_ACTOR];
	if (actor != NULL && !valid_actor(actor))
		return ctl_fail(c, CTL_USAGE,
		                "--actor: 1 to 64 printable characters (it goes into the audit "
		                "trail)");
	if (actor == NULL)
		actor = getenv("USER");
	if (actor == NULL || actor[0] == '\0')
		actor = getenv("LOGNAME");
	if (actor == NULL || actor[0] == '\0') {
		struct passwd *pw = getpwuid(getuid());

		actor = pw != NULL ? pw->pw_name : NULL;
	}
	if (actor == NULL || !valid_actor(actor))
		snprintf(c->actor, sizeof(c->actor), "uid:%ld", (long)getuid());
	else
		snprintf(c->actor, sizeof(c->actor), "%s", actor);
	return CTL_OK;
}

void
ctl_end(struct ctl *c)
{
	bus_close(c->bus);
	store_close(c->db);
	store_close(c->engine_db);
	defcache_free(c->defs);
	c->bus = NULL;
	c->db = NULL;
	c->engine_db = NULL;
	c->defs = NULL;
}

/* Does the schema have what sagactl writes (0005: the audit table, the replay columns)? */
static int
has_operator_tables(struct store *db)
{
	struct store_rows *rows = NULL;
	char err[256];
	int ok;

	if (store_rows_query(&rows, db,
	                     "SELECT to_regclass('sagad_audit') IS NOT NULL AND EXISTS (SELECT 1"
	                     " FROM information_schema.columns WHERE table_schema ="
	                     " current_schema() AND table_name = 'saga_dead_letter'"
	                     " AND column_name = 'replay_of')",
	                     0, NULL, err, sizeof(err)) != STATUS_OK)
		return 0;
	ok = strcmp(store_rows_get(rows, 0, 0), "t") == 0;
	store_rows_free(rows);
	return ok;
}

static int
connect_db(struct ctl *c, struct store **out, int warn)
{
	char err[1024];
	int pending = 0;
	struct store *db = NULL;
	enum status st;

	st = store_connect(&db, c->cfg->database_url, c->cfg->db_schema, c->cfg->connect_timeout_ms,
	                   0, "sagactl", err, sizeof(err));
	if (st != STATUS_OK)
		return ctl_fail(c, st == STATUS_CONFIG ? CTL_USAGE : CTL_DATABASE, "%s", err);
	if (migrate_check(db, c->cfg->migrations_dir, &pending, err, sizeof(err)) != STATUS_OK) {
		/*
		 * An operator in a hurry may run a sagactl of another version than
		 * the schema: go ahead when what sagactl needs is there, and say so.
		 */
		if (!has_operator_tables(db)) {
			store_close(db);
			return ctl_fail(c, CTL_DATABASE, "database schema not ready: %s", err);
		}
		if (warn)
			fprintf(stderr, "sagactl %s: warning: %s\n", c->command, err);
	}
	*out = db;
	return CTL_OK;
}

int
ctl_open_db(struct ctl *c)
{
	if (c->db != NULL)
		return CTL_OK;
	return connect_db(c, &c->db, 1);
}

int
ctl_open_bus(struct ctl *c)
{
	char err[1024];

	if (c->bus != NULL)
		return CTL_OK;
	if (bus_connect(&c->bus, c->cfg, err, sizeof(err)) != STATUS_OK)
		return ctl_fail(c, CTL_NATS, "%s", err);
	return CTL_OK;
}

int
ctl_open_engine(struct ctl *c)
{
	int rc;

	if (c->engine_db != NULL)
		return CTL_OK;
	rc = connect_db(c, &c->engine_db, 0);
	if (rc != CTL_OK)
		return rc;
	if (defcache_new(&c->defs) != STATUS_OK) {
		store_close(c->engine_db);
		c->engine_db = NULL;
		return ctl_fail(c, CTL_FAILED, "out of memory");
	}
	return CTL_OK;
}

int
ctl_query(struct ctl *c, struct store_rows **out, const char *sql, int n_params,
          const char *const *params)
{
	char err[1024];

	if (store_rows_query(out, c->db, sql, n_params, params, err, sizeof(err)) != STATUS_OK)
		return ctl_fail(c, CTL_DATABASE, "%s", err);
	return CTL_OK;
}

int
ctl_audit(struct ctl *c, const char *action, const char *target, const char *filter, int64_t count,
          const char *note, const char *outcome)
{
	struct store_rows *rows = NULL;
	char count_text[24];
	char err[1024];
	const char *params[7];

	snprintf(count_text, sizeof(count_text), "%" PRId64, count);
	params[0] = c->actor;
	params[1] = action;
	params[2] = target;
	params[3] = filter != NULL && filter[0] != '\0' ? filter : NULL;
	params[4] = count >= 0 ? count_text : NULL;
	params[5] = note != NULL && note[0] != '\0' ? note : NULL;
	params[6] = outcome;
	if (c->db == NULL ||
	    store_rows_query(&rows, c->db,
	                     "INSERT INTO sagad_audit (actor, action, target, filter, count, note,"
	                     " outcome) VALUES ($1, $2, $3, $4, $5::int, $6, $7)",
	                     7, params, err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "sagactl %s: warning: the audit row was not written: %s\n",
		        c->command, c->db == NULL ? "no database connection" : err);
		return CTL_DATABASE;
	}
	store_rows_free(rows);
	return CTL_OK;
}

void
ctl_filter_text(const struct ctl *c, uint32_t mask, char *out, size_t outlen)
{
	size_t pos = 0;

	out[0] = '\0';
	for (int o = 0; o < OPT_COUNT && pos < outlen; o++) {
		const char *v = c->args.opt[o];

		if ((mask & CTL_OPT(o)) == 0 || v == NULL)
			continue;
		pos += (size_t)snprintf(out + pos, outlen - pos, "%s%s%s%s", pos > 0 ? " " : "",
		                        ctl_args_name((enum ctl_opt)o), v[0] != '\0' ? " " : "", v);
	}
}

int
ctl_confirm(struct ctl *c, int64_t count, const char *what, char *why, size_t whylen)
{
	const char *confirm = c->args.opt[OPT_CONFIRM];

	if (ctl_args_has(&c->args, OPT_YES))
		return CTL_OK;
	if (confirm != NULL) {
		char *end = NULL;
		long long n = strtoll(confirm, &end, 10);

		if (end != confirm && *end == '\0' && n == count)
			return CTL_OK;
		snprintf(why, whylen, "refused: --confirm %s but %" PRId64 " match", confirm,
		         count);
		return ctl_fail(c, CTL_CONFIRM,
		                "refused: --confirm %s but %" PRId64 " %s match now; nothing "
		                "changed (check with --dry-run, then --confirm %" PRId64 ")",
		                confirm, count, what, count);
	}
	snprintf(why, whylen, "refused: confirmation needed");
	return ctl_fail(c, CTL_CONFIRM,
	                "%" PRId64 " %s match; nothing changed. Re-run with --confirm %" PRId64
	                " (or --yes) to go ahead, or --dry-run to see them",
	                count, what, count);
}

int
ctl_worse(int rc, int other)
{
	return rc != CTL_OK ? rc : other;
}

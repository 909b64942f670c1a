/* sagactl commands on sagas and definitions: list, show, trace, retry / abort / resolve, define, start. */
#include "ctl_sagas.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "codec.h"
#include "definition.h"

/* ---- filters shared by list and the bulk forms ---- */

#define FILTER_OPTS                                                                                \
	(CTL_OPT(OPT_STATE) | CTL_OPT(OPT_DEFINITION) | CTL_OPT(OPT_OLDER_THAN) |                  \
	 CTL_OPT(OPT_STUCK) | CTL_OPT(OPT_LIMIT))

/* One row per saga, newest first; $5 limits to the states an operator command applies to. */
static const char saga_list_sql[] =
        "SELECT i.id::text AS id, i.definition_name AS definition,"
        " i.definition_version AS version,"
        " i.definition_name || ' v' || i.definition_version AS definition_version,"
        " i.state, i.correlation_id, " CTL_TS(
                "i.created_at") " AS created_at,"
                                " extract(epoch FROM now() - i.created_at)::bigint AS age_s,"
                                " extract(epoch FROM now() - i.updated_at)::bigint AS idle_s,"
                                " w.name AS step, w.state AS step_state,"
                                " COALESCE(w.last_error, i.last_error) AS last_error"
                                " FROM saga_instance i"
                                " LEFT JOIN LATERAL (SELECT s.name, s.state, s.last_error FROM "
                                "saga_step s"
                                "  WHERE s.saga_id = i.id"
                                "  AND s.state NOT IN ('pending', 'succeeded', 'compensated', "
                                "'skipped')"
                                "  ORDER BY (s.state LIKE 'compensat%') DESC, s.step_index DESC "
                                "LIMIT 1) w ON true"
                                " WHERE ($1::text IS NULL OR i.state = $1)"
                                " AND ($2::text IS NULL OR i.definition_name = $2)"
                                " AND ($3::bigint IS NULL OR i.created_at < now() - $3::bigint * "
                                "interval '1 millisecond')"
                                " AND (NOT $4::boolean OR i.id IN (SELECT saga_id FROM saga_stuck))"
                                " AND ($5::text[] IS NULL OR i.state = ANY($5::text[]))"
                                " ORDER BY i.created_at DESC, i.id LIMIT $6::int";

static const struct ctl_column saga_list_cols[] = {
        {"id", "ID", CTL_TEXT, 0},
        {"definition_version", "DEFINITION", CTL_TEXT, 0},
        {"state", "STATE", CTL_TEXT, 0},
        {"age_s", "AGE", CTL_SECONDS, 0},
        {"idle_s", "IDLE", CTL_SECONDS, 0},
        {"step", "STEP", CTL_TEXT, 24},
        {"last_error", "LAST_ERROR", CTL_TEXT, 48},
        {"correlation_id", "CORRELATION", CTL_TEXT, 40},
};

static const struct ctl_column saga_json_cols[] = {
        {"id", NULL, CTL_TEXT, 0},
        {"definition", NULL, CTL_TEXT, 0},
        {"version", NULL, CTL_INT, 0},
        {"state", NULL, CTL_TEXT, 0},
        {"correlation_id", NULL, CTL_TEXT, 0},
        {"created_at", NULL, CTL_TEXT, 0},
        {"age_s", NULL, CTL_SECONDS, 0},
        {"idle_s", NULL, CTL_SECONDS, 0},
        {"step", NULL, CTL_TEXT, 0},
        {"step_state", NULL, CTL_TEXT, 0},
        {"last_error", NULL, CTL_TEXT, 0},
};

#define N_COLS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The filter options as query parameters. */
struct saga_filter {
	const char *params[6]; /* $1..$6 of saga_list_sql */
	char older[24];        /* --older-than in ms */
	char limit[24];        /* --limit */
};

static int
parse_filter(struct ctl *c, int64_t default_limit, const char *states, struct saga_filter *f)
{
	const struct ctl_args *a = &c->args;
	char err[256];
	enum saga_state state;

	memset(f, 0, sizeof(*f));
	if (a->opt[OPT_STATE] != NULL) {
		if (!saga_state_parse(a->opt[OPT_STATE], &state))
			return ctl_fail(c, CTL_USAGE,
			                "--state: one of running, compensating, completed, "
			                "compensated, failed, resolved");
		f->params[0] = a->opt[OPT_STATE];
	}
	if (a->opt[OPT_DEFINITION] != NULL) {
		if (!saga_valid_name(a->opt[OPT_DEFINITION]))
			return ctl_fail(c, CTL_USAGE, "--definition: a saga name ([A-Za-z0-9_-])");
		f->params[1] = a->opt[OPT_DEFINITION];
	}
	if (a->opt[OPT_OLDER_THAN] != NULL) {
		int64_t ms = 0;

		if (config_parse_duration(a->opt[OPT_OLDER_THAN], &ms) != STATUS_OK || ms < 0)
			return ctl_fail(c, CTL_USAGE,
			                "--older-than: a duration such as 90s, 15m, 2h or 1d");
		snprintf(f->older, sizeof(f->older), "%" PRId64, ms);
		f->params[2] = f->older;
	}
	f->params[3] = ctl_args_has(a, OPT_STUCK) ? "true" : "false";
	f->params[4] = states;
	if (a->opt[OPT_LIMIT] != NULL) {
		int64_t n = 0;

		if (ctl_args_int(a, OPT_LIMIT, 1, 1000000, &n, err, sizeof(err)) != STATUS_OK)
			return ctl_fail(c, CTL_USAGE, "%s", err);
		snprintf(f->limit, sizeof(f->limit), "%" PRId64, n);
		f->params[5] = f->limit;
	} else if (default_limit > 0) {
		snprintf(f->limit, sizeof(f->limit), "%" PRId64, default_limit);
		f->params[5] = f->limit;
	}
	return CTL_OK;
}

int
ctl_sagas_list(const struct config *cfg, int argc, char **argv)
{
	struct ctl c;
	struct saga_filter f;
	struct store_rows *rows = NULL;
	int rc;

	rc = ctl_begin(&c, cfg, "list", FILTER_OPTS, argc, argv);
	if (rc != CTL_OK)
		return rc;
	if (c.args.n_pos > 0) {
		rc = ctl_fail(&c, CTL_USAGE, "unexpected argument \"%s\"", c.args.pos[0]);
		goto cleanup;
	}
	rc = parse_filter(&c, 50, NULL, &f);
	if (rc == CTL_OK)
		rc = ctl_open_db(&c);
	if (rc == CTL_OK)
		rc = ctl_query(&c, &rows, saga_list_sql, 6, f.params);
	if (rc != CTL_OK)
		goto cleanup;
	if (c.json) {
		struct ctl_json j;

		ctl_json_init(&j, stdout);
		ctl_json_begin_object(&j, NULL);
		ctl_json_int(&j, "count", store_rows_count(rows));
		ctl_rows_json_array(&j, "sagas", rows, saga_json_cols, N_COLS(saga_json_cols));
		ctl_json_end(&j);
	} else {
		ctl_rows_table(stdout, rows, saga_list_cols, N_COLS(saga_list_cols));
		if (f.params[5] != NULL && store_rows_count(rows) == atoi(f.params[5]))
			printf("(first %d shown: --limit N shows more)\n", store_rows_count(rows));
	}
cleanup:
	store_rows_free(rows);
	ctl_end(&c);
	return rc;
}

/* ---- show ---- */

static const char show_sql[] =
        "SELECT i.id::text AS id, i.definition_name AS definition,"
        " i.definition_version AS version,"
        " i.definition_name || ' v' || i.definition_version AS definition_version,"
        " i.state, i.correlation_id, i.idempotency_key, i.labels::text AS labels,"
        " i.traceparent, " CTL_TS(
                "i.created_at") " AS created_at,"
                                " " CTL_TS("i.updated_at") " AS updated_at, " CTL_TS(
                                        "i.ended_at") " AS ended_at,"
                                                      " " CTL_TS(
                                                              "i.wake_at") " AS "
                                                                           "wake_at, " CTL_TS(
                                                                                   "i.deadline_"
                                                                                   "at") " AS "
                                                                                         "deadli"
                                                                                         "ne_at,"
                                                                                         " extra"
                                                                                         "ct("
                                                                                         "epoch "
                                                                                         "FROM "
                                                                                         "now() "
                                                                                         "- "
                                                                                         "i."
                                                                                         "create"
                                                                                         "d_at):"
                                                                                         ":bigin"
                                                                                         "t AS "
                                                                                         "age_s,"
                                                                                         " encod"
                                                                                         "e(i."
                                                                                         "input,"
                                                                                         " 'hex'"
                                                                                         ") AS "
                                                                                         "input,"
                                                                                         " i."
                                                                                         "last_"
                                                                                         "error,"
                                                                                         " i."
                                                                                         "seq "
                                                                                         "AS "
                                                                                         "transi"
                                                                                         "tions,"
                                                                                         " ("
                                                                                         "SELECT"
                                                                                         " t."
                                                                                         "event "
                                                                                         "|| ' "
                                                                                         "' || "
                                                                                         "coales"
                                                                                         "ce(t."
                                                                                         "outcom"
                                                                                         "e, "
                                                                                         "'') "
                                                                                         "|| ' "
                                                                                         "at '"
                                                                                         "   "
                                                                                         "||"
                                                                                         " " CTL_TS(
                                                                                                 "t"
                                                                                                 "."
                                                                                                 "a"
                                                                                                 "t") " || coalesce(': ' || t.detail, '')"
                                                                                                      "  FROM saga_transition t WHERE t.saga_id = i.id ORDER BY t.seq DESC LIMIT 1)"
                                                                                                      " AS last_transition,"
                                                                                                      " (SELECT count(*) FROM saga_dead_letter d WHERE d.saga_id = i.id) AS dead_letters,"
                                                                                                      " (SELECT count(*) FROM saga_dead_letter d WHERE d.saga_id = i.id"
                                                                                                      "  AND d.status IN ('open', 'diagnosed')) AS open_dead_letters"
                                                                                                      " FROM saga_instance i WHERE i.id = $1::uuid";

static const struct ctl_column show_cols[] = {
        {"id", "saga", CTL_TEXT, 0},
        {"definition_version", "definition", CTL_TEXT, 0},
        {"state", "state", CTL_TEXT, 0},
        {"correlation_id", "correlation id", CTL_TEXT, 0},
        {"idempotency_key", "idempotency key", CTL_TEXT, 0},
        {"created_at", "created", CTL_TEXT, 0},
        {"age_s", "age", CTL_SECONDS, 0},
        {"updated_at", "updated", CTL_TEXT, 0},
        {"ended_at", "ended", CTL_TEXT, 0},
        {"wake_at", "next timer", CTL_TEXT, 0},
        {"deadline_at", "deadline", CTL_TEXT, 0},
        {"last_error", "last error", CTL_TEXT, 0},
        {"input", "input", CTL_BYTES, 0},
        {"labels", "labels", CTL_JSONB, 0},
        {"traceparent", "traceparent", CTL_TEXT, 0},
        {"transitions", "transitions", CTL_INT, 0},
        {"last_transition", "last transition", CTL_TEXT, 0},
        {"dead_letters", "dead letters", CTL_INT, 0},
        {"open_dead_letters", "open dead letters", CTL_INT, 0},
};

static const struct ctl_column show_json_cols[] = {
        {"id", NULL, CTL_TEXT, 0},
        {"definition", NULL, CTL_TEXT, 0},
        {"version", NULL, CTL_INT, 0},
        {"state", NULL, CTL_TEXT, 0},
        {"correlation_id", NULL, CTL_TEXT, 0},
        {"idempotency_key", NULL, CTL_TEXT, 0},
        {"created_at", NULL, CTL_TEXT, 0},
        {"age_s", NULL, CTL_SECONDS, 0},
        {"updated_at", NULL, CTL_TEXT, 0},
        {"ended_at", NULL, CTL_TEXT, 0},
        {"wake_at", NULL, CTL_TEXT, 0},
        {"deadline_at", NULL, CTL_TEXT, 0},
        {"last_error", NULL, CTL_TEXT, 0},
        {"input", NULL, CTL_BYTES, 0},
        {"labels", NULL, CTL_JSONB, 0},
        {"traceparent", NULL, CTL_TEXT, 0},
        {"transitions", NULL, CTL_INT, 0},
        {"last_transition", NULL, CTL_TEXT, 0},
        {"dead_letters", NULL, CTL_INT, 0},
        {"open_dead_letters", NULL, CTL_INT, 0},
};

static const char steps_sql[] =
        "SELECT s.step_index AS index, s.name, s.state, s.attempt AS attempts,"
        " s.comp_attempt AS comp_attempts, s.uncertain,"
        " " CTL_TS("s.started_at") " AS started_at, " CTL_TS(
                "s.completed_at") " AS completed_at,"
                                  " " CTL_TS("s.wake_at") " AS wake_at, s.last_error, "
                                                          "encode(s.output, 'hex') AS output"
                                                          " FROM saga_step s WHERE s.saga_id = "
                                                          "$1::uuid ORDER BY s.step_index";

static const struct ctl_column steps_cols[] = {
        {"index", "#", CTL_INT, 0},
        {"name", "STEP", CTL_TEXT, 0},
        {"state", "STATE", CTL_TEXT, 0},
        {"attempts", "ATTEMPTS", CTL_INT, 0},
        {"comp_attempts", "COMP_ATTEMPTS", CTL_INT, 0},
        {"uncertain", "UNCERTAIN", CTL_BOOL, 0},
        {"last_error", "LAST_ERROR", CTL_TEXT, 48},
        {"output", "OUTPUT", CTL_BYTES, 60},
};

static const struct ctl_column steps_json_cols[] = {
        {"index", NULL, CTL_INT, 0},         {"name", NULL, CTL_TEXT, 0},
        {"state", NULL, CTL_TEXT, 0},        {"attempts", NULL, CTL_INT, 0},
        {"comp_attempts", NULL, CTL_INT, 0}, {"uncertain", NULL, CTL_BOOL, 0},
        {"started_at", NULL, CTL_TEXT, 0},   {"completed_at", NULL, CTL_TEXT, 0},
        {"wake_at", NULL, CTL_TEXT, 0},      {"last_error", NULL, CTL_TEXT, 0},
        {"output", NULL, CTL_BYTES, 0},
};

/* Saga ids in canonical lower case (codec_valid_uuid wants them so). */
static int
normalise_id(const char *in, char out[SAGA_ID_LEN + 1])
{
	size_t n = strlen(in);

	if (n != SAGA_ID_LEN)
		return 0;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)(in[i] >= 'A' && in[i] <= 'F' ? in[i] + 32 : in[i]);
	out[n] = '\0';
	return codec_valid_uuid(out);
}

int
ctl_sagas_show(const struct config *cfg, int argc, char **argv)
{
	struct ctl c;
	struct store_rows *saga = NULL, *steps = NULL;
	char id[SAGA_ID_LEN + 1];
	const char *params[1] = {id};
	int rc;

	rc = ctl_begin(&c, cfg, "show", 0, argc, argv);
	if (rc != CTL_OK)
		return rc;
	if (c.args.n_pos != 1 || !normalise_id(c.args.pos[0], id)) {
		rc = ctl_fail(&c, CTL_USAGE,
		              "name one saga id (a UUID); to look up a correlation id use "
		              "sagactl trace");
		goto cleanup;
	}
	rc = ctl_open_db(&c);
	if (rc == CTL_OK)
		rc = ctl_query(&c, &saga, show_sql, 1, params);
	if (rc == CTL_OK)
		rc = ctl_query(&c, &steps, steps_sql, 1, params);
	if (rc != CTL_OK)
		goto cleanup;
	if (store_rows_count(saga) == 0) {
		rc = ctl_fail(&c, CTL_FAILED, "no saga %s (sagactl list shows the sagas there are)",
		              id);
		goto cleanup;
	}
	if (c.json) {
		struct ctl_json j;

		ctl_json_init(&j, stdout);
		ctl_json_begin_object(&j, NULL);
		ctl_rows_json_object(&j, "saga", saga, 0, show_json_cols, N_COLS(show_json_cols));
		ctl_rows_json_array(&j, "steps", steps, steps_json_cols, N_COLS(steps_json_cols));
		ctl_json_end(&j);
	} else {
		ctl_rows_record(stdout, saga, 0, show_cols, N_COLS(show_cols));
		printf("\n");
		ctl_rows_table(stdout, steps, steps_cols, N_COLS(steps_cols));
	}
cleanup:
	store_rows_free(saga);
	store_rows_free(steps);
	ctl_end(&c);
	return rc;
}

/* ---- trace ---- */

/* Every transition of the sagas with this id or correlation id, each saga in seq order. */
static const char trace_sql[] =
        "SELECT t.saga_id::text AS saga_id, left(t.saga_id::text, 8) AS saga, t.seq,"
        " " CTL_TS("t.at") " AS at, t.event, t.outcome, t.from_state, t.to_state,"
                           " coalesce(t.from_state, 'new') || ' -> ' || t.to_state AS change,"
                           " t.step, t.phase, t.attempt, t.detail, t.correlation_id"
                           " FROM saga_transition t"
                           " WHERE t.saga_id = $1::uuid OR t.correlation_id = $2"
                           " ORDER BY min(t.at) OVER (PARTITION BY t.saga_id), t.saga_id, t.seq";

static const struct ctl_column trace_cols[] = {
        {"saga", "SAGA", CTL_TEXT, 0},       {"seq", "SEQ", CTL_INT, 0},
        {"at", "AT", CTL_TEXT, 0},           {"event", "EVENT", CTL_TEXT, 0},
        {"outcome", "OUTCOME", CTL_TEXT, 0}, {"change", "STATE", CTL_TEXT, 0},
        {"step", "STEP", CTL_TEXT, 24},      {"phase", "PHASE", CTL_TEXT, 0},
        {"attempt", "ATT", CTL_INT, 0},      {"detail", "DETAIL", CTL_TEXT, 60},
};

static const struct ctl_column trace_json_cols[] = {
        {"saga_id", NULL, CTL_TEXT, 0},  {"seq", NULL, CTL_INT, 0},
        {"at", NULL, CTL_TEXT, 0},       {"event", NULL, CTL_TEXT, 0},
        {"outcome", NULL, CTL_TEXT, 0},  {"from_state", NULL, CTL_TEXT, 0},
        {"to_state", NULL, CTL_TEXT, 0}, {"step", NULL, CTL_TEXT, 0},
        {"phase", NULL, CTL_TEXT, 0},    {"attempt", NULL, CTL_INT, 0},
        {"detail", NULL, CTL_TEXT, 0},   {"correlation_id", NULL, CTL_TEXT, 0},
};

int
ctl_sagas_trace(const struct config *cfg, int argc, char **argv)
{
	struct ctl c;
	struct store_rows *rows = NULL;
	char id[SAGA_ID_LEN + 1];
	const char *params[2];
	int rc;

	rc = ctl_begin(&c, cfg, "trace", 0, argc, argv);
	if (rc != CTL_OK)
		return rc;
	if (c.args.n_pos != 1 || !saga_valid_key(c.args.pos[0], SAGA_CORRELATION_MAX)) {
		rc = ctl_fail(&c, CTL_USAGE, "name one saga id or correlation id");
		goto cleanup;
	}
	params[0] = normalise_id(c.args.pos[0], id) ? id : NULL;
	params[1] = c.args.pos[0];
	rc = ctl_open_db(&c);
	if (rc == CTL_OK)
		rc = ctl_query(&c, &rows, trace_sql, 2, params);
	if (rc != CTL_OK)
		goto cleanup;
	if (store_rows_count(rows) == 0) {
		rc = ctl_fail(&c, CTL_FAILED, "no saga has the id or correlation id \"%s\"",
		              c.args.pos[0]);
		goto cleanup;
	}
	if (c.json) {
		struct ctl_json j;

		ctl_json_init(&j, stdout);
		ctl_json_begin_object(&j, NULL);
		ctl_json_string(&j, "query", c.args.pos[0]);
		ctl_json_int(&j, "count", store_rows_count(rows));
		ctl_rows_json_array(&j, "transitions", rows, trace_json_cols,
		                    N_COLS(trace_json_cols));
		ctl_json_end(&j);
	} else {
		ctl_rows_table(stdout, rows, trace_cols, N_COLS(trace_cols));
	}
cleanup:
	store_rows_free(rows);
	ctl_end(&c);
	return rc;
}

/* ---- retry / abort / resolve ---- */

int
ctl_sagas_apply(struct ctl *c, const char *saga_id, enum engine_event_type type, const char *note,
                struct ctl_applied *out)
{
	struct apply_env env;
	struct ctl_applied a;
	struct plan *plan = malloc(sizeof(*plan));
	char err[1024];
	enum status st;
	int rc = CTL_OK;

	if (plan == NULL)
		return ctl_fail(c, CTL_FAILED, "out of memory");
	memset(&a, 0, sizeof(a));
	memset(&env, 0, sizeof(env)); /* no circuit breakers here: fields added later stay NULL */
	env.db = c->engine_db;
	env.defs = c->defs;
	env.cfg = c->cfg;
	st = apply_operator(&env, saga_id, type, note, plan, err, sizeof(err));
	if (st == STATUS_NOT_FOUND) {
		a.not_found = 1;
		snprintf(a.detail, sizeof(a.detail), "no saga %s", saga_id);
	} else if (st != STATUS_OK) {
		/* A lost COMMIT leaves the outcome unknown: say so rather than guess. */
		rc = ctl_fail(c, CTL_DATABASE,
		              "%s: %s (the outcome may be unknown: check with sagactl show %s)",
		              saga_id, err, saga_id);
	} else {
		a.applied = plan->verdict == VERDICT_APPLIED;
		snprintf(a.from, sizeof(a.from), "%s",
		         plan->from_state != 0 ? saga_state_name((enum saga_state)plan->from_state)
		                               : "new");
		snprintf(a.to, sizeof(a.to), "%s", saga_state_name(plan->to_state));
		snprintf(a.detail, sizeof(a.detail), "%s", plan->detail);
	}
	free(plan);
	if (rc == CTL_OK)
		*out = a;
	return rc;
}

int
ctl_sagas_lock(struct ctl *c, const char *saga_id, int take)
{
	struct store_rows *rows = NULL;
	const char *params[1] = {saga_id};
	int rc = ctl_query(c, &rows,
	                   take ? "SELECT pg_advisory_lock(hashtext('sagactl.saga.' || $1))"
	                        : "SELECT pg_advisory_unlock(hashtext('sagactl.saga.' || $1))",
	                   1, params);

	store_rows_free(rows);
	return rc;
}

int
ctl_sagas_close_letters(struct ctl *c, const char *saga_id, enum engine_event_type type,
                        const char *note, const char *except_id)
{
	struct store_rows *rows = NULL;
	const char *params[4] = {saga_id, c->actor, except_id, note};
	int rc;

	if (type == EV_RETRY)
		rc = ctl_query(c, &rows,
		               "UPDATE saga_dead_letter SET status = 'replayed',"
		               " replayed_at = now(), replayed_by = $2,"
		               " replay_outcome = 'saga retried by an operator'"
		               "   || coalesce(' (with letter ' || $3 || ')', ''),"
		               " updated_at = now()"
		               " WHERE saga_id = $1::uuid AND source_subject = 'saga'"
		               " AND status IN ('open', 'diagnosed')"
		               " AND ($3::bigint IS NULL OR id <> $3::bigint)",
		               3, params);
	else if (type == EV_RESOLVE)
		rc = ctl_query(c, &rows,
		               "UPDATE saga_dead_letter SET status = 'discarded',"
		               " discarded_at = now(), discarded_by = $2,"
		               " note = coalesce(note || '; ', '') || 'saga resolved: ' || $4,"
		               " updated_at = now()"
		               " WHERE saga_id = $1::uuid AND source_subject = 'saga'"
		               " AND status IN ('open', 'diagnosed')"
		               " AND ($3::bigint IS NULL OR id <> $3::bigint)",
		               4, params);
	else
		return CTL_OK;
	store_rows_free(rows);
	return rc;
}

/* Apply to one saga, print and audit the outcome; returns CTL_OK only when applied. */
static int
operate_one(struct ctl *c, struct ctl_json *j, const char *saga_id, enum engine_event_type type,
            const char *note, const char *filter)
{
	struct ctl_applied a;
	char outcome[400];
	int rc = ctl_sagas_lock(c, saga_id, 1);

	if (rc == CTL_OK)
		rc = ctl_sagas_apply(c, saga_id, type, note, &a);
	if (rc != CTL_OK) {
		if (ctl_sagas_lock(c, saga_id, 0) != CTL_OK) {
			/* printed; the session ends anyway, which releases it */
		}
		rc = ctl_worse(rc, ctl_audit(c, engine_event_name(type), saga_id, filter, -1, note,
		                             "failed: database error"));
		return rc;
	}
	if (a.applied) {
		snprintf(outcome, sizeof(outcome), "applied: %s -> %s", a.from, a.to);
		if (strcmp(a.from, "failed") == 0)
			rc = ctl_sagas_close_letters(c, saga_id, type, note, NULL);
	} else if (a.not_found) {
		snprintf(outcome, sizeof(outcome), "not found");
		rc = CTL_FAILED;
	} else {
		snprintf(outcome, sizeof(outcome), "refused: %s", a.detail);
		rc = CTL_FAILED;
	}
	rc = ctl_worse(rc, ctl_sagas_lock(c, saga_id, 0));
	if (j != NULL) {
		ctl_json_begin_object(j, NULL);
		ctl_json_string(j, "saga_id", saga_id);
		ctl_json_string(j, "outcome",
		                a.applied     ? "applied"
		                : a.not_found ? "not_found"
		                              : "refused");
		ctl_json_string(j, "from", a.not_found ? NULL : a.from);
		ctl_json_string(j, "to", a.not_found ? NULL : a.to);
		ctl_json_string(j, "detail", a.detail);
		ctl_json_end(j);
	} else if (a.applied) {
		printf("%s: %s -> %s (%s)\n", saga_id, a.from, a.to, a.detail);
	} else if (a.not_found) {
		fprintf(stderr, "%s: no such saga\n", saga_id);
	} else {
		fprintf(stderr, "%s: refused: %s\n", saga_id, a.detail);
	}
	return ctl_worse(rc,
	                 ctl_audit(c, engine_event_name(type), saga_id, filter, -1, note, outcome));
}

static int
operate_single(struct ctl *c, enum engine_event_type type, const char *note)
{
	char id[SAGA_ID_LEN + 1];
	struct ctl_json j;
	int rc;

	if (c->args.n_pos != 1 || !normalise_id(c->args.pos[0], id))
		return ctl_fail(c, CTL_USAGE, "name a saga id (UUID)%s",
		                type != EV_RESOLVE ? ", or --all with filters" : "");
	rc = ctl_open_db(c);
	if (rc == CTL_OK)
		rc = ctl_open_engine(c);
	if (rc != CTL_OK)
		return rc;
	if (!c->json)
		return operate_one(c, NULL, id, type, note, NULL);
	ctl_json_init(&j, stdout);
	ctl_json_begin_array(&j, NULL);
	rc = operate_one(c, &j, id, type, note, NULL);
	ctl_json_end(&j);
	return rc;
}

static int
operate_bulk(struct ctl *c, enum engine_event_type type, const char *note)
{
	/*
	 * The states the command applies to (the rest would only be refused).
	 * A retry re-dispatches the step a running saga waits on, so running and
	 * compensating sagas are only taken when asked for by --state or --stuck:
	 * by default a bulk retry is for failed sagas.
	 */
	const char *states = type == EV_ABORT ? "{running}"
	                     : c->args.opt[OPT_STATE] != NULL || ctl_args_has(&c->args, OPT_STUCK)
	                             ? "{running,compensating,failed}"
	                             : "{failed}";
	const char *verb = type == EV_ABORT ? "aborted" : "retried";
	struct saga_filter f;
	struct store_rows *rows = NULL;
	struct ctl_json j;
	char filter[512], action[32], why[160], summary[160];
	int n, applied = 0, refused = 0, rc;

	snprintf(action, sizeof(action), "%s.bulk", engine_event_name(type));
	if (c->args.n_pos > 0)
		return ctl_fail(c, CTL_USAGE, "--all takes filters, not saga ids");
	rc = parse_filter(c, 0, states, &f);
	if (rc == CTL_OK)
		rc = ctl_open_db(c);
	if (rc == CTL_OK)
		rc = ctl_query(c, &rows, saga_list_sql, 6, f.params);
	if (rc != CTL_OK)
		goto cleanup;
	ctl_filter_text(c, FILTER_OPTS, filter, sizeof(filter));
	if (filter[0] == '\0')
		snprintf(filter, sizeof(filter), "--all");
	n = store_rows_count(rows);
	if (ctl_args_has(&c->args, OPT_DRY_RUN)) {
		if (c->json) {
			ctl_json_init(&j, stdout);
			ctl_json_begin_object(&j, NULL);
			ctl_json_bool(&j, "dry_run", true);
			ctl_json_string(&j, "action", engine_event_name(type));
			ctl_json_int(&j, "count", n);
			ctl_rows_json_array(&j, "sagas", rows, saga_json_cols,
			                    N_COLS(saga_json_cols));
			ctl_json_end(&j);
		} else {
			ctl_rows_table(stdout, rows, saga_list_cols, N_COLS(saga_list_cols));
			printf("dry run: %d saga(s) would be %s; nothing changed\n", n, verb);
		}
		rc = ctl_worse(CTL_CONFIRM, ctl_audit(c, action, NULL, filter, n, note, "dry_run"));
		goto cleanup;
	}
	if (n == 0) {
		if (c->json)
			printf("{\"action\": \"%s\", \"count\": 0, \"results\": []}\n",
			       engine_event_name(type));
		else
			printf("no saga matches (%s)\n", filter);
		rc = ctl_audit(c, action, NULL, filter, 0, note, "nothing matched");
		goto cleanup;
	}
	rc = ctl_confirm(c, n, "saga(s)", why, sizeof(why));
	if (rc != CTL_OK) {
		if (!c->json)
			ctl_rows_table(stdout, rows, saga_list_cols, N_COLS(saga_list_cols));
		rc = ctl_worse(rc, ctl_audit(c, action, NULL, filter, n, note, why));
		goto cleanup;
	}
	rc = ctl_open_engine(c);
	if (rc != CTL_OK)
		goto cleanup;
	if (c->json) {
		ctl_json_init(&j, stdout);
		ctl_json_begin_object(&j, NULL);
		ctl_json_string(&j, "action", engine_event_name(type));
		ctl_json_int(&j, "count", n);
		ctl_json_begin_array(&j, "results");
	}
	for (int r = 0; r < n; r++) {
		int one = operate_one(c, c->json ? &j : NULL, store_rows_text(rows, r, "id"), type,
		                      note, filter);

		if (one == CTL_OK)
			applied++;
		else if (one == CTL_FAILED)
			refused++;
		else
			rc = ctl_worse(rc, one);
		if (one == CTL_DATABASE) {
			fprintf(stderr,
			        "sagactl %s: stopped at the first database error; %d saga(s)"
			        " not attempted\n",
			        c->command, n - r - 1);
			break;
		}
	}
	snprintf(summary, sizeof(summary), "applied %d, refused %d", applied, refused);
	if (c->json) {
		ctl_json_end(&j);
		ctl_json_int(&j, "applied", applied);
		ctl_json_int(&j, "refused", refused);
		ctl_json_end(&j);
	} else {
		printf("%s: %s of %d\n", engine_event_name(type), summary, n);
	}
	rc = ctl_worse(rc, refused > 0 ? CTL_FAILED : CTL_OK);
	rc = ctl_worse(rc, ctl_audit(c, action, NULL, filter, n, note, summary));
cleanup:
	store_rows_free(rows);
	return rc;
}

int
ctl_sagas_operator(const struct config *cfg, enum engine_event_type type, int argc, char **argv)
{
	struct ctl c;
	uint32_t allowed = CTL_OPT(OPT_NOTE);
	const char *note;
	int rc;

	if (type != EV_RESOLVE)
		allowed |= FILTER_OPTS | CTL_OPT(OPT_ALL) | CTL_OPT(OPT_DRY_RUN) |
		           CTL_OPT(OPT_YES) | CTL_OPT(OPT_CONFIRM);
	rc = ctl_begin(&c, cfg, engine_event_name(type), allowed, argc, argv);
	if (rc != CTL_OK)
		return rc;
	note = c.args.opt[OPT_NOTE];
	if (type != EV_RETRY && (note == NULL || note[0] == '\0')) {
		rc = ctl_fail(&c, CTL_USAGE,
		              "--note TEXT is required (it goes into the audit trail)");
		goto cleanup;
	}
	if (ctl_args_has(&c.args, OPT_ALL)) {
		rc = operate_bulk(&c, type, note);
	} else if ((c.args.opt[OPT_STATE] || c.args.opt[OPT_DEFINITION] ||
	            c.args.opt[OPT_OLDER_THAN] || c.args.opt[OPT_STUCK] || c.args.opt[OPT_LIMIT] ||
	            c.args.opt[OPT_DRY_RUN] || c.args.opt[OPT_YES] || c.args.opt[OPT_CONFIRM])) {
		rc = ctl_fail(&c, CTL_USAGE, "filters, --dry-run and confirmations go with --all");
	} else {
		rc = operate_single(&c, type, note);
	}
cleanup:
	ctl_end(&c);
	return rc;
}

/* ---- define / start ---- */

static enum status
read_whole_file(const char *path, char **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0;

	if (f == NULL) {
		snprintf(err, errlen, "cannot open");
		return STATUS_IO;
	}
	for (;;) {
		size_t n;

		if (cap - len < 4096) {
			char *grown = realloc(buf, cap + 65536);

			if (grown == NULL) {
				free(buf);
				fclose(f);
				snprintf(err, errlen, "out of memory");
				return STATUS_NOMEM;
			}
			buf = grown;
			cap += 65536;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	buf[len] = '\0';
	*out = buf;
	return STATUS_OK;
}

int
ctl_sagas_define(const struct config *cfg, int argc, char **argv)
{
	struct ctl c;
	struct ctl_json j;
	char err[1024];
	int rc;

	rc = ctl_begin(&c, cfg, "define", 0, argc, argv);
	if (rc != CTL_OK)
		return rc;
	if (c.args.n_pos < 1) {
		rc = ctl_fail(&c, CTL_USAGE, "name at least one YAML file");
		goto cleanup;
	}
	rc = ctl_open_db(&c);
	if (rc != CTL_OK)
		goto cleanup;
	if (c.json) {
		ctl_json_init(&j, stdout);
		ctl_json_begin_array(&j, NULL);
	}
	for (int i = 0; i < c.args.n_pos; i++) {
		const char *path = c.args.pos[i];
		struct saga_def def;
		char *text = NULL;
		char field[128] = "";
		char target[128], outcome[1200];
		uint32_t version = 0;
		int created = 0;
		enum status st = read_whole_file(path, &text, err, sizeof(err));

		memset(&def, 0, sizeof(def));
		if (st == STATUS_OK)
			st = definition_parse_yaml(&def, text, strlen(text), err, sizeof(err));
		if (st == STATUS_OK)
			st = defcache_register(c.db, &def, text, &version, &created, field,
			                       sizeof(field), err, sizeof(err));
		free(text);
		if (st != STATUS_OK) {
			fprintf(stderr, "sagactl define: %s: %s%s%s\n", path, field,
			        field[0] != '\0' ? ": " : "", err);
			rc = ctl_worse(rc, st == STATUS_INVALID || st == STATUS_IO ? CTL_USAGE
			                                                           : CTL_DATABASE);
			snprintf(outcome, sizeof(outcome), "refused: %s%s%s", field,
			         field[0] != '\0' ? ": " : "", err);
			snprintf(target, sizeof(target), "%s",
			         def.name[0] != '\0' ? def.name : "?");
		} else {
			snprintf(outcome, sizeof(outcome), "%s",
			         created ? "registered" : "unchanged");
			snprintf(target, sizeof(target), "%s v%u", def.name, version);
			if (!c.json)
				printf("%s v%u %s (%s)\n", def.name, version, outcome, path);
		}
		if (c.json) {
			ctl_json_begin_object(&j, NULL);
			ctl_json_string(&j, "file", path);
			ctl_json_string(&j, "name", def.name);
			if (st == STATUS_OK)
				ctl_json_int(&j, "version", version);
			else
				ctl_json_null(&j, "version");
			ctl_json_string(&j, "outcome", st == STATUS_OK ? outcome : "refused");
			ctl_json_string(&j, "error", st == STATUS_OK ? NULL : err);
			ctl_json_end(&j);
		}
		rc = ctl_worse(rc, ctl_audit(&c, "define", target, path, -1, NULL, outcome));
	}
	if (c.json)
		ctl_json_end(&j);
cleanup:
	ctl_end(&c);
	return rc;
}

int
ctl_sagas_start(const struct config *cfg, int argc, char **argv)
{
	struct ctl c;
	struct bus_msg *reply = NULL;
	struct bytes req = {0};
	struct start_answer a;
	char subject[256], err[1024], outcome[400];
	const char *input, *version, *name;
	int64_t v = 0;
	int rc;

	rc = ctl_begin(&c, cfg, "start",
	               CTL_OPT(OPT_INPUT) | CTL_OPT(OPT_VERSION) | CTL_OPT(OPT_IDEMPOTENCY_KEY) |
	                       CTL_OPT(OPT_CORRELATION_ID) | CTL_OPT(OPT_NOTE),
	               argc, argv);
	if (rc != CTL_OK)
		return rc;
	input = c.args.opt[OPT_INPUT] != NULL ? c.args.opt[OPT_INPUT] : "{}";
	version = c.args.opt[OPT_VERSION];
	if (c.args.n_pos != 1 || !saga_valid_name(c.args.pos[0])) {
		rc = ctl_fail(&c, CTL_USAGE, "name a saga ([A-Za-z0-9_-])");
		goto cleanup;
	}
	name = c.args.pos[0];
	if (version != NULL &&
	    ctl_args_int(&c.args, OPT_VERSION, 1, UINT32_MAX, &v, err, sizeof(err)) != STATUS_OK) {
		rc = ctl_fail(&c, CTL_USAGE, "%s", err);
		goto cleanup;
	}
	rc = ctl_open_db(&c); /* for the audit row, before anything starts */
	if (rc == CTL_OK)
		rc = ctl_open_bus(&c);
	if (rc != CTL_OK)
		goto cleanup;
	if (codec_encode_start_request(name, (uint32_t)v,
	                               (struct bytes){(uint8_t *)input, strlen(input)},
	                               c.args.opt[OPT_IDEMPOTENCY_KEY],
	                               c.args.opt[OPT_CORRELATION_ID], &req) != STATUS_OK) {
		rc = ctl_fail(&c, CTL_FAILED, "out of memory");
		goto cleanup;
	}
	snprintf(subject, sizeof(subject), "%s.start.%s", cfg->subject_prefix, name);
	{
		struct bus_header h[1] = {{HDR_CONTENT_TYPE, CT_START_REQUEST}};

		if (bus_request(c.bus, subject, h, 1, req.data, req.len, 5000, &reply, err,
		                sizeof(err)) != STATUS_OK) {
			rc = ctl_fail(&c, CTL_NATS, "%s (is sagad running?)", err);
			rc = ctl_worse(rc, ctl_audit(&c, "start", name, NULL, -1,
			                             c.args.opt[OPT_NOTE], "failed: no answer"));
			goto cleanup;
		}
	}
	if (codec_decode_start_answer(bus_msg_data(reply), bus_msg_len(reply), &a, err,
	                              sizeof(err)) != STATUS_OK) {
		rc = ctl_fail(&c, CTL_FAILED, "%s", err);
		goto cleanup;
	}
	if (a.status == START_REJECTED) {
		snprintf(outcome, sizeof(outcome), "rejected: %s", a.reason);
		fprintf(stderr, "rejected: %s\n", a.reason);
		rc = CTL_FAILED;
	} else {
		snprintf(outcome, sizeof(outcome), "%s: %s v%u",
		         a.status == START_ACCEPTED ? "accepted" : "duplicate", a.saga_name,
		         a.version);
	}
	if (c.json) {
		struct ctl_json j;

		ctl_json_init(&j, stdout);
		ctl_json_begin_object(&j, NULL);
		ctl_json_string(&j, "status",
		                a.status == START_ACCEPTED    ? "accepted"
		                : a.status == START_DUPLICATE ? "duplicate"
		                                              : "rejected");
		ctl_json_string(&j, "saga_id", a.saga_id[0] != '\0' ? a.saga_id : NULL);
		ctl_json_string(&j, "correlation_id",
		                a.correlation_id[0] != '\0' ? a.correlation_id : NULL);
		ctl_json_string(&j, "saga", a.saga_name[0] != '\0' ? a.saga_name : name);
		ctl_json_int(&j, "version", a.version);
		ctl_json_string(&j, "reason", a.status == START_REJECTED ? a.reason : NULL);
		ctl_json_end(&j);
	} else if (a.status != START_REJECTED) {
		printf("%s saga_id=%s correlation_id=%s saga=%s version=%u\n",
		       a.status == START_ACCEPTED ? "accepted" : "duplicate", a.saga_id,
		       a.correlation_id, a.saga_name, a.version);
	}
	rc = ctl_worse(rc, ctl_audit(&c, "start", a.saga_id[0] != '\0' ? a.saga_id : name, NULL, -1,
	                             c.args.opt[OPT_NOTE], outcome));
cleanup:
	bus_msg_free(reply);
	free(req.data);
	ctl_end(&c);
	return rc;
}

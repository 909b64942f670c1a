/* sagactl dead-letter commands: list, show, diagnose, discard, replay (rate limited, with canary). */
#include "ctl_dlq.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl_sagas.h"
#include "ctl_session.h"
#include "saga.h"

#define N_COLS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A letter's group: its saga definition (none for unknown sagas), step and error class. */
#define FP_SQL "sagad_dead_letter_fingerprint(i.definition_name, d.step, d.error_class)"

/* Letters by status ($1 text[], NULL = any), class, fingerprint and id, oldest first. */
static const char letters_sql[] =
        "SELECT d.id, d.status, d.error_class, i.definition_name AS definition, d.step,"
        " d.saga_id::text AS saga_id, d.correlation_id, d.source_subject,"
        " " CTL_TS("d.created_at") " AS created_at, d.reason, " FP_SQL " AS fingerprint,"
                                   " d.replay_of, d.replay_outcome, d.note,"
                                   " CASE WHEN d.source_subject = 'saga'"
                                   "  THEN 'retry saga ' || coalesce(d.saga_id::text, '?')"
                                   "  ELSE 'publish to ' || d.source_subject END AS replay_action"
                                   " FROM saga_dead_letter d LEFT JOIN saga_instance i ON i.id = "
                                   "d.saga_id"
                                   " WHERE ($1::text[] IS NULL OR d.status = ANY($1::text[]))"
                                   " AND ($2::text IS NULL OR d.error_class = $2)"
                                   " AND ($3::text IS NULL OR " FP_SQL " = $3)"
                                   " AND ($4::bigint IS NULL OR d.id = $4::bigint)"
                                   " ORDER BY d.id LIMIT $5::int";

static const struct ctl_column letter_cols[] = {
        {"id", "ID", CTL_INT, 0},
        {"status", "STATUS", CTL_TEXT, 0},
        {"error_class", "CLASS", CTL_TEXT, 0},
        {"definition", "DEFINITION", CTL_TEXT, 0},
        {"step", "STEP", CTL_TEXT, 0},
        {"saga_id", "SAGA", CTL_TEXT, 0},
        {"source_subject", "SUBJECT", CTL_TEXT, 40},
        {"created_at", "CREATED", CTL_TEXT, 0},
        {"fingerprint", "FINGERPRINT", CTL_TEXT, 0},
        {"reason", "REASON", CTL_TEXT, 48},
};

static const struct ctl_column letter_json_cols[] = {
        {"id", NULL, CTL_INT, 0},
        {"status", NULL, CTL_TEXT, 0},
        {"error_class", NULL, CTL_TEXT, 0},
        {"definition", NULL, CTL_TEXT, 0},
        {"step", NULL, CTL_TEXT, 0},
        {"saga_id", NULL, CTL_TEXT, 0},
        {"correlation_id", NULL, CTL_TEXT, 0},
        {"source_subject", NULL, CTL_TEXT, 0},
        {"created_at", NULL, CTL_TEXT, 0},
        {"reason", NULL, CTL_TEXT, 0},
        {"fingerprint", NULL, CTL_TEXT, 0},
        {"replay_of", NULL, CTL_INT, 0},
        {"replay_outcome", NULL, CTL_TEXT, 0},
        {"note", NULL, CTL_TEXT, 0},
};

/* What a replay would do, for dry runs. */
static const struct ctl_column plan_cols[] = {
        {"id", "ID", CTL_INT, 0},
        {"status", "STATUS", CTL_TEXT, 0},
        {"error_class", "CLASS", CTL_TEXT, 0},
        {"replay_action", "WOULD", CTL_TEXT, 0},
        {"reason", "REASON", CTL_TEXT, 48},
};

static const struct ctl_column plan_json_cols[] = {
        {"id", NULL, CTL_INT, 0},
        {"status", NULL, CTL_TEXT, 0},
        {"error_class", NULL, CTL_TEXT, 0},
        {"fingerprint", NULL, CTL_TEXT, 0},
        {"replay_action", NULL, CTL_TEXT, 0},
        {"reason", NULL, CTL_TEXT, 0},
};

static const char groups_sql[] =
        "SELECT g.fingerprint, g.definition, g.step, g.error_class, count(*) AS count,"
        " count(*) FILTER (WHERE g.status = 'open') AS open,"
        " count(*) FILTER (WHERE g.status = 'diagnosed') AS diagnosed,"
        " " CTL_TS(
                "min(g.created_at)") " AS first_seen,"
                                     " " CTL_TS(
                                             "max(g.created_at)") " AS last_seen,"
                                                                  " max(g.id) AS example_id, "
                                                                  "(array_agg(g.reason ORDER BY "
                                                                  "g.id DESC))[1] AS reason"
                                                                  " FROM (SELECT d.id, d.status, "
                                                                  "d.error_class, d.step, "
                                                                  "d.created_at, d.reason,"
                                                                  "  i.definition_name AS "
                                                                  "definition, " FP_SQL
                                                                  " AS fingerprint"
                                                                  "  FROM saga_dead_letter d LEFT "
                                                                  "JOIN saga_instance i ON i.id = "
                                                                  "d.saga_id"
                                                                  "  WHERE ($1::text[] IS NULL OR "
                                                                  "d.status = ANY($1::text[]))"
                                                                  "  AND ($2::text IS NULL OR "
                                                                  "d.error_class = $2)) g"
                                                                  " GROUP BY g.fingerprint, "
                                                                  "g.definition, g.step, "
                                                                  "g.error_class"
                                                                  " ORDER BY max(g.created_at) "
                                                                  "DESC, g.fingerprint";

static const struct ctl_column group_cols[] = {
        {"fingerprint", "FINGERPRINT", CTL_TEXT, 0},
        {"definition", "DEFINITION", CTL_TEXT, 0},
        {"step", "STEP", CTL_TEXT, 0},
        {"error_class", "CLASS", CTL_TEXT, 0},
        {"count", "COUNT", CTL_INT, 0},
        {"open", "OPEN", CTL_INT, 0},
        {"diagnosed", "DIAGNOSED", CTL_INT, 0},
        {"first_seen", "FIRST_SEEN", CTL_TEXT, 0},
        {"last_seen", "LAST_SEEN", CTL_TEXT, 0},
        {"example_id", "EXAMPLE", CTL_INT, 0},
        {"reason", "REASON", CTL_TEXT, 40},
};

static const struct ctl_column group_json_cols[] = {
        {"fingerprint", NULL, CTL_TEXT, 0}, {"definition", NULL, CTL_TEXT, 0},
        {"step", NULL, CTL_TEXT, 0},        {"error_class", NULL, CTL_TEXT, 0},
        {"count", NULL, CTL_INT, 0},        {"open", NULL, CTL_INT, 0},
        {"diagnosed", NULL, CTL_INT, 0},    {"first_seen", NULL, CTL_TEXT, 0},
        {"last_seen", NULL, CTL_TEXT, 0},   {"example_id", NULL, CTL_INT, 0},
        {"reason", NULL, CTL_TEXT, 0},
};

static const char show_sql[] =
        "SELECT d.id, d.status, d.error_class, d.reason, " FP_SQL " AS fingerprint,"
        " i.definition_name AS definition, i.definition_version AS version,"
        " i.state AS saga_state, d.saga_id::text AS saga_id, d.correlation_id, d.step,"
        " d.source_subject, d.source_key, d.headers::text AS headers,"
        " coalesce(length(d.payload), 0) AS payload_bytes,"
        " encode(d.payload, 'hex') AS payload_hex, encode(d.payload, 'hex') AS payload_text,"
        " d.note, " CTL_TS(
                "d.created_at") " AS created_at,"
                                " " CTL_TS(
                                        "d.updated_at") " AS updated_at,"
                                                        " " CTL_TS(
                                                                "d.diagnosed_at") " AS "
                                                                                  "diagnosed_at, "
                                                                                  "d.diagnosed_by,"
                                                                                  " " CTL_TS(
                                                                                          "d."
                                                                                          "discarde"
                                                                                          "d_at") " AS discarded_at, d.discarded_by,"
                                                                                                  " " CTL_TS(
                                                                                                          "d.replayed_at") " AS replayed_at, d.replayed_by, d.replay_outcome,"
                                                                                                                           " d.replay_count, d.replay_of,"
                                                                                                                           " (SELECT string_agg(r.id::text, ', ' ORDER BY r.id) FROM saga_dead_letter r"
                                                                                                                           "  WHERE r.replay_of = d.id) AS came_back_as"
                                                                                                                           " FROM saga_dead_letter d LEFT JOIN saga_instance i ON i.id = d.saga_id"
                                                                                                                           " WHERE d.id = $1::bigint";

static const struct ctl_column show_cols[] = {
        {"id", "letter", CTL_INT, 0},
        {"status", "status", CTL_TEXT, 0},
        {"error_class", "class", CTL_TEXT, 0},
        {"reason", "reason", CTL_TEXT, 0},
        {"fingerprint", "fingerprint", CTL_TEXT, 0},
        {"definition", "definition", CTL_TEXT, 0},
        {"version", "version", CTL_INT, 0},
        {"saga_id", "saga", CTL_TEXT, 0},
        {"saga_state", "saga state", CTL_TEXT, 0},
        {"correlation_id", "correlation id", CTL_TEXT, 0},
        {"step", "step", CTL_TEXT, 0},
        {"source_subject", "subject", CTL_TEXT, 0},
        {"source_key", "source", CTL_TEXT, 0},
        {"created_at", "created", CTL_TEXT, 0},
        {"updated_at", "updated", CTL_TEXT, 0},
        {"note", "note", CTL_TEXT, 0},
        {"diagnosed_at", "diagnosed", CTL_TEXT, 0},
        {"diagnosed_by", "diagnosed by", CTL_TEXT, 0},
        {"discarded_at", "discarded", CTL_TEXT, 0},
        {"discarded_by", "discarded by", CTL_TEXT, 0},
        {"replayed_at", "replayed", CTL_TEXT, 0},
        {"replayed_by", "replayed by", CTL_TEXT, 0},
        {"replay_outcome", "replay outcome", CTL_TEXT, 0},
        {"replay_count", "replays", CTL_INT, 0},
        {"replay_of", "replay of", CTL_INT, 0},
        {"came_back_as", "came back as", CTL_TEXT, 0},
        {"headers", "headers", CTL_JSONB, 0},
        {"payload_bytes", "payload bytes", CTL_INT, 0},
        {"payload_hex", "payload (hex)", CTL_TEXT, 0},
        {"payload_text", "payload (text)", CTL_BYTES, 0},
};

static const struct ctl_column show_json_cols[] = {
        {"id", NULL, CTL_INT, 0},
        {"status", NULL, CTL_TEXT, 0},
        {"error_class", NULL, CTL_TEXT, 0},
        {"reason", NULL, CTL_TEXT, 0},
        {"fingerprint", NULL, CTL_TEXT, 0},
        {"definition", NULL, CTL_TEXT, 0},
        {"version", NULL, CTL_INT, 0},
        {"saga_id", NULL, CTL_TEXT, 0},
        {"saga_state", NULL, CTL_TEXT, 0},
        {"correlation_id", NULL, CTL_TEXT, 0},
        {"step", NULL, CTL_TEXT, 0},
        {"source_subject", NULL, CTL_TEXT, 0},
        {"source_key", NULL, CTL_TEXT, 0},
        {"created_at", NULL, CTL_TEXT, 0},
        {"updated_at", NULL, CTL_TEXT, 0},
        {"note", NULL, CTL_TEXT, 0},
        {"diagnosed_at", NULL, CTL_TEXT, 0},
        {"diagnosed_by", NULL, CTL_TEXT, 0},
        {"discarded_at", NULL, CTL_TEXT, 0},
        {"discarded_by", NULL, CTL_TEXT, 0},
        {"replayed_at", NULL, CTL_TEXT, 0},
        {"replayed_by", NULL, CTL_TEXT, 0},
        {"replay_outcome", NULL, CTL_TEXT, 0},
        {"replay_count", NULL, CTL_INT, 0},
        {"replay_of", NULL, CTL_INT, 0},
        {"came_back_as", NULL, CTL_TEXT, 0},
        {"headers", NULL, CTL_JSONB, 0},
        {"payload_bytes", NULL, CTL_INT, 0},
        {"payload_hex", NULL, CTL_TEXT, 0},
        {"payload_text", NULL, CTL_BYTES, 0},
};

/* ---- small parsers ---- */

/* A letter id: 1 to 18 digits, not 0. */
static int
valid_letter_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 18 || strspn(s, "0123456789") != n)
		return 0;
	return strtoll(s, NULL, 10) > 0;
}

/* A fingerprint as sagactl dlq list prints it: lower-case hex. */
static int
valid_fingerprint(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= 32 && strspn(s, "0123456789abcdef") == n;
}

/* --status a,b as a text[] literal of known words (NULL for "any"). */
static int
parse_statuses(struct ctl *c, const char *text, char *out, size_t outlen, const char **param)
{
	static const char *const known[] = {"open", "diagnosed", "replayed", "discarded"};
	size_t pos = 0;
	const char *p = text;

	if (strcmp(text, "any") == 0 || strcmp(text, "all") == 0) {
		*param = NULL;
		return CTL_OK;
	}
	pos += (size_t)snprintf(out, outlen, "{");
	while (*p != '\0') {
		size_t len = strcspn(p, ",");
		int found = 0;

		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
			if (strlen(known[k]) == len && strncmp(p, known[k], len) == 0) {
				pos += (size_t)snprintf(out + pos, outlen - pos, "%s%s",
				                        pos > 1 ? "," : "", known[k]);
				found = 1;
			}
		}
		if (!found || pos >= outlen)
			return ctl_fail(c, CTL_USAGE,
			                "--status: open, diagnosed, replayed, discarded (comma "
			                "separated) or any");
		p += len;
		if (*p == ',')
			p++;
	}
	snprintf(out + pos, outlen - pos, "}");
	*param = out;
	return CTL_OK;
}

/* --class: an error class as sagad writes them. */
static int
parse_class(struct ctl *c, const char **param)
{
	const char *cls = c->args.opt[OPT_CLASS];

	*param = NULL;
	if (cls == NULL)
		return CTL_OK;
	if (!saga_valid_name(cls))
		return ctl_fail(c, CTL_USAGE, "--class: an error class such as undecodable");
	*param = cls;
	return CTL_OK;
}

/* "{1,2,3}" of the ids of rows (a bigint[] literal); malloc'd. */
static char *
id_array(const struct store_rows *rows, int from, int to)
{
	size_t cap = 3 + (size_t)(to - from) * 20;
	char *out = malloc(cap);
	size_t pos = 0;

	if (out == NULL)
		return NULL;
	out[pos++] = '{';
	for (int r = from; r < to; r++)
		pos += (size_t)snprintf(out + pos, cap - pos, "%s%s", r > from ? "," : "",
		                        store_rows_text(rows, r, "id"));
	snprintf(out + pos, cap - pos, "}");
	return out;
}

/* ---- list / show ---- */

static int
dlq_list(struct ctl *c)
{
	struct store_rows *rows = NULL;
	char statuses[128];
	const char *params[5] = {NULL, NULL, NULL, NULL, NULL};
	int all = ctl_args_has(&c->args, OPT_ALL);
	int rc;

	if (c->args.n_pos > 0)
		return ctl_fail(c, CTL_USAGE, "unexpected argument \"%s\"", c->args.pos[0]);
	rc = parse_statuses(
	        c, c->args.opt[OPT_STATUS] != NULL ? c->args.opt[OPT_STATUS] : "open,diagnosed",
	        statuses, sizeof(statuses), &params[0]);
	if (rc == CTL_OK)
		rc = parse_class(c, &params[1]);
	if (rc == CTL_OK)
		rc = ctl_open_db(c);
	if (rc != CTL_OK)
		return rc;
	rc = all ? ctl_query(c, &rows, letters_sql, 5, params)
	         : ctl_query(c, &rows, groups_sql, 2, params);
	if (rc != CTL_OK)
		return rc;
	if (c->json) {
		struct ctl_json j;

		ctl_json_init(&j, stdout);
		ctl_json_begin_object(&j, NULL);
		ctl_json_int(&j, "count", store_rows_count(rows));
		if (all)
			ctl_rows_json_array(&j, "letters", rows, letter_json_cols,
			                    N_COLS(letter_json_cols));
		else
			ctl_rows_json_array(&j, "groups", rows, group_json_cols,
			                    N_COLS(group_json_cols));
		ctl_json_end(&j);
	} else if (all) {
		ctl_rows_table(stdout, rows, letter_cols, N_COLS(letter_cols));
	} else {
		ctl_rows_table(stdout, rows, group_cols, N_COLS(group_cols));
	}
	store_rows_free(rows);
	return CTL_OK;
}

static int
dlq_show(struct ctl *c)
{
	struct store_rows *rows = NULL;
	const char *params[1];
	int rc;

	if (c->args.n_pos != 1 || !valid_letter_id(c->args.pos[0]))
		return ctl_fail(c, CTL_USAGE, "name one dead-letter id (sagactl dlq list --all)");
	params[0] = c->args.pos[0];
	rc = ctl_open_db(c);
	if (rc == CTL_OK)
		rc = ctl_query(c, &rows, show_sql, 1, params);
	if (rc != CTL_OK)
		return rc;
	if (store_rows_count(rows) == 0) {
		rc = ctl_fail(c, CTL_FAILED, "no dead letter %s", params[0]);
	} else if (c->json) {
		struct ctl_json j;

		ctl_json_init(&j, stdout);
		ctl_rows_json_object(&j, NULL, rows, 0, show_json_cols, N_COLS(show_json_cols));
	} else {
		ctl_rows_record(stdout, rows, 0, show_cols, N_COLS(show_cols));
	}
	store_rows_free(rows);
	return rc;
}

/* ---- diagnose / discard ---- */

/* Why letter id cannot be changed any more (it exists but is past open/diagnosed), or not found. */
static int
explain_closed(struct ctl *c, const char *id, char *why, size_t whylen)
{
	struct store_rows *rows = NULL;
	const char *params[1] = {id};
	int rc = ctl_query(c, &rows,
	                   "SELECT status, " CTL_TS(
	                           "replayed_at") " AS replayed_at, replayed_by,"
	                                          " replay_outcome, " CTL_TS(
	                                                  "discarded_at") " AS discarded_at,"
	                                                                  " discarded_by FROM "
	                                                                  "saga_dead_letter WHERE "
	                                                                  "id = $1::bigint",
	                   1, params);

	if (rc != CTL_OK)
		return rc;
	if (store_rows_count(rows) == 0) {
		snprintf(why, whylen, "no dead letter %s", id);
	} else if (strcmp(store_rows_text(rows, 0, "status"), "replayed") == 0) {
		snprintf(why, whylen, "already replayed at %s by %s (%s)",
		         store_rows_text(rows, 0, "replayed_at"),
		         store_rows_text(rows, 0, "replayed_by"),
		         store_rows_text(rows, 0, "replay_outcome"));
	} else if (strcmp(store_rows_text(rows, 0, "status"), "discarded") == 0) {
		snprintf(why, whylen, "already discarded at %s by %s",
		         store_rows_text(rows, 0, "discarded_at"),
		         store_rows_text(rows, 0, "discarded_by"));
	} else {
		snprintf(why, whylen, "letter %s is %s", id, store_rows_text(rows, 0, "status"));
	}
	store_rows_free(rows);
	return CTL_OK;
}

static int
dlq_diagnose(struct ctl *c)
{
	struct store_rows *rows = NULL;
	const char *note = c->args.opt[OPT_NOTE];
	const char *params[3];
	char why[600], outcome[640];
	int rc;

	if (c->args.n_pos != 1 || !valid_letter_id(c->args.pos[0]))
		return ctl_fail(c, CTL_USAGE, "name one dead-letter id");
	if (note == NULL || note[0] == '\0')
		return ctl_fail(c, CTL_USAGE, "--note TEXT is required: what is wrong with it");
	params[0] = c->args.pos[0];
	params[1] = note;
	params[2] = c->actor;
	rc = ctl_open_db(c);
	if (rc == CTL_OK)
		rc = ctl_query(c, &rows,
		               "UPDATE saga_dead_letter SET status = 'diagnosed',"
		               " note = CASE WHEN note IS NULL THEN $2 ELSE note || '; ' || $2 END,"
		               " diagnosed_at = now(), diagnosed_by = $3, updated_at = now()"
		               " WHERE id = $1::bigint AND status IN ('open', 'diagnosed')"
		               " RETURNING id",
		               3, params);
	if (rc != CTL_OK)
		return rc;
	if (store_rows_count(rows) == 1) {
		snprintf(outcome, sizeof(outcome), "applied");
		if (c->json)
			printf("{\"id\": %s, \"outcome\": \"diagnosed\"}\n", params[0]);
		else
			printf("letter %s: diagnosed\n", params[0]);
	} else {
		rc = explain_closed(c, params[0], why, sizeof(why));
		snprintf(outcome, sizeof(outcome), "refused: %s", why);
		if (rc == CTL_OK)
			rc = ctl_fail(c, CTL_FAILED, "%s", outcome);
	}
	store_rows_free(rows);
	return ctl_worse(rc, ctl_audit(c, "dlq.diagnose", params[0], NULL, 1, note, outcome));
}

/* The letters a --group / --all / ID selects: open and diagnosed ones for sets, any for an id. */
static int
select_letters(struct ctl *c, struct store_rows **rows, char *target, size_t targetlen, int *is_set)
{
	const char *group = c->args.opt[OPT_GROUP];
	int all = ctl_args_has(&c->args, OPT_ALL);
	const char *params[5] = {"{open,diagnosed}", NULL, NULL, NULL, NULL};
	int rc;

	if ((group != NULL) + all + (c->args.n_pos > 0) != 1 || c->args.n_pos > 1)
		return ctl_fail(c, CTL_USAGE, "name one letter id, or --group FINGERPRINT%s",
		                c->args.opt[OPT_RATE] != NULL || strstr(c->command, "replay")
		                        ? ", or --all"
		                        : "");
	rc = parse_class(c, &params[1]);
	if (rc != CTL_OK)
		return rc;
	if (group != NULL) {
		if (!valid_fingerprint(group))
			return ctl_fail(c, CTL_USAGE,
			                "--group: a fingerprint as sagactl dlq list prints it");
		params[2] = group;
		snprintf(target, targetlen, "%s", group);
	} else if (c->args.n_pos == 1) {
		if (!valid_letter_id(c->args.pos[0]))
			return ctl_fail(c, CTL_USAGE, "\"%s\" is not a dead-letter id",
			                c->args.pos[0]);
		params[0] = NULL;
		params[3] = c->args.pos[0];
		snprintf(target, targetlen, "%s", c->args.pos[0]);
	} else {
		target[0] = '\0';
	}
	*is_set = c->args.n_pos == 0;
	rc = ctl_open_db(c);
	if (rc == CTL_OK)
		rc = ctl_query(c, rows, letters_sql, 5, params);
	return rc;
}

static int
dlq_discard(struct ctl *c)
{
	struct store_rows *rows = NULL, *done = NULL;
	const char *note = c->args.opt[OPT_NOTE];
	char target[64], filter[256], why[600], outcome[640];
	char *ids = NULL;
	int is_set = 0, n, rc;

	if (note == NULL || note[0] == '\0')
		return ctl_fail(c, CTL_USAGE, "--note TEXT is required: why it is thrown away");
	rc = select_letters(c, &rows, target, sizeof(target), &is_set);
	if (rc != CTL_OK)
		goto cleanup;
	ctl_filter_text(c, CTL_OPT(OPT_GROUP) | CTL_OPT(OPT_CLASS), filter, sizeof(filter));
	n = store_rows_count(rows);
	if (!is_set && n == 0) {
		rc = ctl_fail(c, CTL_FAILED, "no dead letter %s", target);
		rc = ctl_worse(rc, ctl_audit(c, "dlq.discard", target, NULL, 0, note, "not found"));
		goto cleanup;
	}
	if (ctl_args_has(&c->args, OPT_DRY_RUN)) {
		if (c->json) {
			struct ctl_json j;

			ctl_json_init(&j, stdout);
			ctl_json_begin_object(&j, NULL);
			ctl_json_bool(&j, "dry_run", true);
			ctl_json_int(&j, "count", n);
			ctl_rows_json_array(&j, "letters", rows, letter_json_cols,
			                    N_COLS(letter_json_cols));
			ctl_json_end(&j);
		} else {
			ctl_rows_table(stdout, rows, letter_cols, N_COLS(letter_cols));
			printf("dry run: %d letter(s) would be discarded; nothing changed\n", n);
		}
		rc = ctl_worse(CTL_CONFIRM,
		               ctl_audit(c, "dlq.discard", target, filter, n, note, "dry_run"));
		goto cleanup;
	}
	if (is_set && n == 0) {
		printf(c->json ? "{\"discarded\": 0}\n" : "no open letter matches\n");
		rc = ctl_audit(c, "dlq.discard", target, filter, 0, note, "nothing matched");
		goto cleanup;
	}
	if (is_set) {
		rc = ctl_confirm(c, n, "letter(s)", why, sizeof(why));
		if (rc != CTL_OK) {
			rc = ctl_worse(rc,
			               ctl_audit(c, "dlq.discard", target, filter, n, note, why));
			goto cleanup;
		}
	}
	ids = id_array(rows, 0, n);
	if (ids == NULL) {
		rc = ctl_fail(c, CTL_FAILED, "out of memory");
		goto cleanup;
	}
	{
		const char *params[3] = {ids, c->actor, note};

		rc = ctl_query(c, &done,
		               "UPDATE saga_dead_letter SET status = 'discarded',"
		               " note = CASE WHEN note IS NULL THEN $3 ELSE note || '; ' || $3 END,"
		               " discarded_at = now(), discarded_by = $2, updated_at = now()"
		               " WHERE id = ANY($1::bigint[]) AND status IN ('open', 'diagnosed')"
		               " RETURNING id",
		               3, params);
	}
	if (rc != CTL_OK)
		goto cleanup;
	if (!is_set && store_rows_count(done) == 0) {
		rc = explain_closed(c, target, why, sizeof(why));
		snprintf(outcome, sizeof(outcome), "refused: %s", why);
		if (rc == CTL_OK)
			rc = ctl_fail(c, CTL_FAILED, "%s", outcome);
	} else {
		snprintf(outcome, sizeof(outcome), "discarded %d of %d", store_rows_count(done), n);
		if (c->json)
			printf("{\"discarded\": %d, \"matched\": %d}\n", store_rows_count(done), n);
		else
			printf("%s letter(s)%s\n", outcome,
			       store_rows_count(done) < n ? " (the others changed meanwhile)" : "");
	}
	rc = ctl_worse(rc, ctl_audit(c, "dlq.discard", target, filter, n, note, outcome));
cleanup:
	free(ids);
	store_rows_free(rows);
	store_rows_free(done);
	return rc;
}

/* ---- replay ---- */

/* What became of one letter. */
enum replay_result {
	REPLAY_DONE = 0, /* published again, or its saga retried */
	REPLAY_REFUSED,  /* already replayed, discarded, saga not failed, bad subject */
	REPLAY_NATS,     /* the publish failed: the letter stays open */
	REPLAY_DB,       /* a query failed */
};

struct replay_outcome {
	enum replay_result result; /* what happened */
	char text[600];            /* for people and the audit trail */
};

static int64_t
monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0) {
		/* interrupted: sleep the rest */
	}
}

/* Record the outcome of a replay that did not happen (the letter keeps its status). */
static void
note_attempt(struct ctl *c, const char *id, const char *outcome)
{
	struct store_rows *rows = NULL;
	const char *params[2] = {id, outcome};

	if (ctl_query(c, &rows,
	              "UPDATE saga_dead_letter SET replay_outcome = $2, updated_at = now()"
	              " WHERE id = $1::bigint AND status IN ('open', 'diagnosed')",
	              2, params) == CTL_OK)
		store_rows_free(rows);
}

/* Headers to send again: the original ones except NATS's own, plus Saga-Replay-Of. */
#define REPLAY_MAX_HEADERS 32

static int
publish_letter(struct ctl *c, const char *id, const char *subject, const char *payload_hex,
               struct replay_outcome *out)
{
	struct store_rows *hdrs = NULL;
	struct bus_header headers[REPLAY_MAX_HEADERS + 1];
	const char *params[1] = {id};
	char msg_id[64], err[1024];
	uint8_t *payload = NULL;
	size_t len = 0, prefix_len = strlen(c->cfg->subject_prefix);
	int n = 0, failed = 0, rc;
	const char *rest;
	enum status st;

	/* Only back onto the streams sagad consumes, under this prefix. */
	rest = strncmp(subject, c->cfg->subject_prefix, prefix_len) == 0 &&
	                       subject[prefix_len] == '.'
	               ? subject + prefix_len + 1
	               : NULL;
	if (rest == NULL || (strncmp(rest, "reply.", 6) != 0 && strncmp(rest, "submit.", 7) != 0) ||
	    !saga_valid_subject(rest)) {
		out->result = REPLAY_REFUSED;
		snprintf(out->text, sizeof(out->text),
		         "refused: subject %s is not a %s.reply.* or %s.submit.* subject", subject,
		         c->cfg->subject_prefix, c->cfg->subject_prefix);
		return CTL_OK;
	}
	rc = ctl_query(c, &hdrs,
	               "SELECT h.key, h.value FROM saga_dead_letter d,"
	               " jsonb_each_text(d.headers) h WHERE d.id = $1::bigint"
	               " AND lower(h.key) NOT LIKE 'nats-%' AND h.key <> 'Saga-Replay-Of'"
	               " ORDER BY h.key",
	               1, params);
	if (rc != CTL_OK) {
		out->result = REPLAY_DB;
		snprintf(out->text, sizeof(out->text), "failed: reading its headers");
		return rc;
	}
	for (int r = 0; r < store_rows_count(hdrs) && n < REPLAY_MAX_HEADERS; r++) {
		const char *k = store_rows_get(hdrs, r, 0), *v = store_rows_get(hdrs, r, 1);
		int clean = k[0] != '\0';

		/* A header with a control character would corrupt the message framing. */
		for (const char *p = k; *p != '\0'; p++)
			clean &= (unsigned char)*p > 0x20 && *p != ':' && *p != 0x7f;
		for (const char *p = v; *p != '\0'; p++)
			clean &= (unsigned char)*p >= 0x20 && *p != 0x7f;
		if (clean) {
			headers[n].name = k;
			headers[n].value = v;
			n++;
		}
	}
	headers[n].name = "Saga-Replay-Of";
	headers[n].value = id;
	n++;
	if (ctl_hex_decode(&payload, &len, payload_hex) != STATUS_OK) {
		store_rows_free(hdrs);
		out->result = REPLAY_REFUSED;
		snprintf(out->text, sizeof(out->text), "refused: payload unreadable");
		return CTL_OK;
	}
	snprintf(msg_id, sizeof(msg_id), "replay:%s", id);
	st = bus_publish_async(c->bus, subject, msg_id, headers, n, payload, len, err, sizeof(err));
	if (st == STATUS_OK)
		st = bus_publish_wait(c->bus, 5000, &failed, err, sizeof(err));
	if (st != STATUS_OK || failed > 0) {
		out->result = REPLAY_NATS;
		snprintf(out->text, sizeof(out->text), "publish failed: %s", err);
	} else {
		out->result = REPLAY_DONE;
		snprintf(out->text, sizeof(out->text), "published to %s as %s", subject, msg_id);
	}
	free(payload);
	store_rows_free(hdrs);
	return CTL_OK;
}

static int
retry_letter_saga(struct ctl *c, const char *id, const char *saga_id, const char *note,
                  struct replay_outcome *out)
{
	struct ctl_applied a;
	char why[512];
	int rc = ctl_open_engine(c);

	if (rc != CTL_OK) {
		out->result = REPLAY_DB;
		snprintf(out->text, sizeof(out->text), "failed: no engine connection");
		return rc;
	}
	snprintf(why, sizeof(why), "replay of dead letter %s%s%s", id,
	         note != NULL && note[0] != '\0' ? ": " : "", note != NULL ? note : "");
	rc = ctl_sagas_apply(c, saga_id, EV_RETRY, why, &a);
	if (rc != CTL_OK) {
		out->result = REPLAY_DB;
		snprintf(out->text, sizeof(out->text), "failed: database error retrying saga %s",
		         saga_id);
	} else if (a.applied) {
		out->result = REPLAY_DONE;
		snprintf(out->text, sizeof(out->text), "retried saga %s: %s -> %s", saga_id, a.from,
		         a.to);
	} else {
		out->result = REPLAY_REFUSED;
		snprintf(out->text, sizeof(out->text), "refused: saga %s: %s", saga_id,
		         a.not_found ? "no such saga" : a.detail);
	}
	return rc;
}

/*
 * Replay one letter. The letter is claimed first (open/diagnosed -> replayed)
 * and its row stays locked until the message is acked by JetStream (or the
 * saga retried), so a concurrent replay of the same letter waits and then
 * finds it replayed: it is delivered once. A failure rolls the claim back.
 */
static int
replay_one(struct ctl *c, const char *id, const char *note, struct replay_outcome *out)
{
	struct store_rows *claim = NULL, *rows = NULL;
	const char *params[2] = {id, c->actor};
	char why[600];
	int rc;

	memset(out, 0, sizeof(*out));
	rc = ctl_query(c, &rows, "BEGIN", 0, NULL);
	store_rows_free(rows);
	rows = NULL;
	/*
	 * A saga letter: first the saga's operator lock (see ctl_sagas_lock), so
	 * that two letters of one saga, or a letter and `sagactl retry`, are
	 * re-driven one after the other and the second finds the saga no longer
	 * failed instead of re-arming it twice.
	 */
	if (rc == CTL_OK)
		rc = ctl_query(
		        c, &rows,
		        "SELECT pg_advisory_xact_lock(hashtext('sagactl.saga.' || saga_id::text))"
		        " FROM saga_dead_letter WHERE id = $1::bigint"
		        " AND source_subject = 'saga' AND saga_id IS NOT NULL",
		        1, params);
	store_rows_free(rows);
	rows = NULL;
	if (rc == CTL_OK)
		rc = ctl_query(
		        c, &claim,
		        "UPDATE saga_dead_letter d SET status = 'replayed', replayed_at = now(),"
		        " replayed_by = $2, replay_count = d.replay_count + 1,"
		        " replay_outcome = 'claimed', updated_at = now()"
		        " WHERE d.id = $1::bigint AND d.status IN ('open', 'diagnosed')"
		        " AND (d.source_subject <> 'saga' OR EXISTS (SELECT 1 FROM saga_instance i"
		        "  WHERE i.id = d.saga_id AND i.state = 'failed'))"
		        " RETURNING d.source_subject, coalesce(encode(d.payload, 'hex'), '') AS "
		        "payload,"
		        " d.saga_id::text AS saga_id",
		        2, params);
	if (rc != CTL_OK) {
		store_rollback(c->db);
		out->result = REPLAY_DB;
		snprintf(out->text, sizeof(out->text), "failed: database error");
		return rc;
	}
	if (store_rows_count(claim) == 0) {
		store_rollback(c->db);
		store_rows_free(claim);
		rc = ctl_query(c, &rows,
		               "SELECT d.status, d.source_subject, i.state AS saga_state"
		               " FROM saga_dead_letter d LEFT JOIN saga_instance i"
		               " ON i.id = d.saga_id WHERE d.id = $1::bigint",
		               1, params);
		if (rc != CTL_OK) {
			out->result = REPLAY_DB;
			return rc;
		}
		out->result = REPLAY_REFUSED;
		if (store_rows_count(rows) == 1 &&
		    strcmp(store_rows_text(rows, 0, "source_subject"), "saga") == 0 &&
		    (strcmp(store_rows_text(rows, 0, "status"), "open") == 0 ||
		     strcmp(store_rows_text(rows, 0, "status"), "diagnosed") == 0)) {
			const char *state = store_rows_text(rows, 0, "saga_state");

			snprintf(out->text, sizeof(out->text),
			         "refused: its saga is %s, not failed: nothing to re-drive",
			         state[0] != '\0' ? state : "gone");
			note_attempt(c, id, out->text);
		} else {
			rc = explain_closed(c, id, why, sizeof(why));
			snprintf(out->text, sizeof(out->text), "refused: %s", why);
		}
		store_rows_free(rows);
		return rc;
	}
	if (strcmp(store_rows_text(claim, 0, "source_subject"), "saga") == 0)
		rc = retry_letter_saga(c, id, store_rows_text(claim, 0, "saga_id"), note, out);
	else
		rc = publish_letter(c, id, store_rows_text(claim, 0, "source_subject"),
		                    store_rows_text(claim, 0, "payload"), out);
	if (out->result == REPLAY_DONE) {
		const char *p2[2] = {id, out->text};

		rc = ctl_query(c, &rows,
		               "UPDATE saga_dead_letter SET replay_outcome = $2"
		               " WHERE id = $1::bigint",
		               2, p2);
		store_rows_free(rows);
		if (rc == CTL_OK &&
		    strcmp(store_rows_text(claim, 0, "source_subject"), "saga") == 0)
			rc = ctl_sagas_close_letters(c, store_rows_text(claim, 0, "saga_id"),
			                             EV_RETRY, note, id);
		if (rc == CTL_OK)
			rc = ctl_query(c, &rows, "COMMIT", 0, NULL);
		store_rows_free(rows);
		if (rc != CTL_OK) {
			/* Out already; a second replay is dropped by the stream's duplicate window. */
			store_rollback(c->db);
			out->result = REPLAY_DB;
			snprintf(out->text + strlen(out->text),
			         sizeof(out->text) - strlen(out->text),
			         ", but the letter could not be marked replayed");
		}
	} else {
		store_rollback(c->db);
		if (out->result != REPLAY_DB)
			note_attempt(c, id, out->text);
	}
	store_rows_free(claim);
	return rc;
}

/* Letters that came back since max_before from the replay of the letters in ids. */
static const char came_back_sql[] =
        "SELECT d.id, coalesce(d.replay_of::text, '?') AS replay_of, d.error_class"
        " FROM saga_dead_letter d WHERE d.id > $1::bigint AND ("
        " d.replay_of = ANY($2::bigint[])"
        " OR (d.source_subject <> 'saga' AND coalesce(length(d.payload), 0) > 0"
        "  AND d.payload IN (SELECT r.payload FROM saga_dead_letter r"
        "   WHERE r.id = ANY($2::bigint[]) AND r.source_subject <> 'saga'))"
        " OR (d.source_subject = 'saga' AND d.saga_id IN (SELECT r.saga_id"
        "   FROM saga_dead_letter r WHERE r.id = ANY($2::bigint[])"
        "   AND r.source_subject = 'saga')))"
        " ORDER BY d.id";

/*
 * Wait up to wait_ms for the canary letters (ids) to come back as new dead
 * letters. *back receives how many did (0: the canary passed), what the list.
 */
static int
watch_canary(struct ctl *c, const char *max_before, const char *ids, int64_t wait_ms, int *back,
             char *what, size_t whatlen)
{
	const char *params[2] = {max_before, ids};
	int64_t until = monotonic_ms() + wait_ms;

	*back = 0;
	for (;;) {
		struct store_rows *rows = NULL;
		int rc = ctl_query(c, &rows, came_back_sql, 2, params);
		size_t pos = 0;

		if (rc != CTL_OK)
			return rc;
		*back = store_rows_count(rows);
		what[0] = '\0';
		for (int r = 0; r < *back && pos < whatlen; r++)
			pos += (size_t)snprintf(
			        what + pos, whatlen - pos, "%sletter %s came back as %s (%s)",
			        r > 0 ? ", " : "", store_rows_text(rows, r, "replay_of"),
			        store_rows_text(rows, r, "id"),
			        store_rows_text(rows, r, "error_class"));
		store_rows_free(rows);
		if (*back > 0 || monotonic_ms() >= until)
			return CTL_OK;
		sleep_ms(200);
	}
}

static void
print_result(struct ctl_json *j, const char *id, const struct replay_outcome *o)
{
	static const char *const names[] = {"replayed", "refused", "nats_error", "database_error"};

	if (j != NULL) {
		ctl_json_begin_object(j, NULL);
		ctl_json_int(j, "id", strtoll(id, NULL, 10));
		ctl_json_string(j, "outcome", names[o->result]);
		ctl_json_string(j, "detail", o->text);
		ctl_json_end(j);
	} else {
		fprintf(o->result == REPLAY_DONE ? stdout : stderr, "letter %s: %s\n", id, o->text);
	}
}

/* Replay options. */
struct replay_opts {
	double rate;     /* letters per second */
	int64_t canary;  /* replay this many first, then watch */
	int64_t wait_ms; /* how long to watch the canary */
};

static int
parse_replay_opts(struct ctl *c, struct replay_opts *o)
{
	char err[256];
	const char *rate = c->args.opt[OPT_RATE];

	o->rate = 10;
	o->canary = 0;
	o->wait_ms = 5000;
	if (rate != NULL) {
		char *end = NULL;

		o->rate = strtod(rate, &end);
		if (end == rate || *end != '\0' || !(o->rate >= 0.01 && o->rate <= 10000))
			return ctl_fail(c, CTL_USAGE, "--rate: letters per second, 0.01 to 10000");
	}
	if (c->args.opt[OPT_CANARY] != NULL &&
	    ctl_args_int(&c->args, OPT_CANARY, 1, 1000000, &o->canary, err, sizeof(err)) !=
	            STATUS_OK)
		return ctl_fail(c, CTL_USAGE, "%s", err);
	if (c->args.opt[OPT_CANARY_WAIT] != NULL &&
	    (config_parse_duration(c->args.opt[OPT_CANARY_WAIT], &o->wait_ms) != STATUS_OK ||
	     o->wait_ms < 0 || o->wait_ms > 3600 * 1000))
		return ctl_fail(c, CTL_USAGE, "--canary-wait: a duration up to 1h, e.g. 5s");
	return CTL_OK;
}

static int
dlq_replay(struct ctl *c)
{
	struct store_rows *rows = NULL, *mx = NULL;
	struct replay_opts o;
	struct ctl_json j, *jp = NULL;
	const char *note = c->args.opt[OPT_NOTE];
	const char *action;
	char target[64], filter[256], why[600], summary[900], back_what[600] = "";
	char max_before[32] = "0";
	int is_set = 0, n, done = 0, refused = 0, attempted = 0, stopped = 0, rc;
	int64_t t0, interval_ms;

	rc = parse_replay_opts(c, &o);
	if (rc == CTL_OK)
		rc = select_letters(c, &rows, target, sizeof(target), &is_set);
	if (rc != CTL_OK)
		goto cleanup;
	action = is_set ? "dlq.replay.bulk" : "dlq.replay";
	ctl_filter_text(c,
	                CTL_OPT(OPT_GROUP) | CTL_OPT(OPT_ALL) | CTL_OPT(OPT_CLASS) |
	                        CTL_OPT(OPT_RATE) | CTL_OPT(OPT_CANARY) | CTL_OPT(OPT_CANARY_WAIT),
	                filter, sizeof(filter));
	n = store_rows_count(rows);
	if (!is_set && n == 0) {
		rc = ctl_fail(c, CTL_FAILED, "no dead letter %s", target);
		rc = ctl_worse(rc, ctl_audit(c, action, target, filter, 0, note, "not found"));
		goto cleanup;
	}
	if (ctl_args_has(&c->args, OPT_DRY_RUN)) {
		if (c->json) {
			ctl_json_init(&j, stdout);
			ctl_json_begin_object(&j, NULL);
			ctl_json_bool(&j, "dry_run", true);
			ctl_json_int(&j, "count", n);
			ctl_json_double(&j, "rate", o.rate);
			ctl_rows_json_array(&j, "letters", rows, plan_json_cols,
			                    N_COLS(plan_json_cols));
			ctl_json_end(&j);
		} else {
			ctl_rows_table(stdout, rows, plan_cols, N_COLS(plan_cols));
			printf("dry run: %d letter(s) would be replayed at %g/s (about %.1f s);"
			       " nothing changed\n",
			       n, o.rate, n > 1 ? (n - 1) / o.rate : 0.0);
		}
		rc = ctl_worse(CTL_CONFIRM, ctl_audit(c, action, target[0] ? target : NULL, filter,
		                                      n, note, "dry_run"));
		goto cleanup;
	}
	if (n == 0) {
		printf(c->json ? "{\"count\": 0, \"replayed\": 0, \"results\": []}\n"
		               : "no open letter matches: nothing to replay\n");
		rc = ctl_audit(c, action, target[0] ? target : NULL, filter, 0, note,
		               "nothing matched");
		goto cleanup;
	}
	if (is_set) {
		rc = ctl_confirm(c, n, "letter(s)", why, sizeof(why));
		if (rc != CTL_OK) {
			rc = ctl_worse(rc, ctl_audit(c, action, target[0] ? target : NULL, filter,
			                             n, note, why));
			goto cleanup;
		}
	}
	for (int r = 0; r < n; r++) {
		if (strcmp(store_rows_text(rows, r, "source_subject"), "saga") != 0) {
			rc = ctl_open_bus(c);
			break;
		}
	}
	if (rc == CTL_OK)
		rc = ctl_query(c, &mx, "SELECT coalesce(max(id), 0) FROM saga_dead_letter", 0,
		               NULL);
	if (rc != CTL_OK) {
		rc = ctl_worse(rc, ctl_audit(c, action, target[0] ? target : NULL, filter, n, note,
		                             "failed: cannot connect"));
		goto cleanup;
	}
	snprintf(max_before, sizeof(max_before), "%s", store_rows_get(mx, 0, 0));
	if (c->json) {
		ctl_json_init(&j, stdout);
		ctl_json_begin_object(&j, NULL);
		ctl_json_int(&j, "count", n);
		ctl_json_double(&j, "rate", o.rate);
		ctl_json_begin_array(&j, "results");
		jp = &j;
	}
	interval_ms = (int64_t)(1000.0 / o.rate);
	t0 = monotonic_ms();
	for (int r = 0, slot = 0; r < n; r++, slot++) {
		struct replay_outcome out;
		const char *id = store_rows_text(rows, r, "id");
		int one;

		sleep_ms(t0 + slot * interval_ms - monotonic_ms());
		one = replay_one(c, id, note, &out);
		attempted++;
		print_result(jp, id, &out);
		rc = ctl_worse(rc, ctl_audit(c, "dlq.replay", id, is_set ? filter : NULL, -1, note,
		                             out.text));
		if (out.result == REPLAY_DONE) {
			done++;
		} else if (out.result == REPLAY_REFUSED) {
			refused++;
		} else {
			rc = ctl_worse(rc, out.result == REPLAY_NATS ? CTL_NATS : CTL_DATABASE);
			stopped = 1;
			snprintf(back_what, sizeof(back_what), "stopped at letter %s: %s", id,
			         out.text);
			break;
		}
		if (o.canary > 0 && r + 1 == (o.canary < n ? o.canary : n)) {
			char *ids = id_array(rows, 0, r + 1);
			int back = 0;

			if (ids == NULL) {
				rc = ctl_fail(c, CTL_FAILED, "out of memory");
				break;
			}
			if (!c->json)
				printf("canary: %d letter(s) replayed; watching %.1f s for them to "
				       "come back\n",
				       r + 1, (double)o.wait_ms / 1000.0);
			one = watch_canary(c, max_before, ids, o.wait_ms, &back, why, sizeof(why));
			free(ids);
			if (one != CTL_OK) {
				rc = ctl_worse(rc, one);
				stopped = 1;
				break;
			}
			if (back > 0) {
				stopped = 1;
				snprintf(back_what, sizeof(back_what), "stopped by the canary: %s",
				         why);
				rc = ctl_worse(rc, CTL_FAILED);
				break;
			}
			if (!c->json && r + 1 < n)
				printf("canary passed: replaying the other %d\n", n - r - 1);
			t0 = monotonic_ms();
			slot = -1;
		}
	}
	if (refused > 0)
		rc = ctl_worse(rc, CTL_FAILED);
	snprintf(summary, sizeof(summary), "replayed %d, refused %d, not attempted %d%s%s", done,
	         refused, n - attempted, back_what[0] != '\0' ? "; " : "", back_what);
	if (jp != NULL) {
		ctl_json_end(&j);
		ctl_json_int(&j, "replayed", done);
		ctl_json_int(&j, "refused", refused);
		ctl_json_int(&j, "not_attempted", n - attempted);
		ctl_json_bool(&j, "stopped", stopped);
		ctl_json_string(&j, "stop_reason", back_what[0] != '\0' ? back_what : NULL);
		ctl_json_end(&j);
	} else if (is_set || stopped) {
		printf("%s\n", summary);
	}
	if (is_set)
		rc = ctl_worse(rc, ctl_audit(c, action, target[0] ? target : NULL, filter, n, note,
		                             summary));
cleanup:
	store_rows_free(rows);
	store_rows_free(mx);
	return rc;
}

/* ---- dispatch ---- */

static void
dlq_usage(FILE *out)
{
	fprintf(out,
	        "usage: sagactl dlq list [--all] [--status S[,S]|any] [--class C] [--json]\n"
	        "       sagactl dlq show ID [--json]\n"
	        "       sagactl dlq diagnose ID --note TEXT\n"
	        "       sagactl dlq discard ID|--group FINGERPRINT --note TEXT [--dry-run]"
	        " [--yes|--confirm N]\n"
	        "       sagactl dlq replay ID|--group FINGERPRINT|--all [--class C] [--rate N]\n"
	        "                          [--canary K] [--canary-wait DURATION] [--note TEXT]\n"
	        "                          [--dry-run] [--yes|--confirm N]\n");
}

int
ctl_dlq(const struct config *cfg, int argc, char **argv)
{
	static const struct {
		const char *name;          /* sub-command */
		const char *command;       /* for messages */
		uint32_t allowed;          /* options */
		int (*run)(struct ctl *c); /* the work */
	} subs[] = {
	        {"list", "dlq list", CTL_OPT(OPT_ALL) | CTL_OPT(OPT_STATUS) | CTL_OPT(OPT_CLASS),
	         dlq_list},
	        {"show", "dlq show", 0, dlq_show},
	        {"diagnose", "dlq diagnose", CTL_OPT(OPT_NOTE), dlq_diagnose},
	        {"discard", "dlq discard",
	         CTL_OPT(OPT_NOTE) | CTL_OPT(OPT_GROUP) | CTL_OPT(OPT_CLASS) |
	                 CTL_OPT(OPT_DRY_RUN) | CTL_OPT(OPT_YES) | CTL_OPT(OPT_CONFIRM),
	         dlq_discard},
	        {"replay", "dlq replay",
	         CTL_OPT(OPT_NOTE) | CTL_OPT(OPT_GROUP) | CTL_OPT(OPT_ALL) | CTL_OPT(OPT_CLASS) |
	                 CTL_OPT(OPT_RATE) | CTL_OPT(OPT_CANARY) | CTL_OPT(OPT_CANARY_WAIT) |
	                 CTL_OPT(OPT_DRY_RUN) | CTL_OPT(OPT_YES) | CTL_OPT(OPT_CONFIRM),
	         dlq_replay},
	};

	if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "help") == 0) {
		dlq_usage(argc < 1 ? stderr : stdout);
		return argc < 1 ? CTL_USAGE : CTL_OK;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		struct ctl c;
		int rc;

		if (strcmp(argv[0], subs[i].name) != 0)
			continue;
		rc = ctl_begin(&c, cfg, subs[i].command, subs[i].allowed, argc - 1, argv + 1);
		if (rc == CTL_OK)
			rc = subs[i].run(&c);
		ctl_end(&c);
		return rc;
	}
	fprintf(stderr, "sagactl dlq: unknown sub-command \"%s\"\n", argv[0]);
	dlq_usage(stderr);
	return CTL_USAGE;
}

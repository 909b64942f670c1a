/* Saga definitions: YAML parsing, defaults, validation, and structure queries. */
#include "definition.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config.h"

#define MS_SECOND INT64_C(1000)
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR   (60 * MS_MINUTE)
#define MS_DAY    (24 * MS_HOUR)

/* Bounds checked by definition_validate (see its comment in definition.h). */
#define MAX_TIMEOUT_MS   (24 * MS_HOUR)
#define MIN_BACKOFF_MS   INT64_C(1)
#define MAX_BACKOFF_MS   MS_HOUR
#define MIN_DEADLINE_MS  MS_SECOND
#define MAX_DEADLINE_MS  (30 * MS_DAY)
#define MAX_ATTEMPTS_CAP 1000
#define MIN_MULTIPLIER   1.0
#define MAX_MULTIPLIER   10.0

/* Largest YAML text accepted; a full 32-step definition is a few KiB. */
#define YAML_TEXT_MAX (1024 * 1024)

#define PATH_LEN        96 /* "steps[31].compensation_retry.initial_backoff" and more */
#define LABEL_LEN       (PATH_LEN + SAGA_NAME_MAX + 4) /* path with "(step name)" inserted */
#define REASON_LEN      384 /* one reason, before "line N: path: " is prepended */
#define QUOTE_LEN       128 /* a quoted, escaped, shortened user value */
#define QUOTE_SHOWN     40  /* characters of a user value shown in errors */
#define SCALAR_TEXT_MAX 40  /* longest number or duration text looked at */
#define MAX_SPECS       8   /* keys of the largest mapping (a step) */
#define RETRY_KEYS      4   /* keys of a retry mapping */

/* Every key that can be seen once: top-level keys, step items, step keys, retry keys. */
#define MAX_KEY_LINES (MAX_SPECS + SAGA_MAX_STEPS * (1 + MAX_SPECS + 2 * RETRY_KEYS))
/* Every numeric field that can be given as 0: deadline, and per step timeout + 2 retries. */
#define MAX_ZEROS (1 + SAGA_MAX_STEPS * (1 + 2 * RETRY_KEYS))

/* How the value of one YAML key is read. */
enum field_type {
	FIELD_STRING,     /* text copied into a char array of `size` bytes (NUL included) */
	FIELD_DURATION,   /* int64_t milliseconds, via config_parse_duration */
	FIELD_COUNT,      /* uint32_t, decimal digits only */
	FIELD_MULTIPLIER, /* double, "2" or "1.5" */
	FIELD_KIND,       /* enum step_kind, by name */
	FIELD_STEPS,      /* the sequence of steps of a saga */
	FIELD_RETRY,      /* a struct retry_policy mapping */
};

/* One allowed key of a mapping: its name, how to read it, and where it goes. */
struct field_spec {
	const char *key;      /* YAML key */
	enum field_type type; /* how the value is read */
	size_t offset;        /* offset of the destination in the parent struct */
	size_t size;          /* size of the destination (FIELD_STRING: buffer size) */
	bool required;        /* an error when the key is absent */
};

#define SPEC(st, key, type, member, req)                                                           \
	{                                                                                          \
		key, type, offsetof(struct st, member), sizeof(((struct st *)0)->member), req      \
	}

static const struct field_spec saga_specs[] = {
        SPEC(saga_def, "name", FIELD_STRING, name, true),
        SPEC(saga_def, "description", FIELD_STRING, description, false),
        SPEC(saga_def, "deadline", FIELD_DURATION, deadline_ms, false),
        SPEC(saga_def, "steps", FIELD_STEPS, steps, true),
};

static const struct field_spec step_specs[] = {
        SPEC(step_def, "name", FIELD_STRING, name, true),
        SPEC(step_def, "action", FIELD_STRING, action_subject, true),
        SPEC(step_def, "compensation", FIELD_STRING, compensation_subject, false),
        SPEC(step_def, "kind", FIELD_KIND, kind, false),
        SPEC(step_def, "timeout", FIELD_DURATION, timeout_ms, false),
        SPEC(step_def, "group", FIELD_STRING, group, false),
        SPEC(step_def, "retry", FIELD_RETRY, retry, false),
        SPEC(step_def, "compensation_retry", FIELD_RETRY, compensation_retry, false),
};

static const struct field_spec retry_specs[] = {
        SPEC(retry_policy, "max_attempts", FIELD_COUNT, max_attempts, false),
        SPEC(retry_policy, "initial_backoff", FIELD_DURATION, initial_backoff_ms, false),
        SPEC(retry_policy, "max_backoff", FIELD_DURATION, max_backoff_ms, false),
        SPEC(retry_policy, "multiplier", FIELD_MULTIPLIER, multiplier, false),
};

#undef SPEC

#define N_SPECS(a) (sizeof(a) / sizeof((a)[0]))

_Static_assert(N_SPECS(step_specs) <= MAX_SPECS, "MAX_SPECS too small");
_Static_assert(N_SPECS(saga_specs) <= MAX_SPECS, "MAX_SPECS too small");
_Static_assert(N_SPECS(retry_specs) == RETRY_KEYS, "RETRY_KEYS out of date");

/* Line of a key seen in the YAML text, to place validation errors. */
struct key_line {
	char path[PATH_LEN]; /* field path, e.g. "steps[1].retry.max_backoff" */
	int line;            /* 1-based line of the key */
};

/* A numeric field written as an explicit 0 in the YAML text. */
struct zero_field {
	void *field;          /* inside parse_ctx.def */
	enum field_type type; /* FIELD_DURATION, FIELD_COUNT or FIELD_MULTIPLIER */
};

/* State of one definition_parse_yaml call (heap: too large for small thread stacks). */
struct parse_ctx {
	yaml_document_t *doc;                 /* the loaded document */
	struct saga_def def;                  /* definition being filled */
	struct key_line lines[MAX_KEY_LINES]; /* where each key was */
	int n_lines;                          /* used entries of lines */
	struct zero_field zeros[MAX_ZEROS];   /* explicit zeros, see finish_definition */
	int n_zeros;                          /* used entries of zeros */
	int root_line;                        /* line of the top-level mapping */
	char *err;                            /* caller's error buffer (may be NULL) */
	size_t errlen;                        /* its size */
};

/* Write a formatted message to a buffer that may be NULL or empty. */
static void put_text(char *buf, size_t len, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void
put_text(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (buf == NULL || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/*
 * Render a user value for an error message: in double quotes, control and
 * non-ASCII-printable bytes escaped (a CR/LF must not break a log line), cut
 * after QUOTE_SHOWN characters with "...".
 */
static void
quote_value(char *out, size_t outlen, const char *s, size_t len)
{
	size_t o = 0;

	if (outlen < 8) {
		if (outlen > 0)
			out[0] = '\0';
		return;
	}
	out[o++] = '"';
	for (size_t i = 0; i < len && i < QUOTE_SHOWN; i++) {
		unsigned char c = (unsigned char)s[i];
		char piece[8];
		int n;

		if (c == '"' || c == '\\')
			n = snprintf(piece, sizeof(piece), "\\%c", c);
		else if (c == '\n')
			n = snprintf(piece, sizeof(piece), "\\n");
		else if (c == '\r')
			n = snprintf(piece, sizeof(piece), "\\r");
		else if (c == '\t')
			n = snprintf(piece, sizeof(piece), "\\t");
		else if (c < 0x20 || c == 0x7f)
			n = snprintf(piece, sizeof(piece), "\\x%02x", c);
		else if (c >= 0x80) {
			/* A whole UTF-8 character, or the escaped byte when it is not one. */
			size_t u = saga_utf8_len(s + i, len - i);

			if (u == 0) {
				n = snprintf(piece, sizeof(piece), "\\x%02x", c);
			} else {
				memcpy(piece, s + i, u);
				n = (int)u;
				i += u - 1;
			}
		} else
			n = snprintf(piece, sizeof(piece), "%c", c);
		if (o + (size_t)n + 5 > outlen)
			break;
		memcpy(out + o, piece, (size_t)n);
		o += (size_t)n;
	}
	if (len > QUOTE_SHOWN && o + 5 <= outlen) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o++] = '"';
	out[o] = '\0';
}

/* "250ms", "30s", "5m", "2h", "1d": the largest unit that divides ms exactly. */
static void
format_duration(char *out, size_t outlen, int64_t ms)
{
	static const struct {
		int64_t scale;
		const char *unit;
	} units[] = {{MS_DAY, "d"}, {MS_HOUR, "h"}, {MS_MINUTE, "m"}, {MS_SECOND, "s"}};

	if (ms > 0) {
		for (size_t i = 0; i < N_SPECS(units); i++) {
			if (ms % units[i].scale == 0) {
				snprintf(out, outlen, "%" PRId64 "%s", ms / units[i].scale,
				         units[i].unit);
				return;
			}
		}
	}
	snprintf(out, outlen, "%" PRId64 "ms", ms);
}

/* ---- validation ---- */

/* Where definition_validate writes its verdict. */
struct verdict {
	char *field;     /* field path buffer (may be NULL) */
	size_t fieldlen; /* its size */
	char *err;       /* reason buffer (may be NULL) */
	size_t errlen;   /* its size */
};

static enum status invalid(const struct verdict *v, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static enum status
invalid(const struct verdict *v, const char *field, const char *fmt, ...)
{
	va_list ap;

	put_text(v->field, v->fieldlen, "%s", field);
	if (v->err != NULL && v->errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(v->err, v->errlen, fmt, ap);
		va_end(ap);
	}
	return STATUS_INVALID;
}

/* True when the char array holds a NUL, i.e. its text fits. */
#define TERMINATED(arr) (memchr((arr), '\0', sizeof(arr)) != NULL)

/* Kind with 0 (unset) read as compensatable, as definition_apply_defaults does. */
static enum step_kind
effective_kind(const struct step_def *s)
{
	return s->kind == 0 ? STEP_KIND_COMPENSATABLE : s->kind;
}

static enum status
check_subject(const struct verdict *v, const char *field, const char *subject)
{
	char q[QUOTE_LEN];

	if (saga_valid_subject(subject))
		return STATUS_OK;
	quote_value(q, sizeof(q), subject, strlen(subject));
	return invalid(v, field,
	               "%s is not a valid subject: dot-separated tokens of A-Z a-z 0-9 _ -, "
	               "at most %d characters (no wildcards, spaces or empty tokens)",
	               q, SAGA_SUBJECT_MAX);
}

static enum status
check_name(const struct verdict *v, const char *field, const char *name)
{
	char q[QUOTE_LEN];

	if (saga_valid_name(name))
		return STATUS_OK;
	if (name[0] == '\0')
		return invalid(v, field, "is required");
	quote_value(q, sizeof(q), name, strlen(name));
	return invalid(v, field, "%s is not a valid name: 1 to %d of A-Z a-z 0-9 _ -", q,
	               SAGA_NAME_MAX);
}

/* Bounds of one retry policy; unlimited says whether max_attempts 0 is allowed. */
static enum status
check_retry(const struct verdict *v, int i, const char *which, const struct retry_policy *r,
            bool unlimited)
{
	char field[PATH_LEN];
	char a[32];
	char b[32];

	snprintf(field, sizeof(field), "steps[%d].%s.max_attempts", i, which);
	if (r->max_attempts == 0 && !unlimited)
		return invalid(v, field,
		               "0 (unlimited) is only allowed for the action of a retriable step; "
		               "give 1 to %d",
		               MAX_ATTEMPTS_CAP);
	if (r->max_attempts > MAX_ATTEMPTS_CAP)
		return invalid(v, field, "must be at most %d (got %" PRIu32 ")", MAX_ATTEMPTS_CAP,
		               r->max_attempts);

	snprintf(field, sizeof(field), "steps[%d].%s.initial_backoff", i, which);
	if (r->initial_backoff_ms < MIN_BACKOFF_MS || r->initial_backoff_ms > MAX_BACKOFF_MS) {
		format_duration(a, sizeof(a), r->initial_backoff_ms);
		return invalid(v, field, "must be between 1ms and 1h (got %s)", a);
	}
	snprintf(field, sizeof(field), "steps[%d].%s.max_backoff", i, which);
	if (r->max_backoff_ms < MIN_BACKOFF_MS || r->max_backoff_ms > MAX_BACKOFF_MS) {
		format_duration(a, sizeof(a), r->max_backoff_ms);
		return invalid(v, field, "must be between 1ms and 1h (got %s)", a);
	}
	if (r->initial_backoff_ms > r->max_backoff_ms) {
		format_duration(a, sizeof(a), r->max_backoff_ms);
		format_duration(b, sizeof(b), r->initial_backoff_ms);
		return invalid(v, field, "%s is less than initial_backoff %s", a, b);
	}
	snprintf(field, sizeof(field), "steps[%d].%s.multiplier", i, which);
	/* Written so that NaN fails too. */
	if (!(r->multiplier >= MIN_MULTIPLIER && r->multiplier <= MAX_MULTIPLIER))
		return invalid(v, field, "must be between 1 and 10 (got %g)", r->multiplier);
	return STATUS_OK;
}

/* Position rules: pivot, retriable steps, groups. pivot / retriable: first index seen or -1. */
static enum status
check_order(const struct verdict *v, const struct saga_def *def, int i, int *pivot, int *retriable)
{
	const struct step_def *s = &def->steps[i];
	enum step_kind k = effective_kind(s);
	char field[PATH_LEN];

	snprintf(field, sizeof(field), "steps[%d].kind", i);
	if (k == STEP_KIND_PIVOT && *pivot >= 0)
		return invalid(v, field, "a second pivot: steps[%d] (%s) is already the pivot",
		               *pivot, def->steps[*pivot].name);
	if (*pivot >= 0 && k != STEP_KIND_RETRIABLE)
		return invalid(v, field,
		               "a %s step cannot follow the pivot steps[%d] (%s): only retriable "
		               "steps may come after the pivot",
		               step_kind_name(k), *pivot, def->steps[*pivot].name);
	/*
	 * A retriable step cannot be undone, so nothing that may fail and
	 * trigger compensation (a compensatable step or a pivot) may follow it.
	 */
	if (*retriable >= 0 && k != STEP_KIND_RETRIABLE)
		return invalid(v, field,
		               "a %s step cannot follow the retriable step steps[%d] (%s): only "
		               "retriable steps may come after a retriable step",
		               step_kind_name(k), *retriable, def->steps[*retriable].name);

	snprintf(field, sizeof(field), "steps[%d].compensation", i);
	if (k == STEP_KIND_PIVOT && s->compensation_subject[0] != '\0')
		return invalid(v, field,
		               "a pivot step cannot have a compensation (it is the point of no "
		               "return)");
	if (k == STEP_KIND_RETRIABLE && s->compensation_subject[0] != '\0')
		return invalid(v, field, "a retriable step cannot have a compensation");

	snprintf(field, sizeof(field), "steps[%d].group", i);
	if (k == STEP_KIND_PIVOT && s->group[0] != '\0')
		return invalid(v, field, "a pivot step cannot be in a parallel group");
	if (s->group[0] != '\0' && i > 0 && strcmp(def->steps[i - 1].group, s->group) != 0) {
		for (int j = 0; j < i - 1; j++) {
			if (strcmp(def->steps[j].group, s->group) == 0)
				return invalid(v, field,
				               "group \"%s\" is split: steps[%d] (%s) is in it but "
				               "steps[%d] (%s) is not (members of a group must be "
				               "consecutive)",
				               s->group, j, def->steps[j].name, i - 1,
				               def->steps[i - 1].name);
		}
	}
	/*
	 * Members of a group run in parallel: a failing compensatable member
	 * would have to undo a retriable one that cannot be undone.
	 */
	if (s->group[0] != '\0' && i > 0 && strcmp(def->steps[i - 1].group, s->group) == 0 &&
	    effective_kind(&def->steps[i - 1]) != k)
		return invalid(v, field,
		               "group \"%s\" mixes kinds: steps[%d] (%s) is %s but this step is %s",
		               s->group, i - 1, def->steps[i - 1].name,
		               step_kind_name(effective_kind(&def->steps[i - 1])),
		               step_kind_name(k));

	if (k == STEP_KIND_PIVOT)
		*pivot = i;
	if (k == STEP_KIND_RETRIABLE && *retriable < 0)
		*retriable = i;
	return STATUS_OK;
}

static enum status
check_step(const struct verdict *v, const struct saga_def *def, int i, int *pivot, int *retriable)
{
	const struct step_def *s = &def->steps[i];
	char field[PATH_LEN];
	char a[32];
	enum status st;

	snprintf(field, sizeof(field), "steps[%d].name", i);
	if (!TERMINATED(s->name))
		return invalid(v, field, "longer than %d characters", SAGA_NAME_MAX);
	st = check_name(v, field, s->name);
	if (st != STATUS_OK)
		return st;
	for (int j = 0; j < i; j++) {
		if (strcmp(def->steps[j].name, s->name) == 0)
			return invalid(v, field, "duplicate step name \"%s\" (also steps[%d])",
			               s->name, j);
	}

	snprintf(field, sizeof(field), "steps[%d].action", i);
	if (!TERMINATED(s->action_subject))
		return invalid(v, field, "longer than %d characters", SAGA_SUBJECT_MAX);
	if (s->action_subject[0] == '\0')
		return invalid(v, field, "is required");
	st = check_subject(v, field, s->action_subject);
	if (st != STATUS_OK)
		return st;

	snprintf(field, sizeof(field), "steps[%d].compensation", i);
	if (!TERMINATED(s->compensation_subject))
		return invalid(v, field, "longer than %d characters", SAGA_SUBJECT_MAX);
	if (s->compensation_subject[0] != '\0') {
		st = check_subject(v, field, s->compensation_subject);
		if (st != STATUS_OK)
			return st;
	}

	snprintf(field, sizeof(field), "steps[%d].group", i);
	if (!TERMINATED(s->group))
		return invalid(v, field, "longer than %d characters", SAGA_NAME_MAX);
	if (s->group[0] != '\0') {
		st = check_name(v, field, s->group);
		if (st != STATUS_OK)
			return st;
	}

	snprintf(field, sizeof(field), "steps[%d].kind", i);
	if ((int)s->kind < 0 || (int)s->kind > STEP_KIND_RETRIABLE)
		return invalid(v, field, "unknown step kind %d", (int)s->kind);
	st = check_order(v, def, i, pivot, retriable);
	if (st != STATUS_OK)
		return st;

	snprintf(field, sizeof(field), "steps[%d].timeout", i);
	if (s->timeout_ms <= 0 || s->timeout_ms > MAX_TIMEOUT_MS) {
		format_duration(a, sizeof(a), s->timeout_ms);
		return invalid(v, field, "must be more than 0 and at most 24h (got %s)", a);
	}
	st = check_retry(v, i, "retry", &s->retry, effective_kind(s) == STEP_KIND_RETRIABLE);
	if (st != STATUS_OK)
		return st;
	return check_retry(v, i, "compensation_retry", &s->compensation_retry, false);
}

enum status
definition_validate(const struct saga_def *def, char *field, size_t fieldlen, char *err,
                    size_t errlen)
{
	struct verdict v = {field, fieldlen, err, errlen};
	int pivot = -1;
	int retriable = -1;
	char a[32];
	enum status st;

	put_text(field, fieldlen, "%s", "");
	put_text(err, errlen, "%s", "");
	if (!TERMINATED(def->name))
		return invalid(&v, "name", "longer than %d characters", SAGA_NAME_MAX);
	st = check_name(&v, "name", def->name);
	if (st != STATUS_OK)
		return st;
	if (!TERMINATED(def->description))
		return invalid(&v, "description", "longer than %d characters",
		               SAGA_DESCRIPTION_MAX);
	if (def->deadline_ms != 0 &&
	    (def->deadline_ms < MIN_DEADLINE_MS || def->deadline_ms > MAX_DEADLINE_MS)) {
		format_duration(a, sizeof(a), def->deadline_ms);
		return invalid(&v, "deadline", "must be 0 (none) or between 1s and 30d (got %s)",
		               a);
	}
	if (def->n_steps < 1)
		return invalid(&v, "steps", "at least one step is required");
	if (def->n_steps > SAGA_MAX_STEPS)
		return invalid(&v, "steps", "too many steps: %d (at most %d)", def->n_steps,
		               SAGA_MAX_STEPS);
	for (int i = 0; i < def->n_steps; i++) {
		st = check_step(&v, def, i, &pivot, &retriable);
		if (st != STATUS_OK)
			return st;
	}
	return STATUS_OK;
}

/* ---- defaults ---- */

static void
fill_backoff(struct retry_policy *r)
{
	if (r->initial_backoff_ms == 0)
		r->initial_backoff_ms = DEF_INITIAL_BACKOFF_MS;
	if (r->max_backoff_ms == 0)
		r->max_backoff_ms = DEF_MAX_BACKOFF_MS;
	if (r->multiplier == 0.0)
		r->multiplier = DEF_MULTIPLIER;
}

/*
 * Only zero fields are filled, with non-zero values, so a second call changes
 * nothing. The one field whose 0 is meaningful is retry.max_attempts: on a
 * retriable step 0 means "unlimited" and is also the default, so it stays 0;
 * on any other step 0 means "unset" and becomes DEF_MAX_ATTEMPTS. The kind is
 * settled first (0 = compensatable) so that this choice sees the final kind.
 * compensation_retry is filled on every step, with or without a compensation,
 * so that equal definitions stay byte-for-byte equal.
 */
void
definition_apply_defaults(struct saga_def *def)
{
	int n = def->n_steps;

	if (n > SAGA_MAX_STEPS)
		n = SAGA_MAX_STEPS;
	for (int i = 0; i < n; i++) {
		struct step_def *s = &def->steps[i];

		if (s->kind == 0)
			s->kind = STEP_KIND_COMPENSATABLE;
		if (s->timeout_ms == 0)
			s->timeout_ms = DEF_TIMEOUT_MS;
		if (s->retry.max_attempts == 0 && s->kind != STEP_KIND_RETRIABLE)
			s->retry.max_attempts = DEF_MAX_ATTEMPTS;
		fill_backoff(&s->retry);
		if (s->compensation_retry.max_attempts == 0)
			s->compensation_retry.max_attempts = DEF_COMP_MAX_ATTEMPTS;
		fill_backoff(&s->compensation_retry);
	}
}

/* ---- structure queries ---- */

int
definition_group_end(const struct saga_def *def, int i)
{
	int j = i + 1;

	if (i < 0 || i >= def->n_steps || def->steps[i].group[0] == '\0')
		return i + 1;
	while (j < def->n_steps && strcmp(def->steps[j].group, def->steps[i].group) == 0)
		j++;
	return j;
}

int
definition_group_start(const struct saga_def *def, int i)
{
	int j = i;

	if (i < 0 || i >= def->n_steps || def->steps[i].group[0] == '\0')
		return i;
	while (j > 0 && strcmp(def->steps[j - 1].group, def->steps[i].group) == 0)
		j--;
	return j;
}

int
definition_pivot_index(const struct saga_def *def)
{
	for (int i = 0; i < def->n_steps && i < SAGA_MAX_STEPS; i++) {
		if (def->steps[i].kind == STEP_KIND_PIVOT)
			return i;
	}
	return -1;
}

int
definition_step_index(const struct saga_def *def, const char *name)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < def->n_steps && i < SAGA_MAX_STEPS; i++) {
		if (strcmp(def->steps[i].name, name) == 0)
			return i;
	}
	return -1;
}

/* ---- YAML parsing ---- */

static int
line_of(const yaml_node_t *node)
{
	return (int)node->start_mark.line + 1;
}

/* Write "line N: label: reason" (or "line N: reason" without a label); returns STATUS_INVALID. */
static enum status fail(struct parse_ctx *ctx, int line, const char *label, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static enum status
fail(struct parse_ctx *ctx, int line, const char *label, const char *fmt, ...)
{
	char reason[REASON_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (label[0] != '\0')
		put_text(ctx->err, ctx->errlen, "line %d: %s: %s", line, label, reason);
	else
		put_text(ctx->err, ctx->errlen, "line %d: %s", line, reason);
	return STATUS_INVALID;
}

static const char *
node_type_name(const yaml_node_t *node)
{
	switch (node->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_NO_NODE:
		break;
	}
	return "nothing";
}

/* A plain empty, "~" or "null" scalar: YAML's null, which no field accepts. */
static bool
is_null(const yaml_node_t *node)
{
	static const char *const words[] = {"", "~", "null", "Null", "NULL"};
	const char *s = (const char *)node->data.scalar.value;

	if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < N_SPECS(words); i++) {
		if (node->data.scalar.length == strlen(words[i]) && strcmp(s, words[i]) == 0)
			return true;
	}
	return false;
}

/* The text of a scalar value; any other node, a null or an embedded NUL is an error. */
static enum status
scalar_text(struct parse_ctx *ctx, const yaml_node_t *node, const char *label, const char **text,
            size_t *len)
{
	if (node->type != YAML_SCALAR_NODE)
		return fail(ctx, line_of(node), label, "expected a single value, found %s",
		            node_type_name(node));
	if (is_null(node))
		return fail(ctx, line_of(node), label, "has no value");
	if (memchr(node->data.scalar.value, '\0', node->data.scalar.length) != NULL)
		return fail(ctx, line_of(node), label, "contains a NUL character");
	*text = (const char *)node->data.scalar.value;
	*len = node->data.scalar.length;
	return STATUS_OK;
}

/* Remember where a key was, to place later validation errors. */
static void
record_line(struct parse_ctx *ctx, const char *path, int line)
{
	struct key_line *kl;

	/* Duplicates and unknown keys are rejected, so the table cannot overflow. */
	if (ctx->n_lines >= MAX_KEY_LINES)
		return;
	kl = &ctx->lines[ctx->n_lines++];
	snprintf(kl->path, sizeof(kl->path), "%s", path);
	kl->line = line;
}

/* Line of the closest recorded key of field: itself, else its parents. */
static int
field_line(const struct parse_ctx *ctx, const char *field)
{
	char path[PATH_LEN];

	snprintf(path, sizeof(path), "%s", field);
	while (path[0] != '\0') {
		char *dot;
		char *bracket;

		for (int i = 0; i < ctx->n_lines; i++) {
			if (strcmp(ctx->lines[i].path, path) == 0)
				return ctx->lines[i].line;
		}
		dot = strrchr(path, '.');
		bracket = strrchr(path, '[');
		if (dot == NULL && bracket == NULL)
			break;
		*(dot != NULL && (bracket == NULL || dot > bracket) ? dot : bracket) = '\0';
	}
	return ctx->root_line;
}

/* "steps[2].compensation" -> "steps[2] (ship).compensation" when step 2 has a valid name. */
static void
field_label(const struct saga_def *def, const char *field, char *out, size_t outlen)
{
	int idx = -1;
	int end = 0;

	if (sscanf(field, "steps[%d]%n", &idx, &end) == 1 && end > 0 && idx >= 0 &&
	    idx < def->n_steps && idx < SAGA_MAX_STEPS && TERMINATED(def->steps[idx].name) &&
	    saga_valid_name(def->steps[idx].name)) {
		snprintf(out, outlen, "%.*s (%s)%s", end, field, def->steps[idx].name, field + end);
		return;
	}
	snprintf(out, outlen, "%s", field);
}

static void
join_path(char *out, size_t outlen, const char *parent, const char *key)
{
	if (parent[0] == '\0')
		snprintf(out, outlen, "%s", key);
	else
		snprintf(out, outlen, "%s.%s", parent, key);
}

static void
note_zero(struct parse_ctx *ctx, void *field, enum field_type type)
{
	/* At most one entry per numeric field: duplicate keys are rejected. */
	if (ctx->n_zeros >= MAX_ZEROS)
		return;
	ctx->zeros[ctx->n_zeros].field = field;
	ctx->zeros[ctx->n_zeros].type = type;
	ctx->n_zeros++;
}

static enum status
parse_string(struct parse_ctx *ctx, const yaml_node_t *node, const char *label,
             const struct field_spec *spec, char *dst)
{
	const char *text;
	size_t len;
	enum status st;

	st = scalar_text(ctx, node, label, &text, &len);
	if (st != STATUS_OK)
		return st;
	if (len > spec->size - 1)
		return fail(ctx, line_of(node), label, "longer than %zu characters (%zu given)",
		            spec->size - 1, len);
	memcpy(dst, text, len);
	dst[len] = '\0';
	return STATUS_OK;
}

/*
 * Copy a short scalar into buf for number parsing; rejects negative values
 * with their own message. what names the expected thing ("a duration").
 */
static enum status
number_text(struct parse_ctx *ctx, const yaml_node_t *node, const char *label, const char *what,
            char *buf, size_t buflen)
{
	char q[QUOTE_LEN];
	const char *text = NULL;
	size_t len = 0;
	enum status st;

	st = scalar_text(ctx, node, label, &text, &len);
	if (st != STATUS_OK)
		return st;
	quote_value(q, sizeof(q), text, len);
	if (text[0] == '-')
		return fail(ctx, line_of(node), label, "%s is negative: expected %s", q, what);
	if (len >= buflen)
		return fail(ctx, line_of(node), label, "%s is not %s", q, what);
	memcpy(buf, text, len);
	buf[len] = '\0';
	return STATUS_OK;
}

static enum status
parse_duration(struct parse_ctx *ctx, const yaml_node_t *node, const char *label, int64_t *dst)
{
	static const char what[] = "a duration (e.g. 250ms, 30s, 5m, 1h, 1d)";
	char buf[SCALAR_TEXT_MAX + 1];
	char q[QUOTE_LEN];
	int64_t ms = 0;
	enum status st;

	st = number_text(ctx, node, label, what, buf, sizeof(buf));
	if (st != STATUS_OK)
		return st;
	if (config_parse_duration(buf, &ms) != STATUS_OK) {
		quote_value(q, sizeof(q), buf, strlen(buf));
		return fail(ctx, line_of(node), label, "%s is not %s", q, what);
	}
	*dst = ms;
	if (ms == 0)
		note_zero(ctx, dst, FIELD_DURATION);
	return STATUS_OK;
}

static enum status
parse_count(struct parse_ctx *ctx, const yaml_node_t *node, const char *label, uint32_t *dst)
{
	static const char what[] = "a whole number";
	char buf[SCALAR_TEXT_MAX + 1];
	char q[QUOTE_LEN];
	uint64_t n = 0;
	enum status st;

	st = number_text(ctx, node, label, what, buf, sizeof(buf));
	if (st != STATUS_OK)
		return st;
	quote_value(q, sizeof(q), buf, strlen(buf));
	for (const char *p = buf; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return fail(ctx, line_of(node), label, "%s is not %s", q, what);
		n = n * 10 + (uint64_t)(*p - '0');
		if (n > UINT32_MAX)
			return fail(ctx, line_of(node), label, "%s is too large", q);
	}
	*dst = (uint32_t)n;
	if (n == 0)
		note_zero(ctx, dst, FIELD_COUNT);
	return STATUS_OK;
}

/*
 * "2" or "1.5": digits with an optional fraction. Computed as an exact
 * integer over an exact power of ten, so the result is the correctly rounded
 * value (as strtod would give) without depending on the locale's decimal point.
 */
static enum status
parse_multiplier(struct parse_ctx *ctx, const yaml_node_t *node, const char *label, double *dst)
{
	static const char what[] = "a number such as 2 or 1.5";
	char buf[SCALAR_TEXT_MAX + 1];
	char q[QUOTE_LEN];
	uint64_t mantissa = 0;
	double scale = 1.0;
	int digits = 0;
	bool fraction = false;
	int frac_digits = 0;
	enum status st;

	st = number_text(ctx, node, label, what, buf, sizeof(buf));
	if (st != STATUS_OK)
		return st;
	quote_value(q, sizeof(q), buf, strlen(buf));
	for (const char *p = buf; *p != '\0'; p++) {
		if (*p == '.' && !fraction && digits > 0) {
			fraction = true;
			continue;
		}
		if (*p < '0' || *p > '9')
			return fail(ctx, line_of(node), label, "%s is not %s", q, what);
		/* 15 significant digits keep the mantissa and 10^k exact doubles. */
		if (++digits > 15)
			return fail(ctx, line_of(node), label, "%s has too many digits", q);
		mantissa = mantissa * 10 + (uint64_t)(*p - '0');
		if (fraction) {
			scale *= 10.0;
			frac_digits++;
		}
	}
	if (digits == 0 || (fraction && frac_digits == 0))
		return fail(ctx, line_of(node), label, "%s is not %s", q, what);
	*dst = (double)mantissa / scale;
	if (mantissa == 0)
		note_zero(ctx, dst, FIELD_MULTIPLIER);
	return STATUS_OK;
}

static enum status
parse_kind(struct parse_ctx *ctx, const yaml_node_t *node, const char *label, enum step_kind *dst)
{
	char q[QUOTE_LEN];
	const char *text;
	size_t len;
	enum status st;

	st = scalar_text(ctx, node, label, &text, &len);
	if (st != STATUS_OK)
		return st;
	for (int k = STEP_KIND_COMPENSATABLE; k <= STEP_KIND_RETRIABLE; k++) {
		const char *word = step_kind_name((enum step_kind)k);

		if (len == strlen(word) && memcmp(text, word, len) == 0) {
			*dst = (enum step_kind)k;
			return STATUS_OK;
		}
	}
	quote_value(q, sizeof(q), text, len);
	return fail(ctx, line_of(node), label,
	            "%s is not a step kind (compensatable, pivot or retriable)", q);
}

static enum status parse_mapping(struct parse_ctx *ctx, const yaml_node_t *node,
                                 const struct field_spec *specs, size_t n_specs, void *base,
                                 const char *path, const char *label);

/* The step's name, when it has a usable one, to show "steps[1] (charge_card)" in errors. */
static void
step_label(struct parse_ctx *ctx, const yaml_node_t *node, int i, char *out, size_t outlen)
{
	char name[SAGA_NAME_MAX + 1] = "";

	if (node->type == YAML_MAPPING_NODE) {
		for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
		     p < node->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(ctx->doc, p->key);
			yaml_node_t *v = yaml_document_get_node(ctx->doc, p->value);

			if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE ||
			    v->type != YAML_SCALAR_NODE)
				continue;
			if (k->data.scalar.length == 4 &&
			    memcmp(k->data.scalar.value, "name", 4) == 0 &&
			    v->data.scalar.length <= SAGA_NAME_MAX) {
				memcpy(name, v->data.scalar.value, v->data.scalar.length);
				name[v->data.scalar.length] = '\0';
				break;
			}
		}
	}
	if (saga_valid_name(name))
		snprintf(out, outlen, "steps[%d] (%s)", i, name);
	else
		snprintf(out, outlen, "steps[%d]", i);
}

static enum status
parse_steps(struct parse_ctx *ctx, const yaml_node_t *node, const char *label)
{
	int i = 0;

	if (node->type != YAML_SEQUENCE_NODE)
		return fail(ctx, line_of(node), label, "expected a list of steps, found %s",
		            node_type_name(node));
	for (yaml_node_item_t *it = node->data.sequence.items.start;
	     it < node->data.sequence.items.top; it++, i++) {
		yaml_node_t *item = yaml_document_get_node(ctx->doc, *it);
		char path[PATH_LEN];
		char item_label[LABEL_LEN];
		enum status st;

		if (item == NULL)
			return fail(ctx, line_of(node), label, "broken document");
		if (i >= SAGA_MAX_STEPS)
			return fail(ctx, line_of(item), label, "too many steps: %d (at most %d)",
			            (int)(node->data.sequence.items.top -
			                  node->data.sequence.items.start),
			            SAGA_MAX_STEPS);
		snprintf(path, sizeof(path), "steps[%d]", i);
		step_label(ctx, item, i, item_label, sizeof(item_label));
		record_line(ctx, path, line_of(item));
		if (item->type != YAML_MAPPING_NODE)
			return fail(ctx, line_of(item), item_label,
			            "expected a mapping (name, action, ...), found %s",
			            node_type_name(item));
		ctx->def.n_steps = i + 1;
		st = parse_mapping(ctx, item, step_specs, N_SPECS(step_specs), &ctx->def.steps[i],
		                   path, item_label);
		if (st != STATUS_OK)
			return st;
	}
	return STATUS_OK;
}

static enum status
parse_value(struct parse_ctx *ctx, const yaml_node_t *node, const struct field_spec *spec,
            void *dst, const char *path, const char *label)
{
	switch (spec->type) {
	case FIELD_STRING:
		return parse_string(ctx, node, label, spec, dst);
	case FIELD_DURATION:
		return parse_duration(ctx, node, label, dst);
	case FIELD_COUNT:
		return parse_count(ctx, node, label, dst);
	case FIELD_MULTIPLIER:
		return parse_multiplier(ctx, node, label, dst);
	case FIELD_KIND:
		return parse_kind(ctx, node, label, dst);
	case FIELD_STEPS:
		return parse_steps(ctx, node, label);
	case FIELD_RETRY:
		return parse_mapping(ctx, node, retry_specs, N_SPECS(retry_specs), dst, path,
		                     label);
	}
	return fail(ctx, line_of(node), label, "internal error: unknown field type");
}

/* "name, action, compensation, ..." */
static void
key_list(const struct field_spec *specs, size_t n_specs, char *out, size_t outlen)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n_specs && o < outlen; i++) {
		int n = snprintf(out + o, outlen - o, "%s%s", i > 0 ? ", " : "", specs[i].key);

		if (n < 0)
			break;
		o += (size_t)n;
	}
}

/* Read a mapping against its table of keys into the struct at base. */
static enum status
parse_mapping(struct parse_ctx *ctx, const yaml_node_t *node, const struct field_spec *specs,
              size_t n_specs, void *base, const char *path, const char *label)
{
	int seen[MAX_SPECS] = {0}; /* line of each key, 0 = not seen */

	if (node->type != YAML_MAPPING_NODE)
		return fail(ctx, line_of(node), label, "expected a mapping, found %s",
		            node_type_name(node));
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *key = yaml_document_get_node(ctx->doc, p->key);
		yaml_node_t *value = yaml_document_get_node(ctx->doc, p->value);
		const struct field_spec *spec = NULL;
		char child_path[PATH_LEN];
		char child_label[LABEL_LEN];
		char q[QUOTE_LEN];
		char keys[256];
		size_t idx;
		enum status st;

		if (key == NULL || value == NULL)
			return fail(ctx, line_of(node), label, "broken document");
		if (key->type != YAML_SCALAR_NODE)
			return fail(ctx, line_of(key), label[0] != '\0' ? label : "(top level)",
			            "expected a key, found %s", node_type_name(key));
		for (idx = 0; idx < n_specs; idx++) {
			if (key->data.scalar.length == strlen(specs[idx].key) &&
			    memcmp(key->data.scalar.value, specs[idx].key,
			           key->data.scalar.length) == 0) {
				spec = &specs[idx];
				break;
			}
		}
		if (spec == NULL) {
			quote_value(q, sizeof(q), (const char *)key->data.scalar.value,
			            key->data.scalar.length);
			key_list(specs, n_specs, keys, sizeof(keys));
			return fail(ctx, line_of(key), label[0] != '\0' ? label : "(top level)",
			            "unknown key %s (expected one of: %s)", q, keys);
		}
		join_path(child_path, sizeof(child_path), path, spec->key);
		join_path(child_label, sizeof(child_label), label, spec->key);
		if (seen[idx] != 0)
			return fail(ctx, line_of(key), child_label,
			            "duplicate key (first given at line %d)", seen[idx]);
		seen[idx] = line_of(key);
		record_line(ctx, child_path, line_of(key));
		st = parse_value(ctx, value, spec, (char *)base + spec->offset, child_path,
		                 child_label);
		if (st != STATUS_OK)
			return st;
	}
	for (size_t i = 0; i < n_specs; i++) {
		char child_label[LABEL_LEN];

		if (!specs[i].required || seen[i] != 0)
			continue;
		join_path(child_label, sizeof(child_label), label, specs[i].key);
		return fail(ctx, line_of(node), child_label, "is required but missing");
	}
	return STATUS_OK;
}

/*
 * Defaults, then validation. A numeric field written as 0 is indistinguishable
 * from an absent one once in the struct, and definition_apply_defaults would
 * silently replace it; so every explicit 0 is put back after the defaults and
 * the validator judges it: "timeout: 0" or "max_attempts: 0" on a compensatable
 * step are errors, while "max_attempts: 0" on a retriable step (unlimited) and
 * "deadline: 0" (none) are kept, which the defaults leave at 0 anyway. Hence
 * an explicit default and an omitted field give the same struct.
 */
static enum status
finish_definition(struct parse_ctx *ctx)
{
	char field[PATH_LEN];
	char why[REASON_LEN];
	char label[LABEL_LEN];
	enum status st;

	definition_apply_defaults(&ctx->def);
	for (int i = 0; i < ctx->n_zeros; i++) {
		switch (ctx->zeros[i].type) {
		case FIELD_DURATION:
			*(int64_t *)ctx->zeros[i].field = 0;
			break;
		case FIELD_COUNT:
			*(uint32_t *)ctx->zeros[i].field = 0;
			break;
		case FIELD_MULTIPLIER:
			*(double *)ctx->zeros[i].field = 0.0;
			break;
		default:
			break;
		}
	}
	field[0] = '\0';
	st = definition_validate(&ctx->def, field, sizeof(field), why, sizeof(why));
	if (st != STATUS_OK) {
		field_label(&ctx->def, field, label, sizeof(label));
		return fail(ctx, field_line(ctx, field), label, "%s", why);
	}
	/* A no-op: every zero left is one the defaults keep (see above). */
	definition_apply_defaults(&ctx->def);
	return STATUS_OK;
}

/* 1-based line of a byte offset (reader errors give an offset, not a mark). */
static int
line_at(const char *text, size_t len, size_t offset)
{
	int line = 1;

	for (size_t i = 0; i < offset && i < len; i++) {
		if (text[i] == '\n')
			line++;
	}
	return line;
}

/* Turn a libyaml error into our status and message. */
static enum status
yaml_failure(struct parse_ctx *ctx, const yaml_parser_t *parser, const char *text, size_t len)
{
	const char *problem = parser->problem != NULL ? parser->problem : "unknown error";

	switch (parser->error) {
	case YAML_MEMORY_ERROR:
		put_text(ctx->err, ctx->errlen, "out of memory while parsing YAML");
		return STATUS_NOMEM;
	case YAML_READER_ERROR:
		return fail(ctx, line_at(text, len, parser->problem_offset), "",
		            "invalid YAML input: %s", problem);
	default:
		break;
	}
	if (parser->context != NULL)
		return fail(ctx, (int)parser->problem_mark.line + 1, "",
		            "invalid YAML: %s (%s started at line %d)", problem, parser->context,
		            (int)parser->context_mark.line + 1);
	return fail(ctx, (int)parser->problem_mark.line + 1, "", "invalid YAML: %s", problem);
}

enum status
definition_parse_yaml(struct saga_def *out, const char *text, size_t len, char *err, size_t errlen)
{
	struct parse_ctx *ctx = NULL;
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_document_t extra;
	bool parser_ready = false;
	bool doc_ready = false;
	bool extra_ready = false;
	yaml_node_t *root;
	enum status st;

	put_text(err, errlen, "%s", "");
	if (text == NULL)
		text = "";
	if (len > YAML_TEXT_MAX) {
		put_text(err, errlen, "line 1: definition too large: %zu bytes (at most %d)", len,
		         YAML_TEXT_MAX);
		st = STATUS_INVALID;
		goto cleanup;
	}
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL) {
		put_text(err, errlen, "out of memory");
		st = STATUS_NOMEM;
		goto cleanup;
	}
	ctx->err = err;
	ctx->errlen = errlen;
	ctx->root_line = 1;
	if (!yaml_parser_initialize(&parser)) {
		put_text(err, errlen, "out of memory");
		st = STATUS_NOMEM;
		goto cleanup;
	}
	parser_ready = true;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

	/* On failure yaml_parser_load releases the half-built document itself. */
	if (!yaml_parser_load(&parser, &doc)) {
		st = yaml_failure(ctx, &parser, text, len);
		goto cleanup;
	}
	doc_ready = true;
	root = yaml_document_get_root_node(&doc);
	if (root == NULL) {
		st = fail(ctx, 1, "", "empty document: expected a saga definition (name, steps)");
		goto cleanup;
	}
	if (!yaml_parser_load(&parser, &extra)) {
		st = yaml_failure(ctx, &parser, text, len);
		goto cleanup;
	}
	extra_ready = true;
	if (yaml_document_get_root_node(&extra) != NULL) {
		st = fail(ctx, line_of(yaml_document_get_root_node(&extra)), "",
		          "a second YAML document: give one definition per text");
		goto cleanup;
	}

	ctx->doc = &doc;
	ctx->root_line = line_of(root);
	if (root->type != YAML_MAPPING_NODE) {
		st = fail(ctx, line_of(root), "",
		          "expected a mapping (name, steps, ...) at the top level, found %s",
		          node_type_name(root));
		goto cleanup;
	}
	st = parse_mapping(ctx, root, saga_specs, N_SPECS(saga_specs), &ctx->def, "", "");
	if (st != STATUS_OK)
		goto cleanup;
	st = finish_definition(ctx);
	if (st != STATUS_OK)
		goto cleanup;
	memcpy(out, &ctx->def, sizeof(*out));

cleanup:
	if (extra_ready)
		yaml_document_delete(&extra);
	if (doc_ready)
		yaml_document_delete(&doc);
	if (parser_ready)
		yaml_parser_delete(&parser);
	free(ctx);
	return st;
}

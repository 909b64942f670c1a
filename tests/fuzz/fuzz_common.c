/* Shared checks of the libFuzzer targets (see fuzz_common.h). */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "definition.h"

void
fuzz_fail(const char *file, int line, const char *cond, const char *why)
{
	fprintf(stderr, "\n==fuzz== property broken at %s:%d: %s\n==fuzz== check: %s\n", file, line,
	        why, cond);
	fflush(stderr);
	abort();
}

static bool
is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool
fuzz_is_name(const char *s)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];

		if (!is_alnum(c) && c != '_' && c != '-')
			return false;
	}
	return n >= 1 && n <= SAGA_NAME_MAX;
}

bool
fuzz_is_key(const char *s, size_t max)
{
	static const char extra[] = "._:/+=@-";
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];

		if (!is_alnum(c) && memchr(extra, c, sizeof(extra) - 1) == NULL)
			return false;
	}
	return n >= 1 && n <= max;
}

bool
fuzz_is_uuid(const char *s)
{
	static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

	for (size_t i = 0; i < sizeof(shape) - 1; i++) {
		unsigned char c = (unsigned char)s[i];

		if (shape[i] == '-' ? c != '-'
		                    : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return s[sizeof(shape) - 1] == '\0';
}

bool
fuzz_is_subject(const char *s)
{
	size_t n = strlen(s);
	size_t tok = 0;

	if (n == 0 || n > SAGA_SUBJECT_MAX)
		return false;
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.' || c == '\0') {
			if (tok == 0)
				return false;
			tok = 0;
		} else if (is_alnum(c) || c == '_' || c == '-') {
			tok++;
		} else {
			return false;
		}
	}
	return true;
}

bool
fuzz_is_printable(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return false;
	}
	return true;
}

bool
fuzz_is_terminated(const char *buf, size_t cap)
{
	return memchr(buf, '\0', cap) != NULL;
}

bool
fuzz_is_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p != '\0') {
		unsigned char c = *p;
		uint32_t cp;
		int more;

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			cp = c & 0x1fu;
			more = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			cp = c & 0x0fu;
			more = 2;
		} else if (c >= 0xf0 && c <= 0xf4) {
			cp = c & 0x07u;
			more = 3;
		} else {
			return false;
		}
		for (int i = 1; i <= more; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false; /* also stops at the terminating NUL */
			cp = (cp << 6) | (p[i] & 0x3fu);
		}
		if ((more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		p += more + 1;
	}
	return true;
}

bool
fuzz_strict_utf8(void)
{
	static int strict = -1;

	if (strict < 0) {
		const char *v = getenv("SAGAD_FUZZ_STRICT_UTF8");

		/* On unless SAGAD_FUZZ_STRICT_UTF8=0: the codec promises UTF-8 text. */
		strict = v == NULL || v[0] == '\0' || strcmp(v, "0") != 0;
	}
	return strict == 1;
}

void
fuzz_check_failure(enum status st, const char *err, size_t errlen)
{
	FUZZ_CHECK(st == STATUS_INVALID || st == STATUS_DECODE || st == STATUS_TOO_LARGE,
	           "a refused input gets invalid, decode or too_large (nomem cannot happen here)");
	FUZZ_CHECK(fuzz_is_terminated(err, errlen), "the error text is terminated");
	FUZZ_CHECK(err[0] != '\0', "a refusal says why");
	FUZZ_CHECK(fuzz_is_printable(err), "the error text is one printable line (no CR/LF)");
}

uint32_t
fuzz_touch(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint32_t sum = 0;

	for (size_t i = 0; i < n; i++)
		sum = sum * 31u + b[i];
	return sum;
}

/* A retry policy as decoded: anything goes but it must be readable. */
static uint32_t
touch_policy(const struct retry_policy *r)
{
	return fuzz_touch(r, sizeof(*r));
}

void
fuzz_check_def_shape(const struct saga_def *def)
{
	FUZZ_CHECK(fuzz_is_terminated(def->name, sizeof(def->name)), "name is terminated");
	FUZZ_CHECK(fuzz_is_terminated(def->description, sizeof(def->description)),
	           "description is terminated");
	FUZZ_CHECK(def->n_steps >= 0 && def->n_steps <= SAGA_MAX_STEPS,
	           "a decoded definition has 0..SAGA_MAX_STEPS steps");
	for (int i = 0; i < def->n_steps; i++) {
		const struct step_def *s = &def->steps[i];

		FUZZ_CHECK(fuzz_is_terminated(s->name, sizeof(s->name)), "step name terminated");
		FUZZ_CHECK(fuzz_is_terminated(s->action_subject, sizeof(s->action_subject)),
		           "action subject terminated");
		FUZZ_CHECK(fuzz_is_terminated(s->compensation_subject,
		                              sizeof(s->compensation_subject)),
		           "compensation subject terminated");
		FUZZ_CHECK(fuzz_is_terminated(s->group, sizeof(s->group)), "group terminated");
		FUZZ_CHECK(
		        s->kind >= STEP_KIND_COMPENSATABLE && s->kind <= STEP_KIND_RETRIABLE,
		        "a decoded step kind is a known one (unspecified reads as compensatable)");
		(void)touch_policy(&s->retry);
		(void)touch_policy(&s->compensation_retry);
	}
}

static bool
policy_equal(const struct retry_policy *a, const struct retry_policy *b)
{
	return a->max_attempts == b->max_attempts &&
	       a->initial_backoff_ms == b->initial_backoff_ms &&
	       a->max_backoff_ms == b->max_backoff_ms &&
	       (memcmp(&a->multiplier, &b->multiplier, sizeof(a->multiplier)) == 0 ||
	        (a->multiplier == 0.0 && b->multiplier == 0.0)); /* proto3 drops -0.0 */
}

bool
fuzz_def_equal(const struct saga_def *a, const struct saga_def *b)
{
	if (strcmp(a->name, b->name) != 0 || a->version != b->version ||
	    strcmp(a->description, b->description) != 0 || a->deadline_ms != b->deadline_ms ||
	    a->n_steps != b->n_steps)
		return false;
	for (int i = 0; i < a->n_steps && i < SAGA_MAX_STEPS; i++) {
		const struct step_def *x = &a->steps[i];
		const struct step_def *y = &b->steps[i];

		if (strcmp(x->name, y->name) != 0 ||
		    strcmp(x->action_subject, y->action_subject) != 0 ||
		    strcmp(x->compensation_subject, y->compensation_subject) != 0 ||
		    x->kind != y->kind || x->timeout_ms != y->timeout_ms ||
		    !policy_equal(&x->retry, &y->retry) ||
		    !policy_equal(&x->compensation_retry, &y->compensation_retry) ||
		    strcmp(x->group, y->group) != 0)
			return false;
	}
	return true;
}

/* Both encoders: decode(encode(def)) == def (the canonical body with version 0). */
static void
check_def_round_trip(const struct saga_def *def)
{
	static struct saga_def again;
	static struct saga_def canon;
	struct bytes enc = {0};
	char err[FUZZ_ERR_LEN];
	char h1[17];
	char h2[17];
	enum status st;

	st = codec_encode_define_request(def, &enc);
	FUZZ_CHECK(st == STATUS_OK, "a definition can be encoded as a DefineRequest");
	st = codec_decode_define_request(enc.data, enc.len, &again, err, sizeof(err));
	FUZZ_CHECK(st == STATUS_OK, "an encoded DefineRequest decodes");
	FUZZ_CHECK(fuzz_def_equal(&again, def), "DefineRequest round trip keeps every field");
	free(enc.data);

	st = codec_encode_definition(def, &enc);
	FUZZ_CHECK(st == STATUS_OK, "a definition has a canonical encoding");
	st = codec_decode_definition(enc.data, enc.len, &again, err, sizeof(err));
	FUZZ_CHECK(st == STATUS_OK, "a canonical body decodes");
	canon = *def;
	canon.version = 0;
	FUZZ_CHECK(fuzz_def_equal(&again, &canon), "canonical round trip keeps all but version");
	free(enc.data);

	st = codec_definition_hash(def, h1);
	FUZZ_CHECK(st == STATUS_OK, "a definition has a hash");
	st = codec_definition_hash(&again, h2);
	FUZZ_CHECK(st == STATUS_OK, "its round trip has a hash");
	FUZZ_CHECK(strlen(h1) == 16 && strcmp(h1, h2) == 0,
	           "the hash is 16 hex digits and survives the round trip");
}

static void
check_structure(const struct saga_def *def)
{
	int pivots = 0;

	for (int i = 0; i < def->n_steps; i++) {
		int start = definition_group_start(def, i);
		int end = definition_group_end(def, i);

		FUZZ_CHECK(definition_step_index(def, def->steps[i].name) == i,
		           "step names are unique: the index of step i's name is i");
		FUZZ_CHECK(start >= 0 && start <= i && end > i && end <= def->n_steps,
		           "step i lies in its group [start, end)");
		for (int j = start; j < end; j++)
			FUZZ_CHECK(strcmp(def->steps[j].group, def->steps[i].group) == 0,
			           "a group's members share its name");
		if (def->steps[i].kind == STEP_KIND_PIVOT)
			pivots++;
	}
	FUZZ_CHECK(pivots <= 1, "at most one pivot");
	FUZZ_CHECK(pivots == 0 || def->steps[definition_pivot_index(def)].kind == STEP_KIND_PIVOT,
	           "the pivot index names the pivot");
	FUZZ_CHECK(definition_step_index(def, "") == -1, "no step has an empty name");
	FUZZ_CHECK(definition_step_index(def, NULL) == -1, "NULL finds nothing");
}

/* The bounds definition_validate promises for one retry policy. */
static bool
policy_in_bounds(const struct retry_policy *r)
{
	return r->max_attempts <= 1000 && r->initial_backoff_ms >= 1 &&
	       r->initial_backoff_ms <= r->max_backoff_ms && r->max_backoff_ms <= 3600 * 1000 &&
	       r->multiplier >= 1.0 && r->multiplier <= 10.0;
}

bool
fuzz_check_definition(const struct saga_def *def)
{
	static struct saga_def once;
	static struct saga_def twice;
	char field[128];
	char err[FUZZ_ERR_LEN];
	enum status st;

	fuzz_check_def_shape(def);
	check_def_round_trip(def);

	once = *def;
	definition_apply_defaults(&once);
	twice = once;
	definition_apply_defaults(&twice);
	FUZZ_CHECK(fuzz_def_equal(&once, &twice), "definition_apply_defaults is idempotent");

	st = definition_validate(def, field, sizeof(field), err, sizeof(err));
	FUZZ_CHECK(st == STATUS_OK || st == STATUS_INVALID, "validation says ok or invalid");
	FUZZ_CHECK(fuzz_is_terminated(field, sizeof(field)) && fuzz_is_terminated(err, sizeof(err)),
	           "validation texts are terminated");
	FUZZ_CHECK(fuzz_is_printable(field) && fuzz_is_printable(err),
	           "validation texts are single printable lines");
	if (st != STATUS_OK) {
		FUZZ_CHECK(field[0] != '\0' && err[0] != '\0',
		           "an invalid definition names the field and says why");
		return false;
	}
	FUZZ_CHECK(field[0] == '\0' && err[0] == '\0', "a valid definition leaves no complaint");
	FUZZ_CHECK(fuzz_def_equal(&once, def), "defaults change nothing in a valid definition");
	for (int i = 0; i < def->n_steps; i++) {
		const struct step_def *s = &def->steps[i];

		FUZZ_CHECK(fuzz_is_name(s->name), "a valid step name is allow-listed");
		FUZZ_CHECK(fuzz_is_subject(s->action_subject), "a valid action is a subject");
		FUZZ_CHECK(s->compensation_subject[0] == '\0' ||
		                   fuzz_is_subject(s->compensation_subject),
		           "a valid compensation is empty or a subject");
		FUZZ_CHECK(s->group[0] == '\0' || fuzz_is_name(s->group),
		           "a valid group is empty or a name");
		FUZZ_CHECK(s->timeout_ms > 0 && s->timeout_ms <= 24 * 3600 * INT64_C(1000),
		           "a valid timeout is in (0, 24h]");
		FUZZ_CHECK(policy_in_bounds(&s->retry) && policy_in_bounds(&s->compensation_retry),
		           "valid retry policies are within their bounds");
		FUZZ_CHECK(s->compensation_retry.max_attempts >= 1,
		           "compensations never retry without limit");
	}
	FUZZ_CHECK(def->deadline_ms == 0 || (def->deadline_ms >= 1000 &&
	                                     def->deadline_ms <= 30 * 24 * 3600 * INT64_C(1000)),
	           "a valid deadline is 0 or in [1s, 30d]");
	FUZZ_CHECK(fuzz_is_name(def->name), "a valid saga name is allow-listed");
	check_structure(def);
	return true;
}

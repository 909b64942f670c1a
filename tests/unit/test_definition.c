/* Unit tests of saga definitions: YAML parsing, defaults, validation, structure queries. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "definition.h"

static struct saga_def def;
static char err[512];

static enum status
parse(const char *yaml)
{
	return definition_parse_yaml(&def, yaml, strlen(yaml), err, sizeof(err));
}

/* Read sagas/<name> from the source tree, wherever the test runs from. Caller frees. */
static char *
read_saga_file(const char *name, size_t *len)
{
	const char *env = getenv("SAGAD_SOURCE_ROOT");
	const char *self = __FILE__;
	const char *suffix = "tests/unit/test_definition.c";
	char roots[4][512];
	int n_roots = 0;
	size_t self_len = strlen(self);
	size_t suffix_len = strlen(suffix);

	if (env != NULL)
		snprintf(roots[n_roots++], sizeof(roots[0]), "%s", env);
	if (self_len >= suffix_len && strcmp(self + self_len - suffix_len, suffix) == 0)
		snprintf(roots[n_roots++], sizeof(roots[0]), "%.*s.", (int)(self_len - suffix_len),
		         self);
	snprintf(roots[n_roots++], sizeof(roots[0]), ".");
	snprintf(roots[n_roots++], sizeof(roots[0]), "..");
	for (int i = 0; i < n_roots; i++) {
		char path[1100];
		FILE *f;
		char *buf;
		long size;

		snprintf(path, sizeof(path), "%s/sagas/%s", roots[i], name);
		f = fopen(path, "rb");
		if (f == NULL)
			continue;
		cr_assert_eq(fseek(f, 0, SEEK_END), 0);
		size = ftell(f);
		cr_assert_geq(size, 0);
		rewind(f);
		buf = malloc((size_t)size + 1);
		cr_assert_not_null(buf);
		cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
		buf[size] = '\0';
		fclose(f);
		*len = (size_t)size;
		return buf;
	}
	cr_assert_fail("sagas/%s not found (set SAGAD_SOURCE_ROOT)", name);
	return NULL;
}

static void
assert_retry(const struct retry_policy *r, uint32_t max_attempts, int64_t initial, int64_t max,
             double multiplier)
{
	cr_assert_eq(r->max_attempts, max_attempts);
	cr_assert_eq(r->initial_backoff_ms, initial);
	cr_assert_eq(r->max_backoff_ms, max);
	cr_assert_float_eq(r->multiplier, multiplier, 1e-12);
}

/* ---- examples ---- */

Test(definition, order_example_parses_with_the_expected_values)
{
	static const struct {
		const char *name;
		const char *action;
		const char *compensation;
	} want[] = {
	        {"reserve_stock", "stock.reserve", "stock.release"},
	        {"charge_card", "payments.charge", "payments.refund"},
	        {"ship", "shipping.ship", ""},
	};
	size_t len = 0;
	char *text = read_saga_file("order.yaml", &len);
	enum status st = definition_parse_yaml(&def, text, len, err, sizeof(err));

	free(text);
	cr_assert_eq(st, STATUS_OK, "%s", err);
	cr_assert_str_eq(def.name, "order");
	cr_assert_eq(def.version, 0);
	cr_assert_neq(def.description[0], '\0');
	cr_assert_eq(def.deadline_ms, 5 * 60 * 1000);
	cr_assert_eq(def.n_steps, 3);
	for (int i = 0; i < 3; i++) {
		const struct step_def *s = &def.steps[i];

		cr_assert_str_eq(s->name, want[i].name);
		cr_assert_str_eq(s->action_subject, want[i].action);
		cr_assert_str_eq(s->compensation_subject, want[i].compensation);
		cr_assert_eq(s->kind, STEP_KIND_COMPENSATABLE);
		cr_assert_eq(s->timeout_ms, 5000);
		cr_assert_str_eq(s->group, "");
		assert_retry(&s->retry, 3, 100, 2000, 2.0);
		assert_retry(&s->compensation_retry, 10, DEF_INITIAL_BACKOFF_MS, DEF_MAX_BACKOFF_MS,
		             DEF_MULTIPLIER);
	}
	cr_assert_eq(definition_pivot_index(&def), -1);
}

Test(definition, travel_example_has_a_group_a_pivot_and_an_unlimited_retriable_step)
{
	size_t len = 0;
	char *text = read_saga_file("travel.yaml", &len);
	enum status st = definition_parse_yaml(&def, text, len, err, sizeof(err));

	free(text);
	cr_assert_eq(st, STATUS_OK, "%s", err);
	cr_assert_str_eq(def.name, "travel");
	cr_assert_eq(def.n_steps, 4);
	cr_assert_str_eq(def.steps[0].group, "bookings");
	cr_assert_str_eq(def.steps[1].group, "bookings");
	cr_assert_eq(def.steps[0].kind, STEP_KIND_COMPENSATABLE);
	cr_assert_eq(def.steps[1].kind, STEP_KIND_COMPENSATABLE);
	cr_assert_eq(def.steps[2].kind, STEP_KIND_PIVOT);
	cr_assert_str_eq(def.steps[2].compensation_subject, "");
	cr_assert_eq(def.steps[3].kind, STEP_KIND_RETRIABLE);
	cr_assert_eq(def.steps[3].retry.max_attempts, 0, "0 = unlimited survives the defaults");
	cr_assert_float_eq(def.steps[3].retry.multiplier, 1.5, 1e-12);
	cr_assert_eq(def.steps[3].retry.max_backoff_ms, 5 * 60 * 1000);
	cr_assert_eq(definition_pivot_index(&def), 2);
	cr_assert_eq(definition_group_start(&def, 1), 0);
	cr_assert_eq(definition_group_end(&def, 0), 2);
}

/* ---- defaults ---- */

Test(definition, defaults_fill_every_omitted_field)
{
	cr_assert_eq(parse("name: s\nsteps:\n  - name: a\n    action: x.y\n"), STATUS_OK, "%s",
	             err);
	cr_assert_eq(def.deadline_ms, 0, "no deadline by default");
	cr_assert_str_eq(def.description, "");
	cr_assert_eq(def.steps[0].kind, STEP_KIND_COMPENSATABLE);
	cr_assert_eq(def.steps[0].timeout_ms, DEF_TIMEOUT_MS);
	cr_assert_str_eq(def.steps[0].compensation_subject, "");
	assert_retry(&def.steps[0].retry, DEF_MAX_ATTEMPTS, DEF_INITIAL_BACKOFF_MS,
	             DEF_MAX_BACKOFF_MS, DEF_MULTIPLIER);
	assert_retry(&def.steps[0].compensation_retry, DEF_COMP_MAX_ATTEMPTS,
	             DEF_INITIAL_BACKOFF_MS, DEF_MAX_BACKOFF_MS, DEF_MULTIPLIER);
}

Test(definition, a_retriable_step_defaults_to_unlimited_attempts)
{
	cr_assert_eq(parse("name: s\nsteps:\n"
	                   "  - {name: a, action: x.a, compensation: x.undo}\n"
	                   "  - {name: b, action: x.b, kind: pivot}\n"
	                   "  - {name: c, action: x.c, kind: retriable}\n"),
	             STATUS_OK, "%s", err);
	cr_assert_eq(def.steps[0].retry.max_attempts, DEF_MAX_ATTEMPTS);
	cr_assert_eq(def.steps[1].retry.max_attempts, DEF_MAX_ATTEMPTS);
	cr_assert_eq(def.steps[2].retry.max_attempts, 0);
	cr_assert_eq(def.steps[2].compensation_retry.max_attempts, DEF_COMP_MAX_ATTEMPTS);
}

Test(definition, explicit_defaults_give_a_byte_identical_struct)
{
	static const char *const omitted = "name: s\n"
	                                   "steps:\n"
	                                   "  - name: a\n"
	                                   "    action: x.a\n"
	                                   "    compensation: x.undo\n"
	                                   "  - name: b\n"
	                                   "    action: x.b\n"
	                                   "    kind: pivot\n"
	                                   "  - name: c\n"
	                                   "    action: x.c\n"
	                                   "    kind: retriable\n";
	static const char *const given = "name: s\n"
	                                 "description: \"\"\n"
	                                 "deadline: 0\n"
	                                 "steps:\n"
	                                 "  - name: a\n"
	                                 "    action: x.a\n"
	                                 "    compensation: x.undo\n"
	                                 "    kind: compensatable\n"
	                                 "    timeout: 30s\n"
	                                 "    group: \"\"\n"
	                                 "    retry:\n"
	                                 "      max_attempts: 3\n"
	                                 "      initial_backoff: 200ms\n"
	                                 "      max_backoff: 30s\n"
	                                 "      multiplier: 2\n"
	                                 "    compensation_retry:\n"
	                                 "      max_attempts: 10\n"
	                                 "      initial_backoff: 200\n"
	                                 "      max_backoff: 30000ms\n"
	                                 "      multiplier: 2.0\n"
	                                 "  - name: b\n"
	                                 "    action: x.b\n"
	                                 "    kind: pivot\n"
	                                 "    timeout: 30000\n"
	                                 "    retry: {max_attempts: 3, multiplier: 2.00}\n"
	                                 "    compensation_retry: {max_attempts: 10}\n"
	                                 "  - name: c\n"
	                                 "    action: x.c\n"
	                                 "    kind: retriable\n"
	                                 "    retry: {max_attempts: 0, initial_backoff: 200ms}\n";
	static struct saga_def a;
	static struct saga_def b;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	cr_assert_eq(definition_parse_yaml(&a, omitted, strlen(omitted), err, sizeof(err)),
	             STATUS_OK, "%s", err);
	cr_assert_eq(definition_parse_yaml(&b, given, strlen(given), err, sizeof(err)), STATUS_OK,
	             "%s", err);
	cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0);
}

Test(definition, apply_defaults_is_idempotent_and_keeps_unlimited_on_retriable_steps)
{
	static struct saga_def d;
	static struct saga_def once;

	memset(&d, 0, sizeof(d));
	strcpy(d.name, "s");
	d.n_steps = 2;
	strcpy(d.steps[0].name, "a");
	strcpy(d.steps[0].action_subject, "x.a");
	strcpy(d.steps[1].name, "b");
	strcpy(d.steps[1].action_subject, "x.b");
	d.steps[1].kind = STEP_KIND_RETRIABLE;
	definition_apply_defaults(&d);
	cr_assert_eq(d.steps[0].kind, STEP_KIND_COMPENSATABLE, "unset kind means compensatable");
	cr_assert_eq(d.steps[0].retry.max_attempts, DEF_MAX_ATTEMPTS);
	cr_assert_eq(d.steps[1].retry.max_attempts, 0);
	cr_assert_eq(d.steps[1].timeout_ms, DEF_TIMEOUT_MS);
	memcpy(&once, &d, sizeof(d));
	definition_apply_defaults(&d);
	cr_assert_eq(memcmp(&once, &d, sizeof(d)), 0);
	cr_assert_eq(definition_validate(&d, NULL, 0, NULL, 0), STATUS_OK);
}

Test(definition, apply_defaults_keeps_given_values)
{
	static struct saga_def d;

	memset(&d, 0, sizeof(d));
	d.n_steps = 1;
	d.steps[0].kind = STEP_KIND_PIVOT;
	d.steps[0].timeout_ms = 1234;
	d.steps[0].retry.max_attempts = 7;
	d.steps[0].retry.multiplier = 1.5;
	d.steps[0].compensation_retry.max_backoff_ms = 999;
	definition_apply_defaults(&d);
	cr_assert_eq(d.steps[0].kind, STEP_KIND_PIVOT);
	cr_assert_eq(d.steps[0].timeout_ms, 1234);
	assert_retry(&d.steps[0].retry, 7, DEF_INITIAL_BACKOFF_MS, DEF_MAX_BACKOFF_MS, 1.5);
	assert_retry(&d.steps[0].compensation_retry, DEF_COMP_MAX_ATTEMPTS, DEF_INITIAL_BACKOFF_MS,
	             999, DEF_MULTIPLIER);
}

/* ---- accepted forms ---- */

Test(definition, flow_style_and_quoted_values_are_accepted)
{
	cr_assert_eq(parse("{name: s, deadline: \"10m\", steps: [{name: a, action: 'x.y', "
	                   "timeout: \"250ms\", retry: {multiplier: 1.25}}]}"),
	             STATUS_OK, "%s", err);
	cr_assert_eq(def.deadline_ms, 10 * 60 * 1000);
	cr_assert_eq(def.steps[0].timeout_ms, 250);
	cr_assert_float_eq(def.steps[0].retry.multiplier, 1.25, 1e-12);
}

Test(definition, limits_themselves_are_accepted)
{
	char yaml[8192];
	size_t o = 0;
	char name[SAGA_NAME_MAX + 1];

	memset(name, 'n', SAGA_NAME_MAX);
	name[SAGA_NAME_MAX] = '\0';
	o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "name: %s\ndeadline: 30d\nsteps:\n",
	                      name);
	for (int i = 0; i < SAGA_MAX_STEPS; i++)
		o += (size_t)snprintf(yaml + o, sizeof(yaml) - o,
		                      "  - {name: s%d, action: a.s%d, timeout: 24h, "
		                      "retry: {max_attempts: 1000, initial_backoff: 1h, "
		                      "max_backoff: 1h, multiplier: 10}}\n",
		                      i, i);
	cr_assert_lt(o, sizeof(yaml));
	cr_assert_eq(parse(yaml), STATUS_OK, "%s", err);
	cr_assert_eq(def.n_steps, SAGA_MAX_STEPS);
	cr_assert_str_eq(def.name, name);
}

/* ---- rejections ---- */

struct reject_case {
	const char *what; /* the rule broken */
	const char *yaml; /* the document */
	int line;         /* expected line, 0 = not checked */
	const char *path; /* must appear in the error: field path */
	const char *why;  /* must appear in the error: reason */
};

#define ONE_STEP(extra) "name: s\nsteps:\n  - name: a\n    action: x.y\n" extra

static const struct reject_case reject_cases[] = {
        {"unknown step key", ONE_STEP("    retries: 3\n"), 5,
         "steps[0] (a): ", "unknown key \"retries\""},
        {"unknown top-level key", "name: s\nversion: 2\nsteps: [{name: a, action: x.y}]\n", 2,
         "(top level)", "unknown key \"version\""},
        {"unknown retry key", ONE_STEP("    retry:\n      attempts: 3\n"), 6,
         "steps[0] (a).retry: ", "unknown key \"attempts\""},
        {"duplicate key", "name: s\nname: t\nsteps: [{name: a, action: x.y}]\n", 2,
         "name: ", "duplicate key (first given at line 1)"},
        {"duplicate step key", ONE_STEP("    timeout: 1s\n    timeout: 2s\n"), 6,
         "steps[0] (a).timeout: ", "duplicate key"},
        {"duplicate step names",
         "name: s\nsteps:\n  - name: a\n    action: x.y\n  - name: a\n    action: x.z\n", 5,
         "steps[1] (a).name: ", "duplicate step name \"a\" (also steps[0])"},
        {"missing action", "name: s\nsteps:\n  - name: a\n    compensation: x.u\n", 3,
         "steps[0] (a).action: ", "required"},
        {"missing step name", "name: s\nsteps:\n  - action: x.y\n", 3,
         "steps[0].name: ", "required"},
        {"missing saga name", "steps: [{name: a, action: x.y}]\n", 1, "name: ", "required"},
        {"missing steps", "name: s\n", 1, "steps: ", "required"},
        {"empty step list", "name: s\nsteps: []\n", 2, "steps: ", "at least one step"},
        {"compensation on a retriable step",
         "name: s\nsteps:\n  - name: a\n    action: x.y\n  - name: b\n    action: x.z\n"
         "    kind: retriable\n    compensation: x.undo\n",
         8, "steps[1] (b).compensation: ", "a retriable step cannot have a compensation"},
        {"second pivot",
         "name: s\nsteps:\n  - {name: a, action: x.a, kind: pivot}\n"
         "  - {name: b, action: x.b, kind: pivot}\n",
         4, "steps[1] (b).kind: ", "a second pivot: steps[0] (a)"},
        {"compensatable after pivot",
         "name: s\nsteps:\n  - {name: a, action: x.a, kind: pivot}\n"
         "  - {name: b, action: x.b, compensation: x.u}\n",
         4, "steps[1] (b).kind: ", "cannot follow the pivot steps[0] (a)"},
        {"compensatable after retriable",
         "name: s\nsteps:\n  - {name: a, action: x.a, kind: retriable}\n"
         "  - {name: b, action: x.b, kind: compensatable}\n",
         4, "steps[1] (b).kind: ", "cannot follow the retriable step steps[0] (a)"},
        {"pivot with compensation",
         "name: s\nsteps:\n  - name: a\n    action: x.a\n    kind: pivot\n"
         "    compensation: x.undo\n",
         6, "steps[0] (a).compensation: ", "a pivot step cannot have a compensation"},
        {"pivot in a group",
         "name: s\nsteps:\n  - name: a\n    action: x.a\n    kind: pivot\n    group: g\n", 6,
         "steps[0] (a).group: ", "a pivot step cannot be in a parallel group"},
        {"group split",
         "name: s\nsteps:\n  - {name: a, action: x.a, group: g}\n  - {name: b, action: x.b}\n"
         "  - {name: c, action: x.c, group: g}\n",
         5, "steps[2] (c).group: ", "group \"g\" is split: steps[0] (a) is in it but steps[1] (b)"},
        {"group mixing kinds",
         "name: s\nsteps:\n  - {name: a, action: x.a, group: g}\n"
         "  - {name: b, action: x.b, group: g, kind: retriable}\n",
         4, "steps[1] (b).group: ", "mixes kinds"},
        {"invalid group name", ONE_STEP("    group: my group\n"), 5,
         "steps[0] (a).group: ", "not a valid name"},
        {"bad duration", ONE_STEP("    timeout: 3x\n"), 5,
         "steps[0] (a).timeout: ", "\"3x\" is not a duration"},
        {"negative duration", ONE_STEP("    timeout: -5s\n"), 5,
         "steps[0] (a).timeout: ", "negative"},
        {"bad backoff duration", ONE_STEP("    retry:\n      max_backoff: soon\n"), 6,
         "steps[0] (a).retry.max_backoff: ", "\"soon\" is not a duration"},
        {"zero timeout", ONE_STEP("    timeout: 0\n"), 5, "steps[0] (a).timeout: ", "more than 0"},
        {"timeout over 24h", ONE_STEP("    timeout: 25h\n"), 5,
         "steps[0] (a).timeout: ", "at most 24h (got 25h)"},
        {"deadline too short", "name: s\ndeadline: 500ms\nsteps: [{name: a, action: x.y}]\n", 2,
         "deadline: ", "between 1s and 30d (got 500ms)"},
        {"deadline too long", "name: s\ndeadline: 31d\nsteps: [{name: a, action: x.y}]\n", 2,
         "deadline: ", "(got 31d)"},
        {"subject with *", ONE_STEP("    compensation: x.*\n"), 5,
         "steps[0] (a).compensation: ", "\"x.*\" is not a valid subject"},
        {"subject with >", "name: s\nsteps:\n  - name: a\n    action: x.>\n", 4,
         "steps[0] (a).action: ", "\"x.>\" is not a valid subject"},
        {"subject with a space", "name: s\nsteps:\n  - name: a\n    action: x y\n", 4,
         "steps[0] (a).action: ", "\"x y\" is not a valid subject"},
        {"subject with an empty token", "name: s\nsteps:\n  - name: a\n    action: x..y\n", 4,
         "steps[0] (a).action: ", "\"x..y\" is not a valid subject"},
        {"subject with CR/LF", "name: s\nsteps:\n  - name: a\n    action: \"x.y\\r\\nPUB z\"\n", 4,
         "steps[0] (a).action: ", "\"x.y\\r\\nPUB z\" is not a valid subject"},
        {"subject with a trailing dot", "name: s\nsteps:\n  - name: a\n    action: x.\n", 4,
         "steps[0] (a).action: ", "not a valid subject"},
        {"invalid saga name", "name: my saga\nsteps: [{name: a, action: x.y}]\n", 1,
         "name: ", "\"my saga\" is not a valid name"},
        {"invalid step name", "name: s\nsteps:\n  - name: a.b\n    action: x.y\n", 3,
         "steps[0].name: ", "\"a.b\" is not a valid name"},
        {"max_attempts 0 on a compensatable step", ONE_STEP("    retry:\n      max_attempts: 0\n"),
         6, "steps[0] (a).retry.max_attempts: ", "only allowed for the action of a retriable step"},
        {"max_attempts 0 on a pivot",
         "name: s\nsteps:\n  - name: a\n    action: x.y\n    kind: pivot\n"
         "    retry: {max_attempts: 0}\n",
         6, "steps[0] (a).retry.max_attempts: ", "0 (unlimited)"},
        {"unlimited compensation attempts",
         ONE_STEP("    compensation: x.u\n    compensation_retry:\n      max_attempts: 0\n"), 7,
         "steps[0] (a).compensation_retry.max_attempts: ", "0 (unlimited)"},
        {"max_attempts over 1000", ONE_STEP("    retry: {max_attempts: 1001}\n"), 5,
         "steps[0] (a).retry.max_attempts: ", "at most 1000"},
        {"negative max_attempts", ONE_STEP("    retry: {max_attempts: -1}\n"), 5,
         "steps[0] (a).retry.max_attempts: ", "\"-1\" is negative"},
        {"non-numeric max_attempts", ONE_STEP("    retry: {max_attempts: three}\n"), 5,
         "steps[0] (a).retry.max_attempts: ", "\"three\" is not a whole number"},
        {"fractional max_attempts", ONE_STEP("    retry: {max_attempts: 2.5}\n"), 5,
         "steps[0] (a).retry.max_attempts: ", "not a whole number"},
        {"huge max_attempts", ONE_STEP("    retry: {max_attempts: 99999999999}\n"), 5,
         "steps[0] (a).retry.max_attempts: ", "too large"},
        {"multiplier 0.5", ONE_STEP("    retry: {multiplier: 0.5}\n"), 5,
         "steps[0] (a).retry.multiplier: ", "between 1 and 10 (got 0.5)"},
        {"multiplier 0", ONE_STEP("    retry: {multiplier: 0}\n"), 5,
         "steps[0] (a).retry.multiplier: ", "(got 0)"},
        {"multiplier over 10", ONE_STEP("    compensation_retry: {multiplier: 10.5}\n"), 5,
         "steps[0] (a).compensation_retry.multiplier: ", "(got 10.5)"},
        {"multiplier in exponent form", ONE_STEP("    retry: {multiplier: 1e1}\n"), 5,
         "steps[0] (a).retry.multiplier: ", "\"1e1\" is not a number"},
        {"multiplier not a number", ONE_STEP("    retry: {multiplier: .nan}\n"), 5,
         "steps[0] (a).retry.multiplier: ", "is not a number"},
        {"initial backoff above max backoff",
         ONE_STEP("    retry:\n      initial_backoff: 5s\n      max_backoff: 1s\n"), 7,
         "steps[0] (a).retry.max_backoff: ", "1s is less than initial_backoff 5s"},
        {"initial backoff above the default max backoff",
         ONE_STEP("    retry:\n      initial_backoff: 1h\n"), 5,
         "steps[0] (a).retry.max_backoff: ", "30s is less than initial_backoff 1h"},
        {"zero backoff", ONE_STEP("    retry:\n      initial_backoff: 0ms\n"), 6,
         "steps[0] (a).retry.initial_backoff: ", "between 1ms and 1h (got 0ms)"},
        {"backoff over 1h", ONE_STEP("    retry:\n      max_backoff: 2h\n"), 6,
         "steps[0] (a).retry.max_backoff: ", "(got 2h)"},
        {"unknown kind", ONE_STEP("    kind: optional\n"), 5,
         "steps[0] (a).kind: ", "\"optional\" is not a step kind"},
        {"mapping where a scalar is expected", ONE_STEP("    timeout: {s: 5}\n"), 5,
         "steps[0] (a).timeout: ", "expected a single value, found a mapping"},
        {"list where a scalar is expected", "name: [a, b]\nsteps: [{name: a, action: x.y}]\n", 1,
         "name: ", "found a list"},
        {"scalar where a mapping is expected", ONE_STEP("    retry: 3\n"), 5,
         "steps[0] (a).retry: ", "expected a mapping, found a scalar"},
        {"mapping where the steps list is expected", "name: s\nsteps:\n  a: {action: x.y}\n", 3,
         "steps: ", "expected a list of steps, found a mapping"},
        {"scalar step", "name: s\nsteps:\n  - a\n", 3, "steps[0]: ", "expected a mapping"},
        {"key that is not a scalar", "name: s\n[a]: b\nsteps: [{name: a, action: x.y}]\n", 2,
         "(top level): ", "expected a key, found a list"},
        {"null value", "name: s\ndescription:\nsteps: [{name: a, action: x.y}]\n", 2,
         "description: ", "has no value"},
        {"NUL in a value", "name: \"a\\0b\"\nsteps: [{name: a, action: x.y}]\n", 1,
         "name: ", "contains a NUL character"},
        {"unclosed bracket", "name: s\nsteps: [\n  {name: a, action: x.y}\n\n", 0, "",
         "invalid YAML"},
        {"bad indentation", "name: s\n steps: x\n", 2, "", "invalid YAML"},
        {"invalid UTF-8", "name: s\xff\nsteps: [{name: a, action: x.y}]\n", 1, "",
         "invalid YAML input"},
        {"undefined alias", "name: *nope\nsteps: [{name: a, action: x.y}]\n", 0, "",
         "invalid YAML"},
        {"empty document", "", 1, "", "empty document"},
        {"document of comments only", "# nothing here\n\n", 1, "", "empty document"},
        {"scalar document", "just text\n", 1, "", "expected a mapping"},
        {"two documents", "name: s\nsteps: [{name: a, action: x.y}]\n---\nname: t\n", 4, "",
         "a second YAML document"},
};

Test(definition, every_rule_rejects_with_line_field_path_and_reason)
{
	for (size_t i = 0; i < sizeof(reject_cases) / sizeof(reject_cases[0]); i++) {
		const struct reject_case *c = &reject_cases[i];
		char prefix[32];
		enum status st;

		memset(&def, 0xab, sizeof(def));
		err[0] = '\0';
		st = parse(c->yaml);
		cr_expect_eq(st, STATUS_INVALID, "%s: accepted (status %d)", c->what, st);
		if (st == STATUS_OK)
			continue;
		cr_expect_eq(strncmp(err, "line ", 5), 0, "%s: no line in \"%s\"", c->what, err);
		if (c->line > 0) {
			snprintf(prefix, sizeof(prefix), "line %d: ", c->line);
			cr_expect_eq(strncmp(err, prefix, strlen(prefix)), 0,
			             "%s: want \"%s\" in \"%s\"", c->what, prefix, err);
		}
		cr_expect_not_null(strstr(err, c->path), "%s: want path \"%s\" in \"%s\"", c->what,
		                   c->path, err);
		cr_expect_not_null(strstr(err, c->why), "%s: want \"%s\" in \"%s\"", c->what,
		                   c->why, err);
		cr_expect_null(strchr(err, '\n'), "%s: newline in \"%s\"", c->what, err);
	}
}

Test(definition, a_failed_parse_leaves_the_output_untouched)
{
	static struct saga_def before;

	memset(&def, 0x5a, sizeof(def));
	memcpy(&before, &def, sizeof(def));
	cr_assert_eq(parse(ONE_STEP("    kind: pivot\n    compensation: x.u\n")), STATUS_INVALID);
	cr_assert_eq(memcmp(&before, &def, sizeof(def)), 0);
}

Test(definition, unclosed_bracket_reports_a_line_number)
{
	cr_assert_eq(parse("name: s\nsteps: [\n  {name: a, action: x.y}\n\n"), STATUS_INVALID);
	/* libyaml notices the missing ']' at the end of the text, on line 5. */
	cr_assert_eq(strncmp(err, "line 5: ", 8), 0, "%s", err);
	cr_assert_not_null(strstr(err, "flow sequence"), "%s", err);
	cr_assert_not_null(strstr(err, "started at line 2"), "%s", err);
}

Test(definition, over_long_names_are_refused_not_truncated)
{
	char name[SAGA_NAME_MAX + 2];
	char yaml[512];

	memset(name, 'n', SAGA_NAME_MAX + 1);
	name[SAGA_NAME_MAX + 1] = '\0';
	snprintf(yaml, sizeof(yaml), "name: %s\nsteps: [{name: a, action: x.y}]\n", name);
	cr_assert_eq(parse(yaml), STATUS_INVALID);
	cr_assert_str_eq(err, "line 1: name: longer than 64 characters (65 given)");

	snprintf(yaml, sizeof(yaml), "name: s\nsteps:\n  - name: %s\n    action: x.y\n", name);
	cr_assert_eq(parse(yaml), STATUS_INVALID);
	cr_assert_str_eq(err, "line 3: steps[0].name: longer than 64 characters (65 given)");

	snprintf(yaml, sizeof(yaml),
	         "name: s\nsteps:\n  - name: a\n    action: x.y\n    group: %s\n", name);
	cr_assert_eq(parse(yaml), STATUS_INVALID);
	cr_assert_str_eq(err, "line 5: steps[0] (a).group: longer than 64 characters (65 given)");
}

Test(definition, over_long_subjects_and_descriptions_are_refused)
{
	char yaml[2048];
	char text[SAGA_DESCRIPTION_MAX + 2];

	memset(text, 'x', SAGA_SUBJECT_MAX + 1);
	text[SAGA_SUBJECT_MAX + 1] = '\0';
	snprintf(yaml, sizeof(yaml), "name: s\nsteps:\n  - name: a\n    action: %s\n", text);
	cr_assert_eq(parse(yaml), STATUS_INVALID);
	cr_assert_str_eq(err,
	                 "line 4: steps[0] (a).action: longer than 128 characters (129 given)");

	memset(text, 'd', SAGA_DESCRIPTION_MAX + 1);
	text[SAGA_DESCRIPTION_MAX + 1] = '\0';
	snprintf(yaml, sizeof(yaml), "name: s\ndescription: %s\nsteps: [{name: a, action: x.y}]\n",
	         text);
	cr_assert_eq(parse(yaml), STATUS_INVALID);
	cr_assert_str_eq(err, "line 2: description: longer than 512 characters (513 given)");

	text[SAGA_DESCRIPTION_MAX] = '\0';
	snprintf(yaml, sizeof(yaml), "name: s\ndescription: %s\nsteps: [{name: a, action: x.y}]\n",
	         text);
	cr_assert_eq(parse(yaml), STATUS_OK, "%s", err);
	cr_assert_eq(strlen(def.description), SAGA_DESCRIPTION_MAX);
}

Test(definition, thirty_three_steps_are_too_many)
{
	char yaml[4096];
	size_t o = 0;

	o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "name: s\nsteps:\n");
	for (int i = 0; i < SAGA_MAX_STEPS + 1; i++)
		o += (size_t)snprintf(yaml + o, sizeof(yaml) - o,
		                      "  - {name: s%d, action: a.s%d}\n", i, i);
	cr_assert_lt(o, sizeof(yaml));
	cr_assert_eq(parse(yaml), STATUS_INVALID);
	cr_assert_str_eq(err, "line 35: steps: too many steps: 33 (at most 32)");
}

Test(definition, validation_errors_carry_the_line_of_the_offending_key)
{
	cr_assert_eq(parse("name: s\n"
	                   "steps:\n"
	                   "  - name: a\n"
	                   "    action: x.a\n"
	                   "  - name: b\n"
	                   "    action: x.b\n"
	                   "  - name: ship\n"
	                   "    action: x.c\n"
	                   "    kind: retriable\n"
	                   "    timeout: 5s\n"
	                   "    compensation: x.undo\n"),
	             STATUS_INVALID);
	cr_assert_str_eq(err, "line 11: steps[2] (ship).compensation: a retriable step cannot "
	                      "have a compensation");
}

Test(definition, error_buffers_may_be_null)
{
	cr_assert_eq(definition_parse_yaml(&def, "name: [", 7, NULL, 0), STATUS_INVALID);
	cr_assert_eq(definition_parse_yaml(&def, NULL, 0, NULL, 0), STATUS_INVALID);
	cr_assert_eq(parse("name: s\nsteps: [{name: a, action: x.y}]\n"), STATUS_OK);
	def.steps[0].kind = 9;
	cr_assert_eq(definition_validate(&def, NULL, 0, NULL, 0), STATUS_INVALID);
}

Test(definition, error_messages_are_cut_to_the_buffer)
{
	char small[16];

	cr_assert_eq(definition_parse_yaml(&def, "name: [", 7, small, sizeof(small)),
	             STATUS_INVALID);
	cr_assert_eq(strlen(small), sizeof(small) - 1);
}

/* ---- validate on its own (protobuf input) ---- */

static void
make_valid(struct saga_def *d)
{
	memset(d, 0, sizeof(*d));
	strcpy(d->name, "s");
	d->n_steps = 3;
	strcpy(d->steps[0].name, "a");
	strcpy(d->steps[0].action_subject, "x.a");
	strcpy(d->steps[0].compensation_subject, "x.undo_a");
	strcpy(d->steps[1].name, "b");
	strcpy(d->steps[1].action_subject, "x.b");
	d->steps[1].kind = STEP_KIND_PIVOT;
	strcpy(d->steps[2].name, "ship");
	strcpy(d->steps[2].action_subject, "x.c");
	d->steps[2].kind = STEP_KIND_RETRIABLE;
	definition_apply_defaults(d);
}

Test(definition, validate_writes_the_bare_field_path_and_the_reason)
{
	static struct saga_def d;
	char field[64];
	char why[256];

	make_valid(&d);
	cr_assert_eq(definition_validate(&d, field, sizeof(field), why, sizeof(why)), STATUS_OK,
	             "%s: %s", field, why);
	strcpy(d.steps[2].compensation_subject, "x.undo_c");
	cr_assert_eq(definition_validate(&d, field, sizeof(field), why, sizeof(why)),
	             STATUS_INVALID);
	cr_assert_str_eq(field, "steps[2].compensation");
	cr_assert_str_eq(why, "a retriable step cannot have a compensation");
}

Test(definition, validate_rejects_unterminated_strings_and_bad_counts)
{
	static struct saga_def d;
	char field[64];
	char why[256];

	make_valid(&d);
	memset(d.steps[1].action_subject, 'x', sizeof(d.steps[1].action_subject));
	cr_assert_eq(definition_validate(&d, field, sizeof(field), why, sizeof(why)),
	             STATUS_INVALID);
	cr_assert_str_eq(field, "steps[1].action");

	make_valid(&d);
	d.n_steps = SAGA_MAX_STEPS + 1;
	cr_assert_eq(definition_validate(&d, field, sizeof(field), why, sizeof(why)),
	             STATUS_INVALID);
	cr_assert_str_eq(field, "steps");

	make_valid(&d);
	d.n_steps = 0;
	cr_assert_eq(definition_validate(&d, field, sizeof(field), why, sizeof(why)),
	             STATUS_INVALID);
	cr_assert_str_eq(field, "steps");

	make_valid(&d);
	d.steps[0].retry.multiplier = NAN;
	cr_assert_eq(definition_validate(&d, field, sizeof(field), why, sizeof(why)),
	             STATUS_INVALID);
	cr_assert_str_eq(field, "steps[0].retry.multiplier");

	make_valid(&d);
	d.deadline_ms = -1;
	cr_assert_eq(definition_validate(&d, field, sizeof(field), why, sizeof(why)),
	             STATUS_INVALID);
	cr_assert_str_eq(field, "deadline");
}

/* ---- structure queries ---- */

Test(definition, group_start_and_end_span_consecutive_members)
{
	cr_assert_eq(parse("name: s\nsteps:\n"
	                   "  - {name: a, action: x.a}\n"
	                   "  - {name: b, action: x.b, group: g1}\n"
	                   "  - {name: c, action: x.c, group: g1}\n"
	                   "  - {name: d, action: x.d, group: g1}\n"
	                   "  - {name: e, action: x.e, group: g2}\n"
	                   "  - {name: f, action: x.f, group: g2}\n"
	                   "  - {name: g, action: x.g}\n"),
	             STATUS_OK, "%s", err);
	static const struct {
		int i, start, end;
	} want[] = {
	        {0, 0, 1}, {1, 1, 4}, {2, 1, 4}, {3, 1, 4}, {4, 4, 6}, {5, 4, 6}, {6, 6, 7},
	};
	for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
		cr_expect_eq(definition_group_start(&def, want[k].i), want[k].start, "start of %d",
		             want[k].i);
		cr_expect_eq(definition_group_end(&def, want[k].i), want[k].end, "end of %d",
		             want[k].i);
	}
}

Test(definition, pivot_index_finds_the_pivot_or_minus_one)
{
	cr_assert_eq(parse("name: s\nsteps:\n  - {name: a, action: x.a}\n"
	                   "  - {name: b, action: x.b, kind: pivot}\n"
	                   "  - {name: c, action: x.c, kind: retriable}\n"),
	             STATUS_OK, "%s", err);
	cr_assert_eq(definition_pivot_index(&def), 1);
	cr_assert_eq(parse("name: s\nsteps:\n  - {name: a, action: x.a}\n"), STATUS_OK, "%s", err);
	cr_assert_eq(definition_pivot_index(&def), -1);
}

Test(definition, step_index_finds_steps_by_name)
{
	cr_assert_eq(parse("name: s\nsteps:\n  - {name: a, action: x.a}\n"
	                   "  - {name: b, action: x.b}\n"),
	             STATUS_OK, "%s", err);
	cr_assert_eq(definition_step_index(&def, "a"), 0);
	cr_assert_eq(definition_step_index(&def, "b"), 1);
	cr_assert_eq(definition_step_index(&def, "c"), -1);
	cr_assert_eq(definition_step_index(&def, ""), -1);
	cr_assert_eq(definition_step_index(&def, NULL), -1);
}

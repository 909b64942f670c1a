/*
 * Randomized model-based tests of the saga engine: random valid definitions
 * played against a hostile simulated world (lost, duplicated, reordered and
 * stale replies, timers, operator commands, restarts from a copy), with the
 * saga invariants checked after every single event.
 *
 * SAGAD_TEST_SEED=<n> replays from seed n (run k uses seed n + k, so the seed
 * printed for a failing run reproduces it as run 0 of the same test);
 * SAGAD_TEST_RUNS=<n> overrides the number of runs of each test;
 * SAGAD_TEST_SURVEY=1 plays every run and lists each kind of violation once.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "definition.h"
#include "engine.h"

#define MAX_INFLIGHT     512                      /* commands sent and not yet answered or lost */
#define MAX_DELIVERED    512                      /* replies delivered once, kept for duplicates */
#define MAX_DUE          (2 * SAGA_MAX_STEPS + 2) /* timer events fetched at once */
#define OUTPUT_MAX       16                       /* bytes of a random reply output */
#define TRACE_MAX        65536 /* bytes of event trace kept for a failure report */
#define ERR_MAX          1024  /* bytes of the first violation found */
#define END_STEPS        5000  /* events allowed for a saga to end once the world calms */
#define AFTER_END_EVENTS 12    /* random events thrown at a saga after it ended */
#define START_MS         INT64_C(1700000000000)

/* How hostile the simulated world is; weights are relative. */
struct profile {
	const char *name; /* for failure messages */
	int runs;         /* runs per test execution (SAGAD_TEST_RUNS overrides) */
	int w_deliver;    /* answer an in-flight command */
	int w_duplicate;  /* deliver an already delivered reply again */
	int w_stale;      /* a reply for an attempt the step does not wait on */
	int w_drop;       /* lose an in-flight command: only its timeout moves things */
	int w_time;       /* advance the clock and fire the due timers */
	int w_spurious;   /* a timer event that is not (yet) due */
	int w_abort;      /* operator abort */
	int w_retry;      /* operator retry */
	int w_resolve;    /* operator resolve */
	int w_restart;    /* reload the saga from what was persisted */
	int w_start;      /* a second start for the same saga */
	int max_fail_pct; /* upper bound of a run's action failure rate */
	int deadline_pct; /* share of definitions with a saga deadline */
	int max_actions;  /* random events before the world calms down */
	int max_steps;    /* largest definition (1..SAGA_MAX_STEPS) */
};

/* A command the engine sent. */
struct command {
	int step;              /* step index */
	enum step_phase phase; /* action or compensation */
	uint32_t attempt;      /* attempt of that phase */
};

/* A reply the world delivered (kept for duplicates). */
struct reply {
	int step;                   /* step index */
	enum step_phase phase;      /* action or compensation */
	uint32_t attempt;           /* attempt answered */
	enum reply_outcome outcome; /* verdict of the participant */
	uint8_t output[OUTPUT_MAX]; /* output bytes */
	size_t output_len;          /* their number */
};

/* What the test knows independently of the engine about one saga's life. */
struct model {
	int32_t completed_order[SAGA_MAX_STEPS];    /* seen when the action succeeded; sticky */
	uint8_t output[SAGA_MAX_STEPS][OUTPUT_MAX]; /* output of the successful action */
	size_t output_len[SAGA_MAX_STEPS];          /* its length */
	bool uncertain[SAGA_MAX_STEPS];     /* last action attempt timed out, no reply since */
	bool undo_started[SAGA_MAX_STEPS];  /* compensation dispatched or nothing to undo */
	bool undone[SAGA_MAX_STEPS];        /* a compensation success was applied */
	uint32_t used[SAGA_MAX_STEPS];      /* action attempts since the last operator retry */
	uint32_t comp_used[SAGA_MAX_STEPS]; /* same for the compensation */
	bool comp_began;                    /* entered compensating (since a FAILED->RUNNING) */
	bool ponr;                          /* past the point of no return */
};

/* One random run: definition, instance, persisted copy, world and model. */
struct run {
	const struct profile *prof;            /* world behaviour */
	uint64_t seed;                         /* of this run */
	uint64_t rng;                          /* PRNG state */
	struct saga_def def;                   /* random valid definition */
	struct saga_inst inst;                 /* the live instance */
	struct saga_inst disk;                 /* what a store would hold: header + dirty steps */
	struct saga_inst before;               /* shallow snapshot before the current event */
	struct saga_inst twin;                 /* deep copy run in lockstep for one event */
	struct model m;                        /* independent facts */
	int64_t now;                           /* simulated database clock */
	int fail_pct;                          /* action failure rate of this run */
	int comp_fail_pct;                     /* compensation failure rate of this run */
	struct command inflight[MAX_INFLIGHT]; /* commands without a reply yet */
	int n_inflight;                        /* used entries of inflight */
	struct reply delivered[MAX_DELIVERED]; /* replies delivered */
	int n_delivered;                       /* used entries of delivered */
	int n_events;                          /* events applied in this run */
	long verdicts[VERDICT_REFUSED + 1];    /* verdicts seen in this run */
	char err[ERR_MAX];                     /* first violation, "" = none */
	char trace[TRACE_MAX];                 /* what happened, for the report */
	size_t trace_len;                      /* used bytes of trace */
};

/* Totals over one test execution, printed at the end. */
struct totals {
	long runs;                          /* runs played */
	long events;                        /* events applied */
	long ends[SAGA_RESOLVED + 1];       /* final states */
	long verdicts[VERDICT_REFUSED + 1]; /* verdicts seen */
};

/* ---- PRNG (splitmix64) ---- */

static uint64_t
rng_next(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Uniform in [0, n); 0 when n is 0. */
static uint32_t
rng_below(struct run *r, uint32_t n)
{
	return n == 0 ? 0 : (uint32_t)(rng_next(&r->rng) % n);
}

/* Uniform in [lo, hi]. */
static int64_t
rng_range(struct run *r, int64_t lo, int64_t hi)
{
	return lo + (int64_t)(rng_next(&r->rng) % (uint64_t)(hi - lo + 1));
}

static bool
rng_pct(struct run *r, int pct)
{
	return (int)rng_below(r, 100) < pct;
}

/* ---- reporting ---- */

static bool violation(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Record the first violation of the run; always returns false. */
static bool
violation(struct run *r, const char *fmt, ...)
{
	va_list ap;

	if (r->err[0] != '\0')
		return false;
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	return false;
}

/* Bail out of a checking function with a violation when cond is false. */
#define CHECK(r, cond, ...)                                                                        \
	do {                                                                                       \
		if (!(cond))                                                                       \
			return violation(r, __VA_ARGS__);                                          \
	} while (0)

static void trace(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
trace(struct run *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->trace_len + 1 >= sizeof(r->trace))
		return;
	va_start(ap, fmt);
	n = vsnprintf(r->trace + r->trace_len, sizeof(r->trace) - r->trace_len, fmt, ap);
	va_end(ap);
	if (n > 0)
		r->trace_len += (size_t)n;
	if (r->trace_len >= sizeof(r->trace))
		r->trace_len = sizeof(r->trace) - 1;
}

static const char *
kind_letter(enum step_kind k)
{
	return k == STEP_KIND_PIVOT ? "P" : k == STEP_KIND_RETRIABLE ? "R" : "C";
}

static const char *
phase_letter(enum step_phase p)
{
	return p == PHASE_ACTION ? "a" : p == PHASE_COMPENSATION ? "c" : "?";
}

/* One line per step of the definition, for the failure report. */
static void
describe_definition(struct run *r)
{
	const struct saga_def *d = &r->def;

	trace(r, "definition: %d step(s), deadline %" PRId64 " ms\n", d->n_steps, d->deadline_ms);
	for (int i = 0; i < d->n_steps; i++) {
		const struct step_def *s = &d->steps[i];

		trace(r,
		      "  step %d %s kind=%s comp=%s group=%s timeout=%" PRId64 " retry=%u/%" PRId64
		      "-%" PRId64 "x%.1f comp_retry=%u\n",
		      i, s->name, kind_letter(s->kind),
		      s->compensation_subject[0] != '\0' ? "yes" : "no",
		      s->group[0] != '\0' ? s->group : "-", s->timeout_ms, s->retry.max_attempts,
		      s->retry.initial_backoff_ms, s->retry.max_backoff_ms, s->retry.multiplier,
		      s->compensation_retry.max_attempts);
	}
}

static void
describe_event(const struct engine_event *ev, char *buf, size_t len)
{
	switch (ev->type) {
	case EV_REPLY:
		snprintf(buf, len, "reply step %d %s attempt %u %s", ev->step,
		         phase_letter(ev->phase), ev->attempt, reply_outcome_name(ev->outcome));
		break;
	case EV_STEP_TIMEOUT:
	case EV_RETRY_DUE:
		snprintf(buf, len, "%s step %d %s attempt %u", engine_event_name(ev->type),
		         ev->step, phase_letter(ev->phase), ev->attempt);
		break;
	default:
		snprintf(buf, len, "%s", engine_event_name(ev->type));
		break;
	}
}

/* ---- instances: copies and comparisons ---- */

static struct bytes
dup_bytes(struct bytes b)
{
	struct bytes out = {NULL, 0};

	if (b.len == 0)
		return out;
	out.data = malloc(b.len);
	cr_assert_not_null(out.data, "out of memory");
	memcpy(out.data, b.data, b.len);
	out.len = b.len;
	return out;
}

static bool
bytes_same(struct bytes a, struct bytes b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

/* A deep copy: what loading the saga from a store gives. */
static void
inst_clone(struct saga_inst *dst, const struct saga_inst *src)
{
	memcpy(dst, src, sizeof(*dst));
	dst->input = dup_bytes(src->input);
	for (int i = 0; i < SAGA_MAX_STEPS; i++)
		dst->steps[i].output = dup_bytes(src->steps[i].output);
}

/* Compare two steps field by field (outputs by content); writes the first difference. */
static bool
step_same(const struct step_inst *a, const struct step_inst *b, bool ignore_dirty, char *why,
          size_t len)
{
	if (a->state != b->state)
		snprintf(why, len, "state %s vs %s", step_state_name(a->state),
		         step_state_name(b->state));
	else if (a->attempt != b->attempt || a->attempt_base != b->attempt_base)
		snprintf(why, len, "attempt %u/%u vs %u/%u", a->attempt, a->attempt_base,
		         b->attempt, b->attempt_base);
	else if (a->comp_attempt != b->comp_attempt || a->comp_attempt_base != b->comp_attempt_base)
		snprintf(why, len, "comp_attempt %u/%u vs %u/%u", a->comp_attempt,
		         a->comp_attempt_base, b->comp_attempt, b->comp_attempt_base);
	else if (a->wake_at_ms != b->wake_at_ms)
		snprintf(why, len, "wake_at %" PRId64 " vs %" PRId64, a->wake_at_ms, b->wake_at_ms);
	else if (a->completed_order != b->completed_order)
		snprintf(why, len, "completed_order %d vs %d", a->completed_order,
		         b->completed_order);
	else if (a->uncertain != b->uncertain)
		snprintf(why, len, "uncertain %d vs %d", a->uncertain, b->uncertain);
	else if (!ignore_dirty && a->dirty != b->dirty)
		snprintf(why, len, "dirty %d vs %d", a->dirty, b->dirty);
	else if (!bytes_same(a->output, b->output))
		snprintf(why, len, "output (%zu vs %zu bytes)", a->output.len, b->output.len);
	else if (strcmp(a->last_error, b->last_error) != 0)
		snprintf(why, len, "last_error \"%s\" vs \"%s\"", a->last_error, b->last_error);
	else
		return true;
	return false;
}

/* Compare two instances field by field (bytes by content); writes the first difference. */
static bool
inst_same(const struct saga_inst *a, const struct saga_inst *b, int n_steps, bool ignore_dirty,
          char *why, size_t len)
{
	char step_why[ERR_MAX / 2];

	if (strcmp(a->id, b->id) != 0 || strcmp(a->correlation_id, b->correlation_id) != 0 ||
	    strcmp(a->traceparent, b->traceparent) != 0)
		snprintf(why, len, "ids differ");
	else if (a->state != b->state)
		snprintf(why, len, "saga state %s vs %s", saga_state_name(a->state),
		         saga_state_name(b->state));
	else if (a->seq != b->seq)
		snprintf(why, len, "seq %d vs %d", a->seq, b->seq);
	else if (a->completions != b->completions)
		snprintf(why, len, "completions %d vs %d", a->completions, b->completions);
	else if (a->created_ms != b->created_ms || a->deadline_at_ms != b->deadline_at_ms)
		snprintf(why, len,
		         "created/deadline %" PRId64 "/%" PRId64 " vs %" PRId64 "/%" PRId64,
		         a->created_ms, a->deadline_at_ms, b->created_ms, b->deadline_at_ms);
	else if (a->wake_at_ms != b->wake_at_ms)
		snprintf(why, len, "saga wake_at %" PRId64 " vs %" PRId64, a->wake_at_ms,
		         b->wake_at_ms);
	else if (!bytes_same(a->input, b->input))
		snprintf(why, len, "input differs");
	else if (strcmp(a->last_error, b->last_error) != 0)
		snprintf(why, len, "saga last_error \"%s\" vs \"%s\"", a->last_error,
		         b->last_error);
	else {
		for (int i = 0; i < n_steps; i++) {
			if (!step_same(&a->steps[i], &b->steps[i], ignore_dirty, step_why,
			               sizeof(step_why))) {
				snprintf(why, len, "step %d: %s", i, step_why);
				return false;
			}
		}
		return true;
	}
	return false;
}

/* ---- random definitions ---- */

static void
random_retry(struct run *r, struct retry_policy *p, uint32_t min_attempts)
{
	p->max_attempts = (uint32_t)rng_range(r, min_attempts, 4);
	p->initial_backoff_ms = rng_range(r, 1, 80);
	p->max_backoff_ms = p->initial_backoff_ms * rng_range(r, 1, 8);
	p->multiplier = 1.0 + (double)rng_below(r, 21) / 10.0;
}

/*
 * 1 to max_steps steps shaped C* P? R*: at most one pivot, only retriable
 * steps after a pivot or a retriable step, no compensation on pivot and
 * retriable steps (and on a quarter of the compensatable ones), parallel
 * groups of consecutive steps of one kind (never the pivot), small timeouts
 * and retry policies. definition_validate must accept every one.
 */
static void
random_definition(struct run *r)
{
	struct saga_def *d = &r->def;
	int n = (int)rng_range(r, 1, r->prof->max_steps);
	int pivot = rng_pct(r, 55) ? (int)rng_below(r, (uint32_t)n) : -1;
	int first_retriable = pivot >= 0       ? pivot + 1
	                      : rng_pct(r, 50) ? n
	                                       : (int)rng_below(r, (uint32_t)n);
	int groups = 0;
	char field[128];
	char err[512];

	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "random");
	d->version = 1;
	d->n_steps = n;
	if (rng_pct(r, r->prof->deadline_pct))
		d->deadline_ms = rng_range(r, 1000, 4000);
	for (int i = 0; i < n; i++) {
		struct step_def *s = &d->steps[i];

		snprintf(s->name, sizeof(s->name), "s%d", i);
		snprintf(s->action_subject, sizeof(s->action_subject), "svc%d.do", i);
		s->kind = i == pivot             ? STEP_KIND_PIVOT
		          : i >= first_retriable ? STEP_KIND_RETRIABLE
		                                 : STEP_KIND_COMPENSATABLE;
		if (s->kind == STEP_KIND_COMPENSATABLE && rng_pct(r, 75))
			snprintf(s->compensation_subject, sizeof(s->compensation_subject),
			         "svc%d.undo", i);
		s->timeout_ms = rng_range(r, 5, 300);
		random_retry(r, &s->retry, s->kind == STEP_KIND_RETRIABLE ? 0 : 1);
		random_retry(r, &s->compensation_retry, 1);
	}
	/* Groups: runs of consecutive steps of the same kind, never the pivot. */
	for (int i = 0; i < n;) {
		int end = i + 1;

		if (d->steps[i].kind != STEP_KIND_PIVOT && rng_pct(r, 45)) {
			int run_end = i + 1;
			int len;

			while (run_end < n && d->steps[run_end].kind == d->steps[i].kind)
				run_end++;
			len = (int)rng_range(r, 1, run_end - i);
			end = i + len;
			for (int j = i; j < end; j++)
				snprintf(d->steps[j].group, sizeof(d->steps[j].group), "g%d",
				         groups);
			groups++;
		}
		i = end;
	}
	cr_assert_eq(definition_validate(d, field, sizeof(field), err, sizeof(err)), STATUS_OK,
	             "seed %" PRIu64 ": generated definition rejected: %s: %s", r->seed, field,
	             err);
}

/* ---- the model's bookkeeping ---- */

static bool
legal_step(int from, enum saga_state to)
{
	switch (from) {
	case 0:
		return to == SAGA_RUNNING;
	case SAGA_RUNNING:
		return to == SAGA_COMPLETED || to == SAGA_COMPENSATING || to == SAGA_FAILED;
	case SAGA_COMPENSATING:
		return to == SAGA_COMPENSATED || to == SAGA_FAILED;
	case SAGA_FAILED:
		return to == SAGA_RUNNING || to == SAGA_COMPENSATING || to == SAGA_RESOLVED;
	default:
		return false;
	}
}

/* A move in one event may pass through one state (running -> compensating -> compensated). */
static bool
legal_move(int from, enum saga_state to)
{
	if (legal_step(from, to))
		return true;
	for (int mid = SAGA_RUNNING; mid <= SAGA_RESOLVED; mid++) {
		if (legal_step(from, (enum saga_state)mid) && legal_step(mid, to))
			return true;
	}
	return false;
}

static int
count_events(const struct plan *p, enum lifecycle_type t)
{
	int n = 0;

	for (int i = 0; i < p->n_events; i++)
		n += p->events[i].type == t;
	return n;
}

/*
 * Step i is being undone (a compensation sent, or "nothing to undo"): it must
 * be the newest completed step not yet undone, unless its action never
 * succeeded and its last attempt timed out (uncertain: those may come first).
 */
static bool
check_undo(struct run *r, int i, bool ponr)
{
	int32_t c = r->m.completed_order[i];

	CHECK(r, !ponr, "step %d undone past the point of no return", i);
	for (int p = 0; p < r->def.n_steps; p++) {
		CHECK(r, !(r->def.steps[p].kind == STEP_KIND_PIVOT && r->m.uncertain[p]),
		      "step %d undone while the outcome of pivot step %d is unknown (its last "
		      "attempt timed out)",
		      i, p);
	}
	if (c == 0) {
		CHECK(r, r->m.uncertain[i],
		      "step %d undone but its action never succeeded nor timed out", i);
		return true;
	}
	for (int j = 0; j < r->def.n_steps; j++) {
		CHECK(r, j == i || r->m.completed_order[j] <= c || r->m.undo_started[j],
		      "step %d (completed %d) undone before step %d (completed %d): not reverse "
		      "completion order",
		      i, c, j, r->m.completed_order[j]);
	}
	return true;
}

/* Timer and liveness facts that hold after every event. */
static bool
check_timers(struct run *r)
{
	const struct saga_inst *s = &r->inst;
	struct engine_event due[MAX_DUE];
	int n;

	for (int i = 0; i < r->def.n_steps; i++) {
		enum step_state st = s->steps[i].state;
		bool timed = st == STEP_RUNNING || st == STEP_WAITING_RETRY ||
		             st == STEP_COMPENSATING || st == STEP_COMPENSATION_WAITING_RETRY;

		CHECK(r, timed == (s->steps[i].wake_at_ms != 0),
		      "step %d is %s with wake_at %" PRId64, i, step_state_name(st),
		      s->steps[i].wake_at_ms);
	}
	if (engine_is_terminal(s->state)) {
		CHECK(r, s->wake_at_ms == 0, "terminal saga with wake_at %" PRId64, s->wake_at_ms);
		return true;
	}
	CHECK(r, !(s->state == SAGA_RUNNING || s->state == SAGA_COMPENSATING) || s->wake_at_ms != 0,
	      "saga %s with no timer armed: nothing can ever move it (I2)",
	      saga_state_name(s->state));
	if (s->wake_at_ms == 0) {
		n = engine_due_events(&r->def, s, INT64_MAX / 2, due, MAX_DUE);
		CHECK(r, n == 0,
		      "wake_at is 0 but %d timer event(s) would fire some day (first %s)", n,
		      engine_event_name(due[0].type));
		return true;
	}
	n = engine_due_events(&r->def, s, s->wake_at_ms, due, MAX_DUE);
	CHECK(r, n >= 1,
	      "wake_at %" PRId64 " but no event is due then: the saga would be woken forever",
	      s->wake_at_ms);
	{
		struct engine_event one; /* a buffer of exactly one: the bound must hold */

		CHECK(r,
		      engine_due_events(&r->def, s, s->wake_at_ms, &one, 1) == 1 &&
		              memcmp(&one, &due[0], sizeof(one)) == 0,
		      "engine_due_events with max 1 disagrees with the full list");
	}
	n = engine_due_events(&r->def, s, s->wake_at_ms - 1, due, MAX_DUE);
	CHECK(r, n == 0, "wake_at %" PRId64 " but %s is due earlier", s->wake_at_ms,
	      engine_event_name(due[0].type));
	return true;
}

/* Whether the engine had to apply this event (it waits on exactly this). */
static bool
event_expected(const struct engine_event *ev, const struct saga_inst *pre)
{
	const struct step_inst *s;

	switch (ev->type) {
	case EV_REPLY:
		s = &pre->steps[ev->step];
		if (engine_is_terminal(pre->state))
			return false;
		return ev->phase == PHASE_ACTION
		               ? s->state == STEP_RUNNING && s->attempt == ev->attempt
		               : s->state == STEP_COMPENSATING && s->comp_attempt == ev->attempt;
	case EV_STEP_TIMEOUT:
		s = &pre->steps[ev->step];
		if (engine_is_terminal(pre->state) || s->wake_at_ms > ev->now_ms)
			return false;
		return ev->phase == PHASE_ACTION
		               ? s->state == STEP_RUNNING && s->attempt == ev->attempt
		               : s->state == STEP_COMPENSATING && s->comp_attempt == ev->attempt;
	case EV_RETRY_DUE:
		s = &pre->steps[ev->step];
		return s->wake_at_ms > 0 && s->wake_at_ms <= ev->now_ms &&
		       ((s->state == STEP_WAITING_RETRY && pre->state == SAGA_RUNNING) ||
		        (s->state == STEP_COMPENSATION_WAITING_RETRY &&
		         pre->state == SAGA_COMPENSATING));
	case EV_DEADLINE:
		return pre->state == SAGA_RUNNING && pre->deadline_at_ms > 0 &&
		       pre->deadline_at_ms <= ev->now_ms;
	case EV_START:
		return pre->state == 0;
	case EV_RESOLVE:
		return pre->state == SAGA_FAILED;
	default:
		break;
	}
	return false;
}

/* Commands of one plan: attempts, timers, forward order, reverse undo order. */
static bool
check_commands(struct run *r, const struct engine_event *ev, const struct plan *plan,
               const struct saga_inst *pre, bool ponr)
{
	const struct saga_inst *post = &r->inst;

	for (int k = 0; k < plan->n_commands; k++) {
		const struct plan_command *c = &plan->commands[k];
		const struct step_def *sd;
		const struct step_inst *s;

		CHECK(r, c->step >= 0 && c->step < r->def.n_steps, "command for step %d", c->step);
		sd = &r->def.steps[c->step];
		s = &post->steps[c->step];
		for (int j = 0; j < k; j++)
			CHECK(r, plan->commands[j].step != c->step,
			      "two commands for step %d in one plan", c->step);
		CHECK(r,
		      c->deadline_ms == r->now + sd->timeout_ms && s->wake_at_ms == c->deadline_ms,
		      "command for step %d: deadline %" PRId64 ", wake_at %" PRId64
		      ", expected now + timeout = %" PRId64,
		      c->step, c->deadline_ms, s->wake_at_ms, r->now + sd->timeout_ms);
		if (c->phase == PHASE_ACTION) {
			int first = definition_group_start(&r->def, c->step);
			uint32_t *used = &r->m.used[c->step];

			*used = ev->type == EV_RETRY ? 1 : *used + 1;
			CHECK(r, sd->retry.max_attempts == 0 || *used <= sd->retry.max_attempts,
			      "step %d: action attempt %u sent, %u since the last operator retry, "
			      "max_attempts %u",
			      c->step, c->attempt, *used, sd->retry.max_attempts);

			CHECK(r,
			      s->state == STEP_RUNNING && c->attempt == s->attempt &&
			              c->attempt == pre->steps[c->step].attempt + 1,
			      "action command for step %d attempt %u, step %s at attempt %u (was "
			      "%u)",
			      c->step, c->attempt, step_state_name(s->state), s->attempt,
			      pre->steps[c->step].attempt);
			CHECK(r, pre->state != SAGA_COMPENSATING && post->state == SAGA_RUNNING,
			      "action command for step %d while the saga goes %s -> %s", c->step,
			      saga_state_name(pre->state), saga_state_name(post->state));
			CHECK(r, !r->m.comp_began,
			      "action command for step %d after compensation began (I4)", c->step);
			CHECK(r, r->m.completed_order[c->step] == 0,
			      "action of step %d sent again after it succeeded", c->step);
			for (int j = 0; j < first; j++)
				CHECK(r, post->steps[j].state == STEP_SUCCEEDED,
				      "step %d dispatched while earlier step %d is %s", c->step, j,
				      step_state_name(post->steps[j].state));
			if (pre->steps[c->step].state == STEP_PENDING) {
				int end = definition_group_end(&r->def, c->step);

				for (int j = first; j < end; j++) {
					bool sent = false;

					for (int q = 0; q < plan->n_commands; q++)
						sent |= plan->commands[q].step == j;
					CHECK(r, sent || pre->steps[j].state != STEP_PENDING,
					      "group of step %d started without member %d", c->step,
					      j);
				}
			}
		} else if (c->phase == PHASE_COMPENSATION) {
			uint32_t *used = &r->m.comp_used[c->step];

			*used = ev->type == EV_RETRY ? 1 : *used + 1;
			CHECK(r, *used <= sd->compensation_retry.max_attempts,
			      "step %d: compensation attempt %u sent, %u since the last operator "
			      "retry, max_attempts %u",
			      c->step, c->attempt, *used, sd->compensation_retry.max_attempts);
			CHECK(r,
			      s->state == STEP_COMPENSATING && c->attempt == s->comp_attempt &&
			              c->attempt == pre->steps[c->step].comp_attempt + 1,
			      "compensation command for step %d attempt %u, step %s at %u (was %u)",
			      c->step, c->attempt, step_state_name(s->state), s->comp_attempt,
			      pre->steps[c->step].comp_attempt);
			CHECK(r, post->state == SAGA_COMPENSATING,
			      "compensation command for step %d in a %s saga", c->step,
			      saga_state_name(post->state));
			CHECK(r, sd->compensation_subject[0] != '\0',
			      "compensation command for step %d which has no compensation",
			      c->step);
			for (int j = 0; j < r->def.n_steps; j++) {
				enum step_state st = post->steps[j].state;

				CHECK(r,
				      j == c->step ||
				              (st != STEP_RUNNING && st != STEP_COMPENSATING),
				      "compensation of step %d sent while step %d is %s", c->step,
				      j, step_state_name(st));
			}
			if (!r->m.undo_started[c->step]) {
				if (!check_undo(r, c->step, ponr))
					return false;
				r->m.undo_started[c->step] = true;
			} else {
				CHECK(r, !ponr,
				      "compensation of step %d retried past the point of no return",
				      c->step);
			}
		} else {
			return violation(r, "command with phase %d", (int)c->phase);
		}
	}
	return true;
}

/* Actions that succeeded on this event: once per step, in order, with their output. */
static bool
check_successes(struct run *r, const struct engine_event *ev, const struct saga_inst *pre)
{
	const struct saga_inst *post = &r->inst;
	int newly_succeeded = 0;

	for (int i = 0; i < r->def.n_steps; i++) {
		const struct step_inst *b = &post->steps[i];

		if (r->m.completed_order[i] != 0) {
			CHECK(r, b->completed_order == r->m.completed_order[i],
			      "completed_order of step %d changed from %d to %d", i,
			      r->m.completed_order[i], b->completed_order);
			CHECK(r,
			      b->state != STEP_SUCCEEDED ||
			              (b->output.len == r->m.output_len[i] &&
			               (b->output.len == 0 || memcmp(b->output.data, r->m.output[i],
			                                             b->output.len) == 0)),
			      "output of succeeded step %d changed", i);
			continue;
		}
		if (b->completed_order == 0)
			continue;
		newly_succeeded++;
		CHECK(r,
		      ev->type == EV_REPLY && ev->step == i && ev->phase == PHASE_ACTION &&
		              ev->outcome == OUTCOME_SUCCESS,
		      "step %d got completed_order %d without its success reply", i,
		      b->completed_order);
		CHECK(r,
		      b->completed_order == pre->completions + 1 &&
		              post->completions == pre->completions + 1,
		      "step %d completed_order %d, completions %d -> %d", i, b->completed_order,
		      pre->completions, post->completions);
		CHECK(r, bytes_same(b->output, ev->output), "output of step %d not kept", i);
		for (int j = 0; j < r->def.n_steps; j++)
			CHECK(r, !r->m.undo_started[j],
			      "step %d succeeded after step %d began to be undone: reverse order "
			      "broken",
			      i, j);
		r->m.completed_order[i] = b->completed_order;
		r->m.output_len[i] = b->output.len;
		if (b->output.len > 0)
			memcpy(r->m.output[i], b->output.data, b->output.len);
	}
	CHECK(r, newly_succeeded <= 1, "%d steps succeeded on one event", newly_succeeded);
	return true;
}

/*
 * Steps with nothing to undo are marked compensated on the spot, in the order
 * of the plan's events and before any compensation command of the same plan.
 */
static bool
check_nothing_to_undo(struct run *r, const struct plan *plan, bool ponr)
{
	for (int k = 0; k < plan->n_events; k++) {
		const struct plan_event *e = &plan->events[k];

		if (e->type != LC_COMPENSATION_SUCCEEDED || e->step < 0 ||
		    e->step >= r->def.n_steps ||
		    r->def.steps[e->step].compensation_subject[0] != '\0')
			continue;
		CHECK(r, !r->m.undo_started[e->step], "step %d undone twice", e->step);
		if (!check_undo(r, e->step, ponr))
			return false;
		r->m.undo_started[e->step] = true;
		r->m.undone[e->step] = true;
	}
	return true;
}

/* Steps that became compensated on this event: by their reply, or with nothing to undo. */
static bool
check_undone(struct run *r, const struct engine_event *ev, const struct saga_inst *pre)
{
	const struct saga_inst *post = &r->inst;

	for (int i = 0; i < r->def.n_steps; i++) {
		enum step_state a = pre->steps[i].state;
		enum step_state b = post->steps[i].state;

		if (a == STEP_COMPENSATED) {
			CHECK(r, b == STEP_COMPENSATED, "compensated step %d became %s", i,
			      step_state_name(b));
			continue;
		}
		if (b != STEP_COMPENSATED)
			continue;
		if (r->def.steps[i].compensation_subject[0] != '\0') {
			CHECK(r,
			      ev->type == EV_REPLY && ev->step == i &&
			              ev->phase == PHASE_COMPENSATION &&
			              ev->outcome == OUTCOME_SUCCESS,
			      "step %d compensated without a compensation success reply", i);
			r->m.undone[i] = true;
		} else {
			CHECK(r, r->m.undone[i],
			      "step %d marked compensated without a compensation event", i);
		}
	}
	return true;
}

/*
 * A failed attempt (reply or timeout) is retried after a jittered backoff
 * while its policy allows and the saga runs forward (compensations: while the
 * saga compensates); otherwise the step or compensation fails for good.
 */
static bool
check_retry_policy(struct run *r, const struct engine_event *ev, const struct plan *plan,
                   const struct saga_inst *pre)
{
	const struct step_def *sd;
	const struct step_inst *s;
	const struct retry_policy *p;
	bool retryable;
	bool budget;
	uint32_t attempt;
	int64_t delay;

	if (plan->verdict != VERDICT_APPLIED ||
	    (ev->type != EV_STEP_TIMEOUT &&
	     !(ev->type == EV_REPLY && ev->outcome != OUTCOME_SUCCESS)))
		return true;
	sd = &r->def.steps[ev->step];
	s = &r->inst.steps[ev->step];
	retryable = ev->type == EV_STEP_TIMEOUT || ev->outcome == OUTCOME_RETRYABLE_FAILURE;
	if (ev->phase == PHASE_ACTION) {
		p = &sd->retry;
		budget = p->max_attempts == 0 || r->m.used[ev->step] < p->max_attempts;
		attempt = s->attempt;
		if (!(retryable && budget && pre->state == SAGA_RUNNING)) {
			CHECK(r, s->state != STEP_WAITING_RETRY && s->state != STEP_RUNNING,
			      "%s of step %d (attempt %u of %u, saga %s): not to be retried, but "
			      "the step is %s",
			      retryable ? "retryable failure" : "permanent failure", ev->step,
			      r->m.used[ev->step], p->max_attempts, saga_state_name(pre->state),
			      step_state_name(s->state));
			return true;
		}
		CHECK(r, s->state == STEP_WAITING_RETRY && r->inst.state == SAGA_RUNNING,
		      "retryable failure of step %d with %u of %u attempts used: step %s, saga %s",
		      ev->step, r->m.used[ev->step], p->max_attempts, step_state_name(s->state),
		      saga_state_name(r->inst.state));
	} else {
		p = &sd->compensation_retry;
		budget = r->m.comp_used[ev->step] < p->max_attempts;
		attempt = s->comp_attempt;
		if (!(retryable && budget)) {
			CHECK(r,
			      s->state == STEP_COMPENSATION_FAILED && r->inst.state == SAGA_FAILED,
			      "compensation of step %d failed for good: step %s, saga %s", ev->step,
			      step_state_name(s->state), saga_state_name(r->inst.state));
			return true;
		}
		CHECK(r,
		      s->state == STEP_COMPENSATION_WAITING_RETRY &&
		              r->inst.state == SAGA_COMPENSATING,
		      "retryable compensation failure of step %d with %u of %u attempts used: "
		      "step %s, saga %s",
		      ev->step, r->m.comp_used[ev->step], p->max_attempts,
		      step_state_name(s->state), saga_state_name(r->inst.state));
	}
	delay = s->wake_at_ms - ev->now_ms;
	CHECK(r, delay >= 0 && delay <= backoff_cap_ms(p, attempt),
	      "step %d retry %" PRId64 " ms after the failure of attempt %u, cap %" PRId64,
	      ev->step, delay, attempt, backoff_cap_ms(p, attempt));
	CHECK(r, delay == backoff_delay_ms(p, r->inst.id, ev->step, ev->phase, attempt),
	      "step %d retry delay %" PRId64 " is not the seeded jitter %" PRId64, ev->step, delay,
	      backoff_delay_ms(p, r->inst.id, ev->step, ev->phase, attempt));
	return true;
}

/* Saga-level facts checked before the commands: moves, operator rules, the way back. */
static bool
check_moves(struct run *r, const struct engine_event *ev, const struct plan *plan,
            const struct saga_inst *pre, bool ponr_before, bool ponr)
{
	const struct saga_inst *post = &r->inst;
	enum engine_verdict v = plan->verdict;
	bool moved = (int)post->state != (int)pre->state;

	CHECK(r, !moved || legal_move(pre->state, post->state), "illegal move %s -> %s",
	      saga_state_name(pre->state), saga_state_name(post->state));
	CHECK(r, v == VERDICT_APPLIED || !moved, "verdict %s but the saga moved",
	      engine_verdict_name(v));
	if (ev->type == EV_ABORT && v == VERDICT_APPLIED)
		CHECK(r, pre->state == SAGA_RUNNING && !ponr_before,
		      "abort applied to a %s saga (past point of no return: %d)",
		      saga_state_name(pre->state), ponr_before);
	if (ev->type == EV_RETRY && engine_is_terminal(pre->state))
		CHECK(r, v == VERDICT_REFUSED, "operator retry of a %s saga: %s",
		      saga_state_name(pre->state), engine_verdict_name(v));
	if (moved && pre->state == SAGA_FAILED && post->state != SAGA_RESOLVED)
		CHECK(r, ev->type == EV_RETRY, "FAILED -> %s on %s", saga_state_name(post->state),
		      engine_event_name(ev->type));
	if (moved && pre->state == SAGA_FAILED && post->state == SAGA_RUNNING) {
		bool pivot_unknown = false;

		for (int i = 0; i < r->def.n_steps; i++)
			pivot_unknown |= r->def.steps[i].kind == STEP_KIND_PIVOT &&
			                 pre->steps[i].state == STEP_FAILED && r->m.uncertain[i];
		CHECK(r, ponr_before || pivot_unknown,
		      "FAILED -> RUNNING before the point of no return (and no pivot in doubt)");
		r->m.comp_began = false;
	}
	if (post->state == SAGA_COMPENSATING || post->state == SAGA_COMPENSATED)
		CHECK(r, !ponr, "saga %s past the point of no return",
		      saga_state_name(post->state));
	return true;
}

/* Saga-level facts checked last: terminal states, dead letters. */
static bool
check_ends(struct run *r, const struct engine_event *ev, const struct plan *plan,
           const struct saga_inst *pre)
{
	const struct saga_inst *post = &r->inst;
	bool moved = (int)post->state != (int)pre->state;

	if (moved && post->state == SAGA_FAILED)
		CHECK(r,
		      plan->dead_letter && plan->dead_letter_step >= -1 &&
		              plan->dead_letter_step < r->def.n_steps &&
		              count_events(plan, LC_FAILED) == 1,
		      "saga failed without a dead letter / failed event");
	else
		CHECK(r, !plan->dead_letter, "dead letter raised on %s -> %s",
		      saga_state_name(pre->state), saga_state_name(post->state));
	if (moved && post->state == SAGA_COMPLETED) {
		CHECK(r, count_events(plan, LC_COMPLETED) == 1, "completed without an event");
		for (int i = 0; i < r->def.n_steps; i++)
			CHECK(r, post->steps[i].state == STEP_SUCCEEDED,
			      "completed saga with step %d %s", i,
			      step_state_name(post->steps[i].state));
	}
	if (moved && post->state == SAGA_COMPENSATED) {
		CHECK(r, count_events(plan, LC_COMPENSATED) == 1, "compensated without an event");
		for (int i = 0; i < r->def.n_steps; i++) {
			const struct step_inst *s = &post->steps[i];

			CHECK(r,
			      s->state != STEP_RUNNING && s->state != STEP_WAITING_RETRY &&
			              s->state != STEP_COMPENSATING &&
			              s->state != STEP_COMPENSATION_WAITING_RETRY &&
			              s->state != STEP_SUCCEEDED,
			      "compensated saga with step %d %s", i, step_state_name(s->state));
			CHECK(r, r->m.completed_order[i] == 0 || r->m.undone[i],
			      "compensated saga but succeeded step %d was never undone", i);
			CHECK(r, !r->m.uncertain[i] || s->state == STEP_COMPENSATED,
			      "compensated saga but step %d, whose outcome is unknown, was not "
			      "undone",
			      i);
		}
	}
	if (moved && post->state == SAGA_RESOLVED)
		CHECK(r, ev->type == EV_RESOLVE && count_events(plan, LC_RESOLVED) == 1,
		      "resolved by %s", engine_event_name(ev->type));
	if (post->state == SAGA_COMPENSATING || post->state == SAGA_COMPENSATED)
		r->m.comp_began = true;
	return true;
}

/* ---- applying one event ---- */

/* Write the header and the dirty steps to the simulated store, as a commit would. */
static void
persist(struct run *r)
{
	struct saga_inst *d = &r->disk;
	struct bytes input = d->input;

	memcpy(d, &r->inst, offsetof(struct saga_inst, steps));
	d->input = input;
	for (int i = 0; i < SAGA_MAX_STEPS; i++) {
		if (!r->inst.steps[i].dirty)
			continue;
		free(d->steps[i].output.data);
		memcpy(&d->steps[i], &r->inst.steps[i], sizeof(d->steps[i]));
		d->steps[i].output = dup_bytes(r->inst.steps[i].output);
		d->steps[i].dirty = false;
	}
}

/* Apply one event to the saga, check every invariant, update the world. */
static bool
apply(struct run *r, const struct engine_event *ev)
{
	struct saga_inst *pre = &r->before;
	struct plan plan;
	struct plan twin_plan;
	bool twin = rng_pct(r, 10);
	bool ponr_before = r->m.ponr;
	bool ponr;
	char desc[160];
	char why[ERR_MAX / 2] = "the plans differ";
	bool ok;
	enum status st;

	/* The store wrote the previous plan's dirty steps. */
	for (int i = 0; i < SAGA_MAX_STEPS; i++)
		r->inst.steps[i].dirty = false;
	memcpy(pre, &r->inst, sizeof(*pre));
	if (twin)
		inst_clone(&r->twin, &r->inst);
	describe_event(ev, desc, sizeof(desc));
	st = engine_step(&r->def, &r->inst, ev, &plan);
	r->n_events++;
	trace(r, "t=+%" PRId64 " %-40s -> %s, %s -> %s", ev->now_ms - START_MS, desc,
	      engine_verdict_name(plan.verdict), saga_state_name(pre->state),
	      saga_state_name(r->inst.state));
	for (int k = 0; k < plan.n_commands; k++)
		trace(r, "%s send %d%s#%u", k == 0 ? ";" : ",", plan.commands[k].step,
		      phase_letter(plan.commands[k].phase), plan.commands[k].attempt);
	trace(r, "\n");
	if ((int)plan.verdict >= 0 && plan.verdict <= VERDICT_REFUSED)
		r->verdicts[plan.verdict]++;
	CHECK(r, st == STATUS_OK, "engine_step returned %s", status_name(st));

	if (twin) {
		st = engine_step(&r->def, &r->twin, ev, &twin_plan);
		ok = st == STATUS_OK && memcmp(&plan, &twin_plan, sizeof(plan)) == 0 &&
		     inst_same(&r->inst, &r->twin, r->def.n_steps, false, why, sizeof(why));
		saga_inst_release(&r->twin);
		CHECK(r, ok, "a deep copy of the instance took the same event differently: %s",
		      why);
	}

	/* Sequence numbers and the plan header. */
	CHECK(r, plan.seq == pre->seq + 1 && r->inst.seq == plan.seq, "seq %d -> %d, plan seq %d",
	      pre->seq, r->inst.seq, plan.seq);
	CHECK(r,
	      plan.event == ev->type && plan.from_state == (int)pre->state &&
	              plan.to_state == r->inst.state,
	      "plan says %d -> %d, saga went %d -> %d", plan.from_state, (int)plan.to_state,
	      (int)pre->state, (int)r->inst.state);

	/* Events the saga did not wait for change nothing but seq. */
	if (engine_is_terminal(pre->state))
		CHECK(r,
		      plan.verdict == VERDICT_LATE || plan.verdict == VERDICT_STALE ||
		              plan.verdict == VERDICT_REFUSED,
		      "event on a %s saga: %s", saga_state_name(pre->state),
		      engine_verdict_name(plan.verdict));
	if (engine_is_terminal(pre->state) && ev->type == EV_REPLY)
		CHECK(r, plan.verdict == VERDICT_LATE, "reply to an ended saga: %s",
		      engine_verdict_name(plan.verdict));
	if (plan.verdict != VERDICT_APPLIED) {
		int32_t seq = pre->seq;

		pre->seq = r->inst.seq;
		ok = memcmp(pre, &r->inst, sizeof(*pre)) == 0;
		pre->seq = seq;
		if (!ok && !inst_same(pre, &r->inst, SAGA_MAX_STEPS, false, why, sizeof(why)))
			return violation(r, "verdict %s changed the saga: %s",
			                 engine_verdict_name(plan.verdict), why);
		CHECK(r, ok, "verdict %s changed bytes of the saga",
		      engine_verdict_name(plan.verdict));
		CHECK(r, plan.n_commands == 0 && plan.n_events == 0 && !plan.dead_letter,
		      "verdict %s with %d command(s), %d event(s)",
		      engine_verdict_name(plan.verdict), plan.n_commands, plan.n_events);
	}
	if (plan.verdict == VERDICT_DUPLICATE)
		CHECK(r, ev->type == EV_REPLY, "verdict duplicate for a %s event", desc);
	if (ev->type != EV_ABORT && ev->type != EV_RETRY) {
		bool expected = event_expected(ev, pre);

		CHECK(r, expected == (plan.verdict == VERDICT_APPLIED),
		      "%s: verdict %s, but the saga %s waiting for it", desc,
		      engine_verdict_name(plan.verdict), expected ? "was" : "was not");
	}

	/* What the model learns from the event. */
	if (plan.verdict == VERDICT_APPLIED && ev->type == EV_REPLY && ev->phase == PHASE_ACTION)
		r->m.uncertain[ev->step] = false;
	if (plan.verdict == VERDICT_APPLIED && ev->type == EV_STEP_TIMEOUT &&
	    ev->phase == PHASE_ACTION)
		r->m.uncertain[ev->step] = true;
	ponr = ponr_before;
	for (int i = 0; i < r->def.n_steps; i++)
		ponr |= r->def.steps[i].kind == STEP_KIND_PIVOT &&
		        r->inst.steps[i].completed_order > 0;
	for (int k = 0; k < plan.n_commands; k++)
		ponr |= plan.commands[k].phase == PHASE_ACTION &&
		        r->def.steps[plan.commands[k].step].kind == STEP_KIND_RETRIABLE;

	if (!check_moves(r, ev, &plan, pre, ponr_before, ponr) || !check_successes(r, ev, pre) ||
	    !check_nothing_to_undo(r, &plan, ponr) || !check_commands(r, ev, &plan, pre, ponr) ||
	    !check_undone(r, ev, pre) || !check_retry_policy(r, ev, &plan, pre) ||
	    !check_ends(r, ev, &plan, pre))
		return false;
	r->m.ponr = ponr;
	CHECK(r, engine_past_point_of_no_return(&r->def, &r->inst) == ponr,
	      "engine_past_point_of_no_return says %d, the saga's history says %d",
	      engine_past_point_of_no_return(&r->def, &r->inst), ponr);
	if (!check_timers(r))
		return false;

	/* The world: commands go out; the store keeps what was marked dirty. */
	for (int k = 0; k < plan.n_commands && r->n_inflight < MAX_INFLIGHT; k++) {
		r->inflight[r->n_inflight].step = plan.commands[k].step;
		r->inflight[r->n_inflight].phase = plan.commands[k].phase;
		r->inflight[r->n_inflight].attempt = plan.commands[k].attempt;
		r->n_inflight++;
	}
	persist(r);
	CHECK(r, inst_same(&r->disk, &r->inst, r->def.n_steps, true, why, sizeof(why)),
	      "the saga changed where the plan did not mark it dirty: %s", why);
	return true;
}

/* ---- the world ---- */

static void
fill_output(struct reply *rep)
{
	rep->output_len = (size_t)((rep->step * 3 + rep->attempt) % 9);
	for (size_t k = 0; k < rep->output_len; k++)
		rep->output[k] = (uint8_t)(rep->step * 31 + rep->attempt * 7 + k);
}

static bool
deliver(struct run *r, const struct reply *rep)
{
	struct engine_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = EV_REPLY;
	ev.now_ms = r->now;
	ev.step = rep->step;
	ev.phase = rep->phase;
	ev.attempt = rep->attempt;
	ev.outcome = rep->outcome;
	ev.output.data = (uint8_t *)rep->output;
	ev.output.len = rep->outcome == OUTCOME_SUCCESS ? rep->output_len : 0;
	ev.text = rep->outcome == OUTCOME_SUCCESS ? NULL : "participant said no";
	return apply(r, &ev);
}

/* Answer in-flight command k (removing it), with outcome chosen by the run's rates. */
static bool
answer(struct run *r, int k, bool success)
{
	struct reply rep;
	int fail_pct = r->inflight[k].phase == PHASE_ACTION ? r->fail_pct : r->comp_fail_pct;

	memset(&rep, 0, sizeof(rep));
	rep.step = r->inflight[k].step;
	rep.phase = r->inflight[k].phase;
	rep.attempt = r->inflight[k].attempt;
	r->inflight[k] = r->inflight[--r->n_inflight];
	if (success || !rng_pct(r, fail_pct))
		rep.outcome = OUTCOME_SUCCESS;
	else
		rep.outcome =
		        rng_pct(r, 60) ? OUTCOME_RETRYABLE_FAILURE : OUTCOME_PERMANENT_FAILURE;
	fill_output(&rep);
	if (r->n_delivered < MAX_DELIVERED)
		r->delivered[r->n_delivered++] = rep;
	else
		r->delivered[rng_below(r, MAX_DELIVERED)] = rep;
	return deliver(r, &rep);
}

/* A reply for an attempt the step is not at (older, or never sent). */
static bool
stale_reply(struct run *r)
{
	struct reply rep;
	const struct step_inst *s;
	uint32_t current;

	memset(&rep, 0, sizeof(rep));
	rep.step = (int)rng_below(r, (uint32_t)r->def.n_steps);
	rep.phase = rng_pct(r, 70) ? PHASE_ACTION : PHASE_COMPENSATION;
	s = &r->inst.steps[rep.step];
	current = rep.phase == PHASE_ACTION ? s->attempt : s->comp_attempt;
	if (current > 0 && rng_pct(r, 60))
		rep.attempt = (uint32_t)rng_below(r, current); /* 0 .. current-1 */
	else
		rep.attempt = current + 1 + (uint32_t)rng_below(r, 3);
	rep.outcome = (enum reply_outcome)rng_range(r, OUTCOME_SUCCESS, OUTCOME_PERMANENT_FAILURE);
	fill_output(&rep);
	return deliver(r, &rep);
}

/* Fire the timers due now, one after the other, as the timer loop does. */
static bool
fire_due(struct run *r)
{
	struct engine_event due[MAX_DUE];
	int n = engine_due_events(&r->def, &r->inst, r->now, due, MAX_DUE);

	for (int i = 0; i < n; i++) {
		if (!apply(r, &due[i]))
			return false;
		/* Sometimes a second timer loop takes a fresh look after each event. */
		if (rng_pct(r, 20))
			return fire_due(r);
	}
	return true;
}

static bool
advance_clock(struct run *r)
{
	int64_t wake = r->inst.wake_at_ms;
	uint32_t pick = rng_below(r, 10);

	if (pick < 4 && wake > r->now)
		r->now = wake;
	else if (pick < 8)
		r->now += rng_range(r, 1, 350);
	else
		r->now += rng_range(r, 0, 5);
	return fire_due(r);
}

/* A timer event that the timer loop would not produce now. */
static bool
spurious_timer(struct run *r)
{
	struct engine_event ev;
	const struct step_inst *s;

	memset(&ev, 0, sizeof(ev));
	ev.now_ms = r->now;
	ev.step = (int)rng_below(r, (uint32_t)r->def.n_steps);
	s = &r->inst.steps[ev.step];
	switch (rng_below(r, 3)) {
	case 0:
		ev.type = EV_STEP_TIMEOUT;
		ev.phase = rng_pct(r, 70) ? PHASE_ACTION : PHASE_COMPENSATION;
		ev.attempt = (ev.phase == PHASE_ACTION ? s->attempt : s->comp_attempt) +
		             (uint32_t)rng_below(r, 2);
		if (ev.attempt > 0 && rng_pct(r, 50))
			ev.attempt--;
		break;
	case 1:
		ev.type = EV_RETRY_DUE;
		ev.phase = rng_pct(r, 70) ? PHASE_ACTION : PHASE_COMPENSATION;
		ev.attempt = ev.phase == PHASE_ACTION ? s->attempt : s->comp_attempt;
		break;
	default:
		ev.type = EV_DEADLINE;
		ev.step = -1;
		break;
	}
	return apply(r, &ev);
}

static bool
operator_event(struct run *r, enum engine_event_type type)
{
	struct engine_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	ev.now_ms = r->now;
	ev.step = -1;
	ev.text = rng_pct(r, 50) ? "by the random test" : NULL;
	return apply(r, &ev);
}

/* A sagad restart: the instance is what the store holds, outputs deep-copied. */
static void
restart(struct run *r)
{
	saga_inst_release(&r->inst);
	inst_clone(&r->inst, &r->disk);
	trace(r, "restart\n");
}

/* One random thing happens in the world. */
static bool
random_action(struct run *r)
{
	const struct profile *p = r->prof;
	int weights[11] = {p->w_deliver, p->w_duplicate, p->w_stale, p->w_drop,
	                   p->w_time,    p->w_spurious,  p->w_abort, p->w_retry,
	                   p->w_resolve, p->w_restart,   p->w_start};
	int total = 0;
	int pick;
	int which = 0;

	if (r->n_inflight == 0)
		weights[0] = weights[3] = 0;
	if (r->n_delivered == 0)
		weights[1] = 0;
	if (r->inst.state == SAGA_FAILED) {
		weights[7] += 8;
		weights[8] += 4;
	}
	for (int i = 0; i < 11; i++)
		total += weights[i];
	pick = (int)rng_below(r, (uint32_t)total);
	while (pick >= weights[which])
		pick -= weights[which++];
	switch (which) {
	case 0:
		return answer(r, (int)rng_below(r, (uint32_t)r->n_inflight), false);
	case 1:
		return deliver(r, &r->delivered[rng_below(r, (uint32_t)r->n_delivered)]);
	case 2:
		return stale_reply(r);
	case 3: {
		int k = (int)rng_below(r, (uint32_t)r->n_inflight);

		trace(r, "lost command %d%s#%u\n", r->inflight[k].step,
		      phase_letter(r->inflight[k].phase), r->inflight[k].attempt);
		r->inflight[k] = r->inflight[--r->n_inflight];
		return true;
	}
	case 4:
		return advance_clock(r);
	case 5:
		return spurious_timer(r);
	case 6:
		return operator_event(r, EV_ABORT);
	case 7:
		return operator_event(r, EV_RETRY);
	case 8:
		return operator_event(r, EV_RESOLVE);
	case 9:
		restart(r);
		return true;
	default:
		return operator_event(r, EV_START);
	}
}

/* The world calms down: every command succeeds, time runs, an operator clears failures. */
static bool
run_to_the_end(struct run *r)
{
	for (int i = 0; i < END_STEPS; i++) {
		if (engine_is_terminal(r->inst.state))
			return true;
		if (r->n_inflight > 0) {
			if (!answer(r, (int)rng_below(r, (uint32_t)r->n_inflight), true))
				return false;
		} else if (r->inst.state == SAGA_FAILED) {
			if (!operator_event(r, rng_pct(r, 70) ? EV_RETRY : EV_RESOLVE))
				return false;
		} else if (r->inst.wake_at_ms > 0) {
			if (r->inst.wake_at_ms > r->now)
				r->now = r->inst.wake_at_ms;
			if (!fire_due(r))
				return false;
		} else {
			return violation(r, "saga %s with nothing in flight and no timer: stuck",
			                 saga_state_name(r->inst.state));
		}
	}
	return violation(r, "saga still %s after %d events of a calm world",
	                 saga_state_name(r->inst.state), END_STEPS);
}

/* Throw leftovers at an ended saga: all must be late, stale or refused. */
static bool
after_the_end(struct run *r)
{
	for (int i = 0; i < AFTER_END_EVENTS; i++) {
		bool ok;

		switch (rng_below(r, 6)) {
		case 0:
			ok = r->n_inflight > 0
			             ? answer(r, (int)rng_below(r, (uint32_t)r->n_inflight), false)
			             : stale_reply(r);
			break;
		case 1:
			ok = r->n_delivered > 0 ? deliver(r, &r->delivered[rng_below(
			                                             r, (uint32_t)r->n_delivered)])
			                        : stale_reply(r);
			break;
		case 2:
			r->now += rng_range(r, 1, 100000);
			ok = spurious_timer(r);
			break;
		case 3:
			ok = operator_event(
			        r, (enum engine_event_type)rng_range(r, EV_ABORT, EV_RESOLVE));
			break;
		case 4:
			ok = operator_event(r, EV_START);
			break;
		default:
			restart(r);
			ok = true;
			break;
		}
		if (!ok)
			return false;
	}
	return true;
}

/* Steps past n_steps are never touched. */
static bool
check_unused_steps(struct run *r)
{
	static const struct step_inst zero;

	for (int i = r->def.n_steps; i < SAGA_MAX_STEPS; i++)
		CHECK(r, memcmp(&r->inst.steps[i], &zero, sizeof(zero)) == 0,
		      "step %d beyond the definition was written", i);
	return true;
}

/* One complete random run; false with r->err set on the first violation. */
static bool
play(struct run *r)
{
	struct engine_event ev;
	struct bytes input;
	uint8_t in[32];
	int actions;
	enum saga_state first_end;

	random_definition(r);
	describe_definition(r);
	r->fail_pct = (int)rng_below(r, (uint32_t)r->prof->max_fail_pct + 1);
	r->comp_fail_pct = r->fail_pct / 2;
	r->now = START_MS + (int64_t)rng_below(r, 1000);
	snprintf(r->inst.id, sizeof(r->inst.id), "%08x-%04x-4%03x-8%03x-%012" PRIx64,
	         (unsigned)rng_below(r, UINT32_MAX), (unsigned)rng_below(r, 0x10000),
	         (unsigned)rng_below(r, 0x1000), (unsigned)rng_below(r, 0x1000),
	         rng_next(&r->rng) & UINT64_C(0xffffffffffff));
	snprintf(r->inst.correlation_id, sizeof(r->inst.correlation_id), "corr-%" PRIu64, r->seed);
	input.len = rng_below(r, sizeof(in) + 1);
	for (size_t k = 0; k < input.len; k++)
		in[k] = (uint8_t)rng_next(&r->rng);
	input.data = in;
	r->inst.input = dup_bytes(input);
	inst_clone(&r->disk, &r->inst);

	memset(&ev, 0, sizeof(ev));
	ev.type = EV_START;
	ev.now_ms = r->now;
	ev.step = -1;
	if (!apply(r, &ev))
		return false;
	actions = (int)rng_range(r, 0, r->prof->max_actions);
	for (int i = 0; i < actions && !engine_is_terminal(r->inst.state); i++) {
		if (!random_action(r))
			return false;
	}
	if (!run_to_the_end(r))
		return false;
	first_end = r->inst.state;
	if (!after_the_end(r))
		return false;
	CHECK(r, r->inst.state == first_end, "ended saga went from %s to %s",
	      saga_state_name(first_end), saga_state_name(r->inst.state));
	return check_unused_steps(r);
}

static uint64_t
env_u64(const char *name, uint64_t fallback)
{
	const char *s = getenv(name);

	if (s == NULL || s[0] == '\0')
		return fallback;
	return strtoull(s, NULL, 10);
}

/* A violation with its numbers blanked, to count kinds of failures. */
static void
violation_kind(const char *err, char *out, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; err[i] != '\0' && o + 1 < len; i++) {
		if (err[i] >= '0' && err[i] <= '9') {
			if (o == 0 || out[o - 1] != '#')
				out[o++] = '#';
		} else {
			out[o++] = err[i];
		}
	}
	out[o] = '\0';
}

/* Distinct kinds of violations seen in survey mode. */
#define MAX_KINDS 32

/* One kind of violation: its text, how often, and the first seed showing it. */
struct kind_count {
	char text[ERR_MAX]; /* violation with numbers blanked */
	long count;         /* runs that ended with it */
	uint64_t seed;      /* first of them */
	int events;         /* events of that run */
};

/*
 * Play the profile's runs and stop at the first violation with its seed and
 * trace. With SAGAD_TEST_SURVEY=1 every run is played and each kind of
 * violation is listed once with the shortest run showing it.
 */
static void
play_many(const struct profile *prof)
{
	struct timespec ts;
	uint64_t base;
	long runs = (long)env_u64("SAGAD_TEST_RUNS", (uint64_t)prof->runs);
	bool survey = env_u64("SAGAD_TEST_SURVEY", 0) != 0;
	struct run *r = malloc(sizeof(*r));
	struct kind_count *kinds = calloc(MAX_KINDS, sizeof(*kinds));
	int n_kinds = 0;
	long failed = 0;
	char first[ERR_MAX + 128] = "";
	struct totals t;

	cr_assert(r != NULL && kinds != NULL, "out of memory");
	memset(&t, 0, sizeof(t));
	clock_gettime(CLOCK_REALTIME, &ts);
	base = env_u64("SAGAD_TEST_SEED",
	               (uint64_t)ts.tv_sec * UINT64_C(1000003) + (uint64_t)ts.tv_nsec);
	for (long k = 0; k < runs; k++) {
		bool ok;

		memset(r, 0, sizeof(*r));
		r->prof = prof;
		r->seed = base + (uint64_t)k;
		r->rng = r->seed;
		ok = play(r);
		t.runs++;
		t.events += r->n_events;
		for (int v = 0; v <= VERDICT_REFUSED; v++)
			t.verdicts[v] += r->verdicts[v];
		if (ok && (int)r->inst.state <= SAGA_RESOLVED)
			t.ends[r->inst.state]++;
		saga_inst_release(&r->inst);
		saga_inst_release(&r->disk);
		if (ok)
			continue;
		failed++;
		if (!survey) {
			const char *test =
			        criterion_current_test != NULL ? criterion_current_test->name : "*";

			fprintf(stderr,
			        "engine_random/%s: run %ld failed; reproduce with "
			        "SAGAD_TEST_SEED=%llu "
			        "SAGAD_TEST_RUNS=1 test_engine_random --filter 'engine_random/%s'\n"
			        "%s\nviolation: %s\n",
			        prof->name, k, (unsigned long long)r->seed, test, r->trace, r->err);
			snprintf(first, sizeof(first),
			         "seed %llu (SAGAD_TEST_SEED=%llu SAGAD_TEST_RUNS=1 --filter "
			         "'engine_random/%s' reproduces it), after %d events: %s",
			         (unsigned long long)r->seed, (unsigned long long)r->seed, test,
			         r->n_events, r->err);
			break;
		} else {
			char text[ERR_MAX];
			int i;

			violation_kind(r->err, text, sizeof(text));
			for (i = 0; i < n_kinds && strcmp(kinds[i].text, text) != 0; i++)
				;
			if (i == n_kinds && n_kinds < MAX_KINDS) {
				snprintf(kinds[i].text, sizeof(kinds[i].text), "%s", text);
				n_kinds++;
			}
			if (i < n_kinds) {
				if (kinds[i].count == 0 || r->n_events < kinds[i].events) {
					kinds[i].seed = r->seed;
					kinds[i].events = r->n_events;
				}
				kinds[i].count++;
			}
		}
	}
	fprintf(stderr,
	        "engine_random/%s: %ld runs, %ld events (applied %ld, duplicate %ld, stale %ld, "
	        "late %ld, refused %ld), seeds from %" PRIu64 "; ended completed %ld, "
	        "compensated %ld, resolved %ld; failed runs %ld\n",
	        prof->name, t.runs, t.events, t.verdicts[VERDICT_APPLIED],
	        t.verdicts[VERDICT_DUPLICATE], t.verdicts[VERDICT_STALE], t.verdicts[VERDICT_LATE],
	        t.verdicts[VERDICT_REFUSED], base, t.ends[SAGA_COMPLETED], t.ends[SAGA_COMPENSATED],
	        t.ends[SAGA_RESOLVED], failed);
	for (int i = 0; i < n_kinds; i++)
		fprintf(stderr,
		        "  %ld run(s), shortest SAGAD_TEST_SEED=%" PRIu64 " (%d events): %s\n",
		        kinds[i].count, kinds[i].seed, kinds[i].events, kinds[i].text);
	free(kinds);
	free(r);
	cr_assert(failed == 0, "%s: %ld of %ld runs broke an invariant; %s", prof->name, failed,
	          t.runs, survey ? "see the survey on stderr" : first);
}

/* ---- the tests ---- */

Test(engine_random, every_event_keeps_the_saga_invariants)
{
	static const struct profile p = {
	        .name = "mixed",
	        .runs = 10000,
	        .w_deliver = 40,
	        .w_duplicate = 8,
	        .w_stale = 5,
	        .w_drop = 5,
	        .w_time = 20,
	        .w_spurious = 4,
	        .w_abort = 2,
	        .w_retry = 2,
	        .w_resolve = 1,
	        .w_restart = 3,
	        .w_start = 1,
	        .max_fail_pct = 35,
	        .deadline_pct = 40,
	        .max_actions = 100,
	        .max_steps = 6,
	};

	play_many(&p);
}

Test(engine_random, duplicate_stale_and_lost_messages_never_move_a_saga_twice)
{
	static const struct profile p = {
	        .name = "hostile",
	        .runs = 8000,
	        .w_deliver = 25,
	        .w_duplicate = 25,
	        .w_stale = 15,
	        .w_drop = 15,
	        .w_time = 20,
	        .w_spurious = 10,
	        .w_abort = 0,
	        .w_retry = 1,
	        .w_resolve = 1,
	        .w_restart = 5,
	        .w_start = 2,
	        .max_fail_pct = 50,
	        .deadline_pct = 30,
	        .max_actions = 120,
	        .max_steps = 6,
	};

	play_many(&p);
}

Test(engine_random, operator_commands_and_restarts_keep_the_saga_invariants)
{
	static const struct profile p = {
	        .name = "operator",
	        .runs = 8000,
	        .w_deliver = 30,
	        .w_duplicate = 5,
	        .w_stale = 3,
	        .w_drop = 5,
	        .w_time = 15,
	        .w_spurious = 2,
	        .w_abort = 10,
	        .w_retry = 10,
	        .w_resolve = 5,
	        .w_restart = 10,
	        .w_start = 1,
	        .max_fail_pct = 60,
	        .deadline_pct = 30,
	        .max_actions = 80,
	        .max_steps = 6,
	};

	play_many(&p);
}

Test(engine_random, timeouts_and_deadlines_end_every_saga)
{
	static const struct profile p = {
	        .name = "timers",
	        .runs = 8000,
	        .w_deliver = 20,
	        .w_duplicate = 3,
	        .w_stale = 2,
	        .w_drop = 20,
	        .w_time = 45,
	        .w_spurious = 8,
	        .w_abort = 1,
	        .w_retry = 2,
	        .w_resolve = 1,
	        .w_restart = 3,
	        .w_start = 0,
	        .max_fail_pct = 30,
	        .deadline_pct = 90,
	        .max_actions = 120,
	        .max_steps = 6,
	};

	play_many(&p);
}

Test(engine_random, wide_definitions_fit_their_plans)
{
	static const struct profile p = {
	        .name = "wide",
	        .runs = 1500,
	        .w_deliver = 40,
	        .w_duplicate = 5,
	        .w_stale = 3,
	        .w_drop = 5,
	        .w_time = 20,
	        .w_spurious = 3,
	        .w_abort = 2,
	        .w_retry = 4,
	        .w_resolve = 1,
	        .w_restart = 3,
	        .w_start = 1,
	        .max_fail_pct = 25,
	        .deadline_pct = 40,
	        .max_actions = 250,
	        .max_steps = SAGA_MAX_STEPS,
	};

	play_many(&p);
}

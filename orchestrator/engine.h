/*
 * The saga state machine: pure and deterministic, no I/O. Given a definition,
 * an instance and one event, it changes the instance and returns a plan of
 * what to persist and send; the store commits the plan in one transaction.
 */
#ifndef SAGAD_ENGINE_H
#define SAGAD_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "saga.h"
#include "status.h"

/* What happened to a saga. */
enum engine_event_type {
	EV_START = 1,    /* create the saga: dispatch the first group */
	EV_REPLY,        /* a participant's reply to a command */
	EV_STEP_TIMEOUT, /* an attempt's timeout passed without a reply */
	EV_RETRY_DUE,    /* a step's backoff ended: send the next attempt */
	EV_DEADLINE,     /* the saga deadline passed */
	EV_ABORT,        /* operator: compensate a running saga */
	EV_RETRY,        /* operator: re-arm a failed or stuck saga */
	EV_RESOLVE,      /* operator: close a failed saga by hand */
	EV_TYPE_COUNT,   /* number of event types + 1 */
};

/* One event. Fields not used by a type are ignored. */
struct engine_event {
	enum engine_event_type type; /* which event */
	int64_t now_ms;              /* database clock, ms since the epoch */
	int step;                    /* step index: reply, timeout, retry due */
	enum step_phase phase;       /* reply, timeout */
	uint32_t attempt;            /* reply, timeout */
	enum reply_outcome outcome;  /* reply */
	struct bytes output;         /* reply output (borrowed; copied on success) */
	const char *text;            /* reply error, or operator note; may be NULL */
};

/* How the saga took the event. */
enum engine_verdict {
	VERDICT_APPLIED = 0, /* the saga changed */
	VERDICT_DUPLICATE,   /* this reply (or its twin) was already applied */
	VERDICT_STALE,       /* for an attempt or phase the saga no longer waits on */
	VERDICT_LATE,        /* the saga had already ended */
	VERDICT_REFUSED,     /* an operator command not allowed in this state */
};

/* Lifecycle event types (numbers match saga.v1.EventType). */
enum lifecycle_type {
	LC_STARTED = 1,
	LC_STEP_SUCCEEDED = 2,
	LC_STEP_FAILED = 3,
	LC_STEP_RETRYING = 4,
	LC_COMPENSATING = 5,
	LC_COMPENSATION_SUCCEEDED = 6,
	LC_COMPLETED = 7,
	LC_COMPENSATED = 8,
	LC_FAILED = 9,
	LC_RESOLVED = 10,
	LC_RETRIED = 11,
};

/* A command to send. */
struct plan_command {
	int step;              /* step index */
	enum step_phase phase; /* action or compensation */
	uint32_t attempt;      /* attempt number of that phase */
	int64_t deadline_ms;   /* when the attempt times out */
};

/* A lifecycle event to publish. */
struct plan_event {
	enum lifecycle_type type;        /* what happened */
	int step;                        /* step index or -1 */
	uint32_t attempt;                /* attempt concerned, or 0 */
	char reason[SAGA_ERROR_MAX + 1]; /* error or note, or "" */
};

#define PLAN_MAX_COMMANDS SAGA_MAX_STEPS
#define PLAN_MAX_EVENTS   (3 * SAGA_MAX_STEPS + 4)

/* What one event did: the transition row, commands, events, dead letter. */
struct plan {
	enum engine_verdict verdict;     /* how the event was taken */
	enum engine_event_type event;    /* the event type */
	int32_t seq;                     /* transition sequence number given to it */
	int from_state;                  /* saga state before (0 = new) */
	enum saga_state to_state;        /* saga state after */
	int step;                        /* step concerned, or -1 */
	enum step_phase phase;           /* phase concerned (0 = none) */
	uint32_t attempt;                /* attempt concerned, or 0 */
	char detail[SAGA_ERROR_MAX + 1]; /* why (stale reason, error, note) */
	int n_commands;                  /* commands to send */
	struct plan_command commands[PLAN_MAX_COMMANDS];
	int n_events; /* lifecycle events to publish */
	struct plan_event events[PLAN_MAX_EVENTS];
	bool dead_letter;     /* the saga needs an operator: raise a dead letter */
	int dead_letter_step; /* step that caused it, or -1 */
};

/*
 * Apply ev to inst (which must belong to def) and describe it in *plan.
 * Every event gets a transition (plan->seq = ++inst->seq), applied or not.
 * Steps changed are marked dirty; inst->wake_at_ms is recomputed. Returns
 * STATUS_OK, or STATUS_NOMEM when a reply output cannot be copied (inst is
 * then unchanged). Never does I/O.
 */
enum status engine_step(const struct saga_def *def, struct saga_inst *inst,
                        const struct engine_event *ev, struct plan *plan) MUSTCHECK;

/*
 * Timer events due at now_ms for inst, in a fixed order (step timeouts and
 * retries by step index, then the deadline). Writes at most max events to out
 * and returns how many. Events are meant to be applied one after the other.
 */
int engine_due_events(const struct saga_def *def, const struct saga_inst *inst, int64_t now_ms,
                      struct engine_event *out, int max);

/*
 * Hold a waiting retry of step (action or compensation) until until_ms, as a
 * circuit breaker asks: only its timer moves (the step is marked dirty and the
 * saga's wake-up recomputed). Returns false when the step waits for no retry.
 */
bool engine_hold_retry(const struct saga_def *def, struct saga_inst *inst, int step,
                       int64_t until_ms);

/*
 * Set inst->wake_at_ms to the earliest armed timer: a running or compensating
 * step's attempt timeout or retry, and the saga deadline while running; 0
 * when the saga is terminal or nothing is armed. engine_step does this
 * itself; a timer pass that applied nothing calls it, because the stored
 * wake-up may be earlier than the real next timer (see store_queue_update_saga).
 */
void engine_recompute_wake(const struct saga_def *def, struct saga_inst *inst);

/* True when the saga is past its point of no return (pivot succeeded / retriable begun). */
bool engine_past_point_of_no_return(const struct saga_def *def, const struct saga_inst *inst);

/* True for completed, compensated and resolved. */
bool engine_is_terminal(enum saga_state s);

/* Names for logs and transition rows. */
const char *engine_event_name(enum engine_event_type t);
const char *engine_verdict_name(enum engine_verdict v);

#endif /* SAGAD_ENGINE_H */

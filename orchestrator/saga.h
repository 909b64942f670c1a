/* Domain types of sagas: definitions, instances, events; shared by engine, store and codec. */
#ifndef SAGAD_SAGA_H
#define SAGAD_SAGA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SAGA_MAX_STEPS       32  /* steps in one definition */
#define SAGA_NAME_MAX        64  /* saga, step and group names: [A-Za-z0-9_-] */
#define SAGA_SUBJECT_MAX     128 /* action / compensation subject suffix */
#define SAGA_ID_LEN          36  /* saga ids are UUIDs in text form */
#define SAGA_CORRELATION_MAX 128 /* correlation ids: [A-Za-z0-9._:/+=@-] */
#define SAGA_KEY_MAX         128 /* start idempotency keys: same characters */
#define SAGA_ERROR_MAX       256 /* kept error text */
#define SAGA_DESCRIPTION_MAX 512 /* definition description */
#define SAGA_TRACEPARENT_MAX 64  /* W3C traceparent: 55 characters */

/* How a step behaves on failure (numbers match saga.v1.StepKind). */
enum step_kind {
	STEP_KIND_COMPENSATABLE = 1, /* undone by its compensation when a later step fails */
	STEP_KIND_PIVOT = 2,         /* point of no return: after it succeeds, only forward */
	STEP_KIND_RETRIABLE = 3,     /* after the pivot: retried until it succeeds */
};

/* Exponential backoff with full jitter and an attempt cap. */
struct retry_policy {
	uint32_t max_attempts;      /* attempts in all; 0 = unlimited (retriable steps only) */
	int64_t initial_backoff_ms; /* cap of the first delay */
	int64_t max_backoff_ms;     /* cap of every delay */
	double multiplier;          /* growth of the cap per attempt (>= 1) */
};

/* One step of a definition. */
struct step_def {
	char name[SAGA_NAME_MAX + 1];                    /* unique in the saga */
	char action_subject[SAGA_SUBJECT_MAX + 1];       /* <prefix>.cmd.<this> */
	char compensation_subject[SAGA_SUBJECT_MAX + 1]; /* "" = nothing to undo */
	enum step_kind kind;                             /* failure behaviour */
	int64_t timeout_ms;                              /* per attempt */
	struct retry_policy retry;                       /* of the action */
	struct retry_policy compensation_retry;          /* of the compensation */
	char group[SAGA_NAME_MAX + 1];                   /* parallel group; "" = alone */
};

/* One immutable version of a saga definition. */
struct saga_def {
	char name[SAGA_NAME_MAX + 1];               /* saga name */
	uint32_t version;                           /* assigned at registration; 0 before */
	char description[SAGA_DESCRIPTION_MAX + 1]; /* for operators */
	int64_t deadline_ms;                        /* saga deadline from start; 0 = none */
	int n_steps;                                /* 1..SAGA_MAX_STEPS */
	struct step_def steps[SAGA_MAX_STEPS];      /* in order */
};

/* State of a saga instance (numbers match saga.v1.SagaState). */
enum saga_state {
	SAGA_RUNNING = 1,      /* forward steps in progress */
	SAGA_COMPENSATING = 2, /* undoing completed steps in reverse order */
	SAGA_COMPLETED = 3,    /* terminal: every step succeeded */
	SAGA_COMPENSATED = 4,  /* terminal: every completed step was undone */
	SAGA_FAILED = 5,       /* stuck until an operator retries or resolves it */
	SAGA_RESOLVED = 6,     /* terminal: an operator closed it by hand */
};

/* State of one step of an instance. */
enum step_state {
	STEP_PENDING = 0,                /* not dispatched yet */
	STEP_RUNNING,                    /* an action attempt is out, waiting for its reply */
	STEP_WAITING_RETRY,              /* the last action attempt failed; next one at wake_at */
	STEP_SUCCEEDED,                  /* the action succeeded */
	STEP_FAILED,                     /* the action failed for good (or was cut short) */
	STEP_COMPENSATING,               /* a compensation attempt is out */
	STEP_COMPENSATION_WAITING_RETRY, /* the last compensation attempt failed; next at wake_at */
	STEP_COMPENSATED,                /* undone (or nothing to undo) */
	STEP_COMPENSATION_FAILED,        /* compensation exhausted its retries: operator needed */
	STEP_STATE_COUNT,                /* number of step states */
};

/* Which half of a step a command or reply concerns (numbers match saga.v1.StepPhase). */
enum step_phase {
	PHASE_ACTION = 1,       /* the forward action */
	PHASE_COMPENSATION = 2, /* the compensating action */
};

/* A participant's verdict (numbers match saga.v1.Outcome). */
enum reply_outcome {
	OUTCOME_SUCCESS = 1,           /* done */
	OUTCOME_RETRYABLE_FAILURE = 2, /* try again later */
	OUTCOME_PERMANENT_FAILURE = 3, /* will never work */
};

/* Bytes with a length; owner documented where used. */
struct bytes {
	uint8_t *data; /* may be NULL when len is 0 */
	size_t len;    /* length in bytes */
};

/* Run-time state of one step. */
struct step_inst {
	enum step_state state;      /* see enum step_state */
	uint32_t attempt;           /* action attempts started so far */
	uint32_t attempt_base;      /* attempts before the last operator retry (budget floor) */
	uint32_t comp_attempt;      /* compensation attempts started so far */
	uint32_t comp_attempt_base; /* same floor for compensation */
	int64_t wake_at_ms;         /* attempt timeout or retry due time; 0 = none */
	int32_t completed_order;    /* 1-based order in which the action succeeded; 0 = not */
	bool uncertain;             /* last action attempt timed out: effect unknown */
	bool dirty;                 /* changed by the current plan: must be written */
	struct bytes output;        /* output of the successful action (owned by the instance) */
	char last_error[SAGA_ERROR_MAX + 1]; /* last failure text */
};

/* Run-time state of one saga instance. */
struct saga_inst {
	char id[SAGA_ID_LEN + 1];                      /* UUID */
	char correlation_id[SAGA_CORRELATION_MAX + 1]; /* carried everywhere */
	char traceparent[SAGA_TRACEPARENT_MAX + 1];    /* W3C trace context or "" */
	enum saga_state state;                         /* see enum saga_state */
	int32_t seq;                                   /* last transition sequence number */
	int32_t completions;                           /* actions succeeded so far */
	int64_t created_ms;                            /* database time of the start */
	int64_t deadline_at_ms;                        /* saga deadline; 0 = none / already fired */
	int64_t wake_at_ms;                            /* earliest timer; 0 = none */
	struct bytes input;                            /* saga input (owned) */
	char last_error[SAGA_ERROR_MAX + 1];           /* why it compensates / failed */
	struct step_inst steps[SAGA_MAX_STEPS];        /* one per step of the definition */
};

/* Identifying headers of messages (names used on the wire). */
#define HDR_MSG_ID          "Nats-Msg-Id"
#define HDR_CONTENT_TYPE    "Content-Type"
#define HDR_CORRELATION_ID  "Saga-Correlation-Id"
#define HDR_SAGA_ID         "Saga-Id"
#define HDR_SAGA_NAME       "Saga-Name"
#define HDR_STEP            "Saga-Step"
#define HDR_PHASE           "Saga-Phase"
#define HDR_ATTEMPT         "Saga-Attempt"
#define HDR_IDEMPOTENCY_KEY "Saga-Idempotency-Key"
#define HDR_TRACEPARENT     "traceparent"

/* Names for logs, SQL and headers; never NULL. */
const char *saga_state_name(enum saga_state s);
const char *step_state_name(enum step_state s);
const char *step_phase_name(enum step_phase p);
const char *step_kind_name(enum step_kind k);
const char *reply_outcome_name(enum reply_outcome o);

/* Parse names written by the functions above; return false when unknown. */
bool saga_state_parse(const char *text, enum saga_state *out);
bool step_state_parse(const char *text, enum step_state *out);

/* True for [A-Za-z0-9_-]{1,SAGA_NAME_MAX}. */
bool saga_valid_name(const char *s);
/* True for dot-separated name tokens, at most SAGA_SUBJECT_MAX. */
bool saga_valid_subject(const char *s);
/* True for [A-Za-z0-9._:/+=@-]{1,max}: correlation ids and idempotency keys. */
bool saga_valid_key(const char *s, size_t max);

/* Length of the valid UTF-8 character at s (1-4, within avail bytes), or 0 when there is none. */
size_t saga_utf8_len(const char *s, size_t avail);

/* True when the len bytes at s are valid UTF-8. */
bool saga_utf8_valid(const char *s, size_t len);

/*
 * Make the string s valid UTF-8 in place: every byte that does not start a
 * valid character becomes '?' (PostgreSQL refuses text that is not UTF-8,
 * strict protobuf readers refuse such strings). Returns how many bytes changed.
 */
size_t saga_utf8_scrub(char *s);

/*
 * Write a new saga id in text form, a time-ordered UUID (RFC 9562 version 7:
 * unix ms, a counter, 62 random bits); false if no randomness. Ids made by
 * one thread always grow, so the indexes keyed by saga id (the saga, its
 * steps, its transitions) take new rows at their right edge instead of on
 * random pages.
 */
bool saga_new_id(char out[SAGA_ID_LEN + 1]);

/* Release what an instance owns (input, outputs); the struct itself is the caller's. */
void saga_inst_release(struct saga_inst *inst);

#endif /* SAGAD_SAGA_H */

/*
 * Process metrics: counters and latency histograms updated by the main loop
 * (atomic, lock-free) and rendered in the Prometheus text format by the HTTP
 * thread.
 */
#ifndef SAGAD_METRICS_H
#define SAGAD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* Counters. */
enum metric_counter {
	M_STARTS_ACCEPTED = 0,         /* starts that created a saga */
	M_STARTS_DUPLICATE,            /* starts answered with an earlier saga (idempotency key) */
	M_STARTS_REJECTED_INVALID,     /* rejected: bad request */
	M_STARTS_REJECTED_UNKNOWN,     /* rejected: unknown saga */
	M_STARTS_REJECTED_OVERLOADED,  /* rejected: admission limit */
	M_STARTS_REJECTED_UNAVAILABLE, /* rejected: database unavailable */
	M_TRANSITIONS,                 /* transitions recorded (every event) */
	M_REPLIES_APPLIED,             /* replies that changed a saga */
	M_REPLIES_DUPLICATE,           /* duplicate replies */
	M_REPLIES_STALE,               /* stale replies */
	M_REPLIES_LATE,                /* replies after the saga ended */
	M_DEAD_LETTERS,                /* dead letters recorded (counted by the store at commit) */
	M_RETRIES,                     /* attempts scheduled for retry */
	M_COMPENSATIONS,               /* sagas that began compensating */
	M_SAGAS_COMPLETED,             /* sagas completed */
	M_SAGAS_COMPENSATED,           /* sagas compensated */
	M_SAGAS_FAILED,                /* sagas failed (operator needed) */
	M_TIMEOUTS,                    /* step attempts timed out */
	M_OUTBOX_PUBLISHED,            /* outbox rows published and deleted */
	M_BREAKER_OPENED,              /* circuits opened */
	M_RETRIES_HELD,                /* retries held back by an open circuit */
	M_SAGA_CACHE_HITS,             /* sagas taken from the saga cache */
	M_SAGA_CACHE_MISSES,           /* sagas read from the database */
	M_COUNTER_COUNT,               /* number of counters */
};

/* Latency histograms (milliseconds). */
enum metric_histogram {
	H_START_ACK = 0,   /* start received -> answered */
	H_STEP_LATENCY,    /* command dispatched -> successful reply applied */
	H_SAGA_DURATION,   /* saga start -> terminal state */
	H_MESSAGE_AGE,     /* reply completed by the participant -> applied by sagad */
	H_HISTOGRAM_COUNT, /* number of histograms */
};

/* Add n to a counter (any thread). */
void metrics_add(enum metric_counter c, uint64_t n);

/* Record one observation in ms (any thread). */
void metrics_observe(enum metric_histogram h, double ms);

/* Count what one applied plan did (transition, retries, compensations, outcomes, duration). */
void metrics_observe_plan(const struct saga_inst *inst, const struct plan *plan, int64_t now_ms);

/* Circuits open now (set by the breaker module). */
void metrics_set_breakers_open(int64_t n);

/* Current value of a counter (for tests and logs). */
uint64_t metrics_get(enum metric_counter c);

/* Gauges read at scrape time by the caller. */
struct metrics_gauges {
	int64_t running;           /* sagas running */
	int64_t compensating;      /* sagas compensating */
	int64_t failed;            /* sagas failed (waiting for an operator) */
	int64_t outbox_rows;       /* unsent outbox rows */
	double outbox_oldest_s;    /* age of the oldest unsent row, seconds */
	int64_t reply_pending;     /* replies not yet delivered to sagad */
	int64_t reply_ack_pending; /* replies delivered, not acked */
	int64_t submit_pending;    /* buffered starts not yet delivered */
	int gauges_ok;             /* the database part could be read */
	int consumer_ok;           /* the NATS part could be read */
};

/*
 * Render every metric in the Prometheus text exposition format (0.0.4) into a
 * new buffer (*out, caller frees) of *len bytes. Returns 0, or -1 when out of memory.
 */
int metrics_render(const struct metrics_gauges *g, char **out, size_t *len);

#endif /* SAGAD_METRICS_H */

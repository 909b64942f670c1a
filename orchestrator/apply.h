/*
 * Applying engine plans to the database: the writes one plan needs (transition,
 * commands, lifecycle events, dead letters through the outbox), the timer
 * pass, and operator commands. Every change to a saga goes through here.
 */
#ifndef SAGAD_APPLY_H
#define SAGAD_APPLY_H

#include <stdint.h>

#include "breaker.h"
#include "config.h"
#include "defcache.h"
#include "engine.h"
#include "status.h"
#include "store.h"

/* What the modules that change sagas share. */
struct apply_env {
	struct store *db;             /* the connection (one per thread) */
	struct defcache *defs;        /* definitions */
	const struct config *cfg;     /* settings (subject prefix, limits) */
	struct breaker_set *breakers; /* per-target circuits, or NULL (sagactl) */
};

/*
 * Queue (pipeline mode) what plan asks for: its transition row, one outbox
 * row per command and lifecycle event, and a dead letter when the saga needs
 * an operator. The instance row and steps are queued separately
 * (store_queue_update_saga / store_queue_steps), once per saga and batch.
 */
enum status apply_queue_plan(const struct apply_env *env, const struct saga_def *def,
                             const struct saga_inst *inst, const struct plan *plan,
                             int64_t now_ms) MUSTCHECK;

/* Queue a dead-letter row and its message on <prefix>.dlq.<error_class>. */
enum status apply_queue_dead_letter(const struct apply_env *env, const struct store_dead_letter *dl,
                                    int64_t now_ms) MUSTCHECK;

/*
 * One timer pass in its own transaction: take up to limit sagas whose wake_at
 * has come at least hold_back_ms ago (skipping those another sagad holds),
 * fire their due events, and commit. *n_events receives how many events were
 * applied. hold_back_ms is how far sagad is behind on its replies: a step
 * must not time out while its answer may still wait unread in the stream.
 */
enum status apply_due_timers(const struct apply_env *env, int limit, int64_t hold_back_ms,
                             int *n_sagas, int *n_events, char *err, size_t errlen) MUSTCHECK;

/*
 * Apply an operator command (EV_ABORT, EV_RETRY, EV_RESOLVE) with a note to
 * one saga in its own transaction. *plan tells the verdict (REFUSED with the
 * reason when the state does not allow it). STATUS_NOT_FOUND: no such saga.
 */
enum status apply_operator(const struct apply_env *env, const char *saga_id,
                           enum engine_event_type type, const char *note, struct plan *plan,
                           char *err, size_t errlen) MUSTCHECK;

/* The subject a command of step/phase goes to. */
const char *apply_target(const struct saga_def *def, int step, enum step_phase phase);

/*
 * Log one plan (debug for steps, info for saga-level outcomes, with the saga's
 * ids) and count it in the metrics.
 */
void apply_log_plan(const struct saga_def *def, const struct saga_inst *inst,
                    const struct plan *plan, int64_t now_ms);

#endif /* SAGAD_APPLY_H */

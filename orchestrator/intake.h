/*
 * Intake: starting sagas (request/reply on <prefix>.start.<saga>, buffered on
 * <prefix>.submit.<saga>) and registering definitions (<prefix>.define).
 */
#ifndef SAGAD_INTAKE_H
#define SAGAD_INTAKE_H

#include <stdint.h>

#include "apply.h"
#include "bus.h"
#include "codec.h"
#include "status.h"

/* Admission state shared by the start paths. */
struct intake_admission {
	int64_t in_flight;  /* sagas running or compensating, as last counted (+ accepted since) */
	int64_t counted_ms; /* when in_flight was last counted */
	int64_t max;        /* admission limit */
	int64_t retry_after_ms; /* suggested wait when over the limit */
};

/* One start to decide: a decoded request and where its answer goes. */
struct intake_start {
	struct start_msg req;              /* the decoded request (when decoded) */
	int decoded;                       /* req is valid */
	char saga_name[SAGA_NAME_MAX + 1]; /* from the request or the subject */
	struct start_answer answer;        /* filled by intake_starts */
	struct bus_msg *msg;               /* the message (borrowed: the caller frees it) */
	const char *dead_class;            /* dead-letter class of a bad submit, or NULL */
};

/*
 * Decide a batch of starts in one transaction: rejected (unknown saga,
 * invalid, over the admission limit), duplicate (idempotency key seen, also
 * within the batch: the first saga's ids) or accepted (instance, steps,
 * transition, first commands and the STARTED event committed together). On a
 * database failure every start of the batch is answered REJECT_UNAVAILABLE.
 * Rejections of buffered starts (from_submit) are published as REJECTED
 * lifecycle events through the outbox; a submit that cannot be processed as
 * sent (undecodable, invalid, oversized, a bad subject, an unknown saga) is
 * also kept as a dead letter with its raw bytes, once per stream message.
 */
enum status intake_starts(const struct apply_env *env, struct intake_admission *adm,
                          struct intake_start *starts, int n, int from_submit, char *err,
                          size_t errlen) MUSTCHECK;

/*
 * Prepare s from a message: decode, take the saga name from the subject's
 * last token when the request has none, and reject a mismatch. Sets
 * s->answer for requests that are rejected before any database work. msg
 * must stay valid until intake_release.
 */
void intake_prepare(struct intake_start *s, struct bus_msg *msg, size_t max_payload);

/* Release what intake_prepare allocated. */
void intake_release(struct intake_start *s);

/* Handle one <prefix>.define request: register and answer DefineResponse. */
void intake_define(const struct apply_env *env, struct bus *bus, struct bus_msg *msg);

#endif /* SAGAD_INTAKE_H */

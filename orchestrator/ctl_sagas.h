/* sagactl commands on sagas and definitions: list, show, trace, retry / abort / resolve, define, start. */
#ifndef SAGAD_CTL_SAGAS_H
#define SAGAD_CTL_SAGAS_H

#include "config.h"
#include "ctl_session.h"
#include "engine.h"

/* Each returns an exit code (enum ctl_exit); argv holds the words after the command. */
int ctl_sagas_list(const struct config *cfg, int argc, char **argv);
int ctl_sagas_show(const struct config *cfg, int argc, char **argv);
int ctl_sagas_trace(const struct config *cfg, int argc, char **argv);
int ctl_sagas_define(const struct config *cfg, int argc, char **argv);
int ctl_sagas_start(const struct config *cfg, int argc, char **argv);

/* retry / abort / resolve: one saga by id, or (retry, abort) --all with filters. */
int ctl_sagas_operator(const struct config *cfg, enum engine_event_type type, int argc,
                       char **argv);

/* What one operator command did to one saga. */
struct ctl_applied {
	int applied;      /* the engine applied it */
	int not_found;    /* no such saga */
	char from[24];    /* state before */
	char to[24];      /* state after */
	char detail[300]; /* the engine's reason or note */
};

/*
 * Apply an operator command (EV_RETRY, EV_ABORT, EV_RESOLVE) to one saga
 * through apply_operator, in its own transaction on the session's engine
 * connection (ctl_open_engine first). *out tells applied / refused / not
 * found; CTL_DATABASE (printed) when the transaction failed.
 */
int ctl_sagas_apply(struct ctl *c, const char *saga_id, enum engine_event_type type,
                    const char *note, struct ctl_applied *out) MUSTCHECK;

/*
 * Take (take = 1) or release (0) the session lock that serialises operator
 * actions on one saga between sagactl processes (a retry and the replay of
 * its dead letter must not both re-arm it), on c->db. The replay of a saga
 * letter takes the same key as a transaction lock. CTL_OK or CTL_DATABASE.
 */
int ctl_sagas_lock(struct ctl *c, const char *saga_id, int take) MUSTCHECK;

/*
 * After a failed saga was retried or resolved by an operator: close its
 * saga-level dead letters that are still open (retry: replayed; resolve:
 * discarded), except letter except_id (NULL: none). Runs on c->db, inside
 * the caller's transaction if one is open. CTL_OK or CTL_DATABASE.
 */
int ctl_sagas_close_letters(struct ctl *c, const char *saga_id, enum engine_event_type type,
                            const char *note, const char *except_id) MUSTCHECK;

#endif /* SAGAD_CTL_SAGAS_H */

/* The orchestrator's main loop: intake, replies, timers and the outbox relay, in one thread. */
#ifndef SAGAD_DAEMON_H
#define SAGAD_DAEMON_H

#include <signal.h>

#include "bus.h"
#include "config.h"
#include "store.h"

/*
 * Run until *stop becomes non-zero: subscribe to starts, submits, defines and
 * replies, and loop (PgBouncer's main_loop_once): take starts, apply replies,
 * fire due timers, relay the outbox. Returns 0 after a clean stop, non-zero
 * when it could not subscribe. db and bus are connected and migrated/set up;
 * when the database connection is lost, *db is replaced by a new one
 * (reconnecting at most once a second); the caller closes the last one.
 */
int daemon_run(const struct config *cfg, struct store **db, struct bus *bus,
               volatile sig_atomic_t *stop);

#endif /* SAGAD_DAEMON_H */

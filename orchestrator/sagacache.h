/*
 * The sagas this process wrote last, kept in memory so that the next event of
 * a saga needs no read from the database. An entry carries the version its
 * row got from our commit (the row's xmin): the store's update names that
 * version and fails the whole transaction when the row has changed since
 * (another sagad, an operator), so an entry is only ever trusted while it is
 * what the database holds. Bounded: the least recently written go first. One
 * thread (the main loop's store).
 */
#ifndef SAGAD_SAGACACHE_H
#define SAGAD_SAGACACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "saga.h"
#include "status.h"

/* A row version (xmin) in text form: an xid, at most 10 digits. */
#define SAGACACHE_VERSION_MAX 15

struct sagacache;

/* A saga copied for the cache, kept aside until its commit gives it a version. */
struct sagacache_entry;

/* A cache of at most capacity sagas (capacity >= 1). */
enum status sagacache_new(int capacity, struct sagacache **out) MUSTCHECK;
void sagacache_free(struct sagacache *c);

/* Whether id has an entry (it may still be stale: the store checks the version). */
bool sagacache_has(const struct sagacache *c, const char *id);

/*
 * Copy the entry of id into *inst (its own copies of input and outputs, no
 * step dirty; the rest of *inst zeroed), with its definition and version.
 * False when there is none, or out of memory (then *inst holds nothing).
 */
bool sagacache_get(struct sagacache *c, const char *id, struct saga_inst *inst,
                   char def_name[SAGA_NAME_MAX + 1], uint32_t *def_version,
                   char version[SAGACACHE_VERSION_MAX + 1]);

/* Copy inst (n_steps steps, with input and outputs) aside; NULL when out of memory. */
struct sagacache_entry *sagacache_stage(const struct saga_inst *inst, int n_steps,
                                        const char *def_name, uint32_t def_version);

/* The saga id of a staged entry. */
const char *sagacache_entry_id(const struct sagacache_entry *e);

/* Its commit wrote the row as version: e replaces any entry of its saga (c takes e). */
void sagacache_commit(struct sagacache *c, struct sagacache_entry *e, const char *version);

/* Free a staged entry that never got committed. */
void sagacache_discard(struct sagacache_entry *e);

/* Forget the entry of id, if any. */
void sagacache_drop(struct sagacache *c, const char *id);

/* How many entries it holds. */
int sagacache_count(const struct sagacache *c);

#endif

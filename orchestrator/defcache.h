/* Definitions in memory: versions are immutable, so each is read and decoded once. */
#ifndef SAGAD_DEFCACHE_H
#define SAGAD_DEFCACHE_H

#include <stdint.h>

#include "saga.h"
#include "status.h"
#include "store.h"

struct defcache;

/* How long "the latest version of X" is trusted before asking the database again. */
#define DEFCACHE_LATEST_TTL_MS 1000

enum status defcache_new(struct defcache **out) MUSTCHECK;
void defcache_free(struct defcache *c);

/*
 * The definition name at version (0 = latest, re-read after
 * DEFCACHE_LATEST_TTL_MS). *out stays valid until defcache_free.
 * STATUS_NOT_FOUND when there is no such definition or version.
 */
enum status defcache_get(struct defcache *c, struct store *db, const char *name, uint32_t version,
                         int64_t now_ms, const struct saga_def **out, char *err,
                         size_t errlen) MUSTCHECK;

/*
 * Register def (from YAML or the wire): apply defaults, validate, and store a
 * new version unless it equals the latest. On invalid input returns
 * STATUS_INVALID with field and err set; *version and *created on success.
 */
enum status defcache_register(struct store *db, struct saga_def *def, const char *source,
                              uint32_t *version, int *created, char *field, size_t fieldlen,
                              char *err, size_t errlen) MUSTCHECK;

#endif /* SAGAD_DEFCACHE_H */

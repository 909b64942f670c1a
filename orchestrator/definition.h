/* Saga definitions: YAML parsing, defaults, validation, and structure queries. */
#ifndef SAGAD_DEFINITION_H
#define SAGAD_DEFINITION_H

#include <stddef.h>

#include "saga.h"
#include "status.h"

/* Defaults applied to fields left unset (0 / ""). */
#define DEF_TIMEOUT_MS         30000 /* per-attempt step timeout */
#define DEF_MAX_ATTEMPTS       3     /* action attempts (compensatable / pivot steps) */
#define DEF_COMP_MAX_ATTEMPTS  10    /* compensation attempts */
#define DEF_INITIAL_BACKOFF_MS 200   /* first retry delay cap */
#define DEF_MAX_BACKOFF_MS     30000 /* any retry delay cap */
#define DEF_MULTIPLIER         2.0   /* growth per attempt */

/*
 * Parse one YAML document into *out (version 0, defaults applied, validated).
 *
 * Format (durations as "250ms", "30s", "5m", "1h", "1d"; plain numbers = ms):
 *
 *   name: order                       # required, [A-Za-z0-9_-]{1,64}
 *   description: free text            # optional
 *   deadline: 10m                     # optional saga deadline
 *   steps:                            # required, 1..32 steps, in order
 *     - name: reserve_stock           # required, unique
 *       action: stock.reserve         # required subject suffix
 *       compensation: stock.release   # optional subject suffix
 *       kind: compensatable           # compensatable (default) | pivot | retriable
 *       timeout: 5s                   # per attempt (default 30s)
 *       group: fanout                 # optional parallel group (consecutive steps)
 *       retry:                        # action retries (defaults: 3, 200ms, 30s, 2)
 *         max_attempts: 3             #   0 = unlimited, retriable steps only
 *         initial_backoff: 200ms
 *         max_backoff: 30s
 *         multiplier: 2
 *       compensation_retry: {...}     # same keys (default max_attempts 10)
 *
 * Unknown keys, wrong types, bad durations and every rule of
 * definition_validate are errors. On error returns STATUS_INVALID and writes
 * "line N: <field path>: <why>" to err, e.g.
 * "line 14: steps[1].timeout: \"3x\" is not a duration".
 */
enum status definition_parse_yaml(struct saga_def *out, const char *text, size_t len, char *err,
                                  size_t errlen) MUSTCHECK;

/* Fill unset fields with the defaults above (idempotent). */
void definition_apply_defaults(struct saga_def *def);

/*
 * Check every rule; on the first violation returns STATUS_INVALID, writes the
 * field path ("steps[2].compensation") to field and the reason to err.
 * Rules: valid names and subjects (allow-listed characters, no wildcards),
 * unique step names, 1..SAGA_MAX_STEPS steps, an action on every step, at
 * most one pivot, a pivot has no compensation and no group, only retriable
 * steps after a pivot, retriable steps have no compensation and no
 * compensatable step follows one, group members are consecutive, timeouts in
 * (0, 24h], retry bounds (max_attempts 1..1000, 0 only for retriable actions;
 * 1ms <= initial <= max <= 1h; multiplier in [1, 10]), deadline 0 or in [1s, 30d].
 */
enum status definition_validate(const struct saga_def *def, char *field, size_t fieldlen, char *err,
                                size_t errlen) MUSTCHECK;

/* Index one past the last step of the group that step i belongs to (i+1 when alone). */
int definition_group_end(const struct saga_def *def, int i);

/* Index of the first step of the group that step i belongs to (i when alone). */
int definition_group_start(const struct saga_def *def, int i);

/* Index of the pivot step, or -1. */
int definition_pivot_index(const struct saga_def *def);

/* Index of the step named name, or -1. */
int definition_step_index(const struct saga_def *def, const char *name);

#endif /* SAGAD_DEFINITION_H */

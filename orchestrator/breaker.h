/*
 * Per-target circuit breakers: after breaker_failures consecutive failed
 * attempts (retryable failures and timeouts) to one subject, retries to it are
 * held for a cool-down; then one probe goes out, and its outcome closes the
 * circuit or opens it again. Used by the main loop only (not thread-safe).
 */
#ifndef SAGAD_BREAKER_H
#define SAGAD_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

struct breaker_set;

/* threshold 0 disables every breaker (allow always). */
enum status breaker_new(struct breaker_set **out, int threshold, int64_t cooldown_ms) MUSTCHECK;
void breaker_free(struct breaker_set *b);

/* Record one attempt's outcome for subject: ok = success, !ok = retryable failure or timeout. */
void breaker_record(struct breaker_set *b, const char *subject, bool ok, int64_t now_ms);

/*
 * May a retry go to subject now? When open, returns false and sets *until_ms
 * to when to ask again. After the cool-down the first caller gets true (the
 * probe) and the others wait one more cool-down.
 */
bool breaker_allow(struct breaker_set *b, const char *subject, int64_t now_ms, int64_t *until_ms);

/* Circuits open now (for metrics and tests). */
int breaker_open_count(const struct breaker_set *b);

#endif /* SAGAD_BREAKER_H */

/* Retry delays: exponential backoff with full jitter from a seeded PRNG. */
#ifndef SAGAD_BACKOFF_H
#define SAGAD_BACKOFF_H

#include <stdint.h>

#include "saga.h"

/*
 * Delay in ms before the attempt after failed attempt number `attempt`
 * (1-based): uniform in [0, min(max_backoff, initial * multiplier^(attempt-1))],
 * drawn from a PRNG seeded with (saga_id, step, phase, attempt), so the same
 * inputs always give the same delay and different sagas spread out.
 */
int64_t backoff_delay_ms(const struct retry_policy *policy, const char *saga_id, int step,
                         enum step_phase phase, uint32_t attempt);

/* The cap of that delay (no jitter): min(max_backoff, initial * multiplier^(attempt-1)). */
int64_t backoff_cap_ms(const struct retry_policy *policy, uint32_t attempt);

/* 64-bit FNV-1a of data, continuing from h (start with BACKOFF_FNV_SEED). */
#define BACKOFF_FNV_SEED UINT64_C(0xcbf29ce484222325)
uint64_t backoff_hash(uint64_t h, const void *data, size_t len);

/* splitmix64 step: advances *state and returns the next pseudo-random value. */
uint64_t backoff_next(uint64_t *state);

#endif /* SAGAD_BACKOFF_H */

/* Retry delays: exponential backoff with full jitter from a seeded PRNG. */
#include "backoff.h"

#include <string.h>

uint64_t
backoff_hash(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

uint64_t
backoff_next(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

int64_t
backoff_cap_ms(const struct retry_policy *policy, uint32_t attempt)
{
	double cap = (double)policy->initial_backoff_ms;
	double max = (double)policy->max_backoff_ms;

	/* Grows until it reaches max; a multiplier of 1 (or less) never grows. */
	for (uint32_t i = 1; i < attempt && cap < max && policy->multiplier > 1.0; i++)
		cap *= policy->multiplier;
	if (cap > max)
		cap = max;
	return cap < 0 ? 0 : (int64_t)cap;
}

int64_t
backoff_delay_ms(const struct retry_policy *policy, const char *saga_id, int step,
                 enum step_phase phase, uint32_t attempt)
{
	int64_t cap = backoff_cap_ms(policy, attempt);
	uint64_t seed = backoff_hash(BACKOFF_FNV_SEED, saga_id, strlen(saga_id));
	int32_t fields[3] = {step, (int32_t)phase, (int32_t)attempt};

	seed = backoff_hash(seed, fields, sizeof(fields));
	if (cap <= 0)
		return 0;
	/* Full jitter: uniform in [0, cap]. */
	return (int64_t)(backoff_next(&seed) % (uint64_t)(cap + 1));
}

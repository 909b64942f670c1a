/* Unit tests of retry delays: full-jitter bounds, cap growth, determinism and spread. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"

#define N_IDS 100

static const struct retry_policy policies[] = {
        {3, 200, 30000, 2.0}, {5, 1, 1, 1.0},     {10, 1, 3600000, 10.0},
        {4, 250, 1000, 1.5},  {0, 100, 100, 3.0}, {1000, 3600000, 3600000, 1.0},
        {7, 7, 64, 1.1},
};

#define N_POLICIES (sizeof(policies) / sizeof(policies[0]))

/* A UUID-looking saga id made from n. */
static void
saga_id(char *out, size_t len, unsigned n)
{
	snprintf(out, len, "%08x-0000-4000-8000-%012x", n * 2654435761u, n);
}

Test(backoff, full_jitter_stays_between_zero_and_the_cap)
{
	char id[SAGA_ID_LEN + 1];

	for (size_t p = 0; p < N_POLICIES; p++) {
		for (unsigned n = 0; n < N_IDS; n++) {
			saga_id(id, sizeof(id), n);
			for (uint32_t attempt = 1; attempt <= 40; attempt++) {
				for (int step = 0; step < 3; step++) {
					int64_t cap = backoff_cap_ms(&policies[p], attempt);
					int64_t d = backoff_delay_ms(&policies[p], id, step,
					                             PHASE_ACTION, attempt);
					int64_t c = backoff_delay_ms(&policies[p], id, step,
					                             PHASE_COMPENSATION, attempt);

					cr_assert(d >= 0 && d <= cap,
					          "policy %zu id %s attempt %u: delay %" PRId64
					          " not in [0, %" PRId64 "]",
					          p, id, attempt, d, cap);
					cr_assert(c >= 0 && c <= cap,
					          "policy %zu id %s attempt %u: compensation delay "
					          "%" PRId64 " not in [0, %" PRId64 "]",
					          p, id, attempt, c, cap);
				}
			}
		}
	}
}

Test(backoff, the_cap_grows_by_the_multiplier_up_to_max_backoff)
{
	struct retry_policy p = {3, 100, 5000, 2.0};
	static const int64_t want[] = {100, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};

	/* attempt 0 is read as the first attempt */
	for (uint32_t a = 0; a < sizeof(want) / sizeof(want[0]); a++)
		cr_assert_eq(backoff_cap_ms(&p, a), want[a],
		             "attempt %u: cap %" PRId64 ", want %" PRId64, a, backoff_cap_ms(&p, a),
		             want[a]);
	for (uint32_t a = 1; a < 200; a++) {
		cr_assert_leq(backoff_cap_ms(&p, a), backoff_cap_ms(&p, a + 1),
		              "the cap shrank after attempt %u", a);
		cr_assert_leq(backoff_cap_ms(&p, a), p.max_backoff_ms, "attempt %u over max", a);
	}

	p = (struct retry_policy){3, 200, 1000, 1.5};
	cr_assert_eq(backoff_cap_ms(&p, 1), 200);
	cr_assert_eq(backoff_cap_ms(&p, 2), 300);
	cr_assert_eq(backoff_cap_ms(&p, 3), 450);
	cr_assert_eq(backoff_cap_ms(&p, 4), 675);
	cr_assert_eq(backoff_cap_ms(&p, 5), 1000, "1012.5 is clamped to max_backoff");
}

Test(backoff, a_multiplier_of_one_keeps_the_cap_constant)
{
	struct retry_policy p = {5, 750, 30000, 1.0};
	char id[SAGA_ID_LEN + 1];

	for (uint32_t a = 1; a <= 1000; a++)
		cr_assert_eq(backoff_cap_ms(&p, a), 750, "attempt %u: cap %" PRId64, a,
		             backoff_cap_ms(&p, a));
	for (unsigned n = 0; n < N_IDS; n++) {
		saga_id(id, sizeof(id), n);
		cr_assert_leq(backoff_delay_ms(&p, id, 1, PHASE_ACTION, 999), 750);
	}
}

Test(backoff, the_same_inputs_always_give_the_same_delay)
{
	char id[SAGA_ID_LEN + 1];
	char copy[SAGA_ID_LEN + 1];

	for (size_t p = 0; p < N_POLICIES; p++) {
		for (unsigned n = 0; n < N_IDS; n++) {
			saga_id(id, sizeof(id), n);
			memcpy(copy, id, sizeof(id)); /* equal text, different buffer */
			for (uint32_t a = 1; a <= 10; a++) {
				int64_t d = backoff_delay_ms(&policies[p], id, (int)a % 4,
				                             PHASE_ACTION, a);

				cr_assert_eq(backoff_delay_ms(&policies[p], copy, (int)a % 4,
				                              PHASE_ACTION, a),
				             d, "policy %zu id %s attempt %u changed", p, id, a);
				cr_assert_eq(backoff_delay_ms(&policies[p], id, (int)a % 4,
				                              PHASE_ACTION, a),
				             d);
			}
		}
	}
}

Test(backoff, different_sagas_spread_out)
{
	struct retry_policy p = {5, 250, 1000, 2.0}; /* cap at attempt 3: 1 s */
	int64_t seen[N_IDS];
	int distinct = 0;
	char id[SAGA_ID_LEN + 1];

	cr_assert_eq(backoff_cap_ms(&p, 3), 1000);
	for (unsigned n = 0; n < N_IDS; n++) {
		int64_t d;
		bool dup = false;

		saga_id(id, sizeof(id), n);
		d = backoff_delay_ms(&p, id, 0, PHASE_ACTION, 3);
		for (int k = 0; k < distinct; k++)
			dup |= seen[k] == d;
		if (!dup)
			seen[distinct++] = d;
	}
	cr_assert_geq(distinct, 50, "only %d distinct delays over %d saga ids", distinct, N_IDS);
}

Test(backoff, steps_phases_and_attempts_draw_different_delays)
{
	struct retry_policy p = {10, 1000, 1000, 1.0};
	char id[SAGA_ID_LEN + 1];
	int same_step = 0;
	int same_phase = 0;
	int same_attempt = 0;

	for (unsigned n = 0; n < N_IDS; n++) {
		int64_t d;

		saga_id(id, sizeof(id), n);
		d = backoff_delay_ms(&p, id, 1, PHASE_ACTION, 2);
		same_step += backoff_delay_ms(&p, id, 2, PHASE_ACTION, 2) == d;
		same_phase += backoff_delay_ms(&p, id, 1, PHASE_COMPENSATION, 2) == d;
		same_attempt += backoff_delay_ms(&p, id, 1, PHASE_ACTION, 3) == d;
	}
	/* With 1001 possible values a handful of collisions is chance; most must differ. */
	cr_assert_lt(same_step, 10, "%d ids gave step 1 and step 2 the same delay", same_step);
	cr_assert_lt(same_phase, 10, "%d ids gave both phases the same delay", same_phase);
	cr_assert_lt(same_attempt, 10, "%d ids gave attempts 2 and 3 the same delay", same_attempt);
}

Test(backoff, delays_are_spread_evenly_over_the_window)
{
	struct retry_policy p = {5, 1000, 1000, 2.0};
	char id[SAGA_ID_LEN + 1];
	long buckets[10] = {0};
	double sum = 0;
	const int n_ids = 20000;

	for (int n = 0; n < n_ids; n++) {
		int64_t d;

		saga_id(id, sizeof(id), (unsigned)n);
		d = backoff_delay_ms(&p, id, 0, PHASE_ACTION, 1);
		sum += (double)d;
		buckets[d >= 1000 ? 9 : d / 100]++;
	}
	cr_assert(sum / n_ids > 450 && sum / n_ids < 550, "mean delay %.1f of a 0..1000 window",
	          sum / n_ids);
	for (int b = 0; b < 10; b++)
		cr_assert(buckets[b] > n_ids / 10 * 8 / 10 && buckets[b] < n_ids / 10 * 12 / 10,
		          "bucket %d holds %ld of %d delays", b, buckets[b], n_ids);
}

Test(backoff, huge_attempt_numbers_do_not_overflow)
{
	static const uint32_t attempts[] = {64,        1000, 65536, UINT32_MAX / 2, UINT32_MAX - 1,
	                                    UINT32_MAX};
	struct retry_policy fast = {0, 3600000, 3600000, 10.0};
	struct retry_policy grow = {0, 1, 3600000, 10.0};
	struct retry_policy slow = {0, 1, 3600000, 1.0000001};
	char id[SAGA_ID_LEN + 1];

	saga_id(id, sizeof(id), 42);
	for (size_t k = 0; k < sizeof(attempts) / sizeof(attempts[0]); k++) {
		uint32_t a = attempts[k];
		int64_t d;

		cr_assert_eq(backoff_cap_ms(&fast, a), 3600000, "attempt %u", a);
		cr_assert_eq(backoff_cap_ms(&grow, a), 3600000, "attempt %u", a);
		d = backoff_delay_ms(&grow, id, 31, PHASE_COMPENSATION, a);
		cr_assert(d >= 0 && d <= 3600000, "attempt %u: delay %" PRId64, a, d);
		if (a <= 65536) {
			int64_t cap = backoff_cap_ms(&slow, a);

			cr_assert(cap >= 1 && cap <= 3600000, "attempt %u: cap %" PRId64, a, cap);
		}
	}
}

Test(backoff, a_constant_cap_with_huge_attempt_numbers_answers_quickly)
{
	/*
	 * An unlimited retriable step with multiplier 1 keeps its attempt count
	 * growing for ever; the cap must not cost time proportional to it.
	 */
	struct retry_policy p = {0, 100, 1000, 1.0};
	struct timespec t0;
	struct timespec t1;
	double secs;
	char id[SAGA_ID_LEN + 1];

	saga_id(id, sizeof(id), 7);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(backoff_cap_ms(&p, UINT32_MAX), 100);
	cr_assert_leq(backoff_delay_ms(&p, id, 0, PHASE_ACTION, UINT32_MAX), 100);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_assert_lt(secs, 0.5, "backoff for attempt UINT32_MAX took %.2f s", secs);
}

Test(backoff, hash_and_prng_are_stable)
{
	uint64_t s = 0;

	/* FNV-1a 64 of "" is the offset basis, of "a" a published vector. */
	cr_assert_eq(backoff_hash(BACKOFF_FNV_SEED, "", 0), BACKOFF_FNV_SEED);
	cr_assert_eq(backoff_hash(BACKOFF_FNV_SEED, "a", 1), UINT64_C(0xaf63dc4c8601ec8c));
	/* splitmix64 from state 0: the reference first output. */
	cr_assert_eq(backoff_next(&s), UINT64_C(0xe220a8397b1dcdaf));
	cr_assert_eq(s, UINT64_C(0x9e3779b97f4a7c15));
}

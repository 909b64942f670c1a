/* Unit tests of the per-target circuit breakers. */
#include <criterion/criterion.h>

#include "breaker.h"

static struct breaker_set *b;

static void
setup(void)
{
	cr_assert_eq(breaker_new(&b, 3, 1000), STATUS_OK);
}

static void
teardown(void)
{
	breaker_free(b);
}

TestSuite(breaker, .init = setup, .fini = teardown);

Test(breaker, opens_after_the_threshold_of_consecutive_failures_and_holds_retries)
{
	int64_t until = 0;

	breaker_record(b, "payments.charge", false, 100);
	breaker_record(b, "payments.charge", false, 200);
	cr_assert(breaker_allow(b, "payments.charge", 250, &until), "two failures: still closed");
	breaker_record(b, "payments.charge", false, 300);
	cr_assert_eq(breaker_open_count(b), 1);
	cr_assert_not(breaker_allow(b, "payments.charge", 400, &until));
	cr_assert_eq(until, 1300, "held until the cool-down ends");
	cr_assert(breaker_allow(b, "stock.reserve", 400, &until), "other targets are not affected");
}

Test(breaker, a_success_resets_the_count)
{
	int64_t until = 0;

	breaker_record(b, "x", false, 1);
	breaker_record(b, "x", false, 2);
	breaker_record(b, "x", true, 3);
	breaker_record(b, "x", false, 4);
	breaker_record(b, "x", false, 5);
	cr_assert(breaker_allow(b, "x", 6, &until));
}

Test(breaker, after_the_cooldown_one_probe_goes_out_and_its_outcome_decides)
{
	int64_t until = 0;

	for (int i = 0; i < 3; i++)
		breaker_record(b, "x", false, 0);
	cr_assert(breaker_allow(b, "x", 1000, &until),
	          "the first retry after the cool-down probes");
	cr_assert_not(breaker_allow(b, "x", 1001, &until), "the others wait for the probe");
	breaker_record(b, "x", false, 1100);
	cr_assert_not(breaker_allow(b, "x", 1200, &until), "a failed probe reopens");
	cr_assert_eq(until, 2100);
	cr_assert(breaker_allow(b, "x", 2100, &until));
	breaker_record(b, "x", true, 2150);
	cr_assert_eq(breaker_open_count(b), 0);
	cr_assert(breaker_allow(b, "x", 2151, &until));
	cr_assert(breaker_allow(b, "x", 2152, &until), "closed: everything goes");
}

Test(breaker, a_zero_threshold_turns_breakers_off)
{
	struct breaker_set *off = NULL;
	int64_t until = 0;

	cr_assert_eq(breaker_new(&off, 0, 1000), STATUS_OK);
	for (int i = 0; i < 100; i++)
		breaker_record(off, "x", false, i);
	cr_assert(breaker_allow(off, "x", 100, &until));
	breaker_free(off);
}

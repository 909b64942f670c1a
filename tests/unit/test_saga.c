/* Unit tests of the domain helpers in saga.c: text from the wire, new saga ids. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "saga.h"

Test(saga, scrub_leaves_valid_utf8_alone)
{
	char s[] = "order.reserve caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x01\x7f";
	char before[sizeof(s)];

	memcpy(before, s, sizeof(s));
	cr_assert_eq(saga_utf8_scrub(s), 0);
	cr_assert_str_eq(s, before);
}

Test(saga, scrub_replaces_every_byte_that_starts_no_character)
{
	char lone[] = "evil\xff\xfex";
	char cut[] = "ab\xc3";              /* a 2-byte character cut after its first byte */
	char overlong[] = "\xc0\xaf/";      /* overlong '/' */
	char surrogate[] = "\xed\xa0\x80z"; /* U+D800 */
	char continuation[] = "\x80\x80ok";

	cr_assert_eq(saga_utf8_scrub(lone), 2);
	cr_assert_str_eq(lone, "evil??x");
	cr_assert_eq(saga_utf8_scrub(cut), 1);
	cr_assert_str_eq(cut, "ab?");
	cr_assert_eq(saga_utf8_scrub(overlong), 2);
	cr_assert_str_eq(overlong, "?\?/"); /* "?\?": no trigraph */
	cr_assert_eq(saga_utf8_scrub(surrogate), 3);
	cr_assert_str_eq(surrogate, "???z");
	cr_assert_eq(saga_utf8_scrub(continuation), 2);
	cr_assert_str_eq(continuation, "??ok");
	cr_assert(saga_utf8_valid(lone, strlen(lone)) && saga_utf8_valid(cut, strlen(cut)) &&
	          saga_utf8_valid(overlong, strlen(overlong)) &&
	          saga_utf8_valid(surrogate, strlen(surrogate)));
}

Test(saga, a_scrubbed_string_keeps_its_length_and_is_valid)
{
	char s[256];

	/* Every byte value once, in an order that cuts characters everywhere. */
	for (int i = 0; i < 255; i++)
		s[i] = (char)(255 - i);
	s[255] = '\0';
	saga_utf8_scrub(s);
	cr_assert_eq(strlen(s), 255);
	cr_assert(saga_utf8_valid(s, strlen(s)));
}

Test(saga, names_and_keys_refuse_subject_syntax)
{
	static const char *const hostile[] = {"a.b",  "*",    ">",           "a b", "a\r\nb",
	                                      "a\tb", "\x01", "caf\xc3\xa9", ""};

	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		cr_assert(!saga_valid_name(hostile[i]), "name %zu", i);
		if (i > 0) /* a dot is allowed in keys: they never become subject tokens */
			cr_assert(!saga_valid_key(hostile[i], SAGA_KEY_MAX), "key %zu", i);
	}
	cr_assert(saga_valid_key("a.b:c/d+e=f@g-h_i", SAGA_KEY_MAX));
	cr_assert(saga_valid_subject("stock.reserve"));
	cr_assert(!saga_valid_subject("stock..reserve") && !saga_valid_subject("stock.*") &&
	          !saga_valid_subject("stock.>") && !saga_valid_subject(".stock"));
}

/* The 48-bit unix ms at the front of a version 7 id. */
static uint64_t
id_ms(const char *id)
{
	char hex[13];

	memcpy(hex, id, 8);
	memcpy(hex + 8, id + 9, 4);
	hex[12] = '\0';
	return strtoull(hex, NULL, 16);
}

Test(saga, new_ids_are_version_7_uuids_of_the_current_time)
{
	char id[SAGA_ID_LEN + 1];
	struct timespec ts;
	uint64_t before, after;

	clock_gettime(CLOCK_REALTIME, &ts);
	before = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	cr_assert(saga_new_id(id));
	clock_gettime(CLOCK_REALTIME, &ts);
	after = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	cr_assert_eq(strlen(id), SAGA_ID_LEN);
	for (int i = 0; i < SAGA_ID_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			cr_assert_eq(id[i], '-', "%s", id);
		else
			cr_assert(strchr("0123456789abcdef", id[i]) != NULL, "%s", id);
	}
	cr_assert_eq(id[14], '7', "version nibble of %s", id);
	cr_assert(strchr("89ab", id[19]) != NULL, "variant of %s", id);
	/* A burst may run the counter past the millisecond by a little, never behind it. */
	cr_assert_geq(id_ms(id), before, "%s", id);
	cr_assert_leq(id_ms(id), after + 2, "%s", id);
}

Test(saga, ids_of_one_thread_grow_and_differ_even_within_a_millisecond)
{
	static char ids[20000][SAGA_ID_LEN + 1];

	/* Far more ids than one millisecond's counter holds: the counter rolls into the next ms. */
	for (int i = 0; i < 20000; i++)
		cr_assert(saga_new_id(ids[i]));
	for (int i = 1; i < 20000; i++)
		cr_assert_lt(strcmp(ids[i - 1], ids[i]), 0, "%s then %s", ids[i - 1], ids[i]);
}

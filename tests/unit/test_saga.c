/* Unit tests of the domain helpers in saga.c that guard text from the wire. */
#include <criterion/criterion.h>
#include <string.h>

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

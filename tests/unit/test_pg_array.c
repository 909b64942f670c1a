/* Unit tests of PostgreSQL array literals: quoting, NULLs, bytea, reuse and growth. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_array.h"

Test(pg_array, an_empty_array_is_a_pair_of_braces)
{
	struct pg_array a = {0};

	cr_assert_str_eq(pg_array_close(&a), "{}");
	pg_array_free(&a);
}

Test(pg_array, text_is_quoted_and_quotes_and_backslashes_are_escaped)
{
	struct pg_array a = {0};

	pg_array_text(&a, "plain");
	pg_array_text(&a, "a \"b\" \\c, {d}");
	pg_array_text(&a, "");
	pg_array_text(&a, "NULL");
	cr_assert_str_eq(pg_array_close(&a),
	                 "{\"plain\",\"a \\\"b\\\" \\\\c, {d}\",\"\",\"NULL\"}");
	pg_array_free(&a);
}

Test(pg_array, null_text_and_null_bytes_are_sql_nulls)
{
	struct pg_array a = {0};

	pg_array_text(&a, NULL);
	pg_array_bytes(&a, NULL, 0);
	pg_array_int(&a, -42);
	pg_array_bool(&a, true);
	pg_array_bool(&a, false);
	cr_assert_str_eq(pg_array_close(&a), "{NULL,NULL,-42,t,f}");
	pg_array_free(&a);
}

Test(pg_array, bytes_are_hex_with_the_backslash_escaped_for_the_array)
{
	struct pg_array a = {0};
	const uint8_t data[] = {0x00, 0x7f, 0xff, '"'};

	pg_array_bytes(&a, data, sizeof(data));
	pg_array_bytes(&a, data, 0);
	cr_assert_str_eq(pg_array_close(&a), "{\"\\\\x007fff22\",\"\\\\x\"}");
	pg_array_free(&a);
}

Test(pg_array, elements_may_follow_a_close_and_reset_starts_afresh)
{
	struct pg_array a = {0};

	pg_array_int(&a, 1);
	cr_assert_str_eq(pg_array_close(&a), "{1}");
	pg_array_int(&a, 2);
	cr_assert_str_eq(pg_array_close(&a), "{1,2}");
	pg_array_reset(&a);
	cr_assert_str_eq(pg_array_close(&a), "{}");
	pg_array_int(&a, 3);
	cr_assert_str_eq(pg_array_close(&a), "{3}");
	pg_array_free(&a);
	cr_assert_null(a.buf);
	pg_array_free(NULL);
}

Test(pg_array, a_long_array_grows_and_keeps_every_element)
{
	struct pg_array a = {0};
	char *want = malloc(20000 * 8);
	size_t pos = 0;

	cr_assert_not_null(want);
	want[pos++] = '{';
	for (int i = 0; i < 20000; i++) {
		pg_array_int(&a, i);
		pos += (size_t)sprintf(want + pos, "%s%d", i ? "," : "", i);
	}
	want[pos++] = '}';
	want[pos] = '\0';
	cr_assert_str_eq(pg_array_close(&a), want);
	cr_assert_eq(a.n, 20000);
	free(want);
	pg_array_free(&a);
}

/* Random elements, closes and resets against a literal built the slow way. */
Test(pg_array, random_sequences_match_a_reference_literal)
{
	struct pg_array a = {0};
	static char want[1 << 20];
	size_t pos = 0;
	int n = 0;
	unsigned seed = 12345;

	for (int step = 0; step < 20000; step++) {
		unsigned r = (unsigned)rand_r(&seed) % 100;
		char text[300];
		size_t len = (size_t)rand_r(&seed) % 250;

		if (pos > sizeof(want) - 2048 || r < 2) {
			pg_array_reset(&a);
			pos = 0;
			n = 0;
			continue;
		}
		if (r < 10) {
			const char *got = pg_array_close(&a);

			want[pos] = '\0';
			if (n == 0)
				cr_assert_str_eq(got, "{}");
			else {
				cr_assert_eq(strncmp(got, want, pos), 0);
				cr_assert_str_eq(got + pos, "}");
			}
			continue;
		}
		want[pos++] = n++ == 0 ? '{' : ',';
		if (r < 40) {
			for (size_t i = 0; i < len; i++)
				text[i] = (char)(1 + rand_r(&seed) % 255);
			text[len] = '\0';
			pg_array_text(&a, text);
			want[pos++] = '"';
			for (size_t i = 0; i < len; i++) {
				if (text[i] == '"' || text[i] == '\\')
					want[pos++] = '\\';
				want[pos++] = text[i];
			}
			want[pos++] = '"';
		} else if (r < 70) {
			static const char hex[] = "0123456789abcdef";

			for (size_t i = 0; i < len; i++)
				text[i] = (char)(rand_r(&seed) % 256);
			pg_array_bytes(&a, (const uint8_t *)text, len);
			memcpy(want + pos, "\"\\\\x", 4);
			pos += 4;
			for (size_t i = 0; i < len; i++) {
				want[pos++] = hex[(unsigned char)text[i] >> 4];
				want[pos++] = hex[(unsigned char)text[i] & 0xf];
			}
			want[pos++] = '"';
		} else if (r < 85) {
			int64_t v = (int64_t)rand_r(&seed) * (r % 2 ? -1 : 1);

			pg_array_int(&a, v);
			pos += (size_t)sprintf(want + pos, "%lld", (long long)v);
		} else if (r < 95) {
			pg_array_bool(&a, r % 2);
			want[pos++] = r % 2 ? 't' : 'f';
		} else {
			pg_array_text(&a, NULL);
			memcpy(want + pos, "NULL", 4);
			pos += 4;
		}
	}
	pg_array_free(&a);
}

/* Unit tests of the migration helpers that need no database. */
#include <criterion/criterion.h>

#include "migrate.h"

Test(migrate_parse, error_position_maps_to_line)
{
	const char *sql = "CREATE TABLE a (x int);\nCREATE TABLE b (y int);\nSELEC 1;\n";

	cr_assert_eq(migrate_line_of(sql, 1), 1);
	cr_assert_eq(migrate_line_of(sql, 25), 2);
	cr_assert_eq(migrate_line_of(sql, 49), 3);
}

Test(migrate_parse, positions_count_characters_not_bytes)
{
	/* "é" is two bytes but one character in PostgreSQL's positions. */
	const char *sql = "-- café\nSELEC 1;";

	cr_assert_eq(migrate_line_of(sql, 9), 2);
}

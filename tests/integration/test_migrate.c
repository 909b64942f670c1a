/* Integration tests of `sagad migrate` against a real PostgreSQL, one schema per test. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char schema[96];
static char out[16384];

static int
migrate(const char *migrations_dir, char *output, size_t outlen)
{
	char env_schema[160];
	char env_dir[600];
	const char *argv[] = {harness_bin("SAGAD_BIN"), "migrate", NULL};
	const char *env[] = {env_schema, migrations_dir != NULL ? env_dir : NULL, NULL};

	snprintf(env_schema, sizeof(env_schema), "SAGAD_DB_SCHEMA=%s", schema);
	snprintf(env_dir, sizeof(env_dir), "SAGAD_MIGRATIONS_DIR=%s",
	         migrations_dir != NULL ? migrations_dir : "");
	return harness_run(argv, env, output, outlen, 60000);
}

static int
count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)) != NULL)
		n += strstr(e->d_name, ".sql") != NULL;
	closedir(d);
	return n;
}

static const char *
source_migrations(void)
{
	static char path[512];

	snprintf(path, sizeof(path), "%s/migrations", harness_bin("SAGAD_SOURCE_ROOT"));
	return path;
}

static void
setup(void)
{
	harness_unique_name(schema, sizeof(schema), "t_migrate");
}

TestSuite(migrate, .init = setup);

Test(migrate, applies_every_migration_to_an_empty_schema)
{
	char count[32];

	cr_assert_eq(migrate(NULL, out, sizeof(out)), 0, "sagad migrate failed:\n%s", out);
	snprintf(count, sizeof(count), "%d", count_files(source_migrations()));
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM sagad_migrations"), count);
	cr_assert_str_eq(harness_sql(schema, "SELECT to_regclass('saga_instance') IS NOT NULL"),
	                 "t");
	cr_assert_str_eq(harness_sql(schema, "SELECT to_regclass('saga_outbox') IS NOT NULL"), "t");
	cr_assert(strstr(out, "applied migration 0001_core.sql") != NULL, "%s", out);
}

Test(migrate, rerun_is_a_no_op)
{
	char before[64];

	cr_assert_eq(migrate(NULL, out, sizeof(out)), 0, "%s", out);
	snprintf(before, sizeof(before), "%s",
	         harness_sql(schema, "SELECT max(applied_at)::text FROM sagad_migrations"));
	cr_assert_eq(migrate(NULL, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "0 applied") != NULL, "second run applied something:\n%s", out);
	cr_assert(strstr(out, "applied migration") == NULL, "%s", out);
	cr_assert_str_eq(harness_sql(schema, "SELECT max(applied_at)::text FROM sagad_migrations"),
	                 before);
}

Test(migrate, two_concurrent_runs_leave_one_correct_schema)
{
	char env_schema[160];
	const char *argv[] = {harness_bin("SAGAD_BIN"), "migrate", NULL};
	const char *env[] = {env_schema, NULL};
	char logs[4][64];
	pid_t pids[4];
	char count[32];

	snprintf(env_schema, sizeof(env_schema), "SAGAD_DB_SCHEMA=%s", schema);
	for (int i = 0; i < 4; i++) {
		snprintf(logs[i], sizeof(logs[i]), "/tmp/%s_%d.log", schema, i);
		pids[i] = harness_spawn(argv, env, logs[i]);
	}
	for (int i = 0; i < 4; i++) {
		int rc = harness_wait(pids[i], 60000);

		harness_read_file(logs[i], out, sizeof(out));
		unlink(logs[i]);
		cr_assert_eq(rc, 0, "concurrent migrate %d failed:\n%s", i, out);
	}
	snprintf(count, sizeof(count), "%d", count_files(source_migrations()));
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM sagad_migrations"), count);
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM pg_tables WHERE schemaname = "
	                                     "current_schema() AND tablename = 'saga_instance'"),
	                 "1");
}

/* A folder with the real migrations plus one more file of ours. */
static void
make_dir_with(char *dir, size_t dirlen, const char *name, const char *sql)
{
	char cmd[2048];
	char path[1024];
	FILE *f;

	snprintf(dir, dirlen, "/tmp/%s_migrations", schema);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s' && cp '%s'/*.sql '%s'/", dir, dir,
	         source_migrations(), dir);
	cr_assert_eq(system(cmd), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(sql, f);
	fclose(f);
}

static void
remove_dir(const char *dir)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(migrate, a_broken_migration_rolls_back_and_names_file_and_line)
{
	char dir[512];
	char count[32];

	make_dir_with(dir, sizeof(dir), "9001_broken.sql",
	              "CREATE TABLE half_done (x int);\n"
	              "INSERT INTO half_done VALUES (1);\n"
	              "SELECT no_such_column FROM half_done;\n");
	cr_assert_eq(migrate(dir, out, sizeof(out)), 3, "expected exit 3:\n%s", out);
	cr_assert(strstr(out, "9001_broken.sql") != NULL, "error must name the file:\n%s", out);
	cr_assert(strstr(out, "line 3") != NULL, "error must name the line:\n%s", out);
	cr_assert(strstr(out, "no_such_column") != NULL, "error must give the reason:\n%s", out);
	cr_assert_eq(harness_count_lines(out) >= 1, 1);
	/* The good migrations before it are applied; nothing of the broken one is left. */
	cr_assert_str_eq(harness_sql(schema, "SELECT to_regclass('half_done') IS NULL"), "t");
	snprintf(count, sizeof(count), "%d", count_files(source_migrations()));
	cr_assert_str_eq(harness_sql(schema, "SELECT count(*) FROM sagad_migrations"), count);
	cr_assert_str_eq(
	        harness_sql(schema, "SELECT count(*) FROM sagad_migrations WHERE version = 9001"),
	        "0");
	remove_dir(dir);
}

Test(migrate, an_edited_applied_migration_is_refused)
{
	char dir[512];

	make_dir_with(dir, sizeof(dir), "9002_extra.sql", "CREATE TABLE extra (x int);\n");
	cr_assert_eq(migrate(dir, out, sizeof(out)), 0, "%s", out);
	make_dir_with(dir, sizeof(dir), "9002_extra.sql", "CREATE TABLE extra (x bigint);\n");
	cr_assert_eq(migrate(dir, out, sizeof(out)), 3, "%s", out);
	cr_assert(strstr(out, "9002_extra.sql was changed after it was applied") != NULL, "%s",
	          out);
	remove_dir(dir);
}

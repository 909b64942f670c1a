/* Integration tests of sagad start-up: clear failures, JetStream set-up, clean stop. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "harness.h"

static char schema[96];
static char prefix[96];
static char stream_prefix[96];
static char env_schema[160], env_prefix[160], env_stream[160];
static char out[16384];

static void
setup(void)
{
	const char *argv[3];
	const char *env[] = {env_schema, NULL};

	harness_unique_name(schema, sizeof(schema), "t_start");
	harness_unique_name(prefix, sizeof(prefix), "t");
	snprintf(stream_prefix, sizeof(stream_prefix), "%s", prefix);
	for (char *p = stream_prefix; *p != '\0'; p++)
		*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
	snprintf(env_schema, sizeof(env_schema), "SAGAD_DB_SCHEMA=%s", schema);
	snprintf(env_prefix, sizeof(env_prefix), "SAGAD_SUBJECT_PREFIX=%s", prefix);
	snprintf(env_stream, sizeof(env_stream), "SAGAD_STREAM_PREFIX=%s", stream_prefix);
	argv[0] = harness_bin("SAGAD_BIN");
	argv[1] = "migrate";
	argv[2] = NULL;
	cr_assert_eq(harness_run(argv, env, out, sizeof(out), 60000), 0, "migrate:\n%s", out);
}

TestSuite(sagad_startup, .init = setup);

Test(sagad_startup, unreachable_postgresql_exits_nonzero_with_one_clear_line)
{
	const char *argv[] = {harness_bin("SAGAD_BIN"), "check", NULL};
	/* Port 1 on loopback: nothing listens there. */
	const char *env[] = {"SAGAD_DATABASE_URL=postgresql://app:hunter2@127.0.0.1:1/sagad",
	                     "SAGAD_CONNECT_TIMEOUT=2s", NULL};
	int rc = harness_run(argv, env, out, sizeof(out), 30000);

	cr_assert_eq(rc, 3, "exit code %d:\n%s", rc, out);
	cr_assert_eq(harness_count_lines(out), 1, "expected one line:\n%s", out);
	cr_assert(strstr(out, "cannot connect to PostgreSQL") != NULL, "%s", out);
	cr_assert(strstr(out, "127.0.0.1") != NULL, "the line names the server:\n%s", out);
	cr_assert(strstr(out, "hunter2") == NULL, "the password leaked:\n%s", out);
}

Test(sagad_startup, wrong_password_is_reported_without_the_password)
{
	char url[512];
	char env_url[600];
	const char *argv[] = {harness_bin("SAGAD_BIN"), "check", NULL};
	const char *env[] = {env_url, env_schema, NULL};
	const char *real = harness_database_url();
	const char *at = strrchr(real, '@');
	int rc;

	cr_assert_not_null(at, "the test database URL carries credentials");
	snprintf(url, sizeof(url), "postgresql://postgres:wrong-Pa55word%s", at);
	snprintf(env_url, sizeof(env_url), "SAGAD_DATABASE_URL=%s", url);
	rc = harness_run(argv, env, out, sizeof(out), 30000);
	cr_assert_eq(rc, 3, "exit code %d:\n%s", rc, out);
	cr_assert_eq(harness_count_lines(out), 1, "%s", out);
	cr_assert(strstr(out, "wrong-Pa55word") == NULL, "the password leaked:\n%s", out);
	cr_assert(strstr(out, "password authentication failed") != NULL, "%s", out);
}

Test(sagad_startup, unreachable_nats_exits_nonzero_with_one_clear_line)
{
	const char *argv[] = {harness_bin("SAGAD_BIN"), "check", NULL};
	const char *env[] = {env_schema, "SAGAD_NATS_URL=nats://user:s3cr3t@127.0.0.1:1",
	                     "SAGAD_CONNECT_TIMEOUT=1s", NULL};
	int rc = harness_run(argv, env, out, sizeof(out), 30000);

	cr_assert_eq(rc, 4, "exit code %d:\n%s", rc, out);
	cr_assert_eq(harness_count_lines(out), 1, "expected one line:\n%s", out);
	cr_assert(strstr(out, "cannot connect to NATS") != NULL, "%s", out);
	cr_assert(strstr(out, "s3cr3t") == NULL, "the password leaked:\n%s", out);
}

Test(sagad_startup, unmigrated_database_is_refused)
{
	char other[96];
	char env_other[160];
	const char *argv[] = {harness_bin("SAGAD_BIN"), "check", NULL};
	const char *env[] = {env_other, NULL};
	int rc;

	harness_unique_name(other, sizeof(other), "t_empty");
	harness_sql(NULL, "SELECT 1");
	snprintf(env_other, sizeof(env_other), "SAGAD_DB_SCHEMA=%s", other);
	rc = harness_run(argv, env, out, sizeof(out), 30000);
	cr_assert_eq(rc, 3, "%s", out);
	cr_assert(strstr(out, "sagad migrate") != NULL, "the error says what to do:\n%s", out);
}

Test(sagad_startup, bad_setting_exits_2_naming_it)
{
	const char *argv[] = {harness_bin("SAGAD_BIN"), "--stream-replicas=0", "check", NULL};
	int rc = harness_run(argv, NULL, out, sizeof(out), 30000);

	cr_assert_eq(rc, 2, "%s", out);
	cr_assert(strstr(out, "stream_replicas") != NULL, "%s", out);
}

/* Read a stream's creation time through the same bus module sagad uses. */
static int64_t
stream_created(struct bus *b, enum bus_stream which)
{
	struct bus_stream_stats ss;
	char err[512];

	cr_assert_eq(bus_stream_stats(b, which, &ss, err, sizeof(err)), STATUS_OK, "%s", err);
	return ss.created_ns;
}

Test(sagad_startup, streams_and_consumers_are_created_once_and_found_after_restart)
{
	const char *argv[] = {harness_bin("SAGAD_BIN"), "check", NULL};
	const char *env[] = {env_schema, env_prefix, env_stream, NULL};
	struct config cfg;
	struct bus *b = NULL;
	char err[512];
	int64_t created[BUS_STREAM_COUNT];
	struct bus_consumer_stats cs1, cs2;

	cr_assert_eq(harness_run(argv, env, out, sizeof(out), 30000), 0, "%s", out);
	cr_assert(strstr(out, "created") != NULL, "%s", out);

	cr_assert_eq(config_init(&cfg), STATUS_OK);
	cr_assert_eq(config_load_env(&cfg, err, sizeof(err)), STATUS_OK, "%s", err);
	cr_assert_eq(config_set(&cfg, "nats_url", harness_nats_url(), err, sizeof(err)), STATUS_OK);
	cr_assert_eq(config_set(&cfg, "subject_prefix", prefix, err, sizeof(err)), STATUS_OK);
	cr_assert_eq(config_set(&cfg, "stream_prefix", stream_prefix, err, sizeof(err)), STATUS_OK);
	cr_assert_eq(bus_connect(&b, &cfg, err, sizeof(err)), STATUS_OK, "%s", err);
	for (int i = 0; i < BUS_STREAM_COUNT; i++)
		created[i] = stream_created(b, (enum bus_stream)i);
	cr_assert_eq(bus_consumer_stats(b, BUS_STREAM_REPLY, &cs1, err, sizeof(err)), STATUS_OK,
	             "%s", err);

	/* Second start: everything is found, nothing re-created. */
	cr_assert_eq(harness_run(argv, env, out, sizeof(out), 30000), 0, "%s", out);
	cr_assert(strstr(out, "created") == NULL, "something was re-created:\n%s", out);
	cr_assert(strstr(out, "found") != NULL, "%s", out);
	for (int i = 0; i < BUS_STREAM_COUNT; i++)
		cr_assert_eq(stream_created(b, (enum bus_stream)i), created[i],
		             "stream %d was re-created", i);
	cr_assert_eq(bus_consumer_stats(b, BUS_STREAM_REPLY, &cs2, err, sizeof(err)), STATUS_OK);
	cr_assert_eq(cs1.created_ns, cs2.created_ns, "consumer was re-created");

	/* The limits come from the settings. */
	{
		struct bus_stream_stats ss;

		cr_assert_eq(bus_stream_stats(b, BUS_STREAM_CMD, &ss, err, sizeof(err)), STATUS_OK);
		cr_assert_eq(ss.max_bytes, cfg.stream_max_bytes);
		cr_assert_eq(ss.dup_window_ns, cfg.stream_dup_window_ms * 1000000);
	}
	bus_close(b);
	config_free(&cfg);
}

Test(sagad_startup, run_stops_cleanly_on_sigterm)
{
	const char *argv[] = {harness_bin("SAGAD_BIN"), "run", NULL};
	const char *env[] = {env_schema, env_prefix, env_stream, NULL};
	char log[128];
	pid_t pid;
	int rc;

	snprintf(log, sizeof(log), "/tmp/%s.log", schema);
	pid = harness_spawn(argv, env, log);
	for (int i = 0; i < 200; i++) {
		harness_read_file(log, out, sizeof(out));
		if (strstr(out, "\"ready") != NULL)
			break;
		usleep(50 * 1000);
	}
	cr_assert(strstr(out, "\"ready") != NULL, "sagad never became ready:\n%s", out);
	kill(pid, SIGTERM);
	rc = harness_wait(pid, 15000);
	harness_read_file(log, out, sizeof(out));
	unlink(log);
	cr_assert_eq(rc, 0, "exit %d after SIGTERM:\n%s", rc, out);
	cr_assert(strstr(out, "stopping") != NULL, "%s", out);
}

/* Unit tests of the settings table: defaults, environment, bounds, parsing. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static struct config cfg;
static char err[512];

static void
setup(void)
{
	cr_assert_eq(config_init(&cfg), STATUS_OK);
	err[0] = '\0';
}

static void
teardown(void)
{
	config_free(&cfg);
}

TestSuite(config, .init = setup, .fini = teardown);

Test(config, defaults_are_loaded_from_the_table)
{
	cr_assert_str_eq(cfg.subject_prefix, "saga");
	cr_assert_str_eq(cfg.stream_prefix, "SAGA");
	cr_assert_eq(cfg.stream_max_bytes, INT64_C(1024) * 1024 * 1024);
	cr_assert_eq(cfg.stream_dup_window_ms, 2 * 60 * 1000);
	cr_assert_eq(cfg.consumer_ack_wait_ms, 30 * 1000);
	cr_assert_eq(cfg.stream_replicas, 1);
	cr_assert_eq(cfg.stream_discard, 0, "default discard policy is new (backpressure)");
	cr_assert_str_eq(cfg.db_schema, "");
}

Test(config, every_setting_has_env_help_and_a_valid_default)
{
	size_t n = 0;
	const struct setting *s = config_settings(&n);

	cr_assert_gt(n, 10);
	for (size_t i = 0; i < n; i++) {
		cr_assert_not_null(s[i].env, "%s has no env override", s[i].name);
		cr_assert(strncmp(s[i].env, "SAGAD_", 6) == 0, "%s env must start SAGAD_",
		          s[i].name);
		cr_assert_gt(strlen(s[i].help), 10, "%s needs help text", s[i].name);
		cr_assert_eq(config_set(&cfg, s[i].name, s[i].def, err, sizeof(err)), STATUS_OK,
		             "default of %s rejected: %s", s[i].name, err);
	}
}

Test(config, environment_overrides_defaults)
{
	setenv("SAGAD_STREAM_MAX_BYTES", "64MiB", 1);
	setenv("SAGAD_SUBJECT_PREFIX", "acme.saga", 1);
	setenv("SAGAD_CONSUMER_ACK_WAIT", "2m", 1);
	cr_assert_eq(config_load_env(&cfg, err, sizeof(err)), STATUS_OK, "%s", err);
	unsetenv("SAGAD_STREAM_MAX_BYTES");
	unsetenv("SAGAD_SUBJECT_PREFIX");
	unsetenv("SAGAD_CONSUMER_ACK_WAIT");
	cr_assert_eq(cfg.stream_max_bytes, INT64_C(64) * 1024 * 1024);
	cr_assert_str_eq(cfg.subject_prefix, "acme.saga");
	cr_assert_eq(cfg.consumer_ack_wait_ms, 120000);
}

Test(config, command_line_overrides_environment)
{
	char *argv[] = {"sagad", "--stream-replicas=3", "--log_level", "debug", "migrate", NULL};
	int next = 0;

	setenv("SAGAD_STREAM_REPLICAS", "2", 1);
	cr_assert_eq(config_load_env(&cfg, err, sizeof(err)), STATUS_OK, "%s", err);
	unsetenv("SAGAD_STREAM_REPLICAS");
	cr_assert_eq(config_parse_args(&cfg, 5, argv, &next, err, sizeof(err)), STATUS_OK, "%s",
	             err);
	cr_assert_eq(cfg.stream_replicas, 3);
	cr_assert_eq(cfg.log_level, 0);
	cr_assert_eq(next, 4, "the command is left for the caller");
}

Test(config, out_of_bounds_value_is_rejected_with_a_message)
{
	cr_assert_eq(config_set(&cfg, "stream_replicas", "9", err, sizeof(err)), STATUS_CONFIG);
	cr_assert(strstr(err, "stream_replicas") != NULL, "message names the setting: %s", err);
	cr_assert(strstr(err, "out of bounds") != NULL, "message says why: %s", err);
	cr_assert_eq(cfg.stream_replicas, 1, "a rejected value changes nothing");

	cr_assert_eq(config_set(&cfg, "stream_duplicate_window", "10ms", err, sizeof(err)),
	             STATUS_CONFIG);
	cr_assert(strstr(err, "stream_duplicate_window") != NULL);
}

Test(config, out_of_bounds_environment_value_names_the_variable)
{
	setenv("SAGAD_STREAM_MAX_MSG_SIZE", "1GiB", 1);
	cr_assert_eq(config_load_env(&cfg, err, sizeof(err)), STATUS_CONFIG);
	unsetenv("SAGAD_STREAM_MAX_MSG_SIZE");
	cr_assert(strstr(err, "SAGAD_STREAM_MAX_MSG_SIZE") != NULL, "%s", err);
}

Test(config, malformed_values_are_rejected)
{
	cr_assert_eq(config_set(&cfg, "stream_replicas", "three", err, sizeof(err)), STATUS_CONFIG);
	cr_assert_eq(config_set(&cfg, "consumer_ack_wait", "30 s", err, sizeof(err)),
	             STATUS_CONFIG);
	cr_assert_eq(config_set(&cfg, "stream_max_bytes", "-1", err, sizeof(err)), STATUS_CONFIG);
	cr_assert_eq(config_set(&cfg, "stream_discard", "sometimes", err, sizeof(err)),
	             STATUS_CONFIG);
	cr_assert_eq(config_set(&cfg, "no_such_setting", "1", err, sizeof(err)), STATUS_CONFIG);
	cr_assert(strstr(err, "unknown setting") != NULL, "%s", err);
}

Test(config, hostile_subject_prefixes_are_rejected)
{
	const char *bad[] = {"", "saga.", ".saga", "sa ga", "saga.*", "saga.>", "a..b", "x\r\ny"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(config_set(&cfg, "subject_prefix", bad[i], err, sizeof(err)),
		             STATUS_CONFIG, "accepted \"%s\"", bad[i]);
	cr_assert_eq(config_set(&cfg, "subject_prefix", "acme.orders-1", err, sizeof(err)),
	             STATUS_OK);
	cr_assert_eq(config_set(&cfg, "db_schema", "Robert'); DROP", err, sizeof(err)),
	             STATUS_CONFIG);
}

Test(config, durations_and_sizes_parse)
{
	int64_t v = 0;

	cr_assert_eq(config_parse_duration("250ms", &v), STATUS_OK);
	cr_assert_eq(v, 250);
	cr_assert_eq(config_parse_duration("90", &v), STATUS_OK);
	cr_assert_eq(v, 90);
	cr_assert_eq(config_parse_duration("2h", &v), STATUS_OK);
	cr_assert_eq(v, 7200000);
	cr_assert_eq(config_parse_duration("1w", &v), STATUS_INVALID);
	cr_assert_eq(config_parse_bytes("64KiB", &v), STATUS_OK);
	cr_assert_eq(v, 65536);
	cr_assert_eq(config_parse_bytes("99999999999999999G", &v), STATUS_INVALID,
	             "overflow is refused");
}

Test(config, secrets_are_never_echoed)
{
	char out[256];

	cr_assert_eq(config_set(&cfg, "database_url", "", err, sizeof(err)), STATUS_CONFIG);
	config_redact_url("postgresql://app:s3cret@db:5432/sagad", out, sizeof(out));
	cr_assert_str_eq(out, "postgresql://app:***@db:5432/sagad");
	config_redact_url("host=db password=s3cret dbname=x", out, sizeof(out));
	cr_assert_str_eq(out, "host=db password=*** dbname=x");
	config_redact_url("postgresql://db/x?user=a&password=s3cret&sslmode=require", out,
	                  sizeof(out));
	cr_assert_str_eq(out, "postgresql://db/x?user=a&password=***&sslmode=require");
	config_redact_url("nats://127.0.0.1:4222", out, sizeof(out));
	cr_assert_str_eq(out, "nats://127.0.0.1:4222");
	/* Every URL of a cluster list, and a NATS token (a lone user is a secret there). */
	config_redact_url("nats://sagad:s3cret@n1:4222,nats://sagad:s3cret@n2:4222,nats://n3:4222",
	                  out, sizeof(out));
	cr_assert_str_eq(out, "nats://sagad:***@n1:4222,nats://sagad:***@n2:4222,nats://n3:4222");
	config_redact_url("nats://s3cretT0ken@n1:4222", out, sizeof(out));
	cr_assert_str_eq(out, "nats://***@n1:4222");
	config_redact_url("postgresql://app@db/x", out, sizeof(out));
	cr_assert_str_eq(out, "postgresql://app@db/x", "a PostgreSQL user name is no secret");
}

Test(config, the_inbox_prefix_is_the_users_own_unless_set)
{
	char out[128];

	config_nats_inbox_prefix("nats://stock:pw@127.0.0.1:4222", "", out, sizeof(out));
	cr_assert_str_eq(out, "_INBOX_stock");
	config_nats_inbox_prefix("nats://sagad:pw@n1:1,nats://sagad:pw@n2:2", NULL, out,
	                         sizeof(out));
	cr_assert_str_eq(out, "_INBOX_sagad");
	config_nats_inbox_prefix("nats://n1:1,nats://stock:pw@n2:2", NULL, out, sizeof(out));
	cr_assert_str_eq(out, "_INBOX_stock", "the first URL that names a user");
	config_nats_inbox_prefix("nats://127.0.0.1:4222", "", out, sizeof(out));
	cr_assert_str_eq(out, "_INBOX");
	config_nats_inbox_prefix("nats://s3cretT0ken@127.0.0.1:4222", "", out, sizeof(out));
	cr_assert_str_eq(out, "_INBOX", "a token never becomes part of a subject");
	config_nats_inbox_prefix("nats://a.b:pw@127.0.0.1:4222", "", out, sizeof(out));
	cr_assert_str_eq(out, "_INBOX", "a user that is no single token is not used");
	config_nats_inbox_prefix("nats://stock:pw@127.0.0.1:4222", "_INBOX_acme.stock", out,
	                         sizeof(out));
	cr_assert_str_eq(out, "_INBOX_acme.stock");
	cr_assert_eq(config_set(&cfg, "nats_inbox_prefix", "_INBOX_x.>", err, sizeof(err)),
	             STATUS_CONFIG, "no wildcards");
	cr_assert_eq(config_set(&cfg, "nats_inbox_prefix", "_INBOX_x", err, sizeof(err)),
	             STATUS_OK);
}

Test(config, help_prints_every_setting)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	size_t n = 0;
	const struct setting *s = config_settings(&n);

	config_print_help(f);
	fclose(f);
	for (size_t i = 0; i < n; i++) {
		cr_assert(strstr(buf, s[i].name) != NULL, "%s missing from --help", s[i].name);
		cr_assert(strstr(buf, s[i].env) != NULL, "%s missing from --help", s[i].env);
	}
	free(buf);
}

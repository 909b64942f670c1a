/* sagad: the saga orchestrator daemon (entry point, commands, main loop). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "config.h"
#include "daemon.h"
#include "failpoint.h"
#include "log.h"
#include "migrate.h"
#include "store.h"

#ifndef SAGAD_VERSION
#define SAGAD_VERSION "dev"
#endif

/* Exit codes scripts can rely on. */
enum sagad_exit {
	EXIT_OK = 0,          /* done, or stopped cleanly by a signal */
	EXIT_FAILURE_RUN = 1, /* failed while running */
	EXIT_USAGE = 2,       /* bad command line or settings */
	EXIT_DATABASE = 3,    /* PostgreSQL unreachable or schema not ready */
	EXIT_NATS = 4,        /* NATS unreachable or JetStream set-up failed */
};

static volatile sig_atomic_t stop_requested;

static void
on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void
install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void
usage(FILE *out)
{
	fprintf(out, "usage: sagad [--setting=value ...] [COMMAND]\n\n"
	             "Commands:\n"
	             "  run       connect, set up JetStream, and orchestrate sagas (default)\n"
	             "  migrate   apply pending database migrations and exit\n"
	             "  check     check settings, PostgreSQL, migrations and NATS, then exit\n"
	             "  version   print the version\n\n"
	             "Exit codes: 0 ok, 1 failure while running, 2 usage or settings,\n"
	             "            3 PostgreSQL unreachable or schema not ready, 4 NATS.\n\n");
	config_print_help(out);
}

static int
cmd_migrate(const struct config *cfg)
{
	struct store *db = NULL;
	char err[1024];
	int applied = 0;
	int rc = EXIT_OK;

	if (store_connect(&db, cfg->database_url, cfg->db_schema, cfg->connect_timeout_ms, 1,
	                  "sagad-migrate", err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		return EXIT_DATABASE;
	}
	if (migrate_run(db, cfg->migrations_dir, &applied, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_DATABASE;
		goto cleanup;
	}
	log_info("migrations done: %d applied, schema %s", applied,
	         cfg->db_schema[0] != '\0' ? cfg->db_schema : "(search_path)");
cleanup:
	store_close(db);
	return rc;
}

/* Connect to both servers and check the schema; used by run and check. */
static int
connect_all(const struct config *cfg, struct store **db, struct bus **bus)
{
	char err[1024];
	int pending = 0;

	if (store_connect(db, cfg->database_url, cfg->db_schema, cfg->connect_timeout_ms, 0,
	                  "sagad", err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		return EXIT_DATABASE;
	}
	if (migrate_check(*db, cfg->migrations_dir, &pending, err, sizeof(err)) != STATUS_OK) {
		log_fatal("database schema not ready: %s", err);
		return EXIT_DATABASE;
	}
	if (bus_connect(bus, cfg, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		return EXIT_NATS;
	}
	return EXIT_OK;
}

static int
cmd_run(const struct config *cfg, int check_only)
{
	struct store *db = NULL;
	struct bus *bus = NULL;
	char err[1024];
	int created = 0;
	int rc;

	rc = connect_all(cfg, &db, &bus);
	if (rc != EXIT_OK)
		goto cleanup;
	if (bus_ensure_topology(bus, &created, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		rc = EXIT_NATS;
		goto cleanup;
	}
	if (check_only) {
		log_info("check passed: PostgreSQL, migrations and NATS are ready");
		goto cleanup;
	}
	log_info("JetStream ready: %d streams/consumers created", created);
	if (daemon_run(cfg, &db, bus, &stop_requested) != 0)
		rc = EXIT_FAILURE_RUN;
cleanup:
	bus_close(bus);
	store_close(db);
	return rc;
}

int
main(int argc, char **argv)
{
	struct config cfg;
	char err[512];
	int next = 1;
	int rc = EXIT_USAGE;
	const char *command;

	log_set_component("sagad");
	if (config_init(&cfg) != STATUS_OK)
		return EXIT_USAGE;
	if (config_load_env(&cfg, err, sizeof(err)) != STATUS_OK ||
	    config_parse_args(&cfg, argc, argv, &next, err, sizeof(err)) != STATUS_OK) {
		log_fatal("bad setting: %s", err);
		goto cleanup;
	}
	log_set_level((enum log_level)cfg.log_level);
	command = next < argc ? argv[next] : "run";
	if (strcmp(command, "--help") == 0 || strcmp(command, "help") == 0 ||
	    strcmp(command, "-h") == 0) {
		usage(stdout);
		rc = EXIT_OK;
		goto cleanup;
	}
	if (next + 1 < argc) {
		log_fatal("unexpected argument \"%s\" after command %s (see --help)",
		          argv[next + 1], command);
		goto cleanup;
	}
	if (failpoint_arm(strcmp(cfg.fail_point, "off") == 0 ? "" : cfg.fail_point,
	                  (long)cfg.fail_point_after) != 0) {
		log_fatal("bad setting: fail_point: unknown point \"%s\"", cfg.fail_point);
		goto cleanup;
	}
	install_signals();
	if (strcmp(command, "run") == 0)
		rc = cmd_run(&cfg, 0);
	else if (strcmp(command, "check") == 0)
		rc = cmd_run(&cfg, 1);
	else if (strcmp(command, "migrate") == 0)
		rc = cmd_migrate(&cfg);
	else if (strcmp(command, "version") == 0 || strcmp(command, "--version") == 0) {
		printf("sagad %s\n", SAGAD_VERSION);
		rc = EXIT_OK;
	} else {
		log_fatal("unknown command \"%s\" (see --help)", command);
	}
cleanup:
	config_free(&cfg);
	return rc;
}

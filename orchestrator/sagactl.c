/* sagactl: the operator command line (status now; saga and dead-letter commands follow). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "config.h"
#include "log.h"
#include "migrate.h"
#include "store.h"

/* Exit codes scripts can rely on (same meaning as sagad's). */
enum sagactl_exit {
	CTL_OK = 0,       /* done */
	CTL_FAILED = 1,   /* the operation failed */
	CTL_USAGE = 2,    /* bad command line or settings */
	CTL_DATABASE = 3, /* PostgreSQL unreachable or schema not ready */
	CTL_NATS = 4,     /* NATS unreachable or streams missing */
};

static void
usage(FILE *out)
{
	fprintf(out, "usage: sagactl [--setting=value ...] COMMAND\n\n"
	             "Commands:\n"
	             "  status    migrations, streams and consumers at a glance\n\n"
	             "sagactl reads the same settings as sagad (SAGAD_* variables):\n\n");
	config_print_help(out);
}

static int
cmd_status(const struct config *cfg)
{
	struct store *db = NULL;
	struct bus *bus = NULL;
	char err[1024];
	int pending = 0;
	int rc = CTL_OK;

	if (store_connect(&db, cfg->database_url, cfg->db_schema, cfg->connect_timeout_ms, 0,
	                  "sagactl", err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "sagactl: %s\n", err);
		return CTL_DATABASE;
	}
	if (migrate_check(db, cfg->migrations_dir, &pending, err, sizeof(err)) != STATUS_OK) {
		printf("database   NOT READY: %s\n", err);
		rc = CTL_DATABASE;
	} else {
		printf("database   ok, migrations current\n");
	}
	if (bus_connect(&bus, cfg, err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "sagactl: %s\n", err);
		rc = CTL_NATS;
		goto cleanup;
	}
	printf("nats       ok\n\n%-24s %10s %12s\n", "STREAM", "MESSAGES", "BYTES");
	for (int i = 0; i < BUS_STREAM_COUNT; i++) {
		struct bus_stream_stats ss;
		char name[96];
		enum status st = bus_stream_stats(bus, (enum bus_stream)i, &ss, err, sizeof(err));

		bus_stream_name(bus, (enum bus_stream)i, name, sizeof(name));
		if (st == STATUS_NOT_FOUND) {
			printf("%-24s %10s %12s\n", name, "missing", "-");
			rc = rc == CTL_OK ? CTL_NATS : rc;
		} else if (st != STATUS_OK) {
			printf("%-24s error: %s\n", name, err);
			rc = rc == CTL_OK ? CTL_NATS : rc;
		} else {
			printf("%-24s %10llu %12llu\n", ss.name, (unsigned long long)ss.msgs,
			       (unsigned long long)ss.bytes);
		}
	}
	printf("\n%-24s %10s %12s %12s\n", "CONSUMER", "PENDING", "ACK_PENDING", "REDELIVERED");
	for (int i = 0; i < BUS_STREAM_COUNT; i++) {
		struct bus_consumer_stats cs;
		enum status st = bus_consumer_stats(bus, (enum bus_stream)i, &cs, err, sizeof(err));

		if (st == STATUS_INVALID)
			continue; /* this stream has no sagad consumer */
		if (st != STATUS_OK) {
			printf("%-24s %s\n", "?", st == STATUS_NOT_FOUND ? "missing" : err);
			rc = rc == CTL_OK ? CTL_NATS : rc;
			continue;
		}
		printf("%-24s %10llu %12lld %12lld\n", cs.name, (unsigned long long)cs.num_pending,
		       (long long)cs.num_ack_pending, (long long)cs.num_redelivered);
	}
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
	int rc = CTL_USAGE;
	const char *command;

	log_set_component("sagactl");
	if (config_init(&cfg) != STATUS_OK)
		return CTL_USAGE;
	log_set_level(LOG_WARN);
	if (config_load_env(&cfg, err, sizeof(err)) != STATUS_OK ||
	    config_parse_args(&cfg, argc, argv, &next, err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "sagactl: bad setting: %s\n", err);
		goto cleanup;
	}
	command = next < argc ? argv[next] : "--help";
	if (strcmp(command, "--help") == 0 || strcmp(command, "help") == 0) {
		usage(stdout);
		rc = next < argc ? CTL_OK : CTL_USAGE;
	} else if (strcmp(command, "status") == 0) {
		rc = cmd_status(&cfg);
	} else {
		fprintf(stderr, "sagactl: unknown command \"%s\" (see sagactl --help)\n", command);
	}
cleanup:
	config_free(&cfg);
	return rc;
}

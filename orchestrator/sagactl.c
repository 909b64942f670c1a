/* sagactl: the operator command line (entry point, status, and the command table). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "config.h"
#include "ctl_dlq.h"
#include "ctl_sagas.h"
#include "ctl_session.h"
#include "log.h"
#include "migrate.h"
#include "store.h"

static void
usage(FILE *out)
{
	fprintf(out,
	        "usage: sagactl [--setting=value ...] COMMAND [ARGS] [--json] [--actor NAME]\n\n"
	        "Sagas:\n"
	        "  status                                  migrations, streams and consumers\n"
	        "  list [--state S] [--definition NAME] [--older-than DURATION] [--stuck]"
	        " [--limit N]\n"
	        "  show SAGA_ID                            state, input, steps, last error\n"
	        "  trace SAGA_ID|CORRELATION_ID            every transition in order\n"
	        "  retry SAGA_ID [--note TEXT]             re-arm a failed or stuck saga\n"
	        "  abort SAGA_ID --note TEXT               compensate a running saga\n"
	        "  resolve SAGA_ID --note TEXT             close a failed saga by hand\n"
	        "  retry --all [filters] [--note TEXT] [--dry-run] [--yes|--confirm N]\n"
	        "  abort --all [filters] --note TEXT [--dry-run] [--yes|--confirm N]\n"
	        "  define FILE.yaml ...                    register saga definitions\n"
	        "  start NAME [--input JSON] [--idempotency-key K] [--correlation-id C]"
	        " [--version N]\n\n"
	        "Dead letters:\n"
	        "  dlq list [--all] [--status S[,S]|any] [--class C]   grouped by fingerprint\n"
	        "  dlq show ID                             reason, headers, payload\n"
	        "  dlq diagnose ID --note TEXT             mark diagnosed\n"
	        "  dlq discard ID|--group FP --note TEXT [--dry-run] [--yes|--confirm N]\n"
	        "  dlq replay ID|--group FP|--all [--rate N] [--canary K] [--canary-wait D]\n"
	        "                                          [--dry-run] [--yes|--confirm N]\n\n"
	        "Bulk forms (--all, --group) change nothing without --yes or --confirm N,\n"
	        "where N is the number of matching items (see them with --dry-run).\n"
	        "Every action is recorded in the table sagad_audit (actor: --actor or $USER).\n\n"
	        "Exit codes: 0 ok, 1 failed or refused, 2 usage, 3 PostgreSQL (unreachable or\n"
	        "            not migrated), 4 NATS, 5 dry run or confirmation needed.\n\n"
	        "sagactl reads the same settings as sagad (SAGAD_* variables or --name=value\n"
	        "before the command):\n\n");
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
	int n;
	char **rest;
	const char *command;

	log_set_component("sagactl");
	if (config_init(&cfg) != STATUS_OK)
		return CTL_USAGE;
	log_set_level(LOG_WARN);
	if (config_load_env(&cfg, err, sizeof(err)) != STATUS_OK ||
	    config_parse_args(&cfg, argc, argv, &next, err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "sagactl: bad setting: %s (settings go before the command)\n", err);
		goto cleanup;
	}
	command = next < argc ? argv[next] : "--help";
	n = argc - next - 1;
	rest = argv + next + 1;
	if (strcmp(command, "--help") == 0 || strcmp(command, "help") == 0) {
		usage(next < argc ? stdout : stderr);
		rc = next < argc ? CTL_OK : CTL_USAGE;
	} else if (strcmp(command, "status") == 0) {
		rc = cmd_status(&cfg);
	} else if (strcmp(command, "list") == 0) {
		rc = ctl_sagas_list(&cfg, n, rest);
	} else if (strcmp(command, "show") == 0) {
		rc = ctl_sagas_show(&cfg, n, rest);
	} else if (strcmp(command, "trace") == 0) {
		rc = ctl_sagas_trace(&cfg, n, rest);
	} else if (strcmp(command, "define") == 0) {
		rc = ctl_sagas_define(&cfg, n, rest);
	} else if (strcmp(command, "start") == 0) {
		rc = ctl_sagas_start(&cfg, n, rest);
	} else if (strcmp(command, "abort") == 0) {
		rc = ctl_sagas_operator(&cfg, EV_ABORT, n, rest);
	} else if (strcmp(command, "retry") == 0) {
		rc = ctl_sagas_operator(&cfg, EV_RETRY, n, rest);
	} else if (strcmp(command, "resolve") == 0) {
		rc = ctl_sagas_operator(&cfg, EV_RESOLVE, n, rest);
	} else if (strcmp(command, "dlq") == 0) {
		rc = ctl_dlq(&cfg, n, rest);
	} else {
		fprintf(stderr, "sagactl: unknown command \"%s\" (see sagactl --help)\n", command);
	}
cleanup:
	config_free(&cfg);
	return rc;
}

/* sagactl: the operator command line (status now; saga and dead-letter commands follow). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "bus.h"
#include "codec.h"
#include "config.h"
#include "defcache.h"
#include "definition.h"
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

static enum status
read_file(const char *path, char **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0;

	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot open", path);
		return STATUS_IO;
	}
	for (;;) {
		size_t n;

		if (cap - len < 4096) {
			char *grown = realloc(buf, cap + 65536);

			if (grown == NULL) {
				free(buf);
				fclose(f);
				snprintf(err, errlen, "out of memory");
				return STATUS_NOMEM;
			}
			buf = grown;
			cap += 65536;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	buf[len] = '\0';
	*out = buf;
	return STATUS_OK;
}

static int
cmd_define(const struct config *cfg, int argc, char **argv)
{
	struct store *db = NULL;
	char err[1024];
	int rc = CTL_OK;

	if (argc < 1) {
		fprintf(stderr, "sagactl define: name at least one YAML file\n");
		return CTL_USAGE;
	}
	if (store_connect(&db, cfg->database_url, cfg->db_schema, cfg->connect_timeout_ms, 0,
	                  "sagactl", err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "sagactl: %s\n", err);
		return CTL_DATABASE;
	}
	for (int i = 0; i < argc; i++) {
		struct saga_def def;
		char *text = NULL;
		char field[128] = "";
		uint32_t version = 0;
		int created = 0;
		enum status st = read_file(argv[i], &text, err, sizeof(err));

		if (st == STATUS_OK)
			st = definition_parse_yaml(&def, text, strlen(text), err, sizeof(err));
		if (st == STATUS_OK)
			st = defcache_register(db, &def, text, &version, &created, field,
			                       sizeof(field), err, sizeof(err));
		free(text);
		if (st != STATUS_OK) {
			fprintf(stderr, "sagactl define: %s: %s%s%s\n", argv[i], field,
			        field[0] != '\0' ? ": " : "", err);
			rc = st == STATUS_INVALID || st == STATUS_IO ? CTL_USAGE : CTL_DATABASE;
			continue;
		}
		printf("%s v%u %s (%s)\n", def.name, version, created ? "registered" : "unchanged",
		       argv[i]);
	}
	store_close(db);
	return rc;
}

static const char *
option(int argc, char **argv, const char *name)
{
	for (int i = 0; i + 1 < argc; i++) {
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	}
	return NULL;
}

static int
cmd_start(const struct config *cfg, int argc, char **argv)
{
	struct bus *bus = NULL;
	struct bus_msg *reply = NULL;
	struct bytes req = {0};
	struct start_answer a;
	char subject[256];
	char err[1024];
	const char *input = option(argc, argv, "--input");
	const char *version = option(argc, argv, "--version");
	int rc = CTL_FAILED;

	if (argc < 1 || !saga_valid_name(argv[0])) {
		fprintf(stderr, "sagactl start: name a saga ([A-Za-z0-9_-])\n");
		return CTL_USAGE;
	}
	if (codec_encode_start_request(argv[0],
	                               version != NULL ? (uint32_t)strtoul(version, NULL, 10) : 0,
	                               (struct bytes){(uint8_t *)(input != NULL ? input : "{}"),
	                                              strlen(input != NULL ? input : "{}")},
	                               option(argc, argv, "--idempotency-key"),
	                               option(argc, argv, "--correlation-id"), &req) != STATUS_OK) {
		fprintf(stderr, "sagactl: out of memory\n");
		return CTL_FAILED;
	}
	if (bus_connect(&bus, cfg, err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "sagactl: %s\n", err);
		free(req.data);
		return CTL_NATS;
	}
	snprintf(subject, sizeof(subject), "%s.start.%s", cfg->subject_prefix, argv[0]);
	{
		struct bus_header h[1] = {{HDR_CONTENT_TYPE, CT_START_REQUEST}};

		if (bus_request(bus, subject, h, 1, req.data, req.len, 5000, &reply, err,
		                sizeof(err)) != STATUS_OK) {
			fprintf(stderr, "sagactl: %s (is sagad running?)\n", err);
			rc = CTL_NATS;
			goto cleanup;
		}
	}
	if (codec_decode_start_answer(bus_msg_data(reply), bus_msg_len(reply), &a, err,
	                              sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "sagactl: %s\n", err);
		goto cleanup;
	}
	if (a.status == START_REJECTED) {
		fprintf(stderr, "rejected: %s\n", a.reason);
		goto cleanup;
	}
	printf("%s saga_id=%s correlation_id=%s saga=%s version=%u\n",
	       a.status == START_ACCEPTED ? "accepted" : "duplicate", a.saga_id, a.correlation_id,
	       a.saga_name, a.version);
	rc = CTL_OK;
cleanup:
	bus_msg_free(reply);
	bus_close(bus);
	free(req.data);
	return rc;
}

static int
cmd_operator(const struct config *cfg, enum engine_event_type type, int argc, char **argv)
{
	struct apply_env env = {0};
	struct plan plan;
	char err[1024];
	const char *note = option(argc, argv, "--note");
	int rc = CTL_OK;
	enum status st;

	if (argc < 1 || !codec_valid_uuid(argv[0])) {
		fprintf(stderr, "sagactl %s: name a saga id (UUID)\n", engine_event_name(type));
		return CTL_USAGE;
	}
	if (type != EV_RETRY && (note == NULL || note[0] == '\0')) {
		fprintf(stderr,
		        "sagactl %s: --note TEXT is required (it goes into the audit trail)\n",
		        engine_event_name(type));
		return CTL_USAGE;
	}
	env.cfg = cfg;
	if (store_connect(&env.db, cfg->database_url, cfg->db_schema, cfg->connect_timeout_ms, 0,
	                  "sagactl", err, sizeof(err)) != STATUS_OK) {
		fprintf(stderr, "sagactl: %s\n", err);
		return CTL_DATABASE;
	}
	if (defcache_new(&env.defs) != STATUS_OK) {
		store_close(env.db);
		return CTL_FAILED;
	}
	st = apply_operator(&env, argv[0], type, note, &plan, err, sizeof(err));
	if (st == STATUS_NOT_FOUND) {
		fprintf(stderr, "sagactl: %s\n", err);
		rc = CTL_FAILED;
	} else if (st != STATUS_OK) {
		fprintf(stderr, "sagactl: %s\n", err);
		rc = CTL_DATABASE;
	} else if (plan.verdict != VERDICT_APPLIED) {
		fprintf(stderr, "refused: %s\n", plan.detail);
		rc = CTL_FAILED;
	} else {
		printf("%s: %s -> %s (%s)\n", argv[0],
		       saga_state_name((enum saga_state)plan.from_state),
		       saga_state_name(plan.to_state), plan.detail);
	}
	defcache_free(env.defs);
	store_close(env.db);
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
	} else if (strcmp(command, "define") == 0) {
		rc = cmd_define(&cfg, argc - next - 1, argv + next + 1);
	} else if (strcmp(command, "start") == 0) {
		rc = cmd_start(&cfg, argc - next - 1, argv + next + 1);
	} else if (strcmp(command, "abort") == 0) {
		rc = cmd_operator(&cfg, EV_ABORT, argc - next - 1, argv + next + 1);
	} else if (strcmp(command, "retry") == 0) {
		rc = cmd_operator(&cfg, EV_RETRY, argc - next - 1, argv + next + 1);
	} else if (strcmp(command, "resolve") == 0) {
		rc = cmd_operator(&cfg, EV_RESOLVE, argc - next - 1, argv + next + 1);
	} else {
		fprintf(stderr, "sagactl: unknown command \"%s\" (see sagactl --help)\n", command);
	}
cleanup:
	config_free(&cfg);
	return rc;
}

/* Settings of sagad and sagactl: one table, defaults, environment, command line. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#ifndef SAGAD_MIGRATIONS_DIR
#define SAGAD_MIGRATIONS_DIR "migrations"
#endif

#define MS_SECOND INT64_C(1000)
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR   (60 * MS_MINUTE)
#define MS_DAY    (24 * MS_HOUR)
#define KIB       INT64_C(1024)
#define MIB       (1024 * KIB)
#define GIB       (1024 * MIB)

static const char *const discard_words[] = {"new", "old", NULL};
static const char *const level_words[] = {"debug", "info", "warn", "error", NULL};

bool
config_valid_token(const char *s)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];

		if (!isalnum(c) && c != '_' && c != '-')
			return false;
	}
	return n > 0 && n <= 64;
}

/* "saga" or "acme.saga": dot-separated tokens; no wildcards, spaces or empty tokens. */
static bool
valid_subject_prefix(const char *s)
{
	char tok[65];
	size_t n = 0;

	if (strlen(s) > 128)
		return false;
	for (const char *p = s;; p++) {
		if (*p == '.' || *p == '\0') {
			tok[n] = '\0';
			if (!config_valid_token(tok))
				return false;
			n = 0;
			if (*p == '\0')
				return true;
		} else if (n < sizeof(tok) - 1) {
			tok[n++] = *p;
		} else {
			return false;
		}
	}
}

/* Empty, or an unquoted lower-case SQL identifier. */
static bool
valid_schema(const char *s)
{
	if (s[0] == '\0')
		return true;
	if (!(islower((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(islower(c) || isdigit(c) || c == '_') || i >= 63)
			return false;
	}
	return true;
}

static bool
valid_nonempty(const char *s)
{
	return s[0] != '\0';
}

/* Empty (derived from the URL's user), or a subject prefix like "_INBOX_sagad". */
static bool
valid_inbox_prefix(const char *s)
{
	return s[0] == '\0' || valid_subject_prefix(s);
}

#define F(field) offsetof(struct config, field)

static const struct setting settings[] = {
        {"database_url", SETTING_SECRET, F(database_url), "postgresql://127.0.0.1:5432/sagad", 0, 0,
         NULL, valid_nonempty, false, "SAGAD_DATABASE_URL",
         "PostgreSQL connection (URL or key=value); the password is never logged"},
        {"db_schema", SETTING_STRING, F(db_schema), "", 0, 0, NULL, valid_schema, false,
         "SAGAD_DB_SCHEMA", "schema for sagad's tables (created by migrate); empty = search_path"},
        {"nats_url", SETTING_SECRET, F(nats_url), "nats://127.0.0.1:4222", 0, 0, NULL,
         valid_nonempty, false, "SAGAD_NATS_URL", "NATS server URL(s), comma-separated"},
        {"nats_inbox_prefix", SETTING_STRING, F(nats_inbox_prefix), "", 0, 0, NULL,
         valid_inbox_prefix, false, "SAGAD_NATS_INBOX_PREFIX",
         "prefix of reply inboxes; empty = _INBOX_<user> when nats_url has user:password@, "
         "else _INBOX (grant the user subscribe on <prefix>.>)"},
        {"nats_name", SETTING_STRING, F(nats_name), "sagad", 0, 0, NULL, valid_nonempty, false,
         "SAGAD_NATS_NAME", "connection name shown by the NATS server"},
        {"subject_prefix", SETTING_STRING, F(subject_prefix), "saga", 0, 0, NULL,
         valid_subject_prefix, false, "SAGAD_SUBJECT_PREFIX",
         "first token(s) of every subject: <prefix>.start.<saga>, <prefix>.cmd.<subject>, ..."},
        {"stream_prefix", SETTING_STRING, F(stream_prefix), "SAGA", 0, 0, NULL, config_valid_token,
         false, "SAGAD_STREAM_PREFIX", "prefix of JetStream stream names: <prefix>_CMD, ..."},
        {"stream_replicas", SETTING_INT, F(stream_replicas), "1", 1, 5, NULL, NULL, false,
         "SAGAD_STREAM_REPLICAS", "replicas of every stream (3 on a three-node cluster)"},
        {"stream_max_bytes", SETTING_BYTES, F(stream_max_bytes), "1GiB", MIB, 1024 * GIB, NULL,
         NULL, false, "SAGAD_STREAM_MAX_BYTES", "byte limit of each stream"},
        {"stream_max_msg_size", SETTING_BYTES, F(stream_max_msg_size), "1MiB", 4 * KIB, 64 * MIB,
         NULL, NULL, false, "SAGAD_STREAM_MAX_MSG_SIZE", "largest message a stream accepts"},
        {"stream_duplicate_window", SETTING_DURATION, F(stream_dup_window_ms), "2m", MS_SECOND,
         MS_DAY, NULL, NULL, false, "SAGAD_STREAM_DUPLICATE_WINDOW",
         "JetStream dedupe window for Nats-Msg-Id; keep it above the longest re-send delay"},
        {"stream_discard", SETTING_ENUM, F(stream_discard), "new", 0, 0, discard_words, NULL, false,
         "SAGAD_STREAM_DISCARD",
         "when a work stream is full: new = refuse new messages (backpressure), old = drop oldest"},
        {"event_max_age", SETTING_DURATION, F(event_max_age_ms), "1d", MS_MINUTE, 365 * MS_DAY,
         NULL, NULL, false, "SAGAD_EVENT_MAX_AGE",
         "how long lifecycle events stay in their stream"},
        {"dlq_max_age", SETTING_DURATION, F(dlq_max_age_ms), "14d", MS_HOUR, 365 * MS_DAY, NULL,
         NULL, false, "SAGAD_DLQ_MAX_AGE",
         "how long dead-letter messages stay in their stream (the table keeps them for good)"},
        {"consumer_ack_wait", SETTING_DURATION, F(consumer_ack_wait_ms), "30s", MS_SECOND, MS_HOUR,
         NULL, NULL, false, "SAGAD_CONSUMER_ACK_WAIT",
         "redelivery delay of replies and submits sagad fetched but did not ack"},
        {"consumer_max_deliver", SETTING_INT, F(consumer_max_deliver), "20", 2, 1000, NULL, NULL,
         false, "SAGAD_CONSUMER_MAX_DELIVER", "deliveries of one reply before it is dead-lettered"},
        {"consumer_max_ack_pending", SETTING_INT, F(consumer_max_pending), "20000", 1, 1000000,
         NULL, NULL, false, "SAGAD_CONSUMER_MAX_ACK_PENDING",
         "most replies or submits fetched and not yet acked"},
        {"max_payload", SETTING_BYTES, F(max_payload), "256KiB", 1 * KIB, 32 * MIB, NULL, NULL,
         false, "SAGAD_MAX_PAYLOAD", "largest saga input or step output accepted"},
        {"migrations_dir", SETTING_STRING, F(migrations_dir), SAGAD_MIGRATIONS_DIR, 0, 0, NULL,
         valid_nonempty, false, "SAGAD_MIGRATIONS_DIR", "folder of NNNN_name.sql migrations"},
        {"connect_timeout", SETTING_DURATION, F(connect_timeout_ms), "5s", 100, 10 * MS_MINUTE,
         NULL, NULL, false, "SAGAD_CONNECT_TIMEOUT",
         "how long to wait for PostgreSQL and NATS at start-up"},
        {"shutdown_timeout", SETTING_DURATION, F(shutdown_timeout_ms), "10s", 100, 10 * MS_MINUTE,
         NULL, NULL, false, "SAGAD_SHUTDOWN_TIMEOUT",
         "how long a graceful stop (SIGTERM) may take"},
        {"max_in_flight", SETTING_INT, F(max_in_flight), "100000", 1, 100000000, NULL, NULL, false,
         "SAGAD_MAX_IN_FLIGHT",
         "admission limit: starts beyond this many running sagas are rejected (retry later)"},
        {"start_batch", SETTING_INT, F(start_batch), "256", 1, 10000, NULL, NULL, false,
         "SAGAD_START_BATCH", "starts decided in one database transaction"},
        {"reply_batch", SETTING_INT, F(reply_batch), "512", 1, 10000, NULL, NULL, false,
         "SAGAD_REPLY_BATCH", "replies fetched and applied in one database transaction"},
        {"timer_batch", SETTING_INT, F(timer_batch), "256", 1, 10000, NULL, NULL, false,
         "SAGAD_TIMER_BATCH", "sagas with due timers handled in one database transaction"},
        {"saga_cache", SETTING_INT, F(saga_cache), "4096", 0, 10000000, NULL, NULL, false,
         "SAGAD_SAGA_CACHE",
         "sagas kept in memory between their events (each checked against its row's version "
         "when used); 0 = read every saga from the database"},
        {"relay_batch", SETTING_INT, F(relay_batch), "1000", 1, 100000, NULL, NULL, false,
         "SAGAD_RELAY_BATCH", "outbox rows published per relay pass"},
        {"timer_interval", SETTING_DURATION, F(timer_interval_ms), "50ms", 1, MS_MINUTE, NULL, NULL,
         false, "SAGAD_TIMER_INTERVAL", "how often due timers are looked for"},
        {"http_listen", SETTING_STRING, F(http_listen), "127.0.0.1:8780", 0, 0, NULL,
         valid_nonempty, false, "SAGAD_HTTP_LISTEN",
         "HTTP API address HOST:PORT (port 0 = any free port), or \"off\""},
        {"http_token_file", SETTING_STRING, F(http_token_file), "", 0, 0, NULL, NULL, false,
         "SAGAD_HTTP_TOKEN_FILE",
         "file holding the bearer token every HTTP request but /healthz and /readyz must carry "
         "(Authorization: Bearer ...); empty = no authentication"},
        {"breaker_failures", SETTING_INT, F(breaker_failures), "20", 0, 100000, NULL, NULL, false,
         "SAGAD_BREAKER_FAILURES",
         "consecutive failed attempts (retryable failures, timeouts) to one subject that open its "
         "circuit; 0 = no circuit breaker"},
        {"breaker_cooldown", SETTING_DURATION, F(breaker_cooldown_ms), "5s", 10, MS_HOUR, NULL,
         NULL, false, "SAGAD_BREAKER_COOLDOWN",
         "how long an open circuit holds retries before one probe is let through"},
        {"fail_point", SETTING_STRING, F(fail_point), "off", 0, 0, NULL, valid_nonempty, false,
         "SAGAD_FAIL_POINT",
         "tests only: SIGKILL at after_commit_before_publish, after_publish_before_delete, "
         "after_fetch_before_commit or after_commit_before_ack"},
        {"fail_point_after", SETTING_INT, F(fail_point_after), "1", 1, 1000000, NULL, NULL, false,
         "SAGAD_FAIL_POINT_AFTER", "tests only: the fail point fires on this pass"},
        {"log_level", SETTING_ENUM, F(log_level), "info", 0, 0, level_words, NULL, false,
         "SAGAD_LOG_LEVEL", "lowest level logged: debug, info, warn, error"},
};

#undef F

#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

const struct setting *
config_settings(size_t *count)
{
	*count = N_SETTINGS;
	return settings;
}

static const struct setting *
find_setting(const char *name)
{
	for (size_t i = 0; i < N_SETTINGS; i++) {
		if (strcmp(settings[i].name, name) == 0)
			return &settings[i];
	}
	return NULL;
}

/* Parse "<integer><unit>" against a unit table; the integer may not overflow. */
static enum status
parse_scaled(const char *text, const char *const *units, const int64_t *scales, int64_t *out)
{
	char *end = NULL;
	long long v;

	if (text[0] == '\0' || !isdigit((unsigned char)text[0]))
		return STATUS_INVALID;
	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno != 0)
		return STATUS_INVALID;
	for (size_t i = 0; units[i] != NULL; i++) {
		if (strcmp(end, units[i]) == 0) {
			if (v > INT64_MAX / scales[i])
				return STATUS_INVALID;
			*out = (int64_t)v * scales[i];
			return STATUS_OK;
		}
	}
	return STATUS_INVALID;
}

enum status
config_parse_duration(const char *text, int64_t *out_ms)
{
	static const char *const units[] = {"", "ms", "s", "m", "h", "d", NULL};
	static const int64_t scales[] = {1, 1, MS_SECOND, MS_MINUTE, MS_HOUR, MS_DAY};

	return parse_scaled(text, units, scales, out_ms);
}

enum status
config_parse_bytes(const char *text, int64_t *out)
{
	static const char *const units[] = {"",    "B",  "K", "KiB", "KB", "M",
	                                    "MiB", "MB", "G", "GiB", "GB", NULL};
	static const int64_t scales[] = {1, 1, KIB, KIB, KIB, MIB, MIB, MIB, GIB, GIB, GIB};

	return parse_scaled(text, units, scales, out);
}

static enum status
parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = {"1", "true", "on", "yes"};
	static const char *const no[] = {"0", "false", "off", "no"};

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*out = true;
			return STATUS_OK;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*out = false;
			return STATUS_OK;
		}
	}
	return STATUS_INVALID;
}

static const char *
type_name(enum setting_type t)
{
	switch (t) {
	case SETTING_STRING:
		return "string";
	case SETTING_SECRET:
		return "secret";
	case SETTING_INT:
		return "int";
	case SETTING_DURATION:
		return "duration";
	case SETTING_BYTES:
		return "bytes";
	case SETTING_BOOL:
		return "bool";
	case SETTING_ENUM:
		return "enum";
	}
	return "?";
}

static enum status
set_one(struct config *cfg, const struct setting *s, const char *value, char *err, size_t errlen)
{
	char *base = (char *)cfg + s->offset;
	int64_t n = 0;
	bool b = false;

	switch (s->type) {
	case SETTING_STRING:
	case SETTING_SECRET: {
		char *copy;

		if (s->valid != NULL && !s->valid(value)) {
			if (s->type == SETTING_SECRET)
				snprintf(err, errlen, "%s: invalid value", s->name);
			else
				snprintf(err, errlen, "%s: invalid value \"%.80s\"", s->name,
				         value);
			return STATUS_CONFIG;
		}
		copy = strdup(value);
		if (copy == NULL) {
			snprintf(err, errlen, "%s: out of memory", s->name);
			return STATUS_NOMEM;
		}
		free(*(char **)base);
		*(char **)base = copy;
		return STATUS_OK;
	}
	case SETTING_INT: {
		char *end = NULL;
		long long v;

		errno = 0;
		v = strtoll(value, &end, 10);
		if (errno != 0 || end == value || *end != '\0') {
			snprintf(err, errlen, "%s: \"%.40s\" is not an integer", s->name, value);
			return STATUS_CONFIG;
		}
		n = v;
		break;
	}
	case SETTING_DURATION:
		if (config_parse_duration(value, &n) != STATUS_OK) {
			snprintf(
			        err, errlen,
			        "%s: \"%.40s\" is not a duration (use e.g. 250ms, 30s, 5m, 1h, 1d)",
			        s->name, value);
			return STATUS_CONFIG;
		}
		break;
	case SETTING_BYTES:
		if (config_parse_bytes(value, &n) != STATUS_OK) {
			snprintf(err, errlen,
			         "%s: \"%.40s\" is not a size (use e.g. 4096, 64KiB, 1MiB, 2GiB)",
			         s->name, value);
			return STATUS_CONFIG;
		}
		break;
	case SETTING_BOOL:
		if (parse_bool(value, &b) != STATUS_OK) {
			snprintf(err, errlen, "%s: \"%.40s\" is not true/false", s->name, value);
			return STATUS_CONFIG;
		}
		*(bool *)base = b;
		return STATUS_OK;
	case SETTING_ENUM:
		for (int i = 0; s->words[i] != NULL; i++) {
			if (strcmp(value, s->words[i]) == 0) {
				*(int *)base = i;
				return STATUS_OK;
			}
		}
		snprintf(err, errlen, "%s: \"%.40s\" is not one of the allowed words", s->name,
		         value);
		return STATUS_CONFIG;
	}

	if (n < s->min || n > s->max) {
		snprintf(err, errlen,
		         "%s: %" PRId64 " is out of bounds [%" PRId64 ", %" PRId64 "]%s", s->name,
		         n, s->min, s->max,
		         s->type == SETTING_DURATION ? " (milliseconds)"
		         : s->type == SETTING_BYTES  ? " (bytes)"
		                                     : "");
		return STATUS_CONFIG;
	}
	*(int64_t *)base = n;
	return STATUS_OK;
}

enum status
config_init(struct config *cfg)
{
	char err[256];

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < N_SETTINGS; i++) {
		enum status st = set_one(cfg, &settings[i], settings[i].def, err, sizeof(err));

		if (st != STATUS_OK) {
			/* A default outside its own bounds is a programming error. */
			log_fatal("bad default: %s", err);
			config_free(cfg);
			return st == STATUS_NOMEM ? STATUS_NOMEM : STATUS_CONFIG;
		}
	}
	return STATUS_OK;
}

void
config_free(struct config *cfg)
{
	for (size_t i = 0; i < N_SETTINGS; i++) {
		if (settings[i].type == SETTING_STRING || settings[i].type == SETTING_SECRET) {
			char **p = (char **)((char *)cfg + settings[i].offset);

			free(*p);
			*p = NULL;
		}
	}
}

enum status
config_set(struct config *cfg, const char *name, const char *value, char *err, size_t errlen)
{
	const struct setting *s = find_setting(name);

	if (s == NULL) {
		snprintf(err, errlen, "unknown setting \"%.60s\" (see --help)", name);
		return STATUS_CONFIG;
	}
	return set_one(cfg, s, value, err, errlen);
}

enum status
config_load_env(struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const char *v = getenv(settings[i].env);
		enum status st;

		if (v == NULL)
			continue;
		st = set_one(cfg, &settings[i], v, err, errlen);
		if (st != STATUS_OK) {
			size_t used = strlen(err);

			snprintf(err + used, errlen - used, " (from %s)", settings[i].env);
			return st;
		}
	}
	return STATUS_OK;
}

enum status
config_parse_args(struct config *cfg, int argc, char **argv, int *next, char *err, size_t errlen)
{
	int i = 1;

	while (i < argc) {
		const char *arg = argv[i];
		char name[80];
		const char *value;
		const char *eq;
		enum status st;

		if (strcmp(arg, "--") == 0) {
			i++;
			break;
		}
		if (strncmp(arg, "--", 2) != 0 || strcmp(arg, "--help") == 0)
			break;
		arg += 2;
		eq = strchr(arg, '=');
		if (eq != NULL) {
			snprintf(name, sizeof(name), "%.*s", (int)(eq - arg), arg);
			value = eq + 1;
		} else {
			snprintf(name, sizeof(name), "%s", arg);
			if (i + 1 >= argc) {
				snprintf(err, errlen, "%s: missing value", name);
				return STATUS_CONFIG;
			}
			value = argv[++i];
		}
		/* Accept --stream-max-bytes as well as --stream_max_bytes. */
		for (char *p = name; *p != '\0'; p++) {
			if (*p == '-')
				*p = '_';
		}
		st = config_set(cfg, name, value, err, errlen);
		if (st != STATUS_OK)
			return st;
		i++;
	}
	*next = i;
	return STATUS_OK;
}

void
config_print_help(FILE *out)
{
	fprintf(out, "Settings (precedence: --name=value > environment > default):\n\n");
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting *s = &settings[i];
		char bounds[96] = "";

		if (s->type == SETTING_INT || s->type == SETTING_DURATION ||
		    s->type == SETTING_BYTES) {
			snprintf(bounds, sizeof(bounds), " [%" PRId64 "..%" PRId64 "%s]", s->min,
			         s->max,
			         s->type == SETTING_DURATION ? " ms"
			         : s->type == SETTING_BYTES  ? " bytes"
			                                     : "");
		} else if (s->type == SETTING_ENUM) {
			size_t used = 0;

			used += (size_t)snprintf(bounds, sizeof(bounds), " {");
			for (int w = 0; s->words[w] != NULL && used < sizeof(bounds); w++) {
				used += (size_t)snprintf(bounds + used, sizeof(bounds) - used,
				                         "%s%s", w > 0 ? "," : "", s->words[w]);
			}
			if (used < sizeof(bounds))
				snprintf(bounds + used, sizeof(bounds) - used, "}");
		}
		fprintf(out, "  --%-26s %-8s default %s%s%s\n", s->name, type_name(s->type),
		        s->def[0] != '\0' ? s->def : "\"\"", bounds,
		        s->runtime ? " (runtime)" : "");
		fprintf(out, "  %-28s env %s\n  %-28s %s\n\n", "", s->env, "", s->help);
	}
}

/* True when p starts right after a "scheme://" of url. */
static bool
after_scheme(const char *url, const char *p)
{
	return p - url >= 3 && strncmp(p - 3, "://", 3) == 0;
}

/* True when the scheme ending at p ("...://" + p) is a NATS one, where a lone user is a token. */
static bool
nats_scheme(const char *url, const char *p)
{
	const char *s = p - 3;

	while (s > url && s[-1] != ',' && s[-1] != ' ')
		s--;
	return strncmp(s, "nats://", 7) == 0 || strncmp(s, "tls://", 6) == 0 ||
	       strncmp(s, "ws://", 5) == 0 || strncmp(s, "wss://", 6) == 0;
}

void
config_redact_url(const char *url, char *out, size_t outlen)
{
	size_t o = 0;

	if (outlen == 0)
		return;
	for (const char *p = url; *p != '\0' && o + 1 < outlen;) {
		/* user:password@ right after each scheme (a NATS URL list has several) */
		if (after_scheme(url, p)) {
			const char *at = strpbrk(p, "@/?,");
			const char *colon = strchr(p, ':');

			if (at != NULL && *at == '@' && colon != NULL && colon < at) {
				o += (size_t)snprintf(out + o, outlen - o, "%.*s:***@",
				                      (int)(colon - p), p);
				p = at + 1;
				continue;
			}
			/* nats://TOKEN@host: the lone user is a secret token */
			if (at != NULL && *at == '@' && nats_scheme(url, p)) {
				o += (size_t)snprintf(out + o, outlen - o, "***@");
				p = at + 1;
				continue;
			}
		}
		/* password=... in key=value form or a URL query */
		if (strncmp(p, "password=", 9) == 0 &&
		    (p == url || p[-1] == ' ' || p[-1] == '?' || p[-1] == '&')) {
			o += (size_t)snprintf(out + o, outlen - o, "password=***");
			p += 9;
			while (*p != '\0' && *p != ' ' && *p != '&')
				p++;
			continue;
		}
		out[o++] = *p++;
	}
	if (o >= outlen)
		o = outlen - 1;
	out[o] = '\0';
}

void
config_nats_inbox_prefix(const char *nats_url, const char *setting, char *out, size_t outlen)
{
	if (setting != NULL && setting[0] != '\0') {
		snprintf(out, outlen, "%s", setting);
		return;
	}
	snprintf(out, outlen, "_INBOX");
	/* The first URL of the list that names a user (nats.c uses each URL's own credentials). */
	for (const char *user = strstr(nats_url, "://"); user != NULL; user = strstr(user, "://")) {
		const char *at, *colon;
		char name[65];

		user += 3;
		at = strpbrk(user, "@/?,");
		colon = strchr(user, ':');
		/* Only user:password@ names a user; a lone user@ is a token, never put in a subject. */
		if (at == NULL || *at != '@' || colon == NULL || colon > at ||
		    (size_t)(colon - user) >= sizeof(name))
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)(colon - user), user);
		if (config_valid_token(name))
			snprintf(out, outlen, "_INBOX_%s", name);
		return;
	}
}

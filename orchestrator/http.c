/*
 * The HTTP API of sagad (libmicrohttpd, one internal thread with its own
 * PostgreSQL connection): POST /v1/sagas/{name}, GET /v1/sagas/{id},
 * GET /metrics, GET /healthz, GET /readyz; with http_token_file set, every
 * request but the two health checks must carry that bearer token. The only
 * module that includes microhttpd.h and jansson.h.
 */
#include "http.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "codec.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "saga.h"
#include "store.h"

#define START_TIMEOUT_MS 5000

struct http {
	const struct config *cfg; /* settings */
	struct bus *bus;          /* NATS (thread-safe) */
	struct store *db;         /* this thread's connection; NULL until needed / after a loss */
	struct MHD_Daemon *mhd;   /* the server */
	int port;                 /* bound port */
	char *token;              /* bearer token asked for, or NULL (no authentication) */
	size_t token_len;         /* its length */
};

/* Longest token file read (a token is a line of text). */
#define TOKEN_MAX 4096

/* Per-request state: the body collected so far. */
struct request {
	char *body;    /* bytes received */
	size_t len;    /* used */
	size_t cap;    /* allocated */
	int too_large; /* over the limit: answered 413 */
};

static enum MHD_Result
respond(struct MHD_Connection *c, unsigned code, const char *type, const char *body, size_t len,
        const char *h1, const char *v1)
{
	struct MHD_Response *r =
	        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	if (h1 != NULL)
		MHD_add_response_header(r, h1, v1);
	ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

/* Answer with a JSON object (consumed); extra header optional. */
static enum MHD_Result
respond_json(struct MHD_Connection *c, unsigned code, json_t *obj, const char *h1, const char *v1)
{
	char *text = json_dumps(obj, JSON_COMPACT);
	enum MHD_Result ret;

	json_decref(obj);
	if (text == NULL)
		return respond(c, 500, "application/json", "{\"error\":\"out of memory\"}", 25,
		               NULL, NULL);
	ret = respond(c, code, "application/json", text, strlen(text), h1, v1);
	free(text);
	return ret;
}

static enum MHD_Result
respond_error(struct MHD_Connection *c, unsigned code, const char *msg)
{
	return respond_json(c, code, json_pack("{s:s}", "error", msg), NULL, NULL);
}

/* The thread's database connection, reconnecting after a loss. */
static struct store *
db(struct http *h, char *err, size_t errlen)
{
	if (h->db != NULL && store_ping(h->db, err, errlen) != STATUS_OK) {
		store_close(h->db);
		h->db = NULL;
	}
	if (h->db == NULL && store_connect(&h->db, h->cfg->database_url, h->cfg->db_schema, 2000, 0,
	                                   "sagad-http", err, errlen) != STATUS_OK)
		h->db = NULL;
	return h->db;
}

static unsigned
status_for_reject(enum start_reject r)
{
	switch (r) {
	case REJECT_UNKNOWN_SAGA:
		return MHD_HTTP_NOT_FOUND;
	case REJECT_OVERLOADED:
		return MHD_HTTP_TOO_MANY_REQUESTS;
	case REJECT_UNAVAILABLE:
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	case REJECT_INVALID:
	case REJECT_NONE:
		break;
	}
	return MHD_HTTP_BAD_REQUEST;
}

static enum MHD_Result
post_saga(struct http *h, struct MHD_Connection *c, const char *name, struct request *req)
{
	const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
	const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
	const char *corr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Correlation-Id");
	const char *trace = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "traceparent");
	const char *version = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "version");
	struct bytes body = {(uint8_t *)req->body, req->len};
	struct bytes msg = {0};
	struct bus_msg *reply = NULL;
	struct start_answer a;
	char subject[256], err[512], location[128], retry_after[32];
	unsigned code;
	json_t *out;
	enum MHD_Result ret;

	if (!saga_valid_name(name))
		return respond_error(c, MHD_HTTP_BAD_REQUEST,
		                     "saga name: use 1-64 of [A-Za-z0-9_-]");
	if (ctype != NULL && strncmp(ctype, "application/x-protobuf", 22) == 0) {
		/* The body is a StartSagaRequest; sagad checks it like any NATS start. */
		msg = body;
	} else {
		json_error_t jerr;
		json_t *input;

		/* The JSON body is the saga input itself: max_payload is its limit. */
		if (req->len > (size_t)h->cfg->max_payload)
			return respond_error(c, MHD_HTTP_CONTENT_TOO_LARGE,
			                     "body over the max_payload limit");
		input = json_loadb(req->body, req->len, JSON_DECODE_ANY, &jerr);
		if (input == NULL) {
			snprintf(err, sizeof(err), "body is not JSON: %s (line %d, column %d)",
			         jerr.text, jerr.line, jerr.column);
			return respond_error(c, MHD_HTTP_BAD_REQUEST, err);
		}
		json_decref(input);
		if (version != NULL && strspn(version, "0123456789") != strlen(version))
			return respond_error(c, MHD_HTTP_BAD_REQUEST, "version: not a number");
		if (codec_encode_start_request_traced(
		            name, version != NULL ? (uint32_t)strtoul(version, NULL, 10) : 0, body,
		            key, corr, trace, &msg) != STATUS_OK)
			return respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	}
	snprintf(subject, sizeof(subject), "%s.start.%s", h->cfg->subject_prefix, name);
	{
		struct bus_header hd[1] = {{HDR_CONTENT_TYPE, CT_START_REQUEST}};
		enum status st = bus_request(h->bus, subject, hd, 1, msg.data, msg.len,
		                             START_TIMEOUT_MS, &reply, err, sizeof(err));

		if (msg.data != body.data)
			free(msg.data);
		if (st != STATUS_OK)
			return respond_json(c, MHD_HTTP_SERVICE_UNAVAILABLE,
			                    json_pack("{s:s}", "error",
			                              "no sagad answered the start: retry later"),
			                    "Retry-After", "1");
	}
	if (codec_decode_start_answer(bus_msg_data(reply), bus_msg_len(reply), &a, err,
	                              sizeof(err)) != STATUS_OK) {
		bus_msg_free(reply);
		return respond_error(c, MHD_HTTP_BAD_GATEWAY, err);
	}
	bus_msg_free(reply);
	if (a.status == START_REJECTED) {
		code = status_for_reject(a.reject);
		out = json_pack("{s:s,s:s,s:s}", "status", "rejected", "error", a.reason, "saga",
		                a.saga_name);
		if (a.retry_after_ms > 0) {
			snprintf(retry_after, sizeof(retry_after), "%lld",
			         (long long)((a.retry_after_ms + 999) / 1000));
			return respond_json(c, code, out, "Retry-After", retry_after);
		}
		return respond_json(c, code, out, NULL, NULL);
	}
	snprintf(location, sizeof(location), "/v1/sagas/%s", a.saga_id);
	out = json_pack("{s:s,s:s,s:s,s:s,s:i,s:s}", "status",
	                a.status == START_ACCEPTED ? "accepted" : "duplicate", "saga_id", a.saga_id,
	                "correlation_id", a.correlation_id, "saga", a.saga_name, "version",
	                (json_int_t)a.version, "location", location);
	ret = respond_json(c, MHD_HTTP_ACCEPTED, out, "Location", location);
	return ret;
}

static enum MHD_Result
get_saga(struct http *h, struct MHD_Connection *c, const char *id)
{
	char err[512];
	char *json = NULL;
	struct store *s;
	enum status st;
	enum MHD_Result ret;

	if (!codec_valid_uuid(id))
		return respond_error(c, MHD_HTTP_BAD_REQUEST, "saga id: not a UUID");
	s = db(h, err, sizeof(err));
	if (s == NULL)
		return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "database unavailable");
	st = store_saga_json(s, id, &json, err, sizeof(err));
	if (st == STATUS_NOT_FOUND)
		return respond_error(c, MHD_HTTP_NOT_FOUND, "no such saga");
	if (st != STATUS_OK)
		return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, err);
	ret = respond(c, MHD_HTTP_OK, "application/json", json, strlen(json), NULL, NULL);
	free(json);
	return ret;
}

static enum MHD_Result
get_metrics(struct http *h, struct MHD_Connection *c)
{
	struct metrics_gauges g;
	struct store_gauges sg;
	struct bus_consumer_stats cs;
	char err[512];
	char *text = NULL;
	size_t len = 0;
	struct store *s = db(h, err, sizeof(err));
	enum MHD_Result ret;

	memset(&g, 0, sizeof(g));
	if (s != NULL && store_read_gauges(s, &sg, err, sizeof(err)) == STATUS_OK) {
		g.gauges_ok = 1;
		g.running = sg.running;
		g.compensating = sg.compensating;
		g.failed = sg.failed;
		g.outbox_rows = sg.outbox_rows;
		g.outbox_oldest_s = sg.outbox_oldest_s;
	}
	if (bus_consumer_stats(h->bus, BUS_STREAM_REPLY, &cs, err, sizeof(err)) == STATUS_OK) {
		g.consumer_ok = 1;
		g.reply_pending = (int64_t)cs.num_pending;
		g.reply_ack_pending = cs.num_ack_pending;
		if (bus_consumer_stats(h->bus, BUS_STREAM_SUBMIT, &cs, err, sizeof(err)) ==
		    STATUS_OK)
			g.submit_pending = (int64_t)cs.num_pending;
	}
	if (metrics_render(&g, &text, &len) != 0)
		return respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	ret = respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL,
	              NULL);
	free(text);
	return ret;
}

static enum MHD_Result
get_ready(struct http *h, struct MHD_Connection *c)
{
	char db_err[512] = "", mig_err[512] = "", nats_err[512] = "";
	struct store *s = db(h, db_err, sizeof(db_err));
	int pending = 0;
	int db_ok = s != NULL;
	int mig_ok = db_ok && migrate_check(s, h->cfg->migrations_dir, &pending, mig_err,
	                                    sizeof(mig_err)) == STATUS_OK;
	int nats_ok = bus_ping(h->bus, nats_err, sizeof(nats_err)) == STATUS_OK;
	json_t *out = json_pack("{s:s,s:{s:b,s:s},s:{s:b,s:s},s:{s:b,s:s}}", "status",
	                        db_ok && mig_ok && nats_ok ? "ready" : "not ready", "database",
	                        "ok", db_ok, "error", db_err, "migrations", "ok", mig_ok, "error",
	                        mig_err, "nats", "ok", nats_ok, "error", nats_err);

	return respond_json(c,
	                    db_ok && mig_ok && nats_ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
	                    out, NULL, NULL);
}

/*
 * Whether the request carries "Authorization: Bearer <the token>". The
 * comparison takes the same time wherever the first difference is.
 */
static int
authorized(const struct http *h, struct MHD_Connection *c)
{
	const char *v =
	        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	unsigned char diff = 0;
	size_t n;

	if (v == NULL || strncasecmp(v, "Bearer ", 7) != 0)
		return 0;
	v += 7;
	n = strlen(v);
	diff = (unsigned char)(n != h->token_len);
	for (size_t i = 0; i < h->token_len; i++)
		diff |= (unsigned char)(h->token[i] ^ (i < n ? v[i] : 0));
	return diff == 0;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_size, void **state)
{
	struct http *h = cls;
	struct request *req = *state;
	int is_post = strcmp(method, "POST") == 0;
	int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

	(void)version;
	if (req == NULL) {
		/* First call: headers only. Keep state for the body of a POST. */
		req = calloc(1, sizeof(*req));
		if (req == NULL)
			return MHD_NO;
		*state = req;
		return MHD_YES;
	}
	if (is_post && *upload_size > 0) {
		size_t limit = (size_t)h->cfg->max_payload + CODEC_ENVELOPE_MAX;

		if (req->len + *upload_size > limit) {
			req->too_large = 1;
		} else if (!req->too_large) {
			if (req->len + *upload_size + 1 > req->cap) {
				size_t cap = (req->len + *upload_size + 1) * 2;
				char *grown = realloc(req->body, cap);

				if (grown == NULL)
					return MHD_NO;
				req->body = grown;
				req->cap = cap;
			}
			memcpy(req->body + req->len, upload_data, *upload_size);
			req->len += *upload_size;
			req->body[req->len] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	/* Probes stay open: they tell whether sagad runs, nothing about its sagas. */
	if (h->token != NULL && strcmp(url, "/healthz") != 0 && strcmp(url, "/readyz") != 0 &&
	    !authorized(h, c))
		return respond_json(c, MHD_HTTP_UNAUTHORIZED,
		                    json_pack("{s:s}", "error",
		                              "this endpoint wants Authorization: Bearer <token>"),
		                    "WWW-Authenticate", "Bearer realm=\"sagad\"");
	if (strncmp(url, "/v1/sagas/", 10) == 0 && strchr(url + 10, '/') == NULL &&
	    url[10] != '\0') {
		if (is_post) {
			if (req->too_large)
				return respond_error(c, MHD_HTTP_CONTENT_TOO_LARGE,
				                     "body over the max_payload limit");
			return post_saga(h, c, url + 10, req);
		}
		if (is_get)
			return get_saga(h, c, url + 10);
		return respond_json(c, MHD_HTTP_METHOD_NOT_ALLOWED,
		                    json_pack("{s:s}", "error", "use POST to start, GET to read"),
		                    "Allow", "GET, POST");
	}
	if (!is_get) {
		if (strcmp(url, "/metrics") == 0 || strcmp(url, "/healthz") == 0 ||
		    strcmp(url, "/readyz") == 0)
			return respond_json(c, MHD_HTTP_METHOD_NOT_ALLOWED,
			                    json_pack("{s:s}", "error", "use GET"), "Allow", "GET");
		return respond_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
	}
	if (strcmp(url, "/metrics") == 0)
		return get_metrics(h, c);
	if (strcmp(url, "/healthz") == 0)
		return respond(c, MHD_HTTP_OK, "application/json", "{\"status\":\"ok\"}", 15, NULL,
		               NULL);
	if (strcmp(url, "/readyz") == 0)
		return get_ready(h, c);
	return respond_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode t)
{
	struct request *req = *state;

	(void)cls;
	(void)c;
	(void)t;
	if (req != NULL) {
		free(req->body);
		free(req);
	}
	*state = NULL;
}

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_warn("http: %s", line);
}

/* Read the bearer token from path (surrounding white space dropped); NULL on failure (err says why). */
static char *
read_token(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "r");
	struct stat sb;
	char *buf, *start;
	size_t n;

	if (fp == NULL) {
		snprintf(err, errlen, "http_token_file %s: cannot read it", path);
		return NULL;
	}
	if (fstat(fileno(fp), &sb) == 0 && (sb.st_mode & 077) != 0)
		log_warn("http_token_file %s can be read by other users (mode %03o)", path,
		         (unsigned)(sb.st_mode & 0777));
	buf = calloc(1, TOKEN_MAX + 2);
	if (buf == NULL) {
		fclose(fp);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	n = fread(buf, 1, TOKEN_MAX + 1, fp);
	fclose(fp);
	if (n > TOKEN_MAX) {
		free(buf);
		snprintf(err, errlen, "http_token_file %s: longer than %d bytes", path, TOKEN_MAX);
		return NULL;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
	                 buf[n - 1] == '\t'))
		buf[--n] = '\0';
	start = buf + strspn(buf, " \t\r\n");
	n -= (size_t)(start - buf);
	memmove(buf, start, n + 1);
	if (n == 0 || strlen(buf) != n || strpbrk(buf, " \t\r\n") != NULL) {
		free(buf);
		snprintf(err, errlen,
		         "http_token_file %s: want one token (printable, no spaces), found %s",
		         path, n == 0 ? "none" : "more");
		return NULL;
	}
	*len = n;
	return buf;
}

enum status
http_start(struct http **out, const struct config *cfg, struct bus *bus, char *err, size_t errlen)
{
	struct sockaddr_in addr;
	struct http *h;
	char host[64];
	const char *colon = strrchr(cfg->http_listen, ':');
	long port;
	const union MHD_DaemonInfo *info;

	if (colon == NULL || (size_t)(colon - cfg->http_listen) >= sizeof(host)) {
		snprintf(err, errlen, "http_listen: use HOST:PORT (or \"off\")");
		return STATUS_CONFIG;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - cfg->http_listen), cfg->http_listen);
	port = strtol(colon + 1, NULL, 10);
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)port);
	if (port < 0 || port > 65535 || inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
		snprintf(err, errlen, "http_listen: \"%s\" is not IPV4:PORT", cfg->http_listen);
		return STATUS_CONFIG;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		snprintf(err, errlen, "out of memory");
		return STATUS_NOMEM;
	}
	h->cfg = cfg;
	h->bus = bus;
	if (cfg->http_token_file[0] != '\0') {
		h->token = read_token(cfg->http_token_file, &h->token_len, err, errlen);
		if (h->token == NULL) {
			free(h);
			return STATUS_CONFIG;
		}
	}
	h->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL,
	                          NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
	                          MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
	                          MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
	                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
	                          MHD_OPTION_CONNECTION_LIMIT, (unsigned int)256, MHD_OPTION_END);
	if (h->mhd == NULL) {
		snprintf(err, errlen, "http_listen %s: cannot listen (port in use?)",
		         cfg->http_listen);
		free(h->token);
		free(h);
		return STATUS_CONFIG;
	}
	info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info != NULL ? info->port : (int)port;
	log_info("http listening on %s:%d%s", host, h->port,
	         h->token != NULL ? " (bearer token required)" : "");
	*out = h;
	return STATUS_OK;
}

void
http_stop(struct http *h)
{
	if (h == NULL)
		return;
	MHD_stop_daemon(h->mhd);
	store_close(h->db);
	if (h->token != NULL)
		explicit_bzero(h->token, h->token_len);
	free(h->token);
	free(h);
}

int
http_port(const struct http *h)
{
	return h->port;
}

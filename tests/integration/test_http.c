/* Integration tests of sagad's HTTP API, metrics, health and graceful shutdown. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flow.h"
#include "harness.h"

static const char order_yaml[] = "name: order\n"
                                 "steps:\n"
                                 "  - name: reserve_stock\n"
                                 "    action: stock.reserve\n"
                                 "    compensation: stock.release\n"
                                 "    timeout: 2s\n"
                                 "  - name: charge_card\n"
                                 "    action: payments.charge\n"
                                 "    compensation: payments.refund\n"
                                 "    timeout: 2s\n"
                                 "  - name: ship\n"
                                 "    action: shipping.ship\n"
                                 "    timeout: 2s\n";

static struct flow f;
static char out[65536];

static void
teardown(void)
{
	flow_teardown(&f);
}

/* The value of a JSON string field in text (test helper; no escapes expected). */
static const char *
json_field(const char *text, const char *name, char *buf, size_t buflen)
{
	char key[64];
	const char *p;
	size_t n;

	snprintf(key, sizeof(key), "\"%s\":\"", name);
	p = strstr(text, key);
	cr_assert_not_null(p, "no %s in %s", name, text);
	p += strlen(key);
	n = strcspn(p, "\"");
	cr_assert_lt(n, buflen);
	memcpy(buf, p, n);
	buf[n] = '\0';
	return buf;
}

static const char *
body_of(const char *response)
{
	const char *b = strstr(response, "\r\n\r\n");

	cr_assert_not_null(b);
	return b + 4;
}

TestSuite(http, .fini = teardown, .timeout = 120);

Test(http, post_answers_202_with_ids_and_location_then_get_shows_the_saga)
{
	char id[64], corr[160], path[128];
	int port, code;

	flow_setup(&f, "t_http");
	flow_define(&f, order_yaml);
	port = flow_http_port(&f, flow_start_sagad(&f, NULL));
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	code = flow_http(port, "POST", "/v1/sagas/order",
	                 "Content-Type: application/json\r\nIdempotency-Key: http-1\r\n"
	                 "X-Correlation-Id: web-req-77\r\n",
	                 "{\"order_id\":7}", out, sizeof(out));
	cr_assert_eq(code, 202, "%s", out);
	json_field(body_of(out), "saga_id", id, sizeof(id));
	cr_assert_str_eq(json_field(body_of(out), "correlation_id", corr, sizeof(corr)),
	                 "web-req-77");
	snprintf(path, sizeof(path), "Location: /v1/sagas/%s", id);
	cr_assert(strstr(out, path) != NULL, "%s", out);

	/* Same key: the first saga's ids. */
	code = flow_http(port, "POST", "/v1/sagas/order", "Idempotency-Key: http-1\r\n",
	                 "{\"order_id\":8}", out, sizeof(out));
	cr_assert_eq(code, 202);
	cr_assert(strstr(out, id) != NULL && strstr(out, "\"duplicate\"") != NULL, "%s", out);

	cr_assert(flow_wait_settled(&f, 1, 30000));
	snprintf(path, sizeof(path), "/v1/sagas/%s", id);
	code = flow_http(port, "GET", path, NULL, NULL, out, sizeof(out));
	cr_assert_eq(code, 200, "%s", out);
	cr_assert(strstr(out, "\"state\": \"completed\"") != NULL ||
	                  strstr(out, "\"state\":\"completed\"") != NULL,
	          "%s", out);
	cr_assert(strstr(out, "\"steps\"") != NULL && strstr(out, "\"timeline\"") != NULL, "%s",
	          out);
	cr_assert(strstr(out, "charge_card") != NULL, "%s", out);
}

Test(http, bad_input_is_400_unknown_is_404_and_wrong_methods_are_405)
{
	int port;

	flow_setup(&f, "t_http_bad");
	flow_define(&f, order_yaml);
	port = flow_http_port(&f, flow_start_sagad(&f, NULL));
	cr_assert_eq(
	        flow_http(port, "POST", "/v1/sagas/order", NULL, "{not json", out, sizeof(out)),
	        400, "%s", out);
	cr_assert(strstr(out, "\"error\"") != NULL, "%s", out);
	cr_assert_eq(flow_http(port, "POST", "/v1/sagas/nope", NULL, "{}", out, sizeof(out)), 404,
	             "%s", out);
	cr_assert_eq(flow_http(port, "POST", "/v1/sagas/bad.name", NULL, "{}", out, sizeof(out)),
	             400);
	cr_assert_eq(flow_http(port, "POST", "/v1/sagas/order", "Idempotency-Key: has space\r\n",
	                       "{}", out, sizeof(out)),
	             400, "%s", out);
	cr_assert_eq(flow_http(port, "GET", "/v1/sagas/not-a-uuid", NULL, NULL, out, sizeof(out)),
	             400);
	cr_assert_eq(flow_http(port, "GET", "/v1/sagas/00000000-0000-4000-8000-000000000000", NULL,
	                       NULL, out, sizeof(out)),
	             404);
	cr_assert_eq(flow_http(port, "DELETE", "/v1/sagas/order", NULL, NULL, out, sizeof(out)),
	             405);
	cr_assert_eq(flow_http(port, "GET", "/nothing/here", NULL, NULL, out, sizeof(out)), 404);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), 0);
}

Test(http, over_the_admission_limit_is_429_with_retry_after)
{
	const char *const limit[] = {"SAGAD_MAX_IN_FLIGHT=1", NULL};
	int port;

	flow_setup(&f, "t_http_429");
	flow_define(&f, order_yaml);
	port = flow_http_port(&f, flow_start_sagad(&f, limit));
	cr_assert_eq(flow_http(port, "POST", "/v1/sagas/order", NULL, "{}", out, sizeof(out)), 202,
	             "%s", out);
	cr_assert_eq(flow_http(port, "POST", "/v1/sagas/order", NULL, "{}", out, sizeof(out)), 429,
	             "%s", out);
	cr_assert(strstr(out, "Retry-After: 1") != NULL, "%s", out);
}

Test(http, metrics_are_prometheus_text_and_health_endpoints_answer)
{
	int port;
	char *line, *save = NULL;
	int samples = 0;

	flow_setup(&f, "t_http_metrics");
	flow_define(&f, order_yaml);
	port = flow_http_port(&f, flow_start_sagad(&f, NULL));
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(
		        flow_http(port, "POST", "/v1/sagas/order", NULL, "{}", out, sizeof(out)),
		        202);
	cr_assert(flow_wait_settled(&f, 5, 30000));
	cr_assert_eq(flow_http(port, "GET", "/healthz", NULL, NULL, out, sizeof(out)), 200);
	cr_assert_eq(flow_http(port, "GET", "/readyz", NULL, NULL, out, sizeof(out)), 200, "%s",
	             out);
	cr_assert_eq(flow_http(port, "GET", "/metrics", NULL, NULL, out, sizeof(out)), 200);
	cr_assert(strstr(out, "text/plain; version=0.0.4") != NULL);
	/* Every line is a comment or "name[{labels}] value" with a numeric value. */
	for (line = strtok_r((char *)body_of(out), "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *space;
		char *end = NULL;

		if (line[0] == '#') {
			cr_assert(strncmp(line, "# HELP ", 7) == 0 ||
			                  strncmp(line, "# TYPE ", 7) == 0,
			          "bad comment: %s", line);
			continue;
		}
		space = strrchr(line, ' ');
		cr_assert_not_null(space, "bad sample: %s", line);
		strtod(space + 1, &end);
		cr_assert(end != NULL && *end == '\0', "bad value: %s", line);
		cr_assert(line[0] >= 'a' && line[0] <= 'z', "bad name: %s", line);
		samples++;
	}
	cr_assert_gt(samples, 40);
	cr_assert_eq(flow_http(port, "GET", "/metrics", NULL, NULL, out, sizeof(out)), 200);
	cr_assert(strstr(out, "sagad_starts_total{outcome=\"accepted\"} 5") != NULL, "%s", out);
	cr_assert(strstr(out, "sagad_sagas_ended_total{state=\"completed\"} 5") != NULL, "%s", out);
	cr_assert(strstr(out, "sagad_start_ack_seconds_count 5") != NULL, "%s", out);
	cr_assert(strstr(out, "sagad_sagas_in_flight{state=\"running\"} 0") != NULL, "%s", out);
	cr_assert(strstr(out, "sagad_up{part=\"database\"} 1") != NULL, "%s", out);
}

Test(http, traceparent_given_at_start_reaches_every_command)
{
	struct bus_sub *cmds = NULL;
	struct bus_msg *m = NULL;
	char subject[256], err[256];
	static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	int port, n = 0;

	flow_setup(&f, "t_http_trace");
	flow_define(&f, order_yaml);
	port = flow_http_port(&f, flow_start_sagad(&f, NULL));
	snprintf(subject, sizeof(subject), "%s.cmd.>", f.prefix);
	cr_assert_eq(bus_subscribe(f.bus, subject, NULL, &cmds, err, sizeof(err)), STATUS_OK);
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	cr_assert_eq(
	        flow_http(
	                port, "POST", "/v1/sagas/order",
	                "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
	                "{}", out, sizeof(out)),
	        202, "%s", out);
	cr_assert(flow_wait_settled(&f, 1, 30000));
	while (bus_next(cmds, 300, &m) == STATUS_OK) {
		const char *h = bus_msg_header(m, "traceparent");

		cr_assert(h != NULL && strcmp(h, tp) == 0, "command without the traceparent");
		n++;
		bus_msg_free(m);
	}
	cr_assert_eq(n, 3);
	bus_unsubscribe(cmds);
}

Test(http, sigterm_under_load_answers_what_it_took_and_loses_nothing, .timeout = 180)
{
	int sagad, accepted = 0, unanswered = 0;
	char sql[128];

	flow_setup(&f, "t_graceful");
	flow_define(&f, order_yaml);
	sagad = flow_start_sagad(&f, NULL);
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	for (int i = 0; i < 300; i++) {
		struct start_answer a;
		char input[32];

		if (i == 150)
			kill(f.procs[sagad], SIGTERM);
		snprintf(input, sizeof(input), "{\"i\":%d}", i);
		if (flow_start_saga(&f, "order", input, NULL, &a) == STATUS_OK &&
		    a.status == START_ACCEPTED)
			accepted++;
		else
			unanswered++;
		if (i == 150) {
			cr_assert_eq(harness_wait(f.procs[sagad], 15000), 0,
			             "sagad must exit 0 within its shutdown timeout");
			f.procs[sagad] = 0;
			break;
		}
	}
	cr_assert_geq(accepted, 150);
	/* I1: every accepted start has its saga row. */
	cr_assert_geq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), accepted);
	flow_start_sagad(&f, NULL);
	cr_assert(flow_wait_settled(&f, accepted, 60000));
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM saga_instance WHERE state = 'completed'");
	cr_assert_eq(flow_sql_long(&f, sql),
	             flow_sql_long(&f, "SELECT count(*) FROM saga_instance"),
	             "every saga finished after the restart");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) - count(DISTINCT idempotency_key)"
	                               " FROM participant_effects"),
	             0);
	(void)unanswered;
}

/* Write text to a new file of mode 0600; path receives its name. */
static void
write_token_file(char *path, size_t pathlen, const char *text)
{
	int fd;

	snprintf(path, pathlen, "/tmp/sagad-token-XXXXXX");
	fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

Test(http, with_a_token_file_every_endpoint_but_the_probes_wants_the_bearer_token)
{
	char token_file[64], env[128];
	const char *extra[] = {env, NULL};
	int port, code;

	write_token_file(token_file, sizeof(token_file), "  s3cret-token-42\n");
	snprintf(env, sizeof(env), "SAGAD_HTTP_TOKEN_FILE=%s", token_file);
	flow_setup(&f, "t_http_auth");
	flow_define(&f, order_yaml);
	port = flow_http_port(&f, flow_start_sagad(&f, extra));

	/* No token, another scheme, a wrong one, a longer one, a prefix of it: 401. */
	code = flow_http(port, "POST", "/v1/sagas/order", NULL, "{}", out, sizeof(out));
	cr_assert_eq(code, 401, "%s", out);
	cr_assert(strstr(out, "WWW-Authenticate: Bearer realm=\"sagad\"") != NULL, "%s", out);
	code = flow_http(port, "POST", "/v1/sagas/order", "Authorization: Basic czNjcmV0\r\n", "{}",
	                 out, sizeof(out));
	cr_assert_eq(code, 401, "%s", out);
	code = flow_http(port, "POST", "/v1/sagas/order",
	                 "Authorization: Bearer s3cret-token-43\r\n", "{}", out, sizeof(out));
	cr_assert_eq(code, 401, "%s", out);
	code = flow_http(port, "POST", "/v1/sagas/order",
	                 "Authorization: Bearer s3cret-token-42x\r\n", "{}", out, sizeof(out));
	cr_assert_eq(code, 401, "%s", out);
	code = flow_http(port, "GET", "/metrics", "Authorization: Bearer s3cret\r\n", NULL, out,
	                 sizeof(out));
	cr_assert_eq(code, 401, "%s", out);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), 0,
	             "a refused request started a saga");

	/* The token (white space around it in the file does not count): served. */
	code = flow_http(port, "POST", "/v1/sagas/order",
	                 "Authorization: bearer s3cret-token-42\r\n", "{}", out, sizeof(out));
	cr_assert_eq(code, 202, "%s", out);
	code = flow_http(port, "GET", "/metrics", "Authorization: Bearer s3cret-token-42\r\n", NULL,
	                 out, sizeof(out));
	cr_assert_eq(code, 200, "%s", out);
	/* The probes need none. */
	cr_assert_eq(flow_http(port, "GET", "/healthz", NULL, NULL, out, sizeof(out)), 200, "%s",
	             out);
	code = flow_http(port, "GET", "/readyz", NULL, NULL, out, sizeof(out));
	cr_assert(code == 200 || code == 503, "%d %s", code, out);
	unlink(token_file);
}

Test(http, an_empty_or_unreadable_token_file_stops_sagad_at_start)
{
	static const char *const texts[] = {"", "\n  \n", "two tokens\n"};
	const char *argv[] = {harness_bin("SAGAD_BIN"), "run", NULL};
	char token_file[64], env[128];
	const char *extra[] = {env, NULL};
	const char *full[48];

	flow_setup(&f, "t_http_badtok");
	for (size_t i = 0; i <= sizeof(texts) / sizeof(texts[0]); i++) {
		int rc;

		if (i < sizeof(texts) / sizeof(texts[0]))
			write_token_file(token_file, sizeof(token_file), texts[i]);
		else
			snprintf(token_file, sizeof(token_file), "/nonexistent/sagad-token");
		snprintf(env, sizeof(env), "SAGAD_HTTP_TOKEN_FILE=%s", token_file);
		/* Everything sagad needs to get as far as its HTTP API, as the tests' sagad. */
		flow_env_as(&f, "sagad", full, sizeof(full) / sizeof(full[0]), extra);
		rc = harness_run(argv, full, out, sizeof(out), 30000);
		cr_assert_neq(rc, 0, "case %zu: sagad ran with a bad token file: %s", i, out);
		cr_assert(strstr(out, "http_token_file") != NULL, "case %zu: %s", i, out);
		if (i < sizeof(texts) / sizeof(texts[0]))
			unlink(token_file);
	}
}

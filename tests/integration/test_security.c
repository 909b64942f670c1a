/*
 * Integration tests of the security set-up (docs/security.md): the NATS users
 * and per-subject permissions of scripts/services.sh, and sagad's PostgreSQL
 * login (sagad_service, scram-sha-256). They talk to nats.c directly: what is
 * under test is which operations the server refuses, which sagad's bus module
 * does not expose.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "codec.h"
#include "config.h"
#include "definition.h"
#include "flow.h"
#include "harness.h"
#include "servers.h"

#define WAIT_MS 2000 /* how long to wait for a refusal or a message that must not come */

/* A raw NATS connection as one user, with the asynchronous errors the server sent it. */
struct raw {
	natsConnection *nc;   /* the connection */
	jsCtx *js;            /* JetStream context (API calls wait at most WAIT_MS) */
	pthread_mutex_t mu;   /* guards the fields below (nats.c calls on_error on its thread) */
	int violations;       /* permission violations reported */
	char last_error[512]; /* the server's text of the last one */
};

static struct flow f;
static int flow_used;
static struct raw conns[4];
static int n_conns;

static void
teardown(void)
{
	for (int i = 0; i < n_conns; i++) {
		jsCtx_Destroy(conns[i].js);
		natsConnection_Destroy(conns[i].nc);
		pthread_mutex_destroy(&conns[i].mu);
	}
	n_conns = 0;
	if (flow_used)
		flow_teardown(&f);
	flow_used = 0;
}

TestSuite(security, .fini = teardown, .timeout = 240);

static void
on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	struct raw *r = closure;
	const char *text = NULL;

	(void)sub;
	if (err != NATS_NOT_PERMITTED)
		return;
	natsConnection_GetLastError(nc, &text);
	pthread_mutex_lock(&r->mu);
	r->violations++;
	snprintf(r->last_error, sizeof(r->last_error), "%s", text != NULL ? text : "");
	pthread_mutex_unlock(&r->mu);
}

/* The runner's URL for a NATS role; fails when the runner made no such user. */
static const char *
role_url(const char *role)
{
	const char *url = harness_nats_url_as(role);

	cr_assert_not_null(url,
	                   "SAGAD_NATS_URL_%s is not set: run through scripts/services.sh, which "
	                   "creates the NATS users",
	                   role);
	return url;
}

/* Connect as the user of url, with that user's inbox prefix (as sagad's bus and participants do). */
static struct raw *
connect_raw(const char *url)
{
	struct raw *r = &conns[n_conns];
	natsOptions *opts = NULL;
	jsOptions jo;
	char inbox[160];

	cr_assert_lt(n_conns, (int)(sizeof(conns) / sizeof(conns[0])));
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	n_conns++;
	config_nats_inbox_prefix(url, NULL, inbox, sizeof(inbox));
	cr_assert_eq(natsOptions_Create(&opts), NATS_OK);
	cr_assert_eq(natsOptions_SetURL(opts, url), NATS_OK);
	cr_assert_eq(natsOptions_SetName(opts, "security-test"), NATS_OK);
	cr_assert_eq(natsOptions_SetCustomInboxPrefix(opts, inbox), NATS_OK);
	cr_assert_eq(natsOptions_SetErrorHandler(opts, on_error, r), NATS_OK);
	cr_assert_eq(natsConnection_Connect(&r->nc, opts), NATS_OK, "connect: %s",
	             nats_GetLastError(NULL));
	natsOptions_Destroy(opts);
	jsOptions_Init(&jo);
	jo.Wait = WAIT_MS;
	cr_assert_eq(natsConnection_JetStream(&r->js, r->nc, &jo), NATS_OK);
	return r;
}

static int
violations(struct raw *r)
{
	int n;

	pthread_mutex_lock(&r->mu);
	n = r->violations;
	pthread_mutex_unlock(&r->mu);
	return n;
}

/*
 * Wait until the server reported a permission violation beyond the first
 * `before`, naming the operation ("Publish to" / "Subscription to") and subject.
 */
static void
expect_violation(struct raw *r, int before, const char *operation, const char *subject)
{
	char want[400];
	char got[512] = "";

	snprintf(want, sizeof(want), "Permissions Violation for %s \"%s\"", operation, subject);
	natsConnection_Flush(r->nc);
	for (int waited = 0; waited < WAIT_MS; waited += 10) {
		pthread_mutex_lock(&r->mu);
		snprintf(got, sizeof(got), "%s", r->last_error);
		pthread_mutex_unlock(&r->mu);
		if (violations(r) > before && strstr(got, want) != NULL)
			return;
		usleep(10 * 1000);
	}
	cr_assert_fail("no \"%s\" from the server; last error: \"%s\"", want, got);
}

static void
stream_name(char *out, size_t outlen, const char *suffix)
{
	snprintf(out, outlen, "%s_%s", f.stream, suffix);
}

static uint64_t
stream_msgs(enum bus_stream which)
{
	struct bus_stream_stats ss;
	char err[512];

	cr_assert_eq(bus_stream_stats(f.bus, which, &ss, err, sizeof(err)), STATUS_OK, "%s", err);
	return ss.msgs;
}

/* A participant's consumer as the participant library makes it (durable p_<subject>). */
static void
consumer_config(jsConsumerConfig *cc, char *durable, size_t durablelen, char *filter,
                size_t filterlen, const char *subject)
{
	snprintf(durable, durablelen, "p_%s", subject);
	for (char *p = durable; *p != '\0'; p++)
		*p = *p == '.' ? '_' : *p;
	snprintf(filter, filterlen, "%s.cmd.%s", f.prefix, subject);
	jsConsumerConfig_Init(cc);
	cc->Name = durable;
	cc->Durable = durable;
	cc->FilterSubject = filter;
	cc->AckPolicy = js_AckExplicit;
}

/* Messages a participant's consumer has not handed out yet, and handed out but not acked. */
static void
consumer_counts(struct raw *admin, const char *subject, uint64_t *pending, int64_t *ack_pending)
{
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	char stream[128], durable[128], filter[256];
	jsConsumerConfig cc;

	stream_name(stream, sizeof(stream), "CMD");
	consumer_config(&cc, durable, sizeof(durable), filter, sizeof(filter), subject);
	cr_assert_eq(js_GetConsumerInfo(&ci, admin->js, stream, durable, NULL, &jerr), NATS_OK,
	             "consumer %s: %d", durable, (int)jerr);
	*pending = ci->NumPending;
	*ack_pending = ci->NumAckPending;
	jsConsumerInfo_Destroy(ci);
}

/* What the test's admin user (= sagad, here) puts on a command subject. */
static void
admin_publish_command(struct raw *admin, const char *subject, const char *msg_id)
{
	char subj[256];
	natsMsg *m = NULL;
	jsPubAck *pa = NULL;
	jsErrCode jerr = 0;

	snprintf(subj, sizeof(subj), "%s.cmd.%s", f.prefix, subject);
	cr_assert_eq(natsMsg_Create(&m, subj, NULL, "command", 7), NATS_OK);
	cr_assert_eq(natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id), NATS_OK);
	cr_assert_eq(js_PublishMsg(&pa, admin->js, m, NULL, &jerr), NATS_OK, "%s: %d", subj,
	             (int)jerr);
	jsPubAck_Destroy(pa);
	natsMsg_Destroy(m);
}

/* Streams and sagad's consumers (sagad check, as the sagad user), an admin connection, one command consumer. */
static struct raw *
setup_streams(const char *tag, const char *consumer_subject)
{
	struct raw *admin;
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	char stream[128], durable[128], filter[256];

	flow_setup(&f, tag);
	flow_used = 1;
	admin = connect_raw(role_url("ADMIN"));
	stream_name(stream, sizeof(stream), "CMD");
	consumer_config(&cc, durable, sizeof(durable), filter, sizeof(filter), consumer_subject);
	cr_assert_eq(js_AddConsumer(&ci, admin->js, stream, &cc, NULL, &jerr), NATS_OK,
	             "consumer %s: %d", durable, (int)jerr);
	jsConsumerInfo_Destroy(ci);
	return admin;
}

Test(security, a_participant_cannot_publish_a_command_for_another_step)
{
	struct raw *admin = setup_streams("t_sec_forge", "payments.charge");
	struct raw *stock = connect_raw(role_url("STOCK"));
	char theirs[256], mine[256], stream[128], durable[128], filter[256], next[300];
	jsPubAck *pa = NULL;
	jsPubOptions po;
	jsErrCode jerr = 0;
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	uint64_t pending;
	int64_t ack_pending;
	natsStatus s;
	int before;

	snprintf(theirs, sizeof(theirs), "%s.cmd.payments.charge", f.prefix);
	snprintf(mine, sizeof(mine), "%s.cmd.stock.reserve", f.prefix);
	stream_name(stream, sizeof(stream), "CMD");

	/* A forged "charge the card" command, as a JetStream publish: refused, never stored. */
	jsPubOptions_Init(&po);
	po.MaxWait = WAIT_MS;
	before = violations(stock);
	s = js_Publish(&pa, stock->js, theirs, "forged", 6, &po, &jerr);
	cr_assert_neq(s, NATS_OK, "the stream acknowledged a command forged by the stock user");
	jsPubAck_Destroy(pa);
	expect_violation(stock, before, "Publish to", theirs);
	/* Not even a command for its own subject, and not as a core publish either. */
	before = violations(stock);
	cr_assert_eq(natsConnection_PublishString(stock->nc, mine, "forged"), NATS_OK);
	expect_violation(stock, before, "Publish to", mine);
	cr_assert_eq(stream_msgs(BUS_STREAM_CMD), 0, "a forged command reached the command stream");

	/*
	 * Its own consumer, created the way the participant library creates it
	 * (the filter travels in the API subject), and a genuine command for it.
	 */
	consumer_config(&cc, durable, sizeof(durable), filter, sizeof(filter), "stock.reserve");
	cr_assert_eq(js_AddConsumer(&ci, stock->js, stream, &cc, NULL, &jerr), NATS_OK,
	             "stock may create its own consumer: %d %s", (int)jerr,
	             nats_GetLastError(NULL));
	jsConsumerInfo_Destroy(ci);
	admin_publish_command(admin, "stock.reserve", "genuine-1");
	/*
	 * Fetch it with payments' command subject as the reply subject: the
	 * server delivers to that subject, but JetStream stores the message under
	 * its own subject (stock.reserve), so nothing reaches payments' consumer.
	 */
	snprintf(next, sizeof(next), "$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream, durable);
	cr_assert_eq(natsConnection_PublishRequestString(stock->nc, next, theirs,
	                                                 "{\"batch\":1,\"no_wait\":true}"),
	             NATS_OK);
	cr_assert_eq(natsConnection_FlushTimeout(stock->nc, WAIT_MS), NATS_OK);
	usleep(500 * 1000);
	consumer_counts(admin, "payments.charge", &pending, &ack_pending);
	cr_assert_eq(pending + (uint64_t)ack_pending, 0,
	             "a command reached payments' consumer through the stock user");

	/* The check above can see a command arrive: the sagad side may publish one. */
	admin_publish_command(admin, "payments.charge", "genuine-2");
	consumer_counts(admin, "payments.charge", &pending, &ack_pending);
	cr_assert_eq(pending, 1, "payments' consumer does not see a command published by sagad");
}

Test(security, a_participant_cannot_read_another_services_commands)
{
	struct raw *admin = setup_streams("t_sec_read", "payments.charge");
	struct raw *stock = connect_raw(role_url("STOCK"));
	natsSubscription *sub = NULL, *inbox = NULL, *wild = NULL, *spy = NULL, *pull = NULL;
	char theirs[256], all[256], stream[128], durable[128], filter[256], next[300];
	char create[600], body[600];
	natsMsg *m = NULL;
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	jsSubOptions so;
	jsErrCode jerr = 0;
	uint64_t pending;
	int64_t ack_pending;
	int before;

	snprintf(theirs, sizeof(theirs), "%s.cmd.payments.charge", f.prefix);
	snprintf(all, sizeof(all), "%s.cmd.>", f.prefix);
	stream_name(stream, sizeof(stream), "CMD");
	admin_publish_command(admin, "payments.charge", "charge-1");

	/* Listening on the subject, or on every command: refused, and nothing arrives. */
	before = violations(stock);
	cr_assert_eq(natsConnection_SubscribeSync(&sub, stock->nc, theirs), NATS_OK);
	expect_violation(stock, before, "Subscription to", theirs);
	before = violations(stock);
	cr_assert_eq(natsConnection_SubscribeSync(&wild, stock->nc, all), NATS_OK);
	expect_violation(stock, before, "Subscription to", all);
	admin_publish_command(admin, "payments.charge", "charge-2");
	cr_assert_eq(natsSubscription_NextMsg(&m, sub, 500), NATS_TIMEOUT,
	             "the stock user received payments' command");
	cr_assert_eq(natsSubscription_NextMsg(&m, wild, 100), NATS_TIMEOUT,
	             "the stock user received a command on %s", all);

	/* Pulling from payments' consumer, raw or through nats.c's bind: refused. */
	consumer_config(&cc, durable, sizeof(durable), filter, sizeof(filter), "payments.charge");
	snprintf(next, sizeof(next), "$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream, durable);
	cr_assert_eq(natsConnection_SubscribeSync(&inbox, stock->nc, "_INBOX_stock.steal"),
	             NATS_OK);
	before = violations(stock);
	cr_assert_eq(natsConnection_PublishRequestString(stock->nc, next, "_INBOX_stock.steal",
	                                                 "{\"batch\":10,\"expires\":0}"),
	             NATS_OK);
	expect_violation(stock, before, "Publish to", next);
	cr_assert_eq(natsSubscription_NextMsg(&m, inbox, 500), NATS_TIMEOUT,
	             "payments' consumer answered the stock user");
	jsSubOptions_Init(&so);
	so.Stream = stream;
	so.Consumer = durable;
	/* nats.c binds without asking the server; the fetch is where it is refused. */
	if (js_PullSubscribe(&pull, stock->js, theirs, durable, NULL, &so, &jerr) == NATS_OK) {
		natsMsgList list = {0};

		before = violations(stock);
		cr_assert_neq(natsSubscription_Fetch(&list, pull, 10, 500, &jerr), NATS_OK,
		              "the stock user fetched %d of payments' commands", list.Count);
		natsMsgList_Destroy(&list);
		expect_violation(stock, before, "Publish to", next);
	}

	/* Reading the inboxes payments' deliveries go to, or anyone's: refused. */
	before = violations(stock);
	cr_assert_eq(natsConnection_SubscribeSync(&spy, stock->nc, "_INBOX_payments.>"), NATS_OK);
	expect_violation(stock, before, "Subscription to", "_INBOX_payments.>");
	natsSubscription_Destroy(spy);
	spy = NULL;
	before = violations(stock);
	cr_assert_eq(natsConnection_SubscribeSync(&spy, stock->nc, "_INBOX.>"), NATS_OK);
	expect_violation(stock, before, "Subscription to", "_INBOX.>");

	/* A consumer of its own that filters on payments' subject: every way is refused. */
	consumer_config(&cc, durable, sizeof(durable), filter, sizeof(filter), "stock.reserve");
	cc.FilterSubject = theirs;
	before = violations(stock);
	cr_assert_neq(js_AddConsumer(&ci, stock->js, stream, &cc, NULL, &jerr), NATS_OK,
	              "the stock user created a consumer on payments' commands");
	snprintf(create, sizeof(create), "$JS.API.CONSUMER.CREATE.%s.%s.%s", stream, durable,
	         theirs);
	expect_violation(stock, before, "Publish to", create);
	cc.Name = NULL; /* the older API, without the filter in the subject */
	before = violations(stock);
	cr_assert_neq(js_AddConsumer(&ci, stock->js, stream, &cc, NULL, &jerr), NATS_OK,
	              "the stock user created a durable consumer on payments' commands");
	snprintf(create, sizeof(create), "$JS.API.CONSUMER.DURABLE.CREATE.%s.%s", stream, durable);
	expect_violation(stock, before, "Publish to", create);
	/* On the subject it may use, with payments' filter in the body: JetStream says no. */
	snprintf(create, sizeof(create), "$JS.API.CONSUMER.CREATE.%s.%s.%s.cmd.stock.reserve",
	         stream, durable, f.prefix);
	snprintf(body, sizeof(body),
	         "{\"stream_name\":\"%s\",\"config\":{\"name\":\"%s\",\"durable_name\":\"%s\","
	         "\"filter_subject\":\"%s\",\"ack_policy\":\"explicit\"}}",
	         stream, durable, durable, theirs);
	cr_assert_eq(natsConnection_RequestString(&m, stock->nc, create, body, WAIT_MS), NATS_OK,
	             "no answer from JetStream: %s", nats_GetLastError(NULL));
	cr_assert(strstr(natsMsg_GetData(m), "\"error\"") != NULL,
	          "JetStream created a consumer whose filter is not the one in the subject: %s",
	          natsMsg_GetData(m));
	natsMsg_Destroy(m);
	m = NULL;
	jerr = 0;
	cr_assert_neq(js_GetConsumerInfo(&ci, admin->js, stream, durable, NULL, &jerr), NATS_OK,
	              "a consumer %s exists after the refused creations", durable);

	/* Both of payments' commands are still waiting for payments, and nobody took one. */
	consumer_counts(admin, "payments.charge", &pending, &ack_pending);
	cr_assert_eq(pending, 2, "payments' commands were taken from the stream");
	cr_assert_eq(ack_pending, 0, "payments' consumer handed a command to someone");
	natsSubscription_Destroy(sub);
	natsSubscription_Destroy(wild);
	natsSubscription_Destroy(inbox);
	natsSubscription_Destroy(spy);
	natsSubscription_Destroy(pull);
}

/* The order saga with short timeouts: every participant answers at once. */
static const char order_yaml[] = "name: order\n"
                                 "steps:\n"
                                 "  - name: reserve_stock\n"
                                 "    action: stock.reserve\n"
                                 "    compensation: stock.release\n"
                                 "    timeout: 5s\n"
                                 "  - name: charge_card\n"
                                 "    action: payments.charge\n"
                                 "    compensation: payments.refund\n"
                                 "    timeout: 5s\n"
                                 "  - name: ship\n"
                                 "    action: shipping.ship\n"
                                 "    timeout: 5s\n";

/* A business client as sagad's own tools connect: the client user, its own connection name. */
static struct bus *
connect_client(struct config *cfg)
{
	struct bus *b = NULL;
	char err[512];

	cr_assert_eq(config_init(cfg), STATUS_OK);
	cr_assert_eq(config_set(cfg, "nats_url", role_url("CLIENT"), err, sizeof(err)), STATUS_OK);
	cr_assert_eq(config_set(cfg, "nats_name", "security-client", err, sizeof(err)), STATUS_OK);
	cr_assert_eq(config_set(cfg, "subject_prefix", f.prefix, err, sizeof(err)), STATUS_OK);
	cr_assert_eq(config_set(cfg, "stream_prefix", f.stream, err, sizeof(err)), STATUS_OK);
	cr_assert_eq(bus_connect(&b, cfg, err, sizeof(err)), STATUS_OK, "%s", err);
	return b;
}

/* Register the order saga over NATS (saga.define) as the client. */
static void
client_define(struct bus *client)
{
	struct saga_def def;
	struct define_answer da;
	struct bytes body = {0};
	struct bus_msg *reply = NULL;
	char subject[256], err[512];

	cr_assert_eq(definition_parse_yaml(&def, order_yaml, strlen(order_yaml), err, sizeof(err)),
	             STATUS_OK, "%s", err);
	cr_assert_eq(codec_encode_define_request(&def, &body), STATUS_OK);
	snprintf(subject, sizeof(subject), "%s.define", f.prefix);
	cr_assert_eq(bus_request(client, subject, NULL, 0, body.data, body.len, 10000, &reply, err,
	                         sizeof(err)),
	             STATUS_OK, "define as the client: %s", err);
	free(body.data);
	cr_assert_eq(codec_decode_define_answer(bus_msg_data(reply), bus_msg_len(reply), &da, err,
	                                        sizeof(err)),
	             STATUS_OK, "%s", err);
	bus_msg_free(reply);
	cr_assert_eq(da.status, 1, "define: %s %s", da.field, da.error);
}

/* Start one saga over request/reply as the client; it must be accepted. */
static void
client_start(struct bus *client, int i)
{
	struct start_answer a;
	struct bytes req = {0};
	struct bus_msg *reply = NULL;
	char subject[256], input[64], key[32], err[512];

	snprintf(input, sizeof(input), "{\"order\":%d}", i);
	snprintf(key, sizeof(key), "sec-%d", i);
	cr_assert_eq(codec_encode_start_request("order", 0,
	                                        (struct bytes){(uint8_t *)input, strlen(input)},
	                                        key, NULL, &req),
	             STATUS_OK);
	snprintf(subject, sizeof(subject), "%s.start.order", f.prefix);
	cr_assert_eq(bus_request(client, subject, NULL, 0, req.data, req.len, 10000, &reply, err,
	                         sizeof(err)),
	             STATUS_OK, "start as the client: %s", err);
	cr_assert_eq(codec_decode_start_answer(bus_msg_data(reply), bus_msg_len(reply), &a, err,
	                                       sizeof(err)),
	             STATUS_OK, "%s", err);
	bus_msg_free(reply);
	free(req.data);
	cr_assert_eq(a.status, START_ACCEPTED, "start %d: %s", i, a.reason);
}

/* Publish a buffered start on <prefix>.submit.order (JetStream) as the client. */
static void
client_submit(struct bus *client, int i)
{
	struct bytes req = {0};
	char subject[256], input[64], key[32], err[512];
	int failed = 0;

	snprintf(input, sizeof(input), "{\"order\":%d}", i);
	snprintf(key, sizeof(key), "sec-%d", i);
	cr_assert_eq(codec_encode_start_request("order", 0,
	                                        (struct bytes){(uint8_t *)input, strlen(input)},
	                                        key, NULL, &req),
	             STATUS_OK);
	snprintf(subject, sizeof(subject), "%s.submit.order", f.prefix);
	cr_assert_eq(bus_publish_async(client, subject, key, NULL, 0, req.data, req.len, err,
	                               sizeof(err)),
	             STATUS_OK, "%s", err);
	cr_assert_eq(bus_publish_wait(client, 10000, &failed, err, sizeof(err)), STATUS_OK,
	             "submit as the client: %s", err);
	cr_assert_eq(failed, 0, "%s", err);
	free(req.data);
}

/*
 * The user every live connection named name is authenticated as, from the
 * server's /connz; fails unless there is at least one and all agree.
 */
static void
expect_connections_as(const char *name, const char *user)
{
	static char body[1 << 20];
	const char *port = getenv("SAGAD_TEST_NATS_MONITOR_PORT");
	json_error_t jerr;
	json_t *root, *list, *c;
	size_t i;
	int seen = 0;

	cr_assert_not_null(port, "SAGAD_TEST_NATS_MONITOR_PORT is not set (scripts/services.sh)");
	cr_assert_eq(servers_http_get(atoi(port), "/connz?auth=1&limit=4096", body, sizeof(body)),
	             200);
	root = json_loads(body, 0, &jerr);
	cr_assert_not_null(root, "/connz: %s", jerr.text);
	list = json_object_get(root, "connections");
	json_array_foreach(list, i, c)
	{
		const char *n = json_string_value(json_object_get(c, "name"));
		const char *u = json_string_value(json_object_get(c, "authorized_user"));

		if (n == NULL || strcmp(n, name) != 0)
			continue;
		seen++;
		cr_expect_str_eq(u != NULL ? u : "(none)", user,
		                 "connection \"%s\" is authenticated as %s, not %s", name,
		                 u != NULL ? u : "(none)", user);
	}
	json_decref(root);
	cr_assert_gt(seen, 0, "no connection named \"%s\" in /connz", name);
}

Test(security, every_process_on_its_own_user_runs_sagas_end_to_end)
{
	static char log[1 << 16];
	struct config client_cfg;
	struct bus *client;
	const char *service_url = harness_database_url_as("SERVICE");
	PQconninfoOption *opts;
	char service_user[64] = "", sql[256];
	int n = 0;

	cr_assert_not_null(service_url, "SAGAD_DATABASE_URL_SERVICE is not set: run through "
	                                "scripts/services.sh, which creates the login");
	opts = PQconninfoParse(service_url, NULL);
	cr_assert_not_null(opts);
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
		if (strcmp(o->keyword, "user") == 0 && o->val != NULL)
			snprintf(service_user, sizeof(service_user), "%s", o->val);
	}
	PQconninfoFree(opts);
	cr_assert_neq(service_user[0], '\0');

	/*
	 * Migrations and streams as in every suite (owner login; sagad check as
	 * the sagad user); then sagad on the sagad_service login and the sagad
	 * NATS user, each participant on its own user, the client on its own.
	 */
	flow_setup(&f, "t_sec_e2e");
	flow_used = 1;
	flow_start_sagad(&f, NULL);
	client = connect_client(&client_cfg);
	client_define(client);
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	for (; n < 20; n++)
		client_start(client, n);
	for (; n < 25; n++)
		client_submit(client, n);
	if (!flow_wait_settled(&f, n, 60000)) {
		flow_dump_logs(&f);
		cr_assert_fail("the sagas did not finish");
	}
	cr_assert_eq(
	        flow_sql_long(&f, "SELECT count(*) FROM saga_instance WHERE state = 'completed'"),
	        n, "every saga completes: %s",
	        flow_sql(&f, "SELECT string_agg(state || ' ' || c, ', ') FROM (SELECT state,"
	                     " count(*) c FROM saga_instance GROUP BY state) s"));
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"), 3L * n);

	/* Who was connected as whom. */
	expect_connections_as("sagad", "sagad");
	expect_connections_as("stock", "stock");
	expect_connections_as("payments", "payments");
	expect_connections_as("shipping", "shipping");
	expect_connections_as("security-client", "client");
	snprintf(sql, sizeof(sql),
	         "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity"
	         " WHERE application_name = 'sagad' AND datname = current_database()");
	cr_assert_str_eq(harness_sql(NULL, sql), service_user,
	                 "sagad's PostgreSQL sessions are not the %s login", service_user);

	/* And no process was refused anything on the way (bus.c and the participants log it). */
	for (int i = 0; i < f.n_procs; i++) {
		harness_read_file(f.logs[i], log, sizeof(log));
		cr_assert(strstr(log, "NATS refused") == NULL, "%s was refused an operation:\n%s",
		          f.logs[i], log);
	}
	bus_close(client);
	config_free(&client_cfg);
}

/* A libpq connection with url's parameters but password replaced (NULL: as given). */
static PGconn *
connect_with_password(const char *url, const char *password)
{
	const char *keys[40], *vals[40];
	PQconninfoOption *opts = PQconninfoParse(url, NULL);
	PGconn *conn;
	int n = 0;

	cr_assert_not_null(opts);
	for (PQconninfoOption *o = opts; o->keyword != NULL && n < 37; o++) {
		if (o->val == NULL || o->val[0] == '\0' ||
		    (password != NULL && strcmp(o->keyword, "password") == 0))
			continue;
		keys[n] = o->keyword;
		vals[n++] = o->val;
	}
	if (password != NULL) {
		keys[n] = "password";
		vals[n++] = password;
	}
	keys[n] = NULL;
	vals[n] = NULL;
	conn = PQconnectdbParams(keys, vals, 0);
	PQconninfoFree(opts);
	return conn;
}

Test(security, sagads_login_has_only_the_service_role_and_tcp_needs_scram)
{
	const char *service_url = harness_database_url_as("SERVICE");
	PGconn *conn;
	PGresult *res;
	char sql[512], user[64];

	cr_assert_not_null(service_url, "SAGAD_DATABASE_URL_SERVICE is not set: run through "
	                                "scripts/services.sh, which creates the login");
	flow_setup(&f, "t_sec_pg");
	flow_used = 1;
	conn = connect_with_password(service_url, NULL);
	cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
	snprintf(user, sizeof(user), "%s", PQuser(conn));

	/* The login: no attribute beyond LOGIN, member of sagad_service and nothing else. */
	snprintf(sql, sizeof(sql),
	         "SELECT concat_ws(',', rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
	         " rolbypassrls) FROM pg_roles WHERE rolname = '%s'",
	         user);
	cr_assert_str_eq(harness_sql(NULL, sql), "f,f,f,f,f");
	snprintf(sql, sizeof(sql),
	         "SELECT string_agg(g.rolname, ',') FROM pg_auth_members m"
	         " JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
	         " WHERE u.rolname = '%s'",
	         user);
	cr_assert_str_eq(harness_sql(NULL, sql), "sagad_service");
	/*
	 * No DDL in the schema sagad works in (the full list of what the role may
	 * and may not do is operator_views' the_service_writes_sagas_but_...).
	 */
	snprintf(sql, sizeof(sql), "CREATE TABLE %s.intruder (x int)", f.schema);
	res = PQexec(conn, sql);
	cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "the service login ran DDL");
	cr_assert(strstr(PQresultErrorMessage(res), "permission denied for schema") != NULL, "%s",
	          PQresultErrorMessage(res));
	PQclear(res);
	PQfinish(conn);

	/* scram-sha-256: stored verifiers, TCP rules, and a wrong password is refused. */
	cr_assert_str_eq(harness_sql(NULL, "SHOW password_encryption"), "scram-sha-256");
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM pg_authid WHERE rolname = '%s'"
	         " AND rolpassword LIKE 'SCRAM-SHA-256$%%'",
	         user);
	cr_assert_str_eq(harness_sql(NULL, sql), "1", "%s has no SCRAM-SHA-256 verifier", user);
	cr_assert_neq(strtol(harness_sql(NULL, "SELECT count(*) FROM pg_hba_file_rules"
	                                       " WHERE type = 'host'"),
	                     NULL, 10),
	              0);
	cr_assert_str_eq(harness_sql(NULL, "SELECT count(*) FROM pg_hba_file_rules"
	                                   " WHERE type LIKE 'host%' AND auth_method <> "
	                                   "'scram-sha-256'"),
	                 "0", "a TCP rule in pg_hba.conf does not ask for scram-sha-256");
	conn = connect_with_password(service_url, "not-the-password");
	cr_assert_neq(PQstatus(conn), CONNECTION_OK, "a wrong password was accepted over TCP");
	cr_assert(strstr(PQerrorMessage(conn), "password authentication failed") != NULL, "%s",
	          PQerrorMessage(conn));
	PQfinish(conn);
}

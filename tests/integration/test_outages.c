/*
 * Outage tests: the outage rows of RELIABILITY.md's fault matrix. A few
 * hundred sagas are started by a client thread while the main thread breaks
 * something (nats-server stopped or killed, PostgreSQL stopped immediately,
 * participants paused, one of two sagad killed, one node of a NATS cluster
 * killed, sagad's clock jumped); then every accepted saga must end and the
 * invariant checker must find nothing. Faults that would disturb other tests
 * run against private servers (servers.c).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flow.h"
#include "harness.h"
#include "servers.h"

#define N_SAGAS     300    /* per test */
#define START_RATE  100    /* starts per second from the client thread */
#define SETTLE_MS   90000  /* every saga ends within this after the load */
#define GIVE_UP_MS  90000  /* a start never accepted for this long fails the test */
#define LOAD_MS     100000 /* the whole load must be accepted within this */
#define OUTAGE_MS   3000   /* how long a server stays down */
#define HANG_MS     4000   /* how long nats-server hangs before it is killed */
#define FAULT_AFTER 100    /* accepted starts before the fault */

/*
 * The order saga, tuned for outages: an attempt times out after 3 s (a
 * command or reply lost with a server is re-sent), and the retry budget
 * outlasts any outage here, so every saga must complete.
 */
static const char order_yaml[] = "name: order\n"
                                 "steps:\n"
                                 "  - name: reserve_stock\n"
                                 "    action: stock.reserve\n"
                                 "    compensation: stock.release\n"
                                 "    timeout: 3s\n"
                                 "    retry: {max_attempts: 30, initial_backoff: 100ms,"
                                 " max_backoff: 1s}\n"
                                 "  - name: charge_card\n"
                                 "    action: payments.charge\n"
                                 "    compensation: payments.refund\n"
                                 "    timeout: 3s\n"
                                 "    retry: {max_attempts: 30, initial_backoff: 100ms,"
                                 " max_backoff: 1s}\n"
                                 "  - name: ship\n"
                                 "    action: shipping.ship\n"
                                 "    timeout: 3s\n"
                                 "    retry: {max_attempts: 30, initial_backoff: 100ms,"
                                 " max_backoff: 1s}\n";

/* The client thread: starts sagas at a steady rate, retrying each key until it is accepted. */
struct loader {
	pthread_t thread;    /* the client thread */
	int running;         /* thread not joined yet */
	int n;               /* sagas to start */
	int rate;            /* starts per second */
	atomic_int accepted; /* starts answered accepted or duplicate so far */
	atomic_int retried;  /* requests that failed or were refused, then retried */
	atomic_int stop;     /* set by the main thread to give up early */
	atomic_int done;     /* set by the thread when it returns */
	int failed_at;       /* key never accepted within GIVE_UP_MS, or -1 */
	int last_reject;     /* reject reason of the last refused start */
	enum status last_st; /* status of the last failed request */
	int64_t took_ms;     /* wall time of the whole load */
	int64_t longest_ms;  /* longest time one start took to be accepted */
};

static struct flow f;
static struct loader load;
static char ids[N_SAGAS][SAGA_ID_LEN + 1];
static struct nats_server nats;
static struct nats_server cluster[SERVERS_CLUSTER_SIZE];
static struct pg_server pg;
static char clock_file[200]; /* libfaketime's offset file, removed at the end */

static void
teardown(void)
{
	atomic_store(&load.stop, 1);
	if (load.running)
		pthread_join(load.thread, NULL);
	load.running = 0;
	if (clock_file[0] != '\0')
		unlink(clock_file);
	/* Children first (they exit 0 on SIGTERM while the servers still run), then the servers. */
	flow_teardown(&f);
	servers_cleanup();
}

TestSuite(outages, .fini = teardown, .timeout = 300);

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* A careful client: on no answer or "unavailable" it retries the same idempotency key. */
static void *
load_run(void *arg)
{
	struct loader *l = arg;
	int64_t began = mono_ms();

	for (int i = 0; i < l->n && !atomic_load(&l->stop); i++) {
		int64_t due = began + (int64_t)i * 1000 / l->rate;
		int64_t first = mono_ms();
		char key[32];

		if (due > first)
			sleep_ms((int)(due - first));
		first = mono_ms();
		snprintf(key, sizeof(key), "order-%d", i);
		for (;;) {
			struct start_answer a;
			enum status st = flow_start_saga(&f, "order", "{}", key, &a);

			if (st == STATUS_OK &&
			    (a.status == START_ACCEPTED || a.status == START_DUPLICATE)) {
				snprintf(ids[i], sizeof(ids[i]), "%s", a.saga_id);
				break;
			}
			if (st == STATUS_OK)
				l->last_reject = (int)a.reject;
			else
				l->last_st = st;
			atomic_fetch_add(&l->retried, 1);
			if (atomic_load(&l->stop) || mono_ms() - first > GIVE_UP_MS) {
				l->failed_at = i;
				l->took_ms = mono_ms() - began;
				atomic_store(&l->done, 1);
				return NULL;
			}
			sleep_ms(100);
		}
		if (mono_ms() - first > l->longest_ms)
			l->longest_ms = mono_ms() - first;
		atomic_fetch_add(&l->accepted, 1);
	}
	l->took_ms = mono_ms() - began;
	atomic_store(&l->done, 1);
	return NULL;
}

static void
load_start(int n, int rate)
{
	memset(ids, 0, sizeof(ids));
	load.n = n;
	load.rate = rate;
	load.failed_at = -1;
	atomic_store(&load.accepted, 0);
	atomic_store(&load.retried, 0);
	atomic_store(&load.stop, 0);
	atomic_store(&load.done, 0);
	cr_assert_eq(pthread_create(&load.thread, NULL, load_run, &load), 0);
	load.running = 1;
}

/* Wait until k starts were accepted (the fault then hits sagas in flight). */
static void
load_wait_accepted(int k)
{
	for (int waited = 0; atomic_load(&load.accepted) < k; waited += 20) {
		if (waited > GIVE_UP_MS) {
			flow_dump_logs(&f);
			cr_assert_fail("only %d of %d starts accepted before the fault",
			               atomic_load(&load.accepted), k);
		}
		sleep_ms(20);
	}
}

static void
load_join(void)
{
	for (int waited = 0; !atomic_load(&load.done) && waited < LOAD_MS; waited += 100)
		sleep_ms(100);
	if (!atomic_load(&load.done)) {
		int accepted = atomic_load(&load.accepted);

		atomic_store(&load.stop, 1);
		pthread_join(load.thread, NULL);
		load.running = 0;
		flow_dump_logs(&f);
		cr_assert_fail("the load did not finish in %d s: %d of %d starts accepted, the"
		               " slowest in %lld ms; %ld outbox rows now",
		               LOAD_MS / 1000, accepted, load.n, (long long)load.longest_ms,
		               flow_sql_long(&f, "SELECT count(*) FROM saga_outbox"));
	}
	pthread_join(load.thread, NULL);
	load.running = 0;
	if (load.failed_at >= 0)
		flow_dump_logs(&f);
	cr_assert_eq(load.failed_at, -1,
	             "start order-%d was never accepted in %d s (last status %s, last reject %d)",
	             load.failed_at, GIVE_UP_MS / 1000, status_name(load.last_st),
	             load.last_reject);
	cr_log_info("%d starts accepted in %lld ms (%d retried requests, slowest start %lld ms)",
	            atomic_load(&load.accepted), (long long)load.took_ms,
	            atomic_load(&load.retried), (long long)load.longest_ms);
}

/* Every accepted saga ends; expected_state is the end every saga must reach. */
static void
settle(int n, const char *expected_state)
{
	char sql[160];
	int64_t began = mono_ms();

	if (!flow_wait_settled(&f, n, SETTLE_MS)) {
		char states[512];
		long outbox = flow_sql_long(&f, "SELECT count(*) FROM saga_outbox");

		snprintf(states, sizeof(states), "%s",
		         flow_sql(&f, "SELECT string_agg(state || ' ' || n, ', ') FROM"
		                      " (SELECT state, count(*) n FROM saga_instance"
		                      " GROUP BY state) s"));
		flow_dump_logs(&f);
		cr_assert_fail("sagas still active %d s after the load: %s (outbox rows: %ld)",
		               SETTLE_MS / 1000, states, outbox);
	}
	cr_log_info("settled %lld ms after the load", (long long)(mono_ms() - began));
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_instance"), n,
	             "one saga per idempotency key");
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM saga_instance WHERE state = '%s'",
	         expected_state);
	cr_assert_eq(flow_sql_long(&f, sql), n, "sagas per state: %s",
	             flow_sql(&f, "SELECT string_agg(state || ' ' || n, ', ') FROM (SELECT state,"
	                          " count(*) n FROM saga_instance GROUP BY state) s"));
}

/* Each of the three steps of every saga had exactly one side effect. */
static void
assert_one_effect_per_step(int n)
{
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) - count(DISTINCT idempotency_key)"
	                               " FROM participant_effects"),
	             0, "duplicate side effects");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM participant_effects"), 3L * n,
	             "side effects: expected one per step of each saga");
}

/* Durable consumers that take from the command stream (the example participants'). */
static const char *const cmd_consumers[] = {"p_stock_reserve", "p_stock_release",
                                            "p_payments_charge", "p_payments_refund",
                                            "p_shipping_ship"};

/* A number field of a JSON text ("name":N), or -1. */
static long
json_long(const char *json, const char *name)
{
	char key[64];
	const char *p;

	snprintf(key, sizeof(key), "\"%s\":", name);
	p = strstr(json, key);
	return p != NULL ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* Messages a participant's consumer has still to deliver or to see acked (JetStream API). */
static long
cmd_consumer_backlog(const char *durable, char *why, size_t whylen)
{
	char stream[96], subject[256], err[512];
	struct bus_msg *reply = NULL;
	char *json;
	long pending, ack_pending;

	bus_stream_name(f.bus, BUS_STREAM_CMD, stream, sizeof(stream));
	snprintf(subject, sizeof(subject), "$JS.API.CONSUMER.INFO.%s.%s", stream, durable);
	if (bus_request(f.bus, subject, NULL, 0, NULL, 0, 5000, &reply, err, sizeof(err)) !=
	    STATUS_OK) {
		snprintf(why, whylen, "%s: %s", durable, err);
		return 1;
	}
	json = strndup((const char *)bus_msg_data(reply), bus_msg_len(reply));
	bus_msg_free(reply);
	cr_assert_not_null(json);
	pending = json_long(json, "num_pending");
	ack_pending = json_long(json, "num_ack_pending");
	snprintf(why, whylen, "%s: %ld pending, %ld ack pending", durable, pending, ack_pending);
	free(json);
	return pending < 0 || ack_pending < 0 ? 1 : pending + ack_pending;
}

/*
 * The backlog drains: no consumer has anything left to deliver or to see
 * acked, and the work-queue streams are empty. With orphans_allowed, acked
 * messages a killed nats-server 2.9 kept in a work queue are only reported:
 * no consumer will ever deliver them (fixed in nats-server 2.10, PR #5227).
 */
static void
assert_backlog_drains(int timeout_ms, int orphans_allowed)
{
	struct bus_stream_stats cmd = {0}, reply = {0};
	struct bus_consumer_stats replies = {0};
	char why[512] = "";
	char err[512];

	for (int waited = 0;; waited += 200) {
		long backlog = 0;

		cr_assert_eq(bus_stream_stats(f.bus, BUS_STREAM_CMD, &cmd, err, sizeof(err)),
		             STATUS_OK, "%s", err);
		cr_assert_eq(bus_stream_stats(f.bus, BUS_STREAM_REPLY, &reply, err, sizeof(err)),
		             STATUS_OK, "%s", err);
		cr_assert_eq(
		        bus_consumer_stats(f.bus, BUS_STREAM_REPLY, &replies, err, sizeof(err)),
		        STATUS_OK, "%s", err);
		if (replies.num_pending + replies.num_ack_pending > 0) {
			snprintf(why, sizeof(why), "sagad_replies: %llu pending, %llu ack pending",
			         (unsigned long long)replies.num_pending,
			         (unsigned long long)replies.num_ack_pending);
			backlog = 1;
		}
		for (size_t i = 0;
		     backlog == 0 && i < sizeof(cmd_consumers) / sizeof(cmd_consumers[0]); i++)
			backlog = cmd_consumer_backlog(cmd_consumers[i], why, sizeof(why));
		if (backlog == 0 && (orphans_allowed || (cmd.msgs == 0 && reply.msgs == 0))) {
			if (cmd.msgs + reply.msgs > 0)
				cr_log_info(
				        "consumers drained; the killed nats-server left %llu"
				        " commands and %llu replies orphaned in its work queues",
				        (unsigned long long)cmd.msgs,
				        (unsigned long long)reply.msgs);
			return;
		}
		if (waited >= timeout_ms)
			break;
		sleep_ms(200);
	}
	flow_dump_logs(&f);
	if (nats.pid > 0) {
		static char jsz[1 << 18];

		servers_http_get(nats.monitor_port, "/jsz?consumers=true", jsz, sizeof(jsz));
		fprintf(stderr, "---- /jsz of the private nats-server\n%s\n", jsz);
	}
	cr_assert_fail("backlog left after %d s: %llu commands and %llu replies in the streams; %s",
	               timeout_ms / 1000, (unsigned long long)cmd.msgs,
	               (unsigned long long)reply.msgs, why[0] != '\0' ? why : "consumers drained");
}

static void
start_order_services(const char *const *sagad_env, const char *const *participant_args)
{
	flow_define(&f, order_yaml);
	flow_start_sagad(&f, sagad_env);
	flow_start_participant(&f, "stock", participant_args);
	flow_start_participant(&f, "payments", participant_args);
	flow_start_participant(&f, "shipping", participant_args);
}

/* ---- nats-server stopped / killed ---- */

/*
 * Lost with a server: acks of replies sagad had applied, and commands in a
 * participant's hands. Both come back after the ack wait: 5 s here, not 30 s.
 */
static const char *const quick_sagad[] = {"SAGAD_CONSUMER_ACK_WAIT=5s", NULL};
static const char *const quick_participant[] = {"--ack-wait-ms=5000", NULL};

static void
nats_outage(const char *tag, int sig)
{
	int status;
	int64_t down;

	servers_nats_start(&nats, tag);
	harness_use_private_nats(nats.url);
	flow_setup(&f, tag);
	start_order_services(quick_sagad, quick_participant);

	load_start(N_SAGAS, START_RATE);
	load_wait_accepted(FAULT_AFTER);
	down = mono_ms();
	if (sig == SIGKILL) {
		/*
		 * Hung first, then killed (as by a watchdog): longer than a step
		 * timeout, so re-sent commands are published meanwhile and are in
		 * flight, never acked, when the process dies.
		 */
		kill(nats.pid, SIGSTOP);
		sleep_ms(HANG_MS);
	}
	status = servers_nats_stop(&nats, sig);
	cr_log_info("nats-server %s after %d starts: wait status %#x",
	            sig == SIGKILL ? "hung 4 s, then killed" : "stopped",
	            atomic_load(&load.accepted), (unsigned)status);
	sleep_ms(OUTAGE_MS);
	servers_nats_restart(&nats);
	cr_log_info("nats-server back on port %d after %lld ms", nats.port,
	            (long long)(mono_ms() - down));
	load_join();
	settle(N_SAGAS, "completed");
	assert_one_effect_per_step(N_SAGAS);
	assert_backlog_drains(30000, sig == SIGKILL);
	flow_assert_invariants(&f, ids, N_SAGAS);
}

Test(outages, nats_server_stopped_under_load_then_restarted_loses_nothing)
{
	nats_outage("t_natsterm", SIGTERM);
}

Test(outages, nats_server_killed_under_load_then_restarted_loses_nothing)
{
	nats_outage("t_natskill", SIGKILL);
}

/* ---- PostgreSQL stopped immediately ---- */

Test(outages, postgres_stopped_immediately_under_load_then_restarted_loses_nothing)
{
	int64_t down;

	servers_pg_start(&pg, "t_pgdown");
	harness_use_private_database(pg.url);
	flow_setup(&f, "t_pgdown");
	/* sagad keeps the default 30 s ack wait: see the backlog check below. */
	start_order_services(NULL, quick_participant);

	load_start(N_SAGAS, START_RATE);
	load_wait_accepted(FAULT_AFTER);
	down = mono_ms();
	servers_pg_stop_immediate(&pg);
	cr_log_info("PostgreSQL stopped (immediate) after %d starts", atomic_load(&load.accepted));
	sleep_ms(OUTAGE_MS);
	servers_pg_restart(&pg);
	cr_log_info("PostgreSQL back after %lld ms", (long long)(mono_ms() - down));
	load_join();
	settle(N_SAGAS, "completed");
	assert_one_effect_per_step(N_SAGAS);
	/*
	 * NATS never went away: a reply whose batch failed with the database is
	 * nak'ed and comes back at once. Drained well before sagad's 30 s ack
	 * wait, or a reply was left in sagad's hands, neither acked nor nak'ed.
	 */
	assert_backlog_drains(20000, 0);
	flow_assert_invariants(&f, ids, N_SAGAS);
}

/* ---- participants paused ---- */

Test(outages, participants_paused_past_their_timeout_drain_the_backlog_without_duplicates)
{
	static const char yaml[] = "name: order\n"
	                           "steps:\n"
	                           "  - name: reserve_stock\n"
	                           "    action: stock.reserve\n"
	                           "    compensation: stock.release\n"
	                           "    timeout: 1s\n"
	                           "    retry: {max_attempts: 30, initial_backoff: 100ms,"
	                           " max_backoff: 500ms}\n"
	                           "  - name: charge_card\n"
	                           "    action: payments.charge\n"
	                           "    compensation: payments.refund\n"
	                           "    timeout: 1s\n"
	                           "    retry: {max_attempts: 30, initial_backoff: 100ms,"
	                           " max_backoff: 500ms}\n"
	                           "  - name: ship\n"
	                           "    action: shipping.ship\n"
	                           "    timeout: 1s\n"
	                           "    retry: {max_attempts: 30, initial_backoff: 100ms,"
	                           " max_backoff: 500ms}\n";
	int parts[3];
	long timeouts, early;

	flow_setup(&f, "t_paused");
	flow_define(&f, yaml);
	flow_start_sagad(&f, NULL);
	parts[0] = flow_start_participant(&f, "stock", NULL);
	parts[1] = flow_start_participant(&f, "payments", NULL);
	parts[2] = flow_start_participant(&f, "shipping", NULL);

	load_start(200, START_RATE);
	load_wait_accepted(60);
	for (int i = 0; i < 3; i++)
		flow_signal(&f, parts[i], SIGSTOP);
	sleep_ms(5000); /* five step timeouts */
	for (int i = 0; i < 3; i++)
		flow_signal(&f, parts[i], SIGCONT);
	load_join();
	settle(200, "completed");
	assert_one_effect_per_step(200);
	assert_backlog_drains(30000, 0);

	timeouts = flow_sql_long(&f, "SELECT count(*) FROM saga_transition"
	                             " WHERE event = 'timeout' AND outcome = 'applied'");
	cr_log_info("%ld attempts timed out while the participants were paused", timeouts);
	cr_assert_gt(timeouts, 0, "no step timed out during a 5 s pause with 1 s timeouts");
	cr_assert_gt(flow_sql_long(&f, "SELECT count(*) FROM saga_step WHERE attempt > 1"), 0,
	             "timed-out attempts were re-sent");
	/*
	 * As configured: no attempt timed out less than 1 s after it was sent. An
	 * attempt is sent by the last applied start, reply or retry before its
	 * timeout (stale and duplicate replies are recorded but change nothing).
	 */
	early = flow_sql_long(&f,
	                      "SELECT count(*) FROM saga_transition t"
	                      " WHERE t.event = 'timeout' AND t.outcome = 'applied'"
	                      "   AND t.at - (SELECT max(d.at) FROM saga_transition d"
	                      "                WHERE d.saga_id = t.saga_id AND d.seq < t.seq"
	                      "                  AND d.outcome = 'applied'"
	                      "                  AND d.event IN ('start', 'reply', 'retry_due'))"
	                      "       < interval '990 milliseconds'");
	cr_assert_eq(early, 0, "%ld attempts timed out before their 1 s timeout", early);
	flow_assert_invariants(&f, ids, 200);
}

/* ---- two sagad, one killed ---- */

Test(outages, two_sagad_one_killed_mid_run_every_saga_ends_once)
{
	/* Replies the killed sagad fetched but never acked come back after 3 s, not 30 s. */
	const char *const env[] = {"SAGAD_CONSUMER_ACK_WAIT=3s", NULL};
	const char *const slow[] = {"--latency-ms=2", NULL};
	int first, second;

	flow_setup(&f, "t_twosagad");
	flow_define(&f, order_yaml);
	first = flow_start_sagad(&f, env);
	second = flow_start_sagad(&f, env);
	flow_start_participant(&f, "stock", slow);
	flow_start_participant(&f, "payments", slow);
	flow_start_participant(&f, "shipping", slow);

	load_start(N_SAGAS, START_RATE);
	load_wait_accepted(120);
	flow_signal(&f, first, SIGKILL);
	cr_log_info("first sagad killed after %d starts", atomic_load(&load.accepted));
	load_join();
	settle(N_SAGAS, "completed");
	cr_assert_eq(harness_wait(f.procs[second], 0), -1, "the second sagad died too");
	assert_one_effect_per_step(N_SAGAS);
	assert_backlog_drains(30000, 0);
	flow_assert_invariants(&f, ids, N_SAGAS);
}

/* ---- a three-node NATS cluster loses a node ---- */

Test(outages, nats_cluster_node_killed_under_load_loses_nothing)
{
	char urls[256];
	char state[4096];
	char starts[160];
	int elected_ms, leader, victim;

	elected_ms = servers_nats_cluster_start(cluster, "t_cluster", urls, sizeof(urls), 30000);
	servers_nats_describe(cluster, SERVERS_CLUSTER_SIZE, state, sizeof(state));
	cr_assert_geq(elected_ms, 0, "no JetStream meta leader within 30 s:\n%s", state);
	cr_log_info("three-node cluster healthy, meta leader elected in %d ms", elected_ms);
	harness_use_private_nats(urls);
	cr_assert_eq(setenv("SAGAD_STREAM_REPLICAS", "3", 1), 0);
	flow_setup(&f, "t_cluster");
	start_order_services(quick_sagad, quick_participant);

	load_start(N_SAGAS, START_RATE);
	load_wait_accepted(FAULT_AFTER);
	/* The node sagad is connected to: its client fails over while the streams re-elect. */
	snprintf(starts, sizeof(starts), "%s.start.*", f.prefix);
	victim = servers_nats_find_subscriber(cluster, SERVERS_CLUSTER_SIZE, starts);
	leader = servers_nats_meta_leader(cluster, SERVERS_CLUSTER_SIZE);
	if (victim < 0)
		victim = leader >= 0 ? leader : 0;
	servers_nats_stop(&cluster[victim], SIGKILL);
	cr_log_info("killed %s (sagad's node%s) after %d starts", cluster[victim].name,
	            victim == leader ? ", the meta leader" : "", atomic_load(&load.accepted));
	load_join();
	settle(N_SAGAS, "completed");
	assert_one_effect_per_step(N_SAGAS);
	assert_backlog_drains(30000, 1);
	flow_assert_invariants(&f, ids, N_SAGAS);
	servers_nats_describe(cluster, SERVERS_CLUSTER_SIZE, state, sizeof(state));
	cr_log_info("after the run:\n%s", state);
}

/* ---- sagad's clock jumps ---- */

/* One clock jump: the offset libfaketime applies to sagad's wall clock mid-run. */
struct jump {
	char offset[8]; /* libfaketime offset, "+1h" / "-1h" */
	long seconds;   /* the same in seconds */
};

ParameterizedTestParameters(outages, sagad_clock_jump_causes_no_early_timeouts)
{
	static struct jump jumps[] = {{"+1h", 3600}, {"-1h", -3600}};

	return cr_make_param_array(struct jump, jumps, sizeof(jumps) / sizeof(jumps[0]));
}

static const char *
faketime_library(void)
{
	static const char *const candidates[] = {
	        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
	        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
	        "/usr/lib/faketime/libfaketime.so.1",
	};

	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		if (access(candidates[i], R_OK) == 0)
			return candidates[i];
	}
	cr_assert_fail("libfaketime not found: run scripts/install-deps.sh (package faketime)");
	return NULL;
}

/* Seconds sagad's clock is ahead of ours, from the Date header of its HTTP answers. */
static long
sagad_clock_offset(int port)
{
	char out[8192];
	const char *date;
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	cr_assert_eq(flow_http(port, "GET", "/healthz", NULL, NULL, out, sizeof(out)), 200);
	date = strstr(out, "Date: ");
	cr_assert_not_null(date, "no Date header from sagad: %s", out);
	cr_assert_not_null(strptime(date + 6, "%a, %d %b %Y %H:%M:%S GMT", &tm), "%s", date);
	return (long)(timegm(&tm) - time(NULL));
}

static void
write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	cr_assert_not_null(fp, "%s", path);
	fputs(text, fp);
	fclose(fp);
}

ParameterizedTest(struct jump *j, outages, sagad_clock_jump_causes_no_early_timeouts)
{
	/* Short timeouts and a saga deadline: either computed from sagad's clock would fire early. */
	static const char yaml[] = "name: order\n"
	                           "deadline: 2m\n"
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
	char preload[256], file_env[256], asan[1024];
	const char *asan_now = getenv("ASAN_OPTIONS");
	const char *env[] = {preload, file_env,
	                     /* re-read the offset every second: the jump happens mid-run */
	                     "FAKETIME_CACHE_DURATION=1",
	                     /* like an NTP step: the wall clock jumps, CLOCK_MONOTONIC does not */
	                     "FAKETIME_DONT_FAKE_MONOTONIC=1", asan, NULL};
	int sagad, port;
	long before, after;

	flow_setup(&f, j->seconds > 0 ? "t_clockfwd" : "t_clockback");
	snprintf(clock_file, sizeof(clock_file), "/tmp/%s_faketime", f.schema);
	write_text(clock_file, "+0\n");
	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", faketime_library());
	snprintf(file_env, sizeof(file_env), "FAKETIME_TIMESTAMP_FILE=%s", clock_file);
	/* A sanitizer runtime insists on coming first; libfaketime is preloaded before it. */
	snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
	         asan_now != NULL ? asan_now : "", asan_now != NULL && asan_now[0] ? ":" : "");
	flow_define(&f, yaml);
	sagad = flow_start_sagad(&f, env);
	port = flow_http_port(&f, sagad);
	flow_start_participant(&f, "stock", NULL);
	flow_start_participant(&f, "payments", NULL);
	flow_start_participant(&f, "shipping", NULL);
	before = sagad_clock_offset(port);
	cr_assert(labs(before) < 60, "sagad's clock is off by %ld s before the jump", before);

	load_start(200, START_RATE);
	load_wait_accepted(60);
	{
		char spec[16];

		snprintf(spec, sizeof(spec), "%s\n", j->offset);
		write_text(clock_file, spec);
	}
	sleep_ms(1500);
	after = sagad_clock_offset(port);
	cr_log_info("sagad's clock jumped by %s: %ld s off after %d starts", j->offset, after,
	            atomic_load(&load.accepted));
	cr_assert(labs(after - j->seconds) < 60, "sagad's clock did not jump by %s: %ld s off",
	          j->offset, after);
	load_join();
	settle(200, "completed");
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_transition"
	                               " WHERE event IN ('timeout', 'deadline')"),
	             0, "timeouts or deadlines fired after sagad's clock jumped %s", j->offset);
	cr_assert_eq(flow_sql_long(&f, "SELECT count(*) FROM saga_step WHERE attempt <> 1"), 0,
	             "every step took one attempt");
	assert_one_effect_per_step(200);
	flow_assert_invariants(&f, ids, 200);
}

/* The orchestrator's main loop: intake, replies, timers and the outbox relay, in one thread. */
#include "daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apply.h"
#include "codec.h"
#include "defcache.h"
#include "http.h"
#include "intake.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "replies.h"
#include "sagacache.h"

/* Everything the loop holds. */
struct daemon {
	const struct config *cfg;          /* settings */
	struct apply_env env;              /* store, definitions, settings */
	struct bus *bus;                   /* NATS */
	struct bus_sub *starts;            /* <prefix>.start.* (queue group) */
	struct bus_sub *defines;           /* <prefix>.define (queue group) */
	struct bus_sub *replies;           /* pull consumer on the reply stream */
	struct bus_sub *submits;           /* pull consumer on the submit stream */
	struct intake_admission admission; /* in-flight estimate */
	struct intake_start *start_buf;    /* reusable start batch */
	struct bus_msg **msg_buf;          /* reusable message batch */
	int64_t *received_us;              /* when each start of the batch arrived (monotonic us) */
	struct http *http;                 /* the HTTP API, or NULL when off */
	struct relay *relay;               /* rows published right after their commit */
	struct sagacache *cache;           /* sagas this process wrote last, or NULL (off) */
	int64_t last_timer_ms;             /* monotonic ms of the last timer pass */
	int64_t last_sweep_ms;             /* monotonic ms of the last outbox sweep */
	int64_t next_submit_ms;            /* monotonic ms before which submits are not polled */
	int64_t replies_caught_up_ms; /* monotonic ms when the reply stream was last read empty */
	uint64_t replies_behind;      /* replies still in the stream behind the last batch */
	int last_replies;             /* replies the last reply batch took */
	int64_t last_hold_log_ms;     /* rate limit of the "timers held back" line */
	int64_t last_error_log_ms;    /* rate limit of repeated error lines */
	int64_t last_reconnect_ms;    /* monotonic ms of the last reconnection attempt */
};

static int64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
mono_ms(void)
{
	return mono_us() / 1000;
}

/* Count a start's outcome and how long its answer took. */
static void
observe_start(const struct start_answer *a, int64_t received_us)
{
	static const enum metric_counter rejected[] = {
	        [REJECT_NONE] = M_STARTS_REJECTED_INVALID,
	        [REJECT_UNKNOWN_SAGA] = M_STARTS_REJECTED_UNKNOWN,
	        [REJECT_INVALID] = M_STARTS_REJECTED_INVALID,
	        [REJECT_OVERLOADED] = M_STARTS_REJECTED_OVERLOADED,
	        [REJECT_UNAVAILABLE] = M_STARTS_REJECTED_UNAVAILABLE,
	};

	if (a->status == START_ACCEPTED)
		metrics_add(M_STARTS_ACCEPTED, 1);
	else if (a->status == START_DUPLICATE)
		metrics_add(M_STARTS_DUPLICATE, 1);
	else if ((int)a->reject >= 0 && a->reject <= REJECT_UNAVAILABLE)
		metrics_add(rejected[a->reject], 1);
	if (received_us > 0)
		metrics_observe(H_START_ACK, (double)(mono_us() - received_us) / 1000.0);
}

/* Log a failing pass at most once a second; the loop retries by itself. */
static void
log_pass_error(struct daemon *d, const char *what, enum status st, const char *err)
{
	int64_t now = mono_ms();

	if (now - d->last_error_log_ms < 1000)
		return;
	d->last_error_log_ms = now;
	log_error("%s failed (%s): %s", what, status_name(st), err);
}

static void
answer_start(struct daemon *d, struct bus_msg *msg, const struct start_answer *a)
{
	struct bytes out = {0};
	struct bus_header h[3] = {
	        {HDR_CONTENT_TYPE, CT_START_RESPONSE},
	        {HDR_CORRELATION_ID, a->correlation_id},
	        {HDR_SAGA_ID, a->saga_id},
	};

	if (codec_encode_start_answer(a, &out) != STATUS_OK)
		return;
	if (bus_respond(d->bus, msg, h, 3, out.data, out.len) != STATUS_OK)
		log_saga(LOG_DEBUG, a->saga_id, a->correlation_id,
		         "start answered to nobody (no reply subject)");
	free(out.data);
}

/*
 * Starts over request/reply: wait up to wait_ms for the first, decide a batch
 * of at most max, answer each.
 */
static int
pass_starts(struct daemon *d, int wait_ms, int max)
{
	int n = 0;
	char err[512];
	enum status st;

	if (max > d->cfg->start_batch)
		max = (int)d->cfg->start_batch;
	while (n < max) {
		struct bus_msg *m = NULL;

		if (bus_next(d->starts, n == 0 ? wait_ms : 0, &m) != STATUS_OK)
			break;
		d->received_us[n] = mono_us();
		d->msg_buf[n] = m;
		intake_prepare(&d->start_buf[n], m, (size_t)d->cfg->max_payload);
		n++;
	}
	if (n == 0)
		return 0;
	st = intake_starts(&d->env, &d->admission, d->start_buf, n, 0, err, sizeof(err));
	if (st != STATUS_OK)
		log_pass_error(d, "start batch", st, err);
	for (int i = 0; i < n; i++) {
		answer_start(d, d->msg_buf[i], &d->start_buf[i].answer);
		observe_start(&d->start_buf[i].answer, d->received_us[i]);
		intake_release(&d->start_buf[i]);
		bus_msg_free(d->msg_buf[i]);
	}
	return n;
}

/*
 * Replies this little behind do not hold timers back (a batch in hand is
 * normal); however far behind, a timer fires at most this late, so a stream
 * that never drains cannot stop timeouts for good.
 */
#define HOLD_BACK_MIN_MS 100
#define HOLD_BACK_MAX_MS 60000

/* While over a batch of replies waits, one start is taken per this many replies of the last batch. */
#define REPLIES_PER_START 4

/* How often an empty submit stream is polled: buffered starts may wait this long. */
#define SUBMIT_IDLE_POLL_MS 10

/* Buffered starts from JetStream, at most max: acked after the commit, nak'ed when it failed. */
static int
pass_submits(struct daemon *d, int max)
{
	int n = 0;
	char err[512];
	enum status st;

	/* Each fetch is a round trip to nats-server: an empty stream is polled every few ms only. */
	if (max <= 0 || mono_ms() < d->next_submit_ms)
		return 0;
	if (max > d->cfg->start_batch)
		max = (int)d->cfg->start_batch;
	st = bus_fetch(d->submits, max, 0, d->msg_buf, &n, err, sizeof(err));
	if (st != STATUS_OK) {
		log_pass_error(d, "fetching submits", st, err);
		return 0;
	}
	if (n == 0) {
		d->next_submit_ms = mono_ms() + SUBMIT_IDLE_POLL_MS;
		return 0;
	}
	for (int i = 0; i < n; i++)
		intake_prepare(&d->start_buf[i], d->msg_buf[i], (size_t)d->cfg->max_payload);
	st = intake_starts(&d->env, &d->admission, d->start_buf, n, 1, err, sizeof(err));
	if (st != STATUS_OK)
		log_pass_error(d, "submit batch", st, err);
	for (int i = 0; i < n; i++) {
		const struct start_answer *a = &d->start_buf[i].answer;

		if (st == STATUS_OK) {
			bus_ack(d->msg_buf[i]);
			observe_start(a, 0);
		} else {
			bus_nak(d->msg_buf[i], 1000);
		}
		if (st == STATUS_OK && a->status == START_REJECTED)
			log_warn("submitted start of %s rejected: %s", d->start_buf[i].saga_name,
			         a->reason);
		intake_release(&d->start_buf[i]);
		bus_msg_free(d->msg_buf[i]);
	}
	return n;
}

static int
pass_defines(struct daemon *d)
{
	int n = 0;
	struct bus_msg *m = NULL;

	while (n < 16 && bus_next(d->defines, 0, &m) == STATUS_OK) {
		intake_define(&d->env, d->bus, m);
		bus_msg_free(m);
		n++;
	}
	return n;
}

static int
pass_replies(struct daemon *d, int wait_ms)
{
	int n = 0;
	int applied = 0;
	char err[512];
	enum status st;

	d->replies_behind = 0;
	st = bus_fetch(d->replies, (int)d->cfg->reply_batch, wait_ms, d->msg_buf, &n, err,
	               sizeof(err));
	if (st != STATUS_OK) {
		log_pass_error(d, "fetching replies", st, err);
		return 0;
	}
	/* Nothing waits behind this batch: every reply that arrived so far is in hand. */
	d->replies_behind = n > 0 ? bus_msg_pending(d->msg_buf[n - 1]) : 0;
	d->last_replies = n;
	if (n > 0 && d->replies_behind == 0)
		d->replies_caught_up_ms = mono_ms();
	if (n == 0)
		return 0;
	st = replies_apply(&d->env, d->msg_buf, n, &applied, err, sizeof(err));
	if (st != STATUS_OK)
		log_pass_error(d, "reply batch", st, err);
	return n;
}

/*
 * No reply batch showed lately that the stream was read to its end (an
 * empty fetch proves nothing: it may have timed out on this side): ask the
 * server whether replies wait undelivered.
 */
static void
check_replies_caught_up(struct daemon *d)
{
	struct bus_consumer_stats cs;
	char err[256];
	int64_t asked = mono_ms();

	if (bus_consumer_stats(d->bus, BUS_STREAM_REPLY, &cs, err, sizeof(err)) == STATUS_OK &&
	    cs.num_pending == 0)
		d->replies_caught_up_ms = asked;
}

static int
pass_timers(struct daemon *d, int force)
{
	int64_t now = mono_ms();
	int64_t hold;
	int sagas = 0, events = 0, total = 0;
	char err[512];
	enum status st;

	if (!force && now - d->last_timer_ms < d->cfg->timer_interval_ms)
		return 0;
	d->last_timer_ms = now;
	/*
	 * Behind on replies, a step's answer may sit unread in the stream: fire
	 * only what came due before the stream was last read empty. Otherwise
	 * sagad's own lag would time out steps that answered in time, re-send
	 * them, and open circuits on healthy participants.
	 */
	if (now - d->replies_caught_up_ms >= HOLD_BACK_MIN_MS)
		check_replies_caught_up(d);
	hold = mono_ms() - d->replies_caught_up_ms;
	if (hold < HOLD_BACK_MIN_MS)
		hold = 0;
	if (hold > HOLD_BACK_MAX_MS)
		hold = HOLD_BACK_MAX_MS;
	if (hold >= 1000 && now - d->last_hold_log_ms >= 10000) {
		d->last_hold_log_ms = now;
		log_warn("replies %lld ms behind: timers held back as long", (long long)hold);
	}
	do {
		st = apply_due_timers(&d->env, (int)d->cfg->timer_batch, hold, &sagas, &events, err,
		                      sizeof(err));
		if (st != STATUS_OK) {
			log_pass_error(d, "timer pass", st, err);
			break;
		}
		total += events;
	} while (sagas == d->cfg->timer_batch);
	return total;
}

/* Publish what the last pass committed, right away; the acks are awaited in pass_relay. */
static void
publish_committed(struct daemon *d)
{
	int published = 0;
	char err[512];
	enum status st =
	        relay_publish_committed(d->relay, d->env.db, d->bus, &published, err, sizeof(err));

	if (st != STATUS_OK)
		log_pass_error(d, "publishing committed outbox rows", st, err);
}

/* Rows an earlier pass of this process committed but did not publish wait this long for the sweep. */
#define SWEEP_INTERVAL_MS 500
#define SWEEP_MIN_AGE_MS  1000

/*
 * Settle what was published after the commits (acks, then one delete), and
 * every SWEEP_INTERVAL_MS (or with force) sweep the table for rows nobody
 * published: min_age_ms keeps the sweep off rows a live sagad is about to
 * publish itself.
 */
static int
pass_relay(struct daemon *d, int force, int64_t min_age_ms)
{
	int published = 0, total = 0;
	char err[512];
	enum status st;

	if (relay_unsettled(d->relay) > 0 || force) {
		st = relay_settle(d->relay, d->env.db, d->bus, 5000, &published, err, sizeof(err));
		if (st != STATUS_OK)
			log_pass_error(d, "outbox relay", st, err);
		total += published;
	}
	if (!force && mono_ms() - d->last_sweep_ms < SWEEP_INTERVAL_MS)
		return total;
	d->last_sweep_ms = mono_ms();
	do {
		st = relay_sweep(d->env.db, d->bus, (int)d->cfg->relay_batch, min_age_ms,
		                 &published, err, sizeof(err));
		if (st != STATUS_OK) {
			log_pass_error(d, "outbox sweep", st, err);
			break;
		}
		total += published;
	} while (published == d->cfg->relay_batch);
	return total;
}

static int
subscribe_all(struct daemon *d)
{
	char subject[256];
	char err[512];

	snprintf(subject, sizeof(subject), "%s.start.*", d->cfg->subject_prefix);
	if (bus_subscribe(d->bus, subject, "sagad", &d->starts, err, sizeof(err)) != STATUS_OK)
		goto fail;
	snprintf(subject, sizeof(subject), "%s.define", d->cfg->subject_prefix);
	if (bus_subscribe(d->bus, subject, "sagad", &d->defines, err, sizeof(err)) != STATUS_OK)
		goto fail;
	if (bus_pull_subscribe(d->bus, BUS_STREAM_REPLY, &d->replies, err, sizeof(err)) !=
	    STATUS_OK)
		goto fail;
	if (bus_pull_subscribe(d->bus, BUS_STREAM_SUBMIT, &d->submits, err, sizeof(err)) !=
	    STATUS_OK)
		goto fail;
	return 0;
fail:
	log_fatal("%s", err);
	return 1;
}

/*
 * Graceful stop: take no new work (HTTP closed, start and define interest
 * drained so the queue group sends them to other sagad processes), answer the
 * starts already received, and publish what the outbox holds, within
 * shutdown_timeout. Replies and submits not fetched stay in their streams.
 */
static void
shut_down(struct daemon *d)
{
	int64_t deadline = mono_ms() + d->cfg->shutdown_timeout_ms;
	int answered = 0, published = 0;

	http_stop(d->http);
	d->http = NULL;
	bus_drain(d->starts);
	bus_drain(d->defines);
	while (mono_ms() < deadline) {
		int n = pass_starts(d, 20, (int)d->cfg->start_batch);

		publish_committed(d);
		n += pass_defines(d);
		answered += n;
		if (n == 0)
			break;
	}
	while (mono_ms() < deadline) {
		int n = pass_relay(d, 1, 0);

		published += n;
		if (n < d->cfg->relay_batch)
			break;
	}
	log_info("stopped taking work: answered %d pending start(s), published %d outbox row(s)%s",
	         answered, published, mono_ms() >= deadline ? " (shutdown_timeout reached)" : "");
}

/*
 * After PostgreSQL went away (restart, failover), connect again; until then
 * the loop idles (starts are answered "unavailable, retry").
 */
static int
db_ready(struct daemon *d, struct store **db)
{
	struct store *fresh = NULL;
	char err[512];
	int64_t now = mono_ms();

	if (!store_broken(*db))
		return 1;
	if (now - d->last_reconnect_ms < 1000)
		return 0;
	d->last_reconnect_ms = now;
	if (store_connect(&fresh, d->cfg->database_url, d->cfg->db_schema,
	                  d->cfg->connect_timeout_ms, 0, "sagad", err, sizeof(err)) != STATUS_OK) {
		log_pass_error(d, "reconnecting to PostgreSQL", STATUS_UNAVAILABLE, err);
		return 0;
	}
	store_close(*db);
	*db = fresh;
	d->env.db = fresh;
	store_keep_committed_outbox(fresh, 1);
	/* Still good: every entry is checked against its row's version when used. */
	store_set_cache(fresh, d->cache);
	log_info("reconnected to PostgreSQL");
	return 1;
}

int
daemon_run(const struct config *cfg, struct store **db, struct bus *bus,
           volatile sig_atomic_t *stop)
{
	struct daemon d;
	int64_t batch = cfg->start_batch > cfg->reply_batch ? cfg->start_batch : cfg->reply_batch;
	char err[512];
	int rc = 1;

	memset(&d, 0, sizeof(d));
	d.cfg = cfg;
	d.env.db = *db;
	d.env.cfg = cfg;
	d.bus = bus;
	d.admission.max = cfg->max_in_flight;
	d.admission.retry_after_ms = 1000;
	d.admission.counted_ms = INT64_MIN / 2; /* count at the first start */
	d.start_buf = calloc((size_t)batch, sizeof(*d.start_buf));
	d.msg_buf = calloc((size_t)batch, sizeof(*d.msg_buf));
	d.received_us = calloc((size_t)batch, sizeof(*d.received_us));
	if (d.start_buf == NULL || d.msg_buf == NULL || d.received_us == NULL ||
	    defcache_new(&d.env.defs) != STATUS_OK || relay_new(&d.relay) != STATUS_OK ||
	    breaker_new(&d.env.breakers, (int)cfg->breaker_failures, cfg->breaker_cooldown_ms) !=
	            STATUS_OK) {
		log_fatal("out of memory");
		goto cleanup;
	}
	if (cfg->saga_cache > 0 && sagacache_new((int)cfg->saga_cache, &d.cache) != STATUS_OK) {
		log_fatal("out of memory");
		goto cleanup;
	}
	if (subscribe_all(&d) != 0)
		goto cleanup;
	if (strcmp(cfg->http_listen, "off") != 0 &&
	    http_start(&d.http, cfg, bus, err, sizeof(err)) != STATUS_OK) {
		log_fatal("%s", err);
		goto cleanup;
	}
	log_info(
	        "ready: orchestrating on %s.start.*, %s.submit.*, %s.define; replies on %s.reply.>",
	        cfg->subject_prefix, cfg->subject_prefix, cfg->subject_prefix, cfg->subject_prefix);
	store_keep_committed_outbox(*db, 1);
	store_set_cache(*db, d.cache);
	d.replies_caught_up_ms = mono_ms();
	/* Whatever an earlier run left in the outbox goes out first. */
	pass_relay(&d, 1, 0);
	while (!*stop) {
		int work = 0;
		int wrote, started, start_cap;

		if (!db_ready(&d, db)) {
			/* Answer starts ("unavailable") rather than let callers time out. */
			pass_starts(&d, 100, (int)cfg->start_batch);
			continue;
		}

		/*
		 * Replies finish what is in flight: while more than a batch of them
		 * waits, a pass takes at most one start per REPLIES_PER_START
		 * replies of the last batch, so accepting new sagas cannot starve
		 * the running ones (the starts wait in their subscription: the
		 * backpressure shows as start latency). One reply fetch per pass:
		 * back-to-back fetches trip a bug of nats.c 3.4.1 (docs/benchmarks.md).
		 */
		start_cap = (int)cfg->start_batch;
		if (d.replies_behind > (uint64_t)cfg->reply_batch) {
			start_cap = d.last_replies / REPLIES_PER_START;
			if (start_cap < 1)
				start_cap = 1;
		}
		/* Each pass's commands leave right after its commit, not on a poll. */
		started = pass_starts(&d, 0, start_cap);
		publish_committed(&d);
		started += pass_submits(&d, start_cap - started);
		publish_committed(&d);
		wrote = started;
		work += pass_defines(&d);
		wrote += pass_replies(&d, 0);
		publish_committed(&d);
		wrote += pass_timers(&d, 0);
		publish_committed(&d);
		work += wrote;
		/* Their acks have mostly arrived meanwhile: delete those rows. */
		work += pass_relay(&d, 0, SWEEP_MIN_AGE_MS);
		if (work == 0) {
			/* Idle: wait briefly for a start (the most latency-sensitive input), then a reply. */
			if (pass_starts(&d, 2, (int)cfg->start_batch) > 0) {
				publish_committed(&d);
				pass_relay(&d, 0, SWEEP_MIN_AGE_MS);
			} else if (pass_replies(&d, 3) > 0) {
				publish_committed(&d);
			}
		}
	}
	log_info("stopping on signal");
	shut_down(&d);
	rc = 0;
cleanup:
	http_stop(d.http);
	bus_unsubscribe(d.starts);
	bus_unsubscribe(d.defines);
	bus_unsubscribe(d.replies);
	bus_unsubscribe(d.submits);
	relay_free(d.relay);
	if (*db != NULL)
		store_set_cache(*db, NULL);
	sagacache_free(d.cache);
	defcache_free(d.env.defs);
	breaker_free(d.env.breakers);
	free(d.start_buf);
	free(d.msg_buf);
	free(d.received_us);
	return rc;
}

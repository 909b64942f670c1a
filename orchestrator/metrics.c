/*
 * Process metrics: counters and latency histograms updated by the main loop
 * (atomic, lock-free) and rendered in the Prometheus text format by the HTTP
 * thread.
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds of the histogram buckets, in ms; the last bucket is +Inf. */
static const double bucket_ms[] = {1,   2,    5,    10,   25,    50,    100,  250,
                                   500, 1000, 2500, 5000, 10000, 30000, 60000};
#define N_BUCKETS (sizeof(bucket_ms) / sizeof(bucket_ms[0]))

struct histogram {
	uint64_t buckets[N_BUCKETS + 1]; /* non-cumulative counts; last = above every bound */
	uint64_t count;                  /* observations */
	uint64_t sum_us;                 /* sum of observations, microseconds */
};

static uint64_t counters[M_COUNTER_COUNT];
static int64_t breakers_open;
static struct histogram histograms[H_HISTOGRAM_COUNT];

static const struct {
	const char *name; /* metric name */
	const char *help; /* HELP text */
} histogram_info[H_HISTOGRAM_COUNT] = {
        [H_START_ACK] = {"sagad_start_ack_seconds",
                         "Time from a start request's arrival to its answer."},
        [H_STEP_LATENCY] = {"sagad_step_latency_seconds",
                            "Time from a step command's dispatch to its successful reply."},
        [H_SAGA_DURATION] = {"sagad_saga_duration_seconds",
                             "Time from a saga's start to its terminal state."},
        [H_MESSAGE_AGE] = {"sagad_message_age_seconds",
                           "Age of a step reply when sagad applied it (participant clock)."},
};

void
metrics_add(enum metric_counter c, uint64_t n)
{
	__atomic_fetch_add(&counters[c], n, __ATOMIC_RELAXED);
}

void
metrics_set_breakers_open(int64_t n)
{
	__atomic_store_n(&breakers_open, n, __ATOMIC_RELAXED);
}

uint64_t
metrics_get(enum metric_counter c)
{
	return __atomic_load_n(&counters[c], __ATOMIC_RELAXED);
}

void
metrics_observe(enum metric_histogram h, double ms)
{
	struct histogram *hist = &histograms[h];
	size_t b = 0;

	if (ms < 0)
		ms = 0;
	while (b < N_BUCKETS && ms > bucket_ms[b])
		b++;
	__atomic_fetch_add(&hist->buckets[b], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&hist->count, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&hist->sum_us, (uint64_t)(ms * 1000.0), __ATOMIC_RELAXED);
}

void
metrics_observe_plan(const struct saga_inst *inst, const struct plan *plan, int64_t now_ms)
{
	metrics_add(M_TRANSITIONS, 1);
	if (plan->event == EV_REPLY) {
		static const enum metric_counter by_verdict[] = {
		        [VERDICT_APPLIED] = M_REPLIES_APPLIED,
		        [VERDICT_DUPLICATE] = M_REPLIES_DUPLICATE,
		        [VERDICT_STALE] = M_REPLIES_STALE,
		        [VERDICT_LATE] = M_REPLIES_LATE,
		};

		if (plan->verdict != VERDICT_REFUSED)
			metrics_add(by_verdict[plan->verdict], 1);
	}
	if (plan->verdict != VERDICT_APPLIED)
		return;
	if (plan->event == EV_STEP_TIMEOUT)
		metrics_add(M_TIMEOUTS, 1);
	for (int i = 0; i < plan->n_events; i++) {
		switch (plan->events[i].type) {
		case LC_STEP_RETRYING:
			metrics_add(M_RETRIES, 1);
			break;
		case LC_COMPENSATING:
			metrics_add(M_COMPENSATIONS, 1);
			break;
		case LC_COMPLETED:
			metrics_add(M_SAGAS_COMPLETED, 1);
			metrics_observe(H_SAGA_DURATION, (double)(now_ms - inst->created_ms));
			break;
		case LC_COMPENSATED:
			metrics_add(M_SAGAS_COMPENSATED, 1);
			metrics_observe(H_SAGA_DURATION, (double)(now_ms - inst->created_ms));
			break;
		case LC_FAILED:
			metrics_add(M_SAGAS_FAILED, 1);
			break;
		default:
			break;
		}
	}
}

/* A growing text buffer. */
struct text {
	char *buf;  /* contents */
	size_t len; /* used */
	size_t cap; /* allocated */
	int failed; /* out of memory */
};

static void __attribute__((format(printf, 2, 3))) put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = 1;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		{
			size_t cap = 2 * t->cap + (size_t)n;
			char *grown = realloc(t->buf, cap);

			if (grown == NULL) {
				t->failed = 1;
				return;
			}
			t->buf = grown;
			t->cap = cap;
		}
	}
}

static void
put_counter(struct text *t, const char *name, const char *help, const char *labels,
            enum metric_counter c)
{
	put(t, "# HELP %s %s\n# TYPE %s counter\n%s%s %llu\n", name, help, name, name, labels,
	    (unsigned long long)metrics_get(c));
}

static void
put_histogram(struct text *t, enum metric_histogram h)
{
	const char *name = histogram_info[h].name;
	uint64_t cumulative = 0;

	put(t, "# HELP %s %s\n# TYPE %s histogram\n", name, histogram_info[h].help, name);
	for (size_t b = 0; b <= N_BUCKETS; b++) {
		cumulative += __atomic_load_n(&histograms[h].buckets[b], __ATOMIC_RELAXED);
		if (b < N_BUCKETS)
			put(t, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_ms[b] / 1000.0,
			    (unsigned long long)cumulative);
		else
			put(t, "%s_bucket{le=\"+Inf\"} %llu\n", name,
			    (unsigned long long)cumulative);
	}
	put(t, "%s_sum %.6f\n%s_count %llu\n", name,
	    (double)__atomic_load_n(&histograms[h].sum_us, __ATOMIC_RELAXED) / 1e6, name,
	    (unsigned long long)__atomic_load_n(&histograms[h].count, __ATOMIC_RELAXED));
}

int
metrics_render(const struct metrics_gauges *g, char **out, size_t *len)
{
	struct text t = {malloc(8192), 0, 8192, 0};
	static const struct {
		const char *outcome;
		enum metric_counter c;
	} starts[] = {
	        {"accepted", M_STARTS_ACCEPTED},
	        {"duplicate", M_STARTS_DUPLICATE},
	        {"rejected_invalid", M_STARTS_REJECTED_INVALID},
	        {"rejected_unknown_saga", M_STARTS_REJECTED_UNKNOWN},
	        {"rejected_overloaded", M_STARTS_REJECTED_OVERLOADED},
	        {"rejected_unavailable", M_STARTS_REJECTED_UNAVAILABLE},
	};
	static const struct {
		const char *outcome;
		enum metric_counter c;
	} replies[] = {
	        {"applied", M_REPLIES_APPLIED},
	        {"duplicate", M_REPLIES_DUPLICATE},
	        {"stale", M_REPLIES_STALE},
	        {"late", M_REPLIES_LATE},
	};
	static const struct {
		const char *state;
		enum metric_counter c;
	} ended[] = {
	        {"completed", M_SAGAS_COMPLETED},
	        {"compensated", M_SAGAS_COMPENSATED},
	        {"failed", M_SAGAS_FAILED},
	};

	if (t.buf == NULL)
		return -1;
	put(&t, "# HELP sagad_starts_total Start requests by outcome.\n"
	        "# TYPE sagad_starts_total counter\n");
	for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++)
		put(&t, "sagad_starts_total{outcome=\"%s\"} %llu\n", starts[i].outcome,
		    (unsigned long long)metrics_get(starts[i].c));
	put(&t, "# HELP sagad_replies_total Step replies by outcome.\n"
	        "# TYPE sagad_replies_total counter\n");
	for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++)
		put(&t, "sagad_replies_total{outcome=\"%s\"} %llu\n", replies[i].outcome,
		    (unsigned long long)metrics_get(replies[i].c));
	put(&t, "# HELP sagad_sagas_ended_total Sagas that reached a final or failed state.\n"
	        "# TYPE sagad_sagas_ended_total counter\n");
	for (size_t i = 0; i < sizeof(ended) / sizeof(ended[0]); i++)
		put(&t, "sagad_sagas_ended_total{state=\"%s\"} %llu\n", ended[i].state,
		    (unsigned long long)metrics_get(ended[i].c));
	put_counter(&t, "sagad_transitions_total", "Saga transitions recorded.", "", M_TRANSITIONS);
	put_counter(&t, "sagad_dead_letters_total",
	            "Dead letters recorded (committed rows of saga_dead_letter: failed sagas,"
	            " bad replies and submits, unpublishable outbox rows).",
	            "", M_DEAD_LETTERS);
	put_counter(&t, "sagad_retries_total", "Step attempts scheduled for a retry.", "",
	            M_RETRIES);
	put_counter(&t, "sagad_compensations_total", "Sagas that began compensating.", "",
	            M_COMPENSATIONS);
	put_counter(&t, "sagad_step_timeouts_total", "Step attempts that timed out.", "",
	            M_TIMEOUTS);
	put_counter(&t, "sagad_outbox_published_total", "Outbox rows published and deleted.", "",
	            M_OUTBOX_PUBLISHED);
	put_counter(&t, "sagad_breaker_opened_total", "Circuits opened to a failing target.", "",
	            M_BREAKER_OPENED);
	put_counter(&t, "sagad_retries_held_total", "Retries held back by an open circuit.", "",
	            M_RETRIES_HELD);
	put(&t,
	    "# HELP sagad_saga_cache_total Sagas an event found in the saga cache (hit) or read"
	    " from the database (miss).\n"
	    "# TYPE sagad_saga_cache_total counter\n"
	    "sagad_saga_cache_total{result=\"hit\"} %llu\n"
	    "sagad_saga_cache_total{result=\"miss\"} %llu\n",
	    (unsigned long long)metrics_get(M_SAGA_CACHE_HITS),
	    (unsigned long long)metrics_get(M_SAGA_CACHE_MISSES));
	put(&t,
	    "# HELP sagad_breakers_open Circuits open now.\n"
	    "# TYPE sagad_breakers_open gauge\nsagad_breakers_open %lld\n",
	    (long long)__atomic_load_n(&breakers_open, __ATOMIC_RELAXED));
	for (int h = 0; h < H_HISTOGRAM_COUNT; h++)
		put_histogram(&t, (enum metric_histogram)h);
	if (g->gauges_ok) {
		put(&t,
		    "# HELP sagad_sagas_in_flight Sagas by non-terminal state.\n"
		    "# TYPE sagad_sagas_in_flight gauge\n"
		    "sagad_sagas_in_flight{state=\"running\"} %lld\n"
		    "sagad_sagas_in_flight{state=\"compensating\"} %lld\n"
		    "sagad_sagas_in_flight{state=\"failed\"} %lld\n"
		    "# HELP sagad_outbox_rows Outbox rows not yet published.\n"
		    "# TYPE sagad_outbox_rows gauge\nsagad_outbox_rows %lld\n"
		    "# HELP sagad_outbox_oldest_seconds Age of the oldest unpublished outbox row.\n"
		    "# TYPE sagad_outbox_oldest_seconds gauge\nsagad_outbox_oldest_seconds %.3f\n",
		    (long long)g->running, (long long)g->compensating, (long long)g->failed,
		    (long long)g->outbox_rows, g->outbox_oldest_s);
	}
	if (g->consumer_ok) {
		put(&t,
		    "# HELP sagad_consumer_pending Messages waiting in sagad's consumers.\n"
		    "# TYPE sagad_consumer_pending gauge\n"
		    "sagad_consumer_pending{consumer=\"replies\"} %lld\n"
		    "sagad_consumer_pending{consumer=\"submits\"} %lld\n"
		    "# HELP sagad_consumer_ack_pending Replies delivered to sagad, not yet acked.\n"
		    "# TYPE sagad_consumer_ack_pending gauge\n"
		    "sagad_consumer_ack_pending{consumer=\"replies\"} %lld\n",
		    (long long)g->reply_pending, (long long)g->submit_pending,
		    (long long)g->reply_ack_pending);
	}
	put(&t,
	    "# HELP sagad_up 1 while sagad runs; database and nats say whether they answered.\n"
	    "# TYPE sagad_up gauge\nsagad_up{part=\"process\"} 1\n"
	    "sagad_up{part=\"database\"} %d\nsagad_up{part=\"nats\"} %d\n",
	    g->gauges_ok, g->consumer_ok);
	if (t.failed) {
		free(t.buf);
		return -1;
	}
	*out = t.buf;
	*len = t.len;
	return 0;
}

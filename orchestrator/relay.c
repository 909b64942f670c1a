/* The outbox relay: publishes committed outbox rows to JetStream and deletes them once acked. */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "failpoint.h"
#include "log.h"
#include "metrics.h"
#include "saga.h"

#define RELAY_ACK_TIMEOUT_MS 5000

/* Row by row, each ack is awaited this long: with NATS down, one row fails fast for all. */
#define RELAY_ROW_TIMEOUT_MS 1000

/* Rows published right after their commit, waiting for their acks. */
struct relay {
	int64_t *ids; /* outbox ids */
	int n;        /* how many */
	int cap;      /* allocated */
	int failed;   /* a publish of this group failed: delete none of them */
};

enum status
relay_new(struct relay **out)
{
	struct relay *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return STATUS_NOMEM;
	*out = r;
	return STATUS_OK;
}

void
relay_free(struct relay *r)
{
	if (r == NULL)
		return;
	free(r->ids);
	free(r);
}

int
relay_unsettled(const struct relay *r)
{
	return r->n;
}

#define ROW_HEADERS 6

/* The headers an outbox row is published with (Nats-Msg-Id is added by the bus). */
static void
row_headers(const struct store_outbox_row *r, struct bus_header h[ROW_HEADERS])
{
	h[0] = (struct bus_header){HDR_CONTENT_TYPE, r->content_type};
	h[1] = (struct bus_header){HDR_CORRELATION_ID, r->correlation_id};
	h[2] = (struct bus_header){HDR_SAGA_ID, r->saga_id};
	h[3] = (struct bus_header){HDR_STEP, r->step};
	h[4] = (struct bus_header){HDR_ATTEMPT, r->attempt};
	h[5] = (struct bus_header){HDR_TRACEPARENT, r->traceparent};
}

/* Publish rows with Nats-Msg-Id and the saga's headers; stops at the first failure. */
static enum status
publish_rows(struct bus *bus, const struct store_outbox_row *rows, int n, int *sent, char *err,
             size_t errlen)
{
	enum status st = STATUS_OK;

	*sent = 0;
	for (int i = 0; i < n && st == STATUS_OK; i++) {
		const struct store_outbox_row *r = &rows[i];
		struct bus_header h[ROW_HEADERS];

		row_headers(r, h);
		st = bus_publish_async(bus, r->subject, r->msg_id, h, ROW_HEADERS, r->payload.data,
		                       r->payload.len, err, errlen);
		if (st == STATUS_OK)
			(*sent)++;
	}
	return st;
}

enum status
relay_publish_committed(struct relay *r, struct store *db, struct bus *bus, int *published,
                        char *err, size_t errlen)
{
	struct store_outbox_row *rows = NULL;
	int n = 0, sent = 0;
	enum status st;

	*published = 0;
	st = store_outbox_committed(db, &rows, &n);
	if (st != STATUS_OK || n == 0) {
		/* Out of memory: the rows stay in the table for the sweep. */
		store_outbox_committed_done(db);
		if (st != STATUS_OK)
			snprintf(err, errlen, "out of memory");
		return st;
	}
	failpoint_pass(FP_AFTER_COMMIT_BEFORE_PUBLISH);
	if (r->n + n > r->cap) {
		int cap = r->cap > 0 ? r->cap : 256;
		int64_t *grown;

		while (cap < r->n + n)
			cap *= 2;
		grown = realloc(r->ids, (size_t)cap * sizeof(*grown));
		if (grown == NULL) {
			free(rows);
			store_outbox_committed_done(db);
			snprintf(err, errlen, "out of memory");
			return STATUS_NOMEM;
		}
		r->ids = grown;
		r->cap = cap;
	}
	st = publish_rows(bus, rows, n, &sent, err, errlen);
	for (int i = 0; i < sent; i++)
		r->ids[r->n++] = rows[i].id;
	if (st != STATUS_OK)
		r->failed = 1;
	free(rows);
	store_outbox_committed_done(db);
	*published = sent;
	return st;
}

enum status
relay_settle(struct relay *r, struct store *db, struct bus *bus, int timeout_ms, int *settled,
             char *err, size_t errlen)
{
	int failed = 0;
	enum status st;

	*settled = 0;
	if (r->n == 0 && !r->failed)
		return STATUS_OK;
	st = bus_publish_wait(bus, timeout_ms, &failed, err, errlen);
	if (st == STATUS_OK && (failed > 0 || r->failed)) {
		snprintf(err, errlen, "%d of %d publishes failed; the sweep sends them again",
		         failed > 0 ? failed : 1, r->n);
		st = STATUS_NATS;
	}
	if (st == STATUS_OK && r->n > 0) {
		failpoint_pass(FP_AFTER_PUBLISH_BEFORE_DELETE);
		st = store_outbox_delete(db, r->ids, r->n, err, errlen);
		if (st == STATUS_OK) {
			*settled = r->n;
			metrics_add(M_OUTBOX_PUBLISHED, (uint64_t)r->n);
		}
	}
	/* Whatever happened, these rows are the sweep's now. */
	r->n = 0;
	r->failed = 0;
	return st;
}

/* What a dead letter keeps of an unpublishable row's payload. */
#define UNPUBLISHABLE_KEEP_BYTES (64 * 1024)

/*
 * The batch publish failed: publish the rows one at a time, waiting for each
 * ack. Rows the stream can never take (too large) become dead letters of
 * class unpublishable, deleted with the others when the sweep commits; any
 * other failure (NATS down) fails the pass, and everything stays.
 */
static enum status
sweep_row_by_row(struct store *db, struct bus *bus, const struct store_outbox_row *rows, int n,
                 int *unpublishable, char *err, size_t errlen)
{
	enum status st = store_batch_begin(db, err, errlen);

	*unpublishable = 0;
	for (int i = 0; i < n && st == STATUS_OK; i++) {
		const struct store_outbox_row *r = &rows[i];
		struct bus_header h[ROW_HEADERS];
		struct store_dead_letter dl;
		char why[400], reason[600], key[200];
		int permanent = 0;

		row_headers(r, h);
		if (bus_publish_one(bus, r->subject, r->msg_id, h, ROW_HEADERS, r->payload.data,
		                    r->payload.len, RELAY_ROW_TIMEOUT_MS, &permanent, why,
		                    sizeof(why)) == STATUS_OK)
			continue;
		if (!permanent) {
			snprintf(err, errlen, "%s", why);
			return STATUS_NATS;
		}
		snprintf(reason, sizeof(reason),
		         "outbox row of %zu bytes cannot be published%s: %s", r->payload.len,
		         r->payload.len > UNPUBLISHABLE_KEEP_BYTES ? " (first 64 KiB kept)" : "",
		         why);
		snprintf(key, sizeof(key), "outbox:%s", r->msg_id);
		memset(&dl, 0, sizeof(dl));
		dl.source_subject = r->subject;
		dl.source_key = key;
		dl.payload.data = r->payload.data;
		dl.payload.len = r->payload.len > UNPUBLISHABLE_KEEP_BYTES
		                         ? UNPUBLISHABLE_KEEP_BYTES
		                         : r->payload.len;
		dl.reason = reason;
		dl.error_class = "unpublishable";
		dl.saga_id = r->saga_id;
		dl.correlation_id = r->correlation_id;
		dl.step = r->step;
		log_saga(LOG_ERROR, r->saga_id, r->correlation_id,
		         "dead letter (unpublishable): %s", reason);
		store_queue_dead_letter(db, &dl);
		(*unpublishable)++;
	}
	return st;
}

enum status
relay_sweep(struct store *db, struct bus *bus, int limit, int64_t min_age_ms, int *published,
            char *err, size_t errlen)
{
	struct store_outbox_row *rows = NULL;
	int n = 0, sent = 0;
	int failed = 0;
	enum status st;
	enum status done;

	*published = 0;
	st = store_outbox_take(db, limit, min_age_ms, &rows, &n, err, errlen);
	if (st != STATUS_OK)
		return st;
	st = publish_rows(bus, rows, n, &sent, err, errlen);
	if (st == STATUS_OK && n > 0) {
		st = bus_publish_wait(bus, RELAY_ACK_TIMEOUT_MS, &failed, err, errlen);
	} else if (st != STATUS_OK) {
		/* Drain what was sent so its acks are not counted against the next pass. */
		char ignored[128];

		if (bus_publish_wait(bus, RELAY_ACK_TIMEOUT_MS, &failed, ignored,
		                     sizeof(ignored)) != STATUS_OK)
			failed = 0;
	}
	if (st == STATUS_OK && failed > 0)
		st = STATUS_NATS;
	if (st != STATUS_OK && n > 0) {
		/* One row the stream can never take must not hold back the rows after it. */
		int unpublishable = 0;
		char why[512];

		st = sweep_row_by_row(db, bus, rows, n, &unpublishable, why, sizeof(why));
		if (st != STATUS_OK)
			snprintf(err, errlen, "%s", why);
		else if (unpublishable > 0)
			log_error("%d outbox row(s) can never be published: moved to dead letters",
			          unpublishable);
	}
	if (st == STATUS_OK && n > 0)
		failpoint_pass(FP_AFTER_PUBLISH_BEFORE_DELETE);
	done = store_outbox_done(db, st == STATUS_OK, st == STATUS_OK ? err : (char[64]){0},
	                         st == STATUS_OK ? errlen : 64);
	free(rows);
	if (st == STATUS_OK && done == STATUS_OK) {
		*published = n;
		metrics_add(M_OUTBOX_PUBLISHED, (uint64_t)n);
	}
	return st != STATUS_OK ? st : done;
}

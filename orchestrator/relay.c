/* The outbox relay: publishes committed outbox rows to JetStream and deletes them once acked. */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>

#include "codec.h"
#include "failpoint.h"
#include "metrics.h"
#include "saga.h"

#define RELAY_ACK_TIMEOUT_MS 5000

enum status
relay_run(struct store *db, struct bus *bus, int limit, int *published, char *err, size_t errlen)
{
	struct store_outbox_row *rows = NULL;
	int n = 0;
	int failed = 0;
	enum status st;
	enum status done;

	*published = 0;
	st = store_outbox_take(db, limit, &rows, &n, err, errlen);
	if (st != STATUS_OK)
		return st;
	for (int i = 0; i < n && st == STATUS_OK; i++) {
		const struct store_outbox_row *r = &rows[i];
		struct bus_header h[6] = {
		        {HDR_CONTENT_TYPE, r->content_type},
		        {HDR_CORRELATION_ID, r->correlation_id},
		        {HDR_SAGA_ID, r->saga_id},
		        {HDR_STEP, r->step},
		        {HDR_ATTEMPT, r->attempt},
		        {HDR_TRACEPARENT, r->traceparent},
		};

		st = bus_publish_async(bus, r->subject, r->msg_id, h, 6, r->payload.data,
		                       r->payload.len, err, errlen);
	}
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

/* The outbox relay: publishes committed outbox rows to JetStream and deletes them once acked. */
#ifndef SAGAD_RELAY_H
#define SAGAD_RELAY_H

#include "bus.h"
#include "status.h"
#include "store.h"

/*
 * Two paths lead from the outbox to JetStream:
 *
 * - right after each commit, relay_publish_committed publishes the rows that
 *   commit wrote (the store kept them, ids included) without waiting, and
 *   relay_settle later waits for the acks and deletes those rows by id in one
 *   short statement. No transaction stays open while JetStream answers.
 * - relay_sweep takes rows older than min_age_ms from the table itself (a
 *   crash between commit and delete, a failed publish, rows sagactl wrote),
 *   publishes them, waits for the acks, and deletes them.
 *
 * Either way a row is deleted only after JetStream acked it, and every
 * publish carries Nats-Msg-Id = the row's msg_id, so a row published twice
 * (a crash after the ack, or both paths) is stored once. The sweep keeps no
 * watermark, so it never skips a row that committed late.
 */
struct relay;

enum status relay_new(struct relay **out) MUSTCHECK;
void relay_free(struct relay *r);

/* Publish what the commits since the last call wrote; *published = rows sent. */
enum status relay_publish_committed(struct relay *r, struct store *db, struct bus *bus,
                                    int *published, char *err, size_t errlen) MUSTCHECK;

/*
 * Wait (at most timeout_ms) for the acks of what relay_publish_committed
 * sent, then delete those rows; *settled = rows deleted. If any publish
 * failed nothing is deleted: the sweep publishes the rows again.
 */
enum status relay_settle(struct relay *r, struct store *db, struct bus *bus, int timeout_ms,
                         int *settled, char *err, size_t errlen) MUSTCHECK;

/* Rows published and not settled yet. */
int relay_unsettled(const struct relay *r);

/*
 * One sweep pass: take up to limit rows written at least min_age_ms ago
 * (oldest first, skipping rows another relay holds), publish them, wait for
 * every ack, then delete them. If the batch fails, rows are published one at
 * a time: a row the stream refuses for its size becomes a dead letter
 * (class unpublishable) and is deleted with the others; any other failure
 * keeps every row for the next pass. Call relay_settle first (acks are
 * counted per connection). *published receives how many rows were taken.
 */
enum status relay_sweep(struct store *db, struct bus *bus, int limit, int64_t min_age_ms,
                        int *published, char *err, size_t errlen) MUSTCHECK;

#endif /* SAGAD_RELAY_H */

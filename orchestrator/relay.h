/* The outbox relay: publishes committed outbox rows to JetStream and deletes them once acked. */
#ifndef SAGAD_RELAY_H
#define SAGAD_RELAY_H

#include "bus.h"
#include "status.h"
#include "store.h"

/*
 * One pass: take up to limit rows (oldest first, skipping rows another relay
 * holds), publish each with Nats-Msg-Id = its msg_id and the saga's headers,
 * wait for every ack, then delete them (commit). If any publish fails, nothing
 * is deleted and the rows are published again next pass (the stream drops the
 * ones it already has). Never skips a row that commits late: it keeps no
 * watermark. *published receives how many rows were published and deleted.
 */
enum status relay_run(struct store *db, struct bus *bus, int limit, int *published, char *err,
                      size_t errlen) MUSTCHECK;

#endif /* SAGAD_RELAY_H */

/* The reply consumer: step replies from JetStream, applied in batches, acked after commit. */
#ifndef SAGAD_REPLIES_H
#define SAGAD_REPLIES_H

#include "apply.h"
#include "bus.h"
#include "status.h"

/*
 * Apply n fetched reply messages in one transaction: each decodable reply for
 * a known saga and step goes through the engine (duplicates, stale and late
 * replies are recorded and change nothing); an undecodable one, or one for
 * an unknown saga or step, or one delivered too often, becomes a dead letter.
 * After the commit every message is acked (dead letters are terminated); if
 * the transaction fails, every message is nak'ed for redelivery. Frees msgs.
 * *applied receives how many replies reached the engine.
 */
enum status replies_apply(const struct apply_env *env, struct bus_msg **msgs, int n, int *applied,
                          char *err, size_t errlen) MUSTCHECK;

#endif /* SAGAD_REPLIES_H */

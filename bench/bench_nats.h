/* NATS for saga-bench: the only bench module that includes nats.h (core request/reply, JetStream). */
#ifndef SAGAD_BENCH_NATS_H
#define SAGAD_BENCH_NATS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* A connection of its own (opaque); thread-safe as nats.c's is. */
struct bench_nats;

/* A subscription (opaque). */
struct bench_sub;

/* A received message (opaque; a natsMsg underneath). */
struct bench_msg;

/* One header to send. */
struct bench_header {
	const char *name;  /* header name */
	const char *value; /* value; NULL or "" = not sent */
};

/*
 * Called on nats.c's delivery thread of the subscription for every message;
 * msg is freed by the library after the call returns.
 */
typedef void (*bench_msg_handler)(void *arg, struct bench_msg *msg);

/*
 * Connect to url (comma-separated servers) under connection name name,
 * waiting at most timeout_ms. *out is written only on success; err names the
 * reason (STATUS_UNAVAILABLE: no server answered, STATUS_NATS otherwise).
 */
enum status bench_nats_connect(struct bench_nats **out, const char *url, const char *name,
                               int64_t timeout_ms, char *err, size_t errlen) MUSTCHECK;

/* Flush, close and free; NULL is a no-op. Subscriptions must be gone first. */
void bench_nats_close(struct bench_nats *n);

/* Release nats.c's process-wide resources at exit (after every connection is closed). */
void bench_nats_library_close(void);

/* A fresh unique inbox prefix ("_INBOX.<nuid>") into out. */
enum status bench_nats_inbox(char *out, size_t outlen) MUSTCHECK;

/* Round trip: every publish made before the call has reached the server. */
enum status bench_nats_flush(struct bench_nats *n, int64_t timeout_ms, char *err,
                             size_t errlen) MUSTCHECK;

/*
 * Core publish of data on subject with reply subject reply (NULL: none) and
 * optional headers. Buffered: never waits for the server (open loop).
 */
enum status bench_nats_publish(struct bench_nats *n, const char *subject, const char *reply,
                               const struct bench_header *headers, int n_headers,
                               const uint8_t *data, size_t len, char *err, size_t errlen) MUSTCHECK;

/*
 * JetStream publish, waiting for the stream's ack (at most timeout_ms);
 * msg_id becomes Nats-Msg-Id.
 */
enum status bench_nats_js_publish(struct bench_nats *n, const char *subject, const char *msg_id,
                                  const struct bench_header *headers, int n_headers,
                                  const uint8_t *data, size_t len, int64_t timeout_ms, char *err,
                                  size_t errlen) MUSTCHECK;

/*
 * Subscribe to subject (wildcards allowed) with handler called on a delivery
 * thread of the library. No pending limit: a slow handler never loses
 * messages (memory grows instead).
 */
enum status bench_nats_subscribe(struct bench_nats *n, const char *subject,
                                 bench_msg_handler handler, void *arg, struct bench_sub **out,
                                 char *err, size_t errlen) MUSTCHECK;

/* Subscribe synchronously: messages wait for bench_nats_next. */
enum status bench_nats_subscribe_sync(struct bench_nats *n, const char *subject,
                                      struct bench_sub **out, char *err, size_t errlen) MUSTCHECK;

/*
 * Next message of a synchronous subscription, waiting at most timeout_ms.
 * STATUS_TIMEOUT when none came. The caller frees *msg (bench_msg_free).
 */
enum status bench_nats_next(struct bench_sub *sub, int64_t timeout_ms,
                            struct bench_msg **msg) MUSTCHECK;

/* Unsubscribe and free; waits until no handler of it runs any more. NULL is a no-op. */
void bench_nats_unsubscribe(struct bench_sub *sub);

/* Messages received by the subscription but not yet handled. */
int bench_nats_pending(struct bench_sub *sub);

/* Accessors; strings are owned by the message. */
const char *bench_msg_subject(const struct bench_msg *m);
const uint8_t *bench_msg_data(const struct bench_msg *m);
size_t bench_msg_len(const struct bench_msg *m);
/* Value of header name, or NULL. */
const char *bench_msg_header(struct bench_msg *m, const char *name);
void bench_msg_free(struct bench_msg *m);

#endif /* SAGAD_BENCH_NATS_H */

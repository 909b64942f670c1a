/*
 * The HTTP API of sagad (libmicrohttpd, one internal thread with its own
 * PostgreSQL connection): POST /v1/sagas/{name}, GET /v1/sagas/{id},
 * GET /metrics, GET /healthz, GET /readyz. The only module that includes
 * microhttpd.h and jansson.h.
 */
#ifndef SAGAD_HTTP_H
#define SAGAD_HTTP_H

#include <stddef.h>

#include "bus.h"
#include "config.h"
#include "status.h"

struct http;

/*
 * Listen on cfg->http_listen ("HOST:PORT"; port 0 picks a free one) and serve
 * in a thread of its own. Starts are forwarded as StartSagaRequest to
 * <prefix>.start.<name> on bus (so every sagad of the queue group can answer
 * them, under the same idempotency and admission rules). The bound address is
 * logged ("http listening on 127.0.0.1:PORT"). cfg and bus must outlive it.
 */
enum status http_start(struct http **out, const struct config *cfg, struct bus *bus, char *err,
                       size_t errlen) MUSTCHECK;

/* Stop serving (waits for the thread) and free; NULL is a no-op. */
void http_stop(struct http *h);

/* The port it listens on. */
int http_port(const struct http *h);

#endif /* SAGAD_HTTP_H */

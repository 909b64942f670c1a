/* Internals shared by the files of the store module (store.c, store_saga.c). */
#ifndef SAGAD_STORE_INT_H
#define SAGAD_STORE_INT_H

#include <libpq-fe.h>

#include "status.h"

struct store {
	PGconn *conn;        /* the connection; one per thread that uses it */
	int prepared;        /* statements prepared on this connection */
	int in_pipeline;     /* pipeline mode entered for the open transaction */
	int queued;          /* statements queued in the pipeline */
	int queue_failed;    /* a queue call could not send */
	PGresult *held;      /* result kept alive for outbox rows */
	char queue_err[256]; /* why the queue failed */
};

/* Map a failed result's SQLSTATE to a status: retry, duplicate or plain error. */
enum status store_status_from_result(const PGresult *res, PGconn *conn);

/* Write "what: <first line of msg>" into err. */
void store_set_err(char *err, size_t errlen, const char *what, const char *msg);

#endif /* SAGAD_STORE_INT_H */

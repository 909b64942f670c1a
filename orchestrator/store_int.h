/* Internals shared by the files of the store module (store.c, store_saga.c). */
#ifndef SAGAD_STORE_INT_H
#define SAGAD_STORE_INT_H

#include <libpq-fe.h>

#include "pg_array.h"
#include "status.h"
#include "store.h"

/* The tables a batch writes, one multi-row statement each, in commit order. */
enum store_table {
	STORE_T_INS_SAGA,
	STORE_T_UPD_SAGA,
	STORE_T_UPS_STEP,
	STORE_T_INS_TRANSITION,
	STORE_T_INS_OUTBOX,
	STORE_T_INS_DEAD_LETTER,
	STORE_T_COUNT
};

#define STORE_BATCH_MAX_COLS 14

/* A prepared multi-row statement: its parameters are the columns' arrays. */
struct store_batch_statement {
	const char *name;      /* prepared statement name */
	const char *sql;       /* text */
	int n_params;          /* columns */
	int planned_each_time; /* sent unprepared: planned with its arguments and the table's size */
};

extern const struct store_batch_statement store_batch_statements[STORE_T_COUNT];

struct store {
	PGconn *conn;            /* the connection; one per thread that uses it */
	int prepared;            /* statements prepared on this connection */
	int in_pipeline;         /* pipeline mode entered (only inside store_commit) */
	int in_batch;            /* store_batch_begin called: the commit writes the queued rows */
	int queue_failed;        /* a queued row could not be stored (out of memory) */
	PGresult *held;          /* result kept alive for outbox rows */
	char queue_err[256];     /* why the queue failed */
	int keep_outbox;         /* store_keep_committed_outbox: keep committed outbox rows */
	PGresult **committed;    /* results of committed outbox inserts not yet taken */
	int n_committed;         /* how many */
	int cap_committed;       /* allocated */
	struct sagacache *cache; /* store_set_cache, or NULL */
	struct sagacache_entry **staged; /* sagas this batch writes, for the cache at commit */
	int n_staged;                    /* how many */
	int cap_staged;                  /* allocated */
	int batch_rows[STORE_T_COUNT];   /* rows queued per table */
	struct pg_array batch_cols[STORE_T_COUNT][STORE_BATCH_MAX_COLS]; /* their columns */
};

/* The columns an outbox row is read with (binary results), for store_outbox_rows. */
#define STORE_OUTBOX_COLUMNS                                                                       \
	"id::text, subject, msg_id, content_type, COALESCE(saga_id::text, ''),"                    \
	" COALESCE(correlation_id, ''), COALESCE(step, ''), COALESCE(attempt::text, ''),"          \
	" COALESCE(traceparent, ''), payload"

/* Append the rows of a result read with STORE_OUTBOX_COLUMNS to out[*n] (room for them). */
void store_outbox_rows(const PGresult *res, struct store_outbox_row *out, int *n);

/* Forget the committed outbox results (PQclear each). */
void store_committed_clear(struct store *s);

/* Close each column's array literal; values[c] points at it. 0 when out of memory. */
int store_batch_params(struct store *s, enum store_table t, const char **values);

/* Forget the staged sagas; with forget, drop their cache entries too (state unknown). */
void store_unstage(struct store *s, int forget);

/* Free the column buffers (store_close). */
void store_batch_free(struct store *s);

/* Map a failed result's SQLSTATE to a status: retry, duplicate or plain error. */
enum status store_status_from_result(const PGresult *res, PGconn *conn);

/* Write "what: <first line of msg>" into err. */
void store_set_err(char *err, size_t errlen, const char *what, const char *msg);

#endif /* SAGAD_STORE_INT_H */

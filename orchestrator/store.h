/* PostgreSQL access: the only module that talks to libpq. */
#ifndef SAGAD_STORE_H
#define SAGAD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "saga.h"
#include "sagacache.h"
#include "status.h"

struct store;

/* One applied migration as recorded in sagad_migrations. */
struct store_migration {
	int version;       /* NNNN from the file name */
	char name[128];    /* file name */
	char checksum[17]; /* FNV-1a 64 of the file, hex */
};

/*
 * Connect to url (libpq URL or key=value; never logged with its password).
 * When schema is non-empty, the session's search_path is set to it; with
 * create_schema it is created first if missing. timeout_ms bounds the
 * connection attempt. On failure *out is untouched, err names the server
 * (password redacted) and the reason, and the status is STATUS_UNAVAILABLE
 * (cannot reach / authenticate) or STATUS_DB.
 */
enum status store_connect(struct store **out, const char *url, const char *schema,
                          int64_t timeout_ms, int create_schema, const char *app_name, char *err,
                          size_t errlen) MUSTCHECK;

/* Close the connection and free s; NULL is a no-op. */
void store_close(struct store *s);

/*
 * Let this connection keep the sagas it writes in cache (NULL: none, the
 * default) and serve store_begin_load from it. Every write of a saga's steps
 * goes with an update of its row, so the row's xmin versions the whole saga.
 * The cache stays the caller's.
 */
void store_set_cache(struct store *s, struct sagacache *cache);

/* Run one statement that returns no rows. */
enum status store_exec(struct store *s, const char *sql, char *err, size_t errlen) MUSTCHECK;

/* True when the connection is lost (a query failed with the server gone); reconnect. */
int store_broken(const struct store *s);

/* Round trip SELECT 1: is the database answering? */
enum status store_ping(struct store *s, char *err, size_t errlen) MUSTCHECK;

/* Take / release the session-level advisory lock that serialises migrations of this schema. */
enum status store_migrate_lock(struct store *s, char *err, size_t errlen) MUSTCHECK;
enum status store_migrate_unlock(struct store *s, char *err, size_t errlen) MUSTCHECK;

/* Create the sagad_migrations bookkeeping table if missing. */
enum status store_migrations_init(struct store *s, char *err, size_t errlen) MUSTCHECK;

/*
 * Read the applied migrations in version order into a new array (*out,
 * caller frees with free()) of *count entries. A missing table reads as none.
 */
enum status store_migrations_applied(struct store *s, struct store_migration **out, size_t *count,
                                     char *err, size_t errlen) MUSTCHECK;

/*
 * Apply one migration in its own transaction together with its bookkeeping
 * row. On failure the transaction is rolled back, err holds PostgreSQL's
 * message, and *error_pos the 1-based character position in sql that
 * PostgreSQL blamed (0 when it gave none).
 */
enum status store_migration_apply(struct store *s, const struct store_migration *m, const char *sql,
                                  int *error_pos, char *err, size_t errlen) MUSTCHECK;

/* ---- sagas (store_saga.c) ---- */

/*
 * One instance, read under its row lock or taken from the saga cache, with
 * the definition it runs. Taken from the cache, version is the row version
 * our last commit gave it: the update of this batch applies only if the row
 * is still at that version, else the whole commit fails (STATUS_DB_RETRY).
 */
struct store_loaded {
	struct saga_inst inst;            /* state, steps, outputs (owned: saga_inst_release) */
	char def_name[SAGA_NAME_MAX + 1]; /* definition name */
	uint32_t def_version;             /* definition version */
	char version[SAGACACHE_VERSION_MAX + 1]; /* "" = read under its row lock */
};

/* One outbox row taken by the relay. Strings point into the result (valid until commit/rollback). */
struct store_outbox_row {
	int64_t id;                 /* row id */
	const char *subject;        /* subject to publish on */
	const char *msg_id;         /* Nats-Msg-Id */
	const char *content_type;   /* Content-Type header */
	const char *saga_id;        /* or "" */
	const char *correlation_id; /* or "" */
	const char *step;           /* or "" */
	const char *attempt;        /* or "" */
	const char *traceparent;    /* or "" */
	struct bytes payload;       /* message body */
};

/* A dead letter to record. */
struct store_dead_letter {
	const char *source_subject; /* where the message came from ("saga" for engine-raised) */
	const char *source_key;     /* "STREAM:SEQ" or "saga:<id>:<seq>": recorded once */
	const char *headers_json;   /* JSON object of the headers, or NULL */
	struct bytes payload;       /* raw message, may be empty */
	const char *reason;         /* why */
	const char *error_class;    /* grouping class */
	const char *saga_id;        /* or NULL */
	const char *correlation_id; /* or NULL */
	const char *step;           /* or NULL */
};

/* A start already recorded under an idempotency key. */
struct store_existing_start {
	char key[SAGA_KEY_MAX + 1];                    /* the idempotency key */
	char saga_id[SAGA_ID_LEN + 1];                 /* the first saga's id */
	char correlation_id[SAGA_CORRELATION_MAX + 1]; /* its correlation id */
	uint32_t version;                              /* its definition version */
	int64_t created_ms;                            /* when it was accepted */
};

/* BEGIN a transaction and read the database clock (ms since the epoch). */
enum status store_begin(struct store *s, int64_t *now_ms, char *err, size_t errlen) MUSTCHECK;

/* ROLLBACK (also leaves pipeline mode); never fails loudly. */
void store_rollback(struct store *s);

/*
 * In the open transaction, lock and load the sagas whose wake_at came at
 * least hold_back_ms ago (database clock), earliest first, at most limit,
 * skipping rows other sagad processes hold. *out is a new array of *n_out
 * entries sorted by id (free with store_loaded_free).
 */
enum status store_load_due(struct store *s, int limit, int64_t hold_back_ms,
                           struct store_loaded **out, int *n_out, char *err,
                           size_t errlen) MUSTCHECK;
void store_loaded_free(struct store_loaded *rows, int n);

/*
 * BEGIN, read the clock, and lock and load the sagas with the given ids
 * (unique; in id order) with their steps: one round trip (a pipeline). Sagas
 * in the saga cache are taken from there instead, with their version (see
 * struct store_loaded; their rows are locked by the update, in any order, so
 * two sagad processes may deadlock: PostgreSQL breaks it, STATUS_DB_RETRY).
 * *out is a new array sorted by id; ids that do not exist are simply absent.
 * On failure nothing stays open.
 */
enum status store_begin_load(struct store *s, const char *const *ids, int n_ids, int64_t *now_ms,
                             struct store_loaded **out, int *n_out, char *err,
                             size_t errlen) MUSTCHECK;

/* Find starts already recorded for these idempotency keys of one definition. */
enum status store_find_starts(struct store *s, const char *def_name, const char *const *keys,
                              int n_keys, struct store_existing_start **out, int *n_out, char *err,
                              size_t errlen) MUSTCHECK;

/*
 * Queue writes (after store_begin / store_begin_load / store_load_due; no reads after this):
 * store_commit writes each table's rows with one multi-row statement, all in
 * one pipeline with the COMMIT, and reports the first failure (rolled back).
 */
enum status store_batch_begin(struct store *s, char *err, size_t errlen) MUSTCHECK;
void store_queue_insert_saga(struct store *s, const struct saga_def *def,
                             const struct saga_inst *inst, const char *idempotency_key,
                             const char *labels_json);
/*
 * version: the row version inst was taken from the cache with (struct
 * store_loaded), or "" when it was read under its row lock.
 * progressed: some event was applied (moves updated_at); else only seq and
 * timers change. The stored wake_at is kept while it is still ahead and no
 * later than inst->wake_at_ms: it is the time sagad looks at the saga next,
 * never later than its next timer (engine_recompute_wake on that pass).
 */
void store_queue_update_saga(struct store *s, const struct saga_def *def,
                             const struct saga_inst *inst, const char *version, int progressed);
void store_queue_steps(struct store *s, const struct saga_def *def, struct saga_inst *inst);
void store_queue_transition(struct store *s, const struct saga_def *def,
                            const struct saga_inst *inst, const struct plan *plan,
                            const char *event_name);
void store_queue_outbox(struct store *s, const char *subject, const char *msg_id,
                        const char *content_type, const char *saga_id, const char *correlation_id,
                        const char *step, uint32_t attempt, const char *traceparent,
                        struct bytes payload);
void store_queue_dead_letter(struct store *s, const struct store_dead_letter *dl);
enum status store_commit(struct store *s, char *err, size_t errlen) MUSTCHECK;

/*
 * Take up to limit outbox rows written at least min_age_ms ago, oldest first,
 * skipping rows another relay holds, and delete them in the open
 * transaction: commit after JetStream acked them, roll back otherwise (they
 * stay for the next pass). Opens the transaction itself. *rows is valid until
 * store_outbox_done. This is the sweep for rows nobody published right after
 * their commit (a crash, a failed publish, sagactl's writes).
 */
enum status store_outbox_take(struct store *s, int limit, int64_t min_age_ms,
                              struct store_outbox_row **rows, int *n_rows, char *err,
                              size_t errlen) MUSTCHECK;
enum status store_outbox_done(struct store *s, int publish_ok, char *err, size_t errlen) MUSTCHECK;

/*
 * Publishing right after the commit: with keep on (sagad), store_commit keeps
 * the outbox rows it inserted, ids included, until store_outbox_committed
 * hands them out; *rows (free() the array) points into results held until
 * store_outbox_committed_done. Off (the default), nothing is kept.
 */
void store_keep_committed_outbox(struct store *s, int keep);
enum status store_outbox_committed(struct store *s, struct store_outbox_row **rows,
                                   int *n_rows) MUSTCHECK;
void store_outbox_committed_done(struct store *s);

/* Delete published outbox rows by id: one round trip, asynchronous commit. */
enum status store_outbox_delete(struct store *s, const int64_t *ids, int n, char *err,
                                size_t errlen) MUSTCHECK;

/* Sagas running or compensating (for the admission limit). */
enum status store_count_in_flight(struct store *s, int64_t *count, char *err,
                                  size_t errlen) MUSTCHECK;

/*
 * Register a definition (already validated, defaults applied): identical to
 * the latest version (same hash) -> *created = 0 and that version; otherwise
 * a new version. Serialised per name with an advisory lock; own transaction.
 */
enum status store_define(struct store *s, const struct saga_def *def, struct bytes body,
                         const char *hash, const char *source, uint32_t *version, int *created,
                         char *err, size_t errlen) MUSTCHECK;

/*
 * Read a definition body: version 0 = the latest. *body is malloc'd (caller
 * frees); STATUS_NOT_FOUND when there is none. Works inside or outside a
 * transaction (not in pipeline mode).
 */
enum status store_definition_get(struct store *s, const char *name, uint32_t version,
                                 struct bytes *body, uint32_t *found_version, char *err,
                                 size_t errlen) MUSTCHECK;

/* Counts for the metrics gauges. */
struct store_gauges {
	int64_t running;        /* sagas running */
	int64_t compensating;   /* sagas compensating */
	int64_t failed;         /* sagas failed */
	int64_t outbox_rows;    /* unsent outbox rows */
	double outbox_oldest_s; /* age of the oldest unsent row in seconds (0 when none) */
};

/* Read the gauges (one round trip; outside any transaction). */
enum status store_read_gauges(struct store *s, struct store_gauges *g, char *err,
                              size_t errlen) MUSTCHECK;

/*
 * One saga as a JSON document (state, definition, steps with attempts,
 * errors and outputs, and the full timeline) built by PostgreSQL. *json is
 * malloc'd (caller frees). STATUS_NOT_FOUND when there is no such saga.
 */
enum status store_saga_json(struct store *s, const char *saga_id, char **json, char *err,
                            size_t errlen) MUSTCHECK;

#endif /* SAGAD_STORE_H */

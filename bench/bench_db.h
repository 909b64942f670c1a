/* PostgreSQL for saga-bench: the only bench module that includes libpq-fe.h (read-only figures). */
#ifndef SAGAD_BENCH_DB_H
#define SAGAD_BENCH_DB_H

#include <stddef.h>

#include "status.h"

/* One connection (opaque); use it from one thread. */
struct bench_db;

/*
 * Connect to url; when schema is non-empty the session's search_path becomes
 * "schema, public". *out is written only on success; err names the reason
 * (STATUS_UNAVAILABLE when the server cannot be reached), never the password.
 */
enum status bench_db_connect(struct bench_db **out, const char *url, const char *schema, char *err,
                             size_t errlen) MUSTCHECK;

/* Close and free; NULL is a no-op. */
void bench_db_close(struct bench_db *db);

/*
 * Run one query with nparams text parameters and read the first row's first
 * nout columns as numbers into out (NULL and missing rows read as NaN).
 * STATUS_DB with PostgreSQL's message in err when the query fails. A lost
 * connection (PostgreSQL restarted) is reset and the query tried once more.
 */
enum status bench_db_numbers(struct bench_db *db, const char *sql, int nparams,
                             const char *const *params, double *out, int nout, char *err,
                             size_t errlen) MUSTCHECK;

#endif /* SAGAD_BENCH_DB_H */

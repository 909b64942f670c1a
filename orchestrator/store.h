/* PostgreSQL access: the only module that talks to libpq. */
#ifndef SAGAD_STORE_H
#define SAGAD_STORE_H

#include <stddef.h>
#include <stdint.h>

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

/* Run one statement that returns no rows. */
enum status store_exec(struct store *s, const char *sql, char *err, size_t errlen) MUSTCHECK;

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

#endif /* SAGAD_STORE_H */

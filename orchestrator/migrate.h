/* Schema migrations: numbered SQL files applied in order, each once. */
#ifndef SAGAD_MIGRATE_H
#define SAGAD_MIGRATE_H

#include <stddef.h>

#include "status.h"
#include "store.h"

/*
 * Apply every migration in dir (files NNNN_name.sql) that the database does
 * not have yet: in version order, each in its own transaction, all under an
 * advisory lock so that concurrent runs are safe (the second waits, then
 * finds nothing to do). *applied receives how many were applied.
 *
 * Refuses (STATUS_CONFIG) when an applied file was edited (checksum), when the
 * database has a version dir lacks, or when two files share a version. A
 * failing migration leaves the schema as it was; err names the file, the line
 * when PostgreSQL gives a position, and the reason.
 */
enum status migrate_run(struct store *s, const char *dir, int *applied, char *err,
                        size_t errlen) MUSTCHECK;

/*
 * Compare dir with the database without changing anything: STATUS_OK when
 * every migration is applied (and unchanged); STATUS_CONFIG with err saying
 * what is pending or different otherwise. *pending receives the count of
 * unapplied files.
 */
enum status migrate_check(struct store *s, const char *dir, int *pending, char *err,
                          size_t errlen) MUSTCHECK;

/* 1-based line of the 1-based character position pos in text (UTF-8 aware). */
int migrate_line_of(const char *text, int pos);

#endif /* SAGAD_MIGRATE_H */

/* Schema migrations: numbered SQL files applied in order, each once. */
#include "migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define MIGRATION_MAX_BYTES (16 * 1024 * 1024)

/* One migration file found on disk. */
struct migration_file {
	struct store_migration m; /* version, file name, checksum */
	char *sql;                /* file contents, NUL-terminated */
};

/* NNNN_name.sql with a lower-case name. */
static int
is_migration_name(const char *name)
{
	size_t n = strlen(name);

	if (n < 10 || strcmp(name + n - 4, ".sql") != 0)
		return 0;
	for (int i = 0; i < 4; i++) {
		if (!isdigit((unsigned char)name[i]))
			return 0;
	}
	if (name[4] != '_')
		return 0;
	for (size_t i = 5; i < n - 4; i++) {
		unsigned char c = (unsigned char)name[i];

		if (!(islower(c) || isdigit(c) || c == '_'))
			return 0;
	}
	return 1;
}

static int
filter_migration(const struct dirent *d)
{
	return is_migration_name(d->d_name);
}

static void
checksum_hex(const char *data, size_t len, char out[17])
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)data[i];
		h *= UINT64_C(0x100000001b3);
	}
	snprintf(out, 17, "%016" PRIx64, h);
}

static enum status
read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long size;
	enum status st = STATUS_OK;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return STATUS_IO;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		st = STATUS_IO;
		goto cleanup;
	}
	if (size > MIGRATION_MAX_BYTES) {
		snprintf(err, errlen, "%s: larger than %d bytes", path, MIGRATION_MAX_BYTES);
		st = STATUS_TOO_LARGE;
		goto cleanup;
	}
	buf = malloc((size_t)size + 1);
	if (buf == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		st = STATUS_NOMEM;
		goto cleanup;
	}
	if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
		snprintf(err, errlen, "%s: short read", path);
		st = STATUS_IO;
		goto cleanup;
	}
	buf[size] = '\0';
	*out = buf;
	*len = (size_t)size;
	buf = NULL;
cleanup:
	free(buf);
	fclose(f);
	return st;
}

static void
free_files(struct migration_file *files, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(files[i].sql);
	free(files);
}

/* Load every migration file of dir, sorted by name, with checksums. */
static enum status
load_dir(const char *dir, struct migration_file **out, size_t *count, char *err, size_t errlen)
{
	struct dirent **names = NULL;
	struct migration_file *files = NULL;
	enum status st = STATUS_OK;
	int n = scandir(dir, &names, filter_migration, alphasort);
	size_t loaded = 0;

	if (n < 0) {
		snprintf(err, errlen, "migrations_dir %s: %s", dir, strerror(errno));
		return STATUS_CONFIG;
	}
	if (n > 0) {
		files = calloc((size_t)n, sizeof(*files));
		if (files == NULL) {
			snprintf(err, errlen, "out of memory");
			st = STATUS_NOMEM;
			goto cleanup;
		}
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		size_t len = 0;
		struct migration_file *f = &files[i];

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		st = read_file(path, &f->sql, &len, err, errlen);
		if (st != STATUS_OK)
			goto cleanup;
		loaded++;
		f->m.version = atoi(names[i]->d_name);
		snprintf(f->m.name, sizeof(f->m.name), "%s", names[i]->d_name);
		checksum_hex(f->sql, len, f->m.checksum);
		if (i > 0 && files[i - 1].m.version == f->m.version) {
			snprintf(err, errlen, "migrations %s and %s share version %04d",
			         files[i - 1].m.name, f->m.name, f->m.version);
			st = STATUS_CONFIG;
			goto cleanup;
		}
	}
	*out = files;
	*count = (size_t)n;
	files = NULL;
cleanup:
	if (files != NULL)
		free_files(files, loaded);
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return st;
}

int
migrate_line_of(const char *text, int pos)
{
	int line = 1;
	int chars = 0;

	for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
		if ((*p & 0xC0) == 0x80)
			continue; /* UTF-8 continuation byte: same character */
		if (++chars >= pos)
			break;
		if (*p == '\n')
			line++;
	}
	return line;
}

/*
 * Check the applied list against the files: same name and checksum for each
 * applied version, no applied version missing from dir. *next receives the
 * index of the first file not applied yet.
 */
static enum status
compare(const struct migration_file *files, size_t nfiles, const struct store_migration *applied,
        size_t napplied, size_t *pending, char *err, size_t errlen)
{
	size_t count = 0;

	for (size_t a = 0; a < napplied; a++) {
		const struct migration_file *match = NULL;

		for (size_t f = 0; f < nfiles; f++) {
			if (files[f].m.version == applied[a].version)
				match = &files[f];
		}
		if (match == NULL) {
			snprintf(err, errlen,
			         "the database has migration %s, which is not in the migrations "
			         "folder (is this sagad older than the schema?)",
			         applied[a].name);
			return STATUS_CONFIG;
		}
		if (strcmp(match->m.checksum, applied[a].checksum) != 0) {
			snprintf(err, errlen,
			         "migration %s was changed after it was applied; add a new "
			         "migration instead of editing an applied one",
			         match->m.name);
			return STATUS_CONFIG;
		}
	}
	for (size_t f = 0; f < nfiles; f++) {
		int found = 0;

		for (size_t a = 0; a < napplied; a++)
			found |= applied[a].version == files[f].m.version;
		count += !found;
	}
	*pending = count;
	return STATUS_OK;
}

enum status
migrate_run(struct store *s, const char *dir, int *applied_count, char *err, size_t errlen)
{
	struct migration_file *files = NULL;
	struct store_migration *applied = NULL;
	size_t nfiles = 0, napplied = 0, pending = 0;
	int done = 0;
	int locked = 0;
	enum status st;
	char ignored[128];

	st = load_dir(dir, &files, &nfiles, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;
	st = store_migrate_lock(s, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;
	locked = 1;
	st = store_migrations_init(s, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;
	/* Read what is applied only now, under the lock: a concurrent run may have finished. */
	st = store_migrations_applied(s, &applied, &napplied, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;
	st = compare(files, nfiles, applied, napplied, &pending, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;

	for (size_t f = 0; f < nfiles; f++) {
		int seen = 0;
		int pos = 0;
		char pgerr[768];

		for (size_t a = 0; a < napplied; a++)
			seen |= applied[a].version == files[f].m.version;
		if (seen)
			continue;
		st = store_migration_apply(s, &files[f].m, files[f].sql, &pos, pgerr,
		                           sizeof(pgerr));
		if (st != STATUS_OK) {
			if (pos > 0)
				snprintf(err, errlen, "migration %s failed at line %d: %s",
				         files[f].m.name, migrate_line_of(files[f].sql, pos),
				         pgerr);
			else
				snprintf(err, errlen, "migration %s failed: %s", files[f].m.name,
				         pgerr);
			goto cleanup;
		}
		log_info("applied migration %s", files[f].m.name);
		done++;
	}
	*applied_count = done;
cleanup:
	if (locked && store_migrate_unlock(s, ignored, sizeof(ignored)) != STATUS_OK) {
		/* Closing the session releases the lock anyway. */
	}
	free(applied);
	free_files(files, nfiles);
	return st;
}

enum status
migrate_check(struct store *s, const char *dir, int *pending, char *err, size_t errlen)
{
	struct migration_file *files = NULL;
	struct store_migration *applied = NULL;
	size_t nfiles = 0, napplied = 0, count = 0;
	enum status st;

	st = load_dir(dir, &files, &nfiles, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;
	st = store_migrations_applied(s, &applied, &napplied, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;
	st = compare(files, nfiles, applied, napplied, &count, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;
	*pending = (int)count;
	if (count > 0) {
		snprintf(err, errlen, "%zu migration(s) pending: run `sagad migrate` first", count);
		st = STATUS_CONFIG;
	}
cleanup:
	free(applied);
	free_files(files, nfiles);
	return st;
}

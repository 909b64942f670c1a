/* Definitions in memory: versions are immutable, so each is read and decoded once. */
#include "defcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "definition.h"

/* The latest version of one name, as last read. */
struct latest {
	char name[SAGA_NAME_MAX + 1]; /* definition name */
	uint32_t version;             /* its latest version */
	int64_t read_ms;              /* when that was read */
};

struct defcache {
	struct saga_def **defs; /* every (name, version) decoded so far */
	int n_defs;             /* entries used */
	int cap_defs;           /* entries allocated */
	struct latest *latest;  /* latest version per name */
	int n_latest;           /* entries used */
	int cap_latest;         /* entries allocated */
};

enum status
defcache_new(struct defcache **out)
{
	struct defcache *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return STATUS_NOMEM;
	*out = c;
	return STATUS_OK;
}

void
defcache_free(struct defcache *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < c->n_defs; i++)
		free(c->defs[i]);
	free(c->defs);
	free(c->latest);
	free(c);
}

static const struct saga_def *
find(const struct defcache *c, const char *name, uint32_t version)
{
	for (int i = 0; i < c->n_defs; i++) {
		if (c->defs[i]->version == version && strcmp(c->defs[i]->name, name) == 0)
			return c->defs[i];
	}
	return NULL;
}

static struct latest *
find_latest(struct defcache *c, const char *name)
{
	for (int i = 0; i < c->n_latest; i++) {
		if (strcmp(c->latest[i].name, name) == 0)
			return &c->latest[i];
	}
	return NULL;
}

static enum status
remember_latest(struct defcache *c, const char *name, uint32_t version, int64_t now_ms)
{
	struct latest *l = find_latest(c, name);

	if (l == NULL) {
		if (c->n_latest == c->cap_latest) {
			int cap = c->cap_latest > 0 ? 2 * c->cap_latest : 16;
			struct latest *grown = realloc(c->latest, (size_t)cap * sizeof(*grown));

			if (grown == NULL)
				return STATUS_NOMEM;
			c->latest = grown;
			c->cap_latest = cap;
		}
		l = &c->latest[c->n_latest++];
		snprintf(l->name, sizeof(l->name), "%s", name);
	}
	l->version = version;
	l->read_ms = now_ms;
	return STATUS_OK;
}

/* Read (name, version) from the database, decode it and keep it. */
static enum status
load(struct defcache *c, struct store *db, const char *name, uint32_t version,
     const struct saga_def **out, uint32_t *found, char *err, size_t errlen)
{
	struct bytes body = {0};
	struct saga_def *def = NULL;
	const struct saga_def *have;
	enum status st;

	st = store_definition_get(db, name, version, &body, found, err, errlen);
	if (st != STATUS_OK)
		return st;
	have = find(c, name, *found);
	if (have != NULL) {
		free(body.data);
		*out = have;
		return STATUS_OK;
	}
	def = malloc(sizeof(*def));
	if (def == NULL) {
		st = STATUS_NOMEM;
		goto cleanup;
	}
	st = codec_decode_definition(body.data, body.len, def, err, errlen);
	if (st != STATUS_OK)
		goto cleanup;
	definition_apply_defaults(def);
	def->version = *found;
	if (c->n_defs == c->cap_defs) {
		int cap = c->cap_defs > 0 ? 2 * c->cap_defs : 16;
		struct saga_def **grown = realloc(c->defs, (size_t)cap * sizeof(*grown));

		if (grown == NULL) {
			st = STATUS_NOMEM;
			goto cleanup;
		}
		c->defs = grown;
		c->cap_defs = cap;
	}
	c->defs[c->n_defs++] = def;
	*out = def;
	def = NULL;
cleanup:
	free(def);
	free(body.data);
	if (st == STATUS_NOMEM)
		snprintf(err, errlen, "out of memory");
	return st;
}

enum status
defcache_get(struct defcache *c, struct store *db, const char *name, uint32_t version,
             int64_t now_ms, const struct saga_def **out, char *err, size_t errlen)
{
	const struct saga_def *def;
	struct latest *l;
	uint32_t found = 0;
	enum status st;

	if (version != 0) {
		def = find(c, name, version);
		if (def != NULL) {
			*out = def;
			return STATUS_OK;
		}
		return load(c, db, name, version, out, &found, err, errlen);
	}
	l = find_latest(c, name);
	if (l != NULL && now_ms - l->read_ms < DEFCACHE_LATEST_TTL_MS) {
		def = find(c, name, l->version);
		if (def != NULL) {
			*out = def;
			return STATUS_OK;
		}
	}
	st = load(c, db, name, 0, out, &found, err, errlen);
	if (st != STATUS_OK)
		return st;
	return remember_latest(c, name, found, now_ms);
}

enum status
defcache_register(struct store *db, struct saga_def *def, const char *source, uint32_t *version,
                  int *created, char *field, size_t fieldlen, char *err, size_t errlen)
{
	struct bytes body = {0};
	char hash[17];
	enum status st;

	field[0] = '\0';
	def->version = 0;
	definition_apply_defaults(def);
	st = definition_validate(def, field, fieldlen, err, errlen);
	if (st != STATUS_OK)
		return st;
	st = codec_encode_definition(def, &body);
	if (st == STATUS_OK)
		st = codec_definition_hash(def, hash);
	if (st != STATUS_OK) {
		snprintf(err, errlen, "out of memory");
		goto cleanup;
	}
	st = store_define(db, def, body, hash, source, version, created, err, errlen);
	if (st == STATUS_OK)
		def->version = *version;
cleanup:
	free(body.data);
	return st;
}

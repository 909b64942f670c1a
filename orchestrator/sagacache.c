/*
 * The cache of sagas this process wrote last: an open-addressing hash table
 * (linear probing, deletion by backward shift) of entries on a doubly linked
 * list, most recently written first. An entry holds the saga's bytes up to its
 * last step (a 3-step saga takes about 1.6 KiB, not the 10 KiB of a full
 * struct saga_inst) and its own copies of input and outputs.
 */
#include "sagacache.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sagacache_entry {
	struct sagacache_entry *prev; /* more recently written, or NULL */
	struct sagacache_entry *next; /* less recently written, or NULL */
	char def_name[SAGA_NAME_MAX + 1];
	uint32_t def_version;
	char version[SAGACACHE_VERSION_MAX + 1]; /* row xmin after our commit */
	int n_steps;                             /* steps kept */
	size_t size;                             /* bytes of the saga kept in data */
	unsigned char data[];                    /* struct saga_inst, up to steps[n_steps] */
};

struct sagacache {
	struct sagacache_entry **slots; /* hash table, NULL = empty */
	size_t mask;                    /* slots - 1 (a power of two) */
	struct sagacache_entry *head;   /* most recently written */
	struct sagacache_entry *tail;   /* least recently written: evicted first */
	int count;                      /* entries */
	int capacity;                   /* most entries */
};

/* The bytes of a saga_inst up to and including step n_steps - 1. */
static size_t
inst_size(int n_steps)
{
	return offsetof(struct saga_inst, steps) + (size_t)n_steps * sizeof(struct step_inst);
}

/* The saga id, at the start of the kept bytes. */
const char *
sagacache_entry_id(const struct sagacache_entry *e)
{
	return (const char *)e->data + offsetof(struct saga_inst, id);
}

/* FNV-1a over the id's text. */
static size_t
hash_id(const char *id)
{
	uint64_t h = 1469598103934665603ull;

	for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
		h ^= *p;
		h *= 1099511628211ull;
	}
	return (size_t)h;
}

enum status
sagacache_new(int capacity, struct sagacache **out)
{
	struct sagacache *c;
	size_t slots = 8;

	*out = NULL;
	if (capacity < 1)
		return STATUS_INVALID;
	/* At most half full: short probe sequences. */
	while (slots < 2 * (size_t)capacity)
		slots *= 2;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return STATUS_NOMEM;
	c->slots = calloc(slots, sizeof(*c->slots));
	if (c->slots == NULL) {
		free(c);
		return STATUS_NOMEM;
	}
	c->mask = slots - 1;
	c->capacity = capacity;
	*out = c;
	return STATUS_OK;
}

/* The inputs and outputs an entry owns (pointers inside its kept bytes). */
static void
entry_release(struct sagacache_entry *e)
{
	struct bytes b;

	memcpy(&b, e->data + offsetof(struct saga_inst, input), sizeof(b));
	free(b.data);
	for (int i = 0; i < e->n_steps; i++) {
		memcpy(&b,
		       e->data + offsetof(struct saga_inst, steps) +
		               (size_t)i * sizeof(struct step_inst) +
		               offsetof(struct step_inst, output),
		       sizeof(b));
		free(b.data);
	}
}

void
sagacache_discard(struct sagacache_entry *e)
{
	if (e == NULL)
		return;
	entry_release(e);
	free(e);
}

void
sagacache_free(struct sagacache *c)
{
	if (c == NULL)
		return;
	for (struct sagacache_entry *e = c->head, *next; e != NULL; e = next) {
		next = e->next;
		sagacache_discard(e);
	}
	free(c->slots);
	free(c);
}

/* The slot holding id, or the empty slot where it would go. */
static size_t
find_slot(const struct sagacache *c, const char *id)
{
	size_t i = hash_id(id) & c->mask;

	while (c->slots[i] != NULL && strcmp(sagacache_entry_id(c->slots[i]), id) != 0)
		i = (i + 1) & c->mask;
	return i;
}

bool
sagacache_has(const struct sagacache *c, const char *id)
{
	return c->count > 0 && c->slots[find_slot(c, id)] != NULL;
}

static void
list_unlink(struct sagacache *c, struct sagacache_entry *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

/* Empty slot i and move later entries of its probe run back (no tombstones). */
static void
slot_clear(struct sagacache *c, size_t i)
{
	size_t j = i;

	c->slots[i] = NULL;
	for (;;) {
		size_t home;

		j = (j + 1) & c->mask;
		if (c->slots[j] == NULL)
			return;
		home = hash_id(sagacache_entry_id(c->slots[j])) & c->mask;
		/* Move the entry at j to i when i lies on its way from home to j. */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			c->slots[i] = c->slots[j];
			c->slots[j] = NULL;
			i = j;
		}
	}
}

/* Remove the entry in slot i from table and list, and free it. */
static void
remove_at(struct sagacache *c, size_t i)
{
	struct sagacache_entry *e = c->slots[i];

	list_unlink(c, e);
	slot_clear(c, i);
	c->count--;
	sagacache_discard(e);
}

void
sagacache_drop(struct sagacache *c, const char *id)
{
	size_t i;

	if (c == NULL || c->count == 0)
		return;
	i = find_slot(c, id);
	if (c->slots[i] != NULL)
		remove_at(c, i);
}

/* A copy of len bytes (NULL for none); *ok cleared when out of memory. */
static uint8_t *
copy_bytes(const uint8_t *data, size_t len, bool *ok)
{
	uint8_t *p;

	if (len == 0 || data == NULL)
		return NULL;
	p = malloc(len);
	if (p == NULL) {
		*ok = false;
		return NULL;
	}
	memcpy(p, data, len);
	return p;
}

struct sagacache_entry *
sagacache_stage(const struct saga_inst *inst, int n_steps, const char *def_name,
                uint32_t def_version)
{
	size_t size = inst_size(n_steps);
	struct sagacache_entry *e = calloc(1, sizeof(*e) + size);
	bool ok = true;

	if (e == NULL)
		return NULL;
	e->n_steps = n_steps;
	e->size = size;
	snprintf(e->def_name, sizeof(e->def_name), "%s", def_name);
	e->def_version = def_version;
	/* Byte access only: the entry holds fewer steps than a struct saga_inst. */
	memcpy(e->data, inst, size);
	{
		struct bytes b = {copy_bytes(inst->input.data, inst->input.len, &ok),
		                  inst->input.len};

		if (b.data == NULL)
			b.len = 0;
		memcpy(e->data + offsetof(struct saga_inst, input), &b, sizeof(b));
	}
	for (int i = 0; i < n_steps; i++) {
		const struct step_inst *from = &inst->steps[i];
		unsigned char *to = e->data + offsetof(struct saga_inst, steps) +
		                    (size_t)i * sizeof(struct step_inst);
		struct bytes b = {copy_bytes(from->output.data, from->output.len, &ok),
		                  from->output.len};
		bool clean = false;

		if (b.data == NULL)
			b.len = 0;
		memcpy(to + offsetof(struct step_inst, output), &b, sizeof(b));
		memcpy(to + offsetof(struct step_inst, dirty), &clean, sizeof(clean));
	}
	if (!ok) {
		sagacache_discard(e);
		return NULL;
	}
	return e;
}

void
sagacache_commit(struct sagacache *c, struct sagacache_entry *e, const char *version)
{
	enum saga_state state;
	size_t i;

	memcpy(&state, e->data + offsetof(struct saga_inst, state), sizeof(state));
	sagacache_drop(c, sagacache_entry_id(e));
	/* A saga that ended hears from us again only by a late reply: no room for it. */
	if (state == SAGA_COMPLETED || state == SAGA_COMPENSATED || state == SAGA_RESOLVED) {
		sagacache_discard(e);
		return;
	}
	snprintf(e->version, sizeof(e->version), "%s", version);
	if (c->count >= c->capacity)
		remove_at(c, find_slot(c, sagacache_entry_id(c->tail)));
	i = find_slot(c, sagacache_entry_id(e));
	c->slots[i] = e;
	e->prev = NULL;
	e->next = c->head;
	if (c->head != NULL)
		c->head->prev = e;
	c->head = e;
	if (c->tail == NULL)
		c->tail = e;
	c->count++;
}

bool
sagacache_get(struct sagacache *c, const char *id, struct saga_inst *inst,
              char def_name[SAGA_NAME_MAX + 1], uint32_t *def_version,
              char version[SAGACACHE_VERSION_MAX + 1])
{
	struct sagacache_entry *e;
	bool ok = true;

	if (c == NULL || c->count == 0)
		return false;
	e = c->slots[find_slot(c, id)];
	if (e == NULL)
		return false;
	memset(inst, 0, sizeof(*inst));
	memcpy(inst, e->data, e->size);
	inst->input.data = copy_bytes(inst->input.data, inst->input.len, &ok);
	for (int i = 0; i < e->n_steps; i++)
		inst->steps[i].output.data =
		        copy_bytes(inst->steps[i].output.data, inst->steps[i].output.len, &ok);
	if (!ok) {
		saga_inst_release(inst);
		memset(inst, 0, sizeof(*inst));
		return false;
	}
	snprintf(def_name, SAGA_NAME_MAX + 1, "%s", e->def_name);
	*def_version = e->def_version;
	snprintf(version, SAGACACHE_VERSION_MAX + 1, "%s", e->version);
	return true;
}

int
sagacache_count(const struct sagacache *c)
{
	return c != NULL ? c->count : 0;
}

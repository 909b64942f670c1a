/* PostgreSQL array literals built in memory: the parameters of multi-row statements. */
#ifndef SAGAD_PG_ARRAY_H
#define SAGAD_PG_ARRAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One array literal ("{elem,elem,...}") grown element by element. Start from
 * {0}; pg_array_reset empties it and keeps the buffer for the next batch. An
 * element that cannot be added (out of memory) marks the array failed:
 * pg_array_close then returns NULL.
 */
struct pg_array {
	char *buf;   /* "{elem,elem" while elements are added (no closing brace) */
	size_t len;  /* bytes used */
	size_t cap;  /* bytes allocated (kept by pg_array_reset) */
	size_t n;    /* elements added */
	bool failed; /* an element did not fit in memory */
};

/* Empty the array (no elements, not failed); the buffer is kept. */
void pg_array_reset(struct pg_array *a);

/* Release the buffer; the array is {0} again. NULL is a no-op. */
void pg_array_free(struct pg_array *a);

/* Append a text element, quoted and escaped; NULL text appends SQL NULL. */
void pg_array_text(struct pg_array *a, const char *text);

/* Append a bytea element in hex form; NULL data appends SQL NULL. */
void pg_array_bytes(struct pg_array *a, const uint8_t *data, size_t len);

/* Append an integer element. */
void pg_array_int(struct pg_array *a, int64_t v);

/* Append a boolean element. */
void pg_array_bool(struct pg_array *a, bool v);

/*
 * The finished literal ("{}" when empty), owned by the array and valid until
 * the next change to it; NULL when an element failed or memory ran out.
 * More elements may be appended afterwards (the closing brace is not kept).
 */
const char *pg_array_close(struct pg_array *a);

#endif /* SAGAD_PG_ARRAY_H */

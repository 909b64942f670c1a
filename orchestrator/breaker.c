/*
 * Per-target circuit breakers: after breaker_failures consecutive failed
 * attempts (retryable failures and timeouts) to one subject, retries to it are
 * held for a cool-down; then one probe goes out, and its outcome closes the
 * circuit or opens it again. Used by the main loop only (not thread-safe).
 */
#include "breaker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "saga.h"

/* One target's circuit. */
struct circuit {
	char subject[SAGA_SUBJECT_MAX + 1]; /* the target */
	int failures;                       /* consecutive failures */
	bool open;                          /* retries are held */
	int64_t open_until_ms;              /* end of the current cool-down */
};

struct breaker_set {
	int threshold;            /* failures that open a circuit; 0 = off */
	int64_t cooldown_ms;      /* how long an open circuit holds retries */
	struct circuit *circuits; /* one per subject seen */
	int n;                    /* used */
	int cap;                  /* allocated */
	int n_open;               /* open now */
};

enum status
breaker_new(struct breaker_set **out, int threshold, int64_t cooldown_ms)
{
	struct breaker_set *b = calloc(1, sizeof(*b));

	if (b == NULL)
		return STATUS_NOMEM;
	b->threshold = threshold;
	b->cooldown_ms = cooldown_ms;
	*out = b;
	return STATUS_OK;
}

void
breaker_free(struct breaker_set *b)
{
	if (b == NULL)
		return;
	free(b->circuits);
	free(b);
}

static struct circuit *
find(struct breaker_set *b, const char *subject, bool create)
{
	for (int i = 0; i < b->n; i++) {
		if (strcmp(b->circuits[i].subject, subject) == 0)
			return &b->circuits[i];
	}
	if (!create)
		return NULL;
	if (b->n == b->cap) {
		int cap = b->cap > 0 ? 2 * b->cap : 16;
		struct circuit *grown = realloc(b->circuits, (size_t)cap * sizeof(*grown));

		if (grown == NULL)
			return NULL; /* no memory: behave as closed */
		b->circuits = grown;
		b->cap = cap;
	}
	memset(&b->circuits[b->n], 0, sizeof(b->circuits[b->n]));
	snprintf(b->circuits[b->n].subject, sizeof(b->circuits[b->n].subject), "%s", subject);
	return &b->circuits[b->n++];
}

static void
set_open(struct breaker_set *b, struct circuit *c, bool open)
{
	if (c->open != open) {
		b->n_open += open ? 1 : -1;
		metrics_set_breakers_open(b->n_open);
	}
	c->open = open;
}

void
breaker_record(struct breaker_set *b, const char *subject, bool ok, int64_t now_ms)
{
	struct circuit *c;

	if (b == NULL || b->threshold == 0)
		return;
	c = find(b, subject, !ok);
	if (c == NULL)
		return;
	if (ok) {
		if (c->open)
			log_info("circuit to %s closed: a probe succeeded", subject);
		c->failures = 0;
		set_open(b, c, false);
		return;
	}
	c->failures++;
	if (c->open) {
		/* The probe failed: another cool-down. */
		c->open_until_ms = now_ms + b->cooldown_ms;
		return;
	}
	if (c->failures >= b->threshold) {
		set_open(b, c, true);
		c->open_until_ms = now_ms + b->cooldown_ms;
		metrics_add(M_BREAKER_OPENED, 1);
		log_warn("circuit to %s opened after %d consecutive failures: retries held %lld ms",
		         subject, c->failures, (long long)b->cooldown_ms);
	}
}

bool
breaker_allow(struct breaker_set *b, const char *subject, int64_t now_ms, int64_t *until_ms)
{
	struct circuit *c;

	if (b == NULL || b->threshold == 0)
		return true;
	c = find(b, subject, false);
	if (c == NULL || !c->open)
		return true;
	if (now_ms >= c->open_until_ms) {
		/* Half-open: this retry is the probe; the others wait for its outcome. */
		c->open_until_ms = now_ms + b->cooldown_ms;
		return true;
	}
	*until_ms = c->open_until_ms;
	return false;
}

int
breaker_open_count(const struct breaker_set *b)
{
	return b != NULL ? b->n_open : 0;
}

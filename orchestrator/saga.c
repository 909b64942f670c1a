/* Names, parsing and validation helpers of the saga domain types. */
#include "saga.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const char *const saga_state_names[] = {
        [SAGA_RUNNING] = "running",     [SAGA_COMPENSATING] = "compensating",
        [SAGA_COMPLETED] = "completed", [SAGA_COMPENSATED] = "compensated",
        [SAGA_FAILED] = "failed",       [SAGA_RESOLVED] = "resolved",
};

static const char *const step_state_names[] = {
        [STEP_PENDING] = "pending",
        [STEP_RUNNING] = "running",
        [STEP_WAITING_RETRY] = "waiting_retry",
        [STEP_SUCCEEDED] = "succeeded",
        [STEP_FAILED] = "failed",
        [STEP_COMPENSATING] = "compensating",
        [STEP_COMPENSATION_WAITING_RETRY] = "compensation_waiting_retry",
        [STEP_COMPENSATED] = "compensated",
        [STEP_COMPENSATION_FAILED] = "compensation_failed",
};

const char *
saga_state_name(enum saga_state s)
{
	if ((int)s >= SAGA_RUNNING && (int)s <= SAGA_RESOLVED)
		return saga_state_names[s];
	return "unknown";
}

const char *
step_state_name(enum step_state s)
{
	if ((int)s >= 0 && s < STEP_STATE_COUNT)
		return step_state_names[s];
	return "unknown";
}

const char *
step_phase_name(enum step_phase p)
{
	return p == PHASE_ACTION ? "action" : p == PHASE_COMPENSATION ? "compensation" : "unknown";
}

const char *
step_kind_name(enum step_kind k)
{
	switch (k) {
	case STEP_KIND_COMPENSATABLE:
		return "compensatable";
	case STEP_KIND_PIVOT:
		return "pivot";
	case STEP_KIND_RETRIABLE:
		return "retriable";
	}
	return "unknown";
}

const char *
reply_outcome_name(enum reply_outcome o)
{
	switch (o) {
	case OUTCOME_SUCCESS:
		return "success";
	case OUTCOME_RETRYABLE_FAILURE:
		return "retryable_failure";
	case OUTCOME_PERMANENT_FAILURE:
		return "permanent_failure";
	}
	return "unknown";
}

bool
saga_state_parse(const char *text, enum saga_state *out)
{
	for (int i = SAGA_RUNNING; i <= SAGA_RESOLVED; i++) {
		if (strcmp(text, saga_state_names[i]) == 0) {
			*out = (enum saga_state)i;
			return true;
		}
	}
	return false;
}

bool
step_state_parse(const char *text, enum step_state *out)
{
	for (int i = 0; i < STEP_STATE_COUNT; i++) {
		if (strcmp(text, step_state_names[i]) == 0) {
			*out = (enum step_state)i;
			return true;
		}
	}
	return false;
}

bool
saga_valid_name(const char *s)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];

		if (!isalnum(c) && c != '_' && c != '-')
			return false;
	}
	return n > 0 && n <= SAGA_NAME_MAX;
}

bool
saga_valid_subject(const char *s)
{
	size_t n = strlen(s);
	size_t tok = 0;

	if (n == 0 || n > SAGA_SUBJECT_MAX)
		return false;
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.' || c == '\0') {
			if (tok == 0)
				return false; /* empty token: "a..b", ".a", "a." */
			tok = 0;
		} else if (isalnum(c) || c == '_' || c == '-') {
			tok++;
		} else {
			return false; /* wildcards, spaces, control characters */
		}
	}
	return true;
}

bool
saga_valid_key(const char *s, size_t max)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];

		if (!isalnum(c) && strchr("._:/+=@-", c) == NULL)
			return false;
	}
	return n > 0 && n <= max;
}

void
saga_inst_release(struct saga_inst *inst)
{
	free(inst->input.data);
	inst->input.data = NULL;
	inst->input.len = 0;
	for (int i = 0; i < SAGA_MAX_STEPS; i++) {
		free(inst->steps[i].output.data);
		inst->steps[i].output.data = NULL;
		inst->steps[i].output.len = 0;
	}
}

/* The last id's time and counter, per thread: ids of one thread only ever grow. */
static _Thread_local struct {
	uint64_t ms;      /* unix ms in the last id */
	uint32_t counter; /* its 12-bit counter */
} last_id;

bool
saga_new_id(char out[SAGA_ID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[16];
	struct timespec ts;
	uint64_t ms;
	size_t o = 0;

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return false;
	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	if (ms <= last_id.ms) {
		/* Same millisecond (or the clock stepped back): count on from the last id. */
		ms = last_id.ms;
		if (++last_id.counter > 0xfff) {
			ms++;
			last_id.counter = 0;
		}
	} else {
		/* A random start below half the range leaves room to count. */
		last_id.counter = ((uint32_t)r[6] << 8 | r[7]) & 0x7ff;
	}
	last_id.ms = ms;
	/* RFC 9562 version 7: 48-bit unix ms, version, 12-bit counter, variant, 62 random bits. */
	for (int i = 0; i < 6; i++)
		r[i] = (unsigned char)(ms >> (40 - 8 * i));
	r[6] = (unsigned char)(0x70 | (last_id.counter >> 8));
	r[7] = (unsigned char)(last_id.counter & 0xff);
	r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* RFC 9562 variant */
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[r[i] >> 4];
		out[o++] = hex[r[i] & 15];
	}
	out[o] = '\0';
	return true;
}

size_t
saga_utf8_len(const char *s, size_t avail)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n;
	uint32_t cp;

	if (avail == 0)
		return 0;
	if (u[0] < 0x80)
		return 1;
	if (u[0] >= 0xC2 && u[0] <= 0xDF) {
		n = 2;
		cp = u[0] & 0x1F;
	} else if (u[0] >= 0xE0 && u[0] <= 0xEF) {
		n = 3;
		cp = u[0] & 0x0F;
	} else if (u[0] >= 0xF0 && u[0] <= 0xF4) {
		n = 4;
		cp = u[0] & 0x07;
	} else {
		return 0; /* continuation byte, overlong lead, or beyond U+10FFFF */
	}
	if (n > avail)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((u[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (u[i] & 0x3F);
	}
	/* No overlong forms, no surrogates, nothing past U+10FFFF. */
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

bool
saga_utf8_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		size_t n = saga_utf8_len(s + i, len - i);

		if (n == 0 || (n == 1 && s[i] == '\0'))
			return false;
		i += n;
	}
	return true;
}

size_t
saga_utf8_scrub(char *s)
{
	size_t len = strlen(s);
	size_t changed = 0;

	for (size_t i = 0; i < len;) {
		size_t n = saga_utf8_len(s + i, len - i);

		if (n == 0) {
			s[i++] = '?';
			changed++;
		} else {
			i += n;
		}
	}
	return changed;
}

/* Shared checks of the libFuzzer targets: a broken property aborts, so libFuzzer keeps the input. */
#ifndef SAGAD_FUZZ_COMMON_H
#define SAGAD_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "saga.h"
#include "status.h"

/* Largest message the decoder targets accept (the inputs are far smaller). */
#define FUZZ_MAX_MESSAGE (1024 * 1024)

/* Error buffer size used by every target (the size sagad's callers use). */
#define FUZZ_ERR_LEN 512

/* Called by libFuzzer with each input; every target defines it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Print what broke (and where) and abort: libFuzzer saves the input as crash-<sha1>. */
_Noreturn void fuzz_fail(const char *file, int line, const char *cond, const char *why);

/* Check a property of the code under test; why says what the promise is. */
#define FUZZ_CHECK(cond, why)                                                                      \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fuzz_fail(__FILE__, __LINE__, #cond, why);                                 \
	} while (0)

/*
 * Independent re-statements of the allow-lists the codec promises (not calls
 * of saga_valid_*, so a bug there is caught too).
 */
bool fuzz_is_name(const char *s);            /* [A-Za-z0-9_-]{1,SAGA_NAME_MAX} */
bool fuzz_is_key(const char *s, size_t max); /* [A-Za-z0-9._:/+=@-]{1,max} */
bool fuzz_is_uuid(const char *s);            /* canonical lower-case UUID text */
bool fuzz_is_subject(const char *s);         /* dot-separated names, at most SAGA_SUBJECT_MAX */
bool fuzz_is_printable(const char *s);       /* no byte below 0x20 and no 0x7f: one log line */
bool fuzz_is_terminated(const char *buf, size_t cap); /* a NUL within cap bytes */
bool fuzz_is_utf8(const char *s); /* well-formed UTF-8 (no overlongs, surrogates) */

/*
 * True when SAGAD_FUZZ_STRICT_UTF8 is set: also require decoded text bound
 * for PostgreSQL (a UTF8 database) to be valid UTF-8. Off by default until
 * the codec promises it (see tests/fuzz/README.md).
 */
bool fuzz_strict_utf8(void);

/* A failed decode or parse: a known status, and a non-empty, single-line, terminated reason. */
void fuzz_check_failure(enum status st, const char *err, size_t errlen);

/* Read every byte (ASan reports a borrowed pointer that is not readable); returns a checksum. */
uint32_t fuzz_touch(const void *p, size_t n);

/* What any decoded definition must look like, validated or not. */
void fuzz_check_def_shape(const struct saga_def *def);

/* Field-by-field equality of two definitions (floats compared bit for bit). */
bool fuzz_def_equal(const struct saga_def *a, const struct saga_def *b);

/*
 * Properties of any decoded or parsed definition: both wire encodings
 * (DefineRequest, canonical SagaDefinition) decode back to it with the same
 * hash; definition_validate returns a verdict with terminated, one-line
 * texts; definition_apply_defaults is idempotent; and a definition that
 * validates answers the structure queries consistently. Returns whether it
 * validated.
 */
bool fuzz_check_definition(const struct saga_def *def);

#endif /* SAGAD_FUZZ_COMMON_H */

/*
 * Fuzz codec_decode_start (StartSagaRequest, what sagad reads from clients):
 * no crash, no leak; an accepted request obeys every allow-list the codec
 * promises; the labels become a JSON object; both size limits hold (the
 * message before unpacking, the input after); and re-encoding it with
 * codec_encode_start_request_traced decodes to the same fields.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "codec.h"
#include "fuzz_common.h"

/* Small, so that the fuzzer reaches the input limit: the message may be max + 4096. */
#define MAX_INPUT 256

static bool
is_traceparent(const char *s)
{
	static const char shape[] = "xx-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-xxxxxxxxxxxxxxxx-xx";

	if (strlen(s) != sizeof(shape) - 1)
		return false;
	for (size_t i = 0; i < sizeof(shape) - 1; i++) {
		unsigned char c = (unsigned char)s[i];
		bool hex =
		        (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');

		if (shape[i] == '-' ? c != '-' : !hex)
			return false;
	}
	return true;
}

/* labels_json goes into a jsonb column: it must be a JSON object. */
static void
check_labels(const char *labels)
{
	json_error_t jerr;
	json_t *j;

	FUZZ_CHECK(labels != NULL, "an accepted request has its labels as JSON");
	for (const unsigned char *p = (const unsigned char *)labels; *p != '\0'; p++)
		FUZZ_CHECK(*p >= 0x20, "labels JSON escapes control characters (as JSON requires)");
	if (!fuzz_is_utf8(labels)) {
		/* jansson (like PostgreSQL's jsonb) refuses it; see fuzz_strict_utf8. */
		FUZZ_CHECK(!fuzz_strict_utf8(), "labels (stored as jsonb) are UTF-8");
		return;
	}
	j = json_loads(labels, 0, &jerr);
	FUZZ_CHECK(j != NULL, "labels_json is valid JSON");
	FUZZ_CHECK(json_is_object(j), "labels_json is a JSON object");
	json_decref(j);
}

static void
check_accepted(const struct start_msg *m, size_t size)
{
	FUZZ_CHECK(m->saga_name[0] == '\0' || fuzz_is_name(m->saga_name),
	           "saga_name is empty or an allow-listed name");
	FUZZ_CHECK(m->idempotency_key[0] == '\0' || fuzz_is_key(m->idempotency_key, SAGA_KEY_MAX),
	           "idempotency_key is empty or allow-listed");
	FUZZ_CHECK(m->correlation_id[0] == '\0' ||
	                   fuzz_is_key(m->correlation_id, SAGA_CORRELATION_MAX),
	           "correlation_id is empty or allow-listed");
	FUZZ_CHECK(m->traceparent[0] == '\0' || is_traceparent(m->traceparent),
	           "traceparent is empty or W3C-shaped");
	FUZZ_CHECK(m->deadline_unix_ms >= 0, "deadline is not negative");
	FUZZ_CHECK(m->input.len <= MAX_INPUT, "input is within max_len");
	FUZZ_CHECK(m->input.len <= size, "input cannot be longer than the message");
	(void)fuzz_touch(m->input.data, m->input.len);
	check_labels(m->labels_json);
}

static void
round_trip(const struct start_msg *m)
{
	struct start_msg again;
	struct bytes enc = {0};
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_encode_start_request_traced(m->saga_name, m->version, m->input,
	                                       m->idempotency_key, m->correlation_id,
	                                       m->traceparent, &enc);
	FUZZ_CHECK(st == STATUS_OK, "a decoded request can be encoded again");
	st = codec_decode_start(enc.data, enc.len, MAX_INPUT, &again, err, sizeof(err));
	FUZZ_CHECK(st == STATUS_OK, "a re-encoded request is accepted");
	FUZZ_CHECK(strcmp(again.saga_name, m->saga_name) == 0, "round trip keeps saga_name");
	FUZZ_CHECK(again.version == m->version, "round trip keeps version");
	FUZZ_CHECK(strcmp(again.idempotency_key, m->idempotency_key) == 0,
	           "round trip keeps idempotency_key");
	FUZZ_CHECK(strcmp(again.correlation_id, m->correlation_id) == 0,
	           "round trip keeps correlation_id");
	FUZZ_CHECK(strcmp(again.traceparent, m->traceparent) == 0, "round trip keeps traceparent");
	FUZZ_CHECK(again.input.len == m->input.len &&
	                   (m->input.len == 0 ||
	                    memcmp(again.input.data, m->input.data, m->input.len) == 0),
	           "round trip keeps input");
	FUZZ_CHECK(again.labels_json != NULL && strcmp(again.labels_json, "{}") == 0,
	           "no labels encode as {}");
	codec_start_free(&again);
	free(enc.data);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct start_msg m;
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_decode_start(data, size, MAX_INPUT, &m, err, sizeof(err));
	if (st != STATUS_OK) {
		fuzz_check_failure(st, err, sizeof(err));
		FUZZ_CHECK(m.pb == NULL && m.labels_json == NULL,
		           "a refused request leaves nothing to free");
		return 0;
	}
	check_accepted(&m, size);
	round_trip(&m);
	codec_start_free(&m);
	codec_start_free(&m); /* twice is harmless */

	/* The message limit is max_len + 4096 (room for the fields around the input). */
	if (size > 4096) {
		st = codec_decode_start(data, size, size - 4097, &m, err, sizeof(err));
		FUZZ_CHECK(st == STATUS_TOO_LARGE, "a request over max_len + 4096 is too large");
		FUZZ_CHECK(m.pb == NULL, "nothing is unpacked over the limit");
		fuzz_check_failure(st, err, sizeof(err));
	}
	return 0;
}

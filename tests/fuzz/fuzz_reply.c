/*
 * Fuzz codec_decode_reply (StepReply, what sagad reads from participants):
 * no crash, no leak; an accepted reply obeys every allow-list the codec
 * promises; the size limit is checked before unpacking; and re-encoding the
 * decoded reply with codec_encode_reply decodes to the same fields.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "fuzz_common.h"

static void
check_accepted(const struct reply_msg *r, size_t size)
{
	FUZZ_CHECK(fuzz_is_uuid(r->saga_id), "saga_id is a canonical lower-case UUID");
	FUZZ_CHECK(r->correlation_id[0] == '\0' ||
	                   fuzz_is_key(r->correlation_id, SAGA_CORRELATION_MAX),
	           "correlation_id is empty or allow-listed");
	FUZZ_CHECK(fuzz_is_name(r->step), "step is an allow-listed name");
	FUZZ_CHECK(r->phase == PHASE_ACTION || r->phase == PHASE_COMPENSATION, "phase is known");
	FUZZ_CHECK(r->outcome >= OUTCOME_SUCCESS && r->outcome <= OUTCOME_PERMANENT_FAILURE,
	           "outcome is known");
	FUZZ_CHECK(r->attempt >= 1, "attempt is at least 1");
	FUZZ_CHECK(fuzz_is_terminated(r->error, sizeof(r->error)), "error is terminated");
	FUZZ_CHECK(strlen(r->error) <= SAGA_ERROR_MAX, "error is at most SAGA_ERROR_MAX bytes");
	FUZZ_CHECK(fuzz_is_printable(r->error), "error text has no CR/LF or control characters");
	if (fuzz_strict_utf8())
		FUZZ_CHECK(fuzz_is_utf8(r->error), "error text (stored in PostgreSQL) is UTF-8");
	FUZZ_CHECK(r->output.len <= size, "output cannot be longer than the message");
	FUZZ_CHECK(r->output.len == 0 || r->output.data != NULL, "output bytes are there");
	(void)fuzz_touch(r->output.data, r->output.len);
	FUZZ_CHECK(r->pb != NULL, "an accepted reply keeps its unpacked message");
}

/* codec_encode_reply answers a command; build the command the reply belongs to. */
static void
round_trip(const struct reply_msg *r)
{
	struct command_msg cmd;
	struct reply_msg again;
	struct bytes enc = {0};
	char err[FUZZ_ERR_LEN];
	enum status st;

	memset(&cmd, 0, sizeof(cmd));
	memcpy(cmd.saga_id, r->saga_id, sizeof(cmd.saga_id));
	memcpy(cmd.correlation_id, r->correlation_id, sizeof(cmd.correlation_id));
	memcpy(cmd.step, r->step, sizeof(cmd.step));
	cmd.phase = r->phase;
	cmd.attempt = r->attempt;
	st = codec_encode_reply(&cmd, r->outcome, r->output, NULL, r->error, "fuzz",
	                        r->completed_unix_ms, &enc);
	FUZZ_CHECK(st == STATUS_OK, "a decoded reply can be encoded again");
	st = codec_decode_reply(enc.data, enc.len, FUZZ_MAX_MESSAGE, &again, err, sizeof(err));
	FUZZ_CHECK(st == STATUS_OK, "a re-encoded reply is accepted");
	FUZZ_CHECK(strcmp(again.saga_id, r->saga_id) == 0, "round trip keeps saga_id");
	FUZZ_CHECK(strcmp(again.correlation_id, r->correlation_id) == 0,
	           "round trip keeps correlation_id");
	FUZZ_CHECK(strcmp(again.step, r->step) == 0, "round trip keeps step");
	FUZZ_CHECK(again.phase == r->phase, "round trip keeps phase");
	FUZZ_CHECK(again.attempt == r->attempt, "round trip keeps attempt");
	FUZZ_CHECK(again.outcome == r->outcome, "round trip keeps outcome");
	FUZZ_CHECK(again.completed_unix_ms == r->completed_unix_ms,
	           "round trip keeps completed_unix_ms");
	FUZZ_CHECK(again.output.len == r->output.len &&
	                   (r->output.len == 0 ||
	                    memcmp(again.output.data, r->output.data, r->output.len) == 0),
	           "round trip keeps output");
	FUZZ_CHECK(strcmp(again.error, r->error) == 0, "round trip keeps the (clean) error text");
	codec_reply_free(&again);
	FUZZ_CHECK(again.pb == NULL, "free clears the pointer");
	free(enc.data);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reply_msg r;
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_decode_reply(data, size, FUZZ_MAX_MESSAGE, &r, err, sizeof(err));
	if (st != STATUS_OK) {
		fuzz_check_failure(st, err, sizeof(err));
		FUZZ_CHECK(r.pb == NULL, "a refused reply leaves nothing to free");
		return 0;
	}
	check_accepted(&r, size);
	round_trip(&r);
	codec_reply_free(&r);
	codec_reply_free(&r); /* twice is harmless */

	/* One byte over the limit: refused by size alone, before unpacking. */
	if (size > 0) {
		st = codec_decode_reply(data, size, size - 1, &r, err, sizeof(err));
		FUZZ_CHECK(st == STATUS_TOO_LARGE, "a reply over max_len is refused as too large");
		FUZZ_CHECK(r.pb == NULL, "nothing is unpacked over the limit");
		fuzz_check_failure(st, err, sizeof(err));
	}
	return 0;
}

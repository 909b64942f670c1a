/*
 * Fuzz codec_decode_start_answer (StartSagaResponse, what clients and sagactl
 * read): no crash, no leak; every string is terminated and the reason is one
 * printable line; and codec_encode_start_answer of the decoded answer decodes
 * to the same answer.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "fuzz_common.h"

static void
check_accepted(const struct start_answer *a)
{
	FUZZ_CHECK(fuzz_is_terminated(a->saga_id, sizeof(a->saga_id)), "saga_id is terminated");
	FUZZ_CHECK(fuzz_is_terminated(a->correlation_id, sizeof(a->correlation_id)),
	           "correlation_id is terminated");
	FUZZ_CHECK(fuzz_is_terminated(a->saga_name, sizeof(a->saga_name)),
	           "saga_name is terminated");
	FUZZ_CHECK(fuzz_is_terminated(a->reason, sizeof(a->reason)), "reason is terminated");
	FUZZ_CHECK(fuzz_is_printable(a->reason), "reason has no CR/LF or control characters");
}

static void
round_trip(const struct start_answer *a)
{
	struct start_answer again;
	struct bytes enc = {0};
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_encode_start_answer(a, &enc);
	FUZZ_CHECK(st == STATUS_OK, "a decoded answer can be encoded again");
	st = codec_decode_start_answer(enc.data, enc.len, &again, err, sizeof(err));
	FUZZ_CHECK(st == STATUS_OK, "a re-encoded answer is accepted");
	FUZZ_CHECK(again.status == a->status, "round trip keeps status");
	FUZZ_CHECK(strcmp(again.saga_id, a->saga_id) == 0, "round trip keeps saga_id");
	FUZZ_CHECK(strcmp(again.correlation_id, a->correlation_id) == 0,
	           "round trip keeps correlation_id");
	FUZZ_CHECK(strcmp(again.saga_name, a->saga_name) == 0, "round trip keeps saga_name");
	FUZZ_CHECK(again.version == a->version, "round trip keeps version");
	FUZZ_CHECK(again.reject == a->reject, "round trip keeps the reject code");
	FUZZ_CHECK(strcmp(again.reason, a->reason) == 0, "round trip keeps the (clean) reason");
	FUZZ_CHECK(again.retry_after_ms == a->retry_after_ms, "round trip keeps retry_after_ms");
	FUZZ_CHECK(again.accepted_unix_ms == a->accepted_unix_ms,
	           "round trip keeps accepted_unix_ms");
	free(enc.data);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct start_answer a;
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_decode_start_answer(data, size, &a, err, sizeof(err));
	if (st != STATUS_OK) {
		fuzz_check_failure(st, err, sizeof(err));
		return 0;
	}
	check_accepted(&a);
	round_trip(&a);
	return 0;
}

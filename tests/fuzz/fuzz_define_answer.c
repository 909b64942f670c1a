/*
 * Fuzz codec_decode_define_answer (DefineResponse, what sagactl reads after
 * registering a definition): no crash, no leak; every string is terminated,
 * the error and field texts are single printable lines; and
 * codec_encode_define_answer of the decoded answer decodes to the same answer.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "fuzz_common.h"

static void
check_accepted(const struct define_answer *a)
{
	FUZZ_CHECK(fuzz_is_terminated(a->name, sizeof(a->name)), "name is terminated");
	FUZZ_CHECK(fuzz_is_terminated(a->error, sizeof(a->error)), "error is terminated");
	FUZZ_CHECK(fuzz_is_terminated(a->field, sizeof(a->field)), "field is terminated");
	FUZZ_CHECK(fuzz_is_printable(a->error), "error has no CR/LF or control characters");
	FUZZ_CHECK(fuzz_is_printable(a->field), "field has no CR/LF or control characters");
}

static void
round_trip(const struct define_answer *a)
{
	struct define_answer again;
	struct bytes enc = {0};
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_encode_define_answer(a, &enc);
	FUZZ_CHECK(st == STATUS_OK, "a decoded answer can be encoded again");
	st = codec_decode_define_answer(enc.data, enc.len, &again, err, sizeof(err));
	FUZZ_CHECK(st == STATUS_OK, "a re-encoded answer is accepted");
	FUZZ_CHECK(again.status == a->status, "round trip keeps status");
	FUZZ_CHECK(strcmp(again.name, a->name) == 0, "round trip keeps name");
	FUZZ_CHECK(again.version == a->version, "round trip keeps version");
	FUZZ_CHECK(strcmp(again.error, a->error) == 0, "round trip keeps the (clean) error");
	FUZZ_CHECK(strcmp(again.field, a->field) == 0, "round trip keeps the (clean) field");
	free(enc.data);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct define_answer a;
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_decode_define_answer(data, size, &a, err, sizeof(err));
	if (st != STATUS_OK) {
		fuzz_check_failure(st, err, sizeof(err));
		return 0;
	}
	check_accepted(&a);
	round_trip(&a);
	return 0;
}

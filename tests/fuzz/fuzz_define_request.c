/*
 * Fuzz codec_decode_define_request (DefineRequest, a definition sent to
 * <prefix>.define): no crash, no leak; a decoded definition has terminated
 * strings, 0..32 steps and known kinds; it survives both encoders; and
 * validation, defaults and the structure queries behave (fuzz_check_definition).
 */
#include "codec.h"
#include "fuzz_common.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct saga_def def;
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_decode_define_request(data, size, &def, err, sizeof(err));
	if (st != STATUS_OK) {
		fuzz_check_failure(st, err, sizeof(err));
		return 0;
	}
	(void)fuzz_check_definition(&def);
	return 0;
}

/*
 * Fuzz codec_decode_definition (a canonical SagaDefinition body, as stored in
 * PostgreSQL and read back by the definition cache): no crash, no leak; the
 * same properties as a DefineRequest (fuzz_check_definition).
 */
#include "codec.h"
#include "fuzz_common.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct saga_def def;
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_decode_definition(data, size, &def, err, sizeof(err));
	if (st != STATUS_OK) {
		fuzz_check_failure(st, err, sizeof(err));
		return 0;
	}
	(void)fuzz_check_definition(&def);
	return 0;
}

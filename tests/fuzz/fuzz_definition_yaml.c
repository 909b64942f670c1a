/*
 * Fuzz definition_parse_yaml (saga definitions written by people): no crash,
 * no leak; a refusal is "line N: ..." on one printable line, the same every
 * time, and cut cleanly by a small buffer; an accepted text gives a version 0
 * definition that passes definition_validate and survives both wire
 * encodings (fuzz_check_definition).
 */
#include <stdio.h>
#include <string.h>

#include "definition.h"
#include "fuzz_common.h"

/* A refusal: "line N: reason", one line, cut (not garbled) by a small buffer. */
static void
check_refusal(const uint8_t *data, size_t size, enum status st, const char *err)
{
	static struct saga_def def;
	char small[8];
	size_t cap = 1 + size % sizeof(small);
	enum status again;
	int line = 0;
	int end = 0;

	FUZZ_CHECK(st == STATUS_INVALID, "a refused text is invalid (nomem cannot happen here)");
	FUZZ_CHECK(fuzz_is_terminated(err, FUZZ_ERR_LEN), "the error text is terminated");
	FUZZ_CHECK(err[0] != '\0', "a refusal says why");
	FUZZ_CHECK(fuzz_is_printable(err), "the error text is one printable line (no CR/LF)");
	FUZZ_CHECK(sscanf(err, "line %d: %n", &line, &end) == 1 && end > 0 && line >= 1,
	           "the error text starts with \"line N: \"");
	if (fuzz_strict_utf8())
		FUZZ_CHECK(fuzz_is_utf8(err), "the error text (sent back to clients) is UTF-8");

	again = definition_parse_yaml(&def, (const char *)data, size, small, cap);
	FUZZ_CHECK(again == st, "parsing is deterministic");
	FUZZ_CHECK(fuzz_is_terminated(small, cap), "a small error buffer is terminated");
	FUZZ_CHECK(strncmp(small, err, cap - 1) == 0 && strlen(small) == strnlen(err, cap - 1),
	           "a small error buffer holds a prefix of the full reason");
	again = definition_parse_yaml(&def, (const char *)data, size, NULL, 0);
	FUZZ_CHECK(again == st, "no error buffer: same verdict");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct saga_def def;
	char err[FUZZ_ERR_LEN];
	enum status st;

	memset(err, 'x', sizeof(err));
	st = definition_parse_yaml(&def, (const char *)data, size, err, sizeof(err));
	if (st != STATUS_OK) {
		check_refusal(data, size, st, err);
		return 0;
	}
	FUZZ_CHECK(err[0] == '\0', "a parsed definition leaves the error text empty");
	FUZZ_CHECK(def.version == 0, "a parsed definition has version 0");
	FUZZ_CHECK(def.n_steps >= 1, "a parsed definition has steps");
	FUZZ_CHECK(fuzz_check_definition(&def), "a parsed definition passes definition_validate");
	return 0;
}

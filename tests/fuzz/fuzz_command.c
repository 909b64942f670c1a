/*
 * Fuzz codec_decode_command (StepCommand, what participants read): no crash,
 * no leak; an accepted command obeys the allow-lists the codec checks; the
 * size limit is checked before unpacking; re-encoding it with
 * codec_encode_command (sagad's encoder) decodes to the same fields; and the
 * participant's answer to it (codec_encode_reply) is accepted by sagad.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "fuzz_common.h"

static void
check_accepted(const struct command_msg *c, size_t size)
{
	FUZZ_CHECK(fuzz_is_uuid(c->saga_id), "saga_id is a canonical lower-case UUID");
	FUZZ_CHECK(fuzz_is_name(c->step), "step is an allow-listed name");
	FUZZ_CHECK(fuzz_is_key(c->idempotency_key, SAGA_KEY_MAX),
	           "idempotency_key is allow-listed and not empty");
	FUZZ_CHECK(c->reply_subject[0] != '\0', "reply_subject is not empty");
	FUZZ_CHECK(fuzz_is_terminated(c->reply_subject, sizeof(c->reply_subject)),
	           "reply_subject is terminated");
	FUZZ_CHECK(fuzz_is_terminated(c->correlation_id, sizeof(c->correlation_id)),
	           "correlation_id is terminated");
	FUZZ_CHECK(fuzz_is_terminated(c->saga_name, sizeof(c->saga_name)),
	           "saga_name is terminated");
	FUZZ_CHECK(c->phase == PHASE_ACTION || c->phase == PHASE_COMPENSATION, "phase is known");
	FUZZ_CHECK(c->attempt >= 1, "attempt is at least 1");
	FUZZ_CHECK(c->n_outputs >= 0 && c->n_outputs <= SAGA_MAX_STEPS,
	           "0..SAGA_MAX_STEPS earlier outputs");
	FUZZ_CHECK(c->input.len <= size, "input cannot be longer than the message");
	(void)fuzz_touch(c->input.data, c->input.len);
	for (int i = 0; i < c->n_outputs; i++) {
		FUZZ_CHECK(c->output_steps[i] != NULL, "every output names its step");
		(void)fuzz_touch(c->output_steps[i], strlen(c->output_steps[i]));
		(void)fuzz_touch(c->outputs[i].data, c->outputs[i].len);
	}
}

/*
 * Encode the same command as sagad would: a definition whose first steps are
 * the earlier outputs (in completion order) and whose last step is the one
 * commanded. Skipped when the command cannot come from sagad (names too long
 * for a definition, or no room for the step itself).
 */
static void
round_trip(const struct command_msg *c)
{
	static struct saga_def def;
	static struct saga_inst inst;
	struct plan_command pc;
	struct command_msg again;
	struct bytes enc = {0};
	char err[FUZZ_ERR_LEN];
	enum status st;
	int n = c->n_outputs;

	if (n + 1 > SAGA_MAX_STEPS || strlen(c->correlation_id) > SAGA_CORRELATION_MAX)
		return;
	for (int i = 0; i < n; i++) {
		if (strlen(c->output_steps[i]) > SAGA_NAME_MAX)
			return;
	}
	memset(&def, 0, sizeof(def));
	memset(&inst, 0, sizeof(inst));
	memcpy(def.name, c->saga_name, sizeof(def.name));
	def.version = c->saga_version;
	def.n_steps = n + 1;
	for (int i = 0; i < n; i++) {
		strcpy(def.steps[i].name, c->output_steps[i]);
		inst.steps[i].completed_order = i + 1;
		inst.steps[i].output = c->outputs[i];
	}
	memcpy(def.steps[n].name, c->step, sizeof(def.steps[n].name));
	memcpy(inst.id, c->saga_id, sizeof(inst.id));
	memcpy(inst.correlation_id, c->correlation_id, sizeof(inst.correlation_id));
	inst.completions = n;
	inst.input = c->input;
	pc.step = n;
	pc.phase = c->phase;
	pc.attempt = c->attempt;
	pc.deadline_ms = c->deadline_unix_ms;

	st = codec_encode_command(&def, &inst, &pc, c->reply_subject, c->sent_unix_ms, &enc);
	FUZZ_CHECK(st == STATUS_OK, "a decoded command can be encoded again");
	st = codec_decode_command(enc.data, enc.len, FUZZ_MAX_MESSAGE, &again, err, sizeof(err));
	FUZZ_CHECK(st == STATUS_OK, "a command sagad encodes is accepted by participants");
	FUZZ_CHECK(strcmp(again.saga_id, c->saga_id) == 0, "round trip keeps saga_id");
	FUZZ_CHECK(strcmp(again.correlation_id, c->correlation_id) == 0,
	           "round trip keeps correlation_id");
	FUZZ_CHECK(strcmp(again.saga_name, c->saga_name) == 0, "round trip keeps saga_name");
	FUZZ_CHECK(again.saga_version == c->saga_version, "round trip keeps saga_version");
	FUZZ_CHECK(strcmp(again.step, c->step) == 0, "round trip keeps step");
	FUZZ_CHECK(again.phase == c->phase, "round trip keeps phase");
	FUZZ_CHECK(again.attempt == c->attempt, "round trip keeps attempt");
	FUZZ_CHECK(again.deadline_unix_ms == c->deadline_unix_ms, "round trip keeps the deadline");
	FUZZ_CHECK(again.sent_unix_ms == c->sent_unix_ms, "round trip keeps sent_unix_ms");
	FUZZ_CHECK(strcmp(again.reply_subject, c->reply_subject) == 0,
	           "round trip keeps reply_subject");
	FUZZ_CHECK(again.input.len == c->input.len &&
	                   (c->input.len == 0 ||
	                    memcmp(again.input.data, c->input.data, c->input.len) == 0),
	           "round trip keeps input");
	FUZZ_CHECK(again.n_outputs == n, "round trip keeps the number of outputs");
	for (int i = 0; i < n; i++) {
		FUZZ_CHECK(strcmp(again.output_steps[i], c->output_steps[i]) == 0,
		           "round trip keeps output step names, in order");
		FUZZ_CHECK(again.outputs[i].len == c->outputs[i].len &&
		                   (c->outputs[i].len == 0 ||
		                    memcmp(again.outputs[i].data, c->outputs[i].data,
		                           c->outputs[i].len) == 0),
		           "round trip keeps outputs");
	}
	codec_command_free(&again);
	free(enc.data);
}

/* What a participant sends back must be something sagad accepts. */
static void
answer(const struct command_msg *c)
{
	static const uint8_t output[] = "{\"ok\":true}";
	struct reply_msg r;
	struct bytes enc = {0};
	struct bytes out = {(uint8_t *)output, sizeof(output) - 1};
	char err[FUZZ_ERR_LEN];
	enum status st;

	/* Participants refuse a command with a bad correlation id before answering. */
	if (c->correlation_id[0] != '\0' && !fuzz_is_key(c->correlation_id, SAGA_CORRELATION_MAX))
		return;
	st = codec_encode_reply(c, OUTCOME_RETRYABLE_FAILURE, out, "E_FUZZ", "try again",
	                        "fuzz-participant", 1, &enc);
	FUZZ_CHECK(st == STATUS_OK, "a reply to a command can be encoded");
	st = codec_decode_reply(enc.data, enc.len, FUZZ_MAX_MESSAGE, &r, err, sizeof(err));
	FUZZ_CHECK(st == STATUS_OK, "sagad accepts the reply to a command participants accept");
	FUZZ_CHECK(strcmp(r.saga_id, c->saga_id) == 0 && strcmp(r.step, c->step) == 0 &&
	                   r.phase == c->phase && r.attempt == c->attempt &&
	                   strcmp(r.correlation_id, c->correlation_id) == 0,
	           "the reply names the command's saga, step, phase and attempt");
	FUZZ_CHECK(strcmp(r.error, "E_FUZZ: try again") == 0, "error text is code: message");
	codec_reply_free(&r);
	free(enc.data);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct command_msg c;
	char err[FUZZ_ERR_LEN];
	enum status st;

	st = codec_decode_command(data, size, FUZZ_MAX_MESSAGE, &c, err, sizeof(err));
	if (st != STATUS_OK) {
		fuzz_check_failure(st, err, sizeof(err));
		FUZZ_CHECK(c.pb == NULL, "a refused command leaves nothing to free");
		return 0;
	}
	check_accepted(&c, size);
	round_trip(&c);
	answer(&c);
	codec_command_free(&c);
	codec_command_free(&c); /* twice is harmless */

	if (size > 0) {
		st = codec_decode_command(data, size, size - 1, &c, err, sizeof(err));
		FUZZ_CHECK(st == STATUS_TOO_LARGE,
		           "a command over max_len is refused as too large");
		FUZZ_CHECK(c.pb == NULL, "nothing is unpacked over the limit");
		fuzz_check_failure(st, err, sizeof(err));
	}
	return 0;
}

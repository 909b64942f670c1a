/*
 * Unit tests of the saga.v1 wire schemas: every message round-trips with every
 * field set, and fields unknown to this reader survive decode + re-encode.
 * Messages are filled generically from their descriptors, so a field added
 * later is covered without touching this file.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dead_letter.pb-c.h"
#include "definition.pb-c.h"
#include "event.pb-c.h"
#include "start.pb-c.h"
#include "step.pb-c.h"

static const ProtobufCMessageDescriptor *const all_messages[] = {
        &saga__v1__start_saga_request__descriptor, &saga__v1__start_saga_response__descriptor,
        &saga__v1__step_output__descriptor,        &saga__v1__step_command__descriptor,
        &saga__v1__step_reply__descriptor,         &saga__v1__lifecycle_event__descriptor,
        &saga__v1__retry_policy__descriptor,       &saga__v1__step_definition__descriptor,
        &saga__v1__saga_definition__descriptor,    &saga__v1__define_request__descriptor,
        &saga__v1__define_response__descriptor,    &saga__v1__header__descriptor,
        &saga__v1__dead_letter__descriptor,
};
#define N_MESSAGES (sizeof(all_messages) / sizeof(all_messages[0]))

/* Every allocation of a filled message, freed at the end of a test. */
static void *arena[4096];
static size_t arena_len;

static void *
arena_alloc(size_t n)
{
	void *p = calloc(1, n);

	cr_assert_not_null(p);
	cr_assert_lt(arena_len, sizeof(arena) / sizeof(arena[0]));
	arena[arena_len++] = p;
	return p;
}

static void
arena_free(void)
{
	while (arena_len > 0)
		free(arena[--arena_len]);
}

static ProtobufCMessage *fill(const ProtobufCMessageDescriptor *d, int depth, unsigned seed);

/* Write one non-default value of field f at p. */
static void
fill_value(const ProtobufCFieldDescriptor *f, void *p, int depth, unsigned seed)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		*(int32_t *)p = -(int32_t)(seed + 7);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		*(uint32_t *)p = seed + 300;
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		*(int64_t *)p = INT64_C(1764300000000) + seed;
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		*(uint64_t *)p = UINT64_C(1) << 40 | seed;
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		*(float *)p = 1.5f + (float)seed;
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		*(double *)p = 2.25 + seed;
		break;
	case PROTOBUF_C_TYPE_BOOL:
		*(protobuf_c_boolean *)p = 1;
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *e = f->descriptor;

		/* The last value: never the zero "unspecified" one. */
		*(int *)p = e->values[e->n_values - 1].value;
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		char *s = arena_alloc(64);

		snprintf(s, 64, "%s-%u-ü", f->name, seed);
		*(char **)p = s;
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		ProtobufCBinaryData *b = p;
		uint8_t *data = arena_alloc(5);

		memcpy(data, "\x00\xff\x01{}", 5);
		b->data = data;
		b->len = 5;
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE:
		*(ProtobufCMessage **)p = fill(f->descriptor, depth + 1, seed + 1);
		break;
	}
}

static size_t
value_size(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	default:
		return 4;
	}
}

/* A message of type d with every field set (repeated fields get two entries). */
static ProtobufCMessage *
fill(const ProtobufCMessageDescriptor *d, int depth, unsigned seed)
{
	ProtobufCMessage *m = arena_alloc(d->sizeof_message);

	d->message_init(m);
	if (depth > 4)
		return m;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		char *base = (char *)m;

		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t sz = value_size(f);
			char *items = arena_alloc(2 * sz);

			fill_value(f, items, depth, seed + i);
			fill_value(f, items + sz, depth, seed + i + 100);
			*(size_t *)(base + f->quantifier_offset) = 2;
			*(void **)(base + f->offset) = items;
		} else {
			fill_value(f, base + f->offset, depth, seed + i);
		}
	}
	return m;
}

static uint8_t *
pack(const ProtobufCMessage *m, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(n + 1);

	cr_assert_not_null(buf);
	cr_assert_eq(protobuf_c_message_pack(m, buf), n);
	*len = n;
	return buf;
}

TestSuite(proto, .fini = arena_free);

Test(proto, every_message_round_trips_with_every_field_set)
{
	for (size_t i = 0; i < N_MESSAGES; i++) {
		const ProtobufCMessageDescriptor *d = all_messages[i];
		ProtobufCMessage *m = fill(d, 0, 1);
		size_t len1 = 0, len2 = 0;
		uint8_t *b1 = pack(m, &len1);
		ProtobufCMessage *back = protobuf_c_message_unpack(d, NULL, len1, b1);
		uint8_t *b2;

		cr_assert_not_null(back, "%s does not decode its own encoding", d->name);
		cr_assert(protobuf_c_message_check(back), "%s fails check", d->name);
		b2 = pack(back, &len2);
		cr_assert_eq(len1, len2, "%s changes size on a round trip", d->name);
		cr_assert_eq(memcmp(b1, b2, len1), 0, "%s changes bytes on a round trip", d->name);
		/* Every field was set, so every field must come back non-default. */
		for (unsigned f = 0; f < d->n_fields; f++) {
			const ProtobufCFieldDescriptor *fd = &d->fields[f];
			const char *base = (const char *)back;

			if (fd->label == PROTOBUF_C_LABEL_REPEATED)
				cr_assert_eq(*(const size_t *)(base + fd->quantifier_offset), 2,
				             "%s.%s lost entries", d->name, fd->name);
			else if (fd->type == PROTOBUF_C_TYPE_STRING)
				cr_assert(strstr(*(char *const *)(base + fd->offset), fd->name) !=
				                  NULL,
				          "%s.%s lost its value", d->name, fd->name);
		}
		protobuf_c_message_free_unpacked(back, NULL);
		free(b1);
		free(b2);
	}
}

Test(proto, unknown_fields_from_a_newer_writer_survive_decode_and_reencode)
{
	/* A newer writer added field 99 (varint 42) and field 100 (bytes "new"). */
	static const uint8_t extra[] = {0x98, 0x06, 0x2a, 0xa2, 0x06, 0x03, 'n', 'e', 'w'};

	for (size_t i = 0; i < N_MESSAGES; i++) {
		const ProtobufCMessageDescriptor *d = all_messages[i];
		ProtobufCMessage *m = fill(d, 0, 3);
		size_t len = 0, len2 = 0;
		uint8_t *known = pack(m, &len);
		uint8_t *newer = malloc(len + sizeof(extra));
		ProtobufCMessage *back;
		uint8_t *again;

		memcpy(newer, known, len);
		memcpy(newer + len, extra, sizeof(extra));
		back = protobuf_c_message_unpack(d, NULL, len + sizeof(extra), newer);
		cr_assert_not_null(back, "%s rejects a message with unknown fields", d->name);
		cr_assert_eq(back->n_unknown_fields, 2, "%s dropped unknown fields", d->name);
		again = pack(back, &len2);
		cr_assert_eq(len2, len + sizeof(extra), "%s re-encodes to a different size",
		             d->name);
		cr_assert_eq(memcmp(again, newer, len2), 0, "%s re-encodes different bytes",
		             d->name);
		protobuf_c_message_free_unpacked(back, NULL);
		free(known);
		free(newer);
		free(again);
	}
}

Test(proto, truncated_and_garbage_input_is_refused_not_crashed)
{
	for (size_t i = 0; i < N_MESSAGES; i++) {
		const ProtobufCMessageDescriptor *d = all_messages[i];
		ProtobufCMessage *m = fill(d, 0, 5);
		size_t len = 0;
		uint8_t *b = pack(m, &len);

		/* Every strict prefix either decodes (field boundary) or is refused. */
		for (size_t cut = 0; cut < len; cut++) {
			ProtobufCMessage *p = protobuf_c_message_unpack(d, NULL, cut, b);

			if (p != NULL)
				protobuf_c_message_free_unpacked(p, NULL);
		}
		free(b);
	}
	/* A length prefix pointing past the end must be refused. */
	static const uint8_t lie[] = {0x0a, 0x7f, 'x'};
	cr_assert_null(protobuf_c_message_unpack(&saga__v1__start_saga_request__descriptor, NULL,
	                                         sizeof(lie), lie));
}

Test(proto, unknown_enum_values_decode_without_error)
{
	/* StepReply.outcome (field 7) = 42, a value this reader does not know. */
	static const uint8_t future[] = {0x38, 0x2a};
	Saga__V1__StepReply *r = saga__v1__step_reply__unpack(NULL, sizeof(future), future);

	cr_assert_not_null(r);
	cr_assert_eq((int)r->outcome, 42, "the raw value is kept for the reader to judge");
	saga__v1__step_reply__free_unpacked(r, NULL);
}

/*
 * Wire codec: the only module that uses the generated saga.v1 protobuf code.
 * Decoders check sizes before unpacking and validate every field that later
 * becomes part of a subject, a header, a log line or SQL.
 */
#ifndef SAGAD_CODEC_H
#define SAGAD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "saga.h"
#include "status.h"

/* Content-Type header values naming each message. */
#define CT_START_REQUEST   "application/x-protobuf; proto=saga.v1.StartSagaRequest"
#define CT_START_RESPONSE  "application/x-protobuf; proto=saga.v1.StartSagaResponse"
#define CT_STEP_COMMAND    "application/x-protobuf; proto=saga.v1.StepCommand"
#define CT_STEP_REPLY      "application/x-protobuf; proto=saga.v1.StepReply"
#define CT_EVENT           "application/x-protobuf; proto=saga.v1.LifecycleEvent"
#define CT_DEFINE_REQUEST  "application/x-protobuf; proto=saga.v1.DefineRequest"
#define CT_DEFINE_RESPONSE "application/x-protobuf; proto=saga.v1.DefineResponse"
#define CT_DEAD_LETTER     "application/x-protobuf; proto=saga.v1.DeadLetter"

/* Largest encoded message any decoder accepts before even trying. */
#define CODEC_MAX_MESSAGE (64 * 1024 * 1024)

/* Room for a message's fields besides its max_payload-sized input or output. */
#define CODEC_ENVELOPE_MAX 4096

/* A decoded StepReply. Strings are copies; output points into the decoded message. */
struct reply_msg {
	char saga_id[SAGA_ID_LEN + 1];                 /* validated UUID text */
	char correlation_id[SAGA_CORRELATION_MAX + 1]; /* validated, may be "" */
	char step[SAGA_NAME_MAX + 1];                  /* validated step name */
	enum step_phase phase;                         /* action or compensation */
	uint32_t attempt;                              /* >= 1 */
	enum reply_outcome outcome;                    /* success / retryable / permanent */
	struct bytes output;                           /* borrowed from pb */
	char error[SAGA_ERROR_MAX + 1];                /* error_code: error_message, truncated */
	int64_t completed_unix_ms; /* when the participant finished (its clock) */
	void *pb;                  /* the unpacked message (codec-owned) */
};

/* A decoded StepCommand (for participants). Strings are copies; bytes point into pb. */
struct command_msg {
	char saga_id[SAGA_ID_LEN + 1];                 /* UUID */
	char correlation_id[SAGA_CORRELATION_MAX + 1]; /* correlation id */
	char saga_name[SAGA_NAME_MAX + 1];             /* definition name */
	uint32_t saga_version;                         /* definition version */
	char step[SAGA_NAME_MAX + 1];                  /* step name */
	enum step_phase phase;                         /* action or compensation */
	uint32_t attempt;                              /* >= 1 */
	char idempotency_key[SAGA_KEY_MAX + 1];        /* dedupe key */
	int64_t deadline_unix_ms;                      /* when sagad stops waiting */
	int64_t sent_unix_ms;                          /* when the command was created */
	char reply_subject[256];                       /* where to publish the reply */
	struct bytes input;                            /* saga input, borrowed */
	int n_outputs;                                 /* earlier outputs */
	const char *output_steps[SAGA_MAX_STEPS];      /* their step names, borrowed */
	struct bytes outputs[SAGA_MAX_STEPS];          /* their outputs, borrowed */
	void *pb;                                      /* the unpacked message */
};

/* A decoded StartSagaRequest. */
struct start_msg {
	char saga_name[SAGA_NAME_MAX + 1];             /* may be "" (taken from the subject) */
	uint32_t version;                              /* 0 = latest */
	struct bytes input;                            /* borrowed */
	char idempotency_key[SAGA_KEY_MAX + 1];        /* "" = none */
	char correlation_id[SAGA_CORRELATION_MAX + 1]; /* "" = generate */
	int64_t deadline_unix_ms;                      /* 0 = the definition's */
	char traceparent[SAGA_TRACEPARENT_MAX + 1];    /* "" = none */
	char *labels_json;                             /* JSON object of the labels (owned) */
	void *pb;                                      /* the unpacked message */
};

/* Status values of StartSagaResponse (numbers match the wire enum). */
enum start_status {
	START_ACCEPTED = 1,  /* new saga */
	START_DUPLICATE = 2, /* idempotency key seen: the first saga's ids */
	START_REJECTED = 3,  /* nothing created */
};

/* Reject codes of StartSagaResponse (numbers match the wire enum). */
enum start_reject {
	REJECT_NONE = 0,         /* not rejected */
	REJECT_UNKNOWN_SAGA = 1, /* no such definition / version */
	REJECT_INVALID = 2,      /* bad request */
	REJECT_OVERLOADED = 3,   /* admission limit */
	REJECT_UNAVAILABLE = 4,  /* database unavailable */
};

/* The answer to a start. */
struct start_answer {
	enum start_status status;                      /* outcome */
	char saga_id[SAGA_ID_LEN + 1];                 /* "" when rejected */
	char correlation_id[SAGA_CORRELATION_MAX + 1]; /* correlation id */
	char saga_name[SAGA_NAME_MAX + 1];             /* definition name */
	uint32_t version;                              /* definition version */
	enum start_reject reject;                      /* why rejected */
	char reason[SAGA_ERROR_MAX + 1];               /* for humans */
	int64_t retry_after_ms;                        /* when to retry (overloaded) */
	int64_t accepted_unix_ms;                      /* database time of creation */
};

/* A dead letter as published on <prefix>.dlq.<class>. */
struct dead_letter_msg {
	int64_t id;                       /* table id */
	const char *source_subject;       /* subject it arrived on */
	const char *const *header_names;  /* n_headers names */
	const char *const *header_values; /* n_headers values */
	int n_headers;                    /* header count */
	struct bytes payload;             /* raw bytes */
	const char *reason;               /* why */
	const char *error_class;          /* grouping class */
	const char *saga_id;              /* or "" */
	const char *correlation_id;       /* or "" */
	const char *step;                 /* or "" */
	int64_t created_unix_ms;          /* when */
	const char *stream_sequence;      /* "STREAM:SEQ" or "" */
};

/* The answer to a definition registration. */
struct define_answer {
	int status;                   /* 1 created, 2 unchanged, 3 rejected */
	char name[SAGA_NAME_MAX + 1]; /* saga name */
	uint32_t version;             /* version created or found */
	char error[512];              /* why rejected */
	char field[128];              /* offending field path */
};

/* Encoders: *out receives a malloc'd buffer the caller frees. */
enum status codec_encode_command(const struct saga_def *def, const struct saga_inst *inst,
                                 const struct plan_command *cmd, const char *reply_subject,
                                 int64_t now_ms, struct bytes *out) MUSTCHECK;
enum status codec_encode_event(const struct saga_def *def, const struct saga_inst *inst,
                               const struct plan_event *ev, int32_t seq, int64_t now_ms,
                               struct bytes *out) MUSTCHECK;
enum status codec_encode_reply(const struct command_msg *cmd, enum reply_outcome outcome,
                               struct bytes output, const char *error_code,
                               const char *error_message, const char *participant, int64_t now_ms,
                               struct bytes *out) MUSTCHECK;
enum status codec_encode_start_answer(const struct start_answer *a, struct bytes *out) MUSTCHECK;
enum status codec_encode_start_request(const char *saga_name, uint32_t version, struct bytes input,
                                       const char *idempotency_key, const char *correlation_id,
                                       struct bytes *out) MUSTCHECK;
/* The same with W3C trace context (may be NULL or ""). */
enum status codec_encode_start_request_traced(const char *saga_name, uint32_t version,
                                              struct bytes input, const char *idempotency_key,
                                              const char *correlation_id, const char *traceparent,
                                              struct bytes *out) MUSTCHECK;
enum status codec_encode_rejected_event(const char *saga_name, const struct start_answer *a,
                                        const char *idempotency_key, int64_t now_ms,
                                        struct bytes *out) MUSTCHECK;
enum status codec_encode_dead_letter(const struct dead_letter_msg *m, struct bytes *out) MUSTCHECK;

/* Canonical encoding of a definition (version forced to 0) and its hash as 16 hex digits. */
enum status codec_encode_definition(const struct saga_def *def, struct bytes *out) MUSTCHECK;
enum status codec_definition_hash(const struct saga_def *def, char hex[17]) MUSTCHECK;
enum status codec_encode_define_request(const struct saga_def *def, struct bytes *out) MUSTCHECK;
enum status codec_encode_define_answer(const struct define_answer *a, struct bytes *out) MUSTCHECK;

/*
 * Decoders: refuse input longer than max_len (STATUS_TOO_LARGE) before
 * unpacking; STATUS_DECODE when it is not the message; STATUS_INVALID when a
 * field breaks a rule (err says which). Free with the matching *_free.
 */
enum status codec_decode_reply(const uint8_t *data, size_t len, size_t max_len,
                               struct reply_msg *out, char *err, size_t errlen) MUSTCHECK;
void codec_reply_free(struct reply_msg *m);

enum status codec_decode_command(const uint8_t *data, size_t len, size_t max_len,
                                 struct command_msg *out, char *err, size_t errlen) MUSTCHECK;
void codec_command_free(struct command_msg *m);

enum status codec_decode_start(const uint8_t *data, size_t len, size_t max_len,
                               struct start_msg *out, char *err, size_t errlen) MUSTCHECK;
void codec_start_free(struct start_msg *m);

enum status codec_decode_start_answer(const uint8_t *data, size_t len, struct start_answer *out,
                                      char *err, size_t errlen) MUSTCHECK;

/* A definition from a DefineRequest (wire) or a stored canonical body; not yet validated. */
enum status codec_decode_define_request(const uint8_t *data, size_t len, struct saga_def *out,
                                        char *err, size_t errlen) MUSTCHECK;
enum status codec_decode_definition(const uint8_t *data, size_t len, struct saga_def *out,
                                    char *err, size_t errlen) MUSTCHECK;
enum status codec_decode_define_answer(const uint8_t *data, size_t len, struct define_answer *out,
                                       char *err, size_t errlen) MUSTCHECK;

/* Event type name used as the last subject token: "started", "step_succeeded", ... */
const char *codec_event_token(enum lifecycle_type t);

/* True for canonical lower-case UUID text. */
bool codec_valid_uuid(const char *s);

#endif /* SAGAD_CODEC_H */

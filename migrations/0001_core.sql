-- The tables of the saga engine: definitions, instances, steps, transitions,
-- the transactional outbox, and dead letters. Applied by `sagad migrate` in
-- one transaction; never edit it once applied: add a new numbered file.

-- One row per registered version of a saga definition; versions are immutable.
CREATE TABLE saga_definition (
    name        text        NOT NULL CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$'),
    version     integer     NOT NULL CHECK (version > 0),
    body        bytea       NOT NULL,           -- encoded saga.v1.SagaDefinition (canonical)
    body_hash   text        NOT NULL,           -- hash of body: identical re-registration is a no-op
    source      text,                           -- the YAML text it came from, if any
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- One row per saga instance.
CREATE TABLE saga_instance (
    id                 uuid        PRIMARY KEY,
    correlation_id     text        NOT NULL,
    definition_name    text        NOT NULL,
    definition_version integer     NOT NULL,
    state              text        NOT NULL CHECK (state IN
                         ('running', 'compensating', 'completed', 'compensated', 'failed', 'resolved')),
    input              bytea       NOT NULL,
    idempotency_key    text,                    -- start dedupe key (unique per definition)
    labels             jsonb       NOT NULL DEFAULT '{}',
    traceparent        text,
    seq                integer     NOT NULL DEFAULT 0,  -- last transition sequence number
    wake_at            timestamptz,             -- earliest timer (timeout, retry, deadline); NULL = none
    deadline_at        timestamptz,             -- saga-level deadline, from the database clock
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    ended_at           timestamptz,
    FOREIGN KEY (definition_name, definition_version) REFERENCES saga_definition (name, version)
);

CREATE UNIQUE INDEX saga_instance_idempotency
    ON saga_instance (definition_name, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX saga_instance_wake ON saga_instance (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX saga_instance_correlation ON saga_instance (correlation_id);
CREATE INDEX saga_instance_active ON saga_instance (state, updated_at)
    WHERE state IN ('running', 'compensating', 'failed');

-- One row per step of an instance.
CREATE TABLE saga_step (
    saga_id          uuid        NOT NULL REFERENCES saga_instance (id),
    step_index       smallint    NOT NULL,
    name             text        NOT NULL,
    state            text        NOT NULL CHECK (state IN
                       ('pending', 'running', 'waiting_retry', 'succeeded', 'failed',
                        'compensating', 'compensation_waiting_retry', 'compensated',
                        'compensation_failed', 'skipped')),
    attempt          integer     NOT NULL DEFAULT 0,  -- action attempts made
    comp_attempt     integer     NOT NULL DEFAULT 0,  -- compensation attempts made
    wake_at          timestamptz,                     -- this step's attempt timeout or retry due time
    completed_order  integer,                         -- order of completion (compensate in reverse)
    output           bytea,
    last_error       text,
    started_at       timestamptz,
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, step_index)
);

-- Append-only history of every transition, carrying the correlation id.
CREATE TABLE saga_transition (
    saga_id         uuid        NOT NULL,
    seq             integer     NOT NULL,
    correlation_id  text        NOT NULL,
    event           text        NOT NULL,           -- start, reply, timeout, retry_due, deadline, abort, ...
    outcome         text,                           -- applied, duplicate, stale, late, ...
    from_state      text,
    to_state        text        NOT NULL,
    step            text,
    phase           text,                           -- action / compensation
    attempt         integer,
    detail          text,
    at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, seq)
);
CREATE INDEX saga_transition_correlation ON saga_transition (correlation_id);

CREATE FUNCTION saga_transition_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'saga_transition is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER saga_transition_no_change
    BEFORE UPDATE OR DELETE ON saga_transition
    FOR EACH ROW EXECUTE FUNCTION saga_transition_append_only();

-- Transactional outbox: rows written with the state change, published by the
-- relay with Nats-Msg-Id = msg_id, deleted once JetStream acked them.
CREATE TABLE saga_outbox (
    id              bigserial   PRIMARY KEY,
    subject         text        NOT NULL,
    msg_id          text        NOT NULL,
    content_type    text        NOT NULL,           -- protobuf message name
    saga_id         uuid,
    correlation_id  text,
    step            text,
    attempt         integer,
    traceparent     text,
    payload         bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Messages that could not be processed, kept for diagnosis and re-drive.
CREATE TABLE saga_dead_letter (
    id              bigserial   PRIMARY KEY,
    source_subject  text        NOT NULL,
    source_key      text,                           -- "STREAM:SEQ" of the original: dead-lettered once
    headers         jsonb       NOT NULL DEFAULT '{}',
    payload         bytea,
    reason          text        NOT NULL,
    error_class     text        NOT NULL,
    saga_id         uuid,
    correlation_id  text,
    step            text,
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN
                      ('open', 'diagnosed', 'replayed', 'discarded')),
    note            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX saga_dead_letter_source ON saga_dead_letter (source_key)
    WHERE source_key IS NOT NULL;
CREATE INDEX saga_dead_letter_open ON saga_dead_letter (status, error_class)
    WHERE status IN ('open', 'diagnosed');

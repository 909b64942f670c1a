-- What operators did, and the dead-letter lifecycle: an append-only audit
-- table written by every sagactl action (including dry runs and refusals),
-- and the columns that record who diagnosed, discarded or replayed a dead
-- letter, when, and with what outcome.

-- One row per operator action.
CREATE TABLE sagad_audit (
    id       bigserial   PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text        NOT NULL,          -- --actor, else $USER of the sagactl process
    action   text        NOT NULL,          -- retry, abort, resolve, define, start, retry.bulk,
                                            -- abort.bulk, dlq.diagnose, dlq.discard, dlq.replay, ...
    target   text,                          -- saga id, letter id, fingerprint, definition name
    filter   text,                          -- the filters of a bulk action, as given
    count    integer,                       -- items the action concerned (bulk forms, dry runs)
    note     text,                          -- the operator's note
    outcome  text        NOT NULL           -- applied, refused: <why>, dry_run, ...
);
CREATE INDEX sagad_audit_at ON sagad_audit (at);
CREATE INDEX sagad_audit_target ON sagad_audit (target);

CREATE FUNCTION sagad_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sagad_audit is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER sagad_audit_no_change
    BEFORE UPDATE OR DELETE ON sagad_audit
    FOR EACH ROW EXECUTE FUNCTION sagad_audit_append_only();

-- The dead-letter lifecycle: open -> diagnosed -> replayed | discarded.
ALTER TABLE saga_dead_letter
    ADD COLUMN diagnosed_at   timestamptz,                 -- last `sagactl dlq diagnose`
    ADD COLUMN diagnosed_by   text,
    ADD COLUMN discarded_at   timestamptz,                 -- `sagactl dlq discard`
    ADD COLUMN discarded_by   text,
    ADD COLUMN replayed_at    timestamptz,                 -- when the replay was claimed
    ADD COLUMN replayed_by    text,
    ADD COLUMN replay_outcome text,                        -- published / retried: ... / refused: ...
    ADD COLUMN replay_count   integer NOT NULL DEFAULT 0,  -- replays of this letter that went out
    ADD COLUMN replay_of      bigint;                      -- the letter whose replay came back as this one

CREATE INDEX saga_dead_letter_replay_of ON saga_dead_letter (replay_of)
    WHERE replay_of IS NOT NULL;
CREATE INDEX saga_dead_letter_saga ON saga_dead_letter (saga_id)
    WHERE saga_id IS NOT NULL;

-- Letters are grouped by fingerprint: the saga definition, the step and the
-- error class (a letter of no known saga has an empty definition).
CREATE FUNCTION sagad_dead_letter_fingerprint(definition text, step text, error_class text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT left(md5(coalesce(definition, '') || '/' || coalesce(step, '') || '/'
                    || coalesce(error_class, '')), 12)
$$;

-- A replayed message carries the header Saga-Replay-Of: <letter id>; when it
-- dead-letters again, the new letter points back at the one replayed. A saga
-- that fails again after an operator retry points at its last re-driven letter.
CREATE FUNCTION saga_dead_letter_link_replay() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.replay_of IS NULL THEN
        IF NEW.headers ? 'Saga-Replay-Of'
           AND NEW.headers ->> 'Saga-Replay-Of' ~ '^[0-9]{1,18}$' THEN
            NEW.replay_of := (NEW.headers ->> 'Saga-Replay-Of')::bigint;
        ELSIF NEW.source_subject = 'saga' AND NEW.saga_id IS NOT NULL THEN
            SELECT d.id INTO NEW.replay_of
            FROM saga_dead_letter d
            WHERE d.saga_id = NEW.saga_id AND d.source_subject = 'saga'
              AND d.status = 'replayed'
            ORDER BY d.id DESC
            LIMIT 1;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER saga_dead_letter_replay_link
    BEFORE INSERT ON saga_dead_letter
    FOR EACH ROW EXECUTE FUNCTION saga_dead_letter_link_replay();

-- Grants, when the roles of 0004_operator_views.sql exist: sagactl runs as
-- sagad_service and may only append to the audit trail; sagad_operator may
-- read it. sagad_owner owns the new objects like the others.
DO $grants$
DECLARE
    s text := current_schema();
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sagad_owner') THEN
        EXECUTE format('ALTER TABLE %I.sagad_audit OWNER TO sagad_owner', s);
        EXECUTE format('ALTER FUNCTION %I.sagad_audit_append_only() OWNER TO sagad_owner', s);
        EXECUTE format('ALTER FUNCTION %I.saga_dead_letter_link_replay() OWNER TO sagad_owner',
                       s);
        EXECUTE format('ALTER FUNCTION %I.sagad_dead_letter_fingerprint(text, text, text)'
                       ' OWNER TO sagad_owner', s);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sagad_service') THEN
        EXECUTE format('GRANT SELECT, INSERT ON %I.sagad_audit TO sagad_service', s);
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO sagad_service',
                       pg_get_serial_sequence(format('%I.sagad_audit', s), 'id'));
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sagad_operator') THEN
        EXECUTE format('GRANT SELECT ON %I.sagad_audit TO sagad_operator', s);
    END IF;
END
$grants$;

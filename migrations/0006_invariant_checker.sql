-- The invariant checker (RELIABILITY.md I1-I6) as one function any test,
-- benchmark or operator can call after a run:
--   SELECT * FROM saga_check_invariants();
-- One row per check with the number of violations (0 = holds). Checks on the
-- participants' tables run when those tables are visible in the search_path.
-- I1 needs the starts a client saw accepted: put their ids in a temporary
-- table accepted_starts(saga_id uuid) first, or the check reports NULL.
-- I5 (empty outbox) and the stalled-saga part of I2 are meaningful only when
-- the system is idle.

CREATE FUNCTION saga_check_invariants()
RETURNS TABLE (invariant text, check_name text, violations bigint, description text)
LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    -- I1: every accepted start has a saga row.
    IF to_regclass('pg_temp.accepted_starts') IS NOT NULL THEN
        EXECUTE 'SELECT count(*) FROM pg_temp.accepted_starts a
                 WHERE NOT EXISTS (SELECT 1 FROM saga_instance i WHERE i.id = a.saga_id)'
            INTO n;
    ELSE
        n := NULL;
    END IF;
    RETURN QUERY SELECT 'I1'::text, 'accepted_without_row'::text, n,
        'starts answered accepted (temp table accepted_starts) with no saga row'::text;

    -- I2: nothing silently pending: a running or compensating saga has a timer armed.
    RETURN QUERY SELECT 'I2'::text, 'active_without_timer'::text,
        (SELECT count(*) FROM saga_instance
          WHERE state IN ('running', 'compensating') AND wake_at IS NULL),
        'running or compensating sagas that nothing will ever wake'::text;
    RETURN QUERY SELECT 'I2'::text, 'failed_without_dead_letter'::text,
        (SELECT count(*) FROM saga_instance i WHERE i.state = 'failed'
            AND NOT EXISTS (SELECT 1 FROM saga_dead_letter d WHERE d.saga_id = i.id)),
        'failed sagas with no dead letter telling an operator'::text;

    -- I3: the orchestrator never moves a saga twice on one reply; participants
    -- never apply a command twice.
    RETURN QUERY SELECT 'I3'::text, 'reply_applied_twice'::text,
        (SELECT count(*) FROM (
            SELECT 1 FROM saga_transition
             WHERE event = 'reply' AND outcome = 'applied'
             GROUP BY saga_id, step, phase, attempt HAVING count(*) > 1) g),
        'a (saga, step, phase, attempt) whose reply changed the saga more than once'::text;
    IF to_regclass('participant_effects') IS NOT NULL THEN
        EXECUTE 'SELECT count(*) - count(DISTINCT idempotency_key) FROM participant_effects'
            INTO n;
    ELSE
        n := NULL;
    END IF;
    RETURN QUERY SELECT 'I3'::text, 'duplicate_side_effects'::text, n,
        'side effects recorded twice for one idempotency key (participant_effects)'::text;

    -- I4: transitions only grow; compensations in reverse completion order;
    -- no forward dispatch after compensation began unless an operator retried.
    RETURN QUERY SELECT 'I4'::text, 'transition_gap'::text,
        (SELECT count(*) FROM (
            SELECT saga_id FROM saga_transition GROUP BY saga_id
            HAVING min(seq) <> 1 OR max(seq) <> count(*)) g),
        'sagas whose transition numbers are not 1..n'::text;
    RETURN QUERY SELECT 'I4'::text, 'transition_seq_mismatch'::text,
        (SELECT count(*) FROM saga_instance i
          WHERE i.seq <> COALESCE((SELECT max(seq) FROM saga_transition t
                                   WHERE t.saga_id = i.id), 0)),
        'sagas whose last transition is not the one the instance row records'::text;
    RETURN QUERY SELECT 'I4'::text, 'compensation_order'::text,
        (SELECT count(*) FROM (
            WITH comp AS (
                SELECT s.saga_id, s.completed_order,
                       (SELECT max(t.seq) FROM saga_transition t
                         WHERE t.saga_id = s.saga_id AND t.step = s.name
                           AND t.phase = 'compensation' AND t.outcome = 'applied'
                           AND t.event = 'reply') AS comp_seq
                  FROM saga_step s
                 WHERE s.state = 'compensated' AND s.completed_order IS NOT NULL)
            SELECT 1 FROM comp a JOIN comp b USING (saga_id)
             WHERE a.completed_order < b.completed_order
               AND a.comp_seq IS NOT NULL AND b.comp_seq IS NOT NULL
               AND a.comp_seq < b.comp_seq) g),
        'pairs of steps compensated in the order they completed instead of the reverse'::text;
    RETURN QUERY SELECT 'I4'::text, 'forward_after_compensation'::text,
        (SELECT count(*) FROM saga_transition f
          WHERE f.event = 'retry_due' AND f.phase = 'action' AND f.outcome = 'applied'
            AND EXISTS (SELECT 1 FROM saga_transition c
                         WHERE c.saga_id = f.saga_id AND c.to_state = 'compensating'
                           AND c.seq < f.seq
                           AND NOT EXISTS (SELECT 1 FROM saga_transition r
                                            WHERE r.saga_id = f.saga_id AND r.event = 'retry'
                                              AND r.seq > c.seq AND r.seq < f.seq))),
        'action attempts dispatched after compensation began (without an operator retry)'::text;
    RETURN QUERY SELECT 'I4'::text, 'completed_with_unfinished_step'::text,
        (SELECT count(*) FROM saga_instance i WHERE i.state = 'completed'
            AND EXISTS (SELECT 1 FROM saga_step s WHERE s.saga_id = i.id
                                                  AND s.state <> 'succeeded')),
        'completed sagas with a step that did not succeed'::text;

    -- I5: when idle, the outbox is empty.
    RETURN QUERY SELECT 'I5'::text, 'outbox_rows'::text, (SELECT count(*) FROM saga_outbox),
        'outbox rows not yet published (must be 0 when idle)'::text;

    -- I6: a message is dead-lettered once.
    RETURN QUERY SELECT 'I6'::text, 'dead_letter_duplicated'::text,
        (SELECT count(*) FROM (
            SELECT source_key FROM saga_dead_letter WHERE source_key IS NOT NULL
             GROUP BY source_key HAVING count(*) > 1) g),
        'source messages with more than one dead letter'::text;
END
$fn$;

COMMENT ON FUNCTION saga_check_invariants() IS
    'RELIABILITY.md invariants I1-I6: one row per check with its violation count (0 = holds)';

-- Operators' first question: which sagas are stuck? A saga is stuck when it
-- is failed (it waits for an operator), or when it is not terminal and has
-- made no progress for longer than the 'stuck_after' setting.

CREATE TABLE sagad_setting (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    description text NOT NULL
);

INSERT INTO sagad_setting (name, value, description) VALUES
    ('stuck_after', '5 minutes',
     'a running or compensating saga with no transition for this long is listed in saga_stuck');

-- One row per stuck saga, with the step it waits on (the first step that is
-- not finished, in compensation order when compensating).
CREATE VIEW saga_stuck AS
SELECT i.id                                   AS saga_id,
       i.correlation_id,
       i.definition_name,
       i.definition_version,
       i.state,
       CASE WHEN i.state = 'failed' THEN 'failed: needs an operator (retry or resolve)'
            ELSE 'no progress for ' || date_trunc('second', now() - i.updated_at)::text
       END                                    AS reason,
       w.name                                 AS waiting_step,
       w.state                                AS step_state,
       CASE WHEN w.state LIKE 'compensat%' THEN w.comp_attempt ELSE w.attempt END
                                              AS attempts,
       COALESCE(w.last_error, i.last_error)   AS last_error,
       now() - i.created_at                   AS age,
       now() - i.updated_at                   AS idle,
       i.wake_at                              AS next_wake_at
FROM saga_instance i
LEFT JOIN LATERAL (
    SELECT s.name, s.state, s.attempt, s.comp_attempt, s.last_error
    FROM saga_step s
    WHERE s.saga_id = i.id
      AND s.state IN ('running', 'waiting_retry', 'failed', 'compensating',
                      'compensation_waiting_retry', 'compensation_failed')
    ORDER BY (s.state LIKE 'compensat%') DESC, s.step_index DESC
    LIMIT 1
) w ON true
WHERE i.state = 'failed'
   OR (i.state IN ('running', 'compensating')
       AND i.updated_at < now() - (SELECT value::interval FROM sagad_setting
                                   WHERE name = 'stuck_after'));

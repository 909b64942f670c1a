-- Operators' views and the three database roles. The views are a public
-- interface: their columns are stable (add at the end, never rename, retype or
-- drop) and documented here (COMMENT ON) and in docs/operators.md. The roles
-- are cluster-wide; the grants are for the schema this migration runs in.

-- Settings read by the views (operators may UPDATE the values).
INSERT INTO sagad_setting (name, value, description) VALUES
    ('stats_window', '1 hour',
     'saga_step_stats counts the steps that finished within this interval before now')
ON CONFLICT (name) DO NOTHING;
UPDATE sagad_setting
   SET description = 'saga_stuck lists a running or compensating saga with no transition for '
                     'this long, or whose awaited step has not succeeded this long after its '
                     'first attempt'
 WHERE name = 'stuck_after';

-- saga_stuck: 0003's columns first, in order (CREATE OR REPLACE may only
-- append). "No progress" is either no transition at all for stuck_after, or a
-- step that keeps being retried without succeeding for stuck_after since its
-- first attempt (a retriable step with unlimited attempts makes transitions
-- forever and would otherwise never be listed).
CREATE OR REPLACE VIEW saga_stuck AS
SELECT i.id                                   AS saga_id,
       i.correlation_id,
       i.definition_name,
       i.definition_version,
       i.state,
       CASE WHEN i.state = 'failed' THEN 'failed: needs an operator (retry or resolve)'
            WHEN i.updated_at < now() - stuck_after.after
                 THEN 'no progress for ' || date_trunc('second', now() - i.updated_at)::text
            ELSE 'step ' || w.name || ' not done after '
                 || date_trunc('second', now() - w.started_at)::text
                 || ' (' || w.attempt || CASE WHEN w.attempt = 1 THEN ' attempt)'
                                              ELSE ' attempts)' END
       END                                    AS reason,
       w.name                                 AS waiting_step,
       w.state                                AS step_state,
       CASE WHEN w.state LIKE 'compensat%' THEN w.comp_attempt ELSE w.attempt END
                                              AS attempts,
       COALESCE(w.last_error, i.last_error)   AS last_error,
       now() - i.created_at                   AS age,
       now() - i.updated_at                   AS idle,
       i.wake_at                              AS next_wake_at,
       CASE WHEN w.state LIKE 'compensat%' THEN 'compensation'
            WHEN w.state IS NOT NULL THEN 'action'
       END                                    AS phase,
       w.uncertain,
       w.started_at                           AS step_started_at,
       i.updated_at,
       i.created_at
FROM saga_instance i
CROSS JOIN LATERAL (
    SELECT COALESCE((SELECT value::interval FROM sagad_setting WHERE name = 'stuck_after'),
                    interval '5 minutes') AS after
) stuck_after
LEFT JOIN LATERAL (
    -- The step the saga waits on: the one being compensated (latest
    -- completion first, as the engine undoes them), else the first step of the
    -- forward path still out, else the step that failed.
    SELECT s.name, s.state, s.attempt, s.comp_attempt, s.last_error, s.uncertain, s.started_at
    FROM saga_step s
    WHERE s.saga_id = i.id
      AND s.state IN ('running', 'waiting_retry', 'failed', 'compensating',
                      'compensation_waiting_retry', 'compensation_failed')
    ORDER BY CASE WHEN s.state LIKE 'compensat%' THEN 0
                  WHEN s.state IN ('running', 'waiting_retry') THEN 1
                  ELSE 2 END,
             s.completed_order DESC NULLS LAST,
             s.step_index
    LIMIT 1
) w ON true
-- The first two conditions involve only the saga row: they filter it before
-- the step lookup, so only failed sagas and active ones older than
-- stuck_after (few, normally) cost a look at their steps.
WHERE i.state IN ('running', 'compensating', 'failed')
  AND (i.state = 'failed' OR i.created_at < now() - stuck_after.after)
  AND (i.state = 'failed'
       OR i.updated_at < now() - stuck_after.after
       OR (w.state IN ('running', 'waiting_retry') AND w.started_at < now() - stuck_after.after))
ORDER BY i.state = 'failed' DESC, i.updated_at;

COMMENT ON VIEW saga_stuck IS
    'Sagas that need attention: every failed saga, and every running or compensating saga '
    'with no transition for the stuck_after setting or whose awaited step has not succeeded '
    'stuck_after after its first attempt. Failed first, then longest idle first.';
COMMENT ON COLUMN saga_stuck.saga_id IS 'saga id';
COMMENT ON COLUMN saga_stuck.correlation_id IS 'correlation id carried by every message and log line of the saga';
COMMENT ON COLUMN saga_stuck.definition_name IS 'saga definition name';
COMMENT ON COLUMN saga_stuck.definition_version IS 'definition version the saga runs under';
COMMENT ON COLUMN saga_stuck.state IS 'saga state: running, compensating or failed';
COMMENT ON COLUMN saga_stuck.reason IS
    '''failed: needs an operator (retry or resolve)'', ''no progress for HH:MM:SS'' or '
    '''step S not done after HH:MM:SS (N attempts)''';
COMMENT ON COLUMN saga_stuck.waiting_step IS
    'step the saga waits on (being compensated, else first forward step still out, else the failed step); NULL when none';
COMMENT ON COLUMN saga_stuck.step_state IS 'state of waiting_step';
COMMENT ON COLUMN saga_stuck.attempts IS
    'attempts made on waiting_step in its current phase (compensation attempts when compensating)';
COMMENT ON COLUMN saga_stuck.last_error IS 'last error of waiting_step, else of the saga';
COMMENT ON COLUMN saga_stuck.age IS 'time since the saga started';
COMMENT ON COLUMN saga_stuck.idle IS 'time since the saga''s last transition';
COMMENT ON COLUMN saga_stuck.next_wake_at IS 'next timer (attempt timeout, retry, deadline); NULL = none armed';
COMMENT ON COLUMN saga_stuck.phase IS 'phase of waiting_step: action or compensation';
COMMENT ON COLUMN saga_stuck.uncertain IS 'the last action attempt of waiting_step timed out: its effect is unknown';
COMMENT ON COLUMN saga_stuck.step_started_at IS 'first action attempt of waiting_step';
COMMENT ON COLUMN saga_stuck.updated_at IS 'time of the saga''s last transition';
COMMENT ON COLUMN saga_stuck.created_at IS 'time the saga started';

-- Per definition, version and state: how many sagas, oldest and newest.
CREATE VIEW saga_overview AS
SELECT definition_name,
       definition_version,
       state,
       count(*)        AS sagas,
       min(created_at) AS oldest_created_at,
       max(created_at) AS newest_created_at
FROM saga_instance
GROUP BY definition_name, definition_version, state
ORDER BY definition_name, definition_version, state;

COMMENT ON VIEW saga_overview IS
    'One row per (definition name, version, state) that has sagas: count and creation range';
COMMENT ON COLUMN saga_overview.definition_name IS 'saga definition name';
COMMENT ON COLUMN saga_overview.definition_version IS 'definition version';
COMMENT ON COLUMN saga_overview.state IS
    'saga state: running, compensating, completed, compensated, failed, resolved';
COMMENT ON COLUMN saga_overview.sagas IS 'number of sagas in this state';
COMMENT ON COLUMN saga_overview.oldest_created_at IS 'start of the oldest of them';
COMMENT ON COLUMN saga_overview.newest_created_at IS 'start of the newest of them';

-- Per definition, version and step, over the stats_window setting: what
-- finished, how many retries it took, and how long successful steps took.
-- Latency is a step row's completed_at - started_at: from the first attempt's
-- dispatch to the commit of its success, retries and backoff included (what a
-- saga waits for); both are database-clock times of the committing
-- transactions. A step counts in the window when it finished in it.
CREATE VIEW saga_step_stats AS
SELECT i.definition_name,
       i.definition_version,
       s.step_index,
       s.name                                                     AS step,
       count(*) FILTER (WHERE s.completed_at >= win.since)        AS completed,
       count(*) FILTER (WHERE s.state = 'failed' AND s.updated_at >= win.since)
                                                                  AS failed,
       COALESCE(sum(greatest(s.attempt - 1, 0))
                FILTER (WHERE s.completed_at >= win.since
                           OR (s.state = 'failed' AND s.updated_at >= win.since)), 0)
                                                                  AS retries,
       count(*) FILTER (WHERE s.state = 'compensated' AND s.updated_at >= win.since)
                                                                  AS compensated,
       count(*) FILTER (WHERE s.state = 'compensation_failed' AND s.updated_at >= win.since)
                                                                  AS compensation_failed,
       COALESCE(sum(greatest(s.comp_attempt - 1, 0))
                FILTER (WHERE s.state IN ('compensated', 'compensation_failed')
                          AND s.updated_at >= win.since), 0)      AS compensation_retries,
       round(percentile_cont(0.50) WITHIN GROUP (ORDER BY lat.ms)
             FILTER (WHERE s.completed_at >= win.since)::numeric, 1) AS p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY lat.ms)
             FILTER (WHERE s.completed_at >= win.since)::numeric, 1) AS p95_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lat.ms)
             FILTER (WHERE s.completed_at >= win.since)::numeric, 1) AS p99_ms,
       round(max(lat.ms) FILTER (WHERE s.completed_at >= win.since)::numeric, 1) AS max_ms,
       win.since                                                  AS window_start
FROM saga_step s
JOIN saga_instance i ON i.id = s.saga_id
CROSS JOIN LATERAL (
    SELECT now() - COALESCE((SELECT value::interval FROM sagad_setting
                             WHERE name = 'stats_window'), interval '1 hour') AS since
) win
CROSS JOIN LATERAL (
    SELECT (extract(epoch FROM s.completed_at - s.started_at) * 1000)::float8 AS ms
) lat
WHERE s.completed_at >= win.since
   OR (s.state IN ('failed', 'compensated', 'compensation_failed') AND s.updated_at >= win.since)
GROUP BY i.definition_name, i.definition_version, s.step_index, s.name, win.since
ORDER BY i.definition_name, i.definition_version, s.step_index;

COMMENT ON VIEW saga_step_stats IS
    'Per definition, version and step: steps that finished within the stats_window setting '
    '(counts, retries, latency percentiles of successful actions). Steps with no finish in '
    'the window have no row.';
COMMENT ON COLUMN saga_step_stats.definition_name IS 'saga definition name';
COMMENT ON COLUMN saga_step_stats.definition_version IS 'definition version';
COMMENT ON COLUMN saga_step_stats.step_index IS 'position of the step in the definition (0-based)';
COMMENT ON COLUMN saga_step_stats.step IS 'step name';
COMMENT ON COLUMN saga_step_stats.completed IS 'actions that succeeded in the window (even if compensated later)';
COMMENT ON COLUMN saga_step_stats.failed IS 'actions that failed for good in the window (permanent failure or attempts exhausted)';
COMMENT ON COLUMN saga_step_stats.retries IS 'attempts beyond the first of the actions counted in completed and failed';
COMMENT ON COLUMN saga_step_stats.compensated IS 'compensations that succeeded in the window';
COMMENT ON COLUMN saga_step_stats.compensation_failed IS 'compensations that exhausted their attempts in the window';
COMMENT ON COLUMN saga_step_stats.compensation_retries IS 'compensation attempts beyond the first of those counted in compensated and compensation_failed';
COMMENT ON COLUMN saga_step_stats.p50_ms IS 'median ms from first attempt to success, of the actions counted in completed';
COMMENT ON COLUMN saga_step_stats.p95_ms IS '95th percentile, same measure as p50_ms';
COMMENT ON COLUMN saga_step_stats.p99_ms IS '99th percentile, same measure as p50_ms';
COMMENT ON COLUMN saga_step_stats.max_ms IS 'largest, same measure as p50_ms';
COMMENT ON COLUMN saga_step_stats.window_start IS 'now() minus the stats_window setting';

-- Open dead letters grouped by fingerprint. The fingerprint is computed
-- exactly as sagad_dead_letter_fingerprint() of 0005_operator_audit.sql (which
-- sagactl uses): the first 12 hex digits of md5('definition/step/error_class'),
-- with an empty definition (shown as 'unknown') for a letter of no known saga.
CREATE VIEW saga_dead_letter_groups AS
SELECT left(md5(g.definition || '/' || COALESCE(g.step, '') || '/' || g.error_class), 12)
                                                                  AS fingerprint,
       CASE WHEN g.definition = '' THEN 'unknown' ELSE g.definition END
                                                                  AS definition_name,
       g.step,
       g.error_class,
       g.letters,
       g.open,
       g.diagnosed,
       g.first_seen,
       g.last_seen,
       g.example_id,
       e.saga_id                                                  AS example_saga_id,
       e.reason                                                   AS example_reason
FROM (
    SELECT COALESCE(i.definition_name, '')                   AS definition,
           d.step,
           d.error_class,
           count(*)                                          AS letters,
           count(*) FILTER (WHERE d.status = 'open')         AS open,
           count(*) FILTER (WHERE d.status = 'diagnosed')    AS diagnosed,
           min(d.created_at)                                 AS first_seen,
           max(d.created_at)                                 AS last_seen,
           max(d.id)                                         AS example_id
    FROM saga_dead_letter d
    LEFT JOIN saga_instance i ON i.id = d.saga_id
    WHERE d.status IN ('open', 'diagnosed')
    GROUP BY COALESCE(i.definition_name, ''), d.step, d.error_class
) g
JOIN saga_dead_letter e ON e.id = g.example_id
ORDER BY g.last_seen DESC, fingerprint;

COMMENT ON VIEW saga_dead_letter_groups IS
    'Open and diagnosed dead letters grouped by (definition name, step, error class); '
    'replayed and discarded ones are not counted. Most recent group first.';
COMMENT ON COLUMN saga_dead_letter_groups.fingerprint IS
    'first 12 hex digits of md5(definition || ''/'' || step || ''/'' || error_class), '
    'definition and step '''' when unknown: names the group to sagactl';
COMMENT ON COLUMN saga_dead_letter_groups.definition_name IS
    'definition of the letter''s saga; ''unknown'' when the letter names no saga or an unknown one';
COMMENT ON COLUMN saga_dead_letter_groups.step IS 'step named by the letters; NULL when none';
COMMENT ON COLUMN saga_dead_letter_groups.error_class IS
    'error class (e.g. saga_failed, compensation_exhausted, undecodable, unknown_saga)';
COMMENT ON COLUMN saga_dead_letter_groups.letters IS 'open plus diagnosed letters in the group';
COMMENT ON COLUMN saga_dead_letter_groups.open IS 'letters with status open';
COMMENT ON COLUMN saga_dead_letter_groups.diagnosed IS 'letters with status diagnosed';
COMMENT ON COLUMN saga_dead_letter_groups.first_seen IS 'creation time of the oldest letter in the group';
COMMENT ON COLUMN saga_dead_letter_groups.last_seen IS 'creation time of the newest letter in the group';
COMMENT ON COLUMN saga_dead_letter_groups.example_id IS 'id of the newest letter in the group (saga_dead_letter.id)';
COMMENT ON COLUMN saga_dead_letter_groups.example_saga_id IS 'saga of example_id; NULL when none';
COMMENT ON COLUMN saga_dead_letter_groups.example_reason IS 'reason of example_id';

-- The transactional outbox's backlog: always exactly one row.
CREATE VIEW saga_outbox_lag AS
SELECT count(*)                AS unsent,
       min(created_at)         AS oldest_created_at,
       now() - min(created_at) AS oldest_age
FROM saga_outbox;

COMMENT ON VIEW saga_outbox_lag IS
    'One row: messages written but not yet acknowledged by JetStream, and the age of the oldest';
COMMENT ON COLUMN saga_outbox_lag.unsent IS 'outbox rows not yet published and acknowledged (0 when empty)';
COMMENT ON COLUMN saga_outbox_lag.oldest_created_at IS
    'commit-transaction time of the oldest row; NULL when empty';
COMMENT ON COLUMN saga_outbox_lag.oldest_age IS 'now() - oldest_created_at; NULL when empty';

-- Every transition with its saga's definition. Filter on saga_id or
-- correlation_id (both indexed) and order by saga_id, seq.
CREATE VIEW saga_timeline AS
SELECT t.saga_id,
       t.seq,
       t.correlation_id,
       i.definition_name,
       i.definition_version,
       t.at,
       t.at - i.created_at AS since_start,
       t.event,
       t.outcome,
       t.from_state,
       t.to_state,
       t.step,
       t.phase,
       t.attempt,
       t.detail
FROM saga_transition t
LEFT JOIN saga_instance i ON i.id = t.saga_id;

COMMENT ON VIEW saga_timeline IS
    'Every transition with its saga''s definition; use WHERE saga_id = ... or '
    'WHERE correlation_id = ... ORDER BY saga_id, seq';
COMMENT ON COLUMN saga_timeline.saga_id IS 'saga id';
COMMENT ON COLUMN saga_timeline.seq IS 'transition number within the saga, from 1, gap-free';
COMMENT ON COLUMN saga_timeline.correlation_id IS 'correlation id of the saga';
COMMENT ON COLUMN saga_timeline.definition_name IS 'saga definition name (NULL if the saga row is gone)';
COMMENT ON COLUMN saga_timeline.definition_version IS 'definition version (NULL if the saga row is gone)';
COMMENT ON COLUMN saga_timeline.at IS 'commit-transaction time of the transition';
COMMENT ON COLUMN saga_timeline.since_start IS 'at minus the saga''s start';
COMMENT ON COLUMN saga_timeline.event IS
    'start, reply, timeout, retry_due, deadline, abort, retry, resolve';
COMMENT ON COLUMN saga_timeline.outcome IS
    'applied; or duplicate, stale, late (a reply that changed nothing), refused (an operator command)';
COMMENT ON COLUMN saga_timeline.from_state IS 'saga state before (NULL for the start)';
COMMENT ON COLUMN saga_timeline.to_state IS 'saga state after';
COMMENT ON COLUMN saga_timeline.step IS 'step concerned; NULL when none';
COMMENT ON COLUMN saga_timeline.phase IS 'action or compensation; NULL when no step';
COMMENT ON COLUMN saga_timeline.attempt IS 'attempt concerned; NULL when none';
COMMENT ON COLUMN saga_timeline.detail IS 'error of a failed reply, reason a reply was ignored, or an operator''s note';

-- Roles: created once per cluster. Several schemas may run this migration at
-- the same time, so creators queue on one transaction lock, which also
-- serialises the database-level grant below.
DO $roles$
DECLARE
    r record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sagad.roles'));
    FOR r IN SELECT * FROM (VALUES
        ('sagad_owner', 'sagad: owns the schema objects and runs migrations'),
        ('sagad_service', 'sagad: what the sagad daemon needs, and no DDL'),
        ('sagad_operator', 'sagad: reads the operator views, nothing else')) AS v(name, note)
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r.name);
            EXECUTE format('COMMENT ON ROLE %I IS %L', r.name, r.note);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by a session not taking the lock
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % does not exist and % may not create roles',
                                r.name, current_user
                      USING HINT = format('have an administrator run: CREATE ROLE %I NOLOGIN',
                                          r.name);
        END;
    END LOOP;
END
$roles$;

-- Ownership and grants, in the schema being migrated.
DO $grants$
DECLARE
    s      text := current_schema();
    o      text;
    tables text[] := ARRAY['saga_definition', 'saga_instance', 'saga_step', 'saga_transition',
                           'saga_outbox', 'saga_dead_letter', 'sagad_setting',
                           'sagad_migrations'];
    views  text[] := ARRAY['saga_stuck', 'saga_overview', 'saga_step_stats',
                           'saga_dead_letter_groups', 'saga_outbox_lag', 'saga_timeline'];
BEGIN
    IF s IS NULL THEN
        RAISE EXCEPTION 'no current schema: the search_path names no existing schema';
    END IF;

    -- sagad_owner owns everything sagad created, so a member can run later
    -- migrations (ALTER, CREATE OR REPLACE); the views then read the tables
    -- with its rights. CREATE on the database lets `sagad migrate` issue its
    -- CREATE SCHEMA IF NOT EXISTS, which PostgreSQL checks even when the
    -- schema exists (a WARNING, not an error, if we may not grant it).
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO sagad_owner', s);
    EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO sagad_owner', current_database());
    FOREACH o IN ARRAY tables LOOP
        IF to_regclass(format('%I.%I', s, o)) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I.%I OWNER TO sagad_owner', s, o); -- with its sequences
        END IF;
    END LOOP;
    FOREACH o IN ARRAY views LOOP
        EXECUTE format('ALTER VIEW %I.%I OWNER TO sagad_owner', s, o);
    END LOOP;
    EXECUTE format('ALTER FUNCTION %I.saga_transition_append_only() OWNER TO sagad_owner', s);

    -- sagad_service: exactly the statements sagad and sagactl run. No CREATE
    -- on the schema, and owning nothing it cannot ALTER, DROP or TRUNCATE.
    -- UPDATE on saga_outbox is for the relay's FOR UPDATE SKIP LOCKED.
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO sagad_service, sagad_operator',
                   current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO sagad_service, sagad_operator', s);
    EXECUTE format('GRANT SELECT, INSERT ON %I.saga_definition TO sagad_service', s);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I.saga_instance TO sagad_service', s);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I.saga_step TO sagad_service', s);
    EXECUTE format('GRANT SELECT, INSERT ON %I.saga_transition TO sagad_service', s);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.saga_outbox TO sagad_service', s);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I.saga_dead_letter TO sagad_service', s);
    EXECUTE format('GRANT USAGE ON SEQUENCE %s, %s TO sagad_service',
                   pg_get_serial_sequence(format('%I.saga_outbox', s), 'id'),
                   pg_get_serial_sequence(format('%I.saga_dead_letter', s), 'id'));
    EXECUTE format('GRANT SELECT ON %I.sagad_setting, %I.sagad_migrations '
                   'TO sagad_service, sagad_operator', s, s);

    -- sagad_operator: the views (which read the tables with their owner's
    -- rights), the settings and the migration list. No base table.
    FOREACH o IN ARRAY views LOOP
        EXECUTE format('GRANT SELECT ON %I.%I TO sagad_service, sagad_operator', s, o);
    END LOOP;
END
$grants$;

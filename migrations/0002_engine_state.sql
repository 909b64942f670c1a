-- Engine state that 0001 did not hold: retry budgets re-armed by operators,
-- whether a step's last attempt timed out (effect unknown), and the count of
-- completed steps (to order compensations in reverse completion order).

ALTER TABLE saga_step
    ADD COLUMN attempt_base      integer NOT NULL DEFAULT 0,     -- attempts before the last operator retry
    ADD COLUMN comp_attempt_base integer NOT NULL DEFAULT 0,     -- same, for compensation
    ADD COLUMN uncertain         boolean NOT NULL DEFAULT false; -- last action attempt timed out

ALTER TABLE saga_instance
    ADD COLUMN completions integer NOT NULL DEFAULT 0;           -- actions succeeded so far

-- The timeline of a saga is read by saga id in sequence order (primary key) or
-- by correlation id (saga_transition_correlation); outbox rows are taken
-- oldest first by id (primary key).

-- Updates of a running saga in place (HOT: heap-only tuples, no new index
-- entries). Before, every reply's UPDATE of saga_instance wrote a new entry
-- into each of its five indexes, because the progress time (in the in-flight
-- index) and the wake-up (in the timer index) changed every time. Now:
--   * the in-flight index holds the state only (the stuck view filters the
--     progress time on the rows it finds);
--   * sagad keeps a stored wake-up that is still ahead and no later than the
--     next timer (it looks at the saga then, and moves it on);
--   * pages keep free space for the new row versions (fillfactor), for the
--     step rows as well (their upserts change no indexed column).
-- The fillfactor applies to pages written from now on.

DROP INDEX saga_instance_active;
CREATE INDEX saga_instance_active ON saga_instance (state)
    WHERE state IN ('running', 'compensating', 'failed');

ALTER TABLE saga_instance SET (fillfactor = 70);
ALTER TABLE saga_step SET (fillfactor = 70);

COMMENT ON COLUMN saga_stuck.next_wake_at IS
    'when sagad looks at the saga next: no later than its next timer (attempt timeout, retry, deadline); NULL = none armed';

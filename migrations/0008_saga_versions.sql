-- sagad keeps the sagas it wrote last in memory (setting saga_cache) and
-- applies their next event without reading them back. Its update of
-- saga_instance then names the row version it wrote (the row's xmin) and
-- updates only rows still at that version; this function, called with how
-- many rows the update was given and how many it changed, fails the whole
-- transaction when they differ: another writer (a second sagad, an operator)
-- changed one of those sagas since. SQLSTATE 40001 (serialization_failure):
-- sagad undoes the batch, forgets the sagas and applies the events again
-- from what the database holds.

CREATE FUNCTION saga_expect_rows(given bigint, changed bigint) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    IF given <> changed THEN
        RAISE EXCEPTION 'saga version conflict: % of % sagas changed since this sagad wrote them',
            given - changed, given
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN false;
END
$fn$;

COMMENT ON FUNCTION saga_expect_rows(bigint, bigint) IS
    'fails the transaction (40001) when an update changed fewer sagas than it was given';

DO $owner$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sagad_owner') THEN
        EXECUTE format('ALTER FUNCTION %I.saga_expect_rows(bigint, bigint) OWNER TO sagad_owner',
                       current_schema());
    END IF;
END
$owner$;

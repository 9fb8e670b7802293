-- How the other function files attach their triggers.
--
-- The function files run at every start. A function is replaced freely (CREATE OR REPLACE FUNCTION takes no
-- lock on any table), but replacing a trigger locks its table against writes: it waits for the writers in
-- progress, holds back new ones meanwhile, and can deadlock with a writer that touches two tables. So a trigger
-- is (re)created only when it is missing or defined otherwise, and a start that changes nothing costs writers
-- nothing.

-- Creates the trigger `definition` describes, replacing the trigger of that name on that table, unless a trigger
-- exactly as described already exists. Write `definition` the way pg_get_triggerdef(oid, true) prints it
-- (names unqualified, events in its order: "AFTER DELETE OR UPDATE"); a definition written otherwise still
-- works, but its trigger is replaced at every start.
CREATE OR REPLACE FUNCTION boardcast_ensure_trigger(definition text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE NOT tgisinternal AND pg_get_triggerdef(oid, true) = definition) THEN
        EXECUTE regexp_replace(definition, '^CREATE TRIGGER ', 'CREATE OR REPLACE TRIGGER ');
    END IF;
END $$;

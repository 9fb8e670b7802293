-- The defaults the BEFORE INSERT triggers fill in must never turn a valid write into an error about a column
-- the writer did not set.

-- A new card without a position goes last: max + 1. Near the top of the allowed range (a card at 1e15) that
-- would break the position CHECK and refuse a write that named no position; there, the new card goes halfway
-- between the last card and the top instead (at the top itself it shares the last position; ties are ordered
-- by creation).
CREATE OR REPLACE FUNCTION boardcast_task_defaults() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last double precision;
BEGIN
    IF NEW.position IS NULL THEN
        SELECT coalesce(max(position), 0) INTO last FROM tasks WHERE project_id = NEW.project_id;
        NEW.position := CASE WHEN last + 1 <= 1e15 THEN last + 1 ELSE last + (1e15 - last) / 2 END;
    END IF;
    RETURN NEW;
END $$;

-- A comment on a task that does not exist (never did, or was deleted meanwhile) is refused as what it is: a
-- foreign key violation on task_id. Before, the lookup left project_id NULL and the error named the wrong
-- column ("null value in column project_id"), which sent psql users looking in the wrong place.
CREATE OR REPLACE FUNCTION boardcast_comment_defaults() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.project_id IS NULL AND NEW.task_id IS NOT NULL THEN
        SELECT project_id INTO NEW.project_id FROM tasks WHERE id = NEW.task_id;
        IF NEW.project_id IS NULL THEN
            RAISE EXCEPTION 'insert on table "comments" violates foreign key constraint "comments_task_id_project_id_fkey"'
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (task_id)=(%s) is not present in table "tasks".', NEW.task_id),
                      CONSTRAINT = 'comments_task_id_project_id_fkey', TABLE = 'comments', COLUMN = 'task_id';
        END IF;
    END IF;
    RETURN NEW;
END $$;

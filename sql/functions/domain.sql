-- The bookkeeping every writer of the domain tables gets for free: ids and timestamps come from column
-- defaults, and these triggers keep version, updated_at, position and a comment's project_id.

-- Stamps an update: updated_at, and the version of tasks and comments (the API refuses a write made against a
-- stale version with 409).
CREATE OR REPLACE FUNCTION boardcast_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only a real change bumps the version, so a no-op UPDATE does not invalidate other writers' versions.
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
        IF TG_TABLE_NAME IN ('tasks', 'comments') THEN
            NEW.version := OLD.version + 1;
        END IF;
    END IF;
    RETURN NEW;
END $$;
SELECT boardcast_ensure_trigger('CREATE TRIGGER projects_touch BEFORE UPDATE ON projects FOR EACH ROW EXECUTE FUNCTION boardcast_touch()');
SELECT boardcast_ensure_trigger('CREATE TRIGGER tasks_touch BEFORE UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION boardcast_touch()');
SELECT boardcast_ensure_trigger('CREATE TRIGGER comments_touch BEFORE UPDATE ON comments FOR EACH ROW EXECUTE FUNCTION boardcast_touch()');

-- The defaults filled in here never turn a valid write into an error about a column the writer did not set.

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
SELECT boardcast_ensure_trigger('CREATE TRIGGER tasks_defaults BEFORE INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION boardcast_task_defaults()');

-- A comment's project is its task's. A comment on a task that does not exist (never did, or was deleted
-- meanwhile) is refused as what it is: a foreign key violation on task_id, not "null value in column
-- project_id", which would send a psql user looking in the wrong place.
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
SELECT boardcast_ensure_trigger('CREATE TRIGGER comments_defaults BEFORE INSERT ON comments FOR EACH ROW EXECUTE FUNCTION boardcast_comment_defaults()');

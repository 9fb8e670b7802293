-- Where a member's history begins (project_members.since_seq, see sql/migrations/0004_membership_floor.sql):
-- a join may replay a project's events from there on, never from before the member was added.
--
-- It is exact. The trigger takes the project's feed lock, as the feed's own statement trigger will later in
-- the same statement (sql/functions/feed.sql), and holds it to commit: no other transaction can record an
-- event in the project from here on, so the latest seq it then reads is the last event before the statement
-- that adds the member, and the events after it are that statement's and what follows. A writer that
-- committed before is below the line; one that waited for the lock is above it.
--
-- Its cost falls on project_members only (one row trigger, a few index lookups per row); tasks, comments and
-- projects pay nothing. Locks are taken in the order the statement's foreign keys would take them (the
-- project's and the user's rows, then the feed's lock row), so that a member added while the project or the
-- user is being deleted waits as it always did, instead of deadlocking.

CREATE OR REPLACE FUNCTION boardcast_member_since() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    creator xid8;
BEGIN
    -- A membership moved to another project or user (an UPDATE of its key) is a new membership; a changed
    -- role is not, and keeps its start.
    IF TG_OP = 'UPDATE' AND NEW.project_id = OLD.project_id AND NEW.user_id = OLD.user_id THEN
        RETURN NEW;
    END IF;
    PERFORM 1 FROM projects WHERE id = NEW.project_id FOR KEY SHARE;
    PERFORM 1 FROM users WHERE id = NEW.user_id FOR KEY SHARE;
    SELECT l.first_xact INTO creator FROM feed_locks l WHERE l.room = NEW.project_id::text FOR UPDATE;
    IF NOT FOUND THEN
        -- No event yet: the project is being created by this very statement (its own event is recorded after
        -- the rows). Its lock row is made here, as its first event would make it.
        INSERT INTO feed_locks (room, first_xact) VALUES (NEW.project_id::text, pg_current_xact_id())
            ON CONFLICT DO NOTHING;
        SELECT l.first_xact INTO creator FROM feed_locks l WHERE l.room = NEW.project_id::text FOR UPDATE;
    END IF;
    -- A new statement, so (under READ COMMITTED) a snapshot that sees every writer committed before the lock.
    -- The transaction that recorded the project's first event (its creation) adds members who have seen it all.
    NEW.since_seq := CASE WHEN creator = pg_current_xact_id() THEN 0
                          ELSE coalesce((SELECT max(seq) FROM feed_events WHERE room = NEW.project_id::text), 0) END;
    RETURN NEW;
END $$;
SELECT boardcast_ensure_trigger('CREATE TRIGGER project_members_since BEFORE INSERT OR UPDATE OF project_id, user_id ON project_members FOR EACH ROW EXECUTE FUNCTION boardcast_member_since()');

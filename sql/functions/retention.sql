-- Retention: how much of the feed's history is kept.
--
-- Removes up to `batch` of the oldest events that are older than max_age or beyond the max_per_project most
-- recent of their room (NULL disables either rule), and returns how many it removed; the server calls it
-- until it returns less than `batch`, each call its own short transaction. Writers only insert new rows and
-- never wait on this.
--
-- * The latest event of a room is always kept, so "the history does not reach back" can always be told apart
--   from "nothing happened", and a room's seqs never start over.
-- * A run costs what it removes, not the size of the table: deletes walk each room's events from the oldest
--   end of the primary key, and the age rule's scan stops at the first event young enough to keep.
-- * An ended room (its project was deleted: feed_locks.ended_at, set by the delete of a row of a table tracked
--   with ends_room) goes entirely, events and lock row, once its last event is older than max_age: nobody can
--   join a deleted project's room or resume it (joins check membership), and the list every run walks does
--   not grow with every project ever deleted. Without an age limit its events are kept, as every other event
--   is.
CREATE OR REPLACE FUNCTION boardcast_prune_events(max_age interval, max_per_project bigint, batch integer DEFAULT 10000)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r record;
    removed bigint := 0;
    n bigint;
    keep_from bigint;
BEGIN
    FOR r IN SELECT s.room, s.last_seq, l.ended_at IS NOT NULL AS deleted
               FROM feed_seq s JOIN feed_locks l USING (room) LOOP
        EXIT WHEN removed >= batch;
        IF r.deleted AND max_age IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM feed_events
                            WHERE room = r.room AND seq = r.last_seq AND at >= now() - max_age) THEN
            DELETE FROM feed_events
             WHERE room = r.room
               AND seq < (SELECT min(seq) FROM feed_events WHERE room = r.room) + (batch - removed);
            GET DIAGNOSTICS n = ROW_COUNT;
            removed := removed + n;
            IF NOT EXISTS (SELECT 1 FROM feed_events WHERE room = r.room) THEN
                DELETE FROM feed_locks WHERE room = r.room;
            END IF;
            CONTINUE;
        END IF;
        IF max_per_project IS NOT NULL THEN
            DELETE FROM feed_events
             WHERE room = r.room
               AND seq <= r.last_seq - greatest(max_per_project, 1)
               AND seq < (SELECT min(seq) FROM feed_events WHERE room = r.room) + (batch - removed);
            GET DIAGNOSTICS n = ROW_COUNT;
            removed := removed + n;
        END IF;
        IF max_age IS NOT NULL AND removed < batch THEN
            -- Only a prefix of the history goes: up to the first event that is young enough to keep. (`at`
            -- is not strictly increasing with seq, since a statement may wait for the project's lock after
            -- it started, so "every old event" could punch holes in the middle.) The scan is in seq order and
            -- stops at the first young event.
            SELECT seq INTO keep_from FROM (
                SELECT seq, at FROM feed_events WHERE room = r.room ORDER BY seq LIMIT batch - removed + 1
            ) head WHERE at >= now() - max_age ORDER BY seq LIMIT 1;
            DELETE FROM feed_events
             WHERE room = r.room
               AND seq < least(r.last_seq, coalesce(keep_from, r.last_seq))
               AND seq < (SELECT min(seq) FROM feed_events WHERE room = r.room) + (batch - removed);
            GET DIAGNOSTICS n = ROW_COUNT;
            removed := removed + n;
        END IF;
    END LOOP;
    RETURN removed;
END $$;

-- Retention: how much of the feed's history is kept.
--
-- Removes up to `batch` of the oldest events that are older than max_age or beyond the max_per_project most
-- recent of their project (NULL disables either rule), and returns how many it removed; the server calls it
-- until it returns less than `batch`, each call its own short transaction. Writers only insert new rows and
-- never wait on this.
--
-- * The latest event of a project is always kept, so "the history does not reach back" can always be told
--   apart from "nothing happened".
-- * A run costs what it removes, not the size of the table: deletes walk each project's events from the oldest
--   end of the primary key, and the age rule's scan stops at the first event young enough to keep.
-- * A deleted project goes entirely, events and lock row, once its last event is older than max_age: nobody
--   can join a deleted project's room or resume it (joins check membership), and the list every run walks
--   does not grow with every project ever deleted. Without an age limit its events are kept, as every other
--   event is.
CREATE OR REPLACE FUNCTION boardcast_prune_events(max_age interval, max_per_project bigint, batch integer DEFAULT 10000)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r record;
    removed bigint := 0;
    n bigint;
    keep_from bigint;
BEGIN
    FOR r IN SELECT s.project_id, s.last_seq, p.id IS NULL AS deleted
               FROM feed_seq s LEFT JOIN projects p ON p.id = s.project_id LOOP
        EXIT WHEN removed >= batch;
        IF r.deleted AND max_age IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM feed_events
                            WHERE project_id = r.project_id AND seq = r.last_seq AND at >= now() - max_age) THEN
            DELETE FROM feed_events
             WHERE project_id = r.project_id
               AND seq < (SELECT min(seq) FROM feed_events WHERE project_id = r.project_id) + (batch - removed);
            GET DIAGNOSTICS n = ROW_COUNT;
            removed := removed + n;
            IF NOT EXISTS (SELECT 1 FROM feed_events WHERE project_id = r.project_id) THEN
                DELETE FROM feed_locks WHERE project_id = r.project_id;
            END IF;
            CONTINUE;
        END IF;
        IF max_per_project IS NOT NULL THEN
            DELETE FROM feed_events
             WHERE project_id = r.project_id
               AND seq <= r.last_seq - greatest(max_per_project, 1)
               AND seq < (SELECT min(seq) FROM feed_events WHERE project_id = r.project_id) + (batch - removed);
            GET DIAGNOSTICS n = ROW_COUNT;
            removed := removed + n;
        END IF;
        IF max_age IS NOT NULL AND removed < batch THEN
            -- Only a prefix of the history goes: up to the first event that is young enough to keep. (`at`
            -- is not strictly increasing with seq, since a statement may wait for the project's lock after
            -- it started, so "every old event" could punch holes in the middle.) The scan is in seq order and
            -- stops at the first young event.
            SELECT seq INTO keep_from FROM (
                SELECT seq, at FROM feed_events WHERE project_id = r.project_id ORDER BY seq LIMIT batch - removed + 1
            ) head WHERE at >= now() - max_age ORDER BY seq LIMIT 1;
            DELETE FROM feed_events
             WHERE project_id = r.project_id
               AND seq < least(r.last_seq, coalesce(keep_from, r.last_seq))
               AND seq < (SELECT min(seq) FROM feed_events WHERE project_id = r.project_id) + (batch - removed);
            GET DIAGNOSTICS n = ROW_COUNT;
            removed := removed + n;
        END IF;
    END LOOP;
    RETURN removed;
END $$;

-- Retention, again (replaces boardcast_prune_events of 002_feed), for two costs that grew with the data rather
-- than with what a run removes:
--
-- * The age rule looked for the first event young enough to keep among up to `batch` + 1 of each project's
--   oldest events, reading all of them (with their `at`) on every run even when the oldest was young and
--   nothing went: 10,000 rows per project per minute. It now stops at the first young one.
-- * A deleted project's last event and its lock row were kept forever, so the list every run walks grew with
--   every project ever deleted. Nobody can join a deleted project's room or resume it (joins check
--   membership), so once its last event is older than the age limit, its events and its lock row go. Without
--   an age limit they are kept, as every other event is.
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

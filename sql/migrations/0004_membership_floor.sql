-- Where each member's view of a project's history begins: a replay (`join` with `since`) never reaches back
-- before the membership, so a user added today cannot read what the project said before them (a comment
-- deleted last week is in its delete event, text and all). The trigger that fills these columns, and why it
-- is exact, is boardcast_member_since in sql/functions/membership.sql.

-- The lowest `since` the member may resume from: the project's last seq before the statement that added them,
-- so their history starts with that statement's events. 0 for a member added by the transaction that created
-- the project (they have seen it all). Set by the trigger on every insert, whatever the writer names; an
-- admin may lower it afterwards (UPDATE) to give a member older history.
ALTER TABLE project_members ADD COLUMN since_seq bigint NOT NULL DEFAULT 0;

-- The transaction that recorded the project's first event (normally the one that created the project), so that
-- the members it adds count from the start. Unknown (NULL) for projects older than this column.
ALTER TABLE feed_locks ADD COLUMN first_xact xid8;

-- Existing members, as closely as the retained history tells:
-- * created with their project (the same transaction, so the same created_at): 0;
-- * else after their latest retained `project_members` insert event: that event's seq - 1;
-- * else (that event was pruned, and with it everything older, since retention removes a prefix): the seq
--   before the oldest retained event.
-- The backfill is not a change anyone needs to hear about, so the feed's update trigger (if the function files
-- already created it) is off while it runs; this transaction holds the table's lock, so no other write slips by.
DO $$
DECLARE
    feed_trigger boolean := EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'project_members'::regclass
                                       AND tgname = 'project_members_feed_update' AND tgenabled <> 'D');
BEGIN
    IF feed_trigger THEN
        ALTER TABLE project_members DISABLE TRIGGER project_members_feed_update;
    END IF;
    WITH added AS (
        -- One pass over the events; only the membership inserts are parsed.
        SELECT project_id, (frame::jsonb #>> '{row,user_id}')::uuid AS user_id, max(seq) AS seq
          FROM feed_events
         WHERE strpos(frame, '"table":"project_members","action":"insert"') > 0
         GROUP BY 1, 2
    ), floors AS (
        SELECT m.project_id, m.user_id,
               CASE WHEN m.created_at = p.created_at THEN 0
                    WHEN a.seq IS NOT NULL THEN a.seq - 1
                    ELSE greatest(coalesce(o.seq, 1) - 1, 0) END AS since_seq
          FROM project_members m
          JOIN projects p ON p.id = m.project_id
          LEFT JOIN added a ON a.project_id = m.project_id AND a.user_id = m.user_id
          LEFT JOIN LATERAL (SELECT min(seq) AS seq FROM feed_events e WHERE e.project_id = m.project_id) o ON true
    )
    UPDATE project_members m SET since_seq = f.since_seq
      FROM floors f
     WHERE m.project_id = f.project_id AND m.user_id = f.user_id AND f.since_seq <> 0;
    IF feed_trigger THEN
        ALTER TABLE project_members ENABLE TRIGGER project_members_feed_update;
    END IF;
END $$;

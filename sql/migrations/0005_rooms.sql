-- Rooms for any table: the feed numbers events per room, a text key the app's own tables choose (a board's
-- bigint id, a project's uuid, a team's slug), where it numbered them per project. boardcast's own tables are
-- tracked through the same interface as an app's (sql/functions/feed.sql), their rooms being project ids as text.

CREATE SCHEMA IF NOT EXISTS boardcast;

-- What is tracked: a table, the SQL expression that gives a row's room, and the columns left out of its events.
-- Written by boardcast.track() and boardcast.untrack(); read through the view boardcast.tracked.
CREATE TABLE boardcast.tracked_tables (
    relid      oid PRIMARY KEY,
    room       text NOT NULL,
    exclude    text[] NOT NULL DEFAULT '{}',
    -- Deleting a row of this table ends its room (a project's rows end the project's room): see feed_locks.ended_at.
    ends_room  boolean NOT NULL DEFAULT false,
    tracked_at timestamptz NOT NULL DEFAULT now()
);

-- What is tracked, by table name, with the expression that routes its rows and the columns left out.
CREATE VIEW boardcast.tracked AS
    SELECT t.relid::regclass AS table_name, t.room, t.exclude, t.ends_room, t.tracked_at
      FROM boardcast.tracked_tables t
     WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.relid);

-- The old per-table triggers go; the function files attach the generic ones (named boardcast_feed_*).
DROP TRIGGER IF EXISTS projects_feed_insert ON projects;
DROP TRIGGER IF EXISTS projects_feed_update ON projects;
DROP TRIGGER IF EXISTS projects_feed_delete ON projects;
DROP TRIGGER IF EXISTS projects_no_truncate ON projects;
DROP TRIGGER IF EXISTS project_members_feed_insert ON project_members;
DROP TRIGGER IF EXISTS project_members_feed_update ON project_members;
DROP TRIGGER IF EXISTS project_members_feed_delete ON project_members;
DROP TRIGGER IF EXISTS project_members_no_truncate ON project_members;
DROP TRIGGER IF EXISTS tasks_feed_insert ON tasks;
DROP TRIGGER IF EXISTS tasks_feed_update ON tasks;
DROP TRIGGER IF EXISTS tasks_feed_delete ON tasks;
DROP TRIGGER IF EXISTS tasks_no_truncate ON tasks;
DROP TRIGGER IF EXISTS comments_feed_insert ON comments;
DROP TRIGGER IF EXISTS comments_feed_update ON comments;
DROP TRIGGER IF EXISTS comments_feed_delete ON comments;
DROP TRIGGER IF EXISTS comments_no_truncate ON comments;

-- And the functions only they called (the old signatures of boardcast_frame and boardcast_record included).
DROP FUNCTION IF EXISTS boardcast_feed_insert();
DROP FUNCTION IF EXISTS boardcast_feed_update();
DROP FUNCTION IF EXISTS boardcast_feed_delete();
DROP FUNCTION IF EXISTS boardcast_project_of(text, jsonb);
DROP FUNCTION IF EXISTS boardcast_key_of(text, jsonb);
DROP FUNCTION IF EXISTS boardcast_frame(uuid, bigint, text, text, jsonb, jsonb);
DROP FUNCTION IF EXISTS boardcast_record(text, uuid[], jsonb[]);

-- Project ids become room keys: their text form, which is what every frame already said. "C" collation: rooms
-- are compared byte for byte (and locked in that order), the same on every server whatever its locale.
DROP VIEW feed_seq;
ALTER TABLE feed_locks RENAME COLUMN project_id TO room;
ALTER TABLE feed_locks ALTER COLUMN room TYPE text COLLATE "C" USING room::text;
ALTER TABLE feed_events RENAME COLUMN project_id TO room;
ALTER TABLE feed_events ALTER COLUMN room TYPE text COLLATE "C" USING room::text;

-- A room that has ended (its project was deleted): retention removes all of it, lock row included, once its
-- last event is older than the age limit. Other rooms always keep their latest event, so their seqs never
-- start over.
ALTER TABLE feed_locks ADD COLUMN ended_at timestamptz;
UPDATE feed_locks l SET ended_at = now() WHERE NOT EXISTS (SELECT 1 FROM projects p WHERE p.id::text = l.room);

-- The latest seq of each room. Inside a writing transaction it includes that transaction's own events (the API
-- uses this to tell a client the seq of its write).
CREATE VIEW feed_seq AS
    SELECT l.room,
           coalesce((SELECT max(e.seq) FROM feed_events e WHERE e.room = l.room), 0) AS last_seq
      FROM feed_locks l;

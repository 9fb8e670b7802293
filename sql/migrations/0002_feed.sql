-- The change feed's data: every committed change to a project's data becomes an event with a gapless,
-- per-project sequence number. The triggers that record events, and why they work the way they do, are in
-- sql/functions/feed.sql; retention is in sql/functions/retention.sql.

-- One lock row per project, created by the project's first event. Every writing statement locks its projects'
-- rows (FOR UPDATE) until its transaction ends, which serializes writers per project and so makes seqs gapless
-- and in commit order. `xact` is the (64-bit) id of the last transaction that updated the row: a transaction
-- updates its projects' rows once, on its first write to each, so that under REPEATABLE READ or SERIALIZABLE a
-- writer with a stale snapshot fails with a retryable serialization error instead of numbering from a stale
-- view. (Not the row's xmin: that is 32 bits, and a frozen row keeps an xmin that may be any age, so it cannot
-- be told apart from a current id.) Apart from that, the row is only locked, never updated: a transaction of
-- 100,000 statements would otherwise pile up 100,000 versions of one row and slow down quadratically.
CREATE TABLE feed_locks (
    project_id uuid PRIMARY KEY,
    xact       xid8
);

-- The events. `frame` is the JSON text a WebSocket client receives, built once by boardcast_frame.
CREATE TABLE feed_events (
    project_id uuid NOT NULL,
    seq        bigint NOT NULL,
    at         timestamptz NOT NULL DEFAULT statement_timestamp(),
    frame      text NOT NULL,
    PRIMARY KEY (project_id, seq)
);
-- Retention by age scans by time; a BRIN index costs writers next to nothing.
CREATE INDEX feed_events_at_idx ON feed_events USING brin (at);

-- The latest seq of each project. Inside a writing transaction it includes that transaction's own events
-- (the API uses this to tell a client the seq of its write).
CREATE VIEW feed_seq AS
    SELECT l.project_id,
           coalesce((SELECT max(e.seq) FROM feed_events e WHERE e.project_id = l.project_id), 0) AS last_seq
      FROM feed_locks l;

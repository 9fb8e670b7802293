-- Who changed it, in which transaction (issue #15): every event records the transaction that wrote it. The
-- frame carries it too (`"tx"`, with the actor); the column is what the commit-time trigger in
-- sql/functions/feed.sql finds a transaction's events by: they are contiguous at the top of their room, since
-- the room's lock is held until commit. Events recorded before this migration have none (NULL).
ALTER TABLE feed_events ADD COLUMN tx xid8;

-- Once per transaction, boardcast_record updates each project's feed_locks row (see 002_feed). It used to
-- remember "done" in a transaction-local setting named after the project. PostgreSQL keeps such a setting's
-- placeholder for the rest of the session and re-sorts all of them when one is added, so a connection that
-- had written to many projects got slower with each new one and never gave the memory back, and a statement
-- touching thousands of projects took minutes (8,000 projects: 24 s). The row itself now says it: `xact` is the
-- (64-bit) id of the last transaction that updated it. (Not the row's xmin: that is 32 bits, and a frozen row
-- keeps an xmin that may be any age, so it cannot be told apart from a current id.)
ALTER TABLE feed_locks ADD COLUMN IF NOT EXISTS xact xid8;

CREATE OR REPLACE FUNCTION boardcast_record(tbl text, projects uuid[], changes jsonb[]) RETURNS bigint LANGUAGE plpgsql
-- Plan once: with custom plans, every call would re-plan (and re-inline the SQL functions), which cost more
-- than the work itself.
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    locked bigint;
    notified bigint;
    unwritten bigint;
    this_xact xid8;
BEGIN
    IF coalesce(cardinality(changes), 0) = 0 THEN
        RETURN 0;
    END IF;
    -- Lock each project's row, in one order so statements touching several projects cannot deadlock each
    -- other. Re-locking a row this transaction already holds costs nothing. A project's first event creates
    -- its row.
    -- Also counts the rows this transaction has not marked yet (see below), so that a transaction's later
    -- statements need not run the UPDATE at all.
    this_xact := pg_current_xact_id();
    SELECT count(*), count(*) FILTER (WHERE l.xact IS DISTINCT FROM this_xact) INTO locked, unwritten
      FROM (SELECT f.xact FROM feed_locks f WHERE project_id = ANY (projects) ORDER BY project_id FOR UPDATE) l;
    IF locked < cardinality(projects) THEN
        INSERT INTO feed_locks (project_id) SELECT unnest(projects) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM feed_locks WHERE project_id = ANY (projects) ORDER BY project_id FOR UPDATE;
        unwritten := 1;
    END IF;
    -- Once per transaction, also update the row. Under REPEATABLE READ or SERIALIZABLE, a writer whose snapshot
    -- predates another writer's commit then fails with a retryable serialization error at the FOR UPDATE
    -- above, instead of numbering from a stale view of the events. "Once": the update writes this
    -- transaction's id into the row (pg_current_xact_id is the top-level id, in subtransactions too), and a
    -- row that holds it is not updated again. A rolled-back savepoint takes its update away, the row holds an
    -- older id again, and the next statement updates it again.
    IF unwritten > 0 THEN
        UPDATE feed_locks f SET xact = this_xact WHERE project_id = ANY (projects) AND f.xact IS DISTINCT FROM this_xact;
    END IF;
    -- A new statement, so a new snapshot: it sees the events of every writer that committed before we got
    -- the locks. `base` is materialized, so each project's highest seq is read once, before any of its new
    -- events are inserted (read per row, each lookup would step over the rows this INSERT adds, and a
    -- 100,000-row statement would take quadratic time).
    WITH ch AS (
        SELECT (c->>'p')::uuid AS project_id, c->>'a' AS action, c->'r' AS new_row,
               nullif(c->'o', 'null'::jsonb) AS old_row, ord
        FROM unnest(changes) WITH ORDINALITY AS u(c, ord)
    ), base AS MATERIALIZED (
        SELECT p AS project_id, coalesce((SELECT max(seq) FROM feed_events e WHERE e.project_id = p), 0) AS last_seq
        FROM unnest(projects) p
    ), numbered AS (
        SELECT ch.project_id,
               b.last_seq + row_number() OVER (PARTITION BY ch.project_id ORDER BY ch.ord) AS seq,
               ch.action, ch.new_row, ch.old_row
        FROM ch JOIN base b USING (project_id)
    ), stored AS (
        INSERT INTO feed_events (project_id, seq, frame)
        SELECT project_id, seq, boardcast_frame(project_id, seq, tbl, action, new_row, old_row) FROM numbered
        RETURNING project_id, seq, frame
    ), sized AS (
        SELECT project_id, seq, frame, octet_length(frame) + 1 AS len,
               sum(octet_length(frame) + 1) OVER (PARTITION BY project_id ORDER BY seq) - octet_length(frame) - 1
                   AS before
          FROM stored
    ), per_project AS (
        SELECT project_id, min(seq) AS first_seq, max(seq) AS last_seq, sum(len) AS bytes, max(len) AS biggest
          FROM sized GROUP BY project_id
    ), announcements AS (
        -- Frames travel inline when they fit: in one notification (up to 7,800 bytes; PostgreSQL's limit is
        -- 8,000), or split over several when the statement's frames total at most 64 KiB and none is over
        -- 3,900 bytes (so each chunk of "3,900 bytes, plus the frame that crosses the line" stays under
        -- 7,800). Otherwise only the range is announced and the listener reads the frames from feed_events.
        SELECT s.project_id, min(s.seq) AS first_seq, max(s.seq) AS last_seq,
               string_agg(s.frame, E'\n' ORDER BY s.seq) AS frames
          FROM sized s JOIN per_project pp USING (project_id)
         WHERE pp.bytes <= 7800 OR (pp.bytes <= 65536 AND pp.biggest <= 3900)
         GROUP BY s.project_id, CASE WHEN pp.bytes <= 7800 THEN 0 ELSE s.before / 3900 END
        UNION ALL
        SELECT project_id, first_seq, last_seq, NULL
          FROM per_project
         WHERE NOT (bytes <= 7800 OR (bytes <= 65536 AND biggest <= 3900))
    )
    -- pg_notify is volatile, so it runs after the sort: each project's notifications go out in seq order.
    SELECT count(*) INTO notified FROM (
        SELECT pg_notify('boardcast_feed',
                   project_id::text || ' ' || first_seq || ' ' || last_seq || coalesce(E'\n' || frames, ''))
          FROM announcements ORDER BY project_id, first_seq
    ) sent;
    RETURN cardinality(changes);
END $$;

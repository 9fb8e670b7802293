-- The change feed: every committed change to a project's data becomes an event with a gapless, per-project
-- sequence number, recorded in the writer's own transaction and announced with NOTIFY. The tables (feed_locks,
-- feed_events, feed_seq) are in sql/migrations/0002_feed.sql.
--
-- Why it is built this way:
--
-- * Gapless and in commit order. Each project has one lock row in feed_locks. A statement that changes a
--   project first locks that row (FOR UPDATE), which it holds until its transaction ends; a second writer to
--   the same project waits there. Only then, in a new statement (so with a fresh snapshot that sees every
--   transaction committed before the lock was granted), does it number its events from the project's
--   highest recorded seq. So seqs follow commit order, and a rollback removes its events with it: no gap.
--   The price is that writers to one project serialize from their first write to their commit; writers to
--   different projects do not.
-- * Safe under every isolation level. A transaction's first write to a project also updates the lock row,
--   marking it with the transaction's id (feed_locks.xact). Under REPEATABLE READ or SERIALIZABLE, a writer
--   whose snapshot predates another writer's commit then fails with a retryable serialization error at the
--   lock, instead of numbering from a stale view of the events. Later statements of the transaction find the
--   mark and only lock the row: a transaction of 100,000 statements does not pile up 100,000 versions of it.
-- * Recorded, not just notified. NOTIFY is fire-and-forget: a listener that is disconnected misses it. Events
--   are kept in feed_events so a listener can catch up after a reconnect and a client can resume with
--   `since`. NOTIFY is only the doorbell.
-- * Few NOTIFYs per statement, not one per row. Every transaction that NOTIFYs takes a database-wide lock at
--   commit, and payloads are limited to 8000 bytes. A small change carries its event frames inline (the
--   common case, delivered without a second query), split over a few notifications if needed; a big one (a
--   100 KB description, 100,000 rows) sends only "project P has seqs A..B" and the listener reads the frames
--   from feed_events.
-- * Serialized once. The frame clients receive is built here, once, as JSON text; the server forwards it to
--   every subscriber untouched.
--
-- Notification payload on channel 'boardcast_feed':
--     <project uuid> <first seq> <last seq>[\n<frame>\n<frame>...]
-- The frames are present only when they fit; otherwise the listener fetches seqs first..last.
-- Secrets never enter the feed: users and api_tokens have no feed trigger.

-- Builds the frame a WebSocket client receives. Table names and actions are plain identifiers and the row is
-- jsonb rendered as text, so concatenation yields valid JSON with a fixed key order: op, project, seq, table,
-- action, row, [old], at.
CREATE OR REPLACE FUNCTION boardcast_frame(project uuid, seq bigint, tbl text, action text, new_row jsonb, old_row jsonb)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT '{"op":"event","project":"' || project::text || '","seq":' || seq::text
        || ',"table":"' || tbl || '","action":"' || action || '","row":' || new_row::text
        || CASE WHEN old_row IS NULL THEN '' ELSE ',"old":' || old_row::text END
        || ',"at":' || to_json(statement_timestamp())::text || '}'
$$;

-- The project a row belongs to: a project is its own room; everything else carries project_id.
CREATE OR REPLACE FUNCTION boardcast_project_of(tbl text, r jsonb) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN tbl = 'projects' THEN (r->>'id')::uuid ELSE (r->>'project_id')::uuid END
$$;

-- A row's identity, to pair the old and new images of an UPDATE.
CREATE OR REPLACE FUNCTION boardcast_key_of(tbl text, r jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN tbl = 'project_members' THEN (r->>'project_id') || '/' || (r->>'user_id') ELSE r->>'id' END
$$;

-- Numbers, stores and announces a statement's changes. `projects` are the distinct projects changed, sorted;
-- `changes` holds one element per changed row: {"p": project, "a": action, "r": row, "o": old row or null},
-- in the order they should be numbered. Returns the number of events recorded.
--
-- This runs for every writing statement, so it is kept to three queries (plus one per project and
-- transaction): lock, (first time only) mark, number-store-notify.
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
    -- its row, which remembers the transaction that made it (project_members.since_seq counts the members that
    -- transaction adds from the start).
    -- Also counts the rows this transaction has not marked yet (see below), so that a transaction's later
    -- statements need not run the UPDATE at all.
    this_xact := pg_current_xact_id();
    SELECT count(*), count(*) FILTER (WHERE l.xact IS DISTINCT FROM this_xact) INTO locked, unwritten
      FROM (SELECT f.xact FROM feed_locks f WHERE project_id = ANY (projects) ORDER BY project_id FOR UPDATE) l;
    IF locked < cardinality(projects) THEN
        INSERT INTO feed_locks (project_id, first_xact) SELECT unnest(projects), this_xact ON CONFLICT DO NOTHING;
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

-- The statement-level triggers. They see the whole statement's rows at once (transition tables), so a
-- 100,000-row statement costs one lock and one NOTIFY per project, not 100,000. Each builds the change list
-- and the sorted project list in one query, and calls boardcast_record as a plain expression (no query).

CREATE OR REPLACE FUNCTION boardcast_feed_insert() RETURNS trigger LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    changes jsonb[];
    projects uuid[];
    recorded bigint;
BEGIN
    SELECT array_agg(jsonb_build_object('p', p, 'a', 'insert', 'r', r)), array_agg(DISTINCT p ORDER BY p)
      INTO changes, projects
      FROM (SELECT r, boardcast_project_of(TG_TABLE_NAME, r) AS p
              FROM (SELECT to_jsonb(n) AS r FROM new_rows n OFFSET 0) rows) s;  -- OFFSET 0: to_jsonb once per row
    recorded := boardcast_record(TG_TABLE_NAME, projects, changes);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION boardcast_feed_delete() RETURNS trigger LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    changes jsonb[];
    projects uuid[];
    recorded bigint;
BEGIN
    SELECT array_agg(jsonb_build_object('p', p, 'a', 'delete', 'r', r)), array_agg(DISTINCT p ORDER BY p)
      INTO changes, projects
      FROM (SELECT r, boardcast_project_of(TG_TABLE_NAME, r) AS p
              FROM (SELECT to_jsonb(o) AS r FROM old_rows o OFFSET 0) rows) s;
    recorded := boardcast_record(TG_TABLE_NAME, projects, changes);
    RETURN NULL;
END $$;

-- An UPDATE is paired old-to-new by primary key. A row that moved to another project (a task moved between
-- boards) is a delete in the old project's feed and an insert in the new one's, so each room stays truthful.
-- Rows the statement left unchanged produce no event.
CREATE OR REPLACE FUNCTION boardcast_feed_update() RETURNS trigger LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    changes jsonb[];
    projects uuid[];
    recorded bigint;
BEGIN
    SELECT array_agg(e ORDER BY ord, sub), array_agg(DISTINCT (e->>'p')::uuid ORDER BY (e->>'p')::uuid)
      INTO changes, projects
      FROM (
            SELECT o.r AS o, n.r AS n, coalesce(n.ord, o.ord) AS ord,
                   boardcast_project_of(TG_TABLE_NAME, o.r) AS op, boardcast_project_of(TG_TABLE_NAME, n.r) AS np
            FROM (SELECT to_jsonb(x) AS r, boardcast_key_of(TG_TABLE_NAME, to_jsonb(x)) AS k,
                         row_number() OVER () AS ord FROM old_rows x) o
            FULL JOIN (SELECT to_jsonb(x) AS r, boardcast_key_of(TG_TABLE_NAME, to_jsonb(x)) AS k,
                              row_number() OVER () AS ord FROM new_rows x) n USING (k)
            WHERE o.r IS DISTINCT FROM n.r
        ) pairs
        CROSS JOIN LATERAL (
            SELECT 1 AS sub, jsonb_build_object('p', np, 'a', 'update', 'r', n, 'o', o) AS e
             WHERE o IS NOT NULL AND n IS NOT NULL AND op = np
            UNION ALL
            SELECT 1, jsonb_build_object('p', op, 'a', 'delete', 'r', o)
             WHERE o IS NOT NULL AND (n IS NULL OR op <> np)
            UNION ALL
            SELECT 2, jsonb_build_object('p', np, 'a', 'insert', 'r', n)
             WHERE n IS NOT NULL AND (o IS NULL OR op <> np)
        ) events;
    recorded := boardcast_record(TG_TABLE_NAME, projects, changes);
    RETURN NULL;
END $$;

-- TRUNCATE fires no row or statement triggers that could record what it removed, so it would change a board
-- behind every client's back. It is refused on the feed's tables; use DELETE (which is recorded).
CREATE OR REPLACE FUNCTION boardcast_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE % would bypass the boardcast feed', TG_TABLE_NAME
        USING HINT = 'Use DELETE FROM ' || TG_TABLE_NAME || ', which every client sees.',
              ERRCODE = 'feature_not_supported';
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'project_members', 'tasks', 'comments'] LOOP
        PERFORM boardcast_ensure_trigger(format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION boardcast_feed_insert()', t || '_feed_insert', t));
        PERFORM boardcast_ensure_trigger(format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING OLD TABLE AS old_rows '
            'NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION boardcast_feed_update()', t || '_feed_update', t));
        PERFORM boardcast_ensure_trigger(format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION boardcast_feed_delete()', t || '_feed_delete', t));
        PERFORM boardcast_ensure_trigger(format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION boardcast_refuse_truncate()', t || '_no_truncate', t));
    END LOOP;
END $$;

-- Token revocation reaches open connections at once: the server closes every WebSocket opened with a token
-- that is revoked or deleted. The payload is the token's id, never its hash.
CREATE OR REPLACE FUNCTION boardcast_token_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL) THEN
        PERFORM pg_notify('boardcast_auth', OLD.id::text);
    END IF;
    RETURN NULL;
END $$;
SELECT boardcast_ensure_trigger('CREATE TRIGGER api_tokens_revoked AFTER DELETE OR UPDATE ON api_tokens FOR EACH ROW EXECUTE FUNCTION boardcast_token_revoked()');

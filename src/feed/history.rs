//! Reads of recorded events (`feed_events`): how a room catches up after the listener reconnects, how a
//! client behind the live stream fills its gap, and how `join` with `since` replays.
//!
//! The feed's reads share the connection pool with the API, but clients' reads (joins, replays, catching up)
//! may use only an eighth of it at once and rooms' reads (and the listener's) a quarter (each at least one).
//! After a restart, thousands of clients reconnect at once and each joins with `since`; an abusive client may
//! replay long histories over many connections: without a limit their reads would take every connection (and
//! the database's CPU) and API writes would wait. With it, the reads queue here (a client just gets its replay
//! a little later) and writes always find a connection. Rooms have slots of their own, so the read that serves
//! a whole room never waits behind individual clients catching up.

use crate::feed::room_key::RoomKey;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::{Object, Pool};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::ToSql;

use super::event::Event;
use crate::error::Result;

/// A room's page of history holds at most this many bytes of frames (but always at least one event), so a page
/// of large rows cannot take hundreds of megabytes. The room reads once for all its subscribers.
pub const PAGE_BYTES: i64 = 4 * 1024 * 1024;

/// A client's page, read when it catches up on its own (it fell behind, or resumes with `since`). Smaller:
/// the client holds its page while it sends it, at the client's own pace, and many clients may be behind at
/// once; with small events a page still holds about a thousand.
pub(crate) const CLIENT_PAGE_BYTES: i64 = 512 * 1024;

/// Who reads, for the limit on concurrent reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reader {
    /// A room (or the listener): one read serves every subscriber.
    Room,
    /// One client: joining, resuming, catching up.
    Client,
}

pub struct History {
    pool: Pool,
    room_slots: Semaphore,
    client_slots: Semaphore,
    /// Pages read for single clients (catching up, resuming), since the start: how often clients were behind.
    client_pages: AtomicU64,
}

impl History {
    /// Reads through `pool`: clients at most an eighth of its connections at a time, rooms a quarter.
    pub(crate) fn new(pool: Pool) -> History {
        let size = pool.status().max_size;
        History {
            pool,
            room_slots: Semaphore::new((size / 4).max(1)),
            client_slots: Semaphore::new((size / 8).max(1)),
            client_pages: AtomicU64::new(0),
        }
    }

    /// Pages of history read for single clients so far.
    pub fn client_pages(&self) -> u64 {
        self.client_pages.load(Ordering::Relaxed)
    }

    /// The limit on concurrent reads by `reader`: its available permits are the reads that could start now.
    fn slots(&self, reader: Reader) -> &Semaphore {
        match reader {
            Reader::Room => &self.room_slots,
            Reader::Client => &self.client_slots,
        }
    }

    /// A pooled connection, within `reader`'s share of the pool: for its reads here, and a join's membership check.
    pub(crate) async fn connection(&self, reader: Reader) -> Result<(SemaphorePermit<'_>, Object)> {
        let slot = self.slots(reader).acquire().await.expect("the semaphore is never closed");
        Ok((slot, self.pool.get().await?))
    }

    /// Events of `project` with `after < seq <= upto`, in seq order, at most `limit` of them and about
    /// `max_bytes` of frames ([`PAGE_BYTES`] or [`CLIENT_PAGE_BYTES`]; at least one event). Events removed by
    /// retention are simply absent: callers check that seqs are contiguous.
    pub(crate) async fn read(
        &self,
        reader: Reader,
        project: &RoomKey,
        after: i64,
        upto: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Vec<Event>> {
        let _timed = crate::metrics::history_read(reader == Reader::Room);
        let (_slot, client) = self.connection(reader).await?;
        if reader == Reader::Client {
            self.client_pages.fetch_add(1, Ordering::Relaxed);
        }
        let stmt = client.prepare_cached(PAGE).await?;
        let rows = client.query(&stmt, &[&project, &after, &upto, &limit, &max_bytes]).await?;
        Ok(rows.into_iter().map(|r| Event::new(r.get(0), r.get(1))).collect())
    }

    /// The latest seq of each project (0 for a project without events).
    pub(crate) async fn latest(&self, reader: Reader, projects: &[RoomKey]) -> Result<Vec<(RoomKey, i64)>> {
        let (_slot, client) = self.connection(reader).await?;
        let stmt = client
            .prepare_cached(
                "SELECT r, coalesce(s.last_seq, 0) FROM unnest($1::text[]) r LEFT JOIN feed_seq s ON s.room = r",
            )
            .await?;
        let rows = client.query(&stmt, &[&projects]).await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The project's latest event (`None` for a project without events), for a room that starts after it.
    pub(crate) async fn latest_event(&self, reader: Reader, project: &RoomKey) -> Result<Option<Event>> {
        let (_slot, client) = self.connection(reader).await?;
        let stmt = client
            .prepare_cached("SELECT seq, frame FROM feed_events WHERE room = $1 ORDER BY seq DESC LIMIT 1")
            .await?;
        let row = client.query_opt(&stmt, &[&project]).await?;
        Ok(row.map(|r| Event::new(r.get(0), r.get(1))))
    }

    /// For a join: the room's latest seq, that event's `at`, and the lowest `since` the client may resume
    /// from (for a project's member, where their membership began: `project_members.since_seq`; 0 otherwise),
    /// if the join rule still lets `subject` in; `None` if not. Read after the client subscribed, so a removal
    /// committed in between is seen here or arrives as an event.
    ///
    /// With `replay` (a resume: the events after `after`, at most `limit` and about `max_bytes` of them), the
    /// first page of the replay comes with it, in the same round trip on the same connection: the two queries
    /// are pipelined, and a resume costs one wait for a client slot instead of two (after a server restarts,
    /// thousands of clients resume at once through an eighth of the pool). The page is read without knowing
    /// the latest seq, so it is read after it and what lies past it is left out; it is dropped unread unless
    /// the join rule lets the subject in (the caller still checks `since` against membership before sending).
    pub(crate) async fn join_start(
        &self,
        room: &RoomKey,
        subject: &str,
        replay: Option<Replay>,
    ) -> Result<Option<JoinStart>> {
        let (_slot, client) = self.connection(Reader::Client).await?;
        let latest = client
            .prepare_cached(
                "SELECT coalesce(e.seq, 0), to_json(e.at) #>> '{}',
                        coalesce((SELECT m.since_seq FROM project_members m
                                   WHERE m.project_id = boardcast.uuid_or_null($1)
                                     AND m.user_id = boardcast.uuid_or_null($2)), 0)
                   FROM (SELECT 1) one
                   LEFT JOIN LATERAL (SELECT seq, at FROM feed_events WHERE room = $1 ORDER BY seq DESC LIMIT 1) e ON true
                  WHERE boardcast.may_join($2, $1)",
            )
            .await?;
        let (row, page) = match replay {
            None => (client.query_opt(&latest, &[room, &subject]).await?, Vec::new()),
            Some(Replay { after, limit, max_bytes }) => {
                let _timed = crate::metrics::history_read(false);
                self.client_pages.fetch_add(1, Ordering::Relaxed);
                let page = client.prepare_cached(PAGE).await?;
                let (latest_params, page_params) = (
                    [room as &(dyn ToSql + Sync), &subject],
                    [room as &(dyn ToSql + Sync), &after, &i64::MAX, &limit, &max_bytes],
                );
                futures::try_join!(client.query_opt(&latest, &latest_params), client.query(&page, &page_params))?
            }
        };
        let Some(row) = row else { return Ok(None) };
        let latest: i64 = row.get(0);
        let replay = page.into_iter().map(|r| Event::new(r.get(0), r.get(1))).filter(|e| e.seq <= latest).collect();
        Ok(Some(JoinStart { latest, latest_at: row.get(1), since_seq: row.get(2), replay }))
    }
}

/// A page of events with `$2 < seq <= $3` of room `$1`, in seq order: at most `$4` events, and only those
/// whose frames, summed in seq order before them, come to less than `$5` bytes (so the first is always there).
const PAGE: &str = "SELECT seq, frame FROM (
                     SELECT seq, frame, sum(octet_length(frame)) OVER (ORDER BY seq) - octet_length(frame) AS before
                       FROM feed_events WHERE room = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4
                 ) page WHERE before < $5 ORDER BY seq";

/// The first page of a resume's replay (see [`History::join_start`]).
pub(crate) struct Replay {
    pub after: i64,
    pub limit: i64,
    pub max_bytes: i64,
}

/// Where a joining client may start, as the database says (see [`History::join_start`]).
pub(crate) struct JoinStart {
    pub latest: i64,
    /// The `at` of the latest event.
    pub latest_at: Option<String>,
    /// The lowest `since` the client may resume from.
    pub since_seq: i64,
    /// The replay's first page, up to `latest` (empty without a replay).
    pub replay: Vec<Event>,
}

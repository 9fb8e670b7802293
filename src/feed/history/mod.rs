//! Reads of recorded events (`feed_events`): how a room catches up after the listener reconnects, how a
//! client behind the live stream fills its gap, and how `join` with `since` replays.
//!
//! The feed's reads share the connection pool with the API, but clients' reads (joins, replays, catching up)
//! may use only an eighth of it at once and rooms' reads (and the listener's) a quarter (each at least one).
//! After a restart, thousands of clients reconnect at once and each joins with `since`; an abusive client may
//! replay long histories over many connections: without a limit their reads would take every connection (and
//! the database's CPU) and API writes would wait. With it, the reads queue here (a client just gets its replay
//! a little later) and writes always find a connection. Rooms have slots of their own, so the read that serves
//! a whole room never waits behind individual clients catching up. Where joining clients start is read a room
//! at a time for the joins that queue together ([`join_start`]).
//!
//! * [`join_start`] — where joining clients start, read once for the joins of a room that arrive together.

mod join_start;

pub(crate) use self::join_start::{JoinStart, Replay};

use crate::feed::room_key::RoomKey;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::{Object, Pool};
use tokio::sync::{Semaphore, SemaphorePermit};

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
    /// Joins waiting for their room's read of where they start.
    joins: join_start::Queues,
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
            joins: join_start::Queues::default(),
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
}

/// A page of events with `$2 < seq <= $3` of room `$1`, in seq order: at most `$4` events, and only those
/// whose frames, summed in seq order before them, come to less than `$5` bytes (so the first is always there).
const PAGE: &str = "SELECT seq, frame FROM (
                     SELECT seq, frame, sum(octet_length(frame)) OVER (ORDER BY seq) - octet_length(frame) AS before
                       FROM feed_events WHERE room = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4
                 ) page WHERE before < $5 ORDER BY seq";

//! The change feed: from a NOTIFY to the WebSocket clients in a project's room.
//!
//! * [`event`] — an event as recorded: its seq and the JSON frame built once by PostgreSQL.
//! * [`announcement`] — a notification from PostgreSQL: which seqs were committed, with their frames if they fit.
//! * [`listener`] — the LISTEN connection, its reconnects and catch-up.
//! * [`room`] — the rooms of this process and the task that broadcasts each room's events in seq order.
//! * [`history`] — reads of recorded events, for catch-up, gap filling and resume.
//! * [`protocol`] — the frames clients send and receive (documented in docs/protocol.md).
//! * [`presence`] — who is in a room, and broadcasts between its clients, across every server.
//! * [`connection`] — one WebSocket client's session.
//! * [`upgrade`] — the `/ws` route: authentication and the WebSocket handshake.
//! * [`socket`] — the socket a connection talks over after the handshake.
//!
//! Public are only what the tests watch: [`Feed`]'s pool, rooms and history.

mod access;
mod announcement;
pub(crate) mod connection;
mod event;
pub mod history;
pub(crate) mod listener;
pub(crate) mod presence;
mod protocol;
pub(crate) mod room;
pub mod room_key;
mod socket;
pub(crate) mod upgrade;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::config::FeedSettings;

/// What the feed's tasks share.
pub struct Feed {
    pub pool: Pool,
    /// Reads of recorded events, limited to part of the pool.
    pub history: Arc<history::History>,
    pub rooms: room::Rooms,
    /// Presence and broadcasts: what the rooms' clients tell each other, on every server.
    pub(crate) presence: Arc<presence::Presence>,
    pub(crate) settings: FeedSettings,
    /// Ids of tokens revoked just now; every connection opened with one of them closes.
    pub(crate) revoked_tokens: broadcast::Sender<Uuid>,
    /// Whether the listener is connected and LISTENing.
    pub(crate) listener_up: AtomicBool,
}

impl Feed {
    pub(crate) fn new(pool: Pool, settings: FeedSettings) -> Arc<Feed> {
        let history = Arc::new(history::History::new(pool.clone()));
        Arc::new(Feed {
            rooms: room::Rooms::new(history.clone(), settings.clone()),
            presence: Arc::new(presence::Presence::new(
                settings.presence_max_users,
                settings.presence_timeout,
                settings.signal_linger,
            )),
            history,
            pool,
            settings,
            revoked_tokens: broadcast::channel(1024).0,
            listener_up: AtomicBool::new(false),
        })
    }

    /// Whether the listener is connected and LISTENing (`/healthz`).
    pub(crate) fn listener_is_up(&self) -> bool {
        self.listener_up.load(Ordering::SeqCst)
    }
}

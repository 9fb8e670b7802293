//! A session's state (the rooms it is in, with a cursor each) and its writes to the client, each bounded by
//! the send timeout and by shutdown.

use crate::feed::room_key::RoomKey;
use std::sync::Arc;
use std::task::Poll;

use futures::SinkExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::end::End;
use super::grouping::TxGroup;
use super::rate::Bucket;
use super::rooms::{Rooms, Subscribed};
use crate::auth::Identity;
use crate::feed::Feed;
use crate::feed::history::CLIENT_PAGE_BYTES;
use crate::feed::presence::SignalStream;
use crate::feed::protocol::{ErrorCode, ServerFrame};
use crate::feed::room::Subscription;
use crate::http::gate::Door;
use crate::metrics;

pub(super) struct Session<S> {
    /// Boxed: every idle connection's future holds the session (see `the_session_future_stays_small`).
    pub who: Box<Identity>,
    /// The gate and the address the client came through: a token sent with `auth` is checked there.
    pub door: Door,
    pub feed: Arc<Feed>,
    pub ws: WebSocketStream<S>,
    /// The session's state in each room it is in, with its subscription: one stream of what the rooms
    /// broadcast. Dropping a room's entry leaves the room.
    pub rooms: Rooms<Joined>,
    /// Also watched while a write to the client waits: a client that stopped reading must not hold up the
    /// server's shutdown until its send timeout.
    pub shutdown: CancellationToken,
    /// When to check again that the token is still valid (revocations may have been missed; it expires).
    pub recheck_at: Option<Instant>,
    /// Frames received, joins, and bytes of history replayed: what this client may ask of the server.
    pub messages: Bucket,
    pub joins: Bucket,
    pub replay: Bucket,
    /// The rooms' presence and broadcasts. Boxed: most connections never use them, and every idle connection
    /// carries the session's future.
    pub signals: Box<Signals>,
}

/// A connection's presence and broadcasts: its number (with the server's, its entry id), its subscriptions
/// to the rooms' signals, and its rates.
pub(super) struct Signals {
    pub conn: u64,
    /// Polled behind the session's gate (see `gated`).
    pub rooms: StreamMap<RoomKey, SignalStream>,
    pub broadcasts: Bucket,
    pub updates: Bucket,
}

impl Signals {
    pub fn new(feed: &Feed) -> Signals {
        Signals {
            conn: feed.presence.connection(),
            rooms: StreamMap::new(),
            broadcasts: Bucket::new(feed.settings.broadcasts),
            updates: Bucket::new(feed.settings.presence_updates),
        }
    }

    /// Leaves a room's signals: its presence entry, if any, is gone on every server.
    pub fn leave(&mut self, project: &RoomKey) {
        self.rooms.remove(project);
    }
}

/// The session's state in one room.
pub(super) struct Joined {
    /// The room's broadcast (dropped, it leaves the room).
    pub subscription: Subscription,
    /// The last seq sent to the client.
    pub cursor: i64,
    /// The project's latest seq when membership was checked. A member removal at or before it is history
    /// (the user has been re-added since); only a later one takes the user out of the room.
    pub verified_at: i64,
    /// Set while catching up from history: read up to this seq (`i64::MAX`: until history runs out).
    pub catch_up_to: Option<i64>,
    /// After a failed history read (the database is restarting, the pool is exhausted): when to try again.
    /// The client stays connected meanwhile; it just waits for its events a little longer.
    pub retry_at: Option<Instant>,
    /// Whether the client asked for what it is catching up on (`join` with `since`): then it is paced by the
    /// connection's replay budget.
    pub replaying: bool,
    /// Set when the client joined with `"group":"tx"`: its events wait here until their transaction ends.
    pub group: Option<Box<TxGroup>>,
}

impl Subscribed for Joined {
    fn subscription(&mut self) -> &mut Subscription {
        &mut self.subscription
    }
}

impl Joined {
    /// Marks the room as behind: read history up to at least `seq` before sending from the broadcast again.
    pub fn catch_up_through(&mut self, seq: i64) {
        self.catch_up_to = Some(self.catch_up_to.unwrap_or(0).max(seq));
    }

    pub fn caught_up(&mut self) {
        self.catch_up_to = None;
        self.replaying = false;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(
        ws: WebSocketStream<S>,
        who: Identity,
        door: Door,
        feed: Arc<Feed>,
        shutdown: CancellationToken,
    ) -> Session<S> {
        // The token's expiry is a token check planned from the start (see `revocation`).
        let recheck_at = who.expires_in().map(|d| Instant::now() + d);
        let settings = &feed.settings;
        let (messages, joins) = (Bucket::new(settings.messages), Bucket::new(settings.joins));
        // Up to a page at once, then the budget's rate.
        let replay = Bucket::with(settings.replay_bytes_per_sec as f64, CLIENT_PAGE_BYTES as f64);
        Session {
            who: Box::new(who),
            door,
            ws,
            rooms: Rooms::new(),
            shutdown,
            recheck_at,
            messages,
            joins,
            replay,
            signals: Box::new(Signals::new(&feed)),
            feed,
        }
    }

    /// Sends a frame (with the request's `ref`, if any) and flushes.
    pub async fn reply(&mut self, frame: ServerFrame<'_>, reference: Option<&Value>) -> Result<(), End> {
        let text = frame.to_text(reference);
        self.send(Message::text(text)).await
    }

    pub async fn error(&mut self, code: ErrorCode, message: &str, reference: Option<&Value>) -> Result<(), End> {
        self.reply(ServerFrame::Error { code, message, retry_after: None }, reference).await
    }

    pub async fn send(&mut self, msg: Message) -> Result<(), End> {
        self.feed_frame(msg).await?;
        self.flush().await
    }

    /// Queues a frame; it is written at the next flush (or when the write buffer fills).
    ///
    /// A client that keeps up has room in its write buffer: the frame is queued at once, without a timer (a
    /// fan-out queues one frame per subscriber, and a timer each would be most of its cost). Only a write that
    /// has to wait is bounded by the send timeout and by shutdown, in a boxed future: it is rare, and inline
    /// its timer would grow every connection's future.
    pub async fn feed_frame(&mut self, msg: Message) -> Result<(), End> {
        let msg = counted(msg);
        match std::future::poll_fn(|cx| Poll::Ready(self.ws.poll_ready_unpin(cx))).await {
            Poll::Ready(Ok(())) => self.ws.start_send_unpin(msg).map_err(|_| End::Gone),
            Poll::Ready(Err(_)) => Err(End::Gone),
            Poll::Pending => Box::pin(self.feed_waiting(msg)).await,
        }
    }

    async fn feed_waiting(&mut self, msg: Message) -> Result<(), End> {
        let timeout = self.feed.settings.send_timeout;
        tokio::select! {
            biased;
            r = tokio::time::timeout(timeout, self.ws.feed(msg)) => sent(r),
            _ = self.shutdown.cancelled() => Err(End::Shutdown),
        }
    }

    /// Writes what is queued to the socket: at once when the socket takes it all (see [`Self::feed_frame`]),
    /// otherwise bounded by the send timeout and by shutdown.
    pub async fn flush(&mut self) -> Result<(), End> {
        match std::future::poll_fn(|cx| Poll::Ready(self.ws.poll_flush_unpin(cx))).await {
            Poll::Ready(Ok(())) => Ok(()),
            Poll::Ready(Err(_)) => Err(End::Gone),
            Poll::Pending => Box::pin(self.flush_waiting()).await,
        }
    }

    async fn flush_waiting(&mut self) -> Result<(), End> {
        let timeout = self.feed.settings.send_timeout;
        tokio::select! {
            biased;
            r = tokio::time::timeout(timeout, self.ws.flush()) => sent(r),
            _ = self.shutdown.cancelled() => Err(End::Shutdown),
        }
    }
}

/// Counts a frame sent (taken and given back, so that the write's future does not keep a copy of it).
fn counted(msg: Message) -> Message {
    if let Message::Text(text) = &msg {
        metrics::frame_sent(text);
    }
    msg
}

/// The outcome of a write to the client: done, the client is gone, or it accepted nothing for the send timeout.
fn sent(r: Result<Result<(), tungstenite::Error>, tokio::time::error::Elapsed>) -> Result<(), End> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::TooSlow),
    }
}

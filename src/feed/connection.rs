//! One WebSocket client's session: its requests, its rooms, and the guarantee it can check.
//!
//! The guarantee: after `joined {seq: N}` the client receives every event of that project with seq > N,
//! exactly once and in order. The session keeps, per room, the last seq it sent (its cursor). An event from
//! the room's broadcast at cursor + 1 is sent; one at or below the cursor is a duplicate and skipped; one
//! further ahead means the session missed some (it was slow and the room's buffer moved on, or it joined
//! while the room was starting), and the session catches up from history, one page per turn of its loop, so
//! that meanwhile it still reads the socket, answers pings and notices shutdown. If history no longer has
//! what it needs, the client gets `resync` instead of a silent hole.
//!
//! The session also enforces liveness (pings; a silent peer is dropped), slowness (a client that accepts no
//! data for `send_timeout` is disconnected; until then it costs the room nothing, because the room's buffer is
//! shared and bounded), membership (a removed member leaves the room at once) and token revocation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Feed;
use super::event::Event;
use super::history::{CLIENT_PAGE_BYTES, Reader};
use super::protocol::{self, Op, Request};
use super::room::{RewindWatch, Subscription};
use crate::auth::Identity;

/// Why a session ends, and what the client is told.
#[derive(Debug)]
enum End {
    /// The client closed the connection (its close frame is answered with tungstenite's echo of it).
    Closed,
    /// The socket failed, or the client dropped it without closing: nothing more can be said.
    Gone,
    Shutdown,
    Revoked,
    TooBig,
    /// The client broke the WebSocket protocol (a reserved opcode, an oversized control frame, ...).
    Protocol(String),
    /// A text message that is not UTF-8.
    NotUtf8,
    Silent,
    TooSlow,
    Internal,
}

impl End {
    fn close_frame(&self, limit: usize) -> Option<CloseFrame> {
        let (code, reason) = match self {
            End::Closed | End::Gone | End::TooSlow => return None,
            End::Shutdown => (CloseCode::Restart, "server shutting down; reconnect and join with since".to_string()),
            End::Revoked => (CloseCode::Library(4001), "token revoked".to_string()),
            End::TooBig => (CloseCode::Size, format!("message too big; the limit is {limit} bytes")),
            End::Protocol(e) => (CloseCode::Protocol, close_reason(&format!("websocket protocol error: {e}"))),
            End::NotUtf8 => (CloseCode::Invalid, "a text message was not valid UTF-8".to_string()),
            End::Silent => (CloseCode::Away, "no pong or message within the idle timeout".to_string()),
            End::Internal => (CloseCode::Error, "internal error; reconnect and join with since".to_string()),
        };
        Some(CloseFrame { code, reason: reason.into() })
    }
}

type Streams = StreamMap<Uuid, BroadcastStream<Arc<Event>>>;

/// The session's state in one room.
struct Joined {
    /// The last seq sent to the client.
    cursor: i64,
    /// The project's latest seq when membership was checked. A member removal at or before it is history
    /// (the user has been re-added since); only a later one takes the user out of the room.
    verified_at: i64,
    /// Set while catching up from history: read up to this seq (`i64::MAX`: until history runs out).
    catch_up_to: Option<i64>,
    /// Whether the room found history rewound since this session joined it.
    rewinds: RewindWatch,
    /// After a failed history read (the database is restarting, the pool is exhausted): when to try again.
    /// The client stays connected meanwhile; it just waits for its events a little longer.
    retry_at: Option<Instant>,
}

impl Joined {
    /// Marks the room as behind: read history up to at least `seq` before sending from the broadcast again.
    fn catch_up_through(&mut self, seq: i64) {
        self.catch_up_to = Some(self.catch_up_to.unwrap_or(0).max(seq));
    }
}

struct Session<S> {
    who: Identity,
    feed: Arc<Feed>,
    ws: WebSocketStream<S>,
    rooms: HashMap<Uuid, Joined>,
    /// Also watched while a write to the client waits: a client that stopped reading must not hold up the
    /// server's shutdown until its send timeout.
    shutdown: CancellationToken,
    /// When to check again that the token is still valid (revocations may have been missed).
    recheck_at: Option<Instant>,
}

/// Serves one client until it leaves or must go. `revoked` was subscribed before the token was checked, so
/// a revocation in between is not missed.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    who: Identity,
    feed: Arc<Feed>,
    mut revoked: broadcast::Receiver<Uuid>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let settings = feed.settings.clone();
    let mut session = Session { who, feed, ws, rooms: HashMap::new(), shutdown, recheck_at: None };
    let mut streams = Streams::new();
    let mut ping = tokio::time::interval(settings.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut heard = std::time::Instant::now();
    // Requests, catch-up pages and token checks may wait for a history slot or a pooled connection, behind
    // thousands of other sessions after a restart: shutdown must not wait for them.
    let shutdown = session.shutdown.clone();

    let end = loop {
        let backlog = session.catching_up();
        let retry = session.rooms.values().filter_map(|r| r.retry_at).chain(session.recheck_at).min();
        let step = tokio::select! {
            biased;
            _ = session.shutdown.cancelled() => Err(End::Shutdown),
            r = revoked.recv() => match r {
                Ok(token) if token == session.who.token_id => Err(End::Revoked),
                // The nil id means "revocations may have been missed" (the listener was reconnecting), and so
                // does falling behind the channel: check this token again, soon.
                Ok(token) if token.is_nil() => session.schedule_recheck(),
                Err(RecvError::Lagged(_)) => session.schedule_recheck(),
                _ => Ok(()),
            },
            msg = session.ws.next() => {
                heard = std::time::Instant::now();
                match msg {
                    // Boxed: requests are rare, and their futures (database round trips) are large. Inline,
                    // they would make every idle connection's future as large as the largest of them.
                    Some(Ok(Message::Text(text))) => Box::pin(unless_shutdown(&shutdown, session.request(&mut streams, &text))).await,
                    Some(Ok(Message::Binary(_))) => session.say(protocol::error("bad_frame", "binary messages are not supported; send JSON text", &None)).await,
                    Some(Ok(Message::Close(_))) => Err(End::Closed),
                    None => Err(End::Gone),
                    Some(Ok(_)) => Ok(()), // ping (answered by tungstenite), pong
                    Some(Err(tungstenite::Error::Capacity(_))) => Err(End::TooBig),
                    // A client that drops the connection without a close frame is gone, not wrong.
                    Some(Err(tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ))) => Err(End::Gone),
                    Some(Err(tungstenite::Error::Protocol(e))) => Err(End::Protocol(e.to_string())),
                    Some(Err(tungstenite::Error::Utf8(_))) => Err(End::NotUtf8),
                    Some(Err(_)) => Err(End::Gone),
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > settings.idle_timeout {
                    Err(End::Silent)
                } else {
                    session.send(Message::Ping(Default::default())).await
                }
            }
            _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => {
                let now = Instant::now();
                for room in session.rooms.values_mut() {
                    room.retry_at = room.retry_at.filter(|t| *t > now);
                }
                if session.recheck_at.is_some_and(|t| t <= now) {
                    Box::pin(unless_shutdown(&shutdown, session.recheck_token())).await
                } else {
                    Ok(())
                }
            }
            // One page of history per turn, for a room that is catching up.
            Some(project) = std::future::ready(backlog) => {
                Box::pin(unless_shutdown(&shutdown, session.catch_up(&mut streams, project))).await
            }
            Some((project, item)) = streams.next() => session.deliver(&mut streams, project, item).await,
        };
        if let Err(end) = step {
            break end;
        }
    };

    if let Some(frame) = end.close_frame(settings.max_client_frame) {
        let _ = tokio::time::timeout(Duration::from_secs(1), session.ws.close(Some(frame))).await;
    } else if let End::Closed = end {
        // Complete the closing handshake: tungstenite has queued the reply to the client's close frame, and
        // a flush sends it. Without it the client sees an abnormal closure (1006) instead of a clean one.
        let _ = tokio::time::timeout(Duration::from_secs(1), session.ws.flush()).await;
    }
    let projects: Vec<Uuid> = streams.keys().copied().collect();
    drop(streams);
    for project in projects {
        session.feed.rooms.release(project);
    }
    tracing::debug!(user = %session.who.user_name, "websocket session ended: {end:?}");
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    async fn request(&mut self, streams: &mut Streams, text: &str) -> Result<(), End> {
        match protocol::parse(text) {
            Err(e) => self.say(protocol::error(e.code, &e.message, &e.reference)).await,
            Ok(Request { op: Op::Ping, reference }) => self.say(protocol::pong(&reference)).await,
            Ok(Request { op: Op::Join { project, since, since_at }, reference }) => {
                self.join(streams, project, since, since_at, reference).await
            }
            Ok(Request { op: Op::Leave { project }, reference }) => {
                if !self.rooms.contains_key(&project) {
                    let msg = "you are not in this project's room";
                    return self.say(protocol::error("not_joined", msg, &reference)).await;
                }
                self.drop_room(streams, project);
                self.say(protocol::left(project, "requested", &reference)).await
            }
        }
    }

    async fn join(
        &mut self,
        streams: &mut Streams,
        project: Uuid,
        since: Option<i64>,
        since_at: Option<protocol::At>,
        reference: Option<serde_json::Value>,
    ) -> Result<(), End> {
        if self.rooms.contains_key(&project) {
            let msg = "already in this project's room; leave first to join again";
            return self.say(protocol::error("already_joined", msg, &reference)).await;
        }
        if self.rooms.len() >= self.feed.settings.max_rooms_per_connection {
            let msg = format!("a connection may be in at most {} rooms", self.feed.settings.max_rooms_per_connection);
            return self.say(protocol::error("too_many_rooms", &msg, &reference)).await;
        }
        // Subscribe before reading the latest seq: every event committed after that read is then either in
        // the broadcast or, if the room was catching up, filled from history. Nothing falls in between.
        let Subscription { events: rx, rewinds } = self.feed.rooms.subscribe(project);
        let refuse = |feed: &Feed, rx| {
            drop(rx);
            feed.rooms.release(project);
        };
        let (latest, latest_at) = match self.feed.history.latest_if_member(project, self.who.user_id).await {
            Ok(Some(latest)) => latest,
            outcome => {
                refuse(&self.feed, rx);
                if let Err(e) = outcome {
                    tracing::error!("join failed: {e}");
                    let msg = "the server could not check your membership; try again";
                    return self.say(protocol::error("unavailable", msg, &reference)).await;
                }
                // One answer for "no such project" and "not a member", so ids cannot be probed.
                let msg = "no such project, or you are not a member of it";
                return self.say(protocol::error("not_found", msg, &reference)).await;
            }
        };
        let start = since.unwrap_or(latest);
        if start > latest {
            refuse(&self.feed, rx);
            return self.say(protocol::resync(project, latest, "since_ahead", &reference)).await;
        }
        // A resume: check that history still reaches back to `start` before promising anything, and, if the
        // client named its last event, that history still records that event as the client saw it. Event
        // `start` itself is read too, for its `at` (the `joined` frame carries it, for the next resume).
        let mut first_page = Vec::new();
        let mut at = if since.is_none() { latest_at } else { None };
        if since.is_some() && latest > 0 {
            let page = self.feed.settings.history_page;
            let from = (start - 1).max(0);
            first_page =
                match self.feed.history.read(Reader::Client, project, from, latest, page, CLIENT_PAGE_BYTES).await {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::error!("history read failed: {e}");
                        refuse(&self.feed, rx);
                        let msg = "the server could not read the project's history; try again";
                        return self.say(protocol::error("unavailable", msg, &reference)).await;
                    }
                };
            // (If retention removed event `start`, or `start` is 0, there is nothing to compare: the rest is
            // checked as usual.)
            if start > 0 && first_page.first().is_some_and(|e| e.seq == start) {
                at = recorded_at(&first_page.remove(0));
                if since_at.is_some_and(|expected| at.as_deref().and_then(protocol::At::parse) != Some(expected)) {
                    refuse(&self.feed, rx);
                    return self.say(protocol::resync(project, latest, "history_rewound", &reference)).await;
                }
            }
            if start < latest && !contiguous(&first_page, start) {
                refuse(&self.feed, rx);
                return self.say(protocol::resync(project, latest, "history_pruned", &reference)).await;
            }
        }
        streams.insert(project, BroadcastStream::new(rx));
        let joined = Joined { cursor: start, verified_at: latest, catch_up_to: None, retry_at: None, rewinds };
        self.rooms.insert(project, joined);
        self.feed_frame(Message::text(protocol::joined(project, start, latest, at.as_deref(), &reference))).await?;
        for event in first_page {
            if !self.emit(streams, &event).await? {
                break;
            }
        }
        if let Some(room) = self.rooms.get_mut(&project)
            && room.cursor < latest
        {
            room.catch_up_to = Some(latest); // the rest of the replay, a page per turn
        }
        self.flush().await
    }

    /// An item from a room's broadcast, then whatever else is ready, flushed once: a burst of events costs
    /// one write to the socket, not one per event.
    async fn deliver(
        &mut self,
        streams: &mut Streams,
        project: Uuid,
        item: Result<Arc<Event>, BroadcastStreamRecvError>,
    ) -> Result<(), End> {
        self.take(streams, project, item).await?;
        for _ in 0..256 {
            match streams.next().now_or_never() {
                Some(Some((project, item))) => self.take(streams, project, item).await?,
                _ => break,
            }
        }
        self.flush().await
    }

    async fn take(
        &mut self,
        streams: &mut Streams,
        project: Uuid,
        item: Result<Arc<Event>, BroadcastStreamRecvError>,
    ) -> Result<(), End> {
        let Some(room) = self.rooms.get_mut(&project) else { return Ok(()) };
        let behind_to = match item {
            // This session fell behind the room's buffer: catch up from history, unless what it skipped
            // included the room's warning that history was rewound.
            Err(BroadcastStreamRecvError::Lagged(_)) if room.rewinds.rewound_since_start() => {
                return Box::pin(self.resync(streams, project, "history_rewound")).await;
            }
            Err(BroadcastStreamRecvError::Lagged(_)) => i64::MAX,
            Ok(event) if event.rewound => return Box::pin(self.resync(streams, project, "history_rewound")).await,
            Ok(event) if event.seq <= room.cursor => return Ok(()),
            // While catching up, history has this event too (or will have it by the time we get there).
            Ok(event) if room.catch_up_to.is_some() || event.watermark || event.seq > room.cursor + 1 => event.seq,
            Ok(event) => return self.emit(streams, &event).await.map(|_| ()),
        };
        room.catch_up_through(behind_to);
        Ok(())
    }

    /// The first room that is catching up from history (and not waiting to retry), if any.
    fn catching_up(&self) -> Option<Uuid> {
        self.rooms.iter().find(|(_, r)| r.catch_up_to.is_some() && r.retry_at.is_none()).map(|(p, _)| *p)
    }

    /// Sends one page of recorded events after the room's cursor.
    async fn catch_up(&mut self, streams: &mut Streams, project: Uuid) -> Result<(), End> {
        let Some(room) = self.rooms.get(&project) else { return Ok(()) };
        if room.rewinds.rewound_since_start() {
            // History no longer continues what this client was sent; its warning may be behind us in the
            // room's buffer, or already skipped.
            return self.resync(streams, project, "history_rewound").await;
        }
        let (cursor, target) = (room.cursor, room.catch_up_to.unwrap_or(room.cursor));
        let page = self.feed.settings.history_page;
        let events =
            match self.feed.history.read(Reader::Client, project, cursor, target, page, CLIENT_PAGE_BYTES).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(%project, "history read failed, retrying in 1s: {e}");
                    self.rooms.get_mut(&project).unwrap().retry_at = Some(Instant::now() + Duration::from_secs(1));
                    return Ok(());
                }
            };
        let Some(last) = events.last().map(|e| e.seq) else {
            if target == i64::MAX || cursor >= target {
                self.rooms.get_mut(&project).unwrap().catch_up_to = None; // caught up
                return Ok(());
            }
            // Announced, yet not in history: retention removed it. Say so rather than leave a hole.
            return self.resync(streams, project, "history_pruned").await;
        };
        if !contiguous(&events, cursor) {
            return self.resync(streams, project, "history_pruned").await;
        }
        for event in &events {
            if !self.emit(streams, event).await? {
                return self.flush().await;
            }
        }
        if let Some(room) = self.rooms.get_mut(&project) {
            // History ran out (rather than the page filling up, by count or by bytes): caught up.
            let bytes: usize = events.iter().map(|e| e.frame.len()).sum();
            let short = (events.len() as i64) < page && (bytes as i64) < CLIENT_PAGE_BYTES && target == i64::MAX;
            if last >= target || short {
                room.catch_up_to = None;
            }
        }
        self.flush().await
    }

    async fn resync(&mut self, streams: &mut Streams, project: Uuid, reason: &str) -> Result<(), End> {
        self.drop_room(streams, project);
        let latest = match self.feed.history.latest(Reader::Client, &[project]).await {
            Ok(v) => v.first().map(|x| x.1).unwrap_or(0),
            Err(_) => return Err(End::Internal),
        };
        self.say(protocol::resync(project, latest, reason, &None)).await
    }

    fn drop_room(&mut self, streams: &mut Streams, project: Uuid) {
        streams.remove(&project);
        self.rooms.remove(&project);
        self.feed.rooms.release(project);
    }

    /// Queues one event for the client and moves its cursor. Returns whether the client is still in the
    /// room: if the event removes this user from the project, the client leaves the room right after it.
    async fn emit(&mut self, streams: &mut Streams, event: &Event) -> Result<bool, End> {
        let Some(frame) = event.frame() else {
            // A large frame the room no longer holds for us: we are too far behind. History has it.
            if let Some(room) = self.rooms.get_mut(&event.project) {
                room.catch_up_through(event.seq);
            }
            return Ok(true);
        };
        self.feed_frame(Message::Text(frame)).await?;
        let Some(room) = self.rooms.get_mut(&event.project) else { return Ok(false) };
        room.cursor = event.seq;
        if event.removed_member == Some(self.who.user_id) && event.seq > room.verified_at {
            self.drop_room(streams, event.project);
            self.feed_frame(Message::text(protocol::left(event.project, "removed", &None))).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Plans a token check within the next two seconds, at a moment of this session's own: after a listener
    /// reconnect every session checks, and thousands of them at once would queue for the pool together.
    fn schedule_recheck(&mut self) -> Result<(), End> {
        let at = Instant::now() + Duration::from_millis(jitter_ms(2000));
        self.recheck_at = Some(self.recheck_at.map_or(at, |t| t.min(at)));
        Ok(())
    }

    /// Closes the session if its token was revoked. If the database cannot say right now, the client stays
    /// and the check is tried again in a second: a database blip is no reason to disconnect anyone.
    async fn recheck_token(&mut self) -> Result<(), End> {
        self.recheck_at = None;
        let check = async {
            let client = self.feed.pool.get().await.map_err(|e| e.to_string())?;
            client
                .query_opt("SELECT 1 FROM api_tokens WHERE id = $1 AND revoked_at IS NULL", &[&self.who.token_id])
                .await
                .map_err(|e| e.to_string())
        };
        match check.await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(End::Revoked),
            Err(e) => {
                tracing::warn!(user = %self.who.user_name, "cannot check the token, retrying in 1-3 s: {e}");
                self.recheck_at = Some(Instant::now() + Duration::from_millis(1000 + jitter_ms(2000)));
                Ok(())
            }
        }
    }

    async fn say(&mut self, frame: String) -> Result<(), End> {
        self.send(Message::text(frame)).await
    }

    async fn send(&mut self, msg: Message) -> Result<(), End> {
        self.feed_frame(msg).await?;
        self.flush().await
    }

    async fn feed_frame(&mut self, msg: Message) -> Result<(), End> {
        let timeout = self.feed.settings.send_timeout;
        tokio::select! {
            biased;
            r = tokio::time::timeout(timeout, self.ws.feed(msg)) => sent(r),
            _ = self.shutdown.cancelled() => Err(End::Shutdown),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        let timeout = self.feed.settings.send_timeout;
        tokio::select! {
            biased;
            r = tokio::time::timeout(timeout, self.ws.flush()) => sent(r),
            _ = self.shutdown.cancelled() => Err(End::Shutdown),
        }
    }
}

/// A close frame's reason may be at most 123 bytes: cut at a character boundary.
fn close_reason(s: &str) -> String {
    let mut end = s.len().min(123);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `work`, unless shutdown comes first.
async fn unless_shutdown(shutdown: &CancellationToken, work: impl Future<Output = Result<(), End>>) -> Result<(), End> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(End::Shutdown),
        r = work => r,
    }
}

/// The outcome of a write to the client: done, the client is gone, or it accepted nothing for the send timeout.
fn sent(r: Result<Result<(), tungstenite::Error>, tokio::time::error::Elapsed>) -> Result<(), End> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::TooSlow),
    }
}

/// A random delay below `max` milliseconds, so that sessions that were told something at the same moment do
/// not all act on it at the same moment.
fn jitter_ms(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish() % max
}

/// The `at` of a recorded event, as its frame says it.
fn recorded_at(event: &Event) -> Option<String> {
    let frame: serde_json::Value = serde_json::from_str(&event.frame).ok()?;
    frame.get("at")?.as_str().map(str::to_string)
}

/// Whether a page of history continues exactly from `cursor`: no seq missing, at the start or inside.
fn contiguous(events: &[Arc<Event>], cursor: i64) -> bool {
    events.iter().enumerate().all(|(i, e)| e.seq == cursor + 1 + i as i64)
}

#[cfg(test)]
mod tests {
    /// Every idle connection carries this future; keep it small (see BENCHMARKS.md, memory per connection).
    #[test]
    fn the_session_future_stays_small() {
        fn size_of<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let pool = crate::db::pool("postgres://nobody@127.0.0.1:1/none", 1).unwrap();
            let feed = super::Feed::new(pool, Default::default());
            let (a, _b) = tokio::io::duplex(64);
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                a,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let who = crate::auth::Identity {
                user_id: uuid::Uuid::nil(),
                user_name: String::new(),
                token_id: uuid::Uuid::nil(),
            };
            let revoked = feed.revoked_tokens.subscribe();
            let fut = super::serve(ws, who, feed, revoked, Default::default());
            let size = size_of(&fut);
            eprintln!("session future: {size} bytes");
            assert!(size < 2048, "the session future is {size} bytes");
        });
    }
}

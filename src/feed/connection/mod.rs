//! One WebSocket client's session: its requests, its rooms, and the guarantee it can check.
//!
//! The guarantee: after `joined {seq: N}` the client receives every event of that project with seq > N,
//! exactly once and in order. The session keeps, per room, the last seq it sent (its cursor), and fills any
//! gap from history ([`delivery`]); if history no longer has what it needs, the client gets `resync` instead
//! of a silent hole.
//!
//! The session also enforces liveness (pings; a silent peer is dropped), slowness (a client that accepts no
//! data for `send_timeout` is disconnected; until then it costs the room nothing, because the room's buffer is
//! shared and bounded), membership (a removed member leaves the room at once) and token revocation, expiry
//! and renewal ([`revocation`]).
//!
//! And it bounds what one client can ask of the server ([`rate`]): frames per second (a ping costs a pong),
//! joins per second, bytes of history replayed per second. It reads nothing more from a client while what it
//! has to send that client does not drain: a client that sends pings and never reads their pongs fills its own
//! socket's buffers, not the server's memory.
//!
//! * [`session`] — the session's state and its writes to the client.
//! * [`join`] — requests: join, resume, leave, ping.
//! * [`grouping`] — one `tx` frame per transaction, for a client that joined with `"group":"tx"`.
//! * [`rate`] — the rate limits of one connection.
//! * [`signals`] — presence and broadcasts: track, untrack, broadcast, and what the rooms' other clients send.
//! * [`rooms`] — the rooms a session is in, as a short list.
//! * [`slots`] — how many connections the server and each user may hold.
//! * [`end`] — why a session ends.
//! * [`gated`] — shutdown and revocations, watched without a server-wide lock per turn of the loop.

mod delivery;
mod end;
mod gated;
mod grouping;
mod join;
mod rate;
mod revocation;
mod rooms;
mod session;
mod signals;
mod slots;

pub(crate) use self::slots::{Full, Slots};

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use uuid::Uuid;

use self::end::End;
use self::gated::Gate;
use self::rate::{Limit, Verdict, millis};
use self::session::Session;
use super::Feed;
use super::presence::SignalStream;
use super::protocol::{self, ErrorCode, ServerFrame};
use super::room_key::RoomKey;
use crate::auth::Identity;
use crate::config::Rate;
use crate::http::gate::Door;
use crate::metrics;

/// Serves one client until it leaves or must go. `revoked` was subscribed before the token was checked, so
/// a revocation in between is not missed. `door` is what the client came through: a token it sends on the
/// socket (`auth`) is checked at the same gate as the one it opened it with.
pub(crate) async fn serve<S>(
    ws: WebSocketStream<S>,
    who: Identity,
    door: Door,
    feed: Arc<Feed>,
    revoked: broadcast::Receiver<Uuid>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::info!("connection opened");
    let _open = metrics::connection_opened();
    let mut session = Session::new(ws, who, door, feed, shutdown);
    let end = session.run(revoked).await;
    session.close(&end).await;
    // Leaves every room (each subscription leaves its own when dropped).
    drop(session);
    tracing::info!("connection closed: {end}");
    metrics::disconnected(end.label());
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The session's loop: one thing at a time, whichever is ready first.
    async fn run(&mut self, revoked: broadcast::Receiver<Uuid>) -> End {
        let (ping_every, idle_timeout) = (self.feed.settings.ping_interval, self.feed.settings.idle_timeout);
        let mut ping = tokio::time::interval(ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut heard = std::time::Instant::now();
        // Requests, catch-up pages and token checks may wait for a history slot or a pooled connection, behind
        // thousands of other sessions after a restart: shutdown must not wait for them.
        let shutdown = self.shutdown.clone();
        // Not boxed: every turn of the loop looks at it, and a box would be one more cache line to miss.
        let mut gate = Gate::new();
        // Boxed: every idle connection's future carries it.
        let mut watches = Box::new(Watches {
            shutdown: Box::pin(shutdown.clone().cancelled_owned()),
            revoked: BroadcastStream::new(revoked),
            ping,
        });
        loop {
            // A replay waits for its connection's byte budget (`retry` wakes the loop when it is there).
            let (backlog, paced) = self.catching_up();
            let retry = self.rooms.values().filter_map(|r| r.retry_at).chain(self.recheck_at).chain(paced).min();
            let step = tokio::select! {
                biased;
                seldom = watches.next(&mut gate, &mut self.signals.rooms) => match seldom {
                    Seldom::Shutdown => Err(End::Shutdown),
                    Seldom::Revoked(token) => self.revoked(token),
                    Seldom::Ping if heard.elapsed() > idle_timeout => Err(End::Silent),
                    Seldom::Ping => self.send(Message::Ping(Default::default())).await,
                    Seldom::Signal(frame) => {
                        let relayed = self.relay(frame).await;
                        // The relay took what else was ready itself, registering the session directly.
                        gate.again();
                        relayed
                    }
                },
                msg = next_when_drained(&mut self.ws) => {
                    heard = std::time::Instant::now();
                    // A request may join a room, and so its signals: poll them at the next turn.
                    gate.again();
                    match received(msg) {
                        // Boxed: requests are rare, and their futures (database round trips) are large.
                        // Inline, they would make every idle connection's future as large as the largest.
                        Ok(received) => Box::pin(unless_shutdown(&shutdown, self.answer(received))).await,
                        Err(end) => Err(end),
                    }
                }
                // The timer is made only when a retry is due: a branch's future is made at every turn, polled or not.
                _ = sleep_until(retry) => self.retry(&shutdown).await,
                // One page of history per turn, for a room that is catching up.
                Some(project) = std::future::ready(backlog) => {
                    Box::pin(unless_shutdown(&shutdown, self.catch_up(project))).await
                }
                (at, item) = self.rooms.next() => self.deliver(at, item).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Whatever the client sent counts against its rate of messages; a request within it is answered.
    async fn answer(&mut self, received: Received) -> Result<(), End> {
        match (self.messages.take(), received) {
            (Verdict::Abusive, _) => Err(End::RateLimited(Limit::Messages)),
            (Verdict::Limited(wait), Received::Text(text)) => {
                let reference = protocol::reference(&text);
                self.rate_limited(Limit::Messages, wait, reference.as_ref()).await
            }
            // A ping over the limit was answered by the WebSocket library already; nothing else is.
            (Verdict::Limited(_), _) | (Verdict::Allowed, Received::Control) => Ok(()),
            (Verdict::Allowed, Received::Text(text)) => self.request(&text).await,
            (Verdict::Allowed, Received::Binary) => {
                let msg = "binary messages are not supported; send JSON text";
                self.error(ErrorCode::BadFrame, msg, None).await
            }
        }
    }

    /// Refuses a request over one of the connection's rates.
    pub(super) async fn rate_limited(
        &mut self,
        limit: Limit,
        wait: Duration,
        reference: Option<&Value>,
    ) -> Result<(), End> {
        metrics::rate_limited(limit.label());
        let Rate { per_sec, burst } = limit.rate(&self.feed.settings);
        let what = limit.name();
        let message =
            format!("too many {what}: at most {per_sec} a second, {burst} at once; retry after retry_after ms");
        let frame =
            ServerFrame::Error { code: ErrorCode::RateLimited, message: &message, retry_after: Some(millis(wait)) };
        self.reply(frame, reference).await
    }

    /// A retry is due: a room's history read that failed, or a token check.
    async fn retry(&mut self, shutdown: &CancellationToken) -> Result<(), End> {
        let now = Instant::now();
        for room in self.rooms.values_mut() {
            room.retry_at = room.retry_at.filter(|t| *t > now);
        }
        if self.recheck_at.is_some_and(|t| t <= now) {
            Box::pin(unless_shutdown(shutdown, self.recheck_token())).await
        } else {
            Ok(())
        }
    }

    /// Tells the client why the session ends, if it can still hear it.
    async fn close(&mut self, end: &End) {
        if let Some(frame) = end.close_frame(self.feed.settings.max_client_frame) {
            let ws = &mut self.ws;
            let closing = async {
                ws.close(Some(frame)).await?;
                // A client closed for its rate has more in flight: read it (to the client's reply to the close)
                // before the socket is dropped, or the system answers it with a reset, and the client, losing
                // what it had yet to read, never learns why it was closed.
                if let End::RateLimited(_) = end {
                    while ws.next().await.transpose()?.is_some() {}
                }
                Ok::<_, tungstenite::Error>(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
        } else if let End::Closed = end {
            // Complete the closing handshake: tungstenite has queued the reply to the client's close frame, and
            // a flush sends it. Without it the client sees an abnormal closure (1006) instead of a clean one.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.flush()).await;
        }
    }
}

/// What the client sent.
enum Received {
    Text(Utf8Bytes),
    Binary,
    /// A ping (answered by tungstenite) or a pong.
    Control,
}

/// The client's next message, once everything queued for it has been written: while the client does not read,
/// the session does not read either, so what the client sends (a ping, whose pong is queued) cannot pile up
/// in the write buffer.
async fn next_when_drained<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Option<Result<Message, tungstenite::Error>> {
    if let Err(e) = ws.flush().await {
        return Some(Err(e));
    }
    ws.next().await
}

/// What the client sent (or what became of its socket): a message, or the end.
fn received(msg: Option<Result<Message, tungstenite::Error>>) -> Result<Received, End> {
    use tungstenite::error::ProtocolError::ResetWithoutClosingHandshake;
    match msg {
        Some(Ok(Message::Text(text))) => Ok(Received::Text(text)),
        Some(Ok(Message::Binary(_))) => Ok(Received::Binary),
        Some(Ok(Message::Close(_))) => Err(End::Closed),
        None => Err(End::Gone),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(Received::Control),
        Some(Err(tungstenite::Error::Capacity(_))) => Err(End::TooBig),
        // A client that drops the connection without a close frame is gone, not wrong.
        Some(Err(tungstenite::Error::Protocol(ResetWithoutClosingHandshake))) => Err(End::Gone),
        Some(Err(tungstenite::Error::Protocol(e))) => Err(End::Protocol(e.to_string())),
        Some(Err(tungstenite::Error::Utf8(_))) => Err(End::NotUtf8),
        Some(Err(_)) => Err(End::Gone),
    }
}

/// What the session watches besides the client and its rooms' events: seldom ready, so behind a [`Gate`].
struct Watches {
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    revoked: BroadcastStream<Uuid>,
    ping: tokio::time::Interval,
}

/// Which of the [`Watches`] (or the rooms' signals) is ready.
enum Seldom {
    Shutdown,
    Revoked(Result<Uuid, BroadcastStreamRecvError>),
    Ping,
    Signal(Utf8Bytes),
}

impl Watches {
    /// The first of them to be ready, in this order, or the rooms' signals, for a client.
    fn next<'a>(
        &'a mut self,
        gate: &'a mut Gate,
        signals: &'a mut StreamMap<RoomKey, SignalStream>,
    ) -> impl Future<Output = Seldom> + 'a {
        std::future::poll_fn(move |cx| {
            if !gate.open(cx) {
                return Poll::Pending;
            }
            let cx = &mut gate.context();
            let ready = if self.shutdown.as_mut().poll(cx).is_ready() {
                Seldom::Shutdown
            } else if let Poll::Ready(Some(token)) = self.revoked.poll_next_unpin(cx) {
                Seldom::Revoked(token)
            } else if self.ping.poll_tick(cx).is_ready() {
                Seldom::Ping
            } else if let Poll::Ready(Some((_, frame))) = signals.poll_next_unpin(cx) {
                Seldom::Signal(frame)
            } else {
                return Poll::Pending;
            };
            gate.again();
            Poll::Ready(ready)
        })
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `work`, unless shutdown comes first.
async fn unless_shutdown(shutdown: &CancellationToken, work: impl Future<Output = Result<(), End>>) -> Result<(), End> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(End::Shutdown),
        r = work => r,
    }
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
                subject: String::new(),
                user_id: Some(uuid::Uuid::nil()),
                name: String::new(),
                token_id: Some(uuid::Uuid::nil()),
                expires_at: None,
            };
            let door = crate::http::gate::Door {
                gate: std::sync::Arc::new(crate::http::gate::Gate::new(Default::default())),
                client: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            };
            let revoked = feed.revoked_tokens.subscribe();
            let fut = super::serve(ws, who, door, feed, revoked, Default::default());
            let size = size_of(&fut);
            eprintln!("session future: {size} bytes");
            assert!(size < 2048, "the session future is {size} bytes");
        });
    }
}

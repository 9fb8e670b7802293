//! A connection's subscription to a room's signals: the frames meant for it (presence, if it asked for it;
//! broadcasts, its own only if it asked for them), as a stream. Dropping it leaves: the connection's entry in
//! the room, if it tracked one, is gone at once, on every server.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Presence;
use super::room::Signal;

/// What a connection asked for when it joined.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Options {
    /// `"presence": true`: the room's `presence_state`, then its diffs.
    pub presence: bool,
    /// `"broadcast": {"self": true}`: its own broadcasts too.
    pub echo: bool,
}

pub(crate) struct SignalStream {
    presence: Arc<Presence>,
    room: String,
    conn: u64,
    options: Options,
    /// `None` only while being dropped: the receiver must be gone before the room counts its subscribers.
    signals: Option<BroadcastStream<Arc<Signal>>>,
}

impl SignalStream {
    pub(super) fn new(
        presence: Arc<Presence>,
        room: String,
        conn: u64,
        options: Options,
        rx: broadcast::Receiver<Arc<Signal>>,
    ) -> SignalStream {
        SignalStream { presence, room, conn, options, signals: Some(BroadcastStream::new(rx)) }
    }

    fn wanted(&self, signal: &Signal) -> bool {
        if signal.presence { self.options.presence } else { self.options.echo || signal.from != Some(self.conn) }
    }
}

impl Stream for SignalStream {
    type Item = Utf8Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Utf8Bytes>> {
        loop {
            let Some(signals) = self.signals.as_mut() else { return Poll::Ready(None) };
            match Pin::new(signals).poll_next(cx) {
                Poll::Ready(Some(Ok(signal))) if self.wanted(&signal) => {
                    return Poll::Ready(Some(signal.frame.clone()));
                }
                Poll::Ready(Some(Ok(_))) => continue,
                // Too slow to take the room's signals: the broadcasts it skipped are lost (signals, not
                // records), and its presence starts afresh from the room as it is now. (The diffs still
                // buffered after this are applied on top: each says how a user is now, so they are harmless.)
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) if self.options.presence => {
                    return Poll::Ready(Some(self.presence.state_frame(&self.room)));
                }
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for SignalStream {
    fn drop(&mut self) {
        drop(self.signals.take());
        self.presence.exit(&self.room, self.conn);
    }
}

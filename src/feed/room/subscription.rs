//! A subscriber's place in a room: the room's broadcast, as a stream, and a guard that leaves the room when
//! dropped (the last subscriber to leave closes it).
//!
//! A session drains a burst of events with [`Subscription::try_next`], a plain `try_recv` on the receiver it
//! holds, and waits with the stream, whose receive future holds the receiver only while the room has nothing
//! new for it. (`BroadcastStream` keeps a receive future at all times: every event is taken through it and
//! a new one made after it, and the drain's poll with a no-op waker registers that waker in the room's list of
//! waiters, under the lock every subscriber of the room shares.)

use crate::feed::room_key::RoomKey;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::broadcast::{self, Receiver, error::RecvError, error::TryRecvError};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::ReusableBoxFuture;

use super::inbox::{Room, RoomMap};
use super::message::RoomMessage;

pub(crate) struct Subscription {
    project: RoomKey,
    subject: String,
    /// The room's broadcast, while the subscription is not waiting for it...
    messages: Option<Receiver<Arc<RoomMessage>>>,
    /// ...and the wait, which holds the receiver until the room sends. Made at the first wait, then reused.
    /// (Both are `None` while being dropped: the receiver must be gone before the room counts its subscribers.)
    waiting: Option<ReusableBoxFuture<'static, Received>>,
    /// Whether the receiver is in `waiting`.
    parked: bool,
    /// Whether the last `try_recv` found nothing: the next poll waits at once instead of trying again.
    drained: bool,
    rooms: Arc<RoomMap>,
    rewinds: RewindWatch,
}

/// Whether the room found history rewound since the subscription began. The `Rewound` message travels in the
/// broadcast, but a subscriber that lagged behind the buffer never sees the messages it skipped, that one
/// included; it must not then catch up from a history that no longer continues what it was sent.
#[derive(Clone)]
pub(crate) struct RewindWatch {
    count: Arc<AtomicU64>,
    at_start: u64,
}

impl RewindWatch {
    pub fn rewound_since_start(&self) -> bool {
        self.count.load(Ordering::Acquire) != self.at_start
    }
}

impl Subscription {
    /// To be called with the registry locked, so that the room is not closed in between.
    pub(super) fn new(
        room: &Room,
        rooms: Arc<RoomMap>,
        rx: broadcast::Receiver<Arc<RoomMessage>>,
        subject: &str,
    ) -> Subscription {
        *room.subjects.lock().unwrap().entry(subject.to_string()).or_default() += 1;
        let count = room.rewinds.clone();
        let at_start = count.load(Ordering::Acquire);
        Subscription {
            project: room.project.clone(),
            subject: subject.to_string(),
            messages: Some(rx),
            waiting: None,
            parked: false,
            drained: false,
            rooms,
            rewinds: RewindWatch { count, at_start },
        }
    }

    pub fn rewinds(&self) -> RewindWatch {
        self.rewinds.clone()
    }

    /// The room's next message if it is there now, without waiting (and without registering to be woken).
    /// `None` also while the subscription waits: its stream is woken when the room sends.
    pub fn try_next(&mut self) -> Option<Item> {
        let rx = self.messages.as_mut()?;
        match rx.try_recv() {
            Ok(message) => Some(Ok(message)),
            Err(TryRecvError::Lagged(n)) => Some(Err(BroadcastStreamRecvError::Lagged(n))),
            Err(TryRecvError::Empty | TryRecvError::Closed) => {
                self.drained = true;
                None
            }
        }
    }
}

/// One of the room's messages, or that this subscriber lagged behind the buffer.
pub(crate) type Item = Result<Arc<RoomMessage>, BroadcastStreamRecvError>;

/// What a wait for the room's broadcast ends with, and the receiver back.
type Received = (Result<Arc<RoomMessage>, RecvError>, Receiver<Arc<RoomMessage>>);

async fn receive(mut rx: Receiver<Arc<RoomMessage>>) -> Received {
    (rx.recv().await, rx)
}

fn item(received: Result<Arc<RoomMessage>, RecvError>) -> Option<Item> {
    match received {
        Ok(message) => Some(Ok(message)),
        Err(RecvError::Lagged(n)) => Some(Err(BroadcastStreamRecvError::Lagged(n))),
        Err(RecvError::Closed) => None,
    }
}

impl Stream for Subscription {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        if !this.parked {
            if !std::mem::take(&mut this.drained)
                && let Some(item) = this.try_next()
            {
                return Poll::Ready(Some(item));
            }
            this.drained = false;
            let Some(rx) = this.messages.take() else { return Poll::Ready(None) };
            match this.waiting.as_mut() {
                Some(waiting) => waiting.set(receive(rx)),
                None => this.waiting = Some(ReusableBoxFuture::new(receive(rx))),
            }
            this.parked = true;
        }
        let Some(waiting) = this.waiting.as_mut() else { return Poll::Ready(None) };
        let (received, rx) = std::task::ready!(waiting.poll(cx));
        this.messages = Some(rx);
        this.parked = false;
        Poll::Ready(item(received))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        crate::metrics::room_left();
        drop(self.messages.take());
        drop(self.waiting.take());
        let mut rooms = self.rooms.lock().unwrap();
        let Some(room) = rooms.get(&self.project) else { return };
        {
            let mut subjects = room.subjects.lock().unwrap();
            if let Some(n) = subjects.get_mut(&self.subject) {
                *n -= 1;
                if *n == 0 {
                    subjects.remove(&self.subject);
                }
            }
        }
        if room.messages.receiver_count() == 0 {
            rooms.remove(&self.project).unwrap().close();
        }
    }
}

//! A subscriber's place in a room: the room's broadcast, as a stream, and a guard that leaves the room when
//! dropped (the last subscriber to leave closes it).
//!
//! A session drains a burst of events with [`Subscription::try_next`], a plain `try_recv` on its receiver, and
//! when the room has nothing for it waits in its slot of the room's table of waiters (see [`super::broadcast`]):
//! no receive future, and so no box to keep one pinned in.

use crate::feed::room_key::RoomKey;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::broadcast::{Receiver, error::TryRecvError};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::broadcast::Slot;
use super::inbox::{Room, RoomMap};
use super::message::RoomMessage;

pub(crate) struct Subscription {
    project: RoomKey,
    subject: String,
    /// The room's broadcast (`None` while being dropped: the receiver must be gone before the room counts its
    /// subscribers).
    messages: Option<Receiver<Arc<RoomMessage>>>,
    /// Where the subscription waits when the room has nothing for it.
    slot: Slot,
    /// Whether the last `try_recv` found nothing: the next poll waits at once instead of trying again.
    drained: bool,
    rooms: Arc<RoomMap>,
    rewinds: RewindWatch,
}

/// Whether the room found history rewound since the subscription began. The `Rewound` message travels in the
/// broadcast, but a subscriber that lagged behind the buffer never sees the messages it skipped, that one
/// included; it must not then catch up from a history that no longer continues what it was sent.
struct RewindWatch {
    count: Arc<AtomicU64>,
    at_start: u64,
}

impl Subscription {
    /// To be called with the registry locked, so that the room is not closed in between.
    pub(super) fn new(room: &Room, rooms: Arc<RoomMap>, subject: &str) -> Subscription {
        let (rx, slot) = room.messages.subscribe();
        *room.subjects.lock().unwrap().entry(subject.to_string()).or_default() += 1;
        let count = room.rewinds.clone();
        let at_start = count.load(Ordering::Acquire);
        Subscription {
            project: room.project.clone(),
            subject: subject.to_string(),
            messages: Some(rx),
            slot,
            drained: false,
            rooms,
            rewinds: RewindWatch { count, at_start },
        }
    }

    /// Whether the room found history rewound since this subscription began (see [`RewindWatch`]).
    pub fn rewound_since_start(&self) -> bool {
        self.rewinds.count.load(Ordering::Acquire) != self.rewinds.at_start
    }

    /// The room's next message if it is there now, without waiting (and without registering to be woken).
    /// `None` also while the subscription waits: its stream is woken when the room sends.
    pub fn try_next(&mut self) -> Option<Item> {
        let rx = self.messages.as_mut()?;
        match rx.try_recv() {
            Ok(message) => Some(Ok(message)),
            Err(TryRecvError::Lagged(n)) => Some(Err(BroadcastStreamRecvError::Lagged(n))),
            Err(TryRecvError::Empty) => {
                self.drained = true;
                None
            }
            // The room closed (it does only when its last subscriber has left): the stream ends.
            Err(TryRecvError::Closed) => {
                self.messages = None;
                None
            }
        }
    }
}

/// One of the room's messages, or that this subscriber lagged behind the buffer.
pub(crate) type Item = Result<Arc<RoomMessage>, BroadcastStreamRecvError>;

impl Stream for Subscription {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        if this.messages.is_none() {
            return Poll::Ready(None);
        }
        if !std::mem::take(&mut this.drained)
            && let Some(item) = this.try_next()
        {
            return Poll::Ready(Some(item));
        }
        // Armed first, then one more look: a message sent in between is found now, or rings the slot.
        this.slot.arm(cx.waker());
        match this.try_next() {
            Some(item) => Poll::Ready(Some(item)),
            None if this.messages.is_none() => Poll::Ready(None),
            None => {
                this.drained = false;
                Poll::Pending
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        crate::metrics::room_left();
        drop(self.messages.take());
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
        if room.messages.subscribers() == 0 {
            rooms.remove(&self.project).unwrap().close();
        }
    }
}

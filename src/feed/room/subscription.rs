//! A subscriber's place in a room: the room's broadcast, as a stream, and a guard that leaves the room when
//! dropped (the last subscriber to leave closes it).

use crate::feed::room_key::RoomKey;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::inbox::{Room, RoomMap};
use super::message::RoomMessage;

pub(crate) struct Subscription {
    project: RoomKey,
    subject: String,
    /// `None` only while being dropped: the receiver must be gone before the room counts its subscribers.
    messages: Option<BroadcastStream<Arc<RoomMessage>>>,
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
            messages: Some(BroadcastStream::new(rx)),
            rooms,
            rewinds: RewindWatch { count, at_start },
        }
    }

    pub fn rewinds(&self) -> RewindWatch {
        self.rewinds.clone()
    }
}

impl Stream for Subscription {
    type Item = Result<Arc<RoomMessage>, BroadcastStreamRecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.messages.as_mut() {
            Some(messages) => Pin::new(messages).poll_next(cx),
            None => Poll::Ready(None),
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
        if room.messages.receiver_count() == 0 {
            rooms.remove(&self.project).unwrap().close();
        }
    }
}

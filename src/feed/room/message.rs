//! What a room broadcasts to its subscribers, in this order.

use std::sync::Weak;
use std::time::Instant;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

#[derive(Debug)]
pub(crate) enum RoomMessage {
    /// The project's next event.
    /// `heard`: when the listener received it, if it did (see `Event`).
    Event { seq: i64, frame: Frame, removed_member: Option<Uuid>, heard: Option<Instant> },
    /// The room's promise: "I will broadcast only events after `seq`". A subscriber whose cursor is below it
    /// reads the difference from history. (Sent when a room starts, or skips seqs that history no longer has.)
    Watermark { seq: i64 },
    /// The room's warning: the database's history of this project no longer continues the one this room
    /// broadcast (it was restored from a backup, or its feed was reset). Every subscriber must start over
    /// (`resync`).
    Rewound,
    /// The join rule no longer lets these subjects in (checked again after `boardcast.recheck`, or on the
    /// schedule): their subscribers leave the room.
    AccessLost { subjects: Vec<String> },
}

/// An event's frame, as it travels in the room's broadcast buffer.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A small frame: the buffer holds it (another reference to the same bytes).
    Inline(Utf8Bytes),
    /// A large frame, held by its room while its subscribers may still need it, within a byte budget (see
    /// `held`). Gone means this subscriber is too far behind: it reads the event from history instead.
    Held(Weak<Utf8Bytes>),
}

impl Frame {
    /// The bytes to send, or `None` if the room let go of them.
    pub fn get(&self) -> Option<Utf8Bytes> {
        match self {
            Frame::Inline(frame) => Some(frame.clone()),
            Frame::Held(held) => held.upgrade().map(|f| (*f).clone()),
        }
    }
}

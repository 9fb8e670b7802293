//! The large frames a room holds for its subscribers, within a byte budget for all rooms together.
//!
//! The broadcast buffer holds the last `room_buffer` messages for subscribers that are behind, and a message
//! stays in it until every subscriber has taken it. Counted in messages, that is no bound in bytes: a client
//! that stops reading during a bulk update of 100 KB descriptions would pin hundreds of megabytes until its
//! send timeout. So a large frame is not put in the buffer itself: the room holds it and the buffer carries a
//! weak reference ([`Frame::Held`]). The room lets go of a frame once every subscriber has taken its event.
//! While the large frames held by all rooms together exceed `held_frames_budget`, a room reads no more history
//! until its subscribers have taken what it holds (so it never runs ahead of the ones that keep up), and a room
//! whose slowest subscriber has taken nothing for half a second lets go of its oldest frames: that subscriber,
//! finding its frame gone, reads the event from history, as it would after lagging. Each room may be over the
//! budget by the page of history it sent last.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::broadcast::Broadcast;
use super::message::{Frame, RoomMessage};
use crate::feed::event::Event;

/// Frames at least this large are held by the room, not by its broadcast buffer, so the buffer holds at most
/// `room_buffer` × 4 KiB of frames. Notifications carry frames of at most 3,900 bytes inline, so these come
/// from history reads.
pub(super) const LARGE_FRAME: usize = 4 * 1024;

/// A room whose slowest subscriber has taken nothing for this long, while all rooms are over the budget,
/// lets go of its oldest large frames: that subscriber will read them from history.
const STALLED: Duration = Duration::from_millis(500);

/// A room's large frames, by the index of the broadcast send that carried them.
pub(super) struct Held {
    frames: VecDeque<(u64, Arc<Utf8Bytes>)>,
    bytes: usize,
    /// Sends into the broadcast so far (the index of the next one).
    sent: u64,
    /// Bytes held by all rooms, and their budget.
    total: Arc<AtomicUsize>,
    budget: usize,
    /// The first send some subscriber had yet to take, at the previous `release`, and since when it has not
    /// moved (the slowest subscriber is stalled).
    taken_before: u64,
    stalled_since: Instant,
}

impl Held {
    pub fn new(total: Arc<AtomicUsize>, budget: usize) -> Held {
        Held {
            frames: VecDeque::new(),
            bytes: 0,
            sent: 0,
            total,
            budget,
            taken_before: 0,
            stalled_since: Instant::now(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn over_budget(&self) -> bool {
        self.total.load(Ordering::Relaxed) > self.budget
    }

    /// Broadcasts an event; a large frame is held here and the buffer gets a weak reference to it.
    pub fn send_event(&mut self, messages: &Broadcast, event: Event) {
        let Event { seq, frame, removed_member, heard } = event;
        let large = (frame.len() >= LARGE_FRAME).then(|| Arc::new(frame.clone()));
        let frame = match &large {
            Some(held) => Frame::Held(Arc::downgrade(held)),
            None => Frame::Inline(frame),
        };
        if !self.send(messages, RoomMessage::Event { seq, frame, removed_member, heard }) {
            return;
        }
        if let Some(held) = large {
            self.bytes += held.len();
            self.total.fetch_add(held.len(), Ordering::Relaxed);
            self.frames.push_back((self.sent - 1, held));
        }
    }

    /// Broadcasts a message; `false` if the room has no subscribers (then nothing is sent).
    pub fn send(&mut self, messages: &Broadcast, message: RoomMessage) -> bool {
        let sent = messages.send(message);
        if sent {
            self.sent += 1;
        }
        sent
    }

    /// Lets go of the frames every subscriber has taken, and, while all rooms together are over the budget and
    /// this room's slowest subscriber is stalled, of the oldest ones (keeping the newest).
    pub fn release(&mut self, messages: &Broadcast) {
        // `len` counts the messages some subscriber has yet to take; they are the latest sends.
        let first_queued = self.sent.saturating_sub(messages.len() as u64);
        // A subscriber that has just taken an event may not have read its frame yet: let go only of what was
        // taken before the previous call.
        let taken = self.taken_before.min(first_queued);
        if first_queued != self.taken_before {
            self.taken_before = first_queued;
            self.stalled_since = Instant::now();
        }
        let stalled = self.stalled_since.elapsed() >= STALLED;
        while self.frames.front().is_some_and(|(i, _)| *i < taken)
            || (stalled && self.frames.len() > 1 && self.over_budget())
        {
            let (_, frame) = self.frames.pop_front().unwrap();
            self.bytes -= frame.len();
            self.total.fetch_sub(frame.len(), Ordering::Relaxed);
        }
    }

    /// Before reading more history: while all rooms are over the budget, wait until this room's subscribers
    /// have taken what it holds (or the stalled ones have been given up on). A room that reads ahead of its
    /// subscribers would otherwise push even the ones that keep up into reading history themselves.
    pub async fn make_room(&mut self, messages: &Broadcast) {
        loop {
            self.release(messages);
            if self.frames.len() <= 1 || !self.over_budget() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

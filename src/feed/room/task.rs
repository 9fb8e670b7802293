//! A room's task: turns what the listener announced into a broadcast of events in seq order, once each,
//! reading from history whatever the announcement did not carry (a large change, a range missed while the
//! listener was reconnecting), and warns the subscribers when history was rewound.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::held::Held;
use super::inbox::{Room, Step};
use super::message::RoomMessage;
use super::rewind::{LastSent, rewound};
use crate::feed::access;
use crate::feed::event::Event;
use crate::feed::history::{History, PAGE_BYTES, Reader};

struct Task {
    room: Arc<Room>,
    history: Arc<History>,
    /// Events per history read.
    page: i64,
    held: Held,
    /// The seq of the last event broadcast (or skipped: see `Watermark`).
    delivered: i64,
    /// The last event sent, to recognise a rewound history.
    last_sent: Option<LastSent>,
}

/// Broadcasts every event after the one that was latest when the room was created, once and in seq order,
/// until the room is closed.
pub(super) async fn run(room: Arc<Room>, history: Arc<History>, page: i64, held: Held) {
    let Some(mut task) = Task::start(room, history, page, held).await else { return };
    loop {
        match task.room.next_step(task.delivered) {
            Step::Closed => return,
            Step::Check { latest } => task.check(latest).await,
            Step::Recheck => task.recheck().await,
            Step::Idle => task.idle().await,
            Step::Broadcast(batch) => batch.into_iter().for_each(|e| task.send_event(e)),
            Step::Read { upto } => {
                task.held.make_room(&task.room.messages).await;
                task.read(upto).await;
            }
        }
    }
}

impl Task {
    /// Reads where the broadcast starts: after the project's latest event. `None` if the room closed first.
    async fn start(room: Arc<Room>, history: Arc<History>, page: i64, held: Held) -> Option<Task> {
        loop {
            match history.latest_event(Reader::Room, &room.project).await {
                Ok(event) => {
                    let delivered = event.as_ref().map_or(0, |e| e.seq);
                    // Remember the event the room starts after, as if it had sent it: a restore noticed before
                    // the room sends anything is then noticed even if the new history has reached this seq again.
                    let last_sent = event.map(|e| LastSent::of(e.seq, &e.frame));
                    let mut task = Task { room, history, page, held, delivered, last_sent };
                    // Subscribers that joined before this read may have cursors below it: tell them where the
                    // broadcast starts, so they read the difference from history now rather than at the next
                    // event. (Subscribers start from their own join point and fill anything before from history.)
                    task.send(RoomMessage::Watermark { seq: delivered });
                    return Some(task);
                }
                Err(e) => {
                    tracing::warn!(project = %room.project, "room cannot read its latest seq: {e}");
                    if room.is_closed() {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn send(&mut self, message: RoomMessage) {
        self.held.send(&self.room.messages, message);
    }

    fn send_event(&mut self, event: Event) {
        self.delivered = event.seq;
        self.last_sent = Some(LastSent::of(event.seq, &event.frame));
        self.held.send_event(&self.room.messages, event);
    }

    /// Nothing to broadcast: wait to be woken. While large frames are held, look again soon whether the
    /// subscribers have taken them.
    async fn idle(&mut self) {
        if self.held.is_empty() {
            return self.room.wake.notified().await;
        }
        tokio::select! {
            _ = self.room.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        self.held.release(&self.room.messages);
    }

    /// Checks that history, whose latest seq is now `latest`, still continues what the room sent.
    async fn check(&mut self, latest: i64) {
        let project = &self.room.project.clone();
        match rewound(&self.history, project, self.delivered, latest, self.last_sent.as_ref()).await {
            Some(false) => {}
            Some(true) => self.rewind(latest).await,
            None => {
                self.room.check_later(latest);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Asks the join rule about every subscriber, in one query, and sends out those it no longer lets in. A
    /// failed query is tried again at the next recheck (the schedule's, at the latest).
    async fn recheck(&mut self) {
        let subjects = self.room.subjects();
        if subjects.is_empty() {
            return;
        }
        match access::lost_access(&self.history, &self.room.project, &subjects).await {
            Ok(lost) if lost.is_empty() => {}
            Ok(lost) => {
                tracing::info!(project = %self.room.project, "{} subscriber(s) lost access to the room", lost.len());
                self.send(RoomMessage::AccessLost { subjects: lost });
            }
            Err(e) => tracing::warn!(project = %self.room.project, "room cannot check who may stay in it: {e}"),
        }
    }

    /// History was rewound: every subscriber starts over, and so does the room, from `latest`.
    async fn rewind(&mut self, latest: i64) {
        let project = &self.room.project.clone();
        tracing::warn!(
            %project,
            "the database's history no longer continues the feed this room sent (seq {}, now {latest}): was it \
             restored? Every subscriber is told to resync",
            self.delivered
        );
        self.room.restart_at(latest);
        self.delivered = latest;
        // What the room sent last belongs to the old history: compare with the new one's from now.
        self.last_sent = LastSent::recorded(&self.history, project, latest).await;
        // Counted before the message is sent: a subscriber that lags past the message sees the count.
        self.room.rewinds.fetch_add(1, Ordering::Release);
        self.send(RoomMessage::Rewound);
        // Ask again how far the project has got: events committed since the listener's read were announced
        // into what was just cleared. Later ones arrive as usual.
        match self.history.latest(Reader::Room, std::slice::from_ref(project)).await {
            Ok(v) => self.room.push(v.first().map_or(latest, |x| x.1), Vec::new()),
            Err(e) => tracing::warn!(%project, "room cannot read its latest seq: {e}"),
        }
    }

    /// One page of history up to `upto`, broadcast; on failure, a pause before the room's loop tries again.
    async fn read(&mut self, upto: i64) {
        let project = &self.room.project.clone();
        match self.history.read(Reader::Room, project, self.delivered, upto, self.page, PAGE_BYTES).await {
            Ok(events) if !events.is_empty() => {
                events.into_iter().for_each(|e| self.send_event(e));
                // Let subscribers drain between pages of a large change.
                tokio::task::yield_now().await;
            }
            Ok(_) => {
                // Announced but not recorded: only possible if retention removed it already.
                tracing::warn!(%project, "seqs {}..={upto} are not in history", self.delivered + 1);
                self.delivered = upto;
                self.send(RoomMessage::Watermark { seq: upto });
            }
            Err(e) => {
                tracing::warn!(%project, "room cannot read history: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

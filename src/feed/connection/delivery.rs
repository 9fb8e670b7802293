//! Delivery: what a room broadcasts, and what history holds, sent to the client in seq order.
//!
//! An event at the room's cursor + 1 is sent; one at or below the cursor is a duplicate and skipped; one
//! further ahead means the session missed some (it was slow and the room's buffer moved on, or it joined while
//! the room was starting), and the session catches up from history, one page per turn of its loop, so that
//! meanwhile it still reads the socket, answers pings and notices shutdown. If history no longer has what it
//! needs, the client gets `resync` instead of a silent hole.

use crate::feed::room_key::RoomKey;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use uuid::Uuid;

use super::end::End;
use super::session::{Joined, Session};
use crate::feed::event::Event;
use crate::feed::history::{CLIENT_PAGE_BYTES, Reader};
use crate::feed::protocol::{LeftReason, ResyncReason, ServerFrame};
use crate::feed::room::{Item, RoomMessage};
use crate::metrics;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A message from a room's broadcast, then whatever else is ready, flushed once: a burst of events costs
    /// one write to the socket, not one per event.
    /// `at`: the room's entry in the session's rooms (see [`super::rooms::Rooms::next`]).
    pub async fn deliver(&mut self, at: usize, item: Item) -> Result<(), End> {
        // How long the burst's first event took from the listener to this session, which writes it now. (Not
        // kept until the flush: every idle connection's future would carry it.)
        metrics::delivered(heard(&item));
        self.take(at, item).await?;
        for _ in 0..256 {
            // A plain look at each room's buffer: a room with nothing now wakes the loop when it has.
            match self.rooms.try_next() {
                Some((at, item)) => self.take(at, item).await?,
                None => break,
            }
        }
        self.flush().await
    }

    async fn take(&mut self, at: usize, item: Item) -> Result<(), End> {
        let (project, room) = self.rooms.at_mut(at);
        // The common case, a room's next event for a client that takes them one by one, needs no more than the
        // entry (what `emit` does, without a removed member or a transaction to group by).
        if let Ok(RoomMessage::Event { seq, frame, removed_member: None, .. }) = item.as_deref()
            && *seq == room.cursor + 1
            && room.catch_up_to.is_none()
            && room.group.is_none()
            && let Some(frame) = frame.get()
        {
            room.cursor = *seq;
            return self.feed_frame(Message::Text(frame)).await;
        }
        let project = project.clone();
        let behind_to = match item.as_deref() {
            // This session fell behind the room's buffer: catch up from history, unless what it skipped
            // included the room's warning that history was rewound.
            Err(BroadcastStreamRecvError::Lagged(_)) if room.subscription.rewound_since_start() => {
                return Box::pin(self.resync(project, ResyncReason::HistoryRewound)).await;
            }
            Err(BroadcastStreamRecvError::Lagged(_)) => i64::MAX,
            Ok(RoomMessage::Rewound) => {
                return Box::pin(self.resync(project, ResyncReason::HistoryRewound)).await;
            }
            Ok(RoomMessage::AccessLost { subjects }) if subjects.contains(&self.who.subject) => {
                self.drop_room(&project);
                return self.reply(ServerFrame::Left { project, reason: LeftReason::Removed }, None).await;
            }
            Ok(RoomMessage::AccessLost { .. }) => return Ok(()),
            Ok(RoomMessage::Watermark { seq } | RoomMessage::Event { seq, .. }) if *seq <= room.cursor => return Ok(()),
            Ok(RoomMessage::Watermark { seq }) => *seq,
            // While catching up, history has this event too (or will have it by the time we get there).
            Ok(RoomMessage::Event { seq, .. }) if room.catch_up_to.is_some() || *seq > room.cursor + 1 => *seq,
            Ok(RoomMessage::Event { seq, frame, removed_member, .. }) => match frame.get() {
                Some(frame) => return self.emit(&project, *seq, frame, *removed_member).await.map(|_| ()),
                // A large frame the room no longer holds for us: we are too far behind. History has it.
                None => *seq,
            },
        };
        room.catch_up_through(behind_to);
        Ok(())
    }

    /// A room that is catching up from history (and not waiting to retry), if any, and otherwise, if a replay
    /// waits for the connection's byte budget, when the budget will allow a page. A room that fell behind the
    /// broadcast goes first: it did not ask for its history, the replays did.
    pub fn catching_up(&mut self) -> (Option<RoomKey>, Option<Instant>) {
        let behind = |r: &Joined| r.catch_up_to.is_some() && r.retry_at.is_none();
        if let Some(project) = self.rooms.iter().find(|(_, r)| behind(r) && !r.replaying).map(|(p, _)| p.clone()) {
            return (Some(project), None);
        }
        let Some(project) = self.rooms.iter().find(|(_, r)| behind(r)).map(|(p, _)| p.clone()) else {
            return (None, None);
        };
        let page = CLIENT_PAGE_BYTES as f64;
        if self.replay.available() >= page { (Some(project), None) } else { (None, Some(self.replay.when(page))) }
    }

    /// Sends one page of recorded events after the room's cursor.
    pub async fn catch_up(&mut self, project: RoomKey) -> Result<(), End> {
        let Some(room) = self.rooms.get(&project) else { return Ok(()) };
        if room.subscription.rewound_since_start() {
            // History no longer continues what this client was sent; its warning may be behind us in the
            // room's buffer, or already skipped.
            return self.resync(project, ResyncReason::HistoryRewound).await;
        }
        let (cursor, target, replaying) = (room.cursor, room.catch_up_to.unwrap_or(room.cursor), room.replaying);
        let page = self.feed.settings.history_page;
        let max_bytes = if replaying { self.replay_page() } else { CLIENT_PAGE_BYTES };
        let events = match self.feed.history.read(Reader::Client, &project, cursor, target, page, max_bytes).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(%project, "history read failed, retrying in 1s: {e}");
                self.rooms.get_mut(&project).unwrap().retry_at = Some(Instant::now() + Duration::from_secs(1));
                return Ok(());
            }
        };
        if events.is_empty() && (target == i64::MAX || cursor >= target) {
            self.rooms.get_mut(&project).unwrap().caught_up();
            return Ok(());
        }
        // Empty, yet announced: retention removed it. Say so rather than leave a hole.
        if events.is_empty() || !contiguous(&events, cursor) {
            return self.resync(project, ResyncReason::HistoryPruned).await;
        }
        // History ran out (rather than the page filling up, by count or by bytes): caught up.
        let bytes: usize = events.iter().map(|e| e.frame.len()).sum();
        if replaying {
            self.replay.spend(bytes as f64);
        }
        let short = (events.len() as i64) < page && (bytes as i64) < max_bytes && target == i64::MAX;
        let done = short || events.last().is_some_and(|e| e.seq >= target);
        for event in events {
            if !self.emit(&project, event.seq, event.frame, event.removed_member).await? {
                return self.flush().await;
            }
        }
        if let Some(room) = self.rooms.get_mut(&project)
            && done
        {
            room.caught_up();
        }
        self.flush().await
    }

    /// The bytes of history a replay may read now: up to a page, within the connection's replay budget (at
    /// least one event is always read).
    pub fn replay_page(&mut self) -> i64 {
        (self.replay.available() as i64).clamp(1, CLIENT_PAGE_BYTES)
    }

    /// Takes the client out of the room and tells it to start over.
    pub async fn resync(&mut self, project: RoomKey, reason: ResyncReason) -> Result<(), End> {
        self.drop_room(&project);
        let latest = match self.feed.history.latest(Reader::Client, std::slice::from_ref(&project)).await {
            Ok(v) => v.first().map(|x| x.1).unwrap_or(0),
            Err(_) => return Err(End::Internal),
        };
        self.reply(ServerFrame::Resync { project, latest, reason }, None).await
    }

    /// Leaves the room (the subscription, dropped, tells the room).
    pub fn drop_room(&mut self, project: &RoomKey) {
        self.rooms.remove(project);
        // Out of the room's presence too, on every server.
        self.signals.leave(project);
    }

    /// Queues event `seq` of `project` for the client (or, in grouped mode, hands it to the room's grouping,
    /// which may queue a `tx` frame) and moves the room's cursor. Returns whether the client is still in the
    /// room: if the event removes this user from the project, the client leaves the room right after it.
    pub async fn emit(
        &mut self,
        project: &RoomKey,
        seq: i64,
        frame: Utf8Bytes,
        removed_member: Option<Uuid>,
    ) -> Result<bool, End> {
        let Some(room) = self.rooms.get_mut(project) else { return Ok(false) };
        room.cursor = seq;
        let removed = removed_member.is_some() && removed_member == self.who.user_id && seq > room.verified_at;
        let Some(group) = room.group.as_mut() else {
            self.feed_frame(Message::Text(frame)).await?;
            return self.unless_removed(project, removed).await;
        };
        let mut out = Vec::new();
        group.push(project, seq, frame, &mut out);
        if removed {
            // What the client may see of the transaction goes out before it leaves.
            group.flush_held(project, &mut out);
        }
        if !out.is_empty() {
            // Boxed: most events of a transaction queue nothing, and every connection's future would carry
            // the frames' iterator otherwise.
            Box::pin(self.feed_frames(out)).await?;
        }
        self.unless_removed(project, removed).await
    }

    async fn feed_frames(&mut self, frames: Vec<Utf8Bytes>) -> Result<(), End> {
        for frame in frames {
            self.feed_frame(Message::Text(frame)).await?;
        }
        Ok(())
    }

    /// After an event that removed this user from the project: the client leaves the room.
    async fn unless_removed(&mut self, project: &RoomKey, removed: bool) -> Result<bool, End> {
        if removed {
            self.drop_room(project);
            let left = ServerFrame::Left { project: project.clone(), reason: LeftReason::Removed };
            self.feed_frame(Message::text(left.to_text(None))).await?;
            return Ok(false);
        }
        Ok(true)
    }
}

/// When the listener received the event in `item`, if it is one that came with its notification.
fn heard(item: &Item) -> Option<std::time::Instant> {
    match item.as_deref() {
        Ok(RoomMessage::Event { heard, .. }) => *heard,
        _ => None,
    }
}

/// Whether a page of history continues exactly from `cursor`: no seq missing, at the start or inside.
pub(super) fn contiguous(events: &[Event], cursor: i64) -> bool {
    events.iter().enumerate().all(|(i, e)| e.seq == cursor + 1 + i as i64)
}

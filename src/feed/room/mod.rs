//! Rooms: the WebSocket clients of this process that joined a project.
//!
//! A room exists while it has subscribers; it is created by the first join and removed when the last
//! subscriber leaves (its [`Subscription`] is dropped). Each room has one task ([`task`]) that broadcasts the
//! project's events in seq order to a bounded buffer shared by its subscribers, bounded in bytes too
//! ([`held`]), and tells them to start over if the database's history was rewound ([`rewind`]).
//!
//! * [`inbox`] — a room, and what the listener announced to it.
//! * [`broadcast`] — a room's buffer of messages, and its subscribers waiting for the next.
//! * [`message`] — what a room broadcasts.
//! * [`subscription`] — a subscriber's place in a room, left when dropped.

mod broadcast;
mod held;
mod inbox;
mod message;
mod rewind;
mod subscription;
mod task;

use crate::feed::room_key::RoomKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use self::held::Held;
use self::inbox::{Room, RoomMap};
pub(crate) use self::message::RoomMessage;
pub(crate) use self::subscription::{Item, Subscription};
use super::announcement::Announcement;
use super::history::History;
use crate::config::FeedSettings;

pub struct Rooms {
    /// Shared with every subscription, which leaves its room when dropped.
    map: Arc<RoomMap>,
    history: Arc<History>,
    settings: FeedSettings,
    /// Bytes of large frames held by all rooms.
    held_bytes: Arc<AtomicUsize>,
}

impl Rooms {
    pub(crate) fn new(history: Arc<History>, settings: FeedSettings) -> Rooms {
        Rooms { map: Arc::new(Mutex::new(HashMap::new())), history, settings, held_bytes: Arc::default() }
    }

    /// Subscribes to a room this process has already, without making one: `None` if it has none.
    pub(crate) fn subscribe_existing(&self, project: &RoomKey, subject: &str) -> Option<Subscription> {
        let map = self.map.lock().unwrap();
        let room = map.get(project)?;
        crate::metrics::room_joined();
        Some(Subscription::new(room, self.map.clone(), subject))
    }

    /// Subscribes to a project's messages, creating its room if this is the first subscriber. Events are
    /// received from the moment of this call; the caller decides where its client starts and fills the rest
    /// from history.
    pub(crate) fn subscribe(&self, project: RoomKey, subject: &str) -> Subscription {
        crate::metrics::room_joined();
        let mut map = self.map.lock().unwrap();
        if let Some(room) = map.get(&project) {
            return Subscription::new(room, self.map.clone(), subject);
        }
        let room = Room::new(project.clone(), self.settings.room_buffer);
        map.insert(project, room.clone());
        let subscription = Subscription::new(&room, self.map.clone(), subject);
        let held = Held::new(self.held_bytes.clone(), self.settings.held_frames_budget);
        tokio::spawn(task::run(room, self.history.clone(), self.settings.history_page, held));
        subscription
    }

    /// Hands an announcement from the listener to its room. Projects without a room here are ignored, and
    /// their frames are not even parsed.
    pub(crate) fn announce(&self, a: &Announcement<'_>) {
        if let Some(room) = self.room(&a.project) {
            room.announce(a.first, a.last, a.events().unwrap_or_default());
        }
    }

    /// Tells a room the latest committed seq, as read from the database (after the listener reconnects).
    pub(crate) fn announce_latest(&self, project: &RoomKey, latest: i64) {
        if let Some(room) = self.room(project) {
            room.announce_latest(latest);
        }
    }

    /// Asks `room` (`None`: every room) to check its subscribers against the join rule again.
    pub(crate) fn recheck(&self, room: Option<&RoomKey>) {
        let rooms: Vec<Arc<Room>> = match room {
            Some(key) => self.room(key).into_iter().collect(),
            None => self.map.lock().unwrap().values().cloned().collect(),
        };
        rooms.iter().for_each(|r| r.recheck());
    }

    fn room(&self, project: &RoomKey) -> Option<Arc<Room>> {
        self.map.lock().unwrap().get(project).cloned()
    }

    pub(crate) fn projects(&self) -> Vec<RoomKey> {
        self.map.lock().unwrap().keys().cloned().collect()
    }

    /// Subscribers of a project's room in this process (0 if it has no room).
    pub fn subscribers(&self, project: &RoomKey) -> usize {
        self.map.lock().unwrap().get(project).map(|r| r.messages.subscribers()).unwrap_or(0)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    /// Bytes of large frames the rooms hold for subscribers that have not taken them yet.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! The rooms a session is in, each with the session's state in it and its subscription to the room's
//! broadcast: a short list, searched in order, and polled as one stream of what the rooms send.
//!
//! Every delivery finds its room's subscription and then the session's state in that room, and with thousands
//! of sessions each finds them cold in memory. A session is in a few rooms (at most
//! `max_rooms_per_connection`); in one list, the subscription that woke the session and the state it updates
//! are side by side, and keys compare by pointer first (the key a delivery comes with is the one the session
//! joined with). A map of subscriptions beside a hash map of states costs several cache lines per delivery:
//! the hash of the key's text, the map's control bytes and bucket, the other map's entry (measured: see
//! BENCHMARKS.md's fan-out ceiling notes).

use std::task::{Context, Poll};

use futures::StreamExt;

use crate::feed::room::{Item, Subscription};
use crate::feed::room_key::RoomKey;

pub(super) struct Rooms<T> {
    entries: Vec<(RoomKey, T)>,
    /// The entry polled first next time, so that a busy room cannot keep the others waiting.
    next_first: usize,
}

/// A room's entry: what holds its subscription.
pub(super) trait Subscribed {
    fn subscription(&mut self) -> &mut Subscription;
}

impl<T> Rooms<T> {
    pub fn new() -> Rooms<T> {
        Rooms { entries: Vec::new(), next_first: 0 }
    }

    fn position(&self, project: &RoomKey) -> Option<usize> {
        self.entries.iter().position(|(key, _)| key == project)
    }

    pub fn get(&self, project: &RoomKey) -> Option<&T> {
        self.position(project).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, project: &RoomKey) -> Option<&mut T> {
        self.position(project).map(|i| &mut self.entries[i].1)
    }

    pub fn contains_key(&self, project: &RoomKey) -> bool {
        self.position(project).is_some()
    }

    /// Adds the room, or replaces the state of one the session is in already.
    pub fn insert(&mut self, project: RoomKey, room: T) {
        match self.get_mut(&project) {
            Some(state) => *state = room,
            None => self.entries.push((project, room)),
        }
    }

    pub fn remove(&mut self, project: &RoomKey) -> Option<T> {
        let i = self.position(project)?;
        Some(self.entries.swap_remove(i).1)
    }

    /// The entry at `i`, as [`Self::next`] and [`Self::try_next`] name it (until the next insert or remove).
    pub fn at_mut(&mut self, i: usize) -> (&RoomKey, &mut T) {
        let (key, room) = &mut self.entries[i];
        (key, room)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RoomKey, &T)> {
        self.entries.iter().map(|(key, room)| (key, room))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, room)| room)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().map(|(_, room)| room)
    }
}

impl<T: Subscribed> Rooms<T> {
    /// The next message of any room, with the index of the room's entry (never ready while the session is in
    /// none). An index, not the room's key: a clone of the key would count a reference on the key that all the
    /// room's sessions share, at every delivery, from every core.
    pub fn next(&mut self) -> impl Future<Output = (usize, Item)> + '_ {
        std::future::poll_fn(|cx| self.poll_next(cx))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(usize, Item)> {
        let n = self.entries.len();
        let first = self.next_first;
        self.next_first = self.next_first.wrapping_add(1);
        for i in (0..n).map(|i| (first + i) % n) {
            // A room's broadcast ends only when its last subscriber leaves: never while this one is in it.
            if let Poll::Ready(Some(item)) = self.entries[i].1.subscription().poll_next_unpin(cx) {
                return Poll::Ready((i, item));
            }
        }
        Poll::Pending
    }

    /// A room's next message if one is there now, without waiting (see [`Subscription::try_next`]).
    pub fn try_next(&mut self) -> Option<(usize, Item)> {
        self.entries.iter_mut().enumerate().find_map(|(i, (_, room))| Some((i, room.subscription().try_next()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_found_by_key_text_as_well_as_by_the_same_key() {
        let (a, b) = (RoomKey::parse("a").unwrap(), RoomKey::parse("b").unwrap());
        let mut rooms = Rooms::new();
        rooms.insert(a.clone(), 1);
        rooms.insert(b.clone(), 2);
        rooms.insert(RoomKey::parse("a").unwrap(), 3);
        assert_eq!(rooms.len(), 2);
        assert_eq!(rooms.get(&a), Some(&3), "a key with the same text is the same room");
        assert_eq!(rooms.remove(&RoomKey::parse("a").unwrap()), Some(3));
        assert!(!rooms.contains_key(&a));
        assert_eq!(rooms.get(&b), Some(&2));
        assert_eq!(rooms.remove(&a), None);
    }
}

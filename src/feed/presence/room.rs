//! One room's presence: its entries (one per tracking connection, on any server), grouped by user, and the
//! frames that tell subscribers about them.
//!
//! Changes are gathered ([`Room::set`], [`Room::remove`]) and announced together ([`Room::announce`]): the
//! users they touched are compared before and after, so a user's first entry is a join, their last one gone a
//! leave, and anything else (another tab, a new state) an update with the user's entries as they are now. The
//! frame is built once, for every subscriber of this server.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::wire::ServerId;

/// An entry: a connection (of some server) tracking itself in the room.
pub(crate) type EntryKey = (ServerId, u64);

/// Entries of one user, by entry, with their states (compact JSON).
type Metas = BTreeMap<EntryKey, Arc<str>>;

/// What a room's subscribers on this server receive, besides events: a presence frame, or a broadcast.
#[derive(Debug)]
pub(crate) struct Signal {
    pub frame: Utf8Bytes,
    /// A broadcast from a connection of this server: it gets its own broadcasts only if it asked to.
    pub from: Option<u64>,
    /// A presence frame: only for subscribers that asked for presence.
    pub presence: bool,
}

#[derive(Default)]
pub(crate) struct Room {
    users: BTreeMap<Arc<str>, Metas>,
    owners: HashMap<EntryKey, Arc<str>>,
    /// This server's subscribers, while it has any.
    pub subscribers: Option<broadcast::Sender<Arc<Signal>>>,
    /// Whether the subscribers were last told a count rather than the list.
    counted: bool,
    /// Users changed since the last announcement, with their entries before the first change.
    touched: BTreeMap<Arc<str>, Metas>,
}

/// The id a client sees for an entry (and for the sender of a broadcast): `<server>-<connection>`.
pub(crate) fn entry_id((server, conn): EntryKey) -> String {
    format!("{server:x}-{conn}")
}

impl Room {
    /// Entry `key` tracks `user` with `state` (a new entry, or a new state).
    pub fn set(&mut self, key: EntryKey, user: &str, state: Arc<str>) {
        if self.owners.get(&key).is_some_and(|owner| &**owner != user) {
            self.remove(key);
        }
        let user: Arc<str> = match self.users.get_key_value(user) {
            Some((u, _)) => u.clone(),
            None => user.into(),
        };
        self.touch(&user);
        self.owners.insert(key, user.clone());
        self.users.entry(user).or_default().insert(key, state);
    }

    /// Entry `key` is gone. Returns whether it was there.
    pub fn remove(&mut self, key: EntryKey) -> bool {
        let Some(user) = self.owners.remove(&key) else { return false };
        self.touch(&user);
        if let Some(metas) = self.users.get_mut(&user) {
            metas.remove(&key);
            if metas.is_empty() {
                self.users.remove(&user);
            }
        }
        true
    }

    /// The entries of `server`.
    pub fn entries_of(&self, server: ServerId) -> impl Iterator<Item = EntryKey> + '_ {
        self.owners.keys().copied().filter(move |(s, _)| *s == server)
    }

    /// This server's own entries, with their users and states.
    pub fn own(&self, server: ServerId) -> impl Iterator<Item = (u64, &str, &str)> + '_ {
        self.users.iter().flat_map(move |(user, metas)| {
            metas
                .iter()
                .filter(move |((s, _), _)| *s == server)
                .map(move |((_, conn), state)| (*conn, &**user, &**state))
        })
    }

    /// A new subscriber of this server, with `capacity` signals buffered for it.
    pub fn subscribe(&mut self, capacity: usize, max_users: usize) -> broadcast::Receiver<Arc<Signal>> {
        match &self.subscribers {
            Some(tx) if tx.receiver_count() > 0 => tx.subscribe(),
            _ => {
                // Nobody was told anything yet: the new subscriber starts from the room as it is.
                self.counted = self.users.len() > max_users;
                let (tx, rx) = broadcast::channel(capacity);
                self.subscribers = Some(tx);
                rx
            }
        }
    }

    /// A subscriber left: with none left, the room stops sending.
    pub fn unsubscribed(&mut self) {
        if self.subscribers.as_ref().is_some_and(|tx| tx.receiver_count() == 0) {
            self.subscribers = None;
        }
    }

    /// Sends a broadcast to this server's subscribers (`from`: the sending connection, if it is one of them).
    pub fn broadcast(&self, frame: Utf8Bytes, from: Option<u64>) {
        if let Some(tx) = &self.subscribers {
            let _ = tx.send(Arc::new(Signal { frame, from, presence: false }));
        }
    }

    fn touch(&mut self, user: &Arc<str>) {
        if !self.touched.contains_key(user) {
            let before = self.users.get(user).cloned().unwrap_or_default();
            self.touched.insert(user.clone(), before);
        }
    }

    /// Whether the room can be forgotten: nobody present, nobody of this server subscribed.
    pub fn is_idle(&self) -> bool {
        self.users.is_empty() && self.subscribers.is_none()
    }

    /// Tells this server's subscribers what changed since the last announcement: a `presence_diff`, or while
    /// more than `max_users` are present, a `presence_state` with the count when it changed.
    pub fn announce(&mut self, room: &str, max_users: usize) {
        let touched = std::mem::take(&mut self.touched);
        let Some(tx) = self.subscribers.as_ref().filter(|tx| tx.receiver_count() > 0) else { return };
        let counted = self.users.len() > max_users;
        let frame = if counted || self.counted {
            // A user who was absent and is present now, or the other way round.
            let count_changed = touched.iter().any(|(u, before)| before.is_empty() == self.users.contains_key(u));
            if counted == self.counted && !count_changed {
                return;
            }
            self.counted = counted;
            self.state_frame(room, max_users)
        } else {
            match diff_frame(room, &touched, &self.users) {
                Some(frame) => frame,
                None => return,
            }
        };
        let _ = tx.send(Arc::new(Signal { frame: frame.into(), from: None, presence: true }));
    }

    /// `presence_state`: who is present (every user with their entries), or, past `max_users`, how many.
    pub fn state_frame(&self, room: &str, max_users: usize) -> String {
        let mut f = format!("{{\"op\":\"presence_state\",\"project\":{}", json(room));
        if self.users.len() > max_users {
            let _ = write!(f, ",\"count\":{}}}", self.users.len());
            return f;
        }
        f.push_str(",\"users\":{");
        for (i, (user, metas)) in self.users.iter().enumerate() {
            if i > 0 {
                f.push(',');
            }
            user_metas(&mut f, user, metas);
        }
        f.push_str("}}");
        f
    }
}

/// `presence_diff` for the users in `touched` (with their entries before), or `None` if none changed.
fn diff_frame(room: &str, touched: &BTreeMap<Arc<str>, Metas>, users: &BTreeMap<Arc<str>, Metas>) -> Option<String> {
    let (mut joins, mut updates, mut leaves) = (String::new(), String::new(), String::new());
    for (user, before) in touched {
        match (before.is_empty(), users.get(user)) {
            (true, None) => {}
            (true, Some(after)) => {
                sep(&mut joins);
                user_metas(&mut joins, user, after);
            }
            (false, None) => {
                sep(&mut leaves);
                leaves.push_str(&json(user));
            }
            (false, Some(after)) if after != before => {
                sep(&mut updates);
                user_metas(&mut updates, user, after);
            }
            (false, Some(_)) => {}
        }
    }
    if joins.is_empty() && updates.is_empty() && leaves.is_empty() {
        return None;
    }
    let mut f = format!("{{\"op\":\"presence_diff\",\"project\":{}", json(room));
    for (name, part, open, close) in
        [("joins", joins, '{', '}'), ("updates", updates, '{', '}'), ("leaves", leaves, '[', ']')]
    {
        if !part.is_empty() {
            let _ = write!(f, ",\"{name}\":{open}{part}{close}");
        }
    }
    f.push('}');
    Some(f)
}

fn sep(s: &mut String) {
    if !s.is_empty() {
        s.push(',');
    }
}

/// `"user":{"metas":[{"id":…,"state":…},…]}`
fn user_metas(f: &mut String, user: &str, metas: &Metas) {
    let _ = write!(f, "{}:{{\"metas\":[", json(user));
    for (i, (key, state)) in metas.iter().enumerate() {
        if i > 0 {
            f.push(',');
        }
        let _ = write!(f, "{{\"id\":\"{}\",\"state\":{state}}}", entry_id(*key));
    }
    f.push_str("]}");
}

fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn subscribed() -> (Room, broadcast::Receiver<Arc<Signal>>) {
        let (tx, rx) = broadcast::channel(16);
        (Room { subscribers: Some(tx), ..Default::default() }, rx)
    }

    fn next(rx: &mut broadcast::Receiver<Arc<Signal>>) -> Option<Value> {
        rx.try_recv().ok().map(|s| serde_json::from_str(&s.frame).unwrap())
    }

    #[test]
    fn a_second_tab_is_an_update_and_closing_it_too_only_the_last_is_a_leave() {
        let (mut room, mut rx) = subscribed();
        let s = |v: Value| Arc::<str>::from(v.to_string());
        room.set((1, 1), "alice", s(json!({"viewing": "task 9"})));
        room.announce("p", 10);
        let alice1 = json!({"id": "1-1", "state": {"viewing": "task 9"}});
        assert_eq!(
            next(&mut rx),
            Some(json!({"op": "presence_diff", "project": "p", "joins": {"alice": {"metas": [alice1]}}}))
        );
        room.set((2, 5), "alice", s(json!({})));
        room.announce("p", 10);
        let alice2 = json!({"id": "2-5", "state": {}});
        let both = json!({"alice": {"metas": [alice1, alice2]}});
        assert_eq!(next(&mut rx), Some(json!({"op": "presence_diff", "project": "p", "updates": both})));
        // The same state again changes nothing.
        room.set((2, 5), "alice", s(json!({})));
        room.announce("p", 10);
        assert_eq!(next(&mut rx), None);
        room.remove((1, 1));
        room.announce("p", 10);
        let one = json!({"alice": {"metas": [alice2]}});
        assert_eq!(next(&mut rx), Some(json!({"op": "presence_diff", "project": "p", "updates": one})));
        room.remove((2, 5));
        room.announce("p", 10);
        assert_eq!(next(&mut rx), Some(json!({"op": "presence_diff", "project": "p", "leaves": ["alice"]})));
        assert!(!room.remove((2, 5)));
    }

    #[test]
    fn past_the_limit_the_room_sends_counts_and_the_list_again_below_it() {
        let (mut room, mut rx) = subscribed();
        for (i, user) in ["a", "b"].into_iter().enumerate() {
            room.set((1, i as u64), user, "{}".into());
        }
        room.announce("p", 2);
        assert_eq!(next(&mut rx).unwrap()["joins"].as_object().unwrap().len(), 2);
        room.set((1, 9), "c", "{}".into());
        room.announce("p", 2);
        assert_eq!(next(&mut rx), Some(json!({"op": "presence_state", "project": "p", "count": 3})));
        // Counted: a state change is not news, another user is.
        room.set((1, 9), "c", "{\"x\":1}".into());
        room.announce("p", 2);
        assert_eq!(next(&mut rx), None);
        room.set((1, 10), "d", "{}".into());
        room.announce("p", 2);
        assert_eq!(next(&mut rx), Some(json!({"op": "presence_state", "project": "p", "count": 4})));
        room.remove((1, 10));
        room.remove((1, 9));
        room.announce("p", 2);
        let state = next(&mut rx).unwrap();
        assert_eq!(state["op"], "presence_state");
        assert_eq!(state["users"].as_object().unwrap().keys().collect::<Vec<_>>(), ["a", "b"]);
    }
}

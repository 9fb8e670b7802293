//! Presence and broadcast: who is in a room, and short-lived signals between its clients ("typing…"), on
//! every server, with nothing but the PostgreSQL we already have.
//!
//! # The design, and why
//!
//! Presence is state that lives exactly as long as the connections that made it, and broadcasts are
//! signals that must not be recorded. Neither belongs in a table, and neither needs the feed's guarantees
//! (seqs, replay). What they need is a bus between the servers and a way to notice a server that died.
//!
//! * **The bus is NOTIFY**, on a channel of its own (`boardcast_signal`), received by the listener's existing
//!   connection (pooled connections drop notifications). A server sends what its clients did (a broadcast, a
//!   track, an untrack) there, and applies what the others sent. Every server keeps every room's presence in
//!   memory (a few hundred bytes per entry), so a join is answered from memory, without a query.
//! * **Batched.** Every transaction that NOTIFYs takes a database-wide lock at commit, shared with every
//!   writer of the feed. So a server sends its messages through one task ([`outbox`]) that gathers them for
//!   up to `BOARDCAST_SIGNAL_LINGER_MS` (5 ms) and sends them as few notifications of up to 7,800 bytes as fit, all in
//!   one statement: thousands of broadcasts a second cost a few commits a second, committed without waiting
//!   for the disk. Clients of the sender's own server get them at once, without the round trip, and a server
//!   that has heard from no other sends its broadcasts to nobody else.
//! * **No table.** Writing each presence change to a table would cost a row write and WAL per change (and a
//!   sweeper to delete dead servers' rows); its only use would be to rebuild the state after a reconnect, and
//!   the servers can do that themselves: a server that missed messages (its listener reconnected, or it just
//!   started) says so (`?`), and every server answers with its full state (`s` … `e`), after which whatever a
//!   server no longer has is gone. A server whose sending connection was down (so that others may have given
//!   it up) sends its full state when it is back.
//! * **A dead server is noticed by its silence.** Every server that has had nothing to say for a quarter of
//!   `BOARDCAST_PRESENCE_TIMEOUT_SECS` (20 s by default) sends a heartbeat, so no live server is ever silent for
//!   half of it; every second, each server drops the entries of any server it has not heard from for the
//!   whole timeout: a `kill -9`ed server's entries are gone within 21 s. One that was only stalled is asked for
//!   its state (`?`) when it is heard again. A server that shuts down properly says so (`x`), and its entries
//!   go at once. While a server's own listener is down it hears nobody, so it drops nobody; when it is back it
//!   gives everyone a full timeout to answer its `?`. A restart of PostgreSQL therefore loses nobody's
//!   presence: every server reconnects, asks, and is answered.
//! * **Order.** One server's messages arrive in the order it sent them (one task sends them, each batch
//!   committed before the next), which is all that applying them needs: no versions, no clocks.
//!
//! What it costs: every server receives every server's messages (as it does the feed's). Broadcasts are at
//! most once: one sent while its server cannot reach the database reaches only that server's clients.
//!
//! * [`wire`] — the messages between servers.
//! * [`room`] — a room's entries, per user, and the frames that announce them.
//! * [`stream`] — a connection's subscription to a room's signals; leaving untracks.
//! * [`outbox`] — the task that batches, sends, heartbeats and drops silent servers.

pub(crate) mod outbox;
mod room;
mod stream;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub(crate) use self::room::entry_id;
use self::room::{EntryKey, Room};
pub(crate) use self::stream::{Options, SignalStream};
use self::wire::{Message, ServerId};

/// Signals a room buffers for a subscriber of this server that is slow to take them. One that falls further
/// behind loses broadcasts (they are signals, not records) and gets the room's presence afresh.
const ROOM_BUFFER: usize = 1024;

/// Messages waiting for the outbox. Past it (the database is unreachable and the outbox cannot keep up),
/// broadcasts are dropped, and presence is sent in full once the outbox can send again.
const OUTBOX_CAPACITY: usize = 65_536;

/// What the outbox sends: a message's line, or this server's full state, taken when its turn comes.
pub(crate) enum Outgoing {
    Line(String),
    Sync,
}

pub(crate) struct Presence {
    server: ServerId,
    /// Past this many users present, a room sends counts instead of the list.
    max_users: usize,
    /// A server not heard from for this long is gone.
    timeout: Duration,
    /// How long the outbox gathers messages after a first one before it sends them.
    linger: Duration,
    state: Mutex<State>,
    outbox: mpsc::Sender<Outgoing>,
    outbox_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Set when a presence message could not be queued: the outbox sends the full state next.
    lost: AtomicBool,
    next_conn: AtomicU64,
    /// Whether the listener is connected: a server that hears nobody drops nobody.
    listening: AtomicBool,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Room>,
    peers: HashMap<ServerId, Peer>,
}

struct Peer {
    heard: Instant,
    /// During the peer's full state (`s` … `e`): its entries not tracked again yet.
    syncing: Option<HashSet<(String, EntryKey)>>,
}

impl Presence {
    pub(crate) fn new(max_users: usize, timeout: Duration, linger: Duration) -> Presence {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        Presence {
            server: rand::random::<u64>() | 1,
            max_users,
            timeout,
            linger,
            state: Mutex::default(),
            outbox: tx,
            outbox_rx: Mutex::new(Some(rx)),
            lost: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            listening: AtomicBool::new(false),
        }
    }

    /// A number for a new connection, unique on this server (with the server's id, everywhere).
    pub(crate) fn connection(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The id clients see for this server's connection `conn`.
    pub(crate) fn id_of(&self, conn: u64) -> String {
        entry_id((self.server, conn))
    }

    /// Subscribes connection `conn` to `room`'s signals. With `options.presence`, also returns the room's
    /// `presence_state`, taken under the same lock: every change after it comes as a diff, none before.
    pub(crate) fn enter(
        self: &Arc<Self>,
        room: &str,
        conn: u64,
        options: Options,
    ) -> (SignalStream, Option<Utf8Bytes>) {
        let mut state = self.state.lock().unwrap();
        let r = state.rooms.entry(room.to_string()).or_default();
        let rx = r.subscribe(ROOM_BUFFER, self.max_users);
        let frame = options.presence.then(|| r.state_frame(room, self.max_users).into());
        (SignalStream::new(self.clone(), room.to_string(), conn, options, rx), frame)
    }

    /// The room's `presence_state` as it is now.
    fn state_frame(&self, room: &str) -> Utf8Bytes {
        let state = self.state.lock().unwrap();
        let frame = match state.rooms.get(room) {
            Some(r) => r.state_frame(room, self.max_users),
            None => Room::default().state_frame(room, self.max_users),
        };
        frame.into()
    }

    /// Connection `conn` of `user` tracks itself in `room` with `state` (compact JSON), or changes its state.
    pub(crate) fn track(&self, room: &str, conn: u64, user: &str, state: &str) {
        let mut s = self.state.lock().unwrap();
        let r = s.rooms.entry(room.to_string()).or_default();
        r.set((self.server, conn), user, state.into());
        r.announce(room, self.max_users);
        self.send(Message::Track { room: room.to_string(), conn, user: user.to_string(), state }, true);
    }

    /// Connection `conn` untracks itself from `room`, if it was tracked.
    pub(crate) fn untrack(&self, room: &str, conn: u64) {
        let mut s = self.state.lock().unwrap();
        let Some(r) = s.rooms.get_mut(room) else { return };
        if r.remove((self.server, conn)) {
            r.announce(room, self.max_users);
            self.send(Message::Untrack { room: room.to_string(), conn }, true);
        }
    }

    /// Connection `conn` left `room` (its subscription was dropped): untracked, and the room forgotten if idle.
    fn exit(&self, room: &str, conn: u64) {
        let mut s = self.state.lock().unwrap();
        let Some(r) = s.rooms.get_mut(room) else { return };
        if r.remove((self.server, conn)) {
            r.announce(room, self.max_users);
            self.send(Message::Untrack { room: room.to_string(), conn }, true);
        }
        r.unsubscribed();
        if r.is_idle() {
            s.rooms.remove(room);
        }
    }

    /// Sends `frame` (a `broadcast` frame from connection `conn`) to the room, on every server. A server that
    /// knows of no other (it has heard from none) sends it to its own clients only: one server alone costs
    /// writers nothing for its broadcasts. (A server that starts asks everyone for their state, so it is
    /// heard of at once.)
    pub(crate) fn broadcast(&self, room: &str, conn: u64, frame: &str) {
        let alone = {
            let s = self.state.lock().unwrap();
            if let Some(r) = s.rooms.get(room) {
                r.broadcast(frame.into(), Some(conn));
            }
            s.peers.is_empty()
        };
        if !alone {
            self.send(Message::Broadcast { room: room.to_string(), frame }, false);
        }
    }

    /// Queues a message for the other servers. A presence message that finds the queue full is not lost: the
    /// full state is sent instead, once the outbox is through.
    fn send(&self, message: Message<'_>, presence: bool) {
        if self.outbox.try_send(Outgoing::Line(wire::line(&message))).is_err() && presence {
            self.lost.store(true, Ordering::Relaxed);
        }
    }

    /// What another server sent (a notification on `boardcast_signal`). This server's own are skipped: it
    /// applied them when it sent them.
    pub(crate) fn receive(&self, payload: &str) {
        let Some((server, messages)) = wire::parse(payload) else {
            tracing::warn!("ignoring a malformed signal notification: {:.80}", payload);
            return;
        };
        if server == self.server {
            return;
        }
        let mut messages = messages.peekable();
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        let stranger = !s.peers.contains_key(&server);
        s.peers.entry(server).or_insert(Peer { heard: now, syncing: None }).heard = now;
        // A server that starts introduces itself (`?`, then its state). One that speaks without doing so is
        // one this server gave up (it was silent for the timeout: stalled, or cut off and back): its entries
        // were dropped, so it is asked for its state.
        if stranger && !matches!(messages.peek(), Some(Message::Hello | Message::SyncStart)) {
            self.send(Message::Hello, true);
        }
        let mut touched: HashSet<String> = HashSet::new();
        for message in messages {
            match message {
                Message::Broadcast { room, frame } => {
                    if let Some(r) = s.rooms.get(&room) {
                        r.broadcast(frame.into(), None);
                    }
                }
                Message::Track { room, conn, user, state } => {
                    let key = (server, conn);
                    if let Some(syncing) = s.peers.get_mut(&server).and_then(|p| p.syncing.as_mut()) {
                        syncing.remove(&(room.clone(), key));
                    }
                    s.rooms.entry(room.clone()).or_default().set(key, &user, state.into());
                    touched.insert(room);
                }
                Message::Untrack { room, conn } => {
                    if let Some(r) = s.rooms.get_mut(&room)
                        && r.remove((server, conn))
                    {
                        touched.insert(room);
                    }
                }
                Message::Heartbeat => {}
                Message::SyncStart => {
                    let entries: HashSet<(String, EntryKey)> = s
                        .rooms
                        .iter()
                        .flat_map(|(room, r)| r.entries_of(server).map(move |key| (room.clone(), key)))
                        .collect();
                    s.peers.get_mut(&server).unwrap().syncing = Some(entries);
                }
                Message::SyncEnd => {
                    let gone = s.peers.get_mut(&server).unwrap().syncing.take().unwrap_or_default();
                    for (room, key) in gone {
                        if let Some(r) = s.rooms.get_mut(&room) {
                            r.remove(key);
                            touched.insert(room);
                        }
                    }
                }
                Message::Hello => {
                    if self.outbox.try_send(Outgoing::Sync).is_err() {
                        self.lost.store(true, Ordering::Relaxed);
                    }
                }
                Message::Bye => {
                    s.peers.remove(&server);
                    touched.extend(drop_entries(&mut s, server));
                }
            }
        }
        self.announce(&mut s, touched);
    }

    /// Tells the subscribers of the rooms in `touched` what changed, and forgets the rooms nobody needs.
    fn announce(&self, s: &mut State, touched: HashSet<String>) {
        for room in touched {
            if let Some(r) = s.rooms.get_mut(&room) {
                r.announce(&room, self.max_users);
                if r.is_idle() {
                    s.rooms.remove(&room);
                }
            }
        }
    }

    /// The listener is connected (again): it may have missed messages, so it asks every server for its full
    /// state, and gives every server a full timeout to answer before giving it up. It sends its own too: a
    /// server that asked for it meanwhile (it had given this one up) was not heard.
    pub(crate) fn reconnected(&self) {
        {
            let mut s = self.state.lock().unwrap();
            let now = Instant::now();
            for peer in s.peers.values_mut() {
                peer.heard = now;
            }
        }
        self.listening.store(true, Ordering::SeqCst);
        self.send(Message::Hello, true);
        if self.outbox.try_send(Outgoing::Sync).is_err() {
            self.lost.store(true, Ordering::Relaxed);
        }
    }

    /// The listener lost its connection: until it is back, this server hears nobody, so it gives nobody up.
    pub(crate) fn disconnected(&self) {
        self.listening.store(false, Ordering::SeqCst);
    }

    /// Drops the entries of every server not heard from within the timeout.
    pub(crate) fn drop_silent(&self) {
        if !self.listening.load(Ordering::SeqCst) {
            return;
        }
        let mut s = self.state.lock().unwrap();
        let silent: Vec<ServerId> =
            s.peers.iter().filter(|(_, p)| p.heard.elapsed() > self.timeout).map(|(id, _)| *id).collect();
        let mut touched = HashSet::new();
        for server in silent {
            tracing::warn!(
                "presence: nothing heard from server {server:x} for {:?}: its entries are gone",
                self.timeout
            );
            s.peers.remove(&server);
            touched.extend(drop_entries(&mut s, server));
        }
        self.announce(&mut s, touched);
    }

    /// This server's full state, as the lines of a sync (`s`, a `t` per entry, `e`).
    fn sync_lines(&self) -> Vec<String> {
        self.lost.store(false, Ordering::Relaxed);
        let s = self.state.lock().unwrap();
        let mut lines = vec![wire::line(&Message::SyncStart)];
        for (room, r) in &s.rooms {
            for (conn, user, state) in r.own(self.server) {
                let m = Message::Track { room: room.clone(), conn, user: user.to_string(), state };
                lines.push(wire::line(&m));
            }
        }
        lines.push(wire::line(&Message::SyncEnd));
        lines
    }
}

/// Removes `server`'s entries from every room; returns the rooms that had some.
fn drop_entries(s: &mut State, server: ServerId) -> Vec<String> {
    let mut touched = Vec::new();
    for (room, r) in s.rooms.iter_mut() {
        let keys: Vec<EntryKey> = r.entries_of(server).collect();
        if !keys.is_empty() {
            keys.into_iter().for_each(|k| {
                r.remove(k);
            });
            touched.push(room.clone());
        }
    }
    touched
}

/// The `broadcast` frame a room's clients receive: built once, by the sender's server.
pub(crate) fn broadcast_frame(room: &str, event: &str, payload: &str, user: &str, id: &str) -> String {
    let s = |v: &str| serde_json::to_string(v).expect("a string serializes");
    format!(
        "{{\"op\":\"broadcast\",\"project\":{},\"event\":{},\"payload\":{payload},\"from\":{{\"user\":{},\"id\":{}}}}}",
        s(room),
        s(event),
        s(user),
        s(id)
    )
}

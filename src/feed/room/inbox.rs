//! A room as its registry, its task and its subscribers share it, and its inbox: what the listener announced
//! and the room's task has yet to broadcast.
//!
//! The listener never waits on a room: it records what was announced in the inbox and wakes the task, so one
//! project's 100,000-row transaction does not hold up another project's events.

use crate::feed::room_key::RoomKey;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::broadcast::Broadcast;
use crate::feed::event::Event;

/// Inline events a room holds before its task takes them. Past this the oldest are dropped and the task reads
/// them from history instead, so a burst cannot grow memory without bound.
const MAX_PENDING: usize = 8192;

/// The rooms of this process, by project.
pub(super) type RoomMap = Mutex<HashMap<RoomKey, Arc<Room>>>;

pub(super) struct Room {
    pub project: RoomKey,
    pub messages: Broadcast,
    /// How many times this room found the database's history rewound (see `RoomMessage::Rewound`).
    pub rewinds: Arc<AtomicU64>,
    inbox: Mutex<Inbox>,
    /// Notify keeps one permit, so a wake-up sent while the task is busy is not lost.
    pub wake: Notify,
    /// Who the subscribers are, with how many subscriptions each (tabs, connections): whom the room asks the
    /// join rule about when access may have changed.
    pub subjects: Mutex<HashMap<String, usize>>,
}

#[derive(Default)]
struct Inbox {
    /// The highest seq known to be committed.
    announced: i64,
    /// Events that arrived with their announcement, in seq order.
    pending: VecDeque<Event>,
    /// The latest seq the listener read from the database after (re)connecting, or a seq announced twice: the
    /// room checks that the database's history still continues what it broadcast (it does not after a
    /// restore from a backup).
    check: Option<i64>,
    /// Access may have changed: ask the join rule about every subscriber again.
    recheck: bool,
    closed: bool,
}

/// What the room's task does next.
pub(super) enum Step {
    Idle,
    Closed,
    Check { latest: i64 },
    Recheck,
    Broadcast(Vec<Event>),
    Read { upto: i64 },
}

impl Room {
    pub fn new(project: RoomKey, buffer: usize) -> Arc<Room> {
        let room = Room {
            project,
            messages: Broadcast::new(buffer),
            rewinds: Arc::default(),
            inbox: Mutex::default(),
            wake: Notify::new(),
            subjects: Mutex::default(),
        };
        Arc::new(room)
    }

    /// Seqs `first..=last` were committed; `events` are those whose frames came with the announcement.
    pub fn announce(&self, first: i64, last: i64, events: Vec<Event>) {
        {
            // Commits are announced in seq order, so an announcement at or below one already seen is either
            // the listener's catch-up read overtaking a notification just after a reconnect, or a history that
            // started again lower (the feed was reset, the database restored, while the listener stayed
            // connected). The room checks which before it broadcasts anything more.
            let mut inbox = self.inbox.lock().unwrap();
            if first <= inbox.announced {
                inbox.check.get_or_insert(last);
            }
        }
        self.push(last, events);
    }

    /// The latest committed seq, as read from the database (after the listener reconnects).
    pub fn announce_latest(&self, latest: i64) {
        self.inbox.lock().unwrap().check = Some(latest);
        self.push(latest, Vec::new());
    }

    /// Seqs up to `last` were committed.
    pub fn push(&self, last: i64, events: Vec<Event>) {
        {
            let mut inbox = self.inbox.lock().unwrap();
            inbox.announced = inbox.announced.max(last);
            for e in events {
                if inbox.pending.len() == MAX_PENDING {
                    inbox.pending.pop_front();
                }
                inbox.pending.push_back(e);
            }
        }
        self.wake.notify_one();
    }

    /// The history the room broadcast was rewound: forget what the inbox holds (it may be from the old
    /// history) and start over from `latest`.
    pub fn restart_at(&self, latest: i64) {
        let mut inbox = self.inbox.lock().unwrap();
        inbox.announced = latest;
        inbox.pending.clear();
    }

    /// Access to the room may have changed: the task asks the join rule about its subscribers again.
    pub fn recheck(&self) {
        self.inbox.lock().unwrap().recheck = true;
        self.wake.notify_one();
    }

    /// Who is subscribed now.
    pub fn subjects(&self) -> Vec<String> {
        self.subjects.lock().unwrap().keys().cloned().collect()
    }

    /// A check that could not be done now: do it again.
    pub fn check_later(&self, latest: i64) {
        self.inbox.lock().unwrap().check.get_or_insert(latest);
    }

    /// The last subscriber left: the room's task ends.
    pub fn close(&self) {
        self.inbox.lock().unwrap().closed = true;
        self.wake.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.inbox.lock().unwrap().closed
    }

    /// What to do next, for a task that has broadcast every event up to `delivered`.
    pub fn next_step(&self, delivered: i64) -> Step {
        let mut inbox = self.inbox.lock().unwrap();
        while inbox.pending.front().is_some_and(|e| e.seq <= delivered) {
            inbox.pending.pop_front();
        }
        if inbox.closed {
            Step::Closed
        } else if let Some(latest) = inbox.check.take() {
            Step::Check { latest }
        } else if std::mem::take(&mut inbox.recheck) {
            Step::Recheck
        } else if inbox.announced <= delivered {
            Step::Idle
        } else if inbox.pending.front().is_some_and(|e| e.seq == delivered + 1) {
            let mut batch = Vec::new();
            while inbox.pending.front().is_some_and(|e| e.seq == delivered + 1 + batch.len() as i64) {
                batch.extend(inbox.pending.pop_front());
            }
            Step::Broadcast(batch)
        } else {
            let upto = inbox.pending.front().map(|e| e.seq - 1).unwrap_or(inbox.announced);
            Step::Read { upto }
        }
    }
}

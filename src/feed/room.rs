//! Rooms: the WebSocket clients of this process that joined a project.
//!
//! A room exists while it has subscribers; it is created by the first join and removed when the last
//! subscriber leaves. Each room has one task that turns announcements from the listener into a broadcast of
//! events in seq order, reading from history whatever the announcement did not carry (a large change, a
//! range missed while the listener was reconnecting). The listener never waits on a room: it records what was
//! announced in the room's inbox and wakes the task, so one project's 100,000-row transaction does not hold
//! up another project's events.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use super::event::{Announcement, Event, inline_events};
use super::history::History;
use crate::config::FeedSettings;

/// Inline events a room holds before its task takes them. Past this the oldest are dropped and the task reads
/// them from history instead, so a burst cannot grow memory without bound.
const MAX_PENDING: usize = 8192;

pub struct Rooms {
    map: Mutex<HashMap<Uuid, Arc<Room>>>,
    history: Arc<History>,
    settings: FeedSettings,
}

struct Room {
    project: Uuid,
    events: broadcast::Sender<Arc<Event>>,
    inbox: Mutex<Inbox>,
    wake: Notify,
}

#[derive(Default)]
struct Inbox {
    /// The highest seq known to be committed.
    announced: i64,
    /// Events that arrived with their announcement, in seq order.
    pending: VecDeque<Arc<Event>>,
    closed: bool,
}

impl Rooms {
    pub fn new(history: Arc<History>, settings: FeedSettings) -> Rooms {
        Rooms { map: Mutex::new(HashMap::new()), history, settings }
    }

    /// Subscribes to a project's events, creating its room if this is the first subscriber. Events are
    /// received from the moment of this call; the caller decides where its client starts and fills the rest
    /// from history.
    pub fn subscribe(&self, project: Uuid) -> broadcast::Receiver<Arc<Event>> {
        let mut map = self.map.lock().unwrap();
        if let Some(room) = map.get(&project) {
            return room.events.subscribe();
        }
        let (events, rx) = broadcast::channel(self.settings.room_buffer);
        let room = Arc::new(Room { project, events, inbox: Mutex::default(), wake: Notify::new() });
        map.insert(project, room.clone());
        tokio::spawn(run(room, self.history.clone(), self.settings.history_page));
        rx
    }

    /// To be called after a subscriber dropped its receiver: removes the room if nobody is left in it.
    pub fn release(&self, project: Uuid) {
        let mut map = self.map.lock().unwrap();
        if let Some(room) = map.get(&project)
            && room.events.receiver_count() == 0
        {
            let room = map.remove(&project).unwrap();
            room.inbox.lock().unwrap().closed = true;
            room.wake.notify_one();
        }
    }

    /// Hands an announcement from the listener to its room. Projects without a room here are ignored, and
    /// their frames are not even parsed.
    pub fn announce(&self, a: &Announcement<'_>) {
        let Some(room) = self.map.lock().unwrap().get(&a.project).cloned() else { return };
        let events = inline_events(a).unwrap_or_default();
        room.push(a.last, events);
    }

    /// Tells a room the latest committed seq, as read from the database (after the listener reconnects).
    pub fn announce_latest(&self, project: Uuid, latest: i64) {
        if let Some(room) = self.map.lock().unwrap().get(&project).cloned() {
            room.push(latest, Vec::new());
        }
    }

    pub fn projects(&self) -> Vec<Uuid> {
        self.map.lock().unwrap().keys().copied().collect()
    }

    /// Subscribers of a project's room in this process (0 if it has no room).
    pub fn subscribers(&self, project: Uuid) -> usize {
        self.map.lock().unwrap().get(&project).map(|r| r.events.receiver_count()).unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Room {
    fn push(&self, last: i64, events: Vec<Event>) {
        {
            let mut inbox = self.inbox.lock().unwrap();
            inbox.announced = inbox.announced.max(last);
            for e in events {
                if inbox.pending.len() == MAX_PENDING {
                    inbox.pending.pop_front();
                }
                inbox.pending.push_back(Arc::new(e));
            }
        }
        // Notify keeps one permit, so a wake-up sent while the task is busy is not lost.
        self.wake.notify_one();
    }
}

enum Step {
    Idle,
    Closed,
    Broadcast(Vec<Arc<Event>>),
    Read { upto: i64 },
}

/// The room's task: broadcasts every event after the one that was latest when the room was created, once
/// and in seq order.
async fn run(room: Arc<Room>, history: Arc<History>, page: i64) {
    // Subscribers start from their own join point and fill anything before this from history themselves.
    let mut delivered = loop {
        match history.latest(&[room.project]).await {
            Ok(v) => {
                let latest = v.first().map(|x| x.1).unwrap_or(0);
                // Subscribers that joined before this read may have cursors below it: tell them where the
                // broadcast starts, so they read the difference from history now rather than at the next event.
                let _ = room.events.send(Arc::new(Event::watermark(room.project, latest)));
                break latest;
            }
            Err(e) => {
                tracing::warn!(project = %room.project, "room cannot read its latest seq: {e}");
                if room.inbox.lock().unwrap().closed {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    loop {
        let step = {
            let mut inbox = room.inbox.lock().unwrap();
            while inbox.pending.front().is_some_and(|e| e.seq <= delivered) {
                inbox.pending.pop_front();
            }
            if inbox.closed {
                Step::Closed
            } else if inbox.announced <= delivered {
                Step::Idle
            } else if inbox.pending.front().is_some_and(|e| e.seq == delivered + 1) {
                let mut batch = Vec::new();
                while let Some(e) = inbox.pending.front().filter(|e| e.seq == delivered + 1 + batch.len() as i64) {
                    batch.push(e.clone());
                    inbox.pending.pop_front();
                }
                Step::Broadcast(batch)
            } else {
                let upto = inbox.pending.front().map(|e| e.seq - 1).unwrap_or(inbox.announced);
                Step::Read { upto }
            }
        };
        match step {
            Step::Closed => return,
            Step::Idle => room.wake.notified().await,
            Step::Broadcast(batch) => {
                for e in batch {
                    delivered = e.seq;
                    let _ = room.events.send(e);
                }
            }
            Step::Read { upto } => match history.read(room.project, delivered, upto, page).await {
                Ok(events) if !events.is_empty() => {
                    for e in events {
                        delivered = e.seq;
                        let _ = room.events.send(e);
                    }
                    // Let subscribers drain between pages of a large change.
                    tokio::task::yield_now().await;
                }
                Ok(_) => {
                    // Announced but not recorded: only possible if retention removed it already.
                    tracing::warn!(project = %room.project, "seqs {}..={upto} are not in history", delivered + 1);
                    delivered = upto;
                    let _ = room.events.send(Arc::new(Event::watermark(room.project, upto)));
                }
                Err(e) => {
                    tracing::warn!(project = %room.project, "room cannot read history: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
}

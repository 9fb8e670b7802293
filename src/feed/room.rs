//! Rooms: the WebSocket clients of this process that joined a project.
//!
//! A room exists while it has subscribers; it is created by the first join and removed when the last
//! subscriber leaves. Each room has one task that turns announcements from the listener into a broadcast of
//! events in seq order, reading from history whatever the announcement did not carry (a large change, a
//! range missed while the listener was reconnecting). The listener never waits on a room: it records what was
//! announced in the room's inbox and wakes the task, so one project's 100,000-row transaction does not hold
//! up another project's events.
//!
//! Memory. The broadcast buffer holds the last `room_buffer` events for subscribers that are behind, and an
//! event stays in it until every subscriber has taken it. Counted in events, that is no bound in bytes: a
//! client that stops reading during a bulk update of 100 KB descriptions would pin hundreds of megabytes until
//! its send timeout. So a large frame is not put in the buffer itself: the room holds it and the buffer
//! carries a weak reference. The room lets go of a frame once every subscriber has taken its event. While the
//! large frames held by all rooms together exceed `held_frames_budget`, a room reads no more history until its
//! subscribers have taken what it holds (so it never runs ahead of the ones that keep up), and a room whose
//! slowest subscriber has taken nothing for half a second lets go of its oldest frames: that subscriber,
//! finding its frame gone, reads the event from history, as it would after lagging. Each room may be over the
//! budget by the page of history it sent last.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{Notify, broadcast};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::event::{Announcement, Event, inline_events};
use super::history::{History, PAGE_BYTES, Reader};
use crate::config::FeedSettings;

/// Inline events a room holds before its task takes them. Past this the oldest are dropped and the task reads
/// them from history instead, so a burst cannot grow memory without bound.
const MAX_PENDING: usize = 8192;

/// Frames at least this large are held by the room, not by its broadcast buffer (see the module's doc), so
/// the buffer holds at most `room_buffer` × 4 KiB of frames. Notifications carry frames of at most 3,900 bytes
/// inline, so these come from history reads.
pub const LARGE_FRAME: usize = 4 * 1024;

pub struct Rooms {
    map: Mutex<HashMap<Uuid, Arc<Room>>>,
    history: Arc<History>,
    settings: FeedSettings,
    /// Bytes of large frames held by all rooms.
    held_bytes: Arc<AtomicUsize>,
}

struct Room {
    project: Uuid,
    events: broadcast::Sender<Arc<Event>>,
    /// How many times this room found the database's history rewound (see `Event::rewound`).
    rewinds: Arc<AtomicU64>,
    inbox: Mutex<Inbox>,
    wake: Notify,
}

#[derive(Default)]
struct Inbox {
    /// The highest seq known to be committed.
    announced: i64,
    /// Events that arrived with their announcement, in seq order.
    pending: VecDeque<Arc<Event>>,
    /// The latest seq the listener read from the database after (re)connecting: the room checks that the
    /// database's history still continues what it broadcast (it does not after a restore from a backup).
    check: Option<i64>,
    closed: bool,
}

/// A subscriber's place in a room: the room's broadcast, and a way to learn whether the room found history
/// rewound since the subscription began. The `rewound` marker travels in the broadcast, but a subscriber that
/// lagged behind the buffer never sees the events it skipped, the marker included; it must not then catch up
/// from a history that no longer continues what it was sent.
pub struct Subscription {
    pub events: broadcast::Receiver<Arc<Event>>,
    pub rewinds: RewindWatch,
}

pub struct RewindWatch {
    count: Arc<AtomicU64>,
    at_start: u64,
}

impl RewindWatch {
    pub fn rewound_since_start(&self) -> bool {
        self.count.load(Ordering::Acquire) != self.at_start
    }
}

impl Rooms {
    pub fn new(history: Arc<History>, settings: FeedSettings) -> Rooms {
        Rooms { map: Mutex::new(HashMap::new()), history, settings, held_bytes: Arc::default() }
    }

    /// Subscribes to a project's events, creating its room if this is the first subscriber. Events are
    /// received from the moment of this call; the caller decides where its client starts and fills the rest
    /// from history.
    pub fn subscribe(&self, project: Uuid) -> Subscription {
        let mut map = self.map.lock().unwrap();
        if let Some(room) = map.get(&project) {
            return room.subscription(room.events.subscribe());
        }
        let (events, rx) = broadcast::channel(self.settings.room_buffer);
        let room =
            Arc::new(Room { project, events, rewinds: Arc::default(), inbox: Mutex::default(), wake: Notify::new() });
        map.insert(project, room.clone());
        let subscription = room.subscription(rx);
        let held = Held::new(self.held_bytes.clone(), self.settings.held_frames_budget);
        tokio::spawn(run(room, self.history.clone(), self.settings.history_page, held));
        subscription
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
        {
            // Commits are announced in seq order, so an announcement at or below one already seen is either
            // the listener's catch-up read overtaking a notification just after a reconnect, or a history that
            // started again lower (the feed was reset, the database restored, while the listener stayed
            // connected). The room checks which before it broadcasts anything more.
            let mut inbox = room.inbox.lock().unwrap();
            if a.first <= inbox.announced {
                inbox.check.get_or_insert(a.last);
            }
        }
        room.push(a.last, events);
    }

    /// Tells a room the latest committed seq, as read from the database (after the listener reconnects).
    pub fn announce_latest(&self, project: Uuid, latest: i64) {
        if let Some(room) = self.map.lock().unwrap().get(&project).cloned() {
            room.inbox.lock().unwrap().check = Some(latest);
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

    /// Bytes of large frames the rooms hold for subscribers that have not taken them yet.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Room {
    fn subscription(&self, events: broadcast::Receiver<Arc<Event>>) -> Subscription {
        let count = self.rewinds.clone();
        let at_start = count.load(Ordering::Acquire);
        Subscription { events, rewinds: RewindWatch { count, at_start } }
    }

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

/// A room's large frames, by the index of the broadcast send that carried them.
struct Held {
    frames: VecDeque<(u64, Arc<Utf8Bytes>)>,
    bytes: usize,
    /// Sends into the broadcast so far (the index of the next one).
    sent: u64,
    total: Arc<AtomicUsize>,
    budget: usize,
    /// The first send some subscriber had yet to take, at the previous `release`, and since when it has not
    /// moved (the slowest subscriber is stalled).
    taken_before: u64,
    stalled_since: Instant,
    /// The seq and frame of the last event sent, to recognise a rewound history.
    last_sent: Option<(i64, Fingerprint)>,
}

/// A room whose slowest subscriber has taken nothing for this long, while all rooms are over the budget,
/// lets go of its oldest large frames: that subscriber will read them from history.
const STALLED: Duration = Duration::from_millis(500);

impl Held {
    fn new(total: Arc<AtomicUsize>, budget: usize) -> Held {
        Held {
            frames: VecDeque::new(),
            bytes: 0,
            sent: 0,
            total,
            budget,
            taken_before: 0,
            stalled_since: Instant::now(),
            last_sent: None,
        }
    }

    fn over_budget(&self) -> bool {
        self.total.load(Ordering::Relaxed) > self.budget
    }

    /// Broadcasts an event; a large frame is held here and the buffer gets a weak reference to it.
    fn send(&mut self, events: &broadcast::Sender<Arc<Event>>, event: Arc<Event>) {
        if !event.watermark && !event.rewound && event.held.is_none() {
            self.last_sent = Some((event.seq, Fingerprint::of(&event.frame)));
        }
        if event.held.is_some() || event.frame.len() < LARGE_FRAME {
            if events.send(event).is_ok() {
                self.sent += 1;
            }
            return;
        }
        let frame = Arc::new(event.frame.clone());
        if events.send(Arc::new(event.holding(&frame))).is_ok() {
            self.bytes += frame.len();
            self.total.fetch_add(frame.len(), Ordering::Relaxed);
            self.frames.push_back((self.sent, frame));
            self.sent += 1;
        }
    }

    /// Lets go of the frames every subscriber has taken, and, while all rooms together are over the budget and
    /// this room's slowest subscriber is stalled, of the oldest ones (keeping the newest).
    fn release(&mut self, events: &broadcast::Sender<Arc<Event>>) {
        // `len` counts the events some subscriber has yet to take; they are the latest sends.
        let first_queued = self.sent.saturating_sub(events.len() as u64);
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
    async fn make_room(&mut self, events: &broadcast::Sender<Arc<Event>>) {
        loop {
            self.release(events);
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

enum Step {
    Idle,
    Closed,
    Check { latest: i64 },
    Broadcast(Vec<Arc<Event>>),
    Read { upto: i64 },
}

/// The room's task: broadcasts every event after the one that was latest when the room was created, once
/// and in seq order.
async fn run(room: Arc<Room>, history: Arc<History>, page: i64, mut held: Held) {
    // Subscribers start from their own join point and fill anything before this from history themselves.
    let mut delivered = loop {
        match history.latest_event(Reader::Room, room.project).await {
            Ok(event) => {
                let latest = event.as_ref().map_or(0, |e| e.seq);
                // Subscribers that joined before this read may have cursors below it: tell them where the
                // broadcast starts, so they read the difference from history now rather than at the next event.
                held.send(&room.events, Arc::new(Event::watermark(room.project, latest)));
                // Remember the event the room starts after, as if it had sent it: a restore noticed before the
                // room sends anything is then noticed even if the new history has reached this seq again.
                held.last_sent = event.map(|e| (e.seq, Fingerprint::of(&e.frame)));
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
            } else if let Some(latest) = inbox.check.take() {
                Step::Check { latest }
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
            Step::Check { latest } => {
                match rewound(&history, room.project, delivered, latest, held.last_sent.clone()).await {
                    Some(false) => {}
                    Some(true) => {
                        tracing::warn!(
                            project = %room.project,
                            "the database's history no longer continues the feed this room sent (seq {delivered}, \
                             now {latest}): was it restored? Every subscriber is told to resync"
                        );
                        // What the inbox holds may be from the old history: start over from `latest`...
                        {
                            let mut inbox = room.inbox.lock().unwrap();
                            inbox.announced = latest;
                            inbox.pending.clear();
                        }
                        delivered = latest;
                        // What the room sent last belongs to the old history: compare with the new one's from now.
                        held.last_sent = recorded(&history, room.project, latest).await;
                        // Counted before the marker is sent: a subscriber that lags past the marker sees the count.
                        room.rewinds.fetch_add(1, Ordering::Release);
                        held.send(&room.events, Arc::new(Event::rewound(room.project, latest)));
                        // ...and ask again how far the project has got: events committed since the listener's
                        // read were announced into what was just cleared. Later ones arrive as usual.
                        match history.latest(Reader::Room, &[room.project]).await {
                            Ok(v) => room.push(v.first().map_or(latest, |x| x.1), Vec::new()),
                            Err(e) => tracing::warn!(project = %room.project, "room cannot read its latest seq: {e}"),
                        }
                    }
                    None => {
                        room.inbox.lock().unwrap().check.get_or_insert(latest);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            Step::Idle if held.frames.is_empty() => room.wake.notified().await,
            Step::Idle => {
                // Large frames are held: look again soon whether the subscribers have taken them.
                tokio::select! {
                    _ = room.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                held.release(&room.events);
            }
            Step::Broadcast(batch) => {
                for e in batch {
                    delivered = e.seq;
                    held.send(&room.events, e);
                }
            }
            Step::Read { upto } => {
                held.make_room(&room.events).await;
                read(&room, &history, &mut held, &mut delivered, upto, page).await;
            }
        }
    }
}

/// Whether the database's history of `project` no longer continues what the room sent: its latest seq is
/// below the room's, or the last event the room sent is recorded differently now. (A missing event alone
/// proves nothing: retention by age may have removed it.) `None`: history could not be read.
async fn rewound(
    history: &History,
    project: Uuid,
    delivered: i64,
    latest: i64,
    last_sent: Option<(i64, Fingerprint)>,
) -> Option<bool> {
    if latest < delivered {
        // `latest` was read when the listener reconnected; a room that started after that read may have
        // read a later one itself. Only a fresh read below what the room sent is a rewind.
        match history.latest(Reader::Room, &[project]).await {
            Ok(v) if v.first().map_or(0, |x| x.1) < delivered => return Some(true),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%project, "room cannot read its latest seq to check it: {e}");
                return None;
            }
        }
    }
    let Some((seq, sent)) = last_sent else { return Some(false) };
    match recorded_event(history, project, seq).await {
        Ok(event) => Some(event.is_some_and(|e| !sent.matches(&e.frame))),
        Err(e) => {
            tracing::warn!(%project, "room cannot read history to check it: {e}");
            None
        }
    }
}

/// Event `seq` of `project` as history records it now (`None` if it does not, or for seq 0).
async fn recorded_event(history: &History, project: Uuid, seq: i64) -> crate::error::Result<Option<Arc<Event>>> {
    if seq <= 0 {
        return Ok(None);
    }
    let events = history.read(Reader::Room, project, seq - 1, seq, 1, PAGE_BYTES).await?;
    Ok(events.into_iter().next().filter(|e| e.seq == seq))
}

/// The same, fingerprinted, to compare with later (`None` also if it cannot be read: then there is simply less
/// to compare with).
async fn recorded(history: &History, project: Uuid, seq: i64) -> Option<(i64, Fingerprint)> {
    let event = recorded_event(history, project, seq).await.ok()??;
    Some((seq, Fingerprint::of(&event.frame)))
}

/// What a room remembers of the last frame it sent: a small frame itself (another reference to the same bytes,
/// nothing copied), a large one only by hash, so that no room keeps a large frame alive for this.
#[derive(Clone)]
enum Fingerprint {
    Frame(Utf8Bytes),
    Hash(u64),
}

impl Fingerprint {
    fn of(frame: &Utf8Bytes) -> Fingerprint {
        if frame.len() < LARGE_FRAME { Fingerprint::Frame(frame.clone()) } else { Fingerprint::Hash(hash(frame)) }
    }

    fn matches(&self, frame: &Utf8Bytes) -> bool {
        match self {
            Fingerprint::Frame(f) => f == frame,
            Fingerprint::Hash(h) => *h == hash(frame),
        }
    }
}

fn hash(frame: &Utf8Bytes) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    frame.as_str().hash(&mut h);
    h.finish()
}

/// One page of history, broadcast; on failure, a pause before the room's loop tries again.
async fn read(room: &Room, history: &History, held: &mut Held, delivered: &mut i64, upto: i64, page: i64) {
    match history.read(Reader::Room, room.project, *delivered, upto, page, PAGE_BYTES).await {
        Ok(events) if !events.is_empty() => {
            for e in events {
                *delivered = e.seq;
                held.send(&room.events, e);
            }
            // Let subscribers drain between pages of a large change.
            tokio::task::yield_now().await;
        }
        Ok(_) => {
            // Announced but not recorded: only possible if retention removed it already.
            tracing::warn!(project = %room.project, "seqs {}..={upto} are not in history", *delivered + 1);
            *delivered = upto;
            held.send(&room.events, Arc::new(Event::watermark(room.project, upto)));
        }
        Err(e) => {
            tracing::warn!(project = %room.project, "room cannot read history: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

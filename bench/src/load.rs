//! The load: WebSocket clients that join rooms and check what they receive, and SQL writers that insert
//! tasks at an offered rate (open loop) or as fast as they can (closed loop).
//!
//! Latency is commit-to-client. Each write's title carries an id (`bcb#<id>#`); the writer stores the instant
//! its INSERT was acknowledged (the commit) under that id, and a client that receives the event looks the id
//! up and records receipt minus commit. Both clocks are this process's monotonic clock. A client that
//! receives an event before its writer has seen the acknowledgement (possible: the NOTIFY and the reply
//! leave PostgreSQL at the same moment) parks it, and it is resolved when the run ends.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::Semaphore;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::hist::Histogram;
use crate::pg::pg_connect;
use crate::ws::{self, Conn, OP_CLOSE, OP_PING, OP_TEXT};

/// A write id whose latency is not measured (warm-up).
const EXCLUDED: u64 = u64::MAX;
pub const MARKER: &[u8] = b"bcb#";

/// What writers and clients share.
pub struct Shared {
    pub base: Instant,
    /// Per write id: nanoseconds since `base` when the INSERT was acknowledged; 0 = not yet.
    commits: Vec<AtomicU64>,
    /// Per write id: when it was due to be sent (open loop) or sent (closed loop).
    sends: Vec<AtomicU64>,
    pub latency: Histogram,
    /// Latency again, by span of write ids (the abuse scenario's phases): a receipt counts in the span that
    /// holds its write's id, if any.
    pub spans: Vec<(Range<u64>, Histogram)>,
    /// Receipt minus the send: an upper bound that includes the INSERT's own execution and commit.
    pub from_send: Histogram,
    pending: Mutex<Vec<(u64, u64)>>,
    pub deliveries: AtomicU64,
    pub first_recv: AtomicU64,
    pub last_recv: AtomicU64,
    /// Receipt (this machine's wall clock) minus the event's `at` (the database's clock at the statement): the
    /// latency load-generator children can measure without the writers' commit instants, which live in
    /// another process. Recorded only by fleets with `FleetSpec::wall_clock`.
    pub statement_to_client: Histogram,
}

impl Shared {
    pub fn new(capacity: usize) -> Arc<Shared> {
        Shared::with_spans(capacity, Vec::new())
    }

    /// Latency is also recorded by span of write ids (`Shared::spans`).
    pub fn with_spans(capacity: usize, spans: Vec<Range<u64>>) -> Arc<Shared> {
        Arc::new(Shared {
            base: Instant::now(),
            commits: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            sends: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::new(),
            spans: spans.into_iter().map(|r| (r, Histogram::new())).collect(),
            from_send: Histogram::new(),
            pending: Mutex::new(Vec::new()),
            deliveries: AtomicU64::new(0),
            first_recv: AtomicU64::new(u64::MAX),
            last_recv: AtomicU64::new(0),
            statement_to_client: Histogram::new(),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn commit(&self, id: u64, at: u64) {
        if let Some(c) = self.commits.get(id as usize) {
            c.store(at.max(1), Ordering::Release);
        }
    }

    fn sent(&self, id: u64, at: u64) {
        if let Some(c) = self.sends.get(id as usize) {
            c.store(at, Ordering::Release);
        }
    }

    fn exclude(&self, id: u64) {
        if let Some(c) = self.commits.get(id as usize) {
            c.store(EXCLUDED, Ordering::Release);
        }
    }

    /// Whether write `id` committed inside the measured window.
    pub fn committed(&self, id: u64) -> bool {
        self.commits.get(id as usize).is_some_and(|c| !matches!(c.load(Ordering::Acquire), 0 | EXCLUDED))
    }

    fn received(&self, id: u64, at: u64) {
        let Some(c) = self.commits.get(id as usize) else { return };
        match c.load(Ordering::Acquire) {
            EXCLUDED => {}
            0 => self.pending.lock().unwrap().push((id, at)),
            commit => self.record(id, commit, at),
        }
    }

    fn record(&self, id: u64, commit: u64, at: u64) {
        let us = at.saturating_sub(commit) / 1000;
        self.latency.record(us);
        if let Some((_, h)) = self.spans.iter().find(|(r, _)| r.contains(&id)) {
            h.record(us);
        }
        self.from_send.record(at.saturating_sub(self.sends[id as usize].load(Ordering::Acquire)) / 1000);
    }

    /// Resolves receipts that came before their writer saw the commit. Returns how many there were.
    pub fn resolve_pending(&self) -> usize {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        for &(id, at) in &pending {
            match self.commits[id as usize].load(Ordering::Acquire) {
                EXCLUDED | 0 => {}
                commit => self.record(id, commit, at),
            }
        }
        pending.len()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Clients

#[derive(Debug, Default, Clone)]
pub struct ClientOutcome {
    pub project: usize,
    /// It joined (a client whose connection or join failed has nothing to check).
    pub joined: bool,
    pub joined_seq: i64,
    pub last_seq: i64,
    pub received: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub other_frames: u64,
    pub error: Option<String>,
    /// Reconnections (fleets with `FleetSpec::reconnect`): see [`Resume`].
    pub resume: Resume,
}

/// A client's reconnections: it was disconnected, reconnected with backoff and joined with `since` = the
/// last seq it had. Times are wall-clock µs since the Unix epoch (children and parent share that clock).
#[derive(Debug, Default, Clone)]
pub struct Resume {
    pub disconnects: u32,
    /// Connection attempts after a disconnect, the successful ones included.
    pub attempts: u32,
    pub first_disconnect_us: u64,
    /// The last `joined` of a resume.
    pub resumed_us: u64,
    /// `latest` of that `joined` frame: the seq the replay goes up to.
    pub latest: i64,
    /// When the client reached `latest` after its last resume (0: never).
    pub caught_up_us: u64,
    /// The `at` of the last event, sent as `since_at` on a resume.
    last_at: String,
}

/// Microseconds since the Unix epoch: the clock the processes of a run share.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

pub struct Fleet {
    pub shared: Arc<Shared>,
    stop: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<ClientOutcome>>,
    joined: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    /// Per project: the seq every client should reach (set when the writers are done).
    targets: Arc<Vec<AtomicI64>>,
    caught_up: Arc<AtomicUsize>,
    /// Cancelled when `targets` are set: every client checks whether it is caught up.
    check: CancellationToken,
    pub connect_errors: Arc<Mutex<Vec<String>>>,
}

pub struct FleetSpec {
    pub addr: SocketAddr,
    /// Client `i` authenticates with token `i % tokens.len()`.
    pub tokens: Arc<Vec<String>>,
    pub projects: Arc<Vec<Uuid>>,
    pub sources: Vec<IpAddr>,
    /// Connections being opened at once.
    pub connect_concurrency: usize,
    pub buf_size: usize,
    /// Join with `"group":"tx"`: events arrive in `tx` frames.
    pub group_tx: bool,
    /// The index of this fleet's first client among all of a run's (fleets split over processes): client
    /// `first + i` joins project `(first + i) % projects`.
    pub first: usize,
    /// A client whose connection is lost reconnects (backoff as the JavaScript client's: 200 ms doubling to
    /// 5 s, plus up to half of it) and resumes with `since`, instead of counting as disconnected.
    pub reconnect: bool,
    /// Record `Shared::statement_to_client`.
    pub wall_clock: bool,
}

impl Fleet {
    pub fn new(shared: Arc<Shared>, projects: usize) -> Fleet {
        Fleet {
            shared,
            stop: CancellationToken::new(),
            handles: Vec::new(),
            joined: Arc::new(AtomicUsize::new(0)),
            failed: Arc::new(AtomicUsize::new(0)),
            targets: Arc::new((0..projects).map(|_| AtomicI64::new(i64::MAX)).collect()),
            caught_up: Arc::new(AtomicUsize::new(0)),
            check: CancellationToken::new(),
            connect_errors: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn joined(&self) -> usize {
        self.joined.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    /// Opens clients until there are `total`, client `i` joining project `i % projects`, and waits until each
    /// has joined or failed.
    pub async fn grow(&mut self, spec: &FleetSpec, total: usize, timeout: Duration) -> Result<(), String> {
        let gate = Arc::new(Semaphore::new(spec.connect_concurrency.max(1)));
        let start = self.handles.len();
        for i in start..total {
            let index = spec.first + i;
            let project = index % spec.projects.len();
            let source = (!spec.sources.is_empty()).then(|| spec.sources[i % spec.sources.len()]);
            let ctx = ClientCtx {
                index,
                reconnect: spec.reconnect,
                wall_clock: spec.wall_clock,
                addr: spec.addr,
                source,
                token: spec.tokens[i % spec.tokens.len()].clone(),
                project,
                project_id: spec.projects[project],
                shared: self.shared.clone(),
                stop: self.stop.clone(),
                joined: self.joined.clone(),
                failed: self.failed.clone(),
                targets: self.targets.clone(),
                caught_up: self.caught_up.clone(),
                check: self.check.clone(),
                errors: self.connect_errors.clone(),
                buf_size: spec.buf_size,
                group_tx: spec.group_tx,
            };
            let permit = gate.clone().acquire_owned().await.unwrap();
            self.handles.push(tokio::spawn(client(ctx, permit)));
        }
        let deadline = Instant::now() + timeout;
        while self.joined() + self.failed() < total {
            if Instant::now() > deadline {
                return Err(format!("only {} of {total} clients joined within {timeout:?}", self.joined()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.failed() > 0 {
            let errors = self.connect_errors.lock().unwrap();
            return Err(format!(
                "{} clients failed to join; first: {}",
                self.failed(),
                errors.first().cloned().unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// Tells the clients the final seq of each project, waits (up to `timeout`) until every client has
    /// received up to it, then closes them all and collects what each saw.
    pub async fn finish(self, finals: &[i64], timeout: Duration) -> (Vec<ClientOutcome>, Duration) {
        let started = Instant::now();
        for (t, f) in self.targets.iter().zip(finals) {
            t.store(*f, Ordering::SeqCst);
        }
        self.check.cancel();
        let n = self.handles.len();
        let deadline = started + timeout;
        while self.caught_up.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drained = started.elapsed();
        // A moment more, so a duplicate sent after the last event would still be seen.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop.cancel();
        let mut out = Vec::with_capacity(n);
        for h in self.handles {
            out.push(h.await.unwrap_or_else(|e| ClientOutcome { error: Some(e.to_string()), ..Default::default() }));
        }
        (out, drained)
    }

    /// Closes every client without checking anything (memory scenario).
    pub async fn close(self) {
        self.stop.cancel();
        for h in self.handles {
            let _ = h.await;
        }
    }
}

struct ClientCtx {
    index: usize,
    reconnect: bool,
    wall_clock: bool,
    addr: SocketAddr,
    source: Option<IpAddr>,
    token: String,
    project: usize,
    project_id: Uuid,
    shared: Arc<Shared>,
    stop: CancellationToken,
    joined: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    targets: Arc<Vec<AtomicI64>>,
    caught_up: Arc<AtomicUsize>,
    check: CancellationToken,
    errors: Arc<Mutex<Vec<String>>>,
    buf_size: usize,
    group_tx: bool,
}

impl ClientCtx {
    /// Records a client that never joined.
    fn fail(&self, out: &mut ClientOutcome, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(e.clone());
        }
        out.error = Some(e);
    }

    /// Counts the client as caught up once it has reached its project's target (at most once).
    fn check_caught_up(&self, out: &ClientOutcome, joined: bool, done: &mut bool) {
        if !*done && joined && out.last_seq >= self.targets[self.project].load(Ordering::Relaxed) {
            *done = true;
            self.caught_up.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// What the frames of one read asked for.
#[derive(Default)]
struct Frames {
    pong: bool,
    closed: bool,
    refused: bool,
}

/// How one connection of a client ended.
enum Ended {
    /// The run is over.
    Stopped,
    /// The join was refused: the client is done.
    Refused,
    /// The connection was lost (closed, or a read failed).
    Lost(String),
}

/// What a client keeps across its connections.
struct ClientState {
    /// Joined on the current connection.
    joined: bool,
    /// Counted in `Fleet::caught_up`.
    done: bool,
    checked: bool,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

async fn client(ctx: ClientCtx, permit: tokio::sync::OwnedSemaphorePermit) -> ClientOutcome {
    let mut out = ClientOutcome { project: ctx.project, ..Default::default() };
    let mut conn = match connect_and_join(&ctx, None).await {
        Ok(c) => c,
        Err(e) => {
            ctx.fail(&mut out, e);
            return out;
        }
    };
    let mut st = ClientState { joined: false, done: false, checked: false, permit: Some(permit) };
    loop {
        match session(&ctx, &mut conn, &mut out, &mut st).await {
            Ended::Stopped => break,
            Ended::Refused => return out,
            // A client that reconnects does so as the JavaScript client does: whenever a connection it had
            // joined on ends, and whenever a reconnection ends before its `joined` (it reached a server that was
            // shutting down, say).
            Ended::Lost(e) if !(ctx.reconnect && (st.joined || out.resume.disconnects > 0)) => {
                if st.joined || out.resume.disconnects > 0 {
                    out.error = Some(e);
                } else {
                    ctx.fail(&mut out, e);
                }
                break;
            }
            Ended::Lost(_) => {
                st.joined = false;
                let r = &mut out.resume;
                r.disconnects += 1;
                if r.first_disconnect_us == 0 {
                    r.first_disconnect_us = wall_us();
                }
                match reconnect(&ctx, &mut out).await {
                    Some(c) => conn = c,
                    None => break,
                }
            }
        }
    }
    if !st.done {
        // Count it as caught up so `finish` does not wait for a client that is gone.
        ctx.caught_up.fetch_add(1, Ordering::SeqCst);
    }
    out
}

/// Reads one connection until the run stops or the connection ends.
async fn session(ctx: &ClientCtx, conn: &mut Conn, out: &mut ClientOutcome, st: &mut ClientState) -> Ended {
    loop {
        let read = tokio::select! {
            _ = ctx.stop.cancelled() => return Ended::Stopped,
            _ = ctx.check.cancelled(), if !st.checked => {
                st.checked = true;
                ctx.check_caught_up(out, st.joined, &mut st.done);
                continue;
            }
            r = conn.read_more() => r,
        };
        match read {
            Ok(true) => {}
            Ok(false) if st.joined => return Ended::Lost("server closed the connection".into()),
            Ok(false) => return Ended::Lost("closed before joined".into()),
            Err(e) => return Ended::Lost(format!("read: {e}")),
        }
        let frames = read_frames(ctx, conn, out, &mut st.joined, &mut st.permit);
        if frames.refused {
            return Ended::Refused;
        }
        if frames.closed {
            return Ended::Lost("server sent close".into());
        }
        if frames.pong && conn.send(10, b"").await.is_err() {
            return Ended::Lost("send pong".into());
        }
        ctx.check_caught_up(out, st.joined, &mut st.done);
    }
}

/// Connects again after a lost connection, with the JavaScript client's backoff, and joins with `since`.
/// `None` when the run stopped first.
async fn reconnect(ctx: &ClientCtx, out: &mut ClientOutcome) -> Option<Conn> {
    let mut base = Duration::from_millis(200);
    loop {
        let jitter =
            splitmix(ctx.index as u64 ^ ((out.resume.attempts as u64) << 40)) % (base.as_millis() as u64 / 2 + 1);
        tokio::select! {
            _ = ctx.stop.cancelled() => return None,
            _ = tokio::time::sleep(base + Duration::from_millis(jitter)) => {}
        }
        out.resume.attempts += 1;
        let since = (out.last_seq, out.resume.last_at.as_str());
        match connect_and_join(ctx, Some(since)).await {
            Ok(c) => return Some(c),
            Err(_) => base = (base * 2).min(Duration::from_secs(5)),
        }
    }
}

/// A well-mixed 64-bit hash (SplitMix64), for the backoff's jitter without a random number generator.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Connects and joins; with `since` (the last seq and its `at`), resumes.
async fn connect_and_join(ctx: &ClientCtx, since: Option<(i64, &str)>) -> Result<Conn, String> {
    let connect = Conn::connect(ctx.addr, ctx.source, &ctx.token, ctx.buf_size);
    let mut conn = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err("connect: timed out".into()),
    };
    let group = if ctx.group_tx { r#","group":"tx""# } else { "" };
    let since = match since {
        Some((seq, at)) if !at.is_empty() => format!(r#","since":{seq},"since_at":"{at}""#),
        Some((seq, _)) => format!(r#","since":{seq}"#),
        None => String::new(),
    };
    let join = format!(r#"{{"op":"join","project":"{}"{group}{since}}}"#, ctx.project_id);
    conn.send(OP_TEXT, join.as_bytes()).await.map_err(|e| format!("send join: {e}"))?;
    Ok(conn)
}

/// Takes the frames of one read: checks each event's seq, records its latency, notes the join.
fn read_frames(
    ctx: &ClientCtx,
    conn: &mut Conn,
    out: &mut ClientOutcome,
    joined: &mut bool,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Frames {
    let now = ctx.shared.now_ns();
    let mut frames = Frames::default();
    let mut got = 0u64;
    while let Some((op, payload)) = conn.next_frame() {
        match op {
            OP_TEXT if payload.starts_with(b"{\"op\":\"event\"") => take_event(ctx, out, payload, now, &mut got),
            // A transaction's events, in one frame: each is taken as if it had come alone.
            OP_TEXT if payload.starts_with(b"{\"op\":\"tx\"") => {
                const EVENT: &[u8] = b"{\"op\":\"event\"";
                let mut rest = payload;
                while let Some(at) = ws::find(rest, EVENT) {
                    let event = &rest[at..];
                    let end = ws::find(&event[EVENT.len()..], EVENT).map_or(event.len(), |n| n + EVENT.len());
                    take_event(ctx, out, &event[..end], now, &mut got);
                    rest = &event[end..];
                }
            }
            OP_TEXT if !*joined && ws::find(payload, b"\"op\":\"joined\"").is_some() => {
                let seq = ws::int_after(payload, b"\"seq\":").unwrap_or(0);
                *joined = true;
                if out.resume.disconnects > 0 {
                    // A resume: `seq` is the `since` sent, and the replay goes up to `latest`.
                    let r = &mut out.resume;
                    r.resumed_us = wall_us();
                    r.latest = ws::int_after(payload, b"\"latest\":").unwrap_or(seq);
                    r.caught_up_us = if out.last_seq >= r.latest { r.resumed_us } else { 0 };
                    if seq != out.last_seq {
                        out.error = Some(format!("resumed since {} but joined at {seq}", out.last_seq));
                    }
                    continue;
                }
                out.joined = true;
                out.joined_seq = seq;
                out.last_seq = seq;
                if ctx.reconnect
                    && let Some(at) = at_of(payload)
                {
                    out.resume.last_at = String::from_utf8_lossy(at).into_owned();
                }
                ctx.joined.fetch_add(1, Ordering::Relaxed);
                permit.take();
            }
            OP_TEXT => {
                out.other_frames += 1;
                if !*joined {
                    let text = String::from_utf8_lossy(&payload[..payload.len().min(200)]);
                    if out.resume.disconnects > 0 {
                        out.error = Some(format!("resume refused: {text}"));
                        frames.refused = true;
                        return frames;
                    }
                    ctx.fail(out, format!("join refused: {text}"));
                    frames.refused = true;
                    return frames;
                }
            }
            OP_PING => frames.pong = true,
            OP_CLOSE => frames.closed = true,
            _ => {}
        }
    }
    if got > 0 {
        ctx.shared.deliveries.fetch_add(got, Ordering::Relaxed);
        ctx.shared.first_recv.fetch_min(now, Ordering::Relaxed);
        ctx.shared.last_recv.fetch_max(now, Ordering::Relaxed);
    }
    frames
}

/// Takes one event frame: checks its seq, records its latency.
fn take_event(ctx: &ClientCtx, out: &mut ClientOutcome, event: &[u8], now: u64, got: &mut u64) {
    let Some(seq) = ws::int_after(event, b"\"seq\":") else {
        out.other_frames += 1;
        return;
    };
    if seq <= out.last_seq {
        out.duplicates += 1;
        return;
    }
    if seq > out.last_seq + 1 {
        out.gaps += (seq - out.last_seq - 1) as u64;
    }
    out.last_seq = seq;
    out.received += 1;
    *got += 1;
    if let Some(id) = ws::int_after(event, MARKER) {
        ctx.shared.received(id as u64, now);
    }
    if ctx.reconnect || ctx.wall_clock {
        take_at(ctx, out, event);
    }
}

/// The event's `at`: kept for a resume's `since_at`, and the statement-to-client latency on the wall clock.
fn take_at(ctx: &ClientCtx, out: &mut ClientOutcome, event: &[u8]) {
    let Some(at) = at_of(event) else { return };
    if ctx.reconnect {
        let r = &mut out.resume;
        r.last_at.clear();
        r.last_at.push_str(std::str::from_utf8(at).unwrap_or(""));
        if r.caught_up_us == 0 && r.latest > 0 && out.last_seq >= r.latest {
            r.caught_up_us = wall_us();
        }
    }
    // A resume's replay (up to the `latest` of its `joined`) is the outage, measured as such; not latency.
    let replayed = out.resume.disconnects > 0 && out.last_seq <= out.resume.latest;
    if ctx.wall_clock
        && !replayed
        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(std::str::from_utf8(at).unwrap_or(""))
    {
        let us = (wall_us() as i64 - t.timestamp_micros()).max(0);
        ctx.shared.statement_to_client.record(us as u64);
    }
}

/// The value of a frame's top-level `"at"` (an event's or a `joined` frame's): its last occurrence, as it comes
/// after the row.
fn at_of(frame: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"at\":\"";
    let i = frame.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let len = frame[i..].iter().position(|&c| c == b'"')?;
    Some(&frame[i..i + len])
}

/// Checks every client's view: lost = seqs it never got (gaps inside its stream plus the tail it did not
/// reach), duplicates = seqs it got twice or out of order.
pub struct Verdict {
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub disconnected: usize,
    pub other_frames: u64,
}

pub fn verdict(outcomes: &[ClientOutcome], finals: &[i64]) -> Verdict {
    let mut v = Verdict { received: 0, lost: 0, duplicates: 0, disconnected: 0, other_frames: 0 };
    for o in outcomes {
        v.received += o.received;
        v.duplicates += o.duplicates;
        v.other_frames += o.other_frames;
        v.lost += o.gaps + (finals[o.project] - o.last_seq).max(0) as u64;
        if o.error.is_some() {
            v.disconnected += 1;
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------------------
// Writers

#[derive(Clone)]
pub struct WriteSpec {
    pub url: String,
    pub projects: Arc<Vec<Uuid>>,
    pub writers: usize,
    /// Transactions per second offered, all writers together; `None`: as fast as possible.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    /// Rows per transaction (1: single-row INSERTs; more: one multi-row INSERT per transaction).
    pub rows: usize,
    /// Run on each writer connection first (e.g. `SET synchronous_commit = off`).
    pub setup: Option<String>,
    /// When transaction 0 is due (open loop: transaction `i` at `start + i / rate`); `None`: as soon as the
    /// writers are connected.
    pub start: Option<Instant>,
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct WriteOutcome {
    pub transactions: u64,
    pub rows: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Measured window (after warm-up) in seconds, and what committed in it.
    pub window_secs: f64,
    pub window_transactions: u64,
    pub window_rows: u64,
    /// Offered transactions that could not be sent because too many were in flight.
    pub shed: u64,
    /// Commit acknowledgement minus the intended start (open loop) or the send (closed loop), in µs.
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    /// The writers' PostgreSQL backends: their pids and the CPU time they used (read before they exit).
    pub backend_pids: Vec<u32>,
    pub backend_cpu_secs: f64,
}

const SINGLE: &str = "INSERT INTO tasks (project_id, title) VALUES ($1, $2)";
const BULK: &str = "INSERT INTO tasks (project_id, title) SELECT $1, $2 || g FROM generate_series(1, $3::int) g";
const MAX_IN_FLIGHT: usize = 20_000;

/// The instants that frame a write run: writes intended before `window_start` are warm-up.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    window_start: Instant,
    end: Instant,
}

/// One writer: its connection and statements, and what all writers share.
struct Writer {
    client: Arc<Client>,
    single: tokio_postgres::Statement,
    bulk: tokio_postgres::Statement,
    shared: Arc<Shared>,
    ack: Arc<Histogram>,
    projects: Arc<Vec<Uuid>>,
    rows: usize,
    window: Window,
}

type Written = (Result<u64, tokio_postgres::Error>, Instant, Instant);

impl WriteOutcome {
    /// Counts one transaction's outcome.
    fn tally(&mut self, window: &Window, (r, intended, at): Written) {
        match r {
            // A transaction committed after the window closed is counted, but not in the window's rate.
            Ok(n) => {
                self.transactions += 1;
                self.rows += n;
                if intended >= window.window_start && at <= window.end {
                    self.window_transactions += 1;
                    self.window_rows += n;
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e.to_string());
                }
            }
        }
    }

    fn add(&mut self, o: WriteOutcome) {
        self.transactions += o.transactions;
        self.rows += o.rows;
        self.errors += o.errors;
        self.shed += o.shed;
        self.window_transactions += o.window_transactions;
        self.window_rows += o.window_rows;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// Runs the writers to completion. Transaction `i` goes to project `i % projects`.
pub async fn write(spec: WriteSpec, shared: Arc<Shared>) -> Result<WriteOutcome, String> {
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..spec.writers {
        let c = pg_connect(&spec.url).await?;
        if let Some(sql) = &spec.setup {
            c.batch_execute(sql).await.map_err(|e| format!("{sql}: {e}"))?;
        }
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.map_err(|e| e.to_string())?.get(0);
        pids.push(pid as u32);
        clients.push(Arc::new(c));
    }
    let ack = Arc::new(Histogram::new());
    let start = spec.start.unwrap_or_else(|| Instant::now() + Duration::from_millis(50));
    let window = Window { start, window_start: start + spec.warmup, end: start + spec.warmup + spec.duration };
    let mut tasks = Vec::new();
    for (w, client) in clients.into_iter().enumerate() {
        let (spec, shared, ack) = (spec.clone(), shared.clone(), ack.clone());
        tasks.push(tokio::spawn(async move {
            let writer = Writer {
                single: client.prepare(SINGLE).await.map_err(|e| e.to_string())?,
                bulk: client.prepare(BULK).await.map_err(|e| e.to_string())?,
                client,
                shared,
                ack,
                projects: spec.projects.clone(),
                rows: spec.rows,
                window,
            };
            tokio::time::sleep_until(start.into()).await;
            Ok::<_, String>(match spec.rate {
                Some(rate) => writer.open_loop(w as u64, spec.writers as u64, rate).await,
                None => writer.closed_loop(w as u64, spec.writers as u64).await,
            })
        }));
    }
    let mut total = WriteOutcome::default();
    for t in tasks {
        total.add(t.await.map_err(|e| e.to_string())??);
    }
    total.window_secs = spec.duration.as_secs_f64();
    total.ack_p50_us = ack.quantile(0.5);
    total.ack_p99_us = ack.quantile(0.99);
    total.backend_cpu_secs = pids.iter().map(|&p| crate::machine::cpu_of(p).as_secs_f64()).sum();
    total.backend_pids = pids;
    Ok(total)
}

impl Writer {
    /// Transactions `first`, `first + every`, ...: each sent at its intended instant (start + id / rate),
    /// whether or not earlier ones have finished.
    async fn open_loop(&self, first: u64, every: u64, rate: f64) -> WriteOutcome {
        let mut out = WriteOutcome::default();
        let mut inflight = FuturesUnordered::new();
        let mut k = 0u64;
        loop {
            let id = first + k * every;
            let intended = self.window.start + Duration::from_secs_f64(id as f64 / rate);
            if intended >= self.window.end {
                break;
            }
            k += 1;
            // Collect what finished while waiting for the next send time.
            loop {
                tokio::select! {
                    biased;
                    Some(r) = inflight.next(), if !inflight.is_empty() => out.tally(&self.window, r),
                    _ = tokio::time::sleep_until(intended.into()) => break,
                }
            }
            if inflight.len() >= MAX_IN_FLIGHT {
                out.shed += 1;
                continue;
            }
            inflight.push(self.one(id, intended));
        }
        while let Some(r) = inflight.next().await {
            out.tally(&self.window, r);
        }
        out
    }

    /// Transactions `first`, `first + every`, ..., one after the other, until the window ends.
    async fn closed_loop(&self, first: u64, every: u64) -> WriteOutcome {
        let mut out = WriteOutcome::default();
        let mut k = 0u64;
        while Instant::now() < self.window.end {
            let id = first + k * every;
            k += 1;
            let r = self.one(id, Instant::now()).await;
            out.tally(&self.window, r);
        }
        out
    }

    /// Transaction `id`: its INSERT, and its commit instant for the latency of the clients that receive it.
    async fn one(&self, id: u64, intended: Instant) -> Written {
        let (shared, window_start) = (&self.shared, self.window.window_start);
        let project = self.projects[id as usize % self.projects.len()];
        if intended < window_start {
            shared.exclude(id);
        } else {
            shared.sent(id, intended.saturating_duration_since(shared.base).as_nanos() as u64);
        }
        let title = format!("bcb#{id}#");
        let r = if self.rows <= 1 {
            self.client.execute(&self.single, &[&project, &title]).await
        } else {
            self.client.execute(&self.bulk, &[&project, &title, &(self.rows as i32)]).await
        };
        let at = Instant::now();
        if r.is_ok() && intended >= window_start {
            shared.commit(id, shared.now_ns());
            self.ack.record(at.saturating_duration_since(intended).as_micros() as u64);
        }
        (r, intended, at)
    }
}

/// The latest seq of each project, in the order given.
pub async fn final_seqs(client: &Client, projects: &[Uuid]) -> Result<Vec<i64>, String> {
    let rows = client
        .query("SELECT room::uuid, last_seq FROM feed_seq WHERE room = ANY($1::uuid[]::text[])", &[&projects])
        .await
        .map_err(|e| e.to_string())?;
    let map: std::collections::HashMap<Uuid, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(projects.iter().map(|p| map.get(p).copied().unwrap_or(0)).collect())
}

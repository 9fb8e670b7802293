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
    pub joined_seq: i64,
    pub last_seq: i64,
    pub received: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub other_frames: u64,
    pub error: Option<String>,
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
            let project = i % spec.projects.len();
            let source = (!spec.sources.is_empty()).then(|| spec.sources[i % spec.sources.len()]);
            let ctx = ClientCtx {
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

async fn client(ctx: ClientCtx, permit: tokio::sync::OwnedSemaphorePermit) -> ClientOutcome {
    let mut out = ClientOutcome { project: ctx.project, ..Default::default() };
    let mut conn = match connect_and_join(&ctx).await {
        Ok(c) => c,
        Err(e) => {
            ctx.fail(&mut out, e);
            return out;
        }
    };
    let mut joined = false;
    let mut done = false;
    let mut permit = Some(permit);
    let mut checked = false;
    loop {
        let read = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = ctx.check.cancelled(), if !checked => {
                checked = true;
                ctx.check_caught_up(&out, joined, &mut done);
                continue;
            }
            r = conn.read_more() => r,
        };
        let lost = match read {
            Ok(true) => None,
            Ok(false) if joined => Some("server closed the connection".to_string()),
            Ok(false) => Some("closed before joined".to_string()),
            Err(e) => Some(format!("read: {e}")),
        };
        if let Some(e) = lost {
            if joined {
                out.error = Some(e);
            } else {
                ctx.fail(&mut out, e);
            }
            break;
        }
        let frames = read_frames(&ctx, &mut conn, &mut out, &mut joined, &mut permit);
        if frames.refused {
            return out;
        }
        if frames.closed {
            out.error = Some("server sent close".into());
            break;
        }
        if frames.pong && conn.send(10, b"").await.is_err() {
            break;
        }
        ctx.check_caught_up(&out, joined, &mut done);
    }
    if !done {
        // Count it as caught up so `finish` does not wait for a client that is gone.
        ctx.caught_up.fetch_add(1, Ordering::SeqCst);
    }
    out
}

async fn connect_and_join(ctx: &ClientCtx) -> Result<Conn, String> {
    let connect = Conn::connect(ctx.addr, ctx.source, &ctx.token, ctx.buf_size);
    let mut conn = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err("connect: timed out".into()),
    };
    let group = if ctx.group_tx { r#","group":"tx""# } else { "" };
    let join = format!(r#"{{"op":"join","project":"{}"{group}}}"#, ctx.project_id);
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
                out.joined_seq = seq;
                out.last_seq = seq;
                *joined = true;
                ctx.joined.fetch_add(1, Ordering::Relaxed);
                permit.take();
            }
            OP_TEXT => {
                out.other_frames += 1;
                if !*joined {
                    let text = String::from_utf8_lossy(&payload[..payload.len().min(200)]);
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

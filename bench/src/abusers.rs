//! The abusive clients of the `abuse` scenario, one per kind of issue #13: each does what a careless or
//! hostile client could do with a valid token (or a forged one), stops at its phase's end and closes
//! everything it opened. None of them expects a particular answer: each counts what it got (close codes,
//! HTTP statuses, error codes, replies served), so the same abuser measures the server with or without limits.
//!
//! An abuser runs on a thread of its own (a current-thread runtime), so its work competes with the
//! well-behaved clients for the machine's cores, as a real client's would, but never for their runtime.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout_at;
use uuid::Uuid;

use crate::args::Abuse;
use crate::http::HttpConn;
use crate::results::AbuserReport;
use crate::ws::{self, Conn, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// Connections of the connection flood, unless the open-file limit is lower.
pub const FLOOD_CONNECTIONS: usize = 2000;
/// Concurrent replays of the long history.
const REPLAYERS: usize = 100;
/// Slow request bodies: connections, the declared body (under the 2,465,536-byte limit for tasks) and what
/// is held back of it.
const SLOW_BODIES: usize = 40;
const SLOW_BODY_BYTES: usize = 2_400_000;
const SLOW_BODY_HELD_BACK: usize = 100;
/// Connections of the unknown-token flood.
const TOKEN_FLOODERS: usize = 8;
/// Time allowed after the phase's end for the abuser to find out how its connections ended, then to close them.
const AFTERMATH: Duration = Duration::from_secs(1);
const HARD_STOP: Duration = Duration::from_secs(5);

/// What the abusers aim at: the server, and the abuser's own user and projects.
pub struct Target {
    pub addr: SocketAddr,
    /// A loopback address of the abuser's own, so that a limit per address would not fall on the others.
    pub source: IpAddr,
    pub token: String,
    /// A project of the abuser's with no traffic: the join/leave loop's.
    pub room: Uuid,
    /// A project of the abuser's with a long history.
    pub history: Uuid,
    /// WebSockets the connection flood opens (within the open-file limit).
    pub flood_connections: usize,
}

/// What an abuser sent and got; counters shared by its tasks, so that nothing is lost when they are cut off.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    got: Mutex<BTreeMap<String, u64>>,
    notes: Mutex<Vec<String>>,
}

impl Tally {
    fn add(&self, what: impl Into<String>, n: u64) {
        if n > 0 {
            *self.got.lock().unwrap().entry(what.into()).or_default() += n;
        }
    }

    fn sent(&self, n: u64, bytes: usize) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn note(&self, note: String) {
        self.notes.lock().unwrap().push(note);
    }

    fn report(&self, cleanup: Duration) -> AbuserReport {
        AbuserReport {
            sent: self.sent.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            got: self.got.lock().unwrap().clone(),
            notes: self.notes.lock().unwrap().clone(),
            cleanup_ms: cleanup.as_millis() as u64,
        }
    }
}

/// Starts abuser `kind` on a thread of its own; it runs until `until`, then closes what it opened.
pub fn spawn(kind: Abuse, target: Arc<Target>, until: Instant) -> tokio::sync::oneshot::Receiver<AbuserReport> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new().name(format!("bench-abuser-{kind:?}"));
    let _ = thread.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let tally = Arc::new(Tally::default());
        rt.block_on(async {
            let hard_stop = until + AFTERMATH + HARD_STOP;
            if timeout_at(hard_stop.into(), attack(kind, target, tally.clone(), until)).await.is_err() {
                tally.note("cut off by the bench after its aftermath".into());
            }
        });
        // Dropping the runtime drops every task still holding a connection: they are all closed here.
        drop(rt);
        let _ = tx.send(tally.report(until.elapsed()));
    });
    rx
}

async fn attack(kind: Abuse, t: Arc<Target>, tally: Arc<Tally>, until: Instant) {
    match kind {
        Abuse::PingFlood => ping_flood(&t, &tally, until).await,
        Abuse::ConnectionFlood => connection_flood(t, tally, until).await,
        Abuse::JoinLeave => join_leave(&t, &tally, until, |_| t.room).await,
        Abuse::RandomJoins => join_leave(&t, &tally, until, |_| Uuid::new_v4()).await,
        Abuse::ReplayLoop => replay_loop(&t, &tally, until).await,
        Abuse::Replays => replays(t, tally, until).await,
        Abuse::SlowBodies => slow_bodies(t, tally, until).await,
        Abuse::UnknownTokens => unknown_tokens(t, tally, until).await,
    }
}

/// How an I/O error reads in the report.
fn io_outcome(e: &io::Error) -> String {
    let msg = e.to_string();
    if let Some(i) = msg.find("upgrade refused: HTTP/1.1 ") {
        let status = msg[i + "upgrade refused: HTTP/1.1 ".len()..].chars().take(3).collect::<String>();
        return format!("upgrade refused {status}");
    }
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "reset by the server".into(),
        io::ErrorKind::UnexpectedEof => "closed by the server".into(),
        io::ErrorKind::ConnectionRefused => "connect refused".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        _ if msg.contains("closed during the handshake") => "closed during the upgrade".into(),
        _ => format!("error: {}", msg.chars().take(60).collect::<String>()),
    }
}

/// A WebSocket with the abuser's token; the upgrade's outcome is counted.
async fn ws_connect(t: &Target, tally: &Tally, until: Instant) -> Option<Conn> {
    tally.sent(1, ws::upgrade_request(t.addr, &t.token).len());
    match timeout_at(until.into(), Conn::connect(t.addr, Some(t.source), &t.token, 64 * 1024)).await {
        Ok(Ok(c)) => {
            tally.add("upgraded (101)", 1);
            Some(c)
        }
        Ok(Err(e)) => {
            tally.add(io_outcome(&e), 1);
            None
        }
        Err(_) => {
            tally.add("upgrade pending at the end", 1);
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Replies on a WebSocket

/// The server's answer to a client frame, or how the connection ended.
enum Reply {
    Joined {
        latest: i64,
    },
    Left,
    Error(String),
    Other(String),
    /// `until` events were counted (a replay was read to its end).
    Events,
    Ended(String),
}

/// Reads up to the next reply (`joined`, `left`, `error`, ...), counting the events before it and answering
/// pings; with `events_target`, stops as soon as `events` reaches it.
async fn next_reply(conn: &mut Conn, tally: &Tally, events: &mut u64, events_target: Option<u64>) -> Reply {
    loop {
        let mut pong = false;
        while let Some((op, payload)) = conn.next_frame() {
            tally.bytes_in.fetch_add(payload.len() as u64 + 2, Ordering::Relaxed);
            match op {
                OP_TEXT if payload.starts_with(b"{\"op\":\"event\"") => {
                    *events += 1;
                    if events_target.is_some_and(|n| *events >= n) {
                        return Reply::Events;
                    }
                }
                OP_TEXT => return reply_of(payload),
                OP_PING => pong = true,
                OP_CLOSE => {
                    let code = ws::close_code(payload).map(|c| c.to_string()).unwrap_or_else(|| "without code".into());
                    return Reply::Ended(format!("close {code}"));
                }
                _ => {}
            }
        }
        if pong && conn.send(OP_PONG, b"").await.is_err() {
            return Reply::Ended("reset by the server".into());
        }
        match conn.read_more().await {
            Ok(true) => {}
            Ok(false) => return Reply::Ended("closed by the server".into()),
            Err(e) => return Reply::Ended(io_outcome(&e)),
        }
    }
}

/// The value of `"key":"…"` in a frame.
fn string_after<'a>(frame: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let i = ws::find(frame, key)? + key.len();
    let len = frame[i..].iter().position(|&c| c == b'"')?;
    std::str::from_utf8(&frame[i..i + len]).ok()
}

fn reply_of(frame: &[u8]) -> Reply {
    match string_after(frame, b"\"op\":\"") {
        Some("joined") => Reply::Joined { latest: ws::int_after(frame, b"\"latest\":").unwrap_or(0) },
        Some("left") => Reply::Left,
        Some("error") => Reply::Error(string_after(frame, b"\"code\":\"").unwrap_or("?").to_string()),
        Some(op) => Reply::Other(op.to_string()),
        None => Reply::Other("?".into()),
    }
}

/// Counts a reply; `false` when the connection is over.
fn count(tally: &Tally, reply: &Reply) -> bool {
    match reply {
        Reply::Joined { .. } => tally.add("joined", 1),
        Reply::Left => tally.add("left", 1),
        Reply::Error(code) => tally.add(format!("error {code}"), 1),
        Reply::Other(op) => tally.add(format!("reply {op}"), 1),
        Reply::Events => {}
        Reply::Ended(how) => {
            tally.add(how.clone(), 1);
            return false;
        }
    }
    true
}

async fn send_text(conn: &mut Conn, tally: &Tally, text: &str) -> bool {
    tally.sent(1, text.len() + 6);
    match conn.send(OP_TEXT, text.as_bytes()).await {
        Ok(()) => true,
        Err(e) => {
            tally.add(io_outcome(&e), 1);
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The abusers

/// One socket sends pings as fast as the server takes them and never reads the pongs.
async fn ping_flood(t: &Target, tally: &Tally, until: Instant) {
    let Some(mut conn) = ws_connect(t, tally, until).await else { return };
    // A masked, empty ping: 6 bytes. A thousand per write, so that the bench is not what limits the rate.
    let batch = [0x80 | OP_PING, 0x80, 0, 0, 0, 0].repeat(1000);
    let last_write = std::cell::Cell::new(Instant::now());
    let flood = async {
        loop {
            conn.send_raw(&batch).await?;
            tally.sent(1000, batch.len());
            last_write.set(Instant::now());
        }
    };
    match timeout_at(until.into(), flood).await {
        Ok(Err::<(), io::Error>(e)) => {
            tally.add(format!("writing: {}", io_outcome(&e)), 1);
            return;
        }
        Ok(Ok(())) => unreachable!(),
        Err(_) if last_write.get().elapsed() > Duration::from_secs(1) => tally.add("writes blocked at the end", 1),
        Err(_) => tally.add("writes still taken at the end", 1),
    }
    // Now read what the server sent (pongs, perhaps a close frame), for a bounded time.
    let mut pongs = 0u64;
    let drain = async {
        loop {
            while let Some((op, payload)) = conn.next_frame() {
                tally.bytes_in.fetch_add(payload.len() as u64 + 2, Ordering::Relaxed);
                match op {
                    OP_PONG => pongs += 1,
                    OP_CLOSE => return format!("close {}", ws::close_code(payload).unwrap_or(0)),
                    _ => {}
                }
            }
            match conn.read_more().await {
                Ok(true) => {}
                Ok(false) => return "closed by the server".to_string(),
                Err(e) => return io_outcome(&e),
            }
        }
    };
    let end = timeout_at((Instant::now() + AFTERMATH).into(), drain).await;
    tally.add("pongs read afterwards", pongs);
    tally.add(end.unwrap_or_else(|_| "still open at the end".into()), 1);
}

/// Thousands of WebSockets with one token, opened 32 at a time and held (answering pings) until the end.
async fn connection_flood(t: Arc<Target>, tally: Arc<Tally>, until: Instant) {
    let gate = Arc::new(Semaphore::new(32));
    let open = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..t.flood_connections {
        let Ok(Ok(permit)) = timeout_at(until.into(), gate.clone().acquire_owned()).await else { break };
        let (t, tally, open) = (t.clone(), tally.clone(), open.clone());
        set.spawn(async move {
            let conn = ws_connect(&t, &tally, until).await;
            drop(permit);
            let Some(mut conn) = conn else { return };
            open.fetch_add(1, Ordering::Relaxed);
            let mut events = 0;
            if let Ok(reply) = timeout_at(until.into(), next_reply(&mut conn, &tally, &mut events, None)).await {
                open.fetch_sub(1, Ordering::Relaxed);
                count(&tally, &reply);
            }
        });
    }
    // All permits back: every connection attempt has ended one way or the other.
    let _ = timeout_at(until.into(), gate.acquire_many(32)).await;
    tally.note(format!(
        "{} connections tried in {:.1} s",
        tally.sent.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    ));
    tokio::time::sleep_until(until.into()).await;
    tally.add("open at the end", open.load(Ordering::Relaxed) as u64);
    set.abort_all();
}

/// One socket joins a room and leaves it, again and again, each time waiting for the reply. `project` says
/// which room (the abuser's own, or a random id it is no member of).
async fn join_leave(t: &Target, tally: &Tally, until: Instant, project: impl Fn(u64) -> Uuid) {
    let Some(mut conn) = ws_connect(t, tally, until).await else { return };
    let mut events = 0;
    let cycles = async {
        for i in 0.. {
            let p = project(i);
            if !send_text(&mut conn, tally, &format!(r#"{{"op":"join","project":"{p}","ref":{i}}}"#)).await {
                return;
            }
            let reply = next_reply(&mut conn, tally, &mut events, None).await;
            let joined = matches!(reply, Reply::Joined { .. });
            if !count(tally, &reply) {
                return;
            }
            if joined {
                if !send_text(&mut conn, tally, &format!(r#"{{"op":"leave","project":"{p}","ref":{i}}}"#)).await {
                    return;
                }
                if !count(tally, &next_reply(&mut conn, tally, &mut events, None).await) {
                    return;
                }
            }
        }
    };
    if timeout_at(until.into(), cycles).await.is_err() {
        tally.add("open at the end", 1);
    }
    tally.add("events received", events);
}

/// One socket: `join since=0` of the long history and `leave` at once, again and again, reading what comes.
async fn replay_loop(t: &Target, tally: &Tally, until: Instant) {
    let Some(mut conn) = ws_connect(t, tally, until).await else { return };
    let mut events = 0;
    let h = t.history;
    let cycles = async {
        for i in 0u64.. {
            let join = format!(r#"{{"op":"join","project":"{h}","since":0,"ref":{i}}}"#);
            let leave = format!(r#"{{"op":"leave","project":"{h}","ref":{i}}}"#);
            if !send_text(&mut conn, tally, &join).await || !send_text(&mut conn, tally, &leave).await {
                return;
            }
            // Two replies: to the join, then to the leave; the replay's events come between them.
            for _ in 0..2 {
                if !count(tally, &next_reply(&mut conn, tally, &mut events, None).await) {
                    return;
                }
            }
        }
    };
    if timeout_at(until.into(), cycles).await.is_err() {
        tally.add("open at the end", 1);
    }
    tally.add("events received", events);
}

/// 100 sockets, each replaying the whole long history (`join since=0`, read to the end, `leave`) in a loop.
async fn replays(t: Arc<Target>, tally: Arc<Tally>, until: Instant) {
    let mut set = JoinSet::new();
    for _ in 0..REPLAYERS {
        let (t, tally) = (t.clone(), tally.clone());
        set.spawn(async move {
            let Some(mut conn) = ws_connect(&t, &tally, until).await else { return };
            let mut events = 0;
            let replaying = replay_to_the_end(&mut conn, &t, &tally, &mut events);
            if timeout_at(until.into(), replaying).await.is_err() {
                tally.add("open at the end", 1);
            }
            tally.add("events received", events);
        });
    }
    tokio::time::sleep_until(until.into()).await;
    // Each task has counted its end by now (its timeout is the same instant); give them a moment to do so.
    let _ = timeout_at((Instant::now() + AFTERMATH).into(), async { while set.join_next().await.is_some() {} }).await;
}

async fn replay_to_the_end(conn: &mut Conn, t: &Target, tally: &Tally, events: &mut u64) {
    let h = t.history;
    for i in 0u64.. {
        if !send_text(conn, tally, &format!(r#"{{"op":"join","project":"{h}","since":0,"ref":{i}}}"#)).await {
            return;
        }
        let reply = next_reply(conn, tally, events, None).await;
        let latest = match reply {
            Reply::Joined { latest } => latest,
            _ if count(tally, &reply) => continue,
            _ => return,
        };
        tally.add("joined", 1);
        let target = *events + latest.max(0) as u64;
        match next_reply(conn, tally, events, Some(target)).await {
            Reply::Events => tally.add("replays read to the end", 1),
            other if !count(tally, &other) => return,
            _ => {}
        }
        if !send_text(conn, tally, &format!(r#"{{"op":"leave","project":"{h}","ref":{i}}}"#)).await {
            return;
        }
        if !count(tally, &next_reply(conn, tally, events, None).await) {
            return;
        }
    }
}

/// 40 connections, each sending a task body of 2.4 MB minus its last 100 bytes, then nothing.
async fn slow_bodies(t: Arc<Target>, tally: Arc<Tally>, until: Instant) {
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..SLOW_BODIES {
        let (t, tally) = (t.clone(), tally.clone());
        set.spawn(async move {
            let outcome = timeout_at(until.into(), slow_body(&t, &tally)).await;
            let outcome = outcome.unwrap_or_else(|_| "open at the end".into());
            if outcome != "open at the end" {
                let mut notes = tally.notes.lock().unwrap();
                if !notes.iter().any(|n| n.starts_with(&format!("{outcome}:"))) {
                    notes.push(format!("{outcome}: the first after {:.1} s", started.elapsed().as_secs_f64()));
                }
            }
            tally.add(outcome, 1);
        });
    }
    while set.join_next().await.is_some() {}
}

/// One slow body; how it ended (the server answered, closed, or the body is still pending).
async fn slow_body(t: &Target, tally: &Tally) -> String {
    tally.sent(1, 0);
    let mut conn = match HttpConn::connect(t.addr, Some(t.source)).await {
        Ok(c) => c,
        Err(e) => return io_outcome(&e),
    };
    let head = format!(
        "POST /api/projects/{}/tasks HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {SLOW_BODY_BYTES}\r\n\r\n",
        t.room, t.token
    );
    let mut body = br#"{"title":""#.to_vec();
    body.resize(SLOW_BODY_BYTES - SLOW_BODY_HELD_BACK, b'x');
    for part in [head.as_bytes(), &body] {
        if let Err(e) = conn.send(part).await {
            return format!("sending: {}", io_outcome(&e));
        }
        tally.bytes_out.fetch_add(part.len() as u64, Ordering::Relaxed);
    }
    match conn.answer().await {
        Ok(a) => format!("answered {}", a.status),
        Err(e) => io_outcome(&e),
    }
}

/// Eight keep-alive connections sending `GET /api/me` with random well-formed tokens, back to back.
async fn unknown_tokens(t: Arc<Target>, tally: Arc<Tally>, until: Instant) {
    let mut set = JoinSet::new();
    for _ in 0..TOKEN_FLOODERS {
        let (t, tally) = (t.clone(), tally.clone());
        set.spawn(async move {
            let _ = timeout_at(until.into(), forged_requests(&t, &tally)).await;
        });
    }
    while set.join_next().await.is_some() {}
}

async fn forged_requests(t: &Target, tally: &Tally) {
    let mut conn: Option<HttpConn> = None;
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match HttpConn::connect(t.addr, Some(t.source)).await {
                Ok(c) => {
                    tally.add("connections opened", 1);
                    conn.insert(c)
                }
                Err(e) => {
                    tally.add(io_outcome(&e), 1);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Shaped like the tokens src/auth.rs issues: `bc_` and 64 hex digits.
        let token = format!("bc_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        tally.sent(1, 180);
        match c.request("GET", "/api/me", &token, None).await {
            Ok(a) => {
                tally.add(format!("http {}", a.status), 1);
                tally.bytes_in.fetch_add(a.bytes as u64, Ordering::Relaxed);
                if c.closed {
                    tally.add("connections closed by the server", 1);
                    conn = None;
                }
            }
            Err(e) => {
                tally.add(io_outcome(&e), 1);
                conn = None;
            }
        }
    }
}

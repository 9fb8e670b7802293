//! The `broadcast` scenario (issue #16): 1,000 clients in 100 rooms, each sending 2 broadcasts a second
//! ("typing"): how fast a broadcast reaches the other nine clients of its room, on one server and across two,
//! and what that traffic costs writers (the write ceiling with it running, against without: broadcasts
//! travel between servers by NOTIFY, whose commit-time lock every writer of the feed shares).
//!
//! Each broadcast carries the time it was sent (µs since the run's start, one clock: the clients are all in
//! this process) and its sender's server; each receiver records now minus that, split by whether the sender
//! was on the receiver's server or the other one. Only broadcasts sent within the measured window count, and
//! delivered / expected compares what arrived of them with nine per broadcast sent.
//!
//! The write ceiling is measured on one server (which, alone, sends its broadcasts to nobody else: what the
//! traffic costs there is CPU) and on two (where every broadcast also travels by NOTIFY).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::ctx::{Ctx, write_on_own_thread};
use crate::hist::Histogram;
use crate::load::{Shared, WriteSpec};
use crate::results::{BroadcastLatency, BroadcastRun, BroadcastWrites};
use crate::ws::{self, Conn, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

const CLIENTS: usize = 1000;
const ROOMS: usize = 100;
const PER_CLIENT_PER_SEC: f64 = 2.0;

/// What the clients share: the clock, the window being measured, and what they counted.
struct Counters {
    base: Instant,
    /// Broadcasts sent with a time in [from, to) µs count.
    window: (AtomicU64, AtomicU64),
    sending: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    same_server: Histogram,
    other_server: Histogram,
    failed: AtomicU64,
}

impl Counters {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    fn counts(&self, t: u64) -> bool {
        t >= self.window.0.load(Ordering::Relaxed) && t < self.window.1.load(Ordering::Relaxed)
    }
}

pub async fn run(ctx: &Ctx) -> Result<BroadcastRun, String> {
    let clients = ctx.args.clients.unwrap_or(CLIENTS);
    let rooms = ctx.args.rooms.unwrap_or(ROOMS).min(ctx.projects.len()).max(1);
    let duration = ctx.args.secs(15.0);
    let mut run = BroadcastRun { clients, rooms, per_client_per_sec: PER_CLIENT_PER_SEC, ..Default::default() };

    // One server: latency, then the write ceiling with and without the traffic.
    let server = ctx.spawn_server("broadcast-1")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counters = Arc::new(new_counters());
    let stop = CancellationToken::new();
    connect(ctx, &[server.addr], clients, rooms, &counters, &stop).await?;
    run.one_server = Some(measure(ctx, "one server", &counters, duration, clients, rooms).await);
    run.writes = writes(ctx, "one server", &counters, rooms).await?;
    stop.cancel();
    server.stop();

    // Two servers, the clients of each room spread over both.
    let (a, b) = (ctx.spawn_server("broadcast-2a")?, ctx.spawn_server("broadcast-2b")?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counters = Arc::new(new_counters());
    let stop = CancellationToken::new();
    connect(ctx, &[a.addr, b.addr], clients, rooms, &counters, &stop).await?;
    run.two_servers = Some(measure(ctx, "two servers", &counters, duration, clients, rooms).await);
    run.writes_two_servers = writes(ctx, "two servers", &counters, rooms).await?;
    stop.cancel();
    a.stop();
    b.stop();
    Ok(run)
}

fn new_counters() -> Counters {
    Counters {
        base: Instant::now(),
        window: (AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)),
        sending: AtomicBool::new(true),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        same_server: Histogram::new(),
        other_server: Histogram::new(),
        failed: AtomicU64::new(0),
    }
}

/// Connects the clients, client `i` to room `i % rooms` and, with two servers, the clients of each room
/// alternately to each (client `i` to server `(i / rooms) % servers`), and starts them.
async fn connect(
    ctx: &Ctx,
    servers: &[SocketAddr],
    clients: usize,
    rooms: usize,
    counters: &Arc<Counters>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let joined = Arc::new(AtomicU64::new(0));
    for i in 0..clients {
        let server = (i / rooms) % servers.len();
        let addr = servers[server];
        let project = ctx.projects[i % rooms];
        let (token, counters, stop, joined) = (ctx.token.clone(), counters.clone(), stop.clone(), joined.clone());
        tokio::spawn(async move {
            if let Err(e) = client(addr, server, &token, project, i, &counters, &stop, &joined).await
                && !stop.is_cancelled()
                && counters.failed.fetch_add(1, Ordering::Relaxed) == 0
            {
                eprintln!("bench: broadcast client {i}: {e}");
            }
        });
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while joined.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed) < clients as u64 {
        if Instant::now() > deadline {
            return Err(format!("only {} of {clients} clients joined", joined.load(Ordering::Relaxed)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = counters.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} clients failed to connect or join"));
    }
    ctx.say(format!("broadcast: {clients} clients joined {rooms} rooms on {} server(s)", servers.len()));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn client(
    addr: SocketAddr,
    server: usize,
    token: &str,
    project: Uuid,
    i: usize,
    counters: &Counters,
    stop: &CancellationToken,
    joined: &AtomicU64,
) -> Result<(), String> {
    let mut conn = Conn::connect(addr, None, token, 4096).await.map_err(|e| e.to_string())?;
    let join = format!(r#"{{"op":"join","project":"{project}"}}"#);
    conn.send(OP_TEXT, join.as_bytes()).await.map_err(|e| e.to_string())?;
    loop {
        if !conn.read_more().await.map_err(|e| e.to_string())? {
            return Err("closed before joined".into());
        }
        if let Some((_, f)) = conn.next_frame() {
            if ws::find(f, b"\"op\":\"joined\"").is_none() {
                return Err(format!("expected joined, got {}", String::from_utf8_lossy(f)));
            }
            break;
        }
    }
    joined.fetch_add(1, Ordering::Relaxed);
    let every = Duration::from_secs_f64(1.0 / PER_CLIENT_PER_SEC);
    let offset = Duration::from_micros((i as u64 * 7919) % every.as_micros() as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                if !counters.sending.load(Ordering::Relaxed) {
                    continue;
                }
                let t = counters.now_us();
                let msg = format!(
                    r#"{{"op":"broadcast","project":"{project}","event":"typing","payload":{{"t":{t},"s":{server}}}}}"#
                );
                conn.send(OP_TEXT, msg.as_bytes()).await.map_err(|e| e.to_string())?;
                if counters.counts(t) {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            more = conn.read_more() => {
                if !more.map_err(|e| e.to_string())? {
                    return Err("the server closed the connection".into());
                }
                let mut pong = false;
                while let Some((op, f)) = conn.next_frame() {
                    match op {
                        OP_TEXT if ws::find(f, b"\"op\":\"broadcast\"").is_some() => {
                            let now = counters.now_us();
                            let (Some(t), Some(s)) = (ws::int_after(f, b"\"t\":"), ws::int_after(f, b"\"s\":")) else {
                                continue;
                            };
                            let t = t as u64;
                            if counters.counts(t) {
                                counters.received.fetch_add(1, Ordering::Relaxed);
                                let h = if s as usize == server { &counters.same_server } else { &counters.other_server };
                                h.record(now.saturating_sub(t));
                            }
                        }
                        OP_PING => pong = true,
                        OP_CLOSE => return Err(format!("closed: {:?}", ws::close_code(f))),
                        _ => {}
                    }
                }
                if pong {
                    conn.send(OP_PONG, b"").await.map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

/// Broadcast latency over `duration`, after 3 s of warm-up.
async fn measure(
    ctx: &Ctx,
    name: &str,
    c: &Counters,
    duration: Duration,
    clients: usize,
    rooms: usize,
) -> BroadcastLatency {
    c.sending.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = c.now_us();
    c.window.1.store(from + duration.as_micros() as u64, Ordering::Relaxed);
    c.window.0.store(from, Ordering::Relaxed);
    tokio::time::sleep(duration + Duration::from_secs(2)).await;
    let per_room = (clients / rooms).max(1) as u64;
    let sent = c.sent.load(Ordering::Relaxed);
    let ms = |h: &Histogram, q: f64| if h.count() == 0 { 0.0 } else { h.quantile(q) as f64 / 1000.0 };
    let l = BroadcastLatency {
        sent,
        expected: sent * (per_room - 1),
        delivered: c.received.load(Ordering::Relaxed),
        broadcasts_per_s: sent as f64 / duration.as_secs_f64(),
        same_server_p50_ms: ms(&c.same_server, 0.5),
        same_server_p99_ms: ms(&c.same_server, 0.99),
        same_server_max_ms: c.same_server.max() as f64 / 1000.0,
        other_server_p50_ms: (c.other_server.count() > 0).then(|| ms(&c.other_server, 0.5)),
        other_server_p99_ms: (c.other_server.count() > 0).then(|| ms(&c.other_server, 0.99)),
        other_server_max_ms: (c.other_server.count() > 0).then(|| c.other_server.max() as f64 / 1000.0),
    };
    c.window.0.store(u64::MAX, Ordering::Relaxed);
    ctx.say(format!(
        "broadcast: {name}: {} broadcasts ({:.0}/s), delivered {} of {}; same server p50 {:.2} ms p99 {:.2} ms max {:.1} ms{}",
        l.sent,
        l.broadcasts_per_s,
        l.delivered,
        l.expected,
        l.same_server_p50_ms,
        l.same_server_p99_ms,
        l.same_server_max_ms,
        match (l.other_server_p50_ms, l.other_server_p99_ms, l.other_server_max_ms) {
            (Some(a), Some(b), Some(m)) => format!("; across servers p50 {a:.2} ms p99 {b:.2} ms max {m:.1} ms"),
            _ => String::new(),
        }
    ));
    l
}

/// The write ceiling (closed-loop single-row INSERTs), with the broadcasts running and without them (the
/// clients stay connected and joined), in interleaved rounds, for the server's `synchronous_commit` and `off`.
async fn writes(ctx: &Ctx, name: &str, c: &Counters, rooms: usize) -> Result<Vec<BroadcastWrites>, String> {
    let a = &ctx.args;
    let default: String = ctx.admin.query_one("SHOW synchronous_commit", &[]).await.map_err(|e| e.to_string())?.get(0);
    let syncs = if default == "off" { vec![default] } else { vec![default, "off".to_string()] };
    let mut out = Vec::new();
    for sync in syncs {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 0..a.rounds.max(2) {
            for sending in [true, false] {
                c.sending.store(sending, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
                let spec = WriteSpec {
                    url: ctx.url.clone(),
                    projects: Arc::new(ctx.projects[..rooms].to_vec()),
                    writers: a.writers.unwrap_or(8).max(1),
                    rate: None,
                    duration: Duration::from_secs_f64(a.duration.map_or(5.0, |d| d.min(5.0))),
                    warmup: Duration::from_secs(1),
                    rows: 1,
                    setup: Some(format!("SET synchronous_commit = {sync}")),
                    start: None,
                };
                let w = write_on_own_thread(spec, Shared::new(0)).await?;
                let tps = w.window_transactions as f64 / w.window_secs;
                ctx.say(format!(
                    "broadcast: {name}: writes, synchronous_commit={sync}, round {}, broadcasts {}: {tps:.0} tx/s",
                    round + 1,
                    if sending { "on" } else { "off" }
                ));
                if sending { with.push(tps) } else { without.push(tps) }
            }
        }
        let (w, wo) = (median(&with), median(&without));
        out.push(BroadcastWrites {
            synchronous_commit: sync,
            with_broadcasts_tps: w,
            without_broadcasts_tps: wo,
            ratio: if wo > 0.0 { w / wo } else { 0.0 },
            with_rounds: with,
            without_rounds: without,
        });
    }
    c.sending.store(true, Ordering::Relaxed);
    Ok(out)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

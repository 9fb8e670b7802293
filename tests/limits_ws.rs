//! One WebSocket client cannot hurt the others (issue #13): each attack reproduced, bounded, with what the
//! abuser gets (the documented error or close code) and, beside it, a well-behaved member whose writes (by SQL
//! and by the API, alternately) reach it within a margin of the figure measured without the attack, gapless.
//!
//! The margin: the median latency under attack is at most max(3 × the median without, that + 200 ms). Both
//! are measured in the same test, on the same machine, so the test does not depend on the machine's speed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use boardcast::Settings;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

/// The resident memory of this process, which runs the server, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS in /proc/self/status");
    line.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Asserts `during` is within the margin of `before` (see the module's header).
fn assert_within_margin(what: &str, before: Duration, during: Duration) {
    let margin = (before * 3).max(before + Duration::from_millis(200));
    eprintln!("{what}: median {before:?} without the attack, {during:?} with it (margin {margin:?})");
    assert!(
        during <= margin,
        "{what}: median {during:?} under attack, over the margin {margin:?} (without: {before:?})"
    );
}

/// A well-behaved member in a room of its own project.
struct Probe {
    client: WsClient,
    project: Uuid,
    token: String,
    last: i64,
    http: reqwest::Client,
}

impl Probe {
    async fn new(app: &TestApp, name: &str) -> Probe {
        let (token, project) = app.member_of_new_project(name).await;
        let (client, last) = app.joined(&token, project).await;
        Probe { client, project, token, last, http: reqwest::Client::new() }
    }

    /// Writes a task (by the API or by SQL) and waits for its event, which must be the next seq; returns the
    /// time from the write's start to the event.
    async fn round(&mut self, app: &TestApp, api: bool) -> Duration {
        let started = Instant::now();
        if api {
            let url = app.http(&format!("/api/projects/{}/tasks", self.project));
            let r = self.http.post(url).bearer_auth(&self.token).json(&json!({"title": "probe"})).send().await.unwrap();
            assert_eq!(r.status(), 201);
        } else {
            app.insert_task(self.project, "probe").await;
        }
        let e = self.client.event().await;
        assert_eq!(e["seq"], self.last + 1, "the probe missed an event or got one twice: {e}");
        assert_eq!(e["project"], json!(self.project));
        self.last += 1;
        started.elapsed()
    }

    /// The median of `n` rounds, alternating SQL and API writes.
    async fn median(&mut self, app: &TestApp, n: usize) -> Duration {
        self.median_over(app, n, Duration::ZERO).await
    }

    /// The median of at least `n` rounds, going on until `at_least` has passed: an attack that comes in bursts
    /// (a replay's pages, paced by its budget) is measured across several of them, not in a gap between two.
    async fn median_over(&mut self, app: &TestApp, n: usize, at_least: Duration) -> Duration {
        let started = Instant::now();
        let mut took = Vec::with_capacity(n);
        while took.len() < n || started.elapsed() < at_least {
            let api = took.len() % 2 == 1;
            took.push(self.round(app, api).await);
        }
        median(took)
    }
}

/// A WebSocket handshake with an optional `Origin`; a refusal as (status, Retry-After, JSON body).
async fn handshake(app: &TestApp, token: &str, origin: Option<&str>) -> Result<WsClient, (u16, Option<u64>, Value)> {
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(WsClient { ws }),
        Err(tungstenite::Error::Http(res)) => {
            let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
            let body = serde_json::from_slice(res.body().as_deref().unwrap_or(b"null")).unwrap();
            Err((res.status().as_u16(), retry_after, body))
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// A client whose socket buffers little (4 KiB each way, so no autotuning): one that never reads fills the
/// server's side quickly, and is blocked quickly once the server stops reading.
async fn small_window_client(app: &TestApp, token: &str) -> WsClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await.unwrap();
    WsClient { ws }
}

/// Sends pings (of 125 bytes, the most a ping may carry) and reads nothing, in batches of 100 per write, until
/// `max` are sent or `for_` is over; returns how many were sent and whether a batch was blocked (not written
/// within 500 ms: the server stopped reading).
async fn ping_flood(c: &mut WsClient, max: u64, for_: Duration) -> (u64, bool) {
    let (mut sent, mut blocked) = (0, false);
    let until = Instant::now() + for_;
    while sent < max && Instant::now() < until {
        let batch = async {
            for _ in 0..100 {
                c.ws.feed(Message::Ping(vec![7u8; 125].into())).await?;
            }
            c.ws.flush().await
        };
        match tokio::time::timeout(Duration::from_millis(500), batch).await {
            Ok(Ok(())) => sent += 100,
            Ok(Err(_)) => break, // closed
            Err(_) => blocked = true,
        }
    }
    (sent, blocked)
}

/// The next text frame as JSON, or the close code (`None` without a close frame) once the connection ends.
async fn next_or_close(c: &mut WsClient) -> Result<Value, Option<u16>> {
    loop {
        match tokio::time::timeout(WAIT, c.ws.next()).await.expect("nothing from the server in time") {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(f))) => return Err(f.map(|f| f.code.into())),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return Err(None),
        }
    }
}

/// Sends `request` until it is answered with `op`, waiting as told after each `rate_limited`; returns how
/// many other frames came before the answer, and adds every frame's bytes to `bytes`.
async fn ask(c: &mut WsClient, request: Value, op: &str, bytes: &mut usize) -> usize {
    let mut others = 0;
    c.send(request.clone()).await;
    loop {
        let f = next_or_close(c).await.unwrap_or_else(|code| panic!("closed ({code:?}) while waiting for {op}"));
        *bytes += f.to_string().len();
        if f["op"] == op {
            return others;
        } else if f["code"] == "rate_limited" {
            tokio::time::sleep(Duration::from_millis(f["retry_after"].as_u64().unwrap())).await;
            c.send(request.clone()).await;
        } else {
            others += 1;
        }
    }
}

/// Reads until the close frame (skipping everything else) and returns its code; `None` if the connection
/// ended without one.
async fn close_code(ws: &mut WsClient) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.ws.next()).await.expect("the connection was not closed in time") {
            Some(Ok(Message::Close(f))) => return f.map(|f| f.code.into()),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return None,
        }
    }
}

#[tokio::test]
async fn a_ping_flood_is_closed_with_1008_and_the_member_beside_it_keeps_its_latency() {
    let app = spawn_app().await;
    let mut probe = Probe::new(&app, "alice").await;
    let before = probe.median(&app, 10).await;
    let (_, mallory) = app.user("mallory").await;

    let rss_before = rss();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, flooding) = (peak.clone(), flooding.clone());
        async move {
            while flooding.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // Four sockets send 2,000 pings each as fast as they can, reading nothing, then read what they got.
    let mut floods = Vec::new();
    for _ in 0..4 {
        let mut abuser = app.client(&mallory).await;
        floods.push(tokio::spawn(async move {
            let (sent, _) = ping_flood(&mut abuser, 2_000, Duration::from_secs(10)).await;
            (abuser, sent)
        }));
    }
    let during = probe.median(&app, 10).await;
    let mut sent = Vec::new();
    for flood in floods {
        let (mut abuser, n) = flood.await.unwrap();
        sent.push(n);
        assert_eq!(close_code(&mut abuser).await, Some(1008), "a flooding client is closed for its rate");
    }
    flooding.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let grew = peak.load(Ordering::Relaxed).saturating_sub(rss_before);
    eprintln!("pings sent before the close: {sent:?}; memory grew by {} KiB at most", grew / 1024);
    assert!(grew < 32 << 20, "memory grew by {grew} bytes during the flood");
    assert_within_margin("the member's events during a ping flood", before, during);
    app.stop().await;
}

#[tokio::test]
async fn without_a_rate_limit_a_client_that_never_reads_stops_being_read_and_memory_stays_bounded() {
    let db = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db);
    settings.feed.messages = boardcast::config::Rate { per_sec: 1_000_000, burst: 1_000_000 };
    let app = spawn_app_on(settings).await;
    let mut probe = Probe::new(&app, "alice").await;
    let before = probe.median(&app, 10).await;
    let (_, mallory) = app.user("mallory").await;

    let rss_before = rss();
    let mut floods = Vec::new();
    for _ in 0..4 {
        let mut abuser = small_window_client(&app, &mallory).await;
        floods.push(tokio::spawn(async move {
            let (sent, blocked) = ping_flood(&mut abuser, u64::MAX, Duration::from_secs(4)).await;
            (abuser, sent, blocked)
        }));
    }
    let during = probe.median(&app, 10).await;
    let mut peak = rss();
    let mut results = Vec::new();
    for flood in floods {
        let (abuser, sent, blocked) = flood.await.unwrap();
        peak = peak.max(rss());
        results.push((sent, blocked));
        drop(abuser);
    }
    let grew = peak.saturating_sub(rss_before);
    eprintln!("pings sent, and whether the server stopped reading: {results:?}; memory grew by {} KiB", grew / 1024);
    // The server stops reading a socket whose pongs do not drain, so the client's own sends block after some
    // thousands of pings (what the sockets' buffers hold): it cannot make the server queue more. (Read on, four
    // sockets took 256 MB: 64 MiB of pongs each.)
    assert!(results.iter().all(|(sent, blocked)| *blocked && *sent < 100_000), "{results:?}");
    assert!(grew < 16 << 20, "memory grew by {grew} bytes");
    assert_within_margin("the member's events beside clients that never read", before, during);
    app.stop().await;
}

#[tokio::test]
async fn connection_caps_per_user_and_per_server_refuse_at_the_handshake_and_free_their_slot_on_close() {
    let db = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db);
    settings.feed.max_connections = Some(6);
    settings.feed.max_connections_per_user = 3;
    let app = spawn_app_on(settings).await;
    let mut probe = Probe::new(&app, "alice").await; // one of the six
    let before = probe.median(&app, 6).await;

    let (_, mallory) = app.user("mallory").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(handshake(&app, &mallory, None).await.expect("within the per-user limit"));
    }
    let (status, retry_after, body) = handshake(&app, &mallory, None).await.err().expect("over the per-user limit");
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_connections")), "{body}");
    assert!(retry_after.is_some_and(|s| s > 0), "429 without Retry-After");

    let (_, bob) = app.user("bob").await;
    held.push(handshake(&app, &bob, None).await.expect("within the server's limit"));
    held.push(handshake(&app, &bob, None).await.expect("within the server's limit"));
    let (status, retry_after, body) = handshake(&app, &bob, None).await.err().expect("over the server's limit");
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("server_full")), "{body}");
    assert!(retry_after.is_some_and(|s| s > 0), "503 without Retry-After");
    let during = probe.median(&app, 6).await;

    // A closed connection gives its slot back (its task ends), and so does one dropped without a close.
    let mut closed = held.remove(0);
    closed.ws.close(None).await.unwrap();
    drop(held.remove(0));
    let deadline = Instant::now() + WAIT;
    let again = loop {
        match handshake(&app, &mallory, None).await {
            Ok(c) => break c,
            Err((status, ..)) => assert!(Instant::now() < deadline, "the slot was never given back ({status})"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    held.push(again);
    assert_within_margin("the member's events beside refused connections", before, during);
    app.stop().await;
}

#[tokio::test]
async fn a_join_flood_gets_rate_limited_with_retry_after_then_closed_with_1008() {
    let db = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db);
    // Only the join rate applies here (10 a second, 100 at once, by default).
    settings.feed.messages = boardcast::config::Rate { per_sec: 1_000_000, burst: 1_000_000 };
    let app = spawn_app_on(settings).await;
    let mut probe = Probe::new(&app, "alice").await;
    let before = probe.median(&app, 10).await;
    let (mallory, project) = app.member_of_new_project("mallory").await;
    let mut abuser = app.client(&mallory).await;

    let attack = tokio::spawn(async move {
        let (mut joined, mut limited, mut retry_after) = (0, 0, Vec::new());
        let until = Instant::now() + Duration::from_secs(10);
        let code = loop {
            assert!(Instant::now() < until, "never closed");
            abuser.send(json!({"op": "join", "project": project, "ref": "j"})).await;
            let f = match next_or_close(&mut abuser).await {
                Ok(f) => f,
                Err(code) => break code,
            };
            match (f["op"].as_str(), f["code"].as_str()) {
                (Some("joined"), _) => joined += 1,
                (Some("error"), Some("rate_limited")) => {
                    assert_eq!(f["ref"], "j", "{f}");
                    limited += 1;
                    retry_after.push(f["retry_after"].as_u64().expect("rate_limited carries retry_after"));
                    continue; // and ignores it
                }
                _ => panic!("unexpected {f}"),
            }
            abuser.send(json!({"op": "leave", "project": project})).await;
            let f = next_or_close(&mut abuser).await.expect("left");
            assert_eq!(f["op"], "left", "{f}");
        };
        (joined, limited, retry_after, code)
    });
    let during = probe.median(&app, 10).await;
    let (joined, limited, retry_after, code) = attack.await.unwrap();
    eprintln!("joins accepted: {joined}, refused: {limited}, then close {code:?}");
    assert!((100..=200).contains(&joined), "joins accepted before the limit bit: {joined}");
    // As many refusals as the burst (and the few the rate refilled meanwhile), then the close.
    assert!((100..=120).contains(&limited), "refusals before the close: {limited}");
    assert!(retry_after.iter().all(|ms| *ms > 0 && *ms <= 20_000), "{retry_after:?}");
    assert_eq!(code, Some(1008));
    assert_within_margin("the member's events during a join flood", before, during);
    app.stop().await;
}

#[tokio::test]
async fn a_non_members_joins_are_refused_before_any_room_is_made() {
    let app = spawn_app().await;
    let (_, eve) = app.user("eve").await;
    let (alice, alices_project) = app.member_of_new_project("alice").await;
    let mut eve = app.client(&eve).await;

    // Watches the rooms all along: a room made for a non-member, even for a moment, is seen.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (feed, watching) = (app.feed.clone(), watching.clone());
        async move {
            let mut rooms_seen = 0u64;
            while watching.load(Ordering::Relaxed) {
                rooms_seen += u64::from(!feed.rooms.is_empty());
                tokio::task::yield_now().await;
            }
            rooms_seen
        }
    });
    for project in (0..50).map(|_| Uuid::new_v4()).chain([alices_project]) {
        eve.send(json!({"op": "join", "project": project})).await;
        let f = eve.recv().await;
        assert_eq!((f["op"].as_str(), f["code"].as_str()), (Some("error"), Some("not_found")), "{f}");
    }
    watching.store(false, Ordering::Relaxed);
    assert_eq!(watcher.await.unwrap(), 0, "a room was made for a non-member's join");
    assert!(app.feed.rooms.is_empty());

    // The member beside: a room of their own, events in order.
    let mut probe = Probe {
        client: app.client(&alice).await,
        project: alices_project,
        token: alice,
        last: 0,
        http: reqwest::Client::new(),
    };
    probe.last = probe.client.join(alices_project).await;
    let before = probe.median(&app, 6).await;
    for _ in 0..40 {
        eve.send(json!({"op": "join", "project": Uuid::new_v4()})).await;
    }
    let during = probe.median(&app, 6).await;
    for _ in 0..40 {
        assert_eq!(eve.recv().await["code"], "not_found");
    }
    assert_eq!(app.feed.rooms.subscribers(&alices_project.into()), 1);
    assert_within_margin("the member's events during a non-member's joins", before, during);
    app.stop().await;
}

#[tokio::test]
async fn a_since_0_and_leave_loop_gets_history_at_the_replay_budget_and_a_leave_stops_the_replay() {
    const BUDGET: usize = 256 * 1024;
    let db = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db);
    settings.feed.replay_bytes_per_sec = BUDGET;
    let app = spawn_app_on(settings).await;
    let mut probe = Probe::new(&app, "alice").await;
    let (mallory, project) = app.member_of_new_project("mallory").await;
    // 3,000 events of about 1 KB: 3 MB of history.
    app.sql
        .execute(
            "INSERT INTO tasks (project_id, title, description) SELECT $1, 'h' || g, repeat('x', 1000) \
             FROM generate_series(1, 3000) g",
            &[&project],
        )
        .await
        .unwrap();
    let before = probe.median(&app, 10).await;

    let mut abuser = app.client(&mallory).await;
    // Joins with since 0 and leaves, as fast as the rates allow (waiting as told when refused).
    let attack = tokio::spawn(async move {
        let (mut bytes, mut joins, mut after_left) = (0usize, 0usize, 0usize);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            ask(&mut abuser, json!({"op": "join", "project": project, "since": 0}), "joined", &mut bytes).await;
            joins += 1;
            // The replay sent before the leave is read, then `left`.
            ask(&mut abuser, json!({"op": "leave", "project": project}), "left", &mut bytes).await;
            // Nothing of the replay after the leave: the next frame answers the ping.
            after_left += ask(&mut abuser, json!({"op": "ping"}), "pong", &mut bytes).await;
        }
        (bytes, joins, after_left, started.elapsed())
    });
    let during = probe.median(&app, 10).await;
    let (bytes, joins, after_left, took) = attack.await.unwrap();
    // A first page (512 KiB) at once, then the budget, plus one event (of 1.2 KB) and the joined, left and
    // pong frames per join.
    let allowed = 512 * 1024 + (BUDGET as f64 * took.as_secs_f64()) as usize + joins * 3 * 1024;
    eprintln!("{joins} joins with since 0 in {took:?}: {bytes} bytes received ({allowed} allowed)");
    assert!(joins >= 10, "the loop ran {joins} times");
    assert!(bytes <= allowed, "{bytes} bytes of history in {took:?}, over the budget ({allowed})");
    assert_eq!(after_left, 0, "events were sent after the leave");
    assert_within_margin("the member's events during replay loops", before, during);
    app.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_replays_of_a_long_history_barely_slow_api_writes() {
    let app = spawn_app().await;
    let mut probe = Probe::new(&app, "alice").await;
    let (owner, project) = app.member_of_new_project("owner").await;
    app.sql
        .execute(
            "INSERT INTO tasks (project_id, title) SELECT $1, 'h' || g FROM generate_series(1, 50000) g",
            &[&project],
        )
        .await
        .unwrap();
    let latest = app.latest_seq(project).await;
    // Four readers of 25 connections each (the per-user limit is 64).
    let mut tokens = vec![owner];
    for i in 0..3 {
        let name = format!("reader{i}");
        tokens.push(app.user(&name).await.1);
        app.add_member(project, &name).await;
    }
    let before = probe.median(&app, 20).await;

    let received = Arc::new(AtomicU64::new(0));
    let gap = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..100 {
        let mut c = app.client(&tokens[i % 4]).await;
        let (received, gap) = (received.clone(), gap.clone());
        readers.push(tokio::spawn(async move {
            c.send(json!({"op": "join", "project": project, "since": 0})).await;
            // The first reader checks every seq; the others count bytes.
            let mut next = 1;
            while let Some(Ok(m)) = c.ws.next().await {
                let Message::Text(t) = m else { continue };
                received.fetch_add(t.len() as u64, Ordering::Relaxed);
                if i == 0 && t.starts_with(r#"{"op":"event""#) {
                    let e: Value = serde_json::from_str(&t).unwrap();
                    gap.fetch_or(e["seq"] != next, Ordering::Relaxed);
                    next += 1;
                }
            }
        }));
    }
    // Replays are under way (their first pages, 512 KiB each, sent).
    let deadline = Instant::now() + WAIT;
    while received.load(Ordering::Relaxed) < 16 << 20 {
        assert!(Instant::now() < deadline, "no replay started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (at_start, started) = (received.load(Ordering::Relaxed), Instant::now());
    // Each replay sends a page, then waits for its budget (1 MiB/s) to allow the next: measure across several
    // such periods.
    let during = probe.median_over(&app, 40, Duration::from_secs(2)).await;
    let sent = received.load(Ordering::Relaxed) - at_start;
    let took = started.elapsed();
    eprintln!(
        "{} MB of history replayed to 100 clients in the {took:?} measured (history: {latest} events)",
        sent >> 20
    );
    assert!(sent > 1 << 20, "the replays stalled");
    for r in &readers {
        r.abort();
    }
    assert!(!gap.load(Ordering::Relaxed), "a replay has a gap");
    assert_within_margin("API and SQL writes during 100 replays", before, during);
    app.stop().await;
}

#[tokio::test]
async fn when_cors_origins_restrict_browsers_ws_refuses_other_origins_and_allows_none() {
    let db = fresh_database(&admin_url()).await;
    let mut settings: Settings = test_settings(&db);
    settings.cors_origins = Some(vec!["https://board.example.com".into()]);
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;

    let (status, _, body) = handshake(&app, &token, Some("https://evil.example")).await.err().expect("refused");
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    // A listed origin, and no origin at all (not a browser), may connect.
    for origin in [Some("https://board.example.com"), None] {
        let mut c = handshake(&app, &token, origin).await.unwrap_or_else(|e| panic!("{origin:?} refused: {e:?}"));
        let seq = c.join(project).await;
        app.insert_task(project, "seen").await;
        assert_eq!(c.event().await["seq"], seq + 1);
    }
    app.stop().await;
}

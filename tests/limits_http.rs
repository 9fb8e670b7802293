//! HTTP and token limits (issue #13), each attack reproduced on loopback and bounded: a body that never
//! finishes, a flood of unknown tokens, tokens that expire, too many tokens, the headers every answer carries,
//! and logs that keep every secret. Beside each attack a well-behaved client keeps its latency (within
//! max(3 × its baseline, baseline + 200 ms), medians measured in the same test) and loses nothing.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::logged::Logged;
use common::*;
use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// An HTTP client from one loopback address (127.0.0.x: each is a different client to the server).
fn http_from(addr: &str) -> reqwest::Client {
    let ip: IpAddr = addr.parse().unwrap();
    reqwest::Client::builder().local_address(ip).build().unwrap()
}

/// A response: status, headers, JSON body (Null if none).
struct Res {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Res {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "expected {status} {code}, got {} {}", self.status, self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        &self.body["error"]
    }
}

/// The slow-body test measures the process's RSS, which every other test of this file (its requests, its
/// server, its allocator's arenas) moves too: it runs alone (`write`), the others beside each other (`read`).
static RSS_MEASURED: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn call(
    http: &reqwest::Client,
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Res {
    let mut req = http.request(method, app.http(path)).header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let bytes = res.bytes().await.unwrap_or_default();
    Res { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The margin a well-behaved client's latency must stay within under attack.
fn assert_kept_latency(what: &str, baseline: Duration, attacked: Duration) {
    let margin = (baseline * 3).max(baseline + Duration::from_millis(200));
    assert!(attacked <= margin, "{what}: median {attacked:?} under attack, {baseline:?} without (margin {margin:?})");
}

/// The median latency of `n` task creations by a well-behaved client; returns it and the seqs it wrote.
async fn writes(http: &reqwest::Client, app: &TestApp, token: &str, project: Uuid, n: usize) -> (Duration, Vec<i64>) {
    let (mut took, mut seqs) = (Vec::new(), Vec::new());
    for i in 0..n {
        let started = Instant::now();
        let path = format!("/api/projects/{project}/tasks");
        let res = call(http, app, Method::POST, &path, token, Some(json!({"title": format!("task {i}")}))).await;
        took.push(started.elapsed());
        assert_eq!(res.status, 201, "{}", res.body);
        seqs.push(res.body["seq"].as_i64().unwrap());
    }
    (median(took), seqs)
}

fn rss_kib() -> u64 {
    // Freed memory first goes back to the OS: glibc keeps what a thread freed in that thread's arena, and which
    // arena a wave's buffers land in depends on which threads ran it, so RSS alone would count freed waves.
    // SAFETY: malloc_trim only releases free memory; it touches nothing in use.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A client that sends a task's headers and all of a large body but its last 100 bytes, then waits.
async fn slow_body(app: &TestApp, token: &str, project: Uuid) -> tokio::net::TcpStream {
    const LEN: usize = 2_400_000;
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/projects/{project}/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {LEN}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut body = b"{\"title\": \"slow\", \"description\": \"".to_vec();
    body.resize(LEN - 100, b'a');
    s.write_all(&body).await.unwrap();
    s
}

/// Reads what the server sends until it closes the connection; panics if it does not within `WAIT`.
async fn until_closed(s: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the server did not close the connection")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408_and_frees_its_connection() {
    let _alone = RSS_MEASURED.write().await;
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.http.body_timeout = Duration::from_secs(3);
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (_, slow_token) = app.user("mallory").await;
    app.add_member(project, "mallory").await;
    let http = http_from("127.0.0.1");
    let (reader, after) = app.joined(&token, project).await;
    let reader = reader.collect_in_background(after);
    let (baseline, _) = writes(&http, &app, &token, project, 9).await;

    // Waves of 20 slow bodies (48 MB each). Each holds at most its body's limit while it waits; once answered,
    // its memory is free for the next wave: after the first (which lets the allocator settle its thresholds),
    // waves do not add to the server's memory.
    let before = rss_kib();
    let mut rss_after_wave = Vec::new();
    let mut written = Vec::new();
    for wave in 0..3 {
        let started = Instant::now();
        let mut slow = join_all((0..20).map(|_| slow_body(&app, &slow_token, project))).await;
        let (attacked, seqs) = writes(&http, &app, &token, project, 9).await;
        written.extend(seqs);
        assert_kept_latency("task writes beside 20 slow bodies", baseline, attacked);
        let during = rss_kib();
        assert!(during <= before + 20 * 5 * 1024 + 32 * 1024, "RSS {during} KiB with 20 slow bodies, {before} before");
        for s in &mut slow {
            let answer = until_closed(s).await;
            assert!(answer.starts_with("HTTP/1.1 408"), "wave {wave}: {answer}");
            assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(3), "answered before the deadline: {took:?}");
        rss_after_wave.push(rss_kib());
    }
    let (second, third) = (rss_after_wave[1], rss_after_wave[2]);
    assert!(third <= second + 16 * 1024, "RSS grew from {second} KiB to {third} KiB: the slow bodies were kept");

    // The reader got every write, once, in order.
    let last = *written.last().unwrap();
    let (_, events) = reader.until(last).await;
    assert_gapless(&events, project, after + 1, last);
    app.stop().await;
}

/// A token of the right shape that names nothing.
fn unknown_token() -> String {
    format!("bc_{}", Uuid::new_v4().simple().to_string().repeat(2))
}

/// `GET /api/me` with `token`, from `http`'s address, on a task of its own.
fn spawn_me(http: &reqwest::Client, app: &TestApp, token: String) -> tokio::task::JoinHandle<Res> {
    let (http, url) = (http.clone(), app.http("/api/me"));
    tokio::spawn(async move {
        let res = http.get(url).header("authorization", format!("Bearer {token}")).send().await.expect("request");
        let (status, headers) = (res.status().as_u16(), res.headers().clone());
        let bytes = res.bytes().await.unwrap_or_default();
        Res { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    })
}

/// Locks `api_tokens` until the returned transaction ends: a token lookup then waits, and shows up in
/// `lock_waiters`. That is how these tests see which requests reach the database, however slow the machine.
async fn lock_tokens(sql: &mut tokio_postgres::Client) -> tokio_postgres::Transaction<'_> {
    let tx = sql.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE").await.unwrap();
    tx
}

fn assert_rate_limited(res: &Res) {
    let e = res.error(429, "rate_limited");
    let secs: u64 = res.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=12).contains(&secs), "Retry-After: {secs}");
    assert_eq!(e["retry_after"], json!(secs), "{}", res.body);
}

#[tokio::test]
async fn unknown_tokens_reach_the_database_only_within_a_budget_then_get_429() {
    let _beside = RSS_MEASURED.read().await;
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.http.auth_failures_per_min = 5; // one more every 12 s
    let app = spawn_app_on(settings).await;
    let attacker = http_from("127.0.0.2");
    let mut sql = connect(&app.db_url).await;

    // 100 unknown tokens at once while api_tokens is locked: the budget's 5 wait for the lock, the rest are
    // refused without the database.
    let lock = lock_tokens(&mut sql).await;
    let started = Instant::now();
    let flood: Vec<_> = (0..100).map(|_| spawn_me(&attacker, &app, unknown_token())).collect();
    let deadline = Instant::now() + WAIT;
    let waiting = loop {
        let (done, waiting) = (flood.iter().filter(|t| t.is_finished()).count(), app.lock_waiters().await as usize);
        if done + waiting == 100 && waiting > 0 {
            break waiting;
        }
        assert!(Instant::now() < deadline, "{done} answered and {waiting} waiting on the database, of 100");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refills = started.elapsed().as_secs() as usize / 12 + 1;
    assert!((5..=5 + refills).contains(&waiting), "{waiting} requests reached the database");
    lock.commit().await.unwrap();
    let answers = join_all(flood).await.into_iter().map(Result::unwrap).collect::<Vec<_>>();
    let unauthorized = answers.iter().filter(|r| r.status == 401).count();
    assert_eq!(unauthorized, waiting, "those that reached the database are 401");
    for r in answers.iter().filter(|r| r.status != 401) {
        assert_rate_limited(r);
    }

    // The /ws handshake goes through the same budget.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let url = format!("{}?token={}", app.ws_url(), unknown_token());
    match tokio_tungstenite::client_async(url, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 429),
        other => panic!("expected a 429 handshake, got {:?}", other.map(|_| ())),
    }

    // A token found unknown, and a malformed one, are refused without the database (from an address with its
    // budget whole).
    let unknown = unknown_token();
    let other = http_from("127.0.0.4");
    spawn_me(&other, &app, unknown.clone()).await.unwrap().error(401, "unauthorized");
    let lock = lock_tokens(&mut sql).await;
    for token in [unknown, "bc_NOT-HEX".repeat(7)[..67].to_string(), "Basic abc".into()] {
        let res = tokio::time::timeout(WAIT, spawn_me(&other, &app, token)).await.expect("answered").unwrap();
        res.error(401, "unauthorized");
    }
    assert_eq!(app.lock_waiters().await, 0);
    lock.commit().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_good_tokens_from_one_address_waits_for_the_budget_and_is_never_refused() {
    let _beside = RSS_MEASURED.read().await;
    // After a restart every client reconnects at once: many users behind one NAT, none of their tokens seen
    // yet. Their lookups hold the address's budget while they run, and give it back when they succeed; the
    // rest wait for them instead of getting 429. Stale tokens retried without end (a tab with a revoked token)
    // cost the budget once, not on every retry.
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.http.auth_failures_per_min = 5;
    let app = spawn_app_on(settings).await;
    let office = http_from("127.0.0.3");
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(app.user(&format!("colleague{i}")).await.1);
    }
    let (_, stale) = app.user("stale").await;
    boardcast::admin::revoke_token(&app.sql, &stale).await.unwrap();
    for _ in 0..20 {
        spawn_me(&office, &app, stale.clone()).await.unwrap().error(401, "unauthorized");
    }

    // Every lookup waits on the lock: the budget's units are all held by lookups in flight.
    let mut sql = connect(&app.db_url).await;
    let lock = lock_tokens(&mut sql).await;
    let burst: Vec<_> = tokens.iter().map(|t| spawn_me(&office, &app, t.clone())).collect();
    let deadline = Instant::now() + WAIT;
    while app.lock_waiters().await < 4 {
        assert!(Instant::now() < deadline, "the lookups never reached the database");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(burst.iter().all(|t| !t.is_finished()), "a good token was answered while its lookup could not run");
    lock.commit().await.unwrap();
    for res in join_all(burst).await {
        let res = res.unwrap();
        assert_eq!(res.status, 200, "{}", res.body);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_client_beside_a_token_flood_keeps_its_latency_and_its_writes() {
    let _beside = RSS_MEASURED.read().await;
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.http.auth_failures_per_min = 30;
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    // Alice shares her address with the attacker (a NAT): the token she already used keeps working.
    let shared = http_from("127.0.0.2");
    let (reader, after) = app.joined(&token, project).await;
    let reader = reader.collect_in_background(after);
    let (baseline, mut written) = writes(&shared, &app, &token, project, 9).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flooders: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, stop, sent) = (shared.clone(), app.http("/api/me"), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let req = http.get(&url).header("authorization", format!("Bearer {}", unknown_token()));
                    statuses.push(req.send().await.unwrap().status().as_u16());
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                statuses
            })
        })
        .collect();
    while sent.load(std::sync::atomic::Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (attacked, seqs) = writes(&shared, &app, &token, project, 9).await;
    written.extend(seqs);
    // A valid token never seen from there waits like the attacker: it cannot be told apart without the database.
    let (_, fresh) = app.user("bob").await;
    assert_rate_limited(&call(&shared, &app, Method::GET, "/api/me", &fresh, None).await);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = join_all(flooders).await.into_iter().flat_map(Result::unwrap).collect();
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    assert!(unauthorized <= 30 + 10, "{unauthorized} of {} unknown tokens reached the database", statuses.len());
    assert!(statuses.iter().all(|&s| s == 401 || s == 429), "{statuses:?}");
    assert_kept_latency("task writes beside a token flood", baseline, attacked);

    let last = *written.last().unwrap();
    let (_, events) = reader.until(last).await;
    assert_gapless(&events, project, after + 1, last);
    app.stop().await;
}

#[tokio::test]
async fn every_answer_is_nosniff_and_token_answers_are_not_stored() {
    let _beside = RSS_MEASURED.read().await;
    let app = spawn_app().await;
    let (_, token) = app.user("alice").await;
    let http = reqwest::Client::new();
    for (method, path, token) in [
        (Method::GET, "/healthz", ""),
        (Method::GET, "/api", ""),
        (Method::GET, "/api/me", "bc_wrong"),
        (Method::GET, "/nowhere", ""),
        (Method::GET, "/api/me", token.as_str()),
        (Method::GET, "/api/projects", token.as_str()),
    ] {
        let res = call(&http, &app, method, path, token, None).await;
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"), "{path}: {}", res.status);
    }
    let issued = call(&http, &app, Method::POST, "/api/tokens", &token, Some(json!({"label": "laptop"}))).await;
    assert_eq!(issued.status, 201);
    assert!(issued.body["token"].is_string());
    let listed = call(&http, &app, Method::GET, "/api/tokens", &token, None).await;
    let id = issued.body["id"].as_str().unwrap();
    let revoked = call(&http, &app, Method::DELETE, &format!("/api/tokens/{id}"), &token, None).await;
    let me = call(&http, &app, Method::GET, "/api/me", &token, None).await;
    for res in [&issued, &listed, &revoked, &me] {
        assert_eq!(res.header("cache-control"), Some("no-store"), "{}", res.body);
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_token_expires_for_the_api_and_for_its_open_socket() {
    let _beside = RSS_MEASURED.read().await;
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let http = reqwest::Client::new();

    // The default lifetime, the bounds.
    let default = call(&http, &app, Method::POST, "/api/tokens", &token, None).await;
    let expires: chrono::DateTime<chrono::Utc> = serde_json::from_value(default.body["expires_at"].clone()).unwrap();
    let days = (expires - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((89.9..=90.0).contains(&days), "a token from the API lives 90 days by default, not {days}");
    for bad in [json!(0), json!(-5), json!(1.5), json!("60"), json!(365 * 24 * 3600 + 1)] {
        let res = call(&http, &app, Method::POST, "/api/tokens", &token, Some(json!({"expires_in": bad}))).await;
        assert_eq!(res.error(422, "invalid")["field"], "expires_in", "{bad}");
    }

    // A token that lives 3 seconds, with a socket open on it, beside one that does not expire.
    let short = call(&http, &app, Method::POST, "/api/tokens", &token, Some(json!({"expires_in": 3}))).await;
    assert_eq!(short.status, 201, "{}", short.body);
    let short_token = short.body["token"].as_str().unwrap().to_string();
    let expires: chrono::DateTime<chrono::Utc> = serde_json::from_value(short.body["expires_at"].clone()).unwrap();
    assert_eq!(call(&http, &app, Method::GET, "/api/me", &short_token, None).await.status, 200);
    let (mut expiring, _) = app.joined(&short_token, project).await;
    let (staying, after) = app.joined(&token, project).await;
    let staying = staying.collect_in_background(after);

    let (code, reason) = loop {
        match tokio::time::timeout(WAIT, expiring.ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let closed_at = chrono::Utc::now();
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    assert!(closed_at >= expires - chrono::Duration::milliseconds(150), "closed at {closed_at}, expiry {expires}");
    assert!(closed_at <= expires + chrono::Duration::seconds(5), "closed at {closed_at}, expiry {expires}");
    call(&http, &app, Method::GET, "/api/me", &short_token, None).await.error(401, "unauthorized");
    assert!(WsClient::connect(&app.ws_url(), &short_token).await.is_err(), "an expired token opens no socket");

    // The other socket stayed, and got everything.
    let last = psql_write(&app, project).await;
    let (_, events) = staying.until(last).await;
    assert_gapless(&events, project, after + 1, last);
    app.stop().await;
}

/// A psql-style write; its seq.
async fn psql_write(app: &TestApp, project: Uuid) -> i64 {
    app.insert_task(project, "written with SQL").await;
    app.latest_seq(project).await
}

#[tokio::test]
async fn a_user_holds_a_limited_number_of_active_tokens() {
    let _beside = RSS_MEASURED.read().await;
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.http.max_tokens_per_user = 3;
    let app = spawn_app_on(settings).await;
    let (_, token) = app.user("alice").await; // the first of three
    let http = reqwest::Client::new();
    let issue = || call(&http, &app, Method::POST, "/api/tokens", &token, None);
    let second = issue().await;
    assert_eq!(second.status, 201);
    // Concurrent issues cannot both take the last place.
    let (a, b) = tokio::join!(issue(), issue());
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    let refused = issue().await;
    let message = refused.error(409, "conflict")["message"].as_str().unwrap().to_string();
    assert!(message.contains("3 active tokens") && message.contains("revoke"), "{message}");

    // A revoked token, or an expired one, no longer counts.
    let id = second.body["id"].as_str().unwrap();
    assert_eq!(call(&http, &app, Method::DELETE, &format!("/api/tokens/{id}"), &token, None).await.status, 200);
    assert_eq!(issue().await.status, 201);
    assert_eq!(issue().await.status, 409);
    app.sql
        .execute("UPDATE api_tokens SET expires_at = now() WHERE label = '' AND expires_at IS NOT NULL", &[])
        .await
        .unwrap();
    assert_eq!(issue().await.status, 201);
    app.stop().await;
}

#[tokio::test]
async fn the_cli_issues_a_token_with_a_lifetime() {
    let _beside = RSS_MEASURED.read().await;
    let db_url = fresh_database(&admin_url()).await;
    let sql = connect(&db_url).await;
    boardcast::admin::add_user(&sql, "ops").await.unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .args(["token", "issue", "ops", "ci", "--expires-in", "3600"])
        .env("DATABASE_URL", &db_url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secs: f64 = sql
        .query_one("SELECT extract(epoch FROM expires_at - now())::float8 FROM api_tokens WHERE label = 'ci'", &[])
        .await
        .unwrap()
        .get(0);
    assert!((3500.0..=3600.0).contains(&secs), "{secs}");
    let out = Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .args(["token", "issue", "ops", "--expires-in", "0"])
        .env("DATABASE_URL", &db_url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a lifetime of 0 is a usage error");
}

#[tokio::test]
async fn no_token_or_hash_reaches_the_log_even_at_trace() {
    let _beside = RSS_MEASURED.read().await;
    let db_url = fresh_database(&admin_url()).await;
    let sql = connect(&db_url).await;
    let (_, token) = boardcast::admin::add_user(&sql, "alice").await.unwrap();
    let (server, addr) = Logged::start(&db_url, &[]);
    let http = reqwest::Client::new();
    let get = |path: String, token: String| {
        let http = http.clone();
        async move { http.get(path).header("authorization", format!("Bearer {token}")).send().await.unwrap() }
    };

    assert_eq!(get(format!("http://{addr}/api/me"), token.clone()).await.status(), 200);
    // A health check logs at debug: the log below is at least that detailed.
    assert_eq!(get(format!("http://{addr}/healthz"), String::new()).await.status(), 200);
    let issued: Value = http
        .post(format!("http://{addr}/api/tokens"))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({"label": "new"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_token = issued["token"].as_str().unwrap().to_string();
    assert_eq!(get(format!("http://{addr}/api/tokens"), new_token.clone()).await.status(), 200);
    // A query string warp cannot decode, with a token in it; and an unknown token.
    get(format!("http://{addr}/api/tokens?token={token}&limit=%zz"), token.clone()).await;
    let unknown = unknown_token();
    assert_eq!(get(format!("http://{addr}/api/me"), unknown.clone()).await.status(), 401);
    // The WebSocket with ?token=, which joins and leaves.
    let url = format!("ws://{addr}/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket with ?token=");
    ws.send(Message::text(r#"{"op":"ping"}"#)).await.unwrap();
    let _ = tokio::time::timeout(WAIT, ws.next()).await;
    drop(ws);
    // Revoking by the token itself (the CLI's way) runs a statement with its hash as parameter.
    let out = Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .args(["token", "revoke", &new_token])
        .env("DATABASE_URL", &db_url)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(out.status.success());
    let cli_log = String::from_utf8_lossy(&out.stderr).into_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stderr = server.stderr.clone();
    drop(server);

    let log = stderr.lock().unwrap().clone() + &cli_log;
    assert!(log.contains("DEBUG request{method=GET route=/healthz}"), "not a debug log:\n{log}");
    for secret in [&token, &new_token, &unknown] {
        let hash = Sha256::digest(secret.as_bytes());
        let forms = [secret.to_string(), secret[3..].to_string(), hex::encode(hash), format!("{:?}", hash.as_slice())];
        for form in forms {
            assert!(!log.contains(&form), "the log holds a secret ({form}):\n{log}");
        }
    }
}

//! What an operator sees: `GET /metrics` scraped with a real exposition-format parser while a scripted workload
//! runs (connections, joins, SQL writes, a resume, bad frames, a rate limit, a client that never reads, a
//! killed listener, API requests), the dashboard's queries against it, and the JSON log.
//!
//! The metrics are the process's: this file holds the only test that runs a server in its own process, so no
//! other test's traffic moves them.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use boardcast::config::Rate;
use common::logged::Logged;
use common::*;
use futures::SinkExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

const SCRAPE_TOKEN: &str = "scrape-secret-for-tests";

/// A sample's labels and value.
type Sample = (HashMap<String, String>, f64);

/// One scrape, parsed by prometheus-parse: samples by name and labels, and the raw text.
struct Scrape {
    samples: HashMap<String, Vec<Sample>>,
    text: String,
}

impl Scrape {
    async fn of(url: &str) -> Scrape {
        let res = reqwest::Client::new().get(url).bearer_auth(SCRAPE_TOKEN).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        let text = res.text().await.unwrap();
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("a valid scrape");
        let mut samples: HashMap<String, Vec<_>> = HashMap::new();
        for s in parsed.samples {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                // Histograms: their count (the parser folds _bucket, _sum and _count into one sample).
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(_) => continue,
            };
            let labels: HashMap<String, String> = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            samples.entry(s.metric).or_default().push((labels, value));
        }
        Scrape { samples, text }
    }

    /// The value of `name` with (at least) these labels, summed over the rest; 0 when absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some(samples) = self.samples.get(name) else { return 0.0 };
        (samples.iter())
            .filter(|(l, _)| labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, v)| v)
            .sum()
    }
}

/// How much `name` (with `labels`) moved between two scrapes.
fn moved(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

/// A client with 4 KiB socket buffers that joins `project` and never reads again: the server's writes to it
/// stall once a few kilobytes are in flight.
async fn never_reading_client(app: &TestApp, token: &str, project: Uuid) -> WsClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await.unwrap();
    let mut c = WsClient { ws };
    c.join(project).await;
    c
}

#[tokio::test]
async fn metrics_move_as_a_scripted_workload_runs() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.metrics.token = Some(SCRAPE_TOKEN.into());
    settings.metrics.addr = Some("127.0.0.1:0".parse().unwrap());
    settings.feed.send_timeout = Duration::from_secs(2);
    settings.feed.joins = Rate { per_sec: 1, burst: 3 };
    let app = spawn_app_on(settings).await;
    let url = app.http("/metrics");
    let http = reqwest::Client::new();

    // Who may read it: with the token only.
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401);
    let before = Scrape::of(&url).await;
    assert_eq!(before.value("boardcast_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert_eq!(before.value("boardcast_db_pool_max_connections", &[]), 8.0);
    assert_eq!(before.value("boardcast_listener_up", &[]), 1.0);
    assert!(before.samples.contains_key("boardcast_notification_queue_usage_ratio"), "{}", before.text);

    // Two clients in a room; SQL writes reach the reader.
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut reader, s) = app.joined(&token, project).await;
    let (mut other, _) = app.joined(&token, project).await;
    for i in 0..10 {
        app.insert_task(project, &format!("task {i}")).await;
    }
    let events = reader.events(10).await;
    assert_gapless(&events, project, s + 1, s + 10);
    other.events(10).await;
    let mid = Scrape::of(&url).await;
    assert_eq!(mid.value("boardcast_ws_connections", &[]), 2.0);
    assert_eq!(mid.value("boardcast_rooms", &[]), 1.0);
    assert!(moved(&before, &mid, "boardcast_ws_frames_sent_total", &[("type", "event")]) >= 20.0);
    assert!(moved(&before, &mid, "boardcast_ws_sent_bytes_total", &[("type", "event")]) >= 20.0 * 100.0);
    assert!(moved(&before, &mid, "boardcast_ws_frames_sent_total", &[("type", "joined")]) >= 2.0);
    assert!(moved(&before, &mid, "boardcast_room_joins_total", &[]) >= 2.0);
    assert!(moved(&before, &mid, "boardcast_listener_notifications_total", &[]) >= 10.0);
    assert!(moved(&before, &mid, "boardcast_feed_write_to_listener_seconds", &[]) >= 10.0);
    assert!(moved(&before, &mid, "boardcast_feed_listener_to_socket_seconds", &[]) >= 2.0);

    // Requests over the socket: a ping, a frame that is not JSON, a resume, a resume from the future, and
    // joins past the connection's join rate.
    reader.send(json!({"op": "ping"})).await;
    assert_eq!(reader.recv().await["op"], "pong");
    reader.send_text("{nope").await;
    assert_eq!(reader.recv().await["code"], "bad_json");
    let mut resumer = app.client(&token).await;
    resumer.send(json!({"op": "join", "project": project, "since": s + 5})).await;
    assert_eq!(resumer.recv().await["op"], "joined");
    assert_eq!(resumer.events(5).await.len(), 5);
    let latest = app.latest_seq(project).await;
    let mut late = app.client(&token).await;
    late.send(json!({"op": "join", "project": project, "since": latest + 100})).await;
    let resync = late.recv().await;
    assert_eq!((resync["op"].as_str(), resync["reason"].as_str()), (Some("resync"), Some("since_ahead")));
    let mut joiner = app.client(&token).await;
    let mut codes = vec![];
    for _ in 0..4 {
        joiner.send(json!({"op": "join", "project": Uuid::new_v4()})).await;
        codes.push(joiner.recv().await["code"].as_str().unwrap().to_string());
    }
    assert_eq!(codes.last().unwrap(), "rate_limited", "{codes:?}");

    // API requests, by route template.
    let me = http.get(app.http("/api/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let tasks = app.http(&format!("/api/projects/{project}/tasks"));
    assert_eq!(http.get(tasks).bearer_auth(&token).send().await.unwrap().status(), 200);
    assert_eq!(http.get(app.http("/api/me")).bearer_auth("bc_nope").send().await.unwrap().status(), 401);

    // A client that never reads, in a project of its own, flooded until the server drops it as slow.
    let (bob, flooded) = app.member_of_new_project("bob").await;
    let stuck = never_reading_client(&app, &bob, flooded).await;
    let pad = "x".repeat(4000);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut chunk = 0;
    while app.feed.rooms.subscribers(&flooded.into()) != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the client that never reads was never dropped");
        if chunk < 40 {
            app.sql
                .execute(
                    "INSERT INTO tasks (project_id, title, description)
                     SELECT $1, 'c' || $2::int || '-' || g, $3 FROM generate_series(1, 100) g",
                    &[&flooded, &chunk, &pad],
                )
                .await
                .unwrap();
            chunk += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(stuck);

    // The listener's connection is cut; it comes back, and events flow again.
    let killed: i64 = app
        .sql
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE application_name = 'boardcast-listener' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    app.insert_task(project, "after the cut").await;
    let after_cut = reader.event().await;
    assert_eq!(after_cut["row"]["title"], "after the cut");
    app.wait_until_healthy().await;

    // Once the server has noticed the client that went without a word.
    drop(other);
    let deadline = tokio::time::Instant::now() + WAIT;
    let after = loop {
        let s = Scrape::of(&url).await;
        if s.value("boardcast_ws_connections", &[]) == 4.0 || tokio::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let expect = [
        ("boardcast_ws_connections_opened_total", vec![], 6.0),
        ("boardcast_ws_frames_sent_total", vec![("type", "pong")], 1.0),
        ("boardcast_ws_frames_sent_total", vec![("type", "resync")], 1.0),
        ("boardcast_ws_client_frames_total", vec![("op", "ping")], 1.0),
        ("boardcast_ws_client_frames_total", vec![("op", "invalid")], 1.0),
        ("boardcast_ws_client_frames_total", vec![("op", "join")], 7.0),
        ("boardcast_ws_errors_total", vec![("code", "bad_json")], 1.0),
        ("boardcast_ws_errors_total", vec![("code", "not_found")], 3.0),
        ("boardcast_ws_errors_total", vec![("code", "rate_limited")], 1.0),
        ("boardcast_rate_limited_total", vec![("limit", "joins")], 1.0),
        ("boardcast_resyncs_total", vec![("reason", "since_ahead")], 1.0),
        ("boardcast_resumes_total", vec![], 1.0),
        ("boardcast_history_reads_total", vec![("reader", "client")], 1.0),
        ("boardcast_history_read_duration_seconds", vec![("reader", "client")], 1.0),
        ("boardcast_ws_disconnects_total", vec![("reason", "slow")], 1.0),
        ("boardcast_room_leaves_total", vec![], 2.0),
        ("boardcast_listener_reconnects_total", vec![], 1.0),
        ("boardcast_http_requests_total", vec![("route", "/api/me"), ("method", "GET"), ("status", "200")], 1.0),
        ("boardcast_http_requests_total", vec![("route", "/api/me"), ("status", "401")], 1.0),
        ("boardcast_http_requests_total", vec![("route", "/api/projects/:project_id/tasks"), ("status", "200")], 1.0),
        ("boardcast_http_requests_total", vec![("route", "/ws"), ("status", "101")], 6.0),
        ("boardcast_http_request_duration_seconds", vec![("route", "/api/me")], 2.0),
    ];
    for (name, labels, at_least) in expect {
        let d = moved(&before, &after, name, &labels);
        assert!(d >= at_least, "{name}{labels:?} moved by {d}, expected at least {at_least}\n{}", after.text);
    }
    assert_eq!(after.value("boardcast_http_requests_total", &[("route", "/metrics"), ("status", "401")]), 2.0);
    // The socket that never read, and the one dropped above, are no longer counted as open.
    let open = after.value("boardcast_ws_connections", &[]);
    assert_eq!(open, 4.0, "reader, resumer, late, joiner\n{}", after.text);
    assert_eq!(after.value("boardcast_listener_up", &[]), 1.0);
    // No id, no token, in any label or value.
    for secret in [project.to_string(), flooded.to_string(), token.clone(), bob.clone()] {
        assert!(!after.text.contains(&secret), "the scrape names {secret}");
    }

    // The same metrics on the metrics address (the token is required there too, since one is set).
    let own = format!("http://{}/metrics", app.metrics_addr.unwrap());
    assert_eq!(http.get(&own).send().await.unwrap().status(), 401);
    let there = Scrape::of(&own).await;
    assert!(there.value("boardcast_ws_connections_opened_total", &[]) >= 6.0);

    // Every metric the dashboard queries is in the scrape.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string("docs/grafana/boardcast.json").unwrap()).unwrap();
    let names = dashboard_metrics(&dashboard);
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        let exposed = after
            .text
            .lines()
            .any(|l| l.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')));
        assert!(exposed, "the dashboard queries {name}, which the server does not expose");
    }
}

/// The metric names (`boardcast_...`) in every `expr` of a Grafana dashboard.
fn dashboard_metrics(dashboard: &Value) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut stack = vec![dashboard];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(expr)) = o.get("expr") {
                    for (i, _) in expr.match_indices("boardcast_") {
                        let name: String =
                            expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                        names.insert(name);
                    }
                }
                stack.extend(o.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    names
}

#[tokio::test]
async fn the_json_log_is_one_object_a_line_and_holds_no_token() {
    let db_url = fresh_database(&admin_url()).await;
    let sql = connect(&db_url).await;
    let (_, token) = boardcast::admin::add_user(&sql, "alice").await.unwrap();
    let env = [("BOARDCAST_LOG_FORMAT", "json"), ("BOARDCAST_METRICS_TOKEN", SCRAPE_TOKEN)];
    let (server, addr) = Logged::start(&db_url, &env);
    let http = reqwest::Client::new();
    let me = http.get(format!("http://{addr}/api/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let scrape = http.get(format!("http://{addr}/metrics")).bearer_auth(SCRAPE_TOKEN).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    let unknown = format!("bc_{}", Uuid::new_v4().simple());
    let _ = http.get(format!("http://{addr}/api/me?token={token}")).bearer_auth(&unknown).send().await.unwrap();
    // The WebSocket with ?token= in its query string.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await.unwrap();
    ws.send(Message::text(r#"{"op":"ping"}"#)).await.unwrap();
    let mut c = WsClient { ws };
    assert_eq!(c.recv().await["op"], "pong");
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = server.log();
    drop(server);

    let mut served = 0;
    for line in log.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(entry["timestamp"].is_string() && entry["level"].is_string(), "{line}");
        if entry["message"] == "served" {
            served += 1;
            assert!(entry["span"]["route"].is_string() && entry["status"].is_number(), "{line}");
        }
    }
    assert!(served >= 4, "a line per request:\n{log}");
    assert!(log.contains("\"route\":\"/api/me\""), "{log}");
    for secret in [token.as_str(), unknown.as_str(), SCRAPE_TOKEN] {
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        for form in [secret, &secret[3..], hash.as_str()] {
            assert!(!log.contains(form), "the log holds a secret ({form}):\n{log}");
        }
    }
}

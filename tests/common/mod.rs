//! What every test needs: a database of its own, a running server on a free port, users with tokens, a
//! plain SQL connection (what psql would do), and a WebSocket client.
#![allow(dead_code)]

pub mod cluster;
pub mod logged;
pub mod proxy;
pub mod reader;

use std::sync::Arc;
use std::time::Duration;

use boardcast::feed::Feed;
use boardcast::{Application, Settings, admin};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_postgres::{Client, NoTls};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(20);

/// The server tests create their databases on: `make test` sets it.
pub fn admin_url() -> String {
    std::env::var("BOARDCAST_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("set BOARDCAST_TEST_DATABASE_URL (make test does) to a PostgreSQL server tests may create databases on")
}

/// Replaces the database name in a URL.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].rfind('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh, empty database on the server at `server_url`, migrated; returns its URL.
pub async fn fresh_database(server_url: &str) -> String {
    let name = format!("bc_test_{}", Uuid::new_v4().simple());
    let admin = connect(&with_db(server_url, "postgres")).await;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    let url = with_db(server_url, &name);
    let mut client = connect(&url).await;
    boardcast::db::migrate(&mut client).await.expect("migrate");
    url
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// Where `/metrics` is served on its own (`settings.metrics.addr`), if it is.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub db_url: String,
    /// A plain connection for writing the way psql would.
    pub sql: Client,
    pub feed: Arc<Feed>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<()>>,
}

pub fn test_settings(db_url: &str) -> Settings {
    let mut s = Settings::new(db_url);
    s.addr = "127.0.0.1:0".parse().unwrap();
    s.pool_size = 8;
    s
}

/// A server on a free port against a fresh database.
pub async fn spawn_app() -> TestApp {
    let db_url = fresh_database(&admin_url()).await;
    spawn_app_on(test_settings(&db_url)).await
}

pub async fn spawn_app_on(settings: Settings) -> TestApp {
    let db_url = settings.database_url.clone();
    let app = Application::build(settings).await.expect("build app");
    let addr = app.addr();
    let metrics_addr = app.metrics_addr();
    let feed = app.state().feed;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let done = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("server run");
    });
    let sql = connect(&db_url).await;
    let app = TestApp { addr, metrics_addr, db_url, sql, feed, stop: Some(stop), done: Some(done) };
    app.wait_until_healthy().await;
    app
}

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn wait_until_healthy(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = reqwest::get(self.http("/healthz")).await
                && r.status() == 200
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "server never became healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `/healthz` answers 503 within `d` (the server noticed it lost its database or listener).
    pub async fn unhealthy_within(&self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < deadline {
            if reqwest::get(self.http("/healthz")).await.is_ok_and(|r| r.status() == 503) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Creates a user and returns `(id, token)`.
    pub async fn user(&self, name: &str) -> (Uuid, String) {
        admin::add_user(&self.sql, name).await.expect("add user")
    }

    /// Creates a project owned by `owner` (a user name).
    pub async fn project(&self, name: &str, owner: &str) -> Uuid {
        let mut client = connect(&self.db_url).await;
        admin::add_project(&mut client, name, owner).await.expect("add project")
    }

    pub async fn add_member(&self, project: Uuid, user: &str) {
        let mut client = connect(&self.db_url).await;
        admin::add_member(&mut client, project, user, None).await.expect("add member");
    }

    /// A user who is a member of a new project: `(token, project)`.
    pub async fn member_of_new_project(&self, name: &str) -> (String, Uuid) {
        let (_, token) = self.user(name).await;
        let project = self.project(&format!("{name}'s board"), name).await;
        (token, project)
    }

    pub async fn latest_seq(&self, project: Uuid) -> i64 {
        self.sql
            .query_opt("SELECT last_seq FROM feed_seq WHERE room = $1::uuid::text", &[&project])
            .await
            .unwrap()
            .map(|r| r.get(0))
            .unwrap_or(0)
    }

    /// How many connections to this test's database wait for a lock right now: how a test knows that a
    /// statement has reached the lock it is held at, however slow the machine.
    pub async fn lock_waiters(&self) -> i64 {
        self.sql
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn insert_task(&self, project: Uuid, title: &str) -> Uuid {
        self.sql
            .query_one("INSERT INTO tasks (project_id, title) VALUES ($1, $2) RETURNING id", &[&project, &title])
            .await
            .expect("insert task")
            .get(0)
    }

    pub async fn client(&self, token: &str) -> WsClient {
        WsClient::connect(&self.ws_url(), token).await.expect("websocket connect")
    }

    /// A client that has joined `project`; returns it with the seq it joined at.
    pub async fn joined(&self, token: &str, project: Uuid) -> (WsClient, i64) {
        let mut c = self.client(token).await;
        let seq = c.join(project).await;
        (c, seq)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(WAIT, done).await;
        }
    }
}

pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn connect(url: &str, token: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(WsClient { ws })
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s.to_string())).await.expect("send");
    }

    /// The next text frame as JSON, within `WAIT`. Panics on timeout or close.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(WAIT).await.expect("expected a frame, got none in time")
    }

    /// The next text frame, or `None` if nothing arrives within `d` (or the socket closed).
    pub async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        tokio::time::timeout(d, self.next_frame()).await.ok()?
    }

    /// The next text frame, however long it takes; `None` once the socket is closed.
    pub async fn next_frame(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("server sent invalid JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Waits for the close frame; returns its code and reason.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    return Some((f.code.into(), f.reason.to_string()));
                }
                Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(_))) => continue,
                Err(_) => panic!("the connection was not closed in time"),
            }
        }
    }

    /// Joins and returns the seq the server joined it at.
    pub async fn join(&mut self, project: Uuid) -> i64 {
        self.send(json!({"op": "join", "project": project})).await;
        let f = self.recv().await;
        assert_eq!(f["op"], "joined", "expected joined, got {f}");
        f["seq"].as_i64().unwrap()
    }

    /// Expects the next frame to be an event and returns it.
    pub async fn event(&mut self) -> Value {
        let f = self.recv().await;
        assert_eq!(f["op"], "event", "expected an event, got {f}");
        f
    }

    /// Collects `n` events (panics on any other frame).
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.event().await);
        }
        out
    }

    /// Asserts that nothing arrives for a while, and that the connection stays open meanwhile (a client that
    /// was disconnected also "receives nothing").
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => panic!("expected nothing, got {t}"),
                Ok(Some(Ok(Message::Close(f)))) => panic!("expected nothing, but the connection was closed: {f:?}"),
                Ok(None) | Ok(Some(Err(_))) => panic!("expected nothing, but the connection is gone"),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// Asserts the events are exactly seqs `from..=to` of `project`, each once, in order.
pub fn assert_gapless(events: &[Value], project: Uuid, from: i64, to: i64) {
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (from..=to).collect();
    if seqs != expected {
        let first_bad = seqs.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "seqs are not exactly {from}..={to}: got {} events, first difference at index {first_bad:?}",
            seqs.len()
        );
    }
    for e in events {
        assert_eq!(e["project"], json!(project), "event of another project: {e}");
    }
}

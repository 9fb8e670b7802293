//! The system under test: a fresh schema, the bench's user and projects, and the `boardcast` server as a
//! child process (so its memory and CPU can be read from /proc), plus the machine's description.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use uuid::Uuid;

use crate::machine::{cpu_of, rss_of, terminate};
use crate::pg::pg_connect;

/// Drops and recreates the `public` schema of the bench database, then applies the migrations.
pub async fn reset_database(url: &str) -> Result<(), String> {
    let mut client = pg_connect(url).await?;
    client
        .batch_execute(
            "DROP SCHEMA IF EXISTS boardcast CASCADE; DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;",
        )
        .await
        .map_err(|e| format!("reset schema: {e}"))?;
    boardcast::db::migrate(&mut client).await.map_err(|e| format!("migrate: {e}"))?;
    Ok(())
}

pub struct Fixture {
    pub token: String,
    pub projects: Vec<Uuid>,
}

/// One user (with a token) who owns `projects` new projects.
pub async fn fixture(client: &Client, user: &str, projects: usize) -> Result<Fixture, String> {
    let (user_id, token) = boardcast::admin::add_user(client, user).await.map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "INSERT INTO projects (name) SELECT 'bench ' || g FROM generate_series(1, $1::int) g RETURNING id",
            &[&(projects as i32)],
        )
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    client
        .execute(
            "INSERT INTO project_members (project_id, user_id, role) SELECT p, $2, 'owner' FROM unnest($1::uuid[]) p",
            &[&ids, &user_id],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(Fixture { token, projects: ids })
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
}

impl Server {
    /// Starts `bin serve` on a free port and waits until it accepts connections. Its log goes to `log`.
    pub fn spawn(bin: &Path, url: &str, env: &[(String, String)], log: &Path) -> Result<Server, String> {
        let mut child = Command::new(bin)
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("BOARDCAST_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "boardcast=info,warn".into()))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!("cannot start the server {}: {e} (build it: cargo build --release --bins)", bin.display())
            })?;
        let pid = child.id();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                return Err(format!("the server did not start within 30s; see {}", log.display()));
            }
        };
        let addr: SocketAddr = addr.parse().map_err(|e| format!("server address {addr:?}: {e}"))?;
        Ok(Server { child, addr, pid })
    }

    /// Resident memory in bytes (VmRSS).
    pub fn rss(&self) -> u64 {
        rss_of(self.pid)
    }

    /// CPU time used so far (user + system).
    pub fn cpu(&self) -> Duration {
        cpu_of(self.pid)
    }

    /// SIGTERM, then SIGKILL after 15s.
    pub fn stop(mut self) {
        terminate(&mut self.child, Duration::from_secs(15));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Samples `pg_notification_queue_usage()` and the server's RSS until stopped; returns the maxima.
pub struct Sampler {
    stop: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<(f64, u64)>,
}

impl Sampler {
    pub fn start(client: Arc<Client>, pid: Option<u32>) -> Sampler {
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            let mut queue: f64 = 0.0;
            let mut rss = 0u64;
            loop {
                if let Ok(r) = client.query_one("SELECT pg_notification_queue_usage()", &[]).await {
                    queue = queue.max(r.get::<_, f64>(0));
                }
                if let Some(pid) = pid {
                    rss = rss.max(rss_of(pid));
                }
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            (queue, rss)
        });
        Sampler { stop, handle }
    }

    pub async fn finish(self) -> (f64, u64) {
        self.stop.cancel();
        self.handle.await.unwrap_or((0.0, 0))
    }
}

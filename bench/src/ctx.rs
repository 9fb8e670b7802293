//! What every scenario works with: the flags, the bench database with its user and projects, the server
//! under test started as a child process, and CPU accounting over a run's write phase.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::args::Args;
use crate::load::{self, FleetSpec, Shared, WriteOutcome, WriteSpec};
use crate::machine;
use crate::server::Server;

pub struct Ctx {
    pub args: Args,
    pub url: String,
    pub admin: Arc<tokio_postgres::Client>,
    pub token: String,
    pub projects: Vec<Uuid>,
}

impl Ctx {
    pub fn say(&self, msg: impl AsRef<str>) {
        if !self.args.quiet {
            eprintln!("bench: {}", msg.as_ref());
        }
    }

    pub fn spawn_server(&self, tag: &str) -> Result<Server, String> {
        self.spawn_server_with(tag, &self.args.server_bin, &[])
    }

    /// A server from another binary (the bare broadcaster, given the same environment), or with more
    /// environment (after the bench's and `--server-env`), e.g. a fixed `BOARDCAST_ADDR`.
    pub fn spawn_server_with(&self, tag: &str, bin: &Path, extra: &[(String, String)]) -> Result<Server, String> {
        let log = self.args.out.join(format!("server-{tag}.log"));
        let mut env = vec![
            // The bench's clients never go quiet long enough for the defaults to matter; retention would
            // only add noise.
            ("BOARDCAST_RETENTION_INTERVAL_SECS".to_string(), "3600".to_string()),
        ];
        if tag != "abuse" {
            // Thousands of clients share the bench's one user; the per-user cap (64) is for real users, and
            // the abuse scenario, which is about limits, keeps it.
            env.push(("BOARDCAST_MAX_CONNECTIONS_PER_USER".to_string(), "1000000".to_string()));
        }
        env.extend(self.args.server_env.iter().cloned());
        env.extend(extra.iter().cloned());
        let s = Server::spawn(bin, &self.url, &env, &log)?;
        self.say(format!("server pid {} on {} (log {})", s.pid, s.addr, log.display()));
        Ok(s)
    }

    /// The writers' `synchronous_commit` for latency and fan-out runs: `off` unless told otherwise, so that
    /// the WAL flush (which NOTIFY's commit lock serializes across the whole cluster) does not cap the
    /// offered rate; the `writes` scenario measures both.
    pub fn load_sync_commit(&self) -> String {
        self.args.synchronous_commit.clone().unwrap_or_else(|| "off".into())
    }

    fn sources(&self, conns: usize) -> Vec<IpAddr> {
        let n = self.args.source_ips.unwrap_or(conns.div_ceil(25_000)).max(1);
        let first = self.args.source_first.max(1);
        (0..n).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, first.saturating_add(i as u8)))).collect()
    }

    pub fn fleet_spec(&self, server: &Server, rooms: usize, conns: usize) -> FleetSpec {
        FleetSpec {
            addr: server.addr,
            tokens: Arc::new(vec![self.token.clone()]),
            projects: Arc::new(self.projects[..rooms].to_vec()),
            sources: self.sources(conns),
            connect_concurrency: 256,
            buf_size: 4096,
            group_tx: false,
            first: 0,
            reconnect: false,
            wall_clock: false,
        }
    }
}

fn self_cpu() -> Duration {
    machine::cpu_of(std::process::id())
}

pub struct CpuMark {
    at: Instant,
    server: Duration,
    postgres: Duration,
    bench: Duration,
    machine: (u64, u64),
}

impl CpuMark {
    pub fn now(server: Option<&Server>) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            server: server.map(|s| s.cpu()).unwrap_or_default(),
            postgres: machine::postgres_cpu(&[]),
            bench: self_cpu(),
            machine: machine::machine_cpu(),
        }
    }

    /// (server %, postgres %, bench %, machine busy %) of one core; machine busy of all cores. The writers'
    /// backends have exited by now: their CPU time, read just before, is added.
    pub fn since(&self, server: Option<&Server>, writers: &WriteOutcome) -> (f64, f64, f64, f64) {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let mut now = CpuMark::now(server);
        now.postgres = machine::postgres_cpu(&writers.backend_pids) + Duration::from_secs_f64(writers.backend_cpu_secs);
        let pct = |a: Duration, b: Duration| (a.saturating_sub(b)).as_secs_f64() / wall * 100.0;
        let (busy, total) = (now.machine.0 - self.machine.0, now.machine.1 - self.machine.1);
        (
            pct(now.server, self.server),
            pct(now.postgres, self.postgres),
            pct(now.bench, self.bench),
            if total == 0 { 0.0 } else { busy as f64 / total as f64 * 100.0 },
        )
    }
}

/// Runs the writers on a thread of their own (a current-thread runtime), so that client work never delays
/// a send or the reading of a commit acknowledgement.
pub async fn write_on_own_thread(spec: WriteSpec, shared: Arc<Shared>) -> Result<WriteOutcome, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-writers".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = tx.send(rt.block_on(load::write(spec, shared)));
        })
        .map_err(|e| e.to_string())?;
    rx.await.map_err(|e| e.to_string())?
}

//! `boardcast-bench`: the benchmark. It starts the real server as a child process against a dedicated
//! database, connects WebSocket clients that join rooms like any client, writes tasks with plain SQL, and
//! reports throughput, commit-to-client latency, losses, memory and PostgreSQL's own ceiling.
//!
//! Scenarios (`--scenario`):
//!
//! * `latency` — C clients over R rooms, W writers at a fixed offered rate (open loop).
//! * `fanout`  — many clients per room, to push deliveries/s (events × recipients).
//! * `memory`  — server RSS idle and at growing numbers of idle, joined connections; the slope per connection.
//! * `writes`  — the write ceiling: INSERT throughput with nobody listening, with a bare LISTEN connection,
//!   with the server (no clients), and with the server and clients; single-row and bulk transactions.
//! * `all`     — all four, then BENCHMARKS.md and docs/bench/latency.svg are written.
//!
//! See `boardcast-bench --help` for the flags, and BENCHMARKS.md for results.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::poll_fn;
use serde::{Deserialize, Serialize};
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use crate::load::{Fleet, FleetSpec, Shared, WriteOutcome, WriteSpec};
use crate::server::Server;
use crate::{load, report, server};

pub const USAGE: &str = "\
boardcast-bench — load, latency, memory and write-ceiling benchmark for boardcast

USAGE:
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/boardcast_bench boardcast-bench [FLAGS]

The database's public schema is DROPPED and recreated: point DATABASE_URL at a database of its own.

FLAGS:
  --scenario S        latency | fanout | memory | writes | all             (default: all)
  --clients C         WebSocket clients                                     (latency 1000, fanout 10000, writes 100)
  --rooms R           project rooms the clients are spread over             (latency 100, fanout 10, memory 100, writes 100)
  --writers W         SQL writer connections                                (latency 8, fanout 4, writes 8)
  --rate N            offered transactions/s, open loop; 0 = as fast as possible (latency 1000, fanout 300)
  --rows K            rows per transaction (1 = single-row INSERTs)         (1; writes: bulk uses --bulk-rows)
  --bulk-rows K       rows per bulk transaction in `writes`                 (100)
  --duration S        measured seconds per run                              (latency 20, fanout 15, writes 8)
  --warmup S          seconds written before measuring                      (3; writes 1)
  --steps A,B,..      memory: connection counts to measure RSS at           (1000,2000,5000,10000,15000,20000)
  --hold N            memory: connections to try to hold at the end         (50000)
  --source-ips N      loopback source addresses 127.0.0.1..N for clients    (enough for the connection count)
  --threads T         worker threads of the load generator's client runtime (2)
  --server-bin PATH   the boardcast binary                                  (./target/release/boardcast)
  --server-env K=V    extra environment for the server (repeatable), e.g. BOARDCAST_POOL_SIZE=32
  --rounds N          writes: rounds over all modes (interleaved, to spread out noise; the median is reported) (3)
  --synchronous-commit on|off
                      the writers' session setting. Default: off for latency and fanout (so the WAL
                      flush, serialized by NOTIFY's commit lock, does not cap the offered rate);
                      writes measures both the server's setting and off
  --out DIR           where logs and results.json go                        (.bench-out)
  --report            write BENCHMARKS.md and docs/bench/latency.svg (default with --scenario all)
  --no-report         do not
  --json PATH         also write the results as JSON to PATH
  --render PATH       run nothing: write BENCHMARKS.md again from an earlier run's results.json
  --quiet             less progress output

The last line printed is machine-readable: `BENCH_RESULT {json}`.";

#[derive(Debug, Clone)]
pub struct Args {
    pub scenario: String,
    pub clients: Option<usize>,
    pub rooms: Option<usize>,
    pub writers: Option<usize>,
    pub rate: Option<f64>,
    pub rows: Option<usize>,
    pub bulk_rows: usize,
    pub duration: Option<f64>,
    pub warmup: Option<f64>,
    pub steps: Vec<usize>,
    pub hold: usize,
    pub source_ips: Option<usize>,
    pub threads: usize,
    pub server_bin: PathBuf,
    pub server_env: Vec<(String, String)>,
    pub out: PathBuf,
    pub report: Option<bool>,
    pub json: Option<PathBuf>,
    /// Re-render BENCHMARKS.md from a results.json instead of running anything.
    pub render: Option<PathBuf>,
    pub quiet: bool,
    pub rounds: usize,
    pub synchronous_commit: Option<String>,
    pub command: String,
}

impl Args {
    pub fn parse(argv: &[String]) -> Result<Args, String> {
        let mut a = Args {
            scenario: "all".into(),
            clients: None,
            rooms: None,
            writers: None,
            rate: None,
            rows: None,
            bulk_rows: 100,
            duration: None,
            warmup: None,
            steps: vec![1000, 2000, 5000, 10000, 15000, 20000],
            hold: 50_000,
            source_ips: None,
            threads: 2,
            server_bin: server::default_server_bin(),
            server_env: Vec::new(),
            out: PathBuf::from(".bench-out"),
            report: None,
            json: None,
            render: None,
            quiet: false,
            rounds: 3,
            synchronous_commit: None,
            command: std::iter::once("boardcast-bench".to_string())
                .chain(argv.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
        };
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            let mut val = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
            fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
                v.parse().map_err(|_| format!("{flag}: {v:?} is not a number"))
            }
            match flag.as_str() {
                "--scenario" => a.scenario = val()?,
                "--clients" => a.clients = Some(num(flag, val()?)?),
                "--rooms" => a.rooms = Some(num(flag, val()?)?),
                "--writers" => a.writers = Some(num(flag, val()?)?),
                "--rate" => a.rate = Some(num(flag, val()?)?),
                "--rows" => a.rows = Some(num(flag, val()?)?),
                "--bulk-rows" => a.bulk_rows = num(flag, val()?)?,
                "--duration" => a.duration = Some(num(flag, val()?)?),
                "--warmup" => a.warmup = Some(num(flag, val()?)?),
                "--steps" => {
                    a.steps = val()?.split(',').map(|s| num(flag, s.trim().to_string())).collect::<Result<_, _>>()?
                }
                "--hold" => a.hold = num(flag, val()?)?,
                "--source-ips" => a.source_ips = Some(num(flag, val()?)?),
                "--threads" => a.threads = num(flag, val()?)?,
                "--server-bin" => a.server_bin = PathBuf::from(val()?),
                "--server-env" => {
                    let v = val()?;
                    let (k, x) = v.split_once('=').ok_or_else(|| format!("--server-env {v}: expected K=V"))?;
                    a.server_env.push((k.to_string(), x.to_string()));
                }
                "--out" => a.out = PathBuf::from(val()?),
                "--report" => a.report = Some(true),
                "--no-report" => a.report = Some(false),
                "--json" => a.json = Some(PathBuf::from(val()?)),
                "--render" => a.render = Some(PathBuf::from(val()?)),
                "--quiet" => a.quiet = true,
                "--rounds" => a.rounds = num::<usize>(flag, val()?)?.max(1),
                "--synchronous-commit" => {
                    let v = val()?;
                    if !["on", "off", "local", "remote_write", "remote_apply"].contains(&v.as_str()) {
                        return Err(format!("--synchronous-commit {v}: expected on or off"));
                    }
                    a.synchronous_commit = Some(v);
                }
                "-h" | "--help" | "help" => return Err(String::new()),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        if !["latency", "fanout", "memory", "writes", "all"].contains(&a.scenario.as_str()) {
            return Err(format!("unknown scenario {:?}", a.scenario));
        }
        Ok(a)
    }

    fn secs(&self, default: f64) -> Duration {
        Duration::from_secs_f64(self.duration.unwrap_or(default))
    }
}

/// One latency or fan-out run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadRun {
    pub name: String,
    pub clients: usize,
    pub rooms: usize,
    pub writers: usize,
    pub rows_per_tx: usize,
    pub offered_tps: Option<f64>,
    pub achieved_tps: f64,
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub deliveries_per_s: f64,
    pub latency_samples: u64,
    pub early_receipts: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub from_send_p50_ms: f64,
    pub from_send_p99_ms: f64,
    pub synchronous_commit: String,
    pub lost: u64,
    pub duplicates: u64,
    pub disconnected: usize,
    pub other_frames: u64,
    pub drain_ms: u64,
    pub connect_secs: f64,
    pub rss_idle: u64,
    pub rss_connected: u64,
    pub rss_max: u64,
    pub queue_usage_max: f64,
    pub server_cpu_pct: f64,
    pub postgres_cpu_pct: f64,
    pub bench_cpu_pct: f64,
    pub machine_busy_pct: f64,
    pub write: WriteOutcome,
    /// The latency CDF: (µs, fraction).
    #[serde(skip, default)]
    pub cdf: Vec<(u64, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRun {
    pub rooms: usize,
    pub rss_idle: u64,
    /// (connections, RSS bytes)
    pub points: Vec<(usize, u64)>,
    pub slope_bytes_per_conn: f64,
    pub held: usize,
    pub hold_requested: usize,
    pub hold_limit_note: Option<String>,
    pub hold_error: Option<String>,
    pub rss_held: u64,
    pub connect_rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteRun {
    pub synchronous_commit: String,
    pub mode: String,
    pub rows_per_tx: usize,
    pub writers: usize,
    pub tps: f64,
    pub rows_per_s: f64,
    /// Transactions/s of each round (the figure above is their median).
    pub tps_rounds: Vec<f64>,
    /// Clients joined (server+clients only).
    pub clients: Option<usize>,
    pub errors: u64,
    pub lost: Option<u64>,
    pub duplicates: Option<u64>,
    pub notifications: Option<u64>,
    pub server_cpu_pct: Option<f64>,
    pub postgres_cpu_pct: f64,
    pub queue_usage_max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Results {
    pub command: String,
    pub date: String,
    pub machine: Option<server::Machine>,
    pub server_env: Vec<(String, String)>,
    pub load: Vec<LoadRun>,
    pub memory: Option<MemoryRun>,
    pub writes: Vec<WriteRun>,
    pub lost: u64,
    pub duplicates: u64,
    pub errors: Vec<String>,
    /// The hand-written section of BENCHMARKS.md, carried over from the file being replaced.
    #[serde(skip, default)]
    pub notes: Option<String>,
}

struct Ctx {
    args: Args,
    url: String,
    admin: Arc<tokio_postgres::Client>,
    token: String,
    projects: Vec<Uuid>,
}

impl Ctx {
    fn say(&self, msg: impl AsRef<str>) {
        if !self.args.quiet {
            eprintln!("bench: {}", msg.as_ref());
        }
    }

    fn spawn_server(&self, tag: &str) -> Result<Server, String> {
        let log = self.args.out.join(format!("server-{tag}.log"));
        let mut env = vec![
            // The bench's clients never go quiet long enough for the defaults to matter; retention would
            // only add noise.
            ("BOARDCAST_RETENTION_INTERVAL_SECS".to_string(), "3600".to_string()),
        ];
        env.extend(self.args.server_env.iter().cloned());
        let s = Server::spawn(&self.args.server_bin, &self.url, &env, &log)?;
        self.say(format!("server pid {} on {} (log {})", s.pid, s.addr, log.display()));
        Ok(s)
    }

    /// The writers' `synchronous_commit` for latency and fan-out runs: `off` unless told otherwise, so that
    /// the WAL flush (which NOTIFY's commit lock serializes across the whole cluster) does not cap the
    /// offered rate; the `writes` scenario measures both.
    fn load_sync_commit(&self) -> String {
        self.args.synchronous_commit.clone().unwrap_or_else(|| "off".into())
    }

    fn sources(&self, conns: usize) -> Vec<IpAddr> {
        let n = self.args.source_ips.unwrap_or(conns.div_ceil(25_000)).max(1);
        (0..n).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8))).collect()
    }

    fn fleet_spec(&self, server: &Server, rooms: usize, conns: usize) -> FleetSpec {
        FleetSpec {
            addr: server.addr,
            token: self.token.clone(),
            projects: Arc::new(self.projects[..rooms].to_vec()),
            sources: self.sources(conns),
            connect_concurrency: 256,
            buf_size: 4096,
        }
    }
}

fn self_cpu() -> Duration {
    server::cpu_of(std::process::id())
}

struct CpuMark {
    at: Instant,
    server: Duration,
    postgres: Duration,
    bench: Duration,
    machine: (u64, u64),
}

impl CpuMark {
    fn now(server: Option<&Server>) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            server: server.map(|s| s.cpu()).unwrap_or_default(),
            postgres: server::postgres_cpu(&[]),
            bench: self_cpu(),
            machine: server::machine_cpu(),
        }
    }

    /// (server %, postgres %, bench %, machine busy %) of one core; machine busy of all cores. The writers'
    /// backends have exited by now: their CPU time, read just before, is added.
    fn since(&self, server: Option<&Server>, writers: &WriteOutcome) -> (f64, f64, f64, f64) {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let mut now = CpuMark::now(server);
        now.postgres = server::postgres_cpu(&writers.backend_pids) + Duration::from_secs_f64(writers.backend_cpu_secs);
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
async fn write_on_own_thread(spec: WriteSpec, shared: Arc<Shared>) -> Result<WriteOutcome, String> {
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

pub async fn main(args: Args) -> Result<Results, String> {
    if let Some(path) = &args.render {
        // The figures of an earlier run, written again (the report's layout or its arithmetic changed). The
        // latency plot needs the full distributions, which results.json does not keep: it stays as it is.
        let json = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let results: Results = serde_json::from_str(&json).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{}", report::text(&results));
        report::write_files(&results).map_err(|e| format!("writing the report: {e}"))?;
        eprintln!("bench: wrote BENCHMARKS.md from {}", path.display());
        return Ok(results);
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let limit = boardcast::process::raise_open_file_limit();
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "DATABASE_URL is not set (make bench sets it to the boardcast_bench database)".to_string())?;
    let mut results = Results {
        command: args.command.clone(),
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        server_env: args.server_env.clone(),
        ..Default::default()
    };
    eprintln!("bench: {}", args.command);
    eprintln!("bench: open-file limit {limit}; resetting the schema of {url}");
    server::reset_database(&url).await?;
    let admin = Arc::new(load::pg_connect(&url).await?);
    results.machine = Some(server::machine(&admin).await);
    let all = args.scenario == "all";
    let max_rooms = [args.rooms.unwrap_or(100), 100].into_iter().max().unwrap();
    let fx = server::fixture(&admin, "bench", max_rooms).await?;
    let ctx = Ctx { args: args.clone(), url, admin, token: fx.token, projects: fx.projects };

    if all || args.scenario == "latency" {
        let run = load_run(&ctx, "latency", 1000, 100, 8, Some(1000.0), 20.0).await?;
        results.load.push(run);
    }
    if all || args.scenario == "fanout" {
        let run = load_run(&ctx, "fanout", 10_000, 10, 4, Some(300.0), 15.0).await?;
        results.load.push(run);
    }
    if all || args.scenario == "memory" {
        results.memory = Some(memory_run(&ctx).await?);
    }
    if all || args.scenario == "writes" {
        results.writes = writes_run(&ctx).await?;
    }
    results.lost =
        results.load.iter().map(|r| r.lost).sum::<u64>() + results.writes.iter().filter_map(|w| w.lost).sum::<u64>();
    results.duplicates = results.load.iter().map(|r| r.duplicates).sum::<u64>()
        + results.writes.iter().filter_map(|w| w.duplicates).sum::<u64>();

    let json = serde_json::to_string_pretty(&results).unwrap();
    let _ = std::fs::write(args.out.join("results.json"), &json);
    if let Some(p) = &args.json {
        std::fs::write(p, &json).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    println!("{}", report::text(&results));
    if args.report.unwrap_or(all) {
        report::write_files(&results).map_err(|e| format!("writing the report: {e}"))?;
        eprintln!("bench: wrote BENCHMARKS.md and docs/bench/latency.svg");
    }
    Ok(results)
}

/// Latency and fan-out: C clients over R rooms, W writers at an offered rate.
async fn load_run(
    ctx: &Ctx,
    name: &str,
    clients: usize,
    rooms: usize,
    writers: usize,
    rate: Option<f64>,
    duration: f64,
) -> Result<LoadRun, String> {
    let a = &ctx.args;
    let clients = a.clients.unwrap_or(clients);
    let rooms = a.rooms.unwrap_or(rooms).min(ctx.projects.len()).max(1);
    let writers = a.writers.unwrap_or(writers).max(1);
    let rate = match a.rate {
        Some(r) if r <= 0.0 => None,
        Some(r) => Some(r),
        None => rate,
    };
    let duration = a.secs(duration);
    let warmup = Duration::from_secs_f64(a.warmup.unwrap_or(3.0));
    let rows = a.rows.unwrap_or(1).max(1);
    ctx.say(format!(
        "{name}: {clients} clients in {rooms} rooms, {writers} writers, {} tx/s offered x {rows} rows, {duration:?} (+{warmup:?} warm-up)",
        rate.map(|r| format!("{r}")).unwrap_or_else(|| "max".into())
    ));

    let server = ctx.spawn_server(name)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = server.rss();
    let capacity = match rate {
        Some(r) => (r * (duration + warmup).as_secs_f64() * 1.1) as usize + 1000,
        None => 4_000_000,
    };
    let shared = Shared::new(capacity);
    let mut fleet = Fleet::new(shared.clone(), rooms);
    let t = Instant::now();
    fleet.grow(&ctx.fleet_spec(&server, rooms, clients), clients, Duration::from_secs(120)).await?;
    let connect_secs = t.elapsed().as_secs_f64();
    ctx.say(format!("{name}: {clients} clients joined in {connect_secs:.1}s"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = server.rss();

    let sampler = server::Sampler::start(ctx.admin.clone(), Some(server.pid));
    let mark = CpuMark::now(Some(&server));
    let spec = WriteSpec {
        url: ctx.url.clone(),
        projects: Arc::new(ctx.projects[..rooms].to_vec()),
        writers,
        rate,
        duration,
        warmup,
        rows,
        setup: Some(format!("SET synchronous_commit = {}", ctx.load_sync_commit())),
    };
    let write = write_on_own_thread(spec, shared.clone()).await?;
    let (server_cpu, pg_cpu, bench_cpu, busy) = mark.since(Some(&server), &write);
    let finals = load::final_seqs(&ctx.admin, &ctx.projects[..rooms]).await?;
    let (outcomes, drained) = fleet.finish(&finals, Duration::from_secs(60)).await;
    let (queue, rss_max) = sampler.finish().await;
    let early = shared.resolve_pending();
    let v = load::verdict(&outcomes, &finals);
    server.stop();

    let per_room: Vec<u64> = (0..rooms).map(|r| outcomes.iter().filter(|o| o.project == r).count() as u64).collect();
    // Every client should see every event of its room after its join.
    let expected: u64 =
        outcomes.iter().map(|o| (finals[o.project] - o.joined_seq).max(0) as u64).sum::<u64>().max(v.received);
    let _ = per_room;
    let span = shared.last_recv.load(Ordering::Relaxed).saturating_sub(shared.first_recv.load(Ordering::Relaxed));
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let h = &shared.latency;
    let ms = |us: u64| us as f64 / 1000.0;
    let run = LoadRun {
        name: name.to_string(),
        clients,
        rooms,
        writers,
        rows_per_tx: rows,
        offered_tps: rate,
        achieved_tps: write.window_transactions as f64 / write.window_secs,
        deliveries,
        expected_deliveries: expected,
        deliveries_per_s: if span > 0 { deliveries as f64 / (span as f64 / 1e9) } else { 0.0 },
        latency_samples: h.count(),
        early_receipts: early,
        p50_ms: ms(h.quantile(0.5)),
        p99_ms: ms(h.quantile(0.99)),
        p999_ms: ms(h.quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
        from_send_p50_ms: ms(shared.from_send.quantile(0.5)),
        from_send_p99_ms: ms(shared.from_send.quantile(0.99)),
        synchronous_commit: ctx.load_sync_commit(),
        lost: v.lost,
        duplicates: v.duplicates,
        disconnected: v.disconnected,
        other_frames: v.other_frames,
        drain_ms: drained.as_millis() as u64,
        connect_secs,
        rss_idle,
        rss_connected,
        rss_max,
        queue_usage_max: queue,
        server_cpu_pct: server_cpu,
        postgres_cpu_pct: pg_cpu,
        bench_cpu_pct: bench_cpu,
        machine_busy_pct: busy,
        write,
        cdf: h.cdf(),
    };
    ctx.say(report::load_line(&run));
    if v.disconnected > 0 {
        let first = outcomes.iter().find_map(|o| o.error.clone()).unwrap_or_default();
        ctx.say(format!("{name}: {} clients were disconnected; first: {first}", v.disconnected));
    }
    Ok(run)
}

/// Server RSS idle and at growing numbers of idle, joined connections.
async fn memory_run(ctx: &Ctx) -> Result<MemoryRun, String> {
    let a = &ctx.args;
    let rooms = a.rooms.unwrap_or(100).min(ctx.projects.len()).max(1);
    let (soft, _) = boardcast::process::open_file_limit();
    // Both this process and the server (which inherits the limit) hold one descriptor per connection.
    let cap = (soft as usize).saturating_sub(400);
    let hold_requested = a.hold;
    let hold = hold_requested.min(cap);
    let note = (hold < hold_requested).then(|| {
        format!(
            "{hold_requested} requested; capped at {hold} by the open-file limit ({soft}; the hard limit cannot be raised here) of the server and the load generator"
        )
    });
    let mut steps: Vec<usize> = a.steps.iter().copied().filter(|&s| s <= hold).collect();
    steps.sort_unstable();
    steps.dedup();
    if steps.last() != Some(&hold) && steps.last().is_some_and(|&l| l < hold) && hold - steps.last().unwrap() > 0 {
        // the hold is measured as a last point if it is above the steps
    }
    ctx.say(format!("memory: {rooms} rooms, steps {steps:?}, then hold {hold}"));
    let server = ctx.spawn_server("memory")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = server.rss();
    let shared = Shared::new(0);
    let mut fleet = Fleet::new(shared, rooms);
    let spec = ctx.fleet_spec(&server, rooms, hold);
    let mut points = Vec::new();
    let t = Instant::now();
    let mut connected_time = Duration::ZERO;
    for &n in &steps {
        let t0 = Instant::now();
        fleet.grow(&spec, n, Duration::from_secs(300)).await?;
        connected_time += t0.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = server.rss();
        ctx.say(format!("memory: {n} connections: server RSS {:.1} MiB", rss as f64 / 1048576.0));
        points.push((n, rss));
    }
    let mut hold_error = None;
    let mut held = fleet.joined();
    if hold > held {
        let t0 = Instant::now();
        match fleet.grow(&spec, hold, Duration::from_secs(300)).await {
            Ok(()) => {}
            Err(e) => hold_error = Some(e),
        }
        connected_time += t0.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        held = fleet.joined();
        let rss = server.rss();
        ctx.say(format!("memory: held {held} connections: server RSS {:.1} MiB", rss as f64 / 1048576.0));
        if hold_error.is_none() {
            points.push((held, rss));
        }
    }
    // Still alive after a while? Hold a few seconds and count again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_held = server.rss();
    let _ = t;
    fleet.close().await;
    server.stop();
    let fit: Vec<(f64, f64)> = points.iter().filter(|p| p.0 >= 1000).map(|&(n, r)| (n as f64, r as f64)).collect();
    let slope = slope(&fit);
    let run = MemoryRun {
        rooms,
        rss_idle,
        points,
        slope_bytes_per_conn: slope,
        held,
        hold_requested,
        hold_limit_note: note,
        hold_error,
        rss_held,
        connect_rate: held as f64 / connected_time.as_secs_f64().max(1e-9),
    };
    ctx.say(format!("memory: slope {:.2} KiB per connection", slope / 1024.0));
    Ok(run)
}

/// Least-squares slope of y over x.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The write ceiling: closed-loop INSERTs in five settings, single-row and bulk, in interleaved rounds.
async fn writes_run(ctx: &Ctx) -> Result<Vec<WriteRun>, String> {
    let a = &ctx.args;
    let writers = a.writers.unwrap_or(8).max(1);
    let rooms = a.rooms.unwrap_or(100).min(ctx.projects.len()).max(1);
    let clients = a.clients.unwrap_or(rooms);
    let duration = a.secs(5.0);
    let warmup = Duration::from_secs_f64(a.warmup.unwrap_or(1.0));
    let kinds = [1usize, a.bulk_rows.max(2)];
    let projects = Arc::new(ctx.projects[..rooms].to_vec());
    const MODES: [&str; 5] = ["no-feed", "none", "bare-listener", "server", "server+clients"];
    // (mode, rows) -> per-round figures
    let mut acc: Vec<WriteRun> = Vec::new();
    let settings: Vec<String> = match &a.synchronous_commit {
        Some(v) => vec![v.clone()],
        None => {
            let r = ctx.admin.query_one("SHOW synchronous_commit", &[]).await.map_err(|e| e.to_string())?;
            let default: String = r.get(0);
            if default == "off" { vec![default] } else { vec![default, "off".into()] }
        }
    };
    let mut tps: std::collections::HashMap<(String, usize, usize), Vec<f64>> = Default::default();
    for sync in &settings {
        for round in 0..a.rounds {
            for (mi, mode) in MODES.iter().enumerate() {
                ctx.say(format!(
                "writes: synchronous_commit={sync}, round {}/{}, {mode}: {writers} writers, {rooms} projects, {duration:?} per kind",
                round + 1,
                a.rounds
            ));
                let mut bare = None;
                let mut server = None;
                let mut fleet = None;
                match *mode {
                    "no-feed" => ctx
                        .admin
                        .batch_execute("ALTER TABLE tasks DISABLE TRIGGER tasks_feed_insert")
                        .await
                        .map_err(|e| e.to_string())?,
                    "bare-listener" => bare = Some(bare_listener(&ctx.url).await?),
                    "server" | "server+clients" => {
                        let s = ctx.spawn_server(&format!("writes-{}", mode.replace('+', "-")))?;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if *mode == "server+clients" {
                            let mut f = Fleet::new(Shared::new(0), rooms);
                            f.grow(&ctx.fleet_spec(&s, rooms, clients), clients, Duration::from_secs(120)).await?;
                            fleet = Some(f);
                        }
                        server = Some(s);
                    }
                    _ => {}
                }
                for (ki, &rows) in kinds.iter().enumerate() {
                    let sampler = server::Sampler::start(ctx.admin.clone(), server.as_ref().map(|s: &Server| s.pid));
                    let mark = CpuMark::now(server.as_ref());
                    let spec = WriteSpec {
                        url: ctx.url.clone(),
                        projects: projects.clone(),
                        writers,
                        rate: None,
                        duration,
                        warmup,
                        rows,
                        setup: Some(format!("SET synchronous_commit = {sync}")),
                    };
                    let w = write_on_own_thread(spec, Shared::new(0)).await?;
                    let (server_cpu, pg_cpu, _, _) = mark.since(server.as_ref(), &w);
                    let (queue, _) = sampler.finish().await;
                    let t = w.window_transactions as f64 / w.window_secs;
                    ctx.say(format!(
                        "writes: {mode}, {rows} rows/tx: {t:.0} tx/s, {:.0} rows/s, postgres CPU {pg_cpu:.0}%{}",
                        w.window_rows as f64 / w.window_secs,
                        server.as_ref().map(|_| format!(", server CPU {server_cpu:.0}%")).unwrap_or_default()
                    ));
                    if let Some(e) = &w.first_error {
                        ctx.say(format!("writes: first error: {e}"));
                    }
                    tps.entry((sync.clone(), mi, ki)).or_default().push(t);
                    let run = WriteRun {
                        synchronous_commit: sync.clone(),
                        mode: mode.to_string(),
                        rows_per_tx: rows,
                        writers,
                        tps: t,
                        rows_per_s: t * rows as f64,
                        tps_rounds: Vec::new(),
                        clients: fleet.as_ref().map(|_| clients),
                        errors: w.errors,
                        lost: None,
                        duplicates: None,
                        notifications: None,
                        server_cpu_pct: server.as_ref().map(|_| server_cpu),
                        postgres_cpu_pct: pg_cpu,
                        queue_usage_max: queue,
                    };
                    match acc
                        .iter_mut()
                        .find(|r| r.synchronous_commit == *sync && r.mode == *mode && r.rows_per_tx == rows)
                    {
                        None => acc.push(run),
                        Some(r) => {
                            // Keep running sums; averaged below.
                            r.errors += run.errors;
                            r.postgres_cpu_pct += run.postgres_cpu_pct;
                            r.server_cpu_pct = r.server_cpu_pct.zip(run.server_cpu_pct).map(|(x, y)| x + y);
                            r.queue_usage_max = r.queue_usage_max.max(run.queue_usage_max);
                        }
                    }
                }
                if *mode == "no-feed" {
                    ctx.admin
                        .batch_execute("ALTER TABLE tasks ENABLE TRIGGER tasks_feed_insert")
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if let Some((h, n, stop)) = bare {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    stop.cancel();
                    let _ = h.await;
                    let got = n.load(Ordering::Relaxed);
                    for r in acc.iter_mut().filter(|r| r.synchronous_commit == *sync && r.mode == *mode) {
                        *r.notifications.get_or_insert(0) += got;
                    }
                }
                if let Some(f) = fleet {
                    let finals = load::final_seqs(&ctx.admin, &projects).await?;
                    let (outcomes, _) = f.finish(&finals, Duration::from_secs(60)).await;
                    let v = load::verdict(&outcomes, &finals);
                    ctx.say(format!(
                        "writes: server+clients: {} deliveries, lost {}, duplicated {}",
                        v.received, v.lost, v.duplicates
                    ));
                    for r in acc.iter_mut().filter(|r| r.synchronous_commit == *sync && r.mode == *mode) {
                        *r.lost.get_or_insert(0) += v.lost;
                        *r.duplicates.get_or_insert(0) += v.duplicates;
                    }
                }
                if let Some(s) = server {
                    s.stop();
                }
            }
        }
    }
    let n = a.rounds as f64;
    for r in &mut acc {
        let mi = MODES.iter().position(|m| *m == r.mode).unwrap();
        let ki = kinds.iter().position(|k| *k == r.rows_per_tx).unwrap();
        let v = &tps[&(r.synchronous_commit.clone(), mi, ki)];
        r.tps = median(v);
        r.rows_per_s = r.tps * r.rows_per_tx as f64;
        r.tps_rounds = v.clone();
        r.postgres_cpu_pct /= n;
        r.server_cpu_pct = r.server_cpu_pct.map(|c| c / n);
    }
    Ok(acc)
}

/// The median: one disturbed round (the database is shared with the machine's other users) moves it less
/// than the mean.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// A plain connection that LISTENs on the feed channel and only counts notifications.
async fn bare_listener(
    url: &str,
) -> Result<(tokio::task::JoinHandle<()>, Arc<AtomicU64>, tokio_util::sync::CancellationToken), String> {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await.map_err(|e| e.to_string())?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let (c, s) = (count.clone(), stop.clone());
    let driver = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = s.cancelled() => return,
                m = poll_fn(|cx| conn.poll_message(cx)) => match m {
                    Some(Ok(AsyncMessage::Notification(_))) => { c.fetch_add(1, Ordering::Relaxed); }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }
    });
    client.batch_execute("LISTEN boardcast_feed").await.map_err(|e| e.to_string())?;
    // Keep the client alive as long as the driver runs.
    let handle = tokio::spawn(async move {
        let _client = client;
        let _ = driver.await;
    });
    Ok((handle, count, stop))
}

//! The `scale-out` and `reconnect-storm` scenarios (issue #20): past one process. Several `boardcast serve`
//! processes on one database behind nginx (started by the bench, see [`crate::nginx`]), the clients held by
//! load-generator child processes ([`crate::children`]), every room fed by plain SQL writes, every client
//! checked gapless as in the latency run.
//!
//! * `scale-out` (50,000 clients by default): what it takes to hold them: each server's share and RSS per
//!   connection, nginx's CPU and RSS, deliveries and their latency.
//! * `reconnect-storm` (20,000 clients by default): the same cluster; three seconds into the measured writes
//!   the first server gets SIGTERM (its clients are told 1012) and is started again on its address once it
//!   has exited. Its clients reconnect through nginx with the JavaScript client's backoff and join with
//!   `since` and `since_at`; nginx sends them to the servers that are up (least_conn; a refused connection
//!   goes to the next server). Measured: until every one of them has resumed and caught up
//!   (reached the `latest` of its `joined`), the database connections meanwhile, the writes' throughput, and
//!   nothing lost across the reconnection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::children::{ChildOutcome, Children};
use crate::ctx::{Ctx, write_on_own_thread};
use crate::hist::Histogram;
use crate::load::{self, Shared, WriteOutcome, WriteSpec, wall_us};
use crate::machine::{self, cpu_of, fds_of};
use crate::nginx::{self, Nginx};
use crate::pg::pg_connect;
use crate::results::{NginxCost, ScaleRun, ServerShare, StormRun};
use crate::server::Server;

/// A scenario's defaults (the flags override them).
struct Plan {
    name: &'static str,
    clients: usize,
    duration: f64,
    /// Offered tx/s: both scenarios offer 20,000 deliveries/s (tx/s × clients per room).
    rate: f64,
    restart: bool,
}

const SCALE_OUT: Plan = Plan { name: "scale-out", clients: 50_000, duration: 15.0, rate: 40.0, restart: false };
const STORM: Plan = Plan { name: "reconnect-storm", clients: 20_000, duration: 20.0, rate: 100.0, restart: true };
/// When the server is restarted: this long into the measured writes.
const RESTART_AFTER: Duration = Duration::from_secs(3);
/// Each server's pool, unless `--server-env BOARDCAST_POOL_SIZE=..` says otherwise.
const POOL_SIZE: &str = "4";

pub async fn scale_out(ctx: &Ctx) -> Result<ScaleRun, String> {
    run(ctx, SCALE_OUT).await
}

pub async fn reconnect_storm(ctx: &Ctx) -> Result<ScaleRun, String> {
    run(ctx, STORM).await
}

/// When the storm's events happened (wall-clock µs).
struct Restart {
    sigterm_us: u64,
    exited_us: u64,
    listening_us: u64,
    /// The stopped server's CPU time over the write phase, read just before its SIGTERM.
    cpu: Duration,
}

async fn run(ctx: &Ctx, plan: Plan) -> Result<ScaleRun, String> {
    let a = &ctx.args;
    let name = plan.name;
    let mut r = ScaleRun {
        servers: a.servers.max(1),
        clients: a.clients.unwrap_or(plan.clients),
        rooms: a.rooms.unwrap_or(100).min(ctx.projects.len()).max(1),
        writers: a.writers.unwrap_or(4).max(1),
        offered_tps: a.rate.filter(|r| *r > 0.0).unwrap_or(plan.rate),
        synchronous_commit: ctx.load_sync_commit(),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        ..Default::default()
    };
    let (duration, warmup) = (a.secs(plan.duration), Duration::from_secs_f64(a.warmup.unwrap_or(3.0)));
    ctx.say(format!(
        "{name}: {} servers behind nginx, {} clients in {} rooms, {} writers at {} tx/s, {duration:?} (+{warmup:?} warm-up); load average {}",
        r.servers, r.clients, r.rooms, r.writers, r.offered_tps, r.load_average
    ));

    // PostgreSQL's max_connections (100 here) is shared by every server's pool and listener, and by the other
    // users of the machine: a smaller pool than the default 16, unless --server-env says otherwise.
    let given = a.server_env.iter().find(|(k, _)| k == "BOARDCAST_POOL_SIZE").map(|x| x.1.clone());
    let pool = match &given {
        Some(_) => vec![],
        None => vec![("BOARDCAST_POOL_SIZE".to_string(), POOL_SIZE.to_string())],
    };
    r.pool_size = given.unwrap_or_else(|| POOL_SIZE.to_string());
    let mut servers = Vec::new();
    for k in 0..r.servers {
        servers.push(ctx.spawn_server_with(&format!("{name}-{k}"), &ctx.args.server_bin, &pool)?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: Vec<(u64, u64)> = servers.iter().map(|s| (s.rss(), fds_of(s.pid))).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let workers = r.clients.div_ceil(nginx::CLIENTS_PER_WORKER).max(2);
    let lb = Nginx::start(&a.nginx, &a.out.join(format!("nginx-{name}")), &addrs, workers)?;
    ctx.say(format!("{name}: nginx on {} with {workers} workers", lb.addr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.nginx = NginxCost { workers, rss_idle: lb.rss(), ..Default::default() };
    r.nginx_conf = lb.conf.clone();

    let t = Instant::now();
    let mut children =
        Children::spawn(lb.addr, &ctx.token, &ctx.projects[..r.rooms], r.clients, a.clients_per_process, plan.restart)
            .await?;
    r.load_processes = children.len();
    let (joined, error) = children.grown().await?;
    r.joined = joined;
    if let Some(e) = error {
        // Measured with the clients that did join; the report says how many of those asked for.
        ctx.say(format!("{name}: only {joined} of {} clients joined: {e}", r.clients));
        r.join_error = Some(e);
    }
    r.connect_secs = t.elapsed().as_secs_f64();
    ctx.say(format!(
        "{name}: {} clients joined in {:.1} s from {} processes",
        r.joined, r.connect_secs, r.load_processes
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.per_server = servers
        .iter()
        .zip(&idle)
        .map(|(s, &(rss, fds))| ServerShare {
            connections: fds_of(s.pid).saturating_sub(fds),
            rss_idle: rss,
            rss_connected: s.rss(),
        })
        .collect();
    let grown: u64 = r.per_server.iter().map(|s| s.rss_connected.saturating_sub(s.rss_idle)).sum();
    r.rss_per_conn_bytes = grown as f64 / r.joined.max(1) as f64;
    r.nginx.rss_connected = lb.rss();
    for (k, s) in r.per_server.iter().enumerate() {
        ctx.say(format!(
            "{name}: server {k}: {} connections, RSS {:.1} → {:.1} MiB",
            s.connections,
            s.rss_idle as f64 / 1048576.0,
            s.rss_connected as f64 / 1048576.0
        ));
    }
    ctx.say(format!(
        "{name}: {:.2} KiB per connection (servers); nginx RSS {:.1} → {:.1} MiB",
        r.rss_per_conn_bytes / 1024.0,
        r.nginx.rss_idle as f64 / 1048576.0,
        r.nginx.rss_connected as f64 / 1048576.0
    ));

    // The writes, and the restart during them.
    let sampler = DbSampler::start(&ctx.url).await?;
    let cpu0 = Cpu::read(&servers, &lb, &children.pids);
    let rate = r.offered_tps;
    let shared = Shared::new((rate * (duration + warmup).as_secs_f64() * 1.1) as usize + 1000);
    let spec = WriteSpec {
        url: ctx.url.clone(),
        projects: Arc::new(ctx.projects[..r.rooms].to_vec()),
        writers: r.writers,
        rate: Some(rate),
        duration,
        warmup,
        rows: 1,
        setup: Some(format!("SET synchronous_commit = {}", r.synchronous_commit)),
        start: None,
    };
    let writing = tokio::spawn(write_on_own_thread(spec, shared));
    let restart = if plan.restart {
        tokio::time::sleep(warmup + RESTART_AFTER).await;
        let stopped = servers.remove(0);
        let cpu = cpu_of(stopped.pid).saturating_sub(cpu0.servers.first().copied().unwrap_or_default());
        let sigterm_us = wall_us();
        ctx.say(format!("{name}: SIGTERM to server 0 (pid {})", stopped.pid));
        let addr = stopped.addr;
        tokio::task::block_in_place(|| stopped.stop());
        let exited_us = wall_us();
        let mut env = pool.clone();
        env.push(("BOARDCAST_ADDR".to_string(), addr.to_string()));
        let again = tokio::task::block_in_place(|| {
            ctx.spawn_server_with(&format!("{name}-0-restarted"), &ctx.args.server_bin, &env)
        })?;
        let listening_us = wall_us();
        ctx.say(format!(
            "{name}: server 0 exited {:.0} ms after SIGTERM, listening again {:.0} ms later",
            (exited_us - sigterm_us) as f64 / 1000.0,
            (listening_us - exited_us) as f64 / 1000.0
        ));
        servers.insert(0, again);
        Some(Restart { sigterm_us, exited_us, listening_us, cpu })
    } else {
        None
    };
    let write: WriteOutcome = writing.await.map_err(|e| e.to_string())??;
    // Server 0 restarted: its descriptors count from none (it has no idle reading of its own).
    let after: Vec<u64> = (servers.iter().zip(&idle))
        .enumerate()
        .map(|(k, (s, &(_, fds)))| fds_of(s.pid).saturating_sub(if restart.is_some() && k == 0 { 0 } else { fds }))
        .collect();
    let cpu1 = Cpu::read(&servers, &lb, &children.pids);
    cpu_figures(&mut r, &cpu0, &cpu1, &write, restart.as_ref());
    r.nginx.cpu_pct = cpu1.nginx.saturating_sub(cpu0.nginx).as_secs_f64() / cpu1.wall(&cpu0) * 100.0;
    r.achieved_tps = write.window_transactions as f64 / write.window_secs;
    (r.write_ack_p50_ms, r.write_ack_p99_ms) = (write.ack_p50_us as f64 / 1000.0, write.ack_p99_us as f64 / 1000.0);
    if write.errors > 0 {
        ctx.say(format!("{name}: {} writes failed; first: {:?}", write.errors, write.first_error));
    }

    let finals = load::final_seqs(&ctx.admin, &ctx.projects[..r.rooms]).await?;
    let outcomes = children.finish(&finals).await?;
    let samples = sampler.finish().await;
    lb.stop();
    for s in servers {
        s.stop();
    }
    deliveries(&mut r, &outcomes);
    r.nginx.cpu_us_per_delivery =
        if r.deliveries_per_s > 0.0 { r.nginx.cpu_pct / 100.0 / r.deliveries_per_s * 1e6 } else { 0.0 };
    if let Some(restart) = &restart {
        r.storm = Some(StormRun { connections_after: after, ..storm(restart, &outcomes, &samples) });
    }
    ctx.say(crate::scale_report::line(&r));
    Ok(r)
}

/// CPU time of what a run measures, read at one instant.
struct Cpu {
    at: Instant,
    servers: Vec<Duration>,
    nginx: Duration,
    children: Duration,
    postgres: Duration,
    machine: (u64, u64),
}

impl Cpu {
    fn read(servers: &[Server], lb: &Nginx, children: &[u32]) -> Cpu {
        Cpu {
            at: Instant::now(),
            servers: servers.iter().map(|s| s.cpu()).collect(),
            nginx: lb.cpu(),
            children: children.iter().map(|&p| cpu_of(p)).sum(),
            postgres: machine::postgres_cpu(&[]),
            machine: machine::machine_cpu(),
        }
    }

    fn wall(&self, before: &Cpu) -> f64 {
        (self.at - before.at).as_secs_f64().max(1e-9)
    }
}

/// Server, PostgreSQL and load-generator CPU as % of one core; the restarted server's (before its SIGTERM
/// and since its start again) counts in the servers'.
fn cpu_figures(r: &mut ScaleRun, c0: &Cpu, c1: &Cpu, write: &WriteOutcome, restart: Option<&Restart>) {
    let wall = c1.wall(c0);
    let pct = |d: Duration| d.as_secs_f64() / wall * 100.0;
    let mut servers: Duration = match restart {
        // Server 0 is the restarted one: all of its CPU is from the write phase.
        Some(x) => {
            x.cpu
                + c1.servers[0]
                + c1.servers[1..].iter().zip(&c0.servers[1..]).map(|(a, b)| a.saturating_sub(*b)).sum::<Duration>()
        }
        None => c1.servers.iter().zip(&c0.servers).map(|(a, b)| a.saturating_sub(*b)).sum(),
    };
    servers = servers.max(Duration::ZERO);
    r.server_cpu_pct = pct(servers);
    // The writers' backends have exited: their CPU, read just before, is added.
    let postgres = machine::postgres_cpu(&write.backend_pids) + Duration::from_secs_f64(write.backend_cpu_secs);
    r.postgres_cpu_pct = pct(postgres.saturating_sub(c0.postgres));
    r.load_generator_cpu_pct = pct(c1.children.saturating_sub(c0.children));
    let (busy, total) = (c1.machine.0 - c0.machine.0, c1.machine.1 - c0.machine.1);
    r.machine_busy_pct = if total == 0 { 0.0 } else { busy as f64 / total as f64 * 100.0 };
}

/// What the clients received, from every child.
fn deliveries(r: &mut ScaleRun, outcomes: &[ChildOutcome]) {
    let latency = Histogram::new();
    for o in outcomes {
        r.deliveries += o.received;
        r.expected_deliveries += o.expected;
        r.lost += o.lost;
        r.duplicates += o.duplicates;
        r.disconnected += o.disconnected;
        if r.first_error.is_none() {
            r.first_error = o.first_error.clone();
        }
        latency.merge(&o.latency);
    }
    let first = outcomes.iter().map(|o| o.first_recv_us).filter(|&t| t > 0).min().unwrap_or(0);
    let last = outcomes.iter().map(|o| o.last_recv_us).max().unwrap_or(0);
    r.deliveries_per_s = if last > first { r.deliveries as f64 / ((last - first) as f64 / 1e6) } else { 0.0 };
    let ms = |us: u64| us as f64 / 1000.0;
    (r.p50_ms, r.p99_ms, r.max_ms) = (ms(latency.quantile(0.5)), ms(latency.quantile(0.99)), ms(latency.max()));
}

/// The storm's figures: the clients' resumes, and what the database saw meanwhile.
fn storm(x: &Restart, outcomes: &[ChildOutcome], samples: &[Sample]) -> StormRun {
    let (outage, to_resume) = (Histogram::new(), Histogram::new());
    let mut s = StormRun {
        stop_ms: (x.exited_us - x.sigterm_us) as f64 / 1000.0,
        start_ms: (x.listening_us - x.exited_us) as f64 / 1000.0,
        ..Default::default()
    };
    let (mut last_resumed, mut last_caught_up) = (0u64, 0u64);
    // 100 ms slots of the wall clock, counted into 500 ms slots from the SIGTERM's.
    let slot = |at: u64| (at * 100_000).saturating_sub(x.sigterm_us) as usize / 500_000;
    let add = |v: &mut Vec<u64>, at: u64, n: u64| {
        let i = slot(at);
        if v.len() <= i {
            v.resize(i + 1, 0);
        }
        v[i] += n;
    };
    for o in outcomes.iter().map(|o| &o.resume) {
        s.clients_resumed += o.clients;
        s.disconnects += o.disconnects;
        s.attempts += o.attempts;
        s.not_caught_up += o.not_caught_up;
        last_resumed = last_resumed.max(o.last_resumed_us);
        last_caught_up = last_caught_up.max(o.last_caught_up_us);
        outage.merge(&o.outage);
        to_resume.merge(&o.to_resume);
        for &(at, n) in &o.disconnected_at {
            add(&mut s.disconnected_per_500ms, at, n);
        }
        for &(at, n) in &o.resumed_at {
            add(&mut s.resumed_per_500ms, at, n);
        }
    }
    let since = |t: u64| t.saturating_sub(x.sigterm_us) as f64 / 1000.0;
    s.all_resumed_ms = since(last_resumed);
    s.all_caught_up_ms = since(last_caught_up);
    let ms = |us: u64| us as f64 / 1000.0;
    (s.outage_p50_ms, s.outage_p99_ms, s.outage_max_ms) =
        (ms(outage.quantile(0.5)), ms(outage.quantile(0.99)), ms(outage.max()));
    (s.to_resume_p50_ms, s.to_resume_p99_ms) = (ms(to_resume.quantile(0.5)), ms(to_resume.quantile(0.99)));
    let end = last_caught_up.max(x.listening_us) + 200_000;
    let before = |p: &Sample| p.at_us + 2_000_000 >= x.sigterm_us && p.at_us < x.sigterm_us;
    let during = |p: &Sample| p.at_us >= x.sigterm_us && p.at_us <= end;
    let max =
        |f: &dyn Fn(&Sample) -> bool, g: fn(&Sample) -> i64| samples.iter().filter(|p| f(p)).map(g).max().unwrap_or(0);
    s.db_connections_before = max(&before, |p| p.connections);
    s.db_connections_storm = max(&during, |p| p.connections);
    s.db_server_connections_before = max(&before, |p| p.servers);
    s.db_server_connections_storm = max(&during, |p| p.servers);
    s.db_active_storm = max(&during, |p| p.active);
    s.tps_before = events_per_s(samples, x.sigterm_us.saturating_sub(5_000_000), x.sigterm_us);
    s.tps_storm = events_per_s(samples, x.sigterm_us, end);
    s.tps_storm_min_500ms = samples
        .iter()
        .filter(|p| during(p) && p.at_us + 500_000 <= end)
        .map(|p| events_per_s(samples, p.at_us, p.at_us + 500_000))
        .fold(f64::INFINITY, f64::min);
    if !s.tps_storm_min_500ms.is_finite() {
        s.tps_storm_min_500ms = s.tps_storm;
    }
    s
}

/// Events committed per second between two instants, from the samples of `sum(feed_seq.last_seq)`.
fn events_per_s(samples: &[Sample], from: u64, to: u64) -> f64 {
    let at = |t: u64| samples.iter().rev().find(|p| p.at_us <= t).or(samples.first());
    match (at(from), at(to)) {
        (Some(a), Some(b)) if b.at_us > a.at_us => (b.events - a.events) as f64 / ((b.at_us - a.at_us) as f64 / 1e6),
        _ => 0.0,
    }
}

/// One reading of pg_stat_activity and of the events recorded so far.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_us: u64,
    /// Connections to the bench database, the servers' among them (application_name boardcast*), and those
    /// running a statement (this sampler's own excepted).
    connections: i64,
    servers: i64,
    active: i64,
    /// Σ feed_seq.last_seq: every event ever recorded.
    events: i64,
}

/// Reads pg_stat_activity and the events every 100 ms, on a connection of its own.
struct DbSampler {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Vec<Sample>>,
}

const SAMPLE: &str = "SELECT count(*) FILTER (WHERE datname = current_database()),
        count(*) FILTER (WHERE datname = current_database() AND application_name LIKE 'boardcast%'),
        count(*) FILTER (WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()),
        (SELECT coalesce(sum(last_seq), 0)::bigint FROM feed_seq)
    FROM pg_stat_activity";

impl DbSampler {
    async fn start(url: &str) -> Result<DbSampler, String> {
        let client = pg_connect(url).await?;
        let stop = CancellationToken::new();
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Ok(row) = client.query_one(SAMPLE, &[]).await {
                    out.push(Sample {
                        at_us: wall_us(),
                        connections: row.get(0),
                        servers: row.get(1),
                        active: row.get(2),
                        events: row.get(3),
                    });
                }
            }
            out
        });
        Ok(DbSampler { stop, handle })
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        self.handle.await.unwrap_or_default()
    }
}

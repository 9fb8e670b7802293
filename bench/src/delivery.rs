//! The `latency` and `fanout` scenarios: C clients joined to R rooms, W writers at an offered rate; what
//! reaches the clients, how fast, and whether anything was lost or duplicated.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::ctx::{CpuMark, Ctx, write_on_own_thread};
use crate::load::{self, ClientOutcome, Fleet, Shared, Verdict, WriteOutcome, WriteSpec};
use crate::report;
use crate::results::LoadRun;
use crate::server;

/// A scenario's shape: its defaults, which the flags override.
#[derive(Clone, Copy)]
pub struct Shape {
    pub clients: usize,
    pub rooms: usize,
    pub writers: usize,
    /// Offered transactions/s; `None`: as fast as possible.
    pub rate: Option<f64>,
    pub duration: f64,
    /// Rows (so events) per transaction, unless `--rows` says otherwise.
    pub rows: usize,
    /// Whether the clients join with `"group":"tx"` (one `tx` frame per transaction).
    pub group_tx: bool,
}

/// The shape with the flags applied, and the rest of what a run needs to know.
struct Plan {
    shape: Shape,
    duration: Duration,
    warmup: Duration,
    rows: usize,
}

/// What the phases of a run measured, before it becomes a `LoadRun`.
struct Measured {
    connect_secs: f64,
    rss_idle: u64,
    rss_connected: u64,
    rss_max: u64,
    queue: f64,
    cpu: (f64, f64, f64, f64),
    write: WriteOutcome,
    outcomes: Vec<ClientOutcome>,
    finals: Vec<i64>,
    drained: Duration,
    early: usize,
}

/// Latency and fan-out: C clients over R rooms, W writers at an offered rate.
pub async fn run(ctx: &Ctx, name: &str, defaults: Shape) -> Result<LoadRun, String> {
    run_on(ctx, name, defaults, &ctx.args.server_bin).await
}

/// The same against the server binary `bin` (the `ceiling` scenario's bare broadcaster). The flags override
/// the shape's duration, warm-up and rows, not its clients, rooms, writers and rate.
pub async fn run_on(ctx: &Ctx, name: &str, defaults: Shape, bin: &Path) -> Result<LoadRun, String> {
    let plan = plan(ctx, defaults);
    let Shape { clients, rooms, writers, rate, .. } = plan.shape;
    ctx.say(format!(
        "{name}: {clients} clients in {rooms} rooms, {writers} writers, {} tx/s offered x {} rows, {:?} (+{:?} warm-up)",
        rate.map(|r| format!("{r}")).unwrap_or_else(|| "max".into()),
        plan.rows,
        plan.duration,
        plan.warmup,
    ));
    let capacity = match rate {
        Some(r) => (r * (plan.duration + plan.warmup).as_secs_f64() * 1.1) as usize + 1000,
        None => 4_000_000,
    };
    let shared = Shared::new(capacity);
    let m = measure(ctx, name, &plan, &shared, bin).await?;
    let v = load::verdict(&m.outcomes, &m.finals);
    let run = load_run(ctx, name, &plan, &shared, &m, &v);
    ctx.say(report::load_line(&run));
    if v.disconnected > 0 {
        let first = m.outcomes.iter().find_map(|o| o.error.clone()).unwrap_or_default();
        ctx.say(format!("{name}: {} clients were disconnected; first: {first}", v.disconnected));
    }
    Ok(run)
}

fn plan(ctx: &Ctx, defaults: Shape) -> Plan {
    let a = &ctx.args;
    let rate = match a.rate {
        Some(r) if r <= 0.0 => None,
        Some(r) => Some(r),
        None => defaults.rate,
    };
    let shape = Shape {
        clients: a.clients.unwrap_or(defaults.clients),
        rooms: a.rooms.unwrap_or(defaults.rooms).min(ctx.projects.len()).max(1),
        writers: a.writers.unwrap_or(defaults.writers).max(1),
        rate,
        duration: defaults.duration,
        rows: defaults.rows,
        group_tx: defaults.group_tx,
    };
    Plan {
        duration: a.secs(defaults.duration),
        warmup: Duration::from_secs_f64(a.warmup.unwrap_or(3.0)),
        rows: a.rows.unwrap_or(defaults.rows).max(1),
        shape,
    }
}

/// Starts the server, joins the clients, writes, and waits until the clients have everything.
async fn measure(ctx: &Ctx, name: &str, plan: &Plan, shared: &Arc<Shared>, bin: &Path) -> Result<Measured, String> {
    let Shape { clients, rooms, writers, rate, group_tx, .. } = plan.shape;
    let server = ctx.spawn_server_with(name, bin, &[])?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = server.rss();
    let mut fleet = Fleet::new(shared.clone(), rooms);
    let t = Instant::now();
    let spec = load::FleetSpec { group_tx, ..ctx.fleet_spec(&server, rooms, clients) };
    fleet.grow(&spec, clients, Duration::from_secs(120)).await?;
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
        duration: plan.duration,
        warmup: plan.warmup,
        rows: plan.rows,
        setup: Some(format!("SET synchronous_commit = {}", ctx.load_sync_commit())),
        start: None,
    };
    let write = write_on_own_thread(spec, shared.clone()).await?;
    let cpu = mark.since(Some(&server), &write);
    let finals = load::final_seqs(&ctx.admin, &ctx.projects[..rooms]).await?;
    let (outcomes, drained) = fleet.finish(&finals, Duration::from_secs(60)).await;
    let (queue, rss_max) = sampler.finish().await;
    let early = shared.resolve_pending();
    server.stop();
    Ok(Measured { connect_secs, rss_idle, rss_connected, rss_max, queue, cpu, write, outcomes, finals, drained, early })
}

fn load_run(ctx: &Ctx, name: &str, plan: &Plan, shared: &Shared, m: &Measured, v: &Verdict) -> LoadRun {
    let Shape { clients, rooms, writers, rate, .. } = plan.shape;
    // Every client should see every event of its room after its join.
    let expected: u64 =
        m.outcomes.iter().map(|o| (m.finals[o.project] - o.joined_seq).max(0) as u64).sum::<u64>().max(v.received);
    let span = shared.last_recv.load(Ordering::Relaxed).saturating_sub(shared.first_recv.load(Ordering::Relaxed));
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let h = &shared.latency;
    let ms = |us: u64| us as f64 / 1000.0;
    let (server_cpu, pg_cpu, bench_cpu, busy) = m.cpu;
    LoadRun {
        name: name.to_string(),
        clients,
        rooms,
        writers,
        rows_per_tx: plan.rows,
        offered_tps: rate,
        achieved_tps: m.write.window_transactions as f64 / m.write.window_secs,
        deliveries,
        expected_deliveries: expected,
        deliveries_per_s: if span > 0 { deliveries as f64 / (span as f64 / 1e9) } else { 0.0 },
        latency_samples: h.count(),
        early_receipts: m.early,
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
        drain_ms: m.drained.as_millis() as u64,
        connect_secs: m.connect_secs,
        rss_idle: m.rss_idle,
        rss_connected: m.rss_connected,
        rss_max: m.rss_max,
        queue_usage_max: m.queue,
        server_cpu_pct: server_cpu,
        postgres_cpu_pct: pg_cpu,
        bench_cpu_pct: bench_cpu,
        machine_busy_pct: busy,
        write: m.write.clone(),
        cdf: h.cdf(),
    }
}

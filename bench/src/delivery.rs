//! The `latency` and `fanout` scenarios: C clients joined to R rooms, W writers at an offered rate; what
//! reaches the clients, how fast, and whether anything was lost or duplicated.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::ctx::{CpuMark, Ctx, write_on_own_thread};
use crate::load::{self, Fleet, Shared, WriteSpec};
use crate::report;
use crate::results::LoadRun;
use crate::server;

/// Latency and fan-out: C clients over R rooms, W writers at an offered rate.
pub async fn run(
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

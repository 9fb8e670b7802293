//! The `memory` scenario: the server's RSS idle and at growing numbers of idle, joined connections, and
//! the slope per connection.

use std::time::{Duration, Instant};

use crate::ctx::Ctx;
use crate::load::{Fleet, Shared};
use crate::results::MemoryRun;

/// Server RSS idle and at growing numbers of idle, joined connections.
pub async fn run(ctx: &Ctx) -> Result<MemoryRun, String> {
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
fn slope(points: &[(f64, f64)]) -> f64 {
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

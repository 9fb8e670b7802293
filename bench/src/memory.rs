//! The `memory` scenario: the server's RSS idle and at growing numbers of idle, joined connections, and
//! the slope per connection.

use std::time::{Duration, Instant};

use crate::ctx::Ctx;
use crate::load::{Fleet, FleetSpec, Shared};
use crate::results::MemoryRun;
use crate::server::Server;

/// Server RSS idle and at growing numbers of idle, joined connections.
pub async fn run(ctx: &Ctx) -> Result<MemoryRun, String> {
    let a = &ctx.args;
    let rooms = a.rooms.unwrap_or(100).min(ctx.projects.len()).max(1);
    let (hold, note) = hold_limit(a.hold);
    let mut steps: Vec<usize> = a.steps.iter().copied().filter(|&s| s <= hold).collect();
    steps.sort_unstable();
    steps.dedup();
    ctx.say(format!("memory: {rooms} rooms, steps {steps:?}, then hold {hold}"));
    let server = ctx.spawn_server("memory")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = server.rss();
    let mut fleet = Fleet::new(Shared::new(0), rooms);
    let mut growth = Growth {
        spec: ctx.fleet_spec(&server, rooms, hold),
        points: Vec::new(),
        connecting: Duration::ZERO,
        error: None,
    };
    for &n in &steps {
        growth.grow(&mut fleet, n).await?;
        let rss = server.rss();
        ctx.say(format!("memory: {n} connections: server RSS {:.1} MiB", rss as f64 / 1048576.0));
        growth.points.push((n, rss));
    }
    let held = growth.hold(ctx, &mut fleet, &server, hold).await;
    // Still alive after a while? Hold a few seconds and read the RSS again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_held = server.rss();
    fleet.close().await;
    server.stop();
    let fit: Vec<(f64, f64)> =
        growth.points.iter().filter(|p| p.0 >= 1000).map(|&(n, r)| (n as f64, r as f64)).collect();
    let slope = slope(&fit);
    ctx.say(format!("memory: slope {:.2} KiB per connection", slope / 1024.0));
    Ok(MemoryRun {
        rooms,
        rss_idle,
        points: growth.points,
        slope_bytes_per_conn: slope,
        held,
        hold_requested: a.hold,
        hold_limit_note: note,
        hold_error: growth.error,
        rss_held,
        connect_rate: held as f64 / growth.connecting.as_secs_f64().max(1e-9),
    })
}

/// The connections to hold: those asked for, within the open-file limit (and why not all, if not).
fn hold_limit(requested: usize) -> (usize, Option<String>) {
    let (soft, _) = boardcast::process::open_file_limit();
    // Both this process and the server (which inherits the limit) hold one descriptor per connection.
    let cap = (soft as usize).saturating_sub(400);
    let hold = requested.min(cap);
    let note = (hold < requested).then(|| {
        format!(
            "{requested} requested; capped at {hold} by the open-file limit ({soft}; the hard limit cannot be raised here) of the server and the load generator"
        )
    });
    (hold, note)
}

/// The fleet growing step by step: (connections, server RSS) at each step, and the time spent connecting.
struct Growth {
    spec: FleetSpec,
    points: Vec<(usize, u64)>,
    connecting: Duration,
    /// Why the fleet could not grow to the hold.
    error: Option<String>,
}

impl Growth {
    /// Grows the fleet to `n` connections, then lets the server settle before its RSS is read.
    async fn grow(&mut self, fleet: &mut Fleet, n: usize) -> Result<(), String> {
        let t0 = Instant::now();
        let grown = fleet.grow(&self.spec, n, Duration::from_secs(300)).await;
        self.connecting += t0.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        grown
    }

    /// Tries to grow the fleet to the hold; a failure is recorded, not returned. Returns the joined count.
    async fn hold(&mut self, ctx: &Ctx, fleet: &mut Fleet, server: &Server, hold: usize) -> usize {
        if hold <= fleet.joined() {
            return fleet.joined();
        }
        self.error = self.grow(fleet, hold).await.err();
        let held = fleet.joined();
        let rss = server.rss();
        ctx.say(format!("memory: held {held} connections: server RSS {:.1} MiB", rss as f64 / 1048576.0));
        if self.error.is_none() {
            self.points.push((held, rss));
        }
        held
    }
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

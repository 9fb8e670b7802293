//! The `ceiling` scenario (issue #20): how close boardcast's fan-out is to the least a server could do. The
//! same fan-out workload runs against boardcast and against the bare broadcaster (src/bin/bare-broadcaster.rs:
//! one LISTEN connection, the same WebSocket library and socket settings, the same frames, none of the
//! guarantees) at several rates of deliveries/s, and boardcast's server CPU per delivery and p99 are reported
//! as ratios to the bare broadcaster's.
//!
//! Rounds are interleaved (boardcast, bare, boardcast, bare, ... at each rate, every rate in each round), so
//! the machine's moods spread over both; each figure is the median over the rounds, and each ratio the median
//! of the rounds' ratios (a round's two runs, a minute apart at most, share the machine's state of the moment).
//! Both runs go through the same load generator, which checks every client's seqs: the bare broadcaster is held
//! to nothing lost either, so a ratio compares two complete deliveries.

use std::path::PathBuf;

use crate::ctx::Ctx;
use crate::delivery::{self, Shape};
use crate::report;
use crate::results::{CeilingRate, CeilingRun, CeilingSample};

/// 10 rooms of 1,000 clients, as the `fanout` scenario: each event is delivered 1,000 times, so the rate of
/// writes is a thousandth of the deliveries'.
const CLIENTS: usize = 10_000;
const ROOMS: usize = 10;
const WRITERS: usize = 4;
const DURATION: f64 = 10.0;

pub async fn run(ctx: &Ctx) -> Result<CeilingRun, String> {
    let a = &ctx.args;
    let clients = a.clients.unwrap_or(CLIENTS);
    let rooms = a.rooms.unwrap_or(ROOMS).min(ctx.projects.len()).max(1);
    let per_event = (clients / rooms).max(1);
    if a.rate.is_some() {
        return Err("the ceiling scenario sets its own rates: give deliveries/s with --deliveries".into());
    }
    let bare = bare_bin(ctx);
    if !bare.exists() {
        return Err(format!(
            "no bare broadcaster at {} (build it: cargo build --release -p boardcast-bench --bins, or --bare-bin)",
            bare.display()
        ));
    }
    let mut out = CeilingRun {
        clients,
        rooms,
        writers: a.writers.unwrap_or(WRITERS).max(1),
        duration_secs: a.duration.unwrap_or(DURATION),
        rounds: a.rounds,
        load_before: std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string(),
        load_after: String::new(),
        rates: a.deliveries.iter().map(|&d| CeilingRate { deliveries_per_s: d, ..Default::default() }).collect(),
    };
    for round in 1..=a.rounds {
        for rate in out.rates.iter_mut() {
            let tps = rate.deliveries_per_s as f64 / per_event as f64;
            let shape = Shape {
                clients,
                rooms,
                writers: out.writers,
                rate: Some(tps),
                duration: DURATION,
                rows: 1,
                group_tx: false,
            };
            for (server, bin) in [("boardcast", &a.server_bin), ("bare", &bare)] {
                let name = format!("ceiling-{}k-{server}-{round}", rate.deliveries_per_s / 1000);
                let run = delivery::run_on(ctx, &name, shape, bin).await?;
                ctx.say(report::per_event_line(&run));
                let sample = CeilingSample::of(&run);
                if server == "boardcast" { rate.boardcast.push(sample) } else { rate.bare.push(sample) }
            }
        }
    }
    out.load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string();
    for rate in out.rates.iter_mut() {
        rate.summarize();
        ctx.say(report::ceiling_line(rate));
    }
    Ok(out)
}

/// `--bare-bin`, or `bare-broadcaster` beside the server binary (they are built into the same directory).
fn bare_bin(ctx: &Ctx) -> PathBuf {
    ctx.args.bare_bin.clone().unwrap_or_else(|| ctx.args.server_bin.with_file_name("bare-broadcaster"))
}

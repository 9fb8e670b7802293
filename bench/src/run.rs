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
//! * `abuse`   — 1,000 well-behaved clients beside one abusive client per kind of issue #13, a phase each after
//!   a baseline; not part of `all` (about two minutes). Its section of BENCHMARKS.md is written by itself
//!   (`--report`) and kept by the other runs.
//! * `broadcast` — 1,000 clients in 100 rooms sending 2 broadcasts/s each: delivery on one server and across
//!   two, and the write ceiling with that traffic against without (issue #16); not part of `all`. Its figures
//!   are printed and kept in results.json.
//! * `tx-groups` — a fan-out of transactions of 10 events (2,000 clients in 10 rooms), once with `event` frames
//!   and once with `"group":"tx"`: deliveries/s and server CPU per event written and per delivery (issue #15);
//!   not part of `all`. Printed and kept in results.json.
//! * `ceiling` — the fan-out against boardcast and against a bare broadcaster, side by side at several rates,
//!   in interleaved rounds: boardcast's server CPU per delivery and p99 as ratios (issue #20); not part of
//!   `all`. Its section of BENCHMARKS.md is written by itself (`--report`) and kept by the other runs.
//!
//! * `scale-out` — 50,000 clients across three servers behind nginx (issue #20); not part of `all`.
//! * `reconnect-storm` — 20,000 clients across three servers behind nginx, one restarted (issue #20); not part
//!   of `all`. Both write their own sections of BENCHMARKS.md with `--report` and the other runs keep them.
//!
//! See `boardcast-bench --help` for the flags, and BENCHMARKS.md for results.

use std::path::Path;
use std::sync::Arc;

use crate::args::{Args, Scenario};
use crate::ctx::Ctx;
use crate::delivery::Shape;
use crate::results::Results;
use crate::{abuse, broadcast, ceiling, delivery, machine, memory, pg, report, scale, server, writes};

const LATENCY: Shape =
    Shape { clients: 1000, rooms: 100, writers: 8, rate: Some(1000.0), duration: 20.0, rows: 1, group_tx: false };
const FANOUT: Shape =
    Shape { clients: 10_000, rooms: 10, writers: 4, rate: Some(300.0), duration: 15.0, rows: 1, group_tx: false };
/// `tx-groups`: a fan-out of transactions of 10 events, run once with `event` frames and once grouped.
const TX_GROUPS: Shape =
    Shape { clients: 2000, rooms: 10, writers: 4, rate: Some(50.0), duration: 10.0, rows: 10, group_tx: false };

/// Runs the scenarios the flags ask for (or, with `--render`, only writes the report again).
pub async fn main(args: Args) -> Result<Results, String> {
    if let Some(path) = &args.render {
        return render(path);
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
    let admin = Arc::new(pg::pg_connect(&url).await?);
    results.machine = Some(machine::machine(&admin).await);
    let max_rooms = [args.rooms.unwrap_or(100), 100].into_iter().max().unwrap();
    let fx = server::fixture(&admin, "bench", max_rooms).await?;
    let ctx = Ctx { args: args.clone(), url, admin, token: fx.token, projects: fx.projects };
    scenarios(&ctx, &mut results).await?;
    save(&args, &results)?;
    Ok(results)
}

async fn scenarios(ctx: &Ctx, results: &mut Results) -> Result<(), String> {
    let args = &ctx.args;
    if args.runs(Scenario::Latency) {
        results.load.push(delivery::run(ctx, "latency", LATENCY).await?);
    }
    if args.runs(Scenario::Fanout) {
        results.load.push(delivery::run(ctx, "fanout", FANOUT).await?);
    }
    if args.runs(Scenario::Memory) {
        results.memory = Some(memory::run(ctx).await?);
    }
    if args.runs(Scenario::Writes) {
        results.writes = writes::run(ctx).await?;
    }
    if args.runs(Scenario::Abuse) {
        results.abuse = Some(abuse::run(ctx).await?);
    }
    if args.runs(Scenario::Broadcast) {
        results.broadcast = Some(broadcast::run(ctx).await?);
    }
    if args.runs(Scenario::TxGroups) {
        for (name, group_tx) in [("fanout-10-per-tx", false), ("fanout-10-per-tx-grouped", true)] {
            let run = delivery::run(ctx, name, Shape { group_tx, ..TX_GROUPS }).await?;
            ctx.say(report::per_event_line(&run));
            results.load.push(run);
        }
    }
    if args.runs(Scenario::ScaleOut) {
        results.scale_out = Some(scale::scale_out(ctx).await?);
    }
    if args.runs(Scenario::ReconnectStorm) {
        results.storm = Some(scale::reconnect_storm(ctx).await?);
    }
    if args.runs(Scenario::Ceiling) {
        results.ceiling = Some(ceiling::run(ctx).await?);
    }
    let abuse = results.abuse.as_ref();
    let scale = [&results.scale_out, &results.storm];
    results.lost = results.load.iter().map(|r| r.lost).sum::<u64>()
        + results.writes.iter().filter_map(|w| w.lost).sum::<u64>()
        + abuse.map_or(0, |a| a.lost)
        + scale.iter().filter_map(|s| s.as_ref()).map(|s| s.lost).sum::<u64>()
        + ceiling_sum(results, |s| s.lost);
    results.duplicates = results.load.iter().map(|r| r.duplicates).sum::<u64>()
        + results.writes.iter().filter_map(|w| w.duplicates).sum::<u64>()
        + abuse.map_or(0, |a| a.duplicates)
        + scale.iter().filter_map(|s| s.as_ref()).map(|s| s.duplicates).sum::<u64>()
        + ceiling_sum(results, |s| s.duplicates);
    Ok(())
}

/// A count over every run of the ceiling scenario, both servers'.
fn ceiling_sum(results: &Results, f: fn(&crate::results::CeilingSample) -> u64) -> u64 {
    let rates = results.ceiling.iter().flat_map(|c| &c.rates);
    rates.flat_map(|r| r.boardcast.iter().chain(&r.bare)).map(f).sum()
}

/// results.json (and `--json`), the tables on stdout, and the report if asked for.
fn save(args: &Args, results: &Results) -> Result<(), String> {
    let json = serde_json::to_string_pretty(results).unwrap();
    let _ = std::fs::write(args.out.join("results.json"), &json);
    if let Some(p) = &args.json {
        std::fs::write(p, &json).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    println!("{}", report::text(results));
    if args.report() {
        report::write_files(results).map_err(|e| format!("writing the report: {e}"))?;
        eprintln!(
            "bench: wrote BENCHMARKS.md{}",
            if results.load.is_empty() { "" } else { " and docs/bench/latency.svg" }
        );
    }
    Ok(())
}

/// The figures of an earlier run, written again (the report's layout or its arithmetic changed). The latency
/// plot needs the full distributions, which results.json does not keep: it stays as it is.
fn render(path: &Path) -> Result<Results, String> {
    let json = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let results: Results = serde_json::from_str(&json).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{}", report::text(&results));
    report::write_files(&results).map_err(|e| format!("writing the report: {e}"))?;
    eprintln!("bench: wrote BENCHMARKS.md from {}", path.display());
    Ok(results)
}

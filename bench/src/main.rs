//! `boardcast-bench`: the benchmark (`make bench`). It is a crate of its own so that nothing of it is linked into
//! the server. Run with `--help` for the scenarios and flags; BENCHMARKS.md holds the results.
//!
//! * [`args`] — the flags; [`run`] — runs the scenarios asked for, saves and reports the results;
//! * [`delivery`], [`memory`], [`writes`], [`abuse`], [`broadcast`], [`ceiling`] — the scenarios, on the [`ctx`]
//!   they share;
//! * [`abusers`] — the abusive clients of the `abuse` scenario;
//! * [`results`] — what they measured (results.json);
//! * [`server`] — the server under test, as a child process, and its database; [`machine`] — /proc readings;
//! * [`load`] — WebSocket clients and SQL writers; [`pg`] — the bench's own PostgreSQL connections;
//! * [`ws`] — a minimal WebSocket client built for many connections; [`http`] — a minimal HTTP/1.1 client;
//! * [`hist`] — latency histograms; [`report`] — BENCHMARKS.md and the latency chart;
//! * [`scale`] — the `scale-out` and `reconnect-storm` scenarios, behind [`nginx`], with clients in [`children`]
//!   processes; [`scale_report`] — their sections of BENCHMARKS.md;
//! * [`sections`] — the sections of BENCHMARKS.md a scenario writes alone and other runs keep.

mod abuse;
mod abusers;
mod args;
mod broadcast;
mod ceiling;
mod children;
mod ctx;
mod delivery;
mod hist;
mod http;
mod load;
mod machine;
mod memory;
mod nginx;
mod pg;
mod report;
mod results;
mod run;
mod scale;
mod scale_report;
mod sections;
mod server;
mod writes;
mod ws;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = args::Args::from_command_line();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.child {
        return match rt.block_on(children::child_main()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("boardcast-bench --child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match rt.block_on(run::main(args)) {
        Ok(r) => {
            println!("BENCH_RESULT {}", summary(&r));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("boardcast-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The machine-readable last line: losses and the main figures of each latency or fan-out run.
fn summary(r: &results::Results) -> serde_json::Value {
    serde_json::json!({
        "lost": r.lost,
        "duplicates": r.duplicates,
        "load": r.load.iter().map(|l| serde_json::json!({
            "name": l.name, "deliveries": l.deliveries, "expected": l.expected_deliveries,
            "lost": l.lost, "duplicates": l.duplicates, "p50_ms": l.p50_ms, "p99_ms": l.p99_ms,
            "deliveries_per_s": l.deliveries_per_s, "achieved_tps": l.achieved_tps,
            "disconnected": l.disconnected,
        })).collect::<Vec<_>>(),
        "broadcast": r.broadcast.as_ref(),
        "ceiling": r.ceiling.as_ref().map(|c| c.rates.iter().map(|x| serde_json::json!({
            "deliveries_per_s": x.deliveries_per_s, "cpu_ratio": x.cpu_ratio, "p99_ratio": x.p99_ratio,
            "boardcast_cpu_us": x.boardcast_median.cpu_us_per_delivery, "bare_cpu_us": x.bare_median.cpu_us_per_delivery,
            "boardcast_p99_ms": x.boardcast_median.p99_ms, "bare_p99_ms": x.bare_median.p99_ms,
        })).collect::<Vec<_>>()),
        "abuse": r.abuse.as_ref().map(|a| serde_json::json!({
            "deliveries": a.deliveries, "expected": a.expected_deliveries, "lost": a.lost,
            "duplicates": a.duplicates, "disconnected": a.disconnected,
            "phases": a.phases.iter().map(|p| serde_json::json!({
                "name": p.name, "samples": p.samples, "expected": p.expected_samples, "p50_ms": p.p50_ms,
                "p99_ms": p.p99_ms, "api_p99_ms": p.api_p99_ms, "api_failures": p.api_failures,
                "rss_max": p.rss_max, "abuser_sent": p.abuser.as_ref().map(|x| x.sent),
            })).collect::<Vec<_>>(),
        })),
    })
}

//! `boardcast-bench`: the benchmark (`make bench`). It is a crate of its own so that nothing of it is linked into
//! the server. Run with `--help` for the scenarios and flags; BENCHMARKS.md holds the results.
//!
//! * [`run`] — the scenarios and what they report;
//! * [`server`] — the server under test, as a child process, and its database;
//! * [`load`] — WebSocket clients and SQL writers;
//! * [`ws`] — a minimal WebSocket client built for many connections;
//! * [`hist`] — latency histograms; [`report`] — BENCHMARKS.md and the latency chart.

mod hist;
mod load;
mod report;
mod run;
mod server;
mod ws;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match run::Args::parse(&argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{}", run::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("boardcast-bench: {e}\n\n{}", run::USAGE);
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run::main(args)) {
        Ok(r) => {
            let summary = serde_json::json!({
                "lost": r.lost,
                "duplicates": r.duplicates,
                "load": r.load.iter().map(|l| serde_json::json!({
                    "name": l.name, "deliveries": l.deliveries, "expected": l.expected_deliveries,
                    "lost": l.lost, "duplicates": l.duplicates, "p50_ms": l.p50_ms, "p99_ms": l.p99_ms,
                    "deliveries_per_s": l.deliveries_per_s, "achieved_tps": l.achieved_tps,
                    "disconnected": l.disconnected,
                })).collect::<Vec<_>>(),
            });
            println!("BENCH_RESULT {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("boardcast-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

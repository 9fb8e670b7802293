//! `boardcast-bench`: the benchmark binary (`make bench`). The logic is in `boardcast::bench`; run with
//! `--help` for the scenarios and flags, and see BENCHMARKS.md for results.

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match boardcast::bench::Args::parse(&argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{}", boardcast::bench::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("boardcast-bench: {e}\n\n{}", boardcast::bench::USAGE);
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(boardcast::bench::main(args)) {
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

//! Short runs of the benchmark binary against a fresh database: they must run and lose nothing. No timing is
//! asserted (that is what `make bench` and BENCHMARKS.md are for).

use std::path::PathBuf;
use std::process::{Command, Output};

use tokio_postgres::NoTls;
use uuid::Uuid;

/// The server tests create their databases on: `make test` sets it.
fn admin_url() -> String {
    std::env::var("BOARDCAST_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("set BOARDCAST_TEST_DATABASE_URL (make test does) to a PostgreSQL server tests may create databases on")
}

/// The URL with another database name (`postgres://host/db?opts`).
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, String::new()), |(b, q)| (b, format!("?{q}")));
    let host_end = base.find("://").map_or(0, |i| i + 3);
    let base = base[host_end..].rfind('/').map_or(base, |i| &base[..host_end + i]);
    format!("{base}/{db}{query}")
}

/// The `boardcast` binary of this build. It belongs to another package of the workspace, which cargo builds
/// beside this one (`cargo test --workspace`); build it if it is not there (`cargo test -p boardcast-bench`).
fn server_bin() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_boardcast-bench"));
    let server = bench.with_file_name("boardcast");
    if !server.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = if bench.parent().is_some_and(|d| d.ends_with("release")) { "--release" } else { "--quiet" };
        let built = Command::new(cargo).args(["build", "-p", "boardcast", "--bin", "boardcast", profile]).status();
        assert!(built.is_ok_and(|s| s.success()), "cannot build the boardcast binary");
    }
    server
}

async fn admin(sql: &str) {
    let (client, conn) = tokio_postgres::connect(&with_db(&admin_url(), "postgres"), NoTls).await.expect("connect");
    tokio::spawn(conn);
    client.batch_execute(sql).await.expect(sql);
}

/// Runs the bench with `args` on a database of its own; its BENCH_RESULT line and its results.json.
async fn bench(args: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let name = format!("bc_test_{}", Uuid::new_v4().simple());
    admin(&format!("CREATE DATABASE {name}")).await;
    let out = std::env::temp_dir().join(&name);
    let json = out.join("smoke.json");
    let bench = env!("CARGO_BIN_EXE_boardcast-bench");
    let server = server_bin();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let result: Output = tokio::task::spawn_blocking({
        let (name, out, json) = (name.clone(), out.clone(), json.clone());
        move || {
            Command::new(bench)
                .args(&args)
                .args(["--no-report", "--quiet", "--server-bin"])
                .arg(server)
                .arg("--out")
                .arg(&out)
                .arg("--json")
                .arg(&json)
                .env("DATABASE_URL", with_db(&admin_url(), &name))
                .output()
                .expect("run boardcast-bench")
        }
    })
    .await
    .unwrap();
    admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "boardcast-bench failed:\n{stdout}\n{stderr}");
    let line = stdout.lines().find_map(|l| l.strip_prefix("BENCH_RESULT ")).expect("a BENCH_RESULT line");
    let summary: serde_json::Value = serde_json::from_str(line).unwrap();
    let full: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    (summary, full)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_and_loses_nothing() {
    let (summary, full) = bench(&[
        "--scenario",
        "latency",
        "--clients",
        "40",
        "--rooms",
        "4",
        "--writers",
        "2",
        "--rate",
        "200",
        "--duration",
        "1",
        "--warmup",
        "0.5",
    ])
    .await;
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    let run = &summary["load"][0];
    assert_eq!(run["disconnected"], 0, "{summary}");
    assert!(run["deliveries"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(run["deliveries"], run["expected"], "{summary}");
    assert!(full["load"][0]["latency_samples"].as_u64().unwrap() > 0);
}

/// Every abuser runs (briefly), is counted, and the well-behaved clients beside it lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_abuse_scenario_runs_and_the_clients_lose_nothing() {
    let (summary, full) = bench(&[
        "--scenario",
        "abuse",
        "--clients",
        "40",
        "--rooms",
        "4",
        "--writers",
        "2",
        "--rate",
        "100",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--history",
        "2000",
    ])
    .await;
    let abuse = &summary["abuse"];
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(abuse["disconnected"], 0, "{summary}");
    assert_eq!(abuse["deliveries"], abuse["expected"], "{summary}");
    let phases = abuse["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "baseline",
            "ping-flood",
            "connection-flood",
            "join-leave",
            "random-joins",
            "replay-loop",
            "replays",
            "slow-bodies",
            "unknown-tokens"
        ]
    );
    for p in phases {
        assert!(p["samples"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["samples"], p["expected"], "{p}");
        assert!(p["name"] == "baseline" || p["abuser_sent"].as_u64().unwrap() > 0, "{p}");
    }
    let full_phases = full["abuse"]["phases"].as_array().unwrap();
    assert!(full_phases[1..].iter().all(|p| !p["abuser"]["got"].as_object().unwrap().is_empty()), "{full}");
}

/// Three servers behind nginx, one restarted: its clients resume through nginx and nothing is lost. Skipped
/// without nginx (Debian: apt-get install nginx-light).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconnect_storm_loses_nothing_across_the_restart() {
    if Command::new("nginx").arg("-v").output().is_err() {
        // CI installs nginx (.ci/run): there, a missing one is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "no nginx on PATH (apt-get install nginx-light)");
        eprintln!("skipped: no nginx on PATH");
        return;
    }
    let (summary, full) = bench(&[
        "--scenario",
        "reconnect-storm",
        "--clients",
        "90",
        "--rooms",
        "6",
        "--writers",
        "2",
        "--rate",
        "100",
        "--duration",
        "4",
        "--warmup",
        "0.5",
    ])
    .await;
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    let run = &full["storm"];
    assert_eq!((run["joined"].as_u64(), run["disconnected"].as_u64()), (Some(90), Some(0)), "{run}");
    assert_eq!(run["deliveries"], run["expected_deliveries"], "{run}");
    let storm = &run["storm"];
    assert!(storm["clients_resumed"].as_u64().unwrap() > 0, "{storm}");
    assert_eq!(storm["not_caught_up"], 0, "{storm}");
}

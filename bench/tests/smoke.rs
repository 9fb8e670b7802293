//! A short run of the benchmark binary against a fresh database: it must run and lose nothing. No timing is
//! asserted (that is what `make bench` and BENCHMARKS.md are for).

use std::path::PathBuf;
use std::process::Command;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_and_loses_nothing() {
    let name = format!("bc_test_{}", Uuid::new_v4().simple());
    admin(&format!("CREATE DATABASE {name}")).await;
    let out = std::env::temp_dir().join(&name);
    let json = out.join("smoke.json");
    let bench = env!("CARGO_BIN_EXE_boardcast-bench");
    let server = server_bin();
    let result = tokio::task::spawn_blocking({
        let (name, out, json) = (name.clone(), out.clone(), json.clone());
        move || {
            Command::new(bench)
                .args(["--scenario", "latency", "--clients", "40", "--rooms", "4", "--writers", "2"])
                .args(["--rate", "200", "--duration", "1", "--warmup", "0.5", "--no-report", "--quiet"])
                .arg("--server-bin")
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
    assert_eq!(summary["lost"], 0, "{line}");
    assert_eq!(summary["duplicates"], 0, "{line}");
    let run = &summary["load"][0];
    assert_eq!(run["disconnected"], 0, "{line}");
    assert!(run["deliveries"].as_u64().unwrap() > 0, "{line}");
    assert_eq!(run["deliveries"], run["expected"], "{line}");
    let full: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(full["load"][0]["latency_samples"].as_u64().unwrap() > 0);
    let _ = std::fs::remove_dir_all(&out);
}

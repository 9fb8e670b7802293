//! A short run of the benchmark binary against a fresh database: it must run and lose nothing. No timing is
//! asserted (that is what `make bench` and BENCHMARKS.md are for).

mod common;

use std::process::Command;

use common::{admin_url, connect, with_db};
use uuid::Uuid;

async fn admin(sql: &str) {
    connect(&with_db(&admin_url(), "postgres")).await.batch_execute(sql).await.expect(sql);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_and_loses_nothing() {
    let name = format!("bc_test_{}", Uuid::new_v4().simple());
    admin(&format!("CREATE DATABASE {name}")).await;
    let out = std::env::temp_dir().join(&name);
    let json = out.join("smoke.json");
    let bench = env!("CARGO_BIN_EXE_boardcast-bench");
    let server = env!("CARGO_BIN_EXE_boardcast");
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

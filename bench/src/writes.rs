//! The `writes` scenario: the write ceiling. Closed-loop INSERTs with the feed off, with nobody listening,
//! with a bare LISTEN connection, with the server, and with the server and clients; single-row and bulk
//! transactions, in interleaved rounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::poll_fn;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::ctx::{CpuMark, Ctx, write_on_own_thread};
use crate::load::{self, Fleet, Shared, WriteSpec};
use crate::results::WriteRun;
use crate::server::{self, Server};

/// The write ceiling: closed-loop INSERTs in five settings, single-row and bulk, in interleaved rounds.
pub async fn run(ctx: &Ctx) -> Result<Vec<WriteRun>, String> {
    let a = &ctx.args;
    let writers = a.writers.unwrap_or(8).max(1);
    let rooms = a.rooms.unwrap_or(100).min(ctx.projects.len()).max(1);
    let clients = a.clients.unwrap_or(rooms);
    let duration = a.secs(5.0);
    let warmup = Duration::from_secs_f64(a.warmup.unwrap_or(1.0));
    let kinds = [1usize, a.bulk_rows.max(2)];
    let projects = Arc::new(ctx.projects[..rooms].to_vec());
    const MODES: [&str; 5] = ["no-feed", "none", "bare-listener", "server", "server+clients"];
    // (mode, rows) -> per-round figures
    let mut acc: Vec<WriteRun> = Vec::new();
    let settings: Vec<String> = match &a.synchronous_commit {
        Some(v) => vec![v.clone()],
        None => {
            let r = ctx.admin.query_one("SHOW synchronous_commit", &[]).await.map_err(|e| e.to_string())?;
            let default: String = r.get(0);
            if default == "off" { vec![default] } else { vec![default, "off".into()] }
        }
    };
    let mut tps: std::collections::HashMap<(String, usize, usize), Vec<f64>> = Default::default();
    for sync in &settings {
        for round in 0..a.rounds {
            for (mi, mode) in MODES.iter().enumerate() {
                ctx.say(format!(
                "writes: synchronous_commit={sync}, round {}/{}, {mode}: {writers} writers, {rooms} projects, {duration:?} per kind",
                round + 1,
                a.rounds
            ));
                let mut bare = None;
                let mut server = None;
                let mut fleet = None;
                match *mode {
                    "no-feed" => ctx
                        .admin
                        .batch_execute("ALTER TABLE tasks DISABLE TRIGGER tasks_feed_insert")
                        .await
                        .map_err(|e| e.to_string())?,
                    "bare-listener" => bare = Some(bare_listener(&ctx.url).await?),
                    "server" | "server+clients" => {
                        let s = ctx.spawn_server(&format!("writes-{}", mode.replace('+', "-")))?;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if *mode == "server+clients" {
                            let mut f = Fleet::new(Shared::new(0), rooms);
                            f.grow(&ctx.fleet_spec(&s, rooms, clients), clients, Duration::from_secs(120)).await?;
                            fleet = Some(f);
                        }
                        server = Some(s);
                    }
                    _ => {}
                }
                for (ki, &rows) in kinds.iter().enumerate() {
                    let sampler = server::Sampler::start(ctx.admin.clone(), server.as_ref().map(|s: &Server| s.pid));
                    let mark = CpuMark::now(server.as_ref());
                    let spec = WriteSpec {
                        url: ctx.url.clone(),
                        projects: projects.clone(),
                        writers,
                        rate: None,
                        duration,
                        warmup,
                        rows,
                        setup: Some(format!("SET synchronous_commit = {sync}")),
                    };
                    let w = write_on_own_thread(spec, Shared::new(0)).await?;
                    let (server_cpu, pg_cpu, _, _) = mark.since(server.as_ref(), &w);
                    let (queue, _) = sampler.finish().await;
                    let t = w.window_transactions as f64 / w.window_secs;
                    ctx.say(format!(
                        "writes: {mode}, {rows} rows/tx: {t:.0} tx/s, {:.0} rows/s, postgres CPU {pg_cpu:.0}%{}",
                        w.window_rows as f64 / w.window_secs,
                        server.as_ref().map(|_| format!(", server CPU {server_cpu:.0}%")).unwrap_or_default()
                    ));
                    if let Some(e) = &w.first_error {
                        ctx.say(format!("writes: first error: {e}"));
                    }
                    tps.entry((sync.clone(), mi, ki)).or_default().push(t);
                    let run = WriteRun {
                        synchronous_commit: sync.clone(),
                        mode: mode.to_string(),
                        rows_per_tx: rows,
                        writers,
                        tps: t,
                        rows_per_s: t * rows as f64,
                        tps_rounds: Vec::new(),
                        clients: fleet.as_ref().map(|_| clients),
                        errors: w.errors,
                        lost: None,
                        duplicates: None,
                        notifications: None,
                        server_cpu_pct: server.as_ref().map(|_| server_cpu),
                        postgres_cpu_pct: pg_cpu,
                        queue_usage_max: queue,
                    };
                    match acc
                        .iter_mut()
                        .find(|r| r.synchronous_commit == *sync && r.mode == *mode && r.rows_per_tx == rows)
                    {
                        None => acc.push(run),
                        Some(r) => {
                            // Keep running sums; averaged below.
                            r.errors += run.errors;
                            r.postgres_cpu_pct += run.postgres_cpu_pct;
                            r.server_cpu_pct = r.server_cpu_pct.zip(run.server_cpu_pct).map(|(x, y)| x + y);
                            r.queue_usage_max = r.queue_usage_max.max(run.queue_usage_max);
                        }
                    }
                }
                if *mode == "no-feed" {
                    ctx.admin
                        .batch_execute("ALTER TABLE tasks ENABLE TRIGGER tasks_feed_insert")
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if let Some((h, n, stop)) = bare {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    stop.cancel();
                    let _ = h.await;
                    let got = n.load(Ordering::Relaxed);
                    for r in acc.iter_mut().filter(|r| r.synchronous_commit == *sync && r.mode == *mode) {
                        *r.notifications.get_or_insert(0) += got;
                    }
                }
                if let Some(f) = fleet {
                    let finals = load::final_seqs(&ctx.admin, &projects).await?;
                    let (outcomes, _) = f.finish(&finals, Duration::from_secs(60)).await;
                    let v = load::verdict(&outcomes, &finals);
                    ctx.say(format!(
                        "writes: server+clients: {} deliveries, lost {}, duplicated {}",
                        v.received, v.lost, v.duplicates
                    ));
                    for r in acc.iter_mut().filter(|r| r.synchronous_commit == *sync && r.mode == *mode) {
                        *r.lost.get_or_insert(0) += v.lost;
                        *r.duplicates.get_or_insert(0) += v.duplicates;
                    }
                }
                if let Some(s) = server {
                    s.stop();
                }
            }
        }
    }
    let n = a.rounds as f64;
    for r in &mut acc {
        let mi = MODES.iter().position(|m| *m == r.mode).unwrap();
        let ki = kinds.iter().position(|k| *k == r.rows_per_tx).unwrap();
        let v = &tps[&(r.synchronous_commit.clone(), mi, ki)];
        r.tps = median(v);
        r.rows_per_s = r.tps * r.rows_per_tx as f64;
        r.tps_rounds = v.clone();
        r.postgres_cpu_pct /= n;
        r.server_cpu_pct = r.server_cpu_pct.map(|c| c / n);
    }
    Ok(acc)
}

/// The median: one disturbed round (the database is shared with the machine's other users) moves it less
/// than the mean.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// A plain connection that LISTENs on the feed channel and only counts notifications.
async fn bare_listener(
    url: &str,
) -> Result<(tokio::task::JoinHandle<()>, Arc<AtomicU64>, tokio_util::sync::CancellationToken), String> {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await.map_err(|e| e.to_string())?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let (c, s) = (count.clone(), stop.clone());
    let driver = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = s.cancelled() => return,
                m = poll_fn(|cx| conn.poll_message(cx)) => match m {
                    Some(Ok(AsyncMessage::Notification(_))) => { c.fetch_add(1, Ordering::Relaxed); }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }
    });
    client.batch_execute("LISTEN boardcast_feed").await.map_err(|e| e.to_string())?;
    // Keep the client alive as long as the driver runs.
    let handle = tokio::spawn(async move {
        let _client = client;
        let _ = driver.await;
    });
    Ok((handle, count, stop))
}

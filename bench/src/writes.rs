//! The `writes` scenario: the write ceiling. Closed-loop INSERTs with the feed off, with nobody listening,
//! with a bare LISTEN connection, with the server, and with the server and clients; single-row and bulk
//! transactions, in interleaved rounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::poll_fn;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::ctx::{CpuMark, Ctx, write_on_own_thread};
use crate::load::{self, Fleet, Shared, WriteSpec};
use crate::results::WriteRun;
use crate::server::{self, Server};

const MODES: [&str; 5] = ["no-feed", "none", "bare-listener", "server", "server+clients"];

/// The flags applied to the scenario's defaults.
struct Plan {
    writers: usize,
    rooms: usize,
    clients: usize,
    duration: Duration,
    warmup: Duration,
    /// Rows per transaction: single-row and bulk.
    kinds: [usize; 2],
    projects: Arc<Vec<Uuid>>,
}

/// The write ceiling: closed-loop INSERTs in five settings, single-row and bulk, in interleaved rounds.
pub async fn run(ctx: &Ctx) -> Result<Vec<WriteRun>, String> {
    let a = &ctx.args;
    let rooms = a.rooms.unwrap_or(100).min(ctx.projects.len()).max(1);
    let plan = Plan {
        writers: a.writers.unwrap_or(8).max(1),
        rooms,
        clients: a.clients.unwrap_or(rooms),
        duration: a.secs(5.0),
        warmup: Duration::from_secs_f64(a.warmup.unwrap_or(1.0)),
        kinds: [1, a.bulk_rows.max(2)],
        projects: Arc::new(ctx.projects[..rooms].to_vec()),
    };
    // One figure per (synchronous_commit, mode, rows per transaction), summed over the rounds.
    let mut acc: Vec<WriteRun> = Vec::new();
    for sync in &sync_settings(ctx).await? {
        for round in 0..a.rounds {
            for mode in MODES {
                ctx.say(format!(
                    "writes: synchronous_commit={sync}, round {}/{}, {mode}: {} writers, {rooms} projects, {:?} per kind",
                    round + 1,
                    a.rounds,
                    plan.writers,
                    plan.duration,
                ));
                let setup = Setup::start(ctx, &plan, mode).await?;
                for rows in plan.kinds {
                    let run = measure(ctx, &plan, &setup, sync, rows).await?;
                    accumulate(&mut acc, run);
                }
                setup.finish(ctx, &plan, &mut acc, sync).await?;
            }
        }
    }
    let n = a.rounds as f64;
    for r in &mut acc {
        r.tps = median(&r.tps_rounds);
        r.rows_per_s = r.tps * r.rows_per_tx as f64;
        r.postgres_cpu_pct /= n;
        r.server_cpu_pct = r.server_cpu_pct.map(|c| c / n);
    }
    Ok(acc)
}

/// The `synchronous_commit` settings to measure: the flag's, or the server's and `off`.
async fn sync_settings(ctx: &Ctx) -> Result<Vec<String>, String> {
    if let Some(v) = &ctx.args.synchronous_commit {
        return Ok(vec![v.clone()]);
    }
    let r = ctx.admin.query_one("SHOW synchronous_commit", &[]).await.map_err(|e| e.to_string())?;
    let default: String = r.get(0);
    Ok(if default == "off" { vec![default] } else { vec![default, "off".into()] })
}

/// What a mode runs beside the writers.
struct Setup {
    mode: &'static str,
    bare: Option<BareListener>,
    server: Option<Server>,
    fleet: Option<Fleet>,
}

impl Setup {
    async fn start(ctx: &Ctx, plan: &Plan, mode: &'static str) -> Result<Setup, String> {
        let mut setup = Setup { mode, bare: None, server: None, fleet: None };
        match mode {
            "no-feed" => ctx
                .admin
                .batch_execute("ALTER TABLE tasks DISABLE TRIGGER boardcast_feed_insert")
                .await
                .map_err(|e| e.to_string())?,
            "bare-listener" => setup.bare = Some(bare_listener(&ctx.url).await?),
            "server" | "server+clients" => {
                let s = ctx.spawn_server(&format!("writes-{}", mode.replace('+', "-")))?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                if mode == "server+clients" {
                    let mut f = Fleet::new(Shared::new(0), plan.rooms);
                    let spec = ctx.fleet_spec(&s, plan.rooms, plan.clients);
                    f.grow(&spec, plan.clients, Duration::from_secs(120)).await?;
                    setup.fleet = Some(f);
                }
                setup.server = Some(s);
            }
            _ => {}
        }
        Ok(setup)
    }

    /// Undoes the mode's setup, adding what it counted (notifications; lost and duplicated events) to its runs.
    async fn finish(self, ctx: &Ctx, plan: &Plan, acc: &mut [WriteRun], sync: &str) -> Result<(), String> {
        if self.mode == "no-feed" {
            ctx.admin
                .batch_execute("ALTER TABLE tasks ENABLE TRIGGER boardcast_feed_insert")
                .await
                .map_err(|e| e.to_string())?;
        }
        if let Some(bare) = self.bare {
            let got = bare.stop().await;
            runs_of(acc, sync, self.mode).for_each(|r| *r.notifications.get_or_insert(0) += got);
        }
        if let Some(f) = self.fleet {
            let finals = load::final_seqs(&ctx.admin, &plan.projects).await?;
            let (outcomes, _) = f.finish(&finals, Duration::from_secs(60)).await;
            let v = load::verdict(&outcomes, &finals);
            ctx.say(format!(
                "writes: server+clients: {} deliveries, lost {}, duplicated {}",
                v.received, v.lost, v.duplicates
            ));
            for r in runs_of(acc, sync, self.mode) {
                *r.lost.get_or_insert(0) += v.lost;
                *r.duplicates.get_or_insert(0) += v.duplicates;
            }
        }
        if let Some(s) = self.server {
            s.stop();
        }
        Ok(())
    }
}

/// The runs of a setting and mode (both kinds).
fn runs_of<'a>(acc: &'a mut [WriteRun], sync: &'a str, mode: &'a str) -> impl Iterator<Item = &'a mut WriteRun> {
    acc.iter_mut().filter(move |r| r.synchronous_commit == sync && r.mode == mode)
}

/// One round of one mode and kind: the writers as fast as they go.
async fn measure(ctx: &Ctx, plan: &Plan, setup: &Setup, sync: &str, rows: usize) -> Result<WriteRun, String> {
    let server = setup.server.as_ref();
    let sampler = server::Sampler::start(ctx.admin.clone(), server.map(|s| s.pid));
    let mark = CpuMark::now(server);
    let spec = WriteSpec {
        url: ctx.url.clone(),
        projects: plan.projects.clone(),
        writers: plan.writers,
        rate: None,
        duration: plan.duration,
        warmup: plan.warmup,
        rows,
        setup: Some(format!("SET synchronous_commit = {sync}")),
        start: None,
    };
    let w = write_on_own_thread(spec, Shared::new(0)).await?;
    let (server_cpu, pg_cpu, _, _) = mark.since(server, &w);
    let (queue, _) = sampler.finish().await;
    let t = w.window_transactions as f64 / w.window_secs;
    ctx.say(format!(
        "writes: {}, {rows} rows/tx: {t:.0} tx/s, {:.0} rows/s, postgres CPU {pg_cpu:.0}%{}",
        setup.mode,
        w.window_rows as f64 / w.window_secs,
        server.map(|_| format!(", server CPU {server_cpu:.0}%")).unwrap_or_default()
    ));
    if let Some(e) = &w.first_error {
        ctx.say(format!("writes: first error: {e}"));
    }
    Ok(WriteRun {
        synchronous_commit: sync.to_string(),
        mode: setup.mode.to_string(),
        rows_per_tx: rows,
        writers: plan.writers,
        tps: t,
        rows_per_s: t * rows as f64,
        tps_rounds: vec![t],
        clients: setup.fleet.as_ref().map(|_| plan.clients),
        errors: w.errors,
        lost: None,
        duplicates: None,
        notifications: None,
        server_cpu_pct: server.map(|_| server_cpu),
        postgres_cpu_pct: pg_cpu,
        queue_usage_max: queue,
    })
}

/// Adds a round's figures to the run of the same setting, mode and kind: sums, averaged at the end.
fn accumulate(acc: &mut Vec<WriteRun>, run: WriteRun) {
    let same = |r: &&mut WriteRun| {
        r.synchronous_commit == run.synchronous_commit && r.mode == run.mode && r.rows_per_tx == run.rows_per_tx
    };
    match acc.iter_mut().find(same) {
        None => acc.push(run),
        Some(r) => {
            r.tps_rounds.extend(run.tps_rounds);
            r.errors += run.errors;
            r.postgres_cpu_pct += run.postgres_cpu_pct;
            r.server_cpu_pct = r.server_cpu_pct.zip(run.server_cpu_pct).map(|(x, y)| x + y);
            r.queue_usage_max = r.queue_usage_max.max(run.queue_usage_max);
        }
    }
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
struct BareListener {
    driver: tokio::task::JoinHandle<()>,
    count: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl BareListener {
    /// Stops listening (a moment after the writers, for their last notifications); returns the count.
    async fn stop(self) -> u64 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.stop.cancel();
        let _ = self.driver.await;
        self.count.load(Ordering::Relaxed)
    }
}

async fn bare_listener(url: &str) -> Result<BareListener, String> {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await.map_err(|e| e.to_string())?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
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
    let driver = tokio::spawn(async move {
        let _client = client;
        let _ = driver.await;
    });
    Ok(BareListener { driver, count, stop })
}

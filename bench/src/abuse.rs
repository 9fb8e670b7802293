//! The `abuse` scenario (issue #13): 1,000 well-behaved clients over 100 rooms, SQL writers at a fixed rate and
//! an API writer, through a baseline phase without abuse and then one phase per abusive client
//! ([`crate::abusers`]). Each phase measures what the well-behaved side got (commit-to-client latency of the
//! writes made in the phase, API write latency), what the server spent (RSS, CPU, file descriptors) and what the
//! abuser got. Losses and duplicates are checked over the whole run, as in `latency`.
//!
//! One server and one set of clients live through every phase, with a settling time between phases: what an
//! abuser leaves behind (memory not returned, a slow room) shows in the phases after it, as it would in
//! production. The writers' timeline is fixed in advance (open loop), so each write belongs to one phase by
//! the instant it was due.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use uuid::Uuid;

use crate::abusers::{self, Target};
use crate::args::Abuse;
use crate::ctx::{Ctx, write_on_own_thread};
use crate::hist::Histogram;
use crate::http::HttpConn;
use crate::load::{self, Fleet, Shared, WriteSpec};
use crate::machine::{self, fds_of};
use crate::results::{AbusePhase, AbuseRun, AbuserReport};
use crate::server::Server;

const CLIENTS: usize = 1000;
const ROOMS: usize = 100;
const WRITERS: usize = 4;
const RATE: f64 = 500.0;
const PHASE_SECS: f64 = 10.0;
const SETTLE_SECS: f64 = 1.5;
/// API writes per second (one keep-alive connection, each write waiting for the one before).
const API_RATE: f64 = 20.0;
/// The loopback address the abusers connect from (the clients use 127.0.0.1 and up).
const ABUSER_SOURCE: [u8; 4] = [127, 0, 0, 250];

/// The run's shape: the flags applied to the defaults.
struct Plan {
    clients: usize,
    rooms: usize,
    writers: usize,
    rate: f64,
    phase: Duration,
    settle: Duration,
    kinds: Vec<Abuse>,
    history: i64,
}

impl Plan {
    fn new(ctx: &Ctx) -> Plan {
        let a = &ctx.args;
        Plan {
            clients: a.clients.unwrap_or(CLIENTS).max(1),
            rooms: a.rooms.unwrap_or(ROOMS).min(ctx.projects.len()).max(1),
            writers: a.writers.unwrap_or(WRITERS).max(1),
            rate: a.rate.filter(|r| *r > 0.0).unwrap_or(RATE),
            phase: a.secs(PHASE_SECS),
            settle: Duration::from_secs_f64(a.warmup.unwrap_or(SETTLE_SECS)),
            kinds: if a.abuse.is_empty() { Abuse::ALL.to_vec() } else { a.abuse.clone() },
            history: a.history.max(1),
        }
    }

    /// The phases' names: the baseline, then each abuser.
    fn names(&self) -> Vec<String> {
        std::iter::once("baseline".to_string()).chain(self.kinds.iter().map(|k| k.name())).collect()
    }

    /// Phase `k` runs over this span of time after the writers' start; each phase follows a settling time.
    fn window(&self, k: usize) -> Range<Duration> {
        let start = self.settle + (self.phase + self.settle) * k as u32;
        start..start + self.phase
    }

    /// The writers' run: until the last phase has ended and settled.
    fn total(&self) -> Duration {
        (self.phase + self.settle) * (self.kinds.len() as u32 + 1) + self.settle
    }

    /// The ids of the writes due in each phase (write `i` is due at `i / rate`).
    fn spans(&self) -> Vec<Range<u64>> {
        let id = |d: Duration| (d.as_secs_f64() * self.rate).ceil() as u64;
        (0..=self.kinds.len()).map(|k| self.window(k)).map(|w| id(w.start)..id(w.end)).collect()
    }
}

/// Runs the scenario: sets up the users, starts the server and the clients, then the phases.
pub async fn run(ctx: &Ctx) -> Result<AbuseRun, String> {
    let plan = Plan::new(ctx);
    ctx.say(format!(
        "abuse: {} clients in {} rooms, {} writers at {} tx/s, API writes at {API_RATE}/s; phases of {:?} \
         (settling {:?}): baseline, {}",
        plan.clients,
        plan.rooms,
        plan.writers,
        plan.rate,
        plan.phase,
        plan.settle,
        plan.names()[1..].join(", ")
    ));
    let t = Instant::now();
    let users = Users::create(&ctx.admin, &ctx.projects[..plan.rooms], plan.history).await?;
    ctx.say(format!(
        "abuse: users and a history of {} events made in {:.1} s",
        users.history_len,
        t.elapsed().as_secs_f64()
    ));
    let m = measure(ctx, &plan, &users).await?;
    Ok(figures(ctx, &plan, &users, m))
}

/// What the phases measured, before the figures are worked out.
struct Measured {
    phases: Vec<AbusePhase>,
    shared: Arc<Shared>,
    outcomes: Vec<load::ClientOutcome>,
    finals: Vec<i64>,
    api: ApiSamples,
}

/// Starts the server, joins the clients, then runs the writers, the API writer and the phases.
async fn measure(ctx: &Ctx, plan: &Plan, users: &Users) -> Result<Measured, String> {
    let server = ctx.spawn_server("abuse")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let capacity = (plan.rate * plan.total().as_secs_f64() * 1.1) as usize + 1000;
    let shared = Shared::with_spans(capacity, plan.spans());
    let mut fleet = Fleet::new(shared.clone(), plan.rooms);
    let mut spec = ctx.fleet_spec(&server, plan.rooms, plan.clients);
    spec.tokens = Arc::new(users.good.clone());
    fleet.grow(&spec, plan.clients, Duration::from_secs(120)).await?;
    ctx.say(format!("abuse: {} clients joined", plan.clients));

    let start = Instant::now() + Duration::from_secs(1);
    let writers = tokio::spawn(write_on_own_thread(
        WriteSpec {
            url: ctx.url.clone(),
            projects: Arc::new(ctx.projects[..plan.rooms].to_vec()),
            writers: plan.writers,
            rate: Some(plan.rate),
            duration: plan.total() - plan.settle,
            warmup: plan.settle,
            rows: 1,
            setup: Some(format!("SET synchronous_commit = {}", ctx.load_sync_commit())),
            start: Some(start),
        },
        shared.clone(),
    ));
    let probe = ApiProbe::start(&server, users, ctx.projects[0], start, start + plan.total());
    let open_files = boardcast::process::open_file_limit().0;
    let target = Arc::new(users.target(&server, open_files.saturating_sub(plan.clients as u64 + 1000)));
    let mut phases = Vec::new();
    for (k, name) in plan.names().into_iter().enumerate() {
        let kind = k.checked_sub(1).map(|i| plan.kinds[i]);
        let window = plan.window(k);
        let phase = phase(ctx, &server, &name, kind, target.clone(), start + window.start, start + window.end).await;
        phases.push(phase);
    }
    let write = writers.await.map_err(|e| e.to_string())??;
    let api = probe.finish().await;
    let finals = load::final_seqs(&ctx.admin, &ctx.projects[..plan.rooms]).await?;
    let (outcomes, _) = fleet.finish(&finals, Duration::from_secs(30)).await;
    shared.resolve_pending();
    server.stop();
    if write.errors > 0 {
        ctx.say(format!("abuse: {} writes failed; first: {}", write.errors, write.first_error.unwrap_or_default()));
    }
    Ok(Measured { phases, shared, outcomes, finals, api })
}

/// The run's figures: each phase's latency and API figures, the whole run's losses.
fn figures(ctx: &Ctx, plan: &Plan, users: &Users, m: Measured) -> AbuseRun {
    let Measured { mut phases, shared, outcomes, finals, api } = m;
    let v = load::verdict(&outcomes, &finals);
    let clients_of = clients_per_room(plan.clients, plan.rooms);
    for (k, p) in phases.iter_mut().enumerate() {
        let (ids, h) = &shared.spans[k];
        p.samples = h.count();
        p.expected_samples =
            ids.clone().filter(|&i| shared.committed(i)).map(|i| clients_of[i as usize % plan.rooms]).sum();
        (p.p50_ms, p.p99_ms, p.max_ms) = (ms(h.quantile(0.5)), ms(h.quantile(0.99)), ms(h.max()));
        let w = plan.window(k);
        api.fill(p, w.start.as_secs_f64()..w.end.as_secs_f64());
    }
    AbuseRun {
        clients: plan.clients,
        rooms: plan.rooms,
        users: users.good.len(),
        writers: plan.writers,
        offered_tps: plan.rate,
        api_writes_per_s: API_RATE,
        phase_secs: plan.phase.as_secs_f64(),
        settle_secs: plan.settle.as_secs_f64(),
        history_events: users.history_len,
        deliveries: v.received,
        expected_deliveries: outcomes.iter().map(|o| (finals[o.project] - o.joined_seq).max(0) as u64).sum(),
        lost: v.lost,
        duplicates: v.duplicates,
        disconnected: v.disconnected,
        first_disconnect: outcomes.iter().find_map(|o| o.error.clone()),
        synchronous_commit: ctx.load_sync_commit(),
        phases,
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// How many clients each room has (client `i` is in room `i % rooms`).
fn clients_per_room(clients: usize, rooms: usize) -> Vec<u64> {
    (0..rooms).map(|r| ((clients + rooms - 1 - r) / rooms) as u64).collect()
}

/// One phase: the abuser (none for the baseline) from `from` to `until`, the server watched meanwhile.
async fn phase(
    ctx: &Ctx,
    server: &Server,
    name: &str,
    kind: Option<Abuse>,
    target: Arc<Target>,
    from: Instant,
    until: Instant,
) -> AbusePhase {
    let late_ms = Instant::now().saturating_duration_since(from).as_millis() as u64;
    tokio::time::sleep_until(from.into()).await;
    let began = Instant::now();
    let (cpu_server, cpu_pg, busy) = (server.cpu(), BackendsCpu::now(&ctx.admin).await, machine::machine_cpu());
    let mut p = AbusePhase { name: name.to_string(), late_ms, rss_start: server.rss(), ..Default::default() };
    let report = kind.map(|k| abusers::spawn(k, target, until));
    while Instant::now() < until {
        p.rss_max = p.rss_max.max(server.rss());
        p.fds_max = p.fds_max.max(fds_of(server.pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = began.elapsed().as_secs_f64().max(1e-9);
    p.server_cpu_pct = server.cpu().saturating_sub(cpu_server).as_secs_f64() / wall * 100.0;
    p.postgres_cpu_pct = cpu_pg.since(&ctx.admin).await.as_secs_f64() / wall * 100.0;
    let now = machine::machine_cpu();
    p.machine_busy_pct = (now.0 - busy.0) as f64 / (now.1 - busy.1).max(1) as f64 * 100.0;
    p.rss_end = server.rss();
    p.rss_max = p.rss_max.max(p.rss_end);
    if let Some(report) = report {
        p.abuser = Some(report.await.unwrap_or_else(|_| AbuserReport {
            notes: vec!["the abuser's thread ended without a report".into()],
            ..Default::default()
        }));
    }
    ctx.say(phase_line(&p));
    p
}

/// CPU time of the PostgreSQL backends of the bench database (the server's pool and listener, the writers):
/// the database server is shared, and other databases' backends come and go.
struct BackendsCpu(std::collections::HashMap<u32, Duration>);

impl BackendsCpu {
    async fn now(admin: &Client) -> BackendsCpu {
        let sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()";
        let pids: Vec<u32> = match admin.query(sql, &[]).await {
            Ok(rows) => rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect(),
            Err(_) => Vec::new(),
        };
        BackendsCpu(pids.into_iter().map(|p| (p, machine::cpu_of(p))).collect())
    }

    /// CPU used since `self` by the backends alive now (those that started meanwhile: all of theirs).
    async fn since(&self, admin: &Client) -> Duration {
        let now = BackendsCpu::now(admin).await;
        now.0.iter().map(|(pid, t)| t.saturating_sub(self.0.get(pid).copied().unwrap_or_default())).sum()
    }
}

/// What a phase saw, as it ends (the clients' latency is known only when the run is over).
fn phase_line(p: &AbusePhase) -> String {
    let got = p.abuser.as_ref().map(crate::report::abuser_got).unwrap_or_else(|| "(no abuser)".into());
    format!(
        "abuse: {}: server RSS {:.1} → max {:.1} MiB, CPU server {:.0}%, postgres {:.0}% (machine {:.0}% busy); the abuser got: {got}",
        p.name,
        p.rss_start as f64 / 1048576.0,
        p.rss_max as f64 / 1048576.0,
        p.server_cpu_pct,
        p.postgres_cpu_pct,
        p.machine_busy_pct,
    )
}

// ---------------------------------------------------------------------------------------------------------
// Users

/// The scenario's users: one per room for the well-behaved clients (ten tabs each, not a thousand
/// connections of one user, which a per-user limit would rightly refuse), and the abuser with projects of
/// its own: a quiet room and one with a long history.
struct Users {
    good: Vec<String>,
    abuser: String,
    room: Uuid,
    history: Uuid,
    history_len: i64,
}

impl Users {
    async fn create(admin: &Client, projects: &[Uuid], history: i64) -> Result<Users, String> {
        let e = |e: tokio_postgres::Error| e.to_string();
        let mut good = Vec::new();
        for (i, p) in projects.iter().enumerate() {
            let (user, token) =
                boardcast::admin::add_user(admin, &format!("good-{i}")).await.map_err(|e| e.to_string())?;
            admin
                .execute(
                    "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'member')",
                    &[p, &user],
                )
                .await
                .map_err(e)?;
            good.push(token);
        }
        let (abuser, token) = boardcast::admin::add_user(admin, "abuser").await.map_err(|e| e.to_string())?;
        let rows = admin
            .query("INSERT INTO projects (name) VALUES ('abuser room'), ('abuser history') RETURNING id", &[])
            .await
            .map_err(e)?;
        let (room, history_id): (Uuid, Uuid) = (rows[0].get(0), rows[1].get(0));
        admin
            .execute(
                "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $3, 'owner'), ($2, $3, 'owner')",
                &[&room, &history_id, &abuser],
            )
            .await
            .map_err(e)?;
        admin
            .execute(
                "INSERT INTO tasks (project_id, title) SELECT $1, 'history ' || g FROM generate_series(1, $2::int) g",
                &[&history_id, &(history as i32)],
            )
            .await
            .map_err(e)?;
        let history_len = load::final_seqs(admin, &[history_id]).await?[0];
        Ok(Users { good, abuser: token, room, history: history_id, history_len })
    }

    fn target(&self, server: &Server, open_files: u64) -> Target {
        Target {
            addr: server.addr,
            source: ABUSER_SOURCE.into(),
            token: self.abuser.clone(),
            room: self.room,
            history: self.history,
            flood_connections: abusers::FLOOD_CONNECTIONS.min(open_files as usize),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The API writer

/// A well-behaved API client: `POST /api/projects/{id}/tasks` at a steady rate over one keep-alive
/// connection (a write is sent when due, or when the one before is answered if that is later), each answer's
/// latency from its send kept with the instant the write was due. A server that holds writes up shows in the
/// latency of those and in how few were sent.
struct ApiProbe {
    handle: tokio::task::JoinHandle<()>,
    samples: Arc<Mutex<Vec<ApiSample>>>,
}

struct ApiSample {
    /// Seconds after the writers' start the write was due.
    due: f64,
    latency_us: u64,
    ok: bool,
}

impl ApiProbe {
    fn start(server: &Server, users: &Users, project: Uuid, start: Instant, end: Instant) -> ApiProbe {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (addr, token, out) = (server.addr, users.good[0].clone(), samples.clone());
        let path = format!("/api/projects/{project}/tasks");
        let handle = tokio::spawn(async move {
            let mut conn: Option<HttpConn> = None;
            for i in 0u64.. {
                let due = start + Duration::from_secs_f64(i as f64 / API_RATE);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                let ok = api_write(&mut conn, addr, &path, &token).await;
                let latency_us = sent.elapsed().as_micros() as u64;
                out.lock().unwrap().push(ApiSample { due: (due - start).as_secs_f64(), latency_us, ok });
            }
        });
        ApiProbe { handle, samples }
    }

    /// Waits for the last write; what they all measured.
    async fn finish(self) -> ApiSamples {
        let _ = self.handle.await;
        ApiSamples(std::mem::take(&mut *self.samples.lock().unwrap()))
    }
}

struct ApiSamples(Vec<ApiSample>);

impl ApiSamples {
    /// The writes due in `window` (seconds after the start): their count, failures and latency.
    fn fill(&self, p: &mut AbusePhase, window: Range<f64>) {
        let h = Histogram::new();
        for s in self.0.iter().filter(|s| window.contains(&s.due)) {
            h.record(s.latency_us);
            p.api_writes += 1;
            p.api_failures += u64::from(!s.ok);
        }
        (p.api_p50_ms, p.api_p99_ms) = (ms(h.quantile(0.5)), ms(h.quantile(0.99)));
    }
}

/// One API write, on the kept connection or a new one; `true` if it was created (201) within 10 s.
async fn api_write(conn: &mut Option<HttpConn>, addr: std::net::SocketAddr, path: &str, token: &str) -> bool {
    let attempt = async {
        if conn.is_none() {
            *conn = Some(HttpConn::connect(addr, None).await?);
        }
        let c = conn.as_mut().unwrap();
        let a = c.request("POST", path, token, Some(r#"{"title":"api write"}"#)).await?;
        if c.closed {
            *conn = None;
        }
        Ok::<_, std::io::Error>(a.status == 201)
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(created)) => created,
        _ => {
            *conn = None;
            false
        }
    }
}

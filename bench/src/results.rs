//! What a run measured: the figures of each scenario, as results.json keeps them and the report renders them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::load::WriteOutcome;
use crate::machine::Machine;

/// One latency or fan-out run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadRun {
    pub name: String,
    pub clients: usize,
    pub rooms: usize,
    pub writers: usize,
    pub rows_per_tx: usize,
    pub offered_tps: Option<f64>,
    pub achieved_tps: f64,
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub deliveries_per_s: f64,
    pub latency_samples: u64,
    pub early_receipts: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub from_send_p50_ms: f64,
    pub from_send_p99_ms: f64,
    pub synchronous_commit: String,
    pub lost: u64,
    pub duplicates: u64,
    pub disconnected: usize,
    pub other_frames: u64,
    pub drain_ms: u64,
    pub connect_secs: f64,
    pub rss_idle: u64,
    pub rss_connected: u64,
    pub rss_max: u64,
    pub queue_usage_max: f64,
    pub server_cpu_pct: f64,
    pub postgres_cpu_pct: f64,
    pub bench_cpu_pct: f64,
    pub machine_busy_pct: f64,
    pub write: WriteOutcome,
    /// The latency CDF: (µs, fraction).
    #[serde(skip, default)]
    pub cdf: Vec<(u64, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRun {
    pub rooms: usize,
    pub rss_idle: u64,
    /// (connections, RSS bytes)
    pub points: Vec<(usize, u64)>,
    pub slope_bytes_per_conn: f64,
    pub held: usize,
    pub hold_requested: usize,
    pub hold_limit_note: Option<String>,
    pub hold_error: Option<String>,
    pub rss_held: u64,
    pub connect_rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteRun {
    pub synchronous_commit: String,
    pub mode: String,
    pub rows_per_tx: usize,
    pub writers: usize,
    pub tps: f64,
    pub rows_per_s: f64,
    /// Transactions/s of each round (the figure above is their median).
    pub tps_rounds: Vec<f64>,
    /// Clients joined (server+clients only).
    pub clients: Option<usize>,
    pub errors: u64,
    pub lost: Option<u64>,
    pub duplicates: Option<u64>,
    pub notifications: Option<u64>,
    pub server_cpu_pct: Option<f64>,
    pub postgres_cpu_pct: f64,
    pub queue_usage_max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Results {
    pub command: String,
    pub date: String,
    pub machine: Option<Machine>,
    pub server_env: Vec<(String, String)>,
    pub load: Vec<LoadRun>,
    pub memory: Option<MemoryRun>,
    pub writes: Vec<WriteRun>,
    #[serde(default)]
    pub abuse: Option<AbuseRun>,
    #[serde(default)]
    pub broadcast: Option<BroadcastRun>,
    #[serde(default)]
    pub scale_out: Option<ScaleRun>,
    #[serde(default)]
    pub storm: Option<ScaleRun>,
    pub ceiling: Option<CeilingRun>,
    pub lost: u64,
    pub duplicates: u64,
    pub errors: Vec<String>,
    /// The hand-written section of BENCHMARKS.md, carried over from the file being replaced.
    #[serde(skip, default)]
    pub notes: Option<String>,
    /// The abuse section of BENCHMARKS.md, carried over from the file being replaced when `abuse` did not run.
    #[serde(skip, default)]
    pub kept_abuse: Option<String>,
    /// The scale-out and reconnect-storm sections, likewise.
    #[serde(skip, default)]
    pub kept_scale: Vec<String>,
    /// The same for the ceiling section.
    #[serde(skip, default)]
    pub kept_ceiling: Option<String>,
}

/// The abuse scenario: well-behaved clients and an API writer through a baseline phase and one phase per
/// abusive client.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AbuseRun {
    pub clients: usize,
    pub rooms: usize,
    /// Users the clients are spread over (client i is user i mod users).
    pub users: usize,
    pub writers: usize,
    pub offered_tps: f64,
    pub api_writes_per_s: f64,
    pub phase_secs: f64,
    pub settle_secs: f64,
    pub history_events: i64,
    /// Over the whole run: what the clients received, and what they should have.
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub disconnected: usize,
    pub first_disconnect: Option<String>,
    pub synchronous_commit: String,
    pub phases: Vec<AbusePhase>,
}

/// One phase: the well-behaved side's figures while the abuser ran, the server's, and the abuser's own.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AbusePhase {
    /// `baseline`, or the abuser's kind (`--abuse` name).
    pub name: String,
    /// Commit-to-client latency of the SQL writes made during the phase.
    pub samples: u64,
    /// Deliveries those writes should have made (their committed count times the clients of their room).
    pub expected_samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The API writer: `POST /api/projects/{id}/tasks` sent during the phase, how many did not get 201, and the
    /// latency of the answers.
    pub api_writes: u64,
    pub api_failures: u64,
    pub api_p50_ms: f64,
    pub api_p99_ms: f64,
    pub rss_start: u64,
    pub rss_max: u64,
    pub rss_end: u64,
    /// The server's open file descriptors (its sockets, mostly), at most.
    pub fds_max: u64,
    pub server_cpu_pct: f64,
    pub postgres_cpu_pct: f64,
    /// The whole machine, all cores: how busy it was (other users of the machine count too).
    pub machine_busy_pct: f64,
    /// How late the phase started (the previous abuser's clean-up ran over the settling time).
    pub late_ms: u64,
    pub abuser: Option<AbuserReport>,
}

/// What an abusive client sent and what it got.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AbuserReport {
    /// Requests, frames or connections sent (per kind: pings, joins, upgrades, requests).
    pub sent: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// What came back, counted: replies (`joined`, `error rate_limited`), HTTP statuses, close codes, how
    /// connections ended (`closed by the server`, `open at the end`).
    pub got: BTreeMap<String, u64>,
    pub notes: Vec<String>,
    /// From the phase's end until every connection of the abuser was closed.
    pub cleanup_ms: u64,
}

/// The broadcast scenario (issue #16).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BroadcastRun {
    pub clients: usize,
    pub rooms: usize,
    pub per_client_per_sec: f64,
    pub one_server: Option<BroadcastLatency>,
    pub two_servers: Option<BroadcastLatency>,
    pub writes: Vec<BroadcastWrites>,
    #[serde(default)]
    pub writes_two_servers: Vec<BroadcastWrites>,
}

/// Broadcast delivery over the measured window: from the send (by the sending client) to the receipt (by each
/// other client of the room), by whether sender and receiver were on the same server.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BroadcastLatency {
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub broadcasts_per_s: f64,
    pub same_server_p50_ms: f64,
    pub same_server_p99_ms: f64,
    pub same_server_max_ms: f64,
    pub other_server_p50_ms: Option<f64>,
    pub other_server_p99_ms: Option<f64>,
    pub other_server_max_ms: Option<f64>,
}

/// The write ceiling with the broadcasts running and without them (medians of the rounds, tx/s).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BroadcastWrites {
    pub synchronous_commit: String,
    pub with_broadcasts_tps: f64,
    pub without_broadcasts_tps: f64,
    pub ratio: f64,
    pub with_rounds: Vec<f64>,
    pub without_rounds: Vec<f64>,
}

/// `scale-out` (issue #20): servers on one database behind nginx, clients held across them from several
/// load-generator processes, all rooms fed by SQL writes; with `reconnect-storm`, one server restarted.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ScaleRun {
    pub servers: usize,
    /// Each server's BOARDCAST_POOL_SIZE.
    #[serde(default)]
    pub pool_size: String,
    pub clients: usize,
    pub joined: usize,
    /// Why not all of them joined (the first failure).
    #[serde(default)]
    pub join_error: Option<String>,
    pub rooms: usize,
    pub writers: usize,
    pub offered_tps: f64,
    pub achieved_tps: f64,
    /// The writers' commit acknowledgements after the intended send, ms.
    #[serde(default)]
    pub write_ack_p50_ms: f64,
    #[serde(default)]
    pub write_ack_p99_ms: f64,
    pub synchronous_commit: String,
    /// Load-generator processes (children of the bench).
    pub load_processes: usize,
    pub connect_secs: f64,
    pub per_server: Vec<ServerShare>,
    /// (Σ servers' RSS with the clients − Σ idle) / clients.
    pub rss_per_conn_bytes: f64,
    pub nginx: NginxCost,
    /// % of one core over the write phase.
    pub server_cpu_pct: f64,
    pub postgres_cpu_pct: f64,
    pub load_generator_cpu_pct: f64,
    pub machine_busy_pct: f64,
    /// `uptime`'s load averages when the run began.
    pub load_average: String,
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub deliveries_per_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub disconnected: usize,
    pub first_error: Option<String>,
    /// Receipt minus the event's `at` (the statement's time), wall clock, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub nginx_conf: String,
    pub storm: Option<StormRun>,
}

/// One server's share: its connections (descriptors opened since idle) and RSS.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ServerShare {
    pub connections: u64,
    pub rss_idle: u64,
    pub rss_connected: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NginxCost {
    pub workers: usize,
    /// Master and workers, summed.
    pub rss_idle: u64,
    pub rss_connected: u64,
    /// % of one core over the write phase, and per event delivered.
    pub cpu_pct: f64,
    pub cpu_us_per_delivery: f64,
}

/// A server restarted under the clients: SIGTERM (its clients get 1012), then started again on its address.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StormRun {
    /// SIGTERM → the process exited; exit → listening again.
    pub stop_ms: f64,
    pub start_ms: f64,
    /// Clients that were disconnected and resumed, their disconnections and connection attempts.
    pub clients_resumed: usize,
    pub disconnects: u64,
    pub attempts: u64,
    pub not_caught_up: usize,
    /// SIGTERM → the last of them had resumed (its `joined`), and had caught up (reached the `latest` of it).
    pub all_resumed_ms: f64,
    pub all_caught_up_ms: f64,
    /// Per client, first disconnect → caught up.
    pub outage_p50_ms: f64,
    pub outage_p99_ms: f64,
    pub outage_max_ms: f64,
    /// Connections to the bench database (pg_stat_activity, every 100 ms), and the servers' among them:
    /// at most in the 2 s before the SIGTERM, and at most from it until every client caught up.
    pub db_connections_before: i64,
    pub db_connections_storm: i64,
    pub db_server_connections_before: i64,
    pub db_server_connections_storm: i64,
    pub db_active_storm: i64,
    /// Events committed per second (from `feed_seq`, sampled every 100 ms): before the SIGTERM, during the storm
    /// (SIGTERM → all caught up), and the lowest over 500 ms in it.
    pub tps_before: f64,
    pub tps_storm: f64,
    pub tps_storm_min_500ms: f64,
    /// Each server's connections (descriptors opened since it was idle) when the writes ended: where nginx
    /// sent the clients that resumed.
    #[serde(default)]
    pub connections_after: Vec<u64>,
    /// Per client, first disconnect → its `joined` again, ms.
    #[serde(default)]
    pub to_resume_p50_ms: f64,
    #[serde(default)]
    pub to_resume_p99_ms: f64,
    /// Clients disconnected, and resumed (`joined`), in each 500 ms after the SIGTERM.
    #[serde(default)]
    pub disconnected_per_500ms: Vec<u64>,
    #[serde(default)]
    pub resumed_per_500ms: Vec<u64>,
}

/// The ceiling scenario (issue #20): boardcast against the bare broadcaster, the same fan-out at each rate.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CeilingRun {
    pub clients: usize,
    pub rooms: usize,
    pub writers: usize,
    pub duration_secs: f64,
    pub rounds: usize,
    /// /proc/loadavg before the first run and after the last: how busy the machine was besides.
    pub load_before: String,
    pub load_after: String,
    pub rates: Vec<CeilingRate>,
}

/// One rate of deliveries/s: each server's runs, round by round, their medians, and boardcast's ratios to the
/// bare broadcaster (the median of the rounds' ratios).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CeilingRate {
    pub deliveries_per_s: u64,
    pub boardcast: Vec<CeilingSample>,
    pub bare: Vec<CeilingSample>,
    pub boardcast_median: CeilingSample,
    pub bare_median: CeilingSample,
    pub cpu_ratio: f64,
    pub p99_ratio: f64,
    pub cpu_ratios: Vec<f64>,
    pub p99_ratios: Vec<f64>,
}

/// What one run of one server measured.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CeilingSample {
    pub deliveries_per_s: f64,
    pub server_cpu_pct: f64,
    /// Server CPU (user + system) per delivery, µs.
    pub cpu_us_per_delivery: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub disconnected: usize,
    pub machine_busy_pct: f64,
    pub bench_cpu_pct: f64,
    pub postgres_cpu_pct: f64,
}

impl CeilingSample {
    pub fn of(r: &LoadRun) -> CeilingSample {
        let per = if r.deliveries_per_s > 0.0 { r.server_cpu_pct / 100.0 / r.deliveries_per_s * 1e6 } else { 0.0 };
        CeilingSample {
            deliveries_per_s: r.deliveries_per_s,
            server_cpu_pct: r.server_cpu_pct,
            cpu_us_per_delivery: per,
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            lost: r.lost,
            duplicates: r.duplicates,
            disconnected: r.disconnected,
            machine_busy_pct: r.machine_busy_pct,
            bench_cpu_pct: r.bench_cpu_pct,
            postgres_cpu_pct: r.postgres_cpu_pct,
        }
    }
}

impl CeilingRate {
    /// Medians of each server's runs, and the median of the rounds' ratios.
    pub fn summarize(&mut self) {
        let med = |v: &[CeilingSample], f: fn(&CeilingSample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        let summary = |v: &[CeilingSample]| CeilingSample {
            deliveries_per_s: med(v, |s| s.deliveries_per_s),
            server_cpu_pct: med(v, |s| s.server_cpu_pct),
            cpu_us_per_delivery: med(v, |s| s.cpu_us_per_delivery),
            p50_ms: med(v, |s| s.p50_ms),
            p99_ms: med(v, |s| s.p99_ms),
            lost: v.iter().map(|s| s.lost).sum(),
            duplicates: v.iter().map(|s| s.duplicates).sum(),
            disconnected: v.iter().map(|s| s.disconnected).sum(),
            machine_busy_pct: med(v, |s| s.machine_busy_pct),
            bench_cpu_pct: med(v, |s| s.bench_cpu_pct),
            postgres_cpu_pct: med(v, |s| s.postgres_cpu_pct),
        };
        self.boardcast_median = summary(&self.boardcast);
        self.bare_median = summary(&self.bare);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let pairs = self.boardcast.iter().zip(&self.bare);
        self.cpu_ratios = pairs.clone().map(|(x, b)| ratio(x.cpu_us_per_delivery, b.cpu_us_per_delivery)).collect();
        self.p99_ratios = pairs.map(|(x, b)| ratio(x.p99_ms, b.p99_ms)).collect();
        self.cpu_ratio = median(&self.cpu_ratios);
        self.p99_ratio = median(&self.p99_ratios);
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

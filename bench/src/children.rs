//! Load-generator child processes, for runs with more WebSockets than one process may open: the open-file
//! hard limit (20,000 here) bounds every process, the bench's as much as the server's. The bench runs itself
//! again with `--child`, once per slice of the clients; each child holds its slice (the same clients and
//! checks as [`crate::load::Fleet`]) and reports what they saw.
//!
//! The talk is JSON lines: the parent writes a [`ChildSpec`] to the child's stdin, the child answers
//! [`FromChild::Grown`] once its clients have joined; the parent writes [`Finish`] (the rooms' final seqs)
//! when the writers are done, the child answers [`FromChild::Outcome`] and exits. Times that cross processes
//! are wall-clock µs since the Unix epoch.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use uuid::Uuid;

use crate::hist::{Histogram, Snapshot};
use crate::load::{self, Fleet, FleetSpec, Shared, wall_us};

/// Loopback source addresses of each child's clients.
const SOURCES_PER_CHILD: usize = 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub addr: SocketAddr,
    pub token: String,
    pub projects: Vec<Uuid>,
    /// The index of the child's first client among all; client `first + i` joins project `(first + i) % R`.
    pub first: usize,
    pub count: usize,
    pub sources: Vec<IpAddr>,
    pub reconnect: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Finish {
    pub finals: Vec<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromChild {
    Grown { joined: usize, error: Option<String> },
    Outcome(Box<ChildOutcome>),
}

/// What a child's clients saw, summed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildOutcome {
    pub clients: usize,
    pub received: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub disconnected: usize,
    pub first_error: Option<String>,
    /// Wall-clock µs of the first and last receipt of an event.
    pub first_recv_us: u64,
    pub last_recv_us: u64,
    /// Receipt minus the event's `at`, µs.
    pub latency: Snapshot,
    pub resume: ResumeSummary,
}

/// The clients' reconnections, summed (see [`load::Resume`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResumeSummary {
    /// Clients that were disconnected at least once.
    pub clients: usize,
    pub disconnects: u64,
    pub attempts: u64,
    pub first_disconnect_us: u64,
    pub last_resumed_us: u64,
    pub last_caught_up_us: u64,
    /// Clients disconnected and never caught up again.
    pub not_caught_up: usize,
    /// Per client: from its first disconnect until it had caught up after its last resume, µs.
    pub outage: Snapshot,
    /// Per client: from its first disconnect until its last resume's `joined`, µs.
    pub to_resume: Snapshot,
    /// Clients by the 100 ms (wall clock, ms / 100) of their first disconnect, and of their last `joined`.
    #[serde(default)]
    pub disconnected_at: Vec<(u64, u64)>,
    #[serde(default)]
    pub resumed_at: Vec<(u64, u64)>,
}

/// `boardcast-bench --child`: one slice of the clients, run as the parent says on stdin.
pub async fn child_main() -> Result<(), String> {
    boardcast::process::raise_open_file_limit();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let line = stdin.next_line().await.map_err(|e| e.to_string())?.ok_or("no spec on stdin")?;
    let spec: ChildSpec = serde_json::from_str(&line).map_err(|e| format!("spec: {e}"))?;
    let base_us = wall_us();
    let shared = Shared::new(0);
    let mut fleet = Fleet::new(shared.clone(), spec.projects.len());
    let fleet_spec = FleetSpec {
        addr: spec.addr,
        tokens: Arc::new(vec![spec.token.clone()]),
        projects: Arc::new(spec.projects.clone()),
        sources: spec.sources.clone(),
        // Several children open connections at once through one nginx to the servers: fewer at a time each,
        // so that no server's accept queue overflows (nginx would count the timeout as the server failing).
        connect_concurrency: 64,
        buf_size: 4096,
        group_tx: false,
        first: spec.first,
        reconnect: spec.reconnect,
        wall_clock: true,
    };
    let error = fleet.grow(&fleet_spec, spec.count, Duration::from_secs(300)).await.err();
    say(&FromChild::Grown { joined: fleet.joined(), error });
    let line = stdin.next_line().await.map_err(|e| e.to_string())?.ok_or("no finish on stdin")?;
    let finish: Finish = serde_json::from_str(&line).map_err(|e| format!("finish: {e}"))?;
    let (outcomes, _) = fleet.finish(&finish.finals, Duration::from_secs(90)).await;
    // Clients that never joined (the run goes on with those that did; `Grown` said why) have nothing to check.
    let outcomes: Vec<load::ClientOutcome> = outcomes.into_iter().filter(|o| o.joined).collect();
    let v = load::verdict(&outcomes, &finish.finals);
    let ns = |a: &std::sync::atomic::AtomicU64| base_us + a.load(Ordering::Relaxed) / 1000;
    let out = ChildOutcome {
        clients: outcomes.len(),
        received: v.received,
        expected: outcomes.iter().map(|o| (finish.finals[o.project] - o.joined_seq).max(0) as u64).sum(),
        lost: v.lost,
        duplicates: v.duplicates,
        disconnected: v.disconnected,
        first_error: outcomes.iter().find_map(|o| o.error.clone()),
        first_recv_us: if shared.deliveries.load(Ordering::Relaxed) > 0 { ns(&shared.first_recv) } else { 0 },
        last_recv_us: ns(&shared.last_recv),
        latency: shared.statement_to_client.snapshot(),
        resume: resumes(&outcomes),
    };
    say(&FromChild::Outcome(Box::new(out)));
    Ok(())
}

fn resumes(outcomes: &[load::ClientOutcome]) -> ResumeSummary {
    let (outage, to_resume) = (Histogram::new(), Histogram::new());
    let mut s = ResumeSummary::default();
    let (mut down, mut up) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    for r in outcomes.iter().map(|o| &o.resume).filter(|r| r.disconnects > 0) {
        *down.entry(r.first_disconnect_us / 100_000).or_insert(0) += 1;
        if r.resumed_us > 0 {
            *up.entry(r.resumed_us / 100_000).or_insert(0) += 1;
        }
        s.clients += 1;
        s.disconnects += r.disconnects as u64;
        s.attempts += r.attempts as u64;
        s.first_disconnect_us = if s.first_disconnect_us == 0 {
            r.first_disconnect_us
        } else {
            s.first_disconnect_us.min(r.first_disconnect_us)
        };
        s.last_resumed_us = s.last_resumed_us.max(r.resumed_us);
        if r.resumed_us > 0 {
            to_resume.record(r.resumed_us.saturating_sub(r.first_disconnect_us));
        }
        if r.caught_up_us == 0 {
            s.not_caught_up += 1;
        } else {
            s.last_caught_up_us = s.last_caught_up_us.max(r.caught_up_us);
            outage.record(r.caught_up_us.saturating_sub(r.first_disconnect_us));
        }
    }
    s.disconnected_at = down.into_iter().collect();
    s.resumed_at = up.into_iter().collect();
    s.outage = outage.snapshot();
    s.to_resume = to_resume.snapshot();
    s
}

fn say(m: &FromChild) {
    println!("{}", serde_json::to_string(m).unwrap());
}

/// The parent's side: the children, their pipes, and their pids (for CPU accounting).
pub struct Children {
    procs: Vec<(Child, ChildStdin, Lines<BufReader<ChildStdout>>)>,
    pub pids: Vec<u32>,
}

impl Children {
    /// Starts one child per `per_child` clients (at most), each from four loopback addresses of its own
    /// (127.0.0.2 to .5 for the first, .6 to .9 for the next, ...), all connecting to `addr`: past some 10,000
    /// connections from one source address to one destination, connect() failed here with EADDRNOTAVAIL
    /// (half of the 28,000 ephemeral ports, with the connections of earlier runs still in TIME_WAIT).
    pub async fn spawn(
        addr: SocketAddr,
        token: &str,
        projects: &[Uuid],
        clients: usize,
        per_child: usize,
        reconnect: bool,
    ) -> Result<Children, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let n = clients.div_ceil(per_child.max(1)).max(1);
        let mut procs = Vec::new();
        let mut pids = Vec::new();
        for k in 0..n {
            let first = clients * k / n;
            let count = clients * (k + 1) / n - first;
            let mut child = Command::new(&exe)
                .args(["--child", "--threads", "1"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting a load-generator child: {e}"))?;
            pids.push(child.id().unwrap_or(0));
            let mut stdin = child.stdin.take().unwrap();
            let lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let spec = ChildSpec {
                addr,
                token: token.to_string(),
                projects: projects.to_vec(),
                first,
                count,
                sources: (0..SOURCES_PER_CHILD)
                    .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, (2 + SOURCES_PER_CHILD * k + i) as u8)))
                    .collect(),
                reconnect,
            };
            let line = serde_json::to_string(&spec).unwrap() + "\n";
            stdin.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
            procs.push((child, stdin, lines));
        }
        Ok(Children { procs, pids })
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Waits until every child's clients have joined or failed: the number joined, and the first failure.
    pub async fn grown(&mut self) -> Result<(usize, Option<String>), String> {
        let mut total = 0;
        let mut errors = Vec::new();
        for (_, _, lines) in &mut self.procs {
            match next(lines).await? {
                FromChild::Grown { joined, error } => {
                    total += joined;
                    errors.extend(error);
                }
                other => return Err(format!("unexpected from a child: {other:?}")),
            }
        }
        Ok((total, errors.into_iter().next()))
    }

    /// Tells the children the rooms' final seqs and collects what their clients saw.
    pub async fn finish(mut self, finals: &[i64]) -> Result<Vec<ChildOutcome>, String> {
        let line = serde_json::to_string(&Finish { finals: finals.to_vec() }).unwrap() + "\n";
        for (_, stdin, _) in &mut self.procs {
            stdin.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        }
        let mut out = Vec::new();
        for (child, _, lines) in &mut self.procs {
            match next(lines).await? {
                FromChild::Outcome(o) => out.push(*o),
                other => return Err(format!("unexpected from a child: {other:?}")),
            }
            let _ = child.wait().await;
        }
        Ok(out)
    }
}

async fn next(lines: &mut Lines<BufReader<ChildStdout>>) -> Result<FromChild, String> {
    let line = lines.next_line().await.map_err(|e| e.to_string())?.ok_or("a load-generator child exited")?;
    serde_json::from_str(&line).map_err(|e| format!("from a child: {e}: {line}"))
}

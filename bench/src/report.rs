//! The results as text (stdout), as BENCHMARKS.md, and as a latency plot (an SVG drawn by hand).

use std::fmt::Write as _;

use crate::results::{
    AbusePhase, AbuseRun, AbuserReport, CeilingRate, CeilingSample, LoadRun, MemoryRun, Results, WriteRun,
};
use crate::scale_report;
use crate::sections::{kept, with_section};

const MIB: f64 = 1024.0 * 1024.0;

pub fn load_line(r: &LoadRun) -> String {
    format!(
        "{}: offered {} tx/s, achieved {:.0} tx/s; {:.0} deliveries/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; lost {}, duplicated {}; RSS idle {:.1} MiB, with {} connections {:.1} MiB; queue {:.4}%; CPU server {:.0}%, postgres {:.0}%, bench {:.0}% (machine {:.0}% busy)",
        r.name,
        r.offered_tps.map(|x| format!("{x:.0}")).unwrap_or_else(|| "max".into()),
        r.achieved_tps,
        r.deliveries_per_s,
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        r.max_ms,
        r.lost,
        r.duplicates,
        r.rss_idle as f64 / MIB,
        r.clients,
        r.rss_connected as f64 / MIB,
        r.queue_usage_max * 100.0,
        r.server_cpu_pct,
        r.postgres_cpu_pct,
        r.bench_cpu_pct,
        r.machine_busy_pct,
    )
}

/// Server CPU per event, for `tx-groups`: per event written (recorded once, sent to every client of its room)
/// and per event delivered (to one client). CPU% is over the writing window, deliveries/s over the span from
/// the first to the last receipt: the same stretch of time, give or take the drain.
pub fn per_event_line(r: &LoadRun) -> String {
    let cpu = r.server_cpu_pct / 100.0;
    let written = r.achieved_tps * r.rows_per_tx as f64;
    let per = |rate: f64| if rate > 0.0 { cpu / rate * 1e6 } else { 0.0 };
    format!(
        "{}: {:.0} events/s written, {:.0} deliveries/s; server CPU {:.0}% = {:.1} µs per event written, {:.2} µs per delivery",
        r.name,
        written,
        r.deliveries_per_s,
        r.server_cpu_pct,
        per(written),
        per(r.deliveries_per_s)
    )
}

fn opt_ms(x: f64) -> String {
    format!("{x:.2}")
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / MIB)
}

/// The tables, in markdown (also what is printed).
pub fn tables(r: &Results) -> String {
    let mut s = String::new();
    if !r.load.is_empty() {
        load_tables(&mut s, &r.load);
    }
    if let Some(m) = &r.memory {
        memory_table(&mut s, m);
    }
    if !r.writes.is_empty() {
        writes_table(&mut s, &r.writes);
    }
    if let Some(a) = &r.abuse {
        abuse_tables(&mut s, a);
    }
    s
}

fn load_tables(s: &mut String, load: &[LoadRun]) {
    s.push_str("### Latency and fan-out\n\n");
    s.push_str("| run | clients / rooms | writers | offered tx/s | achieved tx/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | lost | dup | RSS idle MiB | RSS with C MiB | notify queue max | CPU server / postgres / bench (% of a core) |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for l in load {
        let _ = writeln!(
            s,
            "| {} | {} / {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {:.4}% | {:.0} / {:.0} / {:.0} |",
            l.name,
            l.clients,
            l.rooms,
            l.writers,
            l.offered_tps.map(|x| format!("{x:.0}")).unwrap_or_else(|| "max".into()),
            l.achieved_tps,
            l.deliveries_per_s,
            opt_ms(l.p50_ms),
            opt_ms(l.p99_ms),
            opt_ms(l.p999_ms),
            opt_ms(l.max_ms),
            l.lost,
            l.duplicates,
            mib(l.rss_idle),
            mib(l.rss_connected),
            l.queue_usage_max * 100.0,
            l.server_cpu_pct,
            l.postgres_cpu_pct,
            l.bench_cpu_pct,
        );
    }
    s.push('\n');
    for l in load {
        let _ = writeln!(
            s,
            "- {}: writers' synchronous_commit={}; {} deliveries ({} expected from the rooms' final seqs), {} latency samples, mean {:.2} ms; from the (intended) send instead of the commit: p50 {:.2} ms, p99 {:.2} ms; {} events reached a client before their writer saw the commit; writers' commit acknowledgement p50 {:.2} ms / p99 {:.2} ms after the intended send; clients joined in {:.1} s; all delivered {} ms after the last write; machine {:.0}% busy; {} clients disconnected; {} transactions shed.",
            l.name,
            l.synchronous_commit,
            l.deliveries,
            l.expected_deliveries,
            l.latency_samples,
            l.mean_ms,
            l.from_send_p50_ms,
            l.from_send_p99_ms,
            l.early_receipts,
            l.write.ack_p50_us as f64 / 1000.0,
            l.write.ack_p99_us as f64 / 1000.0,
            l.connect_secs,
            l.drain_ms,
            l.machine_busy_pct,
            l.disconnected,
            l.write.shed,
        );
    }
    s.push('\n');
}

fn memory_table(s: &mut String, m: &MemoryRun) {
    s.push_str("### Memory (server RSS, idle connections, each joined to one of ");
    let _ = write!(s, "{} rooms)\n\n", m.rooms);
    s.push_str("| connections | server RSS MiB |\n|---|---|\n");
    let _ = writeln!(s, "| 0 (idle) | {} |", mib(m.rss_idle));
    for (n, rss) in &m.points {
        let _ = writeln!(s, "| {n} | {} |", mib(*rss));
    }
    let _ = writeln!(
        s,
        "\nSlope (least squares over the points from 1,000 connections up): **{:.2} KiB per connection**. Held {} connections (requested {}){}{}; connections opened at {:.0}/s.\n",
        m.slope_bytes_per_conn / 1024.0,
        m.held,
        m.hold_requested,
        m.hold_limit_note.as_ref().map(|n| format!(" — {n}")).unwrap_or_default(),
        m.hold_error.as_ref().map(|e| format!(" — error: {e}")).unwrap_or_default(),
        m.connect_rate,
    );
}

fn writes_table(s: &mut String, writes: &[WriteRun]) {
    s.push_str("### Write ceiling (closed loop, as fast as possible)\n\n");
    s.push_str("| synchronous_commit | listening | rows/tx | writers | tx/s (median) | tx/s per round | rows/s | vs bare listener (median of the rounds' ratios) | lost / dup | CPU postgres / server (% of a core) | notify queue max |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for w in writes {
        let bare = writes.iter().find(|b| {
            b.mode == "bare-listener" && b.rows_per_tx == w.rows_per_tx && b.synchronous_commit == w.synchronous_commit
        });
        let frac = bare.map(|b| format!("{:.1}%", vs_bare(w, b).0)).unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {} | {:.0} | {} | {} | {:.0} / {} | {:.4}% |",
            w.synchronous_commit,
            w.mode,
            w.rows_per_tx,
            w.writers,
            w.tps,
            w.tps_rounds.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join(", "),
            w.rows_per_s,
            frac,
            match (w.lost, w.duplicates) {
                (Some(l), Some(d)) => format!("{l} / {d}"),
                _ => "—".into(),
            },
            w.postgres_cpu_pct,
            w.server_cpu_pct.map(|c| format!("{c:.0}")).unwrap_or_else(|| "—".into()),
            w.queue_usage_max * 100.0,
        );
    }
    s.push_str(
        "\n`no-feed`: the feed trigger on tasks is disabled (no event, no NOTIFY: plain INSERTs, for scale). `none`: the feed records and NOTIFYs, nobody LISTENs. `bare-listener`: one plain tokio-postgres connection LISTENs and only reads. `server`: the boardcast server runs, no client. `server+clients`: the server with clients joined (lost/dup checked).\n\n",
    );
}

/// Targets from the issue, met or not.
pub fn targets(r: &Results) -> String {
    let mut s = String::from("| target | result | |\n|---|---|---|\n");
    let mut row = |t: &str, res: String, ok: Option<bool>| target(&mut s, t, res, mark(ok));
    if let Some(l) = r.load.iter().find(|l| l.name == "latency") {
        row(
            &format!(
                "{} clients / {} rooms, {} writes/s: p50 ≤ 2 ms, p99 ≤ 10 ms",
                l.clients,
                l.rooms,
                l.offered_tps.unwrap_or(0.0)
            ),
            format!("p50 {:.2} ms, p99 {:.2} ms", l.p50_ms, l.p99_ms),
            Some(l.p50_ms <= 2.0 && l.p99_ms <= 10.0),
        );
    }
    if let Some(l) = r.load.iter().find(|l| l.name == "fanout") {
        row(
            "fan-out ≥ 250,000 deliveries/s, p99 ≤ 50 ms, nothing lost",
            format!("{:.0} deliveries/s, p99 {:.2} ms, lost {}", l.deliveries_per_s, l.p99_ms, l.lost),
            Some(l.deliveries_per_s >= 250_000.0 && l.p99_ms <= 50.0 && l.lost == 0),
        );
    }
    if let Some(m) = &r.memory {
        let top = m.points.iter().map(|p| p.0).max().unwrap_or(0);
        row(
            "≤ 16 KiB RSS per idle connection (slope 1,000 → 20,000)",
            format!("{:.2} KiB/connection (1,000 → {top})", m.slope_bytes_per_conn / 1024.0),
            Some(m.slope_bytes_per_conn <= 16.0 * 1024.0),
        );
        row(
            "50,000 concurrent connections held",
            format!(
                "{} held{}",
                m.held,
                m.hold_limit_note.as_ref().map(|_| " (capped by the open-file limit)".to_string()).unwrap_or_default()
            ),
            if m.held >= 50_000 {
                Some(true)
            } else if m.hold_limit_note.is_some() {
                None
            } else {
                Some(false)
            },
        );
    }
    write_targets(&mut s, &r.writes);
    s
}

fn target(s: &mut String, t: &str, res: String, mark: &str) {
    let _ = writeln!(s, "| {t} | {res} | {mark} |");
}

/// The write-ceiling target, for each synchronous_commit setting and kind of transaction measured.
fn write_targets(s: &mut String, writes: &[WriteRun]) {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for w in writes {
        let k = (w.synchronous_commit.clone(), w.rows_per_tx);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (sync, rows) in keys {
        let mode =
            |m: &str| writes.iter().find(|w| w.mode == m && w.rows_per_tx == rows && w.synchronous_commit == sync);
        // Two readings of the target: the server in the bare listener's place (what it costs the database to
        // have boardcast LISTEN and relay), and the same with clients reading every event on these two cores.
        if let (Some(b), Some(x), Some(c)) = (mode("bare-listener"), mode("server"), mode("server+clients")) {
            let ((f, per_round), (fc, _)) = (vs_bare(x, b), vs_bare(c, b));
            let clients = c.clients.map(|n| format!("{n} clients")).unwrap_or_else(|| "clients".into());
            let rounds = if per_round.len() > 1 {
                let each: Vec<String> = per_round.iter().map(|r| format!("{r:.1}")).collect();
                format!(" [rounds: {}]", each.join(", "))
            } else {
                String::new()
            };
            target(
                s,
                &format!(
                    "writes ≥ 95% of the bare-listener rate, {} (synchronous_commit={sync})",
                    if rows == 1 { "single-row tx".to_string() } else { format!("{rows}-row tx") }
                ),
                format!(
                    "server {f:.1}%{rounds} ({:.0} vs {:.0} rows/s); with {clients} reading: {fc:.1}% ({:.0} rows/s)",
                    x.rows_per_s, b.rows_per_s, c.rows_per_s
                ),
                &match (f >= 95.0, fc >= 95.0) {
                    (a, b) if a == b => mark(Some(a)).to_string(),
                    (a, _) => format!("server {}, with clients {}", mark(Some(a)), mark(Some(!a))),
                },
            );
        }
    }
}

/// A write mode's rate as a percentage of the bare listener's: the median of the per-round ratios (each round
/// runs every mode one after the other, so a round's two figures share the machine's and the disk's state of the
/// moment, which varies more between rounds than the modes differ), and those ratios. Without rounds, the
/// ratio of the medians.
fn vs_bare(w: &WriteRun, bare: &WriteRun) -> (f64, Vec<f64>) {
    if w.tps_rounds.len() == bare.tps_rounds.len() && bare.tps_rounds.iter().all(|t| *t > 0.0) {
        let mut per_round: Vec<f64> = w.tps_rounds.iter().zip(&bare.tps_rounds).map(|(x, b)| x / b * 100.0).collect();
        if !per_round.is_empty() {
            let each = per_round.clone();
            per_round.sort_by(|a, b| a.total_cmp(b));
            let n = per_round.len();
            let median = if n % 2 == 1 { per_round[n / 2] } else { (per_round[n / 2 - 1] + per_round[n / 2]) / 2.0 };
            return (median, each);
        }
    }
    (w.rows_per_s / bare.rows_per_s * 100.0, Vec::new())
}

fn mark(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

pub fn text(r: &Results) -> String {
    let mut s = tables(r);
    if let Some(c) = &r.ceiling {
        ceiling_tables(&mut s, c);
    }
    let t = targets(r);
    if t.lines().count() > 2 {
        s.push_str(&t);
    }
    s
}

pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str("Generated by `make bench` (the `boardcast-bench` binary, the `bench/` crate). ");
    s.push_str("Everything runs on one machine: the server (release build, spawned by the bench as a child process), PostgreSQL and the load generator share the cores, so each figure includes the cost of the others.\n\n");
    run_lines(&mut s, r);
    s.push_str("\n## How it measures\n\n");
    s.push_str(
        "- **Clients** authenticate with `Authorization: Bearer` on `GET /ws`, send `{\"op\":\"join\",\"project\":...}` and wait for `joined`; client *i* joins room *i mod R*. Each client checks that the seqs it receives are exactly joined+1, joined+2, ... up to the room's final seq (read from `feed_seq` after the writers stop): a gap or a missing tail counts as **lost**, a repeated or backward seq as **dup**.\n\
         - **Writers** are W plain tokio-postgres connections running `INSERT INTO tasks (project_id, title) VALUES ($1, $2)` (bulk: one `INSERT .. SELECT` of K rows per transaction), transaction *i* to room *i mod R*. With a rate they are **open loop**: transaction *i* is sent at start + i/rate whether or not earlier ones have finished (they are pipelined on the connections), so a slow server cannot slow the offered load down.\n\
         - **Latency** is commit-to-client: the title carries an id, the writer stores the instant its INSERT was acknowledged (the commit), the client takes the instant its `read` returned the frame; same process, same monotonic clock. Warm-up writes are excluded. Percentiles come from a log-linear histogram (≤ 0.2% error, rounded up).\n\
         - **deliveries/s** = events received by all clients / (last receipt − first receipt).\n\
         - **RSS** is `VmRSS` of the server process from /proc; the per-connection figure is the least-squares slope over several connection counts. **notify queue** is the maximum of `pg_notification_queue_usage()` sampled every 250 ms.\n\
         - **CPU** is user+system time from /proc over the write phase, as % of one core (the machine has two): the server, all `postgres` processes including the writers' backends (the database server is shared: other users' load counts too, and is the main source of noise in these figures), the bench itself.\n\
         - The load generator reads frames with its own minimal WebSocket reader (no JSON parsing: `seq` and the id are found in the frame bytes), clients run on a 2-thread runtime, writers on a thread of their own.\n\n",
    );
    s.push_str("## Targets\n\n");
    s.push_str(&targets(r));
    s.push_str("\n## Results\n\n");
    s.push_str(&tables(r));
    if r.load.iter().any(|l| !l.cdf.is_empty()) {
        s.push_str("![commit-to-client latency by percentile](docs/bench/latency.svg)\n\n");
    }
    if let Some(notes) = &r.notes {
        s.push_str(notes);
        s.push_str("\n\n");
    }
    if let Some(abuse) = r.abuse.as_ref().map(|_| abuse_section(r)).or_else(|| r.kept_abuse.clone()) {
        s.push_str(&abuse);
        s.push_str("\n\n");
    }
    if let Some(ceiling) = r.ceiling.as_ref().map(|_| ceiling_section(r)).or_else(|| r.kept_ceiling.clone()) {
        s.push_str(&ceiling);
        s.push_str("\n\n");
    }
    for section in
        scale_report::written(r, &run_lines_of(r)).into_iter().map(|x| x.1).chain(r.kept_scale.iter().cloned())
    {
        s.push_str(&section);
        s.push_str("\n\n");
    }
    s.push_str("## Reference\n\n");
    s.push_str("The seed's stack (Express + Socket.io + pg LISTEN) on this machine, 2,000 clients / 100 rooms / 5,000 single-row writes from 8 writers: 24,800 deliveries/s, p99 51 ms, ~20 KiB per connection.\n\n");
    s.push_str("## Reproduce\n\n```\nmake bench                                   # all scenarios, writes this file and docs/bench/latency.svg\nmake bench BENCH_ARGS='--scenario latency --clients 2000 --rate 2000'\nmake bench BENCH_ARGS='--scenario abuse --report'   # issue #13's abusive clients (~2 min): rewrites only its section\nmake bench BENCH_ARGS='--scenario ceiling --report' # boardcast against a bare broadcaster (~7 min): rewrites only its section\n./target/release/boardcast-bench --help\n```\n\n");
    s.push_str("Raw results of the last run: `.bench-out/results.json`; server logs: `.bench-out/server-*.log`.\n");
    s
}

/// Marks the part of BENCHMARKS.md written by hand (reading the figures, profiles): a new run keeps it.
const NOTES_START: &str = "<!-- notes: written by hand; make bench keeps this section -->";
const NOTES_END: &str = "<!-- end of notes -->";

/// The hand-written section of an existing BENCHMARKS.md, markers included.
pub fn kept_notes(existing: &str) -> Option<String> {
    let start = existing.find(NOTES_START)?;
    let end = existing[start..].find(NOTES_END)? + start + NOTES_END.len();
    Some(existing[start..end].to_string())
}

/// Marks the abuse section: `--scenario abuse --report` writes it (and only it), the other runs keep it.
const ABUSE_START: &str = "<!-- abuse: written by boardcast-bench --scenario abuse --report; other runs keep it -->";
const ABUSE_END: &str = "<!-- end of abuse -->";

/// The abuse section of an existing BENCHMARKS.md, markers included.
pub fn kept_abuse(existing: &str) -> Option<String> {
    kept(existing, (ABUSE_START, ABUSE_END))
}

/// `existing` with its abuse section replaced by `section` (or, if it has none, with `section` added before
/// the reference figures).
pub fn with_abuse(existing: &str, section: &str) -> String {
    with_section(existing, (ABUSE_START, ABUSE_END), section)
}

/// Marks the ceiling section: `--scenario ceiling --report` writes it (and only it), the other runs keep it.
const CEILING_START: &str =
    "<!-- ceiling: written by boardcast-bench --scenario ceiling --report; other runs keep it -->";
const CEILING_END: &str = "<!-- end of ceiling -->";

/// The ceiling section of an existing BENCHMARKS.md, markers included.
pub fn kept_ceiling(existing: &str) -> Option<String> {
    kept(existing, (CEILING_START, CEILING_END))
}

pub fn write_files(r: &Results) -> std::io::Result<()> {
    let mut r = r.clone();
    let existing = std::fs::read_to_string("BENCHMARKS.md").ok();
    let only_sections = r.load.is_empty() && r.memory.is_none() && r.writes.is_empty();
    let scale = scale_report::written(&r, &run_lines_of(&r));
    if let (Some(old), true) = (&existing, only_sections)
        && (r.abuse.is_some() || r.ceiling.is_some() || !scale.is_empty())
    {
        let mut new = if r.abuse.is_some() { with_abuse(old, &abuse_section(&r)) } else { old.clone() };
        if r.ceiling.is_some() {
            new = with_section(&new, (CEILING_START, CEILING_END), &ceiling_section(&r));
        }
        for (markers, section) in scale {
            new = with_section(&new, markers, &section);
        }
        return std::fs::write("BENCHMARKS.md", new);
    }
    if r.notes.is_none() {
        r.notes = existing.as_deref().and_then(kept_notes);
    }
    if r.kept_abuse.is_none() {
        r.kept_abuse = existing.as_deref().and_then(kept_abuse);
    }
    if r.kept_ceiling.is_none() {
        r.kept_ceiling = existing.as_deref().and_then(kept_ceiling);
    }
    if r.kept_scale.is_empty() {
        r.kept_scale = existing.as_deref().map(|e| scale_report::carried(e, &r)).unwrap_or_default();
    }
    std::fs::write("BENCHMARKS.md", markdown(&r))?;
    if r.load.iter().any(|l| !l.cdf.is_empty()) {
        std::fs::create_dir_all("docs/bench")?;
        std::fs::write("docs/bench/latency.svg", svg(&r))?;
    }
    Ok(())
}

/// Latency by percentile, HDR style: x is the percentile on a log scale of 1/(1-p) (so 90%, 99%, 99.9%,
/// 99.99% are equally spaced), y is the latency in ms on a log scale.
pub fn svg(r: &Results) -> String {
    let runs: Vec<&LoadRun> = r.load.iter().filter(|l| !l.cdf.is_empty()).collect();
    let plot = Plot::new(runs.iter().map(|l| l.max_ms).fold(1.0, f64::max) * 1.5);
    let (w, h) = (plot.w, plot.h);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">boardcast: commit-to-client latency by percentile ({})</text>"#,
        w / 2.0,
        r.date
    );
    plot.grid(&mut s);
    for (i, l) in runs.iter().enumerate() {
        plot.series(&mut s, i, l);
    }
    s.push_str("</svg>\n");
    s
}

/// The latency plot's geometry: the frame, and the log scales of both axes.
struct Plot {
    w: f64,
    h: f64,
    left: f64,
    top: f64,
    /// The plot area's width and height.
    pw: f64,
    ph: f64,
    /// The x axis goes up to 1 - 10^-xmax (5: 99.999%).
    xmax: f64,
    ymin_ms: f64,
    ymax_ms: f64,
}

impl Plot {
    fn new(ymax_ms: f64) -> Plot {
        let (w, h) = (820.0, 480.0);
        let (left, right, top, bottom) = (70.0, 30.0, 50.0, 60.0);
        Plot { w, h, left, top, pw: w - left - right, ph: h - top - bottom, xmax: 5.0, ymin_ms: 0.05, ymax_ms }
    }

    fn x_of(&self, p: f64) -> f64 {
        self.left + (-(1.0 - p).max(1e-12).log10()).min(self.xmax) / self.xmax * self.pw
    }

    fn y_of(&self, ms: f64) -> f64 {
        let (ly0, ly1) = (self.ymin_ms.log10(), self.ymax_ms.log10());
        self.top + self.ph - ((ms.max(self.ymin_ms).log10() - ly0) / (ly1 - ly0)) * self.ph
    }

    /// Percentile and latency grid lines, labels, and the frame.
    fn grid(&self, s: &mut String) {
        let Plot { h, left, top, pw, ph, xmax, ymin_ms, ymax_ms, .. } = *self;
        let ly0 = ymin_ms.log10();
        // Grid: percentiles.
        for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].iter().enumerate() {
            let x = left + i as f64 / xmax * pw;
            let _ = writeln!(s, r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#ddd"/>"##, top + ph);
            let _ = writeln!(s, r#"<text x="{x}" y="{}" text-anchor="middle">{label}</text>"#, top + ph + 18.0);
        }
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#, left + pw / 2.0, h - 14.0);
        // Grid: latency decades (and 2, 5).
        let mut d = 10f64.powf(ly0.floor());
        while d <= ymax_ms {
            for m in [1.0, 2.0, 5.0] {
                let v = d * m;
                if v < ymin_ms || v > ymax_ms {
                    continue;
                }
                let y = self.y_of(v);
                let stroke = if m == 1.0 { "#ccc" } else { "#eee" };
                let _ = writeln!(s, r#"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="{stroke}"/>"#, left + pw);
                let _ =
                    writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, left - 6.0, y + 4.0, fmt_ms(v));
            }
            d *= 10.0;
        }
        let _ = writeln!(
            s,
            r#"<text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle">latency (ms, log scale)</text>"#,
            top + ph / 2.0,
            top + ph / 2.0
        );
        let _ = writeln!(s, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##);
    }

    /// Run `i`'s curve, and its line in the legend.
    fn series(&self, s: &mut String, i: usize, l: &LoadRun) {
        let Plot { left, top, xmax, .. } = *self;
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
        let color = colors[i % colors.len()];
        // The latency at 400 percentiles evenly spaced on the x axis (the CDF has thousands of steps).
        let mut pts = String::new();
        let mut j = 0;
        for k in 0..=400 {
            let p = 1.0 - 10f64.powf(-(k as f64) / 400.0 * xmax);
            while j + 1 < l.cdf.len() && l.cdf[j].1 < p {
                j += 1;
            }
            let ms = l.cdf[j].0 as f64 / 1000.0;
            let _ = write!(pts, "{:.1},{:.1} ", self.x_of(p), self.y_of(ms));
        }
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{pts}"/>"#);
        let ly = top + 16.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
            left + 12.0,
            left + 36.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}: {} clients / {} rooms, {:.0} deliveries/s — p50 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.1} ms</text>"#,
            left + 42.0,
            ly + 4.0,
            l.name,
            l.clients,
            l.rooms,
            l.deliveries_per_s,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms
        );
    }
}

/// Command, date, machine and server environment of a run, as a list.
fn run_lines(s: &mut String, r: &Results) {
    let _ = writeln!(s, "- command: `{}`", r.command);
    let _ = writeln!(s, "- date: {}", r.date);
    if let Some(m) = &r.machine {
        let _ = writeln!(
            s,
            "- machine: {} CPUs (nproc), {}, {:.1} GiB RAM, Linux {}, {}; open-file limit {}",
            m.nproc, m.cpu_model, m.ram_gib, m.kernel, m.postgres, m.nofile_limit
        );
    }
    if !r.server_env.is_empty() {
        let env: Vec<String> = r.server_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "- server environment: `{}`", env.join(" "));
    }
}

fn run_lines_of(r: &Results) -> String {
    let mut s = String::new();
    run_lines(&mut s, r);
    s
}

/// What each abuser does, for the report.
fn abuser_does(name: &str) -> &'static str {
    match name {
        "ping-flood" => {
            "one WebSocket sends empty pings as fast as the server takes them and never reads (sent: pings)"
        }
        "connection-flood" => {
            "up to 2,000 WebSockets with one token, 32 opening at a time, held to the end (sent: upgrades)"
        }
        "join-leave" => {
            "one WebSocket joins its own quiet room and leaves it, again and again, waiting for each reply (sent: frames)"
        }
        "random-joins" => {
            "one WebSocket joins random project ids it is no member of, waiting for each reply (sent: frames)"
        }
        "replay-loop" => {
            "one WebSocket sends `join since=0` of the long history and `leave` at once, again and again, reading what comes (sent: frames)"
        }
        "replays" => {
            "100 WebSockets, each replaying the long history from `since=0` to its end, leaving and starting over (sent: upgrades and frames)"
        }
        "slow-bodies" => {
            "40 connections each send `POST /api/projects/{id}/tasks` declaring 2,400,000 bytes and send all but the last 100, then nothing (sent: requests)"
        }
        "unknown-tokens" => {
            "8 keep-alive connections send `GET /api/me` back to back, each with a random token shaped like a real one (sent: requests)"
        }
        _ => "",
    }
}

/// What an abuser got, most frequent first: `http 401: 30120, connections opened: 8`.
pub fn abuser_got(a: &AbuserReport) -> String {
    let mut got: Vec<(&String, &u64)> = a.got.iter().collect();
    got.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    got.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
}

fn abuse_tables(s: &mut String, a: &AbuseRun) {
    let _ = writeln!(s, "### Abuse: {} well-behaved clients beside one abusive client at a time\n", a.clients);
    s.push_str("| phase | clients p50 ms | p99 ms | max ms | p99 vs baseline | delivered / expected | API writes: sent, p50 / p99 ms (failed) | server RSS MiB start → max | server fds max | CPU server / postgres (% of a core), machine busy | the abuser sent | the abuser got |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let base = a.phases.first().map(|p| p.p99_ms).filter(|p| *p > 0.0);
    for p in &a.phases {
        abuse_row(s, p, base);
    }
    let _ = writeln!(
        s,
        "\nOver the whole run: {} deliveries of {} expected, **lost {}, duplicates {}**, {} of {} clients disconnected{}.\n",
        a.deliveries,
        a.expected_deliveries,
        a.lost,
        a.duplicates,
        a.disconnected,
        a.clients,
        a.first_disconnect.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
    );
    for p in a.phases.iter().filter(|p| p.abuser.is_some()) {
        let x = p.abuser.as_ref().unwrap();
        let mut notes = x.notes.clone();
        if p.late_ms > 0 {
            notes.push(format!("the phase began {} ms late", p.late_ms));
        }
        let _ = writeln!(
            s,
            "- **{}**: {}. It sent {:.1} MB and received {:.1} MB; its connections were all closed {} ms after the phase's end{}.",
            p.name,
            abuser_does(&p.name),
            x.bytes_out as f64 / 1e6,
            x.bytes_in as f64 / 1e6,
            x.cleanup_ms,
            if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) },
        );
    }
    s.push('\n');
}

fn abuse_row(s: &mut String, p: &AbusePhase, base_p99: Option<f64>) {
    let vs = match base_p99 {
        Some(b) if p.name != "baseline" => format!("{:.1}×", p.p99_ms / b),
        _ => "—".into(),
    };
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {vs} | {} / {} | {}: {} / {} ({}) | {} → {} | {} | {:.0} / {:.0}, {:.0}% | {} | {} |",
        p.name,
        opt_ms(p.p50_ms),
        opt_ms(p.p99_ms),
        opt_ms(p.max_ms),
        p.samples,
        p.expected_samples,
        p.api_writes,
        opt_ms(p.api_p50_ms),
        opt_ms(p.api_p99_ms),
        p.api_failures,
        mib(p.rss_start),
        mib(p.rss_max),
        p.fds_max,
        p.server_cpu_pct,
        p.postgres_cpu_pct,
        p.machine_busy_pct,
        p.abuser.as_ref().map(|a| a.sent.to_string()).unwrap_or_else(|| "—".into()),
        p.abuser.as_ref().map(abuser_got).unwrap_or_else(|| "—".into()),
    );
}

/// The abuse section of BENCHMARKS.md, between its markers.
pub fn abuse_section(r: &Results) -> String {
    let Some(a) = &r.abuse else { return String::new() };
    let mut s = format!("{ABUSE_START}\n## Abuse: one client against the others (issue #13)\n\n");
    run_lines(&mut s, r);
    let _ = writeln!(
        s,
        "\n- **Load**: {} well-behaved clients ({} users, each with its share of the connections) in {} rooms receive the events of {} SQL writers at {:.0} tx/s (open loop, synchronous_commit={}); one more well-behaved client writes through the API.",
        a.clients, a.users, a.rooms, a.writers, a.offered_tps, a.synchronous_commit,
    );
    let _ = writeln!(
        s,
        "- **Phases**: a baseline without abuse, then one per abusive client, each {} s long after {} s of settling, all on one server and the same clients (what an abuser leaves behind shows in the phases after it). The abusers connect from a loopback address of their own, with a token of their own; the long history they replay is {} events.",
        a.phase_secs, a.settle_secs, a.history_events,
    );
    s.push_str("- **clients p50 / p99 / max**: commit-to-client latency of the SQL writes due in the phase, as in the latency run; **delivered / expected**: those writes' deliveries, and their committed count times the clients of their room.\n");
    let _ = writeln!(
        s,
        "- **API writes**: `POST /api/projects/{{id}}/tasks` over one keep-alive connection, one due every {:.0} ms (sent then, or when the one before is answered if later): how many were sent in the phase, the time from each send to its answer, and how many failed (anything but 201, or no answer within 10 s).",
        1000.0 / a.api_writes_per_s,
    );
    s.push_str("- **RSS**, **fds**: the server's, sampled every 100 ms; **CPU**: the server's, and the bench database's PostgreSQL backends', as % of one core, and how busy the whole machine was (all cores, anyone's work); **the abuser got**: replies, HTTP statuses, close codes and how its connections ended, counted.\n");
    s.push_str("- Not part of `make bench`: run `make bench BENCH_ARGS='--scenario abuse --report'` (about two minutes), which rewrites only this section; `--abuse ping-flood,slow-bodies` picks abusers, `--duration` sets the phase length.\n\n");
    abuse_tables(&mut s, a);
    s.push_str(ABUSE_END);
    s
}

/// One rate of the ceiling scenario, in a line: the medians and the ratios.
pub fn ceiling_line(r: &CeilingRate) -> String {
    let (x, b) = (&r.boardcast_median, &r.bare_median);
    format!(
        "ceiling {} deliveries/s: boardcast {:.2} µs/delivery, p99 {:.2} ms; bare {:.2} µs/delivery, p99 {:.2} ms; ratios: CPU {:.2}×, p99 {:.2}×",
        r.deliveries_per_s, x.cpu_us_per_delivery, x.p99_ms, b.cpu_us_per_delivery, b.p99_ms, r.cpu_ratio, r.p99_ratio
    )
}

fn ceiling_tables(s: &mut String, c: &crate::results::CeilingRun) {
    let each = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    s.push_str("| deliveries/s | CPU per delivery: boardcast / bare (ratio) | p99: boardcast / bare (ratio) | target ≤ 1.25× on both | ratios per round: CPU; p99 |\n");
    s.push_str("|---|---|---|---|---|\n");
    for r in &c.rates {
        let (x, b) = (&r.boardcast_median, &r.bare_median);
        let _ = writeln!(
            s,
            "| {} | {:.2} / {:.2} µs (**{:.2}×**) | {:.2} / {:.2} ms (**{:.2}×**) | {} | {}; {} |",
            r.deliveries_per_s,
            x.cpu_us_per_delivery,
            b.cpu_us_per_delivery,
            r.cpu_ratio,
            x.p99_ms,
            b.p99_ms,
            r.p99_ratio,
            mark(Some(r.cpu_ratio <= 1.25 && r.p99_ratio <= 1.25)),
            each(&r.cpu_ratios),
            each(&r.p99_ratios),
        );
    }
    s.push_str("\nEvery run, in the order they ran within each round:\n\n");
    s.push_str("| deliveries/s offered | server | round | deliveries/s | server CPU (% of a core) | µs per delivery | p50 / p99 ms | lost / dup / disconnected | CPU postgres / bench, machine busy |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in &c.rates {
        for (i, (x, b)) in r.boardcast.iter().zip(&r.bare).enumerate() {
            ceiling_row(s, r.deliveries_per_s, "boardcast", i + 1, x);
            ceiling_row(s, r.deliveries_per_s, "bare", i + 1, b);
        }
    }
    s.push('\n');
}

fn ceiling_row(s: &mut String, rate: u64, server: &str, round: usize, x: &CeilingSample) {
    let _ = writeln!(
        s,
        "| {rate} | {server} | {round} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {} / {} / {} | {:.0} / {:.0}, {:.0}% |",
        x.deliveries_per_s,
        x.server_cpu_pct,
        x.cpu_us_per_delivery,
        x.p50_ms,
        x.p99_ms,
        x.lost,
        x.duplicates,
        x.disconnected,
        x.postgres_cpu_pct,
        x.bench_cpu_pct,
        x.machine_busy_pct,
    );
}

/// The ceiling section of BENCHMARKS.md, between its markers.
pub fn ceiling_section(r: &Results) -> String {
    let Some(c) = &r.ceiling else { return String::new() };
    let mut s = format!("{CEILING_START}\n## Fan-out ceiling: boardcast against a bare broadcaster (issue #20)\n\n");
    run_lines(&mut s, r);
    let load = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        s,
        "- load average (1, 5, 15 min) before the first run: {}; after the last: {} (the two cores are shared with other sessions' work: **CPU postgres / bench, machine busy** below say how busy the machine was in each run)",
        load(&c.load_before),
        load(&c.load_after)
    );
    let per_room = (c.clients / c.rooms.max(1)).max(1);
    let _ = writeln!(
        s,
        "\n- **Load**: {} clients in {} rooms ({per_room} per room), {} SQL writers of single-row transactions, open loop, at deliveries/s ÷ {per_room} transactions/s; {} s measured after the warm-up, as in the fan-out run. The same clients and checks for both servers: every seq once, in order (**lost / dup**).",
        c.clients, c.rooms, c.writers, c.duration_secs,
    );
    s.push_str("- **The bare broadcaster** (`bench/src/bin/bare-broadcaster.rs`) is the least a server can do to relay the feed: one LISTEN connection on `boardcast_feed`, the WebSocket library and socket settings of boardcast, a room per `join` as a tokio broadcast channel, and each notification's frames, byte for byte boardcast's, written to the room's sockets (what is ready at once, in one write). No cursors, history, catch-up, limits, pings, authentication or checks: nothing it could not lose.\n");
    let _ = writeln!(
        s,
        "- **Rounds**: {} rounds; in each, every rate, boardcast then the bare broadcaster, each with its own fresh server process and clients. Figures are the medians over the rounds, and each ratio is the median of the rounds' ratios. **CPU per delivery** is the server process's user + system time over the write phase divided by deliveries/s; **p99** is commit-to-client, as in the fan-out run.",
        c.rounds
    );
    s.push_str("- Not part of `make bench`: run `make bench BENCH_ARGS='--scenario ceiling --report'` (about six minutes), which rewrites only this section; `--deliveries 10000,100000` picks the rates, `--rounds`, `--duration` the rest.\n\n");
    ceiling_tables(&mut s, c);
    s.push_str(CEILING_END);
    s
}

fn fmt_ms(v: f64) -> String {
    if v >= 1.0 { format!("{v:.0}") } else { format!("{v}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_report_keeps_the_hand_written_notes_of_the_old_one() {
        let old = format!(
            "# Benchmarks\n\nold figures\n\n{NOTES_START}\n## Reading\n\nwhy p99 is high\n{NOTES_END}\n\n## Reference\n"
        );
        let notes = kept_notes(&old).expect("the notes are found");
        let new = markdown(&Results { notes: Some(notes), ..Default::default() });
        assert!(new.contains("why p99 is high"), "{new}");
        assert!(!new.contains("old figures"));
        assert!(new.find("why p99 is high").unwrap() < new.find("## Reference").unwrap());
        assert_eq!(kept_notes("# Benchmarks\n\nno notes here\n"), None);
    }

    #[test]
    fn the_abuse_section_is_replaced_alone_and_kept_by_other_runs() {
        let abuse = |p99: f64| Results {
            command: "boardcast-bench --scenario abuse".into(),
            abuse: Some(AbuseRun {
                phases: vec![
                    AbusePhase { name: "baseline".into(), p99_ms: 2.0, ..Default::default() },
                    AbusePhase { name: "ping-flood".into(), p99_ms: p99, ..Default::default() },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let full = markdown(&Results { command: "boardcast-bench".into(), ..Default::default() });
        assert!(kept_abuse(&full).is_none());
        let first = with_abuse(&full, &abuse_section(&abuse(20.0)));
        assert!(first.contains("| ping-flood |") && first.contains("10.0×"), "{first}");
        assert!(first.find("## Abuse").unwrap() < first.find("## Reference").unwrap());
        let second = with_abuse(&first, &abuse_section(&abuse(4.0)));
        assert!(second.contains("2.0×") && !second.contains("10.0×"), "{second}");
        assert_eq!(second.matches(ABUSE_START).count(), 1);
        assert_eq!(second.replace(&kept_abuse(&second).unwrap(), ""), first.replace(&kept_abuse(&first).unwrap(), ""));
        let kept = kept_abuse(&second);
        let rerun = markdown(&Results { kept_abuse: kept.clone(), ..Default::default() });
        assert_eq!(kept_abuse(&rerun), kept);
    }

    #[test]
    fn the_ceiling_section_is_replaced_alone_and_kept_by_other_runs() {
        let sample = |cpu: f64, p99: f64| CeilingSample { cpu_us_per_delivery: cpu, p99_ms: p99, ..Default::default() };
        let ceiling = |cpu: f64| {
            let mut rate = CeilingRate {
                deliveries_per_s: 100_000,
                boardcast: vec![sample(cpu, 10.0), sample(cpu, 30.0)],
                bare: vec![sample(2.0, 10.0), sample(2.0, 10.0)],
                ..Default::default()
            };
            rate.summarize();
            Results {
                command: "boardcast-bench --scenario ceiling".into(),
                ceiling: Some(crate::results::CeilingRun { rates: vec![rate], ..Default::default() }),
                ..Default::default()
            }
        };
        let with = ceiling(3.0);
        let rate = &with.ceiling.as_ref().unwrap().rates[0];
        assert_eq!((rate.cpu_ratio, rate.p99_ratio), (1.5, 2.0), "medians of the rounds' ratios");
        let full = markdown(&Results { command: "boardcast-bench".into(), ..Default::default() });
        let first = with_section(&full, (CEILING_START, CEILING_END), &ceiling_section(&with));
        assert!(
            first.contains("(**1.50×**)")
                && first.find("## Fan-out ceiling").unwrap() < first.find("## Reference").unwrap()
        );
        let second = with_section(&first, (CEILING_START, CEILING_END), &ceiling_section(&ceiling(2.2)));
        assert!(second.contains("(**1.10×**)") && !second.contains("(**1.50×**)"), "{second}");
        assert_eq!(second.matches(CEILING_START).count(), 1);
        let rerun = markdown(&Results { kept_ceiling: kept_ceiling(&second), ..Default::default() });
        assert_eq!(kept_ceiling(&rerun), kept_ceiling(&second));
    }
}

//! The `scale-out` and `reconnect-storm` sections of BENCHMARKS.md (issue #20), and their lines on stdout.
//! Each is written by its own run (`--scenario scale-out --report`, `--scenario reconnect-storm --report`)
//! between markers, and kept as it is by every other run, as the abuse section is. The report passes in the
//! run's lines (command, date, machine), which it writes for every section alike.

use std::fmt::Write as _;

use crate::results::{Results, ScaleRun};
use crate::sections::kept;

const MIB: f64 = 1024.0 * 1024.0;

/// The sections: (start marker, end marker).
pub const SCALE: (&str, &str) = (
    "<!-- scale-out: written by boardcast-bench --scenario scale-out --report; other runs keep it -->",
    "<!-- end of scale-out -->",
);
pub const STORM: (&str, &str) = (
    "<!-- reconnect-storm: written by boardcast-bench --scenario reconnect-storm --report; other runs keep it -->",
    "<!-- end of reconnect-storm -->",
);

/// A run's figures on one line.
pub fn line(r: &ScaleRun) -> String {
    let mut s = format!(
        "{} servers, {} of {} clients joined ({} processes); {:.2} KiB RSS per connection; nginx {} workers, RSS {:.1} MiB, CPU {:.0}%; CPU servers {:.0}%, postgres {:.0}%, load generator {:.0}% (machine {:.0}% busy); {:.0} tx/s, {:.0} deliveries/s, statement-to-client p50 {:.2} ms p99 {:.2} ms; lost {}, duplicated {}, disconnected {}",
        r.servers,
        r.joined,
        r.clients,
        r.load_processes,
        r.rss_per_conn_bytes / 1024.0,
        r.nginx.workers,
        r.nginx.rss_connected as f64 / MIB,
        r.nginx.cpu_pct,
        r.server_cpu_pct,
        r.postgres_cpu_pct,
        r.load_generator_cpu_pct,
        r.machine_busy_pct,
        r.achieved_tps,
        r.deliveries_per_s,
        r.p50_ms,
        r.p99_ms,
        r.lost,
        r.duplicates,
        r.disconnected,
    );
    if let Some(x) = &r.storm {
        let _ = write!(
            s,
            "; storm: {} clients resumed ({} attempts), all resumed {:.0} ms and caught up {:.0} ms after SIGTERM (outage p50 {:.0} ms, p99 {:.0} ms), {} never caught up; DB connections {} → {} (servers' {} → {}); events/s {:.0} before, {:.0} during (lowest 500 ms: {:.0})",
            x.clients_resumed,
            x.attempts,
            x.all_resumed_ms,
            x.all_caught_up_ms,
            x.outage_p50_ms,
            x.outage_p99_ms,
            x.not_caught_up,
            x.db_connections_before,
            x.db_connections_storm,
            x.db_server_connections_before,
            x.db_server_connections_storm,
            x.tps_before,
            x.tps_storm,
            x.tps_storm_min_500ms,
        );
    }
    s
}

fn setup(s: &mut String, r: &ScaleRun) {
    let _ = writeln!(s, "- load average when the run began: {}", r.load_average);
    let _ = writeln!(
        s,
        "- **Setup**: {} `boardcast serve` processes (`BOARDCAST_POOL_SIZE={}`: PostgreSQL's `max_connections`, 100 here, is shared with the other sessions on this machine) on one database behind nginx ({} worker processes, `least_conn`; the generated configuration is in the scale-out section, and README.md's \"Several servers\" has it for production), all started by the bench. {} clients from {} load-generator processes (children of the bench, each from four loopback addresses of its own) connect through nginx; client *i* joins room *i mod {}*. {} SQL writers insert single-row tasks at {:.0} tx/s over all the rooms (open loop, `synchronous_commit={}`), and every client checks that its seqs are gapless up to its room's final seq, as in the latency run.",
        r.servers,
        r.pool_size,
        r.nginx.workers,
        r.clients,
        r.load_processes,
        r.rooms,
        r.writers,
        r.offered_tps,
        r.synchronous_commit,
    );
    s.push_str("- **Why several processes, and nginx**: this machine's open-file hard limit is 20,000 per process and cannot be raised here. A server holds one descriptor per client, a proxy two (the client's and the upstream's), and the load generator one as well. nginx spreads its connections over worker processes, each with a limit of its own (`reuseport` gives each worker its own listening socket, so the kernel deals the connections out evenly and no worker fills up first); HAProxy serves every connection from one process, which caps it below 10,000 WebSockets here.\n");
}

fn table(s: &mut String, r: &ScaleRun) {
    s.push_str("| clients held / asked | per server: connections, RSS idle → with clients MiB | server RSS per connection | nginx RSS idle → with clients MiB | CPU servers / nginx / postgres / load generator (% of a core), machine busy | tx/s | deliveries/s | nginx CPU per delivery | statement-to-client p50 / p99 / max ms | lost / dup / disconnected |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let per: Vec<String> = r
        .per_server
        .iter()
        .map(|x| format!("{}, {:.1} → {:.1}", x.connections, x.rss_idle as f64 / MIB, x.rss_connected as f64 / MIB))
        .collect();
    let _ = writeln!(
        s,
        "| {} / {} | {} | {:.2} KiB | {:.1} → {:.1} | {:.0} / {:.0} / {:.0} / {:.0}, {:.0}% | {:.0} | {:.0} | {:.2} µs | {:.2} / {:.2} / {:.1} | {} / {} / {} |\n",
        r.joined,
        r.clients,
        per.join("; "),
        r.rss_per_conn_bytes / 1024.0,
        r.nginx.rss_idle as f64 / MIB,
        r.nginx.rss_connected as f64 / MIB,
        r.server_cpu_pct,
        r.nginx.cpu_pct,
        r.postgres_cpu_pct,
        r.load_generator_cpu_pct,
        r.machine_busy_pct,
        r.achieved_tps,
        r.deliveries_per_s,
        r.nginx.cpu_us_per_delivery,
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.lost,
        r.duplicates,
        r.disconnected,
    );
    let _ = writeln!(
        s,
        "- {} deliveries of {} expected; clients joined in {:.1} s{}; the writers' commits acknowledged p50 {:.2} ms, p99 {:.2} ms after the intended send.{}",
        r.deliveries,
        r.expected_deliveries,
        r.connect_secs,
        r.join_error.as_ref().map(|e| format!(" (the others failed; first: {e})")).unwrap_or_default(),
        r.write_ack_p50_ms,
        r.write_ack_p99_ms,
        r.first_error.as_ref().map(|e| format!(" First client error: {e}.")).unwrap_or_default()
    );
    s.push_str("- **connections** of a server: its open descriptors with the clients joined minus idle. **RSS per connection**: the servers' RSS with the clients minus idle, summed, over the clients. **nginx RSS**: master and workers summed (`VmRSS`; pages they share count once per process). **CPU** over the write phase, from /proc. **statement-to-client**: the client's wall clock at receipt minus the event's `at` (the database's clock at the INSERT statement): the load generator runs in other processes than the writers, so the commit-to-client latency of the latency run (one process, one monotonic clock) is not available; this one includes the INSERT and its commit. Events replayed to a client resuming after a restart are not counted in it (that wait is the reconnect storm's outage).\n");
}

/// The scale-out section (empty if the run had none).
pub fn scale_section(r: &Results, run_lines: &str) -> String {
    let Some(x) = &r.scale_out else { return String::new() };
    let mut s = format!("{}\n## Past one process: {} connections behind nginx (issue #20)\n\n", SCALE.0, x.clients);
    s.push_str(run_lines);
    setup(&mut s, x);
    s.push('\n');
    table(&mut s, x);
    let _ = writeln!(
        s,
        "\nThe nginx configuration the bench generated (README.md, \"Several servers\", has the same for production):\n\n```nginx\n{}```\n",
        x.nginx_conf
    );
    s.push_str("Not part of `make bench`: `make bench BENCH_ARGS='--scenario scale-out --report'` (about two minutes; needs `nginx`, e.g. `apt-get install nginx-light`) rewrites only this section; `--clients`, `--rooms`, `--rate`, `--servers` change the shape.\n");
    s.push_str(SCALE.1);
    s
}

/// The reconnect-storm section (empty if the run had none).
pub fn storm_section(r: &Results, run_lines: &str) -> String {
    let Some(x) = &r.storm else { return String::new() };
    let Some(st) = &x.storm else { return String::new() };
    let mut s =
        format!("{}\n## Reconnect storm: a server restarted under {} clients (issue #20)\n\n", STORM.0, x.clients);
    s.push_str(run_lines);
    setup(&mut s, x);
    s.push_str("- **The storm**: 3 s into the measured writes the first server gets SIGTERM: it tells its clients to reconnect (close 1012) and exits; the bench starts it again on the same address once it has exited. Its clients reconnect through nginx with the JavaScript client's backoff (200 ms doubling to 5 s, plus up to half of it) and join with `since` (their last seq) and `since_at`; nginx sends them to the servers that are up (a refused connection goes to the next server at once; three refusals within 5 s leave the server out for 5 s: `max_fails=3 fail_timeout=5s`). The writes go on throughout.\n");
    s.push_str("- **all resumed / caught up**: from the SIGTERM until the last of those clients had its `joined` answer, and had received every event up to that answer's `latest`. **outage**: per client, from its disconnection until it had caught up. **DB connections**: `pg_stat_activity` of the bench database every 100 ms (the servers' are those with `application_name` boardcast…; the rest are the bench's writers and samplers), at most in the 2 s before the SIGTERM and at most during the storm; **active**: running a statement. **events/s**: committed events (Σ `feed_seq.last_seq`, every 100 ms), over the 5 s before the SIGTERM, over the storm, and the lowest over 500 ms of it.\n\n");
    let after: Vec<String> = st.connections_after.iter().map(|c| c.to_string()).collect();
    let _ = writeln!(
        s,
        "- **Where they went**: the servers' connections when the writes ended (descriptors: the restarted server's all of them, the others' opened since idle): {}.\n",
        after.join(", ")
    );
    s.push_str("| clients resumed (connection attempts) | SIGTERM → exited, → listening again | all resumed | all caught up | outage p50 / p99 / max | never caught up | DB connections before → storm (servers') | active max | events/s before / storm / lowest 500 ms | lost / dup across the reconnect |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let _ = writeln!(
        s,
        "| {} ({}) | {:.0} ms, {:.0} ms | {:.0} ms | {:.0} ms | {:.0} / {:.0} / {:.0} ms | {} | {} → {} ({} → {}) | {} | {:.0} / {:.0} / {:.0} | {} / {} |\n",
        st.clients_resumed,
        st.attempts,
        st.stop_ms,
        st.start_ms,
        st.all_resumed_ms,
        st.all_caught_up_ms,
        st.outage_p50_ms,
        st.outage_p99_ms,
        st.outage_max_ms,
        st.not_caught_up,
        st.db_connections_before,
        st.db_connections_storm,
        st.db_server_connections_before,
        st.db_server_connections_storm,
        st.db_active_storm,
        st.tps_before,
        st.tps_storm,
        st.tps_storm_min_500ms,
        x.lost,
        x.duplicates,
    );
    let list = |v: &[u64]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        s,
        "- **Timeline**, clients per 500 ms from the SIGTERM: disconnected {}; resumed (their `joined`) {}. From disconnection to `joined` again, per client: p50 {:.0} ms, p99 {:.0} ms.\n",
        list(&st.disconnected_per_500ms),
        list(&st.resumed_per_500ms),
        st.to_resume_p50_ms,
        st.to_resume_p99_ms,
    );
    s.push_str("The whole run (all clients, all of the writes):\n\n");
    table(&mut s, x);
    s.push_str("\nNot part of `make bench`: `make bench BENCH_ARGS='--scenario reconnect-storm --report'` (about a minute; needs `nginx`) rewrites only this section.\n");
    s.push_str(STORM.1);
    s
}

/// The sections this run wrote, with their markers.
pub fn written(r: &Results, run_lines: &str) -> Vec<((&'static str, &'static str), String)> {
    let mut out = Vec::new();
    if r.scale_out.is_some() {
        out.push((SCALE, scale_section(r, run_lines)));
    }
    if r.storm.is_some() {
        out.push((STORM, storm_section(r, run_lines)));
    }
    out
}

/// The sections of `existing` this run did not write, to carry over.
pub fn carried(existing: &str, r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    if r.scale_out.is_none() {
        out.extend(kept(existing, SCALE));
    }
    if r.storm.is_none() {
        out.extend(kept(existing, STORM));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::StormRun;
    use crate::sections::with_section;

    #[test]
    fn each_section_is_replaced_alone() {
        let run = |clients: usize, storm: bool| Results {
            command: "boardcast-bench".into(),
            scale_out: (!storm).then(|| ScaleRun { clients, joined: clients, ..Default::default() }),
            storm: storm.then(|| ScaleRun { clients, storm: Some(StormRun::default()), ..Default::default() }),
            ..Default::default()
        };
        let base = "# Benchmarks\n\nfigures\n\n## Reference\n\nold stack\n";
        let a = with_section(base, SCALE, &scale_section(&run(50_000, false), ""));
        let b = with_section(&a, STORM, &storm_section(&run(20_000, true), ""));
        assert!(b.contains("50000 connections behind nginx") && b.contains("under 20000 clients"), "{b}");
        assert!(b.find("## Past one process").unwrap() < b.find("## Reference").unwrap());
        let c = with_section(&b, SCALE, &scale_section(&run(40_000, false), ""));
        assert!(c.contains("40000 connections") && !c.contains("50000 connections") && c.contains("under 20000"));
        assert_eq!(carried(&c, &run(1, true)).len(), 1);
        assert_eq!(carried(&c, &Results::default()).len(), 2);
    }
}

//! The flags of `boardcast-bench` (clap). Makefile, README.md and BENCHMARKS.md name them: keep them stable.
//! A flag left out takes its scenario's default, which is why most are options here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

const ABOUT: &str = "\
boardcast-bench: load, latency, memory and write-ceiling benchmark for boardcast

The database's public schema is DROPPED and recreated: point DATABASE_URL at a database of its own.";

const USAGE: &str = "DATABASE_URL=postgres://postgres@127.0.0.1:5432/boardcast_bench boardcast-bench [OPTIONS]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// C clients over R rooms, W writers at a fixed offered rate (open loop)
    Latency,
    /// Many clients per room, to push deliveries/s (events × recipients)
    Fanout,
    /// Server RSS idle and at growing numbers of idle, joined connections
    Memory,
    /// The write ceiling: INSERT throughput with and without the feed, the server and clients
    Writes,
    /// All four, then BENCHMARKS.md and docs/bench/latency.svg are written
    All,
    /// 1,000 well-behaved clients beside one abusive client per kind of issue #13, a phase per kind after a
    /// baseline without abuse (not part of `all`: about two minutes of its own)
    Abuse,
    /// 1,000 clients in 100 rooms each sending 2 broadcasts/s: delivery on one server and across two, and the
    /// write ceiling with that traffic and without (issue #16; not part of `all`)
    Broadcast,
    /// Fan-out of transactions of 10 events (2,000 clients in 10 rooms), with `event` frames and then with
    /// `"group":"tx"`: deliveries/s and server CPU per delivered event (issue #15; not part of `all`)
    TxGroups,
    /// 50,000 clients held across three servers on one database behind nginx (started by the bench), from
    /// several load-generator processes, all rooms fed by SQL writes (issue #20; not part of `all`)
    ScaleOut,
    /// 20,000 clients across three servers behind nginx, one server restarted (SIGTERM, then started again)
    /// while the writes go on: time until every client resumed and caught up (issue #20; not part of `all`)
    ReconnectStorm,
    /// The fan-out ceiling: the same fan-out against boardcast and against a bare broadcaster (one LISTEN
    /// connection, the same frames and WebSocket library, no guarantees) at each of --deliveries, in
    /// interleaved rounds; boardcast's server CPU per delivery and p99 as ratios (issue #20; not part of `all`)
    Ceiling,
}

/// The abusive clients of `--scenario abuse` (issue #13), one phase each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Abuse {
    /// One socket sends pings as fast as it can and never reads
    PingFlood,
    /// 2,000 WebSockets from one token, held
    ConnectionFlood,
    /// One socket joins and leaves a room in a loop
    JoinLeave,
    /// One socket joins random project ids it is no member of
    RandomJoins,
    /// One socket: `join since=0` of a long history, `leave`, in a loop
    ReplayLoop,
    /// 100 sockets replaying the long history in a loop
    Replays,
    /// 40 connections each sending a 2.4 MB task body minus 100 bytes, then stalling
    SlowBodies,
    /// 8 connections sending API requests with random well-formed tokens
    UnknownTokens,
}

impl Abuse {
    pub const ALL: [Abuse; 8] = [
        Abuse::PingFlood,
        Abuse::ConnectionFlood,
        Abuse::JoinLeave,
        Abuse::RandomJoins,
        Abuse::ReplayLoop,
        Abuse::Replays,
        Abuse::SlowBodies,
        Abuse::UnknownTokens,
    ];

    /// The name the flag takes (and the report shows).
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Parser)]
#[command(name = "boardcast-bench", about = ABOUT, override_usage = USAGE)]
#[command(after_help = "The last line printed is machine-readable: `BENCH_RESULT {json}`.")]
pub struct Args {
    /// What to run
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// WebSocket clients (default: latency 1000, fanout 10000, writes 100)
    #[arg(long, value_name = "C")]
    pub clients: Option<usize>,
    /// Project rooms the clients are spread over (default: latency 100, fanout 10, memory 100, writes 100)
    #[arg(long, value_name = "R")]
    pub rooms: Option<usize>,
    /// SQL writer connections (default: latency 8, fanout 4, writes 8)
    #[arg(long, value_name = "W")]
    pub writers: Option<usize>,
    /// Offered transactions/s, open loop; 0 = as fast as possible (default: latency 1000, fanout 300)
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Rows per transaction, 1 = single-row INSERTs (default 1; writes: bulk uses --bulk-rows)
    #[arg(long, value_name = "K")]
    pub rows: Option<usize>,
    /// Rows per bulk transaction in `writes`
    #[arg(long, value_name = "K", default_value_t = 100)]
    pub bulk_rows: usize,
    /// Measured seconds per run (default: latency 20, fanout 15, writes 5; abuse: 10 per phase)
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Seconds written before measuring (default 3; writes 1; abuse: 1.5 between phases)
    #[arg(long, value_name = "S")]
    pub warmup: Option<f64>,
    /// Memory: connection counts to measure RSS at
    #[arg(long, value_name = "A,B,..", value_delimiter = ',', default_value = "1000,2000,5000,10000,15000,20000")]
    pub steps: Vec<usize>,
    /// Memory: connections to try to hold at the end
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    pub hold: usize,
    /// Abuse: the abusive clients to run, a phase each after the baseline (default: all)
    #[arg(long, value_name = "KIND,..", value_enum, value_delimiter = ',')]
    pub abuse: Vec<Abuse>,
    /// Abuse: events in the history the replaying abusers read
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    pub history: i64,
    /// Loopback source addresses 127.0.0.1..N for clients (default: enough for the connection count)
    #[arg(long, value_name = "N")]
    pub source_ips: Option<usize>,
    /// The first loopback source address, 127.0.0.F (another benchmark on the machine may hold the ports of
    /// the first ones)
    #[arg(long, value_name = "F", default_value_t = 1)]
    pub source_first: u8,
    /// Worker threads of the load generator's client runtime
    #[arg(long, value_name = "T", default_value_t = 2)]
    pub threads: usize,
    /// Scale-out and reconnect-storm: `boardcast serve` processes behind nginx
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub servers: usize,
    /// Scale-out and reconnect-storm: the nginx binary (Debian: apt-get install nginx-light)
    #[arg(long, value_name = "PATH", default_value = "nginx")]
    pub nginx: PathBuf,
    /// Scale-out and reconnect-storm: clients per load-generator process (each process may open at most the
    /// open-file hard limit of descriptors)
    #[arg(long, value_name = "N", default_value_t = 12_500)]
    pub clients_per_process: usize,
    /// Run as a load-generator child of a scale-out run (internal: the parent speaks JSON on stdin)
    #[arg(long, hide = true)]
    pub child: bool,
    /// The boardcast binary
    #[arg(long, value_name = "PATH", default_value = "./target/release/boardcast")]
    pub server_bin: PathBuf,
    /// Ceiling: the bare broadcaster binary (default: bare-broadcaster beside --server-bin)
    #[arg(long, value_name = "PATH")]
    pub bare_bin: Option<PathBuf>,
    /// Ceiling: the rates of deliveries/s to compare at (clients/rooms per event, so writes/s = this / that)
    #[arg(long, value_name = "A,B,..", value_delimiter = ',', default_value = "10000,100000,250000")]
    pub deliveries: Vec<u64>,
    /// Extra environment for the server (repeatable), e.g. BOARDCAST_POOL_SIZE=32
    #[arg(long, value_name = "K=V", value_parser = key_value)]
    pub server_env: Vec<(String, String)>,
    /// Writes and ceiling: rounds over all modes, interleaved to spread out noise; the median is reported
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub rounds: usize,
    /// The writers' session setting (default: off for latency and fanout, so that the WAL flush, serialized by
    /// NOTIFY's commit lock, does not cap the offered rate; writes measures both the server's setting and off)
    #[arg(long, value_name = "on|off", value_parser = ["on", "off", "local", "remote_write", "remote_apply"])]
    pub synchronous_commit: Option<String>,
    /// Where logs and results.json go
    #[arg(long, value_name = "DIR", default_value = ".bench-out")]
    pub out: PathBuf,
    /// Write BENCHMARKS.md and docs/bench/latency.svg (the default with --scenario all)
    #[arg(long, overrides_with = "no_report")]
    report: bool,
    /// Do not write BENCHMARKS.md and docs/bench/latency.svg
    #[arg(long, overrides_with = "report")]
    no_report: bool,
    /// Also write the results as JSON to PATH
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Run nothing: write BENCHMARKS.md again from an earlier run's results.json
    #[arg(long, value_name = "PATH")]
    pub render: Option<PathBuf>,
    /// Less progress output
    #[arg(long)]
    pub quiet: bool,
    /// The command line, as BENCHMARKS.md records it.
    #[arg(skip)]
    pub command: String,
}

impl Args {
    /// The command line, parsed; exits on `--help` and on a usage error (with 2).
    pub fn from_command_line() -> Args {
        let mut args = Args::parse();
        args.rounds = args.rounds.max(1);
        let argv = std::env::args().skip(1);
        args.command = std::iter::once("boardcast-bench".to_string()).chain(argv).collect::<Vec<_>>().join(" ");
        args
    }

    /// Whether this scenario runs (with `--scenario all`, all of them but `abuse`).
    pub fn runs(&self, scenario: Scenario) -> bool {
        (self.scenario == Scenario::All
            && !matches!(
                scenario,
                Scenario::Abuse
                    | Scenario::Broadcast
                    | Scenario::TxGroups
                    | Scenario::ScaleOut
                    | Scenario::ReconnectStorm
                    | Scenario::Ceiling
            ))
            || self.scenario == scenario
    }

    /// `--report` or `--no-report`, whichever came last; without either, only `--scenario all` reports.
    pub fn report(&self) -> bool {
        match (self.report, self.no_report) {
            (true, _) => true,
            (_, true) => false,
            _ => self.scenario == Scenario::All,
        }
    }

    /// `--duration`, or the scenario's default.
    pub fn secs(&self, default: f64) -> Duration {
        Duration::from_secs_f64(self.duration.unwrap_or(default))
    }
}

fn key_value(v: &str) -> Result<(String, String), String> {
    let (k, x) = v.split_once('=').ok_or_else(|| format!("{v}: expected K=V"))?;
    Ok((k.to_string(), x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_of_the_makefile_and_the_docs_parse() {
        let a = Args::try_parse_from(["b", "--scenario", "latency", "--clients", "2000", "--rate", "2000"]).unwrap();
        assert_eq!((a.scenario, a.clients, a.rate, a.report()), (Scenario::Latency, Some(2000), Some(2000.0), false));
        let a = Args::try_parse_from(["b", "--server-env", "A=1", "--server-env", "B=x=y", "--no-report"]).unwrap();
        assert_eq!(a.server_env, [("A".into(), "1".into()), ("B".into(), "x=y".into())]);
        assert!(a.runs(Scenario::Memory) && !a.report());
        let a = Args::try_parse_from(["b", "--no-report", "--report", "--steps", "10,20"]).unwrap();
        assert!(a.report());
        assert_eq!(a.steps, [10, 20]);
        assert!(Args::try_parse_from(["b", "--server-env", "nonsense"]).is_err());
        let a = Args::try_parse_from(["b", "--scenario", "abuse", "--abuse", "ping-flood,slow-bodies"]).unwrap();
        assert_eq!(a.abuse, [Abuse::PingFlood, Abuse::SlowBodies]);
        assert!(a.runs(Scenario::Abuse) && !a.runs(Scenario::Latency) && !a.report());
        let a = Args::try_parse_from(["b"]).unwrap();
        assert!(a.runs(Scenario::Latency) && !a.runs(Scenario::Abuse) && a.abuse.is_empty());
        assert!(!a.runs(Scenario::ScaleOut) && !a.runs(Scenario::ReconnectStorm));
        let a = Args::try_parse_from(["b", "--scenario", "scale-out", "--clients", "50000", "--report"]).unwrap();
        assert!(a.runs(Scenario::ScaleOut) && a.report() && a.servers == 3);
        assert_eq!(Abuse::ALL.map(Abuse::name)[7], "unknown-tokens");
        assert!(Args::try_parse_from(["b", "--scenario", "nonsense"]).is_err());
        let a = Args::try_parse_from(["b", "--scenario", "ceiling", "--deliveries", "10000,50000"]).unwrap();
        assert!(a.runs(Scenario::Ceiling) && !a.runs(Scenario::Fanout) && !a.report());
        assert_eq!(a.deliveries, [10_000, 50_000]);
        assert!(!Args::try_parse_from(["b"]).unwrap().runs(Scenario::Ceiling));
    }
}

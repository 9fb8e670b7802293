//! The `boardcast` binary: a thin shell over the library (see `cli`).

use std::process::ExitCode;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::Registry;

/// Exits with 2 on a usage error (clap's), 1 when the command fails, 0 otherwise.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = boardcast::cli::Cli::from_env_and_args();
    let filter = log_filter();
    let most = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let format = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // BOARDCAST_LOG_FORMAT=json: one JSON object a line (timestamp, level, target, the event's fields, and the
    // request's span: method and route), for a log pipeline. Otherwise the human format.
    let format = if std::env::var("BOARDCAST_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        format.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
    } else {
        // Colours only on a terminal: not as escape codes in a log file.
        format.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).boxed()
    };
    tracing_subscriber::registry().with(filter).with(secret_keeping(most)).with(format).init();
    match boardcast::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boardcast: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What is logged: `RUST_LOG`, else `boardcast=info,warn`. Targets and levels alone (the usual filter) need no
/// more than a `Targets` filter. An `EnvFilter` is built only for span and field directives (`[...]`): it
/// takes a process-wide lock whenever a span is entered or left, and every connection's session runs in its
/// span, entered at each turn of its loop: in a fan-out, twice per event delivered, on every core.
fn log_filter() -> Box<dyn Layer<Registry> + Send + Sync> {
    const DEFAULT: &str = "boardcast=info,warn";
    let directives = std::env::var("RUST_LOG").ok().filter(|d| !d.trim().is_empty());
    let directives = directives.as_deref().unwrap_or(DEFAULT);
    let plain: Vec<&str> = directives.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if !directives.contains('[')
        && let Ok(targets) = plain.join(",").parse::<Targets>()
    {
        return targets.boxed();
    }
    EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new(DEFAULT)).boxed()
}

/// Caps on the libraries that log what a request carries, whatever `RUST_LOG` says (even `trace`): no token,
/// token hash or query string may reach a log. tokio-postgres logs every statement's parameters at debug
/// (token hashes among them); warp logs query strings it cannot decode (`?token=` among them) and path
/// segments; tungstenite logs frames with their payloads at trace; hyper, built with its tracing, logs
/// headers. At info and above, none of them logs any of that.
///
/// It lets through everything else up to `most`, the most the filter logs: a filter's levels are also what the
/// `log` crate is told to pass on (tungstenite logs with it, at trace, for every frame), and `TRACE` here would
/// send every one of those records through the filters, to be refused there, at a cost per frame sent.
fn secret_keeping(most: LevelFilter) -> Targets {
    Targets::new().with_default(most).with_targets(
        ["tokio_postgres", "postgres_protocol", "warp", "hyper", "hyper_util", "tungstenite", "tokio_tungstenite"]
            .map(|target| (target, most.min(LevelFilter::INFO))),
    )
}

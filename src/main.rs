//! The `boardcast` binary: a thin shell over the library (see `cli`).

use std::process::ExitCode;

use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::prelude::*;

/// Exits with 2 on a usage error (clap's), 1 when the command fails, 0 otherwise.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = boardcast::cli::Cli::from_env_and_args();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "boardcast=info,warn".into());
    let format = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // BOARDCAST_LOG_FORMAT=json: one JSON object a line (timestamp, level, target, the event's fields, and the
    // request's span: method and route), for a log pipeline. Otherwise the human format.
    let format = if std::env::var("BOARDCAST_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        format.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
    } else {
        // Colours only on a terminal: not as escape codes in a log file.
        format.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).boxed()
    };
    tracing_subscriber::registry().with(filter).with(secret_keeping()).with(format).init();
    match boardcast::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boardcast: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Caps on the libraries that log what a request carries, whatever `RUST_LOG` says (even `trace`): no token,
/// token hash or query string may reach a log. tokio-postgres logs every statement's parameters at debug
/// (token hashes among them); warp logs query strings it cannot decode (`?token=` among them) and path
/// segments; tungstenite logs frames with their payloads at trace; hyper, built with its tracing, logs
/// headers. At info and above, none of them logs any of that.
fn secret_keeping() -> Targets {
    Targets::new().with_default(Level::TRACE).with_targets(
        ["tokio_postgres", "postgres_protocol", "warp", "hyper", "hyper_util", "tungstenite", "tokio_tungstenite"]
            .map(|target| (target, Level::INFO)),
    )
}

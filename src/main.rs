//! The `boardcast` binary: a thin shell over the library (see `cli`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "boardcast=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not as escape codes in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match boardcast::cli::run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boardcast: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The `boardcast` binary: a thin shell over the library (see `cli`).

use std::process::ExitCode;

/// Exits with 2 on a usage error (clap's), 1 when the command fails, 0 otherwise.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = boardcast::cli::Cli::from_env_and_args();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "boardcast=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not as escape codes in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match boardcast::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boardcast: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Errors below the HTTP layer: what can go wrong talking to PostgreSQL or starting the server.
//! The HTTP layer has its own error type, with statuses (`ApiError`, in `http::error`).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {}", chain(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("could not get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database's schema is not one this build can bring up to date (see `db::migrate`).
    #[error("database schema: {0}")]
    Schema(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    /// A failed read that several callers shared (a batch of joins or of token lookups), as its message: the
    /// database could not be reached or read.
    #[error("{0}")]
    Shared(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes: tokio-postgres says "error connecting to server" and keeps the why
/// ("Connection refused") in its source.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

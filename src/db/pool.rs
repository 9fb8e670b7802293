//! Connections: the pool for everything except LISTEN, and dedicated connections for what must not share one.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};

/// Parses a database URL, with the keepalives that let a dead peer be noticed on a quiet connection, and a TCP
/// user timeout for a busy one: without it, a query sent into a network cut waits for the kernel's
/// retransmissions to give up, which takes about fifteen minutes.
pub fn pg_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| Error::Config(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}")))?;
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5));
    if config.get_application_name().is_none() {
        config.application_name("boardcast");
    }
    Ok(config)
}

/// The pool for everything except LISTEN. Connections are checked on recycle, so after a database restart
/// broken connections are replaced instead of handed out.
pub fn pool(url: &str, size: usize) -> Result<Pool> {
    let manager =
        Manager::from_config(pg_config(url)?, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::Config(format!("cannot build the connection pool: {e}")))
}

/// Opens one dedicated connection (not from the pool) and drives it on a task.
pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = pg_config(url)?.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("dedicated connection ended: {e}");
        }
    });
    Ok(client)
}

//! Connections to PostgreSQL for the bench's own use (its admin connection, the writers).

use tokio_postgres::{Client, NoTls};

/// A connection whose driver runs on a task of its own.
pub async fn pg_connect(url: &str) -> Result<Client, String> {
    let (client, conn) =
        tokio_postgres::connect(url, NoTls).await.map_err(|e| format!("connect to PostgreSQL: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

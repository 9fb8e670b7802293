//! The application: builds the pool, migrates, binds, and runs the server, the listener and retention until
//! told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::Filter;

use crate::config::Settings;
use crate::db;
use crate::error::{Error, Result};
use crate::feed::{Feed, listener, upgrade};
use crate::{api, server};

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    settings: Settings,
    feed: Arc<Feed>,
}

impl Application {
    /// Connects, migrates and binds. Fails early, with the reason, if the database is not reachable.
    pub async fn build(settings: Settings) -> Result<Application> {
        let mut client = db::connect(&settings.database_url).await?;
        let applied = db::migrate(&mut client).await?;
        if !applied.is_empty() {
            tracing::info!("applied migrations: {}", applied.join(", "));
        }
        drop(client);
        let pool = db::pool(&settings.database_url, settings.pool_size)?;
        let listener = TcpListener::bind(settings.addr).await.map_err(|e| {
            Error::Config(format!("cannot listen on {}: {e} (set BOARDCAST_ADDR to another address)", settings.addr))
        })?;
        let addr = listener.local_addr()?;
        let feed = Feed::new(pool, settings.feed.clone());
        Ok(Application { listener, addr, settings, feed })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn feed(&self) -> Arc<Feed> {
        self.feed.clone()
    }

    /// Serves until `shutdown` completes. Then it stops accepting, tells every WebSocket client to reconnect
    /// (close code 1012; every event is recorded, so a client that resumes with `since` loses nothing) and
    /// waits up to 10 seconds for connections to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let feed = self.feed;

        let listening = tokio::spawn(listener::run(feed.clone(), self.settings.database_url.clone(), stop.clone()));
        let pruning = tokio::spawn(crate::admin::retention_loop(
            feed.pool.clone(),
            self.settings.retention.clone(),
            stop.clone(),
        ));

        let routes = api::healthz(feed.clone())
            .or(upgrade::route(feed.clone(), stop.clone(), tracker.clone()))
            .or(api::for_browsers(feed.clone(), self.settings.cors_origins.clone()))
            .recover(api::error::recover);
        let serving = tokio::spawn(server::serve(self.listener, warp::service(routes), stop.clone(), tracker.clone()));
        tracing::info!("boardcast listening on http://{} (feed: ws://{}/ws)", self.addr, self.addr);

        shutdown.await;
        tracing::info!("shutting down");
        stop.cancel();
        let _ = serving.await;
        tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.is_err() {
            tracing::warn!("some connections did not finish within 10s");
        }
        let _ = listening.await;
        let _ = pruning.await;
        feed.pool.close();
        Ok(())
    }
}

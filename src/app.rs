//! The application: builds the pool, migrates, binds, and runs the server, the listener and retention until
//! told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::Filter;

use crate::config::Settings;
use crate::db;
use crate::error::{Error, Result};
use crate::feed::{Feed, listener, presence, upgrade};
use crate::http::gate::Gate;
use crate::http::server;
use crate::jwt::Keys;
use crate::{admin, api, board, health, scrape};

/// What the parts of a running server share, built once by [`Application::build`]. Each part is handed the
/// pieces it uses (the REST API only the pool; the feed its own state, which holds the pool it reads history
/// with), so that no part depends on another to reach the database.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    /// Pooled connections: API writes, joins, history reads. The listener has a connection of its own.
    pub pool: Pool,
    pub feed: Arc<Feed>,
    /// The keys JWTs are checked with (`None`: only boardcast's own tokens are accepted).
    pub(crate) jwt: Option<Arc<Keys>>,
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    /// The second address that serves `/metrics` only (`BOARDCAST_METRICS_ADDR`), if set.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    state: AppState,
}

impl Application {
    /// Connects, migrates and binds. Fails early, with the reason, if the database is not reachable.
    pub async fn build(settings: Settings) -> Result<Application> {
        let jwt = Keys::load(&settings.jwt).map_err(Error::Config)?.map(Arc::new);
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
        let metrics_listener = match settings.metrics.addr {
            Some(at) => {
                let l = TcpListener::bind(at).await.map_err(|e| {
                    Error::Config(format!("cannot listen on {at}: {e} (set BOARDCAST_METRICS_ADDR to another address)"))
                })?;
                let at = l.local_addr()?;
                Some((l, at))
            }
            None => None,
        };
        let feed = Feed::new(pool.clone(), settings.feed.clone());
        Ok(Application {
            listener,
            addr,
            metrics_listener,
            state: AppState { settings: Arc::new(settings), pool, feed, jwt },
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served on its own, if `BOARDCAST_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, at)| *at)
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` completes. Then it stops accepting, tells every WebSocket client to reconnect
    /// (close code 1012; every event is recorded, so a client that resumes with `since` loses nothing) and
    /// waits up to 10 seconds for connections to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let AppState { settings, pool, feed, jwt } = self.state;

        let listening = tokio::spawn(listener::run(feed.clone(), settings.database_url.clone(), stop.clone()));
        let signalling =
            tokio::spawn(presence::outbox::run(feed.presence.clone(), settings.database_url.clone(), stop.clone()));
        let pruning = tokio::spawn(admin::retention_loop(pool.clone(), settings.retention.clone(), stop.clone()));

        let routes = health::route(pool.clone(), feed.clone())
            .or(scrape::route(settings.metrics.clone(), pool.clone(), feed.clone()))
            .or(upgrade::route(feed.clone(), settings.cors_origins.clone(), stop.clone(), tracker.clone()))
            .or(api::for_browsers(pool.clone(), settings.cors_origins.clone()))
            .or(board::routes())
            .recover(crate::http::error::recover)
            .with(warp::log::custom(scrape::record_request));
        let gate = Arc::new(Gate::new(settings.http.clone()).with_jwt(jwt));
        let metrics_serving = self.metrics_listener.map(|(l, at)| {
            tracing::info!("metrics on http://{at}/metrics");
            let routes = scrape::route_on_own_address(settings.metrics.clone(), pool.clone(), feed.clone())
                .recover(crate::http::error::recover);
            tokio::spawn(server::serve(l, warp::service(routes), gate.clone(), stop.clone(), tracker.clone()))
        });
        let service = warp::service(routes);
        let serving = tokio::spawn(server::serve(self.listener, service, gate, stop.clone(), tracker.clone()));
        tracing::info!("boardcast listening on http://{} (feed: ws://{}/ws)", self.addr, self.addr);

        shutdown.await;
        tracing::info!("shutting down");
        stop.cancel();
        let _ = serving.await;
        if let Some(metrics_serving) = metrics_serving {
            let _ = metrics_serving.await;
        }
        tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.is_err() {
            tracing::warn!("some connections did not finish within 10s");
        }
        let _ = listening.await;
        let _ = signalling.await;
        let _ = pruning.await;
        pool.close();
        Ok(())
    }
}

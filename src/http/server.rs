//! The HTTP server: accepts TCP connections and serves each with hyper, routing requests to the warp
//! filters. It is ours rather than `warp::serve` for two reasons: `/ws` needs hyper's upgrade handle
//! ([`UpgradeSlot`], taken by the feed's `/ws` route), and shutdown must stop accepting at once while open
//! connections finish.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// hyper's upgrade handle for a `/ws` request, put in the request's extensions by the accept loop for the
/// route that completes the WebSocket handshake.
#[derive(Clone, Default)]
pub struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    fn new(on_upgrade: OnUpgrade) -> Self {
        UpgradeSlot(Arc::new(Mutex::new(Some(on_upgrade))))
    }

    /// The handle, once: the route that takes it answers 101 and owns the connection from then on.
    pub fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().unwrap().take()
    }
}

/// Serves `service` (the warp routes, as `warp::service(routes)`) on `listener` until `shutdown`.
pub async fn serve<S>(listener: TcpListener, service: S, shutdown: CancellationToken, tracker: TaskTracker)
where
    S: Service<hyper::Request<Incoming>, Response = warp::reply::Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
                if req.uri().path() == "/ws" {
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    req.extensions_mut().insert(UpgradeSlot::new(on_upgrade));
                }
                let mut service = service.clone();
                async move { Ok::<_, Infallible>(service.call(req).await.unwrap_or_else(|e| match e {})) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { if let Err(e) = r { tracing::debug!("http connection: {e}"); } }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

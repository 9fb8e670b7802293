//! The HTTP server: accepts TCP connections and serves each with hyper, routing requests to the warp
//! filters. It is ours rather than `warp::serve` for two reasons: `/ws` needs hyper's upgrade handle
//! ([`UpgradeSlot`], taken by the feed's `/ws` route), and shutdown must stop accepting at once while open
//! connections finish.
//!
//! Every request gets, in its extensions, its [`Door`]: the [`Gate`] (what the server remembers of failed
//! authentications) and the client's address. Every response gets `X-Content-Type-Options: nosniff`: the API's JSON, error texts included,
//! must never be sniffed into something a browser would run.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::Instrument;

use super::gate::{Door, Gate};

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

/// Serves `service` (the warp routes, as `warp::service(routes)`) on `listener` until `shutdown`, each
/// request through `gate`.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    S: Service<hyper::Request<Incoming>, Response = warp::reply::Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    loop {
        let (stream, client) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
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
        let gate = gate.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
                if req.uri().path() == "/ws" {
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    req.extensions_mut().insert(UpgradeSlot::new(on_upgrade));
                }
                let door = Door { gate: gate.clone(), client };
                req.extensions_mut().insert(door);
                let mut service = service.clone();
                let span = tracing::info_span!("request", method = %req.method(), route = %route_of(req.uri().path()));
                let health_check = req.uri().path() == "/healthz";
                async move {
                    let started = Instant::now();
                    let mut res = service.call(req).instrument(span.clone()).await.unwrap_or_else(|e| match e {});
                    res.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
                    log_request(&span, health_check, res.status(), started.elapsed());
                    Ok::<_, Infallible>(res)
                }
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

/// One line per request, at info, in the request's span (method and route): the status and how long it took.
/// Health checks, which a load balancer sends every few seconds, log at debug.
fn log_request(span: &tracing::Span, health_check: bool, status: hyper::StatusCode, took: Duration) {
    let _in = span.enter();
    let ms = (took.as_secs_f64() * 1e4).round() / 10.0;
    if health_check && status.is_success() {
        tracing::debug!(status = status.as_u16(), ms, "served");
    } else {
        tracing::info!(status = status.as_u16(), ms, "served");
    }
}

/// The route of a request path, for logs: the path with every segment that is not one of the API's own words
/// replaced by `{id}`. Ids, and anything else a client put in the path, never reach a log; neither does the
/// query string (which may carry `?token=`).
pub fn route_of(path: &str) -> String {
    const WORDS: &[&str] = &[
        "api",
        "projects",
        "members",
        "tasks",
        "comments",
        "me",
        "tokens",
        "openapi.json",
        "healthz",
        "ws",
        "client.js",
        "client.d.ts",
        "metrics",
        "board",
    ];
    let mut route = String::with_capacity(path.len().min(64));
    for segment in path.split('/').skip(1).take(8) {
        route.push('/');
        route.push_str(if WORDS.contains(&segment) || segment.is_empty() { segment } else { "{id}" });
    }
    if route.is_empty() { "/".into() } else { route }
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn a_route_names_no_id_and_no_query() {
        assert_eq!(route_of("/api/projects/6f1c0e2a-0000-4000-8000-000000000000/tasks"), "/api/projects/{id}/tasks");
        assert_eq!(route_of("/ws"), "/ws");
        assert_eq!(route_of("/metrics"), "/metrics");
        assert_eq!(route_of("/board/app.js"), "/board/{id}");
        assert_eq!(route_of("/"), "/");
        assert_eq!(route_of("/bc_secret-token/x"), "/{id}/{id}");
    }
}

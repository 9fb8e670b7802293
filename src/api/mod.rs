//! The HTTP API. Route handlers only read and write PostgreSQL; the triggers emit. See docs/api.md and the
//! OpenAPI document served at /api/openapi.json.

pub mod error;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::feed::Feed;

pub fn with_feed(feed: Arc<Feed>) -> impl Filter<Extract = (Arc<Feed>,), Error = Infallible> + Clone {
    warp::any().map(move || feed.clone())
}

/// `GET /healthz`: 200 when a pooled connection answers and the listener is LISTENing, 503 otherwise.
pub fn healthz(feed: Arc<Feed>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("healthz").and(warp::get()).and(with_feed(feed)).then(|feed: Arc<Feed>| async move {
        let db = async {
            let client = feed.pool.get().await.ok()?;
            client.simple_query("").await.ok()
        };
        let db_ok = tokio::time::timeout(Duration::from_secs(2), db).await.ok().flatten().is_some();
        let listener_ok = feed.listener_up.load(Ordering::SeqCst);
        let status = if db_ok && listener_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        let body = serde_json::json!({
            "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
            "database": db_ok,
            "listener": listener_ok,
            "rooms": feed.rooms.len(),
        });
        warp::reply::with_status(warp::reply::json(&body), status)
    })
}

/// Every `/api` route. (The REST resources are added here.)
pub fn routes(feed: Arc<Feed>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let _ = feed;
    warp::path("api").and(warp::path::end()).map(|| warp::reply::json(&serde_json::json!({"api": "boardcast"})))
}

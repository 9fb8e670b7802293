//! `GET /healthz`: 200 when a pooled connection answers and the feed's listener is LISTENing, 503 otherwise.
//! A load balancer takes a server out of rotation on 503; clients then resume on another.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::feed::Feed;

pub fn route(pool: Pool, feed: Arc<Feed>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("healthz").and(warp::get()).then(move || {
        let (pool, feed) = (pool.clone(), feed.clone());
        async move {
            let db = async {
                let client = pool.get().await.ok()?;
                client.simple_query("").await.ok()
            };
            let db_ok = tokio::time::timeout(Duration::from_secs(2), db).await.ok().flatten().is_some();
            let listener_ok = feed.listener_is_up();
            let status = if db_ok && listener_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = serde_json::json!({
                "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
                "database": db_ok,
                "listener": listener_ok,
                "rooms": feed.rooms.len(),
            });
            warp::reply::with_status(warp::reply::json(&body), status)
        }
    })
}

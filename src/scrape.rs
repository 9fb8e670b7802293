//! `GET /metrics` (Prometheus), who may read it, and what is read at scrape time; and the HTTP requests'
//! metrics, by route template.
//!
//! Who may read it (docs/operating.md): with `BOARDCAST_METRICS_ADDR`, anyone who reaches that second
//! address (bind it to localhost or a monitoring network); with `BOARDCAST_METRICS_TOKEN`, requests on the
//! main address (and on the second one) that bear it. With neither, `/metrics` is not served.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::config::MetricsSettings;
use crate::feed::Feed;
use crate::{api, metrics};

/// `GET /metrics` on the main address: served only with a token (404 without), to requests that bear it.
pub fn route(
    settings: MetricsSettings,
    pool: Pool,
    feed: Arc<Feed>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let (served, token) = (settings.token.is_some(), settings.token.clone());
    warp::any()
        .and_then(move || async move { if served { Ok(()) } else { Err(warp::reject::not_found()) } })
        .untuple_one()
        .and(metrics_route(token, pool, feed))
}

/// `GET /metrics` on the metrics address: the token is required there too if one is set.
pub fn route_on_own_address(
    settings: MetricsSettings,
    pool: Pool,
    feed: Arc<Feed>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    metrics_route(settings.token, pool, feed)
}

fn metrics_route(
    token: Option<String>,
    pool: Pool,
    feed: Arc<Feed>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    // Compared as hashes: equal lengths, and a byte-by-byte comparison that takes as long whatever differs.
    let expected = token.map(|t| Sha256::digest(t.as_bytes()));
    warp::path!("metrics").and(warp::get()).and(warp::header::optional::<String>("authorization")).then(
        move |authorization: Option<String>| {
            let (pool, feed, expected) = (pool.clone(), feed.clone(), expected);
            async move {
                if let Some(expected) = expected {
                    let given = authorization.as_deref().and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
                    let given = Sha256::digest(given.as_bytes());
                    if given.iter().zip(expected.iter()).fold(0u8, |d, (a, b)| d | (a ^ b)) != 0 {
                        let text = "GET /metrics needs Authorization: Bearer <BOARDCAST_METRICS_TOKEN>\n";
                        let reply = warp::reply::with_header(text, "www-authenticate", "Bearer");
                        return warp::reply::with_status(reply, StatusCode::UNAUTHORIZED).into_response();
                    }
                }
                let text = metrics::encode(&state(&pool, &feed).await);
                let reply = warp::reply::with_header(text, "content-type", metrics::CONTENT_TYPE);
                warp::reply::with_header(reply, "cache-control", "no-store").into_response()
            }
        },
    )
}

/// What is read when scraped rather than counted as it happens: rooms, the listener, the pool, and
/// PostgreSQL's NOTIFY queue (a query, given a second; left out of the scrape if it cannot be had).
async fn state(pool: &Pool, feed: &Feed) -> metrics::State {
    let usage = async {
        let client = pool.get().await.ok()?;
        let row = client.query_one("SELECT pg_notification_queue_usage()", &[]).await.ok()?;
        row.try_get::<_, f64>(0).ok()
    };
    let notification_queue_usage = tokio::time::timeout(Duration::from_secs(1), usage).await.ok().flatten();
    let status = pool.status();
    metrics::State {
        rooms: feed.rooms.len(),
        listener_up: feed.listener_is_up(),
        notification_queue_usage,
        pool_size: status.size,
        pool_idle: status.available,
        pool_waiting: status.waiting,
        pool_max: status.max_size,
    }
}

/// The API's route templates as labels: `/api/tasks/:task_id`. Braces would be valid in a label value, but a
/// PromQL regex over them needs escaping, and some exposition parsers trip on them.
static ROUTE_LABELS: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| {
    let label = |t: &str| -> &'static str { t.replace('{', ":").replace('}', "").leak() };
    api::route_templates().map(|t| (t, label(t))).collect()
});

/// Records an answered HTTP request (a `warp::log::custom` callback) under its route's template: an API
/// route's (`/api/tasks/:task_id`), one of the server's own paths, or `other` — never the path itself, which
/// may hold ids, or anything a client typed.
pub fn record_request(info: warp::log::Info<'_>) {
    let path = info.path();
    let route = api::route_template(path).and_then(|t| ROUTE_LABELS.get(t).copied()).unwrap_or(match path {
        "/ws" => "/ws",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        "/" => "/",
        // The board's files: one label for all of them, never the file name a client asked for.
        p if p.starts_with("/board/") => "/board/:file",
        _ => "other",
    });
    metrics::http_request(route, info.method(), info.status().as_u16(), info.elapsed());
}

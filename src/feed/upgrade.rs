//! `GET /ws`: authenticate, then complete the WebSocket handshake ourselves.
//!
//! Why not `warp::ws()`: it builds tungstenite with its default configuration, whose read buffer is 128 KiB
//! per connection, eagerly allocated, and whose largest accepted message is 64 MB. Neither is acceptable for
//! tens of thousands of mostly idle connections that should only ever send small JSON requests, and warp
//! offers no setting for the read buffer. So the accept loop (see [`crate::http::server`]) stashes hyper's upgrade
//! handle in the request, this warp route does everything else (authentication, errors, the 101 response),
//! and the socket is built with our own [`socket_config`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use warp::http::{Response, StatusCode, header};
use warp::hyper::body::Bytes;
use warp::{Filter, Rejection, Reply};

use super::{Feed, connection};
use crate::auth;
use crate::http::ApiError;
use crate::http::auth::{authorization, identify};
use crate::http::gate::{Door, door};
use crate::http::server::UpgradeSlot;

/// Small buffers. The read buffer is allocated up front for every connection, and clients only send small
/// requests, so 1 KiB (not 128 KiB) is plenty; it grows for the rare larger frame. The write buffer is
/// allocated only when there is something to send; up to 8 KiB of frames are gathered before a write, so a
/// burst of events costs few system calls.
fn socket_config(max_client_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        // Above the largest frame the schema allows (a 200,000-character description, in the row and the old
        // row, JSON-escaped): a write never fails for size.
        .max_write_buffer_size(64 * 1024 * 1024)
        .max_message_size(Some(max_client_frame))
        .max_frame_size(Some(max_client_frame))
}

/// Numbers the connections of this process, for the logs.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

struct Handshake {
    authorization: Option<String>,
    query: Option<String>,
    upgrade: Option<String>,
    key: Option<String>,
    slot: Option<UpgradeSlot>,
    door: Door,
}

pub(crate) fn route(
    feed: Arc<Feed>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let query = warp::query::raw().map(Some).or(warp::any().map(|| None)).unify();
    warp::path!("ws")
        .and(warp::get())
        .and(authorization())
        .and(query)
        .and(warp::header::optional::<String>("upgrade"))
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<UpgradeSlot>())
        .and(door())
        .map(|authorization, query, upgrade, key, slot, door| Handshake {
            authorization,
            query,
            upgrade,
            key,
            slot,
            door,
        })
        .and(warp::any().map(move || feed.clone()))
        .and(warp::any().map(move || (shutdown.clone(), tracker.clone())))
        .and_then(|h: Handshake, feed: Arc<Feed>, (shutdown, tracker): (CancellationToken, TaskTracker)| async move {
            upgrade(h, feed, shutdown, tracker).await.map_err(warp::reject::custom)
        })
}

async fn upgrade(
    h: Handshake,
    feed: Arc<Feed>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<Response<warp::hyper::body::Bytes>, ApiError> {
    let token = auth::token_from(h.authorization.as_deref(), h.query.as_deref()).ok_or_else(|| {
        ApiError::Unauthorized("missing token: send Authorization: Bearer TOKEN or ?token=TOKEN".into())
    })?;
    // Listen for revocations before checking the token, so one that lands in between is not missed.
    let revoked = feed.revoked_tokens.subscribe();
    let who = identify(&h.door, &feed.pool, &token).await?;

    let is_websocket = h.upgrade.as_deref().is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let (Some(key), true) = (h.key, is_websocket) else {
        return Err(ApiError::BadRequest("this is a WebSocket endpoint: send an upgrade request".into()));
    };
    let on_upgrade =
        h.slot.and_then(|s| s.take()).ok_or_else(|| ApiError::Internal("no upgrade handle on a /ws request".into()))?;

    let config = socket_config(feed.settings.max_client_frame);
    // Every log line of this connection names it and its user (never its token).
    let span = tracing::info_span!(
        "ws",
        conn = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        user = %who.user_name,
        user_id = %who.user_id,
    );
    let serving = async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("websocket upgrade failed: {e}"),
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        connection::serve(ws, who, feed, revoked, shutdown).await;
    };
    tracker.spawn(serving.instrument(span));

    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Bytes::new())
        .unwrap())
}

//! `GET /ws`: authenticate, then complete the WebSocket handshake ourselves.
//!
//! Why not `warp::ws()`: it builds tungstenite with its default configuration, whose read buffer is 128 KiB
//! per connection, eagerly allocated, and whose largest accepted message is 64 MB. Neither is acceptable for
//! tens of thousands of mostly idle connections that should only ever send small JSON requests, and warp
//! offers no setting for the read buffer. So the accept loop (see [`crate::http::server`]) stashes hyper's upgrade
//! handle in the request, this warp route does everything else (authentication, errors, the 101 response),
//! and the socket is built with our own [`socket_config`].
//!
//! Before anything costs a query or a socket, the handshake is checked against the allowed web origins
//! (`BOARDCAST_CORS_ORIGINS`: 403) and the connection limits, of the server (503) and of the subject (429, once
//! the token says who it is: a boardcast user, or a JWT's `sub`); both refusals carry `Retry-After`. A connection's [`Slot`] is given back when
//! its task ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use warp::http::{Response, StatusCode, header};
use warp::hyper::body::Bytes;
use warp::{Filter, Rejection, Reply};

use super::connection::{Full, Slots};
use super::socket::Socket;
use super::{Feed, connection};
use crate::auth;
use crate::http::auth::{authorization, identify};
use crate::http::gate::{Door, door};
use crate::http::server::UpgradeSlot;
use crate::http::{ApiError, origin};

/// The largest event frame the schema allows: a task's description of 200,000 characters, in the row and the
/// old row, each character at most 6 bytes once JSON-escaped (a control character as `\u001f`; any other is
/// at most 4 bytes of UTF-8), so 2,400,000 bytes, plus the other columns (a 500-character title: 3,000
/// bytes each) and the frame's own fields: under 2.5 MB.
const LARGEST_EVENT_FRAME: usize = 2 * 200_000 * 6 + 64 * 1024;

/// What a socket may have queued to write, at most: the 8 KiB gathered before a write, one frame (the
/// largest, above), and the pong or close frame tungstenite adds. The session reads nothing while its writes
/// do not drain (see [`connection`]), so a client that stops reading cannot make this grow by sending more:
/// the cap only says that no write fails for size. 4 MiB.
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;
const _: () = assert!(MAX_WRITE_BUFFER > LARGEST_EVENT_FRAME + 8 * 1024 + 1024);

/// Seconds a client refused for a connection limit is told to wait (`Retry-After`).
const RETRY_AFTER_FULL: u64 = 10;

/// Small buffers. The read buffer is allocated up front for every connection, and clients only send small
/// requests, so 1 KiB (not 128 KiB) is plenty; it grows for the rare larger frame. The write buffer is
/// allocated only when there is something to send; up to 8 KiB of frames are gathered before a write, so a
/// burst of events costs few system calls.
fn socket_config(max_client_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(max_client_frame))
        .max_frame_size(Some(max_client_frame))
}

/// Numbers the connections of this process, for the logs.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

struct Handshake {
    origin: Option<String>,
    authorization: Option<String>,
    query: Option<String>,
    upgrade: Option<String>,
    key: Option<String>,
    slot: Option<UpgradeSlot>,
    door: Door,
}

/// What every handshake is checked against.
struct Gate {
    feed: Arc<Feed>,
    /// `BOARDCAST_CORS_ORIGINS`: `None` for any.
    origins: Option<Arc<[String]>>,
    slots: Arc<Slots>,
}

/// `GET /ws`. `origins` are the web origins whose pages may connect (`None`: any).
pub(crate) fn route(
    feed: Arc<Feed>,
    origins: Option<Vec<String>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let slots = Slots::new(&feed.settings, feed.pool.status().max_size);
    let gate = Arc::new(Gate { feed, origins: origins.map(Arc::from), slots });
    let query = warp::query::raw().map(Some).or(warp::any().map(|| None)).unify();
    warp::path!("ws")
        .and(warp::get())
        .and(warp::header::optional::<String>("origin"))
        .and(authorization())
        .and(query)
        .and(warp::header::optional::<String>("upgrade"))
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<UpgradeSlot>())
        .and(door())
        .map(|origin, authorization, query, upgrade, key, slot, door| Handshake {
            origin,
            authorization,
            query,
            upgrade,
            key,
            slot,
            door,
        })
        .and(warp::any().map(move || gate.clone()))
        .and(warp::any().map(move || (shutdown.clone(), tracker.clone())))
        .and_then(|h: Handshake, gate: Arc<Gate>, (shutdown, tracker): (CancellationToken, TaskTracker)| async move {
            upgrade(h, &gate, shutdown, tracker).await.map_err(warp::reject::custom)
        })
}

async fn upgrade(
    h: Handshake,
    gate: &Gate,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<Response<warp::hyper::body::Bytes>, ApiError> {
    if !origin::allowed(gate.origins.as_deref(), h.origin.as_deref()) {
        let msg = "this web origin may not open the feed (see BOARDCAST_CORS_ORIGINS)";
        return Err(ApiError::Forbidden(msg.into()));
    }
    // Checked again when the slot is taken; this check only spares the token's query when the server is full.
    if gate.slots.server_full() {
        return Err(server_full(gate.slots.max()));
    }
    let feed = gate.feed.clone();
    let token = auth::token_from(h.authorization.as_deref(), h.query.as_deref()).ok_or_else(|| {
        ApiError::Unauthorized("missing token: send Authorization: Bearer TOKEN or ?token=TOKEN".into())
    })?;
    // Listen for revocations before checking the token, so one that lands in between is not missed.
    let revoked = feed.revoked_tokens.subscribe();
    let who = identify(&h.door, &feed.pool, &token).await?;
    let door = h.door;

    let is_websocket = h.upgrade.as_deref().is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let (Some(key), true) = (h.key, is_websocket) else {
        return Err(ApiError::BadRequest("this is a WebSocket endpoint: send an upgrade request".into()));
    };
    let place = gate.slots.take(&who.subject).map_err(|full| match full {
        Full::Server(max) => server_full(max),
        Full::User(max) => ApiError::TooManyConnections {
            message: format!("a user may hold at most {max} feed connections at once; close one"),
            retry_after: RETRY_AFTER_FULL,
        },
    })?;
    let on_upgrade =
        h.slot.and_then(|s| s.take()).ok_or_else(|| ApiError::Internal("no upgrade handle on a /ws request".into()))?;

    let config = socket_config(feed.settings.max_client_frame);
    // Every log line of this connection names it and its user (never its token).
    // A root span: as a child it would keep the handshake's request span alive for the connection's life,
    // one more span's memory per idle connection.
    let span = tracing::info_span!(
        parent: None,
        "ws",
        conn = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        user = %who.name,
        subject = %who.subject,
    );
    let serving = async move {
        // Held for as long as this task runs: the connection's place, in all and for its user.
        let _place = place;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("websocket upgrade failed: {e}"),
        };
        let ws = WebSocketStream::from_raw_socket(Socket::new(upgraded), Role::Server, Some(config)).await;
        connection::serve(ws, who, door, feed, revoked, shutdown).await;
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

fn server_full(max: usize) -> ApiError {
    ApiError::ServerFull {
        message: format!("the server serves at most {max} feed connections at once; try again later"),
        retry_after: RETRY_AFTER_FULL,
    }
}

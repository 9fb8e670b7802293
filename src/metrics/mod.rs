//! The server's Prometheus metrics: their definitions, in one place, and the one-line calls that record them.
//!
//! Every metric is the process's (one registry, like every Prometheus client's default one): what a scrape
//! of a server reads. The names follow Prometheus' rules: a `boardcast_` prefix, base units (seconds,
//! bytes), `_total` on counters (added by the encoder), and labels with a handful of values each — frame
//! type, op, code, reason, route template, status — never a user, project, room or token.
//! docs/operating.md lists them with what each means; `GET /metrics` serves them (see `crate::scrape`).
//!
//! The fan-out path (an event forwarded to thousands of sockets) records with atomics alone, each thread on
//! counts of its own ([`shard`]): its counters are resolved to their labelled children once, here, and its
//! latency histogram is a lock-free one ([`histogram`]). Everything else (requests, joins, errors) is rare
//! enough for a label lookup.
//!
//! This module imports nothing of the server's: the parts call into it, never the other way round.

mod histogram;
mod shard;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use self::histogram::FastHistogram;
use self::shard::ShardedCounter;

/// The content type of [`encode`]'s text: OpenMetrics 1.0, which Prometheus reads (and prefers).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The frame types the server sends (the `op` of its frames), each with its counters resolved once.
const FRAME_TYPES: &[&str] = &[
    "event",
    "tx",
    "joined",
    "left",
    "resync",
    "error",
    "pong",
    "tracked",
    "untracked",
    "authed",
    "presence_state",
    "presence_diff",
    "broadcast",
    "other",
];

/// Latency buckets in seconds: from a millisecond (same host) to ten seconds (a stalled listener or socket).
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

type Labels1 = [(&'static str, &'static str); 1];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// What a label value taken from a frame the server wrote may be: an error code or a reason, snake_case.
fn label_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

struct Metrics {
    registry: Registry,
    // WebSocket connections.
    connections: Gauge,
    connections_opened: Counter,
    disconnects: Family<Labels1, Counter>,
    // Frames, both ways.
    frames_sent: Vec<(&'static str, ShardedCounter, ShardedCounter)>,
    frames: Family<Labels1, ShardedCounter>,
    bytes: Family<Labels1, ShardedCounter>,
    client_frames: Family<Labels1, Counter>,
    errors: Family<[(&'static str, String); 1], Counter>,
    resyncs: Family<[(&'static str, String); 1], Counter>,
    rate_limited: Family<Labels1, Counter>,
    // Rooms.
    rooms: Gauge,
    joins: Counter,
    leaves: Counter,
    resumes: Counter,
    // The listener and the path of an event.
    listener_up: Gauge,
    listener_reconnects: Counter,
    notifications: Counter,
    notification_queue_usage: Gauge<f64, std::sync::atomic::AtomicU64>,
    write_to_listener: Histogram,
    listener_to_socket: FastHistogram,
    // History and the pool.
    history_reads: Family<Labels1, Counter>,
    history_read_duration: Family<Labels1, Histogram>,
    pool_in_use: Gauge,
    pool_idle: Gauge,
    pool_waiting: Gauge,
    pool_max: Gauge,
    // HTTP.
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

impl Metrics {
    fn new() -> Metrics {
        // The children of the frame families, resolved once: a send adds to them without a label lookup.
        let (frames, bytes) =
            (Family::<Labels1, ShardedCounter>::default(), Family::<Labels1, ShardedCounter>::default());
        let frames_sent = (FRAME_TYPES.iter())
            .map(|t| (*t, frames.get_or_create(&[("type", *t)]).clone(), bytes.get_or_create(&[("type", *t)]).clone()))
            .collect();
        let m = Metrics {
            registry: Registry::with_prefix("boardcast"),
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            disconnects: Family::default(),
            frames_sent,
            frames,
            bytes,
            client_frames: Family::default(),
            errors: Family::default(),
            resyncs: Family::default(),
            rate_limited: Family::default(),
            rooms: Gauge::default(),
            joins: Counter::default(),
            leaves: Counter::default(),
            resumes: Counter::default(),
            listener_up: Gauge::default(),
            listener_reconnects: Counter::default(),
            notifications: Counter::default(),
            notification_queue_usage: Gauge::default(),
            write_to_listener: latency_histogram(),
            listener_to_socket: FastHistogram::new(LATENCY_BUCKETS),
            history_reads: Family::default(),
            history_read_duration: Family::new_with_constructor(latency_histogram),
            pool_in_use: Gauge::default(),
            pool_idle: Gauge::default(),
            pool_waiting: Gauge::default(),
            pool_max: Gauge::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
        };
        m.register()
    }

    /// Registers every metric under its exposed name (the encoder adds `boardcast_`, and `_total` to
    /// counters).
    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        r.register("build", "The server's version (always 1)", Info::new(version));
        r.register("ws_connections", "Open WebSocket connections", self.connections.clone());
        r.register("ws_connections_opened", "WebSocket connections accepted", self.connections_opened.clone());
        r.register(
            "ws_disconnects",
            "WebSocket connections ended, by reason (slow: accepted no data for the send timeout; silent: no pong \
             within the idle timeout)",
            self.disconnects.clone(),
        );
        r.register("ws_frames_sent", "Frames sent to WebSocket clients, by frame type", self.frames.clone());
        r.register("ws_sent_bytes", "Bytes of frames sent to WebSocket clients, by frame type", self.bytes.clone());
        r.register("ws_client_frames", "Frames received from WebSocket clients, by op", self.client_frames.clone());
        r.register("ws_errors", "error frames sent to WebSocket clients, by code", self.errors.clone());
        r.register("resyncs", "resync frames sent, by reason", self.resyncs.clone());
        r.register(
            "rate_limited",
            "Requests refused for a rate limit, by limit (HTTP: failed authentications)",
            self.rate_limited.clone(),
        );
        r.register("rooms", "Rooms (projects with subscribers) in this process", self.rooms.clone());
        r.register("room_joins", "Subscriptions to a room", self.joins.clone());
        r.register("room_leaves", "Subscriptions to a room ended", self.leaves.clone());
        r.register("resumes", "Joins with since (a resume) that were accepted", self.resumes.clone());
        r.register(
            "listener_up",
            "Whether the listener is connected and LISTENing (1) or not (0)",
            self.listener_up.clone(),
        );
        r.register("listener_reconnects", "Times the listener's connection was lost", self.listener_reconnects.clone());
        r.register("listener_notifications", "Feed notifications received by the listener", self.notifications.clone());
        r.register(
            "notification_queue_usage_ratio",
            "PostgreSQL's NOTIFY queue in use (pg_notification_queue_usage(), 0 to 1)",
            self.notification_queue_usage.clone(),
        );
        r.register(
            "feed_write_to_listener_seconds",
            "From the writing statement's start (the event's at) to the listener's receipt of its notification: \
             commit to listener, plus the rest of the writing transaction",
            self.write_to_listener.clone(),
        );
        r.register(
            "feed_listener_to_socket_seconds",
            "From the listener's receipt of an event to a subscriber's session taking it to write to its socket \
             (once per burst of events, for the first)",
            self.listener_to_socket.clone(),
        );
        r.register("history_reads", "Reads of recorded events, by reader (room or client)", self.history_reads.clone());
        r.register(
            "history_read_duration_seconds",
            "Time of a read of recorded events, waiting for a slot and a connection included",
            self.history_read_duration.clone(),
        );
        r.register("db_pool_connections_in_use", "Pooled database connections handed out", self.pool_in_use.clone());
        r.register("db_pool_connections_idle", "Pooled database connections open and idle", self.pool_idle.clone());
        r.register("db_pool_waiting", "Tasks waiting for a pooled database connection", self.pool_waiting.clone());
        r.register("db_pool_max_connections", "The pool's size (BOARDCAST_POOL_SIZE)", self.pool_max.clone());
        r.register("http_requests", "HTTP requests, by route template, method and status", self.http_requests.clone());
        r.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template (/ws: the handshake)",
            self.http_duration.clone(),
        );
        self
    }
}

// What the parts record: one call at each place where it happens.

/// A WebSocket connection was accepted; it counts as open until the returned guard is dropped.
pub fn connection_opened() -> OpenConnection {
    METRICS.connections_opened.inc();
    METRICS.connections.inc();
    OpenConnection(())
}

/// An open WebSocket connection, counted in `boardcast_ws_connections` while it lives.
pub struct OpenConnection(());

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.connections.dec();
    }
}

/// A WebSocket connection ended, for `reason` (closed, gone, slow, silent, ...).
pub fn disconnected(reason: &'static str) {
    METRICS.disconnects.get_or_create(&[("reason", reason)]).inc();
}

/// A frame was queued for a WebSocket client: counted by its type (its `op`, which every frame the server
/// sends has first), with its bytes. An `error` frame also counts under its code, a `resync` under its
/// reason.
pub fn frame_sent(frame: &str) {
    let op = op_of(frame);
    let (_, frames, bytes) = (METRICS.frames_sent.iter())
        .find(|(t, ..)| *t == op)
        .unwrap_or_else(|| METRICS.frames_sent.last().expect("the frame types end with other"));
    frames.inc();
    bytes.inc_by(frame.len() as u64);
    match op {
        "error" => counted_by(&METRICS.errors, "code", frame),
        "resync" => counted_by(&METRICS.resyncs, "reason", frame),
        _ => {}
    }
}

/// The `op` of a frame the server wrote (`{"op":"event",...`), without parsing the rest.
fn op_of(frame: &str) -> &str {
    frame.strip_prefix("{\"op\":\"").and_then(|rest| rest.split_once('"')).map_or("other", |(op, _)| op)
}

/// Counts a rare frame under the value of one of its keys, found as text: inside a JSON string (a message, a
/// room key) the quotes are escaped, so the one match is the key itself.
fn counted_by(family: &Family<[(&'static str, String); 1], Counter>, key: &'static str, frame: &str) {
    let needle = format!("\"{key}\":\"");
    let value = frame.rfind(&needle).and_then(|i| frame[i + needle.len()..].split_once('"')).map(|(v, _)| v);
    let value = value.filter(|v| label_word(v)).unwrap_or("other");
    family.get_or_create(&[(key, value.to_string())]).inc();
}

/// A frame from a client, by its op (`invalid`: it did not parse).
pub fn client_frame(op: &'static str) {
    METRICS.client_frames.get_or_create(&[("op", op)]).inc();
}

/// A request refused for one of the rate limits.
pub fn rate_limited(limit: &'static str) {
    METRICS.rate_limited.get_or_create(&[("limit", limit)]).inc();
}

/// A subscription to a room began.
pub fn room_joined() {
    METRICS.joins.inc();
}

/// A subscription to a room ended.
pub fn room_left() {
    METRICS.leaves.inc();
}

/// A join with `since` was accepted.
pub fn resumed() {
    METRICS.resumes.inc();
}

/// The listener lost its connection (it reconnects).
pub fn listener_reconnecting() {
    METRICS.listener_reconnects.inc();
}

/// The listener received a notification on `channel`. For a feed notification that carries its frames, the
/// first frame's `at` (the writing statement's start, by the database's clock) says how long it took to get
/// here.
pub fn notification(channel: &str, payload: &str) {
    if channel != "boardcast_feed" {
        return;
    }
    METRICS.notifications.inc();
    let Some((_, frames)) = payload.split_once('\n') else { return };
    let first = frames.split('\n').next().unwrap_or_default();
    if let Some(delay) = at_of(first).and_then(|at| (chrono::Utc::now() - at).to_std().ok()) {
        METRICS.write_to_listener.observe(delay.as_secs_f64());
    }
}

/// The `at` of an event frame: its last `at` key (a row's columns come before it, `last` after it),
/// `"at":"2026-11-30T23:59:59.123456+00:00"`.
fn at_of(frame: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let i = frame.rfind("\"at\":\"")?;
    let (at, _) = frame[i + 6..].split_once('"')?;
    chrono::DateTime::parse_from_rfc3339(at).ok().map(|t| t.to_utc())
}

/// A subscriber's session takes a burst of events to write to its socket; the first was received by the
/// listener at `heard` (`None`: not an event that came with a notification).
pub fn delivered(heard: Option<Instant>) {
    if let Some(heard) = heard {
        METRICS.listener_to_socket.observe(heard.elapsed());
    }
}

/// A read of recorded events begins, by a room (`true`) or a client; it is timed until the guard is dropped.
pub fn history_read(by_room: bool) -> HistoryRead {
    let reader = if by_room { "room" } else { "client" };
    METRICS.history_reads.get_or_create(&[("reader", reader)]).inc();
    HistoryRead { reader, started: Instant::now() }
}

/// A history read under way (see [`history_read`]).
pub struct HistoryRead {
    reader: &'static str,
    started: Instant,
}

impl Drop for HistoryRead {
    fn drop(&mut self) {
        let took = self.started.elapsed().as_secs_f64();
        METRICS.history_read_duration.get_or_create(&[("reader", self.reader)]).observe(took);
    }
}

/// An HTTP request was answered. `route` is its template (`/api/tasks/:task_id`), never the path itself.
pub fn http_request(route: &'static str, method: &http::Method, status: u16, took: Duration) {
    let method = match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    METRICS.http_requests.get_or_create(&RequestLabels { route, method, status }).inc();
    METRICS.http_duration.get_or_create(&RouteLabels { route }).observe(took.as_secs_f64());
}

/// What the server knows at scrape time, read by whoever serves the scrape.
pub struct State {
    pub rooms: usize,
    pub listener_up: bool,
    /// `pg_notification_queue_usage()`, if it could be read.
    pub notification_queue_usage: Option<f64>,
    pub pool_size: usize,
    pub pool_idle: usize,
    pub pool_waiting: usize,
    pub pool_max: usize,
}

/// The metrics in the OpenMetrics text format (see [`CONTENT_TYPE`]), with `state` as of now.
pub fn encode(state: &State) -> String {
    let m = &*METRICS;
    m.rooms.set(state.rooms as i64);
    m.listener_up.set(state.listener_up as i64);
    if let Some(usage) = state.notification_queue_usage {
        m.notification_queue_usage.set(usage);
    }
    m.pool_in_use.set(state.pool_size.saturating_sub(state.pool_idle) as i64);
    m.pool_idle.set(state.pool_idle as i64);
    m.pool_waiting.set(state.pool_waiting as i64);
    m.pool_max.set(state.pool_max as i64);
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, &m.registry).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_counted_by_its_op_and_an_error_by_its_code() {
        assert_eq!(op_of(r#"{"op":"event","project":"p"}"#), "event");
        assert_eq!(op_of(r#"{"project":"p"}"#), "other");
        let frame = r#"{"op":"error","code":"rate_limited","message":"\"code\":\"x","retry_after":5}"#;
        let before = METRICS.errors.get_or_create(&[("code", "rate_limited".into())]).get();
        frame_sent(frame);
        assert_eq!(METRICS.errors.get_or_create(&[("code", "rate_limited".into())]).get(), before + 1);
    }

    #[test]
    fn an_events_at_is_read_from_its_last_key() {
        let frame = r#"{"op":"event","seq":1,"row":{"at":"nope"},"at":"2026-11-30T23:59:59.5+00:00"}"#;
        assert_eq!(at_of(frame).unwrap().to_rfc3339(), "2026-11-30T23:59:59.500+00:00");
    }
}

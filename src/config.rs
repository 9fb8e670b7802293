//! Settings, read from the environment. Every knob has a default that suits one server on a laptop.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Settings {
    /// `BOARDCAST_ADDR`, default 127.0.0.1:8080. Port 0 picks a free port (tests).
    pub addr: SocketAddr,
    /// `DATABASE_URL`, a libpq-style URL or key=value string.
    pub database_url: String,
    /// `BOARDCAST_POOL_SIZE`: connections for API writes, joins and history reads (the listener has its own).
    pub pool_size: usize,
    pub feed: FeedSettings,
    pub retention: Retention,
    /// `BOARDCAST_CORS_ORIGINS`: the web origins whose pages may call the REST API from a browser, as
    /// `https://board.example.com,http://localhost:5173`; `*` (the default) for any. Any origin is safe to
    /// allow: the API takes bearer tokens, never cookies, so another site's page cannot act as a user.
    pub cors_origins: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// Events a room keeps for subscribers that are behind. A subscriber further behind catches up from
    /// `feed_events` on its own, so this bounds memory, not correctness.
    pub room_buffer: usize,
    /// `BOARDCAST_PING_SECS`: how often the server pings each WebSocket client.
    pub ping_interval: Duration,
    /// `BOARDCAST_IDLE_TIMEOUT_SECS`: a client that has sent nothing (not even a pong) for this long is dropped.
    pub idle_timeout: Duration,
    /// `BOARDCAST_SEND_TIMEOUT_SECS`: a client that accepts no data for this long is disconnected as too slow.
    pub send_timeout: Duration,
    /// `BOARDCAST_MAX_FRAME_BYTES`: the largest message a client may send.
    pub max_client_frame: usize,
    /// `BOARDCAST_MAX_ROOMS`: rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// Events read from history per query when catching up.
    pub history_page: i64,
    /// `BOARDCAST_HELD_FRAMES_MB` (default 64): memory for large frames (4 KiB and more) that subscribers
    /// have yet to take, all rooms together. Past it, rooms wait for their subscribers before reading more
    /// history, and stalled subscribers read from history.
    pub held_frames_budget: usize,
    /// `BOARDCAST_LISTENER_PROBE_SECS` (default 5): how often the listener checks that its connection answers,
    /// and how long it waits for the answer (and twice that for a new connection). A connection cut by the network, with nothing to send, looks alive otherwise.
    pub listener_probe: Duration,
}

#[derive(Debug, Clone)]
pub struct Retention {
    /// `BOARDCAST_RETENTION_MAX_AGE_SECS` (default 7 days; 0 disables): events older than this are pruned.
    pub max_age: Option<Duration>,
    /// `BOARDCAST_RETENTION_MAX_EVENTS` (default 1,000,000; 0 disables): events kept per project at most.
    pub max_per_project: Option<i64>,
    /// `BOARDCAST_RETENTION_INTERVAL_SECS` (default 60): how often pruning runs.
    pub interval: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            room_buffer: 4096,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(15),
            max_client_frame: 16 * 1024,
            max_rooms_per_connection: 100,
            history_page: 1000,
            held_frames_budget: 64 * 1024 * 1024,
            listener_probe: Duration::from_secs(5),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_per_project: Some(1_000_000),
            interval: Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// Settings for a database, with every other knob at its default.
    pub fn new(database_url: impl Into<String>) -> Self {
        Settings {
            addr: "127.0.0.1:8080".parse().unwrap(),
            database_url: database_url.into(),
            pool_size: 16,
            feed: FeedSettings::default(),
            retention: Retention::default(),
            cors_origins: None,
        }
    }

    pub fn from_env() -> Result<Self> {
        let url = std::env::var("DATABASE_URL").map_err(|_| {
            Error::Config("DATABASE_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/boardcast)".into())
        })?;
        let mut s = Settings::new(url);
        if let Some(addr) = var("BOARDCAST_ADDR") {
            // An IP and port, or a host name and port (`localhost:8080`: its first IPv4 address, if it has one).
            s.addr = match addr.parse() {
                Ok(a) => a,
                Err(e) => std::net::ToSocketAddrs::to_socket_addrs(&addr)
                    .ok()
                    .and_then(|a| a.min_by_key(|a| a.is_ipv6()))
                    .ok_or_else(|| {
                        Error::Config(format!("BOARDCAST_ADDR={addr}: {e} (use HOST:PORT, e.g. 127.0.0.1:8080)"))
                    })?,
            };
        }
        if let Some(n) = num("BOARDCAST_POOL_SIZE")? {
            s.pool_size = n.max(1) as usize;
        }
        if let Some(n) = num("BOARDCAST_PING_SECS")? {
            s.feed.ping_interval = Duration::from_secs(n.max(1));
        }
        if let Some(n) = num("BOARDCAST_IDLE_TIMEOUT_SECS")? {
            s.feed.idle_timeout = Duration::from_secs(n.max(1));
        }
        if let Some(n) = num("BOARDCAST_SEND_TIMEOUT_SECS")? {
            s.feed.send_timeout = Duration::from_secs(n.max(1));
        }
        if let Some(n) = num("BOARDCAST_MAX_FRAME_BYTES")? {
            s.feed.max_client_frame = n.max(256) as usize;
        }
        if let Some(n) = num("BOARDCAST_MAX_ROOMS")? {
            s.feed.max_rooms_per_connection = n.max(1) as usize;
        }
        if let Some(n) = num("BOARDCAST_LISTENER_PROBE_SECS")? {
            s.feed.listener_probe = Duration::from_secs(n.max(1));
        }
        if let Some(n) = num("BOARDCAST_HELD_FRAMES_MB")? {
            s.feed.held_frames_budget = (n as usize).saturating_mul(1024 * 1024);
        }
        if let Some(n) = num("BOARDCAST_RETENTION_MAX_AGE_SECS")? {
            s.retention.max_age = (n > 0).then(|| Duration::from_secs(n));
        }
        if let Some(n) = num("BOARDCAST_RETENTION_MAX_EVENTS")? {
            s.retention.max_per_project = (n > 0).then_some(n as i64);
        }
        if let Some(n) = num("BOARDCAST_RETENTION_INTERVAL_SECS")? {
            s.retention.interval = Duration::from_secs(n.max(1));
        }
        if let Some(v) = var("BOARDCAST_CORS_ORIGINS")
            && v.trim() != "*"
        {
            let origins: Vec<String> = v.split(',').map(|o| o.trim().trim_end_matches('/').to_string()).collect();
            if let Some(bad) = origins.iter().find(|o| !is_origin(o)) {
                return Err(Error::Config(format!(
                    "BOARDCAST_CORS_ORIGINS: {bad:?} is not an origin (scheme://host[:port], e.g. https://board.example.com)"
                )));
            }
            s.cors_origins = Some(origins);
        }
        Ok(s)
    }
}

/// `http(s)://host[:port]`, nothing more.
fn is_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && rest.parse::<http::uri::Authority>().is_ok()
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn num(name: &str) -> Result<Option<u64>> {
    var(name)
        .map(|v| v.parse::<u64>().map_err(|_| Error::Config(format!("{name}={v}: expected a whole number"))))
        .transpose()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_origin_is_a_scheme_and_a_host_and_nothing_more() {
        for ok in ["https://board.example.com", "http://localhost:5173", "http://127.0.0.1:8080"] {
            assert!(super::is_origin(ok), "{ok}");
        }
        for bad in ["board.example.com", "ftp://x", "https://", "https://x/app", "https://a b", "https://u@x", "*"] {
            assert!(!super::is_origin(bad), "{bad}");
        }
    }
}

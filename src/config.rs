//! Settings: what `boardcast serve` reads from its flags and the environment (`SettingsArgs`, one flag and one
//! variable per knob), and what the server runs with (`Settings`). Every knob has a default that suits one
//! server on a laptop; tests build `Settings::new(database_url)` and change the fields they need.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    pub http: HttpSettings,
    pub jwt: JwtSettings,
    pub metrics: MetricsSettings,
}

/// Who may read `GET /metrics` (docs/operating.md). With neither set, nobody: it is not served.
#[derive(Clone, Default)]
pub struct MetricsSettings {
    /// `BOARDCAST_METRICS_ADDR`: a second listen address that serves `/metrics` only (say 127.0.0.1:9100, or
    /// an address only the monitoring network reaches).
    pub addr: Option<SocketAddr>,
    /// `BOARDCAST_METRICS_TOKEN`: `/metrics` is also served on the main address, to requests with
    /// `Authorization: Bearer <this>` (and on `addr` too, the token is then required).
    pub token: Option<String>,
}

impl fmt::Debug for MetricsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsSettings")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// JWTs from the app's own sign-in, accepted beside boardcast's tokens (see [`crate::jwt`]). With no key
/// (the default), none is accepted.
#[derive(Clone, Default)]
pub struct JwtSettings {
    /// `BOARDCAST_JWT_SECRET`: the shared secret of HS256 tokens (at least 32 bytes).
    pub secret: Option<String>,
    /// `BOARDCAST_JWT_PUBLIC_KEY`: a PEM file holding the public key of RS256 (RSA) or ES256 (P-256) tokens.
    pub public_key: Option<PathBuf>,
    /// `BOARDCAST_JWT_JWKS`: a JWKS file (`{"keys": [...]}`) of RS256 and ES256 public keys, picked by `kid`.
    pub jwks: Option<PathBuf>,
    /// `BOARDCAST_JWT_ISSUER`: if set, a token's `iss` must be this.
    pub issuer: Option<String>,
    /// `BOARDCAST_JWT_AUDIENCE`: if set, a token's `aud` must name this; if not, `aud` is not checked.
    pub audience: Option<String>,
    /// `BOARDCAST_JWT_LEEWAY_SECS` (default 10): clock skew allowed between the issuer and this server, on
    /// `exp` and `nbf`. A token is honoured until `exp` plus this.
    pub leeway: Duration,
}

impl JwtSettings {
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.public_key.is_some() || self.jwks.is_some()
    }
}

/// The secret stays out of every debug print.
impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key", &self.public_key)
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// What one HTTP client may cost: time to send a body, failed authentications, tokens.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `BOARDCAST_BODY_TIMEOUT_SECS` (default 30): time for a request's body to arrive, counted from when the
    /// route starts reading it; past it, 408 and the connection is closed. The largest body (2.46 MB) takes
    /// 20 s at 1 Mbit/s.
    pub body_timeout: Duration,
    /// `BOARDCAST_AUTH_FAILURES_PER_MIN` (default 60): failed authentications a client address (an IPv6 /64)
    /// may make per minute, in a burst or spread out; past it, 429 until the budget refills.
    pub auth_failures_per_min: u32,
    /// `BOARDCAST_TOKEN_DEFAULT_TTL_SECS` (default 90 days): the lifetime of a token issued through the API
    /// without `expires_in`.
    pub token_default_ttl: Duration,
    /// `BOARDCAST_TOKEN_MAX_TTL_SECS` (default 365 days): the longest `expires_in` the API accepts.
    pub token_max_ttl: Duration,
    /// `BOARDCAST_MAX_TOKENS_PER_USER` (default 100): active (neither revoked nor expired) tokens a user may
    /// hold; the API refuses to issue more (409).
    pub max_tokens_per_user: i64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            body_timeout: Duration::from_secs(30),
            auth_failures_per_min: 60,
            token_default_ttl: Duration::from_secs(90 * 24 * 3600),
            token_max_ttl: Duration::from_secs(365 * 24 * 3600),
            max_tokens_per_user: 100,
        }
    }
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
    /// `BOARDCAST_MAX_CONNECTIONS` (default 0: `None`, the open-file limit less a reserve for the pool and HTTP
    /// clients): WebSockets this process serves at once. Past it the handshake is refused with 503.
    pub max_connections: Option<usize>,
    /// `BOARDCAST_MAX_CONNECTIONS_PER_USER` (default 64): WebSockets one user may hold at once; past it, 429.
    pub max_connections_per_user: usize,
    /// `BOARDCAST_MESSAGES_PER_SEC`, `BOARDCAST_MESSAGE_BURST` (50/s, burst 200): every frame a client sends
    /// (requests, pings, pongs, binary). Past it requests get `rate_limited`; a client that keeps on is closed (1008).
    pub messages: Rate,
    /// `BOARDCAST_JOINS_PER_SEC`, `BOARDCAST_JOIN_BURST` (10/s, burst 100: enough to rejoin the most rooms a
    /// connection may be in at once, after a reconnect). Joins cost the database; past it, as for messages.
    pub joins: Rate,
    /// `BOARDCAST_REPLAY_BYTES_PER_SEC` (default 1 MiB): history replayed to one connection (`join` with `since`),
    /// in bytes of event frames per second, after a first page of up to 512 KiB.
    pub replay_bytes_per_sec: usize,
    /// Events read from history per query when catching up.
    pub history_page: i64,
    /// `BOARDCAST_HELD_FRAMES_MB` (default 64): memory for large frames (4 KiB and more) that subscribers
    /// have yet to take, all rooms together. Past it, rooms wait for their subscribers before reading more
    /// history, and stalled subscribers read from history.
    pub held_frames_budget: usize,
    /// `BOARDCAST_LISTENER_PROBE_SECS` (default 5): how often the listener checks that its connection answers,
    /// and how long it waits for the answer (and twice that for a new connection). A connection cut by the
    /// network, with nothing to send, looks alive otherwise.
    pub listener_probe: Duration,
    /// `BOARDCAST_BROADCASTS_PER_SEC`, `BOARDCAST_BROADCAST_BURST` (20/s, burst 60): `broadcast`s one connection
    /// may send. Past it, as for messages.
    pub broadcasts: Rate,
    /// `BOARDCAST_PRESENCE_UPDATES_PER_SEC`, `BOARDCAST_PRESENCE_UPDATE_BURST` (5/s, burst 20): `track`s and
    /// `untrack`s one connection may send. Past it, as for messages.
    pub presence_updates: Rate,
    /// `BOARDCAST_PRESENCE_MAX_USERS` (default 100): past this many users present in a room, its clients are
    /// told how many rather than who.
    pub presence_max_users: usize,
    /// `BOARDCAST_PRESENCE_TIMEOUT_SECS` (default 20): a server not heard from for this long is taken for dead
    /// and its clients' presence removed. A server with nothing to say sends a heartbeat every quarter of it.
    pub presence_timeout: Duration,
    /// `BOARDCAST_SIGNAL_LINGER_MS` (default 5): how long a server gathers broadcasts and presence changes after
    /// a first one before it sends them to the other servers, in one commit. Longer: fewer NOTIFYing commits
    /// (whose lock every writer of the feed shares), later broadcasts on the other servers.
    pub signal_linger: Duration,
    /// `BOARDCAST_ACCESS_RECHECK_SECS` (default 30; 0: never): how often every room asks the join rule
    /// (`boardcast.may_join`) again about its subscribers, for rules that read what the feed does not announce.
    pub access_recheck: Duration,
}

/// A rate limit: `per_sec` on average, and up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
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
            max_connections: None,
            max_connections_per_user: 64,
            messages: Rate { per_sec: 50, burst: 200 },
            joins: Rate { per_sec: 10, burst: 100 },
            replay_bytes_per_sec: 1024 * 1024,
            history_page: 1000,
            held_frames_budget: 64 * 1024 * 1024,
            listener_probe: Duration::from_secs(5),
            broadcasts: Rate { per_sec: 20, burst: 60 },
            presence_updates: Rate { per_sec: 5, burst: 20 },
            presence_max_users: 100,
            presence_timeout: Duration::from_secs(20),
            signal_linger: Duration::from_millis(5),
            access_recheck: Duration::from_secs(30),
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
            http: HttpSettings::default(),
            jwt: JwtSettings { leeway: Duration::from_secs(10), ..JwtSettings::default() },
            metrics: MetricsSettings::default(),
        }
    }
}

/// The database every database command works on: `--database-url` or `DATABASE_URL`.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (or libpq key=value string), e.g. postgres://postgres@127.0.0.1:5432/boardcast
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL", hide_env = true)]
    pub database_url: String,
}

/// The flags of `boardcast serve`. Each flag is also an environment variable, shown as its value's name: an
/// error about a bad value then names the variable it most likely came from, and `--help` lists each knob
/// once. The flag wins over the variable.
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Listen address, HOST:PORT (an IP, or a name such as localhost: its first IPv4 address); port 0 picks a free port
    #[arg(
        long,
        env = "BOARDCAST_ADDR",
        value_name = "BOARDCAST_ADDR",
        hide_env = true,
        default_value = "127.0.0.1:8080",
        value_parser = parse_addr,
    )]
    pub addr: SocketAddr,
    /// Pooled connections for API writes, joins and history reads (clients' at most an eighth); the listener has its own
    #[arg(
        long,
        env = "BOARDCAST_POOL_SIZE",
        value_name = "BOARDCAST_POOL_SIZE",
        hide_env = true,
        default_value_t = 16
    )]
    pub pool_size: u64,
    /// Seconds between the server's pings to each WebSocket client
    #[arg(
        long,
        env = "BOARDCAST_PING_SECS",
        value_name = "BOARDCAST_PING_SECS",
        hide_env = true,
        default_value_t = 20
    )]
    pub ping_secs: u64,
    /// A client silent this many seconds (no pong, no message) is dropped
    #[arg(
        long,
        env = "BOARDCAST_IDLE_TIMEOUT_SECS",
        value_name = "BOARDCAST_IDLE_TIMEOUT_SECS",
        hide_env = true,
        default_value_t = 60
    )]
    pub idle_timeout_secs: u64,
    /// A client that accepts no data for this many seconds is disconnected as too slow
    #[arg(
        long,
        env = "BOARDCAST_SEND_TIMEOUT_SECS",
        value_name = "BOARDCAST_SEND_TIMEOUT_SECS",
        hide_env = true,
        default_value_t = 15
    )]
    pub send_timeout_secs: u64,
    /// The largest message a client may send, in bytes (at least 256)
    #[arg(
        long,
        env = "BOARDCAST_MAX_FRAME_BYTES",
        value_name = "BOARDCAST_MAX_FRAME_BYTES",
        hide_env = true,
        default_value_t = 16384
    )]
    pub max_frame_bytes: u64,
    /// Rooms one connection may be in at once
    #[arg(
        long,
        env = "BOARDCAST_MAX_ROOMS",
        value_name = "BOARDCAST_MAX_ROOMS",
        hide_env = true,
        default_value_t = 100
    )]
    pub max_rooms: u64,
    /// WebSockets this process serves at once; 0: the open-file limit less the pool and 256 for HTTP clients
    #[arg(
        long,
        env = "BOARDCAST_MAX_CONNECTIONS",
        value_name = "BOARDCAST_MAX_CONNECTIONS",
        hide_env = true,
        default_value_t = 0
    )]
    pub max_connections: u64,
    /// WebSockets one user may hold at once
    #[arg(
        long,
        env = "BOARDCAST_MAX_CONNECTIONS_PER_USER",
        value_name = "BOARDCAST_MAX_CONNECTIONS_PER_USER",
        hide_env = true,
        default_value_t = 64
    )]
    pub max_connections_per_user: u64,
    /// Frames a WebSocket client may send per second, on average (requests, pings, pongs)
    #[arg(
        long,
        env = "BOARDCAST_MESSAGES_PER_SEC",
        value_name = "BOARDCAST_MESSAGES_PER_SEC",
        hide_env = true,
        default_value_t = 50
    )]
    pub messages_per_sec: u32,
    /// Frames a WebSocket client may send at once, above its rate
    #[arg(
        long,
        env = "BOARDCAST_MESSAGE_BURST",
        value_name = "BOARDCAST_MESSAGE_BURST",
        hide_env = true,
        default_value_t = 200
    )]
    pub message_burst: u32,
    /// Joins a WebSocket client may make per second, on average
    #[arg(
        long,
        env = "BOARDCAST_JOINS_PER_SEC",
        value_name = "BOARDCAST_JOINS_PER_SEC",
        hide_env = true,
        default_value_t = 10
    )]
    pub joins_per_sec: u32,
    /// Joins a WebSocket client may make at once, above its rate (enough to rejoin every room after a reconnect)
    #[arg(
        long,
        env = "BOARDCAST_JOIN_BURST",
        value_name = "BOARDCAST_JOIN_BURST",
        hide_env = true,
        default_value_t = 100
    )]
    pub join_burst: u32,
    /// Bytes of history replayed per second to one WebSocket client (join with since), after a first page of 512 KiB
    #[arg(
        long,
        env = "BOARDCAST_REPLAY_BYTES_PER_SEC",
        value_name = "BOARDCAST_REPLAY_BYTES_PER_SEC",
        hide_env = true,
        default_value_t = 1024 * 1024
    )]
    pub replay_bytes_per_sec: u64,
    /// Seconds between the listener's checks that its connection answers (and its wait for an answer); a silent network
    /// cut is noticed within twice this
    #[arg(
        long,
        env = "BOARDCAST_LISTENER_PROBE_SECS",
        value_name = "BOARDCAST_LISTENER_PROBE_SECS",
        hide_env = true,
        default_value_t = 5
    )]
    pub listener_probe_secs: u64,
    /// Seconds between checks, room by room, that the join rule (boardcast.may_join) still lets each subscriber in; 0:
    /// only when boardcast.recheck() asks
    #[arg(
        long,
        env = "BOARDCAST_ACCESS_RECHECK_SECS",
        value_name = "BOARDCAST_ACCESS_RECHECK_SECS",
        hide_env = true,
        default_value_t = 30
    )]
    pub access_recheck_secs: u64,
    /// MiB for large frames (4 KiB and more) that subscribers have yet to take, all rooms together; past it, rooms wait
    /// for their subscribers, and a stalled subscriber reads from history
    #[arg(
        long,
        env = "BOARDCAST_HELD_FRAMES_MB",
        value_name = "BOARDCAST_HELD_FRAMES_MB",
        hide_env = true,
        default_value_t = 64
    )]
    pub held_frames_mb: u64,
    /// Broadcasts a WebSocket client may send per second, on average
    #[arg(
        long,
        env = "BOARDCAST_BROADCASTS_PER_SEC",
        value_name = "BOARDCAST_BROADCASTS_PER_SEC",
        hide_env = true,
        default_value_t = 20
    )]
    pub broadcasts_per_sec: u32,
    /// Broadcasts a WebSocket client may send at once, above its rate
    #[arg(
        long,
        env = "BOARDCAST_BROADCAST_BURST",
        value_name = "BOARDCAST_BROADCAST_BURST",
        hide_env = true,
        default_value_t = 60
    )]
    pub broadcast_burst: u32,
    /// Presence updates (track, untrack) a WebSocket client may send per second, on average
    #[arg(
        long,
        env = "BOARDCAST_PRESENCE_UPDATES_PER_SEC",
        value_name = "BOARDCAST_PRESENCE_UPDATES_PER_SEC",
        hide_env = true,
        default_value_t = 5
    )]
    pub presence_updates_per_sec: u32,
    /// Presence updates a WebSocket client may send at once, above its rate
    #[arg(
        long,
        env = "BOARDCAST_PRESENCE_UPDATE_BURST",
        value_name = "BOARDCAST_PRESENCE_UPDATE_BURST",
        hide_env = true,
        default_value_t = 20
    )]
    pub presence_update_burst: u32,
    /// Past this many users present in a room, its clients get the count instead of the list
    #[arg(
        long,
        env = "BOARDCAST_PRESENCE_MAX_USERS",
        value_name = "BOARDCAST_PRESENCE_MAX_USERS",
        hide_env = true,
        default_value_t = 100
    )]
    pub presence_max_users: u64,
    /// Seconds after which a server not heard from is taken for dead, and its clients' presence removed
    #[arg(
        long,
        env = "BOARDCAST_PRESENCE_TIMEOUT_SECS",
        value_name = "BOARDCAST_PRESENCE_TIMEOUT_SECS",
        hide_env = true,
        default_value_t = 20
    )]
    pub presence_timeout_secs: u64,
    /// Milliseconds a server gathers broadcasts and presence changes before sending them to the other servers (one
    /// NOTIFYing commit per batch)
    #[arg(
        long,
        env = "BOARDCAST_SIGNAL_LINGER_MS",
        value_name = "BOARDCAST_SIGNAL_LINGER_MS",
        hide_env = true,
        default_value_t = 5
    )]
    pub signal_linger_ms: u64,
    /// Prune recorded events older than this many seconds (0: never; the default is 7 days)
    #[arg(
        long,
        env = "BOARDCAST_RETENTION_MAX_AGE_SECS",
        value_name = "BOARDCAST_RETENTION_MAX_AGE_SECS",
        hide_env = true,
        default_value_t = 7 * 24 * 3600,
    )]
    pub retention_max_age_secs: u64,
    /// Keep at most this many events per project (0: no limit)
    #[arg(
        long,
        env = "BOARDCAST_RETENTION_MAX_EVENTS",
        value_name = "BOARDCAST_RETENTION_MAX_EVENTS",
        hide_env = true,
        default_value_t = 1_000_000
    )]
    pub retention_max_events: u64,
    /// Seconds between pruning runs
    #[arg(
        long,
        env = "BOARDCAST_RETENTION_INTERVAL_SECS",
        value_name = "BOARDCAST_RETENTION_INTERVAL_SECS",
        hide_env = true,
        default_value_t = 60
    )]
    pub retention_interval_secs: u64,
    /// Web origins whose pages may call the REST API, comma-separated
    /// (https://board.example.com,http://localhost:5173), or * for any
    // Any origin is safe to allow: the API takes bearer tokens, never cookies, so another site's page cannot
    // act as a user.
    #[arg(
        long,
        env = "BOARDCAST_CORS_ORIGINS",
        value_name = "BOARDCAST_CORS_ORIGINS",
        hide_env = true,
        default_value = "*",
        value_parser = parse_origins,
    )]
    pub cors_origins: CorsOrigins,
    /// Seconds a request body may take to arrive, from its first byte read; past it, 408 and the connection is closed
    #[arg(
        long,
        env = "BOARDCAST_BODY_TIMEOUT_SECS",
        value_name = "BOARDCAST_BODY_TIMEOUT_SECS",
        hide_env = true,
        default_value_t = 30
    )]
    pub body_timeout_secs: u64,
    /// Failed authentications one client address (IPv6: its /64) may make per minute; past it, 429
    #[arg(
        long,
        env = "BOARDCAST_AUTH_FAILURES_PER_MIN",
        value_name = "BOARDCAST_AUTH_FAILURES_PER_MIN",
        hide_env = true,
        default_value_t = 60
    )]
    pub auth_failures_per_min: u32,
    /// Lifetime in seconds of a token issued through the API without expires_in (default 90 days)
    #[arg(
        long,
        env = "BOARDCAST_TOKEN_DEFAULT_TTL_SECS",
        value_name = "BOARDCAST_TOKEN_DEFAULT_TTL_SECS",
        hide_env = true,
        default_value_t = 90 * 24 * 3600
    )]
    pub token_default_ttl_secs: u64,
    /// The longest expires_in, in seconds, the API accepts for a new token (default 365 days)
    #[arg(
        long,
        env = "BOARDCAST_TOKEN_MAX_TTL_SECS",
        value_name = "BOARDCAST_TOKEN_MAX_TTL_SECS",
        hide_env = true,
        default_value_t = 365 * 24 * 3600
    )]
    pub token_max_ttl_secs: u64,
    /// Active tokens one user may hold; the API issues no more (409)
    #[arg(
        long,
        env = "BOARDCAST_MAX_TOKENS_PER_USER",
        value_name = "BOARDCAST_MAX_TOKENS_PER_USER",
        hide_env = true,
        default_value_t = 100
    )]
    pub max_tokens_per_user: u32,
    /// The shared secret of HS256 JWTs to accept (at least 32 bytes); prefer the variable to the flag
    #[arg(long, env = "BOARDCAST_JWT_SECRET", value_name = "BOARDCAST_JWT_SECRET", hide_env = true)]
    pub jwt_secret: Option<String>,
    /// A PEM file with the public key of RS256 or ES256 JWTs to accept
    #[arg(long, env = "BOARDCAST_JWT_PUBLIC_KEY", value_name = "BOARDCAST_JWT_PUBLIC_KEY", hide_env = true)]
    pub jwt_public_key: Option<PathBuf>,
    /// A JWKS file ({"keys": [...]}) with the public keys of RS256 or ES256 JWTs to accept, picked by kid
    #[arg(long, env = "BOARDCAST_JWT_JWKS", value_name = "BOARDCAST_JWT_JWKS", hide_env = true)]
    pub jwt_jwks: Option<PathBuf>,
    /// If set, a JWT's iss must be this
    #[arg(long, env = "BOARDCAST_JWT_ISSUER", value_name = "BOARDCAST_JWT_ISSUER", hide_env = true)]
    pub jwt_issuer: Option<String>,
    /// If set, a JWT's aud must name this (if not, aud is not checked)
    #[arg(long, env = "BOARDCAST_JWT_AUDIENCE", value_name = "BOARDCAST_JWT_AUDIENCE", hide_env = true)]
    pub jwt_audience: Option<String>,
    /// Seconds of clock skew allowed on a JWT's exp and nbf
    #[arg(
        long,
        env = "BOARDCAST_JWT_LEEWAY_SECS",
        value_name = "BOARDCAST_JWT_LEEWAY_SECS",
        hide_env = true,
        default_value_t = 10
    )]
    pub jwt_leeway_secs: u64,
    /// A second listen address, HOST:PORT, that serves GET /metrics (Prometheus) and nothing else
    #[arg(long, env = "BOARDCAST_METRICS_ADDR", value_name = "BOARDCAST_METRICS_ADDR", hide_env = true, value_parser = parse_addr)]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve GET /metrics on the main address too, to requests with Authorization: Bearer <this>; prefer the variable to the flag
    #[arg(long, env = "BOARDCAST_METRICS_TOKEN", value_name = "BOARDCAST_METRICS_TOKEN", hide_env = true)]
    pub metrics_token: Option<String>,
}

/// `*` (any origin: `None`) or a list of origins.
#[derive(Debug, Clone)]
pub struct CorsOrigins(pub Option<Vec<String>>);

impl From<SettingsArgs> for Settings {
    fn from(a: SettingsArgs) -> Settings {
        let secs = |n: u64| Duration::from_secs(n.max(1));
        let mut s = Settings::new(a.database.database_url);
        s.addr = a.addr;
        s.pool_size = a.pool_size.max(1) as usize;
        s.cors_origins = a.cors_origins.0;
        s.http.body_timeout = secs(a.body_timeout_secs);
        s.http.auth_failures_per_min = a.auth_failures_per_min.max(1);
        s.http.token_max_ttl = secs(a.token_max_ttl_secs);
        s.http.token_default_ttl = secs(a.token_default_ttl_secs).min(s.http.token_max_ttl);
        s.http.max_tokens_per_user = i64::from(a.max_tokens_per_user.max(1));
        s.jwt = JwtSettings {
            secret: a.jwt_secret,
            public_key: a.jwt_public_key,
            jwks: a.jwt_jwks,
            issuer: a.jwt_issuer,
            audience: a.jwt_audience,
            leeway: Duration::from_secs(a.jwt_leeway_secs),
        };
        s.metrics = MetricsSettings { addr: a.metrics_addr, token: a.metrics_token.filter(|t| !t.is_empty()) };
        s.feed.ping_interval = secs(a.ping_secs);
        s.feed.idle_timeout = secs(a.idle_timeout_secs);
        s.feed.send_timeout = secs(a.send_timeout_secs);
        s.feed.max_client_frame = a.max_frame_bytes.max(256) as usize;
        s.feed.max_rooms_per_connection = a.max_rooms.max(1) as usize;
        s.feed.max_connections = (a.max_connections > 0).then_some(a.max_connections as usize);
        s.feed.max_connections_per_user = a.max_connections_per_user.max(1) as usize;
        s.feed.messages = Rate { per_sec: a.messages_per_sec.max(1), burst: a.message_burst.max(1) };
        s.feed.joins = Rate { per_sec: a.joins_per_sec.max(1), burst: a.join_burst.max(1) };
        s.feed.replay_bytes_per_sec = a.replay_bytes_per_sec.max(1024) as usize;
        s.feed.listener_probe = secs(a.listener_probe_secs);
        s.feed.access_recheck = Duration::from_secs(a.access_recheck_secs);
        s.feed.held_frames_budget = (a.held_frames_mb as usize).saturating_mul(1024 * 1024);
        s.feed.broadcasts = Rate { per_sec: a.broadcasts_per_sec.max(1), burst: a.broadcast_burst.max(1) };
        s.feed.presence_updates =
            Rate { per_sec: a.presence_updates_per_sec.max(1), burst: a.presence_update_burst.max(1) };
        s.feed.presence_max_users = a.presence_max_users as usize;
        s.feed.presence_timeout = secs(a.presence_timeout_secs);
        s.feed.signal_linger = Duration::from_millis(a.signal_linger_ms.min(1000));
        let n = a.retention_max_age_secs;
        s.retention.max_age = (n > 0).then(|| Duration::from_secs(n));
        let n = a.retention_max_events;
        s.retention.max_per_project = (n > 0).then_some(n as i64);
        s.retention.interval = secs(a.retention_interval_secs);
        s
    }
}

/// An IP and port, or a host name and port (`localhost:8080`: its first IPv4 address, if it has one).
fn parse_addr(addr: &str) -> Result<SocketAddr, String> {
    match addr.parse() {
        Ok(a) => Ok(a),
        Err(e) => std::net::ToSocketAddrs::to_socket_addrs(addr)
            .ok()
            .and_then(|a| a.min_by_key(|a| a.is_ipv6()))
            .ok_or_else(|| format!("{e} (use HOST:PORT, e.g. 127.0.0.1:8080)")),
    }
}

fn parse_origins(v: &str) -> Result<CorsOrigins, String> {
    if v.trim() == "*" {
        return Ok(CorsOrigins(None));
    }
    let origins: Vec<String> = v.split(',').map(|o| o.trim().trim_end_matches('/').to_string()).collect();
    if let Some(bad) = origins.iter().find(|o| !is_origin(o)) {
        return Err(format!("{bad:?} is not an origin (scheme://host[:port], e.g. https://board.example.com)"));
    }
    Ok(CorsOrigins(Some(origins)))
}

/// `http(s)://host[:port]`, nothing more.
fn is_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && rest.parse::<http::uri::Authority>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        settings: SettingsArgs,
    }

    /// Parses flags alone: the variables of the environment the test runs in must not change what it sees.
    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let argv = ["serve", "--database-url", "postgres://db"].iter().chain(args);
        let matches = Serve::command().mut_args(|a| a.env(None::<&str>)).try_get_matches_from(argv)?;
        Serve::from_arg_matches(&matches).map(|s| s.settings.into())
    }

    #[test]
    fn the_flags_default_to_the_settings_defaults() {
        let parsed = parse(&[]).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Settings::new("postgres://db")));
    }

    #[test]
    fn flags_set_their_settings_within_bounds() {
        let s = parse(&["--addr", "127.0.0.1:0", "--pool-size", "0", "--held-frames-mb", "2"]).unwrap();
        assert_eq!((s.addr.port(), s.pool_size, s.feed.held_frames_budget), (0, 1, 2 << 20));
        let s = parse(&["--retention-max-age-secs", "0", "--cors-origins", "https://a.example, http://b:80/"]).unwrap();
        assert_eq!(s.retention.max_age, None);
        assert_eq!(s.cors_origins, Some(vec!["https://a.example".to_string(), "http://b:80".to_string()]));
    }

    #[test]
    fn jwt_flags_set_the_jwt_settings_and_the_secret_is_never_printed() {
        let s = parse(&["--jwt-secret", "s3cret-s3cret", "--jwt-jwks", "/k.json", "--jwt-leeway-secs", "0"]).unwrap();
        assert_eq!(s.jwt.secret.as_deref(), Some("s3cret-s3cret"));
        assert_eq!((s.jwt.jwks.clone(), s.jwt.leeway), (Some(PathBuf::from("/k.json")), Duration::ZERO));
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
        assert!(!parse(&[]).unwrap().jwt.enabled(), "no JWT is accepted unless configured");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (flag, value) in [("--addr", "nonsense"), ("--ping-secs", "soon"), ("--cors-origins", "example.com")] {
            let e = parse(&[flag, value]).unwrap_err().to_string();
            let var = format!("BOARDCAST_{}", flag[2..].replace('-', "_").to_uppercase());
            assert!(e.contains(&var) && e.contains(value), "{e}");
        }
    }

    #[test]
    fn an_origin_is_a_scheme_and_a_host_and_nothing_more() {
        for ok in ["https://board.example.com", "http://localhost:5173", "http://127.0.0.1:8080"] {
            assert!(is_origin(ok), "{ok}");
        }
        for bad in ["board.example.com", "ftp://x", "https://", "https://x/app", "https://a b", "https://u@x", "*"] {
            assert!(!is_origin(bad), "{bad}");
        }
    }
}

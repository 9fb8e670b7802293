//! boardcast: a real-time backend for project-management apps where PostgreSQL is both the source of truth and
//! the event bus.
//!
//! The path of a change, and where each step lives:
//!
//! * `sql/` — the schema and the triggers that turn every committed write, by any SQL client, into an event
//!   with a gapless per-project `seq`, recorded in `feed_events` and announced with NOTIFY.
//! * `feed::listener` — one task on its own connection that LISTENs and hands notifications to the rooms.
//! * `feed::room` — one room per project with subscribers in this process; broadcasts events in seq order.
//! * `feed::connection` — one task per WebSocket client: joins, leaves, resumes, fills gaps from history.
//! * `api` — the REST API. Its handlers only write to the database; they never emit.
//! * `http` — what the API and the feed's `/ws` route share: the accept loop, tokens, errors, input.
//! * `auth`, `jwt` — who a token names: boardcast's own `bc_` tokens, and JWTs from an app's sign-in.
//! * `metrics`, `scrape` — the Prometheus metrics, and `GET /metrics` (docs/operating.md).
//! * `board` — the web app (web/board), served at `/`.
//! * [`app`] — wiring and graceful shutdown.
//!
//! Modules are public only where another crate uses them: the binary (`cli`), the tests and the benchmark.

pub mod admin;
mod api;
pub mod app;
mod auth;
mod board;
pub mod cli;
pub mod config;
pub mod db;
mod error;
pub mod feed;
mod health;
mod http;
mod jwt;
mod metrics;
pub mod process;
mod scrape;

pub use app::{AppState, Application};
pub use config::Settings;
pub use error::{Error, Result};

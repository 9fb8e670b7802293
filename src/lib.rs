//! boardcast: a real-time backend for project-management apps where PostgreSQL is both the source of truth and
//! the event bus.
//!
//! The path of a change, and where each step lives:
//!
//! * `sql/` — the schema and the triggers that turn every committed write, by any SQL client, into an event
//!   with a gapless per-project `seq`, recorded in `feed_events` and announced with NOTIFY.
//! * [`feed::listener`] — one task on its own connection that LISTENs and hands notifications to the rooms.
//! * [`feed::room`] — one room per project with subscribers in this process; broadcasts events in seq order.
//! * [`feed::connection`] — one task per WebSocket client: joins, leaves, resumes, fills gaps from history.
//! * [`api`] — the REST API. Its handlers only write to the database; they never emit.
//! * [`app`] — wiring, the HTTP server and graceful shutdown.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod feed;
pub mod server;

pub use app::Application;
pub use config::Settings;

//! HTTP, below both the REST API and the feed's `/ws` route: what every route shares.
//!
//! * [`server`] — the accept loop (hyper), graceful shutdown, hyper's upgrade handle for `/ws`, request logs;
//! * [`auth`] — the bearer token of a request, and the caller it names;
//! * [`gate`] — what a request meets before the database: failed authentications per client, tokens
//!   recently found unknown or valid; and each request's client address and arrival;
//! * [`error`] — the one JSON error type, and the place where rejections become responses;
//! * [`input`] — request bodies and query strings, read and checked;
//! * [`origin`] — which web pages may use the server from a browser;
//! * [`reply`] — JSON replies.

pub mod auth;
pub mod error;
pub mod gate;
pub mod input;
pub mod lookups;
pub mod origin;
pub mod reply;
pub mod server;

pub use error::ApiError;

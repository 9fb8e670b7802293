//! The REST API. Route handlers only read and write PostgreSQL; the triggers emit. See docs/api.md and the
//! OpenAPI document served at /api/openapi.json.
//!
//! This file only combines the resources' routes; each resource is a file of its own:
//!
//! * [`projects`], [`members`], [`tasks`], [`comments`] — the board;
//! * [`me`] — the caller and their API tokens;
//! * [`openapi`] — the index and the OpenAPI document;
//! * [`client`] — the JavaScript feed client, served at `/client.js` beside the API.
//!
//! What they share, each a file below them that imports none of them:
//!
//! * [`route`] — the route declarations, and the 404/405 answers for requests no route takes;
//! * [`access`] — membership checks, and the locks a write takes while it checks;
//! * [`write`] — the one path of a write: transaction, seq, commit, reply;
//! * [`page`] — pagination;
//! * [`values`] and [`records`] — what comes in (typed request values) and what goes out (typed rows).

mod access;
mod client;
mod comments;
mod me;
mod members;
mod openapi;
mod page;
mod projects;
mod records;
mod route;
mod tasks;
mod values;
mod write;

use std::time::Duration;

use deadpool_postgres::Pool;
use warp::{Filter, Rejection, Reply};

use crate::http::error;
use route::Route;

/// Every route of the API, as each resource declares it next to its filters. The fallback answers from this
/// table; a test holds it and the OpenAPI document together.
const ROUTES: &[&[Route]] =
    &[openapi::ROUTES, client::ROUTES, me::ROUTES, projects::ROUTES, members::ROUTES, tasks::ROUTES, comments::ROUTES];

/// The template of the API route `path` is an instance of (`/api/tasks/{task_id}`), if any.
pub(crate) fn route_template(path: &str) -> Option<&'static str> {
    route::template_of(ROUTES, path)
}

/// Every API route's template.
pub(crate) fn route_templates() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().flat_map(|r| r.iter()).map(|r| r.path)
}

/// Every `/api` route, and `/client.js`. A request no route takes ends in [`route::unrouted`], which answers
/// 405 (with `Allow`) for a declared path and 404 for anything else under /api.
fn routes(pool: Pool) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    openapi::routes()
        .or(client::routes())
        .unify()
        .or(me::routes(pool.clone()))
        .unify()
        .or(projects::routes(pool.clone()))
        .unify()
        .or(members::routes(pool.clone()))
        .unify()
        .or(tasks::routes(pool.clone()))
        .unify()
        .or(comments::routes(pool))
        .unify()
        .or(route::unrouted(ROUTES))
        .unify()
}

/// Every `/api` route, errors included, with the CORS headers a browser page on another origin needs (the
/// preflight of a PATCH with a bearer token is answered here), so a web client can read every answer,
/// `X-Boardcast-Seq`, `X-Boardcast-Tx` and error bodies too; and `/client.js`, which a page on another origin imports as a module
/// (a CORS request).
pub fn for_browsers(
    pool: Pool,
    origins: Option<Vec<String>>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let cors = warp::cors()
        .allow_methods(["GET", "POST", "PATCH", "DELETE"])
        // The two the API reads, and the tracing headers that browser monitoring tools (OpenTelemetry, Sentry)
        // add to every fetch: a preflight asking for one of those must not fail the request. The API ignores
        // them.
        .allow_headers([
            "authorization",
            "content-type",
            "traceparent",
            "tracestate",
            "sentry-trace",
            "baggage",
            "x-request-id",
        ])
        .expose_headers(["x-boardcast-seq", "x-boardcast-tx"])
        .max_age(Duration::from_secs(600));
    let cors = match origins {
        None => cors.allow_any_origin(),
        Some(list) => cors.allow_origins(list.iter().map(String::as_str)),
    };
    // Only requests under /api and the client's paths: the other routes' rejections must not turn into this
    // branch's 404.
    let ours = warp::path::full()
        .and_then(|p: warp::path::FullPath| async move {
            let path = p.as_str();
            if path == "/api" || path.starts_with("/api/") || client::ROUTES.iter().any(|r| r.path == path) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one();
    ours.and(routes(pool).recover(error::recover)).with(cors)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The OpenAPI document lists exactly the routes: a route it misses, or a path it documents that no route
    /// takes, fails here.
    #[test]
    fn the_openapi_document_lists_exactly_the_routed_paths_and_methods() {
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .flat_map(|r| r.iter())
            .flat_map(|r| r.methods.iter().map(|m| (r.path.to_string(), m.to_lowercase())))
            .collect();
        let documented: BTreeSet<(String, String)> = openapi::document()["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| ops.as_object().expect("operations").keys().map(|m| (path.clone(), m.clone())))
            .collect();
        assert_eq!(routed.difference(&documented).collect::<Vec<_>>(), Vec::<&(String, String)>::new(), "undocumented");
        assert_eq!(documented.difference(&routed).collect::<Vec<_>>(), Vec::<&(String, String)>::new(), "unrouted");
        assert!(routed.len() >= 25);
    }
}

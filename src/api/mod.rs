//! The HTTP API. Route handlers only read and write PostgreSQL; the triggers emit. See docs/api.md and the
//! OpenAPI document served at /api/openapi.json.
//!
//! This file holds what every resource shares: the reply of a write (with the seq of its event), membership
//! checks, and [`routes`], which combines the resources (what any HTTP route needs is in [`crate::http`]):
//!
//! * [`projects`], [`members`], [`tasks`], [`comments`] — the board;
//! * [`me`] — the caller and their API tokens;
//! * [`openapi`] — the OpenAPI document, which also drives the 405/404 answers for unrouted requests.

pub mod comments;
pub mod me;
pub mod members;
pub mod openapi;
pub mod projects;
pub mod tasks;

use std::convert::Infallible;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::Identity;
pub use crate::http::auth::authed;
use crate::http::error::{self, ApiError};
pub use crate::http::reply::{ok, respond};

pub fn with_pool(pool: Pool) -> impl Filter<Extract = (Pool,), Error = Infallible> + Clone {
    warp::any().map(move || pool.clone())
}

/// Every `/api` route. A request no route takes ends in [`unrouted`], which answers 405 (with `Allow`) for a
/// documented path and 404 for anything else under /api.
pub fn routes(pool: Pool) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let index = warp::path!("api").and(warp::get()).map(|| {
        warp::reply::json(&serde_json::json!({"api": "boardcast", "openapi": "/api/openapi.json"})).into_response()
    });
    index
        .or(openapi::route())
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
        .or(unrouted())
        .unify()
}

/// Every `/api` route, errors included, with the CORS headers a browser page on another origin needs (the
/// preflight of a PATCH with a bearer token is answered here), so a web client can read every answer,
/// `X-Boardcast-Seq` and error bodies too.
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
        .expose_headers(["x-boardcast-seq"])
        .max_age(Duration::from_secs(600));
    let cors = match origins {
        None => cors.allow_any_origin(),
        Some(list) => cors.allow_origins(list.iter().map(String::as_str)),
    };
    // Only requests under /api: the other routes' rejections must not turn into this branch's 404.
    let under_api = warp::path::peek()
        .and_then(|p: warp::path::Peek| async move {
            if p.segments().next() == Some("api") { Ok(()) } else { Err(warp::reject::not_found()) }
        })
        .untuple_one();
    under_api.and(routes(pool).recover(error::recover)).with(cors)
}

/// Rejects, never answers: a custom rejection combined after a route's own (say, a 401) loses to it, and wins
/// over warp's generic 404/405. So a route's error always stands, and an unrouted request gets the document's
/// view: 405 with the methods of a documented path, else 404.
fn unrouted() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path("api").and(warp::path::full()).and(warp::method()).and_then(
        |path: warp::path::FullPath, method: warp::http::Method| async move {
            let methods = openapi::methods_of(path.as_str());
            if methods.contains(&method.as_str()) {
                // A route took this request and refused it (a bad header or query): its rejection stands.
                return Err(warp::reject::not_found());
            }
            let e = if methods.is_empty() {
                ApiError::NotFound("no such route".into())
            } else {
                ApiError::MethodNotAllowed { allow: methods.join(", ") }
            };
            Err::<Response, _>(warp::reject::custom(e))
        },
    )
}

/// Locks a project's row (`lock`: a row-lock clause such as `FOR UPDATE`) before anything else of it, the order
/// that keeps owner actions and membership changes from deadlocking; 404 if there is no such project.
pub async fn lock_project(db: &impl GenericClient, project: Uuid, lock: &str) -> Result<(), ApiError> {
    db.query_opt(&format!("SELECT 1 FROM projects WHERE id = $1 {lock}"), &[&project])
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::NotFound("no such project".into()))
}

/// The reply to a write: the resource with `"seq"`, the seq of the event the write produced in its project's
/// feed (null when the write changed nothing, so produced no event), also sent as `X-Boardcast-Seq`.
pub fn written(status: StatusCode, mut body: Value, seq: Option<i64>) -> Response {
    if let Value::Object(m) = &mut body {
        m.insert("seq".into(), seq.map_or(Value::Null, Value::from));
    }
    let mut res = ok(status, &body);
    if let Some(seq) = seq {
        res.headers_mut().insert("x-boardcast-seq", seq.into());
    }
    res
}

/// The seq of the event this transaction's last write produced. Called right after the write, in the same
/// transaction: the write's trigger locked the project's feed row until commit, so no other writer can have
/// added an event since, and `feed_seq` (which sees this transaction's own events) gives ours.
pub async fn seq_of(tx: &impl GenericClient, project: Uuid) -> Result<i64, ApiError> {
    let row = tx.query_opt("SELECT last_seq FROM feed_seq WHERE project_id = $1", &[&project]).await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// The caller's role in a project; a project they are not a member of does not exist for them (404).
pub async fn role_in(db: &impl GenericClient, project: Uuid, who: &Identity) -> Result<String, ApiError> {
    db.query_opt("SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2", &[&project, &who.user_id])
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| ApiError::NotFound("no such project".into()))
}

/// [`role_in`] for a write, inside its transaction: the membership row is locked (FOR KEY SHARE) until the
/// write commits, so a concurrent removal waits for it instead of racing it. Whoever was removed cannot write
/// after the removal's event, and the feed's order tells the truth.
pub async fn role_in_locked(db: &impl GenericClient, project: Uuid, who: &Identity) -> Result<String, ApiError> {
    db.query_opt(
        "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2 FOR KEY SHARE",
        &[&project, &who.user_id],
    )
    .await?
    .map(|r| r.get(0))
    .ok_or_else(|| ApiError::NotFound("no such project".into()))
}

/// For a write to the board (tasks, comments): the caller must be a member, and the project active. Tasks and
/// comments of an archived project are read-only through the API: archiving is how an owner freezes a finished
/// board (members and the project itself stay editable by owners, so it can be reactivated). SQL writers are
/// not held to this: they are trusted, like any admin tool.
///
/// Locks, until the write commits: the membership (FOR KEY SHARE), so a concurrent removal waits for the write
/// instead of racing it, and the project (FOR KEY SHARE), so an archive (which takes FOR UPDATE) waits for
/// writes already let through and none slips in after it. Neither blocks membership changes (NO KEY UPDATE).
/// Call it before locking any task or comment: a project delete locks the project and then, cascading, its
/// tasks; taking the project first is what keeps the two from deadlocking.
pub async fn member_of_active(db: &impl GenericClient, project: Uuid, who: &Identity) -> Result<String, ApiError> {
    let row = db
        .query_opt(
            "SELECT m.role, p.status FROM projects p JOIN project_members m ON m.project_id = p.id AND m.user_id = $2
              WHERE p.id = $1 FOR KEY SHARE OF p, m",
            &[&project, &who.user_id],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound("no such project".into()))?;
    if row.get::<_, &str>(1) == "archived" {
        return Err(ApiError::Conflict {
            message: "the project is archived: its tasks and comments are read-only until an owner sets its status \
                      to active"
                .into(),
            current: None,
        });
    }
    Ok(row.get(0))
}

/// A row of `table` (tasks or comments) in a project the caller is a member of, as JSON (`to_json` is
/// `row_to_json` or `to_jsonb`), with its project; 404 otherwise. With `lock`, for a write: the project must be
/// active ([`member_of_active`], which takes the project's and the membership's locks first), then the row is
/// locked so the version checked is the version overwritten.
pub async fn visible_row(
    db: &impl GenericClient,
    table: &'static str,
    to_json: &'static str,
    id: Uuid,
    who: &Identity,
    lock: bool,
) -> Result<(Value, Uuid), ApiError> {
    let what = table.trim_end_matches('s');
    let not_found = || ApiError::NotFound(format!("no such {what}"));
    let mut project = None;
    if lock {
        let row = db.query_opt(&format!("SELECT project_id FROM {table} WHERE id = $1"), &[&id]).await?;
        let p: Uuid = row.ok_or_else(not_found)?.get(0);
        member_of_active(db, p, who).await.map_err(|e| match e {
            ApiError::NotFound(_) => not_found(),
            other => other,
        })?;
        project = Some(p);
    }
    let sql = format!(
        "SELECT {to_json}(x), x.project_id FROM {table} x
           JOIN project_members m ON m.project_id = x.project_id AND m.user_id = $2
          WHERE x.id = $1 {}",
        if lock { "FOR UPDATE OF x" } else { "" }
    );
    let row = db.query_opt(&sql, &[&id, &who.user_id]).await?.ok_or_else(not_found)?;
    let (value, in_project): (Value, Uuid) = (row.get(0), row.get(1));
    if project.is_some_and(|p| p != in_project) {
        // Moved to another project (by SQL) between the two reads: its locks are the wrong ones.
        return Err(ApiError::Conflict {
            message: format!("the {what} moved to another project; retry"),
            current: None,
        });
    }
    Ok((value, in_project))
}

/// Owner-only actions (always writes): 404 to non-members, 403 to members.
pub async fn require_owner(db: &impl GenericClient, project: Uuid, who: &Identity) -> Result<(), ApiError> {
    match role_in_locked(db, project, who).await?.as_str() {
        "owner" => Ok(()),
        _ => Err(ApiError::Forbidden("only an owner of the project may do this".into())),
    }
}

//! Projects: create (the creator becomes its owner), list the caller's, get, rename or archive, delete.
//!
//! A project is returned as its row (the same JSON the feed carries, `to_jsonb` of the row) plus the caller's
//! `role`. Renaming, changing the status and deleting are for owners.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use serde_json::{Value, json};
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{authed, lock_project, ok, require_owner, respond, role_in, seq_of, with_pool, written};
use crate::auth::Identity;
use crate::http::ApiError;
use crate::http::input::{self, Body, Page};

pub const NAME_MAX: usize = 200;
pub const STATUSES: &[&str] = &["active", "archived"];

pub fn routes(pool: Pool) -> BoxedFilter<(Response,)> {
    create(pool.clone())
        .or(list(pool.clone()))
        .unify()
        .or(get(pool.clone()))
        .unify()
        .or(update(pool.clone()))
        .unify()
        .or(delete(pool))
        .unify()
        .boxed()
}

/// `POST /api/projects` `{"name", "status"?}` → 201.
pub fn create(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|who: Identity, body: bytes::Bytes, pool: Pool| async move {
            respond(create_project(who, body, pool).await)
        })
}

async fn create_project(who: Identity, body: bytes::Bytes, pool: Pool) -> Result<Response, ApiError> {
    let body = Body::parse(&body, &["name", "status"])?;
    let name = body.required_text("name", 1, NAME_MAX)?;
    let status = body.choice("status", STATUSES)?.unwrap_or_else(|| "active".into());
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "INSERT INTO projects (name, status) VALUES ($1, $2) RETURNING id, to_jsonb(projects.*)",
            &[&name, &status],
        )
        .await?;
    let id: Uuid = row.get(0);
    tx.execute(
        "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'owner')",
        &[&id, &who.user_id],
    )
    .await?;
    let seq = seq_of(&*tx, id).await?;
    tx.commit().await?;
    Ok(written(StatusCode::CREATED, with_role(row.get(1), "owner"), Some(seq)))
}

/// `GET /api/projects?limit=&cursor=`: the caller's projects, oldest first.
pub fn list(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|who: Identity, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_projects(who, q, pool).await)
        })
}

async fn list_projects(who: Identity, q: HashMap<String, String>, pool: Pool) -> Result<Response, ApiError> {
    input::known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, 2)?;
    let (after_t, after_id) = page.after_time_id()?;
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT to_jsonb(p) || jsonb_build_object('role', m.role)
               FROM projects p JOIN project_members m ON m.project_id = p.id AND m.user_id = $1
              WHERE $2::timestamptz IS NULL OR (p.created_at, p.id) > ($2::timestamptz, $3::uuid)
              ORDER BY p.created_at, p.id LIMIT $4",
            &[&who.user_id, &after_t, &after_id, &(page.limit + 1)],
        )
        .await?;
    let items: Vec<Value> = rows.iter().map(|r| r.get(0)).collect();
    Ok(ok(StatusCode::OK, &paged(items, page.limit, |p| vec![&p["created_at"], &p["id"]])))
}

/// `{"items", "next_cursor"}` from up to limit+1 rows: the extra row only says there is a next page.
pub fn paged(mut items: Vec<Value>, limit: i64, key: impl Fn(&Value) -> Vec<&Value>) -> Value {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = match items.last() {
        Some(last) if more => Value::from(input::cursor(&key(last))),
        _ => Value::Null,
    };
    json!({"items": items, "next_cursor": next})
}

/// `GET /api/projects/{project_id}`.
pub fn get(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String)
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Identity, pool: Pool| async move { respond(get_project(id, who, pool).await) })
}

async fn get_project(id: String, who: Identity, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "project")?;
    let client = pool.get().await?;
    let role = role_in(&**client, id, &who).await?;
    let row = client
        .query_opt("SELECT to_jsonb(p) FROM projects p WHERE id = $1", &[&id])
        .await?
        .ok_or_else(|| ApiError::NotFound("no such project".into()))?;
    Ok(ok(StatusCode::OK, &with_role(row.get(0), &role)))
}

/// `PATCH /api/projects/{project_id}` `{"name"?, "status"?}`: owners only.
pub fn update(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String)
        .and(warp::patch())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|id: String, who: Identity, body: bytes::Bytes, pool: Pool| async move {
            respond(update_project(id, who, body, pool).await)
        })
}

async fn update_project(id: String, who: Identity, body: bytes::Bytes, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "project")?;
    let body = Body::parse(&body, &["name", "status"])?;
    let name = body.text("name", 1, NAME_MAX)?;
    let status = body.choice("status", STATUSES)?;
    if body.is_empty() {
        return Err(ApiError::invalid("body", "nothing to change: send name and/or status"));
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Archiving waits for the board writes already let through (they hold FOR KEY SHARE on the project, see
    // `member_of_active`), and the ones after it see the new status. A rename need not wait for anyone. The
    // project is locked before the caller's membership, in the order membership changes take them: the other
    // order deadlocks with an owner removing this one.
    let lock = if status.is_some() { "FOR UPDATE" } else { "FOR NO KEY UPDATE" };
    let old: Value = tx
        .query_opt(&format!("SELECT to_jsonb(p) FROM projects p WHERE id = $1 {lock}"), &[&id])
        .await?
        .ok_or_else(|| ApiError::NotFound("no such project".into()))?
        .get(0);
    require_owner(&*tx, id, &who).await?;
    let new: Value = tx
        .query_one(
            "UPDATE projects SET name = coalesce($2, name), status = coalesce($3, status) WHERE id = $1
             RETURNING to_jsonb(projects.*)",
            &[&id, &name, &status],
        )
        .await?
        .get(0);
    // An update that changes nothing produces no event, so it has no seq.
    let seq = if new != old { Some(seq_of(&*tx, id).await?) } else { None };
    tx.commit().await?;
    Ok(written(StatusCode::OK, with_role(new, "owner"), seq))
}

/// `DELETE /api/projects/{project_id}`: owners only. Its tasks, comments and memberships go with it, each an
/// event on the feed; members are removed from the room.
pub fn delete(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Identity, pool: Pool| async move { respond(delete_project(id, who, pool).await) })
}

async fn delete_project(id: String, who: Identity, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "project")?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // The project first, then the caller's membership (see `update_project`).
    lock_project(&*tx, id, "FOR UPDATE").await?;
    require_owner(&*tx, id, &who).await?;
    tx.execute("DELETE FROM projects WHERE id = $1", &[&id]).await?;
    let seq = seq_of(&*tx, id).await?;
    tx.commit().await?;
    Ok(written(StatusCode::OK, json!({"id": id, "deleted": true}), Some(seq)))
}

fn with_role(mut project: Value, role: &str) -> Value {
    project["role"] = json!(role);
    project
}

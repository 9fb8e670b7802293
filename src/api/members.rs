//! Project members: list, add by user name, change a role, remove.
//!
//! Members may list; owners add, change roles and remove; any member may remove themselves (leave). A project
//! always keeps at least one owner: removing or demoting the last one is a 409. Removal is just the DELETE of
//! the membership row: the feed sees that event and removes the user from the project's room at once.
//!
//! Writes that change membership first lock the project row and only then check the caller's role, so two
//! owners demoting each other at the same time take turns and cannot leave the project without an owner.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use serde_json::{Value, json};
use tokio_postgres::GenericClient;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::projects::paged;
use super::{authed, lock_project, ok, require_owner, respond, role_in, role_in_locked, seq_of, with_pool, written};
use crate::auth::Identity;
use crate::http::ApiError;
use crate::http::input::{self, Body, Page};

/// How membership changes lock the project row: they serialize with each other (see the module comment), and
/// NO KEY UPDATE does not block writers that only reference the project (new tasks, new members).
const MEMBERSHIP_LOCK: &str = "FOR NO KEY UPDATE";

pub const ROLES: &[&str] = &["owner", "member"];

pub fn routes(pool: Pool) -> BoxedFilter<(Response,)> {
    list(pool.clone()).or(add(pool.clone())).unify().or(update(pool.clone())).unify().or(remove(pool)).unify().boxed()
}

/// A membership as the API shows it: the row plus the user's name.
const MEMBER_JSON: &str = "to_jsonb(m) || jsonb_build_object('user_name', u.name)";

/// `GET /api/projects/{project_id}/members?limit=&cursor=`: in the order they joined.
pub fn list(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "members")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|project: String, who: Identity, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_members(project, who, q, pool).await)
        })
}

async fn list_members(
    project: String,
    who: Identity,
    q: HashMap<String, String>,
    pool: Pool,
) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    input::known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, 2)?;
    let (after_t, after_id) = page.after_time_id()?;
    let client = pool.get().await?;
    role_in(&**client, project, &who).await?;
    let rows = client
        .query(
            &format!(
                "SELECT {MEMBER_JSON} FROM project_members m JOIN users u ON u.id = m.user_id
                  WHERE m.project_id = $1
                    AND ($2::timestamptz IS NULL OR (m.created_at, m.user_id) > ($2::timestamptz, $3::uuid))
                  ORDER BY m.created_at, m.user_id LIMIT $4"
            ),
            &[&project, &after_t, &after_id, &(page.limit + 1)],
        )
        .await?;
    let items: Vec<Value> = rows.iter().map(|r| r.get(0)).collect();
    Ok(ok(StatusCode::OK, &paged(items, page.limit, |m| vec![&m["created_at"], &m["user_id"]])))
}

/// `POST /api/projects/{project_id}/members` `{"user": NAME, "role"?}` → 201. Owners only.
pub fn add(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "members")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|project: String, who: Identity, body: bytes::Bytes, pool: Pool| async move {
            respond(add_member(project, who, body, pool).await)
        })
}

async fn add_member(project: String, who: Identity, body: bytes::Bytes, pool: Pool) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    let body = Body::parse(&body, &["user", "role"])?;
    let name = body.required_text("user", 1, 64)?;
    // The users table's own rule for names.
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(ApiError::invalid("user", "a user name is 1 to 64 letters, digits, '_', '.' or '-'"));
    }
    let role = body.choice("role", ROLES)?.unwrap_or_else(|| "member".into());
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_project(&*tx, project, MEMBERSHIP_LOCK).await?;
    require_owner(&*tx, project, &who).await?;
    let user: Uuid = tx
        .query_opt("SELECT id FROM users WHERE name = $1", &[&name])
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user named {name:?}")))?
        .get(0);
    if let Some(current) = member(&*tx, project, user).await? {
        return Err(ApiError::Conflict { message: format!("{name} is already a member"), current: Some(current) });
    }
    tx.execute(
        "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3)",
        &[&project, &user, &role],
    )
    .await?;
    let seq = seq_of(&*tx, project).await?;
    let row = member(&*tx, project, user).await?.ok_or_else(|| ApiError::Internal("membership vanished".into()))?;
    tx.commit().await?;
    Ok(written(StatusCode::CREATED, row, Some(seq)))
}

/// `PATCH /api/projects/{project_id}/members/{user_id}` `{"role"}`. Owners only.
pub fn update(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "members" / String)
        .and(warp::patch())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|project: String, user: String, who: Identity, body: bytes::Bytes, pool: Pool| async move {
            respond(update_member(project, user, who, body, pool).await)
        })
}

async fn update_member(
    project: String,
    user: String,
    who: Identity,
    body: bytes::Bytes,
    pool: Pool,
) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    let body = Body::parse(&body, &["role"])?;
    let role = body.choice("role", ROLES)?.ok_or_else(|| ApiError::invalid("role", "is required"))?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_project(&*tx, project, MEMBERSHIP_LOCK).await?;
    require_owner(&*tx, project, &who).await?;
    let user = input::id(&user, "member")?;
    let current = member(&*tx, project, user).await?.ok_or_else(|| ApiError::NotFound("no such member".into()))?;
    if current["role"] == "owner" && role != "owner" && owners(&*tx, project).await? <= 1 {
        return Err(ApiError::Conflict {
            message: "this is the project's last owner; make someone else an owner first".into(),
            current: Some(current),
        });
    }
    if current["role"] == json!(role) {
        return Ok(written(StatusCode::OK, current, None));
    }
    tx.execute(
        "UPDATE project_members SET role = $3 WHERE project_id = $1 AND user_id = $2",
        &[&project, &user, &role],
    )
    .await?;
    let seq = seq_of(&*tx, project).await?;
    let row = member(&*tx, project, user).await?.ok_or_else(|| ApiError::Internal("membership vanished".into()))?;
    tx.commit().await?;
    Ok(written(StatusCode::OK, row, Some(seq)))
}

/// `DELETE /api/projects/{project_id}/members/{user_id}`. Owners remove anyone; a member may remove
/// themselves.
pub fn remove(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "members" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|project: String, user: String, who: Identity, pool: Pool| async move {
            respond(remove_member(project, user, who, pool).await)
        })
}

async fn remove_member(project: String, user: String, who: Identity, pool: Pool) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_project(&*tx, project, MEMBERSHIP_LOCK).await?;
    let my_role = role_in_locked(&*tx, project, &who).await?;
    let user = input::id(&user, "member")?;
    if my_role != "owner" && user != who.user_id {
        return Err(ApiError::Forbidden("only an owner may remove other members".into()));
    }
    let current = member(&*tx, project, user).await?.ok_or_else(|| ApiError::NotFound("no such member".into()))?;
    if current["role"] == "owner" && owners(&*tx, project).await? <= 1 {
        return Err(ApiError::Conflict {
            message: "this is the project's last owner; make someone else an owner first, or delete the project".into(),
            current: Some(current),
        });
    }
    tx.execute("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2", &[&project, &user]).await?;
    let seq = seq_of(&*tx, project).await?;
    tx.commit().await?;
    Ok(written(StatusCode::OK, json!({"project_id": project, "user_id": user, "deleted": true}), Some(seq)))
}

async fn member(tx: &impl GenericClient, project: Uuid, user: Uuid) -> Result<Option<Value>, ApiError> {
    let sql = format!(
        "SELECT {MEMBER_JSON} FROM project_members m JOIN users u ON u.id = m.user_id
          WHERE m.project_id = $1 AND m.user_id = $2"
    );
    Ok(tx.query_opt(&sql, &[&project, &user]).await?.map(|r| r.get(0)))
}

async fn owners(tx: &impl GenericClient, project: Uuid) -> Result<i64, ApiError> {
    Ok(tx
        .query_one("SELECT count(*) FROM project_members WHERE project_id = $1 AND role = 'owner'", &[&project])
        .await?
        .get(0))
}

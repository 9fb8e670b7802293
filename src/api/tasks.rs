//! Tasks: create in a project, list a project's board, get, update (including moving a card), delete.
//!
//! A task is returned as its row, the same JSON the feed carries. Any member of the task's project may do
//! everything here. Stale writes are refused: an update (or delete) that names the `version` it was based on
//! gets 409 with the current row if the task has changed since. The version is bumped by a trigger on every
//! change by any writer, so psql edits count too. The row is locked (`FOR UPDATE`) between the check and the
//! write, so a concurrent writer cannot slip in between.
//!
//! Rows are read with `row_to_json`, not `to_jsonb`: jsonb renders a double as a numeric without exponent (a
//! 309-digit integer for the largest one), which serde_json cannot parse back; json keeps PostgreSQL's
//! shortest exact float text. Both give the same JSON values otherwise.

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
use super::{authed, member_of_active, ok, respond, role_in, seq_of, with_pool, written};
use crate::auth::Identity;
use crate::http::ApiError;
use crate::http::input::{self, Body, Page};

pub const TITLE_MAX: usize = 500;
pub const DESCRIPTION_MAX: usize = 200_000; // as the CHECK in sql/migrations/0001_domain.sql

/// The largest body of a task write: a description as long as it may be, however escaped (12 bytes a
/// character, as a surrogate pair), with room for the other fields. Only these routes buffer that much.
pub const MAX_TASK_BODY: u64 = (12 * DESCRIPTION_MAX + 64 * 1024) as u64;
pub const STATUSES: &[&str] = &["todo", "in_progress", "done"];
const FIELDS: &[&str] = &["title", "description", "status", "assignee_id", "position"];

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

/// `POST /api/projects/{project_id}/tasks` → 201. Without `position` the card goes after the last one.
pub fn create(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "tasks")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(MAX_TASK_BODY))
        .and(with_pool(pool))
        .then(|project: String, who: Identity, body: bytes::Bytes, pool: Pool| async move {
            respond(create_task(project, who, body, pool).await)
        })
}

async fn create_task(project: String, who: Identity, body: bytes::Bytes, pool: Pool) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    let body = Body::parse(&body, FIELDS)?;
    let title = body.required_text("title", 1, TITLE_MAX)?;
    let description = body.text("description", 0, DESCRIPTION_MAX)?.unwrap_or_default();
    let status = body.choice("status", STATUSES)?.unwrap_or_else(|| "todo".into());
    let assignee = body.nullable_uuid("assignee_id")?.flatten();
    let position = body.position("position")?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    member_of_active(&*tx, project, &who).await?;
    if let Some(a) = assignee {
        check_assignee(&*tx, project, a).await?;
    }
    let row: Value = tx
        .query_one(
            "INSERT INTO tasks (project_id, title, description, status, assignee_id, position)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING row_to_json(tasks.*)",
            &[&project, &title, &description, &status, &assignee, &position],
        )
        .await?
        .get(0);
    let seq = seq_of(&*tx, project).await?;
    tx.commit().await?;
    Ok(written(StatusCode::CREATED, row, Some(seq)))
}

/// `GET /api/projects/{project_id}/tasks?status=&assignee=&limit=&cursor=`: the board, in card order
/// (position, then creation, then id: a total order, so pages neither skip nor repeat).
/// `assignee` is a user id, or `none` for unassigned tasks.
pub fn list(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "tasks")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|project: String, who: Identity, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_tasks(project, who, q, pool).await)
        })
}

async fn list_tasks(
    project: String,
    who: Identity,
    q: HashMap<String, String>,
    pool: Pool,
) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    input::known_params(&q, &["limit", "cursor", "status", "assignee"])?;
    let page = Page::from_query(&q, 3)?;
    let status = match q.get("status") {
        None => None,
        Some(s) if STATUSES.contains(&s.as_str()) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid("status", format!("must be one of: {}", STATUSES.join(", "))));
        }
    };
    let (by_assignee, assignee): (bool, Option<Uuid>) = match q.get("assignee").map(String::as_str) {
        None => (false, None),
        Some("none") => (true, None),
        Some(a) => (true, Some(a.parse().map_err(|_| ApiError::invalid("assignee", "must be a user id or none"))?)),
    };
    let (after_pos, after_t, after_id) = match &page.after {
        Some(k) => {
            (Some(input::cursor_f64(&k[0])?), Some(input::cursor_time(&k[1])?), Some(input::cursor_uuid(&k[2])?))
        }
        None => (None, None, None),
    };
    let client = pool.get().await?;
    role_in(&**client, project, &who).await?;
    let rows = client
        .query(
            "SELECT row_to_json(t) FROM tasks t
              WHERE project_id = $1
                AND ($2::text IS NULL OR status = $2)
                AND (NOT $3::bool OR assignee_id IS NOT DISTINCT FROM $4::uuid)
                AND ($5::float8 IS NULL
                     OR (position, created_at, id) > ($5::float8, $6::timestamptz, $7::uuid))
              ORDER BY position, created_at, id LIMIT $8",
            &[&project, &status, &by_assignee, &assignee, &after_pos, &after_t, &after_id, &(page.limit + 1)],
        )
        .await?;
    let items: Vec<Value> = rows.iter().map(|r| r.get(0)).collect();
    Ok(ok(StatusCode::OK, &paged(items, page.limit, |t| vec![&t["position"], &t["created_at"], &t["id"]])))
}

/// `GET /api/tasks/{task_id}`.
pub fn get(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String)
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Identity, pool: Pool| async move { respond(get_task(id, who, pool).await) })
}

async fn get_task(id: String, who: Identity, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "task")?;
    let client = pool.get().await?;
    let (row, _) = visible_task(&**client, id, &who, false).await?;
    Ok(ok(StatusCode::OK, &row))
}

/// `PATCH /api/tasks/{task_id}` `{"title"?, "description"?, "status"?, "assignee_id"?, "position"?,
/// "version"?}`. Moving a card is setting its `position` (e.g. halfway between its new neighbours').
pub fn update(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String)
        .and(warp::patch())
        .and(authed(pool.clone()))
        .and(input::body(MAX_TASK_BODY))
        .and(with_pool(pool))
        .then(|id: String, who: Identity, body: bytes::Bytes, pool: Pool| async move {
            respond(update_task(id, who, body, pool).await)
        })
}

async fn update_task(id: String, who: Identity, body: bytes::Bytes, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "task")?;
    let mut allowed = FIELDS.to_vec();
    allowed.push("version");
    let body = Body::parse(&body, &allowed)?;
    let title = body.text("title", 1, TITLE_MAX)?;
    let description = body.text("description", 0, DESCRIPTION_MAX)?;
    let status = body.choice("status", STATUSES)?;
    let assignee = body.nullable_uuid("assignee_id")?;
    let position = body.position("position")?;
    let version = body.version("version")?;
    if !FIELDS.iter().any(|f| body.has(f)) {
        return Err(ApiError::invalid("body", format!("nothing to change: send one of {}", FIELDS.join(", "))));
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (old, project) = visible_task(&*tx, id, &who, true).await?;
    check_version(&old, version)?;
    if let Some(Some(a)) = assignee {
        check_assignee(&*tx, project, a).await?;
    }
    let new: Value = tx
        .query_one(
            "UPDATE tasks SET title = coalesce($2, title), description = coalesce($3, description),
                    status = coalesce($4, status),
                    assignee_id = CASE WHEN $5::bool THEN $6::uuid ELSE assignee_id END,
                    position = coalesce($7, position)
              WHERE id = $1 RETURNING row_to_json(tasks.*)",
            &[&id, &title, &description, &status, &assignee.is_some(), &assignee.flatten(), &position],
        )
        .await?
        .get(0);
    let seq = if new != old { Some(seq_of(&*tx, project).await?) } else { None };
    tx.commit().await?;
    Ok(written(StatusCode::OK, new, seq))
}

/// `DELETE /api/tasks/{task_id}?version=`: with `version`, only if the task is still at that version.
pub fn delete(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|id: String, who: Identity, q: HashMap<String, String>, pool: Pool| async move {
            respond(delete_task(id, who, q, pool).await)
        })
}

async fn delete_task(id: String, who: Identity, q: HashMap<String, String>, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "task")?;
    input::known_params(&q, &["version"])?;
    let version = match q.get("version") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(v) if v >= 1 => Some(v),
            _ => {
                return Err(ApiError::invalid("version", "must be an integer of at least 1"));
            }
        },
    };
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (old, project) = visible_task(&*tx, id, &who, true).await?;
    check_version(&old, version)?;
    tx.execute("DELETE FROM tasks WHERE id = $1", &[&id]).await?;
    let seq = seq_of(&*tx, project).await?;
    tx.commit().await?;
    Ok(written(StatusCode::OK, json!({"id": id, "project_id": project, "deleted": true}), Some(seq)))
}

/// A task whose project the caller is a member of, with its project; 404 otherwise. `lock` takes the row lock
/// a write needs, so the version checked is the version overwritten.
pub async fn visible_task(
    db: &impl GenericClient,
    id: Uuid,
    who: &Identity,
    lock: bool,
) -> Result<(Value, Uuid), ApiError> {
    super::visible_row(db, "tasks", "row_to_json", id, who, lock).await
}

fn check_version(current: &Value, expected: Option<i64>) -> Result<(), ApiError> {
    match expected {
        Some(v) if current["version"].as_i64() != Some(v) => Err(ApiError::Conflict {
            message: format!(
                "the task has changed since version {v}: it is at version {}; merge with `current` and retry",
                current["version"]
            ),
            current: Some(current.clone()),
        }),
        _ => Ok(()),
    }
}

/// Tasks are assigned to members of their project only.
async fn check_assignee(db: &impl GenericClient, project: Uuid, user: Uuid) -> Result<(), ApiError> {
    let found = db
        .query_opt(
            "SELECT 1 FROM project_members WHERE project_id = $1 AND user_id = $2 FOR KEY SHARE",
            &[&project, &user],
        )
        .await?;
    // A 409, not a 422: the value is well-formed, and whether it is allowed depends on the project's current
    // members (like a foreign key), which can change between two identical requests.
    found.map(|_| ()).ok_or_else(|| ApiError::Conflict {
        message: format!("assignee_id: {user} is not a member of this project"),
        current: None,
    })
}

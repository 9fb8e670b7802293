//! Tasks: create in a project, list a project's board, get, update (including moving a card), delete.
//!
//! A task is returned as its row, the same JSON the feed carries. Any member of the task's project may do
//! everything here. Stale writes are refused: an update (or delete) that names the `version` it was based on
//! gets 409 with the current row if the task has changed since. The version is bumped by a trigger on every
//! change by any writer, so psql edits count too. The row is locked (`FOR UPDATE`) between the check and the
//! write, so a concurrent writer cannot slip in between.

use std::collections::HashMap;

use bytes::Bytes;
use deadpool_postgres::Pool;
use serde_json::json;
use tokio_postgres::GenericClient;
use uuid::Uuid;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::access::{self, member_of_active, role_in};
use super::page::Page;
use super::records::{Deleted, Task, from_json, to_value};
use super::route::{Route, with_pool};
use super::values::{Description, Position, TaskStatus, Title, Version};
use super::write::{Change, write};
use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::auth::authed;
use crate::http::input::{self, Fields, Request};
use crate::http::reply::{ok, respond};

/// The largest body of a task write: a description as long as it may be, however escaped (12 bytes a
/// character, as a surrogate pair), with room for the other fields. Only these routes buffer that much.
pub const MAX_TASK_BODY: u64 = (12 * Description::MAX + 64 * 1024) as u64;

pub const ROUTES: &[Route] = &[
    Route { path: "/api/projects/{project_id}/tasks", methods: &["GET", "POST"] },
    Route { path: "/api/tasks/{task_id}", methods: &["GET", "PATCH", "DELETE"] },
];

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

/// The body of `POST /api/projects/{project_id}/tasks`.
struct NewTask {
    title: Title,
    description: Description,
    status: TaskStatus,
    assignee_id: Option<Uuid>,
    position: Option<Position>,
}

impl Request for NewTask {
    const FIELDS: &'static [&'static str] = &["title", "description", "status", "assignee_id", "position"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        Ok(NewTask {
            title: f.required("title")?,
            description: f.get("description")?.unwrap_or_default(),
            status: f.get("status")?.unwrap_or(TaskStatus::Todo),
            assignee_id: f.get("assignee_id")?.flatten(),
            position: f.get("position")?,
        })
    }
}

/// `POST /api/projects/{project_id}/tasks` → 201. Without `position` the card goes after the last one.
fn create(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "tasks")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(MAX_TASK_BODY))
        .and(with_pool(pool))
        .then(|project: String, who: Caller, body: Bytes, pool: Pool| async move {
            respond(create_task(project, who, body, pool).await)
        })
}

async fn create_task(project: String, who: Caller, body: Bytes, pool: Pool) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    let new: NewTask = input::parse(&body)?;
    write(&pool, &who, StatusCode::CREATED, async |tx| {
        member_of_active(tx, project, &who).await?;
        if let Some(a) = new.assignee_id {
            check_assignee(tx, project, a).await?;
        }
        let row = tx
            .query_one(
                "INSERT INTO tasks (project_id, title, description, status, assignee_id, position)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING row_to_json(tasks.*)",
                &[&project, &new.title, &new.description, &new.status, &new.assignee_id, &new.position.map(|p| p.0)],
            )
            .await?;
        Ok(Change::of(project, from_json::<Task>(&row, 0)?))
    })
    .await
}

/// `GET /api/projects/{project_id}/tasks?status=&assignee=&limit=&cursor=`: the board, in card order
/// (position, then creation, then id: a total order, so pages neither skip nor repeat).
/// `assignee` is a user id, or `none` for unassigned tasks.
fn list(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "tasks")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|project: String, who: Caller, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_tasks(project, who, q, pool).await)
        })
}

async fn list_tasks(
    project: String,
    who: Caller,
    q: HashMap<String, String>,
    pool: Pool,
) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    input::known_params(&q, &["limit", "cursor", "status", "assignee"])?;
    let page = Page::from_query(&q, 3)?;
    let status = match q.get("status") {
        None => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| ApiError::invalid("status", TaskStatus::expected()))?),
    };
    let (by_assignee, assignee): (bool, Option<Uuid>) = match q.get("assignee").map(String::as_str) {
        None => (false, None),
        Some("none") => (true, None),
        Some(a) => (true, Some(a.parse().map_err(|_| ApiError::invalid("assignee", "must be a user id or none"))?)),
    };
    let (after_pos, after_t, after_id) = page.after_card()?;
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
            &[&project, &status, &by_assignee, &assignee, &after_pos, &after_t, &after_id, &page.rows()],
        )
        .await?;
    let tasks = rows.iter().map(|r| from_json::<Task>(r, 0)).collect::<Result<Vec<_>, _>>()?;
    Ok(page.reply(tasks, |t| vec![json!(t.position), json!(t.created_at), json!(t.id)]))
}

/// `GET /api/tasks/{task_id}`.
fn get(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String)
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Caller, pool: Pool| async move { respond(get_task(id, who, pool).await) })
}

async fn get_task(id: String, who: Caller, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "task")?;
    let client = pool.get().await?;
    let task: Task = access::visible(&**client, id, &who).await?;
    Ok(ok(StatusCode::OK, &task))
}

/// The body of `PATCH /api/tasks/{task_id}`: the fields to change, and the version the change is based on.
/// `assignee_id` is absent (keep), null (unassign) or a user id.
struct TaskChange {
    title: Option<Title>,
    description: Option<Description>,
    status: Option<TaskStatus>,
    assignee_id: Option<Option<Uuid>>,
    position: Option<Position>,
    version: Option<Version>,
}

impl Request for TaskChange {
    const FIELDS: &'static [&'static str] = &["title", "description", "status", "assignee_id", "position", "version"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        let change = TaskChange {
            title: f.get("title")?,
            description: f.get("description")?,
            status: f.get("status")?,
            assignee_id: f.get("assignee_id")?,
            position: f.get("position")?,
            version: f.get("version")?,
        };
        let changeable = NewTask::FIELDS;
        if !changeable.iter().any(|k| f.has(k)) {
            return Err(ApiError::invalid("body", format!("nothing to change: send one of {}", changeable.join(", "))));
        }
        Ok(change)
    }
}

/// `PATCH /api/tasks/{task_id}` `{"title"?, "description"?, "status"?, "assignee_id"?, "position"?,
/// "version"?}`. Moving a card is setting its `position` (e.g. halfway between its new neighbours').
fn update(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String)
        .and(warp::patch())
        .and(authed(pool.clone()))
        .and(input::body(MAX_TASK_BODY))
        .and(with_pool(pool))
        .then(|id: String, who: Caller, body: Bytes, pool: Pool| async move {
            respond(update_task(id, who, body, pool).await)
        })
}

async fn update_task(id: String, who: Caller, body: Bytes, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "task")?;
    let change: TaskChange = input::parse(&body)?;
    write(&pool, &who, StatusCode::OK, async |tx| {
        let old: Task = access::visible_for_write(tx, id, &who).await?;
        check_version(&old, change.version)?;
        if let Some(Some(a)) = change.assignee_id {
            check_assignee(tx, old.project_id, a).await?;
        }
        let row = tx
            .query_one(
                "UPDATE tasks SET title = coalesce($2, title), description = coalesce($3, description),
                        status = coalesce($4, status),
                        assignee_id = CASE WHEN $5::bool THEN $6::uuid ELSE assignee_id END,
                        position = coalesce($7, position)
                  WHERE id = $1 RETURNING row_to_json(tasks.*)",
                &[
                    &id,
                    &change.title,
                    &change.description,
                    &change.status,
                    &change.assignee_id.is_some(),
                    &change.assignee_id.flatten(),
                    &change.position.map(|p| p.0),
                ],
            )
            .await?;
        Ok(Change::from_to(old.project_id, &old, from_json(&row, 0)?))
    })
    .await
}

/// `DELETE /api/tasks/{task_id}?version=`: with `version`, only if the task is still at that version.
fn delete(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|id: String, who: Caller, q: HashMap<String, String>, pool: Pool| async move {
            respond(delete_task(id, who, q, pool).await)
        })
}

async fn delete_task(id: String, who: Caller, q: HashMap<String, String>, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "task")?;
    input::known_params(&q, &["version"])?;
    let version = q.get("version").map(|v| Version::from_query(v).map_err(|m| ApiError::invalid("version", m)));
    let version = version.transpose()?;
    write(&pool, &who, StatusCode::OK, async |tx| {
        let old: Task = access::visible_for_write(tx, id, &who).await?;
        check_version(&old, version)?;
        tx.execute("DELETE FROM tasks WHERE id = $1", &[&id]).await?;
        let project = old.project_id;
        Ok(Change::of(
            project,
            Deleted { id: Some(id), project_id: Some(project), deleted: true, ..Deleted::default() },
        ))
    })
    .await
}

fn check_version(current: &Task, expected: Option<Version>) -> Result<(), ApiError> {
    match expected {
        Some(Version(v)) if current.version != v => Err(ApiError::Conflict {
            message: format!(
                "the task has changed since version {v}: it is at version {}; merge with `current` and retry",
                current.version
            ),
            current: Some(to_value(current)),
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

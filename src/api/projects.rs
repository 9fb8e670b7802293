//! Projects: create (the creator becomes its owner), list the caller's, get, rename or archive, delete.
//!
//! A project is returned as its row (the same JSON the feed carries, `to_jsonb` of the row) plus the caller's
//! `role`. Renaming, changing the status and deleting are for owners.

use std::collections::HashMap;

use bytes::Bytes;
use deadpool_postgres::Pool;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::access::{lock_project, require_owner, role_in};
use super::page::Page;
use super::records::{Deleted, Project, ProjectOf, from_json};
use super::route::{Route, with_pool};
use super::values::{ProjectName, ProjectStatus, Role};
use super::write::{Change, write};
use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::auth::authed;
use crate::http::input::{self, Fields, Request};
use crate::http::reply::{ok, respond};

pub const ROUTES: &[Route] = &[
    Route { path: "/api/projects", methods: &["GET", "POST"] },
    Route { path: "/api/projects/{project_id}", methods: &["GET", "PATCH", "DELETE"] },
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

/// The body of `POST /api/projects`.
struct NewProject {
    name: ProjectName,
    status: ProjectStatus,
}

impl Request for NewProject {
    const FIELDS: &'static [&'static str] = &["name", "status"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        Ok(NewProject { name: f.required("name")?, status: f.get("status")?.unwrap_or(ProjectStatus::Active) })
    }
}

/// `POST /api/projects` `{"name", "status"?}` → 201.
fn create(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|who: Caller, body: Bytes, pool: Pool| async move { respond(create_project(who, body, pool).await) })
}

async fn create_project(who: Caller, body: Bytes, pool: Pool) -> Result<Response, ApiError> {
    let new: NewProject = input::parse(&body)?;
    write(&pool, &who, StatusCode::CREATED, async |tx| {
        let row = tx
            .query_one(
                "INSERT INTO projects (name, status) VALUES ($1, $2) RETURNING to_jsonb(projects.*)",
                &[&new.name, &new.status],
            )
            .await?;
        let project: Project = from_json(&row, 0)?;
        tx.execute(
            "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'owner')",
            &[&project.id, &who.user_id],
        )
        .await?;
        Ok(Change::of(project.id, ProjectOf { project, role: Role::Owner }))
    })
    .await
}

/// `GET /api/projects?limit=&cursor=`: the caller's projects, oldest first.
fn list(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|who: Caller, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_projects(who, q, pool).await)
        })
}

async fn list_projects(who: Caller, q: HashMap<String, String>, pool: Pool) -> Result<Response, ApiError> {
    input::known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, 2)?;
    let (after_t, after_id) = page.after_time_id()?;
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT to_jsonb(p), m.role
               FROM projects p JOIN project_members m ON m.project_id = p.id AND m.user_id = $1
              WHERE $2::timestamptz IS NULL OR (p.created_at, p.id) > ($2::timestamptz, $3::uuid)
              ORDER BY p.created_at, p.id LIMIT $4",
            &[&who.user_id, &after_t, &after_id, &page.rows()],
        )
        .await?;
    let projects = rows
        .iter()
        .map(|r| Ok(ProjectOf { project: from_json(r, 0)?, role: r.try_get(1)? }))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(page.reply(projects, |p| vec![json!(p.project.created_at), json!(p.project.id)]))
}

/// `GET /api/projects/{project_id}`.
fn get(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String)
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Caller, pool: Pool| async move { respond(get_project(id, who, pool).await) })
}

async fn get_project(id: String, who: Caller, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "project")?;
    let client = pool.get().await?;
    let role = role_in(&**client, id, &who).await?;
    let row = client
        .query_opt("SELECT to_jsonb(p) FROM projects p WHERE id = $1", &[&id])
        .await?
        .ok_or_else(|| ApiError::NotFound("no such project".into()))?;
    Ok(ok(StatusCode::OK, &ProjectOf { project: from_json(&row, 0)?, role }))
}

/// The body of `PATCH /api/projects/{project_id}`: at least one of the two.
struct ProjectChange {
    name: Option<ProjectName>,
    status: Option<ProjectStatus>,
}

impl Request for ProjectChange {
    const FIELDS: &'static [&'static str] = &["name", "status"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        let change = ProjectChange { name: f.get("name")?, status: f.get("status")? };
        if f.is_empty() {
            return Err(ApiError::invalid("body", "nothing to change: send name and/or status"));
        }
        Ok(change)
    }
}

/// `PATCH /api/projects/{project_id}` `{"name"?, "status"?}`: owners only.
fn update(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String)
        .and(warp::patch())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|id: String, who: Caller, body: Bytes, pool: Pool| async move {
            respond(update_project(id, who, body, pool).await)
        })
}

async fn update_project(id: String, who: Caller, body: Bytes, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "project")?;
    let change: ProjectChange = input::parse(&body)?;
    write(&pool, &who, StatusCode::OK, async |tx| {
        // Archiving waits for the board writes already let through (they hold FOR KEY SHARE on the project, see
        // `member_of_active`), and the ones after it see the new status. A rename need not wait for anyone. The
        // project is locked before the caller's membership, in the order membership changes take them: the
        // other order deadlocks with an owner removing this one.
        let lock = if change.status.is_some() { "FOR UPDATE" } else { "FOR NO KEY UPDATE" };
        let old = tx
            .query_opt(&format!("SELECT to_jsonb(p) FROM projects p WHERE id = $1 {lock}"), &[&id])
            .await?
            .ok_or_else(|| ApiError::NotFound("no such project".into()))?;
        let old: Project = from_json(&old, 0)?;
        require_owner(tx, id, &who).await?;
        let new = tx
            .query_one(
                "UPDATE projects SET name = coalesce($2, name), status = coalesce($3, status) WHERE id = $1
                 RETURNING to_jsonb(projects.*)",
                &[&id, &change.name, &change.status],
            )
            .await?;
        let change = Change::from_to(id, &old, from_json(&new, 0)?);
        Ok(change.map(|project| ProjectOf { project, role: Role::Owner }))
    })
    .await
}

/// `DELETE /api/projects/{project_id}`: owners only. Its tasks, comments and memberships go with it, each an
/// event on the feed; members are removed from the room.
fn delete(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Caller, pool: Pool| async move { respond(delete_project(id, who, pool).await) })
}

async fn delete_project(id: String, who: Caller, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "project")?;
    write(&pool, &who, StatusCode::OK, async |tx| {
        // The project first, then the caller's membership (see `update_project`).
        lock_project(tx, id, "FOR UPDATE").await?;
        require_owner(tx, id, &who).await?;
        tx.execute("DELETE FROM projects WHERE id = $1", &[&id]).await?;
        Ok(Change::of(id, Deleted { id: Some(id), deleted: true, ..Deleted::default() }))
    })
    .await
}

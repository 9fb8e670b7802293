//! Project members: list, add by user name, change a role, remove.
//!
//! Members may list; owners add, change roles and remove; any member may remove themselves (leave). A project
//! always keeps at least one owner: removing or demoting the last one is a 409. Removal is just the DELETE of
//! the membership row: the feed sees that event and removes the user from the project's room at once.
//!
//! Writes that change membership first lock the project row and only then check the caller's role, so two
//! owners demoting each other at the same time take turns and cannot leave the project without an owner.

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

use super::access::{lock_project, require_owner, role_in, role_in_locked};
use super::page::Page;
use super::records::{Deleted, Member, from_json, to_value};
use super::route::{Route, with_pool};
use super::values::{Role, UserName};
use super::write::{Change, write};
use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::auth::authed;
use crate::http::input::{self, Fields, Request};
use crate::http::reply::respond;

/// How membership changes lock the project row: they serialize with each other (see the module comment), and
/// NO KEY UPDATE does not block writers that only reference the project (new tasks, new members).
const MEMBERSHIP_LOCK: &str = "FOR NO KEY UPDATE";

pub const ROUTES: &[Route] = &[
    Route { path: "/api/projects/{project_id}/members", methods: &["GET", "POST"] },
    Route { path: "/api/projects/{project_id}/members/{user_id}", methods: &["PATCH", "DELETE"] },
];

pub fn routes(pool: Pool) -> BoxedFilter<(Response,)> {
    list(pool.clone()).or(add(pool.clone())).unify().or(update(pool.clone())).unify().or(remove(pool)).unify().boxed()
}

/// A membership as the API shows it: the row plus the user's name.
const MEMBER_JSON: &str = "to_jsonb(m) || jsonb_build_object('user_name', u.name)";

/// `GET /api/projects/{project_id}/members?limit=&cursor=`: in the order they joined.
fn list(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "members")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|project: String, who: Caller, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_members(project, who, q, pool).await)
        })
}

async fn list_members(
    project: String,
    who: Caller,
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
            &[&project, &after_t, &after_id, &page.rows()],
        )
        .await?;
    let members = rows.iter().map(|r| from_json::<Member>(r, 0)).collect::<Result<Vec<_>, _>>()?;
    Ok(page.reply(members, |m| vec![json!(m.created_at), json!(m.user_id)]))
}

/// The body of `POST /api/projects/{project_id}/members`.
struct NewMember {
    user: UserName,
    role: Role,
}

impl Request for NewMember {
    const FIELDS: &'static [&'static str] = &["user", "role"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        Ok(NewMember { user: f.required("user")?, role: f.get("role")?.unwrap_or(Role::Member) })
    }
}

/// `POST /api/projects/{project_id}/members` `{"user": NAME, "role"?}` → 201. Owners only.
fn add(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "members")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|project: String, who: Caller, body: Bytes, pool: Pool| async move {
            respond(add_member(project, who, body, pool).await)
        })
}

async fn add_member(project: String, who: Caller, body: Bytes, pool: Pool) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    let new: NewMember = input::parse(&body)?;
    let name = new.user.as_str();
    write(&pool, &who, StatusCode::CREATED, async |tx| {
        lock_project(tx, project, MEMBERSHIP_LOCK).await?;
        require_owner(tx, project, &who).await?;
        let user: Uuid = tx
            .query_opt("SELECT id FROM users WHERE name = $1", &[&name])
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no user named {name:?}")))?
            .get(0);
        if let Some(current) = member(tx, project, user).await? {
            let message = format!("{name} is already a member");
            return Err(ApiError::Conflict { message, current: Some(to_value(&current)) });
        }
        tx.execute(
            "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3)",
            &[&project, &user, &new.role],
        )
        .await?;
        Ok(Change::of(project, added(tx, project, user).await?))
    })
    .await
}

/// The body of `PATCH /api/projects/{project_id}/members/{user_id}`.
struct MemberChange {
    role: Role,
}

impl Request for MemberChange {
    const FIELDS: &'static [&'static str] = &["role"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        Ok(MemberChange { role: f.required("role")? })
    }
}

/// `PATCH /api/projects/{project_id}/members/{user_id}` `{"role"}`. Owners only.
fn update(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "members" / String)
        .and(warp::patch())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|project: String, user: String, who: Caller, body: Bytes, pool: Pool| async move {
            respond(update_member(project, user, who, body, pool).await)
        })
}

async fn update_member(
    project: String,
    user: String,
    who: Caller,
    body: Bytes,
    pool: Pool,
) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    let MemberChange { role } = input::parse(&body)?;
    write(&pool, &who, StatusCode::OK, async |tx| {
        lock_project(tx, project, MEMBERSHIP_LOCK).await?;
        require_owner(tx, project, &who).await?;
        let user = input::id(&user, "member")?;
        let current = member(tx, project, user).await?.ok_or_else(|| ApiError::NotFound("no such member".into()))?;
        if current.role == Role::Owner && role != Role::Owner && owners(tx, project).await? <= 1 {
            return Err(ApiError::Conflict {
                message: "this is the project's last owner; make someone else an owner first".into(),
                current: Some(to_value(&current)),
            });
        }
        if current.role == role {
            return Ok(Change::none(current));
        }
        tx.execute(
            "UPDATE project_members SET role = $3 WHERE project_id = $1 AND user_id = $2",
            &[&project, &user, &role],
        )
        .await?;
        Ok(Change::of(project, added(tx, project, user).await?))
    })
    .await
}

/// `DELETE /api/projects/{project_id}/members/{user_id}`. Owners remove anyone; a member may remove
/// themselves.
fn remove(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "projects" / String / "members" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|project: String, user: String, who: Caller, pool: Pool| async move {
            respond(remove_member(project, user, who, pool).await)
        })
}

async fn remove_member(project: String, user: String, who: Caller, pool: Pool) -> Result<Response, ApiError> {
    let project = input::id(&project, "project")?;
    write(&pool, &who, StatusCode::OK, async |tx| {
        lock_project(tx, project, MEMBERSHIP_LOCK).await?;
        let my_role = role_in_locked(tx, project, &who).await?;
        let user = input::id(&user, "member")?;
        if my_role != Role::Owner && user != who.user_id {
            return Err(ApiError::Forbidden("only an owner may remove other members".into()));
        }
        let current = member(tx, project, user).await?.ok_or_else(|| ApiError::NotFound("no such member".into()))?;
        if current.role == Role::Owner && owners(tx, project).await? <= 1 {
            return Err(ApiError::Conflict {
                message: "this is the project's last owner; make someone else an owner first, or delete the project"
                    .into(),
                current: Some(to_value(&current)),
            });
        }
        tx.execute("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2", &[&project, &user]).await?;
        let deleted = Deleted { project_id: Some(project), user_id: Some(user), deleted: true, ..Deleted::default() };
        Ok(Change::of(project, deleted))
    })
    .await
}

async fn member(tx: &impl GenericClient, project: Uuid, user: Uuid) -> Result<Option<Member>, ApiError> {
    let sql = format!(
        "SELECT {MEMBER_JSON} FROM project_members m JOIN users u ON u.id = m.user_id
          WHERE m.project_id = $1 AND m.user_id = $2"
    );
    tx.query_opt(&sql, &[&project, &user]).await?.map(|r| from_json(&r, 0)).transpose()
}

/// The membership a write just made.
async fn added(tx: &impl GenericClient, project: Uuid, user: Uuid) -> Result<Member, ApiError> {
    member(tx, project, user).await?.ok_or_else(|| ApiError::Internal("membership vanished".into()))
}

async fn owners(tx: &impl GenericClient, project: Uuid) -> Result<i64, ApiError> {
    Ok(tx
        .query_one("SELECT count(*) FROM project_members WHERE project_id = $1 AND role = 'owner'", &[&project])
        .await?
        .get(0))
}

//! Comments on tasks: add, list (oldest first, paginated), get, edit and delete.
//!
//! Any member of the task's project may add and read comments; only a comment's author may edit or delete
//! it (403 for other members, 404 for everyone else). An edit may name the `version` it was based on, like a
//! task update, and gets 409 with the current comment if it is stale.

use std::collections::HashMap;

use bytes::Bytes;
use deadpool_postgres::Pool;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::access::{self, member_of_active};
use super::page::Page;
use super::records::{Comment, Deleted, Task, from_json, to_value};
use super::route::{Route, with_pool};
use super::values::{CommentBody, Version};
use super::write::{Change, write};
use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::auth::authed;
use crate::http::input::{self, Fields, Request};
use crate::http::reply::{ok, respond};

pub const ROUTES: &[Route] = &[
    Route { path: "/api/tasks/{task_id}/comments", methods: &["GET", "POST"] },
    Route { path: "/api/comments/{comment_id}", methods: &["GET", "PATCH", "DELETE"] },
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

/// The body of `POST /api/tasks/{task_id}/comments`.
struct NewComment {
    body: CommentBody,
}

impl Request for NewComment {
    const FIELDS: &'static [&'static str] = &["body"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        Ok(NewComment { body: f.required("body")? })
    }
}

/// `POST /api/tasks/{task_id}/comments` `{"body"}` → 201.
fn create(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String / "comments")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|task: String, who: Caller, body: Bytes, pool: Pool| async move {
            respond(add_comment(task, who, body, pool).await)
        })
}

async fn add_comment(task: String, who: Caller, body: Bytes, pool: Pool) -> Result<Response, ApiError> {
    let task = input::id(&task, "task")?;
    let new: NewComment = input::parse(&body)?;
    write(&pool, &who, StatusCode::CREATED, async |tx| {
        // The insert's foreign key check locks the task (key share): it cannot be deleted under the new comment.
        let project = access::visible::<Task>(tx, task, &who).await?.project_id;
        member_of_active(tx, project, &who).await?; // a concurrent removal waits for this comment
        let row = tx
            .query_one(
                "INSERT INTO comments (task_id, project_id, author_id, body) VALUES ($1, $2, $3, $4)
                 RETURNING to_jsonb(comments.*)",
                &[&task, &project, &who.user_id, &new.body],
            )
            .await?;
        Ok(Change::of(project, from_json::<Comment>(&row, 0)?))
    })
    .await
}

/// `GET /api/tasks/{task_id}/comments?limit=&cursor=`: oldest first.
fn list(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String / "comments")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|task: String, who: Caller, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_comments(task, who, q, pool).await)
        })
}

async fn list_comments(
    task: String,
    who: Caller,
    q: HashMap<String, String>,
    pool: Pool,
) -> Result<Response, ApiError> {
    let task = input::id(&task, "task")?;
    input::known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, 2)?;
    let (after_t, after_id) = page.after_time_id()?;
    let client = pool.get().await?;
    access::visible::<Task>(&**client, task, &who).await?;
    let rows = client
        .query(
            "SELECT to_jsonb(c) FROM comments c
              WHERE task_id = $1
                AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
              ORDER BY created_at, id LIMIT $4",
            &[&task, &after_t, &after_id, &page.rows()],
        )
        .await?;
    let comments = rows.iter().map(|r| from_json::<Comment>(r, 0)).collect::<Result<Vec<_>, _>>()?;
    Ok(page.reply(comments, |c| vec![json!(c.created_at), json!(c.id)]))
}

/// `GET /api/comments/{comment_id}`.
fn get(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "comments" / String)
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Caller, pool: Pool| async move { respond(get_comment(id, who, pool).await) })
}

async fn get_comment(id: String, who: Caller, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "comment")?;
    let client = pool.get().await?;
    let comment: Comment = access::visible(&**client, id, &who).await?;
    Ok(ok(StatusCode::OK, &comment))
}

/// The body of `PATCH /api/comments/{comment_id}`.
struct CommentChange {
    body: CommentBody,
    version: Option<Version>,
}

impl Request for CommentChange {
    const FIELDS: &'static [&'static str] = &["body", "version"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        Ok(CommentChange { body: f.required("body")?, version: f.get("version")? })
    }
}

/// `PATCH /api/comments/{comment_id}` `{"body", "version"?}`: the author only.
fn update(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "comments" / String)
        .and(warp::patch())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|id: String, who: Caller, body: Bytes, pool: Pool| async move {
            respond(edit_comment(id, who, body, pool).await)
        })
}

async fn edit_comment(id: String, who: Caller, body: Bytes, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "comment")?;
    let change: CommentChange = input::parse(&body)?;
    write(&pool, &who, StatusCode::OK, async |tx| {
        let old: Comment = access::visible_for_write(tx, id, &who).await?;
        require_author(&old, &who)?;
        if let Some(Version(v)) = change.version
            && old.version != v
        {
            return Err(ApiError::Conflict {
                message: format!("the comment has changed since version {v}"),
                current: Some(to_value(&old)),
            });
        }
        let row = tx
            .query_one(
                "UPDATE comments SET body = $2 WHERE id = $1 RETURNING to_jsonb(comments.*)",
                &[&id, &change.body],
            )
            .await?;
        Ok(Change::from_to(old.project_id, &old, from_json(&row, 0)?))
    })
    .await
}

/// `DELETE /api/comments/{comment_id}`: the author only.
fn delete(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "comments" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Caller, pool: Pool| async move { respond(delete_comment(id, who, pool).await) })
}

async fn delete_comment(id: String, who: Caller, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "comment")?;
    write(&pool, &who, StatusCode::OK, async |tx| {
        let old: Comment = access::visible_for_write(tx, id, &who).await?;
        require_author(&old, &who)?;
        tx.execute("DELETE FROM comments WHERE id = $1", &[&id]).await?;
        let (task_id, project_id) = (Some(old.task_id), Some(old.project_id));
        Ok(Change::of(old.project_id, Deleted { id: Some(id), task_id, project_id, deleted: true, user_id: None }))
    })
    .await
}

fn require_author(comment: &Comment, who: &Caller) -> Result<(), ApiError> {
    if comment.author_id == Some(who.user_id) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only the author of a comment may change or delete it".into()))
    }
}

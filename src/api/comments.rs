//! Comments on tasks: add, list (oldest first, paginated), get, edit and delete.
//!
//! Any member of the task's project may add and read comments; only a comment's author may edit or delete
//! it (403 for other members, 404 for everyone else). An edit may name the `version` it was based on, like a
//! task update, and gets 409 with the current comment if it is stale.

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
use super::tasks::visible_task;
use super::{authed, ok, respond, seq_of, with_pool, written};
use crate::auth::Identity;
use crate::http::ApiError;
use crate::http::input::{self, Body, Page};

pub const BODY_MAX: usize = 20_000;

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

/// `POST /api/tasks/{task_id}/comments` `{"body"}` → 201.
pub fn create(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String / "comments")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|task: String, who: Identity, body: bytes::Bytes, pool: Pool| async move {
            respond(add_comment(task, who, body, pool).await)
        })
}

async fn add_comment(task: String, who: Identity, body: bytes::Bytes, pool: Pool) -> Result<Response, ApiError> {
    let task = input::id(&task, "task")?;
    let body = Body::parse(&body, &["body"])?;
    let text = body.required_text("body", 1, BODY_MAX)?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // The insert's foreign key check locks the task (key share): it cannot be deleted under the new comment.
    let (_, project) = visible_task(&*tx, task, &who, false).await?;
    super::member_of_active(&*tx, project, &who).await?; // a concurrent removal waits for this comment
    let row: Value = tx
        .query_one(
            "INSERT INTO comments (task_id, project_id, author_id, body) VALUES ($1, $2, $3, $4)
             RETURNING to_jsonb(comments.*)",
            &[&task, &project, &who.user_id, &text],
        )
        .await?
        .get(0);
    let seq = seq_of(&*tx, project).await?;
    tx.commit().await?;
    Ok(written(StatusCode::CREATED, row, Some(seq)))
}

/// `GET /api/tasks/{task_id}/comments?limit=&cursor=`: oldest first.
pub fn list(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tasks" / String / "comments")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|task: String, who: Identity, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_comments(task, who, q, pool).await)
        })
}

async fn list_comments(
    task: String,
    who: Identity,
    q: HashMap<String, String>,
    pool: Pool,
) -> Result<Response, ApiError> {
    let task = input::id(&task, "task")?;
    input::known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, 2)?;
    let (after_t, after_id) = page.after_time_id()?;
    let client = pool.get().await?;
    visible_task(&**client, task, &who, false).await?;
    let rows = client
        .query(
            "SELECT to_jsonb(c) FROM comments c
              WHERE task_id = $1
                AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
              ORDER BY created_at, id LIMIT $4",
            &[&task, &after_t, &after_id, &(page.limit + 1)],
        )
        .await?;
    let items: Vec<Value> = rows.iter().map(|r| r.get(0)).collect();
    Ok(ok(StatusCode::OK, &paged(items, page.limit, |c| vec![&c["created_at"], &c["id"]])))
}

/// `GET /api/comments/{comment_id}`.
pub fn get(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "comments" / String)
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Identity, pool: Pool| async move { respond(get_comment(id, who, pool).await) })
}

async fn get_comment(id: String, who: Identity, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "comment")?;
    let client = pool.get().await?;
    let (row, _) = visible_comment(&**client, id, &who, false).await?;
    Ok(ok(StatusCode::OK, &row))
}

/// `PATCH /api/comments/{comment_id}` `{"body", "version"?}`: the author only.
pub fn update(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "comments" / String)
        .and(warp::patch())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|id: String, who: Identity, body: bytes::Bytes, pool: Pool| async move {
            respond(edit_comment(id, who, body, pool).await)
        })
}

async fn edit_comment(id: String, who: Identity, body: bytes::Bytes, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "comment")?;
    let body = Body::parse(&body, &["body", "version"])?;
    let text = body.required_text("body", 1, BODY_MAX)?;
    let version = body.version("version")?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (old, project) = visible_comment(&*tx, id, &who, true).await?;
    require_author(&old, &who)?;
    if let Some(v) = version
        && old["version"].as_i64() != Some(v)
    {
        return Err(ApiError::Conflict {
            message: format!("the comment has changed since version {v}"),
            current: Some(old),
        });
    }

    let new: Value = tx
        .query_one("UPDATE comments SET body = $2 WHERE id = $1 RETURNING to_jsonb(comments.*)", &[&id, &text])
        .await?
        .get(0);
    let seq = if new != old { Some(seq_of(&*tx, project).await?) } else { None };
    tx.commit().await?;
    Ok(written(StatusCode::OK, new, seq))
}

/// `DELETE /api/comments/{comment_id}`: the author only.
pub fn delete(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "comments" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Identity, pool: Pool| async move { respond(delete_comment(id, who, pool).await) })
}

async fn delete_comment(id: String, who: Identity, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "comment")?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (old, project) = visible_comment(&*tx, id, &who, true).await?;
    require_author(&old, &who)?;
    tx.execute("DELETE FROM comments WHERE id = $1", &[&id]).await?;
    let seq = seq_of(&*tx, project).await?;
    tx.commit().await?;
    Ok(written(
        StatusCode::OK,
        json!({"id": id, "task_id": old["task_id"], "project_id": project, "deleted": true}),
        Some(seq),
    ))
}

/// A comment in a project the caller is a member of, with its project; 404 otherwise.
async fn visible_comment(
    db: &impl GenericClient,
    id: Uuid,
    who: &Identity,
    lock: bool,
) -> Result<(Value, Uuid), ApiError> {
    super::visible_row(db, "comments", "to_jsonb", id, who, lock).await
}

fn require_author(comment: &Value, who: &Identity) -> Result<(), ApiError> {
    if comment["author_id"] == json!(who.user_id) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only the author of a comment may change or delete it".into()))
    }
}

//! The caller: `GET /api/me`, and self-service API tokens (issue another, list, revoke).
//!
//! `boardcast token issue/revoke/list` remain the operator's tools; these endpoints let a user manage their
//! own tokens with a token they already have. A token's secret is shown once, in the response that issues
//! it. Revoking a token, including the one making the request, stops it at once: the revocation trigger
//! closes WebSocket connections opened with it, and the next HTTP request with it is a 401.

use std::collections::HashMap;

use bytes::Bytes;
use deadpool_postgres::Pool;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::page::Page;
use super::records::{Token, User, from_json};
use super::route::{Route, with_pool};
use super::values::Label;
use crate::auth::{self, Identity};
use crate::http::ApiError;
use crate::http::auth::authed;
use crate::http::input::{self, Fields, Request};
use crate::http::reply::{ok, respond};

pub const ROUTES: &[Route] = &[
    Route { path: "/api/me", methods: &["GET"] },
    Route { path: "/api/tokens", methods: &["GET", "POST"] },
    Route { path: "/api/tokens/{token_id}", methods: &["DELETE"] },
];

pub fn routes(pool: Pool) -> BoxedFilter<(Response,)> {
    me(pool.clone())
        .or(list_tokens(pool.clone()))
        .unify()
        .or(issue_token(pool.clone()))
        .unify()
        .or(revoke_token(pool))
        .unify()
        .boxed()
}

/// `GET /api/me`: who the token belongs to.
fn me(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "me")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|who: Identity, pool: Pool| async move { respond(whoami(who, pool).await) })
}

async fn whoami(who: Identity, pool: Pool) -> Result<Response, ApiError> {
    let client = pool.get().await?;
    let row = client
        .query_opt("SELECT to_jsonb(u) FROM users u WHERE id = $1", &[&who.user_id])
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
    Ok(ok(StatusCode::OK, &from_json::<User>(&row, 0)?))
}

const TOKEN_JSON: &str = "jsonb_build_object('id', id, 'label', label, 'created_at', created_at,
                                              'revoked_at', revoked_at)";

/// `GET /api/tokens`: the caller's tokens, oldest first, without secrets; `current` marks the one in use.
/// Paginated like every list: a user (or a script) that issues a token per device or per run may have many.
fn list_tokens(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tokens")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|who: Identity, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_tokens_of(who, q, pool).await)
        })
}

async fn list_tokens_of(who: Identity, q: HashMap<String, String>, pool: Pool) -> Result<Response, ApiError> {
    input::known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, 2)?;
    let (after_t, after_id) = page.after_time_id()?;
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {TOKEN_JSON} || jsonb_build_object('current', id = $2)
                   FROM api_tokens
                  WHERE user_id = $1 AND ($3::timestamptz IS NULL OR (created_at, id) > ($3::timestamptz, $4::uuid))
                  ORDER BY created_at, id LIMIT $5"
            ),
            &[&who.user_id, &who.token_id, &after_t, &after_id, &page.rows()],
        )
        .await?;
    let tokens = rows.iter().map(|r| from_json::<Token>(r, 0)).collect::<Result<Vec<_>, _>>()?;
    Ok(page.reply(tokens, |t| vec![json!(t.created_at), json!(t.id)]))
}

/// The body of `POST /api/tokens`.
struct NewToken {
    label: Label,
}

impl Request for NewToken {
    const FIELDS: &'static [&'static str] = &["label"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        Ok(NewToken { label: f.get("label")?.unwrap_or_default() })
    }
}

/// `POST /api/tokens` `{"label"?}` → 201 with the new token, shown this once.
fn issue_token(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tokens")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(with_pool(pool))
        .then(|who: Identity, body: Bytes, pool: Pool| async move { respond(issue(who, body, pool).await) })
}

async fn issue(who: Identity, body: Bytes, pool: Pool) -> Result<Response, ApiError> {
    let new: NewToken = input::parse(&body)?;
    let client = pool.get().await?;
    let (id, secret) = auth::issue_token(&**client, who.user_id, new.label.as_str()).await?;
    let row = client.query_one(&format!("SELECT {TOKEN_JSON} FROM api_tokens WHERE id = $1"), &[&id]).await?;
    let token = Token { token: Some(secret), ..from_json(&row, 0)? };
    Ok(ok(StatusCode::CREATED, &token))
}

/// `DELETE /api/tokens/{token_id}`: revokes one of the caller's tokens (idempotent).
fn revoke_token(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tokens" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Identity, pool: Pool| async move { respond(revoke(id, who, pool).await) })
}

async fn revoke(id: String, who: Identity, pool: Pool) -> Result<Response, ApiError> {
    let id = input::id(&id, "token")?;
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
                  WHERE id = $1 AND user_id = $2 RETURNING {TOKEN_JSON}"
            ),
            &[&id, &who.user_id],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound("no such token".into()))?;
    Ok(ok(StatusCode::OK, &from_json::<Token>(&row, 0)?))
}

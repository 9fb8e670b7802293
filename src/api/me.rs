//! The caller: `GET /api/me`, and self-service API tokens (issue another, list, revoke).
//!
//! `boardcast token issue/revoke/list` remain the operator's tools; these endpoints let a user manage their
//! own tokens with a token they already have. A token's secret is shown once, in the response that issues
//! it. Revoking a token, including the one making the request, stops it at once: the revocation trigger
//! closes WebSocket connections opened with it, and the next HTTP request with it is a 401.
//!
//! A token issued here expires (`expires_in` seconds, by default `BOARDCAST_TOKEN_DEFAULT_TTL_SECS`, at most
//! `BOARDCAST_TOKEN_MAX_TTL_SECS`): a token forgotten on some device stops working on its own. A user may hold
//! at most `BOARDCAST_MAX_TOKENS_PER_USER` active tokens. Every answer here is `Cache-Control: no-store`: one
//! carries a secret, and the others describe the caller's credentials, which no cache should keep.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::page::Page;
use super::records::{Token, User, from_json};
use super::route::{Route, with_pool};
use super::values::Label;
use crate::auth::{self, Caller};
use crate::http::ApiError;
use crate::http::auth::authed;
use crate::http::gate::{Door, door};
use crate::http::input::{self, Fields, FromField, Request};
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
        .map(no_store)
        .boxed()
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /api/me`: who the token belongs to.
fn me(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "me")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|who: Caller, pool: Pool| async move { respond(whoami(who, pool).await) })
}

async fn whoami(who: Caller, pool: Pool) -> Result<Response, ApiError> {
    let client = pool.get().await?;
    let row = client
        .query_opt("SELECT to_jsonb(u) FROM users u WHERE id = $1", &[&who.user_id])
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
    Ok(ok(StatusCode::OK, &from_json::<User>(&row, 0)?))
}

const TOKEN_JSON: &str = "jsonb_build_object('id', id, 'label', label, 'created_at', created_at,
                                              'revoked_at', revoked_at, 'expires_at', expires_at)";

/// `GET /api/tokens`: the caller's tokens, oldest first, without secrets; `current` marks the one in use.
/// Paginated like every list: a user (or a script) that issues a token per device or per run may have many.
fn list_tokens(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tokens")
        .and(warp::get())
        .and(authed(pool.clone()))
        .and(input::query())
        .and(with_pool(pool))
        .then(|who: Caller, q: HashMap<String, String>, pool: Pool| async move {
            respond(list_tokens_of(who, q, pool).await)
        })
}

async fn list_tokens_of(who: Caller, q: HashMap<String, String>, pool: Pool) -> Result<Response, ApiError> {
    input::known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, 2)?;
    let (after_t, after_id) = page.after_time_id()?;
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {TOKEN_JSON} || jsonb_build_object('current', COALESCE(id = $2, false))
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
    expires_in: Option<Lifetime>,
}

/// A token's lifetime, as `expires_in` gives it: a whole number of seconds, at least 1. (The most allowed is a
/// setting: [`issue`] checks it.)
struct Lifetime(u64);

impl FromField for Lifetime {
    fn from_field(value: &serde_json::Value) -> Result<Self, String> {
        value
            .as_u64()
            .filter(|&s| s >= 1)
            .map(Lifetime)
            .ok_or_else(|| "must be a whole number of seconds, at least 1".into())
    }
}

impl Request for NewToken {
    const FIELDS: &'static [&'static str] = &["label", "expires_in"];

    fn read(f: &Fields) -> Result<Self, ApiError> {
        Ok(NewToken { label: f.get("label")?.unwrap_or_default(), expires_in: f.get("expires_in")? })
    }
}

/// `POST /api/tokens` `{"label"?, "expires_in"?}` → 201 with the new token, shown this once.
fn issue_token(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tokens")
        .and(warp::post())
        .and(authed(pool.clone()))
        .and(input::body(input::MAX_BODY))
        .and(door())
        .and(with_pool(pool))
        .then(|who: Caller, body: Bytes, door: Door, pool: Pool| async move {
            respond(issue(who, body, door, pool).await)
        })
}

async fn issue(who: Caller, body: Bytes, door: Door, pool: Pool) -> Result<Response, ApiError> {
    let new: NewToken = input::parse(&body)?;
    let settings = &door.gate.settings;
    let lifetime = match new.expires_in {
        None => settings.token_default_ttl,
        Some(Lifetime(s)) if s > settings.token_max_ttl.as_secs() => {
            let max = settings.token_max_ttl.as_secs();
            return Err(ApiError::invalid("expires_in", format!("must be at most {max} seconds")));
        }
        Some(Lifetime(s)) => Duration::from_secs(s),
    };
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Issues from one user take turns, so that two at once cannot both take the last place.
    tx.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&who.user_id]).await?;
    let active: i64 = tx
        .query_one(
            "SELECT count(*) FROM api_tokens
              WHERE user_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
            &[&who.user_id],
        )
        .await?
        .get(0);
    let max = settings.max_tokens_per_user;
    if active >= max {
        return Err(ApiError::Conflict {
            message: format!(
                "you have {active} active tokens, and {max} is the most a user may have: revoke one you no longer \
                 use (DELETE /api/tokens/{{token_id}}) first"
            ),
            current: None,
        });
    }
    let (id, secret) = auth::issue_token(&*tx, who.user_id, new.label.as_str(), Some(lifetime)).await?;
    let row = tx.query_one(&format!("SELECT {TOKEN_JSON} FROM api_tokens WHERE id = $1"), &[&id]).await?;
    tx.commit().await?;
    let token = Token { token: Some(secret), ..from_json(&row, 0)? };
    Ok(ok(StatusCode::CREATED, &token))
}

/// `DELETE /api/tokens/{token_id}`: revokes one of the caller's tokens (idempotent).
fn revoke_token(pool: Pool) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "tokens" / String)
        .and(warp::delete())
        .and(authed(pool.clone()))
        .and(with_pool(pool))
        .then(|id: String, who: Caller, pool: Pool| async move { respond(revoke(id, who, pool).await) })
}

async fn revoke(id: String, who: Caller, pool: Pool) -> Result<Response, ApiError> {
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

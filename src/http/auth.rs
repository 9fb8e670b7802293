//! The caller of a request: the token it carries (an `Authorization: Bearer` header, or `?token=` where a
//! route allows it) and the user that token names.

use deadpool_postgres::Pool;
use warp::Filter;

use super::error::ApiError;
use crate::auth::{self, Identity};

/// The `Authorization` header as text, if there is one. Bytes that are not ASCII make it a bad token (401), not
/// a malformed request: `warp::header` would refuse the whole request with a 400.
pub fn authorization() -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(|headers: warp::http::HeaderMap| {
        headers.get(warp::http::header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    })
}

/// The caller named by `token`; an unknown or revoked token is a 401.
pub async fn identify(pool: &Pool, token: &str) -> Result<Identity, ApiError> {
    let client = pool.get().await?;
    auth::authenticate(&**client, token).await?.ok_or_else(|| ApiError::Unauthorized("invalid or revoked token".into()))
}

/// The caller, from `Authorization: Bearer TOKEN`. Missing, malformed, unknown and revoked tokens are 401.
/// (Unlike the WebSocket, the REST API does not take `?token=`: query strings end up in logs.)
pub fn authed(pool: Pool) -> impl Filter<Extract = (Identity,), Error = warp::Rejection> + Clone {
    authorization().and_then(move |header: Option<String>| {
        let pool = pool.clone();
        async move {
            let who = async {
                let token = auth::token_from(header.as_deref(), None)
                    .ok_or_else(|| ApiError::Unauthorized("missing token: send Authorization: Bearer TOKEN".into()))?;
                identify(&pool, &token).await
            };
            who.await.map_err(warp::reject::custom)
        }
    })
}

//! The caller of a request: the token it carries (an `Authorization: Bearer` header, or `?token=` where a
//! route allows it) and the user that token names. Tokens go through the [`gate`](super::gate) first: a
//! malformed token, or one recently found unknown, costs no query, and a client that keeps failing is told
//! to wait (429) before any database work.

use deadpool_postgres::Pool;
use warp::Filter;

use super::error::ApiError;
use super::gate::{Door, door};
use crate::auth::{self, Identity};

/// The `Authorization` header as text, if there is one. Bytes that are not ASCII make it a bad token (401), not
/// a malformed request: `warp::header` would refuse the whole request with a 400.
pub fn authorization() -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(|headers: warp::http::HeaderMap| {
        headers.get(warp::http::header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    })
}

/// The caller named by `token`, coming through `door`. An unknown, revoked, expired or malformed token is a
/// 401; a client over its budget of failed authentications is a 429, unless its token was recently valid.
pub async fn identify(door: &Door, pool: &Pool, token: &str) -> Result<Identity, ApiError> {
    let (gate, client) = (&door.gate, door.client.ip());
    let hash = auth::token_digest(token);
    let recently_valid = gate.recently_valid(&hash);
    if !recently_valid {
        gate.admit(client).map_err(|over| ApiError::RateLimited {
            message: "too many failed authentications from your address; wait before trying again".into(),
            retry_after: over.retry_after,
        })?;
    }
    let well_formed = auth::well_formed(token);
    let found = if !well_formed || gate.known_unknown(&hash) {
        None
    } else {
        let client = pool.get().await?;
        auth::authenticate(&**client, &hash).await?
    };
    match found {
        Some(who) => {
            if !recently_valid {
                gate.refund(client);
            }
            gate.found_valid(hash);
            Ok(who)
        }
        None => {
            if recently_valid {
                gate.charge(client);
            }
            if well_formed {
                gate.found_unknown(hash);
            }
            Err(ApiError::Unauthorized("invalid, expired or revoked token".into()))
        }
    }
}

/// The caller, from `Authorization: Bearer TOKEN`. Missing, malformed, unknown, expired and revoked tokens
/// are 401. (Unlike the WebSocket, the REST API does not take `?token=`: query strings end up in logs.)
pub fn authed(pool: Pool) -> impl Filter<Extract = (Identity,), Error = warp::Rejection> + Clone {
    authorization().and(door()).and_then(move |header: Option<String>, door: Door| {
        let pool = pool.clone();
        async move {
            let who = async {
                let token = auth::token_from(header.as_deref(), None)
                    .ok_or_else(|| ApiError::Unauthorized("missing token: send Authorization: Bearer TOKEN".into()))?;
                identify(&door, &pool, &token).await
            };
            who.await.map_err(warp::reject::custom)
        }
    })
}

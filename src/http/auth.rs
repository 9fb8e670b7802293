//! The caller of a request: the token it carries (an `Authorization: Bearer` header, or `?token=` where a
//! route allows it) and who that token names: a `bc_` token's user, or a JWT's subject. Tokens go through the
//! [`gate`](super::gate) first: a malformed token, or one recently found unknown, costs no query, and a client
//! that keeps failing is told to wait (429) before any database work. A JWT's signature is checked by the gate,
//! with no query; only a valid one whose `sub` could be a boardcast user's id costs one (is it a user?).

use std::net::IpAddr;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::time::Instant;
use warp::Filter;

use super::error::ApiError;
use super::gate::{Door, Gate, Refusal, Reservation, door};
use crate::auth::{self, Caller, Identity};
use crate::jwt::{self, Keys, Refused};

/// The one answer for every bad token, whatever its kind: which check failed is not the client's to learn.
fn bad_token() -> ApiError {
    ApiError::Unauthorized("invalid, expired or revoked token".into())
}

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
    let (gate, client) = (&*door.gate, door.client.ip());
    let hash = auth::token_digest(token);
    if let Some(keys) = gate.jwt.as_deref()
        && !auth::well_formed(token)
        && jwt::well_formed(token)
    {
        return identify_jwt(door, pool, keys, token, hash).await;
    }
    // What the gate can answer alone costs no budget: the budget only rations the database's work.
    if !auth::well_formed(token) || gate.known_unknown(&hash) {
        return Err(bad_token());
    }
    let reservation = admission(gate, client, &hash).await?;
    let found = gate.lookups.authenticate(pool, hash).await?;
    match found {
        // Dropping the reservation gives its unit back.
        Some(who) => {
            gate.found_valid(hash);
            Ok(who)
        }
        None => {
            match reservation {
                Some(r) => r.spend(),
                None => gate.charge(client),
            }
            gate.found_unknown(hash);
            Err(bad_token())
        }
    }
}

/// The subject of a JWT, checked by the gate's keys. A failure is charged to the client's budget like a failed
/// lookup; an expired or forged token is remembered (it never becomes valid), one whose `nbf` is still to come
/// is not.
async fn identify_jwt(
    door: &Door,
    pool: &Pool,
    keys: &Keys,
    token: &str,
    hash: [u8; 32],
) -> Result<Identity, ApiError> {
    let (gate, client) = (&*door.gate, door.client.ip());
    if gate.known_unknown(&hash) {
        return Err(bad_token());
    }
    let reservation = admission(gate, client, &hash).await?;
    let claims = match keys.verify(token) {
        Ok(claims) => claims,
        Err(refused) => {
            match reservation {
                Some(r) => r.spend(),
                None => gate.charge(client),
            }
            if refused == Refused::Invalid {
                gate.found_unknown(hash);
            }
            return Err(bad_token());
        }
    };
    drop(reservation);
    gate.found_valid(hash);
    let user = {
        let client = pool.get().await?;
        auth::user_named_by(&**client, &claims.sub).await?
    };
    let name =
        claims.name.or_else(|| user.as_ref().map(|(_, name)| name.clone())).unwrap_or_else(|| claims.sub.clone());
    Ok(Identity {
        subject: claims.sub,
        user_id: user.map(|(id, _)| id),
        name,
        token_id: None,
        expires_at: Some(claims.expires_at),
    })
}

/// How long a request waits for lookups from its address that hold the rest of its budget (they take
/// milliseconds; each gives its unit back if its token was good).
const PENDING_WAIT: Duration = Duration::from_secs(3);

/// A unit of the client's failure budget for this lookup, or none for a token the gate recently saw succeed
/// (a client sharing an address with an attacker keeps working). Over budget: 429 before the database.
async fn admission<'g>(gate: &'g Gate, client: IpAddr, hash: &[u8; 32]) -> Result<Option<Reservation<'g>>, ApiError> {
    let deadline = Instant::now() + PENDING_WAIT;
    loop {
        if gate.recently_valid(hash) {
            return Ok(None);
        }
        let ended = gate.lookup_ended();
        let retry_after = match gate.admit(client) {
            Ok(reservation) => return Ok(Some(reservation)),
            Err(Refusal::Pending) if Instant::now() < deadline => {
                let _ = tokio::time::timeout_at(deadline, ended).await;
                continue;
            }
            Err(Refusal::Pending) => Duration::from_secs(1),
            Err(Refusal::OverBudget { retry_after }) => retry_after,
        };
        return Err(ApiError::RateLimited {
            message: "too many failed authentications from your address; wait before trying again".into(),
            retry_after,
        });
    }
}

/// The caller, from `Authorization: Bearer TOKEN`. Missing, malformed, unknown, expired and revoked tokens
/// are 401; a valid JWT whose subject is not a boardcast user is 403: the REST API acts as a user. (Unlike the
/// WebSocket, the REST API does not take `?token=`: query strings end up in logs.)
pub fn authed(pool: Pool) -> impl Filter<Extract = (Caller,), Error = warp::Rejection> + Clone {
    authorization().and(door()).and_then(move |header: Option<String>, door: Door| {
        let pool = pool.clone();
        async move {
            let who = async {
                let token = auth::token_from(header.as_deref(), None)
                    .ok_or_else(|| ApiError::Unauthorized("missing token: send Authorization: Bearer TOKEN".into()))?;
                identify(&door, &pool, &token).await?.caller().ok_or_else(|| {
                    ApiError::Forbidden(
                        "this token's subject is not a boardcast user: the REST API acts as one (the feed does not \
                         need one)"
                            .into(),
                    )
                })
            };
            who.await.map_err(warp::reject::custom)
        }
    })
}

//! Who is calling: API tokens, how they are made, stored and checked, and who a token names ([`Identity`]: a
//! boardcast user, or the subject of an app's JWT, see [`crate::jwt`]).
//!
//! A token is `bc_` followed by 32 random bytes in hex. Only its SHA-256 is stored, so a leaked database does
//! not leak usable tokens; a fast hash is enough because the token itself has 256 bits of entropy. A token
//! may have an expiry (`api_tokens.expires_at`); past it, it is refused like a revoked one.
//!
//! Neither a token nor its hash is ever logged: statements that take one as a parameter are logged by
//! tokio-postgres at debug with their parameters, which is why `main` caps that target at info.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::error::Result;

/// An authenticated caller: the holder of a `bc_` token (always a boardcast user) or of a JWT (whose `sub` may
/// or may not be one).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Who the token is for: a boardcast user's id as text (`bc_` tokens), or a JWT's `sub`. What the
    /// per-user connection cap counts by, and what a socket's renewed token must name again.
    pub subject: String,
    /// The boardcast user: always for a `bc_` token; for a JWT, when its `sub` is an existing user's id.
    pub user_id: Option<Uuid>,
    /// A JWT's `name` claim, else the user's name, else the subject.
    pub name: String,
    /// The `bc_` token used; connections opened with it are closed when it is revoked. JWTs have none: boardcast
    /// cannot revoke them, they only expire.
    pub token_id: Option<Uuid>,
    /// When the token expires, if it does; connections opened with it close then.
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// How long until the token expires (zero if it has); `None` if it does not.
    pub fn expires_in(&self) -> Option<Duration> {
        let at = self.expires_at?;
        Some(at.duration_since(SystemTime::now()).unwrap_or_default())
    }
}

/// A caller of the REST API, which acts as a boardcast user: an [`Identity`] that is one.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    /// The `bc_` token used, if it is one.
    pub token_id: Option<Uuid>,
}

impl Identity {
    /// The REST API's caller, if this identity is a boardcast user.
    pub fn caller(self) -> Option<Caller> {
        Some(Caller { user_id: self.user_id?, token_id: self.token_id })
    }
}

/// The length of a token: `bc_` and 64 hex digits.
const TOKEN_LEN: usize = 3 + 64;

pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("bc_{}", hex::encode(bytes))
}

/// What is stored of a token: its SHA-256.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hash_token(token: &str) -> Vec<u8> {
    token_digest(token).to_vec()
}

/// Whether `token` has the shape of one [`new_token`] makes (`bc_` and 64 lowercase hex digits). Anything
/// else names no token, and is refused without asking the database.
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with("bc_")
        && token.bytes().skip(3).all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Issues a new token for a user, valid for `lifetime` (`None`: until revoked), and returns `(token id,
/// token)`. The token is not stored and cannot be shown again.
pub async fn issue_token(
    db: &impl GenericClient,
    user_id: Uuid,
    label: &str,
    lifetime: Option<Duration>,
) -> Result<(Uuid, String)> {
    let token = new_token();
    let seconds = lifetime.map(|d| d.as_secs_f64());
    let row = db
        .query_one(
            "INSERT INTO api_tokens (user_id, token_hash, label, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING id",
            &[&user_id, &hash_token(&token), &label, &seconds],
        )
        .await?;
    Ok((row.get(0), token))
}

/// Looks tokens up by their hashes, in one query: the identities of those that are known, not revoked and not
/// expired, by hash (an unknown, revoked or expired token is not there).
pub async fn authenticate_many(
    db: &impl GenericClient,
    token_hashes: &[&[u8]],
) -> Result<std::collections::HashMap<Vec<u8>, Identity>> {
    let rows = db
        .query(
            "SELECT t.token_hash, u.id, u.name, t.id, t.expires_at FROM api_tokens t JOIN users u ON u.id = t.user_id
              WHERE t.token_hash = ANY($1) AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
            &[&token_hashes],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let user_id: Uuid = r.get(1);
            let who = Identity {
                subject: user_id.to_string(),
                user_id: Some(user_id),
                name: r.get(2),
                token_id: Some(r.get(3)),
                expires_at: r.get(4),
            };
            (r.get(0), who)
        })
        .collect())
}

/// The name of the boardcast user whose id is `subject`, if it is one (a JWT's `sub` may name one).
pub async fn user_named_by(db: &impl GenericClient, subject: &str) -> Result<Option<(Uuid, String)>> {
    let Ok(id) = subject.parse::<Uuid>() else { return Ok(None) };
    let row = db.query_opt("SELECT name FROM users WHERE id = $1", &[&id]).await?;
    Ok(row.map(|r| (id, r.get(0))))
}

/// The token a request carries: `Authorization: Bearer TOKEN`, else `?token=TOKEN` (browsers cannot set
/// headers on a WebSocket).
pub fn token_from(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    if let Some(h) = authorization {
        let h = h.trim();
        if let Some(t) = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")) {
            return Some(t.trim().to_string());
        }
        return Some(String::new()); // a header that is not a bearer token is a bad token, not a missing one
    }
    query?.split('&').find_map(|kv| kv.strip_prefix("token=")).map(|t| t.to_string())
}

//! Who is calling: API tokens, how they are made, stored and checked.
//!
//! A token is `bc_` followed by 32 random bytes in hex. Only its SHA-256 is stored, so a leaked database does
//! not leak usable tokens; a fast hash is enough because the token itself has 256 bits of entropy.

use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::error::Result;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Uuid,
    pub user_name: String,
    /// The token used; connections opened with it are closed when it is revoked.
    pub token_id: Uuid,
}

pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("bc_{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Issues a new token for a user and returns `(token id, token)`. The token is not stored and cannot be
/// shown again.
pub async fn issue_token(db: &impl GenericClient, user_id: Uuid, label: &str) -> Result<(Uuid, String)> {
    let token = new_token();
    let row = db
        .query_one(
            "INSERT INTO api_tokens (user_id, token_hash, label) VALUES ($1, $2, $3) RETURNING id",
            &[&user_id, &hash_token(&token), &label],
        )
        .await?;
    Ok((row.get(0), token))
}

/// Looks a token up. `None` for an unknown, malformed or revoked token.
pub async fn authenticate(db: &impl GenericClient, token: &str) -> Result<Option<Identity>> {
    // Reject obviously malformed tokens without a query.
    if token.len() != 67 || !token.starts_with("bc_") {
        return Ok(None);
    }
    let row = db
        .query_opt(
            "SELECT u.id, u.name, t.id FROM api_tokens t JOIN users u ON u.id = t.user_id
              WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
            &[&hash_token(token)],
        )
        .await?;
    Ok(row.map(|r| Identity { user_id: r.get(0), user_name: r.get(1), token_id: r.get(2) }))
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

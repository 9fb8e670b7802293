//! Token revocation, expiry and renewal: a session whose token is revoked closes (4001), and so does one whose
//! token expires, at that moment, unless the client sent a fresh token first (`auth`). Revocations arrive from
//! the listener; when some may have been missed, the session asks the database itself. The token's expiry is a
//! token check planned from the start. A JWT cannot be revoked by boardcast: a session on one only expires.
//!
//! `auth` replaces the session's token with another for the same subject (a `bc_` token or a JWT, either way),
//! checked like a handshake's (the same gate, the same budget of failures): the session keeps its rooms and
//! closes when the new token expires or is revoked. A token for another subject is refused, and the session
//! stays who it was.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use uuid::Uuid;

use super::end::End;
use super::rate::millis;
use super::session::Session;
use crate::auth::Identity;
use crate::feed::protocol::{ErrorCode, ServerFrame};
use crate::http::ApiError;
use crate::http::auth::identify;

/// When a token check is due, a token expiring within this is taken as expired: the session's timer and the
/// wall clock the expiry is written in may differ by a little.
const EXPIRY_SLACK: Duration = Duration::from_millis(100);

/// The moment `who`'s token expires, on the session's clock; `None` if it does not. (A session plans a token
/// check for it from the start.)
fn expiry(who: &Identity) -> Option<Instant> {
    who.expires_in().map(|d| Instant::now() + d)
}

fn expired(who: &Identity) -> bool {
    who.expires_at.is_some_and(|at| at <= SystemTime::now() + EXPIRY_SLACK)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A revocation from the listener (or its channel's error).
    pub fn revoked(&mut self, token: Result<Uuid, BroadcastStreamRecvError>) -> Result<(), End> {
        match token {
            Ok(token) if Some(token) == self.who.token_id => Err(End::Revoked),
            // The nil id means "revocations may have been missed" (the listener was reconnecting), and so does
            // falling behind the channel: check this token again, soon (a JWT has nothing to check).
            Ok(token) if token.is_nil() && self.who.token_id.is_some() => self.schedule_recheck(),
            Err(BroadcastStreamRecvError::Lagged(_)) if self.who.token_id.is_some() => self.schedule_recheck(),
            _ => Ok(()),
        }
    }

    /// Plans a token check within the next two seconds, at a moment of this session's own: after a listener
    /// reconnect every session checks, and thousands of them at once would queue for the pool together.
    fn schedule_recheck(&mut self) -> Result<(), End> {
        let at = Instant::now() + Duration::from_millis(rand::random_range(0..2000));
        self.recheck_at = Some(self.recheck_at.map_or(at, |t| t.min(at)));
        Ok(())
    }

    /// Closes the session if its token expired (without asking the database) or was revoked. If the database
    /// cannot say right now, the client stays and the check is tried again in one to three seconds (or at the
    /// expiry, if that comes first): a database blip is no reason to disconnect anyone.
    pub async fn recheck_token(&mut self) -> Result<(), End> {
        if expired(&self.who) {
            return Err(End::Expired);
        }
        self.recheck_at = expiry(&self.who);
        let Some(token_id) = self.who.token_id else { return Ok(()) };
        let check = async {
            let client = self.feed.pool.get().await.map_err(|e| e.to_string())?;
            client
                .query_opt("SELECT 1 FROM api_tokens WHERE id = $1 AND revoked_at IS NULL", &[&token_id])
                .await
                .map_err(|e| e.to_string())
        };
        match check.await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(End::Revoked),
            Err(e) => {
                tracing::warn!("cannot check the token, retrying in 1-3 s: {e}");
                let retry = Instant::now() + Duration::from_millis(rand::random_range(1000..3000));
                self.recheck_at = Some(self.recheck_at.map_or(retry, |t| t.min(retry)));
                Ok(())
            }
        }
    }

    /// `auth`: a fresh token for this session. Answered `authed` with its expiry, or an error frame; either way
    /// the session goes on.
    pub async fn renew(&mut self, token: String, reference: Option<&Value>) -> Result<(), End> {
        let door = self.door.clone();
        let who = match identify(&door, &self.feed.pool, &token).await {
            Ok(who) => who,
            Err(ApiError::Unauthorized(msg)) => return self.error(ErrorCode::Unauthorized, &msg, reference).await,
            Err(ApiError::RateLimited { message, retry_after }) => {
                let frame = ServerFrame::Error {
                    code: ErrorCode::RateLimited,
                    message: &message,
                    retry_after: Some(millis(retry_after)),
                };
                return self.reply(frame, reference).await;
            }
            Err(e) => {
                tracing::warn!("cannot check a token sent on the socket: {e}");
                let msg = "the server could not check your token; try again";
                return self.error(ErrorCode::Unavailable, msg, reference).await;
            }
        };
        if who.subject != self.who.subject {
            let msg = "this token is for someone else; the connection stays signed in as before";
            return self.error(ErrorCode::Unauthorized, msg, reference).await;
        }
        // The new token's expiry replaces the old one's check; a pending recheck for missed revocations was
        // about the old token.
        *self.who = who;
        self.recheck_at = expiry(&self.who);
        let expires_at = self
            .who
            .expires_at
            .map(|at| chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false));
        self.reply(ServerFrame::Authed { expires_at: expires_at.as_deref() }, reference).await
    }
}

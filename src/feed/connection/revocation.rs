//! Token revocation and expiry: a session whose token is revoked closes (4001), and so does one whose token
//! expires, at that moment. Revocations arrive from the listener; when some may have been missed, the session
//! asks the database itself. The token's expiry is a token check planned from the start.

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use uuid::Uuid;

use super::end::End;
use super::session::Session;
use crate::auth::Identity;

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
    pub fn revoked(&mut self, token: Result<Uuid, RecvError>) -> Result<(), End> {
        match token {
            Ok(token) if token == self.who.token_id => Err(End::Revoked),
            // The nil id means "revocations may have been missed" (the listener was reconnecting), and so does
            // falling behind the channel: check this token again, soon.
            Ok(token) if token.is_nil() => self.schedule_recheck(),
            Err(RecvError::Lagged(_)) => self.schedule_recheck(),
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
        let check = async {
            let client = self.feed.pool.get().await.map_err(|e| e.to_string())?;
            client
                .query_opt("SELECT 1 FROM api_tokens WHERE id = $1 AND revoked_at IS NULL", &[&self.who.token_id])
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
}

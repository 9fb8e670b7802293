//! Token revocation: a session whose token is revoked closes (4001). Revocations arrive from the listener;
//! when some may have been missed, the session asks the database itself.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use uuid::Uuid;

use super::end::End;
use super::session::Session;

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

    /// Closes the session if its token was revoked. If the database cannot say right now, the client stays
    /// and the check is tried again in one to three seconds: a database blip is no reason to disconnect anyone.
    pub async fn recheck_token(&mut self) -> Result<(), End> {
        self.recheck_at = None;
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
                self.recheck_at = Some(Instant::now() + Duration::from_millis(rand::random_range(1000..3000)));
                Ok(())
            }
        }
    }
}

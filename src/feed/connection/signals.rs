//! Presence and broadcasts, as one connection sees them: `track`, `untrack` and `broadcast` requests, and
//! the rooms' presence frames and broadcasts relayed to the client (see [`crate::feed::presence`]).
//!
//! Only a client in the room may track or broadcast: it joined, so the join rule let it in, and it leaves (so
//! its presence is gone, on every server) the moment it loses access: removed from the project, no longer let
//! in when the room asks the rule again, token revoked or expired. Presence and broadcasts name the user by
//! the subject it signed in as. Each request is limited per connection ([`super::rate`]).

use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::end::End;
use super::rate::{Limit, Verdict};
use super::session::Session;
use crate::feed::presence::{self, Options};
use crate::feed::protocol::{ErrorCode, JoinOptions, ServerFrame};
use crate::feed::room_key::RoomKey;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Subscribes to the signals of a room just joined; returns its `presence_state` if the client asked for it.
    pub fn enter_signals(&mut self, project: RoomKey, options: JoinOptions) -> Option<Utf8Bytes> {
        let options = Options { presence: options.presence, echo: options.echo };
        let (stream, state) = self.feed.presence.enter(project.as_str(), self.signals.conn, options);
        self.signals.rooms.insert(project, stream);
        state
    }

    /// Whether this client is in the room (else the request is answered `not_joined`).
    fn in_room(&self, project: &RoomKey) -> bool {
        self.rooms.contains_key(project)
    }

    async fn not_joined(&mut self, reference: Option<&Value>) -> Result<(), End> {
        let msg = "you are not in this project's room; join it first";
        self.error(ErrorCode::NotJoined, msg, reference).await
    }

    /// Takes one from `limit`'s bucket; `Ok(false)` when refused (the client was told).
    async fn allowed(&mut self, limit: Limit, reference: Option<&Value>) -> Result<bool, End> {
        let bucket = match limit {
            Limit::Broadcasts => &mut self.signals.broadcasts,
            _ => &mut self.signals.updates,
        };
        match bucket.take() {
            Verdict::Allowed => Ok(true),
            Verdict::Limited(wait) => self.rate_limited(limit, wait, reference).await.map(|_| false),
            Verdict::Abusive => Err(End::RateLimited(limit)),
        }
    }

    pub async fn track(&mut self, project: RoomKey, state: &str, reference: Option<&Value>) -> Result<(), End> {
        if !self.in_room(&project) {
            return self.not_joined(reference).await;
        }
        if !self.allowed(Limit::PresenceUpdates, reference).await? {
            return Ok(());
        }
        let conn = self.signals.conn;
        self.feed.presence.track(project.as_str(), conn, &self.who.subject, state);
        let id = self.feed.presence.id_of(conn);
        self.reply(ServerFrame::Tracked { project, id: &id }, reference).await
    }

    pub async fn untrack(&mut self, project: RoomKey, reference: Option<&Value>) -> Result<(), End> {
        if !self.in_room(&project) {
            return self.not_joined(reference).await;
        }
        if !self.allowed(Limit::PresenceUpdates, reference).await? {
            return Ok(());
        }
        self.feed.presence.untrack(project.as_str(), self.signals.conn);
        self.reply(ServerFrame::Untracked { project }, reference).await
    }

    /// Sends a broadcast to the others in the room, on every server. No reply: an `error` if it was refused.
    pub async fn broadcast(
        &mut self,
        project: RoomKey,
        event: &str,
        payload: &str,
        reference: Option<&Value>,
    ) -> Result<(), End> {
        if !self.in_room(&project) {
            return self.not_joined(reference).await;
        }
        if !self.allowed(Limit::Broadcasts, reference).await? {
            return Ok(());
        }
        let conn = self.signals.conn;
        let (room, user) = (project.as_str(), self.who.subject.as_str());
        let frame = presence::broadcast_frame(room, event, payload, user, &self.feed.presence.id_of(conn));
        self.feed.presence.broadcast(room, conn, &frame);
        Ok(())
    }

    /// A signal for the client, and whatever others are ready, flushed once.
    pub async fn relay(&mut self, frame: Utf8Bytes) -> Result<(), End> {
        self.feed_frame(Message::Text(frame)).await?;
        for _ in 0..256 {
            match self.signals.rooms.next().now_or_never() {
                Some(Some((_, frame))) => self.feed_frame(Message::Text(frame)).await?,
                _ => break,
            }
        }
        self.flush().await
    }
}

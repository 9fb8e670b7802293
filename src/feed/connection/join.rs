//! A client's requests: join (with or without a resume point), leave, ping; `auth`, handed to
//! [`super::revocation`]; presence and broadcasts are answered in [`super::signals`].
//!
//! A join subscribes to the room before it reads the project's latest seq: every event committed after that
//! read is then either in the broadcast or, if the room was catching up, filled from history. Nothing falls
//! in between. A resume (`since`) first checks that it does not reach back before the client's membership
//! began, that history still reaches back to it, and still records the client's last event as the client saw
//! it, before promising anything.
//!
//! Membership is checked before any room work: a join by a non-member costs one query, and no room is made
//! (into a room that exists already, the query that reads where the client starts checks it).
//! Joins are limited per connection ([`super::rate`]), and a replay reads only as much as the connection's
//! replay budget allows at once; the rest follows at the budget's pace, a page per turn.

use crate::feed::room_key::RoomKey;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

use super::delivery::contiguous;
use super::end::End;
use super::grouping::TxGroup;
use super::rate::{Limit, Verdict};
use super::session::{Joined, Session};
use crate::feed::Feed;
use crate::feed::access;
use crate::feed::event::{Event, tx_marks};
use crate::feed::history::{JoinStart, Replay};
use crate::feed::protocol::{self, At, ErrorCode, JoinOptions, LeftReason, Op, Request, ResyncReason, ServerFrame};
use crate::feed::room::Subscription;
use crate::metrics;

/// Where a joining client starts: after event `seq`, whose `at` is given (when known), with `replay`, the
/// first page of events after it (`replaying`: the client asked for them, with `since`). `ends_tx`: whether
/// event `seq` was the last of its transaction in the room (false when a resume falls inside a transaction).
struct Start {
    seq: i64,
    latest: i64,
    at: Option<String>,
    replay: Vec<Event>,
    replaying: bool,
    ends_tx: bool,
}

/// Why a join is refused.
enum Refusal {
    Error(ErrorCode, &'static str),
    Resync { latest: i64, reason: ResyncReason },
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub async fn request(&mut self, text: &str) -> Result<(), End> {
        let request = protocol::parse(text);
        metrics::client_frame(request.as_ref().map_or("invalid", |r| r.op.name()));
        match request {
            Err(e) => self.error(e.code, &e.message, e.reference.as_ref()).await,
            Ok(Request { op: Op::Ping, reference }) => self.reply(ServerFrame::Pong, reference.as_ref()).await,
            Ok(Request { op: Op::Join { project, since, since_at, options }, reference }) => {
                self.join(project, since, since_at, options, reference.as_ref()).await
            }
            Ok(Request { op: Op::Leave { project }, reference }) => self.leave(project, reference.as_ref()).await,
            Ok(Request { op: Op::Track { project, state }, reference }) => {
                self.track(project, &state, reference.as_ref()).await
            }
            Ok(Request { op: Op::Untrack { project }, reference }) => self.untrack(project, reference.as_ref()).await,
            Ok(Request { op: Op::Broadcast { project, event, payload }, reference }) => {
                self.broadcast(project, &event, &payload, reference.as_ref()).await
            }
            Ok(Request { op: Op::Auth { token }, reference }) => self.renew(token.0, reference.as_ref()).await,
        }
    }

    async fn leave(&mut self, project: RoomKey, reference: Option<&Value>) -> Result<(), End> {
        if !self.rooms.contains_key(&project) {
            return self.error(ErrorCode::NotJoined, "you are not in this project's room", reference).await;
        }
        self.drop_room(&project);
        self.reply(ServerFrame::Left { project, reason: LeftReason::Requested }, reference).await
    }

    async fn join(
        &mut self,
        project: RoomKey,
        since: Option<i64>,
        since_at: Option<At>,
        options: JoinOptions,
        reference: Option<&Value>,
    ) -> Result<(), End> {
        if self.rooms.contains_key(&project) {
            let msg = "already in this project's room; leave first to join again";
            return self.error(ErrorCode::AlreadyJoined, msg, reference).await;
        }
        let max_rooms = self.feed.settings.max_rooms_per_connection;
        if self.rooms.len() >= max_rooms {
            let msg = format!("a connection may be in at most {max_rooms} rooms");
            return self.error(ErrorCode::TooManyRooms, &msg, reference).await;
        }
        match self.joins.take() {
            Verdict::Allowed => {}
            Verdict::Limited(wait) => return self.rate_limited(Limit::Joins, wait, reference).await,
            Verdict::Abusive => return Err(End::RateLimited(Limit::Joins)),
        }
        // Entering a room this process has already makes nothing, so the membership check is left to the query
        // that reads where the client starts (which refuses a non-member the same way): one query fewer per
        // join, and per resume in the thousands that follow a server's restart. A room is made only for a
        // member.
        let subscription = match self.feed.rooms.subscribe_existing(&project, &self.who.subject) {
            Some(subscription) => subscription,
            None => {
                if let Err(Refusal::Error(code, msg)) = allowed(&self.feed, &self.who.subject, &project).await {
                    return self.error(code, msg, reference).await;
                }
                self.feed.rooms.subscribe(project.clone(), &self.who.subject)
            }
        };
        let first_page = if since.is_some() { self.replay_page() } else { 0 };
        match start(&self.feed, &self.who.subject, &project, since, since_at, first_page).await {
            Ok(start) => self.enter(project, subscription, start, options, reference).await,
            Err(refusal) => {
                // Out of the room before the client hears so.
                drop(subscription);
                match refusal {
                    Refusal::Error(code, msg) => self.error(code, msg, reference).await,
                    Refusal::Resync { latest, reason } => {
                        self.reply(ServerFrame::Resync { project, latest, reason }, reference).await
                    }
                }
            }
        }
    }

    /// Enters the room: `joined`, then the replay's first page; the rest of the replay follows a page per turn.
    async fn enter(
        &mut self,
        project: RoomKey,
        subscription: Subscription,
        start: Start,
        options: JoinOptions,
        reference: Option<&Value>,
    ) -> Result<(), End> {
        let Start { seq, latest, at, replay, replaying, ends_tx } = start;
        let group = options.group_tx.then(|| Box::new(TxGroup::new(ends_tx)));
        let joined = Joined {
            subscription,
            cursor: seq,
            verified_at: latest,
            catch_up_to: None,
            retry_at: None,
            replaying,
            group,
        };
        self.rooms.insert(project.clone(), joined);
        if replaying {
            metrics::resumed();
            self.replay.spend(replay.iter().map(|e| e.frame.len() as f64).sum());
        }
        let joined = ServerFrame::Joined { project: project.clone(), seq, latest, at: at.as_deref() };
        self.feed_frame(Message::text(joined.to_text(reference))).await?;
        // The room's presence, if asked for, comes before its events: it is now, they may be a replay.
        if let Some(state) = self.enter_signals(project.clone(), options) {
            self.feed_frame(Message::Text(state)).await?;
        }
        for event in replay {
            if !self.emit(&project, event.seq, event.frame, event.removed_member).await? {
                break;
            }
        }
        if let Some(room) = self.rooms.get_mut(&project)
            && room.cursor < latest
        {
            room.catch_up_to = Some(latest);
        }
        self.flush().await
    }
}

/// One answer for "no such room" and "not allowed in", so keys cannot be probed.
const NOT_FOUND: Refusal = Refusal::Error(ErrorCode::NotFound, "no such project, or you are not a member of it");

/// Whether the join rule lets `subject` into `room`: the one query a join into a room not yet here costs before
/// it makes the room.
async fn allowed(feed: &Feed, subject: &str, room: &RoomKey) -> Result<(), Refusal> {
    match access::may_join(&feed.history, subject, room).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(NOT_FOUND),
        Err(e) => {
            tracing::error!(%room, "join failed: {e}");
            Err(Refusal::Error(ErrorCode::Unavailable, "the server could not check your membership; try again"))
        }
    }
}

/// Where the client starts: now (the project's latest seq), or after `since`, with a first page of at most
/// `first_page` bytes of history.
async fn start(
    feed: &Feed,
    subject: &str,
    project: &RoomKey,
    since: Option<i64>,
    since_at: Option<At>,
    first_page: i64,
) -> Result<Start, Refusal> {
    // Event `since` itself is read too, for its `at` (the `joined` frame carries it, for the next resume).
    let replay = since.map(|since| Replay {
        after: (since - 1).max(0),
        limit: feed.settings.history_page,
        max_bytes: first_page,
    });
    let JoinStart { latest, latest_at, since_seq, replay } =
        match feed.history.join_start(project, subject, replay).await {
            Ok(Some(start)) => start,
            Ok(None) => return Err(NOT_FOUND),
            Err(e) => {
                tracing::error!(%project, "join failed: {e}");
                let msg = "the server could not check your membership; try again";
                return Err(Refusal::Error(ErrorCode::Unavailable, msg));
            }
        };
    match since {
        // The latest event is committed, and so is its transaction: it ends it.
        None => Ok(Start { seq: latest, latest, at: latest_at, replay: Vec::new(), replaying: false, ends_tx: true }),
        Some(since) if since > latest => Err(Refusal::Resync { latest, reason: ResyncReason::SinceAhead }),
        // A replay never reaches back before the membership: what the project said before is not theirs to read.
        Some(since) if since < since_seq => Err(Refusal::Resync { latest, reason: ResyncReason::BeforeMembership }),
        Some(since) => resume(since, since_at, latest, replay),
    }
}

/// A resume: checks that history still reaches back to `since` and, if the client named its last event,
/// that history still records that event as the client saw it. `replay` is the first page of history from
/// event `since` on (at least one event, if history has any).
fn resume(since: i64, since_at: Option<At>, latest: i64, replay: Vec<Event>) -> Result<Start, Refusal> {
    let mut start = Start { seq: since, latest, at: None, replay, replaying: true, ends_tx: true };
    if latest == 0 {
        start.replay.clear();
        return Ok(start);
    }
    // (If retention removed event `since`, or `since` is 0, there is nothing to compare: the rest is
    // checked as usual.)
    if since > 0 && start.replay.first().is_some_and(|e| e.seq == since) {
        let resumed_after = start.replay.remove(0);
        // A `since` inside a transaction: the client gets the rest of it, marked as such.
        start.ends_tx = tx_marks(&resumed_after.frame).is_none_or(|m| m.last);
        start.at = recorded_at(&resumed_after);
        if since_at.is_some_and(|expected| start.at.as_deref().and_then(At::parse) != Some(expected)) {
            return Err(Refusal::Resync { latest, reason: ResyncReason::HistoryRewound });
        }
    }
    if since < latest && !contiguous(&start.replay, since) {
        return Err(Refusal::Resync { latest, reason: ResyncReason::HistoryPruned });
    }
    Ok(start)
}

/// The `at` of a recorded event, as its frame says it.
fn recorded_at(event: &Event) -> Option<String> {
    let frame: serde_json::Value = serde_json::from_str(&event.frame).ok()?;
    frame.get("at")?.as_str().map(str::to_string)
}

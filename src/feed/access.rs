//! Who may be in a room: the join rule, `boardcast.may_join(subject, room)` (sql/functions/feed.sql), which an
//! app may replace with its own.
//!
//! It is asked on every join and resume, and again for everyone in a room when access may have changed: when
//! the app calls `boardcast.recheck(room)` (a notification on `boardcast_recheck`), and on a schedule
//! ([`crate::config::FeedSettings::access_recheck`]). Removal from a project under the default rule needs
//! neither: the member's delete event itself ends their room, at its place in the feed.
//!
//! A rule that fails on a key it does not understand (`'abc'::bigint`) refuses that join: a data error from
//! the rule is a "no", not an outage.

use super::history::{History, Reader};
use super::room_key::RoomKey;
use crate::error::{Error, Result};

/// Whether `subject` may join `room`, by the join rule.
pub(crate) async fn may_join(history: &History, subject: &str, room: &RoomKey) -> Result<bool> {
    let (_slot, client) = history.connection(Reader::Client).await?;
    let stmt = client.prepare_cached("SELECT coalesce(boardcast.may_join($1, $2), false)").await?;
    match client.query_one(&stmt, &[&subject, room]).await {
        Ok(row) => Ok(row.get(0)),
        Err(e) if refuses(&e) => {
            tracing::debug!(%room, "the join rule failed on this room key, so it refuses: {e}");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Of `subjects`, in `room`, those the join rule no longer lets in: one query for a whole room.
pub(crate) async fn lost_access(history: &History, room: &RoomKey, subjects: &[String]) -> Result<Vec<String>> {
    let (_slot, client) = history.connection(Reader::Room).await?;
    let stmt = client
        .prepare_cached("SELECT s FROM unnest($2::text[]) s WHERE NOT coalesce(boardcast.may_join(s, $1), false)")
        .await?;
    match client.query(&stmt, &[room, &subjects]).await {
        Ok(rows) => Ok(rows.into_iter().map(|r| r.get(0)).collect()),
        // The rule cannot read this room's key at all: nobody may be in it.
        Err(e) if refuses(&e) => Ok(subjects.to_vec()),
        Err(e) => Err(Error::from(e)),
    }
}

/// A data error (class 22: a bad cast, a division by zero) raised by the rule itself.
fn refuses(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("22"))
}

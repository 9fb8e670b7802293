//! The one path of every write: a connection from the pool, a transaction that names the signed-in user as
//! its actor, the handler's checks, locks and writes, the seq and transaction of the event the write produced,
//! commit, and the reply that carries them.
//!
//! The API never emits: the triggers record an event for each change in the project's feed, in the same
//! transaction. What the API adds is who made it (`boardcast.act_as`, with the authenticated caller's id and
//! nothing the request says, so a client cannot make a change appear to come from someone else) and, in the
//! reply, the seq and transaction of that event, so a client can recognize its own change on the feed.

use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::reply::ok;

/// What a write did: the resource to answer with, and the project whose feed got the write's event (none if
/// the write changed nothing, and so produced no event).
pub struct Change<T> {
    resource: T,
    feed: Option<Uuid>,
}

impl<T> Change<T> {
    /// A write that produced an event in `project`'s feed.
    pub fn of(project: Uuid, resource: T) -> Change<T> {
        Change { resource, feed: Some(project) }
    }

    /// A write that changed nothing.
    pub fn none(resource: T) -> Change<T> {
        Change { resource, feed: None }
    }

    /// An update of a row in `project` from `old` to `new`: it produced an event only if the row changed.
    pub fn from_to(project: Uuid, old: &T, new: T) -> Change<T>
    where
        T: PartialEq,
    {
        if &new == old { Change::none(new) } else { Change::of(project, new) }
    }

    /// The same change, answered with another view of its resource.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Change<U> {
        Change { resource: f(self.resource), feed: self.feed }
    }
}

/// Runs `write` in a transaction made on behalf of `who`, and answers `status` with its resource, seq and
/// transaction ([`written`]). An error from `write` rolls the transaction back.
pub async fn write<T, F>(pool: &Pool, who: &Caller, status: StatusCode, write: F) -> Result<Response, ApiError>
where
    T: Serialize,
    F: AsyncFnOnce(&Transaction<'_>) -> Result<Change<T>, ApiError>,
{
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Transaction-local: the pooled connection forgets it at commit or rollback.
    let act_as = tx.prepare_cached("SELECT boardcast.act_as($1::uuid::text)").await?;
    tx.execute(&act_as, &[&who.user_id]).await?;
    let change = write(&*tx).await?;
    let recorded = match change.feed {
        Some(project) => Some(recorded(&*tx, project).await?),
        None => None,
    };
    tx.commit().await?;
    Ok(written(status, &change.resource, recorded))
}

/// What the write recorded: the seq of the event this transaction's last write produced, and the
/// transaction's id (as events give it: its xid8 in decimal). Called after the writes, in the same
/// transaction: the write's trigger locked the project's feed row until commit, so no other writer can have
/// added an event since, and `feed_seq` (which sees this transaction's own events) gives ours.
async fn recorded(tx: &impl GenericClient, project: Uuid) -> Result<(i64, String), ApiError> {
    let row = tx
        .query_one(
            "SELECT coalesce((SELECT last_seq FROM feed_seq WHERE room = $1::uuid::text), 0), pg_current_xact_id()::text",
            &[&project],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The reply to a write: the resource with `"seq"`, the seq of the event the write produced in its project's
/// feed, and `"tx"`, the transaction that wrote it (the `tx` of its events), both null when the write changed
/// nothing, so produced no event; also sent as `X-Boardcast-Seq` and `X-Boardcast-Tx`.
fn written(status: StatusCode, resource: &impl Serialize, recorded: Option<(i64, String)>) -> Response {
    let mut body = serde_json::to_value(resource).unwrap_or_default();
    if let Value::Object(m) = &mut body {
        m.insert("seq".into(), recorded.as_ref().map_or(Value::Null, |r| Value::from(r.0)));
        m.insert("tx".into(), recorded.as_ref().map_or(Value::Null, |r| Value::from(r.1.as_str())));
    }
    let mut res = ok(status, &body);
    if let Some((seq, tx)) = recorded {
        res.headers_mut().insert("x-boardcast-seq", seq.into());
        if let Ok(tx) = tx.parse() {
            res.headers_mut().insert("x-boardcast-tx", tx);
        }
    }
    res
}

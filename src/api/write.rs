//! The one path of every write: a connection from the pool, a transaction, the handler's checks, locks and
//! writes, the seq of the event the write produced, commit, and the reply that carries that seq.
//!
//! The API never emits: the triggers record an event for each change in the project's feed, in the same
//! transaction. What the API adds is the seq of that event, so a client can recognize its own change on the
//! feed.

use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;

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

/// Runs `write` in a transaction and answers `status` with its resource and seq ([`written`]). An error from
/// `write` rolls the transaction back.
pub async fn write<T, F>(pool: &Pool, status: StatusCode, write: F) -> Result<Response, ApiError>
where
    T: Serialize,
    F: AsyncFnOnce(&Transaction<'_>) -> Result<Change<T>, ApiError>,
{
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let change = write(&*tx).await?;
    let seq = match change.feed {
        Some(project) => Some(seq_of(&*tx, project).await?),
        None => None,
    };
    tx.commit().await?;
    Ok(written(status, &change.resource, seq))
}

/// The seq of the event this transaction's last write produced. Called after the writes, in the same
/// transaction: the write's trigger locked the project's feed row until commit, so no other writer can have
/// added an event since, and `feed_seq` (which sees this transaction's own events) gives ours.
async fn seq_of(tx: &impl GenericClient, project: Uuid) -> Result<i64, ApiError> {
    let row = tx.query_opt("SELECT last_seq FROM feed_seq WHERE room = $1::uuid::text", &[&project]).await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// The reply to a write: the resource with `"seq"`, the seq of the event the write produced in its project's
/// feed (null when the write changed nothing, so produced no event), also sent as `X-Boardcast-Seq`.
fn written(status: StatusCode, resource: &impl Serialize, seq: Option<i64>) -> Response {
    let mut body = serde_json::to_value(resource).unwrap_or_default();
    if let Value::Object(m) = &mut body {
        m.insert("seq".into(), seq.map_or(Value::Null, Value::from));
    }
    let mut res = ok(status, &body);
    if let Some(seq) = seq {
        res.headers_mut().insert("x-boardcast-seq", seq.into());
    }
    res
}

//! Pagination of every list: `?limit=` and `?cursor=` in, `{"items", "next_cursor"}` out.
//!
//! Cursors are keyset-based: a cursor is the sort key of the last item of the previous page (hex of its JSON),
//! so items added or removed while a client pages do not shift the pages. They are opaque to clients.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::http::ApiError;
use crate::http::reply::ok;

/// Default and largest page size of list endpoints.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// Where a page of the board starts: after this `(position, created_at, id)`, each `None` on the first page.
pub type AfterCard = (Option<f64>, Option<DateTime<Utc>>, Option<Uuid>);

/// A page request: `?limit=` (1..=200, default 50) and `?cursor=` (opaque, from the previous page's
/// `next_cursor`).
pub struct Page {
    limit: i64,
    /// The sort key of the last item of the previous page.
    after: Option<Vec<Value>>,
}

impl Page {
    /// The page a query asks for, in a list whose sort key has `key_len` parts.
    pub fn from_query(q: &HashMap<String, String>, key_len: usize) -> Result<Page, ApiError> {
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))),
            },
        };
        let after = match q.get("cursor") {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c) => {
                let bytes = hex::decode(c).map_err(|_| bad_cursor())?;
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Array(a)) if a.len() == key_len => Some(a),
                    _ => return Err(bad_cursor()),
                }
            }
        };
        Ok(Page { limit, after })
    }

    /// The rows a query for this page fetches: one more than the page, which only says there is a next one.
    pub fn rows(&self) -> i64 {
        self.limit + 1
    }

    /// The cursor of a list ordered by `(created_at, id)`: the last item's pair, or none on the first page.
    pub fn after_time_id(&self) -> Result<(Option<DateTime<Utc>>, Option<Uuid>), ApiError> {
        match &self.after {
            Some(k) => Ok((Some(time(&k[0])?), Some(uuid(&k[1])?))),
            None => Ok((None, None)),
        }
    }

    /// The cursor of the board, ordered by `(position, created_at, id)`.
    pub fn after_card(&self) -> Result<AfterCard, ApiError> {
        match &self.after {
            Some(k) => Ok((Some(k[0].as_f64().ok_or_else(bad_cursor)?), Some(time(&k[1])?), Some(uuid(&k[2])?))),
            None => Ok((None, None, None)),
        }
    }

    /// The reply: up to `limit` of `items` (fetched with [`Page::rows`]), and the cursor that continues after
    /// the last one (`key` gives an item's sort key) if there are more.
    pub fn reply<T: Serialize>(&self, mut items: Vec<T>, key: impl Fn(&T) -> Vec<Value>) -> Response {
        let more = items.len() as i64 > self.limit;
        items.truncate(self.limit as usize);
        let next = match items.last() {
            Some(last) if more => Value::from(hex::encode(serde_json::to_vec(&key(last)).unwrap_or_default())),
            _ => Value::Null,
        };
        ok(StatusCode::OK, &json!({"items": items, "next_cursor": next}))
    }
}

/// A cursor that does not decode names no page of the list: 404, as for any unknown name. (Not a 422: a
/// cursor is the server's token, not a value the client chose, and its documented type, a string, cannot say
/// which strings are cursors.)
fn bad_cursor() -> ApiError {
    ApiError::NotFound("the cursor names no page of this list; start again without one".into())
}

/// The cursor's parts, typed; any mismatch is the client's error (a forged or foreign cursor).
fn time(v: &Value) -> Result<DateTime<Utc>, ApiError> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc)).ok_or_else(bad_cursor)
}

fn uuid(v: &Value) -> Result<Uuid, ApiError> {
    v.as_str().and_then(|s| s.parse().ok()).ok_or_else(bad_cursor)
}

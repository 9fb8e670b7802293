//! What requests bring in, read and checked by hand: the JSON body, path ids, and list parameters
//! (limit and cursor).
//!
//! Bodies are parsed as a JSON object and each field is read by name, rather than deserialized into a struct,
//! so that every refusal can name its field: an unknown field, a wrong type, an empty title are each a 422
//! with `field` set. Only a body that is not a JSON object at all is a 400.

use std::collections::HashMap;

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::{Map, Value};
use uuid::Uuid;
use warp::{Filter, Rejection};

use super::error::ApiError;

/// The largest request body accepted, in bytes, but for tasks: the longest text field elsewhere (a comment,
/// 20,000 characters) fits whatever the client's JSON encoder does, even if it escapes every character as
/// a surrogate pair (`\ud83d\ude00`, 12 bytes).
pub const MAX_BODY: u64 = 256 * 1024;

/// Default and largest page size of list endpoints.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// The request body, at most `limit` bytes ([`MAX_BODY`], or more where a route needs it), with a JSON
/// content type or none. A Content-Length above the limit is refused before reading; a chunked body is cut off
/// as soon as it exceeds it.
pub fn body(limit: u64) -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and_then(move |ct: Option<String>, len: Option<u64>, stream| async move {
            read_body(ct, len, stream, limit).await.map_err(warp::reject::custom)
        })
}

async fn read_body<S, B>(ct: Option<String>, len: Option<u64>, stream: S, limit: u64) -> Result<bytes::Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if let Some(ct) = ct {
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(format!("the body must be application/json, not {mime:?}")));
        }
    }
    let too_large = || ApiError::TooLarge(format!("the body is larger than {limit} bytes"));
    if len.is_some_and(|l| l > limit) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if buf.len() + chunk.remaining() > limit as usize {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// A JSON object body whose fields are read one by one.
pub struct Body(Map<String, Value>);

impl Body {
    /// Parses `bytes` as a JSON object that has no fields besides `allowed`. An empty body is `{}`.
    pub fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Body, ApiError> {
        if bytes.is_empty() {
            return Ok(Body(Map::new()));
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(map) = v else {
            return Err(ApiError::BadRequest("the body must be a JSON object".into()));
        };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::invalid(k, format!("unknown field; allowed: {}", allowed.join(", "))));
        }
        Ok(Body(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    /// A text field of 1..=max characters (`min` may be 0). Missing is `None`; null is refused.
    pub fn text(&self, field: &str, min: usize, max: usize) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => check_text(field, s, min, max).map(|_| Some(s.clone())),
            Some(_) => Err(ApiError::invalid(field, "must be a string")),
        }
    }

    pub fn required_text(&self, field: &str, min: usize, max: usize) -> Result<String, ApiError> {
        self.text(field, min, max)?.ok_or_else(|| ApiError::invalid(field, "is required"))
    }

    /// A text field that must be one of `choices`.
    pub fn choice(&self, field: &str, choices: &[&str]) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if choices.contains(&s.as_str()) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(field, format!("must be one of: {}", choices.join(", ")))),
        }
    }

    /// A UUID field that may be null: missing is `None`, null is `Some(None)`.
    pub fn nullable_uuid(&self, field: &str) -> Result<Option<Option<Uuid>>, ApiError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => {
                s.parse().map(|u| Some(Some(u))).map_err(|_| ApiError::invalid(field, "must be a UUID or null"))
            }
            Some(_) => Err(ApiError::invalid(field, "must be a UUID or null")),
        }
    }

    /// A finite number.
    pub fn number(&self, field: &str) -> Result<Option<f64>, ApiError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(ApiError::invalid(field, "must be a finite number")),
            },
            Some(_) => Err(ApiError::invalid(field, "must be a number")),
        }
    }

    /// A card position: finite and within ±1e15, the range the schema allows (so every client's JSON parser
    /// reads it back exactly).
    pub fn position(&self, field: &str) -> Result<Option<f64>, ApiError> {
        match self.number(field)? {
            Some(f) if !(-1e15..=1e15).contains(&f) => Err(ApiError::invalid(field, "must be between -1e15 and 1e15")),
            other => Ok(other),
        }
    }

    /// A positive integer (a version).
    pub fn version(&self, field: &str) -> Result<Option<i64>, ApiError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if v >= 1 => Ok(Some(v)),
                _ => Err(ApiError::invalid(field, "must be an integer of at least 1")),
            },
            Some(_) => Err(ApiError::invalid(field, "must be an integer")),
        }
    }
}

/// Length in characters (what PostgreSQL's `length` counts, and JSON Schema's maxLength), and no NUL, which
/// PostgreSQL text cannot hold.
pub fn check_text(field: &str, s: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(if min > 0 && n < min {
            ApiError::invalid(field, format!("must not be empty (1 to {max} characters)"))
        } else {
            ApiError::invalid(field, format!("must be at most {max} characters"))
        });
    }
    if s.contains('\0') {
        return Err(ApiError::invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// A path segment that names a resource by id. One that is not a UUID names nothing: 404, like an unknown id.
pub fn id(segment: &str, what: &str) -> Result<Uuid, ApiError> {
    segment.parse().map_err(|_| ApiError::NotFound(format!("no such {what}: {segment:?} is not a valid id")))
}

/// The query string as name → value (the last one wins). Only a query that cannot be decoded at all is
/// refused (400); values are judged by the handler, so it can name the parameter.
pub fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Rejection> + Clone {
    warp::query::<Vec<(String, String)>>().map(|pairs: Vec<(String, String)>| pairs.into_iter().collect())
}

/// Refuses a query parameter the endpoint does not take (422 naming it), so that a typo (`?stauts=done`)
/// never silently does nothing, as for body fields.
pub fn known_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    let mut unknown: Vec<&String> = q.keys().filter(|k| !allowed.contains(&k.as_str())).collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(name) => Err(ApiError::invalid(
            name.as_str(),
            format!("unknown query parameter; this endpoint takes: {}", allowed.join(", ")),
        )),
    }
}

/// A page request: `?limit=` (1..=200, default 50) and `?cursor=` (opaque, from the previous page's
/// `next_cursor`).
pub struct Page {
    pub limit: i64,
    /// The sort key of the last item of the previous page.
    pub after: Option<Vec<Value>>,
}

impl Page {
    /// The cursor of a list ordered by `(created_at, id)`: the last item's pair, or none on the first page.
    pub fn after_time_id(&self) -> Result<(Option<chrono::DateTime<chrono::Utc>>, Option<Uuid>), ApiError> {
        match &self.after {
            Some(k) => Ok((Some(cursor_time(&k[0])?), Some(cursor_uuid(&k[1])?))),
            None => Ok((None, None)),
        }
    }

    pub fn from_query(q: &HashMap<String, String>, key_len: usize) -> Result<Page, ApiError> {
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}")));
                }
            },
        };
        let after = match q.get("cursor") {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c) => {
                let bad = bad_cursor;
                let bytes = hex::decode(c).map_err(|_| bad())?;
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Array(a)) if a.len() == key_len => Some(a),
                    _ => return Err(bad()),
                }
            }
        };
        Ok(Page { limit, after })
    }
}

/// A cursor that does not decode names no page of the list: 404, as for any unknown name. (Not a 422: a
/// cursor is the server's token, not a value the client chose, and its documented type, a string, cannot say
/// which strings are cursors.)
fn bad_cursor() -> ApiError {
    ApiError::NotFound("the cursor names no page of this list; start again without one".into())
}

/// The cursor that continues after `key` (the sort key of a page's last item).
pub fn cursor(key: &[&Value]) -> String {
    hex::encode(serde_json::to_vec(key).unwrap_or_default())
}

/// The cursor's parts, typed; any mismatch is the client's error (a forged or foreign cursor).
pub fn cursor_f64(v: &Value) -> Result<f64, ApiError> {
    v.as_f64().ok_or_else(bad_cursor)
}

pub fn cursor_time(v: &Value) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok_or_else(bad_cursor)
}

pub fn cursor_uuid(v: &Value) -> Result<Uuid, ApiError> {
    v.as_str().and_then(|s| s.parse().ok()).ok_or_else(bad_cursor)
}

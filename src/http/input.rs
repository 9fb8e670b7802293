//! What requests bring in, read and checked: the JSON body, path ids, and query strings.
//!
//! A body becomes a typed request ([`Request`]) field by field rather than through serde's derive, so that
//! every refusal can name its field: an unknown field, a wrong type, an empty title are each a 422 with
//! `field` set. Only a body that is not a JSON object at all is a 400. Each field's value type says what it
//! accepts ([`FromField`]); absent and null stay distinct.

use std::collections::HashMap;

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::{Map, Value};
use uuid::Uuid;
use warp::{Filter, Rejection};

use super::error::ApiError;
use super::gate::{Door, door};

/// The largest request body accepted, in bytes, but for tasks: the longest text field elsewhere (a comment,
/// 20,000 characters) fits whatever the client's JSON encoder does, even if it escapes every character as
/// a surrogate pair (`\ud83d\ude00`, 12 bytes).
pub const MAX_BODY: u64 = 256 * 1024;

/// The request body, at most `limit` bytes ([`MAX_BODY`], or more where a route needs it), with a JSON
/// content type or none. A Content-Length above the limit is refused before reading; a chunked body is cut off
/// as soon as it exceeds it. The whole body must have arrived within the body timeout of the moment the route
/// starts reading it (after the token is checked: the server's own delays do not count against the client) (408,
/// and the connection closes): a client that trickles a body in, or stops before its end, holds a
/// connection and a buffer of up to `limit` bytes, and must not hold them for long.
pub fn body(limit: u64) -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .and(door())
        .and(warp::body::stream())
        .and_then(move |ct: Option<String>, len: Option<u64>, door: Door, stream| async move {
            let timeout = door.gate.settings.body_timeout;
            let reading = read_body(ct, len, stream, limit);
            match tokio::time::timeout(timeout, reading).await {
                Ok(read) => read.map_err(warp::reject::custom),
                Err(_) => Err(warp::reject::custom(ApiError::Timeout(format!(
                    "the body did not arrive within {} seconds",
                    timeout.as_secs_f64()
                )))),
            }
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

/// A JSON object body, before it becomes a request: its fields by name, each read into its typed value.
pub struct Fields(Map<String, Value>);

/// A request body, typed. `FIELDS` are the names it may have; [`Request::read`] reads them in the order in
/// which their refusals take precedence.
pub trait Request: Sized {
    const FIELDS: &'static [&'static str];
    fn read(fields: &Fields) -> Result<Self, ApiError>;
}

/// A value a body field may hold. The error is the message of the field's 422; the caller names the field.
pub trait FromField: Sized {
    fn from_field(value: &Value) -> Result<Self, String>;
}

/// `bytes` as the request `R`: 400 unless a JSON object (an empty body is `{}`), then a 422 naming the first
/// unknown field, or the first field `R` refuses.
pub fn parse<R: Request>(bytes: &[u8]) -> Result<R, ApiError> {
    R::read(&Fields::parse(bytes, R::FIELDS)?)
}

impl Fields {
    fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Fields, ApiError> {
        if bytes.is_empty() {
            return Ok(Fields(Map::new()));
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(map) = v else {
            return Err(ApiError::BadRequest("the body must be a JSON object".into()));
        };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::invalid(k, format!("unknown field; allowed: {}", allowed.join(", "))));
        }
        Ok(Fields(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The field, if the body has it. A null is a value here: only a type whose JSON may be null takes it.
    pub fn get<T: FromField>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.0.get(name).map(|v| T::from_field(v).map_err(|m| ApiError::invalid(name, m))).transpose()
    }

    pub fn required<T: FromField>(&self, name: &str) -> Result<T, ApiError> {
        self.get(name)?.ok_or_else(|| ApiError::invalid(name, "is required"))
    }
}

/// A UUID that may be null (unassigned, say). Absent from the body is the `None` of [`Fields::get`] around it.
impl FromField for Option<Uuid> {
    fn from_field(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) => s.parse().map(Some).map_err(|_| "must be a UUID or null".into()),
            _ => Err("must be a UUID or null".into()),
        }
    }
}

/// Text of `min..=max` characters (what PostgreSQL's `length` counts, and JSON Schema's maxLength), without
/// NUL, which PostgreSQL text cannot hold. The error is the message of a 422.
pub fn check_text(s: &str, min: usize, max: usize) -> Result<(), String> {
    let n = s.chars().count();
    if min > 0 && n < min {
        return Err(format!("must not be empty (1 to {max} characters)"));
    }
    if n > max {
        return Err(format!("must be at most {max} characters"));
    }
    if s.contains('\0') {
        return Err("must not contain NUL characters".into());
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

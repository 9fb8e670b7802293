//! The one error type of the HTTP layer. Each variant documents its status; every error leaves the server as
//! `{"error": {"code": "...", "message": "..."}}` (plus `field` for 422, `current` for 409 and `retry_after`
//! for 429). Internal errors
//! are logged with their cause and answered with a generic message: causes are never leaked.

use std::convert::Infallible;
use std::time::Duration;

use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reject::Rejection;
use warp::reply::{Reply, Response};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be understood (malformed JSON, a bad query string, an id that is not a UUID).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or a token that is unknown, expired or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller is known and may see the resource, but not do this to it.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource, or the caller may not see it (the two look the same on purpose).
    #[error("{0}")]
    NotFound(String),
    /// 409: the write conflicts with the current state; `current` is that state when there is one to show.
    #[error("{message}")]
    Conflict { message: String, current: Option<Value> },
    /// 405: the path exists but not with this method; `allow` lists the methods it has (the `Allow` header).
    #[error("method not allowed on this route; allowed: {allow}")]
    MethodNotAllowed { allow: String },
    /// 408: the body did not arrive within the body timeout. The connection is closed after the answer.
    #[error("{0}")]
    Timeout(String),
    /// 413: the body is larger than the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a body was sent with a content type other than JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: a field holds a value that is not allowed.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// 429: the client must wait `retry_after` (also the `Retry-After` header, in whole seconds) before trying
    /// again.
    #[error("{message}")]
    RateLimited { message: String, retry_after: Duration },
    /// 503: a dependency (the database) is not reachable right now.
    #[error("{0}")]
    Unavailable(String),
    /// 429: the caller holds as many connections as one user may; `Retry-After: retry_after` (seconds).
    #[error("{message}")]
    TooManyConnections { message: String, retry_after: u64 },
    /// 503: the server holds as many connections as it may; `Retry-After: retry_after` (seconds).
    #[error("{message}")]
    ServerFull { message: String, retry_after: u64 },
    /// 500: a bug or an unexpected failure. The message is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field: field.into(), message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyConnections { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ServerFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Timeout(_) => "timeout",
            ApiError::TooLarge(_) => "too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Invalid { .. } => "invalid",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::TooManyConnections { .. } => "too_many_connections",
            ApiError::ServerFull { .. } => "server_full",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn into_response(self) -> Response {
        let mut body = json!({"code": self.code(), "message": self.to_string()});
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!("internal error: {cause}");
                body["message"] = json!("internal error; it has been logged");
            }
            ApiError::Invalid { field, message } => {
                body["field"] = json!(field);
                body["message"] = json!(message);
            }
            ApiError::Conflict { current: Some(current), .. } => body["current"] = current.clone(),
            ApiError::RateLimited { retry_after, .. } => body["retry_after"] = json!(retry_secs(*retry_after)),
            _ => {}
        }
        let status = self.status();
        let mut res = warp::reply::with_status(warp::reply::json(&json!({"error": body})), status).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert("www-authenticate", "Bearer".parse().unwrap());
        }
        match &self {
            ApiError::RateLimited { retry_after, .. } => {
                res.headers_mut().insert("retry-after", retry_secs(*retry_after).into());
            }
            // The rest of the body may still be on its way: the connection cannot serve another request.
            ApiError::Timeout(_) => {
                res.headers_mut().insert("connection", "close".parse().unwrap());
            }
            ApiError::TooManyConnections { retry_after, .. } | ApiError::ServerFull { retry_after, .. } => {
                res.headers_mut().insert("retry-after", (*retry_after).into());
            }
            _ => {}
        }
        if let ApiError::MethodNotAllowed { allow } = &self
            && let Ok(v) = allow.parse()
        {
            res.headers_mut().insert("allow", v);
        }
        res
    }
}

impl From<crate::error::Error> for ApiError {
    fn from(e: crate::error::Error) -> ApiError {
        use crate::error::Error;
        match e {
            Error::Db(db) => ApiError::from(db),
            Error::Pool(p) => {
                tracing::warn!("no database connection: {p}");
                ApiError::Unavailable("the database is not reachable right now; try again".into())
            }
            // A read shared by several requests (a batch of token lookups) is a query that failed for all.
            Error::Shared(e) => {
                tracing::warn!("a shared database read failed: {e}");
                ApiError::Unavailable("the database is not reachable right now; try again".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> ApiError {
        crate::error::Error::Pool(e).into()
    }
}

/// Constraint violations become the client's error (409/422); a lost connection becomes 503; anything else
/// is internal.
impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        use tokio_postgres::error::SqlState;
        let Some(db) = e.as_db_error() else {
            if e.is_closed() || e.to_string().contains("connection") {
                return ApiError::Unavailable("the database is not reachable right now; try again".into());
            }
            return ApiError::Internal(crate::error::chain(&e));
        };
        let constraint = db.constraint().unwrap_or("").to_string();
        match *db.code() {
            SqlState::UNIQUE_VIOLATION => {
                ApiError::Conflict { message: format!("already exists ({constraint})"), current: None }
            }
            SqlState::FOREIGN_KEY_VIOLATION => {
                ApiError::invalid(&fk_field(&constraint), "refers to something that does not exist")
            }
            SqlState::CHECK_VIOLATION => ApiError::invalid(&check_field(&constraint), "value not allowed"),
            SqlState::NOT_NULL_VIOLATION => ApiError::invalid(db.column().unwrap_or("body"), "is required"),
            SqlState::STRING_DATA_RIGHT_TRUNCATION | SqlState::NUMERIC_VALUE_OUT_OF_RANGE => {
                ApiError::invalid(db.column().unwrap_or("body"), "value out of range")
            }
            SqlState::T_R_SERIALIZATION_FAILURE | SqlState::T_R_DEADLOCK_DETECTED => {
                ApiError::Conflict { message: "a concurrent write got in the way; retry".into(), current: None }
            }
            // Text PostgreSQL cannot store (a NUL character): the API validates first, this is the safety net.
            SqlState::CHARACTER_NOT_IN_REPERTOIRE | SqlState::UNTRANSLATABLE_CHARACTER => {
                ApiError::invalid(db.column().unwrap_or("body"), "contains a character that cannot be stored")
            }
            SqlState::INVALID_TEXT_REPRESENTATION | SqlState::INVALID_DATETIME_FORMAT => {
                ApiError::BadRequest("a value could not be parsed".into())
            }
            SqlState::ADMIN_SHUTDOWN | SqlState::CANNOT_CONNECT_NOW => {
                ApiError::Unavailable("the database is restarting; try again".into())
            }
            _ => ApiError::Internal(crate::error::chain(&e)),
        }
    }
}

/// A wait in whole seconds, rounded up: a client that waits that long finds the budget refilled.
fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `tasks_assignee_id_fkey` → `assignee_id`.
fn fk_field(constraint: &str) -> String {
    let s = constraint.strip_suffix("_fkey").unwrap_or(constraint);
    for t in ["project_members_", "comments_", "tasks_", "projects_", "api_tokens_"] {
        if let Some(f) = s.strip_prefix(t) {
            return f.to_string();
        }
    }
    s.to_string()
}

/// `tasks_status_check` → `status`.
fn check_field(constraint: &str) -> String {
    fk_field(constraint.strip_suffix("_check").unwrap_or(constraint))
}

/// The single place where rejections become responses: our own errors, and warp's (unknown path, wrong
/// method, bad body, ...) in the same JSON shape.
pub async fn recover(r: Rejection) -> Result<Response, Infallible> {
    let e = if let Some(e) = r.find::<ApiError>() {
        e.clone()
    } else if r.is_not_found() {
        ApiError::NotFound("no such route".into())
    } else if let Some(e) = r.find::<warp::filters::body::BodyDeserializeError>() {
        ApiError::BadRequest(format!("the body is not valid JSON for this request: {e}"))
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::TooLarge("the body is too large".into())
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::UnsupportedMediaType("send the body as application/json".into())
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        ApiError::BadRequest(format!("bad query string: {e}"))
    } else if let Some(e) = r.find::<warp::reject::MissingHeader>() {
        ApiError::BadRequest(e.to_string())
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        ApiError::BadRequest(e.to_string())
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::BadRequest("a Content-Length is required".into())
    } else if let Some(e) = r.find::<warp::filters::cors::CorsForbidden>() {
        ApiError::Forbidden(format!("cross-origin request refused: {e}"))
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        let res = json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this route"}});
        return Ok(warp::reply::with_status(warp::reply::json(&res), StatusCode::METHOD_NOT_ALLOWED).into_response());
    } else {
        ApiError::Internal(format!("unhandled rejection: {r:?}"))
    };
    Ok(e.into_response())
}

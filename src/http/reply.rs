//! JSON replies, and a handler's result as a response.

use serde::Serialize;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;

/// A handler's result as a response: errors take the one JSON shape.
pub fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(ApiError::into_response)
}

/// A JSON reply.
pub fn ok(status: StatusCode, body: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

//! The board's rows as the API returns them: the same JSON the feed carries for them (read with
//! `row_to_json`/`to_jsonb`, so every value is as PostgreSQL renders it), typed.
//!
//! Tasks are read with `row_to_json`, not `to_jsonb`: jsonb renders a double as a numeric without exponent (a
//! 309-digit integer for the largest one), which serde_json cannot parse back; json keeps PostgreSQL's
//! shortest exact float text. Both give the same JSON values otherwise.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::values::{ProjectStatus, Role, TaskStatus};
use crate::http::ApiError;

/// A point in time exactly as PostgreSQL renders it in JSON, so it is the same text the feed's rows carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub status: ProjectStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A project as one of its members sees it: with their role.
#[derive(Debug, Serialize)]
pub struct ProjectOf {
    #[serde(flatten)]
    pub project: Project,
    pub role: Role,
}

/// A membership, with the user's name (the feed's rows carry only ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub project_id: Uuid,
    pub user_id: Uuid,
    pub user_name: String,
    pub role: Role,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub assignee_id: Option<Uuid>,
    /// As PostgreSQL renders it (`1`, `0.5`, `1e+15`): a JSON number of its own kind, integer or not.
    pub position: serde_json::Number,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    pub id: Uuid,
    pub task_id: Uuid,
    pub project_id: Uuid,
    pub author_id: Option<Uuid>,
    pub body: String,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The caller, `GET /api/me`.
#[derive(Debug, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub created_at: Timestamp,
}

/// An API token, without its secret but when it is issued.
#[derive(Debug, Serialize, Deserialize)]
pub struct Token {
    pub id: Uuid,
    pub label: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// When it stops working on its own; `null`: when revoked.
    pub expires_at: Option<Timestamp>,
    /// In lists: whether this is the token of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
    /// Only when issued: the secret, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The answer to a delete: the deleted thing's ids (the row itself is in the event).
#[derive(Debug, Default, Serialize)]
pub struct Deleted {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    pub deleted: bool,
}

/// Column `i` of `row`, a JSON rendering of a row, as the record `T`. A mismatch is a bug (500).
pub fn from_json<T: DeserializeOwned>(row: &Row, i: usize) -> Result<T, ApiError> {
    Ok(row.try_get::<_, Json<T>>(i)?.0)
}

/// A record's JSON, for the `current` of a 409.
pub fn to_value<T: Serialize>(record: &T) -> serde_json::Value {
    serde_json::to_value(record).unwrap_or_default()
}

//! Who may see and change what, and the row locks a write takes while it checks.
//!
//! A project the caller is not a member of does not exist for them: everything in it is a 404, never a 403.
//! The locks are taken in one order everywhere, which is what keeps concurrent writes from deadlocking:
//! the project's row first, then the caller's membership, then a task or comment. (A project delete locks the
//! project and then, cascading, its tasks; an owner removing another locks the project, then memberships.)

use serde::de::DeserializeOwned;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::records::{Comment, Task, from_json};
use super::values::{ProjectStatus, Role};
use crate::auth::Caller;
use crate::http::ApiError;

fn no_project() -> ApiError {
    ApiError::NotFound("no such project".into())
}

/// Locks a project's row (`lock`: a row-lock clause such as `FOR UPDATE`) before anything else of it, the order
/// that keeps owner actions and membership changes from deadlocking; 404 if there is no such project.
pub async fn lock_project(db: &impl GenericClient, project: Uuid, lock: &str) -> Result<(), ApiError> {
    db.query_opt(&format!("SELECT 1 FROM projects WHERE id = $1 {lock}"), &[&project])
        .await?
        .map(|_| ())
        .ok_or_else(no_project)
}

/// The caller's role in a project; a project they are not a member of does not exist for them (404).
pub async fn role_in(db: &impl GenericClient, project: Uuid, who: &Caller) -> Result<Role, ApiError> {
    let sql = "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2";
    role(db.query_opt(sql, &[&project, &who.user_id]).await?.ok_or_else(no_project)?, 0)
}

/// [`role_in`] for a write, inside its transaction: the membership row is locked (FOR KEY SHARE) until the
/// write commits, so a concurrent removal waits for it instead of racing it. Whoever was removed cannot write
/// after the removal's event, and the feed's order tells the truth.
pub async fn role_in_locked(db: &impl GenericClient, project: Uuid, who: &Caller) -> Result<Role, ApiError> {
    let sql = "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2 FOR KEY SHARE";
    role(db.query_opt(sql, &[&project, &who.user_id]).await?.ok_or_else(no_project)?, 0)
}

/// Owner-only actions (always writes): 404 to non-members, 403 to members.
pub async fn require_owner(db: &impl GenericClient, project: Uuid, who: &Caller) -> Result<(), ApiError> {
    match role_in_locked(db, project, who).await? {
        Role::Owner => Ok(()),
        Role::Member => Err(ApiError::Forbidden("only an owner of the project may do this".into())),
    }
}

/// For a write to the board (tasks, comments): the caller must be a member, and the project active. Tasks and
/// comments of an archived project are read-only through the API: archiving is how an owner freezes a finished
/// board (members and the project itself stay editable by owners, so it can be reactivated). SQL writers are
/// not held to this: they are trusted, like any admin tool.
///
/// Locks, until the write commits: the membership (FOR KEY SHARE), so a concurrent removal waits for the write
/// instead of racing it, and the project (FOR KEY SHARE), so an archive (which takes FOR UPDATE) waits for
/// writes already let through and none slips in after it. Neither blocks membership changes (NO KEY UPDATE).
/// Call it before locking any task or comment: a project delete locks the project and then, cascading, its
/// tasks; taking the project first is what keeps the two from deadlocking.
pub async fn member_of_active(db: &impl GenericClient, project: Uuid, who: &Caller) -> Result<Role, ApiError> {
    let row = db
        .query_opt(
            "SELECT m.role, p.status FROM projects p JOIN project_members m ON m.project_id = p.id AND m.user_id = $2
              WHERE p.id = $1 FOR KEY SHARE OF p, m",
            &[&project, &who.user_id],
        )
        .await?
        .ok_or_else(no_project)?;
    if ProjectStatus::parse(row.get(1)) == Some(ProjectStatus::Archived) {
        return Err(ApiError::Conflict {
            message: "the project is archived: its tasks and comments are read-only until an owner sets its status \
                      to active"
                .into(),
            current: None,
        });
    }
    role(row, 0)
}

fn role(row: Row, i: usize) -> Result<Role, ApiError> {
    let text: &str = row.try_get(i)?;
    Role::parse(text).ok_or_else(|| ApiError::Internal(format!("unknown role {text:?}")))
}

/// A record that lives in a project (a task, a comment) and is visible to that project's members.
pub trait InProject: DeserializeOwned {
    const TABLE: &'static str;
    /// What a 404 calls it.
    const WHAT: &'static str;
    /// The SQL function that renders its row as JSON.
    const TO_JSON: &'static str;
    fn project_id(&self) -> Uuid;
}

impl InProject for Task {
    const TABLE: &'static str = "tasks";
    const WHAT: &'static str = "task";
    const TO_JSON: &'static str = "row_to_json";
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}

impl InProject for Comment {
    const TABLE: &'static str = "comments";
    const WHAT: &'static str = "comment";
    const TO_JSON: &'static str = "to_jsonb";
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}

/// A task or comment in a project the caller is a member of; 404 otherwise.
pub async fn visible<T: InProject>(db: &impl GenericClient, id: Uuid, who: &Caller) -> Result<T, ApiError> {
    let sql = format!(
        "SELECT {}(x) FROM {} x JOIN project_members m ON m.project_id = x.project_id AND m.user_id = $2
          WHERE x.id = $1",
        T::TO_JSON,
        T::TABLE
    );
    let row = db.query_opt(&sql, &[&id, &who.user_id]).await?.ok_or_else(not_found::<T>)?;
    from_json(&row, 0)
}

/// [`visible`], for a write: the project must be active ([`member_of_active`], which takes the project's and
/// the membership's locks first), then the row is locked so the version checked is the version overwritten.
pub async fn visible_for_write<T: InProject>(db: &impl GenericClient, id: Uuid, who: &Caller) -> Result<T, ApiError> {
    let row = db.query_opt(&format!("SELECT project_id FROM {} WHERE id = $1", T::TABLE), &[&id]).await?;
    let project: Uuid = row.ok_or_else(not_found::<T>)?.get(0);
    member_of_active(db, project, who).await.map_err(|e| match e {
        ApiError::NotFound(_) => not_found::<T>(),
        other => other,
    })?;
    let sql = format!(
        "SELECT {}(x) FROM {} x JOIN project_members m ON m.project_id = x.project_id AND m.user_id = $2
          WHERE x.id = $1 FOR UPDATE OF x",
        T::TO_JSON,
        T::TABLE
    );
    let row = db.query_opt(&sql, &[&id, &who.user_id]).await?.ok_or_else(not_found::<T>)?;
    let record: T = from_json(&row, 0)?;
    if record.project_id() != project {
        // Moved to another project (by SQL) between the two reads: its locks are the wrong ones.
        return Err(ApiError::Conflict {
            message: format!("the {} moved to another project; retry", T::WHAT),
            current: None,
        });
    }
    Ok(record)
}

fn not_found<T: InProject>() -> ApiError {
    ApiError::NotFound(format!("no such {}", T::WHAT))
}

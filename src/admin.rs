//! Operator tasks, shared by the CLI and the tests: users, tokens, memberships, the demo project, and
//! retention of recorded events.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth;
use crate::config::Retention;
use crate::error::{Error, Result};

/// The demo project's people: the first owns it, the second is a member.
pub const DEMO_USERS: &[&str] = &["alice", "bob"];
pub const DEMO_PROJECT: &str = "Demo board";

/// Creates a user and returns `(user id, token)`.
pub async fn add_user(db: &impl GenericClient, name: &str) -> Result<(Uuid, String)> {
    let row = db
        .query_opt("INSERT INTO users (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id", &[&name])
        .await
        .map_err(|e| match e.as_db_error() {
            Some(d) if d.code() == &tokio_postgres::error::SqlState::CHECK_VIOLATION => {
                Error::Usage(format!("invalid user name {name:?}: use 1-64 letters, digits, '_', '.' or '-'"))
            }
            _ => e.into(),
        })?
        .ok_or_else(|| Error::Usage(format!("user {name:?} already exists; use `boardcast token issue {name}`")))?;
    let id: Uuid = row.get(0);
    let (_, token) = auth::issue_token(db, id, "created with user add", None).await?;
    Ok((id, token))
}

pub async fn user_id(db: &impl GenericClient, name: &str) -> Result<Uuid> {
    db.query_opt("SELECT id FROM users WHERE name = $1", &[&name])
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| Error::Usage(format!("no user named {name:?}")))
}

/// Issues another token for an existing user, valid for `lifetime` (`None`: until revoked): `(token id,
/// token)`. The operator's tokens have no default expiry and no limit on their number: they are for services
/// and scripts an operator sets up, and revokes when they go.
pub async fn issue_token(
    db: &impl GenericClient,
    user: &str,
    label: &str,
    lifetime: Option<Duration>,
) -> Result<(Uuid, String)> {
    let id = user_id(db, user).await?;
    auth::issue_token(db, id, label, lifetime).await
}

/// Revokes a token, named by its id or by the token itself. Connections using it are closed at once.
pub async fn revoke_token(db: &impl GenericClient, token_or_id: &str) -> Result<Uuid> {
    let row = match token_or_id.parse::<Uuid>() {
        Ok(id) => {
            db.query_opt(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING id",
                &[&id],
            )
            .await?
        }
        Err(_) => {
            db.query_opt(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_hash = $1 RETURNING id",
                &[&auth::hash_token(token_or_id)],
            )
            .await?
        }
    };
    row.map(|r| r.get(0)).ok_or_else(|| Error::Usage("no such token".into()))
}

/// A token as `boardcast token list` shows it.
pub struct TokenListing {
    pub id: Uuid,
    pub label: String,
    /// `YYYY-MM-DD HH:MI`, like `expires`.
    pub created: String,
    pub revoked: bool,
    pub expires: Option<String>,
    pub expired: bool,
}

/// Lists a user's tokens, oldest first.
pub async fn list_tokens(db: &impl GenericClient, user: &str) -> Result<Vec<TokenListing>> {
    let id = user_id(db, user).await?;
    let rows = db
        .query(
            "SELECT id, label, to_char(created_at, 'YYYY-MM-DD HH24:MI'), revoked_at IS NOT NULL,
                    to_char(expires_at, 'YYYY-MM-DD HH24:MI'), coalesce(expires_at <= now(), false)
               FROM api_tokens WHERE user_id = $1 ORDER BY created_at",
            &[&id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TokenListing {
            id: r.get(0),
            label: r.get(1),
            created: r.get(2),
            revoked: r.get(3),
            expires: r.get(4),
            expired: r.get(5),
        })
        .collect())
}

/// Gives `user` access to `project` and returns the role they now have. Without a role, a new member joins as
/// `member` and an existing one keeps their role; with one, it is set. Like the API, it refuses to demote the
/// project's last owner: a project nobody owns cannot be managed through the API any more.
pub async fn add_member(
    db: &mut tokio_postgres::Client,
    project: Uuid,
    user: &str,
    role: Option<&str>,
) -> Result<String> {
    if let Some(role) = role
        && !matches!(role, "owner" | "member")
    {
        return Err(Error::Usage(format!("role must be owner or member, not {role:?}")));
    }
    let user_id = user_id(&*db, user).await?;
    let tx = db.transaction().await?;
    // Serializes with the API's membership changes, which lock the project row the same way.
    if tx.query_opt("SELECT 1 FROM projects WHERE id = $1 FOR NO KEY UPDATE", &[&project]).await?.is_none() {
        return Err(Error::Usage(format!("no project {project}")));
    }
    let current: Option<String> = tx
        .query_opt("SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2", &[&project, &user_id])
        .await?
        .map(|r| r.get(0));
    let role = match (current.as_deref(), role) {
        (Some(current), None) => return Ok(current.to_string()),
        (Some(current), Some(role)) if current == role => return Ok(current.to_string()),
        (Some(_), Some(role)) => {
            let owners: i64 = tx
                .query_one("SELECT count(*) FROM project_members WHERE project_id = $1 AND role = 'owner'", &[&project])
                .await?
                .get(0);
            if role != "owner" && owners <= 1 {
                return Err(Error::Usage(format!(
                    "{user} is the last owner of {project}; make someone else an owner first"
                )));
            }
            tx.execute(
                "UPDATE project_members SET role = $3 WHERE project_id = $1 AND user_id = $2",
                &[&project, &user_id, &role],
            )
            .await?;
            role
        }
        (None, role) => {
            let role = role.unwrap_or("member");
            tx.execute(
                "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3)",
                &[&project, &user_id, &role],
            )
            .await?;
            role
        }
    };
    tx.commit().await?;
    Ok(role.to_string())
}

/// Creates a project owned by `owner` and returns its id.
pub async fn add_project(db: &mut tokio_postgres::Client, name: &str, owner: &str) -> Result<Uuid> {
    let owner_id = user_id(&*db, owner).await?;
    let tx = db.transaction().await?;
    let id: Uuid = tx.query_one("INSERT INTO projects (name) VALUES ($1) RETURNING id", &[&name]).await?.get(0);
    tx.execute("INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'owner')", &[&id, &owner_id])
        .await?;
    tx.commit().await?;
    Ok(id)
}

/// For `make run`: the demo users and project, created if absent, and a fresh token for each user. The first
/// user owns the project, the second is a member: two people, so the board shows one's change on the other's
/// screen. Returns the project's id and `(user name, token)` for each.
pub async fn demo(db: &mut tokio_postgres::Client) -> Result<(Uuid, Vec<(&'static str, String)>)> {
    for name in DEMO_USERS {
        db.execute("INSERT INTO users (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", &[name]).await?;
    }
    let owner = DEMO_USERS[0];
    let existing = db
        .query_opt(
            "SELECT p.id FROM projects p JOIN project_members m ON m.project_id = p.id
               JOIN users u ON u.id = m.user_id
              WHERE u.name = $1 AND p.name = $2 ORDER BY p.created_at LIMIT 1",
            &[&owner, &DEMO_PROJECT],
        )
        .await?;
    let project = match existing {
        Some(r) => r.get(0),
        None => add_project(db, DEMO_PROJECT, owner).await?,
    };
    let mut tokens = Vec::new();
    for name in DEMO_USERS {
        add_member(db, project, name, None).await?;
        let (_, token) = issue_token(&*db, name, "demo", None).await?;
        tokens.push((*name, token));
    }
    Ok((project, tokens))
}

/// A tracked table, as `boardcast.tracked` lists it.
pub struct Tracked {
    pub table: String,
    pub room: String,
    pub exclude: Vec<String>,
    pub ends_room: bool,
}

const TRACKED: &str = "SELECT table_name::text, room, exclude, ends_room FROM boardcast.tracked";

fn tracked_row(r: &tokio_postgres::Row) -> Tracked {
    Tracked { table: r.get(0), room: r.get(1), exclude: r.get(2), ends_room: r.get(3) }
}

/// Tracks `table` (`boardcast.track`): its writes become events in the room `room` gives each row.
pub async fn track(
    db: &impl GenericClient,
    table: &str,
    room: &str,
    exclude: &[String],
    ends_room: bool,
) -> Result<Tracked> {
    let sql = "SELECT table_name::text, room, exclude, ends_room FROM boardcast.track($1::text::regclass, $2, $3, $4)";
    let row = db.query_one(sql, &[&table, &room, &exclude, &ends_room]).await.map_err(said)?;
    Ok(tracked_row(&row))
}

/// Stops tracking `table` (`boardcast.untrack`); false if it was not tracked.
pub async fn untrack(db: &impl GenericClient, table: &str) -> Result<bool> {
    Ok(db.query_one("SELECT boardcast.untrack($1::text::regclass)", &[&table]).await.map_err(said)?.get(0))
}

/// What is tracked.
pub async fn tracked(db: &impl GenericClient) -> Result<Vec<Tracked>> {
    Ok(db.query(&format!("{TRACKED} ORDER BY table_name::text"), &[]).await?.iter().map(tracked_row).collect())
}

/// What the database said, as a person at a terminal wants to read it: its message and hint.
fn said(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(d) => Error::Usage(match d.hint() {
            Some(hint) => format!("{}\n{hint}", d.message()),
            None => d.message().to_string(),
        }),
        None => e.into(),
    }
}

/// Prunes recorded events on a timer. With several servers on one database, an advisory lock lets one of
/// them do it at a time. Deletes are batched inside `boardcast_prune_events`, and writers never wait on them.
pub async fn retention_loop(pool: Pool, retention: Retention, shutdown: CancellationToken) {
    if retention.max_age.is_none() && retention.max_per_project.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(retention.interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A prune can wait a long time on a database that stopped answering (up to the TCP user timeout):
        // shutdown does not wait for it. An interrupted prune loses nothing; the next one carries on.
        let pruned = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = prune(&pool, &retention) => r,
        };
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!("retention removed {n} recorded events"),
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
    }
}

pub async fn prune(pool: &Pool, retention: &Retention) -> Result<i64> {
    const BATCH: i32 = 10_000;
    let client = pool.get().await?;
    let locked: bool =
        client.query_one("SELECT pg_try_advisory_lock(hashtext('boardcast.retention'))", &[]).await?.get(0);
    if !locked {
        return Ok(0); // another server is pruning
    }
    let age = retention.max_age.map(|d| format!("{} seconds", d.as_secs()));
    let mut total = 0;
    let outcome = async {
        loop {
            // Each call is its own short transaction.
            let n: i64 = client
                .query_one(
                    "SELECT boardcast_prune_events($1::text::interval, $2, $3)",
                    &[&age, &retention.max_per_project, &BATCH],
                )
                .await?
                .get(0);
            total += n;
            if n < BATCH as i64 {
                return Ok::<_, Error>(());
            }
        }
    }
    .await;
    client.execute("SELECT pg_advisory_unlock(hashtext('boardcast.retention'))", &[]).await?;
    outcome.map(|()| total)
}

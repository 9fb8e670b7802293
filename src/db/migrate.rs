//! The schema, and bringing a database to it.
//!
//! Two kinds of SQL, applied in one transaction under an advisory lock, so that servers starting together take
//! turns and each sees what the previous one did:
//!
//! * Migrations (`sql/migrations/`) hold what holds data: tables, indexes, constraints, views. Each is applied
//!   once, in order, and recorded in `schema_migrations` by name with the SHA-256 of its text. An applied
//!   migration never changes (a change is a new migration), and a start refuses a database whose recorded
//!   text differs from this build's, naming the migration.
//! * Function files (`sql/functions/`) hold the code: functions with `CREATE OR REPLACE` and their triggers
//!   with `boardcast_ensure_trigger`. They are applied at every start, so the database always runs this
//!   build's code, and a function is changed by editing it where it is.
//!
//! Databases created before this baseline recorded the migrations `001_domain` .. `005_retention_…`, without
//! checksums. Their tables are the baseline's, so they are adopted: see [`adopt_pre_baseline`].

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, Transaction};

use crate::error::{Error, Result};

/// A migration: applied once, recorded by name with the SHA-256 of `sql`.
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

/// The migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { name: "0001_domain", sql: include_str!("../../sql/migrations/0001_domain.sql") },
    Migration { name: "0002_feed", sql: include_str!("../../sql/migrations/0002_feed.sql") },
    Migration { name: "0003_token_expiry", sql: include_str!("../../sql/migrations/0003_token_expiry.sql") },
    Migration { name: "0004_membership_floor", sql: include_str!("../../sql/migrations/0004_membership_floor.sql") },
    Migration { name: "0005_rooms", sql: include_str!("../../sql/migrations/0005_rooms.sql") },
    Migration { name: "0006_event_tx", sql: include_str!("../../sql/migrations/0006_event_tx.sql") },
];

/// The function files, in the order they are applied at every start (`triggers` defines the helper the
/// others attach their triggers with).
pub const FUNCTIONS: &[(&str, &str)] = &[
    ("triggers", include_str!("../../sql/functions/triggers.sql")),
    ("domain", include_str!("../../sql/functions/domain.sql")),
    ("feed", include_str!("../../sql/functions/feed.sql")),
    ("membership", include_str!("../../sql/functions/membership.sql")),
    ("retention", include_str!("../../sql/functions/retention.sql")),
];

/// The names a database created before the baseline recorded, in the order they were applied.
const PRE_BASELINE: &[&str] = &[
    "001_domain",
    "002_feed",
    "003_defaults_that_always_fit",
    "004_feed_lock_once_per_transaction",
    "005_retention_costs_what_it_removes",
];

/// Brings the database to this build's schema: adopts a pre-baseline database, checks the applied migrations,
/// applies the missing ones, then the function files. Returns the names of the migrations it applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<&'static str>> {
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext('boardcast.migrate'));
         CREATE TABLE IF NOT EXISTS schema_migrations (
             name text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now(),
             checksum text
         );
         ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text;",
    )
    .await?;
    let recorded = adopt_pre_baseline(&tx, read_recorded(&tx).await?).await?;
    check(&recorded)?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        if recorded.iter().any(|r| r.name == migration.name) {
            continue;
        }
        tx.batch_execute(migration.sql).await?;
        record(&tx, migration).await?;
        applied.push(migration.name);
    }
    for (name, sql) in FUNCTIONS {
        tx.batch_execute(sql)
            .await
            .map_err(|e| Error::Schema(format!("sql/functions/{name}.sql: {}", crate::error::chain(&e))))?;
    }
    tx.commit().await?;
    Ok(applied)
}

/// A row of `schema_migrations`.
struct Recorded {
    name: String,
    checksum: Option<String>,
}

async fn read_recorded(tx: &Transaction<'_>) -> Result<Vec<Recorded>> {
    let rows = tx.query("SELECT name, checksum FROM schema_migrations ORDER BY name", &[]).await?;
    Ok(rows.iter().map(|r| Recorded { name: r.get(0), checksum: r.get(1) }).collect())
}

async fn record(tx: &Transaction<'_>, migration: &Migration) -> Result<()> {
    tx.execute(
        "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
        &[&migration.name, &checksum(migration.sql)],
    )
    .await?;
    Ok(())
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Refuses a database this build cannot safely run on: one with an applied migration whose text differs from
/// this build's, or one migrated by a newer build (whose functions this build would replace with older ones).
fn check(recorded: &[Recorded]) -> Result<()> {
    for r in recorded {
        let Some(migration) = MIGRATIONS.iter().find(|m| m.name == r.name) else {
            return Err(Error::Schema(format!(
                "migration {} is applied to this database but unknown to this boardcast, which is older than \
                 the one that applied it; run that version (or a newer one)",
                r.name
            )));
        };
        let expected = checksum(migration.sql);
        if r.checksum.as_deref() != Some(expected.as_str()) {
            return Err(Error::Schema(format!(
                "migration {name} was applied with a different text (sha256 {then} then, {expected} in this \
                 build); an applied migration must not change: restore sql/migrations/{name}.sql as it was \
                 applied and put the change in a new migration",
                name = r.name,
                then = r.checksum.as_deref().unwrap_or("not recorded"),
            )));
        }
    }
    Ok(())
}

/// Adopts a database created before the baseline, and returns what `schema_migrations` then records.
///
/// Old `001_domain` created the domain tables of `0001_domain`; old `002_feed` the feed tables of `0002_feed`,
/// except `feed_locks.xact`, which `004` added; `003` to `005` replaced functions only, which the function
/// files replace anyway. So whatever prefix of the old list a database has applied, adding `xact` (if
/// `002_feed` is there) makes its tables exactly the baseline's up to the matching migration, and the rest is
/// applied as for any database. The events stay as they are. A set of old names that is not a prefix was not
/// made by boardcast's migrate and is refused.
async fn adopt_pre_baseline(tx: &Transaction<'_>, recorded: Vec<Recorded>) -> Result<Vec<Recorded>> {
    let old: Vec<&str> = recorded.iter().map(|r| r.name.as_str()).filter(|n| PRE_BASELINE.contains(n)).collect();
    if old.is_empty() {
        return Ok(recorded);
    }
    if old.iter().any(|n| !PRE_BASELINE[..old.len()].contains(n)) {
        return Err(Error::Schema(format!(
            "schema_migrations records {} of the pre-baseline migrations, which is not the start of {}; \
             boardcast cannot tell what this database's tables are: restore it from a backup or migrate a new one",
            old.join(", "),
            PRE_BASELINE.join(", ")
        )));
    }
    // 001_domain and 002_feed become 0001_domain and 0002_feed.
    let adopted = &MIGRATIONS[..old.len().min(2)];
    if adopted.len() == 2 {
        tx.batch_execute("ALTER TABLE feed_locks ADD COLUMN IF NOT EXISTS xact xid8").await?;
    }
    tx.execute("DELETE FROM schema_migrations WHERE name = ANY ($1)", &[&old]).await?;
    for migration in adopted {
        record(tx, migration).await?;
    }
    tracing::info!(
        "adopted a database created before the schema baseline: {} recorded as {}",
        old.join(", "),
        adopted.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
    );
    read_recorded(tx).await
}

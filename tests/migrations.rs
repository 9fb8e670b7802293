//! The schema's migrations: a fresh database, a second start, a changed or unknown migration, the function
//! files applied at every start, servers migrating together, and databases created by the migrations from
//! before the schema baseline (kept in tests/fixtures/sql-before-baseline), which must keep their events and go
//! on numbering them without a gap.

mod common;

use boardcast::db;
use common::{WAIT, admin_url, connect, with_db};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::Client;
use uuid::Uuid;

/// The migrations as a boardcast from before the baseline applied them, in order.
const PRE_BASELINE: &[(&str, &str)] = &[
    ("001_domain", include_str!("fixtures/sql-before-baseline/001_domain.sql")),
    ("002_feed", include_str!("fixtures/sql-before-baseline/002_feed.sql")),
    ("003_defaults_that_always_fit", include_str!("fixtures/sql-before-baseline/003_defaults_that_always_fit.sql")),
    (
        "004_feed_lock_once_per_transaction",
        include_str!("fixtures/sql-before-baseline/004_feed_lock_once_per_transaction.sql"),
    ),
    (
        "005_retention_costs_what_it_removes",
        include_str!("fixtures/sql-before-baseline/005_retention_costs_what_it_removes.sql"),
    ),
];

/// The migrations after the baseline: a fresh database and an adopted one alike get them.
const AFTER_BASELINE: &[&str] = &["0003_token_expiry", "0004_membership_floor", "0005_rooms", "0006_event_tx"];

/// Every migration, in order.
fn all_migrations() -> Vec<&'static str> {
    ["0001_domain", "0002_feed"].iter().chain(AFTER_BASELINE).copied().collect()
}

/// A new, empty database; returns its URL and a connection to it.
async fn empty_database() -> (String, Client) {
    let name = format!("bc_test_{}", Uuid::new_v4().simple());
    let admin = connect(&with_db(&admin_url(), "postgres")).await;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    let url = with_db(&admin_url(), &name);
    let client = connect(&url).await;
    (url, client)
}

async fn migrated_database() -> (String, Client) {
    let (url, mut client) = empty_database().await;
    db::migrate(&mut client).await.expect("migrate");
    (url, client)
}

/// A database as a boardcast from before the baseline left it after applying its first `n` migrations: each
/// in its own transaction, recorded by name only.
async fn pre_baseline_database(n: usize) -> (String, Client) {
    let (url, mut client) = empty_database().await;
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    for (name, sql) in &PRE_BASELINE[..n] {
        let tx = client.transaction().await.unwrap();
        tx.batch_execute(sql).await.unwrap();
        tx.execute("INSERT INTO schema_migrations (name) VALUES ($1)", &[name]).await.unwrap();
        tx.commit().await.unwrap();
    }
    (url, client)
}

/// Some history, written with plain SQL the way any client would: a project, tasks in single and
/// multi-row statements and in a transaction of several statements, an update, a comment, a delete.
async fn write_history(sql: &mut Client) -> Uuid {
    let project: Uuid =
        sql.query_one("INSERT INTO projects (name) VALUES ('Launch') RETURNING id", &[]).await.unwrap().get(0);
    sql.execute("INSERT INTO tasks (project_id, title) VALUES ($1, 'one')", &[&project]).await.unwrap();
    sql.execute("INSERT INTO tasks (project_id, title) SELECT $1, 't' || g FROM generate_series(1, 5) g", &[&project])
        .await
        .unwrap();
    let tx = sql.transaction().await.unwrap();
    tx.execute("INSERT INTO tasks (project_id, title) VALUES ($1, 'in a transaction')", &[&project]).await.unwrap();
    tx.execute("UPDATE tasks SET status = 'done' WHERE project_id = $1 AND title = 'one'", &[&project]).await.unwrap();
    tx.commit().await.unwrap();
    let task: Uuid = sql.query_one("SELECT id FROM tasks WHERE title = 't1'", &[]).await.unwrap().get(0);
    sql.execute("INSERT INTO comments (task_id, body) VALUES ($1, 'looks good')", &[&task]).await.unwrap();
    sql.execute("DELETE FROM tasks WHERE title = 't5'", &[]).await.unwrap();
    project
}

/// Every recorded event: (room, seq, frame), in order. (Rooms were uuid project ids before 0005_rooms.)
async fn events(sql: &Client) -> Vec<(String, i64, String)> {
    let rows = sql
        .query(
            "SELECT coalesce(to_jsonb(e)->>'room', to_jsonb(e)->>'project_id') COLLATE \"C\" AS r, seq, frame
               FROM feed_events e ORDER BY r, seq",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

/// A connection listening on the feed's channel, and the payloads it receives.
async fn listen(url: &str) -> (Client, UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = futures::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client.batch_execute("LISTEN boardcast_feed").await.unwrap();
    (client, rx)
}

/// Inserts a task and checks that it is event `seq` of the project, recorded and announced.
async fn next_write_is(url: &str, sql: &Client, project: Uuid, seq: i64) {
    let (_listener, mut notes) = listen(url).await;
    sql.execute("INSERT INTO tasks (project_id, title) VALUES ($1, 'after the migration')", &[&project]).await.unwrap();
    let last: i64 =
        sql.query_one("SELECT last_seq FROM feed_seq WHERE room = $1::uuid::text", &[&project]).await.unwrap().get(0);
    assert_eq!(last, seq, "the new write continues the project's seqs without a gap");
    let note = tokio::time::timeout(WAIT, notes.recv()).await.expect("a notification").unwrap();
    let (header, frame) = note.split_once('\n').expect("the frame inline");
    assert_eq!(header, format!("{seq} {seq} {project}"));
    let frame: serde_json::Value = serde_json::from_str(frame).unwrap();
    assert_eq!((frame["seq"].as_i64(), frame["row"]["title"].as_str()), (Some(seq), Some("after the migration")));
}

/// The schema as PostgreSQL describes it: columns, constraints, indexes, views, triggers and functions (with
/// their bodies). schema_migrations, the migrations' own bookkeeping, is left out.
async fn catalog(sql: &Client) -> Vec<String> {
    let rows = sql
        .query(
            "SELECT 'column ' || c.relname || '.' || a.attname || ' #' || a.attnum || ' '
                    || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                    || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
                AND c.relkind IN ('r', 'v') AND c.relname <> 'schema_migrations'
             UNION ALL
             SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
               FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'schema_migrations'
             UNION ALL
             SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
              WHERE c.relnamespace = 'public'::regnamespace AND c.relname <> 'schema_migrations'
             UNION ALL
             SELECT 'view ' || relname || ' ' || pg_get_viewdef(oid) FROM pg_class
              WHERE relkind = 'v' AND relnamespace = 'public'::regnamespace
             UNION ALL
             SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
             UNION ALL
             SELECT 'function ' || pg_get_functiondef(oid) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Asserts two catalogs are the same, showing only the lines that differ.
#[track_caller]
fn assert_same_schema(got: &[String], want: &[String]) {
    let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && got.len() == want.len(),
        "missing: {missing:#?}\nextra: {extra:#?}"
    );
}

/// schema_migrations: (name, checksum, applied_at as text).
async fn recorded(sql: &Client) -> Vec<(String, Option<String>, String)> {
    let rows =
        sql.query("SELECT name, checksum, applied_at::text FROM schema_migrations ORDER BY name", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

fn names(recorded: &[(String, Option<String>, String)]) -> Vec<&str> {
    recorded.iter().map(|r| r.0.as_str()).collect()
}

#[tokio::test]
async fn a_fresh_database_gets_every_migration_recorded_with_its_checksum() {
    let (url, mut sql) = empty_database().await;
    let applied = db::migrate(&mut sql).await.unwrap();
    assert_eq!(applied, all_migrations());
    let recorded = recorded(&sql).await;
    assert_eq!(names(&recorded), applied);
    for (name, checksum, _) in &recorded {
        let checksum = checksum.as_deref().unwrap_or_else(|| panic!("{name} has no checksum"));
        assert!(checksum.len() == 64 && checksum.bytes().all(|b| b.is_ascii_hexdigit()), "{name}: {checksum}");
    }

    let project = write_history(&mut sql).await;
    let seqs: Vec<i64> = events(&sql).await.iter().map(|e| e.1).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless from 1");
    next_write_is(&url, &sql, project, seqs.len() as i64 + 1).await;
}

#[tokio::test]
async fn the_baseline_builds_exactly_the_schema_the_old_migrations_built() {
    // The old migrations' database, brought past the baseline the way any database is: adopted as the
    // baseline, then the migrations after it and the function files. Had the baseline built another schema
    // than the old migrations, the difference would still be there.
    let (_, mut old) = pre_baseline_database(PRE_BASELINE.len()).await;
    assert_eq!(db::migrate(&mut old).await.unwrap(), AFTER_BASELINE, "only what came after the baseline");
    let (_, new) = migrated_database().await;
    let new_catalog = catalog(&new).await;
    assert!(new_catalog.iter().any(|l| l.contains("boardcast_record")), "the catalog lists functions");
    assert_same_schema(&catalog(&old).await, &new_catalog);
}

#[tokio::test]
async fn a_database_from_before_the_baseline_keeps_its_events_and_goes_on_numbering() {
    let (url, mut sql) = pre_baseline_database(PRE_BASELINE.len()).await;
    let project = write_history(&mut sql).await;
    let before = events(&sql).await;
    assert!(before.len() >= 10, "{before:?}");

    let applied = db::migrate(&mut sql).await.unwrap();
    assert_eq!(applied, AFTER_BASELINE, "the baseline's tables are there already: {applied:?}");
    let recorded = recorded(&sql).await;
    assert_eq!(names(&recorded), all_migrations(), "the old names are adopted as the baseline's");
    assert!(recorded.iter().all(|r| r.1.is_some()), "{recorded:?}");
    assert_eq!(events(&sql).await, before, "every event kept, as it was");
    let (_, fresh) = migrated_database().await;
    assert_same_schema(&catalog(&sql).await, &catalog(&fresh).await);

    next_write_is(&url, &sql, project, before.last().unwrap().1 + 1).await;
    assert!(db::migrate(&mut sql).await.unwrap().is_empty(), "and the next start has nothing to do");
}

/// Members of a database from before 0004_membership_floor get where their history begins from what the
/// retained history tells, and the backfill is not announced as a change.
#[tokio::test]
async fn existing_members_start_where_their_retained_history_says_and_nobody_hears_of_it() {
    let (url, mut sql) = pre_baseline_database(PRE_BASELINE.len()).await;
    let user = async |sql: &Client, name: &str| -> Uuid {
        sql.query_one("INSERT INTO users (name) VALUES ($1) RETURNING id", &[&name]).await.unwrap().get(0)
    };
    let (alice, bob, carol, dave) =
        (user(&sql, "alice").await, user(&sql, "bob").await, user(&sql, "carol").await, user(&sql, "dave").await);
    let tx = sql.transaction().await.unwrap();
    let project: Uuid =
        tx.query_one("INSERT INTO projects (name) VALUES ('p') RETURNING id", &[]).await.unwrap().get(0);
    tx.execute("INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'owner')", &[&project, &alice])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let add = async |sql: &Client, member: Uuid| -> i64 {
        sql.execute("INSERT INTO tasks (project_id, title) VALUES ($1, 'before')", &[&project]).await.unwrap();
        sql.execute("INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)", &[&project, &member])
            .await
            .unwrap();
        // (Before 0005_rooms the view's key was `project_id`.)
        let latest = "SELECT last_seq FROM feed_seq s
                       WHERE coalesce(to_jsonb(s)->>'room', to_jsonb(s)->>'project_id') = $1::uuid::text";
        sql.query_one(latest, &[&project]).await.unwrap().get(0)
    };
    add(&sql, bob).await;
    let carol_added = add(&sql, carol).await;
    sql.execute("DELETE FROM project_members WHERE user_id = $1", &[&bob]).await.unwrap();
    let bob_added = add(&sql, bob).await;
    let dave_added = add(&sql, dave).await;
    // Retention removed a prefix, carol's insert with it.
    sql.execute("DELETE FROM feed_events WHERE seq <= $1", &[&carol_added]).await.unwrap();
    let before = events(&sql).await;
    let (listener, mut notes) = listen(&url).await;

    assert_eq!(db::migrate(&mut sql).await.unwrap(), AFTER_BASELINE);

    let since = async |member: Uuid| -> i64 {
        sql.query_one("SELECT since_seq FROM project_members WHERE user_id = $1", &[&member]).await.unwrap().get(0)
    };
    assert_eq!(since(alice).await, 0, "created with the project");
    assert_eq!(since(bob).await, bob_added - 1, "from the latest add");
    assert_eq!(since(carol).await, carol_added, "from the oldest retained event");
    assert_eq!(since(dave).await, dave_added - 1);
    assert_eq!(events(&sql).await, before, "no event recorded");
    listener.batch_execute("NOTIFY boardcast_feed, 'after'").await.unwrap();
    let first = tokio::time::timeout(WAIT, notes.recv()).await.expect("a notification").unwrap();
    assert_eq!(first, "after", "the migration announced nothing");
}

#[tokio::test]
async fn a_database_with_only_some_of_the_old_migrations_is_brought_up_to_the_baseline() {
    // 001..003: the feed's tables without feed_locks.xact, which 004 added.
    let (url, mut sql) = pre_baseline_database(3).await;
    let project = write_history(&mut sql).await;
    let before = events(&sql).await;
    assert_eq!(db::migrate(&mut sql).await.unwrap(), AFTER_BASELINE);
    assert_eq!(names(&recorded(&sql).await), all_migrations());
    assert_eq!(events(&sql).await, before);
    let (_, fresh) = migrated_database().await;
    assert_same_schema(&catalog(&sql).await, &catalog(&fresh).await);
    next_write_is(&url, &sql, project, before.last().unwrap().1 + 1).await;

    // 001 only: the domain's tables, no feed yet.
    let (url, mut sql) = pre_baseline_database(1).await;
    let project: Uuid =
        sql.query_one("INSERT INTO projects (name) VALUES ('Early') RETURNING id", &[]).await.unwrap().get(0);
    assert_eq!(db::migrate(&mut sql).await.unwrap(), all_migrations()[1..]);
    assert_eq!(names(&recorded(&sql).await), all_migrations());
    assert_same_schema(&catalog(&sql).await, &catalog(&fresh).await);
    next_write_is(&url, &sql, project, 1).await;
}

#[tokio::test]
async fn old_migrations_that_are_not_a_prefix_of_the_old_list_are_refused() {
    let (_, mut sql) = pre_baseline_database(3).await;
    sql.execute("DELETE FROM schema_migrations WHERE name = '002_feed'", &[]).await.unwrap();
    let err = db::migrate(&mut sql).await.expect_err("refused").to_string();
    assert!(err.contains("001_domain, 003_defaults_that_always_fit"), "{err}");
    assert!(err.contains("not the start of"), "{err}");
    let left: Vec<String> = sql
        .query("SELECT name FROM schema_migrations ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["001_domain", "003_defaults_that_always_fit"], "nothing changed");
}

#[tokio::test]
async fn migrating_twice_changes_nothing_not_even_the_triggers() {
    let (_, mut sql) = migrated_database().await;
    let triggers =
        "SELECT string_agg(tgname || ':' || xmin::text, ',' ORDER BY tgname) FROM pg_trigger WHERE NOT tgisinternal";
    let (recorded_before, catalog_before) = (recorded(&sql).await, catalog(&sql).await);
    let triggers_before: String = sql.query_one(triggers, &[]).await.unwrap().get(0);

    assert!(db::migrate(&mut sql).await.unwrap().is_empty());

    assert_eq!(recorded(&sql).await, recorded_before);
    assert_same_schema(&catalog(&sql).await, &catalog_before);
    // Replacing a trigger would lock its table against writers; a start that changes nothing must not.
    let triggers_after: String = sql.query_one(triggers, &[]).await.unwrap().get(0);
    assert_eq!(triggers_after, triggers_before, "no trigger was replaced");
}

#[tokio::test]
async fn a_changed_migration_is_refused_naming_it_and_what_to_do() {
    let (_, mut sql) = migrated_database().await;
    sql.execute("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE name = '0002_feed'", &[]).await.unwrap();
    let err = db::migrate(&mut sql).await.expect_err("refused");
    assert!(matches!(err, boardcast::Error::Schema(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("migration 0002_feed was applied with a different text"), "{err}");
    assert!(err.contains("restore sql/migrations/0002_feed.sql"), "{err}");
    assert!(err.contains("put the change in a new migration"), "{err}");
}

#[tokio::test]
async fn a_migration_this_build_does_not_know_is_refused() {
    let (_, mut sql) = migrated_database().await;
    sql.execute("INSERT INTO schema_migrations (name, checksum) VALUES ('0003_from_the_future', '')", &[])
        .await
        .unwrap();
    let err = db::migrate(&mut sql).await.expect_err("refused").to_string();
    assert!(err.contains("migration 0003_from_the_future"), "{err}");
    assert!(err.contains("unknown to this boardcast"), "{err}");
}

#[tokio::test]
async fn the_function_files_are_applied_at_every_start() {
    let (url, mut sql) = migrated_database().await;
    let project = write_history(&mut sql).await;
    let last = events(&sql).await.last().unwrap().1;
    let want = catalog(&sql).await;
    sql.batch_execute(
        "DROP FUNCTION boardcast_prune_events;
         DROP TRIGGER boardcast_feed_insert ON tasks;
         CREATE OR REPLACE FUNCTION boardcast_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;",
    )
    .await
    .unwrap();
    assert_ne!(catalog(&sql).await, want);

    assert!(db::migrate(&mut sql).await.unwrap().is_empty());

    assert_same_schema(&catalog(&sql).await, &want);
    let pruned: i64 = sql.query_one("SELECT boardcast_prune_events(NULL, NULL)", &[]).await.unwrap().get(0);
    assert_eq!(pruned, 0);
    let version: i64 = sql
        .query_one("UPDATE tasks SET title = 'renamed' WHERE title = 't2' RETURNING version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 2, "boardcast_touch is this build's again");
    next_write_is(&url, &sql, project, last + 2).await;
}

#[tokio::test]
async fn servers_starting_together_migrate_one_at_a_time() {
    let (url, _) = empty_database().await;
    let starts = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { db::migrate(&mut connect(&url).await).await.map_err(|e| e.to_string()) })
    });
    let mut applied: Vec<Vec<&str>> = Vec::new();
    for start in starts.collect::<Vec<_>>() {
        applied.push(start.await.unwrap().expect("every start succeeds"));
    }
    applied.sort();
    assert_eq!(applied, [vec![], vec![], vec![], all_migrations()]);
}

//! A member's history begins where their membership does (issue #13): a user added to a project today must not
//! `join` with `since: 0` and read every retained event, such as the text of a comment deleted before they
//! were added. A resume from before the membership gets `resync` with reason `before_membership`; from the
//! membership on (`since` ≥ `project_members.since_seq`, the seq before the statement that added them) it works
//! as always. Members are added with plain SQL and through the API; the line is checked to be exact while other
//! writers hold and wait for the project's lock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestApp, WAIT, WsClient, assert_gapless, connect, spawn_app};
use serde_json::{Value, json};
use uuid::Uuid;

/// The text that must never reach a member added after it was deleted.
const SECRET: &str = "the secret plan: nobody tells bob";

/// A project owned by alice with some history: a task, and a comment holding [`SECRET`], deleted again.
/// Returns alice's token and the project.
async fn project_with_a_deleted_secret(app: &TestApp) -> (String, Uuid) {
    let (alice_token, project) = app.member_of_new_project("alice").await;
    let task = app.insert_task(project, "plans").await;
    app.sql.execute("INSERT INTO comments (task_id, body) VALUES ($1, $2)", &[&task, &SECRET]).await.unwrap();
    app.sql.execute("DELETE FROM comments WHERE body = $1", &[&SECRET]).await.unwrap();
    (alice_token, project)
}

/// `project_members.since_seq` of `user` in `project`.
async fn since_seq(app: &TestApp, project: Uuid, user: Uuid) -> i64 {
    app.sql
        .query_one("SELECT since_seq FROM project_members WHERE project_id = $1 AND user_id = $2", &[&project, &user])
        .await
        .unwrap()
        .get(0)
}

/// Joins with `since` on a new connection and returns the reply.
async fn resume(app: &TestApp, token: &str, project: Uuid, since: i64) -> (WsClient, Value) {
    let mut c = app.client(token).await;
    c.send(json!({"op": "join", "project": project, "since": since})).await;
    let reply = c.recv().await;
    (c, reply)
}

/// Asserts that a resume from `since` is refused as reaching back before the membership, and that the refusal
/// carries nothing of the project's history. The connection stays usable.
async fn refused_before_membership(app: &TestApp, token: &str, project: Uuid, since: i64) {
    let (mut c, reply) = resume(app, token, project, since).await;
    let latest = app.latest_seq(project).await;
    assert_eq!(
        reply,
        json!({"op": "resync", "project": project, "latest": latest, "reason": "before_membership"}),
        "since {since}"
    );
    c.send(json!({"op": "ping"})).await;
    assert_eq!(c.recv().await["op"], "pong", "nothing else came, and the connection is usable");
}

/// Resumes from `since` and returns the replay (every event up to the project's latest seq, checked gapless).
async fn replay(app: &TestApp, token: &str, project: Uuid, since: i64) -> Vec<Value> {
    let (mut c, joined) = resume(app, token, project, since).await;
    let latest = app.latest_seq(project).await;
    assert_eq!((joined["op"].as_str(), joined["seq"].as_i64()), (Some("joined"), Some(since)), "{joined}");
    let events = c.events((latest - since) as usize).await;
    assert_gapless(&events, project, since + 1, latest);
    events
}

/// The event `seq` of `project` as recorded.
async fn recorded(app: &TestApp, project: Uuid, seq: i64) -> Value {
    let frame: String = app
        .sql
        .query_one("SELECT frame FROM feed_events WHERE room = $1::uuid::text AND seq = $2", &[&project, &seq])
        .await
        .unwrap()
        .get(0);
    serde_json::from_str(&frame).unwrap()
}

/// Whether `event` is the insert of `user`'s membership.
fn adds(event: &Value, user: Uuid) -> bool {
    event["table"] == "project_members" && event["action"] == "insert" && event["row"]["user_id"] == json!(user)
}

/// A POST to the API as `token`: (status, body).
async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    send(app, token, reqwest::Method::POST, path, body).await
}

async fn send(app: &TestApp, token: &str, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, app.http(path))
        .header("authorization", format!("Bearer {token}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_member_added_with_sql_resumes_from_their_membership_and_never_from_before() {
    let app = spawn_app().await;
    let (_, project) = project_with_a_deleted_secret(&app).await;
    let (bob_id, bob_token) = app.user("bob").await;
    // Plain SQL, as psql would write it; a since_seq the writer names is not the writer's to choose.
    app.sql
        .execute(
            "INSERT INTO project_members (project_id, user_id, since_seq) VALUES ($1, $2, 0)",
            &[&project, &bob_id],
        )
        .await
        .unwrap();
    let added = app.latest_seq(project).await;
    assert!(adds(&recorded(&app, project, added).await, bob_id));
    assert_eq!(since_seq(&app, project, bob_id).await, added - 1);
    app.insert_task(project, "after bob").await;

    for since in [0, 1, added - 2] {
        refused_before_membership(&app, &bob_token, project, since).await;
    }
    // From the membership on, as always: the replay starts with bob's own insert.
    let events = replay(&app, &bob_token, project, added - 1).await;
    assert!(adds(&events[0], bob_id), "{}", events[0]);
    assert_eq!(events[1]["row"]["title"], "after bob");
    assert_eq!(replay(&app, &bob_token, project, added).await.len(), 1);
    for e in &events {
        assert!(!e.to_string().contains(SECRET), "{e}");
    }
    // A join without `since` is unchanged, and live events follow.
    let (mut bob, seq) = app.joined(&bob_token, project).await;
    assert_eq!(seq, app.latest_seq(project).await);
    app.insert_task(project, "live").await;
    assert_eq!(bob.event().await["row"]["title"], "live");
}

#[tokio::test]
async fn a_statement_before_the_one_that_adds_the_member_stays_hidden_even_in_the_same_transaction() {
    let app = spawn_app().await;
    let (_, project) = app.member_of_new_project("alice").await;
    let task = app.insert_task(project, "plans").await;
    app.sql.execute("INSERT INTO comments (task_id, body) VALUES ($1, $2)", &[&task, &SECRET]).await.unwrap();
    let (bob_id, bob_token) = app.user("bob").await;
    let mut sql = connect(&app.db_url).await;
    let tx = sql.transaction().await.unwrap();
    tx.execute("DELETE FROM comments WHERE body = $1", &[&SECRET]).await.unwrap();
    tx.execute("INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)", &[&project, &bob_id])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let added = app.latest_seq(project).await;
    let deleted = recorded(&app, project, added - 1).await;
    assert_eq!((deleted["table"].as_str(), deleted["row"]["body"].as_str()), (Some("comments"), Some(SECRET)));

    assert_eq!(since_seq(&app, project, bob_id).await, added - 1);
    refused_before_membership(&app, &bob_token, project, added - 2).await;
    refused_before_membership(&app, &bob_token, project, 0).await;
    let events = replay(&app, &bob_token, project, added - 1).await;
    assert!(events.len() == 1 && adds(&events[0], bob_id), "{events:?}");
}

#[tokio::test]
async fn a_member_added_through_the_api_starts_at_the_seq_the_api_answered() {
    let app = spawn_app().await;
    let (alice_token, project) = project_with_a_deleted_secret(&app).await;
    let (bob_id, bob_token) = app.user("bob").await;
    let (status, body) =
        post(&app, &alice_token, &format!("/api/projects/{project}/members"), json!({"user": "bob"})).await;
    assert_eq!(status, 201, "{body}");
    let added = body["seq"].as_i64().unwrap();
    assert_eq!(since_seq(&app, project, bob_id).await, added - 1);
    app.insert_task(project, "after bob").await;

    refused_before_membership(&app, &bob_token, project, 0).await;
    refused_before_membership(&app, &bob_token, project, added - 2).await;
    let events = replay(&app, &bob_token, project, added - 1).await;
    assert!(adds(&events[0], bob_id), "{}", events[0]);
    assert!(events.iter().all(|e| !e.to_string().contains(SECRET)));
    // Alice, who was there, still reads it all.
    let all = replay(&app, &alice_token, project, 0).await;
    assert!(all.iter().any(|e| e.to_string().contains(SECRET)), "the owner's history is whole");
}

#[tokio::test]
async fn a_projects_creator_resumes_from_zero() {
    let app = spawn_app().await;
    // The command line (admin::add_project): project and owner in one transaction.
    let (alice_token, project) = project_with_a_deleted_secret(&app).await;
    let events = replay(&app, &alice_token, project, 0).await;
    assert_eq!(events[0]["table"], "projects");

    // The API.
    let (status, body) = post(&app, &alice_token, "/api/projects", json!({"name": "from the api"})).await;
    assert_eq!(status, 201, "{body}");
    let project: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    app.insert_task(project, "one").await;
    assert_eq!(replay(&app, &alice_token, project, 0).await.len(), 3);

    // Plain SQL: a transaction of several statements, and one statement (the project's own event is recorded
    // after its members' rows were written).
    let (carol_id, carol_token) = app.user("carol").await;
    let mut sql = connect(&app.db_url).await;
    let tx = sql.transaction().await.unwrap();
    let project: Uuid =
        tx.query_one("INSERT INTO projects (name) VALUES ('psql') RETURNING id", &[]).await.unwrap().get(0);
    tx.execute("INSERT INTO tasks (project_id, title) VALUES ($1, 'first')", &[&project]).await.unwrap();
    tx.execute(
        "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'owner')",
        &[&project, &carol_id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(since_seq(&app, project, carol_id).await, 0);
    assert_eq!(replay(&app, &carol_token, project, 0).await.len(), 3);

    let project: Uuid = app
        .sql
        .query_one(
            "WITH p AS (INSERT INTO projects (name) VALUES ('one statement') RETURNING id)
             INSERT INTO project_members (project_id, user_id, role) SELECT id, $1, 'owner' FROM p
             RETURNING project_id",
            &[&carol_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(since_seq(&app, project, carol_id).await, 0);
    assert_eq!(replay(&app, &carol_token, project, 0).await.len(), 2);
}

#[tokio::test]
async fn a_member_removed_and_added_again_starts_at_the_new_add() {
    let app = spawn_app().await;
    let (alice_token, project) = app.member_of_new_project("alice").await;
    let (bob_id, bob_token) = app.user("bob").await;
    app.add_member(project, "bob").await;
    let first = since_seq(&app, project, bob_id).await;
    app.insert_task(project, "bob was here").await;
    assert_eq!(replay(&app, &bob_token, project, first).await.len(), 2);

    let member = format!("/api/projects/{project}/members/{bob_id}");
    assert_eq!(send(&app, &alice_token, reqwest::Method::DELETE, &member, Value::Null).await.0, 200);
    let task = app.insert_task(project, "while bob was away").await;
    app.sql.execute("INSERT INTO comments (task_id, body) VALUES ($1, $2)", &[&task, &SECRET]).await.unwrap();
    app.sql.execute("DELETE FROM comments WHERE body = $1", &[&SECRET]).await.unwrap();
    let (status, body) =
        post(&app, &alice_token, &format!("/api/projects/{project}/members"), json!({"user": "bob"})).await;
    assert_eq!(status, 201, "{body}");
    let again = body["seq"].as_i64().unwrap();
    assert_eq!(since_seq(&app, project, bob_id).await, again - 1, "the floor moved to the new add");

    // What bob saw before he left is no longer a place to resume from: the room went on without him.
    refused_before_membership(&app, &bob_token, project, first).await;
    refused_before_membership(&app, &bob_token, project, again - 2).await;
    let events = replay(&app, &bob_token, project, again - 1).await;
    assert!(events.len() == 1 && adds(&events[0], bob_id), "{events:?}");

    // The same with plain SQL.
    app.sql
        .execute("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2", &[&project, &bob_id])
        .await
        .unwrap();
    app.insert_task(project, "away again").await;
    app.sql
        .execute("INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)", &[&project, &bob_id])
        .await
        .unwrap();
    let third = app.latest_seq(project).await;
    assert_eq!(since_seq(&app, project, bob_id).await, third - 1);
    refused_before_membership(&app, &bob_token, project, again).await;
    assert_eq!(replay(&app, &bob_token, project, third - 1).await.len(), 1);
}

#[tokio::test]
async fn a_role_change_keeps_where_the_membership_began() {
    let app = spawn_app().await;
    let (alice_token, project) = project_with_a_deleted_secret(&app).await;
    let (bob_id, bob_token) = app.user("bob").await;
    app.add_member(project, "bob").await;
    let floor = since_seq(&app, project, bob_id).await;
    assert!(floor > 0);

    // The API, the command line, plain SQL and an upsert.
    let member = format!("/api/projects/{project}/members/{bob_id}");
    let (status, body) = send(&app, &alice_token, reqwest::Method::PATCH, &member, json!({"role": "owner"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(since_seq(&app, project, bob_id).await, floor);
    let mut sql = connect(&app.db_url).await;
    boardcast::admin::add_member(&mut sql, project, "bob", Some("member")).await.unwrap();
    assert_eq!(since_seq(&app, project, bob_id).await, floor);
    app.sql
        .execute(
            "UPDATE project_members SET role = 'owner' WHERE project_id = $1 AND user_id = $2",
            &[&project, &bob_id],
        )
        .await
        .unwrap();
    app.sql
        .execute(
            "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'member')
             ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
            &[&project, &bob_id],
        )
        .await
        .unwrap();
    assert_eq!(since_seq(&app, project, bob_id).await, floor);

    refused_before_membership(&app, &bob_token, project, floor - 1).await;
    let events = replay(&app, &bob_token, project, floor).await;
    assert!(adds(&events[0], bob_id));
    assert_eq!(events.len(), 5, "the add and four role changes: {events:?}");
}

/// The line between "before the member" and "after" is exact while other writers hold the project's lock and
/// wait for it: an event committed before the member's statement is below it, one that waited for the member's
/// transaction is above it, and the event right after the line is the member's own insert.
#[tokio::test]
async fn the_floor_is_exact_while_other_writers_hold_and_wait_for_the_projects_lock() {
    let app = spawn_app().await;
    let (alice_token, project) = app.member_of_new_project("alice").await;
    let (bob_id, bob_token) = app.user("bob").await;

    // A writer holds the project's lock; bob's insert waits for it, then numbers after the writer's commit.
    let mut writer = connect(&app.db_url).await;
    let held = writer.transaction().await.unwrap();
    held.execute("INSERT INTO tasks (project_id, title) VALUES ($1, 'held')", &[&project]).await.unwrap();
    let adding = {
        let url = app.db_url.clone();
        tokio::spawn(async move {
            connect(&url)
                .await
                .execute("INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)", &[&project, &bob_id])
                .await
                .unwrap()
        })
    };
    wait_for_lock_waiters(&app, 1).await;
    held.commit().await.unwrap();
    tokio::time::timeout(WAIT, adding).await.unwrap().unwrap();
    let floor = since_seq(&app, project, bob_id).await;
    assert_eq!(recorded(&app, project, floor).await["row"]["title"], "held", "the held write is below the line");
    assert!(adds(&recorded(&app, project, floor + 1).await, bob_id), "and the member's insert right after it");

    // Bob's transaction holds the lock; a writer waits for it and lands above the line.
    let (carol_id, carol_token) = app.user("carol").await;
    let mut adder = connect(&app.db_url).await;
    let tx = adder.transaction().await.unwrap();
    tx.execute("INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)", &[&project, &carol_id])
        .await
        .unwrap();
    let writing = {
        let url = app.db_url.clone();
        tokio::spawn(async move {
            connect(&url)
                .await
                .execute("INSERT INTO tasks (project_id, title) VALUES ($1, 'waited')", &[&project])
                .await
                .unwrap()
        })
    };
    wait_for_lock_waiters(&app, 1).await;
    tx.commit().await.unwrap();
    tokio::time::timeout(WAIT, writing).await.unwrap().unwrap();
    let floor = since_seq(&app, project, carol_id).await;
    let events = replay(&app, &carol_token, project, floor).await;
    assert!(adds(&events[0], carol_id), "{events:?}");
    assert_eq!(events[1]["row"]["title"], "waited", "the writer that waited is not hidden");
    refused_before_membership(&app, &carol_token, project, floor - 1).await;
    assert!(replay(&app, &bob_token, project, since_seq(&app, project, bob_id).await).await.len() >= 3);

    // Many writers at once, members added meanwhile with plain SQL and through the API.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, stop) = (app.db_url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sql = connect(&url).await;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let tx = sql.transaction().await.unwrap();
                    tx.execute(
                        "INSERT INTO tasks (project_id, title) VALUES ($1, $2)",
                        &[&project, &format!("w{w}.{n}")],
                    )
                    .await
                    .unwrap();
                    tx.batch_execute("SELECT pg_sleep(0.002)").await.unwrap();
                    tx.commit().await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut added = Vec::new();
    for i in 0..12 {
        let name = format!("m{i}");
        let (id, token) = app.user(&name).await;
        if i % 2 == 0 {
            app.sql
                .execute("INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)", &[&project, &id])
                .await
                .unwrap();
        } else {
            let (status, body) =
                post(&app, &alice_token, &format!("/api/projects/{project}/members"), json!({"user": name})).await;
            assert_eq!(status, 201, "{body}");
        }
        added.push((id, token));
    }
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += tokio::time::timeout(WAIT, w).await.unwrap().unwrap();
    }
    assert!(written > 0);
    for (id, token) in &added {
        let floor = since_seq(&app, project, *id).await;
        assert!(!adds(&recorded(&app, project, floor).await, *id), "below the line is someone else's event");
        assert!(adds(&recorded(&app, project, floor + 1).await, *id), "the line is right before the member's insert");
        let events = replay(&app, token, project, floor).await;
        assert!(adds(&events[0], *id));
        refused_before_membership(&app, token, project, floor - 1).await;
    }
}

/// Waits until `n` connections to the test's database wait for a lock.
async fn wait_for_lock_waiters(app: &TestApp, n: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.lock_waiters().await < n {
        assert!(tokio::time::Instant::now() < deadline, "nobody came to wait for the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

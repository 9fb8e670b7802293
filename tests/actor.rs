//! Who changed it, in which transaction (issue #15): every event names its transaction (`tx`) and its actor,
//! the last event of a transaction in a room says so (`last`), and a client that joins with `"group":"tx"`
//! gets one `tx` frame per transaction, in bounded parts, also when it resumes inside one. Written through
//! psql-like SQL connections and through the REST API.

mod common;

use std::time::Duration;

use common::{TestApp, WsClient, assert_gapless, spawn_app};
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// A connection to the test's database that says it is psql, as a psql session would.
async fn psql(app: &TestApp) -> Client {
    let mut config: tokio_postgres::Config = app.db_url.parse().unwrap();
    config.application_name("psql");
    let (client, conn) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

fn sql_actor() -> Value {
    json!({"kind": "sql", "role": "postgres", "application": "psql"})
}

/// Every recorded event of `project` after `after`: (seq, frame).
async fn recorded(app: &TestApp, project: Uuid, after: i64) -> Vec<Value> {
    app.sql
        .query(
            "SELECT frame FROM feed_events WHERE room = $1::uuid::text AND seq > $2 ORDER BY seq",
            &[&project, &after],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect()
}

/// Joins with `group: "tx"` (and `since`, if given); returns the `joined` seq.
async fn join_grouped(c: &mut WsClient, project: Uuid, since: Option<i64>) -> i64 {
    c.send(json!({"op": "join", "project": project, "group": "tx", "since": since})).await;
    let f = c.recv().await;
    assert_eq!(f["op"], "joined", "{f}");
    f["seq"].as_i64().unwrap()
}

async fn tx_frame(c: &mut WsClient) -> Value {
    let f = c.recv().await;
    assert_eq!(f["op"], "tx", "expected a tx frame, got {f}");
    f
}

#[tokio::test]
async fn a_multi_statement_transaction_is_one_tx_whose_last_event_says_so_and_psql_is_the_actor() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut plain, s) = app.joined(&token, project).await;
    let mut grouped = app.client(&token).await;
    assert_eq!(join_grouped(&mut grouped, project, None).await, s);

    let mut db = psql(&app).await;
    let t = db.transaction().await.unwrap();
    t.batch_execute(&format!(
        "INSERT INTO tasks (project_id, title) VALUES ('{project}', 'a'), ('{project}', 'b');
         UPDATE tasks SET status = 'done' WHERE title = 'a';"
    ))
    .await
    .unwrap();
    let tx: String = t.query_one("SELECT pg_current_xact_id()::text", &[]).await.unwrap().get(0);
    t.commit().await.unwrap();

    let events = plain.events(3).await;
    assert_gapless(&events, project, s + 1, s + 3);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["tx"], tx.as_str(), "{e}");
        assert_eq!(e["actor"], sql_actor(), "{e}");
        assert_eq!(e.get("last"), (i == 2).then_some(&Value::Bool(true)), "only the last is marked: {e}");
    }
    // The next transaction is another one, and its single event is its last.
    app.insert_task(project, "c").await;
    let next = plain.event().await;
    assert_ne!(next["tx"], tx.as_str());
    assert_eq!(next["last"], true);
    assert_eq!(next["actor"]["kind"], "sql");

    let f = tx_frame(&mut grouped).await;
    assert_eq!((f["tx"].as_str(), &f["actor"]), (Some(tx.as_str()), &sql_actor()));
    assert_eq!((f["first_seq"].as_i64(), f["last_seq"].as_i64()), (Some(s + 1), Some(s + 3)));
    assert_eq!(f["complete"], true);
    assert_eq!(f.get("continued"), None);
    assert_eq!(f["events"].as_array().unwrap(), &events, "the same event frames, wrapped");
    let f = tx_frame(&mut grouped).await;
    assert_eq!(f["events"].as_array().unwrap(), &vec![next]);
    grouped.expect_silence(Duration::from_millis(200)).await;
    // History says the same as the live feed.
    assert_eq!(recorded(&app, project, s).await[..3], events[..]);
}

#[tokio::test]
async fn act_as_lasts_one_transaction_on_a_pooled_connection_and_a_rolled_back_savepoint_undoes_it() {
    let app = spawn_app().await;
    let (alice, token) = app.user("alice").await;
    let project = app.project("board", "alice").await;
    let (mut c, s) = app.joined(&token, project).await;
    let pooled = psql(&app).await;

    // One connection, reused across transactions as a pool reuses it: one query string per transaction (in
    // one string, statements outside BEGIN .. COMMIT would join the next block).
    for transaction in [
        format!("BEGIN; SELECT boardcast.act_as('{alice}'); INSERT INTO tasks (project_id, title) VALUES ('{project}', 'by alice'); COMMIT;"),
        format!("BEGIN; INSERT INTO tasks (project_id, title) VALUES ('{project}', 'by nobody in particular'); COMMIT;"),
        format!("BEGIN; SELECT boardcast.act_as('ext-42', 'Grace'); INSERT INTO tasks (project_id, title) VALUES ('{project}', 'by grace'); ROLLBACK;"),
        format!("INSERT INTO tasks (project_id, title) VALUES ('{project}', 'after a rollback')"),
        format!(
            "BEGIN; SELECT boardcast.act_as('ext-42', 'Grace');
               SAVEPOINT s; SELECT boardcast.act_as('{alice}'); INSERT INTO tasks (project_id, title) VALUES ('{project}', 'undone'); ROLLBACK TO s;
               INSERT INTO tasks (project_id, title) VALUES ('{project}', 'by grace again');
             COMMIT;"
        ),
        format!(
            "BEGIN; SAVEPOINT s; SELECT boardcast.act_as('{alice}'); ROLLBACK TO s;
               INSERT INTO tasks (project_id, title) VALUES ('{project}', 'savepoint gone');
             COMMIT;"
        ),
        // The id as a uuid, as a query of the users table gives it.
        format!(
            "BEGIN; SELECT boardcast.act_as(id) FROM users WHERE name = 'alice';
               INSERT INTO tasks (project_id, title) VALUES ('{project}', 'by alice, by uuid');
             COMMIT;"
        ),
    ] {
        pooled.batch_execute(&transaction).await.unwrap();
    }
    let events = c.events(6).await;
    assert_gapless(&events, project, s + 1, s + 6);
    let got: Vec<(&str, &Value)> = events.iter().map(|e| (e["row"]["title"].as_str().unwrap(), &e["actor"])).collect();
    let alice_actor = json!({"kind": "user", "id": alice.to_string(), "name": "alice"});
    let grace = json!({"kind": "user", "id": "ext-42", "name": "Grace"});
    assert_eq!(
        got,
        vec![
            ("by alice", &alice_actor),
            ("by nobody in particular", &sql_actor()),
            ("after a rollback", &sql_actor()),
            ("by grace again", &grace),
            ("savepoint gone", &sql_actor()),
            ("by alice, by uuid", &alice_actor),
        ]
    );
    assert!(events.iter().all(|e| e["last"] == true), "one event per transaction, each its last: {events:#?}");

    // A declaration is checked.
    let e = pooled.query_one("SELECT boardcast.act_as('')", &[]).await.unwrap_err();
    let e = e.as_db_error().expect("a database error");
    assert!(e.message().contains("act_as"), "{e}");
}

#[tokio::test]
async fn one_transaction_in_two_rooms_ends_in_each_and_a_rolled_back_savepoint_takes_its_events_along() {
    let app = spawn_app().await;
    let (token, p1) = app.member_of_new_project("alice").await;
    let p2 = app.project("second board", "alice").await;
    let (mut c1, s1) = app.joined(&token, p1).await;
    let (mut c2, s2) = app.joined(&token, p2).await;
    let db = psql(&app).await;
    db.batch_execute(&format!(
        "BEGIN;
         INSERT INTO tasks (project_id, title) VALUES ('{p1}', 'one'), ('{p2}', 'two');
         SAVEPOINT s; INSERT INTO tasks (project_id, title) VALUES ('{p1}', 'gone'), ('{p2}', 'gone'); ROLLBACK TO s;
         INSERT INTO tasks (project_id, title) VALUES ('{p1}', 'three');
         COMMIT;"
    ))
    .await
    .unwrap();
    let e1 = c1.events(2).await;
    let e2 = c2.events(1).await;
    assert_gapless(&e1, p1, s1 + 1, s1 + 2);
    assert_gapless(&e2, p2, s2 + 1, s2 + 1);
    assert_eq!((e1[0]["row"]["title"].as_str(), e1[1]["row"]["title"].as_str()), (Some("one"), Some("three")));
    assert_eq!((e1[0].get("last"), &e1[1]["last"], &e2[0]["last"]), (None, &json!(true), &json!(true)));
    assert_eq!(e1[0]["tx"], e2[0]["tx"]);
    assert_eq!(e1[1]["tx"], e2[0]["tx"]);
    c1.expect_silence(Duration::from_millis(200)).await;
    c2.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_rest_write_names_the_signed_in_user_and_answers_its_transaction() {
    // One pooled connection: every API write below goes through the same one, one transaction after another.
    let db_url = common::fresh_database(&common::admin_url()).await;
    let mut settings = common::test_settings(&db_url);
    settings.pool_size = 1;
    let app = common::spawn_app_on(settings).await;
    let (alice, token) = app.user("alice").await;
    let (bob, bob_token) = app.user("bob").await;
    let project = app.project("board", "alice").await;
    app.add_member(project, "bob").await;
    let (mut c, s) = app.joined(&token, project).await;
    let http = reqwest::Client::new();
    let post = |token: &str, body: Value| {
        http.post(app.http(&format!("/api/projects/{project}/tasks"))).bearer_auth(token).json(&body).send()
    };
    let res = post(&token, json!({"title": "Fix login"})).await.unwrap();
    assert_eq!(res.status(), 201);
    let header = res.headers().get("x-boardcast-tx").map(|v| v.to_str().unwrap().to_string());
    let body: Value = res.json().await.unwrap();
    let e = c.event().await;
    assert_eq!(body["seq"], s + 1);
    assert_eq!(e["tx"], body["tx"]);
    assert_eq!(header.as_deref(), body["tx"].as_str());
    assert_eq!(e["actor"], json!({"kind": "user", "id": alice.to_string(), "name": "alice"}));
    assert_eq!(e["last"], true);

    // Nothing a client sends names another actor: `actor` is no field of any request.
    let res = post(&token, json!({"title": "spoof", "actor": {"kind": "user", "id": bob, "name": "bob"}})).await;
    assert_eq!(res.unwrap().status(), 422);
    // The next transaction on the same connection is bob's, and then a SQL writer's: nothing carried over.
    assert_eq!(post(&bob_token, json!({"title": "by bob"})).await.unwrap().status(), 201);
    let e = c.event().await;
    assert_eq!(e["actor"], json!({"kind": "user", "id": bob.to_string(), "name": "bob"}));
    assert_ne!(e["tx"], body["tx"]);
    app.insert_task(project, "by sql").await;
    assert_eq!(c.event().await["actor"]["kind"], "sql");
    c.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_resume_inside_a_transaction_gets_the_rest_of_it_marked_as_such() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let s = app.latest_seq(project).await;
    app.sql
        .batch_execute(&format!(
            "INSERT INTO tasks (project_id, title) SELECT '{project}', 't' || n FROM generate_series(1, 5) n"
        ))
        .await
        .unwrap();
    app.insert_task(project, "next").await;

    let mut grouped = app.client(&token).await;
    assert_eq!(join_grouped(&mut grouped, project, Some(s + 2)).await, s + 2);
    let f = tx_frame(&mut grouped).await;
    assert_eq!((f["first_seq"].as_i64(), f["last_seq"].as_i64()), (Some(s + 3), Some(s + 5)));
    assert_eq!((&f["complete"], &f["continued"]), (&json!(true), &json!(true)));
    let f = tx_frame(&mut grouped).await;
    assert_eq!((f["first_seq"].as_i64(), f.get("continued")), (Some(s + 6), None));

    // A resume at a transaction's end begins with a whole one.
    let mut again = app.client(&token).await;
    join_grouped(&mut again, project, Some(s)).await;
    let f = tx_frame(&mut again).await;
    assert_eq!((f["first_seq"].as_i64(), f["last_seq"].as_i64(), f.get("continued")), (Some(s + 1), Some(s + 5), None));

    // Without grouping: the rest of it, its last event marked.
    let mut plain = app.client(&token).await;
    plain.send(json!({"op": "join", "project": project, "since": s + 2})).await;
    assert_eq!(plain.recv().await["op"], "joined");
    let events = plain.events(4).await;
    assert_gapless(&events, project, s + 3, s + 6);
    assert_eq!(events.iter().map(|e| e.get("last").is_some()).collect::<Vec<_>>(), [false, false, true, true]);
}

/// Peak resident memory of this process (the test and the server in it), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
}

#[tokio::test]
async fn a_100000_row_transaction_comes_to_a_grouped_client_in_bounded_parts() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let mut grouped = app.client(&token).await;
    let s = join_grouped(&mut grouped, project, None).await;
    let before = peak_rss_kib();
    let n = 100_000i64;
    app.sql
        .batch_execute(&format!(
            "INSERT INTO tasks (project_id, title) SELECT '{project}', 'row ' || n FROM generate_series(1, {n}) n"
        ))
        .await
        .unwrap();
    let (mut next, mut parts, mut tx) = (s + 1, 0, None);
    while next <= s + n {
        let f = tokio::time::timeout(Duration::from_secs(120), grouped.next_frame()).await.unwrap().unwrap();
        assert_eq!(f["op"], "tx", "{f}");
        let events = f["events"].as_array().unwrap();
        assert!(!events.is_empty() && events.len() <= 1000, "a part holds at most 1,000 events");
        assert_eq!(f["first_seq"], next);
        for e in events {
            assert_eq!(e["seq"], next);
            next += 1;
        }
        assert_eq!(f["last_seq"], next - 1);
        assert_eq!(f["complete"], next > s + n, "only the final part is complete");
        assert_eq!(f.get("continued").is_some(), parts > 0);
        tx.get_or_insert_with(|| f["tx"].clone());
        assert_eq!(Some(&f["tx"]), tx.as_ref());
        parts += 1;
    }
    assert!(parts >= 100, "{parts} parts");
    let grown = peak_rss_kib().saturating_sub(before);
    eprintln!("100,000-row transaction in {parts} parts; peak RSS grew by {} MiB", grown / 1024);
    // The transaction's frames total about 45 MB; held whole (by the server, or as one frame) they would
    // show here.
    assert!(grown < 40 * 1024, "peak memory grew by {} MiB", grown / 1024);
    grouped.expect_silence(Duration::from_millis(200)).await;
}

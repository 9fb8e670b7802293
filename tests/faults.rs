//! Nothing lost: resume after reconnect, database faults, slow and dead clients, huge transactions, several
//! servers, retention and shutdown. Each test ends in the same kind of assertion: every client's per-project
//! seqs are exactly 1..N (or from its join point to N), once each, in order, and the rows match the database.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::proxy::Proxy;
use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// Titles of the recorded task inserts of a project, by seq: what the database says happened.
async fn recorded_titles(app: &TestApp, project: Uuid, after: i64) -> Vec<(i64, String)> {
    app.sql
        .query(
            "SELECT seq, (frame::jsonb)->'row'->>'title' FROM feed_events
              WHERE room = $1::uuid::text AND seq > $2 ORDER BY seq",
            &[&project, &after],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
        .collect()
}

fn seq_title(events: &[Value]) -> Vec<(i64, String)> {
    events.iter().map(|e| (e["seq"].as_i64().unwrap(), e["row"]["title"].as_str().unwrap_or("").to_string())).collect()
}

/// A server that reaches its database through a proxy the test can cut, probing its listener's connection
/// every 500 ms. The test's own connection (`app.sql`, `app.db_url`) goes around the proxy, like any other
/// writer's.
async fn app_behind_a_proxy() -> (TestApp, Proxy) {
    let db_url = fresh_database(&admin_url()).await;
    let proxy = Proxy::to_server_of(&db_url).await;
    let mut settings = test_settings(&proxy.url_for(&db_url));
    settings.feed.listener_probe = Duration::from_millis(500);
    let mut app = spawn_app_on(settings).await;
    app.sql = connect(&db_url).await;
    app.db_url = db_url;
    (app, proxy)
}

/// Writes `n` tasks, one transaction each, a little apart, on a connection of its own.
fn write_tasks_in_background(url: String, project: Uuid, n: usize, gap: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let sql = connect(&url).await;
        for i in 0..n {
            sql.execute("INSERT INTO tasks (project_id, title) VALUES ($1, $2)", &[&project, &format!("t{i}")])
                .await
                .unwrap();
            tokio::time::sleep(gap).await;
        }
    })
}

#[tokio::test]
async fn a_client_that_drops_and_resumes_with_since_misses_nothing_and_gets_nothing_twice() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut alice, s) = app.joined(&token, project).await;

    let writer = write_tasks_in_background(app.db_url.clone(), project, 300, Duration::from_millis(2));
    let mut seen = alice.events(50).await;
    drop(alice); // the network drops mid-stream
    tokio::time::sleep(Duration::from_millis(100)).await;

    let last = seen.last().unwrap()["seq"].as_i64().unwrap();
    let mut again = app.client(&token).await;
    again.send(json!({"op": "join", "project": project, "since": last})).await;
    let joined = again.recv().await;
    assert_eq!((joined["op"].as_str(), joined["seq"].as_i64()), (Some("joined"), Some(last)));
    let again = again.collect_in_background(last); // reads while the writer finishes
    writer.await.unwrap();
    let end = app.latest_seq(project).await;
    let (mut again, rest) = again.until(end).await;
    seen.extend(rest);
    again.expect_silence(Duration::from_millis(300)).await;

    assert_gapless(&seen, project, s + 1, end);
    assert_eq!(seq_title(&seen), recorded_titles(&app, project, s).await);
}

#[tokio::test]
async fn a_resume_from_before_the_retained_history_gets_a_resync() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    for i in 0..20 {
        app.insert_task(project, &format!("t{i}")).await;
    }
    let retention = boardcast::config::Retention { max_age: None, max_per_project: Some(5), ..Default::default() };
    let removed = boardcast::admin::prune(&app.feed.pool, &retention).await.unwrap();
    assert!(removed > 0);
    let latest = app.latest_seq(project).await;

    let mut alice = app.client(&token).await;
    alice.send(json!({"op": "join", "project": project, "since": 2, "ref": "r"})).await;
    let f = alice.recv().await;
    assert_eq!(
        f,
        json!({"op": "resync", "project": project, "latest": latest, "reason": "history_pruned", "ref": "r"})
    );
    assert_eq!(f["op"], "resync");
    assert_eq!(f["reason"], "history_pruned");
    // Still retained: a resume from inside the window works.
    alice.send(json!({"op": "join", "project": project, "since": latest - 3})).await;
    assert_eq!(alice.recv().await["op"], "joined");
    assert_gapless(&alice.events(3).await, project, latest - 2, latest);
}

#[tokio::test]
async fn a_resume_from_a_seq_the_project_never_reached_gets_a_resync() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let mut alice = app.client(&token).await;
    alice.send(json!({"op": "join", "project": project, "since": 1_000_000})).await;
    let f = alice.recv().await;
    assert_eq!((f["op"].as_str(), f["reason"].as_str()), (Some("resync"), Some("since_ahead")));
}

#[tokio::test]
async fn killing_the_listeners_backend_mid_stream_loses_nothing() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (alice, s) = app.joined(&token, project).await;

    let mut alice = alice.collect_in_background(s);
    let writer = write_tasks_in_background(app.db_url.clone(), project, 400, Duration::from_millis(2));
    alice.reached(s + 20).await;
    for _ in 0..3 {
        let killed: i64 = app
            .sql
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE application_name = 'boardcast-listener' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(killed, 1, "exactly one listener connection");
        let at = alice.last_seq();
        alice.reached(at + 40).await;
    }
    writer.await.unwrap();
    let end = app.latest_seq(project).await;
    let (mut alice, seen) = alice.until(end).await;
    alice.expect_silence(Duration::from_millis(300)).await;

    assert_gapless(&seen, project, s + 1, end);
    assert_eq!(seq_title(&seen), recorded_titles(&app, project, s).await);
}

/// What restoring a backup taken at seq `keep` does to a project's feed, as plain SQL (a restore writes with
/// triggers off): the later events and their rows are gone, and with them the project's latest seq. In the same transaction, the
/// listener's connection is cut, as the restart that goes with a restore would; then `then` is run (with
/// triggers on again) before the transaction commits.
async fn restore_to(app: &TestApp, project: Uuid, keep: i64, then: &str) {
    let sql = connect(&app.db_url).await;
    sql.batch_execute("BEGIN; SET LOCAL session_replication_role = replica").await.unwrap();
    sql.execute(
        "DELETE FROM tasks WHERE project_id = $1 AND id IN (
           SELECT (frame::jsonb->'row'->>'id')::uuid FROM feed_events WHERE room = $1::uuid::text AND seq > $2)",
        &[&project, &keep],
    )
    .await
    .unwrap();
    sql.execute("DELETE FROM feed_events WHERE room = $1::uuid::text AND seq > $2", &[&project, &keep]).await.unwrap();
    sql.batch_execute(
        "SET LOCAL session_replication_role = origin;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'boardcast-listener' AND datname = current_database()",
    )
    .await
    .unwrap();
    sql.batch_execute(then).await.unwrap();
    sql.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn a_database_restored_to_an_earlier_seq_tells_its_clients_to_resync_instead_of_skipping_new_events() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut alice, s) = app.joined(&token, project).await;
    for i in 0..5 {
        app.insert_task(project, &format!("t{i}")).await;
    }
    assert_gapless(&alice.events(5).await, project, s + 1, s + 5);

    restore_to(&app, project, s + 2, "").await;
    // Without the check, the next writes (seqs s+3.. again) would look like duplicates and be skipped.
    let resync = alice.recv().await;
    assert_eq!((resync["op"].as_str(), resync["reason"].as_str()), (Some("resync"), Some("history_rewound")));
    assert_eq!(resync["latest"], s + 2);

    app.insert_task(project, "after the restore").await;
    let (mut again, from) = app.joined(&token, project).await;
    assert_eq!(from, s + 3);
    app.insert_task(project, "next").await;
    let e = again.event().await;
    assert_eq!((e["seq"].as_i64(), e["row"]["title"].as_str()), (Some(s + 4), Some("next")));
}

#[tokio::test]
async fn a_restored_database_written_past_the_old_seq_before_the_server_noticed_still_gets_a_resync() {
    restored_and_written_past_the_old_seq(0).await;
}

/// The room remembers a large frame only by its hash: the check must work for those too.
#[tokio::test]
async fn a_restore_is_noticed_when_the_last_event_sent_was_a_large_row() {
    restored_and_written_past_the_old_seq(20_000).await;
}

/// The room of a client that joined after the last write has sent nothing yet, only started after the event
/// the client holds: it must still notice that this event is not the one history records any more.
#[tokio::test]
async fn a_restore_is_noticed_by_a_room_that_has_sent_no_event_yet() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    app.insert_task(project, "old a").await;
    app.insert_task(project, "old b").await;
    let (mut alice, s) = app.joined(&token, project).await; // alice's board holds "old b", at seq s
    tokio::time::sleep(Duration::from_millis(300)).await; // the room has started

    // Restored to s-1 ("old b" gone), then two new tasks: seq s is "new a" now, s+1 "new b".
    let write = format!("INSERT INTO tasks (project_id, title) VALUES ('{project}', 'new a'), ('{project}', 'new b')");
    restore_to(&app, project, s - 1, &write).await;
    let f = alice.recv().await;
    assert_eq!((f["op"].as_str(), f["reason"].as_str()), (Some("resync"), Some("history_rewound")), "{f}");
}

/// A feed reset (or a restore loaded into the live database) while the listener stays connected: the new,
/// lower seqs are not duplicates to skip but a history that started again.
#[tokio::test]
async fn a_feed_reset_while_the_listener_stays_connected_tells_clients_to_resync() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut alice, s) = app.joined(&token, project).await;
    for t in ["a", "b", "c"] {
        app.insert_task(project, t).await;
    }
    assert_gapless(&alice.events(3).await, project, s + 1, s + 3);
    app.sql.execute("DELETE FROM feed_events WHERE room = $1::uuid::text AND seq > $2", &[&project, &s]).await.unwrap();
    app.insert_task(project, "d").await; // seq s+1 again
    let f = alice.recv().await;
    assert_eq!((f["op"].as_str(), f["reason"].as_str()), (Some("resync"), Some("history_rewound")), "{f}");
    assert_eq!(f["latest"], s + 1);

    // Joining afresh, the client follows the new history.
    let (mut again, from) = app.joined(&token, project).await;
    assert_eq!(from, s + 1);
    app.insert_task(project, "e").await;
    let e = again.event().await;
    assert_eq!((e["seq"].as_i64(), e["row"]["title"].as_str()), (Some(s + 2), Some("e")));
}

async fn restored_and_written_past_the_old_seq(description_bytes: usize) {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut alice, s) = app.joined(&token, project).await;
    let (bob, other) = app.member_of_new_project("bob").await;
    let (mut bystander, o) = app.joined(&bob, other).await;
    let pad = "x".repeat(description_bytes);
    for i in 0..3 {
        app.sql
            .execute(
                "INSERT INTO tasks (project_id, title, description) VALUES ($1, $2, $3)",
                &[&project, &format!("t{i}"), &pad],
            )
            .await
            .unwrap();
    }
    let events = alice.events(3).await;
    assert_gapless(&events, project, s + 1, s + 3);
    assert!(events.iter().all(|e| e["row"]["description"].as_str().unwrap().len() == description_bytes));

    // Restored to s+1, then two new tasks (s+2, s+3) before the listener is back: the seq is where it was,
    // but s+2 and s+3 are different events now.
    let write = format!(
        "INSERT INTO tasks (project_id, title, description)
         VALUES ('{project}', 'new 2', '{pad}'), ('{project}', 'new 3', '{pad}')"
    );
    restore_to(&app, project, s + 1, &write).await;
    let resync = alice.recv().await;
    assert_eq!((resync["op"].as_str(), resync["reason"].as_str()), (Some("resync"), Some("history_rewound")));
    assert_eq!(resync["latest"], s + 3);

    // Another project's room had nothing rewound and carries on.
    app.add_member(other, "alice").await;
    let e = bystander.event().await;
    assert_eq!(e["seq"], o + 1);
    bystander.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_resume_that_names_its_last_event_gets_a_resync_if_a_restore_gave_that_seq_to_another_event() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut alice, s) = app.joined(&token, project).await;
    for i in 0..3 {
        app.insert_task(project, &format!("t{i}")).await;
    }
    let events = alice.events(3).await;
    let (last, at) = (events[2]["seq"].as_i64().unwrap(), events[2]["at"].clone());
    assert!(at.is_string(), "{}", events[2]);
    drop(alice);

    // A plain join names the latest event's `at` too, so even a client that saw no event can name it.
    let (_, fresh) = {
        let mut c = app.client(&token).await;
        c.send(json!({"op": "join", "project": project})).await;
        let f = c.recv().await;
        (c, f)
    };
    assert_eq!((fresh["seq"].as_i64(), &fresh["at"]), (Some(last), &at));

    // While history is what the client saw, naming the last event is a plain resume, whatever form of the
    // instant the client kept (here as JavaScript's toISOString() would give it: UTC, milliseconds).
    app.insert_task(project, "t3").await;
    let js = chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut again = app.client(&token).await;
    again.send(json!({"op": "join", "project": project, "since": last, "since_at": js})).await;
    let joined = again.recv().await;
    assert_eq!((joined["op"].as_str(), &joined["at"]), (Some("joined"), &at));
    assert_eq!(seq_title(&[again.event().await]), vec![(s + 4, "t3".to_string())]);
    drop(again);

    // Restored to s+1 and written past the old seqs while the client was away: s+2.. are other events now.
    // A resume from s+3 by number alone would go on from s+4 as if nothing happened; naming s+3 gets a resync.
    let write =
        format!("INSERT INTO tasks (project_id, title) SELECT '{project}', 'new ' || g FROM generate_series(1, 4) g");
    restore_to(&app, project, s + 1, &write).await;
    let mut back = app.client(&token).await;
    back.send(json!({"op": "join", "project": project, "since": last, "since_at": at, "ref": 9})).await;
    let f = back.recv().await;
    assert_eq!(
        (f["op"].as_str(), f["reason"].as_str(), f["ref"].as_i64()),
        (Some("resync"), Some("history_rewound"), Some(9))
    );
    assert_eq!(f["latest"], s + 5);
    // The connection stays usable: join afresh.
    assert_eq!(back.join(project).await, s + 5);
}

#[tokio::test]
async fn a_client_that_lagged_past_the_rewind_warning_is_still_told_to_resync() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.feed.room_buffer = 16;
    // Far longer than the test runs, however slow the machine: the lagging client must not be dropped.
    settings.feed.send_timeout = Duration::from_secs(600);
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut lagging, s) = app.joined(&token, project).await; // reads nothing until the end
    let (mut reader, _) = app.joined(&token, project).await;

    // 5,000 events of ~3.4 KB: far more than the socket buffers hold, so the lagging client's session stops
    // at a write, and the room's buffer of 16 moves on without it.
    app.sql
        .execute(
            "INSERT INTO tasks (project_id, title, description)
             SELECT $1, 'old ' || g, repeat('x', 3000) FROM generate_series(1, 5000) g",
            &[&project],
        )
        .await
        .unwrap();
    assert_gapless(&reader.events(5000).await, project, s + 1, s + 5000);

    // Restored to s+4000 and written on: s+4001.. are other events now. The room's warning is followed by
    // 100 more events, so it is gone from the buffer long before the lagging session looks again.
    let write = |from: i64| {
        format!(
            "INSERT INTO tasks (project_id, title) SELECT '{project}', 'new ' || g FROM generate_series({from}, {}) g",
            from + 99
        )
    };
    restore_to(&app, project, s + 4000, &write(1)).await;
    let resync = reader.recv().await;
    assert_eq!((resync["op"].as_str(), resync["reason"].as_str()), (Some("resync"), Some("history_rewound")));
    let (mut rejoined, from) = app.joined(&token, project).await;
    assert_eq!(from, s + 4100);
    app.sql.batch_execute(&write(101)).await.unwrap();
    assert_gapless(&rejoined.events(100).await, project, s + 4101, s + 4200);

    // The lagging client gets the events its socket held and what it caught up from history before the
    // server noticed the restore (those may be of the new history: the resync supersedes them, the client
    // reloads), then the same resync, although the warning left the room's buffer before it looked.
    let mut events = Vec::new();
    let last = loop {
        let f = lagging.recv().await;
        if f["op"] != "event" {
            break f;
        }
        events.push(f);
    };
    assert_eq!((last["op"].as_str(), last["reason"].as_str()), (Some("resync"), Some("history_rewound")), "{last}");
    assert_eq!(last["latest"], s + 4200);
    assert_gapless(&events, project, s + 1, s + events.len() as i64);
    lagging.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn restarting_the_whole_postgres_server_mid_stream_loses_nothing() {
    let cluster = Cluster::start();
    let db_url = fresh_database(&cluster.url()).await;
    let mut app = spawn_app_on(test_settings(&db_url)).await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (alice, s) = app.joined(&token, project).await;
    let (bob, _) = app.joined(&token, project).await;
    // Both read throughout: an outage and a restart take what they take.
    let mut alice = alice.collect_in_background(s);
    let bob = bob.collect_in_background(s);

    // A writer that keeps going through the outage, reconnecting as any client would.
    let url = db_url.clone();
    let writer = tokio::spawn(async move {
        let mut committed = 0;
        let mut sql = connect(&url).await;
        let mut i = 0;
        while committed < 200 {
            i += 1;
            match sql
                .execute("INSERT INTO tasks (project_id, title) VALUES ($1, $2)", &[&project, &format!("t{i}")])
                .await
            {
                Ok(_) => committed += 1,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                        tokio::spawn(conn);
                        sql = c;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    alice.reached(s + 30).await;
    cluster.stop();
    // While the database is down, the server says so.
    assert!(app.unhealthy_within(Duration::from_secs(4)).await, "/healthz should answer 503 while PostgreSQL is down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_again();
    app.wait_until_healthy().await;
    // The pool recovered: a write through the API works again, and reaches the feed like any other.
    let res = reqwest::Client::new()
        .post(app.http(&format!("/api/projects/{project}/tasks")))
        .bearer_auth(&token)
        .json(&json!({"title": "through the API after the restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    writer.await.unwrap();
    app.sql = connect(&db_url).await; // the old one died with the server
    let end: i64 = app
        .sql
        .query_one("SELECT last_seq FROM feed_seq WHERE room = $1::uuid::text", &[&project])
        .await
        .unwrap()
        .get(0);
    let (mut alice, seen) = alice.until(end).await;
    let (_, bob_seen) = bob.until(end).await;
    alice.expect_silence(Duration::from_millis(300)).await;

    assert_gapless(&seen, project, s + 1, end);
    assert_gapless(&bob_seen, project, s + 1, end);
    assert_eq!(seq_title(&seen), recorded_titles(&app, project, s).await);
    app.stop().await;
}

#[tokio::test]
async fn a_network_cut_between_server_and_database_is_noticed_and_loses_nothing() {
    // The server reaches PostgreSQL through a proxy the test can cut: no FIN, no RST, just silence, the
    // failure that neither `pg_terminate_backend` nor a server restart shows (both say goodbye).
    let (app, proxy) = app_behind_a_proxy().await;
    let db_url = app.db_url.clone();
    let (token, project) = app.member_of_new_project("alice").await;
    let (alice, s) = app.joined(&token, project).await;
    let mut alice = alice.collect_in_background(s); // reads throughout, the cut included

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = stop.clone();
    let url = db_url.clone();
    let writer = tokio::spawn(async move {
        let sql = connect(&url).await;
        let mut i = 0;
        while !writing.load(std::sync::atomic::Ordering::SeqCst) {
            i += 1;
            sql.execute("INSERT INTO tasks (project_id, title) VALUES ($1, $2)", &[&project, &format!("t{i}")])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    alice.reached(s + 20).await;
    proxy.cut();
    // Nothing arrives while the link is down, and the server notices: its probe goes unanswered.
    assert!(
        app.unhealthy_within(Duration::from_secs(5)).await,
        "/healthz should answer 503 once the listener's connection stops answering"
    );
    // Stay cut through a failed reconnect (the handshake is accepted and never answered).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during: i64 = app.latest_seq(project).await;
    proxy.heal();
    app.wait_until_healthy().await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();

    let end = app.latest_seq(project).await;
    assert!(end > during && during > s + 20, "writes went on during the cut and after it");
    let (mut alice, seen) = alice.until(end).await;
    alice.expect_silence(Duration::from_millis(300)).await;

    assert_gapless(&seen, project, s + 1, end);
    assert_eq!(seq_title(&seen), recorded_titles(&app, project, s).await);
    // And the connection pool found its way back too: a write through the API works.
    let res = reqwest::Client::new()
        .post(app.http(&format!("/api/projects/{project}/tasks")))
        .bearer_auth(&token)
        .json(&json!({"title": "through the API after the cut"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(alice.event().await["row"]["title"], "through the API after the cut");
}

#[tokio::test]
async fn a_token_revoked_while_the_server_was_cut_off_from_the_database_still_closes_its_connections() {
    let (app, proxy) = app_behind_a_proxy().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut alice, _) = app.joined(&token, project).await;

    proxy.cut();
    assert!(app.unhealthy_within(WAIT).await, "the cut was never noticed");
    // The revocation's notification is sent while nobody listens: it is lost.
    boardcast::admin::revoke_token(&app.sql, &token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.heal();

    // Back online, the server re-checks the tokens of its open connections and closes this one.
    let (code, reason) = alice.closed().await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (4001, "token revoked"));
}

#[tokio::test]
async fn a_stampede_of_resuming_clients_queues_for_history_and_leaves_the_api_its_connections() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.pool_size = 4;
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    for i in 0..30 {
        app.insert_task(project, &format!("t{i}")).await;
    }
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(app.client(&token).await);
    }

    // Make every history read wait, as a slow disk or a long replay would: hold a lock they queue behind.
    let mut locker = connect(&db_url).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE feed_events IN ACCESS EXCLUSIVE MODE").await.unwrap();
    for c in &mut clients {
        c.send(json!({"op": "join", "project": project, "since": 0})).await;
    }
    // The joins have reached the lock, however slow the machine, and the rest had a moment to queue too.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.lock_waiters().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no join ever reached the history");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Twelve waiting replays, a pool of four: the API still answers at once.
    let me = tokio::time::timeout(
        Duration::from_secs(3),
        reqwest::Client::new().get(app.http("/api/me")).bearer_auth(&token).send(),
    )
    .await
    .expect("the API should not wait behind the feed's reads")
    .unwrap();
    assert_eq!(me.status(), 200);

    lock.commit().await.unwrap();
    let end = app.latest_seq(project).await;
    for c in &mut clients {
        let joined = c.recv().await;
        assert_eq!((joined["op"].as_str(), joined["seq"].as_i64()), (Some("joined"), Some(0)), "{joined}");
        let replay = c.events(end as usize).await;
        assert_gapless(&replay, project, 1, end);
    }
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_hold_back_one_that_does() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    // Short, so the stuck client is dropped within the test; long enough that a reader that reads all the
    // time is never taken for a stuck one on a loaded machine.
    settings.feed.send_timeout = Duration::from_secs(5);
    settings.feed.room_buffer = 64;
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (stuck, _) = app.joined(&token, project).await; // joins, then never reads again
    let (mut reader, s) = app.joined(&token, project).await;

    // 8,000 events of ~4 KB each: far more than the socket buffers of the stuck client hold. Written from
    // another task, so the reader reads while they are written, as a real client would.
    let url = app.db_url.clone();
    let writer = tokio::spawn(async move {
        let sql = connect(&url).await;
        let pad = "x".repeat(4000);
        for chunk in 0..80 {
            sql.execute(
                "INSERT INTO tasks (project_id, title, description)
                 SELECT $1, 'c' || $2::int || '-' || g, $3 FROM generate_series(1, 100) g",
                &[&project, &chunk, &pad],
            )
            .await
            .unwrap();
        }
    });
    let events = reader.events(8000).await;
    writer.await.unwrap();
    let end = app.latest_seq(project).await;
    assert_gapless(&events, project, s + 1, end);

    // The stuck client is disconnected as too slow (send_timeout), and the server carries on.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.feed.rooms.subscribers(&project.into()) != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the stuck client was never disconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.insert_task(project, "after").await;
    assert_eq!(reader.event().await["seq"], end + 1);
    drop(stuck);
}

#[tokio::test]
async fn a_slow_reader_behind_the_rooms_buffer_catches_up_from_history_in_order() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.feed.room_buffer = 16;
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut slow, s) = app.joined(&token, project).await;
    let pages_before = app.feed.history.client_pages();

    app.sql
        .execute(
            "INSERT INTO tasks (project_id, title) SELECT $1, 'b' || g FROM generate_series(1, 3000) g",
            &[&project],
        )
        .await
        .unwrap();
    let mut events = Vec::new();
    for i in 0..3000 {
        if i % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await; // fall behind
        }
        events.push(slow.event().await);
    }
    assert_gapless(&events, project, s + 1, s + 3000);
    slow.expect_silence(Duration::from_millis(300)).await;
    // The path this test is about: the client fell behind the room's 16 events and read pages of its own.
    assert!(app.feed.history.client_pages() > pages_before, "the reader never fell behind the room's buffer");
}

#[tokio::test]
async fn a_client_that_stops_reading_during_a_bulk_update_of_large_rows_pins_no_more_than_the_budget() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    // Far longer than the test runs, however slow the machine: the stalled client must not be dropped.
    settings.feed.send_timeout = Duration::from_secs(600);
    settings.feed.held_frames_budget = 2 * 1024 * 1024;
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut stalled, s) = app.joined(&token, project).await;
    let (reader, _) = app.joined(&token, project).await;
    // The reader reads (and the test looks at what the rooms hold after each event) while the rows are written.
    let feed = app.feed.clone();
    let reader = reader.read_in_background(s, (Vec::new(), 0), move |(events, most), e| {
        events.push(e);
        *most = feed.rooms.held_bytes().max(*most);
    });

    // 200 rows of 100 KB, then an update of all of them: 400 frames, about 60 MB, announced by seq range only,
    // so the room reads them from history and holds each large frame for its subscribers.
    let url = app.db_url.clone();
    let writer = tokio::spawn(async move {
        let sql = connect(&url).await;
        sql.execute(
            "INSERT INTO tasks (project_id, title, description)
             SELECT $1, 't' || g, repeat('x', 100000) FROM generate_series(1, 200) g",
            &[&project],
        )
        .await
        .unwrap();
        sql.execute("UPDATE tasks SET description = repeat('y', 100000) WHERE project_id = $1", &[&project])
            .await
            .unwrap();
    });
    writer.await.unwrap();
    let (_, (events, most)) = reader.until(s + 400).await;
    assert_gapless(&events, project, s + 1, s + 400);
    // The budget, plus the page the room has just sent (its subscribers get the time of the next read to take
    // it), plus a frame of slack.
    let bound = 2 * 1024 * 1024 + boardcast::feed::history::PAGE_BYTES as usize + 300_000;
    assert!(most <= bound, "held {most} bytes, more than {bound}");

    // The stalled client reads again: what the room let go of comes from history, in order, none missing.
    let late = stalled.events(400).await;
    assert_gapless(&late, project, s + 1, s + 400);
    assert_eq!(late.last().unwrap()["row"]["description"].as_str().map(str::len), Some(100_000));
    // Everyone has taken everything: nothing is held any more.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.feed.rooms.held_bytes() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "{} bytes still held", app.feed.rooms.held_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_idle_timeout() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.feed.ping_interval = Duration::from_millis(300);
    settings.feed.idle_timeout = Duration::from_secs(1);
    // Far longer than the idle timeout: a drop within a few seconds is the idle timeout's doing.
    settings.feed.send_timeout = Duration::from_secs(60);
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    // Before the join: the server hears the join after this, so the idle timeout runs from later than this.
    let joined = tokio::time::Instant::now();
    let (mut silent, _) = app.joined(&token, project).await;

    // A client that does not read does not answer pings either. Dropped at the first ping after a second of
    // silence: within 1.3 s of its last frame, give or take scheduling.
    while !app.feed.rooms.is_empty() {
        assert!(joined.elapsed() < Duration::from_secs(10), "the silent peer was not dropped after its idle timeout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(joined.elapsed() >= Duration::from_millis(900), "dropped before it had been silent for the idle timeout");
    // The close frame (1001) may or may not survive the reset of a socket that had unread pings in it;
    // either way the connection is over, not left hanging.
    if let Some((code, reason)) = silent.closed().await {
        assert_eq!(code, 1001, "{reason}");
    }
}

#[tokio::test]
async fn a_100k_row_transaction_and_a_100k_row_update_reach_every_subscriber_in_order() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (other_token, other) = app.member_of_new_project("bob").await;
    let (a, s) = app.joined(&token, project).await;
    let (b, _) = app.joined(&token, project).await;
    let (mut elsewhere, o) = app.joined(&other_token, other).await;

    // Both subscribers read from now on, each at its own pace, checking every event without keeping it.
    let in_order = || {
        let mut seq = s;
        move |(): &mut (), e: serde_json::Value| {
            seq += 1;
            assert_eq!(e["seq"].as_i64(), Some(seq));
            let action = if seq <= s + 100_000 { "insert" } else { "update" };
            assert_eq!(e["action"], action, "at seq {seq}");
        }
    };
    let mut readers = [a, b].map(|c| c.read_in_background(s, (), in_order()));

    // The writes, on a connection and a task of their own, as another program's would be.
    let (insert_committed, inserted) = tokio::sync::oneshot::channel();
    let url = app.db_url.clone();
    let writes = tokio::spawn(async move {
        let sql = connect(&url).await;
        sql.batch_execute(&format!(
            "BEGIN;
             INSERT INTO tasks (project_id, title) SELECT '{project}', 'bulk ' || g FROM generate_series(1, 100000) g;
             COMMIT;"
        ))
        .await
        .unwrap();
        let _ = insert_committed.send(());
        sql.batch_execute(&format!("UPDATE tasks SET status = 'done' WHERE project_id = '{project}'")).await.unwrap();
    });

    // Another project's event, written while the big one is being delivered (and the update runs), is not
    // held up behind it.
    inserted.await.expect("the 100,000-row insert failed");
    readers[0].reached(s + 1).await;
    let started = std::time::Instant::now();
    app.insert_task(other, "meanwhile").await;
    let e = elsewhere.event().await;
    assert_eq!((e["seq"].as_i64(), e["row"]["title"].as_str()), (Some(o + 1), Some("meanwhile")));
    let other_latency = started.elapsed();

    writes.await.unwrap();
    for reader in readers {
        let (mut client, ()) = reader.until(s + 200_000).await;
        client.expect_silence(Duration::from_millis(200)).await;
    }
    assert!(other_latency < Duration::from_secs(5), "the other project waited {other_latency:?}");
}

#[tokio::test]
async fn two_servers_on_one_database_each_deliver_every_event_whoever_wrote_it() {
    let app1 = spawn_app().await;
    let app2 = spawn_app_on(test_settings(&app1.db_url)).await;
    let (token, project) = app1.member_of_new_project("alice").await;
    let (mut on1, s) = app1.joined(&token, project).await;
    let (mut on2, s2) = app2.joined(&token, project).await;
    assert_eq!(s, s2);

    for i in 0..50 {
        let writer = if i % 2 == 0 { &app1.sql } else { &app2.sql };
        writer
            .execute("INSERT INTO tasks (project_id, title) VALUES ($1, $2)", &[&project, &format!("t{i}")])
            .await
            .unwrap();
    }
    let a = on1.events(50).await;
    let b = on2.events(50).await;
    assert_gapless(&a, project, s + 1, s + 50);
    assert_eq!(seq_title(&a), seq_title(&b));
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_client_that_stopped_reading() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.feed.send_timeout = Duration::from_secs(60);
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (stuck, _) = app.joined(&token, project).await; // joins, then never reads again
    // Far more than the socket buffers hold: the server's writes to the stuck client block.
    let pad = "x".repeat(100_000);
    for chunk in 0..4 {
        app.sql
            .execute(
                "INSERT INTO tasks (project_id, title, description)
                 SELECT $1, 'c' || $2::int || '-' || g, $3 FROM generate_series(1, 100) g",
                &[&project, &chunk, &pad],
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = std::time::Instant::now();
    app.stop().await;
    // Without watching for shutdown while a write waits, the session would sit out its 60 s send timeout
    // (and the server its 10 s grace period).
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    drop(stuck);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_request_that_waits_on_an_unreachable_database() {
    let (app, proxy) = app_behind_a_proxy().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let mut alice = app.client(&token).await;
    proxy.cut();
    // The membership check goes into the cut and would wait for the pool's timeouts (5 s and more); so
    // would the server's first retention pass, if it is still running.
    alice.send(json!({"op": "join", "project": project})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let (closed, ()) = tokio::join!(alice.closed(), app.stop());
    let (code, reason) = closed.expect("a close frame");
    assert_eq!(code, 1012, "{reason}");
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?}", started.elapsed());
    proxy.heal();
}

#[tokio::test]
async fn on_shutdown_clients_are_told_to_reconnect_and_resume_without_loss() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let (mut alice, s) = app.joined(&token, project).await;
    app.insert_task(project, "before").await;
    let seen = alice.event().await;

    let db_url = app.db_url.clone();
    app.stop().await;
    let (code, reason) = alice.closed().await.expect("a close frame");
    assert_eq!(code, 1012);
    assert!(reason.contains("reconnect"), "{reason}");

    // Written while no server runs.
    let sql = connect(&db_url).await;
    sql.execute("INSERT INTO tasks (project_id, title) VALUES ($1, 'while down')", &[&project]).await.unwrap();

    let app = spawn_app_on(test_settings(&db_url)).await;
    let mut again = app.client(&token).await;
    again.send(json!({"op": "join", "project": project, "since": seen["seq"]})).await;
    assert_eq!(again.recv().await["op"], "joined");
    let e = again.event().await;
    assert_eq!((e["seq"].as_i64(), e["row"]["title"].as_str()), (Some(s + 2), Some("while down")));
}

#[tokio::test]
async fn concurrent_writers_and_clients_that_randomly_drop_and_resume_all_see_exactly_the_committed_events() {
    let app = spawn_app().await;
    let (token, p1) = app.member_of_new_project("alice").await;
    let p2 = app.project("second", "alice").await;
    let s1 = app.latest_seq(p1).await;
    let s2 = app.latest_seq(p2).await;

    // Four writers: single inserts, multi-statement transactions across both projects, updates, and
    // transactions that roll back.
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let url = app.db_url.clone();
        writers.push(tokio::spawn(async move {
            let mut sql = connect(&url).await;
            for i in 0..60u64 {
                let tx = sql.transaction().await.unwrap();
                let project = if (w + i) % 2 == 0 { p1 } else { p2 };
                tx.execute("INSERT INTO tasks (project_id, title) VALUES ($1, $2)", &[&project, &format!("w{w}-{i}")])
                    .await
                    .unwrap();
                if i % 3 == 0 {
                    tx.execute("UPDATE tasks SET status = 'done' WHERE title = $1", &[&format!("w{w}-{i}")])
                        .await
                        .unwrap();
                }
                if i % 7 == 0 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                }
            }
        }));
    }

    // Three clients in both rooms, each dropping its connection at random moments and resuming.
    let mut clients = Vec::new();
    for c in 0..3u64 {
        let url = app.ws_url();
        let token = token.clone();
        clients.push(tokio::spawn(async move {
            let mut seen: std::collections::HashMap<Uuid, Vec<i64>> = Default::default();
            let mut last = std::collections::HashMap::from([(p1, s1), (p2, s2)]);
            let mut rng_state = 0x9e3779b97f4a7c15u64 ^ c;
            let mut next_rand = move || {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
            while tokio::time::Instant::now() < deadline {
                let mut ws = WsClient::connect(&url, &token).await.unwrap();
                for p in [p1, p2] {
                    ws.send(json!({"op": "join", "project": p, "since": last[&p]})).await;
                }
                let frames = 5 + next_rand() % 40;
                for _ in 0..frames {
                    let Some(f) = ws.recv_within(Duration::from_millis(300)).await else { break };
                    if f["op"] == "event" {
                        let p: Uuid = f["project"].as_str().unwrap().parse().unwrap();
                        let seq = f["seq"].as_i64().unwrap();
                        seen.entry(p).or_default().push(seq);
                        last.insert(p, seq);
                    } else {
                        assert_eq!(f["op"], "joined", "{f}");
                    }
                }
                drop(ws); // drop without a goodbye, mid-stream
            }
            (seen, last)
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let results: Vec<_> = futures::future::join_all(clients).await.into_iter().map(|r| r.unwrap()).collect();

    // Finally each client resumes once more and drains what is left.
    for (mut seen, last) in results {
        let mut ws = app.client(&token).await;
        for (p, s) in [(p1, s1), (p2, s2)] {
            ws.send(json!({"op": "join", "project": p, "since": last[&p]})).await;
            assert_eq!(ws.recv().await["op"], "joined");
            let end = app.latest_seq(p).await;
            let rest = ws.events((end - last[&p]) as usize).await;
            let all = seen.entry(p).or_default();
            all.extend(rest.iter().map(|e| e["seq"].as_i64().unwrap()));
            assert_eq!(*all, (s + 1..=end).collect::<Vec<_>>(), "project {p}: not exactly {}..={end}", s + 1);
        }
        ws.expect_silence(Duration::from_millis(200)).await;
    }
    // The events match the committed rows: 4 writers x 60, minus the rolled-back ones.
    let committed: i64 = app.sql.query_one("SELECT count(*) FROM tasks", &[]).await.unwrap().get(0);
    assert_eq!(committed, 4 * (60 - 9));
    let inserts: i64 = app
        .sql
        .query_one(
            "SELECT count(*) FROM feed_events WHERE frame LIKE '%\"table\":\"tasks\",\"action\":\"insert\"%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(inserts, committed);
}

#[tokio::test]
async fn retention_forgets_a_deleted_project_once_its_last_event_is_older_than_the_age_limit() {
    let app = spawn_app().await;
    let (_, old) = app.member_of_new_project("alice").await;
    let (_, recent) = app.member_of_new_project("bob").await;
    let (_, alive) = app.member_of_new_project("carol").await;
    for p in [old, recent, alive] {
        app.insert_task(p, "t").await;
    }
    app.sql.execute("DELETE FROM projects WHERE id = ANY($1)", &[&vec![old, recent]]).await.unwrap();
    // Everything is two days old, except what happened to `recent` and `alive` last.
    app.sql.execute("UPDATE feed_events SET at = now() - interval '2 days'", &[]).await.unwrap();
    for p in [recent, alive] {
        app.sql
            .execute(
                "UPDATE feed_events SET at = now() WHERE room = $1::uuid::text
                    AND seq = (SELECT max(seq) FROM feed_events WHERE room = $1::uuid::text)",
                &[&p],
            )
            .await
            .unwrap();
    }
    let count = |p: Uuid| {
        let sql = &app.sql;
        async move {
            let events: i64 = sql
                .query_one("SELECT count(*) FROM feed_events WHERE room = $1::uuid::text", &[&p])
                .await
                .unwrap()
                .get(0);
            let lock: i64 = sql
                .query_one("SELECT count(*) FROM feed_locks WHERE room = $1::uuid::text", &[&p])
                .await
                .unwrap()
                .get(0);
            (events, lock)
        }
    };
    let (recent_before, _) = count(recent).await;
    let retention = boardcast::config::Retention {
        max_age: Some(Duration::from_secs(86_400)),
        max_per_project: None,
        ..Default::default()
    };
    boardcast::admin::prune(&app.feed.pool, &retention).await.unwrap();
    assert_eq!(count(old).await, (0, 0), "a deleted project's old history is gone, lock row too");
    assert_eq!(count(recent).await.1, 1, "a project deleted within the age limit keeps its lock row");
    assert_eq!(count(recent).await.0, 1, "and, like any project, its latest event (of {recent_before})");
    assert_eq!(count(alive).await, (1, 1), "a live project keeps its latest event however old the rest");
}

#[tokio::test]
async fn retention_by_age_removes_only_a_prefix_so_a_resume_never_skips_a_hole() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    for i in 0..10 {
        app.insert_task(project, &format!("t{i}")).await;
    }
    let latest = app.latest_seq(project).await;
    // `at` is the statement's start, so a writer that waited for the project's lock can have an older `at`
    // than the event before it. Make one young event sit among old ones.
    app.sql
        .execute(
            "UPDATE feed_events SET at = CASE WHEN seq = 5 THEN now() ELSE now() - interval '2 days' END
              WHERE room = $1::uuid::text",
            &[&project],
        )
        .await
        .unwrap();
    let retention = boardcast::config::Retention {
        max_age: Some(Duration::from_secs(86_400)),
        max_per_project: None,
        ..Default::default()
    };
    assert_eq!(boardcast::admin::prune(&app.feed.pool, &retention).await.unwrap(), 4, "seqs 1..=4 only");

    let mut alice = app.client(&token).await;
    alice.send(json!({"op": "join", "project": project, "since": 4})).await;
    assert_eq!(alice.recv().await["op"], "joined");
    assert_gapless(&alice.events((latest - 4) as usize).await, project, 5, latest);
    alice.send(json!({"op": "join", "project": Uuid::new_v4(), "since": 0})).await;
    assert_eq!(alice.recv().await["code"], "not_found");
}

//! Your tables, your rooms: boardcast attached to a schema no one here designed (`boards`, `cards` with bigint
//! keys, `card_comments` reaching their board through `cards`), with the app's own join rule.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The app: boards with numbered ids, cards on them, comments on cards, and who may see which board.
const APP_SCHEMA: &str = "
    CREATE SCHEMA kanban;
    CREATE TABLE kanban.boards (id bigint PRIMARY KEY, name text NOT NULL);
    CREATE TABLE kanban.cards (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        board_id bigint REFERENCES kanban.boards,
        title text NOT NULL,
        password_hash text
    );
    CREATE TABLE kanban.card_comments (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        card_id bigint NOT NULL REFERENCES kanban.cards,
        body text NOT NULL
    );
    CREATE TABLE kanban.board_members (board_id bigint, user_id text, PRIMARY KEY (board_id, user_id));
    INSERT INTO kanban.boards VALUES (1, 'one'), (2, 'two');
";

/// Attached with a few calls, as an app's migration would.
const ATTACH: &str = "
    SELECT boardcast.track('kanban.boards', room => 'id', ends_room => true);
    SELECT boardcast.track('kanban.cards', room => 'board_id', exclude => '{password_hash}');
    SELECT boardcast.track('kanban.card_comments',
                           room => '(SELECT board_id FROM kanban.cards c WHERE c.id = card_comments.card_id)');
    CREATE OR REPLACE FUNCTION boardcast.may_join(subject text, room text) RETURNS boolean LANGUAGE sql STABLE AS $$
        SELECT EXISTS (SELECT 1 FROM kanban.board_members WHERE board_id = room::bigint AND user_id = subject)
    $$;
";

async fn app_with_kanban() -> TestApp {
    let app = spawn_app().await;
    app.sql.batch_execute(APP_SCHEMA).await.unwrap();
    app.sql.batch_execute(ATTACH).await.unwrap();
    app
}

/// A signed-in user who may see `boards`.
async fn member_of(app: &TestApp, name: &str, boards: &[i64]) -> (String, String) {
    let (id, token) = app.user(name).await;
    for b in boards {
        app.sql.execute("INSERT INTO kanban.board_members VALUES ($1, $2)", &[b, &id.to_string()]).await.unwrap();
    }
    (id.to_string(), token)
}

async fn join(client: &mut WsClient, room: Value) -> Value {
    client.send(json!({"op": "join", "room": room})).await;
    client.recv().await
}

async fn joined(app: &TestApp, token: &str, room: Value) -> (WsClient, i64) {
    let mut c = app.client(token).await;
    let f = join(&mut c, room).await;
    assert_eq!(f["op"], "joined", "{f}");
    (c, f["seq"].as_i64().unwrap())
}

#[tokio::test]
async fn plain_sql_writes_to_an_apps_tables_reach_the_right_boards_room_and_no_other() {
    let app = app_with_kanban().await;
    let (_, alice) = member_of(&app, "alice", &[1]).await;
    let (_, bob) = member_of(&app, "bob", &[2]).await;
    let (mut a, a0) = joined(&app, &alice, json!(1)).await;
    let (mut b, b0) = joined(&app, &bob, json!("2")).await;
    assert_eq!(a0, 0, "the boards were made before they were tracked: no events yet");

    app.sql
        .batch_execute(
            "INSERT INTO kanban.cards (board_id, title, password_hash) VALUES (1, 'fix login', 'secret!');
             INSERT INTO kanban.card_comments (card_id, body) VALUES (1, 'on it');
             UPDATE kanban.cards SET title = 'fix login now' WHERE id = 1;",
        )
        .await
        .unwrap();
    let events = a.events(3).await;
    let summary: Vec<(i64, &str, &str)> = events
        .iter()
        .map(|e| (e["seq"].as_i64().unwrap(), e["table"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (a0 + 1, "kanban.cards", "insert"),
            (a0 + 2, "kanban.card_comments", "insert"),
            (a0 + 3, "kanban.cards", "update")
        ]
    );
    for e in &events {
        assert_eq!(e["project"], "1", "the room is the board's id, as text: {e}");
    }
    assert_eq!(events[0]["row"]["title"], "fix login");
    assert!(events[0]["row"].get("password_hash").is_none(), "a left-out column never enters the feed");
    assert_eq!(events[1]["row"]["body"], "on it");
    assert_eq!(events[2]["old"]["title"], "fix login");
    b.expect_silence(Duration::from_millis(300)).await;

    // A card moved to board 2: gone from board 1's room, new in board 2's.
    app.sql.execute("UPDATE kanban.cards SET board_id = 2 WHERE id = 1", &[]).await.unwrap();
    let gone = a.event().await;
    assert_eq!((gone["action"].as_str(), gone["row"]["board_id"].as_i64()), (Some("delete"), Some(1)));
    let came = b.event().await;
    assert_eq!((came["seq"].as_i64(), came["action"].as_str()), (Some(b0 + 1), Some("insert")));
    assert_eq!(came["row"]["title"], "fix login now");

    // A change to a left-out column alone is no change anyone can see.
    app.sql.execute("UPDATE kanban.cards SET password_hash = 'other'", &[]).await.unwrap();
    b.expect_silence(Duration::from_millis(300)).await;
    let leaked: i64 = app
        .sql
        .query_one("SELECT count(*) FROM feed_events WHERE frame LIKE '%secret!%' OR frame LIKE '%password_hash%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn a_column_added_with_alter_table_is_in_the_next_event_without_a_restart() {
    let app = app_with_kanban().await;
    let (_, alice) = member_of(&app, "alice", &[1]).await;
    let (mut a, _) = joined(&app, &alice, json!(1)).await;
    app.sql.execute("INSERT INTO kanban.cards (board_id, title) VALUES (1, 'a')", &[]).await.unwrap();
    assert!(a.event().await["row"].get("color").is_none());
    app.sql.batch_execute("ALTER TABLE kanban.cards ADD COLUMN color text DEFAULT 'red'").await.unwrap();
    app.sql.execute("INSERT INTO kanban.cards (board_id, title) VALUES (1, 'b')", &[]).await.unwrap();
    assert_eq!(a.event().await["row"]["color"], "red");
}

#[tokio::test]
async fn the_apps_join_rule_decides_and_a_key_it_cannot_read_is_refused_like_a_stranger() {
    let app = app_with_kanban().await;
    let (_, alice) = member_of(&app, "alice", &[1]).await;
    let mut a = app.client(&alice).await;
    for room in [json!(2), json!("abc"), json!(3), json!("00000000-0000-0000-0000-000000000000")] {
        let f = join(&mut a, room.clone()).await;
        assert_eq!((f["op"].as_str(), f["code"].as_str()), (Some("error"), Some("not_found")), "{room}: {f}");
    }
    assert_eq!(join(&mut a, json!(1)).await["op"], "joined", "the connection carries on");
}

#[tokio::test]
async fn losing_access_by_the_apps_rule_ends_the_room_on_recheck_and_on_the_schedule() {
    let app = app_with_kanban().await;
    let (alice_id, alice) = member_of(&app, "alice", &[1, 2]).await;
    let (_, bob) = member_of(&app, "bob", &[1]).await;
    let (mut a, _) = joined(&app, &alice, json!(1)).await;
    let (mut b, _) = joined(&app, &bob, json!(1)).await;

    // The app revokes alice's access and says so: she leaves at once, bob stays.
    app.sql
        .batch_execute(&format!(
            "BEGIN; DELETE FROM kanban.board_members WHERE board_id = 1 AND user_id = '{alice_id}';
             SELECT boardcast.recheck('1'); COMMIT;"
        ))
        .await
        .unwrap();
    let left = a.recv().await;
    assert_eq!(
        (left["op"].as_str(), left["reason"].as_str(), left["project"].as_str()),
        (Some("left"), Some("removed"), Some("1"))
    );
    app.sql.execute("INSERT INTO kanban.cards (board_id, title) VALUES (1, 'after')", &[]).await.unwrap();
    assert_eq!(b.event().await["row"]["title"], "after");
    a.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(join(&mut a, json!(1)).await["code"], "not_found");
    drop(a);

    // Without a recheck call, the schedule catches it.
    let db = app.db_url.clone();
    app.stop().await;
    let mut settings = test_settings(&db);
    settings.feed.access_recheck = Duration::from_millis(500);
    let app = spawn_app_on(settings).await;
    let (mut a, _) = joined(&app, &alice, json!(2)).await;
    app.sql.execute("DELETE FROM kanban.board_members WHERE board_id = 2", &[]).await.unwrap();
    let left = a.recv_within(Duration::from_secs(10)).await.expect("left within a few rechecks");
    assert_eq!((left["op"].as_str(), left["reason"].as_str()), (Some("left"), Some("removed")));
}

#[tokio::test]
async fn a_row_without_a_room_fails_its_statement_with_the_tables_name_and_nothing_is_recorded() {
    let app = app_with_kanban().await;
    let before: i64 = app.sql.query_one("SELECT count(*) FROM feed_events", &[]).await.unwrap().get(0);
    let e = app
        .sql
        .execute("INSERT INTO kanban.cards (board_id, title) VALUES (1, 'ok'), (NULL, 'orphan')", &[])
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert!(db.message().contains("kanban.cards") && db.message().contains("no room"), "{}", db.message());
    // A room key the feed cannot carry.
    app.sql.batch_execute("SELECT boardcast.track('kanban.cards', room => $$title$$)").await.unwrap();
    let e = app.sql.execute("INSERT INTO kanban.cards (board_id, title) VALUES (1, E'two\\nlines')", &[]).await;
    let e = e.unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("invalid room key"), "{e:?}");
    let after: i64 = app.sql.query_one("SELECT count(*) FROM feed_events", &[]).await.unwrap().get(0);
    assert_eq!(before, after, "no event of a failed statement");
    let cards: i64 = app.sql.query_one("SELECT count(*) FROM kanban.cards", &[]).await.unwrap().get(0);
    assert_eq!(cards, 0, "and no row either: the writer's statement failed whole");
}

#[tokio::test]
async fn tracking_mistakes_are_refused_with_what_to_do() {
    let app = app_with_kanban().await;
    app.sql.batch_execute("CREATE TABLE kanban.log (line text)").await.unwrap();
    let refused = async |sql: &str| -> String {
        let e = app.sql.batch_execute(sql).await.unwrap_err();
        let db = e.as_db_error().unwrap();
        format!("{} {}", db.message(), db.hint().unwrap_or(""))
    };
    let m = refused("SELECT boardcast.track('kanban.log', room => 'line')").await;
    assert!(m.contains("no primary key") && m.contains("ADD PRIMARY KEY"), "{m}");
    let m = refused("SELECT boardcast.track('kanban.cards', room => 'lane_id')").await;
    assert!(m.contains("lane_id") && m.contains("does not exist"), "{m}");
    let m = refused("SELECT boardcast.track('kanban.cards', room => 'board_id', exclude => '{colour}')").await;
    assert!(m.contains("no column colour"), "{m}");
    let m = refused("SELECT boardcast.track('kanban.cards', room => 'board_id', exclude => '{id}')").await;
    assert!(m.contains("primary key"), "{m}");
    let m = refused("SELECT boardcast.track('kanban.nope', room => 'id')").await;
    assert!(m.contains("does not exist"), "{m}");
    let m = refused("SELECT boardcast.untrack('tasks')").await;
    assert!(m.contains("always tracked"), "{m}");
    // What was tracked is as it was.
    let rooms: Vec<String> = app
        .sql
        .query("SELECT room FROM boardcast.tracked WHERE table_name = 'kanban.cards'::regclass", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rooms, vec!["board_id"]);
}

#[tokio::test]
async fn untracking_a_table_while_clients_are_in_its_rooms_stops_its_events_and_nothing_else() {
    let app = app_with_kanban().await;
    let (_, alice) = member_of(&app, "alice", &[1]).await;
    let (mut a, s) = joined(&app, &alice, json!(1)).await;
    app.sql.batch_execute("SELECT boardcast.untrack('kanban.cards')").await.unwrap();
    app.sql.execute("INSERT INTO kanban.cards (board_id, title) VALUES (1, 'unseen')", &[]).await.unwrap();
    app.sql.execute("UPDATE kanban.boards SET name = 'renamed' WHERE id = 1", &[]).await.unwrap();
    let e = a.event().await;
    assert_eq!((e["seq"].as_i64(), e["table"].as_str()), (Some(s + 1), Some("kanban.boards")), "{e}");
    // Tracked again (as the app's next migration might): its writes are events again, gapless.
    app.sql.batch_execute("SELECT boardcast.track('kanban.cards', room => 'board_id')").await.unwrap();
    app.sql.execute("INSERT INTO kanban.cards (board_id, title) VALUES (1, 'seen')", &[]).await.unwrap();
    let e = a.event().await;
    assert_eq!((e["seq"].as_i64(), e["row"]["title"].as_str()), (Some(s + 2), Some("seen")));
    let tracked: i64 = app
        .sql
        .query_one("SELECT count(*) FROM boardcast.tracked WHERE table_name = 'kanban.cards'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tracked, 1);
}

#[tokio::test]
async fn a_big_statement_on_an_apps_table_arrives_whole_and_a_resume_replays_it() {
    let app = app_with_kanban().await;
    let (_, alice) = member_of(&app, "alice", &[1]).await;
    let (a, s) = joined(&app, &alice, json!(1)).await;
    let reader = a.collect_in_background(s);
    app.sql
        .execute(
            "INSERT INTO kanban.cards (board_id, title) SELECT 1 + (g % 2), 'c' || g FROM generate_series(1, 20000) g",
            &[],
        )
        .await
        .unwrap();
    let (a, events) = reader.until(s + 10_000).await;
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (s + 1..=s + 10_000).collect::<Vec<_>>(), "board 1's half, gapless and in order");
    assert!(events.iter().all(|e| e["project"] == "1"));
    drop(a);
    // A client that saw only the first 100 resumes and gets the rest, once.
    let mut c = app.client(&alice).await;
    c.send(json!({"op": "join", "room": 1, "since": s + 100})).await;
    assert_eq!(c.recv().await["op"], "joined");
    let rest = c.events(9_900).await;
    assert_eq!(rest.first().unwrap()["seq"].as_i64(), Some(s + 101));
    assert_eq!(rest.last().unwrap()["seq"].as_i64(), Some(s + 10_000));
}

#[tokio::test]
async fn the_cli_tracks_untracks_and_lists() {
    let app = app_with_kanban().await;
    let bin = env!("CARGO_BIN_EXE_boardcast");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).env("DATABASE_URL", &app.db_url).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = run(&["tracked"]);
    assert!(ok && out.contains("kanban.cards  room => board_id  without password_hash"), "{out}");
    let (ok, out, _) = run(&["untrack", "kanban.card_comments"]);
    assert!(ok && out.contains("no longer tracked"), "{out}");
    let (ok, out, err) = run(&["track", "kanban.board_members", "--room", "board_id"]);
    assert!(ok && out.contains("tracking kanban.board_members: room => board_id"), "{out} {err}");
    let (ok, _, err) = run(&["track", "kanban.cards", "--room", "lane"]);
    assert!(!ok && err.contains("column \"lane\" does not exist"), "{err}");
    let (_, out, _) = run(&["tracked"]);
    assert!(out.contains("kanban.board_members") && !out.contains("card_comments"), "{out}");
}

/// The app's own users, signed in with JWTs from the app's key (RS256, a test-only key): their `sub` is what
/// the app's join rule sees, and no boardcast user exists for them.
#[tokio::test]
async fn the_apps_own_users_sign_in_with_jwts_and_get_their_boards_and_no_other() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let fixture = |f: &str| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(f);
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.jwt = boardcast::config::JwtSettings {
        public_key: Some(fixture("rsa-public.pem")),
        ..boardcast::config::JwtSettings::default()
    };
    let app = spawn_app_on(settings).await;
    app.sql.batch_execute(APP_SCHEMA).await.unwrap();
    app.sql.batch_execute(ATTACH).await.unwrap();
    app.sql.batch_execute("INSERT INTO kanban.board_members VALUES (1, 'user-17'), (2, 'user-42')").await.unwrap();
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap()).unwrap();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let jwt = |sub: &str| encode(&Header::new(Algorithm::RS256), &json!({"sub": sub, "exp": exp}), &key).unwrap();

    let (mut seventeen, _) = joined(&app, &jwt("user-17"), json!(1)).await;
    let (mut forty_two, _) = joined(&app, &jwt("user-42"), json!(2)).await;
    assert_eq!(join(&mut seventeen, json!(2)).await["code"], "not_found", "not user-17's board");

    app.sql
        .batch_execute(
            "INSERT INTO kanban.cards (board_id, title) VALUES (1, 'for 17'), (2, 'for 42');
             INSERT INTO kanban.card_comments (card_id, body) SELECT id, 'note on ' || title FROM kanban.cards;",
        )
        .await
        .unwrap();
    let e = seventeen.events(2).await;
    assert_eq!((e[0]["row"]["title"].as_str(), e[1]["row"]["body"].as_str()), (Some("for 17"), Some("note on for 17")));
    let e = forty_two.events(2).await;
    assert_eq!((e[0]["row"]["title"].as_str(), e[1]["row"]["body"].as_str()), (Some("for 42"), Some("note on for 42")));
    seventeen.expect_silence(Duration::from_millis(300)).await;
    forty_two.expect_silence(Duration::from_millis(300)).await;
}

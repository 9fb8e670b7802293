//! Presence and broadcast (docs/protocol.md, "Presence and broadcast"), end to end: real servers on one
//! database, real WebSockets. Who is in a room, seen from every server; what happens when a server dies, when
//! PostgreSQL restarts, when someone loses access; broadcasts; and bad or excessive input.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::Cluster;
use common::*;
use serde::Serialize;
use serde_json::{Value, json};

/// Joins `project` with `options` merged into the request (`{"presence": true}`, ...); with presence, returns
/// the `presence_state` that follows `joined`.
async fn join_with(c: &mut WsClient, project: impl Serialize, options: Value) -> Option<Value> {
    let mut req = json!({"op": "join", "project": project});
    req.as_object_mut().unwrap().extend(options.as_object().unwrap().clone());
    let presence = req["presence"] == json!(true);
    c.send(req).await;
    let joined = c.recv().await;
    assert_eq!(joined["op"], "joined", "{joined}");
    if presence {
        let state = c.recv().await;
        assert_eq!(state["op"], "presence_state", "{state}");
        Some(state)
    } else {
        None
    }
}

/// A client joined to `project` with presence; returns it and the room's presence as it joined.
async fn watcher(app: &TestApp, token: &str, project: impl Serialize) -> (WsClient, Value) {
    let mut c = app.client(token).await;
    let state = join_with(&mut c, project, json!({"presence": true})).await.unwrap();
    (c, state)
}

/// A client joined to `project` (no presence frames) that tracks itself with `state`; returns its entry id.
async fn tracking(app: &TestApp, token: &str, project: impl Serialize + Copy, state: Value) -> (WsClient, String) {
    let mut c = app.client(token).await;
    join_with(&mut c, project, json!({})).await;
    let id = track(&mut c, project, state).await;
    (c, id)
}

async fn track(c: &mut WsClient, project: impl Serialize, state: Value) -> String {
    c.send(json!({"op": "track", "project": project, "state": state, "ref": "t"})).await;
    let tracked = c.recv().await;
    assert_eq!((tracked["op"].as_str(), tracked["ref"].as_str()), (Some("tracked"), Some("t")), "{tracked}");
    tracked["id"].as_str().unwrap().to_string()
}

/// The next frame that is not an event (members added or removed are events too).
async fn presence_frame(c: &mut WsClient) -> Value {
    loop {
        let f = c.recv().await;
        if f["op"] != "event" {
            return f;
        }
    }
}

/// The next frame but events, which must be a `presence_diff`.
async fn diff(c: &mut WsClient) -> Value {
    let f = presence_frame(c).await;
    assert_eq!(f["op"], "presence_diff", "expected a presence diff, got {f}");
    f
}

fn metas(entries: &[(&str, Value)]) -> Value {
    json!({"metas": entries.iter().map(|(id, state)| json!({"id": id, "state": state})).collect::<Vec<_>>()})
}

/// An entry's metas in the order the server lists them (by server, then connection).
fn sorted(mut entries: Vec<(&str, Value)>) -> Vec<(&str, Value)> {
    entries.sort_by_key(|(id, _)| {
        let (server, conn) = id.split_once('-').unwrap();
        (u64::from_str_radix(server, 16).unwrap(), conn.parse::<u64>().unwrap())
    });
    entries
}

#[tokio::test]
async fn two_servers_see_the_same_users_and_tabs_join_update_and_leave() {
    let app1 = spawn_app().await;
    let app2 = spawn_app_on(test_settings(&app1.db_url)).await;
    let (alice_id, alice) = app1.user("alice").await;
    let (bob_id, bob) = app1.user("bob").await;
    let (_, carol) = app1.user("carol").await;
    let project = app1.project("board", "alice").await;
    app1.add_member(project, "bob").await;
    app1.add_member(project, "carol").await;
    let (alice, bob_u) = (alice, bob_id.to_string());
    let alice_u = alice_id.to_string();

    // Carol watches from server 1, Bob from server 2: nobody is present yet.
    let (mut on1, state) = watcher(&app1, &carol, project).await;
    assert_eq!(state, json!({"op": "presence_state", "project": project, "users": {}}));
    let (mut on2, _) = watcher(&app2, &bob, project).await;

    // Alice opens the board on server 1: she joined, on both servers.
    let (mut tab1, id1) = tracking(&app1, &alice, project, json!({"viewing": "task 9"})).await;
    let joined = json!({"op": "presence_diff", "project": project,
                        "joins": {&alice_u: metas(&[(&id1, json!({"viewing": "task 9"}))])}});
    assert_eq!(diff(&mut on1).await, joined);
    assert_eq!(diff(&mut on2).await, joined);

    // A second tab, on server 2: the same user, with two entries. An update, not a join.
    let (tab2, id2) = tracking(&app2, &alice, project, json!({})).await;
    let both = sorted(vec![(&id1, json!({"viewing": "task 9"})), (&id2, json!({}))]);
    let updated = json!({"op": "presence_diff", "project": project, "updates": {&alice_u: metas(&both)}});
    assert_eq!(diff(&mut on2).await, updated);
    assert_eq!(diff(&mut on1).await, updated);

    // Bob tracks himself too (he watches: he sees his own join).
    let bob_entry = track(&mut on2, project, json!({"typing": false})).await;
    let bob_joined = json!({"op": "presence_diff", "project": project,
                            "joins": {&bob_u: metas(&[(&bob_entry, json!({"typing": false}))])}});
    assert_eq!(diff(&mut on2).await, bob_joined);
    assert_eq!(diff(&mut on1).await, bob_joined);

    // Alice's first tab changes its state: an update, with both her entries.
    track(&mut tab1, project, json!({"viewing": "task 10"})).await;
    let both = sorted(vec![(&id1, json!({"viewing": "task 10"})), (&id2, json!({}))]);
    let updated = json!({"op": "presence_diff", "project": project, "updates": {&alice_u: metas(&both)}});
    assert_eq!(diff(&mut on1).await, updated);
    assert_eq!(diff(&mut on2).await, updated);

    // She closes the second tab: still present, with one entry.
    drop(tab2);
    let one = json!({"op": "presence_diff", "project": project,
                     "updates": {&alice_u: metas(&[(&id1, json!({"viewing": "task 10"}))])}});
    assert_eq!(diff(&mut on2).await, one);
    assert_eq!(diff(&mut on1).await, one);

    // A newcomer on either server sees both users as they are.
    let (_, state) = watcher(&app2, &carol, project).await;
    assert_eq!(state["users"][&alice_u], metas(&[(&id1, json!({"viewing": "task 10"}))]));
    assert_eq!(state["users"].as_object().unwrap().len(), 2);

    // Untracking her last entry: Alice left.
    tab1.send(json!({"op": "untrack", "project": project})).await;
    assert_eq!(tab1.recv().await, json!({"op": "untracked", "project": project}));
    let left = json!({"op": "presence_diff", "project": project, "leaves": [&alice_u]});
    assert_eq!(diff(&mut on1).await, left);
    assert_eq!(diff(&mut on2).await, left);
    // Presence is no event: the project's seq did not move, and nothing else arrived.
    on1.expect_silence(Duration::from_millis(300)).await;
    let _ = alice_id;
}

#[tokio::test]
async fn a_broadcast_reaches_everyone_else_in_the_room_on_every_server_and_is_never_recorded() {
    let app1 = spawn_app().await;
    let app2 = spawn_app_on(test_settings(&app1.db_url)).await;
    let (alice_id, alice) = app1.user("alice").await;
    let (_, bob) = app1.user("bob").await;
    let (_, eve) = app1.user("eve").await;
    let project = app1.project("board", "alice").await;
    let other = app1.project("eve's board", "eve").await;
    app1.add_member(project, "bob").await;
    let before = app1.latest_seq(project).await;

    let mut sender = app1.client(&alice).await;
    join_with(&mut sender, project, json!({})).await;
    let mut echoing = app1.client(&alice).await;
    join_with(&mut echoing, project, json!({"broadcast": {"self": true}})).await;
    let mut same_server = app1.client(&bob).await;
    join_with(&mut same_server, project, json!({"presence": true})).await;
    let mut other_server = app2.client(&bob).await;
    join_with(&mut other_server, project, json!({})).await;
    // Server 1 has heard from server 2 (a server that knows of no other keeps its broadcasts to itself).
    track(&mut other_server, project, json!({})).await;
    assert!(diff(&mut same_server).await["joins"].is_object());
    let mut elsewhere = app2.client(&eve).await;
    join_with(&mut elsewhere, other, json!({})).await;

    let payload = json!({"task": "t9", "text": "tab\there\nnewline"});
    sender.send(json!({"op": "broadcast", "project": project, "event": "typing", "payload": payload})).await;
    let f = same_server.recv().await;
    assert_eq!(f["op"], "broadcast");
    assert_eq!(
        (f["project"].clone(), f["event"].clone(), f["payload"].clone()),
        (json!(project), json!("typing"), payload)
    );
    assert_eq!(f["from"]["user"], json!(alice_id.to_string()));
    assert_eq!(other_server.recv().await, f);
    // The other tab of the sender's user gets it too (it is someone else in the room), once.
    assert_eq!(echoing.recv().await, f);

    // Sending to yourself is opt-in.
    echoing.send(json!({"op": "broadcast", "project": project, "event": "cursor", "payload": {"x": 1}})).await;
    let echoed = echoing.recv().await;
    assert_eq!(
        (echoed["event"].as_str(), echoed["from"]["user"].clone()),
        (Some("cursor"), json!(alice_id.to_string()))
    );
    assert_ne!(echoed["from"]["id"], f["from"]["id"], "another connection of the same user");
    assert_eq!(sender.recv().await, echoed);
    assert_eq!(other_server.recv().await, echoed);
    assert_eq!(same_server.recv().await, echoed);
    sender.expect_silence(Duration::from_millis(300)).await;
    elsewhere.expect_silence(Duration::from_millis(100)).await;

    // Not recorded: no seq, and a client that joins afterwards, resuming from before, gets no replay of it.
    assert_eq!(app1.latest_seq(project).await, before);
    let mut late = app2.client(&bob).await;
    late.send(json!({"op": "join", "project": project, "since": before})).await;
    assert_eq!(late.recv().await["op"], "joined");
    late.expect_silence(Duration::from_millis(300)).await;

    // Only a client in the room may broadcast or track: Eve is not in it (nor a member).
    for op in [
        json!({"op": "broadcast", "project": project, "event": "typing", "ref": 1}),
        json!({"op": "track", "project": project, "ref": 1}),
    ] {
        elsewhere.send(op).await;
        let e = elsewhere.recv().await;
        assert_eq!(
            (e["op"].as_str(), e["code"].as_str(), e["ref"].clone()),
            (Some("error"), Some("not_joined"), json!(1))
        );
    }
    same_server.expect_silence(Duration::from_millis(200)).await;
}

/// A `boardcast serve` process of its own, to kill -9.
struct Child9 {
    child: Child,
    addr: String,
}

impl Child9 {
    fn start(db_url: &str, env: &[(&str, &str)]) -> Child9 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_boardcast"))
            .arg("serve")
            .env("DATABASE_URL", db_url)
            .env("BOARDCAST_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "boardcast=info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
                }
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("the server did not say where it listens");
        Child9 { child, addr }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    fn kill9(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
        let _ = self.child.wait();
    }
}

impl Drop for Child9 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_stalled_server_is_given_up_then_heard_again_and_a_killed_ones_entries_go_within_the_timeout() {
    let mut settings = test_settings(&fresh_database(&admin_url()).await);
    settings.feed.presence_timeout = Duration::from_secs(3);
    let app = spawn_app_on(settings).await;
    let (alice_id, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let project = app.project("board", "alice").await;
    app.add_member(project, "bob").await;
    let mut doomed = Child9::start(&app.db_url, &[("BOARDCAST_PRESENCE_TIMEOUT_SECS", "3")]);

    let (mut watching, _) = watcher(&app, &bob, project).await;
    let url = format!("ws://{}/ws", doomed.addr);
    let mut there = WsClient::connect(&url, &alice).await.unwrap();
    join_with(&mut there, project, json!({})).await;
    let id = track(&mut there, project, json!({})).await;
    let alice_u = &alice_id.to_string();
    let joined = diff(&mut watching).await;
    assert_eq!(joined["joins"][&alice_u], metas(&[(&id, json!({}))]));
    // Alive and heartbeating: nothing changes over more than a timeout.
    watching.expect_silence(Duration::from_secs(4)).await;

    // Stalled (SIGSTOP) for longer than the timeout: given up. Back (SIGCONT): its entries are back too.
    doomed.signal("-STOP");
    assert_eq!(diff(&mut watching).await["leaves"], json!([alice_u]));
    doomed.signal("-CONT");
    assert_eq!(diff(&mut watching).await["joins"][&alice_u], metas(&[(&id, json!({}))]));

    doomed.kill9();
    let started = std::time::Instant::now();
    let left = diff(&mut watching).await;
    assert_eq!(left["leaves"], json!([alice_u]));
    eprintln!("entries of the killed server removed after {:?}", started.elapsed());
    // A newcomer sees nobody.
    let (_, state) = watcher(&app, &bob, project).await;
    assert_eq!(state["users"], json!({}));
}

#[tokio::test]
async fn a_postgres_restart_keeps_everyones_presence_and_what_changed_meanwhile_arrives_after() {
    let cluster = Cluster::start();
    let db_url = fresh_database(&cluster.url()).await;
    let app1 = spawn_app_on(test_settings(&db_url)).await;
    let app2 = spawn_app_on(test_settings(&db_url)).await;
    let (alice_id, alice) = app1.user("alice").await;
    let (bob_id, bob) = app1.user("bob").await;
    let (carol_id, carol) = app1.user("carol").await;
    let project = app1.project("board", "alice").await;
    app1.add_member(project, "bob").await;
    app1.add_member(project, "carol").await;
    let (alice_u, bob_u, carol_u) = (alice_id.to_string(), bob_id.to_string(), carol_id.to_string());

    let (mut watching, _) = watcher(&app2, &bob, project).await;
    let (mut alice_tab, alice_entry) = tracking(&app1, &alice, project, json!({"v": 1})).await;
    assert!(diff(&mut watching).await["joins"].get(&alice_u).is_some());
    let (_bob_tab, _) = tracking(&app2, &bob, project, json!({})).await;
    assert!(diff(&mut watching).await["joins"].get(&bob_u).is_some());
    let (mut carol_tab, _) = (app1.client(&carol).await, ());
    join_with(&mut carol_tab, project, json!({})).await;

    cluster.stop();
    assert!(app1.unhealthy_within(Duration::from_secs(4)).await);
    // While PostgreSQL is down, server 1's clients change their presence: server 2 cannot hear of it yet.
    alice_tab.send(json!({"op": "untrack", "project": project})).await;
    assert_eq!(alice_tab.recv().await["op"], "untracked");
    track(&mut carol_tab, project, json!({"late": true})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_again();
    app1.wait_until_healthy().await;
    app2.wait_until_healthy().await;

    // Once the servers are back, server 2 learns what it missed: Alice left, Carol came (in some order, in
    // one or two diffs), and nobody else changed: Bob, on server 2, is still there.
    let mut left = false;
    let mut came = false;
    while !(left && came) {
        let d = diff(&mut watching).await;
        left |= d["leaves"].as_array().is_some_and(|l| l.contains(&json!(alice_u)));
        came |= d["joins"].get(&carol_u).is_some();
        assert!(d["leaves"].as_array().is_none_or(|l| l == &vec![json!(alice_u)]), "{d}");
    }
    let (_, state) = watcher(&app1, &alice, project).await;
    let mut present: Vec<&String> = state["users"].as_object().unwrap().keys().collect();
    present.sort();
    let mut expected = vec![&bob_u, &carol_u];
    expected.sort();
    assert_eq!(present, expected);
    let _ = alice_entry;
    // Nothing is dropped later either (no server was given up).
    watching.expect_silence(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn losing_access_removes_presence_at_once_on_every_server() {
    let app1 = spawn_app().await;
    let app2 = spawn_app_on(test_settings(&app1.db_url)).await;
    let (alice_id, alice) = app1.user("alice").await;
    let (bob_id, bob) = app1.user("bob").await;
    let (carol_id, carol) = app1.user("carol").await;
    let project = app1.project("board", "alice").await;
    app1.add_member(project, "bob").await;
    app1.add_member(project, "carol").await;
    let (mut watching, _) = watcher(&app2, &alice, project).await;

    // Bob is removed from the project, with plain SQL: his presence goes with his access.
    let (mut bob_tab, _) = tracking(&app1, &bob, project, json!({})).await;
    assert!(diff(&mut watching).await["joins"].get(bob_id.to_string()).is_some());
    app1.sql
        .execute("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2", &[&project, &bob_id])
        .await
        .unwrap();
    assert_eq!(diff(&mut watching).await["leaves"], json!([bob_id.to_string()]));
    assert_eq!(bob_tab.event().await["table"], "project_members");
    assert_eq!(bob_tab.recv().await["reason"], "removed");
    // And no longer in the room, he can neither track nor broadcast there.
    bob_tab.send(json!({"op": "track", "project": project})).await;
    assert_eq!(bob_tab.recv().await["code"], "not_joined");

    // Carol's token is revoked: her connection closes, and her presence is gone.
    let (mut carol_tab, _) = tracking(&app1, &carol, project, json!({})).await;
    assert!(diff(&mut watching).await["joins"].get(carol_id.to_string()).is_some());
    boardcast::admin::revoke_token(&app1.sql, &carol).await.unwrap();
    assert_eq!(carol_tab.closed().await.map(|c| c.0), Some(4001));
    assert_eq!(diff(&mut watching).await["leaves"], json!([carol_id.to_string()]));
    let _ = alice_id;
}

/// The app's own rooms and join rule (docs/tracking.md): who may be in which room, in a table of its own.
const APP_RULE: &str = "
    CREATE TABLE app_room_members (room text, subject text, PRIMARY KEY (room, subject));
    CREATE OR REPLACE FUNCTION boardcast.may_join(subject text, room text) RETURNS boolean LANGUAGE sql STABLE AS $$
        SELECT EXISTS (SELECT 1 FROM app_room_members m WHERE m.room = $2 AND m.subject = $1)
    $$;
";

#[tokio::test]
async fn losing_access_by_the_apps_join_rule_removes_presence_on_recheck_on_every_server() {
    let app1 = spawn_app().await;
    let app2 = spawn_app_on(test_settings(&app1.db_url)).await;
    app1.sql.batch_execute(APP_RULE).await.unwrap();
    let (alice_id, alice) = app1.user("alice").await;
    let (bob_id, bob) = app1.user("bob").await;
    let room = "team a";
    for id in [alice_id, bob_id] {
        app1.sql.execute("INSERT INTO app_room_members VALUES ($1, $2)", &[&room, &id.to_string()]).await.unwrap();
    }
    let (mut on1, _) = watcher(&app1, &alice, room).await;
    let (mut on2, _) = watcher(&app2, &alice, room).await;

    // Bob is present (on server 1), keyed by who he signed in as.
    let (mut bob_tab, bob_entry) = tracking(&app1, &bob, room, json!({"viewing": "card 3"})).await;
    let bob_u = bob_id.to_string();
    let joined = json!({"op": "presence_diff", "project": room,
                        "joins": {&bob_u: metas(&[(&bob_entry, json!({"viewing": "card 3"}))])}});
    assert_eq!(diff(&mut on1).await, joined);
    assert_eq!(diff(&mut on2).await, joined);

    // The app takes him out of the room and says so: he leaves it, and its presence, on every server.
    app1.sql
        .batch_execute(&format!(
            "BEGIN; DELETE FROM app_room_members WHERE subject = '{bob_u}'; SELECT boardcast.recheck('{room}'); COMMIT;"
        ))
        .await
        .unwrap();
    let left = bob_tab.recv().await;
    assert_eq!((left["op"].as_str(), left["reason"].as_str()), (Some("left"), Some("removed")), "{left}");
    let gone = json!({"op": "presence_diff", "project": room, "leaves": [&bob_u]});
    assert_eq!(diff(&mut on1).await, gone);
    assert_eq!(diff(&mut on2).await, gone);

    // Out of the room, he can neither track nor broadcast there; a newcomer does not see him.
    bob_tab.send(json!({"op": "track", "project": room})).await;
    assert_eq!(bob_tab.recv().await["code"], "not_joined");
    bob_tab.send(json!({"op": "broadcast", "project": room, "event": "typing"})).await;
    assert_eq!(bob_tab.recv().await["code"], "not_joined");
    let (_, state) = watcher(&app2, &alice, room).await;
    assert_eq!(state, json!({"op": "presence_state", "project": room, "users": {}}));
    on1.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn bad_and_oversized_presence_and_broadcasts_get_clear_errors_and_the_connection_carries_on() {
    let app = spawn_app().await;
    let (token, project) = app.member_of_new_project("alice").await;
    let mut c = app.client(&token).await;
    join_with(&mut c, project, json!({"presence": true})).await;
    let long_event = "e".repeat(65);
    let big = "x".repeat(4100);
    let big_state = "x".repeat(1100);
    for (request, code) in [
        (json!({"op": "broadcast", "project": project, "payload": {}}), "bad_event"),
        (json!({"op": "broadcast", "project": project, "event": 7}), "bad_event"),
        (json!({"op": "broadcast", "project": project, "event": ""}), "bad_event"),
        (json!({"op": "broadcast", "project": project, "event": long_event}), "bad_event"),
        (json!({"op": "broadcast", "project": project, "event": "big", "payload": {"text": big}}), "too_large"),
        (json!({"op": "broadcast", "project": "", "event": "typing"}), "bad_project"),
        (json!({"op": "broadcast", "project": "nope", "event": "typing"}), "not_joined"),
        (json!({"op": "track", "project": project, "state": "here"}), "bad_state"),
        (json!({"op": "track", "project": project, "state": {"text": big_state}}), "too_large"),
        (json!({"op": "untrack"}), "bad_project"),
        (json!({"op": "join", "project": uuid::Uuid::new_v4(), "presence": "yes"}), "bad_frame"),
        (json!({"op": "join", "project": uuid::Uuid::new_v4(), "broadcast": {"self": 1}}), "bad_frame"),
        (json!({"op": "wave", "project": project}), "unknown_op"),
    ] {
        let mut request = request;
        request["ref"] = json!("r");
        c.send(request.clone()).await;
        let e = c.recv().await;
        assert_eq!(
            (e["op"].as_str(), e["code"].as_str(), e["ref"].as_str()),
            (Some("error"), Some(code), Some("r")),
            "{request} -> {e}"
        );
    }
    // The limits are inclusive: a 64-character event and a state of exactly 1 KiB are fine.
    c.send(json!({"op": "broadcast", "project": project, "event": "é".repeat(64)})).await;
    let state = json!({"t": "x".repeat(1024 - 8)});
    assert_eq!(state.to_string().len(), 1024);
    track(&mut c, project, state).await;
    assert_eq!(diff(&mut c).await["joins"].as_object().unwrap().len(), 1);
    c.send(json!({"op": "ping", "ref": 1})).await;
    assert_eq!(c.recv().await["op"], "pong");
}

#[tokio::test]
async fn a_client_over_its_broadcast_rate_is_refused_and_one_that_keeps_on_is_closed() {
    let mut settings = test_settings(&fresh_database(&admin_url()).await);
    settings.feed.broadcasts = boardcast::config::Rate { per_sec: 1, burst: 3 };
    settings.feed.presence_updates = boardcast::config::Rate { per_sec: 1, burst: 2 };
    let app = spawn_app_on(settings).await;
    let (token, project) = app.member_of_new_project("alice").await;
    let mut c = app.client(&token).await;
    join_with(&mut c, project, json!({"broadcast": {"self": true}})).await;
    let mut other = app.client(&token).await;
    join_with(&mut other, project, json!({})).await;

    // Presence updates have a rate of their own.
    track(&mut other, project, json!({})).await;
    track(&mut other, project, json!({"a": 1})).await;
    other.send(json!({"op": "untrack", "project": project, "ref": "u"})).await;
    let e = other.recv().await;
    assert_eq!((e["code"].as_str(), e["ref"].as_str()), (Some("rate_limited"), Some("u")), "{e}");
    assert!(e["retry_after"].as_u64().unwrap() > 0);

    for i in 0..3 {
        c.send(json!({"op": "broadcast", "project": project, "event": "typing", "payload": i})).await;
        assert_eq!(c.recv().await["payload"], json!(i));
    }
    c.send(json!({"op": "broadcast", "project": project, "event": "typing", "ref": 9})).await;
    let e = c.recv().await;
    assert_eq!((e["code"].as_str(), e["ref"].clone()), (Some("rate_limited"), json!(9)), "{e}");
    assert!(e["message"].as_str().unwrap().contains("broadcasts"), "{e}");
    // The others got the three within the rate, not the refused one.
    for i in 0..3 {
        assert_eq!(other.recv().await["payload"], json!(i));
    }
    // Keeping on past as many refusals as the burst: closed with 1008.
    for _ in 0..4 {
        c.send(json!({"op": "broadcast", "project": project, "event": "typing"})).await;
    }
    let (code, reason) = c.closed().await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded: too many broadcasts"));
    other.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn past_the_limit_a_room_sends_how_many_are_present_instead_of_who() {
    let mut settings = test_settings(&fresh_database(&admin_url()).await);
    settings.feed.presence_max_users = 2;
    let app = spawn_app_on(settings).await;
    let (alice_id, alice) = app.user("alice").await;
    let project = app.project("board", "alice").await;
    let mut tabs = Vec::new();
    let (mut watching, _) = watcher(&app, &alice, project).await;
    for name in ["bob", "carol", "dave"] {
        let (_, token) = app.user(name).await;
        app.add_member(project, name).await;
        tabs.push(tracking(&app, &token, project, json!({})).await.0);
    }
    // bob and carol as a list, then dave makes three: the count.
    assert!(diff(&mut watching).await["joins"].is_object());
    assert!(diff(&mut watching).await["joins"].is_object());
    assert_eq!(presence_frame(&mut watching).await, json!({"op": "presence_state", "project": project, "count": 3}));
    let (_, state) = watcher(&app, &alice, project).await;
    assert_eq!(state, json!({"op": "presence_state", "project": project, "count": 3}));
    // Back to two: the list again.
    tabs.pop();
    let state = presence_frame(&mut watching).await;
    assert_eq!(state["op"], "presence_state");
    assert_eq!(state["users"].as_object().unwrap().len(), 2);
    let _ = alice_id;
}

//! The REST API over real HTTP against a real PostgreSQL: every endpoint, who may do what, stale writes,
//! refusals in the one error shape, the OpenAPI document against the routes, and that an API write reaches the
//! feed exactly as a psql write does, with the seq its response announced.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// A caller of the API with one token.
struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A response: status, the `X-Boardcast-Seq` header if any, and the JSON body (Null if there is none).
#[derive(Debug)]
struct Res {
    status: u16,
    seq_header: Option<i64>,
    allow: Option<String>,
    body: Value,
}

impl Res {
    fn seq(&self) -> i64 {
        self.body["seq"].as_i64().unwrap_or_else(|| panic!("no seq in {}", self.body))
    }

    /// Asserts the status and the error shape, and returns the error object.
    fn error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "expected {status} {code}, got {self:?}");
        let e = &self.body["error"];
        assert_eq!(e["code"], code, "{self:?}");
        assert!(e["message"].is_string(), "{self:?}");
        e
    }
}

impl Api {
    fn new(app: &TestApp, token: Option<&str>) -> Api {
        Api { base: app.http(""), token: token.map(str::to_string), http: reqwest::Client::new() }
    }

    async fn raw(&self, method: Method, path: &str, content_type: Option<&str>, body: Option<Vec<u8>>) -> Res {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let seq_header = r.headers().get("x-boardcast-seq").map(|v| v.to_str().unwrap().parse().unwrap());
        let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
        // Every answer is JSON but the JavaScript client and its types (GET /client.js, /client.d.ts).
        let script = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/javascript") || v.starts_with("application/typescript"));
        let bytes = r.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else if script {
            Value::String(String::from_utf8(bytes.to_vec()).expect("UTF-8"))
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        assert!(status < 500, "a 5xx for {path}: {status} {body}");
        Res { status, seq_header, allow, body }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Res {
        let ct = body.as_ref().map(|_| "application/json");
        self.raw(method, path, ct, body.map(|b| b.to_string().into_bytes())).await
    }

    async fn get(&self, path: &str) -> Res {
        self.send(Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Res {
        self.send(Method::POST, path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> Res {
        self.send(Method::PATCH, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> Res {
        self.send(Method::DELETE, path, None).await
    }

    /// Creates a project through the API and returns its id.
    async fn project(&self, name: &str) -> Uuid {
        let r = self.post("/api/projects", json!({"name": name})).await;
        assert_eq!(r.status, 201, "{r:?}");
        r.body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Every item of a paginated list, following `next_cursor` with pages of `limit`.
    async fn pages(&self, base: &str, limit: usize) -> Vec<Value> {
        let mut items = Vec::new();
        let mut path = format!("{base}?limit={limit}");
        loop {
            let r = self.get(&path).await;
            assert_eq!(r.status, 200, "{r:?}");
            let page = r.body["items"].as_array().unwrap();
            assert!(page.len() <= limit, "{r:?}");
            items.extend(page.iter().cloned());
            match r.body["next_cursor"].as_str() {
                Some(c) => path = format!("{base}?limit={limit}&cursor={c}"),
                None => return items,
            }
        }
    }

    async fn task(&self, project: Uuid, body: Value) -> Value {
        let r = self.post(&format!("/api/projects/{project}/tasks"), body).await;
        assert_eq!(r.status, 201, "{r:?}");
        r.body
    }
}

/// A user with a token, as an API caller.
async fn caller(app: &TestApp, name: &str) -> (Uuid, Api) {
    let (id, token) = app.user(name).await;
    (id, Api::new(app, Some(&token)))
}

fn ids(items: &Value) -> Vec<String> {
    items.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

// --- me and tokens -----------------------------------------------------------------------------------------

#[tokio::test]
async fn me_tells_who_the_token_belongs_to() {
    let app = spawn_app().await;
    let (id, alice) = caller(&app, "alice").await;
    let r = alice.get("/api/me").await;
    assert_eq!(r.status, 200);
    assert_eq!((r.body["id"].clone(), r.body["name"].clone()), (json!(id), json!("alice")));
}

#[tokio::test]
async fn tokens_looked_up_at_the_same_time_each_get_their_own_answer() {
    let app = spawn_app().await;
    let (alice_id, alice) = caller(&app, "alice").await;
    let (bob_id, bob) = caller(&app, "bob").await;
    let issued = alice.post("/api/tokens", json!({"label": "revoked"})).await;
    let revoked = Api::new(&app, issued.body["token"].as_str());
    assert_eq!(alice.delete(&format!("/api/tokens/{}", issued.body["id"].as_str().unwrap())).await.status, 200);
    let unknown = Api::new(&app, Some(&format!("bc_{}", "1".repeat(64))));
    // Sent at once and interleaved, so that their lookups queue together; a few bad ones among them (each
    // failure is charged to the client's budget).
    let callers: Vec<(&Api, Option<Uuid>)> = (0..24)
        .map(|i| match i {
            5 => (&revoked, None),
            11 => (&unknown, None),
            _ if i % 2 == 0 => (&alice, Some(alice_id)),
            _ => (&bob, Some(bob_id)),
        })
        .collect();
    let answers = futures::future::join_all(callers.iter().map(|(api, _)| api.get("/api/me"))).await;
    for ((_, who), r) in callers.iter().zip(answers) {
        match who {
            Some(id) => assert_eq!((r.status, r.body["id"].clone()), (200, json!(id)), "{r:?}"),
            None => {
                r.error(401, "unauthorized");
            }
        }
    }
}

#[tokio::test]
async fn a_missing_malformed_or_unknown_token_is_401_in_the_error_shape() {
    let app = spawn_app().await;
    caller(&app, "alice").await;
    Api::new(&app, None).get("/api/me").await.error(401, "unauthorized");
    Api::new(&app, Some("nonsense")).get("/api/projects").await.error(401, "unauthorized");
    let unknown = format!("bc_{}", "0".repeat(64));
    Api::new(&app, Some(&unknown)).post("/api/projects", json!({"name": "x"})).await.error(401, "unauthorized");
    // A header with bytes that are not ASCII is a bad token too, on the API and at the feed's upgrade.
    let odd = reqwest::header::HeaderValue::from_bytes(b"Bearer bc_\xc3\xa9").unwrap();
    for path in ["/api/me", "/ws"] {
        let r = reqwest::Client::new().get(app.http(path)).header("authorization", odd.clone()).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
    }
}

#[tokio::test]
async fn a_user_issues_lists_and_revokes_their_own_tokens_and_a_revoked_token_stops_at_once() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let (_, bob) = caller(&app, "bob").await;

    let issued = alice.post("/api/tokens", json!({"label": "laptop"})).await;
    assert_eq!(issued.status, 201, "{issued:?}");
    assert_eq!(issued.body["label"], "laptop");
    let second = Api::new(&app, issued.body["token"].as_str());
    assert_eq!(second.get("/api/me").await.body["name"], "alice");
    for n in 0..3 {
        assert_eq!(alice.post("/api/tokens", json!({"label": format!("ci run {n}")})).await.status, 201);
    }

    // Paged, oldest first: the bootstrap token, the laptop, the three runs.
    let items = alice.pages("/api/tokens", 2).await;
    let labels: Vec<&str> = items.iter().map(|t| t["label"].as_str().unwrap()).collect();
    assert_eq!(labels[1..], ["laptop", "ci run 0", "ci run 1", "ci run 2"]);
    assert!(items.iter().all(|t| t.get("token").is_none() && t.get("token_hash").is_none()), "no secrets: {items:?}");
    assert_eq!(items.iter().filter(|t| t["current"] == true).count(), 1);

    let token_id = issued.body["id"].as_str().unwrap();
    bob.delete(&format!("/api/tokens/{token_id}")).await.error(404, "not_found");
    let revoked = alice.delete(&format!("/api/tokens/{token_id}")).await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.body["revoked_at"].is_string());
    second.get("/api/me").await.error(401, "unauthorized");
    assert_eq!(alice.get("/api/me").await.status, 200, "the other token still works");
    // Empty body: a token without a label.
    let r = alice.raw(Method::POST, "/api/tokens", None, None).await;
    assert_eq!((r.status, r.body["label"].as_str()), (201, Some("")));
}

// --- projects ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_created_project_is_owned_by_its_creator_and_listed_among_theirs() {
    let app = spawn_app().await;
    let (alice_id, alice) = caller(&app, "alice").await;
    let r = alice.post("/api/projects", json!({"name": "Launch"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        (r.body["name"].as_str(), r.body["status"].as_str(), r.body["role"].as_str()),
        (Some("Launch"), Some("active"), Some("owner"))
    );
    let id: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(r.seq(), app.latest_seq(id).await, "the seq of its last event");
    assert_eq!(r.seq_header, Some(r.seq()));

    let members = alice.get(&format!("/api/projects/{id}/members")).await;
    assert_eq!(members.body["items"][0]["user_id"], json!(alice_id));
    assert_eq!(members.body["items"][0]["role"], "owner");

    let list = alice.get("/api/projects").await;
    assert_eq!(ids(&list.body["items"]), vec![id.to_string()]);
    assert_eq!(list.body["next_cursor"], Value::Null);
    let got = alice.get(&format!("/api/projects/{id}")).await;
    assert_eq!((got.status, got.body["name"].as_str()), (200, Some("Launch")));
}

#[tokio::test]
async fn the_project_list_pages_with_a_cursor() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(alice.project(&format!("p{i}")).await.to_string());
    }
    let seen = ids(&Value::from(alice.pages("/api/projects", 2).await));
    assert_eq!(seen, made);
}

#[tokio::test]
async fn the_member_list_pages_with_a_cursor_in_the_order_members_joined() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let project = alice.project("Board").await;
    let mut joined = vec!["alice".to_string()];
    for name in ["zoe", "bob", "mia", "al", "ned"] {
        app.user(name).await;
        let r = alice.post(&format!("/api/projects/{project}/members"), json!({"user": name})).await;
        assert_eq!(r.status, 201, "{r:?}");
        joined.push(name.to_string());
    }
    let members = alice.pages(&format!("/api/projects/{project}/members"), 4).await;
    let seen: Vec<&str> = members.iter().map(|m| m["user_name"].as_str().unwrap()).collect();
    assert_eq!(seen, joined);
    let bad = alice.get(&format!("/api/projects/{project}/members?cursor=zz")).await;
    bad.error(404, "not_found");
}

#[tokio::test]
async fn owners_rename_archive_and_delete_projects_and_members_may_not() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let (_, bob) = caller(&app, "bob").await;
    let project = alice.project("Board").await;
    alice.post(&format!("/api/projects/{project}/members"), json!({"user": "bob"})).await;

    bob.patch(&format!("/api/projects/{project}"), json!({"name": "Mine now"})).await.error(403, "forbidden");
    bob.delete(&format!("/api/projects/{project}")).await.error(403, "forbidden");
    assert_eq!(bob.get(&format!("/api/projects/{project}")).await.body["role"], "member");

    let r = alice.patch(&format!("/api/projects/{project}"), json!({"name": "Renamed", "status": "archived"})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((r.body["name"].as_str(), r.body["status"].as_str()), (Some("Renamed"), Some("archived")));
    assert_eq!(r.seq(), app.latest_seq(project).await);
    let same = alice.patch(&format!("/api/projects/{project}"), json!({"name": "Renamed"})).await;
    assert_eq!((same.status, &same.body["seq"]), (200, &Value::Null), "no change, no event, no seq");

    let e = alice.patch(&format!("/api/projects/{project}"), json!({"status": "paused"})).await;
    assert_eq!(e.error(422, "invalid")["field"], "status");
    let e = alice.patch(&format!("/api/projects/{project}"), json!({})).await;
    assert_eq!(e.error(422, "invalid")["field"], "body");

    let d = alice.delete(&format!("/api/projects/{project}")).await;
    assert_eq!((d.status, d.body["deleted"].as_bool()), (200, Some(true)));
    assert_eq!(d.seq(), app.latest_seq(project).await);
    alice.get(&format!("/api/projects/{project}")).await.error(404, "not_found");
}

#[tokio::test]
async fn an_archived_projects_board_is_read_only_through_the_api_until_an_owner_reactivates_it() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let project = alice.project("Board").await;
    let task = alice.task(project, json!({"title": "Ship it"})).await;
    let task_id = task["id"].as_str().unwrap();
    let comment = alice.post(&format!("/api/tasks/{task_id}/comments"), json!({"body": "done?"})).await;
    let comment_id = comment.body["id"].as_str().unwrap();
    let archived = alice.patch(&format!("/api/projects/{project}"), json!({"status": "archived"})).await;
    assert_eq!(archived.status, 200, "{archived:?}");
    let before = app.latest_seq(project).await;

    let refusals = [
        alice.post(&format!("/api/projects/{project}/tasks"), json!({"title": "late"})).await,
        alice.patch(&format!("/api/tasks/{task_id}"), json!({"status": "done"})).await,
        alice.delete(&format!("/api/tasks/{task_id}")).await,
        alice.post(&format!("/api/tasks/{task_id}/comments"), json!({"body": "late"})).await,
        alice.patch(&format!("/api/comments/{comment_id}"), json!({"body": "edited"})).await,
        alice.delete(&format!("/api/comments/{comment_id}")).await,
    ];
    for r in &refusals {
        assert!(r.error(409, "conflict")["message"].as_str().unwrap().contains("archived"), "{r:?}");
    }
    assert_eq!(app.latest_seq(project).await, before, "a refused write leaves no event");
    // Reading goes on.
    assert_eq!(alice.get(&format!("/api/tasks/{task_id}")).await.body["status"], "todo");

    // SQL writers are trusted, like any admin tool: psql still writes, and the feed still carries it.
    app.sql
        .execute("UPDATE tasks SET status = 'done' WHERE id = $1", &[&task_id.parse::<Uuid>().unwrap()])
        .await
        .unwrap();
    assert_eq!(app.latest_seq(project).await, before + 1);

    let active = alice.patch(&format!("/api/projects/{project}"), json!({"status": "active"})).await;
    assert_eq!(active.status, 200, "{active:?}");
    let r = alice.patch(&format!("/api/tasks/{task_id}"), json!({"title": "Shipped"})).await;
    assert_eq!((r.status, r.body["title"].as_str()), (200, Some("Shipped")), "{r:?}");
}

#[tokio::test]
async fn a_user_sees_nothing_of_another_users_project_everything_is_404() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let (_, mallory) = caller(&app, "mallory").await;
    let project = alice.project("Secret").await;
    let task = alice.task(project, json!({"title": "plans"})).await;
    let task_id = task["id"].as_str().unwrap();
    let comment = alice.post(&format!("/api/tasks/{task_id}/comments"), json!({"body": "hush"})).await.body;
    let comment_id = comment["id"].as_str().unwrap();
    mallory.project("Mallory's own").await;

    assert!(ids(&mallory.get("/api/projects").await.body["items"]).iter().all(|id| *id != project.to_string()));
    let p = format!("/api/projects/{project}");
    mallory.get(&p).await.error(404, "not_found");
    mallory.patch(&p, json!({"name": "pwned"})).await.error(404, "not_found");
    mallory.delete(&p).await.error(404, "not_found");
    mallory.get(&format!("{p}/members")).await.error(404, "not_found");
    mallory.post(&format!("{p}/members"), json!({"user": "mallory"})).await.error(404, "not_found");
    mallory.get(&format!("{p}/tasks")).await.error(404, "not_found");
    mallory.post(&format!("{p}/tasks"), json!({"title": "x"})).await.error(404, "not_found");
    mallory.get(&format!("/api/tasks/{task_id}")).await.error(404, "not_found");
    mallory.patch(&format!("/api/tasks/{task_id}"), json!({"title": "x"})).await.error(404, "not_found");
    mallory.delete(&format!("/api/tasks/{task_id}")).await.error(404, "not_found");
    mallory.get(&format!("/api/tasks/{task_id}/comments")).await.error(404, "not_found");
    mallory.post(&format!("/api/tasks/{task_id}/comments"), json!({"body": "x"})).await.error(404, "not_found");
    mallory.get(&format!("/api/comments/{comment_id}")).await.error(404, "not_found");
    mallory.patch(&format!("/api/comments/{comment_id}"), json!({"body": "x"})).await.error(404, "not_found");
    mallory.delete(&format!("/api/comments/{comment_id}")).await.error(404, "not_found");
    // Nothing changed.
    assert_eq!(alice.get(&format!("/api/tasks/{task_id}")).await.body["title"], "plans");
}

// --- members -----------------------------------------------------------------------------------------------

#[tokio::test]
async fn owners_add_members_by_name_change_roles_and_remove_them() {
    let app = spawn_app().await;
    let (alice_id, alice) = caller(&app, "alice").await;
    let (bob_id, bob) = caller(&app, "bob").await;
    caller(&app, "carol").await;
    let project = alice.project("Team").await;
    let members = format!("/api/projects/{project}/members");

    let added = alice.post(&members, json!({"user": "bob"})).await;
    assert_eq!(added.status, 201, "{added:?}");
    assert_eq!((added.body["user_name"].as_str(), added.body["role"].as_str()), (Some("bob"), Some("member")));
    assert_eq!(added.seq(), app.latest_seq(project).await);
    let dup = alice.post(&members, json!({"user": "bob", "role": "owner"})).await;
    assert_eq!(dup.error(409, "conflict")["current"]["role"], "member");
    assert_eq!(
        alice.post(&members, json!({"user": "nobody"})).await.error(404, "not_found")["message"],
        "no user named \"nobody\""
    );
    assert_eq!(
        alice.post(&members, json!({"user": "bob", "role": "king"})).await.error(422, "invalid")["field"],
        "role"
    );

    // A member may list, not manage.
    let list = bob.get(&members).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 2);
    bob.post(&members, json!({"user": "carol"})).await.error(403, "forbidden");
    bob.patch(&format!("{members}/{alice_id}"), json!({"role": "member"})).await.error(403, "forbidden");
    bob.delete(&format!("{members}/{alice_id}")).await.error(403, "forbidden");

    // The last owner stays an owner.
    let last = alice.patch(&format!("{members}/{alice_id}"), json!({"role": "member"})).await;
    assert_eq!(last.error(409, "conflict")["current"]["role"], "owner");
    alice.delete(&format!("{members}/{alice_id}")).await.error(409, "conflict");

    let promoted = alice.patch(&format!("{members}/{bob_id}"), json!({"role": "owner"})).await;
    assert_eq!((promoted.status, promoted.body["role"].as_str()), (200, Some("owner")));
    let removed = bob.delete(&format!("{members}/{alice_id}")).await;
    assert_eq!((removed.status, removed.body["deleted"].as_bool()), (200, Some(true)));
    alice.get(&format!("/api/projects/{project}")).await.error(404, "not_found");
    alice.patch(&format!("{members}/{}", Uuid::new_v4()), json!({"role": "owner"})).await.error(404, "not_found");
    bob.patch(&format!("{members}/{}", Uuid::new_v4()), json!({"role": "owner"})).await.error(404, "not_found");
}

/// Runs the `boardcast` binary against the test's database: `(succeeded, stdout + stderr)`.
fn boardcast_command(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .args(args)
        .env("DATABASE_URL", &app.db_url)
        .env("RUST_LOG", "off")
        .output()
        .expect("run boardcast");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn member_add_on_the_command_line_keeps_existing_roles_and_never_demotes_the_last_owner() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    app.user("bob").await;
    let project = alice.project("board").await;
    let p = project.to_string();
    let role_of = |name: &'static str| {
        let sql = &app.sql;
        async move {
            let row = sql
                .query_opt(
                    "SELECT m.role FROM project_members m JOIN users u ON u.id = m.user_id
                      WHERE m.project_id = $1 AND u.name = $2",
                    &[&project, &name],
                )
                .await
                .unwrap();
            row.map(|r| r.get::<_, String>(0))
        }
    };

    // Re-adding the owner without a role leaves her the owner.
    let (ok, out) = boardcast_command(&app, &["member", "add", &p, "alice"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("alice is an owner of {project}"));
    assert_eq!(role_of("alice").await.as_deref(), Some("owner"));

    // Demoting the last owner is refused, and changes nothing.
    let (ok, out) = boardcast_command(&app, &["member", "add", &p, "alice", "member"]);
    assert!(!ok, "{out}");
    assert!(out.contains("last owner"), "{out}");
    assert_eq!(role_of("alice").await.as_deref(), Some("owner"));

    // A new member is a member; made an owner, alice may then step down.
    let (ok, out) = boardcast_command(&app, &["member", "add", &p, "bob"]);
    assert!(ok && out.trim() == format!("bob is a member of {project}"), "{out}");
    let (ok, out) = boardcast_command(&app, &["member", "add", &p, "bob", "owner"]);
    assert!(ok && out.trim() == format!("bob is an owner of {project}"), "{out}");
    let (ok, out) = boardcast_command(&app, &["member", "add", &p, "alice", "member"]);
    assert!(ok, "{out}");
    assert_eq!((role_of("alice").await.as_deref(), role_of("bob").await.as_deref()), (Some("member"), Some("owner")));

    // Bad input is a clear error.
    let (ok, out) = boardcast_command(&app, &["member", "add", &p, "bob", "admin"]);
    assert!(!ok && out.contains("role must be owner or member"), "{out}");
    let (ok, out) = boardcast_command(&app, &["member", "add", &p, "nobody"]);
    assert!(!ok && out.contains("nobody"), "{out}");
}

#[tokio::test]
async fn a_member_may_leave_and_a_removed_member_is_told_on_the_feed() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let (bob_id, bob_token) = app.user("bob").await;
    let bob = Api::new(&app, Some(&bob_token));
    let (carol_id, carol) = caller(&app, "carol").await;
    let project = alice.project("Team").await;
    let members = format!("/api/projects/{project}/members");
    alice.post(&members, json!({"user": "bob"})).await;
    alice.post(&members, json!({"user": "carol"})).await;

    let left = carol.delete(&format!("{members}/{carol_id}")).await;
    assert_eq!(left.status, 200, "{left:?}");
    carol.get(&format!("/api/projects/{project}")).await.error(404, "not_found");

    let (mut ws, _) = app.joined(&bob_token, project).await;
    let r = alice.delete(&format!("{members}/{bob_id}")).await;
    assert_eq!(r.status, 200);
    let removal = ws.event().await;
    assert_eq!(removal["seq"], r.seq());
    assert_eq!(ws.recv().await, json!({"op": "left", "project": project, "reason": "removed"}));
    bob.get(&members).await.error(404, "not_found");
}

// --- tasks -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_task_is_created_read_updated_moved_and_deleted() {
    let app = spawn_app().await;
    let (alice_id, alice) = caller(&app, "alice").await;
    let project = alice.project("Board").await;

    let t = alice.task(project, json!({"title": "Write docs"})).await;
    assert_eq!(
        (t["status"].as_str(), t["description"].as_str(), t["version"].as_i64()),
        (Some("todo"), Some(""), Some(1))
    );
    assert_eq!((t["assignee_id"].clone(), t["project_id"].clone()), (Value::Null, json!(project)));
    let id = t["id"].as_str().unwrap();
    let second = alice
        .task(project, json!({"title": "Ship", "status": "in_progress", "assignee_id": alice_id, "description": "v1"}))
        .await;
    assert!(second["position"].as_f64() > t["position"].as_f64(), "a new card goes last");

    let got = alice.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(got.body["title"], "Write docs");

    let u = alice
        .patch(
            &format!("/api/tasks/{id}"),
            json!({"title": "Write the docs", "status": "done", "assignee_id": alice_id, "version": 1}),
        )
        .await;
    assert_eq!(u.status, 200, "{u:?}");
    assert_eq!(
        (u.body["title"].as_str(), u.body["status"].as_str(), u.body["version"].as_i64()),
        (Some("Write the docs"), Some("done"), Some(2))
    );
    assert_eq!(u.body["assignee_id"], json!(alice_id));
    assert_eq!(u.seq(), app.latest_seq(project).await);

    // Moving the first card after the second.
    let moved =
        alice.patch(&format!("/api/tasks/{id}"), json!({"position": second["position"].as_f64().unwrap() + 1.0})).await;
    assert_eq!(moved.status, 200);
    let board = alice.get(&format!("/api/projects/{project}/tasks")).await;
    assert_eq!(ids(&board.body["items"]), vec![second["id"].as_str().unwrap().to_string(), id.to_string()]);

    let unassigned = alice.patch(&format!("/api/tasks/{id}"), json!({"assignee_id": null})).await;
    assert_eq!(unassigned.body["assignee_id"], Value::Null);

    let d = alice.delete(&format!("/api/tasks/{id}")).await;
    assert_eq!((d.status, d.body["deleted"].as_bool()), (200, Some(true)));
    assert_eq!(d.seq(), app.latest_seq(project).await);
    alice.get(&format!("/api/tasks/{id}")).await.error(404, "not_found");
    alice.delete(&format!("/api/tasks/{id}")).await.error(404, "not_found");
}

#[tokio::test]
async fn positions_are_kept_exactly_and_a_card_without_one_still_fits_after_a_card_at_the_top() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let project = alice.project("Board").await;

    // Whatever double a client sends comes back, and is stored, bit for bit.
    for p in [21.489705265908874, 0.1 + 0.2, -987_654_321.123_456_8, 1e-300] {
        let t = alice.task(project, json!({"title": "exact", "position": p})).await;
        assert_eq!(t["position"].as_f64(), Some(p), "{t}");
        let id: Uuid = t["id"].as_str().unwrap().parse().unwrap();
        let stored: f64 = app.sql.query_one("SELECT position FROM tasks WHERE id = $1", &[&id]).await.unwrap().get(0);
        assert_eq!(stored, p);
    }

    // A card at the very top of the range: the next one, with no position, still goes last and is accepted.
    alice.task(project, json!({"title": "top", "position": 1e15})).await;
    let next = alice.task(project, json!({"title": "after the top"})).await;
    assert!(next["position"].as_f64().unwrap() <= 1e15, "{next}");
    let board = alice.get(&format!("/api/projects/{project}/tasks?limit=100")).await;
    assert_eq!(board.body["items"].as_array().unwrap().last().unwrap()["title"], "after the top");
}

#[tokio::test]
async fn paging_through_cards_with_close_fractional_positions_skips_none() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let project = alice.project("Board").await;
    for title in ["t1", "t2", "t3"] {
        app.sql
            .execute(
                "INSERT INTO tasks (project_id, title, position) VALUES ($1, $2, 999999999999999.5)",
                &[&project, &title],
            )
            .await
            .unwrap();
    }
    let tasks = alice.pages(&format!("/api/projects/{project}/tasks"), 1).await;
    let seen: Vec<&str> = tasks.iter().map(|t| t["title"].as_str().unwrap()).collect();
    assert_eq!(seen, ["t1", "t2", "t3"]);
}

#[tokio::test]
async fn a_psql_comment_on_a_task_that_does_not_exist_is_a_foreign_key_violation_on_task_id() {
    let app = spawn_app().await;
    let (alice_id, _) = caller(&app, "alice").await;
    let e = app
        .sql
        .execute("INSERT INTO comments (task_id, author_id, body) VALUES ($1, $2, 'hi')", &[&Uuid::new_v4(), &alice_id])
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("a database error");
    assert_eq!(db.code(), &tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION, "{db}");
    assert_eq!(db.column(), Some("task_id"), "{db}");
}

#[tokio::test]
async fn the_task_list_filters_by_status_and_assignee_and_pages_in_a_stable_order() {
    let app = spawn_app().await;
    let (alice_id, alice) = caller(&app, "alice").await;
    let project = alice.project("Board").await;
    let mut all = Vec::new();
    for i in 0..7 {
        let status = if i % 2 == 0 { "todo" } else { "done" };
        let assignee = if i < 3 { json!(alice_id) } else { Value::Null };
        // Equal positions on purpose: created_at and id break the tie.
        let t = alice
            .task(project, json!({"title": format!("t{i}"), "status": status, "assignee_id": assignee, "position": 1}))
            .await;
        all.push(t["id"].as_str().unwrap().to_string());
    }
    let base = format!("/api/projects/{project}/tasks");
    let full = alice.get(&base).await;
    assert_eq!(ids(&full.body["items"]), all);

    let paged = ids(&Value::from(alice.pages(&base, 3).await));
    assert_eq!(paged, all, "pages neither skip nor repeat");

    let done = alice.get(&format!("{base}?status=done")).await;
    assert_eq!(ids(&done.body["items"]), vec![all[1].clone(), all[3].clone(), all[5].clone()]);
    let mine = alice.get(&format!("{base}?assignee={alice_id}")).await;
    assert_eq!(ids(&mine.body["items"]), all[..3].to_vec());
    let nobodys = alice.get(&format!("{base}?assignee=none&status=todo")).await;
    assert_eq!(ids(&nobodys.body["items"]), vec![all[4].clone(), all[6].clone()]);

    assert_eq!(alice.get(&format!("{base}?status=later")).await.error(422, "invalid")["field"], "status");
    assert_eq!(alice.get(&format!("{base}?assignee=me")).await.error(422, "invalid")["field"], "assignee");
    assert_eq!(alice.get(&format!("{base}?limit=0")).await.error(422, "invalid")["field"], "limit");
    assert_eq!(alice.get(&format!("{base}?limit=201")).await.error(422, "invalid")["field"], "limit");
    alice.get(&format!("{base}?cursor=zz")).await.error(404, "not_found");
    alice.get(&format!("{base}?cursor=5b315d")).await.error(404, "not_found");
}

#[tokio::test]
async fn an_unknown_query_parameter_is_422_naming_it_so_a_typo_never_returns_the_whole_list() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let project = alice.project("board").await;
    let task = alice.task(project, json!({"title": "t"})).await;
    let id = task["id"].as_str().unwrap();
    for (path, field) in [
        (format!("/api/projects/{project}/tasks?stauts=done"), "stauts"),
        (format!("/api/projects/{project}/tasks?status=done&bogus=1"), "bogus"),
        (format!("/api/projects/{project}/members?page=2"), "page"),
        ("/api/projects?limt=1".to_string(), "limt"),
        ("/api/tokens?all=1".to_string(), "all"),
        (format!("/api/tasks/{id}/comments?order=desc"), "order"),
    ] {
        let r = alice.get(&path).await;
        assert_eq!(r.error(422, "invalid")["field"], field, "{path}");
    }
    let r = alice.delete(&format!("/api/tasks/{id}?verison=1")).await;
    assert_eq!(r.error(422, "invalid")["field"], "verison");
    assert_eq!(alice.get(&format!("/api/tasks/{id}")).await.status, 200, "nothing was deleted");
    // The parameters each endpoint takes still work.
    assert_eq!(alice.get(&format!("/api/projects/{project}/tasks?status=todo&limit=5&cursor=")).await.status, 200);
}

#[tokio::test]
async fn a_stale_update_gets_409_with_the_current_row_and_does_not_overwrite() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let project = alice.project("Board").await;
    let t = alice.task(project, json!({"title": "v1"})).await;
    let id: Uuid = t["id"].as_str().unwrap().parse().unwrap();

    // Someone else (here psql) changes the task: the trigger bumps its version.
    app.sql.execute("UPDATE tasks SET title = 'changed in psql' WHERE id = $1", &[&id]).await.unwrap();

    let stale = alice.patch(&format!("/api/tasks/{id}"), json!({"title": "mine", "version": 1})).await;
    let e = stale.error(409, "conflict");
    assert_eq!((e["current"]["title"].as_str(), e["current"]["version"].as_i64()), (Some("changed in psql"), Some(2)));
    assert_eq!(alice.get(&format!("/api/tasks/{id}")).await.body["title"], "changed in psql");

    // The recipe: merge with `current`, retry with its version.
    let retried = alice.patch(&format!("/api/tasks/{id}"), json!({"title": "mine", "version": 2})).await;
    assert_eq!((retried.status, retried.body["version"].as_i64()), (200, Some(3)));
    alice.delete(&format!("/api/tasks/{id}?version=2")).await.error(409, "conflict");
    assert_eq!(alice.delete(&format!("/api/tasks/{id}?version=3")).await.status, 200);
}

#[tokio::test]
async fn invalid_task_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let (stranger_id, _) = caller(&app, "stranger").await;
    let project = alice.project("Board").await;
    let tasks = format!("/api/projects/{project}/tasks");
    let field = |r: Res| r.error(422, "invalid")["field"].as_str().unwrap().to_string();

    assert_eq!(field(alice.post(&tasks, json!({})).await), "title");
    assert_eq!(field(alice.post(&tasks, json!({"title": ""})).await), "title");
    assert_eq!(field(alice.post(&tasks, json!({"title": "x".repeat(501)})).await), "title");
    assert_eq!(field(alice.post(&tasks, json!({"title": 5})).await), "title");
    assert_eq!(field(alice.post(&tasks, json!({"title": "a\u{0}b"})).await), "title");
    assert_eq!(field(alice.post(&tasks, json!({"title": "x", "status": "blocked"})).await), "status");
    assert_eq!(field(alice.post(&tasks, json!({"title": "x", "assignee_id": "bob"})).await), "assignee_id");
    let not_member = alice.post(&tasks, json!({"title": "x", "assignee_id": stranger_id})).await;
    assert!(not_member.error(409, "conflict")["message"].as_str().unwrap().starts_with("assignee_id"));
    assert_eq!(field(alice.post(&tasks, json!({"title": "x", "position": "first"})).await), "position");
    assert_eq!(field(alice.post(&tasks, json!({"title": "x", "priority": 1})).await), "priority");
    assert_eq!(
        field(alice.post(&tasks, json!({"title": "x", "description": "d".repeat(200_001)})).await),
        "description"
    );
    let t = alice.task(project, json!({"title": "x".repeat(500)})).await;
    let id = t["id"].as_str().unwrap();
    assert_eq!(field(alice.patch(&format!("/api/tasks/{id}"), json!({"version": 1})).await), "body");
    assert_eq!(field(alice.patch(&format!("/api/tasks/{id}"), json!({"title": "y", "version": 0})).await), "version");
    assert_eq!(
        field(alice.patch(&format!("/api/tasks/{id}"), json!({"project_id": Uuid::new_v4()})).await),
        "project_id"
    );
}

/// Every body refusal, on every resource: the field it names and the message it gives, which field wins when
/// several are wrong (an unknown field first, then the fields in the order the request lists them), and the
/// difference between a field left out and a field sent as null.
#[tokio::test]
async fn body_refusals_name_their_field_with_a_precise_message_and_null_is_not_absent() {
    let app = spawn_app().await;
    let (alice_id, alice) = caller(&app, "alice").await;
    caller(&app, "bob").await;
    let project = alice.project("Board").await;
    let t = alice.task(project, json!({"title": "t", "assignee_id": alice_id})).await;
    let tid = t["id"].as_str().unwrap();
    let c = alice.post(&format!("/api/tasks/{tid}/comments"), json!({"body": "c"})).await;
    let cid = c.body["id"].as_str().unwrap();
    let (tasks, task) = (format!("/api/projects/{project}/tasks"), format!("/api/tasks/{tid}"));
    let (members, comments) = (format!("/api/projects/{project}/members"), format!("/api/tasks/{tid}/comments"));
    let cases: Vec<(Method, String, Value, &str, &str)> = vec![
        (Method::POST, tasks.clone(), json!({}), "title", "is required"),
        (Method::POST, tasks.clone(), json!({"title": null}), "title", "must be a string"),
        (Method::POST, tasks.clone(), json!({"title": ""}), "title", "must not be empty (1 to 500 characters)"),
        (Method::POST, tasks.clone(), json!({"title": "😀".repeat(501)}), "title", "must be at most 500 characters"),
        (Method::POST, tasks.clone(), json!({"title": "a\u{0}b"}), "title", "must not contain NUL characters"),
        (
            Method::POST,
            tasks.clone(),
            json!({"title": "", "status": "x"}),
            "title",
            "must not be empty (1 to 500 characters)",
        ),
        (
            Method::POST,
            tasks.clone(),
            json!({"title": 5, "zz": 1, "aa": 1}),
            "aa",
            "unknown field; allowed: title, description, status, assignee_id, position",
        ),
        (
            Method::POST,
            tasks.clone(),
            json!({"title": "x", "status": null}),
            "status",
            "must be one of: todo, in_progress, done",
        ),
        (Method::POST, tasks.clone(), json!({"title": "x", "assignee_id": 7}), "assignee_id", "must be a UUID or null"),
        (Method::POST, tasks.clone(), json!({"title": "x", "position": "1"}), "position", "must be a number"),
        (
            Method::POST,
            tasks.clone(),
            json!({"title": "x", "position": 2e15}),
            "position",
            "must be between -1e15 and 1e15",
        ),
        (Method::POST, tasks.clone(), json!({"title": "x", "description": 1}), "description", "must be a string"),
        (
            Method::PATCH,
            task.clone(),
            json!({}),
            "body",
            "nothing to change: send one of title, description, status, assignee_id, position",
        ),
        (Method::PATCH, task.clone(), json!({"title": null}), "title", "must be a string"),
        (Method::PATCH, task.clone(), json!({"title": "y", "version": "1"}), "version", "must be an integer"),
        (
            Method::PATCH,
            task.clone(),
            json!({"title": "y", "version": 1.5}),
            "version",
            "must be an integer of at least 1",
        ),
        (
            Method::PATCH,
            task.clone(),
            json!({"version": 1, "title": ""}),
            "title",
            "must not be empty (1 to 500 characters)",
        ),
        (
            Method::POST,
            "/api/projects".into(),
            json!({"name": "x".repeat(201)}),
            "name",
            "must be at most 200 characters",
        ),
        (
            Method::POST,
            "/api/projects".into(),
            json!({"name": "x", "status": "closed"}),
            "status",
            "must be one of: active, archived",
        ),
        (
            Method::PATCH,
            format!("/api/projects/{project}"),
            json!({}),
            "body",
            "nothing to change: send name and/or status",
        ),
        (
            Method::POST,
            members.clone(),
            json!({"user": "bob smith"}),
            "user",
            "a user name is 1 to 64 letters, digits, '_', '.' or '-'",
        ),
        (
            Method::POST,
            members.clone(),
            json!({"user": "bob", "role": "admin"}),
            "role",
            "must be one of: owner, member",
        ),
        (Method::PATCH, format!("{members}/{alice_id}"), json!({}), "role", "is required"),
        (
            Method::POST,
            comments.clone(),
            json!({"body": "x".repeat(20_001)}),
            "body",
            "must be at most 20000 characters",
        ),
        (Method::PATCH, format!("/api/comments/{cid}"), json!({"version": 1}), "body", "is required"),
        (Method::POST, "/api/tokens".into(), json!({"label": false}), "label", "must be a string"),
    ];
    for (method, path, body, field, message) in cases {
        let r = alice.send(method.clone(), &path, Some(body.clone())).await;
        let e = r.error(422, "invalid");
        assert_eq!(
            (e["field"].as_str(), e["message"].as_str()),
            (Some(field), Some(message)),
            "{method} {path} {body}"
        );
    }
    // Left out, assignee_id is kept; sent as null, it unassigns.
    let kept = alice.patch(&task, json!({"title": "renamed"})).await;
    assert_eq!((kept.status, &kept.body["assignee_id"]), (200, &json!(alice_id)));
    let unassigned = alice.patch(&task, json!({"assignee_id": null})).await;
    assert_eq!((unassigned.status, &unassigned.body["assignee_id"]), (200, &Value::Null));
    // Lengths are characters, not bytes: 500 four-byte characters are a valid title.
    assert_eq!(alice.post(&tasks, json!({"title": "😀".repeat(500)})).await.status, 201);
}

// --- comments ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn members_comment_on_tasks_and_only_authors_edit_or_delete_their_comments() {
    let app = spawn_app().await;
    let (alice_id, alice) = caller(&app, "alice").await;
    let (_, bob) = caller(&app, "bob").await;
    let project = alice.project("Board").await;
    alice.post(&format!("/api/projects/{project}/members"), json!({"user": "bob"})).await;
    let task = alice.task(project, json!({"title": "Review"})).await;
    let comments = format!("/api/tasks/{}/comments", task["id"].as_str().unwrap());

    let c = alice.post(&comments, json!({"body": "first"})).await;
    assert_eq!(c.status, 201, "{c:?}");
    assert_eq!((c.body["author_id"].clone(), c.body["project_id"].clone()), (json!(alice_id), json!(project)));
    assert_eq!(c.seq(), app.latest_seq(project).await);
    let cid = c.body["id"].as_str().unwrap().to_string();
    let mut all = vec![cid.clone()];
    for i in 0..4 {
        all.push(
            bob.post(&comments, json!({"body": format!("bob {i}")})).await.body["id"].as_str().unwrap().to_string(),
        );
    }
    assert_eq!(bob.post(&comments, json!({"body": ""})).await.error(422, "invalid")["field"], "body");

    let seen = ids(&Value::from(bob.pages(&comments, 2).await));
    assert_eq!(seen, all, "oldest first, every comment once");
    assert_eq!(bob.get(&format!("/api/comments/{cid}")).await.body["body"], "first");

    bob.patch(&format!("/api/comments/{cid}"), json!({"body": "edited by bob"})).await.error(403, "forbidden");
    bob.delete(&format!("/api/comments/{cid}")).await.error(403, "forbidden");
    let edited = alice.patch(&format!("/api/comments/{cid}"), json!({"body": "first, edited", "version": 1})).await;
    assert_eq!((edited.status, edited.body["version"].as_i64()), (200, Some(2)));
    let stale = alice.patch(&format!("/api/comments/{cid}"), json!({"body": "again", "version": 1})).await;
    assert_eq!(stale.error(409, "conflict")["current"]["body"], "first, edited");
    let d = alice.delete(&format!("/api/comments/{cid}")).await;
    assert_eq!((d.status, d.seq()), (200, app.latest_seq(project).await));
    alice.get(&format!("/api/comments/{cid}")).await.error(404, "not_found");
}

// --- the feed ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_api_write_reaches_the_feed_like_a_psql_write_with_the_seq_its_response_announced() {
    let app = spawn_app().await;
    let (_, token) = app.user("alice").await;
    let alice = Api::new(&app, Some(&token));
    let project = alice.project("Board").await;
    let (mut ws, _) = app.joined(&token, project).await;

    let via_api = alice.task(project, json!({"title": "from the API"})).await;
    let e_api = ws.event().await;
    assert_eq!(e_api["seq"], via_api["seq"], "the response's seq is its event's");
    assert_eq!(e_api["tx"], via_api["tx"], "and so is its transaction");
    let mut row = via_api.clone();
    row.as_object_mut().unwrap().remove("seq");
    row.as_object_mut().unwrap().remove("tx");
    assert_eq!(e_api["row"], row, "the response carries the row the feed carries");

    app.insert_task(project, "from psql").await;
    let e_sql = ws.event().await;
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&e_api), keys(&e_sql));
    assert_eq!(keys(&e_api["row"]), keys(&e_sql["row"]));
    assert_eq!((e_api["table"].clone(), e_api["action"].clone()), (e_sql["table"].clone(), e_sql["action"].clone()));

    // Updates, comments and deletes announce their seq too.
    let id = via_api["id"].as_str().unwrap();
    let u = alice.patch(&format!("/api/tasks/{id}"), json!({"status": "done"})).await;
    let e = ws.event().await;
    assert_eq!(
        (e["seq"].clone(), e["action"].as_str(), e["old"]["status"].as_str()),
        (u.body["seq"].clone(), Some("update"), Some("todo"))
    );
    let c = alice.post(&format!("/api/tasks/{id}/comments"), json!({"body": "done!"})).await;
    assert_eq!(ws.event().await["seq"], c.body["seq"]);
    let d = alice.delete(&format!("/api/tasks/{id}")).await;
    let mut cascade = ws.events(2).await;
    assert_eq!(cascade.pop().unwrap()["seq"], d.body["seq"], "the delete's seq is its last event's");
    ws.expect_silence(Duration::from_millis(200)).await;
}

// --- refusals and the document -----------------------------------------------------------------------------

#[tokio::test]
async fn malformed_oversized_and_non_json_bodies_are_refused_cleanly() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let json = Some("application/json");
    alice.raw(Method::POST, "/api/projects", json, Some(b"{\"name\":".to_vec())).await.error(400, "bad_request");
    alice.raw(Method::POST, "/api/projects", json, Some(b"[1,2]".to_vec())).await.error(400, "bad_request");
    alice.raw(Method::POST, "/api/projects", json, Some(b"\"x\"".to_vec())).await.error(400, "bad_request");
    // Whitespace alone is not JSON (only an empty body stands for `{}`).
    alice.raw(Method::POST, "/api/projects", json, Some(b" ".to_vec())).await.error(400, "bad_request");
    alice.raw(Method::POST, "/api/tokens", json, Some(b"\r".to_vec())).await.error(400, "bad_request");
    alice
        .raw(Method::POST, "/api/projects", Some("text/plain"), Some(b"{\"name\":\"x\"}".to_vec()))
        .await
        .error(415, "unsupported_media_type");
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(300 * 1024)).into_bytes();
    alice.raw(Method::POST, "/api/projects", json, Some(big)).await.error(413, "too_large");
    // No content type at all is taken as JSON.
    let r = alice.raw(Method::POST, "/api/projects", None, Some(b"{\"name\":\"x\"}".to_vec())).await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn a_description_of_the_longest_allowed_length_is_accepted_however_its_json_is_escaped() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let project = alice.post("/api/projects", json!({"name": "p"})).await.body["id"].as_str().unwrap().to_string();
    let path = format!("/api/projects/{project}/tasks");
    // 200,000 characters outside the BMP, each escaped as a surrogate pair: a 2.4 MB body.
    let body = |n: usize| format!(r#"{{"title":"long","description":"{}"}}"#, r"\ud83d\ude00".repeat(n)).into_bytes();
    let r = alice.raw(Method::POST, &path, Some("application/json"), Some(body(200_000))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let stored = alice.get(&format!("/api/tasks/{id}")).await.body;
    assert_eq!(stored["description"].as_str().unwrap().chars().count(), 200_000);
    assert!(stored["description"].as_str().unwrap().chars().all(|c| c == '\u{1F600}'));
    // One character more is a 422 that names the field, not a 413; a body past even the worst escaping is 413.
    let r = alice.raw(Method::POST, &path, Some("application/json"), Some(body(200_001))).await;
    assert_eq!(r.error(422, "invalid")["field"], "description");
    alice.raw(Method::POST, &path, Some("application/json"), Some(body(210_000))).await.error(413, "too_large");
}

// --- browsers on other origins (CORS) -------------------------------------------------------------------------

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn a_web_page_on_another_origin_can_call_the_api_and_read_every_answer() {
    let app = spawn_app().await;
    let (_, token) = app.user("alice").await;
    let http = reqwest::Client::new();
    let page = "http://localhost:5173";

    // The browser's preflight of a PATCH carrying a bearer token and a JSON body.
    let pre = http
        .request(Method::OPTIONS, app.http("/api/tasks/0b7c1f0e-1111-4222-8333-944455556666"))
        .header("origin", page)
        .header("access-control-request-method", "PATCH")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 200);
    assert!(["*", page].contains(&header(&pre, "access-control-allow-origin")), "{pre:?}");
    assert!(header(&pre, "access-control-allow-methods").contains("PATCH"), "{pre:?}");
    assert!(header(&pre, "access-control-allow-headers").contains("authorization"), "{pre:?}");
    // A page whose monitoring adds tracing headers to every fetch is not refused.
    let traced = http
        .request(Method::OPTIONS, app.http("/api/projects"))
        .header("origin", page)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, traceparent, sentry-trace, baggage")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 200, "{traced:?}");

    // A write: the page may read the event's seq from the header.
    let created = http
        .post(app.http("/api/projects"))
        .header("origin", page)
        .bearer_auth(&token)
        .json(&json!({"name": "from the browser"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(["*", page].contains(&header(&created, "access-control-allow-origin")));
    assert!(header(&created, "access-control-expose-headers").contains("x-boardcast-seq"), "{created:?}");

    // An error too, or the page could not read why it failed.
    let refused = http.get(app.http("/api/me")).header("origin", page).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(["*", page].contains(&header(&refused, "access-control-allow-origin")));
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn with_a_list_of_origins_only_those_pages_may_call_the_api() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.cors_origins = Some(vec!["https://board.example.com".into()]);
    let app = spawn_app_on(settings).await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(Method::OPTIONS, app.http("/api/projects"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://board.example.com").await.unwrap();
    assert_eq!((ok.status().as_u16(), header(&ok, "access-control-allow-origin")), (200, "https://board.example.com"));
    let no = preflight("https://elsewhere.example").await.unwrap();
    assert_eq!(no.status(), 403);
    assert_eq!(header(&no, "access-control-allow-origin"), "");
    assert_eq!(no.json::<Value>().await.unwrap()["error"]["code"], "forbidden");
    // Requests without an Origin (curl, servers, mobile apps) are not browsers' business.
    let plain = http.get(app.http("/api/me")).send().await.unwrap();
    assert_eq!(plain.status(), 401);
}

#[tokio::test]
async fn ids_that_are_not_uuids_and_unknown_routes_are_json_404s_and_wrong_methods_405() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    for path in
        ["/api/projects/nope", "/api/projects/1/tasks", "/api/tasks/%00", "/api/comments/not-a-uuid", "/api/tokens/x"]
    {
        let r = if path.starts_with("/api/tokens") { alice.delete(path).await } else { alice.get(path).await };
        r.error(404, "not_found");
    }
    alice.get("/api/unknown").await.error(404, "not_found");
    let r = alice.send(Method::PUT, "/api/projects", Some(json!({}))).await;
    r.error(405, "method_not_allowed");
    assert_eq!(r.allow.as_deref(), Some("GET, POST"));
}

/// The document and the routes agree: every documented operation is routed (unauthenticated it meets the
/// token check, not a 404 or 405), and on documented paths every undocumented method is a 405.
#[tokio::test]
async fn every_operation_in_the_openapi_document_is_routed_and_nothing_else_is() {
    let app = spawn_app().await;
    let anonymous = Api::new(&app, None);
    let doc = anonymous.get("/api/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.0.3");
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(paths.len() >= 12);
    let all = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    let mut checked = 0;
    for (template, ops) in paths {
        let path = template
            .split('/')
            .map(|s| if s.starts_with('{') { Uuid::new_v4().to_string() } else { s.to_string() })
            .collect::<Vec<_>>()
            .join("/");
        let ops = ops.as_object().unwrap();
        for method in &all {
            let documented = ops.get(&method.as_str().to_lowercase());
            let body = matches!(*method, Method::POST | Method::PATCH | Method::PUT).then(|| json!({}));
            let r = anonymous.send(method.clone(), &path, body).await;
            match documented {
                Some(op) => {
                    let public = op.get("security").is_some_and(|s| s == &json!([]));
                    let expected = if public { 200 } else { 401 };
                    assert_eq!(r.status, expected, "{method} {template}: {r:?}");
                    assert!(
                        op["responses"].get(r.status.to_string()).is_some(),
                        "{method} {template} does not document {}",
                        r.status
                    );
                    checked += 1;
                }
                None => {
                    r.error(405, "method_not_allowed");
                    let allow: Vec<String> = ops.keys().map(|m| m.to_uppercase()).collect();
                    let mut got: Vec<String> = r.allow.unwrap().split(", ").map(str::to_string).collect();
                    got.sort();
                    let mut want = allow.clone();
                    want.sort();
                    assert_eq!(got, want, "Allow of {template}");
                }
            }
        }
    }
    assert!(checked >= 25, "{checked} operations");
}

/// docs/api.md's table of endpoints and the OpenAPI document list the same operations (the document's public
/// ones, `GET /api` and the document itself, aside), so neither describes a route the other misses.
#[tokio::test]
async fn the_endpoints_in_docs_api_md_are_the_operations_of_the_openapi_document() {
    let app = spawn_app().await;
    let doc = Api::new(&app, None).get("/api/openapi.json").await.body;
    // `/api/tasks/{task_id}` and `/api/tasks/{id}?version=` are the same route.
    let shape = |path: &str| {
        let path = path.split('?').next().unwrap();
        path.split('/').map(|s| if s.starts_with('{') { "{}" } else { s }).collect::<Vec<_>>().join("/")
    };
    let mut documented: Vec<String> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op.get("security") != Some(&json!([])) {
                documented.push(format!("{} {}", method.to_uppercase(), shape(path)));
            }
        }
    }
    let table = include_str!("../docs/api.md").split("## Endpoints").nth(1).expect("an Endpoints section");
    let mut described: Vec<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| {
            let (method, rest) = l.split_once(' ').unwrap();
            format!("{method} {}", shape(rest.split('`').next().unwrap()))
        })
        .collect();
    documented.sort();
    described.sort();
    assert_eq!(described, documented);
}

#[tokio::test]
async fn hostile_input_never_gets_a_server_error() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let project = alice.project("Board").await;
    let task = alice.task(project, json!({"title": "t"})).await;
    let tid = task["id"].as_str().unwrap();
    let bodies = [
        json!({"title": "x", "position": 1e308}),
        json!({"title": "x", "position": f64::MAX}),
        json!({"title": "x", "position": -0.0}),
        json!({"title": {"nested": [1, 2]}}),
        json!({"title": "x", "assignee_id": ""}),
        json!({"title": "😀".repeat(500)}),
        json!({"title": "x", "version": 9_223_372_036_854_775_807_i64}),
        json!({"title": "x", "version": -1}),
        json!({"title": "x", "version": 1.5}),
        json!(null),
    ];
    for b in bodies {
        alice.post(&format!("/api/projects/{project}/tasks"), b.clone()).await;
        alice.patch(&format!("/api/tasks/{tid}"), b.clone()).await;
        alice.post(&format!("/api/projects/{project}/members"), b.clone()).await;
        alice.post(&format!("/api/tasks/{tid}/comments"), b.clone()).await;
        alice.patch(&format!("/api/projects/{project}"), b).await;
    }
    for q in ["limit=-1", "limit=99999999999999999999", "cursor=%ff", "status=%00", "assignee=%zz", "a=b&&&=", "limit"]
    {
        alice.get(&format!("/api/projects/{project}/tasks?{q}")).await;
        alice.get(&format!("/api/projects?{q}")).await;
        alice.get(&format!("/api/tasks/{tid}/comments?{q}")).await;
        alice.delete(&format!("/api/tasks/{}?version={q}", Uuid::new_v4())).await;
    }
    alice.raw(Method::POST, "/api/projects", Some("application/json; charset=utf-8"), Some(vec![0xff, 0xfe])).await;
    // Positions no JSON parser can read back exactly are refused, by the API and by the database alike.
    let r = alice.patch(&format!("/api/tasks/{tid}"), json!({"position": 1.7976931348623157e308})).await;
    assert_eq!((r.status, r.body["error"]["field"].as_str()), (422, Some("position")));
    let psql =
        app.sql.execute("UPDATE tasks SET position = 'NaN' WHERE id = $1", &[&tid.parse::<Uuid>().unwrap()]).await;
    assert!(psql.is_err());
    assert_eq!(alice.get(&format!("/api/projects/{project}/tasks")).await.status, 200);
    alice.raw(Method::PATCH, "/api/tasks/x", Some("application/json"), Some(b"{}".to_vec())).await;
}

#[tokio::test]
async fn a_write_racing_the_writers_removal_waits_for_it_and_is_refused() {
    let app = spawn_app().await;
    let (_, project) = app.member_of_new_project("alice").await;
    let (bob_id, bob_token) = app.user("bob").await;
    app.add_member(project, "bob").await;

    // An admin removes bob in a transaction that has not committed yet...
    let mut admin = connect(&app.db_url).await;
    let removal = admin.transaction().await.unwrap();
    removal
        .execute("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2", &[&project, &bob_id])
        .await
        .unwrap();
    // ...while bob writes. His write must wait for the removal, not slip in beside it.
    let bob = Api::new(&app, Some(&bob_token));
    let write = tokio::spawn(async move {
        bob.post(&format!("/api/projects/{project}/tasks"), json!({"title": "sneaked in"})).await
    });
    // Until the write waits for a lock, or (wrongly) finishes without waiting, however slow the machine.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.lock_waiters().await == 0 && !write.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "the write neither waited nor finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!write.is_finished(), "the write should be waiting for the removal");
    removal.commit().await.unwrap();
    let res = write.await.unwrap();
    assert_eq!(res.status, 404, "{res:?}");
    let sneaked: i64 =
        app.sql.query_one("SELECT count(*) FROM tasks WHERE title = 'sneaked in'", &[]).await.unwrap().get(0);
    assert_eq!(sneaked, 0);
}

#[tokio::test]
async fn an_owner_deleting_the_project_while_another_owner_removes_them_does_not_deadlock() {
    let app = spawn_app().await;
    let (alice_id, alice) = caller(&app, "alice").await;
    let (_, bob) = caller(&app, "bob").await;
    let project = alice.project("board").await;
    let add = alice.post(&format!("/api/projects/{project}/members"), json!({"user": "bob", "role": "owner"})).await;
    assert_eq!(add.status, 201);

    // Force the interleaving in which locking the caller's membership before the project deadlocks: a
    // board write (here psql) holds the project's row, alice's delete starts and waits for it, bob's removal
    // of alice starts too; then the board write ends.
    let board = connect(&app.db_url).await;
    board.batch_execute("BEGIN").await.unwrap();
    board.execute("SELECT 1 FROM projects WHERE id = $1 FOR KEY SHARE", &[&project]).await.unwrap();
    let removal_done = std::sync::atomic::AtomicBool::new(false);
    // Until `n` requests wait for a lock, or bob's removal has finished (it need not wait).
    let waiting = |n: i64| {
        let (app, removal_done) = (&app, &removal_done);
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            while app.lock_waiters().await < n && !removal_done.load(std::sync::atomic::Ordering::SeqCst) {
                if tokio::time::Instant::now() > deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (project_path, member_path) =
        (format!("/api/projects/{project}"), format!("/api/projects/{project}/members/{alice_id}"));
    let delete = alice.delete(&project_path);
    let remove = bob.delete(&member_path);
    let release = async {
        waiting(2).await; // alice's delete waits, and bob's removal waits or is done
        board.batch_execute("COMMIT").await.unwrap();
    };
    let staged_remove = async {
        waiting(1).await; // alice's delete is waiting: now bob
        let removed = remove.await;
        removal_done.store(true, std::sync::atomic::Ordering::SeqCst);
        removed
    };
    let (deleted, removed, ()) = tokio::join!(delete, staged_remove, release);
    // One of them goes first and the other finds nothing left to act on (no project, or alice no longer an
    // owner of it). A deadlock would be a 409 "retry".
    assert!(matches!((deleted.status, removed.status), (200, 404) | (404, 200)), "{deleted:?} {removed:?}");
}

#[tokio::test]
async fn board_writes_racing_member_removal_and_project_deletion_finish_without_a_deadlock() {
    let app = spawn_app().await;
    let (_, alice) = caller(&app, "alice").await;
    let (bob_id, bob_token) = app.user("bob").await;
    for round in 0..8 {
        let project = alice.project(&format!("board {round}")).await;
        assert_eq!(alice.post(&format!("/api/projects/{project}/members"), json!({"user": "bob"})).await.status, 201);
        let bob = Api::new(&app, Some(&bob_token));
        let mut tasks = Vec::new();
        for i in 0..6 {
            tasks.push(bob.task(project, json!({"title": format!("t{i}")})).await["id"].as_str().unwrap().to_string());
        }
        // Bob edits, comments on and deletes cards while alice removes him, adds him back and deletes the
        // board. Taking locks in different orders, two of these would deadlock and one would fail with 500
        // (`Api::raw` asserts there is none); every write must instead finish with an answer that names
        // its outcome.
        let writes = tasks.iter().enumerate().map(|(i, task)| {
            let bob = &bob;
            async move {
                let mut statuses = Vec::new();
                for n in 0..4 {
                    statuses.push(
                        bob.patch(&format!("/api/tasks/{task}"), json!({"title": format!("{i}.{n}")})).await.status,
                    );
                    statuses
                        .push(bob.post(&format!("/api/tasks/{task}/comments"), json!({"body": "on it"})).await.status);
                }
                statuses.push(bob.delete(&format!("/api/tasks/{task}")).await.status);
                statuses
            }
        });
        let owner = async {
            let member = format!("/api/projects/{project}/members/{bob_id}");
            let removed = alice.delete(&member).await.status;
            let added = alice.post(&format!("/api/projects/{project}/members"), json!({"user": "bob"})).await.status;
            let deleted = alice.delete(&format!("/api/projects/{project}")).await.status;
            (removed, added, deleted)
        };
        let (statuses, owner) = tokio::join!(futures::future::join_all(writes), owner);
        assert_eq!(owner, (200, 201, 200), "round {round}");
        let statuses: Vec<u16> = statuses.into_iter().flatten().collect();
        for s in statuses {
            assert!(matches!(s, 200 | 201 | 204 | 404), "round {round}: a board write answered {s}");
        }
        assert_eq!(alice.get(&format!("/api/projects/{project}")).await.status, 404);
    }
}

//! Your own users (issue #14): JWTs from an app's sign-in, accepted beside boardcast's tokens on the REST API
//! and the feed. HS256 with a shared secret, RS256 from a PEM file, ES256 from a JWKS picked by `kid`; every
//! bad JWT is the same 401 as a bad token and spends the same sign-in budget; a socket closes when its JWT
//! expires unless the client sends a fresh one (`auth`); no token reaches the log. The keys are test-only
//! fixtures (tests/fixtures/jwt).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boardcast::config::JwtSettings;
use common::*;
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const SECRET: &str = "the app's shared secret, 32 bytes or more";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn hs256(claims: Value) -> String {
    sign(Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes()))
}

fn sign(header: Header, claims: Value, key: &EncodingKey) -> String {
    encode(&header, &claims, key).unwrap()
}

/// A JWT for `sub`, valid for an hour.
fn for_subject(sub: &str) -> String {
    hs256(json!({"sub": sub, "exp": now() + 3600}))
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap()).unwrap()
}

fn ec_key(file: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(fixture(file)).unwrap()).unwrap()
}

async fn app_with(jwt: JwtSettings, auth_failures_per_min: u32) -> TestApp {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.jwt = jwt;
    settings.http.auth_failures_per_min = auth_failures_per_min;
    spawn_app_on(settings).await
}

fn hs256_settings(leeway: u64) -> JwtSettings {
    JwtSettings { secret: Some(SECRET.into()), leeway: Duration::from_secs(leeway), ..JwtSettings::default() }
}

/// `GET path` with a bearer token: status and JSON body.
async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .get(app.http(path))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The status a WebSocket handshake with `token` is refused with (`None`: it was accepted).
async fn handshake_refusal(app: &TestApp, token: &str) -> Option<u16> {
    match WsClient::connect(&app.ws_url(), token).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Some(res.status().as_u16()),
        Err(e) => panic!("handshake failed otherwise: {e}"),
    }
}

#[tokio::test]
async fn an_hs256_jwt_signs_in_on_the_api_and_the_feed() {
    let app = app_with(hs256_settings(10), 60).await;
    let (alice, _) = app.user("alice").await;
    let project = app.project("board", "alice").await;
    let token = hs256(json!({"sub": alice.to_string(), "exp": now() + 3600, "name": "Alice from the app"}));

    let (status, me) = get(&app, "/api/me", &token).await;
    assert_eq!((status, me["id"].as_str()), (200, Some(alice.to_string().as_str())), "{me}");
    let (status, projects) = get(&app, "/api/projects", &token).await;
    assert_eq!((status, projects["items"][0]["id"].as_str()), (200, Some(project.to_string().as_str())), "{projects}");

    // The feed, with the header and with ?token=: a psql write reaches both.
    let mut header = app.client(&token).await;
    header.join(project).await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("{}?token={token}", app.ws_url())).await.unwrap();
    let mut query = WsClient { ws };
    query.join(project).await;
    let task = app.insert_task(project, "from psql").await;
    for client in [&mut header, &mut query] {
        let event = client.event().await;
        assert_eq!(
            (event["table"].as_str(), event["row"]["id"].as_str()),
            (Some("tasks"), Some(task.to_string().as_str()))
        );
    }

    // A subject that is no boardcast user: the REST API says so (403); the feed lets it in, a member of nothing.
    let stranger = for_subject("user-42@app");
    let (status, body) = get(&app, "/api/me", &stranger).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not a boardcast user"), "{body}");
    let mut ws = app.client(&stranger).await;
    ws.send(json!({"op": "join", "project": project, "ref": 1})).await;
    let refused = ws.recv().await;
    assert_eq!((refused["code"].as_str(), refused["ref"].as_i64()), (Some("not_found"), Some(1)), "{refused}");
    // A uuid that is no user's is no user either.
    assert_eq!(get(&app, "/api/me", &for_subject(&Uuid::new_v4().to_string())).await.0, 403);
    app.stop().await;
}

#[tokio::test]
async fn rs256_from_a_pem_file_and_es256_from_a_jwks_picked_by_kid() {
    let jwt = JwtSettings {
        public_key: Some(fixture("rsa-public.pem")),
        jwks: Some(fixture("jwks.json")),
        leeway: Duration::from_secs(10),
        ..JwtSettings::default()
    };
    let app = app_with(jwt, 60).await;
    let (alice, _) = app.user("alice").await;
    let claims = json!({"sub": alice.to_string(), "exp": now() + 3600});

    let rs256 = sign(Header::new(Algorithm::RS256), claims.clone(), &rsa_key());
    assert_eq!(get(&app, "/api/me", &rs256).await.0, 200, "RS256 with the PEM's key");
    let with_kid = |kid: &str, alg| Header { kid: Some(kid.into()), ..Header::new(alg) };
    let es256 = sign(with_kid("ec-2", Algorithm::ES256), claims.clone(), &ec_key("ec2-private.pem"));
    assert_eq!(get(&app, "/api/me", &es256).await.0, 200, "ES256 with the JWKS key its kid names");
    let es256 = sign(with_kid("ec-1", Algorithm::ES256), claims.clone(), &ec_key("ec-private.pem"));
    assert_eq!(get(&app, "/api/me", &es256).await.0, 200, "ES256 with the other JWKS key");
    assert!(handshake_refusal(&app, &es256).await.is_none(), "and the feed");

    // Signed with one key, naming another's kid; naming no kid while the JWKS has two ES256 keys; an unknown kid.
    let unauthorized = get(&app, "/api/me", "bc_nope").await.1;
    for bad in [
        sign(with_kid("ec-1", Algorithm::ES256), claims.clone(), &ec_key("ec2-private.pem")),
        sign(Header::new(Algorithm::ES256), claims.clone(), &ec_key("ec-private.pem")),
        sign(with_kid("ec-9", Algorithm::ES256), claims.clone(), &ec_key("ec-private.pem")),
        // HS256 with the public key as its secret: only public keys are configured, so no HS256 is accepted.
        sign(
            Header::new(Algorithm::HS256),
            claims.clone(),
            &EncodingKey::from_secret(&std::fs::read(fixture("rsa-public.pem")).unwrap()),
        ),
    ] {
        assert_eq!(get(&app, "/api/me", &bad).await, (401, unauthorized.clone()));
    }
    app.stop().await;
}

#[tokio::test]
async fn every_bad_jwt_is_the_same_401_as_a_bad_token() {
    let app = app_with(hs256_settings(10), 1000).await;
    let (alice, _) = app.user("alice").await;
    let sub = alice.to_string();
    let (status, unauthorized) = get(&app, "/api/me", &format!("bc_{}", "0".repeat(64))).await;
    assert_eq!(status, 401);

    let b64 = |v: Value| base64url(&serde_json::to_vec(&v).unwrap());
    let good = hs256(json!({"sub": sub, "exp": now() + 3600}));
    let parts: Vec<&str> = good.split('.').collect();
    let other_user = b64(json!({"sub": Uuid::new_v4().to_string(), "exp": now() + 3600}));
    let mut signature = parts[2].to_string();
    let flipped = if &signature[5..6] == "A" { "B" } else { "A" };
    signature.replace_range(5..6, flipped);
    let cases = [
        ("expired", hs256(json!({"sub": sub, "exp": now() - 60}))),
        ("no exp", hs256(json!({"sub": sub}))),
        ("not yet valid", hs256(json!({"sub": sub, "exp": now() + 3600, "nbf": now() + 600}))),
        ("alg none", format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), parts[1])),
        ("alg none, signed", format!("{}.{}.{}", b64(json!({"alg": "none"})), parts[1], parts[2])),
        ("tampered claims", format!("{}.{}.{}", parts[0], other_user, parts[2])),
        ("tampered signature", format!("{}.{}.{}", parts[0], parts[1], signature)),
        (
            "wrong key",
            sign(
                Header::new(Algorithm::HS256),
                json!({"sub": sub, "exp": now() + 3600}),
                &EncodingKey::from_secret(b"another secret, also of 32 bytes or more"),
            ),
        ),
        (
            "wrong alg (HS512, same secret)",
            sign(
                Header::new(Algorithm::HS512),
                json!({"sub": sub, "exp": now() + 3600}),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            ),
        ),
        (
            "RS256 with no public key configured",
            sign(Header::new(Algorithm::RS256), json!({"sub": sub, "exp": now() + 3600}), &rsa_key()),
        ),
    ];
    for (what, token) in &cases {
        assert_eq!(get(&app, "/api/me", token).await, (401, unauthorized.clone()), "{what}");
        assert_eq!(handshake_refusal(&app, token).await, Some(401), "{what}");
    }
    assert_eq!(get(&app, "/api/me", &good).await.0, 200, "the good one, to be sure");
    app.stop().await;
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn bad_jwts_spend_the_sign_in_budget_and_cost_no_query() {
    let app = app_with(hs256_settings(10), 3).await;
    let (alice, _) = app.user("alice").await;
    let good = for_subject(&alice.to_string());
    assert_eq!(get(&app, "/api/me", &good).await.0, 200);
    let forged = |n: i64| {
        sign(
            Header::new(Algorithm::HS256),
            json!({"sub": "x", "exp": now() + 3600 + n}),
            &EncodingKey::from_secret(b"a guess at the secret, 32 bytes or more"),
        )
    };
    for n in 0..3 {
        assert_eq!(get(&app, "/api/me", &forged(n)).await.0, 401);
    }
    // The budget is spent: the next guess waits; one already refused is refused again without costing any;
    // the token this address used successfully a moment ago still works.
    let (status, body) = get(&app, "/api/me", &forged(3)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert_eq!(get(&app, "/api/me", &forged(0)).await.0, 401);
    assert_eq!(get(&app, "/api/me", &good).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_socket_closes_when_its_jwt_expires_unless_it_sends_a_fresh_one() {
    let app = app_with(hs256_settings(0), 60).await;
    let (alice, alice_token) = app.user("alice").await;
    let (bob, _) = app.user("bob").await;
    let project = app.project("board", "alice").await;
    let sub = alice.to_string();
    // Five seconds (four at least, the claim being in whole seconds) to open, join and renew before it expires.
    let short = hs256(json!({"sub": sub, "exp": now() + 5}));

    let (mut stays, _) = app.joined(&short, project).await;
    let (mut expires, _) = app.joined(&short, project).await;

    // Another subject's token, or a bad one, is refused: the socket stays who it is.
    stays.send(json!({"op": "auth", "token": for_subject(&bob.to_string()), "ref": "b"})).await;
    let refused = stays.recv().await;
    assert_eq!((refused["code"].as_str(), refused["ref"].as_str()), (Some("unauthorized"), Some("b")), "{refused}");
    stays.send(json!({"op": "auth", "token": hs256(json!({"sub": sub, "exp": now() - 60})), "ref": "old"})).await;
    assert_eq!(stays.recv().await["code"], "unauthorized");

    let exp = now() + 3600;
    stays.send(json!({"op": "auth", "token": hs256(json!({"sub": sub, "exp": exp})), "ref": 7})).await;
    let authed = stays.recv().await;
    assert_eq!((authed["op"].as_str(), authed["ref"].as_i64()), (Some("authed"), Some(7)), "{authed}");
    let expires_at: chrono::DateTime<chrono::Utc> = serde_json::from_value(authed["expires_at"].clone()).unwrap();
    assert_eq!(expires_at.timestamp(), exp);

    assert_eq!(expires.closed().await, Some((4001, "token expired".to_string())));
    // Past the first token's expiry, the renewed socket is open, still in its room.
    let task = app.insert_task(project, "after the first expiry").await;
    assert_eq!(stays.event().await["row"]["id"], json!(task));
    stays.send(json!({"op": "ping", "ref": 1})).await;
    assert_eq!(stays.recv().await["op"], "pong");
    // A bc_ token for the same user renews too (and never expires).
    stays.send(json!({"op": "auth", "token": alice_token})).await;
    assert_eq!(stays.recv().await, json!({"op": "authed", "expires_at": null}));
    app.stop().await;
}

#[tokio::test]
async fn the_per_user_connection_cap_counts_by_subject() {
    let db_url = fresh_database(&admin_url()).await;
    let mut settings = test_settings(&db_url);
    settings.jwt = hs256_settings(10);
    settings.feed.max_connections_per_user = 2;
    let app = spawn_app_on(settings).await;
    let (alice, alice_token) = app.user("alice").await;
    let _a = app.client(&alice_token).await;
    let _b = app.client(&for_subject(&alice.to_string())).await;
    assert_eq!(handshake_refusal(&app, &for_subject(&alice.to_string())).await, Some(429), "alice, either way");
    let _c = app.client(&for_subject("carol@app")).await;
    let _d = app.client(&for_subject("carol@app")).await;
    assert_eq!(handshake_refusal(&app, &for_subject("carol@app")).await, Some(429), "a subject that is no user");
    app.stop().await;
}

#[tokio::test]
async fn no_jwt_or_secret_reaches_the_log_even_at_trace() {
    let db_url = fresh_database(&admin_url()).await;
    let sql = connect(&db_url).await;
    let (alice, _) = boardcast::admin::add_user(&sql, "alice").await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .arg("serve")
        .env("DATABASE_URL", &db_url)
        .env("BOARDCAST_ADDR", "127.0.0.1:0")
        .env("BOARDCAST_JWT_SECRET", SECRET)
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let lines = BufReader::new(child.stderr.take().unwrap());
    let keep = log.clone();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = addr_tx.send(rest.split_whitespace().next().unwrap().to_string());
            }
            keep.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let addr = addr_rx.recv_timeout(WAIT).expect("the server did not say where it listens");

    let sub = alice.to_string();
    let token = hs256(json!({"sub": sub, "exp": now() + 3600}));
    let fresh = hs256(json!({"sub": sub, "exp": now() + 7200}));
    let forged = sign(
        Header::new(Algorithm::HS256),
        json!({"sub": sub, "exp": now() + 3600}),
        &EncodingKey::from_secret(b"a guess at the secret, 32 bytes or more"),
    );
    let http = reqwest::Client::new();
    for (t, status) in [(&token, 200), (&forged, 401)] {
        let res = http.get(format!("http://{addr}/api/me")).bearer_auth(t).send().await.unwrap();
        assert_eq!(res.status().as_u16(), status);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await.unwrap();
    for t in [&fresh, &forged] {
        ws.send(Message::text(json!({"op": "auth", "token": t}).to_string())).await.unwrap();
        let _ = tokio::time::timeout(WAIT, ws.next()).await;
    }
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = child.kill();
    let _ = child.wait();

    let log = log.lock().unwrap().clone();
    assert!(log.contains("connection opened"), "not the connection's log:\n{log}");
    for secret in [token.as_str(), fresh.as_str(), forged.as_str(), SECRET] {
        for form in std::iter::once(secret).chain(secret.split('.').filter(|p| p.len() > 20)) {
            assert!(!log.contains(form), "the log holds a secret ({form}):\n{log}");
        }
    }
}

#[tokio::test]
async fn a_bad_key_setting_stops_the_start_and_names_its_variable() {
    let db_url = fresh_database(&admin_url()).await;
    for (jwt, variable) in [
        (JwtSettings { secret: Some("too short".into()), ..JwtSettings::default() }, "BOARDCAST_JWT_SECRET"),
        (JwtSettings { public_key: Some(fixture("jwks.json")), ..JwtSettings::default() }, "BOARDCAST_JWT_PUBLIC_KEY"),
        (JwtSettings { jwks: Some(fixture("rsa-public.pem")), ..JwtSettings::default() }, "BOARDCAST_JWT_JWKS"),
        (JwtSettings { jwks: Some(fixture("missing.json")), ..JwtSettings::default() }, "BOARDCAST_JWT_JWKS"),
    ] {
        let mut settings = test_settings(&db_url);
        settings.jwt = jwt;
        let e = boardcast::Application::build(settings).await.err().expect("the start must fail").to_string();
        assert!(e.contains(variable), "{e}");
    }
}

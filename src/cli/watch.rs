//! `boardcast watch`: a terminal client that joins one project's room and prints each event as it arrives.
//! It reconnects on its own and resumes with `since`, so what it prints is gapless across reconnects.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use crate::error::{Error, Result};

pub async fn run(project: Uuid, args: &[&str]) -> Result<()> {
    let mut token = std::env::var("BOARDCAST_TOKEN").ok();
    let mut url = std::env::var("BOARDCAST_URL").ok().unwrap_or_else(|| {
        let addr = std::env::var("BOARDCAST_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
        format!("ws://{addr}/ws")
    });
    let mut since: Option<i64> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value =
            |name: &str| it.next().map(|s| s.to_string()).ok_or_else(|| Error::Usage(format!("{name} needs a value")));
        match *arg {
            "--token" => token = Some(value("--token")?),
            "--url" => url = value("--url")?,
            "--since" => {
                since = Some(value("--since")?.parse().map_err(|_| Error::Usage("--since needs a number".into()))?)
            }
            other => return Err(Error::Usage(format!("unknown option {other}"))),
        }
    }
    let token = token.ok_or_else(|| Error::Usage("no token: pass --token or set BOARDCAST_TOKEN".into()))?;

    // Reconnects follow the recipe in docs/protocol.md: exponential backoff with jitter, reset once a join
    // succeeds, and a resume with `since` and `since_at`.
    let mut backoff = Duration::from_millis(200);
    // The `at` of event `since`: the server checks it is still recorded so (a restored database is not).
    let mut since_at: Option<String> = None;
    loop {
        match session(&url, &token, project, &mut since, &mut since_at).await {
            Ended::Fatal(msg) => return Err(Error::Usage(msg)),
            Ended::Rejoin => continue,
            Ended::Lost { joined } => {
                if joined {
                    backoff = Duration::from_millis(200);
                }
                let wait = backoff + Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 2));
                match since {
                    Some(seq) => eprintln!("# disconnected; reconnecting in {wait:?} and resuming after seq {seq}"),
                    None => eprintln!("# disconnected; reconnecting in {wait:?}"),
                }
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How a connection ended.
enum Ended {
    /// Something reconnecting cannot fix: stop with this message.
    Fatal(String),
    /// The connection was lost (or never made): reconnect with backoff. `joined`: it had joined the room.
    Lost { joined: bool },
    /// The server cannot resume from where we are: join afresh, now.
    Rejoin,
}

async fn session(
    url: &str,
    token: &str,
    project: Uuid,
    since: &mut Option<i64>,
    since_at: &mut Option<String>,
) -> Ended {
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return Ended::Fatal(format!("bad --url {url}: {e}")),
    };
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) if res.status() == 401 => {
            return Ended::Fatal("the server refused the token (401)".into());
        }
        // A wrong path or a server that is not boardcast: retrying will not help. (A proxy's 408 or 429 is a
        // "later", and is retried like a lost connection.)
        Err(tokio_tungstenite::tungstenite::Error::Http(res))
            if res.status().is_client_error() && !matches!(res.status().as_u16(), 408 | 429) =>
        {
            return Ended::Fatal(format!("{url} answered {} (is this boardcast's /ws?)", res.status()));
        }
        Err(e) => {
            eprintln!("# cannot connect to {url}: {e}");
            return Ended::Lost { joined: false };
        }
    };
    let join = json!({"op": "join", "project": project, "since": *since, "since_at": *since_at});
    if ws.send(Message::text(join.to_string())).await.is_err() {
        return Ended::Lost { joined: false };
    }
    let mut joined = false;
    while let Some(msg) = ws.next().await {
        let Ok(Message::Text(text)) = msg else {
            if msg.is_err() {
                break;
            }
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match frame["op"].as_str() {
            Some("event") => {
                let seq = frame["seq"].as_i64().unwrap_or(0);
                if let Some(prev) = *since
                    && seq != prev + 1
                {
                    eprintln!("# GAP: expected seq {} but got {seq}", prev + 1);
                }
                *since = Some(seq);
                *since_at = frame["at"].as_str().map(str::to_string);
                let row = &frame["row"];
                let what = row["title"].as_str().or(row["body"].as_str()).or(row["name"].as_str()).unwrap_or("");
                println!(
                    "#{seq} {} {} {} {}",
                    frame["table"].as_str().unwrap_or("?"),
                    frame["action"].as_str().unwrap_or("?"),
                    row["id"].as_str().or(row["user_id"].as_str()).unwrap_or(""),
                    what
                );
            }
            Some("joined") => {
                joined = true;
                let seq = frame["seq"].as_i64().unwrap_or(0);
                *since = Some(seq);
                *since_at = frame["at"].as_str().map(str::to_string);
                eprintln!("# joined {project} after seq {seq}; waiting for events (Ctrl-C to stop)");
            }
            Some("resync") => {
                eprintln!(
                    "# the server cannot replay after seq {} ({}); joining afresh from its latest seq {}",
                    since.unwrap_or(0),
                    frame["reason"].as_str().unwrap_or("?"),
                    frame["latest"]
                );
                *since = None;
                *since_at = None;
                return Ended::Rejoin;
            }
            // The server could not check membership or read history just now: try again.
            Some("error") if frame["code"] == "unavailable" => {
                eprintln!("# the server is unavailable for now: {}", frame["message"]);
                return Ended::Lost { joined };
            }
            Some("error") => {
                return Ended::Fatal(format!("{}: {}", frame["code"].as_str().unwrap_or(""), frame["message"]));
            }
            Some("left") => return Ended::Fatal(format!("left the room: {}", frame["reason"])),
            _ => println!("{text}"),
        }
    }
    Ended::Lost { joined }
}

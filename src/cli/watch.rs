//! `boardcast watch`: a terminal client that joins one project's room and prints each event as it arrives.
//! It reconnects on its own and resumes with `since`, so what it prints is gapless across reconnects.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::error::{Error, Result};

/// The flags of `boardcast watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The room to join: a project's id, or the room key of one of your tracked tables (docs/tracking.md)
    #[arg(value_name = "ROOM")]
    pub project_id: String,
    /// An API token of a member of the project
    #[arg(long, env = "BOARDCAST_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The server's WebSocket endpoint [default: ws://$BOARDCAST_ADDR/ws, that is ws://127.0.0.1:8080/ws]
    #[arg(long, env = "BOARDCAST_URL", value_name = "ws://HOST:PORT/ws")]
    pub url: Option<String>,
    /// Resume after this seq (events after it are replayed first); without it, start from now
    #[arg(long, value_name = "SEQ")]
    pub since: Option<i64>,
}

pub async fn run(args: WatchArgs) -> Result<()> {
    let url = args.url.unwrap_or_else(|| {
        let addr = std::env::var("BOARDCAST_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
        format!("ws://{addr}/ws")
    });
    let (token, project) = (args.token, args.project_id);

    // Reconnects follow the recipe in docs/protocol.md: exponential backoff with jitter, reset once a join
    // succeeds, and a resume with `since` and `since_at`.
    let mut backoff = Duration::from_millis(200);
    let mut at = Position { since: args.since, since_at: None };
    loop {
        match session(&url, &token, &project, &mut at).await {
            Ended::Fatal(msg) => return Err(Error::Usage(msg)),
            Ended::Rejoin => continue,
            Ended::Lost { joined } => {
                if joined {
                    backoff = Duration::from_millis(200);
                }
                let wait = backoff + Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 2));
                match at.since {
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

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Where the watch is in the project's feed: the last seq seen, and its `at`, which the server checks is
/// still recorded so on a resume (a restored database is not).
struct Position {
    since: Option<i64>,
    since_at: Option<String>,
}

async fn session(url: &str, token: &str, project: &str, at: &mut Position) -> Ended {
    let mut ws = match connect(url, token).await {
        Ok(ws) => ws,
        Err(ended) => return ended,
    };
    let join = json!({"op": "join", "project": project, "since": at.since, "since_at": at.since_at});
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
        if let Some(ended) = on_frame(&text, project, at, &mut joined) {
            return ended;
        }
    }
    Ended::Lost { joined }
}

async fn connect(url: &str, token: &str) -> Result<Socket, Ended> {
    let mut request = url.into_client_request().map_err(|e| Ended::Fatal(format!("bad --url {url}: {e}")))?;
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) if res.status() == 401 => {
            Err(Ended::Fatal("the server refused the token (401)".into()))
        }
        // A wrong path or a server that is not boardcast: retrying will not help. (A proxy's 408 or 429 is a
        // "later", and is retried like a lost connection.)
        Err(tokio_tungstenite::tungstenite::Error::Http(res))
            if res.status().is_client_error() && !matches!(res.status().as_u16(), 408 | 429) =>
        {
            Err(Ended::Fatal(format!("{url} answered {} (is this boardcast's /ws?)", res.status())))
        }
        Err(e) => {
            eprintln!("# cannot connect to {url}: {e}");
            Err(Ended::Lost { joined: false })
        }
    }
}

/// Handles one text frame from the server; `Some` ends the session.
fn on_frame(text: &str, project: &str, at: &mut Position, joined: &mut bool) -> Option<Ended> {
    let frame: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match frame["op"].as_str() {
        Some("event") => {
            let seq = frame["seq"].as_i64().unwrap_or(0);
            if let Some(prev) = at.since
                && seq != prev + 1
            {
                eprintln!("# GAP: expected seq {} but got {seq}", prev + 1);
            }
            at.since = Some(seq);
            at.since_at = frame["at"].as_str().map(str::to_string);
            print_event(seq, &frame);
        }
        Some("joined") => {
            *joined = true;
            let seq = frame["seq"].as_i64().unwrap_or(0);
            at.since = Some(seq);
            at.since_at = frame["at"].as_str().map(str::to_string);
            eprintln!("# joined {project} after seq {seq}; waiting for events (Ctrl-C to stop)");
        }
        Some("resync") => {
            eprintln!(
                "# the server cannot replay after seq {} ({}); joining afresh from its latest seq {}",
                at.since.unwrap_or(0),
                frame["reason"].as_str().unwrap_or("?"),
                frame["latest"]
            );
            at.since = None;
            at.since_at = None;
            return Some(Ended::Rejoin);
        }
        // The server could not check membership or read history just now: try again.
        Some("error") if frame["code"] == "unavailable" => {
            eprintln!("# the server is unavailable for now: {}", frame["message"]);
            return Some(Ended::Lost { joined: *joined });
        }
        Some("error") => {
            return Some(Ended::Fatal(format!("{}: {}", frame["code"].as_str().unwrap_or(""), frame["message"])));
        }
        Some("left") => return Some(Ended::Fatal(format!("left the room: {}", frame["reason"]))),
        _ => println!("{text}"),
    }
    None
}

/// One line per event: `#SEQ TABLE ACTION ID WHAT [by ACTOR]`.
fn print_event(seq: i64, frame: &Value) {
    let row = &frame["row"];
    let what = row["title"].as_str().or(row["body"].as_str()).or(row["name"].as_str()).unwrap_or("");
    println!(
        "#{seq} {} {} {} {} [by {}]",
        frame["table"].as_str().unwrap_or("?"),
        frame["action"].as_str().unwrap_or("?"),
        row["id"].as_str().or(row["user_id"].as_str()).unwrap_or(""),
        what,
        actor(&frame["actor"])
    );
}

/// Who made an event, in a few words: a user's name (or id), or a SQL writer's role and application
/// (`postgres/psql`). Events recorded before events had actors: `?`.
fn actor(actor: &Value) -> String {
    match actor["kind"].as_str() {
        Some("user") => actor["name"].as_str().or(actor["id"].as_str()).unwrap_or("?").to_string(),
        Some("sql") => match actor["application"].as_str() {
            Some(app) if !app.is_empty() => format!("{}/{app}", actor["role"].as_str().unwrap_or("?")),
            _ => actor["role"].as_str().unwrap_or("?").to_string(),
        },
        _ => "?".to_string(),
    }
}

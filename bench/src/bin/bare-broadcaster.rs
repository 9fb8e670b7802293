//! `bare-broadcaster`: the floor boardcast's fan-out is measured against (`boardcast-bench --scenario ceiling`).
//!
//! The least a server can do to relay the feed: one plain LISTEN connection on `boardcast_feed`, WebSocket
//! connections accepted with the same library and socket settings as boardcast, a client joins a room with
//! boardcast's `join` frame, and each notification's event frames are written to the room's sockets, byte
//! for byte what boardcast sends. No cursors, history, limits, pings, authentication or checks: a notification
//! without its frames (a large transaction) is dropped, a client that falls behind the room's buffer skips what
//! it missed, a reconnect of the LISTEN connection is not even attempted. What boardcast costs above this is
//! the price of its guarantees.
//!
//! It starts like `boardcast serve` as far as the bench sees it (DATABASE_URL, BOARDCAST_ADDR, and
//! `listening on http://ADDR` on stderr once it accepts), so the bench runs both the same way. A room's
//! broadcast is a tokio broadcast channel of the frames' shared bytes: per event, one allocation and one send,
//! whatever the number of subscribers; each connection drains what is ready and flushes once, as boardcast's
//! sessions do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::poll_fn;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Messages a room's broadcast buffers for subscribers that are behind: boardcast's default `room_buffer`.
const ROOM_BUFFER: usize = 4096;

/// A room: its broadcast (from its first join on), and the seq of its last event (what `joined` tells a new
/// subscriber; read and written under the registry's lock, so a join never falls between two events).
struct Room {
    frames: Option<broadcast::Sender<Utf8Bytes>>,
    latest: i64,
}

type Rooms = Arc<Mutex<HashMap<String, Room>>>;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("bare-broadcaster: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let addr = std::env::var("BOARDCAST_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let (client, mut connection) = tokio_postgres::connect(&url, NoTls).await.map_err(|e| e.to_string())?;
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = m
                && notes_tx.send(n).is_err()
            {
                return;
            }
        }
        eprintln!("bare-broadcaster: the LISTEN connection ended");
    });
    client.batch_execute("LISTEN boardcast_feed").await.map_err(|e| e.to_string())?;
    // Where each room stands now; from here on, the notifications say.
    let rooms: Rooms = Arc::default();
    for row in client.query("SELECT room, last_seq FROM feed_seq", &[]).await.map_err(|e| e.to_string())? {
        let room = Room { frames: None, latest: row.get(1) };
        rooms.lock().unwrap().insert(row.get(0), room);
    }
    let relay = rooms.clone();
    tokio::spawn(async move {
        while let Some(n) = notes.recv().await {
            relay_notification(&relay, n.payload());
        }
    });

    let listener = TcpListener::bind(&addr).await.map_err(|e| format!("{addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("bare-broadcaster listening on http://{local}");
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        tokio::spawn(connection_task(stream, rooms.clone()));
    }
}

/// `<first seq> <last seq> <room>[\n<frame>\n<frame>...]` (see sql/functions/feed.sql): the frames, one per
/// seq, go to the room's subscribers as they are.
fn relay_notification(rooms: &Rooms, payload: &str) {
    let (header, frames) = payload.split_once('\n').unwrap_or((payload, ""));
    let mut parts = header.splitn(3, ' ');
    let (Some(first), Some(last), Some(room)) = (parts.next(), parts.next(), parts.next()) else { return };
    let (Ok(first), Ok(last)) = (first.parse::<i64>(), last.parse::<i64>()) else { return };
    if frames.is_empty() {
        return; // too large to travel inline: only history has it, and there is no history here
    }
    let mut rooms = rooms.lock().unwrap();
    let Some(room) = rooms.get_mut(room) else { return };
    for (frame, seq) in frames.split('\n').zip(first..=last) {
        if let Some(subscribers) = &room.frames {
            let _ = subscribers.send(Utf8Bytes::from(frame.to_owned()));
        }
        room.latest = seq;
    }
}

/// boardcast's socket settings (src/feed/upgrade.rs): a small read buffer, up to 8 KiB of frames gathered per
/// write.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

async fn connection_task(stream: TcpStream, rooms: Rooms) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(socket_config())).await else {
        return;
    };
    let mut subscription: Option<broadcast::Receiver<Utf8Bytes>> = None;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = join(&rooms, &text, &mut subscription)
                        && ws.send(Message::text(reply)).await.is_err()
                    {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            frame = next_frame(&mut subscription) => match frame {
                Ok(frame) => {
                    if ws.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                    // Whatever else is ready goes out in the same write.
                    while let Some(Ok(frame)) = subscription.as_mut().map(|s| s.try_recv()) {
                        if ws.feed(Message::Text(frame)).await.is_err() {
                            return;
                        }
                    }
                    if ws.flush().await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The next frame of the room joined, or never if none is.
async fn next_frame(
    subscription: &mut Option<broadcast::Receiver<Utf8Bytes>>,
) -> Result<Utf8Bytes, broadcast::error::RecvError> {
    match subscription {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// `{"op":"join","project":"<room>"}`: subscribes (one room per connection) and returns the `joined` frame, with
/// the seq of the last event sent into the room.
fn join(rooms: &Rooms, text: &str, subscription: &mut Option<broadcast::Receiver<Utf8Bytes>>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Join {
        op: String,
        project: String,
    }
    let request: Join = serde_json::from_str(text).ok()?;
    if request.op != "join" {
        return None;
    }
    let mut rooms = rooms.lock().unwrap();
    let room = rooms.entry(request.project.clone()).or_insert(Room { frames: None, latest: 0 });
    let frames = room.frames.get_or_insert_with(|| broadcast::channel(ROOM_BUFFER).0);
    *subscription = Some(frames.subscribe());
    let project = serde_json::to_string(&request.project).ok()?;
    Some(format!(r#"{{"op":"joined","project":{project},"seq":{}}}"#, room.latest))
}

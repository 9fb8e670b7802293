//! The listener: one task, one dedicated connection, LISTENing on `boardcast_feed`, `boardcast_auth` and
//! `boardcast_recheck` and `boardcast_signal` (presence and broadcasts, see [`super::presence`]).
//!
//! Pooled connections are no use here: a pool hands connections out and takes them back, and
//! notifications that arrive while nobody polls the connection are dropped. This task owns its connection
//! and drives it itself with `poll_message`, so every notification is seen.
//!
//! NOTIFY is fire-and-forget: while this connection is down, notifications are lost. That costs nothing
//! because every event is also recorded: after reconnecting (with backoff) and LISTENing again, the listener
//! tells every room the latest recorded seq of its project, and the rooms read what they missed from history.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::poll_fn;
use tokio::sync::mpsc;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Notification, Socket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::Feed;
use super::announcement::Announcement;
use super::history::Reader;
use super::room_key::RoomKey;
use crate::db::pg_config;
use crate::error::chain;
use crate::metrics;

pub(crate) async fn run(feed: Arc<Feed>, database_url: String, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&feed, &database_url, &shutdown) => r,
        };
        feed.listener_up.store(false, Ordering::SeqCst);
        feed.presence.disconnected();
        match outcome {
            Ok(()) => return, // shut down
            Err(Lost { after_listening, reason }) => {
                if after_listening {
                    backoff = Duration::from_millis(100);
                }
                tracing::warn!("listener connection lost ({reason}); reconnecting in {backoff:?}");
                metrics::listener_reconnecting();
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

struct Lost {
    after_listening: bool,
    reason: String,
}

fn lost(after_listening: bool, reason: impl ToString) -> Lost {
    Lost { after_listening, reason: reason.to_string() }
}

/// One connection's life: connect, LISTEN, catch the rooms up, then relay notifications until it fails.
async fn session(feed: &Arc<Feed>, database_url: &str, shutdown: &CancellationToken) -> Result<(), Lost> {
    let probe = feed.settings.listener_probe;
    let (client, connection) = connect(database_url, probe).await?;
    // Aborted when this function returns, however it returns.
    let (mut notes, mut driver) = drive(connection);

    client
        .batch_execute(
            "LISTEN boardcast_feed; LISTEN boardcast_auth; LISTEN boardcast_recheck; LISTEN boardcast_signal",
        )
        .await
        .map_err(|e| lost(false, chain(&e)))?;
    catch_up(feed).await?;
    // Presence messages sent while we were away are lost too: every server is asked for its full state.
    feed.presence.reconnected();
    feed.listener_up.store(true, Ordering::SeqCst);
    tracing::info!("listener connected and listening");

    let mut probe_every = tokio::time::interval(probe);
    probe_every.tick().await;
    // The join rule may read anything the app keeps: rooms ask it again now and then, whatever happens.
    let mut recheck_every = tokio::time::interval(feed.settings.access_recheck.max(Duration::from_millis(100)));
    recheck_every.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = notes.recv() => match n {
                Some(n) => relay(feed, n.channel(), n.payload()),
                None => {
                    // The driver has ended; it says why.
                    let reason = (&mut driver).await.unwrap_or_else(|e| e.to_string());
                    return Err(lost(true, reason));
                }
            },
            _ = recheck_every.tick(), if !feed.settings.access_recheck.is_zero() => feed.rooms.recheck(None),
            _ = probe_every.tick() => {
                match tokio::time::timeout(probe, client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(lost(true, e)),
                    Err(_) => return Err(lost(true, format!("no answer to a probe within {probe:?}"))),
                }
            }
        }
    }
}

async fn connect(database_url: &str, probe: Duration) -> Result<(Client, Connection<Socket, NoTlsStream>), Lost> {
    let mut config = pg_config(database_url).map_err(|e| lost(false, e))?;
    // Named, so an operator can find it in pg_stat_activity (and tests can cut it).
    config.application_name("boardcast-listener");
    // `connect_timeout` covers only the TCP connect: a server (or a middlebox) that accepts and then says
    // nothing would hold the listener here forever, so the whole handshake gets a deadline.
    match tokio::time::timeout(probe * 2, config.connect(NoTls)).await {
        Ok(connected) => connected.map_err(|e| lost(false, chain(&e))),
        Err(_) => Err(lost(false, format!("no answer to the connection handshake within {:?}", probe * 2))),
    }
}

/// Drives the connection in a task of its own: forwards notifications, and ends, saying why, when the
/// connection does.
fn drive(
    mut connection: Connection<Socket, NoTlsStream>,
) -> (mpsc::UnboundedReceiver<Notification>, AbortOnDropHandle<String>) {
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if notes_tx.send(n).is_err() {
                        return "listener stopped".to_string();
                    }
                }
                Some(Ok(_)) => {} // notices
                Some(Err(e)) => return chain(&e),
                None => return "connection closed".to_string(),
            }
        }
    });
    (notes, AbortOnDropHandle::new(driver))
}

/// Anything committed from now on is announced to us. Anything committed before, while we were away, is in
/// history: tells each room how far its project has got.
async fn catch_up(feed: &Feed) -> Result<(), Lost> {
    let projects = feed.rooms.projects();
    if !projects.is_empty() {
        let latest = feed.history.latest(Reader::Room, &projects).await.map_err(|e| lost(true, e))?;
        for (project, seq) in latest {
            feed.rooms.announce_latest(&project, seq);
        }
    }
    // So are `boardcast.recheck` calls: every room asks the join rule again.
    feed.rooms.recheck(None);
    // Token revocations announced while we were away are lost too: every session re-checks its token. (With
    // no session listening, there is nobody to tell.)
    let _ = feed.revoked_tokens.send(Uuid::nil());
    Ok(())
}

fn relay(feed: &Feed, channel: &str, payload: &str) {
    metrics::notification(channel, payload);
    match channel {
        "boardcast_feed" => match Announcement::parse(payload) {
            Some(a) => feed.rooms.announce(&a),
            None => tracing::warn!("ignoring a malformed feed notification: {:.80}", payload),
        },
        "boardcast_signal" => feed.presence.receive(payload),
        "boardcast_recheck" if payload.is_empty() => feed.rooms.recheck(None),
        "boardcast_recheck" => match RoomKey::parse(payload) {
            Ok(room) => feed.rooms.recheck(Some(&room)),
            Err(_) => tracing::warn!("ignoring a recheck of a malformed room key: {:.80}", payload),
        },
        "boardcast_auth" => {
            if let Ok(token) = payload.parse() {
                let _ = feed.revoked_tokens.send(token); // nobody listening: nobody to close
            }
        }
        _ => {}
    }
}

//! The listener: one task, one dedicated connection, LISTENing on `boardcast_feed` and `boardcast_auth`.
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
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::Feed;
use super::event::parse_announcement;
use crate::db::pg_config;
use crate::error::chain;

pub async fn run(feed: Arc<Feed>, database_url: String, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&feed, &database_url, &shutdown) => r,
        };
        feed.listener_up.store(false, Ordering::SeqCst);
        match outcome {
            Ok(()) => return, // shut down
            Err(Lost { after_listening, reason }) => {
                if after_listening {
                    backoff = Duration::from_millis(100);
                }
                tracing::warn!("listener connection lost ({reason}); reconnecting in {backoff:?}");
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
    let mut config = pg_config(database_url).map_err(|e| lost(false, e))?;
    // Named, so an operator can find it in pg_stat_activity (and tests can cut it).
    config.application_name("boardcast-listener");
    // `connect_timeout` covers only the TCP connect: a server (or a middlebox) that accepts and then says
    // nothing would hold the listener here forever, so the whole handshake gets a deadline.
    let probe = feed.settings.listener_probe;
    let (client, mut connection) = match tokio::time::timeout(probe * 2, config.connect(NoTls)).await {
        Ok(connected) => connected.map_err(|e| lost(false, chain(&e)))?,
        Err(_) => return Err(lost(false, format!("no answer to the connection handshake within {:?}", probe * 2))),
    };

    // Drive the connection: forward notifications, end when the connection does.
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let mut driver = tokio::spawn(async move {
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
    let _abort_driver = AbortOnDrop(driver.abort_handle());

    client.batch_execute("LISTEN boardcast_feed; LISTEN boardcast_auth").await.map_err(|e| lost(false, chain(&e)))?;
    // Anything committed from here on is announced to us. Anything committed before, while we were away, is
    // in history: tell each room how far its project has got.
    let projects = feed.rooms.projects();
    if !projects.is_empty() {
        let latest = feed.history.latest(super::history::Reader::Room, &projects).await.map_err(|e| lost(true, e))?;
        for (project, seq) in latest {
            feed.rooms.announce_latest(project, seq);
        }
    }
    // Token revocations announced while we were away are lost too: every session re-checks its token.
    let _ = feed.revoked_tokens.send(uuid::Uuid::nil());
    feed.listener_up.store(true, Ordering::SeqCst);
    tracing::info!("listener connected and listening");

    let mut probe_every = tokio::time::interval(probe);
    probe_every.tick().await;
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

fn relay(feed: &Feed, channel: &str, payload: &str) {
    match channel {
        "boardcast_feed" => match parse_announcement(payload) {
            Some(a) => feed.rooms.announce(&a),
            None => tracing::warn!("ignoring a malformed feed notification: {:.80}", payload),
        },
        "boardcast_auth" => {
            if let Ok(token) = payload.parse() {
                let _ = feed.revoked_tokens.send(token);
            }
        }
        _ => {}
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

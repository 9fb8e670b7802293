//! The outbox: one task, one dedicated connection, sending this server's messages to the others as few
//! notifications as possible; also the heartbeat, and the check for servers gone silent.
//!
//! It gathers messages for up to `BOARDCAST_SIGNAL_LINGER_MS` (5 ms) after the first, then sends them, packed
//! into payloads of up to 7,800 bytes, in one statement (one commit, so one turn of NOTIFY's commit lock,
//! however many notifications). Messages that arrive meanwhile go in the next batch. A server with nothing to
//! say sends a heartbeat every quarter of the presence timeout, so it is never silent for half of it. One task
//! and one connection, each batch committed before the next: the other servers receive this server's messages
//! in the order it sent them.
//!
//! When the connection fails, what was being sent is lost (broadcasts are at most once), and once connected
//! again the outbox first sends this server's full state, since the others may have given it up meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::wire::{self, MAX_PAYLOAD, Message};
use super::{Outgoing, Presence};
use crate::db::pg_config;
use crate::error::chain;

/// Payloads one statement sends at most.
const PAYLOADS_PER_BATCH: usize = 16;

/// Runs until `shutdown`; then tells the other servers this one is gone.
pub(crate) async fn run(presence: Arc<Presence>, database_url: String, shutdown: CancellationToken) {
    let Some(mut rx) = presence.outbox_rx.lock().unwrap().take() else { return };
    let mut outbox = Outbox { presence, database_url, client: None, batch: 0, backoff: Duration::from_millis(100) };
    let beat = (outbox.presence.timeout / 4).max(Duration::from_millis(100));
    let mut heartbeat = tokio::time::interval(beat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Silent servers are looked for every second (or more often, with a short timeout): a dead server's
    // entries go within the timeout and a second of its last message.
    let mut sweep = tokio::time::interval(beat.min(Duration::from_secs(1)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent_at = Instant::now();
    loop {
        let lines = tokio::select! {
            _ = shutdown.cancelled() => break,
            first = rx.recv() => match first {
                Some(first) => outbox.gather(first, &mut rx).await,
                None => break,
            },
            _ = sweep.tick() => {
                outbox.presence.drop_silent();
                continue;
            }
            _ = heartbeat.tick() => {
                if sent_at.elapsed() < beat {
                    continue;
                }
                vec![wire::line(&Message::Heartbeat)]
            }
        };
        let lost = outbox.presence.lost.load(Ordering::Relaxed);
        // A full state goes after what was gathered: it is newer. (Lines still queued are older than it, and
        // each entry's last one says what the state says, so sending them after it changes nothing.)
        let lines = if lost { lines.into_iter().chain(outbox.presence.sync_lines()).collect() } else { lines };
        if outbox.send(lines, &shutdown).await {
            sent_at = Instant::now();
        }
    }
    // Shutting down: the others drop this server's entries now rather than after the timeout.
    if outbox.client.is_some() {
        let bye = vec![wire::line(&Message::Bye)];
        let _ = tokio::time::timeout(Duration::from_secs(1), outbox.send(bye, &CancellationToken::new())).await;
    }
}

struct Outbox {
    presence: Arc<Presence>,
    database_url: String,
    client: Option<Client>,
    batch: u64,
    backoff: Duration,
}

impl Outbox {
    /// `first` and whatever else arrives within the linger, as lines, up to what one statement sends.
    async fn gather(&mut self, first: Outgoing, rx: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let budget = MAX_PAYLOAD * PAYLOADS_PER_BATCH;
        let mut lines = Vec::new();
        let presence = &self.presence;
        let add = |o: Outgoing, lines: &mut Vec<String>| -> usize {
            match o {
                Outgoing::Line(l) => {
                    let n = wire::cost(&l);
                    lines.push(l);
                    n
                }
                Outgoing::Sync => {
                    let sync = presence.sync_lines();
                    let n = sync.iter().map(|l| wire::cost(l)).sum::<usize>();
                    lines.extend(sync);
                    n
                }
            }
        };
        let mut bytes = add(first, &mut lines);
        let deadline = Instant::now() + self.presence.linger;
        while bytes < budget {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(o)) => bytes += add(o, &mut lines),
                _ => break,
            }
        }
        lines
    }

    /// Sends `lines`, connecting first if need be (and then sending this server's full state first).
    /// Returns whether they were sent; if not, they are dropped, and the connection will be made again.
    async fn send(&mut self, lines: Vec<String>, shutdown: &CancellationToken) -> bool {
        let lines = if self.client.is_none() {
            match self.connect(shutdown).await {
                // Connected again: the others may have given this server up meanwhile.
                true => lines.into_iter().chain(self.presence.sync_lines()).collect(),
                false => return false,
            }
        } else {
            lines
        };
        let payloads = self.pack(&lines);
        let client = self.client.as_ref().unwrap();
        let sent = client
            .query_one(
                "SELECT count(pg_notify('boardcast_signal', p)) FROM unnest($1::text[]) WITH ORDINALITY AS t(p, i)",
                &[&payloads],
            )
            .await;
        match sent {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("presence: cannot send signals ({}); reconnecting", chain(&e));
                self.client = None;
                false
            }
        }
    }

    /// Packs lines into payloads of at most [`MAX_PAYLOAD`] bytes, in order.
    fn pack(&mut self, lines: &[String]) -> Vec<String> {
        let mut payloads = Vec::new();
        let mut start = 0;
        while start < lines.len() {
            let mut end = start;
            let mut bytes = 40; // the header
            while end < lines.len() && (end == start || bytes + wire::cost(&lines[end]) <= MAX_PAYLOAD) {
                bytes += wire::cost(&lines[end]);
                end += 1;
            }
            self.batch += 1;
            payloads.push(wire::payload(self.presence.server, self.batch, &lines[start..end]));
            start = end;
        }
        payloads
    }

    /// Connects, or waits before the next try (100 ms doubling to 5 s). Returns whether it is connected.
    async fn connect(&mut self, shutdown: &CancellationToken) -> bool {
        let connecting = async {
            let mut config = pg_config(&self.database_url).map_err(|e| e.to_string())?;
            config.application_name("boardcast-signals");
            let (client, connection) =
                tokio::time::timeout(Duration::from_secs(10), config.connect(tokio_postgres::NoTls))
                    .await
                    .map_err(|_| "no answer to the connection handshake within 10s".to_string())?
                    .map_err(|e| chain(&e))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            // A transaction that NOTIFYs holds the database-wide notify lock until its commit is done; with
            // synchronous_commit on, that includes the WAL flush, during which no other writer of the feed can
            // commit. Signals are not records (nothing is lost that a crash would not lose anyway), so they
            // need not wait for the disk.
            client.batch_execute("SET synchronous_commit = off").await.map_err(|e| chain(&e))?;
            Ok::<_, String>(client)
        };
        match connecting.await {
            Ok(client) => {
                self.client = Some(client);
                self.backoff = Duration::from_millis(100);
                true
            }
            Err(e) => {
                tracing::warn!("presence: cannot connect to send signals ({e}); retrying in {:?}", self.backoff);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.backoff) => {}
                }
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                false
            }
        }
    }
}

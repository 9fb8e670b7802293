//! How a room notices that the database's history no longer continues what it broadcast: after a restore
//! from a backup (or a reset of the feed's tables) the seqs after the restore point belong to other events.
//!
//! The room remembers the last event it sent ([`LastSent`]) and compares it with what history records now.

use crate::feed::room_key::RoomKey;
use std::hash::{DefaultHasher, Hash, Hasher};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::held::LARGE_FRAME;
use crate::feed::event::Event;
use crate::feed::history::{History, PAGE_BYTES, Reader};

/// The seq and a fingerprint of the last event a room sent.
pub(super) struct LastSent {
    seq: i64,
    fingerprint: Fingerprint,
}

impl LastSent {
    pub fn of(seq: i64, frame: &Utf8Bytes) -> LastSent {
        LastSent { seq, fingerprint: Fingerprint::of(frame) }
    }

    /// Event `seq` as history records it now (`None` if it does not, for seq 0, or if it cannot be read: then
    /// there is simply less to compare with).
    pub async fn recorded(history: &History, project: &RoomKey, seq: i64) -> Option<LastSent> {
        let event = recorded_event(history, project, seq).await.ok()??;
        Some(LastSent::of(seq, &event.frame))
    }
}

/// What a room remembers of the last frame it sent: a small frame itself (another reference to the same bytes,
/// nothing copied), a large one only by hash, so that no room keeps a large frame alive for this.
enum Fingerprint {
    Frame(Utf8Bytes),
    Hash(u64),
}

impl Fingerprint {
    fn of(frame: &Utf8Bytes) -> Fingerprint {
        if frame.len() < LARGE_FRAME { Fingerprint::Frame(frame.clone()) } else { Fingerprint::Hash(hash(frame)) }
    }

    fn matches(&self, frame: &Utf8Bytes) -> bool {
        match self {
            Fingerprint::Frame(f) => f == frame,
            Fingerprint::Hash(h) => *h == hash(frame),
        }
    }
}

fn hash(frame: &Utf8Bytes) -> u64 {
    let mut h = DefaultHasher::new();
    frame.as_str().hash(&mut h);
    h.finish()
}

/// Whether the database's history of `project` no longer continues what the room sent: its latest seq is
/// below the room's, or the last event the room sent is recorded differently now. (A missing event alone
/// proves nothing: retention by age may have removed it.) `None`: history could not be read.
pub(super) async fn rewound(
    history: &History,
    project: &RoomKey,
    delivered: i64,
    latest: i64,
    last_sent: Option<&LastSent>,
) -> Option<bool> {
    if latest < delivered {
        // `latest` was read when the listener reconnected; a room that started after that read may have
        // read a later one itself. Only a fresh read below what the room sent is a rewind.
        match history.latest(Reader::Room, std::slice::from_ref(project)).await {
            Ok(v) if v.first().map_or(0, |x| x.1) < delivered => return Some(true),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%project, "room cannot read its latest seq to check it: {e}");
                return None;
            }
        }
    }
    let Some(sent) = last_sent else { return Some(false) };
    match recorded_event(history, project, sent.seq).await {
        Ok(event) => Some(event.is_some_and(|e| !sent.fingerprint.matches(&e.frame))),
        Err(e) => {
            tracing::warn!(%project, "room cannot read history to check it: {e}");
            None
        }
    }
}

/// Event `seq` of `project` as history records it now (`None` if it does not, or for seq 0).
async fn recorded_event(history: &History, project: &RoomKey, seq: i64) -> crate::error::Result<Option<Event>> {
    if seq <= 0 {
        return Ok(None);
    }
    let events = history.read(Reader::Room, project, seq - 1, seq, 1, PAGE_BYTES).await?;
    Ok(events.into_iter().next().filter(|e| e.seq == seq))
}

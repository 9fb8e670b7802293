//! Grouped delivery (`join` with `"group":"tx"`): a room's events sent as one `tx` frame per transaction, so a
//! client applies a 40-task reorder as one unit instead of rendering it 40 times.
//!
//! The events are the same frames (the trigger's bytes, shared); a `tx` frame only wraps them. A transaction
//! ends at its event marked `"last":true` (marked once, when it commits: see sql/functions/feed.sql), so the
//! session needs nothing but the frames it delivers anyway, live or from history, in seq order. What it holds
//! while a transaction is open is bounded: at most [`PART_EVENTS`] events or about [`PART_BYTES`] bytes, then
//! it sends what it has as a part (`"complete":false`) and goes on; the part that ends the transaction says
//! `"complete":true`. A part that does not begin at its transaction's first event (a later part, or the first
//! after a resume whose `since` fell inside a transaction) says `"continued":true`.

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::feed::event::tx_marks;
use crate::feed::room_key::RoomKey;

/// The most events one `tx` frame holds.
pub(super) const PART_EVENTS: usize = 1000;
/// About the most bytes of event frames one `tx` frame holds (at least one event).
pub(super) const PART_BYTES: usize = 256 * 1024;

/// One room's grouping, for one session.
pub(super) struct TxGroup {
    /// Whether the last event handed over ended its transaction: the next one begins one.
    at_boundary: bool,
    part: Option<Part>,
}

/// The events of the current transaction not sent yet.
struct Part {
    tx: String,
    actor: String,
    first_seq: i64,
    last_seq: i64,
    continued: bool,
    frames: Vec<Utf8Bytes>,
    bytes: usize,
}

impl TxGroup {
    /// `at_boundary`: whether the client's starting point (its `since`, or the room's latest event) ended its
    /// transaction.
    pub fn new(at_boundary: bool) -> TxGroup {
        TxGroup { at_boundary, part: None }
    }

    /// Takes the next event of the room (in seq order) and appends to `out` the frames to send now: none while
    /// its transaction goes on, a `tx` frame when it ends or a part is full. An event recorded before events
    /// had transactions goes out alone, as its `event` frame.
    pub fn push(&mut self, project: &RoomKey, seq: i64, frame: Utf8Bytes, out: &mut Vec<Utf8Bytes>) {
        let Some(marks) = tx_marks(&frame) else {
            self.flush(project, false, out);
            self.at_boundary = true;
            out.push(frame);
            return;
        };
        if self.part.as_ref().is_some_and(|p| p.tx != marks.tx) {
            // The previous transaction's last event never came (it was recorded without the mark).
            self.flush(project, false, out);
            self.at_boundary = true;
        }
        let last = marks.last;
        let part = self.part.get_or_insert_with(|| Part {
            tx: marks.tx.to_string(),
            actor: marks.actor.to_string(),
            first_seq: seq,
            last_seq: seq,
            continued: !self.at_boundary,
            frames: Vec::new(),
            bytes: 0,
        });
        part.last_seq = seq;
        part.bytes += frame.len() + 1;
        part.frames.push(frame);
        self.at_boundary = last;
        if last {
            self.flush(project, true, out);
        } else if part.frames.len() >= PART_EVENTS || part.bytes >= PART_BYTES {
            self.flush(project, false, out);
        }
    }

    /// Sends what is held (an incomplete part), before something else that must follow it: the client leaving
    /// the room.
    pub fn flush_held(&mut self, project: &RoomKey, out: &mut Vec<Utf8Bytes>) {
        self.flush(project, false, out);
    }

    fn flush(&mut self, project: &RoomKey, complete: bool, out: &mut Vec<Utf8Bytes>) {
        let Some(part) = self.part.take() else { return };
        let room = serde_json::to_string(project).unwrap_or_default();
        let mut text = String::with_capacity(part.bytes + part.actor.len() + room.len() + 160);
        text.push_str("{\"op\":\"tx\",\"project\":");
        text.push_str(&room);
        text.push_str(",\"tx\":\"");
        text.push_str(&part.tx);
        text.push_str("\",\"actor\":");
        text.push_str(&part.actor);
        text.push_str(&format!(",\"first_seq\":{},\"last_seq\":{},\"events\":[", part.first_seq, part.last_seq));
        for (i, frame) in part.frames.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(frame);
        }
        text.push_str(if complete { "],\"complete\":true" } else { "],\"complete\":false" });
        if part.continued {
            text.push_str(",\"continued\":true");
        }
        text.push('}');
        out.push(text.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: i64, tx: &str, last: bool) -> Utf8Bytes {
        let end = if last { ",\"last\":true}" } else { "}" };
        format!(
            r#"{{"op":"event","project":"r","seq":{seq},"table":"t","action":"insert","tx":"{tx}","actor":{{"kind":"sql","role":"postgres","application":"psql"}},"row":{{"n": {seq}}},"at":"x"{end}"#
        )
        .into()
    }

    fn parsed(out: &[Utf8Bytes]) -> Vec<serde_json::Value> {
        out.iter().map(|f| serde_json::from_str(f).expect("valid JSON")).collect()
    }

    #[test]
    fn a_transaction_goes_out_as_one_frame_when_its_last_event_comes() {
        let room = RoomKey::parse("r").unwrap();
        let mut g = TxGroup::new(true);
        let mut out = Vec::new();
        g.push(&room, 1, frame(1, "7", false), &mut out);
        g.push(&room, 2, frame(2, "7", false), &mut out);
        assert!(out.is_empty());
        g.push(&room, 3, frame(3, "7", true), &mut out);
        g.push(&room, 4, frame(4, "8", true), &mut out);
        let frames = parsed(&out);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0]["op"], "tx");
        assert_eq!(frames[0]["tx"], "7");
        assert_eq!(frames[0]["actor"]["application"], "psql");
        assert_eq!((frames[0]["first_seq"].as_i64(), frames[0]["last_seq"].as_i64()), (Some(1), Some(3)));
        assert_eq!(frames[0]["events"].as_array().unwrap().len(), 3);
        assert_eq!(frames[0]["complete"], true);
        assert_eq!(frames[0].get("continued"), None);
        assert_eq!(frames[1]["events"][0]["seq"], 4);
    }

    #[test]
    fn a_large_transaction_comes_in_bounded_parts_and_a_resume_inside_one_says_so() {
        let room = RoomKey::parse("r").unwrap();
        let mut g = TxGroup::new(false);
        let mut out = Vec::new();
        let n = PART_EVENTS as i64 * 2 + 5;
        for seq in 1..=n {
            g.push(&room, seq, frame(seq, "9", seq == n), &mut out);
        }
        let frames = parsed(&out);
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f["continued"] == true), "the first part began inside the transaction");
        assert_eq!(frames.iter().map(|f| f["complete"] == true).collect::<Vec<_>>(), [false, false, true]);
        assert_eq!(frames[1]["first_seq"], PART_EVENTS as i64 + 1);
        let sizes: Vec<usize> = frames.iter().map(|f| f["events"].as_array().unwrap().len()).collect();
        assert_eq!(sizes, [PART_EVENTS, PART_EVENTS, 5]);
    }
}

//! An event as PostgreSQL records it: its seq and the JSON frame the trigger built (see sql/functions/feed.sql).
//!
//! The frame (`{"op":"event",...}`) is built once, by the trigger, and is forwarded to every subscriber as the
//! same reference-counted bytes: per-event work is done once, never per subscriber. Its keys come in a fixed
//! order (op, project, seq, table, action, tx, actor, row, [old], at, [last]), so what the server needs to know
//! about an event is read from the frame's text at known places, without parsing it.

use std::time::Instant;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub seq: i64,
    pub frame: Utf8Bytes,
    /// Set when this event removes a member from the project: that user's connections leave the room.
    pub removed_member: Option<Uuid>,
    /// When the listener received it (`None`: read from history), for the listener → socket latency.
    pub heard: Option<Instant>,
}

impl Event {
    pub fn new(seq: i64, frame: String) -> Event {
        let removed_member = removed_member(&frame);
        Event { seq, frame: frame.into(), removed_member, heard: None }
    }
}

/// `Some(user)` for a `project_members` delete. The frame's fixed key order (op, project, seq, table,
/// action, row) lets almost every event be ruled out by a look at its first bytes.
fn removed_member(frame: &str) -> Option<Uuid> {
    let head = &frame.as_bytes()[..frame.len().min(160)];
    let needle = b"\"table\":\"project_members\",\"action\":\"delete\"";
    if !head.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Member {
        user_id: Uuid,
    }
    #[derive(serde::Deserialize)]
    struct Frame {
        row: Member,
    }
    serde_json::from_str::<Frame>(frame).ok().map(|f| f.row.user_id)
}

/// What a frame says of its transaction: its id, who made it (the `actor` object, as JSON text), and whether
/// this is the transaction's last event in the room.
#[derive(Debug, PartialEq)]
pub(crate) struct TxMarks<'a> {
    pub tx: &'a str,
    pub actor: &'a str,
    pub last: bool,
}

/// The transaction marks of a frame; `None` for an event recorded before events had them. Found by their keys'
/// text: inside a JSON string every `"` is escaped, so `,"tx":"` and `,"row":` can only be the keys themselves
/// (the room and table, the only strings before them, cannot hold them).
pub(crate) fn tx_marks(frame: &str) -> Option<TxMarks<'_>> {
    const TX: &str = ",\"tx\":\"";
    let start = frame.find(TX)? + TX.len();
    let len = frame[start..].find('"')?;
    let tx = &frame[start..start + len];
    let actor = frame[start + len + 1..].strip_prefix(",\"actor\":")?;
    let actor = &actor[..actor.find(",\"row\":")?];
    Some(TxMarks { tx, actor, last: frame.ends_with(",\"last\":true}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_names_its_transaction_and_actor_and_whether_it_is_the_last() {
        let f = r#"{"op":"event","project":"a \",\"tx\":\"9","seq":3,"table":"t","action":"insert","tx":"741","actor":{"kind":"user","id":"u","name":"A \",\"row\":"},"row":{"x": ",\"last\":true}"},"at":"2026-11-30T00:00:00+00:00"}"#;
        let m = tx_marks(f).unwrap();
        assert_eq!(m.tx, "741");
        assert_eq!(m.actor, r#"{"kind":"user","id":"u","name":"A \",\"row\":"}"#);
        assert!(!m.last);
        let last = format!("{},\"last\":true}}", &f[..f.len() - 1]);
        assert!(tx_marks(&last).unwrap().last);
        let old = r#"{"op":"event","project":"p","seq":1,"table":"t","action":"insert","row":{},"at":"x"}"#;
        assert_eq!(tx_marks(old), None);
    }

    #[test]
    fn a_member_removal_names_the_user() {
        let u = Uuid::new_v4();
        let f = format!(
            "{{\"op\":\"event\",\"project\":\"{p}\",\"seq\":1,\"table\":\"project_members\",\"action\":\"delete\",\"row\":{{\"role\": \"member\", \"user_id\": \"{u}\", \"project_id\": \"{p}\"}}}}",
            p = Uuid::new_v4()
        );
        assert_eq!(removed_member(&f), Some(u));
        assert_eq!(removed_member(&f.replace("delete", "insert")), None);
    }
}

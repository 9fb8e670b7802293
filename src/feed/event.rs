//! An event as PostgreSQL records it: its seq and the JSON frame the trigger built (see sql/functions/feed.sql).
//!
//! The frame (`{"op":"event",...}`) is built once, by the trigger, and is forwarded to every subscriber as the
//! same reference-counted bytes: per-event work is done once, never per subscriber.

use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

#[derive(Debug)]
pub(crate) struct Event {
    pub seq: i64,
    pub frame: Utf8Bytes,
    /// Set when this event removes a member from the project: that user's connections leave the room.
    pub removed_member: Option<Uuid>,
}

impl Event {
    pub fn new(seq: i64, frame: String) -> Event {
        let removed_member = removed_member(&frame);
        Event { seq, frame: frame.into(), removed_member }
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

#[cfg(test)]
mod tests {
    use super::*;

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

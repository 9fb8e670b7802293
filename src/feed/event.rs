//! An event as it travels from PostgreSQL to the clients.
//!
//! The frame (`{"op":"event",...}`) is built once by the trigger (see sql/functions/feed.sql) and is forwarded to
//! every subscriber as the same reference-counted bytes: per-event work is done once, never per subscriber.

use std::sync::{Arc, Weak};

use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

#[derive(Debug)]
pub struct Event {
    pub project: Uuid,
    pub seq: i64,
    /// The frame, unless it is held by the room (`held`).
    pub frame: Utf8Bytes,
    /// A large frame, held by its room while its subscribers may still need it, within a byte budget (see
    /// `room`). Gone means this subscriber is too far behind: it reads the event from history instead.
    pub held: Option<Weak<Utf8Bytes>>,
    /// Set when this event removes a member from the project: that user's connections leave the room.
    pub removed_member: Option<Uuid>,
    /// Not an event but a room's promise: "I will broadcast only events after `seq`". A subscriber whose
    /// cursor is below it reads the difference from history. (Sent when a room starts, or skips seqs.)
    pub watermark: bool,
    /// Not an event but a room's warning: the database's history of this project no longer continues the
    /// one this room broadcast (it was restored from a backup, or its feed was reset). Every subscriber must
    /// start over (`resync`); `seq` is the latest seq the database now has.
    pub rewound: bool,
}

impl Event {
    pub fn new(project: Uuid, seq: i64, frame: String) -> Event {
        let removed_member = removed_member(&frame);
        Event { project, seq, frame: frame.into(), held: None, removed_member, watermark: false, rewound: false }
    }

    pub fn watermark(project: Uuid, seq: i64) -> Event {
        Event { watermark: true, ..Event::marker(project, seq) }
    }

    pub fn rewound(project: Uuid, seq: i64) -> Event {
        Event { rewound: true, ..Event::marker(project, seq) }
    }

    fn marker(project: Uuid, seq: i64) -> Event {
        Event {
            project,
            seq,
            frame: Default::default(),
            held: None,
            removed_member: None,
            watermark: false,
            rewound: false,
        }
    }

    /// The same event with its frame held elsewhere: only a weak reference travels with it.
    pub fn holding(&self, frame: &Arc<Utf8Bytes>) -> Event {
        Event {
            project: self.project,
            seq: self.seq,
            frame: Default::default(),
            held: Some(Arc::downgrade(frame)),
            removed_member: self.removed_member,
            watermark: self.watermark,
            rewound: self.rewound,
        }
    }

    /// The frame to send, or `None` if its room let go of it (the subscriber fell too far behind).
    pub fn frame(&self) -> Option<Utf8Bytes> {
        match &self.held {
            None => Some(self.frame.clone()),
            Some(held) => held.upgrade().map(|f| (*f).clone()),
        }
    }
}

/// The header of a notification on `boardcast_feed`: `<project> <first seq> <last seq>`, followed, when they
/// fit in the payload, by the frames of those seqs, one per line.
#[derive(Debug, PartialEq)]
pub struct Announcement<'a> {
    pub project: Uuid,
    pub first: i64,
    pub last: i64,
    pub frames: Option<&'a str>,
}

pub fn parse_announcement(payload: &str) -> Option<Announcement<'_>> {
    let (header, frames) = match payload.split_once('\n') {
        Some((h, f)) => (h, Some(f)),
        None => (payload, None),
    };
    let mut parts = header.split(' ');
    let project = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    (first <= last).then_some(Announcement { project, first, last, frames })
}

/// The frames of an announcement, as events. `None` if they do not match the header (never expected; the
/// caller then reads the seqs from history instead).
pub fn inline_events(a: &Announcement<'_>) -> Option<Vec<Event>> {
    let frames = a.frames?;
    let events: Vec<Event> =
        frames.split('\n').zip(a.first..=a.last).map(|(f, seq)| Event::new(a.project, seq, f.to_owned())).collect();
    (events.len() as i64 == a.last - a.first + 1).then_some(events)
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
    fn an_announcement_without_frames_names_a_range() {
        let p = Uuid::new_v4();
        let payload = format!("{p} 3 9");
        let a = parse_announcement(&payload).unwrap();
        assert_eq!(a, Announcement { project: p, first: 3, last: 9, frames: None });
        assert!(inline_events(&a).is_none());
    }

    #[test]
    fn inline_frames_are_numbered_from_the_first_seq() {
        let p = Uuid::new_v4();
        let payload = format!("{p} 4 5\n{{\"a\":1}}\n{{\"b\":2}}");
        let events = inline_events(&parse_announcement(&payload).unwrap()).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(events[1].frame.as_str(), "{\"b\":2}");
    }

    #[test]
    fn a_header_that_does_not_parse_is_rejected() {
        assert!(parse_announcement("nope 1 2").is_none());
        assert!(parse_announcement(&format!("{} 5 2", Uuid::new_v4())).is_none());
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

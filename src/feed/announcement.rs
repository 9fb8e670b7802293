//! A notification on `boardcast_feed`, as the listener receives it: which seqs of a room were committed,
//! and, when they fit in the payload, their frames.
use crate::feed::room_key::RoomKey;

use super::event::Event;

/// The header of a notification: `<first seq> <last seq> <room>` (the room key last: it may hold spaces, never
/// a line break), followed, when they fit in the payload, by the frames of those seqs, one per line.
#[derive(Debug, PartialEq)]
pub(crate) struct Announcement<'a> {
    pub project: RoomKey,
    pub first: i64,
    pub last: i64,
    pub frames: Option<&'a str>,
}

impl Announcement<'_> {
    pub fn parse(payload: &str) -> Option<Announcement<'_>> {
        let (header, frames) = match payload.split_once('\n') {
            Some((h, f)) => (h, Some(f)),
            None => (payload, None),
        };
        let mut parts = header.splitn(3, ' ');
        let first = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        let project = RoomKey::parse(parts.next()?).ok()?;
        (first <= last).then_some(Announcement { project, first, last, frames })
    }

    /// The frames it carries, as events. `None` if there are none, or if they do not match the header (never
    /// expected; the room then reads the seqs from history instead).
    pub fn events(&self) -> Option<Vec<Event>> {
        let frames = self.frames?;
        let heard = Some(std::time::Instant::now());
        let events: Vec<Event> = (frames.split('\n').zip(self.first..=self.last))
            .map(|(f, seq)| Event { heard, ..Event::new(seq, f.to_owned()) })
            .collect();
        (events.len() as i64 == self.last - self.first + 1).then_some(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_without_frames_names_a_range() {
        let a = Announcement::parse("3 9 team a").unwrap();
        assert_eq!(a, Announcement { project: RoomKey::parse("team a").unwrap(), first: 3, last: 9, frames: None });
        assert!(a.events().is_none());
    }

    #[test]
    fn inline_frames_are_numbered_from_the_first_seq() {
        let payload = "4 5 42\n{\"a\":1}\n{\"b\":2}";
        let events = Announcement::parse(payload).unwrap().events().unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(events[1].frame.as_str(), "{\"b\":2}");
    }

    #[test]
    fn a_header_that_does_not_parse_is_rejected() {
        assert!(Announcement::parse("nope 1 2").is_none());
        assert!(Announcement::parse("5 2 42").is_none());
        assert!(Announcement::parse("1 2").is_none());
    }
}

//! What servers tell each other on the `boardcast_signal` channel: one notification carries a batch of
//! messages from one server, in the order that server sent them.
//!
//! A payload is a header line, `<server> <batch>` (the sender's id in hex, and its batch counter, so that two
//! batches never have the same text: PostgreSQL delivers a notification only once per transaction and payload),
//! then one message per line, its fields separated by tabs. Room keys and users are JSON strings, and states and
//! frames are compact JSON, none of which ever holds a raw tab or newline, so they need no other escaping:
//!
//! | line | meaning |
//! | --- | --- |
//! | `b <room> <frame>` | a broadcast: the frame every client in the room gets, built once by the sender's server |
//! | `t <room> <conn> <user> <state>` | the sender's connection `conn` tracks `user` in the room with `state` |
//! | `u <room> <conn>` | connection `conn` of the sender untracks itself from the room |
//! | `h` | the sender is alive (a heartbeat; any payload counts as one) |
//! | `s` / `e` | the start and end of the sender's full state: its entries not tracked in between are gone |
//! | `?` | the sender missed messages (it reconnected): every server sends its full state |
//! | `x` | the sender is shutting down: its entries are gone |

use std::fmt::Write;

/// A server's id: random at every start, so that a restarted server is a new server.
pub(crate) type ServerId = u64;

/// The most payload PostgreSQL takes is 7,999 bytes; a batch stops short of it.
pub(crate) const MAX_PAYLOAD: usize = 7800;

#[derive(Debug, PartialEq)]
pub(crate) enum Message<'a> {
    Broadcast { room: String, frame: &'a str },
    Track { room: String, conn: u64, user: String, state: &'a str },
    Untrack { room: String, conn: u64 },
    Heartbeat,
    SyncStart,
    SyncEnd,
    Hello,
    Bye,
}

/// A message as the outbox holds it: its line, ready to go.
pub(crate) fn line(message: &Message<'_>) -> String {
    let s = |v: &str| serde_json::to_string(v).expect("a string serializes");
    match message {
        Message::Broadcast { room, frame } => format!("b\t{}\t{frame}", s(room)),
        Message::Track { room, conn, user, state } => format!("t\t{}\t{conn}\t{}\t{state}", s(room), s(user)),
        Message::Untrack { room, conn } => format!("u\t{}\t{conn}", s(room)),
        Message::Heartbeat => "h".into(),
        Message::SyncStart => "s".into(),
        Message::SyncEnd => "e".into(),
        Message::Hello => "?".into(),
        Message::Bye => "x".into(),
    }
}

/// The payload of a batch of lines.
pub(crate) fn payload(server: ServerId, batch: u64, lines: &[String]) -> String {
    let mut p = String::with_capacity(MAX_PAYLOAD);
    let _ = write!(p, "{server:x} {batch}");
    for l in lines {
        p.push('\n');
        p.push_str(l);
    }
    p
}

/// The bytes a line adds to a payload.
pub(crate) fn cost(line: &str) -> usize {
    line.len() + 1
}

/// The sender of a payload, and its messages; `None` if the header does not parse. A line that does not parse
/// is skipped (a newer server's message, say).
pub(crate) fn parse(payload: &str) -> Option<(ServerId, impl Iterator<Item = Message<'_>>)> {
    let mut lines = payload.split('\n');
    let header = lines.next()?;
    let server = ServerId::from_str_radix(header.split(' ').next()?, 16).ok()?;
    Some((server, lines.filter_map(message)))
}

fn message(line: &str) -> Option<Message<'_>> {
    let mut f = line.split('\t');
    let kind = f.next()?;
    let string = |s: Option<&str>| serde_json::from_str::<String>(s?).ok();
    let m = match kind {
        "b" => Message::Broadcast { room: string(f.next())?, frame: f.next()? },
        "t" => Message::Track {
            room: string(f.next())?,
            conn: f.next()?.parse().ok()?,
            user: string(f.next())?,
            state: f.next()?,
        },
        "u" => Message::Untrack { room: string(f.next())?, conn: f.next()?.parse().ok()? },
        "h" => Message::Heartbeat,
        "s" => Message::SyncStart,
        "e" => Message::SyncEnd,
        "?" => Message::Hello,
        "x" => Message::Bye,
        _ => return None,
    };
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_trip_whatever_their_strings_hold() {
        let room = "tasks:9\t\"x\"\nnext".to_string();
        let sent = [
            Message::Broadcast { room: room.clone(), frame: r#"{"op":"broadcast","payload":"a\tb\nc"}"# },
            Message::Track { room: room.clone(), conn: 7, user: "u\t1".into(), state: r#"{"viewing":"task 9"}"# },
            Message::Untrack { room: room.clone(), conn: 7 },
            Message::Heartbeat,
            Message::SyncStart,
            Message::SyncEnd,
            Message::Hello,
            Message::Bye,
        ];
        // serde_json escapes tabs and newlines inside strings: the frame above is what the server would build.
        let frame = serde_json::to_string(&serde_json::json!({"op": "broadcast", "payload": "a\tb\nc"})).unwrap();
        let sent_frame = Message::Broadcast { room: room.clone(), frame: &frame };
        let lines: Vec<String> = sent.iter().skip(1).chain([&sent_frame]).map(line).collect();
        let p = payload(0xabc, 3, &lines);
        let (server, got) = parse(&p).unwrap();
        assert_eq!(server, 0xabc);
        let got: Vec<Message> = got.collect();
        assert_eq!(got.len(), lines.len());
        assert_eq!(got[0], sent[1]);
        assert_eq!(got.last().unwrap(), &sent_frame);
    }

    #[test]
    fn a_line_that_does_not_parse_is_skipped_and_a_bad_header_refuses_the_payload() {
        let (_, got) = parse("1f 1\nzz\tnew\nh").unwrap();
        assert_eq!(got.collect::<Vec<_>>(), vec![Message::Heartbeat]);
        assert!(parse("not-hex 1\nh").is_none());
    }
}

//! The WebSocket protocol: what clients send, what the server answers. docs/protocol.md is the client
//! author's version of this file.
//!
//! Client frames are parsed by hand from a `serde_json::Value` rather than derived, so that every mistake gets
//! its own precise error (a missing `op`, an unknown op, a project id that is not a UUID, ...).

use serde_json::{Map, Value, json};
use uuid::Uuid;

/// A request from a client. `reference` is the client's optional `"ref"`, echoed in the reply.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub op: Op,
    pub reference: Option<Value>,
}

#[derive(Debug, PartialEq)]
pub enum Op {
    /// Join a project's room. With `since`, replay every event after that seq first. With `since_at` (the
    /// `at` of event `since`, as the client received it), first check that the database still records that
    /// event as the client saw it: after a restore from a backup, the seqs after the restore point belong to
    /// other events.
    Join {
        project: Uuid,
        since: Option<i64>,
        since_at: Option<At>,
    },
    Leave {
        project: Uuid,
    },
    Ping,
}

/// A client mistake, answered with an error frame; the connection stays usable.
#[derive(Debug, PartialEq)]
pub struct ProtocolError {
    pub code: &'static str,
    pub message: String,
    pub reference: Option<Value>,
}

impl ProtocolError {
    fn new(code: &'static str, message: impl Into<String>, reference: Option<Value>) -> Self {
        ProtocolError { code, message: message.into(), reference }
    }
}

pub fn parse(text: &str) -> Result<Request, ProtocolError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ProtocolError::new("bad_json", format!("the message is not valid JSON: {e}"), None))?;
    let Value::Object(mut obj) = value else {
        return Err(ProtocolError::new("bad_frame", "a message must be a JSON object with an \"op\"", None));
    };
    let reference = obj.remove("ref");
    let err = |code, msg: String| ProtocolError::new(code, msg, reference.clone());
    let op = match obj.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(_) => return Err(err("bad_frame", "\"op\" must be a string".into())),
        None => return Err(err("bad_frame", "missing \"op\" (one of join, leave, ping)".into())),
    };
    let op = match op {
        "join" => Op::Join {
            project: project(&obj).map_err(|m| err("bad_project", m))?,
            since: since(&obj).map_err(|m| err("bad_since", m))?,
            since_at: since_at(&obj).map_err(|m| err("bad_since", m))?,
        },
        "leave" => Op::Leave { project: project(&obj).map_err(|m| err("bad_project", m))? },
        "ping" => Op::Ping,
        other => {
            return Err(err("unknown_op", format!("unknown op {:?}; expected join, leave or ping", truncate(other))));
        }
    };
    Ok(Request { op, reference })
}

fn project(obj: &Map<String, Value>) -> Result<Uuid, String> {
    match obj.get("project") {
        Some(Value::String(s)) => {
            s.parse().map_err(|_| format!("{:?} is not a project id (a UUID was expected)", truncate(s)))
        }
        Some(_) => Err("\"project\" must be a string holding the project's UUID".into()),
        None => Err("missing \"project\"".into()),
    }
}

fn since(obj: &Map<String, Value>) -> Result<Option<i64>, String> {
    match obj.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => Ok(Some(n)),
            _ => Err("\"since\" must be a whole number >= 0: the last seq the client has seen".into()),
        },
    }
}

/// An event's `at`, as a client sends it back: any RFC 3339 form of the instant, compared to the millisecond
/// (so a client may keep it as a JavaScript `Date` and send `toISOString()`).
#[derive(Debug, PartialEq, Clone, Copy)]
pub struct At(i64);

impl At {
    pub fn parse(s: &str) -> Option<At> {
        chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| At(t.timestamp_millis()))
    }
}

fn since_at(obj: &Map<String, Value>) -> Result<Option<At>, String> {
    match obj.get("since_at") {
        None | Some(Value::Null) => Ok(None),
        Some(_) if obj.get("since").is_none_or(Value::is_null) => {
            Err("\"since_at\" goes with \"since\": it is the \"at\" of that event".into())
        }
        Some(Value::String(at)) => At::parse(at).map(Some).ok_or_else(|| {
            format!("\"since_at\" must be an RFC 3339 time (the \"at\" of event \"since\"), not {:?}", truncate(at))
        }),
        Some(_) => Err("\"since_at\" must be the \"at\" string of event \"since\", as received".into()),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn with_ref(mut v: Value, reference: &Option<Value>) -> String {
    if let Some(r) = reference {
        v["ref"] = r.clone();
    }
    v.to_string()
}

/// `joined`: from now on the client receives every event with seq > `seq`, in order.
pub fn joined(project: Uuid, seq: i64, latest: i64, at: Option<&str>, reference: &Option<Value>) -> String {
    let mut frame = json!({"op": "joined", "project": project, "seq": seq, "latest": latest});
    if let Some(at) = at {
        frame["at"] = at.into();
    }
    with_ref(frame, reference)
}

pub fn left(project: Uuid, reason: &str, reference: &Option<Value>) -> String {
    with_ref(json!({"op": "left", "project": project, "reason": reason}), reference)
}

pub fn pong(reference: &Option<Value>) -> String {
    with_ref(json!({"op": "pong"}), reference)
}

/// `resync`: the server cannot prove the client saw everything (the history it needs was pruned, or it
/// claims a seq the project never reached). The client is no longer in the room; it reloads over HTTP and
/// joins again.
pub fn resync(project: Uuid, latest: i64, reason: &str, reference: &Option<Value>) -> String {
    with_ref(json!({"op": "resync", "project": project, "latest": latest, "reason": reason}), reference)
}

pub fn error(code: &str, message: &str, reference: &Option<Value>) -> String {
    with_ref(json!({"op": "error", "code": code, "message": message}), reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_with_since_and_ref_parses() {
        let p = Uuid::new_v4();
        let r = parse(&format!(r#"{{"op":"join","project":"{p}","since":41,"ref":"a1"}}"#)).unwrap();
        assert_eq!(r.op, Op::Join { project: p, since: Some(41), since_at: None });
        assert_eq!(r.reference, Some(json!("a1")));
        let at = "2026-11-26T00:42:59.203842+00:00";
        let r = parse(&format!(r#"{{"op":"join","project":"{p}","since":41,"since_at":"{at}"}}"#)).unwrap();
        assert_eq!(r.op, Op::Join { project: p, since: Some(41), since_at: At::parse(at) });
        // Any form of the same instant, to the millisecond.
        assert_eq!(At::parse(at), At::parse("2026-11-26T01:42:59.203+01:00"));
        assert_ne!(At::parse(at), At::parse("2026-11-26T00:42:59.204Z"));
    }

    #[test]
    fn each_mistake_has_its_own_code() {
        assert_eq!(parse("{nope").unwrap_err().code, "bad_json");
        assert_eq!(parse("[1]").unwrap_err().code, "bad_frame");
        assert_eq!(parse(r#"{"project":"x"}"#).unwrap_err().code, "bad_frame");
        assert_eq!(parse(r#"{"op":"dance"}"#).unwrap_err().code, "unknown_op");
        assert_eq!(parse(r#"{"op":"join","project":"12"}"#).unwrap_err().code, "bad_project");
        assert_eq!(parse(r#"{"op":"join"}"#).unwrap_err().code, "bad_project");
        let e = parse(&format!(r#"{{"op":"join","project":"{}","since":-1,"ref":7}}"#, Uuid::nil())).unwrap_err();
        assert_eq!((e.code, e.reference), ("bad_since", Some(json!(7))));
        let p = Uuid::nil();
        for bad in [
            format!(r#"{{"op":"join","project":"{p}","since_at":"2026-11-26T00:42:59+00:00"}}"#),
            format!(r#"{{"op":"join","project":"{p}","since":3,"since_at":5}}"#),
            format!(r#"{{"op":"join","project":"{p}","since":3,"since_at":"yesterday"}}"#),
        ] {
            assert_eq!(parse(&bad).unwrap_err().code, "bad_since", "{bad}");
        }
    }
}

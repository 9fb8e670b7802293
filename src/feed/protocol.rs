//! The WebSocket protocol: what clients send, what the server answers. docs/protocol.md is the client
//! author's version of this file.
//!
//! Client frames are parsed by hand from a `serde_json::Value` rather than derived, so that every mistake gets
//! its own precise error (a missing `op`, an unknown op, a room key that is too long, ...). The server's
//! own frames ([`ServerFrame`]) are serialized with serde; event frames are not among them: PostgreSQL builds
//! those (see [`super::event`]).

use crate::feed::room_key::RoomKey;
use serde::Serialize;
use serde_json::{Map, Value};

/// A request from a client. `reference` is the client's optional `"ref"`, echoed in the reply.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    pub op: Op,
    pub reference: Option<Value>,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Op {
    /// Join a project's room. With `since`, replay every event after that seq first. With `since_at` (the
    /// `at` of event `since`, as the client received it), first check that the database still records that
    /// event as the client saw it: after a restore from a backup, the seqs after the restore point belong to
    /// other events.
    Join {
        project: RoomKey,
        since: Option<i64>,
        since_at: Option<At>,
        options: JoinOptions,
    },
    Leave {
        project: RoomKey,
    },
    Ping,
    /// Be present in the room with `state` (compact JSON, an object of at most [`STATE_MAX_BYTES`]), or change
    /// the state.
    Track {
        project: RoomKey,
        state: String,
    },
    Untrack {
        project: RoomKey,
    },
    /// Send `payload` (compact JSON, at most [`PAYLOAD_MAX_BYTES`]) to the others in the room, as `event`.
    Broadcast {
        project: RoomKey,
        event: String,
        payload: String,
    },
    /// A fresh token for this connection (for the same subject), before its current one expires.
    Auth {
        token: Secret,
    },
}

impl Op {
    /// The op's name, as the client wrote it (a metric's label).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Join { .. } => "join",
            Op::Leave { .. } => "leave",
            Op::Ping => "ping",
            Op::Track { .. } => "track",
            Op::Untrack { .. } => "untrack",
            Op::Broadcast { .. } => "broadcast",
            Op::Auth { .. } => "auth",
        }
    }
}

/// A token as a client sent it: never printed, not even in a debug print.
#[derive(PartialEq)]
pub(crate) struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a client may ask for when it joins, besides the room's events.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct JoinOptions {
    /// `"presence": true`: the room's presence (`presence_state`, then `presence_diff`s).
    pub presence: bool,
    /// `"broadcast": {"self": true}`: its own broadcasts too.
    pub echo: bool,
    /// `"group": "tx"`: the room's events as one `tx` frame per transaction (in parts if it is large), instead
    /// of one `event` frame each.
    pub group_tx: bool,
}

/// The largest `state` a client may track, as compact JSON.
pub(crate) const STATE_MAX_BYTES: usize = 1024;
/// The largest `payload` of a broadcast, as compact JSON.
pub(crate) const PAYLOAD_MAX_BYTES: usize = 4096;
/// The longest `event` name of a broadcast, in characters.
pub(crate) const EVENT_MAX_CHARS: usize = 64;

/// A client mistake, answered with an error frame; the connection stays usable.
#[derive(Debug, PartialEq)]
pub(crate) struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<Value>,
}

impl ProtocolError {
    fn new(code: ErrorCode, message: impl Into<String>, reference: Option<Value>) -> Self {
        ProtocolError { code, message: message.into(), reference }
    }
}

pub(crate) fn parse(text: &str) -> Result<Request, ProtocolError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ProtocolError::new(ErrorCode::BadJson, format!("the message is not valid JSON: {e}"), None))?;
    let Value::Object(mut obj) = value else {
        return Err(ProtocolError::new(ErrorCode::BadFrame, "a message must be a JSON object with an \"op\"", None));
    };
    let reference = obj.remove("ref");
    let err = |code, msg: String| ProtocolError::new(code, msg, reference.clone());
    let op = match obj.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(_) => return Err(err(ErrorCode::BadFrame, "\"op\" must be a string".into())),
        None => return Err(err(ErrorCode::BadFrame, format!("missing \"op\" (one of {OPS})"))),
    };
    let op = match op {
        "join" => Op::Join {
            project: project(&obj).map_err(|m| err(ErrorCode::BadProject, m))?,
            since: since(&obj).map_err(|m| err(ErrorCode::BadSince, m))?,
            since_at: since_at(&obj).map_err(|m| err(ErrorCode::BadSince, m))?,
            options: join_options(&obj).map_err(|m| err(ErrorCode::BadFrame, m))?,
        },
        "leave" => Op::Leave { project: project(&obj).map_err(|m| err(ErrorCode::BadProject, m))? },
        "ping" => Op::Ping,
        "track" => Op::Track {
            project: project(&obj).map_err(|m| err(ErrorCode::BadProject, m))?,
            state: state(&obj).map_err(|(code, m)| err(code, m))?,
        },
        "untrack" => Op::Untrack { project: project(&obj).map_err(|m| err(ErrorCode::BadProject, m))? },
        "broadcast" => Op::Broadcast {
            project: project(&obj).map_err(|m| err(ErrorCode::BadProject, m))?,
            event: event(&obj).map_err(|m| err(ErrorCode::BadEvent, m))?,
            payload: payload(&obj).map_err(|m| err(ErrorCode::TooLarge, m))?,
        },
        "auth" => match obj.get("token") {
            Some(Value::String(token)) if !token.is_empty() => Op::Auth { token: Secret(token.clone()) },
            _ => return Err(err(ErrorCode::BadFrame, "\"auth\" needs \"token\": a token, as a string".into())),
        },
        other => {
            return Err(err(ErrorCode::UnknownOp, format!("unknown op {:?}; expected one of {OPS}", truncate(other))));
        }
    };
    Ok(Request { op, reference })
}

const OPS: &str = "join, leave, ping, auth, track, untrack, broadcast";

fn join_options(obj: &Map<String, Value>) -> Result<JoinOptions, String> {
    let presence = match obj.get("presence") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("\"presence\" must be true or false".into()),
    };
    let echo = match obj.get("broadcast") {
        None | Some(Value::Null) => false,
        Some(Value::Object(b)) => match b.get("self") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("\"broadcast\": {\"self\": …} must be true or false".into()),
        },
        Some(_) => return Err("\"broadcast\" must be an object, e.g. {\"self\": true}".into()),
    };
    let group_tx = match obj.get("group") {
        None | Some(Value::Null) => false,
        Some(Value::String(g)) if g == "tx" => true,
        Some(_) => return Err("\"group\" must be \"tx\" (one frame per transaction) or absent".into()),
    };
    Ok(JoinOptions { presence, echo, group_tx })
}

/// A tracked state: a JSON object (`{}` if absent) of at most [`STATE_MAX_BYTES`] as compact JSON.
fn state(obj: &Map<String, Value>) -> Result<String, (ErrorCode, String)> {
    match obj.get("state") {
        None | Some(Value::Null) => Ok("{}".into()),
        Some(v @ Value::Object(_)) => {
            let s = v.to_string();
            if s.len() > STATE_MAX_BYTES {
                let msg = format!("\"state\" is {} bytes as JSON; at most {STATE_MAX_BYTES}", s.len());
                return Err((ErrorCode::TooLarge, msg));
            }
            Ok(s)
        }
        Some(_) => Err((ErrorCode::BadState, "\"state\" must be a JSON object".into())),
    }
}

fn event(obj: &Map<String, Value>) -> Result<String, String> {
    match obj.get("event") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= EVENT_MAX_CHARS => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("\"event\" must be 1 to {EVENT_MAX_CHARS} characters")),
        Some(_) => Err("\"event\" must be a string naming the broadcast, e.g. \"typing\"".into()),
        None => Err("missing \"event\"".into()),
    }
}

/// A broadcast's payload: any JSON (`null` if absent), at most [`PAYLOAD_MAX_BYTES`] as compact JSON.
fn payload(obj: &Map<String, Value>) -> Result<String, String> {
    let s = obj.get("payload").map_or_else(|| "null".to_string(), Value::to_string);
    if s.len() > PAYLOAD_MAX_BYTES {
        return Err(format!("\"payload\" is {} bytes as JSON; at most {PAYLOAD_MAX_BYTES}", s.len()));
    }
    Ok(s)
}

/// The `ref` of a request that is refused before it is read (over the rate limit), if it has one.
pub(crate) fn reference(text: &str) -> Option<Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(mut obj)) => obj.remove("ref"),
        _ => None,
    }
}

/// The room a request names: `"project"` (or its synonym `"room"`), a string, or a whole number for an app
/// whose rooms are numbered (`"room": 42` is room `"42"`).
fn project(obj: &Map<String, Value>) -> Result<RoomKey, String> {
    let value = match (obj.get("project"), obj.get("room")) {
        (Some(_), Some(_)) => return Err("give \"project\" or \"room\", not both".into()),
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => {
            return Err("missing \"project\" (the room to join: a project id, or your app's room key)".into());
        }
    };
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return Err("\"project\" must be a string (or a whole number): the room's key".into()),
    };
    RoomKey::parse(&text).map_err(|why| format!("{:?} is not a room key: {why}", truncate(&text)))
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
pub(crate) struct At(i64);

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

/// A frame the server sends, other than events (whose frames PostgreSQL builds). Serialized with its `op`
/// first; `ref`, when the client's request had one, is added by [`ServerFrame::to_text`].
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum ServerFrame<'a> {
    /// From now on the client receives every event with seq > `seq`, in order. `at` is the time of event
    /// `seq` (absent when there is none).
    Joined {
        project: RoomKey,
        seq: i64,
        latest: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        at: Option<&'a str>,
    },
    Left {
        project: RoomKey,
        reason: LeftReason,
    },
    Pong,
    /// The client is present in the room (`track`); `id` is its entry's id in presence frames, and in the `from`
    /// of its broadcasts.
    Tracked {
        project: RoomKey,
        id: &'a str,
    },
    Untracked {
        project: RoomKey,
    },
    /// The connection now runs on the token sent with `auth`; it closes at `expires_at` (RFC 3339; `null`:
    /// never) unless another comes first.
    Authed {
        expires_at: Option<&'a str>,
    },
    /// The server cannot prove the client saw everything. The client is no longer in the room; it reloads
    /// over HTTP and joins again.
    Resync {
        project: RoomKey,
        latest: i64,
        reason: ResyncReason,
    },
    /// `retry_after` (milliseconds) with `rate_limited`: when the request would be accepted.
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LeftReason {
    /// The client asked to leave.
    Requested,
    /// The event just sent removed this user from the project.
    Removed,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResyncReason {
    /// The history the client needs was pruned.
    HistoryPruned,
    /// The client claims a seq the project never reached.
    SinceAhead,
    /// History no longer continues what the client saw (the database was restored from a backup).
    HistoryRewound,
    /// The client asked to resume from before it became a member: the events before that are not for it.
    BeforeMembership,
}

/// The `code` of an error frame (docs/protocol.md lists when each is sent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    BadJson,
    BadFrame,
    UnknownOp,
    BadProject,
    BadSince,
    NotFound,
    AlreadyJoined,
    NotJoined,
    TooManyRooms,
    Unavailable,
    /// Over one of the connection's rates (messages, joins, broadcasts, presence updates): try again after
    /// `retry_after` ms.
    RateLimited,
    /// A broadcast's `event` is missing, not a string, empty or too long.
    BadEvent,
    /// A tracked `state` is not a JSON object.
    BadState,
    /// A broadcast's `payload` or a tracked `state` is over its size limit.
    TooLarge,
    /// `auth`: the token is bad (invalid, expired, revoked) or names another subject.
    Unauthorized,
}

impl ServerFrame<'_> {
    /// The frame's JSON text, with the request's `ref` echoed if it had one.
    pub fn to_text(&self, reference: Option<&Value>) -> String {
        #[derive(Serialize)]
        struct WithRef<'a, 'b> {
            #[serde(flatten)]
            frame: &'a ServerFrame<'b>,
            #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
            reference: Option<&'a Value>,
        }
        serde_json::to_string(&WithRef { frame: self, reference }).expect("a server frame always serializes")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(s: &str) -> RoomKey {
        RoomKey::parse(s).unwrap()
    }

    #[test]
    fn a_join_with_since_and_ref_parses() {
        let p = "6f1c1f5e-3d4a-4b7e-9f53-0c2b8d1e4a77";
        let r = parse(&format!(r#"{{"op":"join","project":"{p}","since":41,"ref":"a1"}}"#)).unwrap();
        let options = JoinOptions::default();
        assert_eq!(r.op, Op::Join { project: key(p), since: Some(41), since_at: None, options });
        assert_eq!(r.reference, Some(json!("a1")));
        let at = "2026-11-26T00:42:59.203842+00:00";
        let r = parse(&format!(r#"{{"op":"join","project":"{p}","since":41,"since_at":"{at}"}}"#)).unwrap();
        assert_eq!(r.op, Op::Join { project: key(p), since: Some(41), since_at: At::parse(at), options });
        // Any form of the same instant, to the millisecond.
        assert_eq!(At::parse(at), At::parse("2026-11-26T01:42:59.203+01:00"));
        assert_ne!(At::parse(at), At::parse("2026-11-26T00:42:59.204Z"));
    }

    #[test]
    fn each_mistake_has_its_own_code() {
        assert_eq!(parse("{nope").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(parse("[1]").unwrap_err().code, ErrorCode::BadFrame);
        assert_eq!(parse(r#"{"project":"x"}"#).unwrap_err().code, ErrorCode::BadFrame);
        assert_eq!(parse(r#"{"op":"dance"}"#).unwrap_err().code, ErrorCode::UnknownOp);
        assert_eq!(parse(r#"{"op":"join","project":""}"#).unwrap_err().code, ErrorCode::BadProject);
        assert_eq!(parse(r#"{"op":"join","project":1.5}"#).unwrap_err().code, ErrorCode::BadProject);
        assert_eq!(parse(r#"{"op":"join","project":"a","room":"b"}"#).unwrap_err().code, ErrorCode::BadProject);
        assert_eq!(parse(r#"{"op":"join"}"#).unwrap_err().code, ErrorCode::BadProject);
        assert_eq!(parse(r#"{"op":"auth"}"#).unwrap_err().code, ErrorCode::BadFrame);
        assert_eq!(parse(r#"{"op":"auth","token":7}"#).unwrap_err().code, ErrorCode::BadFrame);
        let auth = parse(r#"{"op":"auth","token":"bc_x","ref":1}"#).unwrap();
        assert_eq!(auth.op, Op::Auth { token: Secret("bc_x".into()) });
        assert!(!format!("{auth:?}").contains("bc_x"), "a token is never printed");
        let e = parse(r#"{"op":"join","project":"12","since":-1,"ref":7}"#).unwrap_err();
        assert_eq!((e.code, e.reference), (ErrorCode::BadSince, Some(json!(7))));
        let p = "12";
        for bad in [
            format!(r#"{{"op":"join","project":"{p}","since_at":"2026-11-26T00:42:59+00:00"}}"#),
            format!(r#"{{"op":"join","project":"{p}","since":3,"since_at":5}}"#),
            format!(r#"{{"op":"join","project":"{p}","since":3,"since_at":"yesterday"}}"#),
        ] {
            assert_eq!(parse(&bad).unwrap_err().code, ErrorCode::BadSince, "{bad}");
        }
    }

    #[test]
    fn presence_and_broadcast_requests_parse_with_their_limits() {
        let p = "6f1c1f5e-3d4a-4b7e-9f53-0c2b8d1e4a77";
        let r = parse(&format!(r#"{{"op":"join","project":"{p}","presence":true,"broadcast":{{"self":true}}}}"#));
        let options = JoinOptions { presence: true, echo: true, group_tx: false };
        assert_eq!(r.unwrap().op, Op::Join { project: key(p), since: None, since_at: None, options });
        let r = parse(&format!(r#"{{"op":"join","project":"{p}","group":"tx"}}"#));
        let options = JoinOptions { group_tx: true, ..JoinOptions::default() };
        assert_eq!(r.unwrap().op, Op::Join { project: key(p), since: None, since_at: None, options });
        let e = parse(&format!(r#"{{"op":"join","project":"{p}","group":"statement"}}"#)).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);
        let r = parse(&format!(r#"{{"op":"track","project":"{p}","state":{{"viewing": "task 9"}}}}"#)).unwrap();
        assert_eq!(r.op, Op::Track { project: key(p), state: r#"{"viewing":"task 9"}"#.into() });
        assert_eq!(
            parse(&format!(r#"{{"op":"track","project":"{p}"}}"#)).unwrap().op,
            Op::Track { project: key(p), state: "{}".into() }
        );
        let r = parse(&format!(r#"{{"op":"broadcast","project":"{p}","event":"typing","payload":[1, 2]}}"#)).unwrap();
        assert_eq!(r.op, Op::Broadcast { project: key(p), event: "typing".into(), payload: "[1,2]".into() });
        let at_limit = format!(r#"{{"op":"broadcast","project":"{p}","event":"e","payload":"{}"}}"#, "x".repeat(4094));
        assert!(parse(&at_limit).is_ok());
        let over = format!(r#"{{"op":"broadcast","project":"{p}","event":"e","payload":"{}"}}"#, "x".repeat(4095));
        assert_eq!(parse(&over).unwrap_err().code, ErrorCode::TooLarge);
        let long = format!(r#"{{"op":"broadcast","project":"{p}","event":"{}"}}"#, "é".repeat(65));
        assert_eq!(parse(&long).unwrap_err().code, ErrorCode::BadEvent);
        assert_eq!(
            parse(&format!(r#"{{"op":"track","project":"{p}","state":[]}}"#)).unwrap_err().code,
            ErrorCode::BadState
        );
        assert_eq!(parse(r#"{"op":"untrack","project":""}"#).unwrap_err().code, ErrorCode::BadProject);
    }

    #[test]
    fn rooms_are_the_apps_keys() {
        for (frame, room) in [
            (r#"{"op":"join","project":"12"}"#, "12"),
            (r#"{"op":"join","room":42}"#, "42"),
            (r#"{"op":"leave","room":"team a"}"#, "team a"),
        ] {
            match parse(frame).unwrap().op {
                Op::Join { project, .. } | Op::Leave { project } => assert_eq!(project, key(room)),
                op => panic!("{op:?}"),
            }
        }
    }

    #[test]
    fn server_frames_serialize_as_documented() {
        let p = key("6f1c1f5e-3d4a-4b7e-9f53-0c2b8d1e4a77");
        let at = "2026-11-25T16:38:42.123456+00:00";
        let cases = [
            (
                ServerFrame::Joined { project: p.clone(), seq: 41, latest: 45, at: Some(at) }
                    .to_text(Some(&json!("a1"))),
                json!({"op": "joined", "project": p, "seq": 41, "latest": 45, "at": at, "ref": "a1"}),
            ),
            (
                ServerFrame::Joined { project: p.clone(), seq: 0, latest: 0, at: None }.to_text(None),
                json!({"op": "joined", "project": p, "seq": 0, "latest": 0}),
            ),
            (
                ServerFrame::Left { project: p.clone(), reason: LeftReason::Requested }.to_text(Some(&json!(9))),
                json!({"op": "left", "project": p, "reason": "requested", "ref": 9}),
            ),
            (
                ServerFrame::Left { project: p.clone(), reason: LeftReason::Removed }.to_text(None),
                json!({"op": "left", "project": p, "reason": "removed"}),
            ),
            (ServerFrame::Pong.to_text(Some(&json!(1))), json!({"op": "pong", "ref": 1})),
            (
                ServerFrame::Tracked { project: p.clone(), id: "1f-3" }.to_text(Some(&json!("t"))),
                json!({"op": "tracked", "project": p, "id": "1f-3", "ref": "t"}),
            ),
            (ServerFrame::Untracked { project: p.clone() }.to_text(None), json!({"op": "untracked", "project": p})),
            (ServerFrame::Pong.to_text(Some(&Value::Null)), json!({"op": "pong", "ref": null})),
            (
                ServerFrame::Authed { expires_at: Some(at) }.to_text(Some(&json!(2))),
                json!({"op": "authed", "expires_at": at, "ref": 2}),
            ),
            (ServerFrame::Authed { expires_at: None }.to_text(None), json!({"op": "authed", "expires_at": null})),
            (
                ServerFrame::Resync { project: p.clone(), latest: 12, reason: ResyncReason::HistoryPruned }
                    .to_text(None),
                json!({"op": "resync", "project": p, "latest": 12, "reason": "history_pruned"}),
            ),
            (
                ServerFrame::Resync { project: p.clone(), latest: 3, reason: ResyncReason::SinceAhead }.to_text(None),
                json!({"op": "resync", "project": p, "latest": 3, "reason": "since_ahead"}),
            ),
            (
                ServerFrame::Resync { project: p.clone(), latest: 3, reason: ResyncReason::HistoryRewound }
                    .to_text(None),
                json!({"op": "resync", "project": p, "latest": 3, "reason": "history_rewound"}),
            ),
            (
                ServerFrame::Resync { project: p.clone(), latest: 9, reason: ResyncReason::BeforeMembership }
                    .to_text(None),
                json!({"op": "resync", "project": p, "latest": 9, "reason": "before_membership"}),
            ),
            (
                ServerFrame::Error { code: ErrorCode::TooManyRooms, message: "too many", retry_after: None }
                    .to_text(Some(&json!({"a": 1}))),
                json!({"op": "error", "code": "too_many_rooms", "message": "too many", "ref": {"a": 1}}),
            ),
            (
                ServerFrame::Error { code: ErrorCode::RateLimited, message: "slow down", retry_after: Some(150) }
                    .to_text(Some(&json!(3))),
                json!({"op": "error", "code": "rate_limited", "message": "slow down", "retry_after": 150, "ref": 3}),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected, "{text}");
            assert!(text.starts_with("{\"op\":"), "{text}");
        }
        for (code, text) in [
            (ErrorCode::BadJson, "bad_json"),
            (ErrorCode::BadFrame, "bad_frame"),
            (ErrorCode::UnknownOp, "unknown_op"),
            (ErrorCode::BadProject, "bad_project"),
            (ErrorCode::BadSince, "bad_since"),
            (ErrorCode::NotFound, "not_found"),
            (ErrorCode::AlreadyJoined, "already_joined"),
            (ErrorCode::NotJoined, "not_joined"),
            (ErrorCode::Unavailable, "unavailable"),
            (ErrorCode::RateLimited, "rate_limited"),
            (ErrorCode::BadEvent, "bad_event"),
            (ErrorCode::BadState, "bad_state"),
            (ErrorCode::TooLarge, "too_large"),
            (ErrorCode::Unauthorized, "unauthorized"),
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(text));
        }
    }
}

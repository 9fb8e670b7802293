//! Why a session ends: what the log says and what the client is told (its close frame, if any).

use std::fmt;

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::rate::Limit;

#[derive(Debug)]
pub(super) enum End {
    /// The client closed the connection (its close frame is answered with tungstenite's echo of it).
    Closed,
    /// The socket failed, or the client dropped it without closing: nothing more can be said.
    Gone,
    Shutdown,
    Revoked,
    /// The token expired: the same close code as a revocation (the client needs a new token either way).
    Expired,
    TooBig,
    /// The client broke the WebSocket protocol (a reserved opcode, an oversized control frame, ...).
    Protocol(String),
    /// A text message that is not UTF-8.
    NotUtf8,
    /// Nothing heard from the client (not even a pong) within the idle timeout.
    Silent,
    /// The client accepted no data for the send timeout.
    TooSlow,
    /// The client kept on sending past one of its rates, after as many `rate_limited` answers as its burst.
    RateLimited(Limit),
    Internal,
}

impl End {
    /// The close frame to send; `None` when the client cannot or will not read one.
    pub fn close_frame(&self, limit: usize) -> Option<CloseFrame> {
        let (code, reason) = match self {
            End::Closed | End::Gone | End::TooSlow => return None,
            End::Shutdown => (CloseCode::Restart, "server shutting down; reconnect and join with since".to_string()),
            End::Revoked => (CloseCode::Library(4001), "token revoked".to_string()),
            End::Expired => (CloseCode::Library(4001), "token expired".to_string()),
            End::TooBig => (CloseCode::Size, format!("message too big; the limit is {limit} bytes")),
            End::Protocol(e) => (CloseCode::Protocol, close_reason(&format!("websocket protocol error: {e}"))),
            End::NotUtf8 => (CloseCode::Invalid, "a text message was not valid UTF-8".to_string()),
            End::Silent => (CloseCode::Away, "no pong or message within the idle timeout".to_string()),
            End::Internal => (CloseCode::Error, "internal error; reconnect and join with since".to_string()),
            End::RateLimited(limit) => (CloseCode::Policy, format!("rate limit exceeded: too many {}", limit.name())),
        };
        Some(CloseFrame { code, reason: reason.into() })
    }
}

impl End {
    /// Why, as a metric's label (`boardcast_ws_disconnects_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Gone => "gone",
            End::Shutdown => "shutdown",
            End::Revoked => "revoked",
            End::Expired => "expired",
            End::TooBig => "too_big",
            End::Protocol(_) => "protocol",
            End::NotUtf8 => "not_utf8",
            End::Silent => "silent",
            End::TooSlow => "slow",
            End::RateLimited(_) => "rate_limited",
            End::Internal => "internal",
        }
    }
}

/// For the log line that says why a connection ended.
impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => f.write_str("client closed"),
            End::Gone => f.write_str("client gone without closing"),
            End::Shutdown => f.write_str("server shutting down"),
            End::Revoked => f.write_str("token revoked"),
            End::Expired => f.write_str("token expired"),
            End::TooBig => f.write_str("client sent a message over the limit"),
            End::Protocol(e) => write!(f, "client broke the websocket protocol: {e}"),
            End::NotUtf8 => f.write_str("client sent a text message that is not UTF-8"),
            End::Silent => f.write_str("timed out: nothing heard within the idle timeout"),
            End::TooSlow => f.write_str("slow: the client accepted no data within the send timeout"),
            End::Internal => f.write_str("internal error"),
            End::RateLimited(limit) => write!(f, "kept on past its rate of {}", limit.name()),
        }
    }
}

/// A close frame's reason may be at most 123 bytes: cut at a character boundary.
fn close_reason(s: &str) -> String {
    let mut end = s.len().min(123);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

//! A room's key: what a client joins and what every event of the room names (`"project"` in frames).
//!
//! Rooms are the app's: each tracked table computes a row's room with an SQL expression
//! (`boardcast.track`, sql/functions/feed.sql), and its value as text is the key: a project's uuid, a board's
//! bigint, a team's slug. The server compares keys as they are written, byte for byte, exactly as the database
//! does (`COLLATE "C"`): `42` and `042` are two rooms.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// The most bytes a room key may have (the triggers refuse a longer one, so no event can name it).
pub const MAX_ROOM_KEY_BYTES: usize = 200;

/// A room key: 1 to [`MAX_ROOM_KEY_BYTES`] bytes of text without control characters. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey(Arc<str>);

impl RoomKey {
    /// The key `text` names, or why it names none.
    pub fn parse(text: &str) -> Result<RoomKey, &'static str> {
        if text.is_empty() {
            Err("a room key is never empty")
        } else if text.len() > MAX_ROOM_KEY_BYTES {
            Err("a room key is at most 200 bytes")
        } else if text.chars().any(char::is_control) {
            Err("a room key has no control characters")
        } else {
            Ok(RoomKey(text.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for RoomKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl From<uuid::Uuid> for RoomKey {
    /// A project's room: its id, as text.
    fn from(project: uuid::Uuid) -> RoomKey {
        RoomKey(project.to_string().into())
    }
}

/// Bound as text: `feed_events.room` and the join rule's `room` are text.
impl tokio_postgres::types::ToSql for RoomKey {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

impl<'a> tokio_postgres::types::FromSql<'a> for RoomKey {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<RoomKey, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
        Ok(RoomKey(text.into()))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_text() {
        assert_eq!(RoomKey::parse("42").unwrap().as_str(), "42");
        assert!(RoomKey::parse("team a").is_ok());
        assert!(RoomKey::parse("").is_err());
        assert!(RoomKey::parse("a\nb").is_err());
        assert!(RoomKey::parse(&"x".repeat(201)).is_err());
        assert!(RoomKey::parse(&"é".repeat(100)).is_ok());
    }
}

//! The values the board is made of, typed: each parses from a request field (a 422 naming the field if it
//! does not), goes into SQL as itself, and reads back from rows. The limits are the schema's CHECKs
//! (sql/migrations/0001_domain.sql), which the OpenAPI document states too.

use std::error::Error;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::http::input::{FromField, check_text};

/// Text of `MIN..=MAX` characters without NUL.
#[derive(Debug, Clone, Default)]
pub struct Text<const MIN: usize, const MAX: usize>(String);

pub type ProjectName = Text<1, 200>;
pub type Title = Text<1, 500>;
pub type Description = Text<0, 200_000>;
pub type CommentBody = Text<1, 20_000>;
pub type Label = Text<0, 200>;

impl<const MIN: usize, const MAX: usize> Text<MIN, MAX> {
    pub const MIN: usize = MIN;
    pub const MAX: usize = MAX;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MIN: usize, const MAX: usize> FromField for Text<MIN, MAX> {
    fn from_field(value: &Value) -> Result<Self, String> {
        let Value::String(s) = value else { return Err("must be a string".into()) };
        check_text(s, MIN, MAX)?;
        Ok(Text(s.clone()))
    }
}

/// A user's name, as the users table allows it: 1 to 64 letters, digits, `_`, `.` or `-`.
#[derive(Debug, Clone)]
pub struct UserName(Text<1, 64>);

impl UserName {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromField for UserName {
    fn from_field(value: &Value) -> Result<Self, String> {
        let name = Text::from_field(value)?;
        if !name.as_str().chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err("a user name is 1 to 64 letters, digits, '_', '.' or '-'".into());
        }
        Ok(UserName(name))
    }
}

/// A card's place on the board: finite and within ±1e15, the range the schema allows (so every client's JSON
/// parser reads it back exactly).
#[derive(Debug, Clone, Copy)]
pub struct Position(pub f64);

impl Position {
    const LIMIT: f64 = 1e15;
}

impl FromField for Position {
    fn from_field(value: &Value) -> Result<Self, String> {
        let Value::Number(n) = value else { return Err("must be a number".into()) };
        match n.as_f64() {
            Some(f) if !f.is_finite() => Err("must be a finite number".into()),
            Some(f) if !(-Self::LIMIT..=Self::LIMIT).contains(&f) => Err("must be between -1e15 and 1e15".into()),
            Some(f) => Ok(Position(f)),
            None => Err("must be a finite number".into()),
        }
    }
}

/// The version a change is based on: a positive integer. A stale one is a 409 with the current row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Version(pub i64);

const VERSION_RANGE: &str = "must be an integer of at least 1";

impl Version {
    /// From a query parameter (`DELETE /api/tasks/{id}?version=`).
    pub fn from_query(s: &str) -> Result<Version, String> {
        match s.parse::<i64>() {
            Ok(v) if v >= 1 => Ok(Version(v)),
            _ => Err(VERSION_RANGE.into()),
        }
    }
}

impl FromField for Version {
    fn from_field(value: &Value) -> Result<Self, String> {
        let Value::Number(n) = value else { return Err("must be an integer".into()) };
        match n.as_i64() {
            Some(v) if v >= 1 => Ok(Version(v)),
            _ => Err(VERSION_RANGE.into()),
        }
    }
}

/// An enum the schema stores as text (a CHECK lists its values): its names, parsing, JSON and SQL, both ways.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const NAMES: &[&str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            /// The message of the 422 for anything else.
            pub fn expected() -> String {
                format!("must be one of: {}", Self::NAMES.join(", "))
            }
        }

        impl FromField for $name {
            fn from_field(value: &Value) -> Result<Self, String> {
                value.as_str().and_then($name::parse).ok_or_else($name::expected)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?}: {}", $name::expected())))
            }
        }

        impl ToSql for $name {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }

            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
                let s = <&str as FromSql>::from_sql(ty, raw)?;
                $name::parse(s).ok_or_else(|| format!("{s:?}: {}", $name::expected()).into())
            }

            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    };
}

text_enum! {
    /// Where a task stands.
    TaskStatus { Todo = "todo", InProgress = "in_progress", Done = "done" }
}

text_enum! {
    /// An archived project's board is read-only through the API.
    ProjectStatus { Active = "active", Archived = "archived" }
}

text_enum! {
    /// A member's role in a project: owners manage the project and its members.
    Role { Owner = "owner", Member = "member" }
}

impl<const MIN: usize, const MAX: usize> ToSql for Text<MIN, MAX> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <String as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

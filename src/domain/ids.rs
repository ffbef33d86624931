//! Id newtypes: an agent's id cannot be passed where a run's is expected.
//!
//! Every id is `<kind>-<letters and digits>` ([`crate::util::new_id`]), kept
//! as the string it was given: serde is transparent and [`From<String>`]
//! takes any text, because the wire and the store accept any string where an
//! id goes (an id that was never made is simply not found). `parse` checks
//! the shape, for the places that want to refuse a malformed id early.

use std::{borrow::Borrow, fmt};

use serde::{Deserialize, Serialize};
use utoipa::{
    openapi::{schema::Type, ObjectBuilder, RefOr, Schema},
    PartialSchema, ToSchema,
};

/// An id that does not have its kind's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a {kind} id (`{prefix}-` and letters or digits)")]
pub struct IdError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub text: String,
}

/// Whether `s` is `<prefix>-` followed by 1 to `max` ASCII letters or digits.
fn well_formed(s: &str, prefix: &str, max: usize) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|tail| {
            !tail.is_empty() && tail.len() <= max && tail.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

macro_rules! id_type {
    (
        $(#[$meta:meta])*
        $name:ident, kind = $kind:literal, prefix = $prefix:literal, max = $max:literal,
        pattern = $pattern:literal
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// What every id of this kind starts with (before the `-`).
            pub const PREFIX: &'static str = $prefix;

            /// Checks the shape (`prefix-` and letters or digits).
            pub fn parse(s: &str) -> Result<Self, IdError> {
                match well_formed(s, $prefix, $max) {
                    true => Ok(Self(s.to_owned())),
                    false => Err(IdError {
                        kind: $kind,
                        prefix: $prefix,
                        text: s.to_owned(),
                    }),
                }
            }

            /// Whether the id has its kind's shape.
            pub fn is_well_formed(&self) -> bool {
                well_formed(&self.0, $prefix, $max)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Unchecked: ids read from the store or named by a client are kept
        /// as given (see the module docs).
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some($pattern))
                    .into()
            }
        }

        impl ToSchema for $name {}
    };
}

macro_rules! new_id {
    ($name:ident) => {
        impl $name {
            /// A new random id of this kind.
            pub fn generate() -> Self {
                Self(crate::util::new_id(Self::PREFIX))
            }
        }
    };
}

id_type!(
    /// An agent (`agent-…`).
    AgentId, kind = "agent", prefix = "agent", max = 64, pattern = "^agent-[A-Za-z0-9]+$"
);
new_id!(AgentId);

id_type!(
    /// A run: one message (or list of messages) answered (`run-…`).
    RunId, kind = "run", prefix = "run", max = 64, pattern = "^run-[A-Za-z0-9]+$"
);
new_id!(RunId);

id_type!(
    /// A chat session of an agent (`sess-…`). A session's user-chosen
    /// `name` is not its id: ids are always made by the store.
    SessionId, kind = "session", prefix = "sess", max = 64, pattern = "^sess-[A-Za-z0-9]+$"
);
new_id!(SessionId);

id_type!(
    /// A tool (`tool-…`).
    ToolId, kind = "tool", prefix = "tool", max = 64, pattern = "^tool-[A-Za-z0-9]+$"
);
new_id!(ToolId);

id_type!(
    /// An API key (`key-…`): the id part of a `wk_<id>_<secret>` key, or
    /// `h` and 16 hex digits for a bootstrap key of another form
    /// ([`crate::keys::key_id_of`] derives it; there is no random one).
    KeyId, kind = "key", prefix = "key", max = 64, pattern = "^key-[A-Za-z0-9]{1,64}$"
);

id_type!(
    /// An agent event (`msg-…`) or a log line (`log-…`): see
    /// [`EventId::message`] and [`EventId::log`].
    EventId, kind = "event", prefix = "msg", max = 64, pattern = "^(msg|log)-[A-Za-z0-9]+$"
);

impl EventId {
    /// The prefix of a log line's id.
    pub const LOG_PREFIX: &'static str = "log";

    /// A new id for an agent event (`msg-…`).
    pub fn message() -> Self {
        Self(crate::util::new_id(Self::PREFIX))
    }

    /// A new id for a log line (`log-…`).
    pub fn log() -> Self {
        Self(crate::util::new_id(Self::LOG_PREFIX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_have_their_kind_and_shape() {
        let a = AgentId::generate();
        assert!(
            a.as_str().starts_with("agent-") && a.as_str().len() == 26,
            "{a}"
        );
        assert!(a.is_well_formed());
        assert_ne!(a, AgentId::generate());
        assert!(RunId::generate().as_str().starts_with("run-"));
        assert!(SessionId::generate().as_str().starts_with("sess-"));
        assert!(ToolId::generate().as_str().starts_with("tool-"));
        assert!(EventId::message().as_str().starts_with("msg-"));
        assert!(EventId::log().as_str().starts_with("log-"));
    }

    #[test]
    fn parse_checks_the_shape() {
        assert_eq!(AgentId::parse("agent-x1").unwrap().as_str(), "agent-x1");
        for bad in [
            "agent-",
            "agent",
            "agentx-1",
            "run-1",
            "agent-a b",
            "agent-a-b",
            "",
        ] {
            let e = AgentId::parse(bad).unwrap_err();
            assert_eq!((e.kind, e.text.as_str()), ("agent", bad));
        }
        assert!(SessionId::parse("sess-Ab9").is_ok());
        assert!(SessionId::parse("session-Ab9").is_err());
        assert!(KeyId::parse(&format!("key-{}", "a".repeat(64))).is_ok());
        assert!(KeyId::parse(&format!("key-{}", "a".repeat(65))).is_err());
    }

    #[test]
    fn serde_is_transparent_and_takes_any_string() {
        let id: RunId = serde_json::from_str(r#""anything at all""#).unwrap();
        assert_eq!(id, "anything at all");
        assert!(!id.is_well_formed());
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""anything at all""#);
        assert_eq!(RunId::from("run-1").to_string(), "run-1");
    }

    #[test]
    fn schemas_carry_the_pattern() {
        let json = serde_json::to_value(AgentId::schema()).unwrap();
        assert_eq!(json["type"], "string");
        assert_eq!(json["pattern"], "^agent-[A-Za-z0-9]+$");
    }
}

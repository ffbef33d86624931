//! [`Channel`]: what a stream follows, named `agent:<id>`, `logs:<id>` or
//! `run:<id>` by clients (WebSocket `subscribe`), by the bus and in Redis
//! keys. The name is built and parsed here only.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::{
    openapi::{schema::Type, ObjectBuilder, RefOr, Schema},
    PartialSchema, ToSchema,
};

use super::ids::{AgentId, RunId};

/// Longest id a channel name may carry.
const MAX_ID_LEN: usize = 128;

/// A stream of events. The bus carries `Agent` and `Logs`; a `Run` is a
/// subsequence of its agent's channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Every event of an agent's runs (`agent:<id>`).
    Agent(AgentId),
    /// An agent's log lines (`logs:<id>`), numbered on their own.
    Logs(AgentId),
    /// One run's events, replayed from the store then live (`run:<id>`).
    Run(RunId),
}

/// A channel name that does not parse; the message names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChannelError(String);

impl Channel {
    /// The kind before the `:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Agent(_) => "agent",
            Self::Logs(_) => "logs",
            Self::Run(_) => "run",
        }
    }

    /// The id after the `:`.
    pub fn id(&self) -> &str {
        match self {
            Self::Agent(id) | Self::Logs(id) => id.as_str(),
            Self::Run(id) => id.as_str(),
        }
    }

    /// The agent whose events or logs this is (`None` for a run).
    pub fn agent_id(&self) -> Option<&AgentId> {
        match self {
            Self::Agent(id) | Self::Logs(id) => Some(id),
            Self::Run(_) => None,
        }
    }

    /// Parses a channel name. The id is taken as given (any text without
    /// whitespace or `:`, at most 128 bytes): one that names nothing is not
    /// found later, as on the REST routes.
    pub fn parse(name: &str) -> Result<Self, ChannelError> {
        let (kind, id) = name.split_once(':').ok_or_else(|| {
            ChannelError(format!(
                "channel: expected `agent:<id>`, `logs:<id>` or `run:<id>`, got `{name}`"
            ))
        })?;
        if id.is_empty()
            || id.len() > MAX_ID_LEN
            || id.chars().any(|c| c.is_whitespace() || c == ':')
        {
            return Err(ChannelError(format!(
                "channel: `{name}` does not name an id"
            )));
        }
        match kind {
            "agent" => Ok(Self::Agent(id.into())),
            "logs" => Ok(Self::Logs(id.into())),
            "run" => Ok(Self::Run(id.into())),
            _ => Err(ChannelError(format!(
                "channel: unknown kind `{kind}`; expected `agent`, `logs` or `run`"
            ))),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.id())
    }
}

impl FromStr for Channel {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

impl PartialSchema for Channel {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(agent|logs|run):[^\\s:]{1,128}$"))
            .description(Some(
                "`agent:<agent id>` (an agent's events), `logs:<agent id>` (its log lines) or `run:<run id>` (one run's events).",
            ))
            .into()
    }
}

impl ToSchema for Channel {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let cases = [
            (Channel::Agent("agent-1".into()), "agent:agent-1"),
            (Channel::Logs("a".into()), "logs:a"),
            (Channel::Run("run-9".into()), "run:run-9"),
        ];
        for (channel, name) in cases {
            assert_eq!(channel.to_string(), name);
            assert_eq!(Channel::parse(name).unwrap(), channel);
            let json = serde_json::to_string(&channel).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Channel>(&json).unwrap(), channel);
        }
        assert_eq!(Channel::Logs("a".into()).agent_id().unwrap(), "a");
        assert_eq!(Channel::Run("r".into()).agent_id(), None);
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        for bad in ["agent", "agent:", "chan:x", "agent:a b", "agent:a:b", ""] {
            let e = Channel::parse(bad).unwrap_err();
            assert!(e.to_string().starts_with("channel:"), "{bad}: {e}");
        }
        let long = format!("agent:{}", "x".repeat(129));
        assert!(Channel::parse(&long).is_err());
        assert!(Channel::parse(&long[..long.len() - 1]).is_ok());
        assert!(serde_json::from_str::<Channel>(r#""nope""#).is_err());
    }
}

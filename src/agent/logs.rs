//! A run's log lines: published on `logs:<agent_id>` (the bus numbers them)
//! and persisted, so `GET /v1/agents/{id}/logs` pages them and
//! `…/logs/stream` tails them. Logging is best effort: a line that cannot be
//! published or kept is reported through tracing and never fails the run.

use serde_json::{Map, Value};

use super::events::{logs_channel, Numbering, Sinks};
use crate::store::LogRecord;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Writes the log lines of one run.
pub struct RunLog {
    sinks: Sinks,
    account: String,
    agent_id: String,
    run_id: String,
    channel: String,
}

impl RunLog {
    pub fn new(sinks: Sinks, account: &str, agent_id: &str, run_id: &str) -> Self {
        Self {
            sinks,
            account: account.to_owned(),
            agent_id: agent_id.to_owned(),
            run_id: run_id.to_owned(),
            channel: logs_channel(agent_id),
        }
    }

    pub async fn info(&self, message: impl Into<String>) {
        self.write(Level::Info, message.into()).await
    }

    pub async fn warn(&self, message: impl Into<String>) {
        self.write(Level::Warn, message.into()).await
    }

    pub async fn error(&self, message: impl Into<String>) {
        self.write(Level::Error, message.into()).await
    }

    async fn write(&self, level: Level, message: String) {
        if let Err(e) = self.try_write(level, &message).await {
            tracing::warn!(error = %e, agent_id = %self.agent_id, run_id = %self.run_id, line = %message, "log line lost");
        }
    }

    async fn try_write(&self, level: Level, message: &str) -> Result<(), super::events::EmitError> {
        let s = &self.sinks;
        s.seeds
            .ensure(
                s.bus.as_ref(),
                s.store.as_ref(),
                &self.account,
                &self.agent_id,
                &self.channel,
                Numbering::Logs,
            )
            .await?;
        let mut line = Map::new();
        line.insert("id".into(), crate::util::new_id("log").into());
        line.insert("agent_id".into(), self.agent_id.clone().into());
        line.insert("run_id".into(), self.run_id.clone().into());
        line.insert("date".into(), crate::util::now().into());
        line.insert("message_type".into(), "log".into());
        line.insert("level".into(), level.as_str().into());
        line.insert("message".into(), message.into());
        let mut record = line.clone();
        let published = match s.bus.publish(&self.channel, line).await {
            // The bus lost the counter (see `Emitter::emit`): seed it again.
            Err(crate::bus::BusError::NeedsSeed(_)) => {
                s.seeds.forget(&self.channel);
                s.seeds
                    .ensure(
                        s.bus.as_ref(),
                        s.store.as_ref(),
                        &self.account,
                        &self.agent_id,
                        &self.channel,
                        Numbering::Logs,
                    )
                    .await?;
                s.bus.publish(&self.channel, record.clone()).await?
            }
            other => other?,
        };
        record.insert("seq".into(), published.seq.into());
        let rec = LogRecord {
            agent_id: self.agent_id.clone(),
            seq: published.seq,
            event: Value::Object(record),
        };
        s.store.append_logs(&self.account, vec![rec]).await?;
        Ok(())
    }
}

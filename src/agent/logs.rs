//! A run's log lines: published on `logs:<agent_id>` (the bus numbers them)
//! and persisted, so `GET /v1/agents/{id}/logs` pages them and
//! `…/logs/stream` tails them. Logging is best effort: a line that cannot be
//! published or kept is reported through tracing and never fails the run.

use super::events::Sinks;
use crate::{
    domain::{AgentEvent, AgentId, Channel, LogLevel, RunId},
    store::LogRecord,
};

/// Writes the log lines of one run.
pub struct RunLog {
    sinks: Sinks,
    account: String,
    agent_id: AgentId,
    run_id: RunId,
    channel: Channel,
}

impl RunLog {
    pub fn new(sinks: Sinks, account: &str, agent_id: &AgentId, run_id: &RunId) -> Self {
        Self {
            sinks,
            account: account.to_owned(),
            agent_id: agent_id.clone(),
            run_id: run_id.clone(),
            channel: Channel::Logs(agent_id.clone()),
        }
    }

    pub async fn info(&self, message: impl Into<String>) {
        self.write(LogLevel::Info, message.into()).await
    }

    pub async fn warn(&self, message: impl Into<String>) {
        self.write(LogLevel::Warn, message.into()).await
    }

    pub async fn error(&self, message: impl Into<String>) {
        self.write(LogLevel::Error, message.into()).await
    }

    async fn write(&self, level: LogLevel, message: String) {
        let written = match self.publish(level, &message).await {
            Ok(rec) => self
                .sinks
                .store
                .append_logs(&self.account, vec![rec])
                .await
                .map_err(Into::into),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.lost(&e, &message);
        }
    }

    fn lost(&self, e: &dyn std::fmt::Display, line: &str) {
        tracing::warn!(error = %e, agent_id = %self.agent_id, run_id = %self.run_id, line = %line, "log line lost");
    }

    /// Numbers and delivers one line; its record is what the store keeps.
    async fn publish(
        &self,
        level: LogLevel,
        message: &str,
    ) -> Result<LogRecord, super::events::EmitError> {
        let s = &self.sinks;
        s.seeds
            .ensure(
                s.bus.as_ref(),
                s.store.as_ref(),
                &self.account,
                &self.channel,
            )
            .await?;
        let line = AgentEvent::log(
            self.agent_id.clone(),
            self.run_id.clone(),
            level,
            message.to_owned(),
        );
        let published = match s.bus.publish(&self.channel, &line).await {
            // The bus lost the counter (see `Emitter::emit`): seed it again.
            Err(crate::bus::BusError::NeedsSeed(_)) => {
                s.seeds.forget(&self.channel);
                s.seeds
                    .ensure(
                        s.bus.as_ref(),
                        s.store.as_ref(),
                        &self.account,
                        &self.channel,
                    )
                    .await?;
                s.bus.publish(&self.channel, &line).await?
            }
            other => other?,
        };
        Ok(LogRecord::new(published.seq, line))
    }
}

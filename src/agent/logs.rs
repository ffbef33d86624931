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
        if let Err(e) = self.try_write(level, &message).await {
            tracing::warn!(error = %e, agent_id = %self.agent_id, run_id = %self.run_id, line = %message, "log line lost");
        }
    }

    async fn try_write(
        &self,
        level: LogLevel,
        message: &str,
    ) -> Result<(), super::events::EmitError> {
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
        let rec = LogRecord::new(published.seq, line);
        s.store.append_logs(&self.account, vec![rec]).await?;
        Ok(())
    }
}

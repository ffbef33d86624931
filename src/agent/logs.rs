//! A run's log lines: published on `logs:<agent_id>` (the bus numbers them)
//! and persisted, so `GET /v1/agents/{id}/logs` pages them and
//! `…/logs/stream` tails them. Logging is best effort: a line that cannot be
//! published or kept is reported through tracing and never fails the run.

use std::future::Future;

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
    /// Lines published but not yet stored ([`Self::info_unstored`]): they go
    /// to the store with the next line that is stored.
    unstored: parking_lot::Mutex<Vec<LogRecord>>,
}

impl RunLog {
    pub fn new(sinks: Sinks, account: &str, agent_id: &AgentId, run_id: &RunId) -> Self {
        Self {
            sinks,
            account: account.to_owned(),
            agent_id: agent_id.clone(),
            run_id: run_id.clone(),
            channel: Channel::Logs(agent_id.clone()),
            unstored: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// An info line published now and stored later: by
    /// [`Self::store_unstored`], or with the run's next stored line. For
    /// the line that opens a run: the store has one writer, and a write for
    /// this line awaited here would sit ahead of the run's first events
    /// (issue 22). Live tails and the bus history have it at once.
    pub async fn info_unstored(&self, message: impl Into<String>) {
        let message = message.into();
        match self.publish(LogLevel::Info, &message).await {
            Ok(rec) => self.unstored.lock().push(rec),
            Err(e) => self.lost(&e, &message),
        }
    }

    /// Stores what [`Self::info_unstored`] left, as a future that owns the
    /// lines (a run awaits it beside its first model call). A failure is
    /// reported as any lost line is; it never fails the run.
    pub fn store_unstored(&self) -> impl Future<Output = ()> + Send + 'static {
        let recs = std::mem::take(&mut *self.unstored.lock());
        let to = (!recs.is_empty()).then(|| (self.sinks.store.clone(), self.account.clone()));
        let (agent_id, run_id) = (self.agent_id.clone(), self.run_id.clone());
        async move {
            let Some((store, account)) = to else { return };
            if let Err(e) = store.append_logs(&account, recs).await {
                tracing::warn!(error = %e, %agent_id, %run_id, "log lines lost");
            }
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
            self.lost(&e, &message);
        }
    }

    fn lost(&self, e: &super::events::EmitError, message: &str) {
        tracing::warn!(error = %e, agent_id = %self.agent_id, run_id = %self.run_id, line = %message, "log line lost");
    }

    async fn try_write(
        &self,
        level: LogLevel,
        message: &str,
    ) -> Result<(), super::events::EmitError> {
        let rec = self.publish(level, message).await?;
        let mut recs = std::mem::take(&mut *self.unstored.lock());
        recs.push(rec);
        self.sinks.store.append_logs(&self.account, recs).await?;
        Ok(())
    }

    /// Publishes a line on the agent's log channel (seeding its counter
    /// from the store first if the bus has none).
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

//! [`MeteredBus`]: counts publishes on whatever bus backend it wraps, so the
//! memory and Redis buses report the same metric without each knowing about
//! metrics. Deliveries are counted where subscribers receive
//! ([`crate::bus::Subscription::next`]).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::{
    bus::{Bus, BusError, BusEvent, Control, Subscription},
    domain::{AgentEvent, Channel},
};

/// A [`Bus`] that counts successful publishes by channel kind.
pub struct MeteredBus<B: ?Sized> {
    inner: Arc<B>,
}

impl<B: Bus + ?Sized> MeteredBus<B> {
    pub fn new(inner: Arc<B>) -> Self {
        super::init();
        Self { inner }
    }
}

#[async_trait]
impl<B: Bus + ?Sized> Bus for MeteredBus<B> {
    fn start(&self) {
        self.inner.start();
    }

    async fn publish(
        &self,
        channel: &Channel,
        event: &AgentEvent,
    ) -> Result<Arc<BusEvent>, BusError> {
        let ev = self.inner.publish(channel, event).await?;
        super::event_published(channel);
        Ok(ev)
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        after: Option<u64>,
    ) -> Result<Subscription, BusError> {
        self.inner.subscribe(channel, after).await
    }

    async fn subscribe_run(
        &self,
        channel: &Channel,
        run_id: &str,
    ) -> Result<Subscription, BusError> {
        self.inner.subscribe_run(channel, run_id).await
    }

    async fn kept(&self, channel: &Channel) -> Result<Vec<Arc<BusEvent>>, BusError> {
        self.inner.kept(channel).await
    }

    async fn seed_seq(&self, channel: &Channel, floor: u64) -> Result<(), BusError> {
        self.inner.seed_seq(channel, floor).await
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }

    async fn publish_control(&self, msg: Control) -> Result<(), BusError> {
        self.inner.publish_control(msg).await
    }

    fn control(&self) -> broadcast::Receiver<Control> {
        self.inner.control()
    }
}

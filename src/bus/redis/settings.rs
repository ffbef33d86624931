//! The Redis settings of a gateway ([`RedisBusConfig`], from `weir serve`'s
//! flags) and the start-up errors they can cause. Every part of the gateway
//! that talks to Redis starts from here ([`RedisBusConfig::client`]).

use std::{path::PathBuf, time::Duration};

use super::target::{ConnOptions, RedisTarget, SentinelConfig};
use crate::config::ServeConfig;

/// How long a publish is retried through a Redis outage or failover by
/// default: a Sentinel promotion takes a few seconds, and a run should ride
/// it out rather than fail (the run's `error`/`done` wait as long).
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(20);

/// A Redis setting that cannot be used: a start-up error, named as the
/// operator wrote it. (Redis being down is not one: connections open lazily.)
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("WEIR_REDIS_URL (--redis) is not a usable Redis URL: {0}")]
    Url(redis::RedisError),
    #[error("WEIR_REDIS_CA_FILE (--redis-ca-file) {}: {message}", path.display())]
    CaFile { path: PathBuf, message: String },
    #[error("WEIR_REDIS_SENTINEL (--redis-sentinel): {0}")]
    Sentinel(String),
    #[error("WEIR_REDIS_CLUSTER (--redis-cluster): {0}")]
    Cluster(String),
}

/// How the Redis bus connects and keeps history. Not `Debug`: the URL may
/// hold a password.
#[derive(Clone)]
pub struct RedisBusConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS).
    /// With [`Self::sentinel`] only its user, password, db and TLS count
    /// (empty: none).
    pub url: String,
    /// Find the master through these Sentinels, and follow its failovers.
    pub sentinel: Option<SentinelConfig>,
    /// Seed nodes (`host:port`) of a Redis Cluster to use instead of one
    /// server (empty: none). Events then go over sharded pub/sub.
    pub cluster: Vec<String>,
    /// Prefix of every key and channel (so deployments can share a Redis).
    pub prefix: String,
    /// Events kept per channel for resume.
    pub history_len: usize,
    /// How long an event stays resumable (and an idle channel's keys live).
    pub history_ttl: Duration,
    /// Longest a Redis command may take.
    pub timeout: Duration,
    /// Longest opening a connection may take.
    pub connect_timeout: Duration,
    /// Multiplexed connections publishes are spread over.
    pub connections: usize,
    /// Longest pause between two reconnect attempts of the pub/sub link.
    pub reconnect_max: Duration,
    /// Events a local subscriber may fall behind before it lags.
    pub buffer: usize,
    /// PEM file of the CA to trust for `rediss://` instead of the web roots.
    pub ca_file: Option<PathBuf>,
    /// How long a publish is retried while Redis is unreachable (a
    /// failover) before the publisher is told it failed.
    pub publish_patience: Duration,
}

impl RedisBusConfig {
    /// Defaults (as `weir serve` has them) for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            sentinel: None,
            cluster: Vec::new(),
            prefix: "weir:".into(),
            history_len: 1000,
            history_ttl: Duration::from_secs(3600),
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            connections: 1,
            reconnect_max: Duration::from_secs(5),
            buffer: 1024,
            ca_file: None,
            publish_patience: PUBLISH_PATIENCE,
        }
    }

    /// Where Redis is: the URL's server, or the master the Sentinels name.
    /// Every part of the gateway that talks to Redis gets its connections
    /// from here ([`target`]), so that one bad setting is one start-up
    /// error naming it and every part follows a failover.
    pub fn client(&self) -> Result<RedisTarget, RedisSetupError> {
        if !self.cluster.is_empty() {
            let data = self.data_info()?;
            return RedisTarget::cluster(&self.cluster, data.as_ref(), self.certs()?, self.timeout)
                .map_err(|e| RedisSetupError::Cluster(e.to_string()));
        }
        let Some(sentinel) = &self.sentinel else {
            return self.url_client().map(|c| RedisTarget::Direct(Box::new(c)));
        };
        if sentinel.master.is_empty() {
            return Err(RedisSetupError::Sentinel(
                "WEIR_REDIS_SENTINEL_MASTER (--redis-sentinel-master) is required".into(),
            ));
        }
        let data = self.data_info()?;
        RedisTarget::sentinel(sentinel, data.as_ref(), self.certs()?)
            .map_err(|e| RedisSetupError::Sentinel(e.to_string()))
    }

    /// The data nodes' settings (user, password, db, TLS) from the URL.
    fn data_info(&self) -> Result<Option<redis::ConnectionInfo>, RedisSetupError> {
        if self.url.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.url_client()?.get_connection_info().clone()))
    }

    fn certs(&self) -> Result<Option<redis::TlsCertificates>, RedisSetupError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| RedisSetupError::CaFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    /// The options of the bus's own connections.
    pub fn conn_options(&self) -> ConnOptions {
        ConnOptions {
            connect_timeout: self.connect_timeout,
            response_timeout: self.timeout,
            retries: 2,
            max_delay: self.reconnect_max,
        }
    }

    fn url_client(&self) -> Result<redis::Client, RedisSetupError> {
        let Some(path) = &self.ca_file else {
            return redis::Client::open(self.url.as_str()).map_err(RedisSetupError::Url);
        };
        let pem = std::fs::read(path).map_err(|source| RedisSetupError::CaFile {
            path: path.clone(),
            message: source.to_string(),
        })?;
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        redis::Client::build_with_tls(self.url.as_str(), certs).map_err(|e| {
            RedisSetupError::CaFile {
                path: path.clone(),
                message: e.to_string(),
            }
        })
    }

    /// The settings of `weir serve`, if it was given `--redis`.
    pub fn from_serve(cfg: &ServeConfig) -> Option<Self> {
        let r = &cfg.redis;
        let sentinel = (!cfg.redis_sentinel.is_empty()).then(|| SentinelConfig {
            addrs: cfg.redis_sentinel.clone(),
            master: cfg.redis_sentinel_master.clone().unwrap_or_default(),
            password: cfg.redis_sentinel_password.clone(),
        });
        if sentinel.is_none() && cfg.redis_url.is_none() && cfg.redis_cluster.is_empty() {
            return None;
        }
        Some(Self {
            url: cfg.redis_url.clone().unwrap_or_default(),
            sentinel,
            cluster: cfg.redis_cluster.clone(),
            prefix: r.prefix.clone(),
            history_len: r.history_len,
            history_ttl: Duration::from_secs(r.history_ttl_secs),
            timeout: Duration::from_millis(r.timeout_ms),
            connect_timeout: Duration::from_millis(r.connect_timeout_ms),
            connections: usize::from(r.connections.max(1)),
            reconnect_max: Duration::from_millis(r.reconnect_max_ms),
            buffer: cfg.edge.stream_buffer,
            ca_file: r.ca_file.clone(),
            publish_patience: PUBLISH_PATIENCE,
        })
    }
}

//! Where Redis is: one server (`--redis`), the master a set of Sentinels
//! names (`--redis-sentinel`), followed across failovers, or a Redis Cluster
//! (`--redis-cluster`, see [`super::cluster_target`]).
//!
//! Every part of the gateway that talks to Redis (the bus's publishes and
//! its pub/sub link, the run queue, the edge's limiter, leases and token
//! budgets) gets its connections here, so all of them follow a failover the
//! same way and without a restart:
//! - with one server, a redis-rs `ConnectionManager` (reconnects to it);
//! - with Sentinel, a [`RedisConn::Following`] connection: it asks the
//!   Sentinels for the master when it has no connection, and drops its
//!   connection when a command finds it broken or read-only (a demoted
//!   master), so the next command asks again. The pub/sub link asks for the
//!   master on every (re)connect ([`RedisTarget::client`]);
//! - with a cluster, redis-rs' cluster connection, which routes each command
//!   by its keys' slot and follows MOVED/ASK and failovers itself.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
    AsyncConnectionConfig, Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, RedisResult,
    Value,
};

use super::cluster_target::{ClusterTarget, LazyCluster};

/// How the Sentinels are reached and which master to follow.
#[derive(Clone)]
pub struct SentinelConfig {
    /// `host:port` of each Sentinel.
    pub addrs: Vec<String>,
    /// The master's name in the Sentinels' configuration.
    pub master: String,
    /// The Sentinels' own password, if they require one.
    pub password: Option<String>,
}

/// The Redis a gateway uses. Cheap to clone.
#[derive(Clone)]
pub enum RedisTarget {
    Direct(Box<redis::Client>),
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
    Cluster(Arc<ClusterTarget>),
}

/// Timeouts of one connection.
#[derive(Clone, Copy)]
pub struct ConnOptions {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Reconnect attempts of a `ConnectionManager` (one server only).
    pub retries: usize,
    pub max_delay: Duration,
}

impl RedisTarget {
    /// The Sentinel target; `data` is the `--redis` URL's settings for the
    /// data nodes (user, password, db, TLS), if one was given.
    pub fn sentinel(
        cfg: &SentinelConfig,
        data: Option<&redis::ConnectionInfo>,
        certs: Option<redis::TlsCertificates>,
    ) -> RedisResult<Self> {
        let addrs = cfg
            .addrs
            .iter()
            .map(|a| parse_addr(a))
            .collect::<RedisResult<Vec<_>>>()?;
        let mut b = SentinelClientBuilder::new(addrs, &cfg.master, SentinelServerType::Master)?;
        if let Some(p) = &cfg.password {
            b = b.set_client_to_sentinel_password(p);
        }
        if let Some(info) = data {
            let r = info.redis_settings();
            b = b.set_client_to_redis_db(r.db());
            if let Some(u) = r.username() {
                b = b.set_client_to_redis_username(u);
            }
            if let Some(p) = r.password() {
                b = b.set_client_to_redis_password(p);
            }
            if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
                b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                if let Some(c) = certs {
                    b = b.set_client_to_redis_certificates(c);
                }
            }
        }
        Ok(Self::Sentinel(Arc::new(tokio::sync::Mutex::new(
            b.build()?,
        ))))
    }

    /// The Redis Cluster target (`nodes`: seed `host:port`s).
    pub fn cluster(
        nodes: &[String],
        data: Option<&redis::ConnectionInfo>,
        certs: Option<redis::TlsCertificates>,
        timeout: Duration,
    ) -> RedisResult<Self> {
        ClusterTarget::new(nodes, data, certs, timeout).map(|t| Self::Cluster(Arc::new(t)))
    }

    /// A client for the server to use now (with Sentinel: the current
    /// master). A cluster has no one server: its pub/sub is sharded.
    pub async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            Self::Direct(c) => Ok((**c).clone()),
            Self::Sentinel(s) => s.lock().await.async_get_client().await,
            Self::Cluster(_) => Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis Cluster has no single server",
            ))),
        }
    }

    /// A multiplexed connection that reconnects (and follows failovers) by
    /// itself; opened on first use, so Redis may be down now.
    pub fn connection(&self, o: ConnOptions) -> RedisResult<RedisConn> {
        Ok(match self {
            Self::Direct(c) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(o.connect_timeout))
                    .set_response_timeout(Some(o.response_timeout))
                    .set_number_of_retries(o.retries)
                    .set_max_delay(o.max_delay);
                RedisConn::Direct(ConnectionManager::new_lazy_with_config((**c).clone(), cfg)?)
            }
            Self::Sentinel(s) => RedisConn::Following(Arc::new(Following {
                sentinel: s.clone(),
                options: o,
                current: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
            })),
            Self::Cluster(c) => RedisConn::Cluster(c.connection(o)?),
        })
    }
}

fn parse_addr(addr: &str) -> RedisResult<ConnectionAddr> {
    let bad = || {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "a Sentinel address must be host:port",
            addr.to_owned(),
        ))
    };
    let (host, port) = addr.trim().rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    Ok(ConnectionAddr::Tcp(host.to_owned(), port))
}

/// A connection for every Redis user of the gateway.
#[derive(Clone)]
pub enum RedisConn {
    Direct(ConnectionManager),
    Following(Arc<Following>),
    Cluster(Arc<LazyCluster>),
}

/// A connection to whatever server the Sentinels call master.
pub struct Following {
    sentinel: Arc<tokio::sync::Mutex<SentinelClient>>,
    options: ConnOptions,
    /// The open connection and its generation (`None`: ask the Sentinels).
    current: tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
}

impl Following {
    async fn get(self: &Arc<Self>) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.current.lock().await.as_ref() {
            return Ok(c.clone());
        }
        // The search runs in a task of its own: a caller that gives up
        // (the edge waits 250 ms) must not cancel it, or with a short
        // timeout it would never finish.
        let me = self.clone();
        tokio::spawn(async move { me.resolve().await })
            .await
            .map_err(|_| timed_out("asking the sentinels for the master"))?
    }

    async fn resolve(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let o = self.options;
        let ask = async { self.sentinel.lock().await.async_get_client().await };
        // Each Sentinel is tried in turn: bound the whole search.
        let limit = (o.connect_timeout * 2).max(Duration::from_secs(1));
        let client = tokio::time::timeout(limit, ask)
            .await
            .map_err(|_| timed_out("asking the sentinels for the master"))??;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(o.connect_timeout))
            .set_response_timeout(Some(o.response_timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *current = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Drops connection `generation` if `e` says it is broken or no longer
    /// the master's, so the next command asks the Sentinels again.
    async fn check(&self, generation: u64, e: &RedisError) {
        let stale = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.code() == Some("READONLY");
        if stale {
            let mut current = self.current.lock().await;
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
            }
        }
    }
}

fn timed_out(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    ))
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Direct(m) => m.req_packed_command(cmd),
            Self::Cluster(c) => {
                Box::pin(async move { c.get().await?.req_packed_command(cmd).await })
            }
            Self::Following(f) => Box::pin(async move {
                let (generation, mut conn) = f.get().await?;
                let r = conn.req_packed_command(cmd).await;
                if let Err(e) = &r {
                    f.check(generation, e).await;
                }
                r
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Direct(m) => m.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => Box::pin(async move {
                c.get()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
            Self::Following(f) => Box::pin(async move {
                let (generation, mut conn) = f.get().await?;
                let r = conn.req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &r {
                    f.check(generation, e).await;
                }
                r
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Direct(m) => m.get_db(),
            Self::Following(_) | Self::Cluster(_) => 0,
        }
    }
}

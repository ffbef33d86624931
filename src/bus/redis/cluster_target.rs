//! A Redis Cluster as the gateway's Redis ([`ClusterTarget`]): redis-rs'
//! cluster client does the routing (slot map, MOVED/ASK redirects, topology
//! refresh after a failover or a resharding); this module only builds it
//! from weir's settings, opens its connections lazily, and sends the few
//! commands that must reach every master (PING, INFO) through it.

use std::{sync::Arc, time::Duration};

use redis::{
    aio::AsyncPushSender,
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo},
    ConnectionAddr, RedisResult, Value,
};

use super::target::ConnOptions;

/// The seed nodes and the data nodes' settings of a cluster.
#[derive(Clone)]
pub struct ClusterTarget {
    nodes: Vec<String>,
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    certs: Option<redis::TlsCertificates>,
    timeout: Duration,
}

impl ClusterTarget {
    /// `nodes` are `host:port`; `data` is the `--redis` URL's settings
    /// (user, password, TLS), if one was given.
    pub fn new(
        nodes: &[String],
        data: Option<&redis::ConnectionInfo>,
        certs: Option<redis::TlsCertificates>,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let settings = data.map(|i| i.redis_settings());
        let target = Self {
            nodes: nodes.iter().map(|n| n.trim().to_owned()).collect(),
            username: settings.and_then(|r| r.username().map(str::to_owned)),
            password: settings.and_then(|r| r.password().map(str::to_owned)),
            tls: data.is_some_and(|i| matches!(i.addr(), ConnectionAddr::TcpTls { .. })),
            certs,
            timeout,
        };
        // Checks the addresses now: a typo is a start-up error.
        target.builder(target.timeout, target.timeout).build()?;
        Ok(target)
    }

    fn builder(&self, connect: Duration, response: Duration) -> ClusterClientBuilder {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("redis://{n}")).collect();
        let mut b = ClusterClientBuilder::new(nodes)
            .connection_timeout(connect)
            .response_timeout(response)
            // Redirects and retries are bounded by the caller's timeout
            // anyway; a failover takes a few seconds, so keep trying.
            .retries(6)
            .min_retry_wait(50)
            .max_retry_wait(500);
        if let Some(u) = &self.username {
            b = b.username(u);
        }
        if let Some(p) = &self.password {
            b = b.password(p);
        }
        if self.tls {
            b = b.tls(redis::TlsMode::Secure);
            if let Some(c) = &self.certs {
                b = b.certs(c.clone());
            }
        }
        b
    }

    /// A lazily opened cluster connection for commands.
    pub fn connection(&self, o: ConnOptions) -> RedisResult<Arc<LazyCluster>> {
        let client = self
            .builder(o.connect_timeout, o.response_timeout)
            .build()?;
        Ok(Arc::new(LazyCluster {
            client,
            conn: tokio::sync::OnceCell::new(),
        }))
    }

    /// A RESP3 connection whose pushes (sharded messages, subscription
    /// changes, disconnections) go to `pushes`: the sharded pub/sub link.
    pub async fn pubsub(
        &self,
        o: ConnOptions,
        pushes: impl AsyncPushSender,
    ) -> RedisResult<ClusterConnection> {
        self.builder(o.connect_timeout, o.response_timeout)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()?
            .get_async_connection()
            .await
    }
}

/// A cluster connection opened on first use (the cluster may be down when
/// the gateway starts).
pub struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    pub async fn get(self: &Arc<Self>) -> RedisResult<ClusterConnection> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        // Connecting (slot discovery included) runs in a task of its own: a
        // caller that gives up (the edge waits 250 ms) must not cancel it,
        // or under load it might never finish.
        let me = self.clone();
        let open = async move {
            me.conn
                .get_or_try_init(|| me.client.get_async_connection())
                .await
                .cloned()
        };
        tokio::spawn(open).await.map_err(|_| {
            redis::RedisError::from(std::io::Error::other("connecting to the cluster failed"))
        })?
    }
}

/// Sends `cmd` to every master and returns their answers.
pub async fn on_masters(conn: &mut ClusterConnection, cmd: redis::Cmd) -> RedisResult<Value> {
    conn.route_command(
        cmd,
        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
    )
    .await
}

/// The sorted `run_id`s in the INFO answers of every master: a new one
/// means a failover (or a restart), after which counters may be behind.
pub fn run_ids(info: &Value) -> String {
    let mut ids = Vec::new();
    collect_run_ids(info, &mut ids);
    ids.sort();
    ids.join(",")
}

fn collect_run_ids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::BulkString(b) => text_run_id(&String::from_utf8_lossy(b), out),
        Value::VerbatimString { text, .. } => text_run_id(text, out),
        Value::SimpleString(s) => text_run_id(s, out),
        Value::Array(a) | Value::Set(a) => a.iter().for_each(|x| collect_run_ids(x, out)),
        Value::Map(m) => m.iter().for_each(|(_, x)| collect_run_ids(x, out)),
        _ => {}
    }
}

fn text_run_id(text: &str, out: &mut Vec<String>) {
    if let Some(id) = text.lines().find_map(|l| l.strip_prefix("run_id:")) {
        out.push(id.trim().to_owned());
    }
}

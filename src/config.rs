//! Command line, environment and TOML configuration.
//!
//! clap is the single source of truth: every setting is a flag with a
//! `WEIR_*` environment twin and a default. A `--config FILE` (or
//! `WEIR_CONFIG`) TOML file is applied *underneath* those: each key is the env
//! name without `WEIR_`, lower-cased (`listen`, `data_dir`, `redis_url`, …),
//! and is fed to clap as that env var unless the real environment already
//! sets it. Precedence is therefore flag > environment > file > default, and
//! a bad value anywhere gets clap's message naming the setting. Unknown keys
//! are refused by name.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// weir: a streaming chat and agent gateway.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    /// TOML file with settings (keys are the WEIR_* names without the prefix, lower-case).
    #[arg(long, global = true, env = "WEIR_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of the `Serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (HTTP, SSE, WebSocket, OpenAI-compatible).
    Serve(ServeCommand),
    /// Execute runs from the Redis run queue (needs --redis); takes the settings of `serve` but the listener's TLS and HTTP/2, and serves only /healthz, /readyz and /metrics, over plain HTTP, on --listen.
    Worker(ServeConfig),
    /// Run the internal store alone, for gateways started with --store-url.
    Store(StoreConfig),
    /// Manage API keys directly in the data dir or store.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage accounts directly in the data dir or store.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Set an account's token budgets (made if missing) and print the account as JSON.
    Set(AccountsSet),
}

/// Arguments of `weir accounts set`.
#[derive(Debug, Clone, Args)]
pub struct AccountsSet {
    /// The account (e.g. `default`).
    pub account: String,
    /// Tokens per minute for the whole account (1 to 100000000), or `none` to remove the limit; unchanged when not given.
    #[arg(long, value_parser = limit_or_none::<100_000_000>)]
    pub tpm: Option<Limit>,
    /// Tokens per UTC day for the whole account (1 to 10^12), or `none`; unchanged when not given.
    #[arg(long, value_parser = limit_or_none::<1_000_000_000_000>)]
    pub daily_tokens: Option<Limit>,
    #[command(flatten)]
    pub data: DataConfig,
}

/// A limit given on the command line: a number, or `none` (no limit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Of(u64),
    Unlimited,
}

impl Limit {
    /// As the store keeps it: `None` for no limit.
    pub fn get(self) -> Option<u64> {
        match self {
            Self::Of(n) => Some(n),
            Self::Unlimited => None,
        }
    }
}

/// Parses `1..=MAX` or `none`.
fn limit_or_none<const MAX: u64>(s: &str) -> Result<Limit, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Limit::Unlimited);
    }
    match s.parse::<u64>() {
        Ok(n) if (1..=MAX).contains(&n) => Ok(Limit::Of(n)),
        _ => Err(format!("expected an integer from 1 to {MAX}, or `none`")),
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint a key and print its secret on stdout (and nothing else).
    Create(KeysCreate),
}

/// Where the data lives: an embedded SQLite dir, or a remote `weir store`.
#[derive(Debug, Clone, Args)]
pub struct DataConfig {
    /// Directory of the embedded store's SQLite file.
    #[arg(long, env = "WEIR_DATA_DIR", default_value = "./weir-data")]
    pub data_dir: PathBuf,
    /// URL of a `weir store` to forward CRUD to instead of the embedded store.
    #[arg(long, env = "WEIR_STORE_URL")]
    pub store_url: Option<String>,
    /// Shared secret between gateways and `weir store`.
    #[arg(long, env = "WEIR_STORE_TOKEN", hide_env_values = true)]
    pub store_token: Option<String>,
    /// PostgreSQL URL (postgres://user@host:port/db) for the store instead of SQLite in data_dir; ignored when store_url is set.
    #[arg(long, env = "WEIR_DB", hide_env_values = true)]
    pub db: Option<String>,
}

/// The flags of `weir serve`: every [`ServeConfig`] setting, and the
/// listener's TLS and HTTP/2, which `weir worker` does not take (its probes
/// are plain HTTP).
#[derive(Debug, Clone, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub config: ServeConfig,
    #[command(flatten)]
    pub transport: TransportConfig,
}

impl ServeCommand {
    /// The gateway's settings, its listener's included.
    pub fn into_config(self) -> ServeConfig {
        ServeConfig {
            transport: self.transport,
            ..self.config
        }
    }
}

/// How `weir serve` runs its tasks (`--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeMode {
    /// One multi-threaded, work-stealing runtime.
    Shared,
    /// One single-threaded runtime per core ([`crate::cores`]).
    PerCore,
}

/// Settings of `weir serve` (and, but the listener's, of `weir worker`).
#[derive(Debug, Clone, Parser)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How connections are served: `shared` (one multi-threaded, work-stealing runtime) or `per-core` (a single-threaded runtime per core, each with its own listener on the same port (SO_REUSEPORT) and its own provider connections: a connection's wake-ups stay on one thread).
    #[arg(long, env = "WEIR_RUNTIME", value_enum, default_value_t = RuntimeMode::Shared)]
    pub runtime: RuntimeMode,
    /// Serving loops with `--runtime per-core`: 0 for one per core the process may use.
    #[arg(long, env = "WEIR_CORES", default_value_t = 0)]
    pub cores: usize,
    #[command(flatten)]
    pub data: DataConfig,
    /// Redis URL for cross-gateway fan-out (redis:// or rediss://).
    #[arg(long = "redis", env = "WEIR_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis Sentinels (host:port,…): the gateway finds the master through them and follows its failovers without a restart. --redis then only gives the data nodes' user, password, db and TLS (its host is ignored).
    #[arg(
        long = "redis-sentinel",
        env = "WEIR_REDIS_SENTINEL",
        value_delimiter = ','
    )]
    pub redis_sentinel: Vec<String>,
    /// The master's name in the Sentinels' configuration (required with --redis-sentinel).
    #[arg(long = "redis-sentinel-master", env = "WEIR_REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,
    /// The Sentinels' own password (requirepass of sentinel.conf), if they need one.
    #[arg(long = "redis-sentinel-password", env = "WEIR_REDIS_SENTINEL_PASSWORD")]
    pub redis_sentinel_password: Option<String>,
    /// Redis Cluster seed nodes (host:port,…): events go over sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7+) and every key is hash-tagged to one slot per script. --redis then only gives the data nodes' user, password and TLS (its host is ignored).
    #[arg(
        long = "redis-cluster",
        env = "WEIR_REDIS_CLUSTER",
        value_delimiter = ','
    )]
    pub redis_cluster: Vec<String>,
    /// Base URL of an OpenAI-compatible provider for `upstream/<model>`.
    #[arg(long, env = "WEIR_PROVIDER_URL")]
    pub provider_url: Option<String>,
    /// API key sent to the provider.
    #[arg(long, env = "WEIR_PROVIDER_KEY", hide_env_values = true)]
    pub provider_key: Option<String>,
    /// Seconds to wait for an upstream model's first token.
    #[arg(long, env = "WEIR_FIRST_TOKEN_TIMEOUT_SECS", default_value_t = 60)]
    pub first_token_timeout_secs: u64,
    /// Seconds an upstream stream may stay silent after its first token.
    #[arg(long, env = "WEIR_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// A key secret created with every scope on first start (for scripts and CI).
    #[arg(long, env = "WEIR_BOOTSTRAP_KEY", hide_env_values = true)]
    pub bootstrap_key: Option<String>,
    /// Events kept per channel in memory for resume.
    #[arg(long, env = "WEIR_HISTORY_LEN", default_value_t = 1000)]
    pub history_len: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "WEIR_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Seconds before a non-streaming request times out.
    #[arg(long, env = "WEIR_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Seconds between `: ping` comments on SSE streams.
    #[arg(long, env = "WEIR_SSE_PING_SECS", default_value_t = 15)]
    pub sse_ping_secs: u64,
    /// Seconds between the server's WebSocket pings (a socket silent for
    /// max(90 s, three intervals) is closed).
    #[arg(long, env = "WEIR_WS_PING_SECS", default_value_t = 30)]
    pub ws_ping_secs: u64,
    /// Runs this process executes at once from the Redis run queue (with --redis). 0: a gateway that only queues runs for `weir worker` processes. Without --redis runs always execute in the gateway.
    #[arg(long, env = "WEIR_WORKERS", default_value_t = 16)]
    pub workers: usize,
    /// Seconds a worker may go without renewing its claim on a run before another worker reclaims the run (a started run then ends with `error` `worker_lost`).
    #[arg(long, env = "WEIR_RUN_CLAIM_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub run_claim_secs: u64,
    /// Default steps a run may take before it stops with `max_steps`.
    #[arg(long, env = "WEIR_MAX_STEPS", default_value_t = 10)]
    pub max_steps: u32,
    /// Seconds a tool call that needs approval waits for a decision before it counts as denied (`expired`).
    #[arg(long, env = "WEIR_APPROVAL_TIMEOUT_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub approval_timeout_secs: u64,
    /// Seconds running runs (and their streams) get to finish after SIGTERM before they are cancelled.
    #[arg(long, env = "WEIR_GRACE_SECS", default_value_t = 30)]
    pub grace_secs: u64,
    /// Seconds after SIGTERM during which `/readyz` answers 503 but the listener still accepts, so load balancers take the gateway out before connections are refused.
    #[arg(long, env = "WEIR_DRAIN_DELAY_SECS", default_value_t = 5)]
    pub drain_delay_secs: u64,
    /// Seconds over which idle streams (SSE tails, WebSockets) are closed, in small random batches, once the listener closes; each client gets a random reconnect hint over the same window. 0: all at once. Capped at the grace period.
    #[arg(long, env = "WEIR_DRAIN_SPREAD_SECS", default_value_t = 10)]
    pub drain_spread_secs: u64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "WEIR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Origins allowed to call the gateway from a browser (CORS): `*`, or a comma list like `https://chat.example.com,http://localhost:5173`. Unset: same-origin only.
    #[arg(long, env = "WEIR_CORS_ORIGIN", value_parser = crate::web::cors::validate)]
    pub cors_origin: Option<String>,
    /// Let webhook tools reach loopback, private, link-local and other non-public addresses (off: public addresses only, so a tenant's tool URL cannot reach the deployment's own network).
    #[arg(long, env = "WEIR_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
    #[command(flatten)]
    pub webhooks: crate::webhooks::WebhookConfig,
    #[command(flatten)]
    pub edge: EdgeConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub audit: AuditConfig,
    /// TLS and HTTP/2 on the listener: flags of `weir serve` alone
    /// ([`ServeCommand`]); plain HTTP with the defaults otherwise.
    #[arg(skip)]
    pub transport: TransportConfig,
    /// Settings only tests can change: no flag, env twin or TOML key.
    #[arg(skip)]
    pub test_only: TestOnly,
    /// The config file's `[[providers]]` and `[[routes]]` (lists, so no
    /// flag or env twin: [`crate::providers::config`]).
    #[arg(skip)]
    pub providers: crate::providers::ProvidersConfig,
}

/// TLS and HTTP/2 on the listener (src/tls.rs, src/http/serve/;
/// protocol/transport.md).
#[derive(Debug, Clone, Args)]
pub struct TransportConfig {
    /// PEM file of the certificate chain to serve HTTPS with (with --tls-key; unset: plain HTTP). Reloaded when it changes or on SIGHUP.
    #[arg(long, env = "WEIR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WEIR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds between checks of the TLS files for a change (0: reload on SIGHUP only).
    #[arg(long, env = "WEIR_TLS_RELOAD_SECS", default_value_t = 10)]
    pub tls_reload_secs: u64,
    /// Serve HTTP/2: over TLS when the client offers `h2` (ALPN), and as h2c with prior knowledge on a plain listener (`false`: HTTP/1.1 only).
    #[arg(long, env = "WEIR_HTTP2", default_value_t = true, action = clap::ArgAction::Set)]
    pub http2: bool,
    /// Concurrent streams a client may open on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "WEIR_HTTP2_MAX_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams: u32,
}

impl Default for TransportConfig {
    /// The flags' defaults (plain HTTP) as clap declares them, the
    /// environment left unread.
    fn default() -> Self {
        let cmd = Self::augment_args(clap::Command::new("defaults")).mut_args(|a| a.env(None));
        let matches = cmd
            .try_get_matches_from(["defaults"])
            .expect("the defaults parse");
        Self::from_arg_matches(&matches).expect("the defaults parse")
    }
}

impl TransportConfig {
    /// The TLS files, when TLS is on.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            poll: (self.tls_reload_secs > 0)
                .then(|| std::time::Duration::from_secs(self.tls_reload_secs)),
            http2: self.http2,
        })
    }
}

/// Knobs that let a test drive every route quickly (the schemathesis run
/// of tests/api/openapi.rs); a deployed gateway always has the defaults.
#[derive(Debug, Clone, Default)]
pub struct TestOnly {
    /// End every endless SSE stream (the `GET` routes of transport `Sse`)
    /// this long after its response starts.
    pub sse_cut: Option<std::time::Duration>,
    /// The longest `echo_delay_ms` the echo model honours (default 60 s).
    pub max_echo_delay: Option<std::time::Duration>,
}

/// How the Redis bus (`--redis`) talks to Redis (src/bus/redis/).
#[derive(Debug, Clone, Args)]
pub struct RedisConfig {
    /// Prefix of every Redis key and channel weir uses, so two deployments can share one Redis.
    #[arg(
        long = "redis-prefix",
        env = "WEIR_REDIS_PREFIX",
        default_value = "weir:"
    )]
    pub prefix: String,
    /// Events kept per channel in Redis for resume (stream MAXLEN; approximate above 100).
    #[arg(
        id = "redis_history_len",
        long = "redis-history-len",
        env = "WEIR_REDIS_HISTORY_LEN",
        default_value_t = 1000
    )]
    pub history_len: usize,
    /// Seconds an event stays resumable from Redis (and an idle channel's keys live).
    #[arg(long = "redis-history-ttl-secs", env = "WEIR_REDIS_HISTORY_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub history_ttl_secs: u64,
    /// Milliseconds a Redis command (publish, history read, ping) may take before it fails.
    #[arg(long = "redis-timeout-ms", env = "WEIR_REDIS_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Milliseconds to open a connection to Redis.
    #[arg(long = "redis-connect-timeout-ms", env = "WEIR_REDIS_CONNECT_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_ms: u64,
    /// Multiplexed connections publishes are spread over (each pipelines many commands; 1 is usually enough).
    #[arg(long = "redis-connections", env = "WEIR_REDIS_CONNECTIONS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
    /// Longest pause, in milliseconds, between two attempts to reconnect the pub/sub connection.
    #[arg(long = "redis-reconnect-max-ms", env = "WEIR_REDIS_RECONNECT_MAX_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    pub reconnect_max_ms: u64,
    /// PEM file of the CA that signed the Redis server's certificate (rediss:// with a private CA; default: the public web roots).
    #[arg(long = "redis-ca-file", env = "WEIR_REDIS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The audit log (src/audit/) and how the client's address is told.
#[derive(Debug, Clone, Args)]
pub struct AuditConfig {
    /// Days an audit row is kept before it is deleted (checked hourly).
    #[arg(long, env = "WEIR_AUDIT_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub audit_retention_days: u64,
    /// Proxies whose `X-Forwarded-For` is believed, as a comma list of CIDR blocks or addresses (`10.0.0.0/8,fd00::/8,192.0.2.1`); the client is then the right-most address of the header that is not one of them. Unset: the socket peer is the client and the header is ignored.
    #[arg(long, env = "WEIR_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::audit::ProxyNet>,
}

/// Limits at the edge (src/edge/): rate limits, stream caps, header size.
#[derive(Debug, Clone, Args)]
pub struct EdgeConfig {
    /// Enforce each key's requests per minute (`false` turns rate limiting off).
    #[arg(long, env = "WEIR_RATE_LIMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limit: bool,
    /// Requests per minute of a key minted through POST /v1/keys without `rpm`.
    #[arg(long, env = "WEIR_RPM_PER_KEY", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rpm_per_key: u32,
    /// Concurrent runs per key (across all gateways and workers when Redis is set), for keys without their own `max_runs`; more get 429 `too_many_runs`.
    #[arg(long, env = "WEIR_MAX_RUNS_PER_KEY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_runs_per_key: u32,
    /// Tokens per minute per key, for keys without their own `tpm` (unset: unlimited).
    #[arg(long, env = "WEIR_TPM_PER_KEY", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub tpm_per_key: Option<u64>,
    /// Tokens per UTC day per key, for keys without their own `daily_tokens` (unset: unlimited).
    #[arg(long, env = "WEIR_DAILY_TOKENS_PER_KEY", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000))]
    pub daily_tokens_per_key: Option<u64>,
    /// Concurrent WebSockets per key (across all gateways when Redis is set), for keys without their own `max_websockets`. Any positive number: the operator's default is not bound by the 10,000 a key's own value may be (weir-load holds 100,000 streams with one key).
    #[arg(long, env = "WEIR_MAX_WS_PER_KEY", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_ws_per_key: u32,
    /// Concurrent SSE streams per key (across all gateways when Redis is set), for keys without their own `max_sse_streams`. Any positive number, as `max_ws_per_key`.
    #[arg(long, env = "WEIR_MAX_SSE_PER_KEY", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sse_per_key: u32,
    /// Concurrent streams (SSE and WebSocket) on this gateway; more get 503.
    #[arg(long, env = "WEIR_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: u32,
    /// Relays (`upstream/…` and routes on /v1/chat/completions) in flight on this process; more get 503 `unavailable` with `Retry-After: 1` at once instead of queueing (0: unlimited).
    #[arg(long, env = "WEIR_MAX_RELAYS_IN_FLIGHT", default_value_t = 2048)]
    pub max_relays_in_flight: u32,
    /// Seconds a stream's or run's slot lease lives in Redis unless refreshed (a dead gateway's or worker's slots free after this).
    #[arg(long, env = "WEIR_LEASE_TTL_SECS", default_value_t = 30)]
    pub lease_ttl_secs: u64,
    /// Events a stream may fall behind before it is closed with `lagged`.
    #[arg(long, env = "WEIR_STREAM_BUFFER", default_value_t = 1024)]
    pub stream_buffer: usize,
    /// Largest request head (request line plus headers) accepted, in bytes (larger: 431).
    #[arg(long, env = "WEIR_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
}

/// Settings of `weir store`.
#[derive(Debug, Clone, Parser)]
pub struct StoreConfig {
    /// Address the store listens on.
    #[arg(long, env = "WEIR_STORE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Directory of the SQLite file.
    #[arg(long, env = "WEIR_DATA_DIR", default_value = "./weir-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user@host:port/db) to keep the data in instead of SQLite; several `weir store` processes may share one.
    #[arg(long, env = "WEIR_DB", hide_env_values = true)]
    pub db: Option<String>,
    /// Token gateways must send (`Authorization: Bearer …`). Required.
    #[arg(long, env = "WEIR_STORE_TOKEN", hide_env_values = true)]
    pub store_token: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "WEIR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Arguments of `weir keys create`.
#[derive(Debug, Clone, Args)]
pub struct KeysCreate {
    /// Comma-separated scopes (agents:read, agents:write, tools:read, tools:write, chat, logs, keys, audit, *).
    #[arg(long, env = "WEIR_KEYS_SCOPES", value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// Account the key belongs to (made if missing).
    #[arg(long, env = "WEIR_KEYS_ACCOUNT", default_value = "default")]
    pub account: String,
    /// Free-form label.
    #[arg(long, env = "WEIR_KEYS_LABEL", default_value = "")]
    pub label: String,
    /// Requests per minute for this key.
    #[arg(long, env = "WEIR_KEYS_RPM", default_value_t = 120)]
    pub rpm: u32,
    /// Tokens per minute (unset: the gateway's default).
    #[arg(long, env = "WEIR_KEYS_TPM", value_parser = clap::value_parser!(u64).range(1..))]
    pub tpm: Option<u64>,
    /// Tokens per UTC day (unset: the gateway's default).
    #[arg(long, env = "WEIR_KEYS_DAILY_TOKENS", value_parser = clap::value_parser!(u64).range(1..))]
    pub daily_tokens: Option<u64>,
    /// Concurrent runs (unset: the gateway's default).
    #[arg(long, env = "WEIR_KEYS_MAX_RUNS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_runs: Option<u32>,
    /// Concurrent WebSockets (unset: the gateway's default).
    #[arg(long, env = "WEIR_KEYS_MAX_WEBSOCKETS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_websockets: Option<u32>,
    /// Concurrent SSE streams (unset: the gateway's default).
    #[arg(long, env = "WEIR_KEYS_MAX_SSE_STREAMS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sse_streams: Option<u32>,
    /// Models the key may use, comma-separated (`upstream/x` and `x` are one
    /// model; unset: any model).
    #[arg(long, env = "WEIR_KEYS_MODELS", value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Seconds until the key expires (unset: never).
    #[arg(long, env = "WEIR_KEYS_TTL_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl_secs: Option<u64>,
    #[command(flatten)]
    pub data: DataConfig,
}

impl ServeConfig {
    /// Whether Redis is configured (`--redis`, `--redis-sentinel` or
    /// `--redis-cluster`).
    pub fn uses_redis(&self) -> bool {
        self.redis_url.is_some()
            || !self.redis_sentinel.is_empty()
            || !self.redis_cluster.is_empty()
    }

    /// The longest `echo_delay_ms` the echo model honours.
    pub fn max_echo_delay(&self) -> std::time::Duration {
        self.test_only
            .max_echo_delay
            .unwrap_or(crate::agent::models::MAX_ECHO_DELAY)
    }

    /// Defaults with the given data dir, listening on an ephemeral port: the
    /// starting point for tests and embedders. Without a drain delay or
    /// spread (a stopped test gateway stops at once).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut cfg = Self::try_parse_from(["serve", "--listen", "127.0.0.1:0"])
            .expect("defaults always parse");
        cfg.data.data_dir = data_dir.into();
        cfg.drain_delay_secs = 0;
        cfg.drain_spread_secs = 0;
        cfg
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
}

/// Parses the command line with the TOML file (if any) layered underneath.
pub fn load() -> Result<Cli, ConfigError> {
    let args: Vec<String> = std::env::args().collect();
    let path = config_path(&args);
    if let Some(path) = &path {
        for (name, value) in file_env(path)? {
            if std::env::var_os(&name).is_none() {
                // SAFETY-by-construction: called from `main` before any thread starts.
                std::env::set_var(name, value);
            }
        }
    }
    let mut cli = Cli::parse_from(args);
    if let Some(path) = &path {
        let lists = file_providers(path)?;
        match &mut cli.command {
            Command::Serve(c) => c.config.providers = lists,
            Command::Worker(c) => c.providers = lists,
            _ => {}
        }
    }
    Ok(cli)
}

/// Keys of the file that are lists of tables, read by [`file_providers`].
const LIST_KEYS: [&str; 2] = ["providers", "routes"];

/// The file's `[[providers]]` and `[[routes]]`, checked, secrets resolved.
pub fn file_providers(
    path: &std::path::Path,
) -> Result<crate::providers::ProvidersConfig, ConfigError> {
    let table = read_table(path)?;
    crate::providers::ProvidersConfig::from_table(&table).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn read_table(path: &std::path::Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// `--config X`, `--config=X` or `WEIR_CONFIG`.
fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("WEIR_CONFIG").map(PathBuf::from)
}

/// Every env name any subcommand accepts, lower-cased without `WEIR_`.
pub fn known_keys() -> BTreeMap<String, String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeMap<String, String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                if let Some(key) = env.strip_prefix("WEIR_") {
                    out.insert(key.to_ascii_lowercase(), env.to_owned());
                }
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(&Cli::command(), &mut out);
    out.remove("config");
    out
}

/// Reads the TOML file into `(WEIR_NAME, value)` pairs, refusing unknown keys.
pub fn file_env(path: &std::path::Path) -> Result<Vec<(String, String)>, ConfigError> {
    let table = read_table(path)?;
    let known = known_keys();
    let mut out = Vec::new();
    for (key, value) in table {
        if LIST_KEYS.contains(&key.as_str()) {
            continue;
        }
        let Some(env) = known.get(&key) else {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
                known: known.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            // A list setting (`trusted_proxies`): clap splits it on commas.
            toml::Value::Array(items) if items.iter().all(|i| i.is_str()) => items
                .iter()
                .filter_map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(ConfigError::Parse {
                    path: path.to_owned(),
                    message: format!(
                        "key `{key}` must be a string, number, boolean or list of strings, not {}",
                        other.type_str()
                    ),
                })
            }
        };
        out.push((env.clone(), text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_serve_flag_has_an_env_twin() {
        let keys = known_keys();
        for k in [
            "listen",
            "data_dir",
            "store_url",
            "redis_url",
            "bootstrap_key",
            "store_token",
        ] {
            assert!(keys.contains_key(k), "missing {k}");
        }
    }

    #[test]
    fn unknown_file_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:1\"\nlisten_addr = 3\n").unwrap();
        let err = file_env(&p).unwrap_err().to_string();
        assert!(err.contains("`listen_addr`"), "{err}");
    }

    #[test]
    fn file_values_become_env_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:1\"\nhistory_len = 5\n").unwrap();
        let pairs = file_env(&p).unwrap();
        assert!(pairs.contains(&("WEIR_LISTEN".into(), "127.0.0.1:1".into())));
        assert!(pairs.contains(&("WEIR_HISTORY_LEN".into(), "5".into())));
    }

    #[test]
    fn a_list_of_strings_is_a_comma_list() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        let pairs = file_env(&p).unwrap();
        assert_eq!(
            pairs,
            [("WEIR_TRUSTED_PROXIES".into(), "10.0.0.0/8,::1".into())]
        );
        std::fs::write(&p, "trusted_proxies = [1]\n").unwrap();
        assert!(file_env(&p).is_err(), "only strings");
    }

    #[test]
    fn provider_lists_are_read_apart_from_the_flat_keys() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/providers.toml");
        let pairs = file_env(&path).expect("the flat keys are valid");
        assert!(pairs.iter().all(|(k, _)| k.starts_with("WEIR_")));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("api_key_env = \"OPENAI_API_KEY\"", "api_key = \"k1\"")
            .replace("api_key_env = \"GROQ_API_KEY\"", "api_key = \"k2\"");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(&p, text).unwrap();
        let lists = file_providers(&p).expect("config/providers.toml is valid");
        assert_eq!(lists.providers.len(), 2);
        assert_eq!(lists.routes.len(), 2);
        std::fs::write(
            &p,
            "[[routes]]\nname = \"x\"\ntargets = [{ provider = \"nope\", model = \"m\" }]\n",
        )
        .unwrap();
        let err = file_providers(&p).unwrap_err().to_string();
        assert!(err.contains("unknown provider `nope`"), "{err}");
    }

    #[test]
    fn shipped_config_parses_and_documents_every_key() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/weir.toml");
        file_env(&path).expect("config/weir.toml is valid");
        let text = std::fs::read_to_string(&path).unwrap();
        for (key, env) in known_keys() {
            assert!(
                text.contains(&format!("{key} =")),
                "config/weir.toml lacks `{key}`"
            );
            assert!(text.contains(&env), "config/weir.toml does not name {env}");
        }
    }
}

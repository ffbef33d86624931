//! The settings of outbound webhooks and of where weir may connect
//! (protocol/limits.md, "Webhooks").

use std::{net::IpAddr, time::Duration};

use clap::Args;
use ipnet::IpNet;

/// Webhook deliveries and the egress allow-list (a flattened part of
/// [`crate::config::ServeConfig`]).
#[derive(Debug, Clone, Args)]
pub struct WebhookConfig {
    /// Key (32 bytes: 64 hex digits or base64) that webhook signing secrets are encrypted with in the store. Unset: a key generated into `<data dir>/webhook-secret.key`; gateways sharing a PostgreSQL store must all be given the same key.
    #[arg(long, env = "WEIR_WEBHOOK_SECRET_KEY", hide_env_values = true)]
    pub webhook_secret_key: Option<String>,
    /// Seconds a webhook delivery is retried for before it is marked failed (from the event, or from a manual retry).
    #[arg(long, env = "WEIR_WEBHOOK_RETRY_WINDOW_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_window_secs: u64,
    /// Milliseconds before the second attempt of a failed webhook delivery (±20% jitter); each later wait doubles, up to one hour.
    #[arg(long, env = "WEIR_WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub webhook_retry_base_ms: u64,
    /// Seconds a finished webhook delivery (delivered or failed) is kept, with its attempts, before it is deleted; 0 keeps them forever.
    #[arg(long, env = "WEIR_WEBHOOK_RETENTION_SECS", default_value_t = 604_800)]
    pub webhook_retention_secs: u64,
    /// Addresses (CIDRs or single IPs, comma-separated, e.g. `127.0.0.1/32,10.1.0.0/16`) that webhook deliveries and webhook tools may reach although they are not public. Every other non-public address stays refused.
    #[arg(long, env = "WEIR_EGRESS_ALLOW", value_delimiter = ',', value_parser = parse_net)]
    pub egress_allow: Vec<IpNet>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            webhook_secret_key: None,
            webhook_retry_window_secs: 86_400,
            webhook_retry_base_ms: 5_000,
            webhook_retention_secs: 604_800,
            egress_allow: Vec::new(),
        }
    }
}

impl WebhookConfig {
    /// How long deliveries are retried.
    pub fn retry_window(&self) -> Duration {
        Duration::from_secs(self.webhook_retry_window_secs)
    }

    /// How long finished deliveries are kept (`None`: forever).
    pub fn retention(&self) -> Option<Duration> {
        (self.webhook_retention_secs > 0).then(|| Duration::from_secs(self.webhook_retention_secs))
    }

    /// The wait before the second attempt.
    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.webhook_retry_base_ms)
    }
}

/// A CIDR, or one address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not a CIDR (like 127.0.0.1/32) or an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_single_addresses_parse() {
        assert_eq!(
            parse_net("127.0.0.1/32").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(parse_net("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert!(parse_net("localhost").is_err());
    }
}

//! The command line: `weir-load <scenario> [options]`, plus options every
//! scenario shares (which weir to run, extra gateway flags, `--json`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::scenario::{
    bus, connections, drain, edge, failover, fallback, fanout, peer, proxy, rest, runs, shards,
    soak, transport, webhooks,
};

/// Load generator and benchmarks for weir.
#[derive(Debug, Parser)]
#[command(name = "weir-load", version, about)]
pub struct Cli {
    /// The weir binary to start (default: `weir` next to this executable,
    /// else an in-process gateway). Use the release build for figures.
    #[arg(long, global = true, env = "WEIR_LOAD_WEIR_BIN")]
    pub weir_bin: Option<PathBuf>,
    /// An extra flag for every gateway started (repeatable), e.g.
    /// `--gateway-arg=--history-len=100`.
    #[arg(long = "gateway-arg", global = true, allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
    /// Also write the figures as JSON here.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Run the scenario this many times, one after the other; the JSON
    /// then holds one report per run (BENCHMARKS.md's medians of five).
    #[arg(long, global = true, default_value_t = 1)]
    pub repeat: u32,
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    pub threads: usize,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// N idle SSE/WebSocket connections: RSS per connection, connect rate, pings.
    Connections(connections::Opts),
    /// S subscribers, P events/s: publish-to-delivery latency and deliveries/s.
    Fanout(fanout::Opts),
    /// A rolling restart: followers on A move to B when A drains; reconnect peak, B's p99, store requests.
    Drain(drain::Opts),
    /// OpenAI streaming through weir vs straight to a fake provider, open-loop.
    Proxy(proxy::Opts),
    /// Routes whose first target fails (500, a stall, a dropped connection): the TTFT the fallback adds.
    Fallback(fallback::Opts),
    /// The proxy scenario against LiteLLM's proxy as well, with the ratio and a plot.
    Peer(peer::Opts),
    /// Agent runs end to end: in the gateway, through the Redis run queue, on `weir worker`s.
    Runs(runs::Opts),
    /// REST point reads (`GET /v1/agents/{id}`) under wrk, per store and limiter.
    Rest(rest::Opts),
    /// The bus alone: Redis publish cost, fan-out through each bus (no HTTP).
    Bus(bus::Opts),
    /// Redis bus publishes/s through one Redis vs a 3-shard Redis Cluster, with each server's CPU per publish.
    Shards(shards::Opts),
    /// A Redis master SIGKILLed under steady streams (Sentinel, Redis Cluster): each stream's gap, /readyz's return.
    Failover(failover::Opts),
    /// The cost of one rate-limit check, local and through Redis.
    Edge(edge::Opts),
    /// TLS and HTTP/2: handshake rate, idle stream memory and fan-out per transport mode.
    Transport(transport::Opts),
    /// Webhook deliveries to a local receiver, and notify's cost per run with 0, 1 and N subscriptions.
    Webhooks(webhooks::Opts),
    /// Render BENCHMARKS.md's generated blocks from the results files, or
    /// check them (see loadtest/README.md).
    Report(crate::render::doc::Opts),
    /// Open streams with steady traffic for a long time; RSS must stay flat.
    Soak(soak::Opts),
    /// Every scenario at tiny scale, in seconds (part of the test suite).
    Smoke {
        /// Where the smoke plot goes.
        #[arg(long, default_value = "target/weir-load")]
        plot_dir: PathBuf,
    },
    /// Redraw the peer plot from a `peer --json` file.
    Plot {
        json: PathBuf,
        #[arg(long, default_value = "loadtest/plots/peer_latency.png")]
        out: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks over every subcommand (the ones a
    /// debug build runs on first use: a clash fails here, not in a
    /// benchmark run), and the commands of loadtest/run_all.sh parse.
    #[test]
    fn the_command_line_is_consistent_and_run_all_parses() {
        super::Cli::command().debug_assert();
        let script = include_str!("../run_all.sh");
        let mut lines = 0;
        let joined = script.replace("\\\n", " ");
        for line in joined
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("$L "))
        {
            let args = line
                .replace("$R", "loadtest/results")
                .replace("$rate", "30");
            let argv = std::iter::once("weir-load").chain(
                args.split_whitespace()
                    .skip(1)
                    .take_while(|w| !w.starts_with('#')),
            );
            if let Err(e) = <super::Cli as clap::Parser>::try_parse_from(argv) {
                panic!("{line}: {e}");
            }
            lines += 1;
        }
        assert!(lines >= 14, "{lines} commands found in run_all.sh");
    }
}

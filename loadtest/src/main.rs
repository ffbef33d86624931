//! `weir-load`: runs one scenario, prints its tables, optionally writes JSON.
//! Exit code 0 when every sanity check passed (targets are reported, not
//! enforced), 1 otherwise, 2 on bad arguments.

use std::process::ExitCode;

use clap::Parser;
use weir_load::{
    cli::{Cli, Scenario},
    gateway::Launch,
    report::{self, Report},
    scenario,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let weir = Launch::pick(cli.weir_bin.clone()).describe();
    match rt.block_on(run(&cli)) {
        Ok(reports) => {
            for r in &reports {
                r.print();
            }
            if let Some(path) = &cli.json {
                if let Err(e) = report::write_json(path, &reports, &weir) {
                    eprintln!("weir-load: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if reports.iter().all(Report::sane) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("weir-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<Vec<Report>> {
    let launch = Launch::pick(cli.weir_bin.clone());
    if !matches!(cli.scenario, Scenario::Report(_) | Scenario::Plot { .. }) {
        eprintln!("weir-load: gateways from {}", launch.describe());
    }
    let mut reports = Vec::new();
    for _ in 0..cli.repeat.max(1) {
        reports.extend(once(cli, &launch).await?);
    }
    Ok(reports)
}

/// One run of the scenario.
async fn once(cli: &Cli, launch: &Launch) -> anyhow::Result<Vec<Report>> {
    let (launch, extra) = (launch.clone(), &cli.gateway_args);
    Ok(match &cli.scenario {
        Scenario::Connections(o) => vec![scenario::connections::run(&launch, extra, o).await?],
        Scenario::Fanout(o) => vec![scenario::fanout::run(&launch, extra, o).await?],
        Scenario::Drain(o) => vec![scenario::drain::run(&launch, extra, o).await?],
        Scenario::Proxy(o) => vec![scenario::proxy::run(&launch, extra, o).await?],
        Scenario::Fallback(o) => vec![scenario::fallback::run(&launch, extra, o).await?],
        Scenario::Peer(o) => vec![scenario::peer::run(&launch, extra, o).await?],
        Scenario::Runs(o) => vec![scenario::runs::run(&launch, extra, o).await?],
        Scenario::Rest(o) => vec![scenario::rest::run(&launch, extra, o).await?],
        Scenario::Bus(o) => vec![scenario::bus::run(o).await?],
        Scenario::Shards(o) => vec![scenario::shards::run(o).await?],
        Scenario::Failover(o) => vec![scenario::failover::run(&launch, extra, o).await?],
        Scenario::Edge(o) => vec![scenario::edge::run(o).await?],
        Scenario::Transport(o) => vec![scenario::transport::run(&launch, extra, o).await?],
        Scenario::Webhooks(o) => vec![scenario::webhooks::run(&launch, extra, o).await?],
        Scenario::Report(o) => {
            weir_load::render::doc::run(o)?;
            Vec::new()
        }
        Scenario::Soak(o) => vec![scenario::soak::run(&launch, extra, o).await?],
        Scenario::Smoke { plot_dir } => {
            scenario::smoke::run(&launch, extra, plot_dir.clone()).await?
        }
        Scenario::Plot { json, out } => {
            weir_load::plot::from_peer_json(json, out)?;
            Vec::new()
        }
    })
}

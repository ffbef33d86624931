//! The `weir` binary: parse configuration, set up logging, dispatch.

use std::process::ExitCode;

use weir::config::{self, Command, KeysCommand};

fn main() -> ExitCode {
    let cli = match config::load() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(cfg) => {
            weir::telemetry::init(&cfg.log_format);
            let gateway = weir::Gateway::bind(cfg).await?;
            gateway.run(weir::shutdown::signal()).await
        }
        Command::Store(cfg) => {
            weir::telemetry::init(&cfg.log_format);
            weir::store::server::run_store(cfg, weir::shutdown::signal()).await
        }
        Command::Keys {
            command: KeysCommand::Create(args),
        } => {
            let secret = weir::cli::create_key(args).await?;
            println!("{secret}");
            Ok(())
        }
    }
}

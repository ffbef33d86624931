//! The `weir` binary: parse configuration, set up logging, dispatch.

use std::process::ExitCode;

use weir::config::{self, AccountsCommand, Command, KeysCommand, RuntimeMode};

/// mimalloc, not glibc's allocator: a relayed request makes ~130 heap
/// allocations, and glibc spent ~40,000 instructions per request on them
/// (a sixth of the relay's count, with `malloc_consolidate` sweeps behind
/// hyper's 8 KiB buffers); mimalloc's thread-local free lists cut the
/// count by ~8 % and the relay's CPU per request with it (BENCHMARKS.md,
/// "The direct path for relays, and mimalloc").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    raise_fd_limit();
    let cli = match config::load() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(2);
        }
    };
    // `--runtime per-core`: this thread is the first core's loop and
    // `weir::cores` starts the others (`Gateway::run`).
    let per_core =
        matches!(&cli.command, Command::Serve(cmd) if cmd.config.runtime == RuntimeMode::PerCore);
    let mut builder = match per_core {
        true => tokio::runtime::Builder::new_current_thread(),
        false => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
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

/// Every connection is a file descriptor, and the usual soft limit (1024 or
/// so) would cap a gateway far below what it can hold: lift the soft
/// RLIMIT_NOFILE to the hard limit. Failing to is not fatal.
fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(cmd) => {
            let cfg = cmd.into_config();
            weir::telemetry::init(&cfg.log_format);
            let gateway = weir::Gateway::bind(cfg).await?;
            gateway.run(weir::shutdown::signal()).await
        }
        Command::Worker(cfg) => {
            weir::telemetry::init(&cfg.log_format);
            weir::work::process::run_worker(cfg, weir::shutdown::signal()).await
        }
        Command::Store(cfg) => {
            weir::telemetry::init(&cfg.log_format);
            weir::store::server::run_store(cfg, weir::shutdown::signal()).await
        }
        Command::Keys {
            command: KeysCommand::Create(args),
        } => {
            let secret = weir::cli::create_key(args).await?;
            #[allow(clippy::print_stdout, reason = "the key is the command's output")]
            {
                println!("{secret}");
            }
            Ok(())
        }
        Command::Accounts {
            command: AccountsCommand::Set(args),
        } => {
            let account = weir::cli::set_account(args).await?;
            #[allow(clippy::print_stdout, reason = "the account is the command's output")]
            {
                println!("{}", serde_json::to_string(&account)?);
            }
            Ok(())
        }
    }
}

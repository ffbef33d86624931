//! `examples/cluster.sh`, the documented way to run the whole cluster on
//! loopback, runs the acceptance scenario of `workers.rs`: the script starts
//! Redis, a `weir store` on a fresh PostgreSQL database, two gateways and
//! two workers from `config/cluster.toml`; the test chats via gateway A,
//! watches on B and SIGKILLs one of the script's workers mid-run. Skips,
//! with a printed line, when no PostgreSQL is reachable outside CI.

use std::{
    collections::HashMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::workers::killed_worker_scenario;
use crate::common::{poll, postgres_available, signal, weir_bin, WeirProcess};

/// The script, stopped like Ctrl-C would (SIGTERM: it then stops its
/// processes and drops its database) when the test ends, passing or not.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        signal(self.0.id(), "TERM");
        // Drop cannot await: poll the exit with a blocking pause.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the script's `CLUSTER_INFO` file (written once every process
/// answers) and reads its `NAME=value` lines.
async fn cluster_info(script: &mut Script, file: &Path) -> HashMap<String, String> {
    let text = poll(Duration::from_secs(120), || {
        if let Ok(Some(status)) = script.0.try_wait() {
            panic!("examples/cluster.sh exited during start-up: {status} (run with TEST_LOG=1)");
        }
        std::future::ready(std::fs::read_to_string(file).ok())
    })
    .await
    .expect("the cluster did not start in 120 s");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_script_runs_the_killed_worker_scenario() {
    if !postgres_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let info_file = dir.path().join("cluster.info");
    let quiet = std::env::var_os("TEST_LOG").is_none();
    let child = Command::new("bash")
        .arg("examples/cluster.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("WEIR_BIN", weir_bin())
        .env("CLUSTER_INFO", &info_file)
        // One run at a time per worker and a short claim, as in workers.rs.
        .env("WEIR_WORKERS", "1")
        .env("WEIR_RUN_CLAIM_SECS", "2")
        .stdout(Stdio::null())
        .stderr(if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .expect("bash examples/cluster.sh");
    let mut script = Script(child);
    let info = cluster_info(&mut script, &info_file).await;
    let field = |k: &str| {
        info.get(k)
            .unwrap_or_else(|| panic!("{k} in {info:?}"))
            .clone()
    };
    let pid = |k: &str| field(k).parse::<u32>().unwrap();
    let (a, b) = (
        WeirProcess::remote(field("A")),
        WeirProcess::remote(field("B")),
    );
    let (killed, other) = (pid("WORKER_1_PID"), pid("WORKER_2_PID"));
    let kill = || assert!(signal(killed, "KILL"), "SIGKILL worker 1");
    let other_alive = || signal(other, "0");
    killed_worker_scenario(&a, &b, &field("KEY"), kill, other_alive).await;
    assert!(
        matches!(script.0.try_wait(), Ok(None)),
        "the script keeps running (it stops only when one of its processes dies)"
    );
}

//! nginx as a reference proxy for `proxy --nginx`: the same fake provider
//! behind the proxy that most deployments already trust for streaming, set
//! up the way one would for SSE (HTTP/1.1 keep-alive upstream, no response
//! buffering, no access log). What nginx adds over calling the provider
//! directly, measured in the same interleaved ramp, is the floor this
//! machine puts under any proxy's added latency, weir's included.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{
    client::{
        openloop::{self, Target},
        timing::Route,
    },
    gateway::{free_port, ChildGuard},
};

/// A running nginx (stopped on drop) and its target.
pub struct Nginx {
    _child: ChildGuard,
    _dir: tempfile::TempDir,
    pub target: Target,
    /// The master process (its workers are its children).
    pub pid: u32,
}

/// Where nginx is installed, if it is.
pub(crate) fn binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    candidates.extend(["/usr/sbin/nginx", "/usr/local/sbin/nginx"].map(PathBuf::from));
    candidates.into_iter().find(|p| p.is_file())
}

/// Whether nginx is installed here (the smoke test drives it when it is).
pub fn available() -> bool {
    binary().is_some()
}

/// Starts `nginx` (from `PATH`, or `/usr/sbin/nginx`) in front of
/// `provider` (a base URL ending in `/v1`) with `workers` worker processes,
/// terminating TLS with `tls`'s certificate when given.
pub async fn start(
    provider: &str,
    workers: u32,
    tls: Option<&crate::tls::Pki>,
) -> anyhow::Result<Nginx> {
    let upstream = provider
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut conf = config(&dir.path().to_string_lossy(), port, &upstream, workers);
    if let Some(pki) = tls {
        conf = with_tls(&conf, port, pki);
    }
    let bin = binary().unwrap_or_else(|| PathBuf::from("nginx"));
    let mut guard = spawn(&bin, dir.path(), &conf)
        .with_context(|| format!("starting {} (apt-get install nginx-light)", bin.display()))?;
    let target = Target {
        name: "nginx".into(),
        base: format!(
            "{}://127.0.0.1:{port}/v1",
            if tls.is_some() { "https" } else { "http" }
        ),
        key: None,
        model: "fake".into(),
        route: Route::OpenAi,
        sessions: Vec::new(),
    };
    let client = openloop::client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if openloop::run_step(&client, &target, 1.0, 0.2).await.ok == 1 {
            return Ok(Nginx {
                pid: guard.0.id(),
                _child: guard,
                _dir: dir,
                target,
            });
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            anyhow::bail!("nginx exited ({status}): {log}");
        }
        if Instant::now() > deadline {
            anyhow::bail!("nginx did not answer on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `bin` in the foreground on `conf`, written to `dir`, every path
/// (the error log nginx opens before reading its config included, `-e`)
/// under `dir`, so a user who cannot write /var/log/nginx can run it.
pub(super) fn spawn(bin: &Path, dir: &Path, conf: &str) -> anyhow::Result<ChildGuard> {
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(ChildGuard(child))
}

/// The configuration: every path under `dir`, SSE-friendly proxying.
fn config(dir: &str, port: u16, upstream: &str, workers: u32) -> String {
    format!(
        "worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    upstream provider {{ server {upstream}; keepalive 512; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://provider;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            tcp_nodelay on;
        }}
    }}
}}
"
    )
}

/// The same configuration with the listener terminating TLS as weir does:
/// TLS 1.2 and 1.3, the same certificate, sessions resumable.
fn with_tls(conf: &str, port: u16, pki: &crate::tls::Pki) -> String {
    conf.replace(
        &format!("listen 127.0.0.1:{port} backlog=4096;"),
        &format!(
            "listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {};
        ssl_certificate_key {};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;",
            pki.cert.display(),
            pki.key.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::config;

    #[test]
    fn the_config_points_at_the_provider_and_keeps_everything_in_its_dir() {
        let c = config("/tmp/x", 8080, "127.0.0.1:9000", 2);
        assert!(c.contains("server 127.0.0.1:9000;"));
        assert!(c.contains("listen 127.0.0.1:8080"));
        assert!(c.contains("proxy_buffering off;"));
        assert!(c.contains("worker_processes 2;"));
        for line in c
            .lines()
            .filter(|l| l.contains("_path ") || l.contains("pid "))
        {
            assert!(line.contains("/tmp/x/"), "{line}");
        }
    }
}

//! nginx with the nchan module as the reference for `fanout --nchan`: a
//! pub/sub server built for exactly this job (memory storage, one channel,
//! SSE subscribers through its event source, messages posted to its HTTP
//! publisher). Debian ships it as `libnginx-mod-nchan`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::gateway::{free_port, ChildGuard};

/// Where the module may be installed (Debian's package first).
const MODULES: [&str; 3] = [
    "/usr/lib/nginx/modules/ngx_nchan_module.so",
    "/usr/share/nginx/modules/ngx_nchan_module.so",
    "/usr/local/nginx/modules/ngx_nchan_module.so",
];

/// A running nginx + nchan (stopped on drop).
pub struct Nchan {
    _child: ChildGuard,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// The master process (its workers are its children).
    pub pid: u32,
}

impl Nchan {
    /// Where subscribers `GET` (SSE).
    pub fn sub_path(&self) -> &'static str {
        "/sub"
    }

    /// Where messages are posted.
    pub fn pub_url(&self) -> String {
        format!("http://{}/pub", self.addr)
    }
}

/// The nchan module, if installed.
fn module() -> Option<PathBuf> {
    MODULES.into_iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Whether nginx and its nchan module are both installed here.
pub fn available() -> bool {
    super::nginx::binary().is_some() && module().is_some()
}

/// Starts nginx + nchan with `workers` worker processes; returns once it
/// answers.
pub async fn start(workers: u32) -> anyhow::Result<Nchan> {
    let bin =
        super::nginx::binary().context("nginx is not installed (apt-get install nginx-light)")?;
    let module = module()
        .context("the nchan module is not installed (apt-get install libnginx-mod-nchan)")?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let conf = config(
        &dir.path().to_string_lossy(),
        &module.to_string_lossy(),
        port,
        workers,
    );
    let mut guard = super::nginx::spawn(&bin, dir.path(), &conf)
        .with_context(|| format!("starting {}", bin.display()))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(Nchan {
                addr,
                pid: guard.0.id(),
                _child: guard,
                _dir: dir,
            });
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            anyhow::bail!("nginx (nchan) exited ({status}): {log}");
        }
        if Instant::now() > deadline {
            anyhow::bail!("nginx (nchan) did not answer on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The configuration: every path under `dir`, one channel `load`, new
/// subscribers start at the newest message (as weir's live streams do), no
/// access log.
fn config(dir: &str, module: &str, port: u16, workers: u32) -> String {
    format!(
        "load_module {module};
worker_processes {workers};
worker_rlimit_nofile 40000;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    nchan_max_reserved_memory 128m;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        tcp_nodelay on;
        location = /pub {{
            nchan_publisher;
            nchan_channel_id load;
            nchan_message_buffer_length 64;
        }}
        location = /sub {{
            nchan_subscriber eventsource;
            nchan_channel_id load;
            nchan_subscriber_first_message newest;
        }}
    }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::config;

    #[test]
    fn the_config_loads_nchan_and_keeps_everything_in_its_dir() {
        let c = config("/tmp/x", "/m/nchan.so", 8080, 2);
        assert!(c.starts_with("load_module /m/nchan.so;"));
        assert!(c.contains("listen 127.0.0.1:8080"));
        assert!(c.contains("nchan_publisher;") && c.contains("nchan_subscriber eventsource;"));
        assert!(!c.contains("nchan_redis"), "memory storage");
        for line in c
            .lines()
            .filter(|l| l.contains("_path ") || l.contains("pid "))
        {
            assert!(line.contains("/tmp/x/"), "{line}");
        }
    }
}

//! A private `redis-server` per test: a free port (never 6379), no
//! persistence, its own working dir, killed on drop. It can be killed and
//! started again on the same port (an outage). [`RedisServer::start_tls`]
//! adds a TLS port (certificates made with the `openssl` command, signed by a
//! test CA) and a password. Shared by the integration tests and, through
//! `#[path]`, by the Redis bus unit tests.

// Each including crate uses part of it (the unit tests need TLS, the
// integration tests do not).
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The installed server binary (redis-server 7).
const REDIS_SERVER: &str = "redis-server";

/// A running (or deliberately stopped) private redis-server.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    tls: Option<Tls>,
}

/// The TLS side of a server started with [`RedisServer::start_tls`].
struct Tls {
    port: u16,
    password: String,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Also listens with TLS (a certificate for 127.0.0.1 signed by the CA
    /// in [`Self::ca_file`]) and requires `password` on both ports.
    pub async fn start_tls(password: &str) -> Self {
        Self::start_with(Some(Tls {
            port: free_port(),
            password: password.to_owned(),
        }))
        .await
    }

    async fn start_with(tls: Option<Tls>) -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir for redis"),
            tls,
        };
        if server.tls.is_some() {
            make_certificates(server.dir.path());
        }
        let mut last = String::new();
        for _ in 0..5 {
            match server.launch().await {
                Ok(()) => return server,
                // Another process took the port between probe and bind.
                Err(e) => last = e,
            }
            server.port = free_port();
            if let Some(tls) = &mut server.tls {
                tls.port = free_port();
            }
        }
        panic!("could not start redis-server: {last}");
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` (with the password, if any).
    pub fn url(&self) -> String {
        match &self.tls {
            Some(t) => format!("redis://:{}@127.0.0.1:{}", t.password, self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// `rediss://:<password>@127.0.0.1:<tls port>` (servers from `start_tls`).
    pub fn tls_url(&self) -> String {
        let t = self.tls.as_ref().expect("started with start_tls");
        format!("rediss://:{}@127.0.0.1:{}", t.password, t.port)
    }

    /// The PEM file of the CA that signed the TLS certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown). Its data is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing was saved).
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..20 {
            if self.launch().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not come back on port {}", self.port);
    }

    /// A connection for inspecting the server from a test.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        // Plain port, password included in the URL.
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }

    async fn launch(&mut self) -> Result<(), String> {
        let dir: PathBuf = self.dir.path().to_owned();
        let mut cmd = Command::new(REDIS_SERVER);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir);
        if let Some(t) = &self.tls {
            cmd.args([
                "--tls-port",
                &t.port.to_string(),
                "--requirepass",
                &t.password,
            ])
            .args([
                "--tls-cert-file",
                "server.crt",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
            .current_dir(&dir);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {REDIS_SERVER}: {e}"))?;
        let pid = child.id();
        self.child = Some(child);
        for _ in 0..100 {
            // The pid check makes sure it is our server answering, not another
            // test's that took the port while ours was down.
            if server_pid(&self.url()).await == Some(pid) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("redis-server exited: {status}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        Err("redis-server did not answer within 2 s".into())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pid of the server answering on `port`, if one does.
async fn server_pid(url: &str) -> Option<u32> {
    let client = redis::Client::open(url).ok()?;
    let info = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    let info = tokio::time::timeout(Duration::from_millis(500), info)
        .await
        .ok()??;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

/// A test CA and a certificate for 127.0.0.1 it signed, in `dir`
/// (`ca.crt`, `server.crt`, `server.key`), made with the openssl command.
fn make_certificates(dir: &std::path::Path) {
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=weir test CA",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (for TLS tests)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A free loopback port other than 6379.
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if port != 6379 {
            return port;
        }
    }
}

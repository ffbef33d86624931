//! Serving on one single-threaded runtime per core (`--runtime per-core`).
//!
//! By default weir runs on tokio's multi-threaded, work-stealing runtime:
//! any worker may poll any task. On the relay a request is three tasks (the
//! client's connection, the provider connection's task in the HTTP
//! client's pool, and the body between them), and every relayed chunk wakes
//! the next one, often on the other worker: a futex wake-up and a cache
//! miss per hop. The relay's CPU per request fell by about a fifth on a
//! single-threaded runtime (BENCHMARKS.md, "One runtime per core").
//!
//! Per core, then, this module keeps what nginx keeps per worker process:
//! its own listener on the same address (`SO_REUSEPORT`: the kernel spreads
//! new connections over them), its own single-threaded runtime, and its own
//! provider connection pool ([`PerCore`]), so a connection, the tasks it
//! spawns and the upstream connections it uses all live on one thread.
//! Everything else is shared as before (the state's `Arc`s: key cache,
//! limits, bus, store), so limits and caches stay exact across cores; what
//! goes through a shared client (the bus and its Redis connection, the
//! remote store) still crosses threads, as it did. Loop 0 is the thread
//! that called [`crate::Gateway::run`] (`main` gives it a single-threaded
//! runtime in this mode), and it also runs the gateway's background tasks
//! (the bus's reader, queued runs, webhook delivery, the usage and audit
//! writers): its connections share the core with them. The others are
//! threads started here and kept until the gateway's drain is over, so
//! that the tasks they spawned (runs, stream closers) finish their drain.

use std::{cell::Cell, io, net::SocketAddr, sync::Arc, thread};

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::config::{RuntimeMode, ServeConfig};

/// Pending connections each listener queues (tokio's own default for
/// `TcpListener::bind`).
const BACKLOG: u32 = 1024;

thread_local! {
    /// The serving loop this thread runs (0 on every thread but the extra
    /// loops' own).
    static LOOP: Cell<usize> = const { Cell::new(0) };
}

/// The serving loop of the calling thread: 0 on the shared runtime.
pub fn current() -> usize {
    LOOP.with(Cell::get)
}

/// How many serving loops `cfg` asks for: one on the shared runtime; with
/// `--runtime per-core`, `--cores` or else one per core the process may use.
pub fn count(cfg: &ServeConfig) -> usize {
    match (cfg.runtime, cfg.cores) {
        (RuntimeMode::Shared, _) => 1,
        (RuntimeMode::PerCore, 0) => thread::available_parallelism().map_or(1, |n| n.get()),
        (RuntimeMode::PerCore, n) => n,
    }
}

/// One `T` per serving loop, each used only from its own loop's thread
/// (any other thread, of the shared runtime or of a blocking pool, gets the
/// first).
#[derive(Debug, Clone)]
pub struct PerCore<T>(Arc<[T]>);

impl<T> PerCore<T> {
    /// `n` (at least one) values made by `make`.
    pub fn new(n: usize, make: impl FnMut(usize) -> T) -> Self {
        Self((0..n.max(1)).map(make).collect())
    }

    /// How many there are (one per serving loop).
    pub fn loops(&self) -> usize {
        self.0.len()
    }

    /// The calling loop's value.
    pub fn get(&self) -> &T {
        &self.0[current() % self.0.len()]
    }
}

impl<T> From<T> for PerCore<T> {
    fn from(one: T) -> Self {
        Self(Arc::from([one]))
    }
}

/// Binds `n` listeners on `addr`: one as `TcpListener::bind` does, or, for
/// more than one, each with `SO_REUSEPORT`. A port already in use must
/// still fail as it would without `SO_REUSEPORT` (which would otherwise
/// let a second gateway of the same user join the port and take a share
/// of its connections), so a plain bind is tried first and closed; it
/// also resolves port 0 for the others.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let probe = std_bind(addr)?;
    if n <= 1 {
        return Ok(vec![probe]);
    }
    let addr = probe.local_addr()?;
    drop(probe);
    (0..n).map(|_| reuseport(addr)).collect()
}

fn std_bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket_for(addr)?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

fn reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket_for(addr)?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

fn socket_for(addr: SocketAddr) -> io::Result<TcpSocket> {
    match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}

/// The extra loops (1..): each a thread with a single-threaded runtime that
/// runs `serve` on its listener and then waits for `done`.
pub struct Loops {
    threads: Vec<thread::JoinHandle<()>>,
    served: Vec<tokio::sync::oneshot::Receiver<io::Result<()>>>,
    done: CancellationToken,
}

impl Loops {
    /// Starts one loop per listener, numbered from 1. A listener leaves the
    /// caller's runtime (`into_std`) and is registered again with its
    /// loop's own.
    pub fn start<F, Fut>(listeners: Vec<TcpListener>, serve: F) -> io::Result<Self>
    where
        F: Fn(TcpListener) -> Fut + Send + Clone + 'static,
        Fut: std::future::Future<Output = io::Result<()>>,
    {
        let done = CancellationToken::new();
        let mut loops = Self {
            threads: Vec::new(),
            served: Vec::new(),
            done: done.clone(),
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let index = i + 1;
            let std = listener.into_std()?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (serve, done) = (serve.clone(), done.clone());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let thread = thread::Builder::new()
                .name(format!("weir-loop-{index}"))
                .spawn(move || {
                    LOOP.with(|l| l.set(index));
                    runtime.block_on(run_loop(index, std, serve, tx, done));
                })?;
            loops.threads.push(thread);
            loops.served.push(rx);
        }
        Ok(loops)
    }

    /// Resolves when every loop's `serve` has returned: the first error, if any.
    pub async fn served(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for rx in self.served.drain(..) {
            let r = rx
                .await
                .unwrap_or_else(|_| Err(io::Error::other("a serving loop panicked")));
            result = result.and(r);
        }
        result
    }

    /// Ends the loops (their runtimes drop what is left, connections still
    /// open included) and waits for their threads.
    pub async fn stop(mut self) {
        self.done.cancel();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Loops left behind by an error (a later loop that failed to start, or
/// `run` returning early) stop with them.
impl Drop for Loops {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// One extra loop's life: serve its listener, say how that ended, then keep
/// the tasks it spawned (runs, stream closers) running through the drain,
/// until `done`. `done` also ends a serve still waiting for connections
/// that never close (the gateway's hard stop).
async fn run_loop<F, Fut>(
    index: usize,
    std: std::net::TcpListener,
    serve: F,
    tx: tokio::sync::oneshot::Sender<io::Result<()>>,
    done: CancellationToken,
) where
    F: Fn(TcpListener) -> Fut,
    Fut: std::future::Future<Output = io::Result<()>>,
{
    let serving = async {
        let served = match TcpListener::from_std(std) {
            Ok(listener) => serve(listener).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &served {
            tracing::error!(error = %e, serving_loop = index, "a serving loop stopped");
        }
        let _ = tx.send(served);
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = serving => {}
        _ = done.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_core_values_are_picked_by_the_calling_loop() {
        let v = PerCore::new(2, |i| i * 10);
        assert_eq!(*v.get(), 0, "a thread outside the loops gets the first");
        let v2 = v.clone();
        let seen = thread::spawn(move || {
            LOOP.with(|l| l.set(1));
            *v2.get()
        })
        .join()
        .unwrap();
        assert_eq!(seen, 10);
        let one = PerCore::from("x");
        LOOP.with(|l| l.set(5));
        assert_eq!(*one.get(), "x", "one value serves every loop");
        LOOP.with(|l| l.set(0));
    }

    #[tokio::test]
    async fn listeners_share_one_port() {
        let all = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = all[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for l in &all {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
        let single = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        assert_eq!(single.len(), 1);
        let used = single[0].local_addr().unwrap();
        assert!(bind(used, 1).is_err(), "a port in use fails");
        assert!(bind(used, 2).is_err(), "with SO_REUSEPORT too");
        let taken = all[0].local_addr().unwrap();
        assert!(
            bind(taken, 1).is_err() && bind(taken, 2).is_err(),
            "a second gateway cannot join the loops' port"
        );
    }
}

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
//! limits, bus, store), so limits and caches stay exact across cores. Loop
//! 0 is the thread that called [`crate::Gateway::run`] (`main` gives it a
//! single-threaded runtime in this mode); the others are threads started
//! here and kept until the gateway's drain is over, so that the tasks they
//! spawned (runs, stream closers) finish their drain.

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

/// One `T` per serving loop, each used only from its own loop's thread (a
/// thread of the shared runtime, or of loop 0's blocking pool, gets the
/// first).
#[derive(Debug, Clone)]
pub struct PerCore<T>(Arc<[T]>);

impl<T> PerCore<T> {
    /// `n` (at least one) values made by `make`.
    pub fn new(n: usize, make: impl FnMut(usize) -> T) -> Self {
        Self((0..n.max(1)).map(make).collect())
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
/// more than one, each with `SO_REUSEPORT` (port 0 is resolved by the first,
/// and the others join it).
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    if n <= 1 {
        return Ok(vec![std_bind(addr)?]);
    }
    let first = reuseport(addr)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(reuseport(addr)?);
    }
    Ok(all)
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
                    runtime.block_on(async move {
                        let served = match TcpListener::from_std(std) {
                            Ok(listener) => serve(listener).await,
                            Err(e) => Err(e),
                        };
                        let _ = tx.send(served);
                        // Tasks this loop spawned (runs, stream closers)
                        // still have the gateway's drain to finish.
                        done.cancelled().await;
                    });
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

    /// Ends the loops (their runtimes drop what is left) and waits for their
    /// threads.
    pub async fn stop(self) {
        self.done.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
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
        assert!(
            bind(single[0].local_addr().unwrap(), 1).is_err(),
            "without SO_REUSEPORT a second bind on a used port fails"
        );
    }
}

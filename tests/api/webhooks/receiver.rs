//! A webhook receiver for the tests: a real axum server on 127.0.0.1
//! that records every request and answers 500 to the first `fail` of
//! them, then 200 `ok` (or, hanging, never answers at all).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    /// A header that must be there.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

#[derive(Clone, Default)]
struct Log {
    got: Arc<Mutex<Vec<Received>>>,
    fail: usize,
    /// The failing answer (500 unless set).
    fail_with: Option<StatusCode>,
    /// Never answer (the request is recorded, then held open).
    hang: bool,
}

/// The running receiver (stops when dropped).
pub struct Receiver {
    pub url: String,
    log: Log,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// On a free port, failing the first `fail` requests.
    pub async fn start_failing(fail: usize) -> Self {
        Self::start_on(0, fail).await
    }

    /// On a free port, answering `status` to every request.
    pub async fn start_answering(status: StatusCode) -> Self {
        Self::start_with(0, usize::MAX, Some(status)).await
    }

    /// On a free port, recording every request and answering none.
    pub async fn start_hanging() -> Self {
        let log = Log {
            hang: true,
            ..Log::default()
        };
        Self::serve(0, log).await
    }

    /// On `port` (0: any).
    pub async fn start_on(port: u16, fail: usize) -> Self {
        Self::start_with(port, fail, None).await
    }

    async fn start_with(port: u16, fail: usize, fail_with: Option<StatusCode>) -> Self {
        let log = Log {
            fail,
            fail_with,
            ..Log::default()
        };
        Self::serve(port, log).await
    }

    async fn serve(port: u16, log: Log) -> Self {
        let app = Router::new()
            .route("/hook", post(take))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("receiver binds");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            log,
            task,
        }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Received> {
        self.log.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn take(
    State(log): State<Log>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let n = {
        let mut got = log.got.lock().unwrap();
        got.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        got.len()
    };
    if log.hang {
        std::future::pending::<()>().await;
    }
    match n <= log.fail {
        true => (
            log.fail_with.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "down for now",
        ),
        false => (StatusCode::OK, "ok"),
    }
}

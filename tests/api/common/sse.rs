//! SSE as an EventSource client reads it (eventsource-stream: `: ping`
//! comments dropped), for tests that care about events rather than bytes.

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::Response;

/// How long a test waits for the next event of a live stream.
pub const WAIT: Duration = Duration::from_secs(10);

/// Parsed events of an SSE response.
pub fn events(r: Response) -> impl Stream<Item = Event> + Unpin {
    Box::pin(
        r.bytes_stream()
            .eventsource()
            .map(|e| e.expect("well-formed SSE")),
    )
}

/// The next event, within [`WAIT`].
pub async fn next_event(s: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("an event in time")
        .expect("stream open")
}

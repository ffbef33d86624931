//! Clients: lean SSE and WebSocket subscribers that bind every socket to its
//! own 127.0.0.0/8 source address (so 100k connections to one port do not
//! run out of ephemeral ports), and the open-loop HTTP driver.

pub mod event;
pub mod h2;
pub mod openloop;
pub mod sse;
pub mod timing;
pub mod ws;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::net::{TcpSocket, TcpStream};

/// How long one subscriber may take to connect and subscribe.
pub const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Source addresses used in turn: 4096 of them, ~28k ports each.
const SOURCES: u32 = 4096;

/// The source address of connection `i`: 127.1.0.1, 127.1.0.2, … (never
/// 127.0.0.1, the gateway's own address).
pub fn source_ip(i: usize) -> Ipv4Addr {
    let k = (i as u32) % SOURCES;
    Ipv4Addr::new(
        127,
        1 + (k / 62_500) as u8,
        ((k / 250) % 250) as u8,
        (k % 250 + 1) as u8,
    )
}

/// Connects to `to` from source address number `i`.
pub async fn connect_from(i: usize, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::V4(SocketAddrV4::new(source_ip(i), 0)))?;
    let stream = sock.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a subscriber is: SSE on `/v1/agents/{id}/events`, or a WebSocket
/// subscribed to `agent:{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse,
    Ws,
}

impl Kind {
    /// Connection `i` of a mix with `ws_percent` % WebSockets, interleaved.
    pub fn of(i: usize, ws_percent: u32) -> Self {
        if (i as u64 * u64::from(ws_percent)) % 100 + u64::from(ws_percent) >= 100 && ws_percent > 0
        {
            Self::Ws
        } else {
            Self::Sse
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Ws => "ws",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_in_loopback_and_spread() {
        let a = source_ip(0);
        let b = source_ip(4095);
        assert!(a.is_loopback() && b.is_loopback());
        assert_ne!(a, Ipv4Addr::LOCALHOST);
        assert_ne!(a, b);
        assert_eq!(source_ip(4096), a);
    }

    #[test]
    fn the_mix_has_the_asked_share() {
        for pct in [0, 30, 50, 100] {
            let ws = (0..1000).filter(|&i| Kind::of(i, pct) == Kind::Ws).count();
            assert_eq!(ws, pct as usize * 10, "{pct}");
        }
    }
}

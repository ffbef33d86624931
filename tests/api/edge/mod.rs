//! Edge protection (issue 5) against real gateways and real processes: rate
//! limits, stream caps, size limits, drain, log redaction, cluster-wide
//! limits over a private redis-server, slow consumers, and property tests of
//! the frame and stream parsers.

mod caps;
mod cluster;
mod drain;
mod fuzz;
mod limits;
mod rate;
mod redact;
mod runs;
mod shed;
mod slow;
mod tokens;

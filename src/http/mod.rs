//! The HTTP layer: the route table ([`routes`], [`route`]), router and
//! layers (weir's own two middlewares in [`layers`]), authentication, the error envelope ([`errors`]: `ApiError` and
//! the mapping of every domain error to it), the edge's middleware
//! ([`limits`]), the audit record of every change ([`audit`]), and the
//! handlers: REST for accounts, keys, agents, tools
//! and sessions; messages and runs ([`messages`], [`runs`]); the SSE routes
//! ([`streams`], resume cursors in [`cursor`]) and the WebSocket upgrade
//! ([`ws`]). The modules below it never import it.

pub mod account;
pub mod agents;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod cursor;
pub mod errors;
pub mod key_body;
pub mod keys;
pub mod layers;
pub mod limits;
pub mod messages;
pub mod openapi;
pub mod ops;
pub mod params;
pub mod providers;
pub mod record;
pub mod route;
pub mod router;
pub mod routes;
pub mod runs;
pub mod serve;
pub mod sessions;
pub mod streams;
pub mod tools;
pub mod usage;
pub mod webhook_body;
pub mod webhooks;
pub mod ws;

pub use router::build_router;

//! The HTTP edge: router and layers, authentication, the error envelope, and
//! the REST routes for accounts, keys, agents, tools and sessions.

pub mod account;
pub mod agents;
pub mod auth;
pub mod errors;
pub mod keys;
pub mod openapi;
pub mod openapi_streams;
pub mod ops;
pub mod params;
pub mod record;
pub mod router;
pub mod scopes;
pub mod serve;
pub mod sessions;
pub mod tools;

pub use router::build_router;

//! Limits at the edge: request body size and request timeouts. Rate limits
//! and connection caps arrive with the edge-protection work.

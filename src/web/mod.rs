//! The HTTP side: the server and its routes, the cap on responses in flight, the credential
//! view, and TLS and basic auth.

mod inflight;
pub mod keys;
pub mod security;
pub mod server;

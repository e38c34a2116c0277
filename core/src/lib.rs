#![forbid(unsafe_code)]
pub mod auth;
pub mod backoff;
pub mod frame;
pub mod handshake;
pub mod request;

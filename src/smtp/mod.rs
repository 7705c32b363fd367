//! SMTP: the journal receiver (and the proxy's client side).

pub mod command;
pub mod data;
pub mod delivery;
pub mod reply;
pub mod server;
pub mod session;

//! SMTP: the journal receiver (and the proxy's client side).

pub mod bdat;
pub mod command;
pub mod delivery;
pub mod message_id;
pub mod proxy;
pub mod proxy_service;
pub mod reply;
pub mod server;
pub mod session;
pub mod upstream;

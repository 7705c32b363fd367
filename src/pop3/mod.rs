//! POP3: the server archivers retrieve mail from.

pub mod command;
pub mod maildrop;
pub mod proxy;
pub mod proxy_service;
pub mod server;
pub mod session;
pub mod upstream;
